"""A camera that comes back from a reconnect at another resolution keeps its pixel zones.

The audit's scenario with real parts: an MJPEG server on a free loopback port serves
640x480 on its first connection for 1.5 s, then drops it and serves 320x240 from then
on; OpenCV reads it through :class:`CameraPipeline`; a zone in pixels covers the bottom
half of the 640x480 view and a person stands there all along (the detector below finds
one at the same relative place in whatever frame it gets -- a stand-in for a real model,
which would do the same for a person who does not move). Before the fix the zone lay
outside the 320x240 frame and the incident ended as ``lost`` without a word.
"""

from __future__ import annotations

import logging
import socket
import time
from typing import Any, ClassVar

import cv2
import numpy as np
import numpy.typing as npt
import pytest

from edge.stream.pipeline import CameraPipeline, TaskRunner, TaskSpec
from edge.stream.sources import SourceSpec
from edge.stream.tracker import TrackerConfig
from edge.stream.zones import ZoneMonitor, ZoneSpec
from edge.types import Detections
from tests.polling import wait
from tests.stream.media import ScriptedMjpeg, mjpeg_part

BOTTOM = ((0, 240), (640, 240), (640, 480), (0, 480))


class PersonInBottomHalf:
    """A person whose feet are at 45 % width, 90 % height of whatever frame comes."""

    class_names: ClassVar[list[str]] = ["person"]

    def detect(self, image: npt.NDArray[np.uint8], **_: Any) -> Detections:
        h, w = image.shape[:2]
        box = np.array([[0.40 * w, 0.55 * h, 0.50 * w, 0.90 * h]], np.float32)
        return Detections(
            xyxy=box, scores=np.array([0.9], np.float32), class_ids=np.array([0], np.int32)
        )


class ResizingMjpeg(ScriptedMjpeg):
    """First connection: 640x480 for ``first_s``, then closed; later ones: 320x240."""

    def __init__(self, first_s: float = 1.5) -> None:
        self.first_s = first_s
        self.sent_small = False
        self._big_done = False
        super().__init__()

    @staticmethod
    def _jpeg(w: int, h: int) -> bytes:
        ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 100, np.uint8))
        assert ok
        return buf.tobytes()

    def script(self, conn: socket.socket) -> None:
        big = not self._big_done
        jpg = self._jpeg(640, 480) if big else self._jpeg(320, 240)
        t0 = time.monotonic()
        while not self.closed.is_set():
            if big and time.monotonic() - t0 > self.first_s:
                self._big_done = True
                return  # the camera "reboots"
            conn.sendall(mjpeg_part(jpg))
            self.sent_small = self.sent_small or not big
            time.sleep(0.1)


def test_pixel_zone_follows_a_resolution_change(caplog: pytest.LogCaptureFixture) -> None:
    server = ResizingMjpeg()
    zone = ZoneSpec(
        name="bottom", polygon=BOTTOM, min_dwell_s=0, cooldown_s=1.0, update_every_s=None
    )
    events: list[Any] = []
    runner = TaskRunner(
        spec=TaskSpec(name="fence", zones=(zone,), tracker=TrackerConfig(n_init=1)),
        detector=PersonInBottomHalf(),
        camera="cam",
    )
    pipe = CameraPipeline(
        camera="cam",
        source=SourceSpec(uri=server.url, read_timeout_s=2, backoff_min_s=0.2, backoff_max_s=1),
        tasks=[runner],
        sinks=[events.append],
    )
    sizes: set[tuple[int, int]] = set()
    small_ms: list[int] = []

    def seen_small() -> bool:
        f = pipe.latest_frame()
        if f is not None:
            sizes.add(f.size)
            if f.size == (320, 240):
                small_ms.append(f.wall_ms)
        return bool(small_ms)

    try:
        with caplog.at_level(logging.WARNING, logger="edge.stream.zones"):
            pipe.start()
            assert wait(seen_small, 20, interval=0.05)
            time.sleep(2.0)  # > cooldown_s: a zone outside the frame would have ended it
            inside = pipe.metrics()["tasks"]["fence"]["zones"]["bottom"]["inside"]
    finally:
        pipe.stop()
        server.close()
    assert (640, 480) in sizes, sizes
    kinds = [(e.type, e.attributes.get("reason")) for e in events]
    # At 320x240 the person (a new track: its box jumped to half the coordinates) is in
    # the zone again and stays in it until the pipeline stops; the old track ends.
    late = [e for e in events if e.type == "start" and e.time_ms >= small_ms[0] - 1000]
    assert late, kinds
    ends = {e.start_event_id: e.attributes.get("reason") for e in events if e.type == "end"}
    assert [ends.get(e.event_id) for e in late] == ["shutdown"] * len(late), kinds
    assert inside == 1
    scaled = [r.getMessage() for r in caplog.records if "scaled" in r.getMessage()]
    assert len(scaled) == 1, scaled
    assert "from 640x480 to 320x240" in scaled[0] and "(0.500, 0.500)" in scaled[0]


def test_a_pixel_polygon_outside_the_first_frame_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mon = ZoneMonitor(ZoneSpec(name="bottom", polygon=BOTTOM), camera="c", task="t",
                      class_names=["person"])  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="edge.stream.zones"):
        mon.polygon_for(320, 240)
        mon.polygon_for(320, 240)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "outside the 320x240 frame" in msgs[0], msgs
    norm = ZoneMonitor(ZoneSpec(name="n", polygon=((0, 0.5), (1, 0.5), (1, 1)), normalized=True),
                       camera="c", task="t", class_names=["person"])  # fmt: skip
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge.stream.zones"):
        a = norm.polygon_for(640, 480)
        b = norm.polygon_for(320, 240)
    assert a is not None and b is not None
    assert np.allclose(b, a / 2) and caplog.records == []  # normalised: just follows
