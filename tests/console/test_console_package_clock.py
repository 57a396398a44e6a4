"""The console's add-package form on a real ``safety-edge serve`` (uvicorn subprocess) whose
clock reads earlier than the database's newest record, as after a boot without a real-time
clock: the form is refused with the store's explanation and takes an explicit Start, read
as the gateway's local time (TZ=Europe/Berlin here, for the server and this process).

The server runs with the NTP probe saying *not synchronized* (a clock behind the database
that NTP has set is believed; this machine's own clock may well be synchronized)."""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from edge.api.store import Store, db_path
from edge.stream.events import parse_time
from tests.api import server_fixture
from tests.api.server_fixture import ADMIN_TOKEN, Server, console_login, start_server
from tests.tz import local_tz

AHEAD = timedelta(days=2)


@pytest.fixture(scope="module")
def berlin() -> Iterator[None]:
    with local_tz("Europe/Berlin"):  # inherited by the server subprocess
        yield


def _seed(data: Path) -> None:
    """An app, and monitoring recorded 2 days ahead of this clock (the clock that wrote it
    was right; this one is behind, as an unset clock would be)."""
    with Store(path=db_path(data)) as st:
        st.create_app(name="line3", description="", grants=["fence"])
        st.record_request(
            app_key=None, api=None, code=0, latency_ms=1.0, request_bytes=1, response_bytes=1,
            at=datetime.now(timezone.utc) + AHEAD,
        )  # fmt: skip


@pytest.fixture(scope="module")
def srv(berlin: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    unsynced = (  # in the server process, before it imports the store
        "import edge.service.clock\n"
        "edge.service.clock.clock_synchronized = lambda *_a, **_k: False\n"
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(server_fixture, "_LAUNCH", unsynced + server_fixture._LAUNCH)
        with start_server(tmp_path_factory.mktemp("console-clock"), before_start=_seed) as s:
            yield s


def _app_page(srv: Server, c: httpx.Client) -> tuple[str, str, str]:
    assert console_login(c, srv.base_url, next_path="/console/apps").status_code == 303
    with srv.store() as st:
        app = st.find_app("line3")
    assert app is not None
    page = c.get(f"{srv.base_url}/console/apps/{app.app_key}")
    assert page.status_code == 200
    m = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert m is not None
    return app.app_key, m.group(1), page.text


def test_package_needs_a_start_while_the_clock_is_behind(srv: Server) -> None:
    with httpx.Client() as c:
        key, csrf, page = _app_page(srv, c)
        assert re.search(r'<form[^>]*id="add-package"[\s\S]*?name="start"', page)
        url = f"{srv.base_url}/console/apps/{key}/packages"
        form = {"csrf": csrf, "api": "fence", "tier": "4m"}
        r = c.post(url, data=form)
        assert r.status_code == 400
        err = re.search(r'<p class="error" id="action-error">([^<]*)</p>', r.text)
        assert err is not None
        msg = html.unescape(err.group(1))
        assert "before a monitoring minute recorded at" in msg and "Start field" in msg
        with srv.store() as st:
            assert st.quota("line3") == []  # nothing sold at the wrong date

        bad = c.post(url, data={**form, "start": "next monday"})
        assert bad.status_code == 400 and "is not a date or date-time" in html.unescape(bad.text)

        ok = c.post(url, data={**form, "start": "2026-12-01T08:00"}, follow_redirects=False)
        assert ok.status_code == 303
    with srv.store() as st:
        (p,) = st.quota("line3")
    # naive = the gateway's local time: 08:00 CET is 07:00 UTC
    assert p.start == datetime(2026, 12, 1, 7, 0, tzinfo=timezone.utc)
    assert p.calls == 4_000_000


def test_stats_api_reads_a_naive_since_as_local_time(srv: Server) -> None:
    text = "2026-06-01T08:00"
    r = httpx.get(
        f"{srv.base_url}/console/api/stats",
        params={"since": text, "until": "2026-06-01T09:00"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert r.status_code == 200, r.text
    since = datetime.fromisoformat(r.json()["since"])
    assert since == datetime(2026, 6, 1, 6, 0, tzinfo=timezone.utc)  # 08:00 CEST
    assert int(since.timestamp() * 1000) == parse_time(text)  # as the events filter reads it
