"""
Answering-machine detection in the call core, on the recording provider and
an injected clock: who answered decides what is said and how the call ends,
the result is stored before anything acts on it, and a message is left once.
"""

from __future__ import annotations

from twisted.internet.defer import succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.provider import CallBook
from tests.unit.harness import Harness
from tests.unit.rigs import MemoryRig
from voicecalld.calls import lifecycle
from voicecalld.cli import render
from voicecalld.config import parse_config
from voicecalld.providers.plivo.provider import NO_MACHINE_AFTER, PlivoProvider
from voicecalld.values.events import Answered, MachineDetected, MediaConnected
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState

AMD = {"outbound": {"machineDetection": True, "notifyHangupDelaySec": 2}}
MESSAGE = "Your parcel has arrived."


def said(h: Harness) -> list[str]:
    return [r[2] for r in h.provider.requests if r[0] == "speak"]


def hangups(h: Harness) -> list[CallState]:
    return [r[2] for r in h.provider.requests if r[0] == "hangup"]


class Detection(TestCase):
    """What the call does with who answered."""

    def place(self, config=AMD, mode="notify", message: str | None = MESSAGE):
        h = Harness(self, config)
        h.provider.instant_speech = True
        record = h.ok(h.manager.initiate("+15551234567", message, mode))
        h.ok(h.provider.emit(Answered(call_id=record.call_id, dedupe_key="answered")))
        return h, record.call_id

    def detected(self, h, call_id, answered_by, message_end=False, key="amd-1", raw=""):
        event = MachineDetected(
            call_id=call_id,
            answered_by=answered_by,
            message_end=message_end,
            raw=raw or answered_by,
            dedupe_key=key,
        )
        return h.ok(h.provider.emit(event))

    def test_off_by_default_and_the_message_is_said_at_once(self):
        h, call_id = self.place({})
        self.assertEqual(said(h), [MESSAGE])
        self.assertNotIn("machineDetection", h.stored(call_id).metadata)

    def test_a_screened_call_says_nothing_until_a_person_is_known(self):
        h, call_id = self.place()
        self.assertEqual(h.stored(call_id).metadata["machineDetection"], True)
        self.assertEqual(said(h), [])
        self.detected(h, call_id, "human")
        self.assertEqual(said(h), [MESSAGE])
        record = h.stored(call_id)
        self.assertEqual(record.metadata["answeredBy"], "human")
        h.clock.advance(2)
        self.assertEqual(hangups(h), [CallState.HANGUP_BOT])

    def test_notify_at_a_machine_waits_for_the_beep_and_ends_as_voicemail(self):
        h, call_id = self.place()
        self.detected(h, call_id, "machine", raw="machine")
        self.assertEqual(said(h), [])
        h.clock.advance(lifecycle.BEEP_WAIT - 1)
        self.assertEqual(said(h), [], "the greeting is still playing")
        self.detected(h, call_id, "machine", message_end=True, key="amd-2", raw="beep_detected")
        self.assertEqual(said(h), [MESSAGE])
        record = h.stored(call_id)
        self.assertEqual(record.metadata["answeredBy"], "machine")
        self.assertEqual(record.metadata["answeredByRaw"], "beep_detected")
        h.clock.advance(2)
        self.assertEqual(hangups(h), [CallState.VOICEMAIL])
        h.clock.advance(lifecycle.BEEP_WAIT)
        self.assertEqual(said(h), [MESSAGE], "the beep wait was cancelled")

    def test_without_a_beep_the_message_is_left_after_the_beep_wait(self):
        h, call_id = self.place()
        self.detected(h, call_id, "machine")
        h.clock.advance(lifecycle.BEEP_WAIT)
        self.assertEqual(said(h), [MESSAGE])

    def test_a_repeated_result_leaves_no_second_message(self):
        h, call_id = self.place()
        self.detected(h, call_id, "machine", message_end=True)
        self.detected(h, call_id, "machine", message_end=True, key="amd-1")  # a replay
        self.detected(h, call_id, "machine", message_end=True, key="amd-2")  # a new one
        self.detected(h, call_id, "human", key="amd-3")  # a late one
        self.assertEqual(said(h), [MESSAGE])

    def test_a_restart_before_the_beep_leaves_the_message_once_after_it(self):
        h, call_id = self.place()
        self.detected(h, call_id, "machine")
        h = h.restart()
        h.provider.instant_speech = True
        self.assertEqual(said(h), [], "restored at the machine: still waiting")
        self.detected(h, call_id, "machine", message_end=True, key="amd-2")
        self.assertEqual(said(h), [MESSAGE])
        h = h.restart()
        h.provider.instant_speech = True
        self.detected(h, call_id, "machine", message_end=True, key="amd-3")
        self.assertEqual(said(h), [], "left before the restart: not again")
        h.clock.advance(2)
        self.assertEqual(hangups(h), [CallState.VOICEMAIL])

    def test_a_conversation_at_a_machine_leaves_its_message_and_ends_as_voicemail(self):
        h, call_id = self.place(mode="conversation", message="Hi, it is the clinic.")
        self.detected(h, call_id, "machine", message_end=True)
        self.assertEqual(said(h), ["Hi, it is the clinic."])
        h.clock.advance(2)
        self.assertEqual(hangups(h), [CallState.VOICEMAIL])

    def test_a_conversation_at_a_machine_hangs_up_at_once_with_voicemail_action_hangup(self):
        config = {"outbound": {"machineDetection": True, "voicemailAction": "hangup"}}
        h, call_id = self.place(config, mode="conversation")
        self.detected(h, call_id, "machine")
        self.assertEqual(said(h), [])
        self.assertEqual(hangups(h), [CallState.VOICEMAIL])
        h.clock.advance(lifecycle.BEEP_WAIT)
        self.assertEqual(said(h), [])
        self.assertEqual(h.stored(call_id).state, CallState.VOICEMAIL)
        self.assertEqual(h.stored(call_id).metadata["answeredBy"], "machine")

    def test_a_notify_call_leaves_its_message_whatever_the_voicemail_action(self):
        config = {"outbound": {"machineDetection": True, "voicemailAction": "hangup"}}
        h, call_id = self.place(config)
        self.detected(h, call_id, "machine", message_end=True)
        self.assertEqual(said(h), [MESSAGE])

    def test_a_fax_is_hung_up_as_voicemail(self):
        h, call_id = self.place()
        self.detected(h, call_id, "fax")
        self.assertEqual(said(h), [])
        self.assertEqual(hangups(h), [CallState.VOICEMAIL])
        self.assertEqual(h.stored(call_id).end_detail, "a fax machine answered")

    def test_an_unknown_result_goes_on_as_a_person(self):
        h, call_id = self.place()
        self.detected(h, call_id, "unknown")
        self.assertEqual(said(h), [MESSAGE])
        self.assertEqual(h.stored(call_id).metadata["answeredBy"], "unknown")

    def test_no_result_at_all_goes_on_as_unknown_after_the_detection_wait(self):
        h, call_id = self.place()
        h.clock.advance(lifecycle.DETECTION_WAIT - 1)
        self.assertEqual(said(h), [])
        h.clock.advance(1)
        self.assertEqual(said(h), [MESSAGE])
        self.assertEqual(h.stored(call_id).metadata["answeredBy"], "unknown")

    def test_a_streamed_call_greets_once_both_media_and_the_result_are_in(self):
        h = Harness(self, AMD)
        h.provider.instant_speech = True
        h.provider.media = True
        call_id = h.ok(h.manager.initiate("+15551234567", MESSAGE, "notify")).call_id
        h.ok(h.provider.emit(Answered(call_id=call_id)))
        h.ok(h.provider.emit(MediaConnected(call_id=call_id, stream_id="s1")))
        self.assertEqual(said(h), [])
        self.detected(h, call_id, "human")
        self.assertEqual(said(h), [MESSAGE])

    def test_a_call_with_digits_to_send_is_dialled_without_detection(self):
        h = Harness(self, AMD)
        record = h.ok(h.manager.initiate("+15551234567", None, "conversation", None, "123"))
        self.assertNotIn("machineDetection", record.metadata)


