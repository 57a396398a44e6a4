"""The per-camera loop: source -> detector -> tracker -> zones -> events (store, snapshots, sinks).

A :class:`CameraPipeline` owns one :class:`~edge.stream.sources.CameraSource` and runs
one or more :class:`TaskRunner` on each frame it takes (a task = a detector, its tracker
and the zones it watches). Every event a zone raises is, in this order:

1. for ``start`` events (and ``crossing`` events of a line with ``snapshots``), drawn
   into a JPEG snapshot (``event.snapshot`` and ``event.snapshot_sha256`` are set);
2. written to the events table (:class:`~edge.stream.events.EventStore`);
3. handed to every sink (``Callable[[ZoneEvent], None]``), e.g. the MQTT publisher
   through a small adapter -- this module imports nothing of MQTT.

A failing store, snapshot folder or sink is logged and counted (``store_errors``,
``sink_errors``, ``snapshot_save_failures``) and never stops the loop or the other
outputs. A sink that refuses an event with :class:`~edge.errors.QueueFullError` (the
MQTT outbox full of events it never drops, which can last for days of broker outage) is
counted the same, but logged as one WARNING line without traceback, rate-limited per
camera (:class:`~edge.lograte.RateLimitedLog`): the first refusal at once, then at most
one line per :data:`SINK_REFUSED_LOG_INTERVAL_S` (60 s) with the number of refusals since
the previous line; the rest is reported when the loop stops. Any other exception from a
sink is logged with its traceback each time.

A task whose model raises (a :class:`~edge.errors.ModelError` from the decoder, an
onnxruntime failure, anything from ``detect``) skips that frame: no detections are
made up, its tracker and zones are not stepped, the other tasks run. Each failure is
logged (ERROR, rate-limited per camera like the sink refusals) and counted
(``model_failures`` per task in the metrics). After :data:`MODEL_FAILURES_OFF` (3)
failures in a row -- not one bad frame -- the task is switched *off* for this camera:
its open incidents end (reason ``shutdown``), one ERROR with the traceback is logged,
``TaskRunner.off`` holds the reason and every ``task_off_sinks`` callable gets
``(camera, task, reason)``. The loop, the camera's other tasks and the other cameras go
on. A success resets the count.

An off task is retried with backoff (a GPU provider hiccup, a driver reset or memory
pressure must not leave a safety task off for months): :data:`MODEL_RETRY_FIRST_S` (60 s)
of frame time after it went off, one real model call on the next frame. A success
switches it back *on* (its tracker starts afresh, its zones and lines were emptied at the
off, so no stale incident), one INFO line is logged and every ``task_on_sinks`` callable
gets ``(camera, task, message)``. A failure leaves it off and doubles the delay (capped at
:data:`MODEL_RETRY_MAX_S`, 1 h), logged through the same rate-limited ERROR line as the
skipped frames. The delay starts from the first again once the task has run
:data:`MODEL_RETRY_RESET_S` (10 min) without being switched off.

Time: each frame carries its own time (:class:`~edge.stream.sources.Frame`), which is the
only clock the tracker and zones see. While a live camera is offline, the loop steps the
tasks with no detections every ``idle_tick_s`` so open incidents still end after their
cooldown.

Progress (hang detection): the loop notes ``time.monotonic()`` at each iteration -- a
frame processed, a 0.25 s read timeout, an idle tick -- so it shows progress at least
every 0.25 s plus the time of one frame, also while the camera is offline and the source
reconnects. :attr:`CameraPipeline.last_progress_s` is the older of that and the source
reader's own (:attr:`~edge.stream.sources.CameraSource.last_progress_s`);
:meth:`CameraPipeline.stalled_for` is the time since then while the loop runs: a loop
blocked in a detector, a sink or a lock, or a reader blocked inside the backend, makes
it grow; the supervisor (:meth:`edge.service.gateway.GatewayService.problems`) decides
how long is too long.

Stop: :meth:`CameraPipeline.stop` lets the frame in flight finish, ends every open
incident (``end`` events with reason ``shutdown`` go through the same outputs), closes
the source and joins the thread. :meth:`CameraPipeline.metrics` is safe from any thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Any

import numpy as np

from edge.errors import QueueFullError
from edge.lograte import RateLimitedLog
from edge.stream.events import EventStore, EventStoreError, ZoneEvent
from edge.stream.lines import LineCounter, LineSpec
from edge.stream.snapshots import SnapshotStore
from edge.stream.sources import CameraSource, Frame, SourceSpec
from edge.stream.tracker import Tracker, TrackerConfig
from edge.stream.zones import Condition, Explain, ZoneMonitor, ZoneSpec
from edge.tasks.base import DetectorLike, ImageBGR
from edge.types import Detections

__all__ = [
    "MODEL_FAILURES_OFF",
    "MODEL_RETRY_FIRST_S",
    "MODEL_RETRY_MAX_S",
    "MODEL_RETRY_RESET_S",
    "SINK_REFUSED_LOG_INTERVAL_S",
    "CameraPipeline",
    "EventSink",
    "StatusSink",
    "TaskOffSink",
    "TaskOnSink",
    "TaskRunner",
    "TaskSpec",
]

log = logging.getLogger("edge.stream")

EventSink = Callable[[ZoneEvent], None]
"""Receives every event after it is stored (from the pipeline thread; keep it quick)."""
StatusSink = Callable[[str, bool, str], None]
"""``(camera, online, reason)`` on each camera online/offline change (reader thread)."""
TaskOffSink = Callable[[str, str, str], None]
"""``(camera, task, reason)`` when a task is switched off after its model kept failing
(pipeline thread)."""
TaskOnSink = Callable[[str, str, str], None]
"""``(camera, task, message)`` when a task switched off is back on: a retry of its model
succeeded (pipeline thread)."""
MODEL_FAILURES_OFF = 3
"""Frames in a row whose model call failed after which a task is switched off."""
MODEL_RETRY_FIRST_S = 60.0
"""Seconds (frame time) after a task is switched off before its model is tried again."""
MODEL_RETRY_MAX_S = 3600.0
"""The retry delay doubles with each failed retry up to this many seconds."""
MODEL_RETRY_RESET_S = 600.0
"""A task back on for this many seconds without being switched off again starts from
:data:`MODEL_RETRY_FIRST_S` the next time."""
MODEL_FAILURE_LOG_INTERVAL_S = 60.0
"""Least seconds between two log lines about failing model calls (per camera)."""
SINK_REFUSED_LOG_INTERVAL_S = 60.0
"""Least seconds between two log lines about events a sink refused as full (per camera;
read when a pipeline is built)."""


def _sink_name(sink: EventSink) -> str:
    """A short name for a sink in log lines (a bound method's repr names its object)."""
    return str(getattr(sink, "__qualname__", None) or repr(sink))


@dataclass(frozen=True, kw_only=True)
class TaskSpec:
    """One task on one camera.

    Attributes:
        name: the task name written into events (``fence``, ``hardhat``, ``workwear``).
        zones: the zones it watches.
        lines: the counting lines it watches (:mod:`edge.stream.lines`); zone and line
            names are unique together within the task (events name either in ``zone``).
        score_threshold: detector score threshold (``None``: the model's default).
        min_box_area: detections with a smaller box area (pixels^2) are ignored.
        tracker: tracker settings.
        snapshots: save a snapshot for each ``start`` event.
    """

    name: str
    zones: tuple[ZoneSpec, ...]
    lines: tuple[LineSpec, ...] = ()
    score_threshold: float | None = None
    min_box_area: float = 0.0
    tracker: TrackerConfig = field(default_factory=TrackerConfig)
    snapshots: bool = True

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("task name must be non-empty")
        if not self.zones and not self.lines:
            raise ValueError(f"task {self.name!r}: needs at least one zone or line")
        names = [z.name for z in self.zones] + [ln.name for ln in self.lines]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: zone and line names must be unique, got {names}")
        if self.min_box_area < 0:
            raise ValueError("min_box_area must be >= 0")


class _Stat:
    """Running mean and last value of a duration in milliseconds."""

    __slots__ = ("count", "last", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0.0
        self.last = 0.0

    def add(self, ms: float) -> None:
        self.count += 1
        self.total += ms
        self.last = ms

    def as_dict(self) -> dict[str, float]:
        return {"mean_ms": self.total / self.count if self.count else 0.0, "last_ms": self.last}


class TaskRunner:
    """Detector + tracker + zone monitors of one task on one camera.

    Args:
        spec: the task.
        detector: any :class:`~edge.tasks.base.DetectorLike`; its
            ``detect_with_timings`` is used when it has one (stage timings in metrics).
        camera: camera name for events.
        model: model name for events (default: ``detector.manifest.name`` if present).
        conditions: extra per-detection predicates by zone name (see
            :class:`~edge.stream.zones.ZoneMonitor`).
        explainers: per-detection event attributes by zone name (e.g. a zone rule's
            ``rule``; see :class:`~edge.stream.zones.ZoneMonitor`).

    Raises:
        ValueError: a zone names a class the detector does not know.
    """

    def __init__(
        self,
        *,
        spec: TaskSpec,
        detector: DetectorLike,
        camera: str,
        model: str | None = None,
        conditions: Mapping[str, Condition] | None = None,
        explainers: Mapping[str, Explain] | None = None,
    ) -> None:
        self.spec = spec
        self.detector = detector
        self.camera = camera
        manifest = getattr(detector, "manifest", None)
        self.model = model if model is not None else str(getattr(manifest, "name", ""))
        self.class_names = list(detector.class_names)
        self.tracker = Tracker(config=spec.tracker)
        conditions = conditions or {}
        explainers = explainers or {}
        unknown = (set(conditions) | set(explainers)) - {z.name for z in spec.zones}
        if unknown:
            raise ValueError(f"task {spec.name!r}: conditions for unknown zones {sorted(unknown)}")
        self.monitors = [
            ZoneMonitor(
                z,
                camera=camera,
                task=spec.name,
                class_names=self.class_names,
                model=self.model,
                condition=conditions.get(z.name),
                explain=explainers.get(z.name),
            )
            for z in spec.zones
        ]
        max_age = spec.tracker.max_age_s
        self.counters = [
            LineCounter(
                ln,
                camera=camera,
                task=spec.name,
                class_names=self.class_names,
                model=self.model,
                forget_after_s=10.0 if max_age is None else max_age + 1.0,
            )
            for ln in spec.lines
        ]
        # Ask the detector only for the classes some zone or line counts (all when one
        # counts all).
        wanted: list[str] | None = []
        for classes in [z.classes for z in spec.zones] + [ln.classes for ln in spec.lines]:
            if not classes:
                wanted = None
                break
            assert wanted is not None
            wanted += [c for c in classes if c not in wanted]
        self.classes = wanted
        self.stage_ms: dict[str, _Stat] = {
            k: _Stat()
            for k in ("preprocess", "inference", "decode", "nms", "detect", "track", "zones")
        }
        self.failures_in_a_row = 0  # model calls that raised, since the last success
        self.model_failures = 0  # all of them
        self.off: str | None = None  # why the task was switched off (None: it runs)
        self.offs = 0  # times switched off (or retried in vain) since it last ran long enough
        self.retry_at: float | None = None  # frame time of the next retry while off
        self.on_since: float | None = None  # frame time it came back on (backoff reset)

    def detect(self, image: ImageBGR) -> Detections:
        """Detections of the task's classes, small boxes removed; timings recorded."""
        t0 = time.perf_counter()
        with_timings = getattr(self.detector, "detect_with_timings", None)
        dets: Detections
        if with_timings is not None:
            dets, timings = with_timings(
                image, score_threshold=self.spec.score_threshold, classes=self.classes
            )
            self.stage_ms["preprocess"].add(timings.preprocess_ms)
            self.stage_ms["inference"].add(timings.inference_ms)
            self.stage_ms["decode"].add(timings.decode_ms)
            self.stage_ms["nms"].add(timings.nms_ms)
        else:
            dets = self.detector.detect(
                image, score_threshold=self.spec.score_threshold, classes=self.classes
            )
        if self.spec.min_box_area > 0 and len(dets):
            dets = dets[dets.area >= self.spec.min_box_area]
        self.stage_ms["detect"].add((time.perf_counter() - t0) * 1e3)
        return dets

    def step(
        self,
        dets: Detections,
        *,
        t: float,
        wall_ms: int,
        frame_size: tuple[int, int],
        mono_s: float,
    ) -> tuple[Detections, list[ZoneEvent]]:
        """Track ``dets`` and step every zone and line; returns the tracked detections and
        events (zones' first, then lines')."""
        t0 = time.perf_counter()
        tracked = self.tracker.update(dets, t=t)
        t1 = time.perf_counter()
        events: list[ZoneEvent] = []
        for mon in self.monitors:
            events += mon.step(tracked, t=t, wall_ms=wall_ms, frame_size=frame_size, mono_s=mono_s)
        for counter in self.counters:
            events += counter.step(
                tracked, t=t, wall_ms=wall_ms, frame_size=frame_size, mono_s=mono_s
            )
        t2 = time.perf_counter()
        self.stage_ms["track"].add((t1 - t0) * 1e3)
        self.stage_ms["zones"].add((t2 - t1) * 1e3)
        return tracked, events

    def close(self, *, t: float, wall_ms: int) -> list[ZoneEvent]:
        """End every open incident (reason ``shutdown``); lines forget their tracks."""
        events: list[ZoneEvent] = []
        for mon in self.monitors:
            events += mon.close(t=t, wall_ms=wall_ms, mono_s=0.0)
        for counter in self.counters:
            events += counter.close()
        return events

    def monitor(self, zone: str) -> ZoneMonitor:
        for m in self.monitors:
            if m.spec.name == zone:
                return m
        raise KeyError(zone)

    def counter(self, line: str) -> LineCounter:
        """The counter of the line named ``line`` (KeyError when none)."""
        for c in self.counters:
            if c.spec.name == line:
                return c
        raise KeyError(line)


def _failure_text(task: TaskRunner, exc: Exception) -> str:
    """What a failed model call of ``task`` says in logs, the off reason and alerts."""
    return f"model {task.model!r} failed: {type(exc).__name__}: {exc}"


class CameraPipeline:
    """One camera's loop (see the module docstring).

    Keyword-only; use as a context manager (``start`` on enter, ``stop`` on exit) or call
    :meth:`start`/:meth:`stop`, or drive it synchronously with :meth:`run`.

    Args:
        camera: camera name (events, metrics, logs).
        source: how to read the camera (the pipeline owns the :class:`CameraSource`).
        tasks: the tasks to run on each frame.
        store: the events table (``None``: events are not stored).
        sinks: event consumers, called in order for each event.
        status_sinks: ``(camera, online, reason)`` consumers for camera status changes.
        snapshots: where ``start`` snapshots go (``None``: no snapshots).
        idle_tick_s: while a live camera delivers nothing, step the tasks with no
            detections this often (so incidents end); ``None`` disables.
        task_off_sinks: told ``(camera, task, reason)`` when a task is switched off
            because its model failed ``model_failures_off`` frames in a row (>= 1).
        task_on_sinks: told ``(camera, task, message)`` when an off task is back on (a
            retry of its model succeeded).
        model_retry_s: seconds (frame time, > 0) from a task's off to the first retry;
            doubles with each failed retry up to ``model_retry_max_s``; back to
            ``model_retry_s`` once the task has run ``model_retry_reset_s`` seconds.
    """

    def __init__(
        self,
        *,
        camera: str,
        source: SourceSpec,
        tasks: Sequence[TaskRunner],
        store: EventStore | None = None,
        sinks: Sequence[EventSink] = (),
        status_sinks: Sequence[StatusSink] = (),
        snapshots: SnapshotStore | None = None,
        idle_tick_s: float | None = 1.0,
        task_off_sinks: Sequence[TaskOffSink] = (),
        model_failures_off: int = MODEL_FAILURES_OFF,
        task_on_sinks: Sequence[TaskOnSink] = (),
        model_retry_s: float = MODEL_RETRY_FIRST_S,
        model_retry_max_s: float = MODEL_RETRY_MAX_S,
        model_retry_reset_s: float = MODEL_RETRY_RESET_S,
    ) -> None:
        if not tasks:
            raise ValueError("a pipeline needs at least one task")
        self.camera = camera
        self.tasks = list(tasks)
        self._store = store
        self._sinks = list(sinks)
        self._status_sinks = list(status_sinks)
        self._snapshots = snapshots
        self._idle_tick_s = idle_tick_s
        self._offline_file = source.kind == "file" and not source.realtime
        self.source = CameraSource(spec=source, name=camera, on_status=self._on_status)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._last_t: float | None = None
        self._last_wall_ms: int | None = None
        self._last_idle = time.monotonic()
        self._progress_s = time.monotonic()  # written by the loop thread only
        self._running = False  # run() is between its start and its end
        # metrics (guarded by _lock)
        self._frames = 0
        self._done_times: deque[float] = deque(maxlen=64)
        self._events: dict[str, int] = {"start": 0, "update": 0, "end": 0, "crossing": 0}
        self._store_errors = 0
        self._sink_errors = 0
        self._frame_ms = _Stat()
        self._output_ms = _Stat()
        self._latency_ms: deque[float] = deque(maxlen=512)
        self._zone_stats: dict[str, dict[str, dict[str, int]]] = {}
        self._line_stats: dict[str, dict[str, dict[str, int]]] = {}
        self._latest: Frame | None = None
        self._refusals = RateLimitedLog(log, interval_s=SINK_REFUSED_LOG_INTERVAL_S)
        if model_failures_off < 1:
            raise ValueError(f"model_failures_off must be >= 1, got {model_failures_off}")
        self._task_off_sinks = list(task_off_sinks)
        self._failures_off = model_failures_off
        if not 0 < model_retry_s <= model_retry_max_s or model_retry_reset_s < 0:
            raise ValueError(
                "need 0 < model_retry_s <= model_retry_max_s and model_retry_reset_s >= 0, got "
                f"{model_retry_s}, {model_retry_max_s}, {model_retry_reset_s}"
            )
        self._task_on_sinks = list(task_on_sinks)
        self._retry_s = model_retry_s
        self._retry_max_s = model_retry_max_s
        self._retry_reset_s = model_retry_reset_s
        self._model_log = RateLimitedLog(
            log, interval_s=MODEL_FAILURE_LOG_INTERVAL_S, level=logging.ERROR
        )

    # -- status --------------------------------------------------------------------
    def _on_status(self, online: bool, reason: str) -> None:
        self._tell(self._status_sinks, "status", online, reason)

    # -- one frame -----------------------------------------------------------------
    def process(self, frame: Frame) -> list[ZoneEvent]:
        """Run every task on ``frame`` and hand out its events; returns the events."""
        t0 = time.perf_counter()
        with self._lock:  # an idle tick may have run at a later time than this capture
            t = frame.t if self._last_t is None else max(frame.t, self._last_t)
        out: list[ZoneEvent] = []
        for task in self.tasks:
            retry = task.off is not None
            if retry and (task.retry_at is None or t < task.retry_at):
                continue
            try:
                dets = task.detect(frame.image)
            except Exception as exc:  # the model, not the loop: this task skips the frame
                if retry:
                    self._retry_failed(task, exc, t=t)
                else:
                    out += self._model_failed(task, exc, t=t, wall_ms=frame.wall_ms)
                continue
            if retry:
                self._back_on(task, t=t)
            elif task.on_since is not None and t - task.on_since >= self._retry_reset_s:
                task.offs, task.on_since = 0, None  # ran fine long enough: backoff reset
            task.failures_in_a_row = 0
            tracked, events = task.step(
                dets,
                t=t,
                wall_ms=frame.wall_ms,
                frame_size=frame.size,
                mono_s=frame.captured_mono,
            )
            out += self._emit(events, task=task, image=frame.image, tracked=tracked)
        done = time.perf_counter()
        with self._lock:
            self._frames += 1
            self._done_times.append(time.monotonic())
            self._frame_ms.add((done - t0) * 1e3)
            self._last_t, self._last_wall_ms = t, frame.wall_ms
            self._latest = frame
        self._update_zone_stats()
        return out

    def _model_failed(
        self, task: TaskRunner, exc: Exception, *, t: float, wall_ms: int
    ) -> list[ZoneEvent]:
        """Count a failed model call of ``task``; switch the task off at the limit (its
        open incidents end, the sinks are told). Returns the events that produced."""
        with self._lock:
            task.failures_in_a_row += 1
            task.model_failures += 1
            n = task.failures_in_a_row
        why = _failure_text(task, exc)
        if n < self._failures_off:
            self._model_log.hit(
                "camera %s: task %s skipped a frame: %s (%d in a row; off at %d)",
                self.camera, task.spec.name, why, n, self._failures_off,
            )  # fmt: skip
            return []
        task.offs += 1
        delay = self._retry_delay(task.offs)
        task.retry_at, task.on_since = t + delay, None
        task.off = f"{why} ({n} frames in a row; retry in {delay:g} s)"
        log.error(
            "camera %s: task %s switched off: %s", self.camera, task.spec.name, task.off,
            exc_info=exc,
        )  # fmt: skip
        events = self._emit(task.close(t=t, wall_ms=wall_ms), task=task, image=None, tracked=None)
        self._tell(self._task_off_sinks, "task-off", task.spec.name, task.off)
        return events

    def _retry_delay(self, offs: int) -> float:
        """Seconds to the next retry after ``offs`` (>= 1) offs / failed retries in a row."""
        return float(min(self._retry_s * 2.0 ** min(offs - 1, 64), self._retry_max_s))

    def _retry_failed(self, task: TaskRunner, exc: Exception, *, t: float) -> None:
        """A retry of an off task failed: it stays off, the next retry after a longer
        delay (one rate-limited ERROR line; the sinks were told at the off)."""
        with self._lock:
            task.model_failures += 1
            task.offs += 1
        delay = self._retry_delay(task.offs)
        task.retry_at = t + delay
        why = _failure_text(task, exc)
        task.off = f"{why} (retry {task.offs - 1} failed; next retry in {delay:g} s)"
        self._model_log.hit(
            "camera %s: task %s stays off: %s", self.camera, task.spec.name, task.off
        )

    def _back_on(self, task: TaskRunner, *, t: float) -> None:
        """A retry of an off task succeeded: it runs again from this frame, with a fresh
        tracker (its zones and lines were emptied at the off); the sinks are told."""
        was = task.off
        task.tracker.reset()
        task.off, task.retry_at, task.on_since = None, None, t
        msg = f"model {task.model!r} works again (was off: {was})"
        log.info("camera %s: task %s back on: %s", self.camera, task.spec.name, msg)
        self._tell(self._task_on_sinks, "task-on", task.spec.name, msg)

    def _tell(self, sinks: Sequence[Callable[..., None]], kind: str, *args: Any) -> None:
        """Call every sink with ``(camera, *args)``; a sink that raises is logged with its
        traceback (``kind`` names the sink list) and the others are still called."""
        for sink in sinks:
            try:
                sink(self.camera, *args)
            except Exception:
                log.exception("camera %s: %s sink %r failed", self.camera, kind, sink)

    def latest_frame(self) -> Frame | None:
        """The last frame processed (``None`` before the first), e.g. for the console's
        camera view. Its image is not modified by the pipeline; readers must not modify
        it either."""
        with self._lock:
            return self._latest

    def _idle_tick(self) -> list[ZoneEvent]:
        """Step every task with no detections at the current time (camera offline)."""
        now, wall = time.monotonic(), time.time_ns() // 1_000_000
        out: list[ZoneEvent] = []
        with self._lock:
            t = max(now, self._last_t or now)
            self._last_t = t
        for task in self.tasks:  # no detections: the polygon (and frame size) is not used
            if task.off is not None:
                continue
            _, events = task.step(
                Detections.empty(), t=t, wall_ms=wall, frame_size=(1, 1), mono_s=0.0
            )
            out += self._emit(events, task=task, image=None, tracked=None)
        self._update_zone_stats()
        return out

    def _update_zone_stats(self) -> None:
        stats = {
            t.spec.name: {
                m.spec.name: {"inside": m.inside_count, "open": m.open_incidents}
                for m in t.monitors
            }
            for t in self.tasks
        }
        lines = {t.spec.name: {c.spec.name: dict(c.counts) for c in t.counters} for t in self.tasks}
        with self._lock:
            self._zone_stats = stats
            self._line_stats = lines

    def _emit(
        self,
        events: list[ZoneEvent],
        *,
        task: TaskRunner,
        image: ImageBGR | None,
        tracked: Detections | None,
    ) -> list[ZoneEvent]:
        out: list[ZoneEvent] = []
        for ev in events:
            t0 = time.perf_counter()
            if (
                ev.type in ("start", "crossing")
                and self._snapshots is not None
                and task.spec.snapshots
                and image is not None
                and (ev.type == "start" or task.counter(ev.zone).spec.snapshots)
            ):
                w, h = int(image.shape[1]), int(image.shape[0])
                poly = line = None
                if ev.type == "start":
                    poly = task.monitor(ev.zone).polygon_for(w, h)
                else:
                    line = task.counter(ev.zone).line_for(w, h)
                saved = self._snapshots.save_hashed(
                    image,
                    event=ev,
                    dets=tracked,
                    class_names=task.class_names,
                    polygon=poly,
                    line=line,
                )
                if saved is not None:
                    ev = replace(ev, snapshot=saved.path, snapshot_sha256=saved.sha256)
            if self._store is not None:
                try:
                    self._store.add(ev)
                except EventStoreError as exc:
                    with self._lock:
                        self._store_errors += 1
                    log.error("camera %s: event %s not stored: %s", self.camera, ev.event_id, exc)
            for sink in self._sinks:
                try:
                    sink(ev)
                except QueueFullError as exc:  # e.g. the MQTT outbox full: counted and
                    with self._lock:  # alerted by its owner, expected during an outage
                        self._sink_errors += 1
                    self._refusals.hit(
                        "camera %s: %s refused event %s (%s): %s",
                        self.camera,
                        _sink_name(sink),
                        ev.event_id,
                        ev.type,
                        exc,
                    )
                except Exception:
                    with self._lock:
                        self._sink_errors += 1
                    log.exception(
                        "camera %s: sink %r failed on event %s", self.camera, sink, ev.event_id
                    )
            with self._lock:
                self._events[ev.type] += 1
                self._output_ms.add((time.perf_counter() - t0) * 1e3)
                if ev.mono_s > 0:
                    self._latency_ms.append((time.monotonic() - ev.mono_s) * 1e3)
            out.append(ev)
        return out

    # -- the loop ------------------------------------------------------------------
    def run(self, *, max_frames: int | None = None) -> int:
        """Read and process frames in the calling thread until :meth:`stop`, the end of a
        file, or ``max_frames``; then finish (end open incidents, close the source).
        Returns the number of frames processed."""
        self._progress_s = time.monotonic()
        self._running = True
        n = 0
        try:
            self.source.start()
            while not self._stop.is_set() and (max_frames is None or n < max_frames):
                self._progress_s = time.monotonic()
                self._refusals.flush()
                self._model_log.flush()
                frame = self.source.read(timeout=0.25)
                if frame is None:
                    if self.source.finished:
                        break
                    self._maybe_idle_tick()
                    continue
                self.process(frame)
                n += 1
        finally:
            self._progress_s = time.monotonic()
            try:
                self._finish()
            finally:
                self._running = False
        return n

    def _maybe_idle_tick(self) -> None:
        if self._offline_file or self._idle_tick_s is None or self.source.online is not False:
            return
        now = time.monotonic()
        if now - self._last_idle >= self._idle_tick_s:
            self._last_idle = now
            self._idle_tick()

    def _finish(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            t, wall = self._last_t, self._last_wall_ms
        wall_now = time.time_ns() // 1_000_000
        for task in self.tasks:
            if task.off is not None:  # its incidents ended when it was switched off
                continue
            events = task.close(
                t=time.monotonic() if t is None else t, wall_ms=max(wall or 0, wall_now)
            )
            self._emit(events, task=task, image=None, tracked=None)
        self._refusals.flush(force=True)
        self._model_log.flush(force=True)
        self._update_zone_stats()
        self.source.close()

    def start(self) -> None:
        """Run the loop in a background thread (idempotent)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self.run, name=f"pipeline-{self.camera}", daemon=True
        )
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for the loop thread to end by itself (a file finished); True if it did."""
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()

    def stop(self, timeout: float = 10.0) -> bool:
        """Stop reading, let the frame in flight finish, end open incidents, close the
        source; True if everything ended within ``timeout`` seconds. Idempotent."""
        self._stop.set()
        t = self._thread
        if t is not None:
            t.join(timeout)
            if t.is_alive():
                log.warning("camera %s: pipeline did not stop within %.1f s", self.camera, timeout)
                return False
        else:
            self._finish()
        return True

    close = stop

    # -- progress --------------------------------------------------------------------
    @property
    def last_progress_s(self) -> float:
        """``time.monotonic()`` of the last progress of both the loop and the source
        reader (the older of the two; the reader's only while it runs). Any thread."""
        t = self._progress_s
        if self.source.running:
            t = min(t, self.source.last_progress_s)
        return t

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds without progress (see the module docstring) while the loop runs;
        ``0.0`` before :meth:`run` starts and after it ended. ``now``: a
        ``time.monotonic()`` reading (default: the current one). Any thread."""
        if not self._running:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, now - self.last_progress_s)

    def progress_ages(self, now: float | None = None) -> dict[str, float]:
        """Seconds since the ``loop`` and the source ``reader`` last showed progress
        (``0.0`` for a part that is not running), e.g. to tell which one is stuck."""
        now = time.monotonic() if now is None else now
        loop = max(0.0, now - self._progress_s) if self._running else 0.0
        return {"loop": loop, "reader": self.source.stalled_for(now)}

    def __enter__(self) -> CameraPipeline:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- metrics -------------------------------------------------------------------
    def metrics(self) -> dict[str, Any]:
        """A JSON-ready snapshot of the pipeline's counters for /metrics.

        Keys: ``camera``, ``online``, ``fps`` (frames processed per second over the last
        64), ``frames_processed``, the source's ``frames_read/delivered/taken/dropped/
        skipped``, ``reconnects``, ``failures``, ``frame_ms`` and ``output_ms`` (mean/
        last), ``latency_ms`` (capture to event handed out: p50/p95 over the last 512
        events), ``events`` by type, ``open_incidents``, ``store_errors``,
        ``sink_errors``, ``progress_age_s`` (:meth:`progress_ages`), and per task
        ``model``, ``model_failures`` (model calls that raised), ``off`` (why the task
        was switched off, or ``None``), ``stage_ms`` (preprocess, inference, decode,
        nms, detect, track, zones: mean/last), ``zones`` (``inside``/``open`` per zone)
        and ``lines`` (``in``/``out`` crossings per line so far).
        """
        src = self.source.stats()
        ages = self.progress_ages()
        with self._lock:
            times = list(self._done_times)
            fps = (
                (len(times) - 1) / (times[-1] - times[0])
                if len(times) >= 2 and times[-1] > times[0]
                else 0.0
            )
            lat = np.asarray(self._latency_ms, dtype=np.float64)
            out: dict[str, Any] = {
                "camera": self.camera,
                "online": src["online"],
                "fps": fps,
                "frames_processed": self._frames,
                "events": dict(self._events),
                "store_errors": self._store_errors,
                "sink_errors": self._sink_errors,
                "progress_age_s": ages,
                "frame_ms": self._frame_ms.as_dict(),
                "output_ms": self._output_ms.as_dict(),
                "latency_ms": {
                    "p50": float(np.percentile(lat, 50)) if lat.size else 0.0,
                    "p95": float(np.percentile(lat, 95)) if lat.size else 0.0,
                },
            }
        for k in (
            "frames_read",
            "frames_delivered",
            "frames_taken",
            "frames_dropped",
            "frames_skipped",
            "reconnects",
            "failures",
        ):
            out[k] = src[k]
        with self._lock:
            zones = self._zone_stats
            lines = self._line_stats
        out["open_incidents"] = sum(z["open"] for per in zones.values() for z in per.values())
        out["tasks"] = {
            t.spec.name: {
                "model": t.model,
                "model_failures": t.model_failures,
                "off": t.off,
                "stage_ms": {k: s.as_dict() for k, s in t.stage_ms.items()},
                "zones": zones.get(t.spec.name, {}),
                "lines": lines.get(t.spec.name, {}),
            }
            for t in self.tasks
        }
        if self._snapshots is not None:
            out.update(self._snapshots.stats())
        return out
