"""
Twilio end to end, in one process: our webhook site and the fake Twilio on
127.0.0.1, the real call manager and store, and TTS/STT doubles.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import Any
from urllib.parse import urlencode

from treq.client import HTTPClient
from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from zope.interface import implementer

from tests.fakes.tts import ToneTTS
from tests.fakes.twilio import FakeTwilio
from tests.waiting import wait_for
from voicecalld.calls.hub import NoticeHub
from voicecalld.calls.manager import CallManager
from voicecalld.config import parse_config
from voicecalld.errors import ProviderError
from voicecalld.providers.twilio.provider import TwilioProvider
from voicecalld.store.sqlite import SQLiteCallStore, SynchronousRunner
from voicecalld.values.states import CallState
from voicecalld.voice.stt import ISTT, ISTTSession
from voicecalld.web.guard import GuardedSite
from voicecalld.web.site import build_root

SID = "AC" + "1" * 32
TOKEN = "twilio-test-token"
TO = "+15551234567"


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
    """Everything wired as the daemon wires it, on real sockets."""

    def __init__(
        self, test: TestCase, config: dict[str, Any], streaming: bool, pause_scale: float = 0.0
    ) -> None:
        self.test = test
        self.config = config
        self.streaming = streaming
        self.pause_scale = pause_scale
        self.notices: list[Any] = []
        #: Every id the manager made (call ids and turn tokens), in order.
        self.ids: list[str] = []

    @inlineCallbacks
    def start(self):
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.http = HTTPClient(Agent(reactor, pool=pool))
        self.test.addCleanup(pool.closeCachedConnections)
        self.fake = FakeTwilio(SID, TOKEN, insecure_ws=True, pause_scale=self.pause_scale)
        base = yield self.fake.listen()
        self.test.addCleanup(self.fake.stop)
        config = {
            "provider": "twilio",
            "fromNumber": "+15550001111",
            "twilio": {"accountSid": SID, "authToken": TOKEN, "apiBaseUrl": base},
            "streaming": {"enabled": self.streaming},
            **self.config,
        }
        self.settings = parse_config(config, None, {}).settings
        self.tts = ToneTTS(reactor)
        self.stt = ScriptedSTT()
        self.provider = TwilioProvider(
            self.settings,
            reactor,
            public_url="http://placeholder/voice/webhook",
            http=self.http,
            tts=self.tts if self.streaming else None,
            stt=self.stt if self.streaming else None,
        )
        self.store = SQLiteCallStore(self.test.mktemp(), SynchronousRunner())
        yield self.store.open()
        hub = NoticeHub()
        hub.listen(self.notices.append)
        self.manager = CallManager(
            settings=self.settings,
            store=self.store,
            provider=self.provider,
            clock=reactor,
            hub=hub,
            new_id=self.new_id,
        )
        self.provider.start(self.manager.handle_event, self.manager.directory)
        yield Deferred.fromCoroutine(self.manager.restore())
        self.manager.start()
        site = GuardedSite(build_root(self.provider.web_resources()), reactor=reactor)
        self.port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(site)
        self.test.addCleanup(self.port.stopListening)
        self.test.addCleanup(self._quiesce)
        self.url = f"http://127.0.0.1:{self.port.getHost().port}/voice/webhook"
        self.provider.use_public_url(self.url, known=True)
        return self

    @inlineCallbacks
    def _quiesce(self):
        """Stop everything and wait until every media socket has closed."""
        self.manager.stop()
        self.provider.stop()
        yield wait_for(
            lambda: (
                not self.provider.media.factory.open
                and all(stream.closed_by for call in self.fake.calls for stream in call.streams)
                and all(hook.code is not None or hook.error for hook in self.fake.webhooks)
            )
        )
        # autobahn's close-handshake timers go away a moment after the sockets.
        yield wait_for(
            lambda: (
                not any(
                    "_notify_bucket" in repr(getattr(c, "func", None))
                    for c in reactor.getDelayedCalls()
                )
            )
        )

    def new_id(self) -> str:
        self.ids.append(str(uuid.uuid4()))
        return self.ids[-1]

    def initiate(self, message: str | None = "Hello from voicecalld", mode: str = "notify"):
        return Deferred.fromCoroutine(self.manager.initiate(TO, message, mode))

    def record(self, call_id: str):
        return Deferred.fromCoroutine(self.manager.get(call_id))

    def kinds(self) -> list[str]:
        return [n.kind for n in self.notices]


class WithoutStreaming(TestCase):
    """Twilio's own voice: <Say>, <Gather>, REST updates."""

    timeout = 30

    @inlineCallbacks
    def test_outbound_notify_speaks_and_hangs_up(self):
        rig = yield Rig(self, {"outbound": {"notifyHangupDelaySec": 0}}, False).start()
        record = yield rig.initiate("Your parcel has arrived.")
        create = rig.fake.requests[0]
        self.assertEqual(create.get("To"), TO)
        self.assertEqual(
            create.getall("StatusCallbackEvent"), ["initiated", "ringing", "answered", "completed"]
        )
        self.assertEqual(create.get("Timeout"), "30")
        self.assertIn(f"callId={record.call_id}", create.get("Url"))
        call = yield rig.fake.when_call(0)
        self.assertEqual(call.sid, record.provider_call_id)
        yield call.ring()
        yield call.answer()
        yield call.when_ended()
        said = call.verbs_named("Say")
        self.assertEqual([v.text for v in said], ["Your parcel has arrived."])
        self.assertEqual(said[0].attrs["voice"], "Polly.Joanna")
        final = yield rig.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual([e.text for e in final.transcript], ["Your parcel has arrived."])
        hangup = [r for r in rig.fake.requests if r.get("Status") == "completed"]
        self.assertEqual(len(hangup), 1)

    @inlineCallbacks
    def test_conversation_listens_with_gather(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate("Hi! What can I do for you?", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        yield call.when_gathering()
        waiting = Deferred.fromCoroutine(
            rig.manager.continue_call(record.call_id, "Say something?")
        )
        yield call.when_verb("Say", 2)
        yield call.when_gathering()
        yield call.gather_result("I need a taxi")
        words = yield waiting
        self.assertEqual(words, "I need a taxi")
        yield call.gather_digits("42")
        final = yield rig.record(record.call_id)
        self.assertEqual(final.transcript[-1].text, "42")
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        yield call.when_ended()
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.HANGUP_BOT)

    @inlineCallbacks
    def test_ending_a_ringing_call_cancels_it(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        yield call.ring()
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        statuses = [r.get("Status") for r in rig.fake.requests if r.get("Status")]
        self.assertEqual(statuses, ["canceled", "completed"])
        yield call.when_ended()
        self.assertEqual(call.status, "canceled")
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.HANGUP_BOT)

    @inlineCallbacks
    def test_pre_connect_digits_go_as_send_digits(self):
        rig = yield Rig(self, {}, False).start()
        yield Deferred.fromCoroutine(
            rig.manager.initiate(TO, "Hi", "conversation", dtmf_sequence="ww123#")
        )
        self.assertEqual(rig.fake.requests[0].get("SendDigits"), "ww123#")

    @inlineCallbacks
    def test_provider_error_ends_the_call_with_twilios_code(self):
        rig = yield Rig(self, {}, False).start()
        rig.fake.fail_next("create", 400, 21211, "Invalid 'To' Phone Number")
        failure = yield self.assertFailure(rig.initiate(), ProviderError)
        self.assertIn("21211", str(failure))
        self.assertIn("Invalid 'To' Phone Number", str(failure))
        (record,) = yield Deferred.fromCoroutine(rig.manager.recent(5))
        self.assertEqual(record.state, CallState.FAILED)
        self.assertEqual(len(rig.fake.requests), 1)

    @inlineCallbacks
    def test_unreachable_api_is_a_provider_error(self):
        rig = yield Rig(self, {}, False).start()
        yield rig.fake.stop()
        failure = yield self.assertFailure(rig.initiate(), ProviderError)
        self.assertIn("Twilio creating the call failed", str(failure))

    @inlineCallbacks
    def test_bad_signature_is_refused_and_changes_nothing(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        rig.fake.signature_mode = "wrong"
        yield call.ring()
        hook = call.callbacks[-1]
        self.assertEqual(hook.code, 403)
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.INITIATED)
        rig.fake.signature_mode = "missing"
        yield rig.fake.resend_last_callback(call)
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.INITIATED)
        self.flushLoggedErrors()

    @inlineCallbacks
    def test_a_duplicated_callback_is_applied_once(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate()
        call = yield rig.fake.when_call(0)
        yield call.ring()
        before = rig.kinds().count("call.state")
        yield rig.fake.resend_last_callback(call)
        yield rig.fake.resend_last_callback(call)
        self.assertEqual(rig.kinds().count("call.state"), before)
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.RINGING)

    @inlineCallbacks
    def test_inbound_allowed_and_refused(self):
        rig = yield Rig(
            self,
            {
                "inboundPolicy": "allowlist",
                "allowFrom": ["+15557654321"],
                "inboundGreeting": "Welcome to Acme.",
            },
            False,
        ).start()
        refused = yield rig.fake.inbound_call("+15550000999", "+15550001111", rig.url)
        self.assertEqual([v.name for v in refused.verbs], ["Reject"])
        accepted = yield rig.fake.inbound_call("+15557654321", "+15550001111", rig.url)
        yield accepted.when_gathering()
        self.assertEqual([v.text for v in accepted.verbs_named("Say")], ["Welcome to Acme."])
        (live,) = rig.manager.live_calls()
        self.assertEqual((live.direction, live.from_number), ("inbound", "+15557654321"))
        self.assertEqual(live.provider_call_id, accepted.sid)
        refusal = [n for n in rig.notices if n.kind == "call.refused"]
        self.assertEqual(refusal[0].from_number, "+15550000999")

    @inlineCallbacks
    def test_an_inbound_calls_status_callback_finds_it_by_sid(self):
        # The number's status callback (set in Twilio's console) names no call id
        # of ours: the call is found by its SID, which the call manager stored.
        rig = yield Rig(self, {"inboundPolicy": "open"}, False).start()
        call = yield rig.fake.inbound_call(
            "+15557654321", "+15550001111", rig.url, status_callback=rig.url
        )
        yield call.when_gathering()
        (live,) = rig.manager.live_calls()
        self.assertEqual(live.provider_call_id, call.sid)
        yield call.caller_hangup()
        self.assertEqual(call.callbacks[-1].code, 204)
        self.assertEqual((yield rig.record(live.call_id)).state, CallState.COMPLETED)

    @inlineCallbacks
    def test_webhooks_by_sid_alone(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate()
        self.assertTrue(record.provider_call_id)

        def post(sid: str, status: str):
            body = {"CallSid": sid, "CallStatus": status, "Direction": "outbound-api"}
            return rig.http.post(
                rig.url,
                data=urlencode(body).encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": _sign(TOKEN, rig.url, body),
                },
            )

        unknown = yield post("CA" + "9" * 32, "completed")
        self.assertEqual(unknown.code, 204)
        yield unknown.content()
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.INITIATED)
        known = yield post(record.provider_call_id, "completed")
        self.assertEqual(known.code, 204)
        yield known.content()
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.COMPLETED)
        self.assertEqual(rig.manager.live_calls(), [])

    @inlineCallbacks
    def test_malformed_webhooks_get_4xx_and_change_nothing(self):
        rig = yield Rig(self, {}, False).start()
        record = yield rig.initiate()
        url = f"{rig.url}?callId={record.call_id}&type=status"
        body = {"CallSid": record.provider_call_id, "CallStatus": "completed"}
        for data, headers in (
            (urlencode(body).encode(), {}),
            (b"\xff\xfe", {"X-Twilio-Signature": "x"}),
            (urlencode(body).encode(), {"X-Twilio-Signature": _sign("wrong-token", url, body)}),
        ):
            response = yield rig.http.post(
                url,
                data=data,
                headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
            )
            self.assertIn(response.code, (400, 403))
            yield response.content()
        good = yield rig.http.post(
            url,
            data=urlencode(body).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded",
                "X-Twilio-Signature": _sign(TOKEN, url, body),
            },
        )
        self.assertEqual(good.code, 204)
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.COMPLETED)


