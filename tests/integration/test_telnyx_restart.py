"""A restart drops no call, on Telnyx (L{tests.integration.restarts})."""

from __future__ import annotations

import pytest

from tests.integration import test_telnyx_conversation as conversation
from tests.integration.restarts import RestartScenarios, elsewhere

pytestmark = pytest.mark.integration


class TelnyxRestart(RestartScenarios, conversation.TelnyxConversation):
    """SIGTERM mid-call, a new daemon, and the call goes on."""

    carrier = "telnyx"
    test_outbound_streamed_conversation = elsewhere

    def setUp(self):
        # As docs/operations.md asks: the failover URL is the webhook itself.
        return (
            super()
            .setUp()
            .addCallback(lambda _: setattr(self.telnyx, "failover_url", self.webhook))
        )
