"""Pages left open keep up with the gateway: acknowledgements on the Events page, frames
and camera states on the Cameras page.

One real ``safety-edge run`` (subprocess, :func:`tests.console.gateway.start_gateway`)
with MQTT commands on a real mosquitto (free loopback port) and two cameras: ``gate-cam``
(the looped test video, the planted person standing in the ``gate`` zone: one open
incident) and ``spare-cam`` (a 2 s generated clip, looped, from a copy the test deletes:
at its next loop the file is gone and the camera goes offline). Debian's headless
Chromium (Playwright) shows the pages.

- An incident acknowledged over MQTT (``cmd/ack``, as a control room does) shows its
  ``by`` in the open Events page's row within 5 s, without a reload.
- The stream sends each acknowledgement once (``event: ack``, ids ``<event>.<ack>``
  rowids: a reconnect with ``Last-Event-ID`` goes on after it), only the filter's camera's.
- The Cameras page: :mod:`tests.console.test_console_camera_refresh` (same fixtures).
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
import yaml

from tests.api.server_fixture import ADMIN_TOKEN, console_login, free_port
from tests.console.gateway import FRAME, Gateway, gateway_config, start_gateway
from tests.mqtt.broker import MOSQUITTO, MosquittoBroker
from tests.mqtt.subscriber import Subscriber

CHROMIUM = Path("/usr/bin/chromium")
CMD = "safety-edge/console-gw/cmd"


@dataclass
class Site:
    gw: Gateway
    broker: MosquittoBroker
    spare_video: Path


def _clip(path: Path) -> None:
    """2 s of 768x576 MJPG at 10 fps (a moving bar)."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, FRAME)
    assert vw.isOpened(), "cv2.VideoWriter cannot write MJPG avi"
    for i in range(20):
        img = np.full((FRAME[1], FRAME[0], 3), 90, np.uint8)
        cv2.rectangle(img, (i * 30, 100), (i * 30 + 40, 300), (230, 230, 230), -1)
        vw.write(img)
    vw.release()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    if not Path(MOSQUITTO).is_file():
        pytest.skip("mosquitto not installed")
    root = tmp_path_factory.mktemp("live-pages")
    # the default camera of the console gateway, and a second one reading a deletable copy
    scratch = tmp_path_factory.mktemp("live-pages-cfg")
    gate = yaml.safe_load(gateway_config(scratch, port=free_port()).read_text())["cameras"][0]
    spare_video = root / "spare.avi"
    _clip(spare_video)
    spare = {
        "name": "spare-cam",
        "source": str(spare_video),
        "loop": True,
        "realtime": True,
        "target_fps": 4,
        "backoff_max_s": 1.0,
        "tasks": {"fence": {"lines": [{"name": "side", "points": [[0, 500], [700, 500]]}]}},
    }
    with MosquittoBroker(root) as broker:
        cfg = {
            "mqtt": {"host": broker.host, "port": broker.port, "commands": {"enabled": True}},
            "cameras": [gate, spare],
        }
        with start_gateway(root, config=cfg) as gw:
            yield Site(gw=gw, broker=broker, spare_video=spare_video)


@pytest.fixture
def page(site: Site) -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        ctx = p.chromium.launch_persistent_context(
            profile,
            executable_path=str(CHROMIUM),
            headless=True,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            viewport={"width": 1280, "height": 860},
            base_url=site.gw.base_url,
        )
        try:
            ctx.set_default_timeout(15_000)
            pg = ctx.new_page()
            pg.errors = []
            pg.on("pageerror", lambda e: pg.errors.append(str(e)))
            pg.goto("/console/apps")
            pg.fill('input[name="token"]', ADMIN_TOKEN)
            pg.click('#login-form button[type="submit"]')
            pg.wait_for_url("**/console/apps")
            yield pg
        finally:
            ctx.close()


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


def test_an_acknowledgement_reaches_the_open_events_page(site: Site, page: Any) -> None:
    page.goto("/console/events?camera=gate-cam")
    start = _wait_js(
        page,
        "(() => { const r = document.querySelector('#events tbody tr.ev-start');"
        " return r && r.dataset.event; })()",
        30,
    )
    cell = f"document.querySelector('#events tr[data-event=\"{start}\"] td.ack')"
    assert page.evaluate(f"{cell}.textContent.trim()") == ""
    by = "Ana (control room)"
    with Subscriber(
        host=site.broker.host,
        port=site.broker.port,
        topics=[f"{CMD}/reply"],
        client_id="control-room-test",
        persistent=False,
    ) as control:
        body = {"schema": 1, "cmd": "ack", "event_id": start, "by": by, "request_id": "r-1"}
        control.client.publish(f"{CMD}/ack", json.dumps(body).encode(), qos=1).wait_for_publish(5)
        assert control.wait_for(lambda: bool(control.on_topic("/cmd/reply")), 10)
        got = control.on_topic("/cmd/reply")[0].json()
        assert got.get("ok") is True, got
    t0 = time.monotonic()
    _wait_js(page, f"{cell}.textContent.includes({json.dumps(by)})", 5)
    took = time.monotonic() - t0
    assert took < 5
    assert page.evaluate(f"{cell}.querySelector('time') !== null")
    assert page.errors == []


def _sse(c: Any, url: str, **kw: Any) -> list[dict[str, str]]:
    """All messages of one stream (it ends after SSE_MAX_S)."""
    out: list[dict[str, str]] = []
    with c.stream("GET", url, **kw) as r:
        assert r.status_code == 200, r.read()
        cur: dict[str, str] = {}
        for line in r.iter_lines():
            if not line:
                if "event" in cur:
                    out.append(cur)
                cur = {}
                continue
            k, _, v = line.partition(": ")
            cur[k] = v
    return out


def test_the_stream_sends_each_acknowledgement_once(site: Site) -> None:
    base = site.gw.base_url
    with httpx.Client(timeout=15) as c:
        assert console_login(c, base, next_path="/console/events").status_code == 303
        page = c.get(f"{base}/console/events", params={"camera": "gate-cam"}).text
        start = page.split('class="ev-start"')[0].rsplit('data-event="', 1)[1].split('"')[0]
        with Subscriber(
            host=site.broker.host,
            port=site.broker.port,
            topics=[f"{CMD}/reply"],
            client_id="control-room-test-2",
            persistent=False,
        ) as control:
            body = {"schema": 1, "cmd": "ack", "event_id": start, "by": "Bo", "request_id": "r-2"}
            control.client.publish(f"{CMD}/ack", json.dumps(body).encode(), qos=1)
            assert control.wait_for(lambda: bool(control.on_topic("/cmd/reply")), 10)
        url = f"{base}/console/events/stream"
        got = _sse(c, url, params={"camera": "gate-cam", "acks": "0"})
        acks = [m for m in got if m["event"] == "ack"]
        assert acks, got
        mine = [json.loads(m["data"]) for m in acks]
        assert any(a["incident_id"] == start and a["ack"]["by"] for a in mine), mine
        last = acks[-1]["id"]
        e, _, a = last.partition(".")
        assert e.isdigit() and a.isdigit() and int(a) >= 1, last
        # a reconnect with the last id sent: no acknowledgement again
        again = _sse(c, url, params={"camera": "gate-cam"}, headers={"Last-Event-ID": last})
        assert [m for m in again if m["event"] == "ack"] == []
        # another camera's filter: its acknowledgements are not this camera's
        other = _sse(c, url, params={"camera": "spare-cam", "acks": "0"})
        assert [m for m in other if m["event"] == "ack"] == []
        assert c.get(url, params={"acks": "x"}).status_code == 400
