"""Zone rules: per-(zone, track) state that turns per-frame detections into incidents.

A :class:`ZoneMonitor` watches one zone (a polygon, or the whole frame) for tracks that
satisfy its condition: the track's class is one of the zone's ``classes``, its anchor
lies in the polygon and, optionally, a per-detection predicate holds (e.g. "this head
has no hard hat"). Intrusion, hard-hat and workwear violations are all this one
machine with different classes and predicates.

Behaviour, per track (times are the frame times passed in, never read from a clock):

- **edge margin** (hysteresis): a detector's boxes jitter from frame to frame in
  proportion to their size (a standing person's feet: typically 3 %, often 6 % of the
  box height), so an anchor near the polygon's edge hops across it. The margin is
  ``edge_margin_frac`` (default 0.05) times the box height on that frame. A track
  *enters* (its dwell clock starts) only on a frame its anchor is inside the polygon
  by at least the margin; once its incident is open it counts as inside until its
  anchor is outside by more than the margin. Before the start, any frame seen outside
  ends the stay (see dwell): entering is strict and leaving eager, so an anchor that
  hovers at the edge does not start an incident; once open, leaving needs clear
  evidence, so it does not end and restart. ``anchor="overlap"`` zones and whole-frame
  zones have no margin (the plain test).
- **dwell**: ``start`` fires on the first frame inside at which the track has been
  inside for at least ``min_dwell_s`` *without being seen outside the polygon*: a
  frame on which the track is detected with its anchor outside (by any distance)
  before its incident has started drops it, and its dwell clock starts again at its
  next entry. Frames without a detection of the track, or on which the condition
  does not hold (a hard hat seen for a moment), do not restart the clock (up to
  ``cooldown_s`` of them). So a person standing just outside the zone, whose feet
  jitter over the edge, raises nothing; a track that leaves before ``min_dwell_s``
  raises nothing. Events' ``attributes["dwell_s"]`` is the last frame counted inside
  minus that entry (gaps of missed detections, and after the start flickers within the
  cooldown, included).
- **debounce / cooldown**: once a track has been inside, it must be *not inside*
  (outside the polygon -- an open incident: by more than the margin --, or not
  detected at all) for ``cooldown_s`` before its state is dropped. Short flickers (the
  box edge crossing the polygon, a missed detection) do not end an incident.
- **end**: an open incident ends on the first frame at which the track has not been
  inside for ``cooldown_s``; ``attributes["reason"]`` is ``"left"`` (the track was
  detected and not inside on some frame since its last frame inside -- whether or not it
  is detected on the frame the cooldown runs out), ``"lost"`` (not detected at all since
  its last frame inside), ``"schedule"`` or ``"shutdown"``.
- **update**: while an incident is open and the track is inside, at most one ``update``
  every ``update_every_s`` (``None``: no updates).
- **schedule**: outside the zone's active schedule nothing is tracked and no event is
  raised; when the schedule closes, open incidents end (reason ``"schedule"``). While the
  wall clock is not trusted (:meth:`ZoneMonitor.trust_wall_clock`, set by the gateway's
  clock check) a scheduled zone is armed at all hours: fail-safe, an event at night is
  better than none during a shift the clock does not know it is in.
  Each range is a span of real time (:class:`Schedule`: across a daylight-saving change
  it starts at the first occurrence of its start time and ends at the last occurrence of
  its end time), so a change of the clock at night neither disarms a zone for the
  repeated hour nor splits one incident in two.
- **acknowledgement**: :meth:`ZoneMonitor.acknowledge` (a control room's ``ack``, from
  another thread) marks an open incident: it raises no more ``update`` events, and its
  ``end`` carries ``attributes["ack"]``. The check and the end are ordered by a lock, so
  an acknowledgement reported as taken is always in the ``end`` event.

So one incident gives exactly one ``start`` and one ``end`` (plus bounded ``update``s);
a track that leaves and comes back after the cooldown makes a second incident.
All zone tests of a frame are one vectorized call over all anchors
(:func:`edge.tasks.fence.inside_mask`).

Not thread-safe: one monitor per camera, task and zone, stepped from one thread
(:meth:`ZoneMonitor.acknowledge`, :meth:`ZoneMonitor.set_polygon` and
:meth:`ZoneMonitor.trust_wall_clock` excepted).
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as dtime
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import numpy.typing as npt

from edge.errors import AreaError
from edge.kernels.geometry import box_anchors, point_polyline_distance, validate_polygon
from edge.mqtt.ids import new_event_id
from edge.stream.events import AttributeValue, EventType, ZoneEvent, resolve_local
from edge.stream.tracker import TRACK_IDS
from edge.tasks.fence import AnchorMode, inside_mask
from edge.types import BoolArray, Detections

__all__ = [
    "Condition",
    "Explain",
    "Schedule",
    "TimeRange",
    "ZoneMonitor",
    "ZoneSpec",
    "fit_pixel_points",
]

EndReason = Literal["left", "lost", "schedule", "shutdown"]
AckResult = Literal["acked", "already", "not_open"]
AckSummary = Mapping[str, str | int | float | bool | None]
"""What goes into ``attributes["ack"]`` of the ``end`` event (``by``, ``at``, ...)."""
Condition = Callable[[Detections], BoolArray]
"""Per-detection predicate: (N,) bool for a frame's tracked detections."""
Explain = Callable[[Detections, int], Mapping[str, AttributeValue]]
"""Event attributes for detection ``i`` of a frame's tracked detections (e.g. the hard-hat
task's ``compliance``, ``compliance_reason``, ``classname`` and ``rule``)."""

