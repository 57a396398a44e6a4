"""Counting lines: one event per crossing, per direction, from tracked detections.

Tracks are simulated as foot positions per frame (boxes 20 x 40 px standing on them), so
the expected events are exact; the line ``UP`` is drawn upwards at x = 100, so walking
right is ``in`` and walking left ``out``. The crossing events also go through the real
events table (schema migration included) and a real mosquitto (retained state topic).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.mqtt.ids import is_event_id
from edge.mqtt.outbox import Message, Outbox, OutboxFullError
from edge.mqtt.schema import Event, state_payload
from edge.stream.events import _MIGRATIONS, EventStore, ZoneEvent
from edge.stream.evidence import verify_evidence
from edge.stream.lines import LineCounter, LineSpec
from edge.stream.pipeline import TaskSpec
from edge.stream.tracker import TRACK_IDS
from edge.stream.zones import Schedule, ZoneSpec
from edge.types import Detections

NAMES = ("person", "car")
FRAME = (640, 480)
UP = ((100.0, 200.0), (100.0, 0.0))
T0_MS = int(datetime(2024, 6, 3, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)  # Mon 08:00Z
DT = 0.3

Foot = tuple[float, float] | float | None
"""A track's foot on one frame: ``(x, y)``, just ``x`` (y = 100), or ``None`` (not seen)."""


def dets_of(feet: dict[int, tuple[float, float]], classes: dict[int, int]) -> Detections:
    ids = sorted(feet)
    boxes = [(feet[i][0] - 10, feet[i][1] - 40, feet[i][0] + 10, feet[i][1]) for i in ids]
    n = len(ids)
    return Detections(
        xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.full((n,), 0.8, np.float32),
        class_ids=np.asarray([classes.get(i, 0) for i in ids], np.int32),
        data={TRACK_IDS: np.asarray(ids, np.int64)},
    )


def counter(**spec: object) -> LineCounter:
    kwargs: dict[str, object] = {"name": "gate", "points": UP, "classes": ("person",)}
    kwargs.update(spec)
    forget = float(kwargs.pop("forget_after_s", 2.0))  # type: ignore[arg-type]
    return LineCounter(
        LineSpec(**kwargs),  # type: ignore[arg-type]
        camera="cam1",
        task="fence",
        class_names=NAMES,
        model="person_vehicle",
        forget_after_s=forget,
    )


def run(
    ctr: LineCounter, tracks: dict[int, Sequence[Foot]], classes: dict[int, int] | None = None
) -> list[tuple[int, int, str]]:
    """Step through the frames; returns ``(frame, track, direction)`` per event."""
    out: list[tuple[int, int, str]] = []
    frames = max(len(v) for v in tracks.values())
    for k in range(frames):
        feet: dict[int, tuple[float, float]] = {}
        for tid, seq in tracks.items():
            f = seq[k] if k < len(seq) else None
            if f is not None:
                feet[tid] = (float(f), 100.0) if isinstance(f, (int, float)) else f
        t = k * DT
        evs = ctr.step(
            dets_of(feet, classes or {}),
            t=t,
            wall_ms=T0_MS + round(t * 1000),
            frame_size=FRAME,
        )
        for e in evs:
            assert e.type == "crossing" and e.zone == ctr.spec.name
            out.append((k, int(e.track_id or 0), str(e.attributes["direction"])))
    return out


