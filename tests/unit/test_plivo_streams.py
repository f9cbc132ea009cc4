"""
Plivo audio streams on the shared media session: our speech as
C{playAudio} with C{checkpoint}s, caller audio to STT, barge-in with
C{clearAudio}, key presses, and a stream that ends while the call goes on.
"""

from __future__ import annotations

import json

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.unit.test_plivo import Rig
from tests.waiting import wait_for
from voicecalld.media.stream import BadMessage, StreamMark, StreamMedia
from voicecalld.providers.plivo.codec import PlivoCodec
from voicecalld.values.states import CallState


class Streamed(TestCase):
    """A conversation over a bidirectional mu-law stream."""

    timeout = 30

    @inlineCallbacks
    def answered(self, message="Hi there, this is the assistant calling."):
        rig = yield Rig(self, {}, True).start()
        record = yield rig.initiate(message, "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        return rig, record, call, stream

    @inlineCallbacks
    def test_stream_greets_listens_and_hears(self):
        rig, record, call, stream = yield self.answered()
        (element,) = call.elements_named("Stream")
        self.assertEqual(element.attrs["bidirectional"], "true")
        self.assertEqual(element.attrs["keepCallAlive"], "true")
        self.assertEqual(element.attrs["contentType"], "audio/x-mulaw;rate=8000")
        self.assertEqual(set(stream.extra_headers), {"token", "callId"})
        self.assertEqual(stream.extra_headers["callId"], record.call_id)
        self.assertEqual(call.elements_named("Speak"), [])
        greeting = "Hi there, this is the assistant calling."
        yield stream.when_mark_echoed("u1:end")
        spoken = stream.outbound_audio.replace(b"\xff", b"")
        self.assertEqual(len(spoken), len(greeting) * 400)
        yield wait_for(lambda: rig.manager.live_calls()[0].state == CallState.LISTENING)
        yield stream.send_audio(b"\x55" * 1600)
        (session,) = rig.stt.sessions
        yield wait_for(lambda: len(session.audio) >= 1600)
        waiting = Deferred.fromCoroutine(rig.manager.continue_call(record.call_id, "Name?"))
        yield stream.when_mark_echoed("u2:end")
        session.listener.speech_started()
        session.listener.final("It's Ann")
        self.assertEqual((yield waiting), "It's Ann")
        yield stream.send_dtmf("7")
        yield wait_for(lambda: rig.manager.live_calls()[0].transcript[-1].text == "7")
        self.assertEqual(stream.errors, [])

    @inlineCallbacks
    def test_barge_in_clears_plivos_audio_and_keeps_what_was_heard(self):
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
    def test_a_closed_stream_is_replaced_and_the_call_goes_on(self):
        rig, record, call, stream = yield self.answered(message="Hello.")
        yield stream.when_mark_echoed("u1:end")
        stream.drop()
        yield stream.when_closed()
        second = yield call.when_stream(1)
        self.assertNotEqual(second.extra_headers["token"], stream.extra_headers["token"])
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Still here."))
        yield second.when_mark_echoed("u1:end")
        self.assertTrue((yield speaking).complete)
        self.assertEqual(len(rig.manager.live_calls()), 1)

    @inlineCallbacks
    def test_end_hangs_up_and_closes_the_stream(self):
        rig, record, call, stream = yield self.answered(message="Hi.")
        yield Deferred.fromCoroutine(rig.manager.end(record.call_id))
        yield call.when_ended()
        yield stream.when_closed()
        self.assertEqual((yield rig.record(record.call_id)).state, CallState.HANGUP_BOT)
        self.assertEqual(call.status, "completed")


class Codec(TestCase):
    """Plivo's stream messages read and written."""

    def test_reads_start_media_played_and_ignores_cleared(self):
        codec = PlivoCodec()
        start = codec.parse_start(
            json.dumps(
                {
                    "event": "start",
                    "start": {
                        "callId": "cu",
                        "streamId": "s1",
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                    },
                    "extra_headers": json.dumps({"token": "t"}),
                }
            ).encode(),
            False,
        )
        read = (start.stream_id, start.call_ref, start.parameters)
        self.assertEqual(read, ("s1", "cu", {"token": "t"}))
        media = {"event": "media", "media": {"payload": "VVU=", "chunk": 3, "track": "inbound"}}
        self.assertEqual(codec.parse(json.dumps(media).encode(), False), StreamMedia(b"UU", 3))
        played = {"event": "playedStream", "streamId": "s1", "name": "u1:end"}
        self.assertEqual(codec.parse(json.dumps(played).encode(), False), StreamMark("u1:end"))
        self.assertIsNone(codec.parse(b'{"event":"clearedAudio","streamId":"s1"}', False))
        encoder = codec.encoder(start)
        out = json.loads(encoder.media(b"UU"))
        self.assertEqual(
            out,
            {
                "event": "playAudio",
                "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "VVU="},
            },
        )
        self.assertEqual(json.loads(encoder.clear()), {"event": "clearAudio", "streamId": "s1"})
        self.assertEqual(
            json.loads(encoder.mark("m")), {"event": "checkpoint", "streamId": "s1", "name": "m"}
        )

    def test_refuses_what_it_cannot_read(self):
        codec = PlivoCodec()
        l16 = {
            "event": "start",
            "start": {
                "streamId": "s",
                "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 8000},
            },
        }
        for payload, binary in (
            (b"\x00\x01", True),
            (b"not json", False),
            (json.dumps(l16).encode(), False),
            (b'{"event":"start","start":{"streamId":"s"},"extra_headers":"{"}', False),
        ):
            self.assertRaises(BadMessage, codec.parse_start, payload, binary)
        self.assertRaises(
            BadMessage, codec.parse, b'{"event":"media","media":{"payload":"!!"}}', False
        )
