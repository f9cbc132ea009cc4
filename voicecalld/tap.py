"""
C{twistd voicecalld}: options and the service maker.

Everything that can be wrong with the config or the options is found here,
before any socket is opened, and reported in one line naming the file, the
key path and the reason (exit status 2).  So is a call store that lost its
data (L{voicecalld.store.guard}), in one line saying how to recover.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from typing import Any, NoReturn

from twisted.application.service import IService
from twisted.internet import endpoints
from twisted.logger import Logger
from twisted.python import usage

from voicecalld import __version__, activation, paths
from voicecalld.config import (
    ConfigError,
    LoadedConfig,
    is_implicit_default,
    load_config,
    resolve_config_path,
)
from voicecalld.config.features import unbuilt_notes
from voicecalld.config.schema import Problem, dotted
from voicecalld.daemon import build
from voicecalld.logs.observer import FORMATS, Chain, LoggingRoot, output, under_journald
from voicecalld.providers.registry import make_provider
from voicecalld.store.guard import StoreRefused, inspect
from voicecalld.store.schema import CURRENT_VERSION
from voicecalld.store.sqlite import SQLiteCallStore, ThreadRunner

EXIT_CONFIG = 2
log = Logger()


def _die(message: str) -> NoReturn:
    print(f"voicecalld: {message}", file=sys.stderr, flush=True)
    raise SystemExit(EXIT_CONFIG)


def webhook_endpoint(settings: Any) -> str:
    """The strports description of the webhook server from C{serve.bind}/C{serve.port}."""
    bind = settings.serve.bind
    if ":" in bind:
        return f"tcp6:{settings.serve.port}:interface={bind.replace(':', chr(92) + ':')}"
    return f"tcp:{settings.serve.port}:interface={bind}"


def control_endpoint(socket_path: str) -> str:
    """The strports description of the control socket at C{socket_path}."""
    escaped = socket_path.replace(":", "\\:")
    return f"unix:{escaped}:mode=600:lockfile=1:backlog=1024"


class Options(usage.Options):
    """Command-line options of C{twistd voicecalld}."""

    synopsis = "[options]"
    longdesc = (
        "Runs the voicecalld phone-call daemon.  Without a config it runs the mock"
        " provider.  See the README for the config keys."
    )
    optParameters = [
        [
            "config",
            None,
            None,
            "JSON5 config: a whole OpenClaw config or a bare plugin config"
            " [default: $VOICECALLD_CONFIG, $OPENCLAW_CONFIG_PATH, ~/.openclaw/openclaw.json]",
        ],
        [
            "state-dir",
            None,
            None,
            "durable state directory [default: $VOICECALLD_STATE_DIR, else"
            " $XDG_STATE_HOME/voicecalld, else ~/.local/state/voicecalld]",
        ],
        [
            "control",
            None,
            None,
            "strports endpoint of the AMP control socket"
            " [default: unix:<controlSocket or state-dir/control.sock>:mode=600:lockfile=1]",
        ],
        [
            "webhook",
            None,
            None,
            "strports endpoint of the webhook HTTP server [default: from serve.bind/serve.port]",
        ],
        [
            "metrics",
            None,
            "none",
            "strports endpoint for Prometheus /metrics and /healthz, or 'none'",
        ],
        [
            "log-format",
            None,
            "text",
            "log lines on stdout: 'text' (one line per event, for journald) or 'json'"
            " (one object per line, for log shippers); see docs/logs.md",
        ],
    ]

    def opt_version(self) -> NoReturn:
        """Print the version and exit."""
        print(f"voicecalld {__version__}")
        raise SystemExit(0)

    def postOptions(self) -> None:
        environ = os.environ
        path = resolve_config_path(self["config"], environ)
        try:
            # SecretRefs are resolved here too, before the reactor runs
            # (voicecalld.config.command says why that may block).
            loaded = load_config(
                path, environ, named=not is_implicit_default(self["config"], environ)
            )
        except ConfigError as e:
            _die(f"bad config: {e}")
        if not loaded.settings.enabled:
            key = dotted((*loaded.prefix[:-1], "enabled")) if loaded.prefix else "enabled"
            _die(
                f"bad config: {loaded.source}: {key}: voice calls are disabled in this"
                " config; set it to true to run voicecalld"
            )
        if self["log-format"] not in FORMATS:
            _die(f"bad --log-format {self['log-format']!r}: use text or json")
        self.loaded = loaded
        self.state_dir = paths.state_dir(self["state-dir"], environ)
        try:
            paths.ensure_private_dir(self.state_dir)
        except OSError as e:
            _die(f"cannot create the state directory {self.state_dir}: {e.strerror}")
        settings = loaded.settings
        if settings.streaming.enabled and settings.streaming.stream_path == settings.serve.path:
            _die(
                f"bad config: {loaded.source}: {loaded.path('streaming', 'streamPath')}:"
                " must differ from serve.path"
            )
        self.socket_path = None
        if self["control"] is None:
            self.socket_path = paths.control_socket(
                settings.control_socket, environ, self.state_dir
            )
            parent = os.path.dirname(self.socket_path)
            if not os.path.isdir(parent):
                try:
                    paths.ensure_private_dir(parent)
                except OSError as e:
                    _die(f"cannot create the control socket's directory {parent}: {e.strerror}")
            self["control"] = control_endpoint(self.socket_path)
        if self["webhook"] is None:
            self["webhook"] = webhook_endpoint(settings)


def makeService(options: Options) -> IService:
    """Build the daemon's service from parsed options."""
    from twisted.internet import reactor

    loaded: LoadedConfig = options.loaded
    try:
        provider = make_provider(loaded, reactor)
    except Problem as problem:
        _die(f"bad config: {ConfigError(loaded.source, [problem])}")
    warnings = [str(note) for note in loaded.notes] + unbuilt_notes(loaded)
    if loaded.settings.skip_signature_verification:
        warnings.insert(
            0,
            "SECURITY WARNING: skipSignatureVerification is on: webhook"
            " signatures are NOT checked, so anyone who can reach the webhook can"
            " drive calls; use it only for local development",
        )

    def endpoint(description: str, option: str) -> Any:
        problem = activation.check(option, description)
        if problem is not None:
            _die(problem)
        try:
            return endpoints.serverFromString(reactor, description)
        except (ValueError, KeyError, TypeError) as e:
            _die(f"bad --{option} endpoint {description!r}: {e}")

    metrics = None
    if options["metrics"] not in (None, "none"):
        metrics = (options["metrics"], endpoint(options["metrics"], "metrics"))
    store_path = os.path.join(options.state_dir, paths.STORE_NAME)
    try:
        inspect(store_path, CURRENT_VERSION)
    except StoreRefused as e:
        _die(str(e))
    except OSError as e:
        _die(f"cannot read the call store {store_path}: {e.strerror}")
    store = SQLiteCallStore(store_path, ThreadRunner(reactor))
    daemon = build(
        loaded,
        store=store,
        provider=provider,
        reactor=reactor,
        webhook=(options["webhook"], endpoint(options["webhook"], "webhook")),
        control=(options["control"], endpoint(options["control"], "control"), options.socket_path),
        metrics=metrics,
        warnings=warnings,
        environ=os.environ,
    )
    reactor.callWhenRunning(_stop_cleanly_on_sigterm, reactor, daemon)
    atexit.register(_exit_without_tear_down, daemon)
    return _with_log_chain(daemon, options, reactor)