N = None
CASES: dict[str, tuple[dict[int, Sequence[Foot]], list[tuple[int, int, str]]]] = {
    "walks right: in, once, when 10 px past": ({1: [50, 80, 105, 115, 140, 170]}, [(3, 1, "in")]),
    "walks left: out": ({1: [160, 120, 95, 70, 40]}, [(3, 1, "out")]),
    "one big step across": ({1: [20, 180]}, [(1, 1, "in")]),
    "jitter on the line: nothing": ({1: [60, 95, 104, 97, 106, 98, 103, 96, 104, 99]}, []),
    "jitter, then through: one": ({1: [60, 95, 104, 97, 106, 98, 103, 130]}, [(7, 1, "in")]),
    "jitter and back where it came from": ({1: [60, 95, 105, 95, 105, 95, 60]}, []),
    "touches the line from the left": ({1: [60, 80, 100, 100, 80, 60]}, []),
    "touches the line from the right": ({1: [140, 120, 100, 100, 120, 140]}, []),
    "stands on the line, then goes on": ({1: [60, 100, 100, 100, 100, 140]}, [(5, 1, "in")]),
    "in, then out again: two": ({1: [60, 130, 130, 70]}, [(1, 1, "in"), (3, 1, "out")]),
    "10 px past is not enough": ({1: [60, 90, 110, 110, 110]}, []),
    "past the end of the line: nothing": ({1: [(60, 210), (140, 210)]}, []),
    "just inside the end: counts": ({1: [(60, 199), (140, 199)]}, [(1, 1, "in")]),
    "through the top end point exactly": ({1: [(60, -20), (140, 20)]}, []),
    "through the bottom end point exactly": ({1: [(60, 180), (140, 220)]}, [(1, 1, "in")]),
    "crosses near the end, goes round it back": (
        {1: [(95, 3), (103, 3), (103, -5), (97, -5), (80, 3)]},
        [],
    ),
    "two tracks cross at once, both ways": (
        {1: [50, 80, 130], 2: [150, 120, 70]},
        [(2, 1, "in"), (2, 2, "out")],
    ),
    "lost across the line, back with its id": ({1: [60, 80, N, N, 130]}, [(4, 1, "in")]),
    "lost longer than forget_after_s: forgotten": (
        {1: [60, 80, N, N, N, N, N, N, N, 130, 140, 60]},
        [(11, 1, "out")],
    ),
    "back with a new id: the gap is not counted": (
        {1: [60, 80], 2: [N, N, 130, 70]},
        [(3, 2, "out")],
    ),
    "crossed, lost within 10 px: dropped": ({1: [60, 90, 105]}, []),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_crossings(name: str) -> None:
    tracks, want = CASES[name]
    ctr = counter(min_displacement_px=10.0)
    got = run(ctr, tracks)
    assert got == want
    ins = sum(1 for _, _, d in want if d == "in")
    assert ctr.counts == {"in": ins, "out": len(want) - ins}


def test_pending_crossing_is_dropped_when_the_track_is_forgotten() -> None:
    ctr = counter(forget_after_s=1.0)
    assert run(ctr, {1: [60, 90, 105]}) == []
    assert ctr.pending == 1
    ctr.step(Detections.empty([TRACK_IDS]), t=10.0, wall_ms=T0_MS + 10_000, frame_size=FRAME)
    assert ctr.pending == 0 and ctr.counts == {"in": 0, "out": 0}


def test_without_hysteresis_jitter_counts_every_time() -> None:
    """Why the margin exists: at 0 every jitter across is a crossing."""
    jitter = {1: [60, 95, 104, 97, 106, 98, 103, 96]}
    no_margin = counter(min_displacement_px=0.0, min_displacement_frac=0.0)
    assert len(run(no_margin, jitter)) == 6
    assert run(counter(min_displacement_px=10.0), jitter) == []


# -- polylines -------------------------------------------------------------------------
BENT = ((0.0, 300.0), (100.0, 300.0), (200.0, 200.0), (200.0, 0.0))
"""Drawn left to right then up: below / right of it is the ``in`` side."""


@pytest.mark.parametrize(
    ("feet", "want"),
    [
        ([(50, 250), (50, 350)], [(1, "in")]),  # through the first segment, downwards
        ([(180, 300), (120, 200)], [(1, "out")]),  # through the diagonal, up-left
        ([(250, 100), (150, 100)], [(1, "out")]),  # through the vertical part, leftwards
        ([(100, 250), (100, 350)], [(1, "in")]),  # exactly through a vertex: once
        ([(50, 200), (150, 400)], [(1, "in")]),  # through (100, 300): once
        ([(150, 50), (190, 50), (150, 50)], []),  # up to it and back
        ([(250, 350), (50, 250)], [(1, "out")]),  # from below-right: the diagonal, once
    ],
)
def test_polyline(feet: list[tuple[float, float]], want: list[tuple[int, str]]) -> None:
    ctr = counter(points=BENT)
    got = run(ctr, {5: feet})
    assert [(k, d) for k, _, d in got] == want


def test_polyline_crossed_twice_in_one_movement_counts_the_net() -> None:
    """A movement through a V (into it and out of it again) changes no side: nothing."""
    vee = ((0.0, 0.0), (100.0, 200.0), (200.0, 0.0))
    assert run(counter(points=vee, min_displacement_px=5.0), {1: [(20, 100), (180, 100)]}) == []
    # up through its tip: one crossing, into the V (its left side)
    assert run(counter(points=vee), {2: [(100, 300), (100, 20)]}) == [(1, 2, "out")]


# -- classes, schedule, coordinates, event contents --------------------------------------
def test_only_the_line_classes_count() -> None:
    ctr = counter(classes=("person",))
    got = run(ctr, {1: [60, 140], 2: [60, 140]}, classes={1: 0, 2: 1})
    assert got == [(1, 1, "in")]
    everything = counter(classes=())
    assert len(run(everything, {1: [60, 140], 2: [60, 140]}, classes={1: 0, 2: 1})) == 2


def test_schedule_off_counts_nothing_and_forgets_tracks() -> None:
    # armed 08:00-08:00:01 on Mondays only (the frames start Monday 08:00:00 UTC)
    sched = Schedule.parse(days="mon", hours=["08:00-08:01"], tz="UTC")
    ctr = counter(schedule=sched)
    assert run(ctr, {1: [60, 140]}) == [(1, 1, "in")] and ctr.armed is True
    off = counter(schedule=Schedule.parse(days="tue", tz="UTC"))
    assert run(off, {1: [60, 140]}) == [] and off.armed is False


def test_normalized_points_scale_with_the_frame() -> None:
    ctr = counter(points=((0.5, 1.0), (0.5, 0.0)), normalized=True)  # x = 320 of 640
    assert run(ctr, {1: [300, 340], 2: [60, 140]}) == [(1, 1, "in")]
    np.testing.assert_array_equal(ctr.line_for(640, 480), [[320, 480], [320, 0]])


def test_pixel_line_follows_a_frame_size_change(caplog: pytest.LogCaptureFixture) -> None:
    """As pixel zones do: a pixel line belongs to the first frame that needed it and is
    scaled by the width and height ratios when the camera delivers another size, with
    one WARNING per change; a line reaching outside the first frame is a WARNING too;
    normalised lines just follow the frame, silently."""
    ctr = counter()  # UP, x = 100, for 640x480
    with caplog.at_level(logging.WARNING, logger="edge.stream.lines"):
        big = ctr.line_for(640, 480).copy()
        ctr.line_for(640, 480)
        small = ctr.line_for(320, 240).copy()
        ctr.line_for(320, 240)
        back = ctr.line_for(640, 480)
    np.testing.assert_array_equal(small, big / 2)
    np.testing.assert_array_equal(back, big)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1, msgs
    assert "line 'gate'" in msgs[0] and "from 640x480 to 320x240" in msgs[0]
    assert "pixel line scaled by (0.500, 0.500)" in msgs[0]
    caplog.clear()
    wide = counter(points=((0.0, 700.0), (1280.0, 700.0)))
    with caplog.at_level(logging.WARNING, logger="edge.stream.lines"):
        wide.line_for(640, 360)
        wide.line_for(640, 360)
    msgs = [r.getMessage() for r in caplog.records]
    assert len(msgs) == 1 and "outside the 640x360 frame" in msgs[0], msgs
    caplog.clear()
    norm = counter(points=((0.5, 1.0), (0.5, 0.0)), normalized=True)
    with caplog.at_level(logging.WARNING, logger="edge.stream.lines"):
        a = norm.line_for(640, 480).copy()
        b = norm.line_for(320, 240)
    np.testing.assert_array_equal(b, a / 2)
    assert caplog.records == []


def test_a_moved_pixel_line_belongs_to_the_next_frame_size() -> None:
    ctr = counter()
    ctr.line_for(640, 480)
    ctr.set_points(((50.0, 200.0), (50.0, 0.0)), normalized=False)  # drawn on 320x240
    np.testing.assert_array_equal(ctr.line_for(320, 240), [[50, 200], [50, 0]])
    np.testing.assert_array_equal(ctr.line_for(640, 480), [[100, 400], [100, 0]])


def test_event_contents_and_counts() -> None:
    ctr = counter(label="visitor")
    evs: list[ZoneEvent] = []
    for k, x in enumerate([60, 140, 60, 140]):
        t = k * DT
        evs += ctr.step(
            dets_of({9: (x, 100)}, {}), t=t, wall_ms=T0_MS + k, frame_size=FRAME, mono_s=5.0
        )
    assert [e.attributes["direction"] for e in evs] == ["in", "out", "in"]
    assert [e.attributes["count"] for e in evs] == [1, 1, 2]
    e = evs[0]
    assert e.type == "crossing" and e.zone == "gate" and e.attributes["line"] == "gate"
    assert e.label == "visitor" and e.track_id == 9 and e.camera == "cam1" and e.task == "fence"
    assert e.box == (130.0, 60.0, 150.0, 100.0) and e.time_ms == T0_MS + 1 and e.mono_s == 5.0
    assert e.start_event_id is None and e.start_time_ms is None and is_event_id(e.event_id)
    assert e.model == "person_vehicle" and e.score == pytest.approx(0.8)
    payload = Event(**e.mqtt_fields()).to_payload("gw")
    assert payload["type"] == "crossing" and payload["attributes"]["direction"] == "in"
    assert ctr.counts == {"in": 2, "out": 1}
    ctr.reset_counts()
    assert ctr.counts == {"in": 0, "out": 0}
    assert ctr.close() == [] and ctr.pending == 0


def test_step_needs_track_ids_and_known_classes() -> None:
    plain = Detections(
        xyxy=np.zeros((1, 4), np.float32),
        scores=np.ones((1,), np.float32),
        class_ids=np.zeros((1,), np.int32),
    )
    with pytest.raises(ValueError, match="track_ids"):
        counter().step(plain, t=0.0, wall_ms=T0_MS, frame_size=FRAME)
    with pytest.raises(ValueError, match="not detected by the model"):
        counter(classes=("bus",))
    assert counter().step(Detections.empty(), t=0.0, wall_ms=T0_MS, frame_size=FRAME) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"name": " "}, "non-empty"),
        ({"points": ((0, 0),)}, "at least 2 distinct"),
        ({"points": ((0, 0), (0, 0))}, "at least 2 distinct"),
        ({"points": ((0, 0), (10, 0), (10, 10), (5, -5))}, "crosses or touches itself"),
        ({"points": ((0, 0), (float("nan"), 1))}, "finite"),
        ({"points": ((0, 0), (2, 1)), "normalized": True}, "within|in \\[0, 1\\]"),
        ({"anchor": "overlap"}, "unknown anchor"),
        ({"min_displacement_px": -1.0}, "min_displacement_px"),
        ({"min_displacement_px": float("inf")}, "min_displacement_px"),
    ],
)
def test_line_spec_refuses(kwargs: dict[str, object], message: str) -> None:
    spec: dict[str, object] = {"name": "gate", "points": UP}
    spec.update(kwargs)
    with pytest.raises(ValueError, match=message):
        LineSpec(**spec)  # type: ignore[arg-type]


