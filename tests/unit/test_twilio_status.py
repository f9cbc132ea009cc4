"""
Twilio's CallStatus values, read case-insensitively on both sides: the REST
Call resource (asked about restored calls) and the status webhooks.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from tests.fakes.provider import CallBook
from tests.unit.test_twilio_signature import WebhookRig
from voicecalld.config import parse_config
from voicecalld.providers.twilio.provider import TwilioProvider
from voicecalld.values import events as ev
from voicecalld.values.playback import CallStatus, Liveness
from voicecalld.values.record import CallRecord
from voicecalld.values.states import CallState

SID = "CA" + "5" * 32
ALIVE, ENDED, UNKNOWN = Liveness.ALIVE, Liveness.ENDED, Liveness.UNKNOWN_CALL


class _Response:
    def __init__(self, code: int, body: bytes) -> None:
        self.code = code
        self._body = body

    def content(self) -> Deferred:
        return succeed(self._body)


class CallResource:
    """A treq stand-in that answers every request with one Call resource (or a 404)."""

    def __init__(self) -> None:
        self.resource: dict[str, Any] | None = None
        self.urls: list[str] = []

    def request(self, method: str, url: str, **kwargs: Any) -> Deferred:
        self.urls.append(url)
        if self.resource is None:
            body = {"code": 20404, "message": "The requested resource was not found"}
            return succeed(_Response(404, json.dumps(body).encode()))
        return succeed(_Response(200, json.dumps(self.resource).encode()))


def record(provider_call_id: str | None = SID) -> CallRecord:
    return CallRecord(
        call_id="c1",
        provider="twilio",
        direction="outbound",
        mode="conversation",
        from_number="+15550001111",
        to_number="+15551234567",
        state=CallState.ACTIVE,
        started_at=0.0,
        provider_call_id=provider_call_id,
    )


class RestStatusTable(TestCase):
    """What C{call_status} makes of each CallStatus Twilio's REST API may send."""

    def setUp(self) -> None:
        settings = parse_config(
            {
                "provider": "twilio",
                "fromNumber": "+15550001111",
                "twilio": {"accountSid": "AC1", "authToken": "t"},
                "publicUrl": "https://voice.example.com/voice/webhook",
            },
            None,
            {},
        ).settings
        self.http = CallResource()
        self.provider = TwilioProvider(
            settings, Clock(), public_url="https://voice.example.com/voice/webhook", http=self.http
        )
        self.provider.start(lambda event: succeed(None), CallBook())

    def status(self, value: Any) -> CallStatus:
        self.http.resource = {"sid": SID, "status": value}
        return self.successResultOf(Deferred.fromCoroutine(self.provider.call_status(record())))

    def test_table(self) -> None:
        rows = [
            ("completed", ENDED, CallState.COMPLETED, None),
            ("Completed", ENDED, CallState.COMPLETED, None),
            (" COMPLETED ", ENDED, CallState.COMPLETED, None),
            ("busy", ENDED, CallState.BUSY, None),
            ("Busy", ENDED, CallState.BUSY, None),
            ("no-answer", ENDED, CallState.NO_ANSWER, None),
            ("No-Answer", ENDED, CallState.NO_ANSWER, None),
            ("failed", ENDED, CallState.FAILED, None),
            ("FAILED", ENDED, CallState.FAILED, None),
            ("canceled", ENDED, CallState.HANGUP_BOT, None),
            ("Canceled", ENDED, CallState.HANGUP_BOT, None),
            ("in-progress", ALIVE, None, True),
            ("In-Progress", ALIVE, None, True),
            ("ringing", ALIVE, None, False),
            ("RINGING", ALIVE, None, False),
            ("queued", ALIVE, None, False),
            ("initiated", ALIVE, None, False),
            # Nothing we know: the call is not assumed over.
            ("", ALIVE, None, False),
            (None, ALIVE, None, False),
            (7, ALIVE, None, False),
        ]
        for value, liveness, reason, answered in rows:
            with self.subTest(status=value):
                status = self.status(value)
                self.assertEqual(
                    (status.liveness, status.end_reason), (liveness, reason), repr(value)
                )
                if answered is not None:
                    self.assertEqual(status.answered, answered, repr(value))

    def test_the_detail_names_twilios_word(self) -> None:
        self.assertEqual(self.status("Busy").detail, "Twilio: busy")

    def test_a_call_twilio_does_not_know(self) -> None:
        self.http.resource = None
        status = self.successResultOf(Deferred.fromCoroutine(self.provider.call_status(record())))
        self.assertEqual(status.liveness, UNKNOWN)

    def test_a_call_with_no_sid_is_not_asked_about(self) -> None:
        status = self.successResultOf(
            Deferred.fromCoroutine(self.provider.call_status(record(None)))
        )
        self.assertEqual(status.liveness, UNKNOWN)
        self.assertEqual(self.http.urls, [])


class WebhookStatusTable(TestCase):
    """What a status callback becomes, whatever the case of its CallStatus."""

    def test_table(self) -> None:
        url = "https://voice.example.com/voice/webhook?callId=c1&type=status"
        rows = [
            ("ringing", ev.Ringing, None),
            ("Ringing", ev.Ringing, None),
            ("in-progress", ev.Answered, None),
            ("IN-PROGRESS", ev.Answered, None),
            ("completed", ev.Ended, CallState.COMPLETED),
            (" Completed", ev.Ended, CallState.COMPLETED),
            ("BUSY", ev.Ended, CallState.BUSY),
            ("No-Answer", ev.Ended, CallState.NO_ANSWER),
            ("Failed", ev.Ended, CallState.FAILED),
            ("CANCELED", ev.Ended, CallState.HANGUP_BOT),
            ("initiated", None, None),
            ("something-new", None, None),
        ]
        for value, kind, reason in rows:
            with self.subTest(status=value):
                rig = WebhookRig(self, "https://voice.example.com/voice/webhook")
                params = {"CallSid": SID, "CallStatus": value}
                response = rig.post(self, url, params, rig.sign(url, params))
                self.assertEqual(response.code, 204, repr(value))
                kinds = [type(e) for e in rig.events]
                self.assertEqual(kinds, [kind] if kind else [], repr(value))
                if reason is not None:
                    self.assertEqual(rig.events[0].reason, reason, repr(value))
