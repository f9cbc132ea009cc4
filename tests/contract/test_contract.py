"""The provider contract, once per carrier: C{TwilioContract.test_caller_hang_up} and so on."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.contract.adapters import PlivoAdapter, TelnyxAdapter, TwilioAdapter
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
