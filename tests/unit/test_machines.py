"""The lifecycle and turn tables alone: their moves, their outputs, their diagrams."""

from __future__ import annotations

import enum
import os

from twisted.internet.testing import EventLoggingObserver
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from voicecalld.calls import diagrams
from voicecalld.calls.lifecycle import LIFE_TABLE, LifeInput, LifeOutput, Phase
from voicecalld.calls.machine import Machine, Transition, table
from voicecalld.calls.turns import TURN_TABLE, TurnInput, TurnOutput, TurnState

DOCS = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "state-machines")

P, L, LO = Phase, LifeInput, LifeOutput
S, T, O = TurnState, TurnInput, TurnOutput  # noqa: E741


def walk(rules, start, inputs):
    """Feed C{inputs} from C{start}: the (state, outputs) after each, as names."""
    machine = Machine(rules, start, "test", "call-1")
    seen = []
    for symbol in inputs:
        outputs = machine.feed(symbol)
        seen.append((machine.state.name, [o.name for o in outputs]))
    return seen


class Tables(TestCase):
    """The table builder and the one-warning rule for illegal inputs."""

    def test_a_pair_given_twice_is_refused(self):
        class A(enum.Enum):
            X = 1

        self.assertRaises(ValueError, table, [((A.X,), A.X, None), ((A.X,), A.X, None)])

    def test_an_illegal_input_is_warned_once_and_changes_nothing(self):
        observer = EventLoggingObserver.createWithCleanup(self, globalLogPublisher)
        machine = Machine(LIFE_TABLE, P.CONNECTED, "call", "call-1")
        self.assertEqual(machine.feed(L.PLACED), ())
        self.assertEqual(machine.feed(L.PLACED), ())
        self.assertEqual(machine.state, P.CONNECTED)
        codes = [e.get("log_code") for e in observer]
        self.assertEqual(codes, ["call.illegal_input"])
        self.assertEqual(observer[0]["log_level"].name, "warn")

    def test_the_diagrams_are_drawn_from_the_tables(self):
        for name, text in diagrams.render().items():
            with open(os.path.join(DOCS, name), encoding="utf-8") as f:
                self.assertEqual(
                    f.read(),
                    text,
                    f"docs/state-machines/{name} is stale: python -m voicecalld.calls.diagrams",
                )


class Lifecycle(TestCase):
    """The call's life: forward only, ends from anywhere, never moves once ended."""

    def test_an_answered_outbound_call(self):
        self.assertEqual(
            walk(LIFE_TABLE, P.DIALLING, [L.PLACED, L.RINGING, L.ANSWERED, L.MEDIA_UP, L.ENDED]),
            [
                ("DIALLING", ["ARM_RING_TIMER"]),
                ("RINGING", ["STORE_RINGING"]),
                ("CONNECTED", ["STORE_ANSWERED", "ARM_MAX_DURATION", "GREET_UNLESS_MEDIA"]),
                ("CONNECTED", ["GREET"]),
                ("ENDED", ["FINISH"]),
            ],
        )

    def test_late_carrier_events_never_move_a_call_back(self):
        self.assertEqual(
            walk(LIFE_TABLE, P.CONNECTED, [L.RINGING, L.ANSWERED, L.RING_TIMEOUT]),
            [("CONNECTED", []), ("CONNECTED", []), ("CONNECTED", [])],
        )

    def test_every_reason_to_end_hangs_up_first(self):
        for phase, symbol in [
            (P.DIALLING, L.RING_TIMEOUT),
            (P.RINGING, L.STALE),
            (P.CONNECTED, L.MAX_DURATION),
            (P.CONNECTED, L.NOTIFY_DONE),
            (P.CONNECTED, L.FAILED),
            (P.RINGING, L.HANG_UP),
        ]:
            self.assertEqual(LIFE_TABLE[(phase, symbol)], Transition(phase, (LO.HANG_UP,)))
            self.assertEqual(LIFE_TABLE[(phase, L.HUNG_UP)], Transition(P.ENDED, (LO.FINISH,)))

    def test_an_ended_call_takes_every_input_and_does_nothing(self):
        for symbol in LifeInput:
            self.assertEqual(LIFE_TABLE[(P.ENDED, symbol)], Transition(P.ENDED))

    def test_the_illegal_pairs_are_exactly_these(self):
        illegal = {(p, i) for p in Phase for i in LifeInput if (p, i) not in LIFE_TABLE}
        self.assertEqual(
            illegal,
            {
                (P.RINGING, L.PLACED),
                (P.CONNECTED, L.PLACED),
                (P.DIALLING, L.MAX_DURATION),
                (P.RINGING, L.MAX_DURATION),
                (P.DIALLING, L.NOTIFY_DONE),
                (P.RINGING, L.NOTIFY_DONE),
                (P.CONNECTED, L.STALE),
                # answering-machine detection: answered calls only
                (P.SCREENING, L.PLACED),
                (P.AT_MACHINE, L.PLACED),
                (P.SCREENING, L.STALE),
                (P.AT_MACHINE, L.STALE),
                (P.DIALLING, L.DETECTION_TIMEOUT),
                (P.RINGING, L.DETECTION_TIMEOUT),
            },
        )


