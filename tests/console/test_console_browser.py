"""The web console in Debian's headless Chromium against a real ``safety-edge run``.

One gateway subprocess (tiny planted models, one looped camera video, real SQLite files,
real uvicorn) and one Chromium (Playwright driving ``/usr/bin/chromium`` with a fresh
profile) serve every test of this module, in order: log in (a wrong token and a missing
CSRF token are refused), create an application and a resource package, see a signed
request made with its keys on the monitoring chart, see an alert, see the camera's frame
with its zone, draw a zone (saved to ``gateway.yaml`` with a backup, applied without a
restart: the incident ends, then a new one starts when the zone comes back), see
those pipeline events arrive live with their snapshot thumbnails, and see the counting
line with its "in" arrow (checked against the gateway's own LineCounter) and redraw it in
the line editor (saved with a backup, only that line changed; the editor's line rules
agree with the server's). Every request the
browser makes is recorded; none may leave 127.0.0.1.

Screenshots of each page go to ``docs/screenshots/`` (``$SAFETY_EDGE_SCREENSHOTS``
overrides the folder); the README shows them.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge.api.console.zone_edit import ZoneEditError, validate_line_points, validate_points
from edge.api.contract import API_PATHS, PATH_PREFIX
from edge.api.store import APIS, Store, db_path
from tests.api.server_fixture import ADMIN_TOKEN, b64, jpeg_bytes, provider_headers
from tests.console.gateway import DOOR, FRAME, GATE, Gateway, start_gateway

sync_api = pytest.importorskip("playwright.sync_api")

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SHOTS = Path(os.environ.get("SAFETY_EDGE_SCREENSHOTS") or REPO / "docs" / "screenshots")
AWAY = [[40, 40], [300, 40], [300, 200], [40, 200]]
"""A zone that does not hold the planted person's feet."""

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="Debian's chromium is not installed (apt-get install chromium)"
)


def seed(data_dir: Path) -> None:
    """Three hours of traffic of a demo application and a past alert, so the charts and
    the alert list have something to show besides what the tests do."""
    rng = random.Random(7)
    now = datetime.now(timezone.utc)
    with Store(path=db_path(data_dir)) as st:
        demo = st.create_app(name="demo-line-1", description="seeded traffic", grants=list(APIS))
        for api in ("fence", "hardhat"):
            st.add_package(app=demo.app_key, api=api, tier="100k")
        for m in range(180, 0, -1):
            at = now - timedelta(minutes=m)
            for api in ("fence", "hardhat"):
                for _ in range(rng.randint(10, 30) + (15 if 60 < m < 80 else 0)):
                    code = rng.choices([0, 4010, 4029, 5000], [95, 2, 2, 1])[0]
                    st.record_request(
                        app_key=demo.app_key,
                        api=api,
                        code=code,
                        latency_ms=rng.lognormvariate(3.2 if api == "fence" else 3.6, 0.35),
                        request_bytes=rng.randint(20_000, 60_000),
                        response_bytes=rng.randint(150, 400),
                        at=at + timedelta(seconds=rng.uniform(0, 59)),
                    )
        st.flush()
        key = f"{demo.app_key}/hardhat"
        st.open_alert(
            kind="p95_latency",
            key=key,
            cause="p95 response time 2140 ms > 2000 ms over 312 requests in 5 min",
            app_key=demo.app_key,
            api="hardhat",
            now=now - timedelta(minutes=130),
        )
        st.close_alert(kind="p95_latency", key=key, now=now - timedelta(minutes=105))


@dataclass
class Browser:
    context: Any
    requests: list[str]
    base_url: str
    shared: dict[str, Any] = field(default_factory=dict)

    def shot(self, page: Any, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"console-{name}.png"), full_page=True)


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with start_gateway(tmp_path_factory.mktemp("console-gw"), before_start=seed) as g:
        yield g


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory, gw: Gateway) -> Iterator[Browser]:
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
            base_url=gw.base_url,
        )
        ctx.set_default_timeout(15_000)
        seen: list[str] = []
        ctx.on("request", lambda r: seen.append(r.url))
        try:
            yield Browser(context=ctx, requests=seen, base_url=gw.base_url)
        finally:
            ctx.close()