def test_task_spec_takes_lines_and_keeps_names_unique() -> None:
    line = LineSpec(name="gate", points=UP)
    assert TaskSpec(name="fence", zones=(), lines=(line,)).lines == (line,)
    with pytest.raises(ValueError, match="at least one zone or line"):
        TaskSpec(name="fence", zones=())
    with pytest.raises(ValueError, match="unique"):
        TaskSpec(name="fence", zones=(ZoneSpec(name="gate"),), lines=(line,))


# -- events table, outbox, state topic ----------------------------------------------------
def crossing(i: int, direction: str = "in") -> ZoneEvent:
    return ZoneEvent(
        event_id=f"01HZX3J4E8Q6W2T4V9K0M5N{i:03d}",
        type="crossing",
        camera="cam1",
        task="fence",
        zone="gate",
        label="person",
        score=0.8,
        box=(1.0, 2.0, 3.0, 4.0),
        track_id=i,
        time_ms=T0_MS + i,
        attributes={"line": "gate", "direction": direction, "count": i},
    )


def zone_event(i: int) -> ZoneEvent:
    return ZoneEvent(
        event_id=f"01HZX3J4E8Q6W2T4V9K0M5Z{i:03d}",
        type="start",
        camera="cam1",
        task="fence",
        zone="yard",
        label="person",
        score=0.7,
        box=(1.0, 2.0, 3.0, 4.0),
        track_id=i,
        time_ms=T0_MS - 1000 + i,
    )


