"""
A restart mid-call on a streamed call: the stop stores what the caller
heard before the store closes, and the next process goes on from the store
once the carrier's stream is back (the rest of a cut utterance, a cut
greeting again, nothing said twice).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.fakes.provider import RecordingProvider
from tests.unit.harness import Harness, deferred
from tests.unit.test_manager import ScriptedResponder
from voicecalld.calls.speaking import UNSAID
from voicecalld.calls.turns import AGAIN, MISSED
from voicecalld.values import events as ev
from voicecalld.values.playback import Playback


def streamed() -> RecordingProvider:
    provider = RecordingProvider()
    provider.media = True
    return provider


def media_up(h: Harness, call_id: str) -> None:
    h.ok(h.provider.emit(ev.MediaConnected(call_id=call_id, stream_id="MZ1")))


def stream_closes(h: Harness, call_id: str, heard: str) -> None:
    """The daemon's stop closes the stream: the utterance ends with what was heard."""
    text, done = h.provider.speaking.pop(call_id)
    done.callback(Playback(text, heard, complete=False))


def settled(h: Harness) -> Deferred:
    d = deferred(h.manager.settle())
    h.clock.advance(0)
    h.clock.advance(0)
    return d


def said(h: Harness) -> list[str]:
    return [r[2] for r in h.provider.requests if r[0] == "speak"]


def transcript(h: Harness, call_id: str) -> list[tuple[str, str, bool]]:
    return [(e.speaker, e.text, e.interrupted) for e in h.stored(call_id).transcript]


class Resume(TestCase):
    """What a SIGTERM restart keeps of a streamed call's turn."""

    def setUp(self):
        self.h = Harness(self, provider=streamed())

    def greeted(self) -> str:
        call_id = self.h.answered_call(message="Hello there.")
        media_up(self.h, call_id)
        self.assertEqual(said(self.h), ["Hello there."])
        self.h.provider.instant_speech = False
        return call_id

    def test_the_rest_of_a_cut_utterance_is_said_once_the_stream_is_back(self):
        h, call_id = self.h, self.greeted()
        Deferred.fromCoroutine(h.manager.speak(call_id, "one two three four")).addErrback(
            lambda f: None
        )
        h.manager.stop()
        stream_closes(h, call_id, "one two")
        self.successResultOf(settled(h))
        self.assertEqual(h.stored(call_id).metadata[UNSAID], "three four")

        h2 = h.restart(streamed())
        self.assertEqual(said(h2), [], "spoke before the carrier's stream was back")
        media_up(h2, call_id)
        self.assertEqual(said(h2), ["three four"])
        h2.provider.finish_speaking(call_id)
        self.assertEqual(
            transcript(h2, call_id),
            [
                ("bot", "Hello there.", False),
                ("bot", "one two", True),
                ("bot", "three four", False),
            ],
        )
        self.assertNotIn(UNSAID, h2.stored(call_id).metadata)
        media_up(h2, call_id)  # a later stream of the same process says nothing again
        self.assertEqual(said(h2), ["three four"])

    def test_an_utterance_nobody_heard_is_said_whole(self):
        h, call_id = self.h, self.greeted()
        Deferred.fromCoroutine(h.manager.speak(call_id, "one two")).addErrback(lambda f: None)
        h.manager.stop()
        stream_closes(h, call_id, "")
        self.successResultOf(settled(h))
        h2 = h.restart(streamed())
        media_up(h2, call_id)
        self.assertEqual(said(h2), ["one two"])

    def test_a_cut_greeting_is_said_again_whole(self):
        h = self.h
        call_id = h.ok(h.manager.initiate("+15551234567", "Hello there.", "conversation")).call_id
        h.ok(h.provider.emit(ev.Answered(call_id=call_id)))
        media_up(h, call_id)
        h.manager.stop()
        stream_closes(h, call_id, "Hello")
        self.successResultOf(settled(h))
        self.assertNotIn(UNSAID, h.stored(call_id).metadata)
        h2 = h.restart(streamed())
        media_up(h2, call_id)
        self.assertEqual(said(h2), ["Hello there."])
        h2.provider.finish_speaking(call_id)
        self.assertEqual(
            transcript(h2, call_id),
            [("bot", "Hello", True), ("bot", "Hello there.", False)],
        )

    def test_the_stop_waits_for_what_was_heard_to_be_stored(self):
        h, call_id = self.h, self.greeted()
        Deferred.fromCoroutine(h.manager.speak(call_id, "one two three")).addErrback(lambda f: None)
        h.store.holding = True
        h.manager.stop()
        stream_closes(h, call_id, "one")
        settling = settled(h)
        self.assertNoResult(settling)
        h.store.release()
        h.clock.advance(0)
        self.successResultOf(settling)
        self.assertEqual(transcript(h, call_id)[-1], ("bot", "one", True))

    def test_a_listening_call_just_listens_on(self):
        h, call_id = self.h, self.greeted()
        h.manager.stop()
        self.successResultOf(settled(h))
        h2 = h.restart(streamed())
        self.assertEqual([r.call_id for r in h2.manager.live_calls()], [call_id])
        media_up(h2, call_id)
        self.assertEqual(said(h2), [])
        self.assertEqual(transcript(h2, call_id), [("bot", "Hello there.", False)])

    def test_a_caller_turn_whose_reply_was_lost_is_answered(self):
        h, call_id = self.h, self.greeted()
        h.manager.replies.register(ScriptedResponder())
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="What time is it?")))
        h.manager.stop()  # the reply is still being made: it dies with the process
        self.successResultOf(settled(h))
        h2 = h.restart(streamed())
        responder = ScriptedResponder()
        h2.manager.replies.register(responder)
        self.assertEqual(responder.asked, [])
        media_up(h2, call_id)
        ((record, d),) = responder.asked
        self.assertEqual(record.transcript[-1].text, "What time is it?")
        d.callback("It is noon.")
        self.assertEqual(said(h2), ["It is noon."])
        h2.provider.finish_speaking(call_id)
        self.assertEqual(
            transcript(h2, call_id),
            [
                ("bot", "Hello there.", False),
                ("user", "What time is it?", False),
                ("bot", "It is noon.", False),
            ],
        )

    def test_a_caller_cut_off_mid_sentence_is_asked_again(self):
        h, call_id = self.h, self.greeted()
        h.ok(h.provider.emit(ev.SpeechStarted(call_id=call_id)))
        h.manager.stop()
        self.successResultOf(settled(h))
        self.assertTrue(h.stored(call_id).metadata[MISSED])
        h2 = h.restart(streamed())
        media_up(h2, call_id)
        self.assertEqual(said(h2), [AGAIN])
        h2.provider.finish_speaking(call_id)
        self.assertNotIn(MISSED, h2.stored(call_id).metadata)
        self.assertEqual(transcript(h2, call_id)[-1], ("bot", AGAIN, False))

    def test_a_caller_whose_words_were_heard_is_not_asked_again(self):
        h, call_id = self.h, self.greeted()
        h.ok(h.provider.emit(ev.SpeechStarted(call_id=call_id)))
        h.ok(h.provider.emit(ev.Speech(call_id=call_id, text="okay")))
        h.manager.stop()
        self.successResultOf(settled(h))
        self.assertNotIn(MISSED, h.stored(call_id).metadata)