class Turn(TestCase):
    """Who speaks next, input by input."""

    def test_a_turn_said_over_the_first_words_is_held_then_answered(self):
        self.assertEqual(
            walk(
                TURN_TABLE,
                S.START,
                [T.GREET, T.CALLER_STARTED, T.TURN, T.SAID, T.REPLY, T.SAID],
            ),
            [
                ("GREETING", ["SAY_FIRST"]),
                ("GREETING", []),
                ("GREETING_HELD", ["HOLD"]),
                ("THINKING", ["ASK_REPLY"]),
                ("SPEAKING", ["SAY_REPLY"]),
                ("IDLE", []),
            ],
        )

    def test_first_words_cut_off_are_said_again_at_the_next_greet(self):
        self.assertEqual(
            walk(TURN_TABLE, S.START, [T.GREET, T.FIRST_CUT, T.GREET, T.SAID]),
            [
                ("GREETING", ["SAY_FIRST"]),
                ("START", []),
                ("GREETING", ["SAY_FIRST"]),
                ("IDLE", []),
            ],
        )

    def test_barge_in_cuts_a_reply_but_a_backchannel_does_not(self):
        self.assertEqual(
            walk(
                TURN_TABLE,
                S.SPEAKING,
                [T.BACKCHANNEL, T.CALLER_STARTED, T.BARGE_IN_DUE, T.TURN, T.SAID],
            ),
            [
                ("SPEAKING", []),
                ("SPEAKING", ["ARM_BARGE_IN"]),
                ("SPEAKING", ["INTERRUPT"]),
                ("THINKING", ["INTERRUPT", "ASK_REPLY"]),
                ("THINKING", []),
            ],
        )

    def test_the_first_words_are_never_interrupted(self):
        for symbol in (T.CALLER_STARTED, T.BARGE_IN_DUE, T.PARTIAL_TURN, T.TURN, T.BACKCHANNEL):
            for state in (S.GREETING, S.GREETING_HELD):
                outputs = TURN_TABLE[(state, symbol)].outputs
                self.assertNotIn(O.INTERRUPT, outputs, (state, symbol))

    def test_continue_asks_listens_and_answers(self):
        self.assertEqual(
            walk(TURN_TABLE, S.IDLE, [T.CONTINUE, T.SAID, T.TURN]),
            [
                ("ASKING", ["START_LISTENING", "SAY_PROMPT", "ARM_ANSWER_TIMEOUT"]),
                ("AWAITING", ["NOTE_LISTENING"]),
                ("IDLE", ["ANSWER_WAITER"]),
            ],
        )

    def test_an_acknowledgement_over_the_prompt_answers_when_it_ends(self):
        self.assertEqual(
            walk(TURN_TABLE, S.ASKING, [T.BACKCHANNEL, T.SAID]),
            [("ASKING_HELD", ["HOLD"]), ("IDLE", ["ANSWER_HELD"])],
        )

    def test_a_real_answer_over_the_prompt_cuts_it_short(self):
        self.assertEqual(
            walk(TURN_TABLE, S.ASKING, [T.TURN]), [("IDLE", ["INTERRUPT", "ANSWER_WAITER"])]
        )

    def test_a_continue_queued_behind_a_reply_starts_when_its_prompt_does(self):
        self.assertEqual(
            walk(TURN_TABLE, S.SPEAKING, [T.CONTINUE, T.PROMPTING, T.SAID]),
            [
                ("SPEAKING", ["START_LISTENING", "SAY_PROMPT", "ARM_ANSWER_TIMEOUT"]),
                ("ASKING", []),
                ("AWAITING", ["NOTE_LISTENING"]),
            ],
        )

    def test_one_continue_at_a_time(self):
        for state in (S.ASKING, S.ASKING_HELD, S.AWAITING):
            self.assertNotIn((state, T.CONTINUE), TURN_TABLE)

    def test_timeouts_and_stale_replies(self):
        self.assertEqual(
            walk(TURN_TABLE, S.AWAITING, [T.REPLY, T.ANSWER_TIMEOUT, T.ANSWER_TIMEOUT]),
            [
                ("AWAITING", []),
                ("IDLE", ["STOP_LISTENING", "FAIL_WAITER"]),
                ("IDLE", []),
            ],
        )
