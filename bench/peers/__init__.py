"""
Peers for the benchmark: what a user would run instead of voicecalld, served and measured the
same way.  C{pipecat} is pipecat's Twilio echo pipeline in its own virtual environment
(L{bench.peers.pipecat_echo}, L{bench.peers.venv}); C{relay} is the bare Twisted+autobahn
JSON/base64 relay, the ceiling (L{bench.peers.relay}).  L{run} drives them with the Twilio load
generator and returns their figures; C{python -m bench.peers} prints them.
"""

from __future__ import annotations

from typing import Any


def run(*args: Any, **kwargs: Any) -> dict[str, Any]:
    """See L{bench.peers.driver.run}."""
    from bench.peers.driver import run as run_peers

    return run_peers(*args, **kwargs)
