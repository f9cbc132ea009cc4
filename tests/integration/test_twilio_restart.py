"""A restart drops no call, on Twilio (L{tests.integration.restarts})."""

from __future__ import annotations

import pytest

from tests.integration import test_twilio_conversation as conversation
from tests.integration.restarts import RestartScenarios, elsewhere

pytestmark = pytest.mark.integration


class TwilioRestart(RestartScenarios, conversation.TwilioConversation):
    """SIGTERM mid-call, a new daemon, and the call goes on."""

    carrier = "twilio"
    test_outbound_conversation = elsewhere
    test_kill_9_mid_call_and_restart = elsewhere
    test_provider_error_and_guard = elsewhere