class Durability(TestCase):
    """The result is written before anything acts on it."""

    def test_nothing_is_said_before_the_result_is_stored(self):
        h = Harness(self, AMD)
        h.provider.instant_speech = True
        call_id = h.ok(h.manager.initiate("+15551234567", MESSAGE, "notify")).call_id
        h.ok(h.provider.emit(Answered(call_id=call_id)))
        h.store.holding = True
        event = MachineDetected(
            call_id=call_id, answered_by="machine", message_end=True, raw="machine_end_beep"
        )
        applied = h.provider.emit(event)
        self.assertNoResult(applied)
        self.assertEqual(said(h), [], "not before the write")
        self.assertNotIn("answeredBy", h.stored(call_id).metadata)
        (live,) = h.manager.live_calls()
        self.assertNotIn("answeredBy", live.metadata, "not applied before the write")
        h.store.release(1)
        self.assertEqual(h.stored(call_id).metadata["answeredBy"], "machine")
        self.assertEqual(said(h), [MESSAGE])
        h.store.holding = False
        h.store.release()
        h.ok(applied)

    def test_a_lost_write_leaves_the_call_screened_after_a_restart(self):
        h = Harness(self, AMD)
        h.provider.instant_speech = True
        call_id = h.ok(h.manager.initiate("+15551234567", MESSAGE, "notify")).call_id
        h.ok(h.provider.emit(Answered(call_id=call_id)))
        h.store.holding = True
        h.provider.emit(MachineDetected(call_id=call_id, answered_by="human", raw="human"))
        self.assertEqual(said(h), [])
        h.store.held.clear()  # kill -9 before the write reached the file
        h.store.holding = False
        h = h.restart()
        h.provider.instant_speech = True
        self.assertEqual(said(h), [])
        h.ok(h.provider.emit(MachineDetected(call_id=call_id, answered_by="human", raw="human")))
        self.assertEqual(said(h), [MESSAGE])


