"""An application event asks the daemon for an early cycle; events arriving meanwhile join it."""

from __future__ import annotations

from connector.config import Settings
from connector.daemon import Daemon


def test_an_event_wakes_the_daemon_after_the_debounce_and_the_earliest_request_wins(tmp_path):
    d = Daemon(str(tmp_path / "c.yaml"), Settings.model_validate({"store": f"sqlite:///{tmp_path / 'd.db'}"}))
    assert not d._woken()
    d.wake(3600)
    assert not d._woken()
    d.wake(0)  # a later event with a shorter debounce: the cycle comes sooner, never later
    assert d._woken()
    d.wake(3600)
    assert d._woken()
