"""The Events page's From/To filter is in the browser's time zone, like the times it shows.

A real ``safety-edge serve`` subprocess running with TZ=UTC (an integrator's default) and
Debian's headless Chromium (Playwright) running with TZ=Europe/Berlin (the control room).
The list shows an event stored at 06:15Z as 08:15 (``toLocaleString``, the browser's
zone); filtering "From 2026-03-31T08:00 To 09:00" must find it. Before, the page sent the
typed text as it was and the gateway read it in its own zone (08:00Z): nothing found.
Now the page adds the browser's offset for that date (+02:00, summer time) on submit and
says which zone the fields are in; a time the browser's clock read twice is refused in
the page with the offsets to choose from. Without JavaScript the server-rendered hint says
the gateway's zone applies (and the server reads it so)."""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.stream.events import EventStore, ZoneEvent, events_db_path
from tests.api.server_fixture import ADMIN_TOKEN, Server, console_login, start_server
from tests.tz import local_tz

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SHOWN = "01KFILTERTZ0000000000SHOWN"  # 2026-03-31T06:15Z = 08:15 in Berlin
EARLY = "01KFILTERTZ0000000000EARLY"  # 05:50Z = 07:50 in Berlin: before "From 08:00"


def _ms(h: int, mi: int) -> int:
    return int(datetime(2026, 3, 31, h, mi, tzinfo=timezone.utc).timestamp() * 1000)


def _seed(data: Path) -> None:
    with EventStore(path=events_db_path(data)) as es:
        for eid, t in ((EARLY, _ms(5, 50)), (SHOWN, _ms(6, 15))):
            es.add(
                ZoneEvent(
                    event_id=eid, type="start", camera="cam-1", task="fence", zone="gate",
                    label="person", score=0.9, box=(1, 2, 3, 4), track_id=1, time_ms=t,
                )
            )  # fmt: skip


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with (
        local_tz("UTC"),
        start_server(tmp_path_factory.mktemp("filter-tz"), before_start=_seed) as s,
    ):
        yield s


@pytest.fixture(scope="module")
def page(srv: Server) -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            env={**os.environ, "TZ": "Europe/Berlin"},  # the browser's zone, not the server's
        )
        ctx = browser.new_context(base_url=srv.base_url)
        pg = ctx.new_page()
        pg.set_default_timeout(15_000)
        pg.goto("/console/login?next=%2Fconsole%2Fevents")
        pg.fill('input[name="token"]', ADMIN_TOKEN)
        pg.click('#login-form button[type="submit"]')
        pg.wait_for_url("**/console/events")
        yield pg
        ctx.close()
        browser.close()


def _rows(page: Any) -> dict[str, str]:
    """event id -> the time shown in its row."""
    return dict(
        page.evaluate(
            "Array.from(document.querySelectorAll('#events tbody tr[data-event]'))"
            ".map(r => [r.dataset.event, r.querySelector('time').textContent])"
        )
    )


def test_filter_finds_the_event_at_the_time_shown(page: Any) -> None:
    page.goto("/console/events")
    rows = _rows(page)
    assert "8:15:00" in rows[SHOWN] and "7:50:00" in rows[EARLY], rows  # the browser's zone
    page.fill('input[name="since"]', "2026-03-31T08:00")
    page.fill('input[name="until"]', "2026-03-31T09:00")
    page.click('#event-filter button[type="submit"]')
    page.wait_for_url("**/console/events?*")
    assert list(_rows(page)) == [SHOWN]
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(page.url).query)
    assert q["since"] == ["2026-03-31T08:00+02:00"] and q["until"] == ["2026-03-31T09:00+02:00"]
    hint = page.locator("#filter-zone").inner_text()
    assert "your browser's time zone (Europe/Berlin, now UTC+01:00" in hint or (
        "your browser's time zone (Europe/Berlin, now UTC+02:00" in hint
    ), hint
    # what was sent stays in the field, with its offset
    assert page.input_value('input[name="since"]') == "2026-03-31T08:00+02:00"
    # a winter date gets the winter offset
    page.fill('input[name="since"]', "2026-01-10")
    page.fill('input[name="until"]', "")
    page.click('#event-filter button[type="submit"]')
    page.wait_for_url("**/console/events?*since=2026-01-10T00%3A00%2B01%3A00*")
    assert set(_rows(page)) == {SHOWN, EARLY}


def test_a_repeated_hour_is_refused_in_the_page(page: Any) -> None:
    page.goto("/console/events")
    before = page.url
    page.fill('input[name="since"]', "2026-10-25T02:30")
    page.click('#event-filter button[type="submit"]')
    page.wait_for_timeout(300)
    assert page.url == before  # not submitted
    msg = page.evaluate("document.querySelector('input[name=since]').validationMessage")
    assert msg == (
        "2026-10-25T02:30 is ambiguous in Europe/Berlin (the clock went back): add +02:00 or +01:00"
    )
    page.fill('input[name="since"]', "2026-10-25T02:30+01:00")  # an offset decides
    page.click('#event-filter button[type="submit"]')
    page.wait_for_url("**/console/events?*since=2026-10-25T02%3A30%2B01%3A00*")


def test_without_javascript_the_hint_names_the_gateway_zone(srv: Server) -> None:
    with httpx.Client() as c:
        assert console_login(c, srv.base_url, next_path="/console/events").status_code == 303
        page = c.get(f"{srv.base_url}/console/events")
        hint = re.search(r'<span class="hint" id="filter-zone">([^<]*)</span>', page.text)
        assert hint is not None and "gateway's time zone" in hint.group(1)
        # the server reads a time without an offset in its own zone (UTC here): from 08:00Z
        page = c.get(
            f"{srv.base_url}/console/events",
            params={"since": "2026-03-31T06:00", "until": "2026-03-31T07:00"},
        )
        assert SHOWN in page.text and EARLY not in page.text
