"""
C{voicecall}: the command line for voicecalld.

Exit status: 0 done; 1 the daemon refused or failed (C{voicecall: CODE:
message}); 2 usage or config error; 3 the daemon cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from collections.abc import Sequence
from typing import Any, NoReturn, TextIO

from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import react
from twisted.protocols import amp

from voicecalld import __version__
from voicecalld.cli import render, where
from voicecalld.control import commands as c
from voicecalld.control.client import ControlClient, Unreachable, connect
from voicecalld.errors import VoiceCallError

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


class Failure(Exception):
    """End the command with C{code} after printing C{message} on stderr."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"voicecall: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _add_globals(parser: argparse.ArgumentParser, after_command: bool) -> None:
    """
    The global options.  After the command they default to nothing (SUPPRESS),
    so that leaving them out there keeps what was given before the command.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if after_command else value

    parser.add_argument(
        "--socket",
        default=default(None),
        help="control socket [default: $VOICECALLD_SOCKET, else the"
        " config's controlSocket, else <state-dir>/control.sock]",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON instead of text"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="S",
        default=default(None),
        help="give up after S seconds (default: wait as long as the daemon does)",
    )


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return number


def _since(value: str) -> float:
    from voicecalld.cli.export import parse_since

    try:
        return parse_since(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parser() -> argparse.ArgumentParser:
    """The whole command line; the global options go before or after the command."""
    top = _Parser(
        prog="voicecall", description="Drive voicecalld: place, talk on and end phone calls."
    )
    _add_globals(top, after_command=False)
    top.add_argument("--version", action="version", version=f"voicecall {__version__}")
    sub = top.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    call = sub.add_parser("call", help="place a call")
    call.add_argument("--to", help="E.164 number [default: toNumber]")
    call.add_argument("--message", "-m", required=True, help="what to say first")
    call.add_argument(
        "--mode", choices=("notify", "conversation"), help="[default: outbound.defaultMode]"
    )

    for name, text in (
        ("continue", "say something, then wait for the caller's answer"),
        ("speak", "say something without waiting for an answer"),
    ):
        command = sub.add_parser(name, help=text)
        command.add_argument("--call-id", required=True)
        command.add_argument("--message", "-m", required=True)

    end = sub.add_parser("end", help="hang up")
    end.add_argument("--call-id", required=True)

    dtmf = sub.add_parser("dtmf", help="send touch tones (w = half-second wait)")
    dtmf.add_argument("--call-id", required=True)
    dtmf.add_argument("--digits", required=True)

    status = sub.add_parser("status", help="one call, or every live call")
    status.add_argument("--call-id")
    status.add_argument(
        "--recent", type=int, metavar="N", help="the N most recent calls, ended ones too"
    )

    transfer = sub.add_parser("transfer", help="hand the call to a person (cold transfer)")
    transfer.add_argument("--call-id", required=True)
    transfer.add_argument("--to", required=True, help="E.164 number of the person")
    transfer.add_argument("--message", "-m", help="said to the caller before the transfer")

    latency = sub.add_parser("latency", help="turn latency over the store's recent calls")
    latency.add_argument(
        "--last", type=_at_least_one, default=200, metavar="N", help="the N most recent calls"
    )
    latency.add_argument(
        "--state-dir", help="[default: as the daemon chooses: $VOICECALLD_STATE_DIR, XDG]"
    )

    export = sub.add_parser(
        "export", help="ended calls from the store as JSON lines, oldest end first"
    )
    export.add_argument(
        "--since",
        type=_since,
        metavar="DATE",
        help="only calls that ended at or after DATE (ISO date or datetime, UTC)",
    )
    export.add_argument(
        "--state-dir", help="[default: as the daemon chooses: $VOICECALLD_STATE_DIR, XDG]"
    )

    tail = sub.add_parser("tail", help="follow call events until interrupted")
    tail.add_argument("--call-id")

    expose = sub.add_parser("expose", help="publish the webhook port through Tailscale")
    expose.add_argument("--mode", choices=("funnel", "serve", "off"), default="funnel")

    check = sub.add_parser("check-config", help="validate a config without a daemon")
    check.add_argument("--config", help="[default: as the daemon chooses]")

    doctor = sub.add_parser("doctor", help="check config, carrier, exposure, voice, socket, state")
    doctor.add_argument("--config", help="[default: as the daemon chooses]")
    doctor.add_argument(
        "--state-dir", help="[default: as the daemon chooses: $VOICECALLD_STATE_DIR, XDG]"
    )
    doctor.add_argument("--call", metavar="E164", help="also place one real notify call")
    doctor.add_argument("--yes", action="store_true", help="really place the --call")

    simulate = sub.add_parser("simulate", help="mock provider only: play the caller")
    actions = simulate.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_Parser
    )
    inbound = actions.add_parser("inbound", help="an inbound call rings")
    inbound.add_argument("--from", dest="from_number", required=True)
    inbound.add_argument("--to")
    say = actions.add_parser("say", help="the caller says something")
    say.add_argument("--call-id", required=True)
    say.add_argument("--text", required=True)
    keys = actions.add_parser("dtmf", help="the caller presses keys")
    keys.add_argument("--call-id", required=True)
    keys.add_argument("--digits", required=True)
    hangup = actions.add_parser("hangup", help="the caller hangs up")
    hangup.add_argument("--call-id", required=True)
    consult = actions.add_parser("consult", help="ask the call's agent a question; print it")
    consult.add_argument("--call-id", required=True)
    consult.add_argument("--text", required=True)
    for command in [*sub.choices.values(), *actions.choices.values()]:
        _add_globals(command, after_command=True)
    return top


def check_config(args: argparse.Namespace, environ: dict[str, str]) -> int:
    """C{check-config}: print the effective config, secrets redacted."""
    # The only command that reads the whole config: the others need no more
    # of it than where the socket is (L{where}).
    from voicecalld.config import (
        ConfigError,
        is_implicit_default,
        load_config,
        resolve_config_path,
    )
    from voicecalld.config.features import unbuilt_notes
    from voicecalld.config.schema import unstructure

    path = resolve_config_path(args.config, environ)
    try:
        loaded = load_config(path, environ, named=not is_implicit_default(args.config, environ))
    except ConfigError as e:
        raise Failure(EXIT_USAGE, f"bad config: {e}") from None
    for note in [str(n) for n in loaded.notes] + unbuilt_notes(loaded):
        print(f"voicecall: warning: {note}", file=sys.stderr)
    effective = unstructure(loaded.settings, redact=True)
    if args.json:
        print(json.dumps({"source": loaded.source, "config": effective}))
    else:
        print(f"# {loaded.source or 'built-in defaults'}")
        if loaded.from_environment:
            used = ", ".join(f"{k} from ${v}" for k, v in sorted(loaded.from_environment.items()))
            print(f"# from the environment: {used}")
        print(json.dumps(effective, indent=2))
    return EXIT_OK


def latency(args: argparse.Namespace, environ: dict[str, str], out: TextIO) -> int:
    """C{latency}: statistics over the store's most recent calls, read without the daemon."""
    from voicecalld.cli import latency as figures

    path = figures.store_path(args.state_dir, environ)
    try:
        records = figures.read_records(path, args.last)
    except figures.StoreUnreadable as e:
        raise Failure(EXIT_REFUSED, f"STORE_ERROR: {e}") from None
    result = figures.latency(records)
    render.Printer(args.json, out).value(result, figures.render(result))
    return EXIT_OK


