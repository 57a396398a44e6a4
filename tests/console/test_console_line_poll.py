"""The Cameras page's live line counts: ``GET /console/data/lines`` and the page polling it.

One in-process ``safety-edge run`` service (:class:`GatewayService` with its uvicorn, as
``run`` starts it, the console attached) counts real crossings: its ``fence`` model is a
tiny ONNX graph whose one ``person`` box moves with the frame's mean brightness, and the
camera loops a generated video that goes dark -> bright -> dark, so the person's feet walk
down across the ``door`` line (``in``) and back up (``out``) once every two seconds,
through the real detector, tracker and :class:`LineCounter`. A second camera is disabled
in the config (its line has no count).

Over HTTP: the endpoint needs a session (401 JSON without), answers the running counters'
numbers (the same the pipeline's metrics give), one camera with ``?camera=`` and 404 JSON
for an unknown one, ``live: false`` and no counts without a camera backend
(``safety-edge serve``). In Debian's headless Chromium (Playwright): the number on the page
changes in place after the count changes on the server (no reload, no redraw), a failed
poll (a 503) shows the stale marker and the poll retries until it works again, a 401 (the
session logged out) goes to the login page, which comes back to the Cameras page, and a
hidden tab stops polling and resumes when shown. Headless
Chromium keeps every page visible (minimizing its window or bringing another tab to the
front changes nothing there), so that test sets ``document.hidden`` as a browser would
and sends the browser's ``visibilitychange`` event.
"""

from __future__ import annotations

import itertools
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.api.console.backend import STATE_KEY
from edge.runtime.preprocess import PreprocessSpec, preprocess
from tests.api.server_fixture import ADMIN_TOKEN, console_login, free_port, write_models
from tests.console.gateway import DOOR, FRAME, gateway_config, in_process_gateway, wait_for
from tests.runtime.graphs import OPSET, write_model_and_manifest, yolov8_output

INPUT = (64, 64)
FEET_Y = (380.0, 460.0)
"""The walking person's feet (y, frame pixels) in the dark and the bright frames: 40 px
above and below the ``door`` line (y = 420, drawn left to right: walking down is ``in``)."""
GREY = (40, 200)
"""Grey level of the dark and the bright frames."""
BOX_W, BOX_H = 10.0, 20.0
"""The person's box in network-input pixels (120 x 240 in the frame)."""
CHROMIUM = Path("/usr/bin/chromium")
POLL_URL = "/console/data/lines"


def walking_video(folder: Path) -> Path:
    """A 768x576 MJPG clip at 10 fps, 2 s long: 7 dark frames, 3 brightening, 7 bright,
    3 darkening (looped by the camera)."""
    ramp = [0.25, 0.5, 0.75]
    levels = [0.0] * 7 + ramp + [1.0] * 7 + ramp[::-1]
    path = folder / "walk.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, FRAME)
    assert vw.isOpened(), "cv2.VideoWriter cannot write MJPG avi"
    for f in levels:
        grey = round(GREY[0] + f * (GREY[1] - GREY[0]))
        vw.write(np.full((FRAME[1], FRAME[0], 3), grey, np.uint8))
    vw.release()
    return path


