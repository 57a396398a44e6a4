"""The console over HTTP on a real ``safety-edge serve`` (uvicorn subprocess, no cameras):
security headers, login throttling, logout, cross-origin and session checks, snapshot
paths, the server-sent event stream, and the console being off without an admin token."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.api.console.routes import SSE_MAX_S
from edge.stream.events import EventStore, ZoneEvent, events_db_path
from tests.api.server_fixture import ADMIN_TOKEN, Server, console_login, start_server


def _seed_events(data: Path) -> None:
    with EventStore(path=events_db_path(data)) as st:
        for i in range(3):
            st.add(
                ZoneEvent(
                    event_id=f"01J{i:023d}",
                    type="start",
                    camera="cam1",
                    task="fence",
                    zone="gate",
                    label="person",
                    score=0.8,
                    box=(1, 2, 3, 4),
                    track_id=i,
                    time_ms=int(time.time() * 1000) - 1000 + i,
                )
            )


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("console-http"), before_start=_seed_events) as s:
        yield s


def _login(srv: Server, client: httpx.Client, token: str = ADMIN_TOKEN) -> httpx.Response:
    return console_login(client, srv.base_url, token=token, next_path="/console/alerts")


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', html)
    assert m is not None
    return m.group(1)


def test_pages_carry_a_strict_content_security_policy(srv: Server) -> None:
    with httpx.Client() as c:
        assert _login(srv, c).status_code == 303
        r = c.get(f"{srv.base_url}/console/apps")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "default-src 'none'" in csp
    assert r.headers["x-frame-options"] == "DENY"
    assert r.headers["cache-control"] == "no-store"
    assert "<script>" not in r.text  # no inline script: all of it is in /console/static


def test_login_is_throttled_after_repeated_failures(tmp_path: Path) -> None:
    with start_server(tmp_path) as s, httpx.Client() as c:  # its own: it locks 127.0.0.1 out
        codes = [_login(s, c, token=f"guess-{i}").status_code for i in range(6)]
        assert codes == [401] * 5 + [429]
        assert _login(s, c).status_code == 429  # even the right token, until the window ends


def test_logout_ends_the_session_on_the_server(srv: Server) -> None:
    with httpx.Client() as c:
        r = _login(srv, c)
        assert r.status_code == 303 and r.headers["location"] == "/console/alerts"
        sid = c.cookies["se_session"]
        page = c.get(f"{srv.base_url}/console/alerts")
        assert page.status_code == 200
        bad = c.post(
            f"{srv.base_url}/console/logout",
            data={"csrf": _csrf(page.text)},
            headers={"Origin": "http://evil.example"},
        )
        assert bad.status_code == 403  # another site cannot log us out (nor post anything)
        assert (
            c.post(f"{srv.base_url}/console/logout", data={"csrf": _csrf(page.text)}).status_code
            == 303
        )
    with httpx.Client(cookies={"se_session": sid}) as c2:
        r = c2.get(f"{srv.base_url}/console/alerts")
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login")
        r = c2.get(f"{srv.base_url}/console/data/stats")
        assert r.status_code == 401


def test_snapshot_paths_cannot_leave_the_snapshot_folder(srv: Server) -> None:
    (srv.data_dir / "outside.jpg").write_bytes(b"not for the browser")
    with httpx.Client() as c:
        _login(srv, c)
        for p in ("..%2Foutside.jpg", "cam%2F..%2F..%2Foutside.jpg", "%2Fetc%2Fpasswd.jpg"):
            r = c.get(f"{srv.base_url}/console/snapshots/{p}")
            assert r.status_code == 404 and b"not for the browser" not in r.content, p


def _ids(c: httpx.Client, url: str, want: int, **kw: object) -> list[str]:
    """Row ids from the event stream until ``want`` of them arrived."""
    ids: list[str] = []
    with c.stream("GET", url, **kw) as r:  # type: ignore[arg-type]
        assert r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("id: "):
                ids.append(line[4:])
                if len(ids) == want:
                    break
    return ids


def test_the_event_stream_sends_new_rows_once_and_ends(srv: Server) -> None:
    url = f"{srv.base_url}/console/events/stream"
    with httpx.Client(timeout=SSE_MAX_S + 5) as c:
        _login(srv, c)
        assert _ids(c, url, 3, params={"after": "0"}) == ["1", "2", "3"]
        assert _ids(c, url, 1, headers={"Last-Event-ID": "2"}) == ["3"]  # a reconnect
        t0 = time.monotonic()
        r = c.get(url, params={"camera": "other"}, headers={"Last-Event-ID": "0"})
        assert r.status_code == 200 and "event: zone" not in r.text
        assert time.monotonic() - t0 < SSE_MAX_S + 2  # ends; the browser reconnects
        page = c.get(f"{srv.base_url}/console/events", params={"camera": "cam1", "since": "1h"})
        assert page.text.count('class="ev-start"') == 3


def test_the_console_is_off_without_an_admin_token(tmp_path: Path) -> None:
    with start_server(tmp_path, api={"admin_token": None}) as s:
        r = s.http.get(f"{s.base_url}/console/login")
        assert r.status_code == 403 and "console is off" in r.text
        r = s.http.get(f"{s.base_url}/console/apps")
        assert r.status_code == 403
