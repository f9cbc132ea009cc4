"""
C{voicecall doctor}: is this machine ready to place and take calls?

Each check is one L{Check} (C{ok}, C{warn} or C{fail}, what was seen, how to
fix it).  Everything runs on the CLI's reactor: HTTP through treq, nothing
blocking.  The webhook self-test signs a request as the carrier would (Twilio)
or sends an unsigned one (the others, whose keys we cannot sign with) to the
public URL and reads the daemon's own answer; the stream check asks for a
WebSocket upgrade without a token and expects the daemon's refusal.
"""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import treq
from attrs import asdict, frozen

from voicecalld import paths

OK, WARN, FAIL = "ok", "warn", "fail"
TEST_MESSAGE = "voicecalld doctor test call."
SELF_TEST_TYPE = "doctor-selftest"
# Below this much free space on the state file system, doctor warns.
LOW_FREE_BYTES = 64 * 1024 * 1024
# The probe write: a write-ahead log's worth (the store truncates its log to this).
PROBE_BYTES = 64 * 1024
PROBE_NAME = ".doctor-space-probe"
FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)
HTTP_TIMEOUT = 10.0


@frozen
class Check:
    """One readiness check's outcome, as printed and as C{--json}."""

    id: str
    status: str
    detail: str
    fix: str = ""


def report(checks: list[Check]) -> dict[str, Any]:
    """The C{--json} document."""
    return {"ok": all(c.status != FAIL for c in checks), "checks": [asdict(c) for c in checks]}


def render(checks: list[Check]) -> str:
    """One line per check: status, id, detail, and the fix when there is one."""
    lines = []
    for c in checks:
        line = f"{c.status:<4} {c.id}: {c.detail}"
        if c.fix and c.status != OK:
            line += f" -- fix: {c.fix}"
        lines.append(line)
    return "\n".join(lines)


def check_config(config: str | None, environ: Mapping[str, str]) -> tuple[Check, Any]:
    """Load the config as the daemon does; the check and the loaded config (or None)."""
    from voicecalld.config import ConfigError, is_implicit_default, load_config, resolve_config_path

    path = resolve_config_path(config, environ)
    try:
        loaded = load_config(path, dict(environ), named=not is_implicit_default(config, environ))
    except ConfigError as e:
        return (
            Check(
                "config", FAIL, str(e), "correct that key in that file (`voicecall check-config`)"
            ),
            None,
        )
    return Check("config", OK, f"{loaded.source or 'built-in defaults'} loads"), loaded


def check_state_dir(state: str) -> Check:
    """The state directory: ours, private, writable, with room left."""
    try:
        info = os.stat(state)
    except FileNotFoundError:
        return Check(
            "state-dir",
            FAIL,
            f"{state} does not exist",
            f"start voicecalld once (it creates it) or `mkdir -m 700 -p {state}`",
        )
    if not stat.S_ISDIR(info.st_mode):
        return Check("state-dir", FAIL, f"{state} is not a directory", "remove it or pick another")
    if info.st_uid != os.getuid():
        return Check(
            "state-dir",
            FAIL,
            f"{state} belongs to uid {info.st_uid}",
            f"chown it to uid {os.getuid()}",
        )
    if info.st_mode & 0o077:
        return Check(
            "state-dir",
            WARN,
            f"{state} has mode {stat.S_IMODE(info.st_mode):o}; others can read the call store",
            f"chmod 700 {state}",
        )
    if not os.access(state, os.W_OK | os.X_OK):
        return Check("state-dir", FAIL, f"{state} is not writable", f"chmod u+rwx {state}")
    return Check("state-dir", OK, f"{state}: private, writable")


def probe_write(state: str) -> None:
    """Write, fsync and remove a small file in C{state}, as the store's next write would."""
    path = os.path.join(state, PROBE_NAME)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, b"\0" * PROBE_BYTES)
        os.fsync(fd)
    finally:
        os.close(fd)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


