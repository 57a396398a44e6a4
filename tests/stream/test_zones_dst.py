"""Schedules across daylight-saving changes: a window is a span of real time.

Its start is the first occurrence of an ambiguous local time (fall back), its end the
last; a start or end in the spring-forward gap is the moment of the change; an overnight
window belongs to the day it starts on. Times are injected (``wall_ms``), the zones are
real IANA zones (Europe/Berlin, America/Chicago) and, for ``tz: null``, the process's
own local zone set through ``TZ``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from edge.stream.events import ZoneEvent
from edge.stream.lines import LineCounter, LineSpec
from edge.stream.tracker import TRACK_IDS
from edge.stream.zones import Schedule, ZoneMonitor, ZoneSpec
from edge.types import Detections

BERLIN = "Europe/Berlin"
CHICAGO = "America/Chicago"


def ms(y: int, mo: int, d: int, h: int, mi: int = 0) -> int:
    """Unix ms of a UTC time."""
    return int(datetime(y, mo, d, h, mi, tzinfo=timezone.utc).timestamp() * 1000)


def sweep(sched: Schedule, tz: str, first: datetime, minutes: int) -> tuple[int, list[str]]:
    """Minute-by-minute: armed minutes and the arm/disarm transitions (local, with offset)."""
    z = ZoneInfo(tz)
    u0 = first.astimezone(timezone.utc)
    prev: bool | None = None
    on = 0
    out: list[str] = []
    for m in range(minutes):
        u = u0 + timedelta(minutes=m)
        a = sched.active_at(int(u.timestamp() * 1000))
        on += a
        if a != prev:
            out.append(f"{'ARM' if a else 'OFF'} {u.astimezone(z):%a %H:%M%z}")
            prev = a
    return on, out


def test_fall_back_first_occurrence_is_armed_through_the_repeated_hour() -> None:
    s = Schedule.parse(days="daily", hours=["02:30-06:00"], tz=BERLIN)
    # 2026-10-25: 03:00 CEST -> 02:00 CET at 01:00Z. 01:15Z is 02:15 CET (second pass),
    # after the window started at 02:30 CEST (00:30Z).
    assert s.active_at(ms(2026, 10, 25, 1, 15)) is True
    assert s.active_at(ms(2026, 10, 25, 0, 29)) is False  # 02:29 CEST: before the start
    assert s.active_at(ms(2026, 10, 25, 4, 59)) is True  # 05:59 CET
    assert s.active_at(ms(2026, 10, 25, 5, 0)) is False  # 06:00 CET: end is exclusive


@pytest.mark.parametrize(
    ("tz", "first", "hours", "armed", "transitions"),
    [
        # fall back: one window, 30 min (Berlin 02:30 CEST -> 06:00 CET) longer than the clock says
        (BERLIN, (2026, 10, 24), "02:30-06:00", 270, ["ARM Sun 02:30+0200", "OFF Sun 06:00+0100"]),
        (CHICAGO, (2026, 10, 31), "01:30-06:00", 330, ["ARM Sun 01:30-0500", "OFF Sun 06:00-0600"]),
        # a window ending in the repeated hour ends at its last occurrence, in one piece
        (BERLIN, (2026, 10, 24), "22:00-02:30", 330, ["ARM Sat 22:00+0200", "OFF Sun 02:30+0100"]),
        (CHICAGO, (2026, 10, 31), "22:00-01:30", 270, ["ARM Sat 22:00-0500", "OFF Sun 01:30-0600"]),
        # a window inside the repeated hour: from its first start to its last end
        (BERLIN, (2026, 10, 24), "02:15-02:45", 90, ["ARM Sun 02:15+0200", "OFF Sun 02:45+0100"]),
        # overnight across both changes: as the clock says, unchanged
        (BERLIN, (2026, 10, 24), "22:00-06:00", 540, ["ARM Sat 22:00+0200", "OFF Sun 06:00+0100"]),
        (BERLIN, (2026, 3, 28), "22:00-06:00", 420, ["ARM Sat 22:00+0100", "OFF Sun 06:00+0200"]),
        (CHICAGO, (2026, 10, 31), "22:00-06:00", 540, ["ARM Sat 22:00-0500", "OFF Sun 06:00-0600"]),
        (CHICAGO, (2026, 3, 7), "22:00-06:00", 420, ["ARM Sat 22:00-0600", "OFF Sun 06:00-0500"]),
        # spring gap: a start in the gap arms at the change (03:00), an end in it ends there
        (BERLIN, (2026, 3, 28), "02:30-06:00", 180, ["ARM Sun 03:00+0200", "OFF Sun 06:00+0200"]),
        (BERLIN, (2026, 3, 28), "22:00-02:30", 240, ["ARM Sat 22:00+0100", "OFF Sun 03:00+0200"]),
        (CHICAGO, (2026, 3, 7), "02:30-06:00", 180, ["ARM Sun 03:00-0500", "OFF Sun 06:00-0500"]),
        # a window wholly inside the gap is armed 0 minutes that day
        (BERLIN, (2026, 3, 28), "02:15-02:45", 0, []),
        # untouched by the change: as before
        (BERLIN, (2026, 3, 28), "01:30-06:00", 210, ["ARM Sun 01:30+0100", "OFF Sun 06:00+0200"]),
        (BERLIN, (2026, 10, 24), "01:30-06:00", 330, ["ARM Sun 01:30+0200", "OFF Sun 06:00+0100"]),
    ],
)
def test_dst_nights(
    tz: str,
    first: tuple[int, int, int],
    hours: str,
    armed: int,
    transitions: list[str],
) -> None:
    s = Schedule.parse(days="daily", hours=[hours], tz=tz)
    start = datetime(*first, 18, 0, tzinfo=ZoneInfo(tz))
    on, out = sweep(s, tz, start, 16 * 60)
    assert out[0].startswith("OFF Sat 18:00")
    assert (on, out[1:]) == (armed, transitions)


def test_overnight_window_belongs_to_the_day_it_starts_on() -> None:
    # Sunday night into Monday: mon-fri 22:00-06:00 is not armed (it starts on Sunday);
    # Friday night's window covers Saturday 03:00
    s = Schedule.parse(days="mon-fri", hours=["22:00-06:00"], tz=BERLIN)
    on, _ = sweep(s, BERLIN, datetime(2026, 10, 25, 18, 0, tzinfo=ZoneInfo(BERLIN)), 16 * 60)
    assert on == 0
    assert s.active_at(ms(2026, 10, 24, 1, 0)) is True  # Saturday 03:00 CEST
    assert s.active_at(ms(2026, 10, 26, 2, 0)) is False  # Monday 03:00 CET
    # a sat-only night across the fall-back change: the whole 9 h
    sat = Schedule.parse(days="sat", hours=["22:00-06:00"], tz=BERLIN)
    on, out = sweep(sat, BERLIN, datetime(2026, 10, 24, 18, 0, tzinfo=ZoneInfo(BERLIN)), 16 * 60)
    assert (on, out[1:]) == (540, ["ARM Sat 22:00+0200", "OFF Sun 06:00+0100"])


def test_all_day_schedule_across_changes() -> None:
    s = Schedule.parse(days="sun", tz=BERLIN)  # no hours: all of Sunday
    z = ZoneInfo(BERLIN)
    on, out = sweep(s, BERLIN, datetime(2026, 10, 24, 18, 0, tzinfo=z), 36 * 60)
    assert (on, out[1:]) == (25 * 60, ["ARM Sun 00:00+0200", "OFF Mon 00:00+0100"])


@pytest.fixture
def berlin_local() -> Iterator[None]:
    old = os.environ.get("TZ")
    os.environ["TZ"] = BERLIN
    time.tzset()
    try:
        yield
    finally:
        if old is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = old
        time.tzset()


@pytest.mark.usefixtures("berlin_local")
def test_local_zone_schedule_follows_the_same_rules() -> None:
    s = Schedule.parse(days="daily", hours=["02:30-06:00"])  # tz: null = the gateway's zone
    on, out = sweep(s, BERLIN, datetime(2026, 10, 24, 18, 0, tzinfo=ZoneInfo(BERLIN)), 16 * 60)
    assert (on, out[1:]) == (270, ["ARM Sun 02:30+0200", "OFF Sun 06:00+0100"])
    on, out = sweep(s, BERLIN, datetime(2026, 3, 28, 18, 0, tzinfo=ZoneInfo(BERLIN)), 16 * 60)
    assert (on, out[1:]) == (180, ["ARM Sun 03:00+0200", "OFF Sun 06:00+0200"])


# -- a zone over the fall-back night --------------------------------------------------
def person() -> Detections:
    return Detections(
        xyxy=np.array([[40, 0, 60, 50]], np.float32),
        scores=np.array([0.9], np.float32),
        class_ids=np.array([0], np.int32),
        data={TRACK_IDS: np.array([7], np.int64)},
    )


def night(tz: str, day: tuple[int, int, int], hours: str) -> list[ZoneEvent]:
    """A person in the zone from 00:00 to 07:00 local, a frame every 5 s."""
    mon = ZoneMonitor(
        ZoneSpec(
            name="z",
            polygon=((0, 0), (100, 0), (100, 100), (0, 100)),
            classes=("person",),
            min_dwell_s=10,
            cooldown_s=30,
            update_every_s=None,
            schedule=Schedule.parse(days="daily", hours=[hours], tz=tz),
        ),
        camera="c",
        task="t",
        class_names=("person",),
    )
    z = ZoneInfo(tz)
    t0 = datetime(*day, 0, 0, tzinfo=z).timestamp()
    t1 = datetime(*day, 7, 0, tzinfo=z).timestamp()
    events: list[ZoneEvent] = []
    k = 0
    while t0 + 5 * k < t1:
        events += mon.step(
            person(), t=5.0 * k, wall_ms=int((t0 + 5 * k) * 1000), frame_size=(640, 480)
        )
        k += 1
    events += mon.close(t=5.0 * k, wall_ms=int(t1 * 1000))
    return events


@pytest.mark.parametrize(
    ("tz", "day", "hours", "start_utc", "end_utc"),
    [
        (BERLIN, (2026, 10, 25), "02:30-06:00", (0, 30, 10), (5, 0, 0)),
        (CHICAGO, (2026, 11, 1), "01:30-06:00", (6, 30, 10), (12, 0, 0)),
    ],
)
def test_one_incident_over_the_fall_back_night(
    tz: str,
    day: tuple[int, int, int],
    hours: str,
    start_utc: tuple[int, int, int],
    end_utc: tuple[int, int, int],
) -> None:
    events = night(tz, day, hours)
    assert [e.type for e in events] == ["start", "end"]
    start, end = events
    assert start.time_ms == ms(*day, start_utc[0], start_utc[1]) + start_utc[2] * 1000
    assert end.time_ms == ms(*day, end_utc[0], end_utc[1])
    assert end.attributes["reason"] == "schedule"


def test_overnight_zone_incident_unchanged_across_fall_back() -> None:
    events = night(BERLIN, (2026, 10, 25), "22:00-06:00")
    assert [e.type for e in events] == ["start", "end"]
    assert events[1].time_ms == ms(2026, 10, 25, 5, 0)  # 06:00 CET
    assert events[1].attributes["dwell_s"] == 25195.0  # 00:00:10 CEST .. 06:00 CET - 5 s


def test_counting_line_counts_in_the_repeated_hour() -> None:
    """A line with the same schedule counts a crossing at 02:15 CET (second pass)."""
    spec = LineSpec(
        name="door",
        points=((50.0, 0.0), (50.0, 100.0)),
        classes=("person",),
        schedule=Schedule.parse(days="daily", hours=["02:30-06:00"], tz=BERLIN),
    )
    counter = LineCounter(spec, camera="c", task="t", class_names=("person",))
    events: list[ZoneEvent] = []
    t0 = ms(2026, 10, 25, 1, 14)  # 02:14 CET, the window opened at 02:30 CEST
    for k, x in enumerate((10.0, 20.0, 80.0, 90.0)):
        dets = Detections(
            xyxy=np.array([[x - 5, 40, x + 5, 60]], np.float32),
            scores=np.array([0.9], np.float32),
            class_ids=np.array([0], np.int32),
            data={TRACK_IDS: np.array([3], np.int64)},
        )
        events += counter.step(dets, t=float(k), wall_ms=t0 + 1000 * k, frame_size=(100, 100))
    assert counter.armed is True
    assert [e.type for e in events] == ["crossing"]
    assert sum(counter.counts.values()) == 1
