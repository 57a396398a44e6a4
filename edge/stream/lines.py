"""Counting lines: tracked objects crossing a line (a gate, a fence line), per direction.

A :class:`LineCounter` watches one line, a polyline of 2 to
:data:`~edge.kernels.geometry.MAX_LINE_POINTS` points, for tracks of its ``classes``. A
track's anchor (the feet, ``bottom_center``, by default) moves from one frame to the next
along a straight segment; that segment crossing the line is a crossing. One vectorized
call per line and frame tests every track's movement against every segment of the line
(:func:`edge.kernels.geometry.segment_polyline_crossings`).

Directions. Walk the line from its first point to its last as drawn on the image: a
crossing from the left-hand side to the right-hand side is ``in``, the other way is
``out`` (swap the points to swap them)::

                 left side
        P0 o---------------------->o P1        "in":  left  -> right
                 right side                    "out": right -> left

    e.g. a line drawn left to right across a door: walking down the image (towards a
    camera above the door) is "in".

One event per crossing (hysteresis). A crossing is *pending* until the anchor is farther
than the *margin* from the line on the side it crossed to; only then it counts and
raises its event. Crossing back before that cancels it. The margin is
``max(min_displacement_px, min_displacement_frac * box height)`` (defaults 10 px and
0.25), the height being the track's running mean over the frames before (this frame's
box is as noisy as its anchor: a box whose bottom edge jitters up is also shorter, which
would favour one direction): a detector's boxes jitter in proportion to their
size (a standing person's feet: typically 3 %, often 6 % of the box height per frame),
so a fixed pixel margin held for small boxes and not for near ones (a 250 px person
standing on the line counted 25 in / 26 out a minute at 3 % jitter with the former fixed
10 px). So a person standing on the line, whose feet jitter across it from frame to
frame, counts nothing (at 6 % jitter the margin is 4 standard deviations away), and a
walk through the line raises exactly one event, once the anchor is a quarter of the
box height past the line (about one step of a walking person: the next frame or two at
2 frames/s, a few frames at 10). A track that is lost while its crossing is pending
(it vanished within the margin of the line) does not count: draw the line at least
that far from where objects leave the picture. A track that
disappears and comes back with the same id (the tracker coasts it for ``max_age_s``)
is followed across the gap: the movement from its last anchor to the new one counts.
A track that only reaches the line and goes back counts nothing (with the exact tie
rules of :func:`~edge.kernels.geometry.segment_polyline_crossings` it crosses there and
back, or not at all).

Counts are per direction, cumulative since the counter was made (the gateway's start),
and go on the retained state topic; every counted crossing is also one ``crossing``
event (:class:`~edge.stream.events.ZoneEvent` with ``zone`` = the line's name and
``attributes`` ``{"line", "direction", "count"}``), stored and published like zone events.

Not thread-safe: one counter per camera, task and line, stepped from one thread
(:meth:`LineCounter.set_points` excepted: the console's line editor moves a running line
from the HTTP server's thread).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge.kernels.geometry import (
    box_anchors,
    point_polyline_distance,
    segment_polyline_crossings,
    validate_polyline,
)
from edge.mqtt.ids import new_event_id
from edge.stream.events import AttributeValue, ZoneEvent
from edge.stream.tracker import TRACK_IDS
from edge.stream.zones import Schedule, fit_pixel_points
from edge.types import Detections

__all__ = ["DIRECTIONS", "Direction", "LineAnchor", "LineCounter", "LineSpec"]

Direction = Literal["in", "out"]
DIRECTIONS: tuple[Direction, Direction] = ("in", "out")
LineAnchor = Literal["bottom_center", "center"]

log = logging.getLogger("edge.stream.lines")


@dataclass(frozen=True, kw_only=True)
class LineSpec:
    """One counting line (validated here; the gateway config maps onto it).

    Attributes:
        name: line name, used in events and the state topic (non-empty).
        points: (x, y) vertices in order, 2 or more (a polyline), in pixels of the frame
            (scaled when the camera changes its frame size: :meth:`LineCounter.line_for`)
            or in [0, 1] of its width and height when ``normalized``. The order sets
            the directions: crossing from the left to the right of the line, walking it
            from the first point to the last as drawn on the image, is ``in``.
        normalized: the points are in 0-1 frame coordinates.
        classes: detector class names that count; empty = every class the task detects.
        anchor: the point of the box that crosses: ``bottom_center`` (the feet) or
            ``center``.
        min_displacement_px: hysteresis, pixels (>= 0): a crossing counts once the anchor
            is farther than ``max(min_displacement_px, min_displacement_frac * box
            height)`` from the line on the new side.
        min_displacement_frac: the margin's part that scales with the track's box height
            on the frame, a fraction in [0, 10] (0: the fixed ``min_displacement_px``
            only, the behaviour before this parameter existed).
        schedule: when the line counts; ``None`` = always. Outside it, tracks are
            forgotten (a crossing that straddles the switch-on is not counted).
        label: event label; ``None`` = the track's class name.
        snapshots: save a snapshot for each crossing (when the task saves snapshots).
    """

    name: str
    points: tuple[tuple[float, float], ...]
    normalized: bool = False
    classes: tuple[str, ...] = ()
    anchor: LineAnchor = "bottom_center"
    min_displacement_px: float = 10.0
    min_displacement_frac: float = 0.25
    schedule: Schedule | None = None
    label: str | None = None
    snapshots: bool = True

    def __post_init__(self) -> None:
        if not self.name or not self.name.strip():
            raise ValueError("line name must be non-empty")
        pts = tuple((float(x), float(y)) for x, y in self.points)
        try:
            arr = validate_polyline(np.asarray(pts, dtype=np.float64).reshape(-1, 2))
        except ValueError as exc:
            raise ValueError(f"line {self.name!r}: {exc}") from None
        if self.normalized and ((arr < 0).any() or (arr > 1).any()):
            raise ValueError(f"line {self.name!r}: normalized coordinates must be in [0, 1]")
        object.__setattr__(self, "points", tuple((float(x), float(y)) for x, y in arr))
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.anchor not in ("bottom_center", "center"):
            raise ValueError(f"line {self.name!r}: unknown anchor {self.anchor!r}")
        d = self.min_displacement_px
        if not (math.isfinite(d) and d >= 0):
            raise ValueError(f"line {self.name!r}: min_displacement_px must be >= 0, got {d}")
        f = self.min_displacement_frac
        if not (math.isfinite(f) and 0 <= f <= 10):
            raise ValueError(
                f"line {self.name!r}: min_displacement_frac must be in [0, 10], got {f}"
            )

    def points_px(self, width: int, height: int) -> npt.NDArray[np.float64]:
        """(M, 2) float64 vertices in pixels of a ``width`` x ``height`` frame."""
        arr = np.asarray(self.points, dtype=np.float64)
        if self.normalized:
            arr = arr * np.array([width, height], dtype=np.float64)
        return arr


_HEIGHT_EMA = 0.2
"""Weight of a new frame in a track's running box height (the margin's scale)."""


@dataclass(slots=True)
class _Track:
    anchor: tuple[float, float]
    last_t: float
    height: float  # box height, px: running mean (EMA) of the frames before this one
    pending: int = 0  # +1 in, -1 out: crossed, not yet the margin away


class LineCounter:
    """Turns tracked detections into ``crossing`` events and per-direction counts.

    Args:
        spec: the line.
        camera, task: written into every event.
        class_names: the detector's class names (``class_ids`` index them).
        model: the detector's name, written into events.
        forget_after_s: a track unseen for longer is forgotten (pending crossing dropped);
            keep it >= the tracker's ``max_age_s`` so a coasting track that comes back
            is followed across the gap.
        new_id: event id factory (default: :func:`edge.mqtt.ids.new_event_id`).

    Raises:
        ValueError: a class of the line is not detected by the model.
    """

    def __init__(
        self,
        spec: LineSpec,
        *,
        camera: str,
        task: str,
        class_names: Sequence[str],
        model: str = "",
        forget_after_s: float = 10.0,
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
                f"line {spec.name!r}: classes {unknown} are not detected by the model "
                f"(it knows {self._names})"
            )
        if not forget_after_s >= 0:
            raise ValueError("forget_after_s must be >= 0")
        self._class_ids = np.array([self._names.index(c) for c in spec.classes], dtype=np.int32)
        self._forget_after_s = forget_after_s
        self._new_id = new_id
        self._tracks: dict[int, _Track] = {}
        self._counts: dict[Direction, int] = {"in": 0, "out": 0}
        self._cache: tuple[tuple[int, int], LineSpec, npt.NDArray[np.float64]] | None = None
        self._px_ref: tuple[LineSpec, tuple[int, int]] | None = None  # pixel line's frame
        self._armed: bool | None = None
        self._stepped_spec = spec  # the spec of the last step (set_points: drop pending)

    # -- read-only state -------------------------------------------------------------
    @property
    def counts(self) -> dict[str, int]:
        """Crossings counted so far, ``{"in": a, "out": b}`` (a copy)."""
        return {"in": self._counts["in"], "out": self._counts["out"]}

    @property
    def pending(self) -> int:
        """Tracks that crossed and are not yet the margin away (see the module doc)."""
        return sum(1 for s in self._tracks.values() if s.pending)

    @property
    def armed(self) -> bool | None:
        """Whether the schedule was on at the last step (``None`` before the first)."""
        return self._armed

    def line_for(self, width: int, height: int) -> npt.NDArray[np.float64]:
        """The line's (M, 2) vertices in pixels of a ``width`` x ``height`` frame (cached
        per frame size and spec, so :meth:`set_points` takes effect at the next call).

        As a zone's polygon (:meth:`edge.stream.zones.ZoneMonitor.polygon_for`): a line
        given in pixels belongs to the frame size of the first frame that needed it
        (after :meth:`set_points`: the next one); when the camera later delivers another
        size (back from a reconnect at 640x360 instead of 1280x720), the line is scaled
        by the width and height ratios to the new size, with one WARNING per change --
        else it would lie elsewhere in the picture, or outside it, and count nothing. A
        line reaching outside the first frame is logged as a WARNING. Normalised lines
        are unaffected. The margin's ``min_displacement_px`` is not scaled: like the
        box heights it is compared with, it is in pixels of the frame at hand, for
        pixel and normalised lines alike."""
        return self._line(self.spec, width, height)

    def _line(self, spec: LineSpec, width: int, height: int) -> npt.NDArray[np.float64]:
        size = (width, height)
        cache = self._cache
        if cache is None or cache[0] != size or cache[1] is not spec:
            line = spec.points_px(width, height)
            if not spec.normalized:
                ref = self._px_ref
                drawn_for, line = fit_pixel_points(
                    line,
                    None if ref is None or ref[0] is not spec else ref[1],
                    size,
                    where=f"camera {self.camera} task {self.task} line {spec.name!r}",
                    what="line",
                    redraw="line",
                    logger=log,
                )
                self._px_ref = (spec, drawn_for)
            cache = (size, spec, line)
            self._cache = cache
        return cache[2]

    def set_points(self, points: Sequence[tuple[float, float]], *, normalized: bool) -> None:
        """Move the line while running (validated as in :class:`LineSpec`), e.g. from the
        console's line editor; it counts against the new points from the next step.

        Counts are kept (they go on from where they were, they are not reset), and so are
        the tracks: a movement made after the swap that crosses the new line counts. A
        crossing still pending against the old line (the anchor not yet the margin
        past it) is dropped at the next step. Safe to call from
        another thread than the one stepping (the spec is swapped in one assignment).

        Raises:
            ValueError: the points are not a valid line.
        """
        self.spec = replace(
            self.spec,
            points=tuple((float(x), float(y)) for x, y in points),
            normalized=normalized,
        )

    def reset_counts(self) -> None:
        """Set both counts to zero (tracks and pending crossings are kept)."""
        self._counts = {"in": 0, "out": 0}

    # -- the per-frame step ----------------------------------------------------------
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
            t: frame time, seconds on a monotonic clock (forgetting lost tracks).
            wall_ms: frame time, Unix milliseconds (event times, the schedule).
            frame_size: (width, height) of the frame in pixels.
            mono_s: capture time for latency metrics (default ``t``).

        Returns:
            The ``crossing`` events this frame counted, in detection order.
        """
        mono = t if mono_s is None else mono_s
        spec = self.spec
        if spec is not self._stepped_spec:  # moved by set_points: nothing pends on it
            self._stepped_spec = spec
            for st in self._tracks.values():
                st.pending = 0
        armed = spec.schedule is None or spec.schedule.active_at(wall_ms)
        self._armed = armed
        if not armed:
            self._tracks.clear()
            return []
        n = len(dets)
        if n and TRACK_IDS not in dets.data:
            raise ValueError("LineCounter.step needs tracked detections (data['track_ids'])")
        events: list[ZoneEvent] = []
        if n:  # as zones: the first frame with detections sets a pixel line's frame size
            self._line(spec, *frame_size)
            mask = np.ones((n,), dtype=np.bool_)
            if self._class_ids.size:
                mask &= np.isin(dets.class_ids, self._class_ids)
            idx = np.flatnonzero(mask)
            if idx.size:
                events = self._advance(
                    dets, idx, spec=spec, t=t, wall_ms=wall_ms, size=frame_size, mono=mono
                )
        limit = self._forget_after_s
        for tid in [k for k, s in self._tracks.items() if t - s.last_t > limit]:
            del self._tracks[tid]
        return events

    def _advance(
        self,
        dets: Detections,
        idx: npt.NDArray[np.intp],
        *,
        spec: LineSpec,
        t: float,
        wall_ms: int,
        size: tuple[int, int],
        mono: float,
    ) -> list[ZoneEvent]:
        line = self._line(spec, *size)
        tids = [int(v) for v in dets.data[TRACK_IDS][idx].tolist()]
        cur = box_anchors(dets.xyxy[idx], spec.anchor)  # (M, 2)
        known = [k for k, tid in enumerate(tids) if tid in self._tracks]
        net = np.zeros((len(tids),), dtype=np.int64)
        if known:
            prev = np.array([self._tracks[tids[k]].anchor for k in known], dtype=np.float64)
            crossed = segment_polyline_crossings(prev, cur[known], line)
            net[known] = crossed.sum(axis=1, dtype=np.int64)
        dist, side = point_polyline_distance(cur, line)
        heights = (dets.xyxy[idx, 3] - dets.xyxy[idx, 1]).astype(np.float64)
        events: list[ZoneEvent] = []
        for k, tid in enumerate(tids):
            anchor = (float(cur[k, 0]), float(cur[k, 1]))
            h = max(float(heights[k]), 0.0)
            st = self._tracks.get(tid)
            if st is None:
                self._tracks[tid] = _Track(anchor=anchor, last_t=t, height=h)
                continue
            # The margin scales with the box height of the frames before this one: this
            # frame's height is as noisy as its anchor (a box whose bottom edge jitters
            # up is also shorter), and would favour counting one direction.
            far = max(spec.min_displacement_px, spec.min_displacement_frac * st.height)
            st.anchor, st.last_t = anchor, t
            st.height += _HEIGHT_EMA * (h - st.height)
            s = int(np.sign(net[k]))
            if s:
                st.pending = 0 if st.pending == -s else s  # crossing back cancels
            if st.pending and dist[k] > far:
                if int(side[k]) == st.pending:
                    direction: Direction = "in" if st.pending > 0 else "out"
                    events.append(self._event(dets, int(idx[k]), tid, direction, wall_ms, mono))
                st.pending = 0  # counted, or went round an end of the line back to its side
        return events

    def close(self) -> list[ZoneEvent]:
        """Forget every track; pending crossings are dropped (nothing to end: crossings
        are instantaneous). Returns no events; counts are kept."""
        self._tracks.clear()
        return []

    # -- helpers ---------------------------------------------------------------------
    def _event(
        self,
        dets: Detections,
        i: int,
        tid: int,
        direction: Direction,
        wall_ms: int,
        mono: float,
    ) -> ZoneEvent:
        self._counts[direction] += 1
        row = dets.xyxy[i]
        attrs: dict[str, AttributeValue] = {
            "line": self.spec.name,
            "direction": direction,
            "count": self._counts[direction],
        }
        return ZoneEvent(
            event_id=self._new_id(),
            type="crossing",
            camera=self.camera,
            task=self.task,
            zone=self.spec.name,
            label=self.spec.label or self._names[int(dets.class_ids[i])],
            score=min(max(float(dets.scores[i]), 0.0), 1.0),
            box=(float(row[0]), float(row[1]), float(row[2]), float(row[3])),
            track_id=tid,
            time_ms=wall_ms,
            model=self.model,
            attributes=attrs,
            mono_s=mono,
        )
