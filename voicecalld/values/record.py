"""
The call record: what voicecalld knows about one call, as clients see it.

Field names on the wire follow the OpenClaw plugin's record (camelCase,
timestamps in epoch milliseconds); Python code uses the attrs fields.
Records are immutable: every change makes a new one with L{attrs.evolve}.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import attrs
from attrs import field, frozen

from voicecalld.values.states import CallState

BOT = "bot"
USER = "user"
OUTBOUND = "outbound"
INBOUND = "inbound"
NOTIFY = "notify"
CONVERSATION = "conversation"
MODES = (NOTIFY, CONVERSATION)
# The metadata key set on an outbound call dialled with answering-machine detection.
MACHINE_DETECTION = "machineDetection"


def _ms(seconds: float | None) -> int | None:
    return None if seconds is None else round(seconds * 1000)


def _seconds(ms: Any) -> float | None:
    return None if ms is None else ms / 1000.0


def _frozen_mapping(value: Mapping[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType(dict(value))


@frozen
class TranscriptEntry:
    """One thing said (or keyed) on a call."""

    at: float
    speaker: str
    text: str
    kind: str = "speech"
    interrupted: bool = False

    def to_json(self) -> dict[str, Any]:
        """The entry as clients see it."""
        data: dict[str, Any] = {
            "timestamp": _ms(self.at),
            "speaker": self.speaker,
            "text": self.text,
            "isFinal": True,
            "kind": self.kind,
        }
        if self.interrupted:
            data["interrupted"] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TranscriptEntry:
        """Read an entry back from its JSON form."""
        return cls(
            at=_seconds(data["timestamp"]) or 0.0,
            speaker=data["speaker"],
            text=data["text"],
            kind=data.get("kind", "speech"),
            interrupted=bool(data.get("interrupted", False)),
        )


@frozen
class CallRecord:
    """Everything about one call: identity, parties, lifecycle and transcript."""

    call_id: str
    provider: str
    direction: str
    mode: str
    from_number: str
    to_number: str
    state: CallState
    started_at: float
    provider_call_id: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None
    end_detail: str | None = None
    initial_message: str | None = None
    session_key: str | None = None
    transcript: tuple[TranscriptEntry, ...] = ()
    metadata: Mapping[str, Any] = field(factory=dict, converter=_frozen_mapping)

    @property
    def ended(self) -> bool:
        """Whether the call is over."""
        return self.state.terminal

    @property
    def machine_detection(self) -> bool:
        """Whether the call was dialled with answering-machine detection."""
        return self.metadata.get(MACHINE_DETECTION) is True

    @property
    def screening(self) -> bool:
        """Dialled with answering-machine detection, and who answered is not known yet."""
        return self.machine_detection and "answeredBy" not in self.metadata

    def with_entry(self, entry: TranscriptEntry) -> CallRecord:
        """
        This record with one more transcript entry, in the order things were
        said: after every entry stamped at or before it.
        """
        at = len(self.transcript)
        while at > 0 and self.transcript[at - 1].at > entry.at:
            at -= 1
        return attrs.evolve(self, transcript=(*self.transcript[:at], entry, *self.transcript[at:]))

    def with_metadata(self, **values: Any) -> CallRecord:
        """This record with some metadata keys set (None removes a key)."""
        merged = dict(self.metadata)
        for key, value in values.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        return attrs.evolve(self, metadata=merged)

    def to_json(self, *, transcript: bool = True) -> dict[str, Any]:
        """The record as clients see it (and as the store keeps it)."""
        data: dict[str, Any] = {
            "callId": self.call_id,
            "provider": self.provider,
            "providerCallId": self.provider_call_id,
            "direction": self.direction,
            "mode": self.mode,
            "from": self.from_number,
            "to": self.to_number,
            "state": self.state.value,
            "startedAt": _ms(self.started_at),
            "answeredAt": _ms(self.answered_at),
            "endedAt": _ms(self.ended_at),
            "endReason": self.end_reason,
            "endDetail": self.end_detail,
            "sessionKey": self.session_key,
            "metadata": dict(self.metadata),
        }
        if self.initial_message is not None:
            data["metadata"]["initialMessage"] = self.initial_message
        data = {k: v for k, v in data.items() if v is not None}
        if transcript:
            data["transcript"] = [e.to_json() for e in self.transcript]
        return data

    @classmethod
    def from_json(
        cls, data: Mapping[str, Any], transcript: tuple[TranscriptEntry, ...] = ()
    ) -> CallRecord:
        """Read a record back from its JSON form."""
        metadata = dict(data.get("metadata") or {})
        initial = metadata.pop("initialMessage", None)
        return cls(
            call_id=data["callId"],
            provider=data["provider"],
            direction=data["direction"],
            mode=data["mode"],
            from_number=data["from"],
            to_number=data["to"],
            state=CallState(data["state"]),
            started_at=_seconds(data["startedAt"]) or 0.0,
            provider_call_id=data.get("providerCallId"),
            answered_at=_seconds(data.get("answeredAt")),
            ended_at=_seconds(data.get("endedAt")),
            end_reason=data.get("endReason"),
            end_detail=data.get("endDetail"),
            initial_message=initial,
            session_key=data.get("sessionKey"),
            transcript=transcript,
            metadata=metadata,
        )
