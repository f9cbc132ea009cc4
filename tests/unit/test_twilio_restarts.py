"""A call whose media stream ends more than once gets a new stream each time."""

from __future__ import annotations

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.trial.unittest import TestCase

from tests.unit.test_twilio import Rig


class StreamRestarts(TestCase):
    """Each <Connect> action request is a new request, not a retry of the last."""

    timeout = 30

    @inlineCallbacks
    def test_every_ended_stream_is_replaced(self):
        rig = yield Rig(self, {}, True).start()
        record = yield rig.initiate("Hello.", "conversation")
        call = yield rig.fake.when_call(0)
        yield call.answer()
        stream = yield call.when_stream()
        yield stream.when_mark_echoed("u1:end")
        tokens = [stream.parameters["token"]]
        for n in (1, 2):
            stream.drop()
            yield stream.when_closed()
            stream = yield call.when_stream(n)
            tokens.append(stream.parameters["token"])
        self.assertEqual(len(set(tokens)), 3, "a stream was answered with a used token")
        actions = [h.url for h in rig.fake.webhooks if "type=stream-ended" in h.url]
        self.assertEqual(len(set(actions)), len(actions), "two stream endings shared a URL")
        speaking = Deferred.fromCoroutine(rig.manager.speak(record.call_id, "Still here."))
        yield stream.when_mark_echoed("u1:end")
        self.assertTrue((yield speaking).complete)
        self.assertEqual(len(call.streams), 3)