async def check_store_space(
    state: str, *, statvfs: Any = os.statvfs, write: Any = probe_write
) -> Check:
    """
    Room for the call store: a small write in the state directory (in a
    thread) and the file system's free space; fail when it is full or
    read-only, warn under L{LOW_FREE_BYTES}.
    """
    from twisted.internet.threads import deferToThread

    store = os.path.join(state, paths.STORE_NAME)
    fix_space = f"free space on the file system holding {state} (or move the state directory)"
    if os.path.exists(store) and not os.access(store, os.R_OK | os.W_OK):
        return Check("store-space", FAIL, f"{store} is not writable", f"chmod u+rw {store}")
    try:
        await deferToThread(write, state)
    except OSError as e:
        if e.errno in FULL_ERRNOS:
            return Check(
                "store-space",
                FAIL,
                f"{state} is full ({e.strerror}): the daemon refuses new calls with STORE_ERROR",
                fix_space,
            )
        return Check(
            "store-space",
            FAIL,
            f"cannot write in {state}: {e.strerror or e}",
            "make that file system writable for voicecalld's user (is it mounted read-only?)",
        )
    fs = statvfs(state)
    room = fs.f_bavail * fs.f_frsize
    if room < LOW_FREE_BYTES:
        return Check(
            "store-space",
            WARN,
            f"{state}: only {_size(room)} free; new calls are refused once the store fills it",
            fix_space,
        )
    return Check("store-space", OK, f"{state}: {_size(room)} free, takes writes")


def _size(n: int) -> str:
    if n >= 1024 * 1024 * 1024:
        return f"{n / (1024 * 1024 * 1024):.1f} GiB"
    if n >= 1024 * 1024:
        return f"{n // (1024 * 1024)} MiB"
    return f"{n // 1024} KiB"


def check_control_socket(path: str) -> Check:
    """The control socket: present and closed to other users."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        return Check(
            "control-socket",
            FAIL,
            f"{path} does not exist",
            "start voicecalld (see `voicecalld --help`)",
        )
    if not stat.S_ISSOCK(info.st_mode):
        return Check(
            "control-socket", FAIL, f"{path} is not a socket", "remove it, restart voicecalld"
        )
    if info.st_mode & 0o007:
        return Check(
            "control-socket",
            FAIL,
            f"{path} has mode {stat.S_IMODE(info.st_mode):o}: any local user can place calls",
            f"chmod o-rwx {path} (and keep its directory private)",
        )
    return Check("control-socket", OK, f"{path} (mode {stat.S_IMODE(info.st_mode):o})")


async def check_carrier(reactor: Any, settings: Any, http: Any = treq) -> Check:
    """One read-only REST request with the configured credentials and base URL."""
    from voicecalld.config.secret import reveal
    from voicecalld.providers.common.rest import RestError

    provider = settings.provider
    fix = f"set {provider} credentials in the config (the carrier's console shows them)"
    try:
        if provider == "mock":
            return Check("carrier-credentials", OK, "mock provider: no carrier account")
        if provider == "twilio":
            from voicecalld.providers.twilio.rest import TwilioRest, api_root

            t = settings.twilio
            if not t.account_sid or t.auth_token is None:
                return Check("carrier-credentials", FAIL, "twilio.accountSid/authToken unset", fix)
            rest: Any = TwilioRest(
                account_sid=t.account_sid,
                auth_token=reveal(t.auth_token) or "",
                base_url=api_root(t.region, t.api_base_url),
                clock=reactor,
                http=http,
            )
            await rest.fetch_account()
        elif provider == "telnyx":
            from voicecalld.providers.telnyx.rest import TelnyxRest

            t = settings.telnyx
            if t.api_key is None:
                return Check("carrier-credentials", FAIL, "telnyx.apiKey unset", fix)
            rest = TelnyxRest(
                api_key=reveal(t.api_key) or "", base_url=t.api_base_url, clock=reactor, http=http
            )
            await rest.balance()
        else:
            from voicecalld.providers.plivo.rest import PlivoRest

            p = settings.plivo
            if not p.auth_id or p.auth_token is None:
                return Check("carrier-credentials", FAIL, "plivo.authId/authToken unset", fix)
            rest = PlivoRest(
                auth_id=p.auth_id,
                auth_token=reveal(p.auth_token) or "",
                base_url=p.api_base_url,
                clock=reactor,
                http=http,
            )
            await rest.fetch_account()
    except RestError as e:
        if e.status in (401, 403):
            return Check(
                "carrier-credentials",
                FAIL,
                str(e),
                f"{provider} refused the credentials: copy them again from the carrier's console",
            )
        return Check(
            "carrier-credentials", FAIL, str(e), "check the carrier's API base URL and network"
        )
    return Check(
        "carrier-credentials", OK, f"{provider} accepted the credentials (read-only request)"
    )


def webhook_url(settings: Any) -> str:
    """The URL carriers are told to call: C{publicUrl}, else the local server's."""
    if settings.public_url:
        return settings.public_url
    host = settings.serve.bind
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.serve.port}{settings.serve.path}"


