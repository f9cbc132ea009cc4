"""
Fake OpenAI and ElevenLabs speech APIs, served over real HTTP on 127.0.0.1.

C{POST /v1/audio/speech} streams 24 kHz PCM and
C{POST /v1/text-to-speech/{voice}/stream} streams mu-law 8 kHz, both with HTTP
chunked encoding, as a L{Script} says: how many chunks, delays between them,
holding the headers or the last chunk until a Deferred fires, failing with an
error status and the vendor's JSON, or dropping the connection mid-stream.
Every request is kept as a L{Recorded} for assertions.
"""

from __future__ import annotations

import json
import math
from typing import Any

import attrs
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from voicecalld.media.codec import ulaw_encode

OPENAI_RATE = 24000


def sine_pcm(seconds: float, rate: int = OPENAI_RATE, freq: float = 440.0) -> bytes:
    """A sine tone as s16le mono PCM."""
    count = round(seconds * rate)
    samples = (round(8000 * math.sin(2 * math.pi * freq * i / rate)) for i in range(count))
    return b"".join(s.to_bytes(2, "little", signed=True) for s in samples)


def sine_ulaw(seconds: float, freq: float = 440.0) -> bytes:
    """A sine tone as 8 kHz mu-law."""
    return ulaw_encode(sine_pcm(seconds, 8000, freq))


def split(data: bytes, parts: int) -> list[bytes]:
    """Cut C{data} into C{parts} chunks at odd offsets (vendors do not keep samples whole)."""
    size = len(data) // parts | 1
    chunks = [data[i * size : (i + 1) * size] for i in range(parts - 1)]
    return [*chunks, data[(parts - 1) * size :]]


def openai_error(message: str, code: str = "invalid_api_key") -> dict[str, Any]:
    """An error body as OpenAI sends it."""
    return {"error": {"message": message, "type": "invalid_request_error", "code": code}}


def elevenlabs_error(message: str, status: str = "invalid_api_key") -> dict[str, Any]:
    """An error body as ElevenLabs sends it."""
    return {"detail": {"status": status, "message": message}}


@attrs.define
class Script:
    """How the fake answers a vendor's speech requests."""

    chunks: list[bytes]
    content_type: str
    delay: float = 0.0
    hold_headers: Deferred[None] | None = None
    hold_last: Deferred[None] | None = None
    status: int = 200
    error: Any = None
    drop_after: int | None = None


def openai_script(**kwargs: Any) -> Script:
    """Half a second of 440 Hz at 24 kHz in four chunks, unless told otherwise."""
    kwargs.setdefault("chunks", split(sine_pcm(0.5), 4))
    kwargs.setdefault("content_type", "audio/pcm")
    return Script(**kwargs)


def elevenlabs_script(**kwargs: Any) -> Script:
    """Half a second of 440 Hz mu-law in four chunks, unless told otherwise."""
    kwargs.setdefault("chunks", split(sine_ulaw(0.5), 4))
    kwargs.setdefault("content_type", "audio/basic")
    return Script(**kwargs)


@attrs.define(eq=False)
class Recorded:
    """One request the fake received, and what became of it."""

    vendor: str
    path: str
    args: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    chunks_sent: int = 0
    lost: bool = False
    ended: Deferred[bool] = attrs.field(factory=Deferred)
    """Fires with C{lost} once the response finished or the connection went."""


class _Speech(Resource):
    """One vendor's speech endpoint."""

    isLeaf = True

    def __init__(self, server: FakeTtsServer, vendor: str) -> None:
        super().__init__()
        self._server = server
        self._vendor = vendor

    def render_POST(self, request: Request) -> Any:
        script: Script = getattr(self._server, self._vendor)
        headers = request.requestHeaders.getAllRawHeaders()
        record = Recorded(
            vendor=self._vendor,
            path=request.path.decode(),
            args={k.decode(): [v.decode() for v in vs] for k, vs in request.args.items()},
            headers={k.decode().lower(): v[0].decode() for k, v in headers},
            body=json.loads(request.content.read() or b"null"),
        )
        self._server.requests.append(record)
        request.notifyFinish().addBoth(lambda result: self._ended(record, result))
        if script.hold_headers is not None:
            script.hold_headers.addCallback(lambda _: self._respond(request, script, record))
        else:
            self._respond(request, script, record)
        return NOT_DONE_YET

    def _ended(self, record: Recorded, result: Any) -> None:
        record.lost = result is not None
        record.ended.callback(record.lost)

    def _respond(self, request: Request, script: Script, record: Recorded) -> None:
        if record.lost:
            return
        if script.status != 200:
            request.setResponseCode(script.status)
            request.setHeader("content-type", "application/json")
            request.write(json.dumps(script.error).encode())
            request.finish()
            return
        request.setResponseCode(200)
        request.setHeader("content-type", script.content_type)
        self._send(request, script, record, 0)

    def _send(self, request: Request, script: Script, record: Recorded, index: int) -> None:
        if record.lost:
            return
        if index == script.drop_after:
            request.transport.abortConnection()
            return
        if index == len(script.chunks):
            request.finish()
            return
        if index == len(script.chunks) - 1 and script.hold_last is not None:
            hold, script.hold_last = script.hold_last, None
            hold.addCallback(lambda _: self._write(request, script, record, index))
            return
        self._write(request, script, record, index)

    def _write(self, request: Request, script: Script, record: Recorded, index: int) -> None:
        if record.lost:
            return
        request.write(script.chunks[index])
        record.chunks_sent += 1
        self._server.later(script.delay, self._send, request, script, record, index + 1)


