"""Fixtures that start the real daemon and always stop it."""

from __future__ import annotations

import pytest

from tests.integration.daemon import Daemon


@pytest.fixture
def make_daemon(tmp_path):
    """Build daemons on temporary directories; each is stopped after the test."""
    made: list[Daemon] = []

    def make(config=None, name="d", env=None) -> Daemon:
        daemon = Daemon(tmp_path / name, config, env)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        if daemon.process is not None and daemon.process.poll() is None:
            daemon.process.kill()
            daemon.process.wait(timeout=30)