def test_events_table_stores_crossings_and_migrates_a_chained_v2_file(tmp_path: Path) -> None:
    """A database written before crossings existed (schema 2: hash chain, type CHECK of
    start/update/end) opens, is rebuilt with the wider CHECK, keeps every row and its
    chain intact, and then takes crossing events."""
    db = tmp_path / "events.sqlite3"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN")
    for sql in str(_MIGRATIONS[0]).split(";"):
        if sql.strip():
            conn.execute(sql)
    step2 = _MIGRATIONS[1]
    assert callable(step2)
    step2(conn)
    conn.execute("PRAGMA user_version = 2")
    conn.execute("COMMIT")
    conn.execute("BEGIN IMMEDIATE")
    assert EventStore._append(conn, [zone_event(i) for i in range(5)]) == 5
    conn.execute("COMMIT")
    with pytest.raises(sqlite3.IntegrityError, match="CHECK"):
        conn.execute("BEGIN IMMEDIATE")
        try:
            EventStore._append(conn, [crossing(1)])
        finally:
            conn.execute("ROLLBACK")
    conn.close()

    with EventStore(path=db) as store:
        assert [e.event_id for e in store.list_events(limit=10)][::-1] == [
            zone_event(i).event_id for i in range(5)
        ]
        assert store.add_many([crossing(1), crossing(2, "out")]) == 2
        got = store.list_events(type="crossing")
        assert [(e.type, e.attributes["direction"]) for e in got] == [
            ("crossing", "out"),
            ("crossing", "in"),
        ]
        assert store.get(crossing(1).event_id) == crossing(1)
        assert store.counts() == {"start": 5, "update": 0, "end": 0, "crossing": 2}
    conn = sqlite3.connect(db, isolation_level=None)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS) == 4
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"events_time", "events_camera_time", "events_task_time", "events_seq"} <= names
    report = verify_evidence(conn, snapshots_root=None)
    conn.close()
    assert report.first is None and report.rows == 7