@pytest.fixture(scope="module")
def page(browser: Browser) -> Any:
    return browser.context.new_page()


def _wait_js(page: Any, expr: str, arg: Any = None, timeout: float = 15.0) -> Any:
    """Poll ``page.evaluate(expr, arg)`` until it is truthy (``wait_for_function`` would
    compile the predicate with ``new Function``, which the console's CSP forbids)."""
    end = time.monotonic() + timeout
    while True:
        got = page.evaluate(expr, arg)
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"not true within {timeout} s: {expr}")
        page.wait_for_timeout(100)


def _csrf(page: Any) -> str:
    return str(page.locator('meta[name="csrf-token"]').get_attribute("content"))


def _signed_in(page: Any) -> None:
    """Log the module's browser in unless it already holds a session. The tests run as one
    story (the login test signs in first); this lets a test that needs only a session run
    alone too (``pytest -k``)."""
    if any(c["name"] == "se_session" for c in page.context.cookies()):
        return
    page.goto("/console/apps")
    page.fill('input[name="token"]', ADMIN_TOKEN)
    page.click('#login-form button[type="submit"]')
    page.wait_for_url("**/console/apps")


def test_login_refuses_a_wrong_token_and_a_missing_csrf_token(
    browser: Browser, page: Any, gw: Gateway
) -> None:
    page.goto("/console/apps")
    assert urllib.parse.urlsplit(page.url).path == "/console/login"
    browser.shot(page, "login")

    page.fill('input[name="token"]', "not-the-token")
    with page.expect_response(lambda r: r.url.endswith("/console/login")) as resp:
        page.click('#login-form button[type="submit"]')
    assert resp.value.status == 401
    assert "Wrong admin token" in page.locator("#login-error").inner_text()

    # The login form's own CSRF token (double submit) is required.
    r = browser.context.request.post(
        "/console/login", form={"token": ADMIN_TOKEN, "next": "/console/apps"}, max_redirects=0
    )
    assert r.status == 403
    r = browser.context.request.get("/console/apps", max_redirects=0)
    assert r.status == 303 and "/console/login" in r.headers["location"]

    page.fill('input[name="token"]', ADMIN_TOKEN)
    page.click('#login-form button[type="submit"]')
    page.wait_for_url("**/console/apps")
    assert page.locator("h1").inner_text() == "Applications"
    cookie = next(c for c in browser.context.cookies() if c["name"] == "se_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/console"


def test_create_an_application_reveal_its_keys_and_add_a_package(
    browser: Browser, page: Any
) -> None:
    page.goto("/console/apps")
    page.fill('#create-app input[name="name"]', "x")  # too short: the browser blocks it ...
    page.fill('#create-app input[name="name"]', "line3-fence")
    page.fill('#create-app input[name="description"]', "line 3 fence cameras")
    page.uncheck('#create-app input[value="workwear"]')
    page.click('#create-app button[type="submit"]')
    page.wait_for_url(re.compile(r".*/console/apps/[0-9a-f]{24}$"))
    key = page.locator("#app-key").inner_text()
    assert "Application line3-fence created." in page.locator(".flash").inner_text()
    browser.shot(page, "app")

    page.click("#reveal")
    _wait_js(page, "/^[0-9a-f]{32}$/.test(document.getElementById('app-secret').textContent)")
    secret = page.locator("#app-secret").inner_text()

    page.select_option('#add-package select[name="api"]', "fence")
    page.select_option('#add-package select[name="tier"]', "100k")
    page.click('#add-package button[type="submit"]')
    page.wait_for_selector('.api[data-api="fence"] [data-remaining="100000"]')
    assert (
        page.locator('.api[data-api="hardhat"] [data-remaining]').get_attribute("data-remaining")
        == "0"
    )

    # A state-changing post without the CSRF token is refused, and changes nothing.
    r = browser.context.request.post(f"/console/apps/{key}/rotate", form={}, max_redirects=0)
    assert r.status == 403
    r = browser.context.request.post(
        f"/console/apps/{key}/rotate", form={"csrf": "forged"}, max_redirects=0
    )
    assert r.status == 403
    r = browser.context.request.post(f"/console/apps/{key}/secret")
    assert r.status == 403
    r = browser.context.request.post(
        f"/console/apps/{key}/secret", headers={"X-CSRF-Token": _csrf(page)}
    )
    assert r.status == 200 and r.json()["app_secret"] == secret

    page.goto("/console/apps")
    row = page.locator('#apps-table tr[data-app="line3-fence"]')
    assert "Electronic fence: 100,000" in row.inner_text()
    browser.shot(page, "apps")
    browser.shared.update(key=key, secret=secret, codes=_service_codes(page, key))


def _service_codes(page: Any, key: str) -> dict[str, str]:
    page.goto(f"/console/apps/{key}")
    out = {}
    for api in ("fence", "hardhat"):
        path = page.locator(f'.api[data-api="{api}"] .path code').first.inner_text()
        out[api] = path.split("/")[4]
    return out


def test_a_request_made_with_the_keys_appears_on_the_monitoring_chart(
    browser: Browser, page: Any, gw: Gateway
) -> None:
    s = browser.shared
    path = f"{PATH_PREFIX}{s['codes']['fence']}/{API_PATHS['fence']}"
    body = json.dumps({"image": [b64(jpeg_bytes())], "area": "0,0,64,0,64,64,0,64"})
    r = httpx.post(
        gw.base_url + path,
        content=body,
        headers=provider_headers(s["key"], s["secret"], path, body),
    )
    assert r.json()["code"] == 0, r.text

    page.goto(f"/console/monitoring?app={s['key']}&range=hour")
    page.wait_for_selector("#charts[data-ready='1']")
    stats = page.evaluate("window.consoleStats")
    assert sum(stats["requests"]) == 1 and stats["totals"]["errors"] == 0
    row = page.locator('#stats-table tr[data-app="line3-fence"][data-api="fence"]')
    assert row.locator("td").nth(2).inner_text() == "1"
    assert page.locator("#chart-requests canvas").count() == 1

    page.goto("/console/monitoring?range=hour")
    page.wait_for_selector("#charts[data-ready='1']")
    stats = page.evaluate("window.consoleStats")
    assert {r["app"] for r in stats["table"]} >= {"line3-fence", "demo-line-1"}
    assert page.locator("#chart-latency canvas").count() == 1
    browser.shot(page, "monitoring")


def test_an_alert_appears(browser: Browser, page: Any, gw: Gateway) -> None:
    s = browser.shared
    path = f"{PATH_PREFIX}{s['codes']['fence']}/{API_PATHS['fence']}"
    body = json.dumps({"image": [b64(jpeg_bytes())], "area": "0,0,64,0,64,64,0,64"})
    for _ in range(3):  # api.alert_rules.auth_failure_burst is 3 in this gateway
        r = httpx.post(
            gw.base_url + path,
            content=body,
            headers=provider_headers(s["key"], "wrong-secret-wrong-secret-wrong!", path, body),
        )
        assert r.json()["code"] == 4010
    row = page.locator(f'#alerts-active tr[data-kind="auth_failures"][data-key="{s["key"]}"]')
    for _ in range(40):
        page.goto("/console/alerts")
        if row.count():
            break
        page.wait_for_timeout(250)
    assert row.count() == 1, page.content()
    assert "line3-fence" in row.inner_text()
    assert page.locator('#alerts-past tr[data-kind="p95_latency"]').count() == 1
    browser.shot(page, "alerts")


def test_the_camera_page_shows_the_latest_frame_with_its_zone(browser: Browser, page: Any) -> None:
    _signed_in(page)
    page.goto("/console/cameras")
    page.wait_for_selector('.cam[data-camera="gate-cam"] .frame[data-drawn="1"]')
    size = page.evaluate(
        "(() => { const i = document.querySelector('.cam .frame img');"
        " return [i.naturalWidth, i.naturalHeight]; })()"
    )
    assert tuple(size) == FRAME
    poly = page.locator('.cam svg polygon[data-zone="gate"]')
    assert poly.count() == 1
    pts = [[float(v) for v in p.split(",")] for p in poly.get_attribute("points").split()]
    assert pts == [[float(x), float(y)] for x, y in GATE]
    assert "online" in page.locator('.cam[data-camera="gate-cam"] h2').inner_text()
    browser.shot(page, "cameras")


def _click_polygon(page: Any, points: list[list[float]]) -> None:
    box = page.locator("#editor-image").bounding_box()
    sx, sy = box["width"] / FRAME[0], box["height"] / FRAME[1]
    for x, y in points:
        page.mouse.click(box["x"] + x * sx, box["y"] + y * sy)


def _zone_in_file(gw: Gateway) -> list[list[float]]:
    doc = yaml.safe_load(gw.config_path.read_text(encoding="utf-8"))
    return list(doc["cameras"][0]["tasks"]["fence"]["zones"][0]["polygon"])


def _new_row(events: Any, kind: str, seen: set[str]) -> Any:
    """Wait for a row of type ``kind`` not in ``seen`` on the live events page."""
    sel = f"#events tbody tr.ev-{kind}"
    _wait_js(
        events,
        f"Array.from(document.querySelectorAll('{sel}'))"
        f".some(r => !{json.dumps(sorted(seen))}.includes(r.dataset.event))",
    )
    for i in range(events.locator(sel).count()):
        row = events.locator(sel).nth(i)
        if row.get_attribute("data-event") not in seen:
            return row
    raise AssertionError("row vanished")


def test_a_zone_drawn_in_the_editor_is_saved_with_a_backup_and_applied_live(
    browser: Browser, page: Any, gw: Gateway
) -> None:
    _signed_in(page)
    original = gw.config_path.read_text(encoding="utf-8")
    events = browser.context.new_page()
    events.goto("/console/events")
    _wait_js(events, "document.getElementById('live-state').textContent === 'live'")
    seen = set(
        events.locator("#events tbody tr").evaluate_all("rs => rs.map(r => r.dataset.event)")
    )
    assert events.locator("#events tbody tr.ev-start").count() >= 1  # the incident so far

    page.goto("/console/zones/gate-cam/fence/gate")
    page.wait_for_selector("#editor[data-ready='1']")
    assert page.locator("#editor-svg circle.vertex").count() == 4

    # Client-side rules: dragging a corner across the far edge makes the outline cross.
    page.click("#zone-clear")
    _click_polygon(page, [[60, 60], [300, 200], [300, 60], [60, 200]])
    assert page.get_attribute("#editor", "data-valid") == "1"  # inserted into the nearest edge
    box = page.locator("#editor-image").bounding_box()
    sx, sy = box["width"] / FRAME[0], box["height"] / FRAME[1]
    corner = page.locator('#editor-svg circle.vertex[data-index="1"]').bounding_box()
    page.mouse.move(corner["x"] + corner["width"] / 2, corner["y"] + corner["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + 360 * sx, box["y"] + 130 * sy, steps=5)
    page.mouse.up()
    assert page.get_attribute("#editor", "data-valid") == "0"
    assert "not simple" in page.locator("#zone-status").inner_text()
    assert page.locator("#zone-save").is_disabled()
    # ... and the server refuses it too (same rules), as it refuses a post without CSRF.
    bad = {"points": [[60, 60], [360, 130], [300, 200], [300, 60]], "width": 768, "height": 576}
    url = "/console/zones/gate-cam/fence/gate"
    r = browser.context.request.post(url, data=bad, headers={"X-CSRF-Token": _csrf(page)})
    assert r.status == 400 and "not simple" in r.json()["error"]
    r = browser.context.request.post(url, data={**bad, "points": AWAY})
    assert r.status == 403
    assert gw.config_path.read_text(encoding="utf-8") == original

    # Draw a zone away from the person and save: the file changes, a backup keeps the
    # old one, and the running camera ends its incident (no restart).
    page.click("#zone-clear")
    _click_polygon(page, AWAY)
    assert page.get_attribute("#editor", "data-valid") == "1"
    page.click("#zone-save")
    _wait_js(page, "document.getElementById('zone-status').textContent.startsWith('saved and')")
    assert page.locator("#zone-status").inner_text().startswith("saved and applied")
    saved = _zone_in_file(gw)
    assert len(saved) == 4 and all(
        abs(a - b) <= 1.0
        for p, q in zip(saved, AWAY, strict=True)
        for a, b in zip(p, q, strict=True)
    ), saved
    text = gw.config_path.read_text(encoding="utf-8")
    assert text.startswith("# console test gateway -- comments must survive zone edits")
    backups = sorted(gw.config_path.parent.glob("gateway.yaml.bak-*"))
    assert len(backups) == 1 and backups[0].read_text(encoding="utf-8") == original
    ended = _new_row(events, "end", seen)
    seen.add(ended.get_attribute("data-event"))
    page.reload()
    page.wait_for_selector("#editor[data-ready='1']")
    browser.shot(page, "zone-editor")

    # Bring the zone back over the person: a new incident starts, live, with a thumbnail.
    page.click("#zone-clear")
    _click_polygon(page, [[float(x), float(y)] for x, y in GATE])
    page.click("#zone-save")
    _wait_js(page, "document.getElementById('zone-status').textContent.startsWith('saved and')")
    assert page.locator("#zone-status").inner_text().startswith("saved and applied")
    assert len(sorted(gw.config_path.parent.glob("gateway.yaml.bak-*"))) == 2
    started = _new_row(events, "start", seen)
    thumb = started.locator("img.thumb")
    thumb.wait_for()
    _wait_js(events, "img => img.complete && img.naturalWidth > 0", thumb.element_handle())
    assert "gate-cam" in started.inner_text() and "fence / gate" in started.inner_text()
    browser.shot(events, "events")
    events.close()


def test_the_editor_rules_match_the_servers(page: Any) -> None:
    _signed_in(page)
    page.goto("/console/zones/gate-cam/fence/gate")
    page.wait_for_selector("#editor[data-ready='1']")
    cases: list[list[list[float]]] = [
        [[10, 10], [100, 10], [100, 100], [10, 100]],  # square
        [[10, 10], [100, 100], [100, 10], [10, 100]],  # bow tie
        [[10, 10], [100, 10], [100, 100]],  # 3 points
        [[0, 0], [768, 0], [768, 576], [0, 576]],  # the frame's border
        [[0, 0], [769, 0], [768, 576], [0, 576]],  # outside
        [[10, 10], [50, 10], [100, 10], [200, 10]],  # collinear: zero area
        [[10, 10], [100, 10], [50, 10], [50, 80]],  # folds back along an edge
        [[10, 10], [100, 10], [100, 100], [55, 10], [10, 100]],  # touches an edge
        [[10, 10], [10, 10], [100, 10], [100, 100], [10, 100]],  # repeated point
        [[1, 1], [9, 1], [9, 9], [5, 5], [1, 9], [2, 5], [3, 3], [4, 2], [6, 2], [8, 2]],  # 10
        [[1, 1], [9, 1], [9, 9], [5, 5], [1, 9], [2, 5], [3, 3], [4, 2], [6, 1.5]],  # 9
        [[10, 10], [60, 10], [60, 60], [35, 10.0001], [10, 60]],  # almost touching
    ]
    for pts in cases:
        client = page.evaluate("p => window.ZoneRules.validate(p, 768, 576, 4, 9)", pts)
        try:
            validate_points(pts, 768, 576)
            server = None
        except ZoneEditError as exc:
            server = exc.details
        assert (client is None) == (server is None), (pts, client, server)


def _logged_in(page: Any, path: str) -> None:
    """Open ``path``, logging in first when the session is not there (``-k`` runs)."""
    page.goto(path)
    if urllib.parse.urlsplit(page.url).path == "/console/login":
        page.fill('input[name="token"]', ADMIN_TOKEN)
        page.click('#login-form button[type="submit"]')
        page.wait_for_url(f"**{path}")


def _counted(points: Any, frm: list[float], to: list[float]) -> list[str]:
    """What the gateway's LineCounter counts for feet walking through ``frm`` -> ``to``
    (a stretch of twice the arrow, ending at its tip) across the line ``points``."""
    import numpy as np

    from edge.stream.lines import LineCounter, LineSpec
    from edge.stream.tracker import TRACK_IDS
    from edge.types import Detections

    c = LineCounter(
        LineSpec(name="l", points=tuple((x, y) for x, y in points), min_displacement_px=1),
        camera="c",
        task="fence",
        class_names=["person"],
    )
    start = [2 * frm[0] - to[0], 2 * frm[1] - to[1]]
    out: list[str] = []
    for i, (x, y) in enumerate([start, to]):
        feet = Detections(
            xyxy=np.array([[x - 5, y - 20, x + 5, y]], np.float32),
            scores=np.array([0.9], np.float32),
            class_ids=np.array([0], np.int32),
            data={TRACK_IDS: np.array([1], np.int64)},
        )
        out += [
            str(e.attributes["direction"])
            for e in c.step(feet, t=float(i), wall_ms=0, frame_size=FRAME)
        ]
    return out


def _arrow(page: Any, scope: str) -> tuple[list[float], list[float]]:
    a = page.locator(f"{scope} line.line-arrow")
    frm = [float(a.get_attribute("x1")), float(a.get_attribute("y1"))]
    return frm, [float(a.get_attribute("x2")), float(a.get_attribute("y2"))]


def test_a_line_drawn_in_the_editor_is_saved_with_a_backup_and_its_arrow_shows_in(
    browser: Browser, page: Any, gw: Gateway
) -> None:
    _signed_in(page)
    # The Cameras page draws the line, its "in" arrow (the side the gateway counts "in")
    # and the running counter's counts.
    _logged_in(page, "/console/cameras")
    page.wait_for_selector('.cam[data-camera="gate-cam"] .frame[data-drawn="1"]')
    scope = '.cam svg g.counting-line[data-line="door"]'
    pts = page.locator(f"{scope} polyline").get_attribute("points")
    assert [[float(v) for v in p.split(",")] for p in pts.split()] == DOOR
    frm, to = _arrow(page, scope)
    assert to[1] > frm[1] and _counted(DOOR, frm, to) == ["in"]  # drawn left to right: down
    counts = page.locator('li.line-item[data-line="door"] .counts')
    assert (counts.get_attribute("data-in"), counts.get_attribute("data-out")) == ("0", "0")
    assert page.locator(f"{scope} text.line-label").text_content() == "fence/door  in 0 · out 0"

    original = gw.config_path.read_text(encoding="utf-8")
    backups = set(gw.config_path.parent.glob("gateway.yaml.bak-*"))
    page.click('li.line-item[data-line="door"] a.edit-line')
    page.wait_for_selector("#editor[data-ready='1']")
    assert page.locator("#editor-svg circle.vertex").count() == 2

    # A line that crosses itself: refused as you draw, and by the server.
    page.click("#zone-clear")
    _click_polygon(page, [[100, 100], [400, 300], [400, 100], [100, 300]])
    assert page.get_attribute("#editor", "data-valid") == "0"
    assert "crosses or touches itself" in page.locator("#zone-status").inner_text()
    assert page.locator("#zone-save").is_disabled()
    url = "/console/lines/gate-cam/fence/door"
    bad = {"points": [[100, 100], [400, 300], [400, 100], [100, 300]], "width": 768, "height": 576}
    r = browser.context.request.post(url, data=bad, headers={"X-CSRF-Token": _csrf(page)})
    assert r.status == 400 and r.json()["error"] == "line crosses or touches itself"
    r = browser.context.request.post(url, data={**bad, "points": [[10, 10], [90, 10]]})
    assert r.status == 403  # no CSRF token
    assert gw.config_path.read_text(encoding="utf-8") == original

    # Click three points, double-click one away and put it back, reverse twice, save.
    page.click("#zone-clear")
    want = [[80.0, 400.0], [400.0, 380.0], [720.0, 400.0]]
    _click_polygon(page, want)
    page.dblclick('#editor-svg circle.vertex[data-index="2"]')
    assert page.locator("#editor-svg circle.vertex").count() == 2
    _click_polygon(page, want[2:])
    assert page.get_attribute("#editor", "data-valid") == "1"
    frm, to = _arrow(page, "#editor-svg")
    page.click("#line-reverse")
    rfrm, rto = _arrow(page, "#editor-svg")
    assert to[1] > frm[1] and rto[1] < rfrm[1]  # reversed: "in" is now up the image
    page.click("#line-reverse")
    drawn = json.loads(page.locator("#zone-points").inner_text())
    assert _counted(drawn, *_arrow(page, "#editor-svg")) == ["in"]
    page.click("#zone-save")
    _wait_js(page, "document.getElementById('zone-status').textContent.startsWith('saved')")
    assert page.locator("#zone-status").inner_text().startswith("saved and applied")
    doc = yaml.safe_load(gw.config_path.read_text(encoding="utf-8"))
    saved = doc["cameras"][0]["tasks"]["fence"]["lines"][0]["points"]
    assert saved == drawn and len(saved) == 3, saved
    assert all(
        abs(a - b) <= 1.0
        for p, q in zip(saved, want, strict=True)
        for a, b in zip(p, q, strict=True)
    )
    want_doc = yaml.safe_load(original)
    want_doc["cameras"][0]["tasks"]["fence"]["lines"][0]["points"] = saved
    assert doc == want_doc  # nothing else changed
    new = set(gw.config_path.parent.glob("gateway.yaml.bak-*")) - backups
    assert len(new) == 1 and new.pop().read_text(encoding="utf-8") == original
    page.reload()
    page.wait_for_selector("#editor[data-ready='1']")
    assert page.locator("#editor-svg circle.vertex").count() == 3
    browser.shot(page, "line-editor")


def test_the_line_rules_match_the_servers(page: Any) -> None:
    _signed_in(page)
    _logged_in(page, "/console/lines/gate-cam/fence/door")
    page.wait_for_selector("#editor[data-ready='1']")
    rng = random.Random(11)
    cases: list[list[list[float]]] = [
        [[10, 10], [100, 10]],
        [[10, 10]],
        [[10, 10], [10, 10]],
        [[10, 10], [100, 10], [50, 10]],  # folds back
        [[10, 10], [100, 10], [100, 100], [50, 10]],  # ends on itself
        [[10, 10], [100, 10], [100, 100], [10, 10]],  # closed
        [[50, 10], [100, 10], [100, 100], [10, 10], [50, 10]],  # closed, ends collinear
        [[10, 10], [100, 10], [100, 50], [50, 10], [10, 10]],  # closed, back along the first
        [[10, 10], [50, 10], [100, 10]],  # straight on
        [[0, 0], [768, 576]],
        [[0, 0], [769, 576]],
        [[i * 40, 100 + (i % 2) * 30] for i in range(16)],
        [[i * 40, 100 + (i % 2) * 30] for i in range(17)],
        [[0.0, 0.0], [0.0, 0.0], *[[i * 40.0, 100.0 + (i % 2) * 30] for i in range(1, 16)]],
    ]
    for _ in range(400):  # small grids: many touching, collinear and repeated points
        n = rng.randint(2, 6)
        cases.append([[rng.randint(0, 4) * 100, rng.randint(0, 4) * 100] for _ in range(n)])
    client = page.evaluate(
        "cs => cs.map(p => window.ZoneRules.validateLine(p, 768, 576, 16))", cases
    )
    for pts, got in zip(cases, client, strict=True):
        try:
            validate_line_points(pts, 768, 576)
            server = None
        except ZoneEditError as exc:
            server = exc.details
        assert (got is None) == (server is None), (pts, got, server)
    assert sum(c is None for c in client) > 50 and sum(c is not None for c in client) > 50


def test_no_request_left_the_gateway(browser: Browser) -> None:
    assert len(browser.requests) > 20
    for url in browser.requests:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme in ("data", "blob"):
            continue
        assert parts.scheme == "http" and parts.hostname == "127.0.0.1", url
        assert f"{parts.scheme}://{parts.netloc}" == browser.base_url, url
    assert any("/console/static/vendor/uplot/uPlot.iife.min.js" in u for u in browser.requests)
