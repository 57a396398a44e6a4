"""Zone state machine: dwell, debounce/cooldown, updates, lost tracks, schedules.

Frames are simulated: a track is ``in`` (feet inside the square zone), ``out`` (detected
outside it) or ``gone`` (not detected) at each frame time. Times are passed in, so the
expected events are exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone

import numpy as np
import pytest

from edge.mqtt.ids import is_event_id
from edge.mqtt.schema import Event
from edge.stream.events import ZoneEvent
from edge.stream.tracker import TRACK_IDS
from edge.stream.zones import Schedule, TimeRange, ZoneMonitor, ZoneSpec
from edge.types import Detections

SQUARE = ((0.0, 0.0), (100.0, 0.0), (100.0, 100.0), (0.0, 100.0))
NAMES = ("person", "car", "no_hat", "helmet")
FRAME = (640, 480)
MONDAY_0800_UTC = int(datetime(2024, 6, 3, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)
IN_BOX = (40.0, 0.0, 60.0, 50.0)  # feet at (50, 50): inside
OUT_BOX = (240.0, 0.0, 260.0, 50.0)  # feet at (250, 50): outside


def tracked(
    boxes: Sequence[Sequence[float]],
    ids: Sequence[int],
    classes: Sequence[int] | None = None,
    scores: Sequence[float] | None = None,
) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.asarray(scores if scores is not None else [0.8] * n, np.float32),
        class_ids=np.asarray(classes if classes is not None else [0] * n, np.int32),
        data={TRACK_IDS: np.asarray(ids, np.int64)},
    )


def monitor(**spec: object) -> ZoneMonitor:
    kwargs: dict[str, object] = {"name": "gate", "polygon": SQUARE, "classes": ("person",)}
    kwargs.update(spec)
    return ZoneMonitor(
        ZoneSpec(**kwargs),  # type: ignore[arg-type]
        camera="cam1",
        task="fence",
        class_names=NAMES,
        model="person_vehicle",
    )


def run_timeline(mon: ZoneMonitor, timeline: str, dt: float = 0.5) -> list[ZoneEvent]:
    """``timeline``: one character per frame for track 7: ``I`` in, ``O`` out, ``.`` gone."""
    events: list[ZoneEvent] = []
    for k, c in enumerate(timeline):
        t = k * dt
        boxes = {"I": [IN_BOX], "O": [OUT_BOX], ".": []}[c]
        dets = tracked(boxes, [7] * len(boxes))
        events += mon.step(dets, t=t, wall_ms=MONDAY_0800_UTC + round(t * 1000), frame_size=FRAME)
    return events


def summary(events: Sequence[ZoneEvent]) -> list[tuple[str, float]]:
    return [(e.type, (e.time_ms - MONDAY_0800_UTC) / 1000) for e in events]


def check_incidents(events: Sequence[ZoneEvent]) -> None:
    """Every incident: one start, then updates, then one end, all tied to the start."""
    starts = {e.event_id: e for e in events if e.type == "start"}
    for e in events:
        if e.type != "start":
            assert e.start_event_id in starts
            start = starts[e.start_event_id]
            assert e.start_time_ms == start.time_ms <= e.time_ms
            assert e.track_id == start.track_id
    ends = [e.start_event_id for e in events if e.type == "end"]
    assert len(ends) == len(set(ends))


# min_dwell 2 s, cooldown 3 s, frames every 0.5 s: 'I' * 5 is 0.0..2.0 s inside.
CASES = [
    ("dwell shorter than the minimum", "IIII" + "O" * 10, {}, []),
    ("dwell exactly the minimum", "IIIII" + "O" * 10, {}, [("start", 2.0), ("end", 5.0)]),
    (
        "flicker out within the cooldown is one incident",
        "IIIIIIIIII" + "OOO" + "IIIIIIII" + "O" * 8,
        {},
        [("start", 2.0), ("end", 13.0)],
    ),
    (  # the dwell is time inside: seen outside before the start restarts it
        "seen outside during the dwell restarts the clock",
        "III" + "O" + "I" + "O" * 8,
        {},
        [],
    ),
    (
        "seen outside during the dwell, then a full dwell",
        "III" + "O" + "IIIII" + "O" * 8,
        {},
        [("start", 4.0), ("end", 7.0)],
    ),
    (
        "missed during the dwell does not restart the clock",
        "III" + "." + "I" + "O" * 8,
        {},
        [("start", 2.0), ("end", 5.0)],
    ),
    (
        "leave and come back after the cooldown: two incidents",
        "IIIIIIIII" + "O" * 7 + "IIIIIIIII" + "O" * 7,
        {},
        [("start", 2.0), ("end", 7.0), ("start", 10.0), ("end", 15.0)],
    ),
    (
        "lost track ends after the cooldown",
        "IIIIIIIII" + "." * 10,
        {},
        [("start", 2.0), ("end", 7.0)],
    ),
    (
        "updates at most every update_every_s",
        "I" * 22 + "O" * 7,
        {"update_every_s": 3.0},
        [("start", 2.0), ("update", 5.0), ("update", 8.0), ("end", 13.5)],
    ),
    (
        "no dwell, no cooldown",
        "OIIOOIO",
        {"min_dwell_s": 0.0, "cooldown_s": 0.0},
        [("start", 0.5), ("end", 1.5), ("start", 2.5), ("end", 3.0)],
    ),
    ("never inside", "O" * 20, {}, []),
]


@pytest.mark.parametrize(("name", "timeline", "spec", "expected"), CASES, ids=[c[0] for c in CASES])
def test_timeline(
    name: str, timeline: str, spec: dict[str, object], expected: list[tuple[str, float]]
) -> None:
    kwargs: dict[str, object] = {"min_dwell_s": 2.0, "cooldown_s": 3.0, "update_every_s": None}
    kwargs.update(spec)
    mon = monitor(**kwargs)
    events = run_timeline(mon, timeline)
    assert summary(events) == expected, name
    check_incidents(events)
    assert mon.open_incidents == 0


def test_event_contents_and_end_reasons() -> None:
    mon = monitor(min_dwell_s=1.0, cooldown_s=2.0, update_every_s=None)
    left = run_timeline(mon, "IIIIII" + "O" * 6)
    lost = run_timeline(monitor(min_dwell_s=1.0, cooldown_s=2.0), "IIIIII" + "." * 6)
    start, end = left
    assert start.type == "start" and is_event_id(start.event_id)
    assert (start.camera, start.task, start.zone, start.label) == (
        "cam1",
        "fence",
        "gate",
        "person",
    )
    assert start.box == IN_BOX and start.track_id == 7 and start.model == "person_vehicle"
    assert start.attributes == {"dwell_s": 1.0}
    assert start.start_event_id is None and start.start_time_ms is None
    assert end.box == IN_BOX  # the last box seen inside
    assert end.attributes == {
        "dwell_s": 2.5,
        "reason": "left",
        "last_inside_ms": MONDAY_0800_UTC + 2500,
    }
    assert lost[1].attributes["reason"] == "lost"
    # The MQTT layer's Event takes the same fields.
    payload = Event(**end.mqtt_fields()).to_payload("gw")
    assert payload["start_event_id"] == start.event_id and payload["type"] == "end"


def test_tracks_are_independent_and_classes_filter() -> None:
    mon = monitor(min_dwell_s=0.0, cooldown_s=1.0)
    dets = tracked([IN_BOX, IN_BOX, IN_BOX], [1, 2, 3], classes=[0, 1, 0])  # 2 is a car
    events = mon.step(dets, t=0.0, wall_ms=MONDAY_0800_UTC, frame_size=FRAME)
    assert sorted(e.track_id for e in events if e.type == "start") == [1, 3]
    assert mon.inside_count == 2 and mon.open_incidents == 2
    events = mon.step(
        tracked([IN_BOX], [3]), t=1.0, wall_ms=MONDAY_0800_UTC + 1000, frame_size=FRAME
    )
    assert [(e.type, e.track_id) for e in events] == [("end", 1)]
    closing = mon.close(t=2.0, wall_ms=MONDAY_0800_UTC + 2000)
    assert [(e.type, e.track_id, e.attributes["reason"]) for e in closing] == [
        ("end", 3, "shutdown")
    ]
    assert mon.open_incidents == 0


def test_all_classes_whole_frame_and_label_override() -> None:
    mon = ZoneMonitor(
        ZoneSpec(name="site", min_dwell_s=0.0, label="intruder"),
        camera="c",
        task="fence",
        class_names=NAMES,
    )
    events = mon.step(
        tracked([OUT_BOX, IN_BOX], [1, 2], classes=[1, 0]), t=0, wall_ms=0, frame_size=FRAME
    )
    assert [(e.track_id, e.label) for e in events] == [(1, "intruder"), (2, "intruder")]


def test_hardhat_violation_is_a_condition_per_track() -> None:
    """A person without a hard hat for at least K seconds, via the class of a head model,
    the same machine as an intrusion (whole frame, classes = bare-head classes)."""
    mon = ZoneMonitor(
        ZoneSpec(name="site", classes=("no_hat",), min_dwell_s=3.0, cooldown_s=2.0),
        camera="c",
        task="hardhat",
        class_names=NAMES,
    )
    no_hat, helmet = 2, 3
    # track 5 is bare-headed for 4 s, then puts a helmet on; track 6 wears one all along.
    events: list[ZoneEvent] = []
    for k in range(20):
        t = k * 0.5
        cls5 = no_hat if t < 4.0 else helmet
        dets = tracked([IN_BOX, OUT_BOX], [5, 6], classes=[cls5, helmet])
        events += mon.step(dets, t=t, wall_ms=round(t * 1000), frame_size=FRAME)
    assert [(e.type, e.track_id, e.label, e.time_ms) for e in events] == [
        ("start", 5, "no_hat", 3000),
        ("end", 5, "no_hat", 5500),
    ]
    assert events[1].attributes["reason"] == "left"


def test_extra_condition_predicate() -> None:
    flags = {"bad": True}

    def condition(dets: Detections) -> np.ndarray:  # type: ignore[type-arg]
        return np.full(len(dets), flags["bad"])

    mon = ZoneMonitor(
        ZoneSpec(name="z", polygon=SQUARE, min_dwell_s=0, cooldown_s=0),
        camera="c",
        task="workwear",
        class_names=NAMES,
        condition=condition,
    )
    a = mon.step(tracked([IN_BOX], [1]), t=0, wall_ms=0, frame_size=FRAME)
    flags["bad"] = False
    b = mon.step(tracked([IN_BOX], [1]), t=1, wall_ms=1000, frame_size=FRAME)
    assert [e.type for e in a + b] == ["start", "end"]


def test_anchor_modes_and_normalized_polygon() -> None:
    # A box whose centre is inside the square but whose feet are below it.
    tall = (40.0, 20.0, 60.0, 160.0)
    for anchor, expected in (("bottom_center", 0), ("center", 1), ("overlap", 1)):  # 57% inside
        mon = monitor(anchor=anchor, min_dwell_s=0.0)
        mon.step(tracked([tall], [1]), t=0, wall_ms=0, frame_size=FRAME)
        assert mon.inside_count == expected, anchor
    norm = ZoneSpec(
        name="n", polygon=((0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)), normalized=True, min_dwell_s=0
    )
    np.testing.assert_allclose(norm.polygon_px(640, 480), [[0, 0], [320, 0], [320, 240], [0, 240]])
    mon = ZoneMonitor(norm, camera="c", task="fence", class_names=NAMES)
    right_half = (400.0, 100.0, 420.0, 200.0)
    mon.step(tracked([IN_BOX, right_half], [1, 2]), t=0, wall_ms=0, frame_size=(640, 480))
    assert mon.inside_count == 1


def test_step_needs_track_ids_and_known_classes() -> None:
    mon = monitor()
    plain = Detections(
        xyxy=np.array([IN_BOX], np.float32), scores=np.ones(1, np.float32), class_ids=np.zeros(1)
    )
    with pytest.raises(ValueError, match="track_ids"):
        mon.step(plain, t=0, wall_ms=0, frame_size=FRAME)
    with pytest.raises(ValueError, match="not detected by the model"):
        monitor(classes=("forklift",))
    assert mon.step(Detections.empty(), t=0, wall_ms=0, frame_size=FRAME) == []


# -- schedules --------------------------------------------------------------------------
def utc_ms(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=timezone.utc).timestamp() * 1000)


@pytest.mark.parametrize(
    ("days", "hours", "when", "active"),
    [
        ("mon-fri", ["07:00-19:00"], (2024, 6, 3, 8), True),  # Monday 08:00
        ("mon-fri", ["07:00-19:00"], (2024, 6, 3, 19), False),  # end is exclusive
        ("mon-fri", ["07:00-19:00"], (2024, 6, 8, 8), False),  # Saturday
        ("weekdays", ["07:00-12:00", "13:00-19:00"], (2024, 6, 4, 12, 30), False),  # lunch
        ("sat,sun", [], (2024, 6, 9, 23, 59), True),  # Sunday, all day
        ("fri", ["22:00-06:00"], (2024, 6, 8, 5, 59), True),  # Saturday early: Friday's night
        ("fri", ["22:00-06:00"], (2024, 6, 8, 22, 0), False),  # Saturday night: not armed
        ("fri-mon", ["00:00-24:00"], (2024, 6, 9, 12), True),  # wrapping day range
        ("daily", ["00:00-24:00"], (2024, 6, 5, 0), True),
    ],
)
def test_schedule_table(days: str, hours: list[str], when: tuple[int, ...], active: bool) -> None:
    assert Schedule.parse(days=days, hours=hours, tz="UTC").active_at(utc_ms(*when)) is active


def test_schedule_time_zone() -> None:
    sched = Schedule.parse(days="mon-fri", hours=["07:00-19:00"], tz="Asia/Shanghai")  # UTC+8
    assert sched.active_at(utc_ms(2024, 6, 3, 0)) is True  # 08:00 in Shanghai
    assert sched.active_at(utc_ms(2024, 6, 3, 12)) is False  # 20:00 in Shanghai


@pytest.mark.parametrize(
    "bad",
    [
        {"days": "funday"},
        {"hours": ["7-19"]},
        {"hours": ["25:00-26:00"]},
        {"hours": ["08:00-08:00"]},
        {"tz": "Mars/Olympus"},
    ],
)
def test_schedule_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Schedule.parse(**bad)  # type: ignore[arg-type]


def test_schedule_close_ends_open_incidents_and_blocks_events() -> None:
    sched = Schedule(ranges=(TimeRange.parse("08:00-08:01"),), tz="UTC")
    mon = monitor(min_dwell_s=10.0, cooldown_s=5.0, update_every_s=None, schedule=sched)
    events: list[ZoneEvent] = []
    for k in range(0, 120, 2):  # 08:00:00 .. 08:01:58, always inside
        events += mon.step(
            tracked([IN_BOX], [1]), t=float(k), wall_ms=MONDAY_0800_UTC + k * 1000, frame_size=FRAME
        )
    assert [(e.type, (e.time_ms - MONDAY_0800_UTC) // 1000) for e in events] == [
        ("start", 10),
        ("end", 60),
    ]
    assert events[1].attributes["reason"] == "schedule"
    assert mon.armed is False and mon.open_incidents == 0


@pytest.mark.parametrize(
    "bad",
    [
        {"name": ""},
        {"polygon": ((0, 0), (1, 1))},
        {"polygon": ((0, 0), (1, 1), (2, 2))},  # zero area
        {"polygon": ((0, 0), (10, 10), (10, 0), (0, 10))},  # self-intersecting bow tie
        {"polygon": ((0, 0), (2, 0), (0, 2)), "normalized": True},
        {"polygon": ((0, 0), (float("nan"), 0), (0, 2))},
        {"min_dwell_s": -1.0},
        {"cooldown_s": float("inf")},
        {"update_every_s": 0.0},
        {"anchor": "top"},
        {"overlap_threshold": 0.0},
    ],
)
def test_zone_spec_rejects(bad: dict[str, object]) -> None:
    kwargs: dict[str, object] = {"name": "z", "polygon": SQUARE}
    kwargs.update(bad)
    with pytest.raises(ValueError):
        ZoneSpec(**kwargs)  # type: ignore[arg-type]