log = logging.getLogger("edge.stream.zones")

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_S = 86_400


def fit_pixel_points(
    points: npt.NDArray[np.float64],
    drawn_for: tuple[int, int] | None,
    size: tuple[int, int],
    *,
    where: str,
    what: str,
    redraw: str,
    logger: logging.Logger,
) -> tuple[tuple[int, int], npt.NDArray[np.float64]]:
    """Pixel coordinates (a zone's polygon, a counting line) fitted to a ``size`` frame.

    Pixel shapes belong to the (width, height) of the first frame that needed them:
    ``drawn_for`` (``None``: this is that frame). On the first frame, the points are
    kept and a WARNING says so when they reach outside it (drawn for another
    resolution?). On a frame of another size than ``drawn_for`` (a camera back from a
    reconnect at 320x240 instead of 640x480), they are scaled by the width and height
    ratios, with a WARNING (its caller caches per size: one per change), which also says
    when the aspect ratio changed (a camera that now crops rather than scales needs the
    shape redrawn). Normalised shapes never come here.

    Args:
        points: (M, 2) float64 pixel vertices as drawn.
        drawn_for: the frame size they belong to, or ``None``.
        size: this frame's (width, height).
        where: who logs (``"camera c task t zone 'z'"``).
        what, redraw: the shape and the thing to redraw, in the messages
            (``"polygon"``, ``"zone"``).
        logger: where the WARNINGs go.

    Returns:
        The frame size the points belong to (``drawn_for``, or ``size`` on the first
        frame) and the (M, 2) float64 points in pixels of ``size`` (``points`` itself
        when unscaled).
    """
    if drawn_for is None:
        hi = points.max(axis=0)
        if (points < 0).any() or hi[0] > size[0] * 1.01 or hi[1] > size[1] * 1.01:
            logger.warning(
                "%s: pixel %s reaches (%.0f, %.0f), outside the %dx%d frame (drawn "
                "for another resolution?); objects outside the frame never count",
                where, what, hi[0], hi[1], size[0], size[1],
            )  # fmt: skip
        return size, points
    (rw, rh) = drawn_for
    if size == (rw, rh):
        return drawn_for, points
    sx, sy = size[0] / rw, size[1] / rh
    aspect = "" if math.isclose(sx, sy, rel_tol=0.01) else (
        "; the aspect ratio changed: if the camera now crops rather than scales, "
        f"redraw the {redraw}"
    )  # fmt: skip
    logger.warning(
        "%s: frame size changed from %dx%d to %dx%d; pixel %s scaled by "
        "(%.3f, %.3f) to the new size%s",
        where, rw, rh, size[0], size[1], what, sx, sy, aspect,
    )  # fmt: skip
    return drawn_for, points * np.array([sx, sy], dtype=np.float64)


# -- schedules ------------------------------------------------------------------------
def _parse_hhmm(text: str) -> int:
    m = re.fullmatch(r"\s*(\d{1,2}):(\d{2})(?::(\d{2}))?\s*", text)
    if not m:
        raise ValueError(f"time {text!r} is not HH:MM or HH:MM:SS")
    h, mi, s = int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    if mi > 59 or s > 59 or h > 24 or (h == 24 and (mi or s)):
        raise ValueError(f"time {text!r} is out of range (00:00 to 24:00)")
    return h * 3600 + mi * 60 + s


