"""The lifecycle table, every pair of states, legal and illegal."""

from __future__ import annotations

import itertools

from twisted.trial.unittest import TestCase

from voicecalld.values.states import LIVE, TERMINAL, CallState, Move, judge

S = CallState
ORDER = [S.INITIATED, S.RINGING, S.ANSWERED, S.ACTIVE]
TALKING = {S.ACTIVE, S.SPEAKING, S.LISTENING}


def expected(current: CallState, target: CallState) -> Move:
    """The rule in words: forward only, talk states cycle, any live state may end."""
    if current == target:
        return Move.STAY
    if current in TERMINAL:
        return Move.ILLEGAL
    if target in TERMINAL:
        return Move.APPLY
    if current in TALKING and target in TALKING:
        return Move.APPLY if current != S.ACTIVE or target != S.ACTIVE else Move.STAY
    if current in ORDER and current != S.ACTIVE:
        rank = ORDER.index(current)
        if target in TALKING or ORDER.index(target) > rank:
            return Move.APPLY
    return Move.ILLEGAL


class TransitionTableTests(TestCase):
    """Every (current, target) pair gives the move the rule says."""

    def test_every_pair(self):
        for current, target in itertools.product(CallState, CallState):
            with self.subTest(current=current.value, target=target.value):
                self.assertEqual(judge(current, target), expected(current, target))

    def test_some_illegal_moves_by_name(self):
        self.assertEqual(judge(S.ANSWERED, S.RINGING), Move.ILLEGAL)
        self.assertEqual(judge(S.LISTENING, S.ANSWERED), Move.ILLEGAL)
        self.assertEqual(judge(S.COMPLETED, S.ACTIVE), Move.ILLEGAL)
        self.assertEqual(judge(S.BUSY, S.HANGUP_BOT), Move.ILLEGAL)

    def test_the_nine_end_reasons(self):
        self.assertEqual(
            sorted(s.value for s in TERMINAL),
            sorted(
                [
                    "completed",
                    "hangup-user",
                    "hangup-bot",
                    "timeout",
                    "error",
                    "failed",
                    "no-answer",
                    "busy",
                    "voicemail",
                ]
            ),
        )
        self.assertEqual(LIVE | TERMINAL, set(CallState))
        self.assertTrue(all(s.terminal for s in TERMINAL))