def _sign(token: str, url: str, params: dict[str, str]) -> str:
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class WithStreaming(TestCase):
    """Media Streams: TTS frames out, caller audio to STT, marks, barge-in, reconnects."""

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
    def test_stream_greets_and_listens(self):
        rig, record, call, stream = yield self.answered()
        self.assertEqual(set(stream.parameters), {"token", "callId"})
        self.assertEqual(stream.parameters["callId"], record.call_id)
        self.assertEqual(call.verbs_named("Say"), [])
        greeting = "Hi there, this is the assistant calling."
        yield stream.when_mark_echoed("u1:end")
        spoken = stream.outbound_audio.replace(b"\xff", b"")
        self.assertEqual(len(spoken), len(greeting) * 400)
        yield wait_for(lambda: rig.manager.live_calls()[0].state == CallState.LISTENING)
        self.assertEqual(rig.tts.texts, [greeting])
        yield stream.send_audio(b"\x55" * 1600)
        (session,) = rig.stt.sessions
        yield wait_for(lambda: len(session.audio) >= 1600)
        waiting = Deferred.fromCoroutine(rig.manager.continue_call(record.call_id, "Name?"))
        yield stream.when_mark_echoed("u2:end")
        session.listener.speech_started()
        session.listener.partial("It's")
        session.listener.final("It's Ann")
        self.assertEqual((yield waiting), "It's Ann")
        yield stream.send_dtmf("7")
        yield wait_for(lambda: rig.manager.live_calls()[0].transcript[-1].text == "7")

    @inlineCallbacks
    def test_two_seconds_of_speech_are_paced(self):
        _rig, _record, _call, stream = yield self.answered(message="x" * 40)
        yield stream.when_mark_echoed("u1:end")
        times = [t for t, frame in stream.frames if frame != b"\xff" * 160]
        self.assertEqual(len(times), 100)
        spread = times[-1] - times[0]
        self.assertGreater(spread, 1.7)
        self.assertLess(spread, 2.2)
        per_window: dict[int, int] = {}
        for t in times:
            per_window[int((t - times[0]) / 0.1)] = per_window.get(int((t - times[0]) / 0.1), 0) + 1
        self.assertLessEqual(max(per_window.values()), 10)

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
    def test_a_dropped_stream_is_replaced_and_the_call_goes_on(self):
        rig, record, call, stream = yield self.answered(message="Hello.")
        yield stream.when_mark_echoed("u1:end")
        stream.drop()
        yield stream.when_closed()
        second = yield call.when_stream(1)
        self.assertNotEqual(second.parameters["token"], stream.parameters["token"])
        self.assertEqual(len(rig.manager.live_calls()), 1)
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Still here."))
        yield second.when_mark_echoed("u1:end")
        self.assertTrue((yield speaking).complete)

    @inlineCallbacks
    def test_unknown_or_reused_tokens_are_refused(self):
        rig, _record, call, stream = yield self.answered(message="Hello.")
        yield stream.when_mark_echoed("u1:end")
        token = stream.parameters["token"]
        grant = rig.provider.media.tokens.claim(token, call.sid)
        self.assertIsNone(grant)
        self.assertIsNone(rig.provider.media.tokens.claim("made-up", call.sid))

    @inlineCallbacks
    def test_dtmf_goes_in_band_without_losing_the_stream(self):
        rig, record, call, stream = yield self.answered(message="Hi.")
        yield stream.when_mark_echoed("u1:end")
        before = len(stream.outbound_audio)
        yield Deferred.fromCoroutine(rig.manager.send_dtmf(record.call_id, "12w3"))
        self.assertGreater(len(stream.outbound_audio) - before, 8000 * 0.9)
        self.assertIsNone(stream.closed_by)
        self.assertEqual(len(call.streams), 1)

    @inlineCallbacks
    def test_end_and_caller_hangup(self):
        rig, record, call, stream = yield self.answered(message="Hi.")
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        yield call.when_ended()
        yield stream.when_closed()
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.HANGUP_BOT)
        rig2_record = yield rig.initiate("Again", "conversation")
        call2 = yield rig.fake.when_call(1)
        yield call2.answer()
        yield call2.when_stream()
        yield call2.caller_hangup()
        yield wait_for(lambda: not rig.manager.live_calls())
        final = yield rig.record(rig2_record.call_id)
        self.assertEqual(final.state, CallState.COMPLETED)

    @inlineCallbacks
    def test_max_duration_hangs_up_through_rest(self):
        rig, record, call, _stream = yield self.answered({"maxDurationSeconds": 1}, "Hi.")
        yield call.when_ended()
        yield wait_for(lambda: not rig.manager.live_calls())
        final = yield rig.record(record.call_id)
        self.assertEqual(final.state, CallState.TIMEOUT)
        self.assertEqual(rig.fake.requests[-1].get("Status"), "completed")