def stream_url(settings: Any) -> str:
    """The media stream's URL under the webhook URL's origin."""
    parts = urlsplit(webhook_url(settings))
    scheme = "wss" if parts.scheme == "https" else "ws"
    if settings.realtime.enabled:
        from voicecalld.realtime.setup import realtime_stream_path

        path = realtime_stream_path(settings)
    else:
        path = settings.streaming.stream_path
    return urlunsplit((scheme, parts.netloc, path, "", ""))


def check_exposure(settings: Any) -> Check:
    """Can carriers reach the webhook URL at all (loopback, private, CGNAT, link-local)?"""
    from voicecalld.web.reachability import unreachable_reason

    url = webhook_url(settings)
    if settings.provider == "mock":
        return Check("webhook-exposure", OK, f"mock provider: {url} need not be public")
    if not settings.public_url and settings.tunnel.provider not in (None, "none"):
        return Check(
            "webhook-exposure",
            WARN,
            f"the {settings.tunnel.provider} tunnel's URL is known only to the running daemon",
            "set publicUrl to the tunnel's URL so doctor can test it",
        )
    why = unreachable_reason(url)
    if why is not None:
        return Check(
            "webhook-exposure",
            FAIL,
            f"carriers cannot reach {url}: {why}",
            "set publicUrl to an https URL carriers can reach, or tunnel.provider",
        )
    return Check("webhook-exposure", OK, f"{url} is a public address")


async def _exchange(http: Any, reactor: Any, url: str, **options: Any) -> tuple[int, bytes]:
    from twisted.internet.defer import Deferred

    async def exchange() -> tuple[int, bytes]:
        response = await http.request("POST" if "data" in options else "GET", url, **options)
        return response.code, await response.content()

    work = Deferred.fromCoroutine(exchange())
    work.addTimeout(HTTP_TIMEOUT, reactor)
    return await work


async def check_webhook(reactor: Any, settings: Any, http: Any = treq) -> Check:
    """
    A self-test request to the public webhook URL.  For Twilio it is signed
    with the Auth Token; the daemon verifies it and refuses the unknown
    C{type}, which proves both the route and the URL the signature covers.
    """
    from voicecalld.config.secret import reveal

    url = webhook_url(settings)
    if settings.provider == "mock":
        return Check("webhook-selftest", OK, f"mock provider: no carrier calls {url}")
    separator = "&" if "?" in url else "?"
    target = f"{url}{separator}type={SELF_TEST_TYPE}"
    form = [("CallSid", "CAdoctor"), ("AccountSid", settings.twilio.account_sid or "")]
    headers: dict[str, list[str]] = {}
    signed = settings.provider == "twilio" and settings.twilio.auth_token is not None
    if signed:
        from voicecalld.providers.twilio.signature import TwilioSignature

        token = reveal(settings.twilio.auth_token) or ""
        headers["X-Twilio-Signature"] = [TwilioSignature(token, form, b"").compute(target).decode()]
    try:
        code, body = await _exchange(http, reactor, target, data=form, headers=headers)
    except Exception as e:
        return Check(
            "webhook-selftest",
            FAIL,
            f"no answer from {url}: {e or type(e).__name__}",
            "start voicecalld, and point publicUrl (or the tunnel/proxy) at serve.port",
        )
    if code == 404:
        return Check(
            "webhook-selftest",
            FAIL,
            f"{url} answered 404: not voicecalld's webhook path",
            "make the public path match serve.path (check the proxy)",
        )
    if signed and code in (401, 403):
        return Check(
            "webhook-selftest",
            FAIL,
            f"voicecalld refused our signed request to {url} (HTTP {code})",
            "publicUrl must be exactly the URL Twilio calls (scheme, host, port, path)",
        )
    # An unknown call's request is answered with a hang-up document, and
    # changes nothing.
    if signed and code == 200 and b"<Hangup" in body:
        return Check("webhook-selftest", OK, f"{url} reached voicecalld; the signature verified")
    if not signed and code in (400, 401, 403):
        return Check(
            "webhook-selftest", OK, f"{url} reached voicecalld (it refused the unsigned request)"
        )
    return Check(
        "webhook-selftest",
        FAIL,
        f"{url} answered HTTP {code}, not as voicecalld does",
        "point publicUrl (or the tunnel/proxy) at voicecalld's serve.port",
    )


