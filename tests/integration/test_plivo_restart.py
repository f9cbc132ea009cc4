"""A restart drops no call, on Plivo (L{tests.integration.restarts})."""

from __future__ import annotations

import pytest

from tests.integration import test_plivo_conversation as conversation
from tests.integration.restarts import RestartScenarios, elsewhere

pytestmark = pytest.mark.integration


class PlivoRestart(RestartScenarios, conversation.PlivoConversation):
    """SIGTERM mid-call, a new daemon, and the call goes on."""

    carrier = "plivo"
    test_outbound_streamed_conversation = elsewhere