class Reported(TestCase):
    """The CLI's status shows who answered."""

    def test_the_status_line_says_who_answered(self):
        h = Harness(self, AMD)
        h.provider.instant_speech = True
        call_id = h.ok(h.manager.initiate("+15551234567", MESSAGE, "notify")).call_id
        h.ok(h.provider.emit(Answered(call_id=call_id)))
        self.assertIn("(detecting who answered)", render.call(h.stored(call_id).to_json()))
        event = MachineDetected(
            call_id=call_id, answered_by="machine", message_end=True, raw="machine_end_beep"
        )
        h.ok(h.provider.emit(event))
        (line,) = [
            x for x in render.call(h.stored(call_id).to_json()).splitlines() if "answered:" in x
        ]
        self.assertTrue(line.endswith(" by machine (machine_end_beep)"), line)
        self.assertEqual(h.stored(call_id).to_json()["metadata"]["answeredBy"], "machine")


class OnTheWire(TestCase):
    """Twilio in memory, on one clock: the message waits for the machine's beep."""

    def test_the_message_follows_the_beep_on_the_clock(self):
        rig = MemoryRig(self, AMD, streaming=False, pause_scale=1.0)
        record = rig.initiate(MESSAGE)
        create = rig.fake.requests[0]
        self.assertEqual(create.get("MachineDetection"), "DetectMessageEnd")
        self.assertEqual(create.get("AsyncAmd"), "true")
        self.assertIn(f"callId={record.call_id}", create.get("AsyncAmdStatusCallback"))
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        answered = rig.reactor.seconds()
        call.detect("machine", greeting=8.0)
        said = rig.run(call.when_verb("Say"))
        said_at = rig.reactor.seconds()
        self.assertEqual(said.text, MESSAGE)
        (amd,) = [h for h in call.webhooks if h.kind == "amd"]
        self.assertEqual(amd.param("AnsweredBy"), "machine_end_beep")
        self.assertGreaterEqual(amd.sent_at - answered, 8.0)
        self.assertGreaterEqual(said_at, amd.sent_at)
        rig.run(call.when_ended())
        final = rig.record(record.call_id)
        self.assertEqual(final.state, CallState.VOICEMAIL)
        self.assertEqual(final.metadata["answeredByRaw"], "machine_end_beep")
        self.assertEqual([v.text for v in call.verbs_named("Say")], [MESSAGE])

    def test_a_fax_is_hung_up_unspoken(self):
        rig = MemoryRig(self, AMD, streaming=False, pause_scale=1.0)
        record = rig.initiate(MESSAGE)
        call = rig.run(rig.fake.when_call(0))
        rig.run(call.answer())
        rig.run(call.detect("fax"))
        rig.run(call.when_ended())
        self.assertEqual(call.verbs_named("Say"), [])
        final = rig.record(record.call_id)
        self.assertEqual(
            (final.state, final.end_detail), (CallState.VOICEMAIL, "a fax machine answered")
        )
        self.assertEqual(final.metadata["answeredBy"], "fax")


class PlivoPerson(TestCase):
    """Plivo reports machines only: its provider reports the person itself, in time."""

    def provider(self):
        config = {
            "provider": "plivo",
            "fromNumber": "+15550001111",
            "plivo": {"authId": "MAXXXXXXXXXXXXXXXXXX", "authToken": "token"},
        }
        clock = Clock()
        provider = PlivoProvider(
            parse_config(config, None, {}).settings, clock, public_url="https://x.test/hook"
        )
        events = []
        provider.start(lambda e: succeed(events.append(e)), CallBook())
        record = CallRecord(
            call_id="c1",
            provider="plivo",
            direction="outbound",
            mode="notify",
            from_number="+15550001111",
            to_number="+15551234567",
            state=CallState.INITIATED,
            started_at=0.0,
            metadata={"machineDetection": True},
        )
        call = provider._track(record)
        return provider, clock, call, events

    def test_no_machine_reported_in_time_is_a_person(self):
        provider, clock, call, events = self.provider()
        document = provider.answer_document(call, "uuid-1")
        self.assertNotIn("<Speak", document, "a screened call holds silent")
        clock.advance(NO_MACHINE_AFTER - 0.1)
        self.assertEqual(events, [])
        clock.advance(0.1)
        (person,) = events
        self.assertEqual((person.answered_by, person.provider_call_id), ("human", "uuid-1"))

    def test_a_machine_reported_cancels_the_person(self):
        provider, clock, call, events = self.provider()
        provider.answer_document(call, "uuid-1")
        call.machine_reported()
        clock.advance(NO_MACHINE_AFTER * 2)
        self.assertEqual(events, [])
