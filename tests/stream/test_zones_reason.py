"""Zones: an incident's end reason does not hang on the one frame the cooldown runs out.

The audit's scenario (syn_reason.py) with the real :class:`~edge.stream.tracker.Tracker`
(gateway defaults) and :class:`~edge.stream.zones.ZoneMonitor` (min_dwell 1 s, cooldown
3 s), 10 det/s: a person walks out of the zone (its right edge at x = 500) at 40 px/s.
Before the fix the reason was ``left`` only if the track was detected on exactly the
frame the cooldown ran out: one missed detection there, or the person walking out of
the picture before it, made it ``lost``.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.stream.events import ZoneEvent
from edge.stream.tracker import Tracker, TrackerConfig
from edge.stream.zones import ZoneMonitor, ZoneSpec
from edge.types import Detections

ZONE = ((100.0, 100.0), (500.0, 100.0), (500.0, 400.0), (100.0, 400.0))
FRAME = (768, 576)
T0_MS = 1_700_000_000_000


def run(visible: list[float | None]) -> list[ZoneEvent]:
    """One frame per 0.1 s: the person's box centre x, or ``None`` (not detected)."""
    mon = ZoneMonitor(
        ZoneSpec(name="z", polygon=ZONE, classes=("person",), min_dwell_s=1.0, cooldown_s=3.0),
        camera="cam",
        task="fence",
        class_names=("person",),
    )
    trk = Tracker(
        config=TrackerConfig(high_score=0.5, low_score=0.1, match_iou=0.2, n_init=2, max_age_s=3.0)
    )
    events: list[ZoneEvent] = []
    for k, cx in enumerate(visible):
        t = 1000.0 + k / 10
        boxes = [] if cx is None else [(cx - 20, 280.0, cx + 20, 380.0)]
        n = len(boxes)
        dets = Detections(
            xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
            scores=np.full((n,), 0.8, np.float32),
            class_ids=np.zeros((n,), np.int32),
        )
        events += mon.step(trk.update(dets, t=t), t=t, wall_ms=T0_MS + k * 100, frame_size=FRAME)
    return events


def walk_out(kind: str) -> list[float | None]:
    out: list[float | None] = []
    for k in range(400):
        t = k / 10
        cx = 300 + 40 * t  # crosses x = 500 at t = 5.0
        if kind == "out_of_picture":
            out.append(cx if cx < 600 else None)  # gone at x = 600 (t = 7.5)
        elif kind == "stands_outside":
            out.append(min(cx, 600.0))
        else:  # "vanishes_inside": the detector loses the person inside the zone
            out.append(cx if t < 4.0 else None)
    return out


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("out_of_picture", "left"),
        ("stands_outside", "left"),
        ("vanishes_inside", "lost"),
    ],
)
def test_end_reason(kind: str, reason: str) -> None:
    events = run(walk_out(kind))
    assert [e.type for e in events] == ["start", "end"], kind
    assert events[1].attributes["reason"] == reason, kind


def test_a_miss_on_the_frame_the_cooldown_runs_out_is_still_left() -> None:
    """Seen outside for 3 s, then not detected on exactly the frame the cooldown runs out."""
    control = run(walk_out("stands_outside"))
    end_k = (control[1].time_ms - T0_MS) // 100
    seq = walk_out("stands_outside")
    seq[end_k] = None
    events = run(seq)
    assert [e.type for e in events] == ["start", "end"]
    assert (events[1].time_ms - T0_MS) // 100 == end_k
    assert events[1].attributes["reason"] == "left"
