"""
Every class in voicecalld/ and tests/fakes/ that declares an interface with
C{@implementer(...)} really provides it: an instance of each passes
C{verifyObject} for every interface its class claims.  The list of classes
below is checked against the source, so a new implementer must be added here.
"""

from __future__ import annotations

import ast
import importlib
import io
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.trial.unittest import TestCase
from zope.interface import implementedBy
from zope.interface.verify import verifyObject

from voicecalld.calls.hub import NoticeHub
from voicecalld.config import parse_config
from voicecalld.config.model import OpenAIStreamingSettings
from voicecalld.config.secret import Secret

ROOT = Path(__file__).resolve().parents[2]
SCANNED = ("voicecalld", "tests/fakes")


def _is_implementer(decorator: ast.expr) -> bool:
    if not isinstance(decorator, ast.Call):
        return False
    func = decorator.func
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
    return name == "implementer"


def declared_implementers() -> tuple[set[str], int]:
    """
    C{module:Class} of every class under L{SCANNED} decorated with
    C{@implementer}, and how many times C{@implementer(} appears in the text
    (so a form the parse misses shows).
    """
    found, mentions = set(), 0
    for top in SCANNED:
        for path in sorted((ROOT / top).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            text = path.read_text()
            mentions += sum(
                line.strip().startswith(("@implementer(", "@zope.interface.implementer("))
                for line in text.splitlines()
            )
            for node in ast.walk(ast.parse(text, str(path))):
                if isinstance(node, ast.ClassDef) and any(
                    _is_implementer(d) for d in node.decorator_list
                ):
                    found.add(f"{module}:{node.name}")
    return found, mentions


def _settings(**config: Any) -> Any:
    base = {
        "provider": "twilio",
        "fromNumber": "+15550001111",
        "twilio": {"accountSid": "AC1", "authToken": "t"},
        "publicUrl": "https://voice.example.com/voice/webhook",
    }
    return parse_config({**base, **config}, None, {}).settings


def _twilio_provider(test: TestCase) -> Any:
    from voicecalld.providers.twilio.provider import TwilioProvider

    return TwilioProvider(
        _settings(), Clock(), public_url="https://voice.example.com/voice/webhook"
    )


def _openai_tts(test: TestCase) -> Any:
    from voicecalld.voice.tts_openai import OpenAITTS

    return OpenAITTS(_settings().tts.provider_settings("openai"), Clock())


def _elevenlabs_tts(test: TestCase) -> Any:
    from voicecalld.voice.tts_elevenlabs import ElevenLabsTTS

    return ElevenLabsTTS(_settings().tts.provider_settings("elevenlabs"), Clock())


def _fallback_tts(test: TestCase) -> Any:
    from tests.fakes.tts import ToneTTS
    from voicecalld.voice.tts_factory import FallbackTTS

    return FallbackTTS([ToneTTS(Clock())])


def _realtime_stt(test: TestCase) -> Any:
    from voicecalld.voice.stt_openai import OpenAIRealtimeSTT

    settings = OpenAIStreamingSettings(api_key=Secret("sk-test"))
    return OpenAIRealtimeSTT(settings, "ws://127.0.0.1:9/v1/realtime", MemoryReactorClock())


def _realtime_voice(test: TestCase) -> Any:
    from voicecalld.config.model import OpenAIRealtimeSettings
    from voicecalld.realtime.openai import OpenAIRealtimeVoice

    settings = OpenAIRealtimeSettings(
        api_key=Secret("sk-test"), base_url="ws://127.0.0.1:9/v1/realtime"
    )
    return OpenAIRealtimeVoice(settings, MemoryReactorClock())


def _gemini_voice(test: TestCase) -> Any:
    from voicecalld.config.model import GoogleRealtimeSettings
    from voicecalld.realtime.google import GeminiLiveVoice

    settings = GoogleRealtimeSettings(api_key=Secret("AIza-test"), base_url="ws://127.0.0.1:9/ws")
    return GeminiLiveVoice(settings, MemoryReactorClock())


def _deepgram_stt(test: TestCase) -> Any:
    from voicecalld.config.model import DeepgramStreamingSettings
    from voicecalld.voice.stt_deepgram import DeepgramSTT

    settings = DeepgramStreamingSettings(api_key=Secret("dg-test"), base_url="ws://127.0.0.1:9")
    return DeepgramSTT(settings, MemoryReactorClock())


def _elevenlabs_stt(test: TestCase) -> Any:
    from voicecalld.config.model import ElevenLabsStreamingSettings
    from voicecalld.voice.stt_elevenlabs import ElevenLabsRealtimeSTT

    settings = ElevenLabsStreamingSettings(api_key=Secret("xi-test"), base_url="ws://127.0.0.1:9")
    return ElevenLabsRealtimeSTT(settings, MemoryReactorClock())


def _session_of(make: Callable[[TestCase], Any]) -> Callable[[TestCase], Any]:
    def build(test: TestCase) -> Any:
        session = make(test).open_session(SimpleNamespace())
        test.addCleanup(session.close)
        return session

    return build


def _realtime_session_of(make: Callable[[TestCase], Any]) -> Callable[[TestCase], Any]:
    def build(test: TestCase) -> Any:
        from voicecalld.realtime.interface import RealtimeSetup

        listener = SimpleNamespace(closed=lambda reason: None)
        session = make(test).open_session(listener, RealtimeSetup(instructions="Hi"))
        test.addCleanup(session.close)
        return session

    return build


def _chat_responder(test: TestCase) -> Any:
    from voicecalld.voice.chat import ChatResponder

    return ChatResponder(
        base_url="http://127.0.0.1:9/v1",
        api_key=None,
        model="m",
        system_prompt="Be brief.",
        clock=Clock(),
    )


def _control_peer() -> Any:
    """Just enough of a control connection for what it carries."""
    manager = SimpleNamespace(hub=NoticeHub(), settings=_settings())
    return SimpleNamespace(manager=manager, transport=StringTransport(), peer="test")


def _subscription(test: TestCase) -> Any:
    from voicecalld.control.server import Subscription

    return Subscription(_control_peer(), None)


def _remote_responder(test: TestCase) -> Any:
    from voicecalld.control.server import RemoteResponder

    return RemoteResponder(_control_peer())


def _sqlite_store(test: TestCase) -> Any:
    from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner

    return SQLiteCallStore(test.mktemp(), SynchronousRunner())


def _timed_store(test: TestCase) -> Any:
    from voicecalld.store.timed import TimedStore

    return TimedStore(_sqlite_store(test), Clock(), lambda seconds, error: None)


def _held_store(test: TestCase) -> Any:
    from tests.fakes.store import HeldStore

    return HeldStore(test.mktemp())


def _twilio_signature(test: TestCase) -> Any:
    from voicecalld.providers.twilio.signature import TwilioSignature

    return TwilioSignature("t", [("CallSid", "CA1")], b"signature")


def _url_verifier(test: TestCase) -> Any:
    from voicecalld.providers.twilio.signature import twilio_verifier

    return twilio_verifier("t")


def _twilio_dialect(test: TestCase) -> Any:
    from voicecalld.providers.twilio.dialect import TwilioDialect

    return TwilioDialect(_twilio_provider(test))


def _plivo_provider(test: TestCase) -> Any:
    from voicecalld.providers.plivo.provider import PlivoProvider

    settings = _settings(provider="plivo", plivo={"authId": "MA1", "authToken": "t"})
    return PlivoProvider(settings, Clock(), public_url="https://voice.example.com/voice/webhook")


def _plivo_dialect(test: TestCase) -> Any:
    from voicecalld.providers.plivo.dialect import PlivoDialect

    return PlivoDialect(_plivo_provider(test))


def _plivo_signature(test: TestCase) -> Any:
    from voicecalld.providers.plivo.signature import PlivoSignature

    return PlivoSignature(lambda url: b"signature", b"signature")


def _telnyx_provider(test: TestCase) -> Any:
    from voicecalld.providers.telnyx.provider import TelnyxProvider

    settings = _settings(
        provider="telnyx", telnyx={"apiKey": "k", "connectionId": "1", "publicKey": "p"}
    )
    return TelnyxProvider(settings, Clock(), public_url="https://voice.example.com/voice/webhook")


def _telnyx_dialect(test: TestCase) -> Any:
    from voicecalld.providers.telnyx.dialect import TelnyxDialect

    return TelnyxDialect(_telnyx_provider(test))


def _media_line(clock: Clock) -> Any:
    """Just enough of a media session for a realtime bridge."""
    from voicecalld.media.pacing import FramePacer, PacingClock

    pacer = FramePacer(clock, PacingClock(clock), lambda frame: None, lambda name: None)
    return SimpleNamespace(
        call_id="call-1",
        pacer=pacer,
        socket=SimpleNamespace(send_clear=lambda: None),
        emit=lambda event: None,
        ids=lambda: {"call_id": "call-1", "provider_call_id": None},
    )


def _realtime_bridge(test: TestCase) -> Any:
    from tests.fakes.realtime_voice import ScriptedVoice
    from voicecalld.realtime.bridge import RealtimeBridge
    from voicecalld.realtime.interface import RealtimeSetup

    clock = Clock()
    bridge = RealtimeBridge(_media_line(clock), ScriptedVoice(), RealtimeSetup("Be brief."), clock)
    test.addCleanup(bridge.close)
    return bridge


def _scripted_session(test: TestCase) -> Any:
    return _realtime_bridge(test).session


def _plain(name: str, *args: Callable[[], Any]) -> Callable[[TestCase], Any]:
    """A builder for C{module:Class} called with C{args} (each made fresh)."""
    module, cls = name.split(":")

    def build(test: TestCase) -> Any:
        return getattr(importlib.import_module(module), cls)(*(arg() for arg in args))

    return build


BUILDERS: dict[str, Callable[[TestCase], Any]] = {
    "voicecalld.calls.registry:LiveRegistry": _plain("voicecalld.calls.registry:LiveRegistry"),
    "voicecalld.control.server:RemoteResponder": _remote_responder,
    "voicecalld.control.server:Subscription": _subscription,
    "voicecalld.media.stream:MediaStream": _plain("voicecalld.media.stream:MediaStream"),
    "voicecalld.providers.common.verify:UrlSignatureVerifier": _url_verifier,
    "voicecalld.providers.mock:MockProvider": _plain(
        "voicecalld.providers.mock:MockProvider", Clock
    ),
    "voicecalld.providers.twilio.provider:TwilioProvider": _twilio_provider,
    "voicecalld.providers.twilio.codec:TwilioCodec": _plain(
        "voicecalld.providers.twilio.codec:TwilioCodec"
    ),
    "voicecalld.providers.twilio.codec:TwilioEncoder": _plain(
        "voicecalld.providers.twilio.codec:TwilioEncoder", lambda: "MZ1"
    ),
    "voicecalld.providers.twilio.dialect:TwilioDialect": _twilio_dialect,
    "voicecalld.providers.twilio.signature:TwilioSignature": _twilio_signature,
    "voicecalld.providers.plivo.provider:PlivoProvider": _plivo_provider,
    "voicecalld.providers.plivo.codec:PlivoCodec": _plain(
        "voicecalld.providers.plivo.codec:PlivoCodec"
    ),
    "voicecalld.providers.plivo.codec:PlivoEncoder": _plain(
        "voicecalld.providers.plivo.codec:PlivoEncoder", lambda: "stream-1"
    ),
    "voicecalld.providers.plivo.dialect:PlivoDialect": _plivo_dialect,
    "voicecalld.providers.plivo.signature:PlivoSignature": _plivo_signature,
    "voicecalld.providers.plivo.signature:PlivoVerifier": _plain(
        "voicecalld.providers.plivo.signature:PlivoVerifier", lambda: "t"
    ),
    "voicecalld.providers.telnyx.provider:TelnyxProvider": _telnyx_provider,
    "voicecalld.providers.telnyx.codec:TelnyxCodec": _plain(
        "voicecalld.providers.telnyx.codec:TelnyxCodec"
    ),
    "voicecalld.providers.telnyx.codec:TelnyxEncoder": _plain(
        "voicecalld.providers.telnyx.codec:TelnyxEncoder"
    ),
    "voicecalld.providers.telnyx.dialect:TelnyxDialect": _telnyx_dialect,
    "voicecalld.providers.telnyx.signature:TelnyxVerifier": _plain(
        "voicecalld.providers.telnyx.signature:TelnyxVerifier", lambda: None
    ),
    "voicecalld.realtime.openai:OpenAIRealtimeConversation": _realtime_session_of(_realtime_voice),
    "voicecalld.realtime.openai:OpenAIRealtimeVoice": _realtime_voice,
    "voicecalld.realtime.google:GeminiLiveSession": _realtime_session_of(_gemini_voice),
    "voicecalld.realtime.google:GeminiLiveVoice": _gemini_voice,
    "voicecalld.realtime.bridge:RealtimeBridge": _realtime_bridge,
    "tests.fakes.realtime_voice:ScriptedVoice": _plain("tests.fakes.realtime_voice:ScriptedVoice"),
    "tests.fakes.realtime_voice:ScriptedSession": _scripted_session,
    "voicecalld.store.sqlite:SQLiteCallStore": _sqlite_store,
    "voicecalld.store.timed:TimedStore": _timed_store,
    "voicecalld.voice.chat:ChatResponder": _chat_responder,
    "voicecalld.voice.stt_openai:OpenAIRealtimeSTT": _realtime_stt,
    "voicecalld.voice.stt_openai:OpenAIRealtimeSession": _session_of(_realtime_stt),
    "voicecalld.voice.stt_deepgram:DeepgramSTT": _deepgram_stt,
    "voicecalld.voice.stt_deepgram:DeepgramSession": _session_of(_deepgram_stt),
    "voicecalld.voice.stt_elevenlabs:ElevenLabsRealtimeSTT": _elevenlabs_stt,
    "voicecalld.voice.stt_elevenlabs:ElevenLabsRealtimeSession": _session_of(_elevenlabs_stt),
    "voicecalld.voice.tts_factory:FallbackTTS": _fallback_tts,
    "voicecalld.voice.tts_elevenlabs:ElevenLabsTTS": _elevenlabs_tts,
    "voicecalld.voice.tts_openai:OpenAITTS": _openai_tts,
    "voicecalld.logs.flood:FloodFilter": _plain(
        "voicecalld.logs.flood:FloodFilter", lambda: lambda event: None, Clock
    ),
    "voicecalld.logs.lines:LineWriter": _plain(
        "voicecalld.logs.lines:LineWriter", io.StringIO, lambda: str
    ),
    "tests.fakes.provider:CallBook": _plain("tests.fakes.provider:CallBook"),
    "tests.fakes.provider:RecordingProvider": _plain("tests.fakes.provider:RecordingProvider"),
    "tests.fakes.store:HeldStore": _held_store,
    "tests.fakes.tts:ScriptedTTS": _plain("tests.fakes.tts:ScriptedTTS", Clock),
    "tests.fakes.tts:ToneTTS": _plain("tests.fakes.tts:ToneTTS", Clock),
}


class Implementers(TestCase):
    """Each declared implementer, built with minimal collaborators, verified."""

    def test_the_list_is_complete(self) -> None:
        found, mentions = declared_implementers()
        self.assertEqual(len(found), mentions, "an @implementer the parse did not find")
        self.assertEqual(sorted(found - set(BUILDERS)), [], "implementers with no builder here")
        self.assertEqual(sorted(set(BUILDERS) - found), [], "builders for no implementer")

    def test_each_provides_what_it_claims(self) -> None:
        for name, build in sorted(BUILDERS.items()):
            with self.subTest(implementer=name):
                instance = build(self)
                module, cls = name.split(":")
                self.assertIs(type(instance), getattr(importlib.import_module(module), cls))
                claimed = list(implementedBy(type(instance)))
                self.assertNotEqual(claimed, [], name)
                for interface in claimed:
                    self.assertTrue(verifyObject(interface, instance), f"{name} {interface}")

    def test_the_provider_directory_is_the_registry(self) -> None:
        from tests.fakes.provider import RecordingProvider
        from voicecalld.calls.manager import CallManager
        from voicecalld.providers.interface import ICallDirectory
        from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner

        provider = RecordingProvider()
        manager = CallManager(
            settings=_settings(provider="mock"),
            store=SQLiteCallStore(self.mktemp(), SynchronousRunner()),
            provider=provider,
            clock=Clock(),
        )
        provider.start(manager.handle_event, manager.directory)
        self.assertTrue(verifyObject(ICallDirectory, provider.directory))
        self.assertIsNone(provider.directory.call_id_for("CA-unknown"))