@dataclass(frozen=True, slots=True)
class TimeRange:
    """Seconds since local midnight, ``[start_s, end_s)``. ``end_s < start_s`` runs over
    midnight into the next day (``22:00-06:00``); ``end_s == 86400`` is ``24:00``."""

    start_s: int
    end_s: int

    def __post_init__(self) -> None:
        if not (0 <= self.start_s < _DAY_S and 0 <= self.end_s <= _DAY_S):
            raise ValueError(f"time range {self.start_s}-{self.end_s} s is out of range")
        if self.start_s == self.end_s:
            raise ValueError("a time range must not be empty (use 00:00-24:00 for all day)")

    @classmethod
    def parse(cls, text: str) -> TimeRange:
        """``"07:00-19:00"``, ``"22:00-06:00"`` (overnight), ``"00:00-24:00"``."""
        parts = text.split("-")
        if len(parts) != 2:
            raise ValueError(f"time range {text!r} is not HH:MM-HH:MM")
        return cls(_parse_hhmm(parts[0]), _parse_hhmm(parts[1]))

    @property
    def overnight(self) -> bool:
        return self.end_s < self.start_s


def _parse_days(spec: str | Iterable[str]) -> frozenset[int]:
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    days: set[int] = set()
    for raw in items:
        item = raw.strip().lower()
        if item in ("", "*", "daily", "all", "every day"):
            days.update(range(7))
            continue
        if item in ("weekdays", "workdays"):
            days.update(range(5))
            continue
        if item == "weekends":
            days.update((5, 6))
            continue
        lo, _, hi = item.partition("-")
        try:
            a = DAY_NAMES.index(lo.strip()[:3])
            b = DAY_NAMES.index(hi.strip()[:3]) if hi else a
        except ValueError:
            raise ValueError(
                f"day {raw!r} is not one of {', '.join(DAY_NAMES)} (or a range like mon-fri)"
            ) from None
        k = a
        while True:  # ranges may wrap: fri-mon
            days.add(k)
            if k == b:
                break
            k = (k + 1) % 7
    return frozenset(days)


@dataclass(frozen=True, slots=True, kw_only=True)
class Schedule:
    """When a zone is armed: days of the week and time ranges, in a time zone.

    Each range on each of ``days`` is one span of real time, from the first moment the
    clock reads its start to the last moment it reads its end (end exclusive); an
    overnight range belongs to the day it starts on (``mon-fri 22:00-06:00`` covers
    Saturday 03:00, not Monday 03:00). Across daylight-saving changes:

    - fall back (a repeated hour): a start in it is its first occurrence, an end its
      last, so ``02:30-06:00`` on the night Berlin goes from 03:00 CEST to 02:00 CET runs
      from 02:30 CEST to 06:00 CET without a break (4 h of real time), and
      ``22:00-02:30`` ends at 02:30 CET.
    - spring forward (a skipped hour): a start or end in the gap is the moment of the
      change (``02:30-06:00`` arms at 03:00 CEST, ``22:00-02:30`` ends at 03:00 CEST);
      a range wholly inside the gap (``02:15-02:45``) is not armed that day.

    Attributes:
        days: ISO weekday numbers 0 (Monday) .. 6 (Sunday) on which a range *starts*.
        ranges: time ranges; empty means all day.
        tz: IANA time zone name (e.g. ``Europe/Berlin``); ``None`` = the gateway's local
            time zone (read when a day is first needed: restart after changing it).
    """

    days: frozenset[int] = frozenset(range(7))
    ranges: tuple[TimeRange, ...] = ()
    tz: str | None = None
    _spans: dict[date, tuple[tuple[int, int], ...]] = field(
        init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not self.days or not self.days <= frozenset(range(7)):
            raise ValueError("days must be a non-empty subset of 0 (Mon) .. 6 (Sun)")
        if self.tz is not None:
            try:
                ZoneInfo(self.tz)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.tz!r}") from None
        object.__setattr__(self, "_spans", {})

    @classmethod
    def parse(
        cls,
        *,
        days: str | Iterable[str] = "mon-sun",
        hours: Iterable[str] = (),
        tz: str | None = None,
    ) -> Schedule:
        """From text: ``days="mon-fri"`` (also ``"sat,sun"``, ``"weekdays"``, ``"daily"``),
        ``hours=["07:00-12:00", "13:00-19:00"]``, ``tz="Europe/Berlin"``."""
        return cls(days=_parse_days(days), ranges=tuple(TimeRange.parse(h) for h in hours), tz=tz)

    def _tzinfo(self) -> tzinfo | None:
        return ZoneInfo(self.tz) if self.tz is not None else None

    def active_at(self, wall_ms: int) -> bool:
        """Whether the schedule is on at Unix time ``wall_ms`` (milliseconds).

        Cheap per frame: one conversion to the local date, then the real-time spans of
        that date (cached per date) are compared in UTC milliseconds.
        """
        tz = self._tzinfo()
        today = datetime.fromtimestamp(wall_ms / 1000.0, tz=tz).date()
        spans = self._spans.get(today)
        if spans is None:
            spans = self._spans_near(today, tz)
            if len(self._spans) >= 16:  # a few days are ever needed; keep it small
                self._spans.clear()
            self._spans[today] = spans
        return any(a <= wall_ms < b for a, b in spans)

    def _spans_near(self, today: date, tz: tzinfo | None) -> tuple[tuple[int, int], ...]:
        """[start, end) Unix ms of the ranges starting yesterday, today and tomorrow (a
        range of tomorrow matters only where a change repeats midnight)."""
        ranges = self.ranges or (TimeRange(0, _DAY_S),)
        out: list[tuple[int, int]] = []
        for delta in (-1, 0, 1):
            day = today + timedelta(days=delta)
            if day.weekday() not in self.days:
                continue
            midnight = datetime.combine(day, dtime())
            for r in ranges:
                end_day = midnight + timedelta(days=1) if r.overnight else midnight
                try:
                    a = resolve_local(midnight + timedelta(seconds=r.start_s), tz).first
                    b = resolve_local(end_day + timedelta(seconds=r.end_s), tz).last
                except (ValueError, OverflowError):  # the years 1 and 9999: never armed
                    continue
                if b > a:
                    out.append((_unix_ms(a), _unix_ms(b)))
        return tuple(out)