def test_outbox_never_drops_crossings(tmp_path: Path) -> None:
    """Only ``update`` rows make room; a full outbox of crossings refuses new ones."""
    with Outbox(path=tmp_path / "o.db", max_rows=3) as box:

        def msg(i: int, kind: str) -> Message:
            return Message(key=f"k{i}", kind=kind, topic="t", payload=b"x", qos=1)  # type: ignore[arg-type]

        box.append([msg(0, "update"), msg(1, "crossing"), msg(2, "crossing")])
        assert box.append([msg(3, "crossing")]).dropped == 1  # the update went
        with pytest.raises(OutboxFullError):
            box.append([msg(4, "crossing")])
        assert box.rows == 3


def test_state_payload_lines() -> None:
    st = state_payload(
        gateway="gw",
        camera="c",
        task="fence",
        counts={"yard": 1},
        t_ms=0,
        lines={"gate": {"in": 3, "out": 2}},
    )
    assert st["lines"] == {"gate": {"in": 3, "out": 2}} and st["total"] == 1
    assert state_payload(gateway="gw", camera="c", task="t", counts={}, t_ms=0)["lines"] == {}
    with pytest.raises(ValueError, match="exactly"):
        state_payload(gateway="gw", camera="c", task="t", counts={}, t_ms=0, lines={"g": {"in": 1}})
    with pytest.raises(ValueError, match=">= 0"):
        state_payload(
            gateway="gw", camera="c", task="t", counts={}, t_ms=0, lines={"g": {"in": -1, "out": 0}}
        )


def test_home_assistant_sensors_read_the_line_counts() -> None:
    """Two ``total_increasing`` sensors per line; their templates render (with Jinja2, as
    Home Assistant does) against the real state payload, and give 0 before any count."""
    from edge.mqtt.discovery import discovery_messages
    from edge.mqtt.schema import CameraTask
    from edge.mqtt.topics import Topics

    jinja2 = pytest.importorskip("jinja2")
    cams = [CameraTask("gate", "fence", ("yard",), ("door 1",))]
    msgs = discovery_messages(
        topics=Topics("safety-edge", "gw-1"), ha_prefix="homeassistant", cameras=cams, version="9"
    )
    sensors = {m.topic: m.payload for m in msgs if "crossings" in m.topic}
    assert list(sensors) == [
        "homeassistant/sensor/gw-1/gate_fence_door_1_crossings_in/config",
        "homeassistant/sensor/gw-1/gate_fence_door_1_crossings_out/config",
    ]
    assert len({m.payload["unique_id"] for m in msgs}) == len(msgs) == 4
    env = jinja2.Environment()
    state = state_payload(
        gateway="gw-1",
        camera="gate",
        task="fence",
        counts={"yard": 0},
        t_ms=0,
        lines={"door 1": {"in": 7, "out": 5}},
    )
    empty = state_payload(gateway="gw-1", camera="gate", task="fence", counts={}, t_ms=0)
    got = []
    for p in sensors.values():
        assert p["state_class"] == "total_increasing"
        assert p["state_topic"] == "safety-edge/gw-1/gate/fence/state"
        tpl = env.from_string(p["value_template"])
        got.append((tpl.render(value_json=state).strip(), tpl.render(value_json=empty).strip()))
    assert got == [("7", "0"), ("5", "0")]
