"""
Notices: what happened, as the live tail (C{voicecall tail}) shows it.

One small frozen class per kind of happening.  Notices are for users: they
carry ids, states and words said, never secrets.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs
from attrs import frozen


@frozen(kw_only=True)
class Notice:
    """Base: when it happened and which call it is about (if any)."""

    kind: ClassVar[str] = "notice"
    at: float
    call_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The notice as one JSON object: C{type}, C{timestamp}, C{callId} and its fields."""
        data: dict[str, Any] = {"type": self.kind, "timestamp": round(self.at * 1000)}
        if self.call_id is not None:
            data["callId"] = self.call_id
        for field in attrs.fields(type(self)):
            if field.name in ("at", "call_id"):
                continue
            value = getattr(self, field.name)
            if value is not None:
                data[_camel(field.name)] = value
        return data


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p.title() for p in rest)


@frozen(kw_only=True)
class CallCreated(Notice):
    """A call record was created (outbound placed or inbound accepted)."""

    kind: ClassVar[str] = "call.created"
    direction: str
    mode: str
    from_number: str
    to_number: str
    provider: str


@frozen(kw_only=True)
class StateChanged(Notice):
    """The call moved to a new state."""

    kind: ClassVar[str] = "call.state"
    state: str
    previous: str


@frozen(kw_only=True)
class Said(Notice):
    """Something was said or keyed, and went into the transcript."""

    kind: ClassVar[str] = "call.transcript"
    speaker: str
    text: str
    entry_kind: str = "speech"
    interrupted: bool | None = None


@frozen(kw_only=True)
class PartialSpeech(Notice):
    """The caller is speaking: a transcript that may still change."""

    kind: ClassVar[str] = "call.partial"
    text: str


@frozen(kw_only=True)
class CallEnded(Notice):
    """The call is over."""

    kind: ClassVar[str] = "call.ended"
    reason: str
    detail: str | None = None


@frozen(kw_only=True)
class CallRefused(Notice):
    """A call was refused before it was placed or answered."""

    kind: ClassVar[str] = "call.refused"
    direction: str
    from_number: str | None
    to_number: str | None
    reason: str


@frozen(kw_only=True)
class Problem(Notice):
    """Something went wrong on a call that goes on (or on the daemon)."""

    kind: ClassVar[str] = "call.problem"
    what: str
    message: str


@frozen(kw_only=True)
class Subscribed(Notice):
    """The first event of a subscription: from here on, nothing is missed."""

    kind: ClassVar[str] = "subscribed"
    live_calls: int


@frozen(kw_only=True)
class TurnMeasured(Notice):
    """A conversation turn's latency breakdown, in milliseconds."""

    kind: ClassVar[str] = "turn.latency"
    turn: int
    stages: dict[str, float]
