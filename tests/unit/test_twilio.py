"""
Twilio end to end, in memory: our webhook site and media-stream endpoint,
the fake Twilio, the real call manager and store, and TTS/STT doubles, all
on one L{MemoryReactorClock} (L{tests.unit.rigs.MemoryRig}); the test lets
time pass.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import urlencode

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.unit.rigs import TO, TOKEN, MemoryRig
from voicecalld.errors import ProviderError
from voicecalld.values.states import CallState


class WithoutStreaming(TestCase):
    """Twilio's own voice: <Say>, <Gather>, REST updates."""

    def test_outbound_notify_speaks_and_hangs_up(self):
        rig = MemoryRig(self, {"outbound": {"notifyHangupDelaySec": 0}}, streaming=False)
        record = rig.initiate("Your parcel has arrived.")
        create = rig.fake.requests[0]
        self.assertEqual(create.get("To"), TO)
        self.assertEqual(
            create.getall("StatusCallbackEvent"), ["initiated", "ringing", "answered", "completed"]
        )
        self.assertEqual(create.get("Timeout"), "30")
        self.assertIn(f"callId={record.call_id}", create.get("Url"))
        call = rig.run(rig.fake.when_call(0))
        self.assertEqual(call.sid, record.provider_call_id)
        rig.run(call.ring())
        rig.run(call.answer())
        rig.run(call.when_ended())
        said = call.verbs_named("Say")
        self.assertEqual([v.text for v in said], ["Your parcel has arrived."])
        self.assertEqual(said[0].attrs["voice"], "Polly.Joanna")
        final = rig.record(record.call_id)
        self.assertEqual(final.state, CallState.HANGUP_BOT)
        self.assertEqual([e.text for e in final.transcript], ["Your parcel has arrived."])
        hangup = [r for r in rig.fake.requests if r.get("Status") == "completed"]
        self.assertEqual(len(hangup), 1)

    def test_conversation_listens_with_gather(self):
        rig = MemoryRig(self, {}, streaming=False)
        record = rig.initiate("Hi! What can I do for you?", "conversation")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        rig.run(call.when_gathering())
        waiting = Deferred.fromCoroutine(
            rig.manager.continue_call(record.call_id, "Say something?")
        )
        rig.run(call.when_verb("Say", 2))
        rig.run(call.when_gathering())
        rig.run(call.gather_result("I need a taxi"))
        words = rig.run(waiting)
        self.assertEqual(words, "I need a taxi")
        rig.run(call.gather_digits("42"))
        final = rig.record(record.call_id)
        self.assertEqual(final.transcript[-1].text, "42")
        rig.run(Deferred.fromCoroutine(rig.manager.end(record.call_id)))
        rig.run(call.when_ended())
        self.assertEqual(rig.record(record.call_id).state, CallState.HANGUP_BOT)

    def test_ending_a_ringing_call_cancels_it(self):
        rig = MemoryRig(self, {}, streaming=False)
        record = rig.initiate()
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.ring())
        rig.run(Deferred.fromCoroutine(rig.manager.end(record.call_id)))
        statuses = [r.get("Status") for r in rig.fake.requests if r.get("Status")]
        self.assertEqual(statuses, ["canceled", "completed"])
        rig.run(call.when_ended())
        self.assertEqual(call.status, "canceled")
        self.assertEqual(rig.record(record.call_id).state, CallState.HANGUP_BOT)

    def test_pre_connect_digits_go_as_send_digits(self):
        rig = MemoryRig(self, {}, streaming=False)
        rig.run(
            Deferred.fromCoroutine(
                rig.manager.initiate(TO, "Hi", "conversation", dtmf_sequence="ww123#")
            )
        )
        self.assertEqual(rig.fake.requests[0].get("SendDigits"), "ww123#")

    def test_provider_error_ends_the_call_with_twilios_code(self):
        rig = MemoryRig(self, {}, streaming=False)
        rig.fake.fail_next("create", 400, 21211, "Invalid 'To' Phone Number")
        initiating = Deferred.fromCoroutine(rig.manager.initiate(TO, "Hello", "notify"))
        failure = rig.failure(initiating, ProviderError).value
        self.assertIn("21211", str(failure))
        self.assertIn("Invalid 'To' Phone Number", str(failure))
        (record,) = rig.run(Deferred.fromCoroutine(rig.manager.recent(5)))
        self.assertEqual(record.state, CallState.FAILED)
        self.assertEqual(len(rig.fake.requests), 1)

    def test_unreachable_api_is_a_provider_error(self):
        rig = MemoryRig(self, {}, streaming=False)
        rig.api.unplug()
        initiating = Deferred.fromCoroutine(rig.manager.initiate(TO, "Hello", "notify"))
        failure = rig.failure(initiating, ProviderError).value
        self.assertIn("Twilio creating the call failed", str(failure))

    def test_bad_signature_is_refused_and_changes_nothing(self):
        rig = MemoryRig(self, {}, streaming=False)
        record = rig.initiate()
        call = rig.run(rig.fake.when_call(0))
        rig.fake.signature_mode = "wrong"
        rig.run(call.ring())
        hook = call.callbacks[-1]
        self.assertEqual(hook.code, 403)
        self.assertEqual(rig.record(record.call_id).state, CallState.INITIATED)
        rig.fake.signature_mode = "missing"
        rig.run(rig.fake.resend_last_callback(call))
        self.assertEqual(rig.record(record.call_id).state, CallState.INITIATED)
        self.flushLoggedErrors()

    def test_a_duplicated_callback_is_applied_once(self):
        rig = MemoryRig(self, {}, streaming=False)
        record = rig.initiate()
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.ring())
        before = rig.kinds().count("call.state")
        rig.run(rig.fake.resend_last_callback(call))
        rig.run(rig.fake.resend_last_callback(call))
        self.assertEqual(rig.kinds().count("call.state"), before)
        self.assertEqual(rig.record(record.call_id).state, CallState.RINGING)

    def test_inbound_allowed_and_refused(self):
        rig = MemoryRig(
            self,
            {
                "inboundPolicy": "allowlist",
                "allowFrom": ["+15557654321"],
                "inboundGreeting": "Welcome to Acme.",
            },
            streaming=False,
        )
        refused = rig.run(rig.fake.inbound_call("+15550000999", "+15550001111", rig.url))
        self.assertEqual([v.name for v in refused.verbs], ["Reject"])
        accepted = rig.run(rig.fake.inbound_call("+15557654321", "+15550001111", rig.url))
        rig.run(accepted.when_gathering())
        self.assertEqual([v.text for v in accepted.verbs_named("Say")], ["Welcome to Acme."])
        (live,) = rig.manager.live_calls()
        self.assertEqual((live.direction, live.from_number), ("inbound", "+15557654321"))
        self.assertEqual(live.provider_call_id, accepted.sid)
        refusal = [n for n in rig.notices if n.kind == "call.refused"]
        self.assertEqual(refusal[0].from_number, "+15550000999")

    def test_a_draining_daemon_answers_callers_busy(self):
        rig = MemoryRig(self, {"inboundPolicy": "open"}, streaming=False)
        rig.manager.begin_drain()
        refused = rig.run(rig.fake.inbound_call("+15557654321", "+15550001111", rig.url))
        verbs = [(v.name, v.attrs.get("reason")) for v in refused.verbs]
        self.assertEqual(verbs, [("Reject", "busy")])
        self.assertEqual(rig.manager.live_calls(), [])

    def test_an_inbound_calls_status_callback_finds_it_by_sid(self):
        # The number's status callback (set in Twilio's console) names no call id
        # of ours: the call is found by its SID, which the call manager stored.
        rig = MemoryRig(self, {"inboundPolicy": "open"}, streaming=False)
        call = rig.run(
            rig.fake.inbound_call("+15557654321", "+15550001111", rig.url, status_callback=rig.url)
        )
        rig.run(call.when_gathering())
        (live,) = rig.manager.live_calls()
        self.assertEqual(live.provider_call_id, call.sid)
        rig.run(call.caller_hangup())
        self.assertEqual(call.callbacks[-1].code, 204)
        self.assertEqual(rig.record(live.call_id).state, CallState.COMPLETED)

    def test_webhooks_by_sid_alone(self):
        rig = MemoryRig(self, {}, streaming=False)
        record = rig.initiate()
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

        unknown = rig.run(post("CA" + "9" * 32, "completed"))
        self.assertEqual(unknown.code, 204)
        rig.run(unknown.content())
        self.assertEqual(rig.record(record.call_id).state, CallState.INITIATED)
        known = rig.run(post(record.provider_call_id, "completed"))
        self.assertEqual(known.code, 204)
        rig.run(known.content())
        self.assertEqual(rig.record(record.call_id).state, CallState.COMPLETED)
        self.assertEqual(rig.manager.live_calls(), [])

    def test_malformed_webhooks_get_4xx_and_change_nothing(self):
        rig = MemoryRig(self, {}, streaming=False)
        record = rig.initiate()
        url = f"{rig.url}?callId={record.call_id}&type=status"
        body = {"CallSid": record.provider_call_id, "CallStatus": "completed"}
        for data, headers in (
            (urlencode(body).encode(), {}),
            (b"\xff\xfe", {"X-Twilio-Signature": "x"}),
            (urlencode(body).encode(), {"X-Twilio-Signature": _sign("wrong-token", url, body)}),
        ):
            response = rig.run(
                rig.http.post(
                    url,
                    data=data,
                    headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
                )
            )
            self.assertIn(response.code, (400, 403))
            rig.run(response.content())
        good = rig.run(
            rig.http.post(
                url,
                data=urlencode(body).encode(),
                headers={
                    "Content-Type": "application/x-www-form-urlencoded",
                    "X-Twilio-Signature": _sign(TOKEN, url, body),
                },
            )
        )
        self.assertEqual(good.code, 204)
        self.assertEqual(rig.record(record.call_id).state, CallState.COMPLETED)


