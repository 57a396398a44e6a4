"""The Cameras page left open keeps up: each camera's frame is reloaded every few seconds
(>= 2 requests in 8 s, the frame time shown advances), and a camera that goes offline is
shown offline, and its frame as old, without a reload.

The gateway and browser of :mod:`tests.console.test_console_live_pages`: ``gate-cam``
loops the test video; ``spare-cam`` loops a 2 s clip from a copy the test moves away, so
at its next loop the camera goes offline, and back online when the file is back.
"""

from __future__ import annotations

import shutil
import time
from typing import Any

from tests.console.test_console_live_pages import Site, _wait_js, page, site

__all__ = ["page", "site"]  # the fixtures

FRAME_MS = (
    "(() => { const f = document.querySelector('.cam[data-camera=\"{cam}\"] .frame-time');"
    " return f ? Number(f.dataset.frameMs || 0) : 0; })()"
)
STATE = "document.querySelector('.cam[data-camera=\"{cam}\"] .cam-state').textContent"
FRAME_NOTE = "document.querySelector('.cam[data-camera=\"{cam}\"] .frame-time').textContent"


def test_the_cameras_page_reloads_frames_and_camera_states(site: Site, page: Any) -> None:
    frames: list[str] = []
    page.on("request", lambda r: "/gate-cam/frame.jpg" in r.url and frames.append(r.url))
    page.goto("/console/cameras")
    first = _wait_js(page, FRAME_MS.replace("{cam}", "gate-cam"), 10)
    n0 = len(frames)
    page.wait_for_timeout(8000)
    assert len(frames) - n0 >= 2, frames
    later = page.evaluate(FRAME_MS.replace("{cam}", "gate-cam"))
    assert later > first, (first, later)
    assert abs(later - time.time() * 1000) < 10_000
    assert "old" not in page.evaluate(FRAME_NOTE.replace("{cam}", "gate-cam"))

    # spare-cam goes offline at its next loop once its file is gone
    assert "online" in page.evaluate(STATE.replace("{cam}", "spare-cam"))
    hidden = site.spare_video.with_suffix(".gone")
    shutil.move(site.spare_video, hidden)
    try:
        _wait_js(page, STATE.replace("{cam}", "spare-cam") + ".includes('offline')", 20)
        _wait_js(page, FRAME_NOTE.replace("{cam}", "spare-cam") + ".includes('old')", 20)
        # and the other camera is still online, its frame current
        assert "online" in page.evaluate(STATE.replace("{cam}", "gate-cam"))
    finally:
        shutil.move(hidden, site.spare_video)
    _wait_js(page, STATE.replace("{cam}", "spare-cam") + ".includes('online')", 20)
    assert page.errors == []