def walking_model(models: Path, video: Path) -> None:
    """Write a ``fence`` model (and manifest) over the planted one: one ``person`` box whose
    centre y (network pixels) is ``c0 + k * mean(input)``, calibrated on the video's own
    dark and bright frames (as decoded, through the detector's preprocessing) so that the
    feet stand at :data:`FEET_Y` in them; it moves linearly in between."""
    cap = cv2.VideoCapture(str(video))
    frames = []
    for _ in range(20):
        ok, img = cap.read()
        assert ok
        frames.append(img)
    cap.release()
    spec = PreprocessSpec(input_size=INPUT)
    (t_dark, lb), (t_bright, _) = preprocess(frames[0], spec), preprocess(frames[10], spec)
    m = (float(t_dark.mean()), float(t_bright.mean()))
    # feet_y = (cy + BOX_H / 2 - pad_y) / scale_y in frame pixels
    cy = [y * lb.scale_y + lb.pad_y - BOX_H / 2 for y in FEET_Y]
    k = (cy[1] - cy[0]) / (m[1] - m[0])
    c0 = cy[0] - k * m[0]
    base = yolov8_output([(INPUT[0] / 2, c0, BOX_W, BOX_H)], [[0.9, 0.0]])
    slope = np.zeros_like(base)
    slope[0, 1, 0] = k
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Mul", ["mean", "slope"], ["moved"]),
        helper.make_node("Add", ["base", "moved"], ["output0"]),
    ]
    graph = helper.make_graph(
        nodes,
        "walking",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, INPUT[1], INPUT[0]])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(base.shape))],
        initializer=[
            numpy_helper.from_array(base, "base"),
            numpy_helper.from_array(slope, "slope"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    write_model_and_manifest(
        models, model, name="fence", class_names=["person", "car"], input_size=INPUT
    )


def _camera(name: str, video: Path, line: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": str(video),
        "loop": True,
        "realtime": True,
        "target_fps": 4,
        "tasks": {
            "fence": {
                "lines": [
                    # the synthetic walker's feet go 40 px past the line, under the default
                    # margin of a quarter of its 240 px box: count at the fixed 10 px instead
                    {
                        "name": line,
                        "points": DOOR,
                        "classes": ["person"],
                        "min_displacement_frac": 0.0,
                    }
                ]
            }
        },
        **extra,
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """``safety-edge run``'s service in this process, counting the walking person."""
    root = tmp_path_factory.mktemp("line-poll")
    write_models(root / "models")
    video = walking_video(root)
    walking_model(root / "models", video)
    port = free_port()
    cameras = [
        _camera("gate-cam", video, "door"),
        _camera("spare-cam", video, "side", enabled=False),
    ]
    cfg = gateway_config(root, port=port, cameras=cameras)
    with in_process_gateway(cfg, ready=lambda svc: _server_door(svc) is not None) as svc:
        yield svc, f"http://127.0.0.1:{port}"


def _server_door(svc: Any) -> dict[str, int] | None:
    """The running ``door`` counter's numbers, as the pipeline's metrics give them."""
    lines = svc.cameras["gate-cam"].pipeline.metrics()["tasks"]["fence"]["lines"]
    got = lines.get("door")
    return None if got is None else dict(got)


def _login(c: httpx.Client, base: str) -> None:
    assert console_login(c, base).status_code == 303


# -- over HTTP ------------------------------------------------------------------------------


def test_the_endpoint_needs_a_session(service: tuple[Any, str]) -> None:
    _, base = service
    r = httpx.get(f"{base}{POLL_URL}", timeout=10)
    assert r.status_code == 401
    assert r.json() == {"error": "not logged in (or the session expired)"}
    r = httpx.get(f"{base}{POLL_URL}", cookies={"se_session": "forged"}, timeout=10)
    assert r.status_code == 401


def test_the_endpoint_answers_the_running_counters(service: tuple[Any, str]) -> None:
    svc, base = service
    with httpx.Client(timeout=10) as c:
        _login(c, base)

        def door() -> dict[str, int]:
            r = c.get(f"{base}{POLL_URL}")
            assert r.status_code == 200, r.text
            d = r.json()
            assert d["live"] is True and set(d["cameras"]) == {"gate-cam", "spare-cam"}
            assert d["cameras"]["spare-cam"] == {
                "running": False,
                "lines": {"fence": {"side": None}},
            }
            gate = d["cameras"]["gate-cam"]
            assert gate["running"] is True and set(gate["lines"]) == {"fence"}
            assert set(gate["lines"]["fence"]) == {"door"}
            return dict(gate["lines"]["fence"]["door"])

        r = c.get(f"{base}{POLL_URL}")
        assert r.headers["content-type"] == "application/json"
        assert r.headers["cache-control"] == "no-store"
        assert "default-src 'none'" in r.headers["content-security-policy"]
        assert abs(r.json()["time_ms"] - time.time() * 1000) < 10_000
        # Real crossings: the walking person is counted both ways, and what the endpoint
        # answers never goes down and is what the running pipeline reports.
        seen = [door()]
        end = time.monotonic() + 30
        while not (seen[-1]["in"] >= 2 and seen[-1]["out"] >= 2) and time.monotonic() < end:
            time.sleep(0.3)
            seen.append(door())
        assert seen[-1]["in"] >= 2 and seen[-1]["out"] >= 2, seen
        assert set(seen[-1]) == {"in", "out"}
        for a, b in itertools.pairwise(seen):
            assert b["in"] >= a["in"] and b["out"] >= a["out"], seen
        assert len({(s["in"], s["out"]) for s in seen}) >= 3, seen  # it changed as it ran
        wait_for(lambda: door() == _server_door(svc), 10, "the endpoint = the pipeline")

        one = c.get(f"{base}{POLL_URL}", params={"camera": "gate-cam"})
        assert one.status_code == 200 and set(one.json()["cameras"]) == {"gate-cam"}
        for unknown in ("nope", "", "gate-cam/../spare-cam"):
            r = c.get(f"{base}{POLL_URL}", params={"camera": unknown})
            assert r.status_code == 404, unknown
            assert r.headers["content-type"] == "application/json"
            assert r.json() == {"error": f"no camera {unknown!r}"}


def test_without_a_camera_backend_lines_have_no_counts(service: tuple[Any, str]) -> None:
    """``safety-edge serve`` has no pipelines: the lines are listed, without counts."""
    svc, base = service
    backend = getattr(svc.app.state, STATE_KEY)
    with httpx.Client(timeout=10) as c:
        _login(c, base)
        setattr(svc.app.state, STATE_KEY, None)
        try:
            r = c.get(f"{base}{POLL_URL}")
            page = c.get(f"{base}/console/cameras")
        finally:
            setattr(svc.app.state, STATE_KEY, backend)
        assert r.status_code == 200 and r.json()["live"] is False
        assert r.json()["cameras"] == {
            "gate-cam": {"running": False, "lines": {"fence": {"door": None}}},
            "spare-cam": {"running": False, "lines": {"fence": {"side": None}}},
        }
        assert 'id="line-counts"' not in page.text  # nothing to poll: the page does not
        assert 'id="line-counts"' in c.get(f"{base}/console/cameras").text


# -- in the browser -------------------------------------------------------------------------


def _wait_js(page: Any, expr: str, timeout: float = 15.0) -> Any:
    """Poll ``page.evaluate(expr)`` until truthy (the console's CSP forbids
    ``wait_for_function``'s ``new Function``)."""
    end = time.monotonic() + timeout
    while True:
        got = page.evaluate(expr)
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"not true within {timeout} s: {expr}")
        page.wait_for_timeout(100)


COUNTS = (
    'document.querySelector(\'.cam[data-camera="gate-cam"]'
    ' li.line-item[data-line="door"] .counts\')'
)
LABEL = (
    'document.querySelector(\'.cam[data-camera="gate-cam"] svg g.counting-line'
    '[data-task="fence"][data-line="door"] text.line-label\')'
)
STATE = "document.getElementById('line-counts').dataset.state"


def _shown(page: Any) -> dict[str, Any]:
    return dict(
        page.evaluate(
            f"() => {{ const s = {COUNTS}; return {{ in: s.dataset.in, out: s.dataset.out,"
            f" text: s.textContent, cls: s.className, label: {LABEL}.textContent,"
            " pill: document.getElementById('counts-state').textContent }; }"
        )
    )


def _set_hidden(page: Any, hidden: bool) -> None:
    page.evaluate(
        """(hidden) => {
            Object.defineProperty(document, "hidden", { value: hidden, configurable: true });
            Object.defineProperty(document, "visibilityState",
                                  { value: hidden ? "hidden" : "visible", configurable: true });
            document.dispatchEvent(new Event("visibilitychange"));
        }""",
        hidden,
    )


def test_the_page_updates_the_counts_in_place_marks_them_stale_and_pauses(
    service: tuple[Any, str],
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    svc, base = service
    requests: list[str] = []
    errors: list[str] = []
    failed: list[tuple[int, str]] = []
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            viewport={"width": 1280, "height": 860},
            base_url=base,
        )
        try:
            ctx.set_default_timeout(15_000)
            ctx.on("request", lambda r: requests.append(r.url))
            page = ctx.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            ctx.on(
                "response",
                lambda r: (
                    failed.append((r.status, urllib.parse.urlsplit(r.url).path))
                    if r.status >= 400
                    else None
                ),
            )
            page.goto("/console/cameras")
            assert urllib.parse.urlsplit(page.url).path == "/console/login"
            page.fill('input[name="token"]', ADMIN_TOKEN)
            page.click('#login-form button[type="submit"]')
            page.wait_for_url("**/console/cameras")
            _wait_js(page, "document.querySelector('.cam[data-camera=\"gate-cam\"] .frame')"
                     ".dataset.drawn === '1'")  # fmt: skip
            _wait_js(page, f"{STATE} === 'live'")
            # The disabled camera has no frame: said so, even when its image failed early.
            spare = '.cam[data-camera="spare-cam"]'
            _wait_js(page, f"document.querySelector('{spare} .frame').dataset.drawn === 'none'")
            assert page.locator(f"{spare} .noframe").is_visible()
            # Mark this document and the drawn line: a reload or a redraw would lose them.
            page.evaluate(
                f"() => {{ window.sameDocument = 1; {LABEL}.parentNode.dataset.probe = '1'; }}"
            )
            first = _shown(page)
            n0 = int(first["in"])
            assert first["text"] == f"in {first['in']} · out {first['out']}"
            assert first["label"] == f"fence/door  in {first['in']} · out {first['out']}"
            assert "live" in first["pill"]

            # The count changes on the server (the person walks through the door) ...
            wait_for(lambda: (_server_door(svc) or {"in": 0})["in"] > n0, 20, "a crossing")
            # ... and the page shows it without a reload.
            _wait_js(page, f"Number({COUNTS}.dataset.in) > {n0}", timeout=10)
            now = _shown(page)
            server = _server_door(svc)
            assert server is not None and n0 < int(now["in"]) <= server["in"]
            assert now["text"] == f"in {now['in']} · out {now['out']}"
            assert now["label"] == f"fence/door  in {now['in']} · out {now['out']}"
            assert page.evaluate(f"window.sameDocument === 1 && {LABEL}.parentNode.dataset.probe")
            assert "stale" not in now["cls"]
            polls = [u for u in requests if urllib.parse.urlsplit(u).path == POLL_URL]
            assert len(polls) >= 2 and page.evaluate("window.consoleLinePolls") >= 2

            # A failed poll (the gateway answers 503 for a while) marks the counts stale;
            # the poll retries ...
            def unavailable(route: Any) -> None:
                route.fulfill(
                    status=503,
                    content_type="application/json",
                    body='{"error": "gateway restarting"}',
                )

            page.route(f"**{POLL_URL}*", unavailable)
            _wait_js(page, f"{STATE} === 'stale'", timeout=10)
            stale = _shown(page)
            assert stale["pill"].startswith("stale since "), stale
            assert "gateway restarting" in stale["pill"]
            assert "retrying" in stale["pill"]
            assert {"stale", "bad"} <= set(stale["cls"].split())
            assert stale["in"] is not None  # the last numbers stay, marked
            tried = len([u for u in requests if urllib.parse.urlsplit(u).path == POLL_URL])
            # ... until it works again.
            page.unroute(f"**{POLL_URL}*", unavailable)
            _wait_js(page, f"{STATE} === 'live'", timeout=20)
            back = _shown(page)
            assert "stale" not in back["cls"] and "live" in back["pill"]
            retried = len([u for u in requests if urllib.parse.urlsplit(u).path == POLL_URL])
            assert retried > tried, (tried, retried)  # it retried by itself
            assert page.evaluate("window.sameDocument") == 1

            # The session ends (logout elsewhere; 12 h age; gateway restart): the next
            # poll's 401 goes to the login page, which comes back here.
            csrf = page.locator('meta[name="csrf-token"]').get_attribute("content")
            r = ctx.request.post("/console/logout", form={"csrf": str(csrf)}, max_redirects=0)
            assert r.status == 303
            page.wait_for_url("**/console/login?next=%2Fconsole%2Fcameras", timeout=10_000)
            page.fill('input[name="token"]', ADMIN_TOKEN)
            page.click('#login-form button[type="submit"]')
            page.wait_for_url("**/console/cameras")
            _wait_js(page, f"{STATE} === 'live'", timeout=20)

            # A hidden tab does not poll; shown again, it polls at once.
            _set_hidden(page, True)
            assert page.evaluate(STATE) == "paused"
            page.wait_for_timeout(1000)  # a poll in flight when hidden may still finish
            before = len([u for u in requests if urllib.parse.urlsplit(u).path == POLL_URL])
            page.wait_for_timeout(5000)  # 2.5 periods
            hidden = len([u for u in requests if urllib.parse.urlsplit(u).path == POLL_URL])
            assert hidden == before, "polled while hidden"
            assert page.evaluate(STATE) == "paused"
            _set_hidden(page, False)
            page.wait_for_timeout(800)  # well under the 2 s period
            shown = len([u for u in requests if urllib.parse.urlsplit(u).path == POLL_URL])
            assert shown == hidden + 1
            _wait_js(page, f"{STATE} === 'live'", timeout=5)
        finally:
            ctx.close()
    for url in requests:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "blob":  # a refreshed frame, decoded from bytes fetched here
            continue
        assert parts.scheme == "http" and parts.hostname == "127.0.0.1", url
    assert not errors  # no script error
    # The only failed requests: the polls answered 503 or while logged out (the line counts
    # for sure; the camera states and frame refreshes when one fell in that moment) and
    # the disabled camera's frame.
    must = {(503, POLL_URL), (401, POLL_URL), (404, "/console/cameras/spare-cam/frame.jpg")}
    may = {(401, "/console/data/cameras"), (401, "/console/cameras/gate-cam/frame.jpg")}
    assert must <= set(failed) <= must | may, failed
