"""
Telnyx end to end, in one process: our webhook site on 127.0.0.1, the fake
Telnyx's REST API through StubTreq, its webhooks and media streams over real
sockets, the real call manager and store, and TTS/STT doubles.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from tests.fakes.telnyx import FakeTelnyx
from tests.fakes.tts import ToneTTS
from tests.unit.rigs import NO_TIMERS
from tests.waiting import wait_for
from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.manager import CallManager
from voicecalld.config import parse_config
from voicecalld.errors import ProviderError
from voicecalld.providers.common.rest import RestError
from voicecalld.providers.interface import IProvider
from voicecalld.providers.telnyx.provider import TelnyxProvider
from voicecalld.providers.telnyx.signature import load_public_key
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner
from voicecalld.values.playback import Liveness
from voicecalld.values.states import CONNECTED, CallState
from voicecalld.voice.stt import ISTT, ISTTSession
from voicecalld.web.guard import GuardedSite
from voicecalld.web.site import build_root

TO = "+15551234567"
FROM = "+15550001111"
CALLER = "+15557654321"


@implementer(ISTTSession)
class _Session:
    def __init__(self, listener: Any) -> None:
        self.listener = listener
        self.audio = bytearray()
        self.closed = False

    def feed(self, ulaw: bytes) -> None:
        self.audio += ulaw

    def close(self) -> None:
        self.closed = True


@implementer(ISTT)
class ScriptedSTT:
    """Records audio per session; the test speaks for the vendor through the listener."""

    def __init__(self) -> None:
        self.sessions: list[_Session] = []

    def open_session(self, listener: Any) -> _Session:
        session = _Session(listener)
        self.sessions.append(session)
        return session


class Rig:
    """The daemon's wiring for Telnyx, with the fake on the other side."""

    def __init__(
        self,
        test: TestCase,
        config: dict[str, Any],
        streaming: bool,
        key_form: str = "base64",
        realtime: Any = None,
    ) -> None:
        self.test = test
        self.realtime = realtime
        if realtime is not None:
            streaming = False
            config = {
                "inboundPolicy": "open",
                **config,
                "realtime": {"enabled": True, **config.get("realtime", {})},
            }
        self.config = config
        self.streaming = streaming
        self.key_form = key_form
        self.notices: list[Any] = []

    @inlineCallbacks
    def start(self, store_path: str | None = None):
        self.fake = FakeTelnyx(insecure_ws=True, speak_scale=0.02, ws_options=NO_TIMERS)
        self.test.addCleanup(self.fake.stop)
        key = {
            "base64": self.fake.public_key_base64,
            "pem": self.fake.public_key_pem,
            "der": self.fake.public_key_der_base64,
        }[self.key_form]
        config = {
            "provider": "telnyx",
            "fromNumber": FROM,
            "telnyx": {
                "apiKey": self.fake.api_key,
                "connectionId": self.fake.connection_id,
                "publicKey": key,
                "apiBaseUrl": self.fake.api_url,
            },
            "streaming": {"enabled": self.streaming},
            **self.config,
        }
        self.settings = parse_config(config, None, {}).settings
        self.tts = ToneTTS(reactor)
        self.stt = ScriptedSTT()
        self.provider = TelnyxProvider(
            self.settings,
            reactor,
            public_url="http://placeholder/voice/webhook",
            public_key=load_public_key(key),
            http=StubTreq(self.fake.resource),
            tts=self.tts if self.streaming else None,
            stt=self.stt if self.streaming else None,
            realtime=self.realtime,
        )
        self.store_path = store_path or self.test.mktemp()
        yield self._manager()
        site = GuardedSite(build_root(self.provider.web_resources()), reactor=reactor)
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.test.addCleanup(self.port.stopListening)
        self.test.addCleanup(self._quiesce)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/voice/webhook"
        self.fake.webhook_url = self.url
        self.provider.use_public_url(self.url, known=True)
        return self

    @inlineCallbacks
    def _manager(self):
        self.store = SQLiteCallStore(self.store_path, SynchronousRunner())
        yield self.store.open()
        hub = NoticeHub()
        hub.listen(self.notices.append)
        self.manager = CallManager(
            settings=self.settings,
            store=self.store,
            provider=self.provider,
            clock=reactor,
            hub=hub,
            new_id=lambda: str(uuid.uuid4()),
        )
        self.provider.start(self.manager.handle_event, self.manager.directory)
        yield Deferred.fromCoroutine(self.manager.restore())
        self.manager.start()

    @inlineCallbacks
    def _quiesce(self):
        self.manager.stop()
        self.provider.stop()
        for call in self.fake.calls:
            # Work the fake queued for the next turn (a hang-up's webhooks) finishes first.
            yield call.when_settled().addTimeout(10, reactor)
        yield wait_for(
            lambda: (
                not self.provider.media.factory.open
                and all(stream.closed_by for call in self.fake.calls for stream in call.streams)
                and all(hook.code is not None or hook.error for hook in self.fake.webhooks)
            )
        )

    def initiate(self, message: str | None = "Hello from voicecalld", mode: str = "notify"):
        return Deferred.fromCoroutine(self.manager.initiate(TO, message, mode))

    def record(self, call_id: str):
        return Deferred.fromCoroutine(self.manager.get(call_id))

    def state(self, call_id: str):
        return self.record(call_id).addCallback(lambda r: r.state)