async def check_stream(reactor: Any, settings: Any, route: Any = None) -> Check:
    """
    A WebSocket handshake on the stream path, closed at once: voicecalld
    accepts the upgrade and wants a token only in the C{start} message.
    """
    from voicecalld.cli.handshake import opens

    url = stream_url(settings)
    why = await opens(reactor, url, route=route, timeout=HTTP_TIMEOUT)
    if why is not None:
        return Check(
            "media-stream",
            FAIL,
            f"{url}: {why}",
            "the proxy or tunnel must pass WebSocket upgrades on the stream path to serve.port",
        )
    return Check("media-stream", OK, f"{url} accepts WebSocket upgrades")


async def check_stt(reactor: Any, settings: Any, route: Any = None, http: Any = treq) -> Check:
    """
    The streaming STT vendor with its key: Deepgram and ElevenLabs by one
    read-only GET on their API's host; OpenAI by a handshake closed at once.
    """
    from voicecalld.cli.handshake import opens
    from voicecalld.config.model import DeepgramStreamingSettings, ElevenLabsStreamingSettings
    from voicecalld.config.secret import reveal

    streaming = settings.streaming
    name = streaming.provider or "openai"
    block = streaming.providers.get(name)
    key = reveal(getattr(block, "api_key", None)) if block is not None else None
    setting = f"streaming.providers.{name}"
    if name == "deepgram":
        block = block or DeepgramStreamingSettings()
        if not key:
            return _no_key("stt", "Deepgram", setting, "DEEPGRAM_API_KEY")
        url = rest_url(block.base_url, "/v1/", "/v1/projects")
        return await _vendor_get(
            reactor, http, "stt", "Deepgram", url, {"Authorization": f"Token {key}"}, setting
        )
    if name == "elevenlabs":
        block = block or ElevenLabsStreamingSettings()
        if not key:
            return _no_key("stt", "ElevenLabs", setting, "ELEVENLABS_API_KEY")
        url = rest_url(block.base_url, "/v1/", "/v1/models")
        return await _vendor_get(
            reactor, http, "stt", "ElevenLabs", url, {"xi-api-key": key}, setting
        )
    if name not in ("openai", "openai-realtime"):
        return Check("stt", WARN, f"{name}: not checked by this doctor")
    url = streaming.stt_url
    if not key:
        return Check("stt", FAIL, f"no {name} STT key", f"set streaming.providers.{name}.apiKey")
    why = await opens(
        reactor, url, headers={"Authorization": f"Bearer {key}"}, route=route, timeout=HTTP_TIMEOUT
    )
    if why is not None:
        return Check(
            "stt",
            FAIL,
            f"{url}: {why}",
            f"check streaming.sttUrl and streaming.providers.{name}.apiKey",
        )
    return Check("stt", OK, f"{url} accepted the key (handshake, closed at once)")


def rest_url(ws_url: str, marker: str, path: str) -> str:
    """
    A vendor's REST URL on the host of its WebSocket URL: C{https} for
    C{wss} (C{http} for C{ws}), what the path has before C{marker}, then C{path}.
    """
    parts = urlsplit(ws_url)
    scheme = {"wss": "https", "ws": "http"}.get(parts.scheme, parts.scheme)
    prefix = parts.path.split(marker, 1)[0] if marker in parts.path else parts.path
    return urlunsplit((scheme, parts.netloc, prefix.rstrip("/") + path, "", ""))


def _no_key(check: str, vendor: str, setting: str, env: str) -> Check:
    return Check(check, FAIL, f"no {vendor} API key", f"set {setting}.apiKey (or ${env})")


