"""A call whose media stream ends more than once gets a new stream each time."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from tests.unit.rigs import MemoryRig


class StreamRestarts(TestCase):
    """Each <Connect> action request is a new request, not a retry of the last."""

    def test_every_ended_stream_is_replaced(self):
        rig = MemoryRig(self, {})
        record = rig.initiate("Hello.", "conversation")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        stream = rig.run(call.when_stream())
        rig.run(stream.when_mark_echoed("u1:end"))
        tokens = [stream.parameters["token"]]
        for n in (1, 2):
            stream.drop()
            rig.run(stream.when_closed())
            stream = rig.run(call.when_stream(n))
            tokens.append(stream.parameters["token"])
        self.assertEqual(len(set(tokens)), 3, "a stream was answered with a used token")
        actions = [h.url for h in rig.fake.webhooks if "type=stream-ended" in h.url]
        self.assertEqual(len(set(actions)), len(actions), "two stream endings shared a URL")
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Still here."))
        rig.run(stream.when_mark_echoed("u1:end"))
        self.assertTrue(rig.run(speaking).complete)
        self.assertEqual(len(call.streams), 3)


class StreamEndedWhileStopping(TestCase):
    """A stream that ends while voicecalld stops for a restart does not end the call."""

    def test_the_carrier_is_told_to_ask_again(self):
        rig = MemoryRig(self, {})
        record = rig.initiate("Hello.", "conversation")
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        stream = rig.run(call.when_stream())
        rig.run(stream.when_mark_echoed("u1:end"))
        # What a <Connect action> request gets from a daemon that is stopping
        # (its stream ended just before); the next process answers the redirect.
        rig.provider._stopping = True
        wire = rig.provider.call_for(record.call_id, None)
        document = rig.provider.restart_stream(wire, call.sid)
        rig.provider._stopping = False
        self.assertIn('<Pause length="1" />', document)
        self.assertIn("type=stream-ended&amp;held=", document)
        self.assertNotIn("<Hangup", document)
        self.assertIsNone(stream.closed_by)