def _unix_ms(u: datetime) -> int:
    return (u - _EPOCH) // timedelta(milliseconds=1)


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


# -- zone specification ---------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ZoneSpec:
    """One zone rule (validated here; the gateway config maps onto it).

    Attributes:
        name: zone name, used in events (non-empty).
        polygon: (x, y) vertices, >= 3, in pixels (or in [0, 1] of the frame width and
            height when ``normalized``); ``None`` is the whole frame.
        normalized: the polygon is in 0-1 frame coordinates.
        classes: detector class names that count; empty = every class the task detects.
        min_dwell_s: seconds inside before ``start`` (>= 0).
        cooldown_s: seconds not inside before ``end`` (>= 0); also the debounce gap.
        update_every_s: minimum seconds between ``update`` events; ``None``: none.
        anchor: which point of a box must be inside (``bottom_center`` = the feet,
            ``center``), or ``overlap`` = at least ``overlap_threshold`` of the box area.
        overlap_threshold: for ``anchor="overlap"``, in (0, 1].
        edge_margin_frac: hysteresis at the polygon's edge, a fraction of the box height
            in [0, 10] (see the module doc): enter when inside by that much, an open
            incident's track leaves when outside by that much. 0: the plain test.
        schedule: when the zone is armed; ``None`` = always.
        label: event label; ``None`` = the track's class name.
    """

    name: str
    polygon: tuple[tuple[float, float], ...] | None = None
    normalized: bool = False
    classes: tuple[str, ...] = ()
    min_dwell_s: float = 0.0
    cooldown_s: float = 3.0
    update_every_s: float | None = 30.0
    anchor: AnchorMode = "bottom_center"
    overlap_threshold: float = 0.5
    edge_margin_frac: float = 0.05
    schedule: Schedule | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("zone name must be non-empty")
        if self.polygon is not None:
            poly = tuple((float(x), float(y)) for x, y in self.polygon)
            object.__setattr__(self, "polygon", poly)
            try:
                validate_polygon(np.asarray(poly, dtype=np.float64))
            except AreaError as exc:
                raise ValueError(f"zone {self.name!r}: {exc}") from None
            arr = np.asarray(poly, dtype=np.float64)
            if self.normalized and ((arr < 0).any() or (arr > 1).any()):
                raise ValueError(f"zone {self.name!r}: normalized coordinates must be in [0, 1]")
        object.__setattr__(self, "classes", tuple(self.classes))
        for name in ("min_dwell_s", "cooldown_s"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"zone {self.name!r}: {name} must be >= 0, got {v}")
        if self.update_every_s is not None and not self.update_every_s > 0:
            raise ValueError(f"zone {self.name!r}: update_every_s must be > 0 or None")
        if self.anchor not in ("bottom_center", "center", "overlap"):
            raise ValueError(f"zone {self.name!r}: unknown anchor {self.anchor!r}")
        if not 0.0 < self.overlap_threshold <= 1.0:
            raise ValueError(f"zone {self.name!r}: overlap_threshold must be in (0, 1]")
        m = self.edge_margin_frac
        if not (math.isfinite(m) and 0.0 <= m <= 10.0):
            raise ValueError(f"zone {self.name!r}: edge_margin_frac must be in [0, 10], got {m}")

    def polygon_px(self, width: int, height: int) -> npt.NDArray[np.float64] | None:
        """(M, 2) float64 polygon in pixels of a ``width`` x ``height`` frame, or None."""
        if self.polygon is None:
            return None
        arr = np.asarray(self.polygon, dtype=np.float64)
        if self.normalized:
            arr = arr * np.array([width, height], dtype=np.float64)
        return arr


