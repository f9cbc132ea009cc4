"""The provider contract, once per carrier: C{TwilioContract.test_caller_hang_up} and so on."""

from __future__ import annotations

from typing import Any

from twisted.trial.unittest import TestCase

from tests.contract.adapters import PlivoAdapter, TelnyxAdapter, TwilioAdapter
from tests.contract.mock import MockAdapter
from tests.contract.scenarios import Contract


class TwilioContract(Contract, TestCase):
    """The contract through the fake Twilio."""

    adapter = TwilioAdapter


class TelnyxContract(Contract, TestCase):
    """The contract through the fake Telnyx."""

    adapter = TelnyxAdapter


class PlivoContract(Contract, TestCase):
    """The contract through the fake Plivo."""

    adapter = PlivoAdapter


def _not_for_the_mock(reason: str) -> Any:
    def test(self: TestCase) -> None:
        """Not part of the mock's contract."""

    test.skip = reason  # type: ignore[attr-defined]
    return test


class MockContract(Contract, TestCase):
    """The contract through the network-free mock, where it applies."""

    adapter = MockAdapter
    _NO_CARRIER = "the mock has no carrier: no REST, signatures, webhooks or streams"
    test_dial_rest_error_4xx = _not_for_the_mock(_NO_CARRIER)
    test_dial_rest_error_5xx = _not_for_the_mock(_NO_CARRIER)
    test_bad_signature = _not_for_the_mock(_NO_CARRIER)
    test_replayed_webhook = _not_for_the_mock(_NO_CARRIER)
    test_outbound_conversation_streamed = _not_for_the_mock(_NO_CARRIER)
    test_stream_reconnect = _not_for_the_mock(_NO_CARRIER)
    test_barge_in = _not_for_the_mock(_NO_CARRIER)
    test_dtmf_in_streamed = _not_for_the_mock(_NO_CARRIER)
    test_dtmf_out_streamed = _not_for_the_mock(_NO_CARRIER)
    _NO_AMD = "the mock answers as a person; detection is the carriers' (and the core tests')"
    test_detection_off_asks_the_carrier_for_none = _not_for_the_mock(_NO_AMD)
    test_notify_at_a_machine_leaves_the_message_after_the_beep = _not_for_the_mock(_NO_AMD)
    test_a_repeated_detection_callback_leaves_no_second_message = _not_for_the_mock(_NO_AMD)
    test_a_person_gets_the_message_as_without_detection = _not_for_the_mock(_NO_AMD)
    test_a_streamed_call_at_a_machine_speaks_after_the_beep = _not_for_the_mock(_NO_AMD)
    test_a_conversation_at_a_machine_ends_as_voicemail = _not_for_the_mock(_NO_AMD)
    test_a_conversation_at_a_machine_can_leave_its_message = _not_for_the_mock(_NO_AMD)
    test_realtime_call = _not_for_the_mock(_NO_CARRIER)
    test_realtime_inbound_and_the_vendor_ending_the_session = _not_for_the_mock(_NO_CARRIER)
    _NO_PERSON = "the mock has no carrier to hand the caller over to (see test_manager)"
    test_transfer_not_streamed = _not_for_the_mock(_NO_PERSON)
    test_transfer_streamed = _not_for_the_mock(_NO_PERSON)
    test_transfer_nobody_answers = _not_for_the_mock(_NO_PERSON)
    test_transfer_the_carrier_refuses = _not_for_the_mock(_NO_CARRIER)
    test_ring_timeout = _not_for_the_mock("the mock leaves only numbers ending 0001 unanswered")
    test_restart_reconciles_with_the_carrier = _not_for_the_mock(
        "the mock keeps no call list: a call is over only if its id says so"
    )