class _Voices(Resource):
    """C{/v1/text-to-speech/{voice}}: one child per voice id."""

    def __init__(self, server: FakeTtsServer) -> None:
        super().__init__()
        self._server = server

    def getChild(self, path: bytes, request: Request) -> Resource:
        voice = Resource()
        voice.putChild(b"stream", _Speech(self._server, "elevenlabs"))
        return voice


class _Connections(WrappingFactory):
    """Keeps the open connections, so the fake can close them all when it stops."""

    def __init__(self, wrapped: Site) -> None:
        super().__init__(wrapped)
        self._gone: list[Deferred[None]] = []

    def unregisterProtocol(self, p: Any) -> None:
        super().unregisterProtocol(p)
        if not self.protocols:
            waiting, self._gone = self._gone, []
            for d in waiting:
                d.callback(None)

    def close_all(self) -> Deferred[None]:
        """Abort every open connection; fires once all are gone."""
        if not self.protocols:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._gone.append(d)
        for p in list(self.protocols):
            p.transport.abortConnection()
        return d


class _Models(Resource):
    """C{GET /v1/models/{model}}: 401 unless the Bearer key is C{openai_key} (when set)."""

    isLeaf = True

    def __init__(self, fake: FakeTtsServer) -> None:
        super().__init__()
        self.fake = fake

    def render_GET(self, request: Request) -> bytes:
        expected = self.fake.openai_key
        given = (request.getHeader("authorization") or "").removeprefix("Bearer ")
        request.setHeader(b"content-type", b"application/json")
        if expected is not None and given != expected:
            request.setResponseCode(401)
            return (
                b'{"error": {"message": "Incorrect API key provided", "code": "invalid_api_key"}}'
            )
        model = "/".join(p.decode() for p in request.postpath)
        return json.dumps({"id": model, "object": "model"}).encode()


class _VoiceInfo(Resource):
    """C{GET /v1/voices/{id}}: 401 unless C{xi-api-key} is C{elevenlabs_key} (when set)."""

    isLeaf = True

    def __init__(self, fake: FakeTtsServer) -> None:
        super().__init__()
        self.fake = fake

    def render_GET(self, request: Request) -> bytes:
        expected = self.fake.elevenlabs_key
        request.setHeader(b"content-type", b"application/json")
        if expected is not None and request.getHeader("xi-api-key") != expected:
            request.setResponseCode(401)
            return b'{"detail": {"status": "invalid_api_key", "message": "Invalid API key"}}'
        voice = "/".join(p.decode() for p in request.postpath)
        return json.dumps({"voice_id": voice, "name": "Fake voice"}).encode()


class FakeTtsServer:
    """Both vendors' speech APIs, scripted through C{openai} and C{elevenlabs}."""

    def __init__(self, reactor: Any = None) -> None:
        self.reactor = reactor if reactor is not None else global_reactor
        self.openai = openai_script()
        self.elevenlabs = elevenlabs_script()
        self.requests: list[Recorded] = []
        #: The OpenAI key C{/v1/models} accepts; None accepts any.
        self.openai_key: str | None = None
        #: The ElevenLabs key C{/v1/voices} accepts; None accepts any.
        self.elevenlabs_key: str | None = None
        self.port = 0
        self._pending: list[Any] = []
        self._listening: Any = None
        self._connections: _Connections | None = None

    def resource(self) -> Resource:
        """The resource tree: C{/v1/audio/speech} and C{/v1/text-to-speech/{voice}/stream}."""
        audio = Resource()
        audio.putChild(b"speech", _Speech(self, "openai"))
        v1 = Resource()
        v1.putChild(b"audio", audio)
        v1.putChild(b"text-to-speech", _Voices(self))
        v1.putChild(b"models", _Models(self))
        v1.putChild(b"voices", _VoiceInfo(self))
        root = Resource()
        root.putChild(b"v1", v1)
        return root

    def start(self) -> tuple[str, int]:
        """Listen on 127.0.0.1, a free port; return the base URL and the port."""
        self._connections = _Connections(Site(self.resource()))
        self._listening = self.reactor.listenTCP(0, self._connections, interface="127.0.0.1")
        self.port = self._listening.getHost().port
        return self.base_url, self.port

    @property
    def base_url(self) -> str:
        """C{http://127.0.0.1:<port>}: ElevenLabs' C{baseUrl}."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def openai_base_url(self) -> str:
        """C{http://127.0.0.1:<port>/v1}: OpenAI's C{baseUrl}."""
        return f"{self.base_url}/v1"

    def later(self, delay: float, f: Any, *args: Any) -> None:
        """Run C{f} after C{delay} seconds of the reactor's time (cancelled by L{stop})."""
        self._pending = [call for call in self._pending if call.active()]
        self._pending.append(self.reactor.callLater(delay, f, *args))

    def stop(self) -> Deferred[Any]:
        """Stop listening, drop timers and connections; fires when all is closed."""
        for call in self._pending:
            if call.active():
                call.cancel()
        self._pending = []
        waits = []
        if self._listening is not None:
            waits.append(self._listening.stopListening())
        if self._connections is not None:
            waits.append(self._connections.close_all())
        return DeferredList(waits, fireOnOneErrback=True, consumeErrors=True)