async def _vendor_get(
    reactor: Any,
    http: Any,
    check: str,
    vendor: str,
    url: str,
    headers: dict[str, str],
    setting: str,
    *,
    model: str | None = None,
    refusals: tuple[int, ...] = (401, 403),
) -> Check:
    """One read-only GET to a speech vendor's API with its key (in a header, never shown)."""
    try:
        code, _ = await _exchange(http, reactor, url, headers={k: [v] for k, v in headers.items()})
    except Exception as e:
        return Check(
            check,
            FAIL,
            f"no answer from {url}: {e or type(e).__name__}",
            f"check {setting}.baseUrl and the network",
        )
    if code in refusals:
        return Check(
            check, FAIL, f"{vendor} refused the key (HTTP {code})", f"set a valid {setting}.apiKey"
        )
    if code == 404 and model is not None:
        return Check(
            check,
            FAIL,
            f"{vendor} has no model {model} (HTTP 404 from {url})",
            f"set {setting}.model to a model the key may use",
        )
    if code >= 400:
        return Check(
            check,
            FAIL if code < 500 else WARN,
            f"{url} answered HTTP {code}",
            f"check {setting}.baseUrl (it must be {vendor}'s)",
        )
    path = urlsplit(url).path
    if model is not None:
        return Check(check, OK, f"{vendor} accepted the key; model {model} found (GET {path})")
    return Check(check, OK, f"{vendor} accepted the key (read-only GET {path})")


async def check_tts(reactor: Any, settings: Any, http: Any = treq) -> Check:
    """OpenAI speech: GET the model with the key (read-only)."""
    from voicecalld.config.secret import reveal

    name = settings.tts.provider or "openai"
    if name == "elevenlabs":
        return await check_elevenlabs(settings.tts.provider_settings("elevenlabs"))
    if name != "openai":
        return Check("tts", WARN, f"{name}: not checked by this doctor", "")
    block = settings.tts.provider_settings("openai")
    key = reveal(block.api_key) or os.environ.get("OPENAI_API_KEY")
    if not key:
        return Check("tts", FAIL, "no OpenAI API key", "set tts.providers.openai.apiKey")
    base = (block.base_url or "https://api.openai.com/v1").rstrip("/")
    try:
        code, _ = await _exchange(
            http,
            reactor,
            f"{base}/models/{block.model}",
            headers={"Authorization": [f"Bearer {key}"]},
        )
    except Exception as e:
        return Check(
            "tts", FAIL, f"no answer from {base}: {e}", "check tts.providers.openai.baseUrl"
        )
    if code in (401, 403):
        return Check(
            "tts",
            FAIL,
            f"{base} refused the key (HTTP {code})",
            "set a valid tts.providers.openai.apiKey",
        )
    if code >= 400:
        return Check(
            "tts", WARN, f"{base} answered HTTP {code} for {block.model}", "check the model"
        )
    return Check("tts", OK, f"openai {block.model} / voice {block.speaker_voice}")


async def check_realtime(reactor: Any, settings: Any, http: Any = treq) -> Check:
    """
    The realtime voice vendor with its key, by one read-only GET of the
    configured model on the API's host: OpenAI C{/v1/models/{model}}, Google
    C{/v1beta/models/{model}} (the version of the Live URL).
    """
    from voicecalld.config.model import GoogleRealtimeSettings, OpenAIRealtimeSettings
    from voicecalld.config.secret import reveal

    name = settings.realtime.provider or "openai"
    setting = f"realtime.providers.{name}"
    if name == "openai":
        block = settings.realtime.providers.get("openai") or OpenAIRealtimeSettings()
        key = reveal(block.api_key) or os.environ.get("OPENAI_API_KEY")
        if not key:
            return _no_key("realtime", "OpenAI", setting, "OPENAI_API_KEY")
        model = block.model
        url = rest_url(block.base_url, "/v1/", f"/v1/models/{model}")
        headers = {"Authorization": f"Bearer {key}"}
        return await _vendor_get(
            reactor, http, "realtime", "OpenAI", url, headers, setting, model=model
        )
    if name == "google":
        block = settings.realtime.providers.get("google") or GoogleRealtimeSettings()
        key = reveal(block.api_key)
        if not key:
            return _no_key("realtime", "Google", setting, "GEMINI_API_KEY")
        model = block.model.removeprefix("models/")
        version = re.search(r"generativelanguage\.(v1\w*)\.", block.base_url)
        path = f"/{version.group(1) if version else 'v1beta'}/models/{model}"
        url = rest_url(block.base_url, "/ws/", path)
        # Google answers a bad key with 400 (INVALID_ARGUMENT).
        return await _vendor_get(
            reactor,
            http,
            "realtime",
            "Google",
            url,
            {"x-goog-api-key": key},
            setting,
            model=model,
            refusals=(400, 401, 403),
        )
    return Check("realtime", WARN, f"{name}: not checked by this doctor")