class WithoutStreaming(TestCase):
    """Telnyx's own voice and transcription: speak, transcription_start, webhooks."""

    timeout = 30

    def test_the_provider_is_an_iprovider(self):
        from zope.interface.verify import verifyObject

        config = {
            "provider": "telnyx",
            "fromNumber": FROM,
            "telnyx": {"apiKey": "k", "connectionId": "1", "publicKey": "unused"},
        }
        settings = parse_config(config, None, {}).settings
        provider = TelnyxProvider(settings, reactor, public_url="https://x.example/voice")
        self.assertTrue(verifyObject(IProvider, provider))

    @inlineCallbacks
    def test_dial_speaks_the_notice_and_hangs_up(self):
        rig = yield Rig(self, {"outbound": {"notifyHangupDelaySec": 0}}, False, "pem").start()
        record = yield rig.initiate("Your parcel has arrived.")
        dial = rig.fake.requests[0]
        self.assertTrue(dial.auth_ok)
        self.assertEqual((dial.method, dial.path), ("POST", "/v2/calls"))
        self.assertEqual(dial.get("connection_id"), rig.fake.connection_id)
        self.assertEqual((dial.get("to"), dial.get("from")), (TO, FROM))
        self.assertEqual(dial.get("webhook_url"), rig.url)
        self.assertEqual(dial.get("timeout_secs"), 30)
        call = yield rig.fake.when_call(0)
        self.assertEqual(call.client_state_text, record.call_id)
        self.assertEqual(call.call_control_id, record.provider_call_id)
        yield call.ring()
        self.assertEqual((yield rig.state(record.call_id)), CallState.RINGING)
        yield call.answer()
        yield call.when_ended()
        self.assertEqual(call.spoken, ["Your parcel has arrived."])
        self.assertEqual(call.playbacks[0].voice, "AWS.Polly.Joanna-Neural")
        self.assertEqual(call.playbacks[0].status, "completed")
        self.assertEqual(len(call.commands_named("hangup")), 1)
        yield wait_for(lambda: not rig.manager.live_calls())
        final = yield rig.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual([e.text for e in final.transcript], ["Your parcel has arrived."])
        self.assertEqual(rig.fake.errors, [])

    @inlineCallbacks
    def test_a_conversation_turn_speaks_and_listens_by_transcription(self):
        rig = yield Rig(self, {"tts": {"openai": {"voice": "nova"}}}, False, "der").start()
        record = yield rig.initiate("Hi! What can I do for you?", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield call.when_webhook("call.speak.ended")
        waiting = Deferred.fromCoroutine(rig.manager.continue_call(record.call_id, "Where to?"))
        options = yield call.when_transcribing()
        self.assertEqual(options.get("transcription_tracks"), "inbound")
        yield call.when_webhook("call.speak.ended", 2)
        self.assertEqual(call.spoken, ["Hi! What can I do for you?", "Where to?"])
        self.assertEqual(call.playbacks[1].voice, "AWS.Polly.Salli-Neural")
        yield call.say("To the station please", interim=True)
        self.assertEqual((yield waiting), "To the station please")
        yield call.press("4")
        yield wait_for(lambda: rig.manager.live_calls()[0].transcript[-1].text == "4")
        yield wait_for(lambda: call.transcription is None)
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        yield call.when_ended()
        yield wait_for(lambda: not rig.manager.live_calls())
        self.assertEqual((yield rig.state(record.call_id)), CallState.HANGUP_BOT)

    @inlineCallbacks
    def test_inbound_calls_are_answered_or_rejected(self):
        rig = yield Rig(
            self,
            {
                "inboundPolicy": "allowlist",
                "allowFrom": [CALLER],
                "inboundGreeting": "Welcome to Acme.",
            },
            False,
        ).start()
        refused = yield rig.fake.inbound_call("+15550000999", FROM)
        yield refused.when_ended()
        (reject,) = refused.commands_named("reject")
        self.assertEqual(reject.get("cause"), "CALL_REJECTED")
        self.assertEqual(refused.hangup_cause, "call_rejected")
        accepted = yield rig.fake.inbound_call(CALLER, FROM)
        (answer,) = yield wait_for(lambda: accepted.commands_named("answer"))
        yield accepted.when_webhook("call.speak.ended")
        self.assertEqual(accepted.spoken, ["Welcome to Acme."])
        (live,) = rig.manager.live_calls()
        self.assertEqual((live.direction, live.from_number), ("inbound", CALLER))
        self.assertEqual(live.provider_call_id, accepted.call_control_id)
        self.assertEqual(accepted.client_state_text, live.call_id)
        self.assertEqual(answer.get("webhook_url"), rig.url)
        yield accepted.caller_hangup()
        yield wait_for(lambda: not rig.manager.live_calls())
        self.assertEqual((yield rig.state(live.call_id)), CallState.COMPLETED)
        refusal = [n for n in rig.notices if n.kind == "call.refused"]
        self.assertEqual(refusal[0].from_number, "+15550000999")

    @inlineCallbacks
    def test_a_draining_daemon_answers_callers_busy(self):
        rig = yield Rig(self, {"inboundPolicy": "open"}, False).start()
        rig.manager.begin_drain()
        refused = yield rig.fake.inbound_call(CALLER, FROM)
        yield refused.when_ended()
        (reject,) = refused.commands_named("reject")
        self.assertEqual(reject.get("cause"), "USER_BUSY")
        self.assertEqual(refused.hangup_cause, "user_busy")
        self.assertEqual(refused.commands_named("answer"), [])
        self.assertEqual(rig.manager.live_calls(), [])

    @inlineCallbacks
    def test_hangup_causes_become_end_reasons(self):
        rig = yield Rig(self, {"maxConcurrentCalls": 3}, False).start()
        outcomes = []
        for act, expected in (
            (lambda c: c.busy(), CallState.BUSY),
            (lambda c: c.no_answer(), CallState.NO_ANSWER),
            (lambda c: c.fail("not_found"), CallState.FAILED),
        ):
            record = yield rig.initiate()
            yield act(rig.fake.last_call)
            live = rig.manager.directory
            yield wait_for(lambda r=record, d=live: d.call_id_for(r.provider_call_id) is None)
            outcomes.append(((yield rig.state(record.call_id)), expected))
        self.assertEqual([a for a, _ in outcomes], [e for _, e in outcomes])

    @inlineCallbacks
    def test_a_bad_signature_is_refused_and_changes_nothing(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        for mode in ("wrong", "missing"):
            rig.fake.signature_mode = mode
            yield call.ring() if mode == "wrong" else rig.fake.resend()
            hook = call.webhooks[-1]
            self.assertEqual(hook.code, 403, mode)
            self.assertEqual((yield rig.state(record.call_id)), CallState.INITIATED)

    @inlineCallbacks
    def test_stale_and_future_timestamps_are_refused(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        rig.fake.signature_mode = "stale"
        rig.fake.skew = 301
        yield call.ring()
        self.assertEqual(call.webhooks[-1].code, 403)
        rig.fake.signature_mode = "future"
        yield rig.fake.resend(call.webhooks[-1])
        self.assertEqual(call.webhooks[-1].code, 403)
        self.assertEqual((yield rig.state(record.call_id)), CallState.INITIATED)
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_a_replayed_webhook_is_acknowledged_and_applied_once(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield call.when_webhook("call.speak.ended")
        answered = call.events("call.answered")[0]
        before = list(rig.notices)
        replay = yield rig.fake.resend(answered)
        self.assertEqual(replay.code, 200)
        self.assertEqual(rig.notices, before)
        # The same event re-signed (a retry at a later time) is still applied once.
        body = answered.body
        stamp = str(int(reactor.seconds()))
        response = yield _post(rig, body, stamp)
        self.assertEqual(response, 200)
        self.assertEqual(rig.notices, before)
        self.assertEqual(len(call.commands_named("speak")), 1)
        self.assertNotEqual((yield rig.state(record.call_id)), CallState.INITIATED)

    @inlineCallbacks
    def test_malformed_bodies_get_400(self):
        rig = yield Rig(self, {}, False).start()
        for body in (b"not json", b"[]", json.dumps({"data": {"id": "x"}}).encode()):
            stamp = str(int(reactor.seconds()))
            code = yield _post(rig, body, stamp)
            self.assertEqual(code, 400, body)

    @inlineCallbacks
    def test_rest_errors_are_provider_errors_with_telnyxs_code(self):
        rig = yield Rig(self, {}, False).start()
        rig.fake.fail_next("dial", 422, "10015", "Invalid parameter", "to is not a number")
        error = yield self.assertFailure(rig.initiate(), ProviderError)
        self.assertIsInstance(error, RestError)
        self.assertEqual(
            (error.status, error.provider_code, error.retryable), (422, "10015", False)
        )
        self.assertIn("to is not a number", str(error))
        rig.fake.fail_next("dial", 503, "90000", "Service unavailable", "try later")
        error = yield self.assertFailure(rig.initiate(), ProviderError)
        self.assertEqual((error.status, error.retryable), (503, True))
        self.assertEqual(len(rig.manager.live_calls()), 0)

    @inlineCallbacks
    def test_a_failed_speak_fails_its_playback(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate(None, "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield wait_for(lambda: rig.manager.live_calls()[0].state != CallState.INITIATED)
        (live,) = rig.manager.live_calls()
        rig.fake.fail_next("speak", 500, "90001", "Internal error", "boom")
        failure = yield self.assertFailure(rig.provider.speak(live, "Hello?"), ProviderError)
        self.assertEqual(failure.status, 500)
        ok = yield rig.provider.speak(live, "Hello again?")
        self.assertTrue(ok.complete)
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))

    @inlineCallbacks
    def test_an_interrupted_speak_ends_incomplete_and_the_next_one_completes(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate(None, "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        (live,) = rig.manager.live_calls()
        long = "a long answer that takes a while to say " * 20
        speaking = rig.provider.speak(live, long)
        yield call.when_webhook("call.speak.started")
        rig.provider.interrupt(live)
        cut = yield speaking
        self.assertFalse(cut.complete)
        yield call.when_command("playback_stop")
        yield call.when_webhook("call.speak.ended")
        self.assertEqual(call.playbacks[0].status, "cancelled")
        after = yield rig.provider.speak(live, "Short.")
        self.assertTrue(after.complete)
        self.assertEqual(call.playbacks[-1].status, "completed")
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))

    @inlineCallbacks
    def test_pre_connect_digits_are_sent_once_answered(self):
        rig = yield Rig(self, {}, False).start()
        record = yield Deferred.fromCoroutine(
            rig.manager.initiate(TO, None, "conversation", dtmf_sequence="ww123#")
        )
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield call.when_command("send_dtmf")
        self.assertEqual(call.dtmf_sent, ["ww123#"])
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))

    @inlineCallbacks
    def test_hanging_up_an_ended_call_is_not_an_error(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate(None, "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        (live,) = rig.manager.live_calls()
        rig.fake.fail_next("hangup", 422, "90018", "Call has already ended", "gone")
        yield Deferred.fromCoroutine(rig.provider.hangup(live, CallState.HANGUP_BOT))
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        yield call.when_ended()

    @inlineCallbacks
    def test_a_restart_reconciles_stored_calls_with_telnyx(self):
        rig = yield Rig(self, {"maxConcurrentCalls": 2}, False).start()
        gone = yield rig.initiate(None, "conversation")
        alive = yield rig.initiate(None, "conversation")
        first, second = rig.fake.calls
        yield second.answer()
        yield wait_for(lambda: len([c for c in rig.manager.live_calls() if c.answered_at]) == 1)
        # voicecalld goes away; meanwhile the first call ends unseen.
        rig.manager.stop()
        rig.fake.signature_mode = "missing"
        yield first.busy()
        rig.fake.signature_mode = "valid"
        status = yield Deferred.fromCoroutine(rig.provider.call_status(gone))
        self.assertEqual(status.liveness, Liveness.ENDED)
        yield rig._manager()
        self.assertEqual((yield rig.state(gone.call_id)), CallState.COMPLETED)
        (live,) = rig.manager.live_calls()
        self.assertEqual(live.call_id, alive.call_id)
        statuses = [r for r in rig.fake.requests if r.operation == "status"]
        self.assertGreaterEqual(len(statuses), 2)
        # The restored call is still ours: its webhooks are applied.
        yield second.caller_hangup()
        yield wait_for(lambda: not rig.manager.live_calls())
        self.assertEqual((yield rig.state(alive.call_id)), CallState.COMPLETED)


@inlineCallbacks
def _post(rig: Rig, body: bytes, stamp: str):
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=False)
    http = HTTPClient(Agent(reactor, pool=pool))
    response = yield http.post(
        rig.url,
        data=body,
        headers={
            "Content-Type": "application/json",
            "telnyx-signature-ed25519": rig.fake.sign(stamp, body),
            "telnyx-timestamp": stamp,
        },
    )
    yield response.content()
    return response.code


class WithStreaming(TestCase):
    """Bidirectional RTP media streaming: TTS frames out, caller audio in order to STT."""

    timeout = 30

    @inlineCallbacks
    def answered(self, config=None, message="Hi there, this is the assistant calling."):
        rig = yield Rig(self, config or {}, True).start()
        record = yield rig.initiate(message, "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        return rig, record, call, stream

    @inlineCallbacks
    def test_the_stream_greets_listens_and_reorders_caller_audio(self):
        rig, record, call, stream = yield self.answered()
        (start,) = call.commands_named("streaming_start")
        self.assertEqual(start.get("stream_bidirectional_mode"), "rtp")
        self.assertEqual(start.get("stream_bidirectional_codec"), "PCMU")
        self.assertTrue(start.get("stream_url").startswith("wss://127.0.0.1:"))
        self.assertEqual(set(stream.custom_parameters), {"token", "callId"})
        self.assertEqual(call.spoken, [])
        greeting = "Hi there, this is the assistant calling."
        yield stream.when_mark_echoed("u1:end")
        spoken = stream.outbound_audio.replace(b"\xff", b"")
        self.assertEqual(len(spoken), len(greeting) * 400)
        yield wait_for(lambda: rig.manager.live_calls()[0].state == CallState.LISTENING)
        (session,) = rig.stt.sessions
        audio = b"".join(bytes([n]) * 160 for n in range(1, 21))
        yield stream.send_audio(audio, out_of_order=True)
        yield wait_for(lambda: len(session.audio) >= len(audio) - 3 * 160)
        chunks = [int(m["media"]["chunk"]) for m in stream.sent if m["event"] == "media"]
        self.assertNotEqual(chunks, sorted(chunks))
        self.assertTrue(audio.startswith(bytes(session.audio)))
        waiting = Deferred.fromCoroutine(rig.manager.continue_call(record.call_id, "Name?"))
        yield stream.when_mark_echoed("u2:end")
        session.listener.speech_started()
        session.listener.partial("It's")
        session.listener.final("It's Ann")
        self.assertEqual((yield waiting), "It's Ann")
        yield call.press("7")
        yield wait_for(lambda: rig.manager.live_calls()[0].transcript[-1].text == "7")
        digits = [e.text for e in rig.manager.live_calls()[0].transcript if e.kind == "dtmf"]
        self.assertEqual(digits, ["7"])
        self.assertEqual(rig.fake.errors, [])

    @inlineCallbacks
    def test_barge_in_clears_and_keeps_what_was_heard(self):
        rig, record, _call, stream = yield self.answered(message="Hi.")
        yield stream.when_mark_echoed("u1:end")
        answer = "one two three four five six seven eight nine ten eleven twelve"
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, answer))
        yield stream.when_audio(8000)
        (session,) = rig.stt.sessions
        session.listener.speech_started()
        playback = yield speaking
        self.assertFalse(playback.complete)
        yield stream.when_clear()
        entry = rig.manager.live_calls()[0].transcript[-1]
        self.assertTrue(entry.interrupted)
        self.assertTrue(answer.startswith(entry.text))
        self.assertLess(len(entry.text), len(answer))

    @inlineCallbacks
    def test_a_dropped_stream_is_started_again(self):
        rig, record, call, stream = yield self.answered(message="Hello.")
        yield stream.when_mark_echoed("u1:end")
        stream.drop()
        second = yield call.when_stream(1)
        self.assertNotEqual(second.custom_parameters["token"], stream.custom_parameters["token"])
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Still here."))
        yield second.when_mark_echoed("u1:end")
        self.assertTrue((yield speaking).complete)

    @inlineCallbacks
    def test_a_stream_stopped_while_stopping_is_left_to_the_next_process(self):
        """
        The daemon stops (a restart) and closes the media stream; Telnyx's
        C{streaming.stopped} that still reaches it gets 503, so Telnyx
        delivers it again, and this process starts no stream it cannot serve.
        """
        rig, _record, call, stream = yield self.answered(message="Hello.")
        yield stream.when_mark_echoed("u1:end")
        rig.manager.stop()
        rig.provider.stop()
        hook = yield call.when_webhook("streaming.stopped")
        self.assertEqual(hook.code, 503)
        self.assertIn(b"restarting", hook.response)
        self.assertEqual(len(call.commands_named("streaming_start")), 1)

    @inlineCallbacks
    def test_an_answer_while_stopping_changes_nothing(self):
        """C{call.answered} opens the stream: a stopping daemon refuses it before storing it."""
        rig = yield Rig(self, {}, True).start()
        record = yield rig.initiate("Hello.", "conversation")
        call = yield rig.fake.when_call(0)
        rig.manager.stop()
        rig.provider.stop()
        yield call.answer()
        hook = yield call.when_webhook("call.answered")
        self.assertEqual(hook.code, 503)
        self.assertNotIn((yield rig.state(record.call_id)), CONNECTED)
        self.assertEqual(call.commands_named("streaming_start"), [])

    @inlineCallbacks
    def test_inbound_streams_open_with_the_answer(self):
        rig = yield Rig(self, {"inboundPolicy": "open", "inboundGreeting": "Hello."}, True).start()
        call = yield rig.fake.inbound_call(CALLER, FROM)
        stream = yield call.when_stream()
        (answer,) = call.commands_named("answer")
        self.assertEqual(answer.get("stream_bidirectional_mode"), "rtp")
        self.assertEqual(call.commands_named("streaming_start"), [])
        yield stream.when_mark_echoed("u1:end")
        yield call.caller_hangup()
        yield wait_for(lambda: not rig.manager.live_calls())
