"""The zone editor fits a Full HD camera frame on a 1280x800 control-room screen (audit).

Before, the editor showed the frame at the page's full width (1920x1080 scaled to the
content width only): on a 1280x800 screen the frame alone was taller than the window, so
"Save and apply" was below the fold. Now the frame is fitted into the width and the
height left on the screen, and clicks still map to frame pixels: a click on the centre of
the displayed image saves the point (960, 540).

Real parts: ``safety-edge run`` in a subprocess reading a 1920x1080 video written by
OpenCV, real uvicorn, a real ``gateway.yaml``, Debian's Chromium driven by Playwright.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from tests.api.server_fixture import ADMIN_TOKEN
from tests.console.gateway import GATE, Gateway, start_gateway

sync_api = pytest.importorskip("playwright.sync_api")

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"]
FULL_HD = (1920, 1080)
SCREEN = {"width": 1280, "height": 800}

pytestmark = pytest.mark.skipif(
    not CHROMIUM.is_file(), reason="Debian's chromium is not installed (apt-get install chromium)"
)


def full_hd_video(folder: Path) -> Path:
    """A short 1920x1080 MJPG clip (moving disc on a two-tone background)."""
    path = folder / "fullhd.avi"
    w, h = FULL_HD
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, FULL_HD)
    assert vw.isOpened(), "cv2.VideoWriter cannot write MJPG avi"
    for i in range(10):
        img = np.full((h, w, 3), (70, 96, 120), np.uint8)
        cv2.rectangle(img, (0, h // 2), (w, h), (90, 110, 90), -1)
        cv2.circle(img, (100 + i * 150, 300), 80, (220, 220, 220), -1)
        vw.write(img)
    vw.release()
    return path


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    root = tmp_path_factory.mktemp("fullhd-gw")
    camera = {
        "name": "gate-cam",
        "source": str(full_hd_video(root)),
        "loop": True,
        "realtime": True,
        "target_fps": 2,
        "tasks": {"fence": {"zones": [{"name": "gate", "polygon": GATE, "classes": ["person"]}]}},
    }
    with start_gateway(root, config={"cameras": [camera]}) as g:
        yield g


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory, gw: Gateway) -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(CHROMIUM),
            headless=True,
            args=ARGS,
            viewport=SCREEN,
            base_url=gw.base_url,
        )
        ctx.set_default_timeout(15_000)
        try:
            pg = ctx.new_page()
            pg.goto("/console/apps")
            pg.fill('input[name="token"]', ADMIN_TOKEN)
            pg.click('#login-form button[type="submit"]')
            pg.wait_for_url("**/console/apps")
            yield pg
        finally:
            ctx.close()


def _open_editor(page: Any) -> None:
    end = time.monotonic() + 30
    while True:  # the camera's first frame may take a moment after start
        page.goto("/console/zones/gate-cam/fence/gate")
        page.wait_for_selector("#editor[data-ready]")
        if page.get_attribute("#editor", "data-ready") == "1":
            return
        assert time.monotonic() < end, "no frame from the camera within 30 s"
        page.wait_for_timeout(500)


def test_the_editor_fits_a_full_hd_frame_on_a_1280x800_screen(page: Any, gw: Gateway) -> None:
    _open_editor(page)
    natural = page.evaluate(
        "() => { const i = document.getElementById('editor-image');"
        " return [i.naturalWidth, i.naturalHeight]; }"
    )
    assert tuple(natural) == FULL_HD
    geo = page.evaluate(
        """() => {
        const s = document.getElementById('zone-save').getBoundingClientRect();
        const i = document.getElementById('editor-image').getBoundingClientRect();
        const v = document.getElementById('editor-svg').getBoundingClientRect();
        return {save_bottom: s.bottom, save_right: s.right, scroll_y: window.scrollY,
                inner_h: window.innerHeight, inner_w: window.innerWidth,
                doc_w: document.documentElement.scrollWidth,
                img: [i.left, i.top, i.width, i.height], svg: [v.left, v.top, v.width, v.height]};
    }"""
    )
    assert geo["scroll_y"] == 0
    assert geo["save_bottom"] <= geo["inner_h"], geo  # Save visible without scrolling
    assert geo["save_right"] <= geo["inner_w"], geo
    assert geo["doc_w"] <= geo["inner_w"], geo  # no horizontal overflow
    x, y, w, h = geo["img"]
    assert abs(w / h - 16 / 9) < 0.01, geo  # scaled, not stretched
    assert all(abs(a - b) <= 1 for a, b in zip(geo["svg"], geo["img"], strict=True)), geo

    # A click on the displayed centre is the frame's centre (960, 540) in saved pixels.
    page.click("#zone-clear")
    cx, cy = x + w / 2, y + h / 2
    for px, py in ((cx, cy), (cx + w / 4, cy), (cx + w / 4, cy + h / 4), (cx, cy + h / 4)):
        page.mouse.click(px, py)
    drawn = page.locator("#zone-points").inner_text()
    assert page.get_attribute("#editor", "data-valid") == "1", (
        drawn,
        page.locator("#zone-status").inner_text(),
    )
    page.click("#zone-save")
    end = time.monotonic() + 15
    while not page.locator("#zone-status").inner_text().startswith("saved"):
        assert time.monotonic() < end, page.locator("#zone-status").inner_text()
        page.wait_for_timeout(100)
    doc = yaml.safe_load(gw.config_path.read_text(encoding="utf-8"))
    saved = doc["cameras"][0]["tasks"]["fence"]["zones"][0]["polygon"]
    want = [(960, 540), (1440, 540), (1440, 810), (960, 810)]
    assert len(saved) == 4, saved
    for x0, y0 in want:  # frame pixels, +- 2 px
        assert any(abs(p[0] - x0) <= 2 and abs(p[1] - y0) <= 2 for p in saved), (want, saved)
