"""The Events page over a period with more events than one page holds.

A real ``safety-edge serve`` (uvicorn subprocess) reads a real events database seeded
with 150 ``start`` events in the last hour, 12 of them at one and the same millisecond
around the page boundary (the list is ordered by ``(time_ms, event_id)``, newest first, so
the next page must go on inside that millisecond: a ``time_ms < until`` cut alone would
skip the rest of them, ``<=`` would repeat those shown).
"""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.stream.events import EventStore, ZoneEvent, events_db_path
from tests.api.server_fixture import Server, console_login, start_server

N = 150
TIE_MS_AGO = 2_000_000
"""Events 44..55 (newest first: rows 94..105) share one time, between those of 43 and 56,
so that the order is that of the ids, and the first page of 100
ends inside it."""


def _ids() -> list[str]:
    return [f"01JPAGE{i:019d}" for i in range(N)]


def _seed(data: Path) -> None:
    now = int(time.time() * 1000)
    evs = []
    for i, eid in enumerate(_ids()):
        # i = 0 is the oldest; one every 20 s over the last ~50 min, 12 at one ms
        t = now - TIE_MS_AGO if 44 <= i <= 55 else now - (N - i) * 20_000
        evs.append(
            ZoneEvent(
                event_id=eid,
                type="start",
                camera="cam1",
                task="fence",
                zone="gate",
                label="person",
                score=0.8,
                box=(1, 2, 3, 4),
                track_id=i,
                time_ms=t,
            )
        )
    with EventStore(path=events_db_path(data)) as st:
        st.add_many(evs)


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("events-paging"), before_start=_seed) as s:
        yield s


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-event="([^"]+)"', page)


def _older(page: str) -> str | None:
    m = re.search(r'<a [^>]*id="events-older"[^>]*href="([^"]+)"', page) or re.search(
        r'<a [^>]*href="([^"]+)"[^>]*id="events-older"', page
    )
    return None if m is None else html.unescape(m.group(1))


def test_a_period_with_more_events_than_a_page_says_so_and_pages_back(srv: Server) -> None:
    with httpx.Client(timeout=10) as c:
        assert console_login(c, srv.base_url).status_code == 303
        first = c.get(f"{srv.base_url}/console/events", params={"since": "1h", "camera": "cam1"})
        assert first.status_code == 200
        shown = _rows(first.text)
        assert len(shown) == 100
        assert "Showing the newest 100 of this period" in first.text
        link = _older(first.text)
        assert link is not None, "no Older link"
        assert link.startswith("/console/events?")
        assert "camera=cam1" in link  # the filter is kept

        second = c.get(f"{srv.base_url}{link}")
        assert second.status_code == 200, second.text[-500:]
        rest = _rows(second.text)
        assert "Showing the newest" not in second.text
        assert _older(second.text) is None

    everything = list(reversed(_ids()))  # newest first; within the tie event_id DESC
    assert shown + rest == everything, (len(shown), len(rest))
    assert len(set(shown) & set(rest)) == 0 and len(rest) == 50


def test_a_period_that_fits_one_page_has_no_notice(srv: Server) -> None:
    with httpx.Client(timeout=10) as c:
        assert console_login(c, srv.base_url).status_code == 303
        r = c.get(f"{srv.base_url}/console/events", params={"since": "10m"})
        assert r.status_code == 200
        assert 0 < len(_rows(r.text)) < 100
        assert "Showing the newest" not in r.text and _older(r.text) is None