def _with_log_chain(daemon: IService, options: Options, reactor: Any) -> IService:
    """Put the daemon under the root that gives twistd our log chain (docs/logs.md)."""
    out = output(getattr(options, "parent", None))
    if out is None:
        return daemon
    chain = Chain(options["log-format"], out, reactor, journald=under_journald(os.environ, out))
    root = LoggingRoot(chain)
    daemon.setServiceParent(root)
    return root


def _exit_without_tear_down(daemon: Any) -> None:
    """
    At exit after a clean stop, skip the interpreter's tear-down of every
    module (under load it takes a second or more): everything is stored and
    closed, and a restart's next process, with every caller, waits for this
    one to exit.  Anything else exits as usual.
    """
    if not daemon.stopped or getattr(sys, "last_value", None) is not None:
        return
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _stop_cleanly_on_sigterm(reactor: Any, daemon: Any) -> None:
    """
    SIGTERM is the normal way to stop the daemon: shut down (or drain first,
    L{VoiceCallDaemon.terminate}) and exit 0 (the contract), rather than
    Twisted's default of re-raising the signal at exit.
    """

    def stop(signum: int, frame: object) -> None:
        log.info("received SIGTERM")
        reactor.callFromThread(daemon.terminate)

    signal.signal(signal.SIGTERM, stop)