def export(args: argparse.Namespace, environ: dict[str, str], out: TextIO) -> int:
    """C{export}: the store's ended calls as JSON lines, read without the daemon."""
    from voicecalld.cli import export as archive
    from voicecalld.cli.storefile import StoreUnreadable, store_path

    try:
        archive.export(store_path(args.state_dir, environ), args.since, out)
    except StoreUnreadable as e:
        raise Failure(EXIT_REFUSED, f"STORE_ERROR: {e}") from None
    return EXIT_OK


async def run_doctor(
    reactor: Any, args: argparse.Namespace, environ: dict[str, str], out: TextIO
) -> int:
    """C{doctor}: every readiness check; exit 1 when one failed."""
    from voicecalld.cli import doctor

    checks = await doctor.doctor(
        reactor,
        args.config,
        environ,
        socket=args.socket,
        state_dir=args.state_dir,
        call=args.call,
        yes=args.yes,
    )
    result = doctor.report(checks)
    print(json.dumps(result) if args.json else doctor.render(checks), file=out)
    return EXIT_OK if result["ok"] else EXIT_REFUSED


async def run(reactor: Any, args: argparse.Namespace, path: str, out: TextIO) -> int:
    """Run one command against the daemon at C{path}; returns the exit status."""
    printer = render.Printer(args.json, out)
    if args.command == "tail":
        return await _tail(reactor, path, args, printer)
    client = await connect(reactor, path)
    try:
        return await _command(client, args, printer)
    finally:
        client.transport.loseConnection()


async def execute(
    reactor: Any, args: argparse.Namespace, environ: dict[str, str], out: TextIO, err: TextIO
) -> int:
    """Run a daemon command within C{--timeout}; a failure is one line on C{err}."""
    path = where.socket_path(args.socket, environ)
    work = Deferred.fromCoroutine(run(reactor, args, path, out))
    if args.timeout is not None:
        work.addTimeout(args.timeout, reactor)
    try:
        return await work
    except Exception as e:
        failure = _explain(e, args, path)
        print(f"voicecall: {failure.message}", file=err)
        return failure.code


async def _call(client: ControlClient, command: type[amp.Command], **kwargs: Any) -> dict:
    return await client.callRemote(command, **{k: v for k, v in kwargs.items() if v is not None})


