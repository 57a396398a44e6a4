"""What the console does when its session ends under an open page, and the headers of the
answers no page route makes.

One real ``safety-edge serve`` subprocess (tiny planted models, real SQLite files, real
uvicorn) and, for the Events page, Debian's headless Chromium (Playwright):

* the Events page's live stream: when the session ends on the server (logout elsewhere;
  the 12 h age limit or a gateway restart end it the same way) the page goes to the login
  page with ``next`` = itself within a few seconds instead of saying "reconnecting…"
  forever; after a failed reconnect that is not a 401 (the browser gets a 503 once) the
  page checks the session, builds a new stream after a short wait and new events show.
* the login form: a form from an older tab (its ``se_login`` cookie was replaced) with the
  right token gets the login page again (403, a fresh form, "the form expired"), and such
  stale forms are not counted as wrong tokens by the login throttle.
* a form post after the session ended: a browser (``Accept: text/html``) is sent to the
  login page with ``next`` = the page the form was on; a JSON caller keeps its 401.
* static files and unknown ``/console/*`` paths carry the console's security headers;
  unknown paths are a 404 (not the API's catch-all 200), other methods on a page a 405.
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.api.console.auth import LOGIN_FAILURES
from edge.stream.events import EventStore, ZoneEvent, events_db_path
from tests.api.server_fixture import ADMIN_TOKEN, Server, console_login, start_server

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SECURITY = ("content-security-policy", "x-frame-options", "x-content-type-options")


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("session-end")) as s:
        yield s


def _login_token(text: str) -> str:
    m = re.search(r'name="login_csrf" value="([^"]+)"', text)
    assert m is not None, text[:400]
    return m.group(1)


def _csrf(text: str) -> str:
    m = re.search(r'name="csrf-token" content="([^"]+)"', text)
    assert m is not None, text[:400]
    return m.group(1)


def _add_event(srv: Server, n: int, label: str) -> None:
    with EventStore(path=events_db_path(srv.data_dir)) as es:
        es.add(
            ZoneEvent(
                event_id=f"01K{n:023d}",
                type="start",
                camera="cam-1",
                task="fence",
                zone="gate",
                label=label,
                score=0.5,
                box=(1, 2, 3, 4),
                track_id=n,
                time_ms=int(time.time() * 1000),
            )
        )


# -- the Events page in Chromium ------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any, srv: Server) -> Iterator[Any]:
    ctx = chromium.new_context(base_url=srv.base_url)
    pg = ctx.new_page()
    pg.set_default_timeout(15_000)
    pg.goto("/console/login?next=%2Fconsole%2Fapps")
    pg.fill('input[name="token"]', ADMIN_TOKEN)
    pg.click('#login-form button[type="submit"]')
    pg.wait_for_url("**/console/apps")
    yield pg
    ctx.close()


def _wait_js(page: Any, expr: str, timeout_s: float) -> None:
    """Poll ``expr`` in the page until it is true (``wait_for_function`` evaluates strings,
    which the console's CSP forbids)."""
    end = time.monotonic() + timeout_s
    while not page.evaluate(expr):
        assert time.monotonic() < end, f"{expr}: not within {timeout_s} s"
        page.wait_for_timeout(100)


def _event_labels(page: Any) -> list[str]:
    return list(
        page.evaluate(
            "Array.from(document.querySelectorAll('#events tbody tr[data-event] td:nth-child(6)'))"
            ".map(t => t.textContent)"
        )
    )


def test_the_events_page_goes_to_login_when_the_session_ends(page: Any, srv: Server) -> None:
    page.goto("/console/events")
    _wait_js(page, "document.getElementById('live-state').className === 'pill ok'", 5.0)
    sid = next(c["value"] for c in page.context.cookies() if c["name"] == "se_session")
    csrf = page.get_attribute('meta[name="csrf-token"]', "content")
    r = httpx.post(
        srv.base_url + "/console/logout", data={"csrf": csrf}, cookies={"se_session": sid}
    )
    assert r.status_code == 303
    t0 = time.monotonic()
    # the stream ends every SSE_MAX_S (5 s); its reconnect gets the 401
    page.wait_for_url("**/console/login?next=%2Fconsole%2Fevents", timeout=8_000)
    assert time.monotonic() - t0 < 8.0
    assert page.locator("#login-form").is_visible()
    # logging in again lands on the Events page
    page.fill('input[name="token"]', ADMIN_TOKEN)
    page.click('#login-form button[type="submit"]')
    page.wait_for_url("**/console/events")


def test_the_events_stream_comes_back_after_a_failed_reconnect(page: Any, srv: Server) -> None:
    streams: list[int] = []

    def fail_first(route: Any) -> None:
        streams.append(1)
        if len(streams) == 1:  # what a restarting gateway's proxy answers
            route.fulfill(status=503, body="restarting", content_type="text/plain")
        else:
            route.continue_()

    page.route("**/console/events/stream*", fail_first)
    page.goto("/console/events")
    _wait_js(page, "document.getElementById('live-state').className === 'pill ok'", 8.0)
    assert len(streams) >= 2
    _add_event(srv, 7, "after-the-failure")
    _wait_js(page, "window.consoleEventsSeen >= 1", 8.0)
    assert "after-the-failure" in _event_labels(page)
    assert page.url.endswith("/console/events")


# -- login form, form posts, headers (HTTP) ------------------------------------------------


def test_a_stale_login_form_gets_a_fresh_one_and_is_not_a_wrong_guess(srv: Server) -> None:
    with httpx.Client(base_url=srv.base_url) as c:
        for _ in range(LOGIN_FAILURES + 1):
            old = _login_token(c.get("/console/login").text)
            c.get("/console/login?next=%2Fconsole%2Fevents")  # a second tab: new cookie
            r = c.post(
                "/console/login",
                data={"login_csrf": old, "token": ADMIN_TOKEN, "next": "/console/events"},
                headers={"Accept": "text/html"},
            )
            assert r.status_code == 403
            assert r.headers["content-type"].startswith("text/html")
            assert "the form expired, enter the token again" in r.text.lower()
            assert 'name="next" value="/console/events"' in r.text
            fresh = _login_token(r.text)
            assert fresh != old
            assert c.cookies.get("se_login") == fresh
        # a post without the form's field is no stale form: JSON 403, the cookie kept
        r = c.post("/console/login", data={"token": ADMIN_TOKEN, "next": "/console/events"})
        assert r.status_code == 403
        assert r.json()["error"].startswith("missing or wrong login form token")
        assert c.cookies.get("se_login") == fresh
        # not throttled: the fresh form with the right token logs in
        r = c.post(
            "/console/login",
            data={"login_csrf": fresh, "token": ADMIN_TOKEN, "next": "/console/events"},
        )
        assert r.status_code == 303
        assert r.headers["location"] == "/console/events"


def test_a_form_post_after_the_session_ended_goes_to_login(srv: Server) -> None:
    rec = srv.create_app("late-form")
    with httpx.Client(base_url=srv.base_url) as c:
        assert console_login(c, srv.base_url, next_path="/console/apps").status_code == 303
        csrf = _csrf(c.get(f"/console/apps/{rec.app_key}").text)
        assert c.post("/console/logout", data={"csrf": csrf}).status_code == 303
        form = {"csrf": csrf, "api": "fence", "tier": "100k"}
        html = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}
        r = c.post(f"/console/apps/{rec.app_key}/packages", data=form, headers=html)
        assert r.status_code == 303
        want = urllib.parse.quote(f"/console/apps/{rec.app_key}", safe="")
        assert r.headers["location"] == f"/console/login?next={want}"
        r = c.post("/console/apps", data={"csrf": csrf, "name": "x"}, headers=html)
        assert r.status_code == 303
        assert r.headers["location"] == "/console/login?next=%2Fconsole%2Fapps"
        # JSON and fetch callers keep the 401
        r = c.post(
            f"/console/apps/{rec.app_key}/packages",
            data=form,
            headers={"Accept": "application/json"},
        )
        assert r.status_code == 401
        assert r.json()["error"].startswith("not logged in")
        r = c.post(f"/console/apps/{rec.app_key}/secret", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 401


def _has_security_headers(r: httpx.Response) -> None:
    for h in SECURITY:
        assert h in r.headers, (r.request.url, r.status_code, h)
    assert r.headers["x-content-type-options"] == "nosniff"


def test_static_files_and_unknown_console_paths_carry_the_headers(srv: Server) -> None:
    with httpx.Client(base_url=srv.base_url) as c:
        r = c.get("/console/static/console.js")
        assert r.status_code == 200
        _has_security_headers(r)
        assert r.headers.get("cache-control") != "no-store"  # left to the static route
        for path in ("/console/nope", "/console/apps/x/nothing", "/console/static/nope.js"):
            r = c.get(path)
            assert r.status_code == 404, path
            _has_security_headers(r)
        r = c.get("/console/nope", headers={"Accept": "text/html"})
        assert r.headers["content-type"].startswith("text/html")
        for method in ("PUT", "DELETE", "PATCH"):
            r = c.request(method, "/console/apps")
            assert r.status_code == 405, method
            assert "POST" in r.headers["allow"]
            _has_security_headers(r)
            r = c.request(method, "/console/nope")
            assert r.status_code == 404, method
            _has_security_headers(r)