# -- the state machine ----------------------------------------------------------------
@dataclass(slots=True)
class _TrackState:
    first_in_t: float  # entry of the inside run that counts (restarts before the start)
    last_in_t: float
    last_in_ms: int
    box: tuple[float, float, float, float]
    score: float
    label: str
    start_id: str | None = None
    start_ms: int | None = None
    last_emit_t: float = 0.0
    seen_outside: bool = False  # detected, not counted inside, since the last inside frame
    attrs: dict[str, AttributeValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Geometry:
    """Per-detection polygon tests of one frame, (N,) bool each (class not applied)."""

    inside: BoolArray  # the anchor (or overlap) is inside the polygon
    firm: BoolArray  # inside by at least the margin: may start a dwell
    near: BoolArray  # not outside by more than the margin: keeps an open incident


def _box(row: npt.NDArray[np.float32]) -> tuple[float, float, float, float]:
    return (float(row[0]), float(row[1]), float(row[2]), float(row[3]))


class ZoneMonitor:
    """Turns tracked detections into ``start``/``update``/``end`` events for one zone.

    Args:
        spec: the zone rule.
        camera, task: written into every event.
        class_names: the detector's class names (``class_ids`` index them).
        model: the detector's name, written into events.
        condition: optional extra per-detection predicate ((N,) bool), ANDed with the
            class and polygon tests -- e.g. "no hard hat".
        explain: optional per-detection event attributes; taken on every frame the track
            is inside and added to its events (an ``end`` carries the last ones).
        new_id: event id factory (default: :func:`edge.mqtt.ids.new_event_id`).
    """

    def __init__(
        self,
        spec: ZoneSpec,
        *,
        camera: str,
        task: str,
        class_names: Sequence[str],
        model: str = "",
        condition: Condition | None = None,
        explain: Explain | None = None,
        new_id: Callable[[], str] = new_event_id,
    ) -> None:
        self.spec = spec
        self.camera = camera
        self.task = task
        self.model = model
        self._names = list(class_names)
        unknown = [c for c in spec.classes if c not in self._names]
        if unknown:
            raise ValueError(
                f"zone {spec.name!r}: classes {unknown} are not detected by the model "
                f"(it knows {self._names})"
            )
        self._class_ids = np.array([self._names.index(c) for c in spec.classes], dtype=np.int32)
        self._condition = condition
        self._explain = explain
        self._new_id = new_id
        self._states: dict[int, _TrackState] = {}
        self._poly_cache: (
            tuple[tuple[int, int], ZoneSpec, npt.NDArray[np.float64] | None] | None
        ) = None
        self._px_ref: tuple[ZoneSpec, tuple[int, int]] | None = None  # pixel polygon's frame
        self._inside_now = 0
        self._armed: bool | None = None
        self._clock_trusted = True  # False: the schedule is ignored (armed), see step()
        # Open incidents by start event id -> their acknowledgement (None: not acked).
        # Written by the stepping thread (start, end) and acknowledge(), under _ack_lock.
        self._ack_lock = threading.Lock()
        self._open: dict[str, dict[str, str | int | float | bool | None] | None] = {}

    # -- read-only state -------------------------------------------------------------
    @property
    def open_incidents(self) -> int:
        """Incidents started and not yet ended."""
        return sum(1 for s in self._states.values() if s.start_id is not None)

    def acknowledge(self, incident_id: str, ack: AckSummary) -> tuple[AckResult, AckSummary | None]:
        """Acknowledge the open incident whose ``start`` event id is ``incident_id``: no
        more ``update`` events for it, and ``ack`` (a copy) goes into its ``end`` event's
        ``attributes["ack"]``. Safe to call from any thread.

        Returns:
            ``("acked", ack)``; ``("already", first_ack)`` when it was acknowledged
            before; ``("not_open", None)`` when no such incident is open (ended, or
            never raised here).
        """
        with self._ack_lock:
            if incident_id not in self._open:
                return "not_open", None
            first = self._open[incident_id]
            if first is not None:
                return "already", dict(first)
            self._open[incident_id] = dict(ack)
            return "acked", dict(ack)

    def acknowledged(self, incident_id: str) -> AckSummary | None:
        """The acknowledgement of an open incident (``None``: not acked or not open)."""
        with self._ack_lock:
            ack = self._open.get(incident_id)
            return None if ack is None else dict(ack)

    @property
    def inside_count(self) -> int:
        """Tracks inside the zone on the last frame (whether or not an incident is open)."""
        return self._inside_now

    @property
    def armed(self) -> bool | None:
        """Whether the schedule was on at the last step (``None`` before the first)."""
        return self._armed

    @property
    def wall_clock_trusted(self) -> bool:
        """Whether the schedule is applied (see :meth:`trust_wall_clock`)."""
        return self._clock_trusted

    def trust_wall_clock(self, trusted: bool) -> None:
        """Apply the zone's schedule (``True``, the default) or ignore it and stay armed
        (``False``: the wall clock is implausible, e.g. a gateway without RTC battery that
        booted in 1970, so ``wall_ms`` says nothing about the shift). Takes effect at the
        next :meth:`step`; safe to call from another thread (one attribute write)."""
        self._clock_trusted = bool(trusted)

    def polygon_for(self, width: int, height: int) -> npt.NDArray[np.float64] | None:
        """The zone polygon in pixels of a ``width`` x ``height`` frame (cached per frame
        size and spec, so :meth:`set_polygon` takes effect at the next call).

        A polygon given in pixels belongs to the frame size of the first frame that
        needed it (after :meth:`set_polygon`: the next one). When the camera later
        delivers another size (it came back from a reconnect at 320x240 instead of
        640x480), the polygon is scaled by the width and height ratios to the new size,
        with one WARNING per change -- else the zone would lie partly or wholly outside
        the frame and its people would silently end as ``lost``. A polygon reaching
        outside the first frame is logged as a WARNING (drawn for another resolution?).
        Normalised polygons are unaffected."""
        spec = self.spec
        size = (width, height)
        cache = self._poly_cache
        if cache is None or cache[0] != size or cache[1] is not spec:
            poly = spec.polygon_px(width, height)
            if poly is not None and not spec.normalized:
                poly = self._fit_pixels(poly, spec, size)
            cache = (size, spec, poly)
            self._poly_cache = cache
        return cache[2]

    def _fit_pixels(
        self, poly: npt.NDArray[np.float64], spec: ZoneSpec, size: tuple[int, int]
    ) -> npt.NDArray[np.float64]:
        ref = self._px_ref
        drawn_for, poly = fit_pixel_points(
            poly,
            None if ref is None or ref[0] is not spec else ref[1],
            size,
            where=f"camera {self.camera} task {self.task} zone {spec.name!r}",
            what="polygon",
            redraw="zone",
            logger=log,
        )
        self._px_ref = (spec, drawn_for)
        return poly

    def set_polygon(
        self, polygon: Sequence[tuple[float, float]] | None, *, normalized: bool
    ) -> None:
        """Replace the zone's polygon (validated as in :class:`ZoneSpec`) while running,
        e.g. from the console's zone editor. Tracks and open incidents are kept: a track
        now outside ends its incident after the usual cooldown. Safe to call from another
        thread than the one stepping (the spec is swapped in one assignment).

        Raises:
            ValueError: the polygon is invalid.
        """
        self.spec = replace(
            self.spec,
            polygon=None if polygon is None else tuple((float(x), float(y)) for x, y in polygon),
            normalized=normalized,
        )

    # -- the per-frame step ----------------------------------------------------------
    def inside(self, dets: Detections, frame_size: tuple[int, int]) -> BoolArray:
        """(N,) bool: detections that satisfy the zone's condition (class, polygon,
        predicate) on this frame alone, without the edge margin. One vectorized polygon
        test over all anchors."""
        ok, geo = self._frame_tests(dets, frame_size)
        return ok & geo.inside

    def _frame_tests(
        self, dets: Detections, frame_size: tuple[int, int]
    ) -> tuple[BoolArray, _Geometry]:
        """(N,) bool class-and-condition mask, and the polygon tests with the margin."""
        n = len(dets)
        ok = np.ones((n,), dtype=np.bool_)
        if self._class_ids.size and n:
            ok &= np.isin(dets.class_ids, self._class_ids)
        geo = self._geometry(dets, frame_size)
        if self._condition is not None and (ok & geo.near).any():
            cond = np.asarray(self._condition(dets), dtype=np.bool_)
            if cond.shape != (n,):
                raise ValueError(f"condition returned shape {cond.shape}, expected ({n},)")
            ok &= cond
        return ok, geo

    def _geometry(self, dets: Detections, frame_size: tuple[int, int]) -> _Geometry:
        n = len(dets)
        if n == 0:  # no polygon lookup: an empty step may come with a dummy frame size
            none = np.zeros((0,), dtype=np.bool_)
            return _Geometry(inside=none, firm=none, near=none)
        poly = self.polygon_for(*frame_size)
        if poly is None:
            every = np.ones((n,), dtype=np.bool_)
            return _Geometry(inside=every, firm=every, near=every)
        spec = self.spec
        inside = np.asarray(
            inside_mask(dets, poly, anchor=spec.anchor, overlap_threshold=spec.overlap_threshold),
            dtype=np.bool_,
        )
        if spec.anchor == "overlap" or spec.edge_margin_frac == 0.0:
            return _Geometry(inside=inside, firm=inside, near=inside)
        # Distance of each anchor to the polygon's outline (closed), against the margin.
        ring = np.concatenate([poly, poly[:1]], axis=0)
        dist, _ = point_polyline_distance(box_anchors(dets.xyxy, spec.anchor), ring)
        margin = spec.edge_margin_frac * (dets.xyxy[:, 3] - dets.xyxy[:, 1]).astype(np.float64)
        with np.errstate(invalid="ignore"):
            firm = inside & (dist >= margin)
            near = inside | (dist <= margin)
        return _Geometry(inside=inside, firm=firm, near=near)

    def step(
        self,
        dets: Detections,
        *,
        t: float,
        wall_ms: int,
        frame_size: tuple[int, int],
        mono_s: float | None = None,
    ) -> list[ZoneEvent]:
        """Advance by one frame.

        Args:
            dets: the frame's tracked detections (``data["track_ids"]`` required).
            t: frame time, seconds on a monotonic clock (dwell/cooldown arithmetic).
            wall_ms: frame time, Unix milliseconds (event times, the schedule).
            frame_size: (width, height) of the frame in pixels.
            mono_s: capture time for latency metrics (default ``t``).

        Returns:
            The events this frame raised, ends first, then starts and updates.
        """
        mono = t if mono_s is None else mono_s
        sched = self.spec.schedule
        armed = sched is None or not self._clock_trusted or sched.active_at(wall_ms)
        self._armed = armed
        if not armed:
            self._inside_now = 0
            return self._end_all(wall_ms=wall_ms, reason="schedule", mono_s=mono)
        if len(dets) and TRACK_IDS not in dets.data:
            raise ValueError("ZoneMonitor.step needs tracked detections (data['track_ids'])")
        ok, geo = self._frame_tests(dets, frame_size)
        self._inside_now = int(np.count_nonzero(ok & geo.inside))
        track_ids = dets.data[TRACK_IDS] if len(dets) else np.zeros((0,), np.int64)
        seen = {int(v) for v in track_ids.tolist()}
        # Which detections count as inside this frame (the edge margin applied per state).
        counted: list[int] = []
        for i, tid in enumerate(track_ids.tolist()):
            cur = self._states.get(int(tid))
            if cur is None:
                if ok[i] and geo.firm[i]:  # enters: inside by the margin
                    counted.append(i)
            elif cur.start_id is None:
                if not geo.inside[i]:  # seen outside before the start: the dwell restarts
                    del self._states[int(tid)]
                elif ok[i]:
                    counted.append(i)
            elif ok[i] and geo.near[i]:  # open: inside until outside by the margin
                counted.append(i)
        idx = np.asarray(counted, dtype=np.intp)
        inside_ids = {int(track_ids[i]) for i in counted}
        for tid in seen - inside_ids:
            if (gone := self._states.get(tid)) is not None:
                gone.seen_outside = True

        events: list[ZoneEvent] = []
        # 1. states not inside this frame: drop after the cooldown (ending incidents).
        for tid in [k for k in self._states if k not in inside_ids]:
            st = self._states[tid]
            if t - st.last_in_t >= self.spec.cooldown_s:
                del self._states[tid]
                if st.start_id is not None:
                    reason: EndReason = "left" if st.seen_outside else "lost"
                    events.append(self._end(tid, st, wall_ms=wall_ms, reason=reason, mono=mono))
        # 2. tracks inside: dwell, start, update.
        dwell_min = self.spec.min_dwell_s
        every = self.spec.update_every_s
        for i in idx.tolist():
            tid = int(track_ids[i])
            box = _box(dets.xyxy[i])
            score = float(dets.scores[i])
            label = self.spec.label or self._names[int(dets.class_ids[i])]
            cur = self._states.get(tid)
            if cur is None:
                cur = _TrackState(
                    first_in_t=t, last_in_t=t, last_in_ms=wall_ms, box=box, score=score, label=label
                )
                self._states[tid] = cur
            cur.last_in_t, cur.last_in_ms, cur.box, cur.score = t, wall_ms, box, score
            cur.seen_outside = False
            if self._explain is not None:
                cur.attrs = dict(self._explain(dets, i))
            if cur.start_id is None:
                cur.label = label
                if t - cur.first_in_t >= dwell_min:
                    eid = self._new_id()
                    cur.start_id, cur.start_ms, cur.last_emit_t = eid, wall_ms, t
                    with self._ack_lock:
                        self._open[eid] = None
                    events.append(self._event("start", eid, tid, cur, wall_ms, mono))
            elif every is not None and t - cur.last_emit_t >= every:
                cur.last_emit_t = t
                with self._ack_lock:  # acknowledged: no more re-notifications
                    acked = self._open.get(cur.start_id) is not None
                if not acked:
                    events.append(self._event("update", self._new_id(), tid, cur, wall_ms, mono))
        return events

    def close(self, *, t: float, wall_ms: int, mono_s: float | None = None) -> list[ZoneEvent]:
        """End every open incident (reason ``shutdown``) and forget all tracks."""
        return self._end_all(
            wall_ms=wall_ms, reason="shutdown", mono_s=t if mono_s is None else mono_s
        )

    # -- helpers ---------------------------------------------------------------------
    def _end_all(self, *, wall_ms: int, reason: EndReason, mono_s: float) -> list[ZoneEvent]:
        events = [
            self._end(tid, st, wall_ms=wall_ms, reason=reason, mono=mono_s)
            for tid, st in sorted(self._states.items())
            if st.start_id is not None
        ]
        self._states.clear()
        return events

    def _event(
        self,
        kind: EventType,
        event_id: str,
        tid: int,
        st: _TrackState,
        wall_ms: int,
        mono: float,
        extra: Mapping[str, AttributeValue] | None = None,
    ) -> ZoneEvent:
        attrs: dict[str, AttributeValue] = {"dwell_s": round(st.last_in_t - st.first_in_t, 3)}
        attrs.update(st.attrs)
        if extra:
            attrs.update(extra)
        is_start = kind == "start"
        return ZoneEvent(
            event_id=event_id,
            type=kind,
            camera=self.camera,
            task=self.task,
            zone=self.spec.name,
            label=st.label,
            score=min(max(st.score, 0.0), 1.0),
            box=st.box,
            track_id=tid,
            time_ms=wall_ms,
            start_event_id=None if is_start else st.start_id,
            start_time_ms=None if is_start else st.start_ms,
            model=self.model,
            attributes=attrs,
            mono_s=mono,
        )

    def _end(
        self,
        tid: int,
        st: _TrackState,
        *,
        wall_ms: int,
        reason: EndReason,
        mono: float,
    ) -> ZoneEvent:
        extra: dict[str, AttributeValue] = {"reason": reason, "last_inside_ms": st.last_in_ms}
        with self._ack_lock:  # after this, acknowledge() answers "not_open"
            ack = self._open.pop(st.start_id, None) if st.start_id is not None else None
        if ack is not None:
            extra["ack"] = ack
        return self._event("end", self._new_id(), tid, st, wall_ms, mono, extra=extra)