def _sign(token: str, url: str, params: dict[str, str]) -> str:
    data = url + "".join(k + params[k] for k in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()


class WithStreaming(TestCase):
    """Media Streams: TTS frames out, caller audio to STT, marks, barge-in, reconnects."""

    def answered(self, config=None, message="Hi there, this is the assistant calling."):
        rig = MemoryRig(self, config or {})
        record = rig.initiate(message, "conversation")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        stream = rig.run(call.when_stream())
        return rig, record, call, stream

    def test_stream_greets_and_listens(self):
        rig, record, call, stream = self.answered()
        self.assertEqual(set(stream.parameters), {"token", "callId"})
        self.assertEqual(stream.parameters["callId"], record.call_id)
        self.assertEqual(call.verbs_named("Say"), [])
        greeting = "Hi there, this is the assistant calling."
        rig.run(stream.when_mark_echoed("u1:end"))
        spoken = stream.outbound_audio.replace(b"\xff", b"")
        self.assertEqual(len(spoken), len(greeting) * 400)
        rig.until(lambda: rig.manager.live_calls()[0].state == CallState.LISTENING)
        self.assertEqual(rig.tts.texts, [greeting])
        rig.run(stream.send_audio(b"\x55" * 1600))
        (session,) = rig.stt.sessions
        rig.until(lambda: len(session.audio) >= 1600)
        waiting = Deferred.fromCoroutine(rig.manager.continue_call(record.call_id, "Name?"))
        rig.run(stream.when_mark_echoed("u2:end"))
        session.listener.speech_started()
        session.listener.partial("It's")
        session.listener.final("It's Ann")
        self.assertEqual(rig.run(waiting), "It's Ann")
        stream.send_dtmf("7")
        rig.until(lambda: rig.manager.live_calls()[0].transcript[-1].text == "7")

    def test_two_seconds_of_speech_are_paced(self):
        rig, _record, _call, stream = self.answered(message="x" * 40)
        rig.run(stream.when_mark_echoed("u1:end"))
        times = [t for t, frame in stream.frames if frame != b"\xff" * 160]
        self.assertEqual(len(times), 100)
        spread = times[-1] - times[0]
        self.assertGreater(spread, 1.7)
        self.assertLess(spread, 2.2)
        per_window: dict[int, int] = {}
        for t in times:
            per_window[int((t - times[0]) / 0.1)] = per_window.get(int((t - times[0]) / 0.1), 0) + 1
        self.assertLessEqual(max(per_window.values()), 10)

    def test_barge_in_clears_and_keeps_what_was_heard(self):
        rig, record, _call, stream = self.answered(message="Hi.")
        rig.run(stream.when_mark_echoed("u1:end"))
        answer = "one two three four five six seven eight nine ten eleven twelve"
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, answer))
        rig.run(stream.when_audio(8000))
        (session,) = rig.stt.sessions
        session.listener.speech_started()
        playback = rig.run(speaking)
        self.assertFalse(playback.complete)
        rig.run(stream.when_clear())
        entry = rig.manager.live_calls()[0].transcript[-1]
        self.assertTrue(entry.interrupted)
        self.assertTrue(answer.startswith(entry.text))
        self.assertLess(len(entry.text), len(answer))

    def test_a_dropped_stream_is_replaced_and_the_call_goes_on(self):
        rig, record, call, stream = self.answered(message="Hello.")
        rig.run(stream.when_mark_echoed("u1:end"))
        stream.drop()
        rig.run(stream.when_closed())
        second = rig.run(call.when_stream(1))
        self.assertNotEqual(second.parameters["token"], stream.parameters["token"])
        self.assertEqual(len(rig.manager.live_calls()), 1)
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Still here."))
        rig.run(second.when_mark_echoed("u1:end"))
        self.assertTrue(rig.run(speaking).complete)

    def test_unknown_or_reused_tokens_are_refused(self):
        rig, _record, call, stream = self.answered(message="Hello.")
        rig.run(stream.when_mark_echoed("u1:end"))
        token = stream.parameters["token"]
        grant = rig.provider.media.tokens.claim(token, call.sid)
        self.assertIsNone(grant)
        self.assertIsNone(rig.provider.media.tokens.claim("made-up", call.sid))

    def test_dtmf_goes_in_band_without_losing_the_stream(self):
        rig, record, call, stream = self.answered(message="Hi.")
        rig.run(stream.when_mark_echoed("u1:end"))
        before = len(stream.outbound_audio)
        rig.run(Deferred.fromCoroutine(rig.manager.send_dtmf(record.call_id, "12w3")))
        self.assertGreater(len(stream.outbound_audio) - before, 8000 * 0.9)
        self.assertIsNone(stream.closed_by)
        self.assertEqual(len(call.streams), 1)

    def test_end_and_caller_hangup(self):
        rig, record, call, stream = self.answered(message="Hi.")
        rig.run(Deferred.fromCoroutine(rig.manager.end(record.call_id)))
        rig.run(call.when_ended())
        rig.run(stream.when_closed())
        self.assertEqual(rig.record(record.call_id).state, CallState.HANGUP_BOT)
        rig2_record = rig.initiate("Again", "conversation")
        call2 = rig.run(rig.fake.when_call(1))
        rig.run(call2.answer())
        rig.run(call2.when_stream())
        rig.run(call2.caller_hangup())
        rig.until(lambda: not rig.manager.live_calls())
        final = rig.record(rig2_record.call_id)
        self.assertEqual(final.state, CallState.COMPLETED)

    def test_max_duration_hangs_up_through_rest(self):
        rig, record, call, _stream = self.answered({"maxDurationSeconds": 1}, "Hi.")
        rig.run(call.when_ended())
        rig.until(lambda: not rig.manager.live_calls())
        final = rig.record(record.call_id)
        self.assertEqual(final.state, CallState.TIMEOUT)
        self.assertEqual(rig.fake.requests[-1].get("Status"), "completed")