async def _command(client: ControlClient, args: argparse.Namespace, printer: render.Printer) -> int:
    name = args.command
    if name == "call":
        answer = await _call(client, c.Initiate, to=args.to, message=args.message, mode=args.mode)
        printer.value({"callId": answer["callId"]}, answer["callId"])
    elif name == "continue":
        answer = await _call(client, c.Continue, callId=args.call_id, message=args.message)
        printer.value(
            {"callId": answer["callId"], "transcript": answer["transcript"]}, answer["transcript"]
        )
    elif name == "speak":
        await _call(client, c.Speak, callId=args.call_id, message=args.message)
        printer.ok()
    elif name == "end":
        await _call(client, c.End, callId=args.call_id)
        printer.ok()
    elif name == "transfer":
        await _call(client, c.Transfer, callId=args.call_id, to=args.to, message=args.message)
        printer.ok()
    elif name == "dtmf":
        await _call(client, c.SendDtmf, callId=args.call_id, digits=args.digits)
        printer.ok()
    elif name == "status":
        answer = await _call(client, c.Status, callId=args.call_id, recent=args.recent)
        if answer.get("call") is not None:
            printer.value(answer["call"], render.call(answer["call"]))
        else:
            printer.value({"calls": answer["calls"]}, render.calls(answer["calls"]))
    elif name == "simulate":
        answer = await _call(
            client,
            c.Simulate,
            action=args.action,
            callId=getattr(args, "call_id", None),
            From=getattr(args, "from_number", None),
            to=getattr(args, "to", None),
            text=getattr(args, "text", None),
            digits=getattr(args, "digits", None),
        )
        if args.action == "inbound":
            printer.value({"callId": answer["callId"]}, answer["callId"])
        elif args.action == "consult":
            printer.value({"text": answer.get("text")}, answer.get("text") or "(no answer)")
        else:
            printer.ok()
    elif name == "expose":
        answer = await _call(client, c.Expose, mode=args.mode)
        url = answer.get("publicUrl")
        printer.value(
            {"how": answer["how"], "publicUrl": url, "streamUrl": answer.get("streamUrl")},
            url if args.mode != "off" else f"exposure off; webhook URL now {url}",
        )
    return EXIT_OK


async def _tail(reactor: Any, path: str, args: argparse.Namespace, printer: render.Printer) -> int:
    client = ControlClient(on_event=printer.event)
    await connect(reactor, path, client)
    await _call(client, c.Subscribe, callId=args.call_id)
    stopped: Deferred[None] = Deferred()
    reactor.addSystemEventTrigger(
        "before", "shutdown", lambda: stopped.called or stopped.callback(None)
    )
    client.lost.addCallback(lambda _: stopped.called or stopped.callback(None))
    await stopped
    return EXIT_OK


_BUG = "voicecalld failed on this request (its log says why)"


def _explain(failure: BaseException, args: argparse.Namespace, path: str) -> Failure:
    if isinstance(failure, Failure):
        return failure
    if isinstance(failure, Unreachable):
        return Failure(EXIT_UNREACHABLE, str(failure))
    if isinstance(failure, VoiceCallError):
        return Failure(EXIT_REFUSED, f"{failure.code}: {failure.message}")
    if isinstance(failure, amp.UnhandledCommand):
        return Failure(
            EXIT_REFUSED,
            f"UNKNOWN_COMMAND: voicecalld does not know `{args.command}` (is it older than"
            f" voicecall {__version__}?)",
        )
    if isinstance(failure, amp.RemoteAmpError):
        # A code this voicecall does not know (AMP then says UNKNOWN); AMP's
        # own "Unknown Error" is an older daemon's bug.
        description = str(failure.description or "")
        if description in ("", "Unknown Error"):
            return Failure(EXIT_REFUSED, f"INTERNAL: {_BUG}")
        code = failure.errorCode.decode("ascii", "replace")
        return Failure(EXIT_REFUSED, f"{code}: {description}")
    if isinstance(failure, TimeoutError):
        return Failure(EXIT_REFUSED, f"TIMEOUT: no answer from voicecalld within {args.timeout} s")
    if isinstance(failure, ConnectionDone | ConnectionLost):
        return Failure(
            EXIT_UNREACHABLE,
            f"voicecalld at {path} closed the connection (only"
            " the daemon's user or the socket's group may connect)",
        )
    return Failure(EXIT_REFUSED, f"INTERNAL: {type(failure).__name__}: {failure}")


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Entry point of the C{voicecall} console script."""
    args = parser().parse_args(argv)
    environ = dict(os.environ)
    if args.command in ("check-config", "latency", "export"):
        try:
            if args.command == "latency":
                raise SystemExit(latency(args, environ, sys.stdout))
            if args.command == "export":
                raise SystemExit(export(args, environ, sys.stdout))
            raise SystemExit(check_config(args, environ))
        except Failure as f:
            print(f"voicecall: {f.message}", file=sys.stderr)
            raise SystemExit(f.code) from None

    async def command(reactor: Any) -> None:
        if args.command == "doctor":
            raise SystemExit(await run_doctor(reactor, args, environ, sys.stdout))
        raise SystemExit(await execute(reactor, args, environ, sys.stdout, sys.stderr))

    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    react(lambda reactor: Deferred.fromCoroutine(command(reactor)))
    raise SystemExit(EXIT_OK)