def _voice_lookup(key: str, base_url: str | None, voice_id: str) -> Any:
    from elevenlabs.client import ElevenLabs

    options = {"base_url": base_url} if base_url else {}
    return ElevenLabs(api_key=key, timeout=HTTP_TIMEOUT, **options).voices.get(voice_id)


async def check_elevenlabs(block: Any) -> Check:
    """ElevenLabs: the SDK's read-only voice lookup, in a thread (it blocks)."""
    from twisted.internet.threads import deferToThread

    from voicecalld.config.secret import reveal

    key = reveal(block.api_key) or os.environ.get("ELEVENLABS_API_KEY")
    if not key:
        return Check("tts", FAIL, "no ElevenLabs API key", "set tts.providers.elevenlabs.apiKey")
    voice = block.speaker_voice_id
    try:
        await deferToThread(_voice_lookup, key, block.base_url, voice)
    except Exception as e:
        status = getattr(e, "status_code", None)
        if status in (401, 403):
            return Check(
                "tts",
                FAIL,
                f"ElevenLabs refused the key (HTTP {status})",
                "set a valid tts.providers.elevenlabs.apiKey",
            )
        if status == 404:
            return Check(
                "tts",
                FAIL,
                f"ElevenLabs has no voice {voice}",
                "set tts.providers.elevenlabs.voiceId to one of your voices",
            )
        return Check(
            "tts",
            FAIL,
            f"ElevenLabs voice lookup failed: {status or type(e).__name__}",
            "check tts.providers.elevenlabs.baseUrl",
        )
    return Check("tts", OK, f"elevenlabs voice {voice} found")


async def check_call(reactor: Any, socket: str, to: str | None, yes: bool) -> Check:
    """C{--call}: one real notify call through the daemon, or a dry run without C{--yes}."""
    from voicecalld.control import commands as c
    from voicecalld.control.client import connect

    if not yes:
        return Check("test-call", OK, f"dry run: would call {to} (add --yes to place it)")
    try:
        client = await connect(reactor, socket)
    except Exception as e:
        return Check("test-call", FAIL, str(e), "start voicecalld")
    try:
        answer = await client.callRemote(c.Initiate, to=to, message=TEST_MESSAGE, mode="notify")
    except Exception as e:
        return Check("test-call", FAIL, f"{type(e).__name__}: {e}", "see the daemon's log")
    finally:
        client.transport.loseConnection()
    return Check("test-call", OK, f"placed call {answer['callId']} to {to}")


async def doctor(
    reactor: Any,
    config: str | None,
    environ: Mapping[str, str],
    *,
    socket: str | None = None,
    state_dir: str | None = None,
    call: str | None = None,
    yes: bool = False,
    http: Any = treq,
    route: Any = None,
) -> list[Check]:
    """Every check, in order; a bad config skips those that need it."""
    first, loaded = check_config(config, environ)
    checks = [first]
    state = paths.state_dir(state_dir, environ)
    if loaded is not None:
        s = loaded.settings
        checks.append(await check_carrier(reactor, s, http))
        checks.append(check_exposure(s))
        checks.append(await check_webhook(reactor, s, http))
        if s.streaming.enabled or s.realtime.enabled:
            checks.append(await check_stream(reactor, s, route))
        checks.append(await check_tts(reactor, s, http))
        if s.streaming.enabled:
            checks.append(await check_stt(reactor, s, http=http))
        if s.realtime.enabled:
            checks.append(await check_realtime(reactor, s, http))
        configured = s.control_socket
    else:
        configured = None
    path = socket or paths.control_socket(configured, environ, state)
    checks.append(check_control_socket(path))
    checks.append(check_state_dir(state))
    if os.path.isdir(state):
        checks.append(await check_store_space(state))
    if call:
        checks.append(await check_call(reactor, path, call, yes))
    return checks
