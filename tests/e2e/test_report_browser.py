"""The control report as a person sees it: `connector report` writes the HTML, headless Chromium
opens it offline and takes a PNG; the charts are drawn and the figures are the journal's counts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from connector.config import load_settings
from connector.journal import DONE_STATES
from connector.ports import FixedClock
from connector.runner import cycle, make_context, open_store
from connector.store import episodes, journal
from tests.e2e.conftest import ANCHOR, DEMO

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DONE = [str(s) for s in DONE_STATES]


def _browser(*args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                           "--disable-extensions", *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed here (Debian: apt-get install chromium; .ci/run "
                                              "installs it where it can)")
def test_the_html_report_renders_its_charts_in_chromium_and_its_figures_are_the_journals(sandbox, monkeypatch):
    monkeypatch.setenv("CONNECTOR_STORE", sandbox.env["CONNECTOR_STORE"])
    now = datetime.fromisoformat(ANCHOR)
    later = now + timedelta(days=16)
    s = load_settings(DEMO)
    store = open_store(s)
    cycle(s, store, make_context(store, FixedClock(now)), execute=True)
    cycle(s, store, make_context(store, FixedClock(later)), execute=True)

    html, data = sandbox.tmp / "report.html", sandbox.tmp / "report.json"
    period = f"{now.date()}..{later.date()}"
    r = sandbox.cli("report", str(DEMO), "--period", period, "--out", str(html), "--now", later.isoformat())
    assert r.returncode == 0, r.stderr + r.stdout
    assert str(html) in r.stdout
    r = sandbox.cli("report", str(DEMO), "--period", period, "--format", "json", "--out", str(data), "--now", later.isoformat())
    assert r.returncode == 0, r.stderr

    total = json.loads(data.read_text(encoding="utf-8"))["total"]
    start = datetime.fromisoformat(f"{now.date()}T00:00:00+02:00")
    end = datetime.fromisoformat(f"{later.date()}T00:00:00+02:00") + timedelta(days=1)
    with store.tx() as conn:
        def count(*where) -> int:
            return conn.execute(select(func.count()).select_from(journal).where(*where)).scalar_one()

        in_period = (journal.c.done_at >= start, journal.c.done_at < end, journal.c.state.in_(DONE))
        tasks = count(journal.c.type == "task", journal.c.remote_key.is_not(None), *in_period)
        released = count(journal.c.type == "reassign", *in_period)
        forgotten = conn.execute(select(func.count()).select_from(episodes).where(
            episodes.c.rule == "forgotten", episodes.c.opened_at >= start, episodes.c.opened_at < end)).scalar_one()
        lost_open = conn.execute(select(func.count()).select_from(episodes).where(
            episodes.c.rule == "lost", episodes.c.closed_at.is_(None))).scalar_one()
    assert tasks > 0 and released > 0
    assert total["tasks_created"] == tasks
    assert total["tasks_on_time"] + total["tasks_late"] + total["tasks_open"] + total["tasks_overdue"] == tasks
    assert total["released_from"] == total["released_to"] == released
    assert total["forgotten_new"] == forgotten
    assert total["lost_still"] == lost_open

    png = sandbox.tmp / "report.png"
    shot = _browser("--window-size=1200,2200", f"--screenshot={png}", html.as_uri())
    assert png.is_file() and png.stat().st_size > 20000, shot.stderr[-2000:]
    dom = _browser("--virtual-time-budget=2000", "--dump-dom", html.as_uri()).stdout
    charts = re.findall(r'<div class="chart" id="chart-(\w+)">(.*?)</div>', dom, flags=re.S)
    assert [name for name, _ in charts] == ["weeks", "overdue", "revenue", "funnel"]
    for name, body in charts:
        assert "<svg" in body and len(re.findall(r"<path", body)) > 5, name

    from PIL import Image

    img = Image.open(png).convert("RGB")
    colours = img.getcolors(maxcolors=1 << 20) or []
    assert len(colours) > 50  # text, bars and axes: not a blank page
    w, h = img.size
    ink = sum(1 for x in range(0, w, 4) for y in range(0, h, 4) if img.getpixel((x, y)) != (255, 255, 255))
    assert ink > 500
