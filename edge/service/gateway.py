"""The composition root of ``safety-edge run``: one process that watches the cameras,
serves the local API and publishes to MQTT.

:class:`GatewayService` builds, from one validated :class:`~edge.config.GatewayConfig`::

    event store (SQLite)   snapshot store (+ retention sweeper)
    MQTT publisher (durable outbox)                         -- when ``mqtt`` is set
    detectors, one per model name, shared by cameras and API
    one CameraPipeline per enabled camera: its tasks -> store, snapshots, outbox
    the HTTP API (uvicorn, in a thread of this process)     -- when ``service.api``

Outputs of a camera: every zone event goes to the events table and then to the outbox
(``{prefix}/{gw}/events``); a camera offline for ``offline_alert_after_s`` without a
break raises a ``camera_offline`` alert (``{prefix}/{gw}/alerts``, via the outbox),
resolved by its next frame (see below); the inside-counts
per zone and the crossing counts per line and direction go to the retained
``{prefix}/{gw}/{camera}/{task}/state`` when they change
(checked every ``service.state_interval_s``); the API's alerts go to the alerts topic.
``/healthz`` and ``/metrics`` of the API gain per-camera sections
(:mod:`edge.service.metrics`).

Commands (``mqtt.commands.enabled``): the publisher subscribes to
``{prefix}/{gw}/cmd/#`` and hands each command to a
:class:`~edge.mqtt.commands.CommandDispatcher`; ``ack`` goes to
:class:`~edge.service.acks.AckHandler` (events table -> the running zone monitor of the
incident, and the ``event_acks`` table). ``SAFETY_EDGE_CMD_TOKEN`` overrides
``mqtt.commands.token``.

A camera task whose model is missing or cannot serve its zones is *off*: logged, shown
in ``/healthz`` (``status: degraded``) and ``safety_edge_task_up 0``, and raised at each
start as a ``task_unavailable`` alert (key ``camera/task``); the camera runs its other
tasks. A camera with no task that can run raises ``camera_unavailable`` (key: the
camera). Each start also publishes ``resolved`` for every configured camera task and
camera that is available (or disabled) now, so an alert raised by an earlier start clears
once the model is installed or the config fixed; a ``resolved`` for a key that was never
raised is harmless (alerts are plain, non-retained messages through the outbox).
A task whose model keeps failing at run time (``MODEL_FAILURES_OFF`` frames in a row:
:mod:`edge.stream.pipeline`) is switched off the same way while the gateway runs (its
``task_unavailable`` alert is raised then, with the model's error; a camera left with no
task raises ``camera_unavailable``); the run loop and the other cameras go on. The
pipeline retries it with backoff (60 s, doubling to 1 h): when a retry succeeds the task
is on again, ``task_unavailable`` (and a ``camera_unavailable`` it caused) is resolved and
``/healthz`` no longer counts it. The API's
models are watched too: one whose last ``MODEL_FAILURES_OFF`` calls all raised makes
``/healthz`` degraded until a call succeeds.

Active alerts are remembered in ``<data_dir>/active-alerts.sqlite3``
(:mod:`edge.service.alert_state`): added before an ``active`` is queued, removed once a
``resolved`` is in the outbox. At each start, before the availability alerts, every
remembered alert whose camera is no longer in the config, or (``task_unavailable``)
whose task is no longer on its camera, is published ``resolved`` ("camera removed from
the config" / "task removed from the config"), logged (one info line each) and
forgotten; a remembered ``camera_offline`` of a camera that does not run now (disabled,
or no task can run) is resolved the same way, and one of a camera that runs is resolved
by its first frame. A damaged file is moved aside and an empty one started (logged as an
error); the gateway never fails to start over it.

Camera offline alerts are debounced: a camera's status (``online`` in ``/healthz``,
``safety_edge_camera_up``) changes at once, but ``camera_offline`` is raised only once
the camera has been offline for its ``offline_alert_after_s`` (default 60 s) without a
break -- checked by :meth:`GatewayService.run` every tick (at most 1 s late) -- and
resolved only if it was raised. A flaky RTSP camera that reconnects within the delay
therefore queues nothing: each alert is an outbox row that is never dropped, and a
camera dropping every 5 minutes used to queue 576 a day, taking the room that start and
end events need during a broker outage. ``/healthz`` shows ``offline_for_s`` and
``offline_alert`` per offline camera. ``0``: raised at once, as before.

Unstable cameras: a camera that freezes shortly after each reconnect is shown online most
of the time and is never offline for ``offline_alert_after_s`` without a break. Every
tick, :meth:`GatewayService.run` counts each camera's reconnects (back online after
offline) and offline time within its ``unstable_window_s`` (default 600 s):
``unstable_reconnects`` (default 10) reconnects, or ``unstable_offline_ratio`` (default
0.5) of the window offline with at least one reconnect, raise ``camera_unstable`` (key:
the camera, severity warning, with ``reconnects``, ``offline_ratio``, ``window_s``; a
WARNING in the log; ``/healthz``: ``unstable: true``, degraded). It is resolved once a
whole window is calm: fewer than half the reconnects and at most half the ratio (an INFO
line). Offline time counts from when the status says offline, i.e. ``read_timeout_s``
after the last frame of a frozen stream. A remembered ``camera_unstable`` is resolved
after a calm window from the start.

Free disk space: every minute (and at the first tick) :meth:`GatewayService.check_disk`
reads the free space of the filesystem holding ``data_dir`` (one ``statvfs``; the space
an unprivileged user may use, i.e. without the root reserve) into
``safety_edge_data_free_bytes`` / ``safety_edge_data_size_bytes`` and ``/healthz``
(``disk``). Under ``storage.min_free_mb`` (default 500 MiB) it raises ``disk_low``
(key ``data_dir``, severity warning; ``status: degraded``), once; it is resolved once
free space is back to 10 % above the floor (the margin keeps a disk hovering at the
floor from raising and resolving every minute). A remembered ``disk_low`` is resolved
by the first check that finds enough space, or at start when the floor is 0 (off).

Wall clock (:mod:`edge.service.clock`): at start, every minute, and every tick while it
is wrong, :meth:`GatewayService.check_clock` compares the wall clock with a floor (the
code's build date, and -- unless the clock is NTP synchronized by the kernel's state or
systemd-timesyncd -- the newest event time in the events database). A clock before the
floor (a gateway without RTC battery booted in 1970 or at its image's date) is
implausible: ``clock_unsynced`` (key ``wall_clock``, severity warning) is raised,
``/healthz`` says ``degraded`` with the reason (``clock``), one WARNING is logged, and
every scheduled zone stays armed at all hours (fail-safe: an event at night is better
than none in a shift the clock does not know it is in) until the clock passes the floor
or is synchronized; then the alert is resolved, the schedules apply again and an INFO
line says so. A newest event after a synchronized clock (stamped while the clock ran
ahead) is no floor: one WARNING names it. ``service.clock_require_sync`` also treats the
clock as implausible until it is NTP synchronized.

Start order: stores, publisher opened (its outbox; not connected), detectors, pipelines
built, the publisher's inventory set and the publisher connected (so the first retained
``online`` status already lists the models, cameras and tasks -- never ``cameras: []``
while models load), API started (port bound), pipelines started, then ``READY=1``. Stop
order (:meth:`GatewayService.stop`, bounded by ``service.stop_timeout_s``):
``STOPPING=1``; the pipelines (stop reading, finish the frame in flight, end open
incidents -- those ``end`` events go through the same outputs) and the API (running
requests finish) in parallel; then the outbox is flushed as far as the broker
acknowledges within ``service.flush_timeout_s`` (what is left stays on disk and goes out
after the next start); then the publisher, detectors and stores close.

:meth:`GatewayService.run` is the supervising loop: it pings the systemd watchdog
while every pipeline and the API thread are alive and no pipeline (nor the API's event
loop) is stalled, refreshes the state topics, raises ``camera_offline`` alerts that are
due, checks free disk space every minute, prunes old events hourly, and returns 1 if
a pipeline or the API died or stalled (so ``Restart=always`` restarts the service), 0
when asked to stop.

Event pruning (hourly, and at the first tick; :func:`edge.stream.retention.prune_events`):
events older than ``storage.events_retention_days``, then, while the events database
holds more live data than ``storage.events_max_mb``, the oldest events down to 90 % of
it (a WARNING each time; the freed pages are reused, so the file stops growing); with
them their acknowledgements. Counted in ``safety_edge_events_pruned_total{reason}``
(``age`` / ``size``); the database's size at the last pass is
``safety_edge_events_db_bytes`` / ``safety_edge_events_db_live_bytes``.

Stalls: a thread that is alive but stuck (a source read blocked inside the backend, a
deadlock, a ``session.run`` that never returns) would keep a liveness check happy
forever. Each pipeline therefore keeps a progress heartbeat, for its loop and for its
source reader (:meth:`CameraPipeline.stalled_for`; a camera that is offline and
reconnecting keeps beating). No progress for more than ``service.stall_timeout_s``
(default 120 s, at least 1 s and more than twice every camera's open/read timeout;
``null``: off) is a problem: ``camera NAME: pipeline stalled for N s (no progress since
<UTC time>; stuck: the camera loop | the source reader)`` in the log, the sd_notify
status, ``/healthz`` (``problems``, ``status: degraded``, per camera
``progress_age_s``) and ``safety_edge_camera_progress_age_seconds``; :meth:`run` then
returns 1. Stopping a stalled pipeline times out (reported in the stop report); the
thread is a daemon and does not hold the exit.

The API's event loop is watched the same way: its thread may be alive while a
coroutine blocks the loop (a synchronous call inside an ``async def``, a deadlock) and
every client times out. The app's :class:`~edge.api.app.LoopHeartbeat` beats every
second while the loop turns; no beat for more than ``service.stall_timeout_s`` (counted
from the API's start before the first beat) is the problem ``API event loop stuck for N
s (no progress since <UTC time>)`` -- log, sd_notify status, exit 1 as above; the stuck
loop cannot answer ``/healthz`` itself -- and its age is
``safety_edge_api_loop_age_seconds``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge import __version__
from edge.api.model_watch import WatchedModel
from edge.config import CameraConfig, GatewayConfig, TaskKind
from edge.errors import EdgeError
from edge.mqtt.config import MqttConfig
from edge.service.alert_state import (
    ActiveAlert,
    ActiveAlerts,
    active_alerts_path,
    open_active_alerts,
)
from edge.service.clock import (
    TIMESYNC_DIR,
    ClockReading,
    check_clock,
    clock_synchronized,
    kernel_clock_synchronized,
)
from edge.service.config_check import task_model_name
from edge.service.metrics import prometheus_text
from edge.service.notify import Notifier
from edge.service.tasks import build_task_spec, build_zone_rules
from edge.stream import retention
from edge.stream.acks import AckStore
from edge.stream.events import (
    DbSize,
    EventStore,
    ZoneEvent,
    events_db_path,
    local_zone_name,
    utc_offset_text,
)
from edge.stream.pipeline import (
    MODEL_FAILURES_OFF,
    MODEL_RETRY_FIRST_S,
    CameraPipeline,
    TaskRunner,
)
from edge.stream.retention import PruneReport
from edge.stream.snapshots import SnapshotStore
from edge.stream.sources import SourceSpec, source_kind
from edge.stream.zones import ZoneMonitor

if TYPE_CHECKING:
    from edge.api.app import LoopHeartbeat, ResultSink

__all__ = [
    "CLOCK_ALERT_KEY",
    "DISK_ALERT_KEY",
    "OUTBOX_FILENAME",
    "GatewayService",
    "ServiceStartError",
    "disk_is_low",
]

log = logging.getLogger("edge.service")


def log_local_time_zone(cfg: GatewayConfig) -> None:
    """At start-up: one INFO line naming the local time zone (the one of schedules without
    ``tz`` and of times typed without an offset, read once by the process: a change needs
    a restart), and a WARNING when that zone is UTC and some zone or line schedule has no
    ``tz`` -- usually an image whose time zone was never set, not a site on UTC."""
    utc_text = "UTC" + utc_offset_text(datetime.now().astimezone().utcoffset() or timedelta())
    name = local_zone_name()
    log.info(
        "local time zone: %s (%s): schedules without tz and times typed without an offset "
        "use it; restart the gateway after changing it",
        name, utc_text,
    )  # fmt: skip
    if time.timezone != 0 or time.daylight:
        return
    untimed = [
        f"{cam.name}/{task}/{item}"
        for cam in cfg.cameras
        for task, tc in cam.tasks.items()
        for item, sched in (
            *((z.name, z.schedule) for z in tc.zones),
            *((ln.name, ln.schedule) for ln in tc.lines),
        )
        if sched is not None and sched.tz is None
    ]
    if untimed:
        shown = ", ".join(untimed[:5]) + (
            f" and {len(untimed) - 5} more" if len(untimed) > 5 else ""
        )
        log.warning(
            "schedules without tz run in UTC (the gateway's time zone is %s): %s; set tz "
            "(e.g. tz: Europe/Berlin) on each schedule or the gateway's time zone "
            "(timedatectl set-timezone), then restart the gateway",
            name, shown,
        )  # fmt: skip


OUTBOX_FILENAME = "outbox.sqlite3"
_MIB = 1024 * 1024
_PRUNE_EVERY_S = 3600.0
_DISK_EVERY_S = 60.0
_DISK_RESOLVE_MARGIN = 1.1  # disk_low resolves at 10 % above the floor
SNAPSHOT_FAILURES_DEGRADED = 3
"""Snapshot saves failing in a row that turn ``/healthz`` degraded (folder not writable,
disk full): every incident is then stored without its picture."""
DISK_ALERT_KEY = "data_dir"
CLOCK_ALERT_KEY = "wall_clock"
_CLOCK_EVERY_S = 60.0  # while plausible; every tick while not


class ServiceStartError(EdgeError):
    """The gateway could not start (API port taken, data folder not writable, ...)."""


@dataclass
class _Camera:
    config: CameraConfig
    pipeline: CameraPipeline | None = None
    tasks_up: dict[str, bool] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)  # task -> why it is off
    off: str | None = None  # why the camera does not run
    states: dict[str, tuple[dict[str, int], dict[str, dict[str, int]]]] = field(
        default_factory=dict
    )  # last published per task: (zone counts, line counts)


@dataclass
class _Offline:
    """A camera that is offline now (guarded by ``GatewayService._lock``)."""

    since: float  # time.monotonic() when it went offline
    reason: str  # why, as the source said
    raised: bool = False  # camera_offline is active (published, or remembered from before)


@dataclass
class _Stability:
    """A camera's recent offline spans and reconnects, for ``camera_unstable`` (guarded
    by ``GatewayService._lock``; times are ``time.monotonic()``)."""

    started: float  # since when this camera is watched
    offline_since: float | None = None
    spans: deque[tuple[float, float]] = field(default_factory=deque)  # closed offline spans
    backs: deque[float] = field(default_factory=deque)  # when it came back online
    raised: bool = False  # camera_unstable is active (published, or remembered)

    def went(self, online: bool, now: float) -> None:
        if not online:
            if self.offline_since is None:
                self.offline_since = now
        elif self.offline_since is not None:
            self.spans.append((self.offline_since, now))
            self.backs.append(now)
            self.offline_since = None

    def window(self, now: float, window_s: float) -> tuple[int, float]:
        """(reconnects, offline seconds) within ``[now - window_s, now]``."""
        start = now - window_s
        while self.spans and self.spans[0][1] < start:
            self.spans.popleft()
        while self.backs and self.backs[0] < start:
            self.backs.popleft()
        off = sum(e - max(b, start) for b, e in self.spans)
        if self.offline_since is not None:
            off += now - max(self.offline_since, start)
        return len(self.backs), off


class _ApiThread:
    """uvicorn in a background thread (it installs no signal handlers off the main thread).

    :meth:`loop_age` is the event loop's progress age, from the app's
    ``state.loop_heartbeat`` (:class:`~edge.api.app.LoopHeartbeat`, started by the
    app's lifespan; an app without one is only checked for being alive).
    """

    def __init__(
        self, app: Any, *, host: str, port: int, graceful_s: int, http: Any = "h11"
    ) -> None:
        import uvicorn

        self.config = uvicorn.Config(
            app,
            host=host,
            port=port,
            http=http,
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=graceful_s,
            lifespan="on",
        )
        self.server = uvicorn.Server(self.config)
        state = getattr(app, "state", None)
        self.heartbeat: LoopHeartbeat | None = getattr(state, "loop_heartbeat", None)
        self.started_at: float | None = None  # time.monotonic() of start()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="api-server", daemon=True)

    def _run(self) -> None:
        try:
            asyncio.run(self.server.serve())
        except BaseException as exc:  # SystemExit from uvicorn when the port is taken
            self.error = exc
            log.error("API server stopped: %r", exc)

    def start(self, timeout: float) -> None:
        self.started_at = time.monotonic()
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise ServiceStartError(
                    f"the API could not start on {self.config.host}:{self.config.port} "
                    "(port in use or not allowed? see the log above)"
                )
            if time.monotonic() > deadline:
                raise ServiceStartError(f"the API did not start within {timeout:.0f} s")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        for server in getattr(self.server, "servers", []):
            for sock in server.sockets:
                return int(sock.getsockname()[1])
        return int(self.config.port)

    @property
    def alive(self) -> bool:
        return self.thread.is_alive()

    def loop_age(self, now: float) -> float | None:
        """Seconds from the event loop's last heartbeat (from :meth:`start` before the
        first) to ``now`` (``time.monotonic()``); ``None`` without a heartbeat or
        before :meth:`start`."""
        if self.heartbeat is None or self.started_at is None:
            return None
        return self.heartbeat.age(since=self.started_at, now=now)

    def stop(self, timeout: float) -> bool:
        self.server.should_exit = True
        if self.thread.ident is None:
            return True
        self.thread.join(timeout)
        return not self.thread.is_alive()


class GatewayService:
    """The whole gateway in one process (see the module docstring).

    Keyword-only. :meth:`start`, then :meth:`run` (blocks until ``stop_event`` is set),
    then :meth:`stop` (idempotent); or use it as a context manager around :meth:`run`.

    Args:
        config: the validated configuration (``mqtt`` already resolved, e.g. by
            :meth:`GatewayConfig.resolved_mqtt`; ``None`` = no MQTT).
        notifier: systemd notifications (default: from the environment).
        wall_clock: the wall clock the clock check reads, Unix seconds (tests pass their
            own; the pipelines stamp frames with :func:`time.time` regardless).
        timesync_dir: systemd-timesyncd's runtime folder (see :mod:`edge.service.clock`).
        kernel_sync: the kernel's NTP state (default
            :func:`~edge.service.clock.kernel_clock_synchronized`; tests pass their own).
        model_retry_s: seconds from a task switched off at run time (its model kept
            failing) to the pipeline's first retry (doubling per failed retry; tests pass
            a short one).
    """

    def __init__(
        self,
        *,
        config: GatewayConfig,
        notifier: Notifier | None = None,
        wall_clock: Callable[[], float] = time.time,
        timesync_dir: Path = TIMESYNC_DIR,
        kernel_sync: Callable[[], bool | None] = kernel_clock_synchronized,
        model_retry_s: float = MODEL_RETRY_FIRST_S,
    ) -> None:
        self.config = config
        self._model_retry_s = model_retry_s
        self.notifier = notifier or Notifier()
        self.mqtt: MqttConfig | None = config.resolved_mqtt()
        self.cameras: dict[str, _Camera] = {c.name: _Camera(config=c) for c in config.cameras}
        self.store: EventStore | None = None
        self.acks: AckStore | None = None
        self.snapshots: SnapshotStore | None = None
        self.publisher: Any = None  # edge.mqtt.publisher.Publisher (imported lazily)
        self.alert_state: ActiveAlerts | None = None  # with MQTT only
        self.detectors: dict[str, Any] = {}  # model name -> Detector
        self._api_models: dict[str, WatchedModel] = {}  # the API's, by model name
        self.model_errors: dict[str, str] = {}
        self._api: _ApiThread | None = None
        self.app: Any = None
        self._lock = threading.Lock()  # _offline, and camera_offline publications in order
        self._offline: dict[str, _Offline] = {}
        self._stability: dict[str, _Stability] = {}  # camera_unstable, under _lock
        # camera -> (first frame size, size camera_resolution_changed was raised for)
        self._sizes: dict[str, tuple[tuple[int, int], tuple[int, int] | None]] = {}
        self._disk: dict[str, Any] | None = None  # the last check_disk() reading
        self._disk_low = False  # under the floor (with the resolve margin)
        self._disk_alerted = False  # disk_low active (queued, or remembered from before)
        self._disk_error: str | None = None  # the last check's OSError, logged once
        self._wall_clock = wall_clock
        self._timesync_dir = timesync_dir
        self._kernel_sync = kernel_sync
        self._ahead_warned: int | None = None  # the event-ahead-of-clock time logged
        self._clock: ClockReading | None = None  # the last check_clock() reading
        self._clock_alerted = False  # clock_unsynced active (queued, or remembered)
        self._newest_event_ms: int | None = None  # the floor's events part, per minute
        self._prune_lock = threading.Lock()  # _pruned, _events_size
        self._pruned = {"age": 0, "size": 0}  # events deleted by prune_events(), by reason
        self._events_size: DbSize | None = None  # the events database at the last prune
        self._started_at = time.monotonic()
        self._started = False
        self._stopped = False
        self.stop_report: dict[str, Any] = {}

    # -- start -----------------------------------------------------------------------
    def start(self) -> None:
        """Build and start everything (see the module docstring for the order).

        Raises:
            ServiceStartError, EdgeError: start-up failed; what had started is stopped.
        """
        if self._started:
            return
        self._started = True
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        cfg = self.config
        log_local_time_zone(cfg)
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ServiceStartError(f"data_dir {str(cfg.data_dir)!r}: {exc.strerror}") from None
        st = cfg.storage
        self.store = EventStore(path=events_db_path(cfg.data_dir), key=st.events_key())
        self.store.check_key()  # a keyed chain and no key (or another): fail now, not per event
        if st.snapshots:
            self.snapshots = SnapshotStore(
                root=cfg.snapshot_dir(),
                max_age_days=st.snapshot_retention_days,
                max_total_bytes=None
                if st.snapshot_max_mb is None
                else int(st.snapshot_max_mb * _MIB),
                jpeg_quality=st.jpeg_quality,
                sweep_interval_s=st.sweep_interval_s,
                events_db=events_db_path(cfg.data_dir),
            )
            self.snapshots.start()
        if self.mqtt is not None:
            from edge.mqtt.publisher import Publisher, build_ssl_context

            build_ssl_context(self.mqtt)  # bad TLS files: fail now, not after the models
            # Opened (the outbox) now, connected only once the inventory is set: the
            # retained online status must not announce no cameras while models load
            # (minutes on a Jetson building TensorRT engines); until then the broker keeps
            # the last will / shutdown status of the previous run.
            self.publisher = Publisher(
                config=self.mqtt,
                outbox_path=cfg.data_dir / OUTBOX_FILENAME,
                gateway_id=cfg.gateway_id,
                on_alert=self._publisher_alert,
                commands=self._command_dispatcher(self.mqtt),
            )
            self.alert_state = open_active_alerts(active_alerts_path(cfg.data_dir))
        self._load_detectors()
        for cam in self.cameras.values():
            self._build_camera(cam)
        if self.publisher is not None:
            from edge.mqtt.schema import CameraTask

            inventory = [
                CameraTask(
                    camera=name,
                    task=r.spec.name,
                    zones=tuple(z.name for z in r.spec.zones),
                    lines=tuple(ln.name for ln in r.spec.lines),
                )
                for name, cam in self.cameras.items()
                if cam.pipeline is not None
                for r in cam.pipeline.tasks
            ]
            self.publisher.set_inventory(models=sorted(self.detectors), cameras=inventory)
            self.publisher.start()  # connects: the first online status has the inventory
            self._remembered_alerts()
            self._availability_alerts()
        self.check_clock()  # before the pipelines start: their zones see the verdict
        if cfg.service.api:
            self._start_api()
        for cam in self.cameras.values():
            if cam.pipeline is not None:
                cam.pipeline.start()
        self._publish_states(force=True)
        running = sum(1 for c in self.cameras.values() if c.pipeline is not None)
        where = f", API on {self.api_url}" if self._api is not None else ""
        status = f"{running}/{len(self.cameras)} cameras running{where}"
        log.info("gateway %s started: %s", cfg.gateway_id, status)
        self.notifier.ready(status)

    def _command_dispatcher(self, mqtt: MqttConfig) -> Any:
        """The dispatcher of MQTT commands (``None`` when ``mqtt.commands`` is off)."""
        if not mqtt.commands.enabled or self.store is None:
            return None
        from edge.mqtt.commands import CommandDispatcher
        from edge.service.acks import AckHandler

        self.acks = AckStore(path=self.store.path)
        handler = AckHandler(events=self.store, acks=self.acks, monitors=self.zone_monitor)
        return CommandDispatcher(
            gateway=self.config.gateway_id, config=mqtt.commands, handlers={"ack": handler}
        )

    def zone_monitor(self, camera: str, task: str, zone: str) -> ZoneMonitor | None:
        """The running monitor of ``zone`` in ``camera``/``task`` (``None``: not running)."""
        cam = self.cameras.get(camera)
        pipe = None if cam is None else cam.pipeline
        if pipe is None:
            return None
        for runner in pipe.tasks:
            if runner.spec.name == task:
                try:
                    return runner.monitor(zone)
                except KeyError:
                    return None
        return None

    def _load_detectors(self) -> None:
        from edge.runtime.detector import Detector
        from edge.runtime.registry import scan_models

        cfg = self.config
        wanted: set[str] = set()
        for cam in cfg.cameras:
            if cam.enabled:
                for kind, task in cam.tasks.items():
                    name = task_model_name(cfg, kind, task.model)
                    if name is not None:
                        wanted.add(name)
        if cfg.service.api:
            wanted |= {n for n in (cfg.tasks.fence, cfg.tasks.hardhat, cfg.tasks.workwear) if n}
        person = cfg.tasks.wearing.person_model_name(cfg.tasks)
        wears = any(k != "fence" for cam in cfg.cameras if cam.enabled for k in cam.tasks) or (
            cfg.service.api and (cfg.tasks.hardhat or cfg.tasks.workwear)
        )
        if person is not None and wears:  # the worn rule's people (edge/tasks/wearing.py)
            wanted.add(person)
        if not wanted:
            return
        try:
            scan = scan_models(cfg.models_dir)
        except EdgeError as exc:
            for name in wanted:
                self.model_errors[name] = str(exc)
            return
        manifests = scan.manifests
        for problem in scan.problems:  # one bad file must not take the other models down
            log.error("models: %s", problem.message)
        for name in sorted(wanted):
            manifest = manifests.get(name)
            if manifest is None:
                bad = scan.problem_for(name)
                if bad is not None:
                    self.model_errors[name] = bad.message
                    continue
                unread = scan.summary()
                self.model_errors[name] = (
                    f"model {name!r} not found in {str(cfg.models_dir)!r} "
                    f"(have: {', '.join(sorted(manifests)) or 'none'}"
                    + (f"; not loaded: {unread}" if unread else "")
                    + ")"
                )
                continue
            try:
                rt = cfg.runtime
                self.detectors[name] = Detector(
                    manifest,
                    providers=tuple(rt.provider_specs(cfg.api)),
                    intra_op_threads=rt.intra_op_threads or cfg.api.intra_op_threads,
                    allow_spinning=cfg.api.allow_spinning,
                )
            except EdgeError as exc:
                self.model_errors[name] = str(exc)
        for name, why in self.model_errors.items():
            log.error("model %s unavailable: %s", name, why)

    def _build_camera(self, cam: _Camera) -> None:
        c = cam.config
        if not c.enabled:
            cam.off = "disabled in the config"
            return
        runners: list[TaskRunner] = []
        for kind, task in c.tasks.items():
            name = task_model_name(self.config, kind, task.model)
            det = self.detectors.get(name) if name is not None else None
            if det is None:
                why = self.model_errors.get(str(name), f"no model for the {kind} task")
                self._task_off(cam, kind, why)
                continue
            try:
                if kind != "fence":
                    det = self._subjects(kind, det)
                spec = build_task_spec(
                    kind, task, class_names=det.class_names, filters=self.config.filters
                )
                conditions, explainers = build_zone_rules(kind, task, class_names=det.class_names)
                runners.append(
                    TaskRunner(
                        spec=spec,
                        detector=det,
                        camera=c.name,
                        model=name,
                        conditions=conditions,
                        explainers=explainers,
                    )
                )
                cam.tasks_up[kind] = True
            except ValueError as exc:
                self._task_off(cam, kind, str(exc))
        if not runners:
            cam.off = "no task can run"
            log.error("camera %s not started: no task can run", c.name)
            return
        sinks = [self._to_outbox] if self.publisher is not None else []
        cam.pipeline = CameraPipeline(
            camera=c.name,
            source=_source_spec(c),
            tasks=runners,
            store=self.store,
            sinks=sinks,
            status_sinks=[self._camera_status],
            snapshots=self.snapshots,
            task_off_sinks=[self._task_failed],
            task_on_sinks=[self._task_back],
            model_retry_s=self._model_retry_s,
        )

    def _person_detector(self) -> Any:
        """The worn rule's person detector (``None``: rule off or model unavailable)."""
        name = self.config.tasks.wearing.person_model_name(self.config.tasks)
        return self.detectors.get(name) if name is not None else None

    def _subjects(self, kind: TaskKind, det: Any) -> Any:
        """A hard-hat/workwear model wrapped for the pipeline: people with their status
        (:class:`~edge.tasks.compliance.SubjectDetector`)."""
        from edge.tasks.compliance import SubjectDetector
        from edge.tasks.hardhat import HardhatTask
        from edge.tasks.workwear import WorkwearTask

        rule = self.config.tasks.wearing.to_rule()
        person = self._person_detector()
        task: HardhatTask | WorkwearTask
        if kind == "hardhat":
            task = HardhatTask(detector=det, person_detector=person, rule=rule)
        else:
            task = WorkwearTask(detector=det, person_detector=person, rule=rule)
        return SubjectDetector(task=task)

    def _availability_alerts(self) -> None:
        """At each start, one ``task_unavailable`` alert per configured camera task and
        one ``camera_unavailable`` per camera: ``active`` for what cannot run now,
        ``resolved`` for the rest, so an alert raised by an earlier start clears once
        the model is installed or the config fixed (a subscriber that never saw the
        alert gets a ``resolved`` it can ignore). A disabled camera and its tasks are
        resolved: disabling is the operator's choice, not a fault."""
        for name, cam in self.cameras.items():
            enabled = cam.config.enabled
            for task in cam.config.tasks:
                why = cam.reasons.get(task)
                msg = why or ("available" if enabled else "camera disabled in the config")
                key, on = f"{name}/{task}", why is not None
                self._alert("task_unavailable", key, on, msg, "critical", camera=name, task=task)
            off = cam.off if enabled else None
            running = "running " + ", ".join(t for t, up in cam.tasks_up.items() if up)
            msg = off or (running if enabled else "disabled in the config")
            self._alert("camera_unavailable", name, off is not None, msg, "critical", camera=name)

    def _remembered_alerts(self) -> None:
        """At each start, before :meth:`_availability_alerts`: resolve and forget every
        remembered active alert that nothing configured now would resolve -- its camera
        was removed from the config, its task removed from the camera, or (a
        ``camera_offline``) its camera does not run now. A ``camera_offline`` of a camera
        that runs is marked offline and raised, so its first frame resolves it. A
        ``disk_low`` is marked raised, so the first disk check with enough space resolves
        it (at once when ``storage.min_free_mb`` is 0: the check is off)."""
        state = self.alert_state
        if state is None:
            return
        for a in state.active():
            if a.kind == "clock_unsynced":
                self._clock_alerted = True  # the first check_clock() resolves it if right
                continue
            if a.kind == "disk_low":
                if self.config.storage.min_free_mb > 0:
                    self._disk_low = self._disk_alerted = True
                    continue
                why = "disk check off (storage.min_free_mb: 0)"
                if self._resolve_remembered(a, why):
                    log.info("alert %s/%s (active since %s) resolved: %s",
                             a.kind, a.key, a.since, why)  # fmt: skip
                continue
            cam = self.cameras.get(a.camera)
            if cam is None:
                why = "camera removed from the config"
            elif a.task is not None and a.task not in cam.config.tasks:
                why = "task removed from the config"
            elif a.kind in ("camera_offline", "camera_unstable") and cam.pipeline is None:
                why = f"camera not running: {cam.off}"
            elif a.kind == "camera_resolution_changed":
                why = "gateway restarted: the first frame after this start is the new reference"
            else:
                if a.kind == "camera_unstable":  # resolved after a calm window
                    with self._lock:
                        self._stability[a.camera] = _Stability(
                            started=time.monotonic(), raised=True
                        )
                if a.kind == "camera_offline":
                    with self._lock:
                        self._offline[a.camera] = _Offline(
                            since=time.monotonic(), reason=a.message, raised=True
                        )
                continue
            if self._resolve_remembered(a, why):
                log.info(
                    "alert %s/%s (active since %s: %s) resolved: %s",
                    a.kind, a.key, a.since, a.message, why,
                )  # fmt: skip

    def _resolve_remembered(self, a: ActiveAlert, why: str) -> bool:
        """Publish ``resolved`` for a remembered alert and forget it; False when it could
        not be queued (it stays remembered: the next start tries again)."""
        camera = a.camera or None  # "" for gateway-wide alerts (disk_low)
        return self._alert(a.kind, a.key, False, why, a.severity, camera=camera, task=a.task)

    def _task_off(self, cam: _Camera, kind: str, why: str) -> None:
        cam.tasks_up[kind] = False
        cam.reasons[kind] = why
        log.error("camera %s: task %s is off: %s", cam.config.name, kind, why)

    def _task_failed(self, camera: str, task: str, why: str) -> None:
        """A pipeline switched ``task`` off (its model kept failing at run time): the same
        *off* state and ``task_unavailable`` alert as a model missing at start; the
        camera's other tasks and the other cameras go on (pipeline thread)."""
        cam = self.cameras[camera]
        self._task_off(cam, task, why)
        self._alert("task_unavailable", f"{camera}/{task}", True, why, "critical",
                    camera=camera, task=task)  # fmt: skip
        if not any(cam.tasks_up.values()):
            cam.off = "no task can run: " + "; ".join(f"{t}: {r}" for t, r in cam.reasons.items())
            log.error("camera %s: no task runs any more", camera)
            self._alert("camera_unavailable", camera, True, cam.off, "critical", camera=camera)

    def _task_back(self, camera: str, task: str, message: str) -> None:
        """A task switched off at run time is back on (a retry of its model succeeded):
        on again in ``/healthz`` and the metrics, its ``task_unavailable`` resolved, and
        the ``camera_unavailable`` its off raised (no task was left) too (pipeline
        thread; the pipeline logged the INFO line)."""
        cam = self.cameras[camera]
        cam.tasks_up[task] = True
        cam.reasons.pop(task, None)
        camera_back = cam.off is not None and cam.pipeline is not None  # by _task_failed
        if camera_back:
            cam.off = None
        self._alert("task_unavailable", f"{camera}/{task}", False, message, "critical",
                    camera=camera, task=task)  # fmt: skip
        if camera_back:
            running = "running " + ", ".join(t for t, up in cam.tasks_up.items() if up)
            self._alert("camera_unavailable", camera, False, running, "critical", camera=camera)

    def _start_api(self) -> None:
        from edge.api.app import build_app

        cfg = self.config

        def watched(name: str | None) -> Any:
            det = self.detectors.get(name) if name else None
            if det is None or name is None:
                return None
            if name not in self._api_models:
                self._api_models[name] = WatchedModel(det, name)
            return self._api_models[name]

        by_api: dict[str, Any] = {}
        for api in ("fence", "hardhat", "workwear"):
            by_api[api] = watched(getattr(cfg.tasks, api))
        sinks = [self.publisher.publish_alert] if self.publisher is not None else []
        results: list[ResultSink] = []
        if self.publisher is not None and self.publisher.config.results:
            publisher = self.publisher
            results.append(lambda api, record: publisher.publish_result(record, task=api))
        self.app = build_app(
            cfg,
            detectors=by_api,  # type: ignore[arg-type]
            person_detector=watched(cfg.tasks.wearing.person_model_name(cfg.tasks)),
            alert_sinks=sinks,
            result_sinks=results,
        )
        _install_routes(self.app, self)
        graceful = max(1, int(min(cfg.api.deadline_s, cfg.service.stop_timeout_s / 2)))
        from edge.api.http_protocol import guarded_protocol

        self._api = _ApiThread(
            self.app,
            host=cfg.api.host,
            port=cfg.api.port,
            graceful_s=graceful,
            http=guarded_protocol(cfg.api),  # header timeout + connection caps
        )
        self._api.start(timeout=30.0)

    # -- outputs -----------------------------------------------------------------------
    def _to_outbox(self, event: ZoneEvent) -> None:
        from edge.mqtt.schema import Event

        self.publisher.publish_event(Event(**event.mqtt_fields()))

    def _camera_status(self, camera: str, online: bool, reason: str) -> None:
        """A camera's status changed (its reader thread): remember since when it is
        offline; raise ``camera_offline`` now only when its ``offline_alert_after_s`` is
        0 (else :meth:`_due_offline_alerts` does, from :meth:`run`); resolve it on the
        first frame only if it was raised. The lock is held while publishing, so an
        ``active`` and its ``resolved`` reach the outbox in that order."""
        cam = self.cameras.get(camera)
        after = cam.config.offline_alert_after_s if cam is not None else 0.0
        with self._lock:
            now = time.monotonic()
            self._stability.setdefault(camera, _Stability(started=now)).went(online, now)
            st = self._offline.get(camera)
            if online:
                if st is None:
                    return  # first frame after start: nothing to resolve
                del self._offline[camera]
                if not st.raised:
                    log.info(
                        "camera %s back after %.1f s offline: no camera_offline alert "
                        "(offline_alert_after_s %g s)",
                        camera, time.monotonic() - st.since, after,
                    )  # fmt: skip
                    return
            else:
                if st is not None:
                    return
                st = _Offline(since=time.monotonic(), reason=reason)
                self._offline[camera] = st
                if after > 0:
                    return
                st.raised = True
            self._alert("camera_offline", camera, not online, reason, "warning", camera=camera)

    def _due_offline_alerts(self, now: float) -> None:
        """Raise ``camera_offline`` for each camera offline for its
        ``offline_alert_after_s`` or longer (``now``: ``time.monotonic()``)."""
        with self._lock:
            for name, st in self._offline.items():
                cam = self.cameras.get(name)
                if st.raised or cam is None:
                    continue
                offline_s = now - st.since
                after = cam.config.offline_alert_after_s
                if offline_s < after:
                    continue
                st.raised = True
                log.warning(
                    "camera %s offline for %.0f s (offline_alert_after_s %g s): raising "
                    "camera_offline: %s",
                    name, offline_s, after, st.reason,
                )  # fmt: skip
                msg = f"offline for {offline_s:.0f} s: {st.reason}"
                self._alert("camera_offline", name, True, msg, "warning", camera=name)

    def _due_unstable_alerts(self, now: float) -> None:
        """Raise or resolve ``camera_unstable`` per running camera from its reconnects and
        offline time within its ``unstable_window_s`` (see :class:`CameraConfig`);
        ``now``: ``time.monotonic()``."""
        with self._lock:
            for name, cam in self.cameras.items():
                c = cam.config
                if cam.pipeline is None:
                    continue
                st = self._stability.setdefault(name, _Stability(started=now))
                n_max, ratio_max = c.unstable_reconnects, c.unstable_offline_ratio
                window = c.unstable_window_s
                backs, off_s = st.window(now, window)
                ratio = off_s / window
                if not st.raised:
                    many = n_max is not None and backs >= n_max
                    long = ratio_max is not None and ratio >= ratio_max and backs > 0
                    if not (many or long):
                        continue
                else:
                    calm = (n_max is None or backs < max(1, n_max // 2)) and (
                        ratio_max is None or ratio <= ratio_max / 2
                    )
                    if not calm or now - st.started < window:
                        continue
                msg = (
                    f"{backs} reconnect(s) and {off_s:.0f} s offline ({100 * ratio:.0f} %) in "
                    f"the last {window:g} s (unstable_reconnects {n_max}, "
                    f"unstable_offline_ratio {ratio_max})"
                )
                extra = {
                    "reconnects": backs,
                    "offline_ratio": round(ratio, 3),
                    "window_s": window,
                }
                if not st.raised:
                    log.warning("camera %s unstable: %s; raising camera_unstable", name, msg)
                else:
                    log.info("camera %s stable again: %s; camera_unstable resolved", name, msg)
                if self._alert("camera_unstable", name, not st.raised, msg, "warning",
                               camera=name, extra=extra):  # fmt: skip
                    st.raised = not st.raised

    def _check_frame_sizes(self) -> None:
        """``camera_resolution_changed`` while a camera delivers another frame size than
        its first one since start (e.g. 320x240 after a reconnect instead of 640x480),
        resolved when it is back to the first size. Pixel zones and counting lines are scaled by
        their monitors and counters (:func:`edge.stream.zones.fit_pixel_points`); normalised
        ones need nothing."""
        for name, cam in self.cameras.items():
            pipe = cam.pipeline
            frame = None if pipe is None else pipe.latest_frame()
            if frame is None:
                continue
            size = frame.size
            first, alerted = self._sizes.setdefault(name, (size, None))
            if size == first and alerted is not None:
                msg = f"frame size back to {first[0]}x{first[1]}"
                log.info("camera %s: %s", name, msg)
                extra = {"old_size": list(alerted), "new_size": list(size)}
                if self._alert("camera_resolution_changed", name, False, msg, "warning",
                               camera=name, extra=extra):  # fmt: skip
                    self._sizes[name] = (first, None)
            elif size != first and size != alerted:
                pixel = [
                    f"{r.spec.name}/{m.spec.name}"
                    for r in (pipe.tasks if pipe is not None else [])
                    for m in r.monitors
                    if m.spec.polygon is not None and not m.spec.normalized
                ]
                msg = (
                    f"frame size changed from {first[0]}x{first[1]} to {size[0]}x{size[1]}; "
                    + (
                        f"pixel zones scaled to the new size: {', '.join(pixel)}"
                        if pixel
                        else "no pixel zones (normalised zones are unaffected)"
                    )
                    + "; counting lines given in pixels are scaled too"
                )
                log.warning("camera %s: %s", name, msg)
                extra = {"old_size": list(first), "new_size": list(size)}
                if self._alert("camera_resolution_changed", name, True, msg, "warning",
                               camera=name, extra=extra):  # fmt: skip
                    self._sizes[name] = (first, size)

    def check_disk(self) -> dict[str, Any] | None:
        """One pass of the free-space check of ``data_dir`` (:meth:`run` calls it every
        minute): records the reading for ``/metrics`` and ``/healthz`` and raises or
        resolves ``disk_low`` when its state changes (see the module docstring).

        Returns:
            ``{"path", "free_bytes", "size_bytes", "min_free_bytes", "low"}`` (bytes:
            ints; ``free_bytes``: what an unprivileged user may still write), or
            ``None`` when the filesystem cannot be read (logged once until it can).
        """
        path = self.config.data_dir
        floor = int(self.config.storage.min_free_mb * _MIB)
        try:
            usage = shutil.disk_usage(path)
        except OSError as exc:
            why = exc.strerror or str(exc)
            if why != self._disk_error:
                log.error("free space of data_dir %r unknown: %s", str(path), why)
            self._disk_error = why
            self._disk = None
            return None
        self._disk_error = None
        low = disk_is_low(usage.free, floor, was_low=self._disk_low)
        msg = _disk_message(path, usage.free, usage.total, floor)
        if low != self._disk_low:
            self._disk_low = low
            if low:
                log.warning("disk low: %s", msg)
            else:
                log.info("disk space back: %s", msg)
        reading: dict[str, Any] = {
            "path": str(path),
            "free_bytes": int(usage.free),
            "size_bytes": int(usage.total),
            "min_free_bytes": floor,
            "low": low,
        }
        self._disk = reading
        if low != self._disk_alerted:  # changed, or an earlier attempt was not queued
            fields = {k: v for k, v in reading.items() if k != "low"}
            if self._alert("disk_low", DISK_ALERT_KEY, low, msg, "warning", extra=fields):
                self._disk_alerted = low
        return dict(reading)

    def _scheduled_monitors(self) -> list[ZoneMonitor]:
        """The zone monitors of the running pipelines whose zone has a schedule."""
        return [
            mon
            for cam in self.cameras.values()
            if cam.pipeline is not None
            for runner in cam.pipeline.tasks
            for mon in runner.monitors
            if mon.spec.schedule is not None
        ]

    def check_clock(self, *, refresh_floor: bool = True) -> ClockReading:
        """One wall-clock plausibility check (see the module docstring and
        :mod:`edge.service.clock`): on a change, tell every scheduled zone monitor
        whether to apply its schedule, log one line (WARNING when the clock turns
        implausible, INFO when it is right again) and raise or resolve
        ``clock_unsynced``. A newest event after a synchronized clock is logged once (a
        WARNING per such event time). ``refresh_floor``: read the newest event time from
        the events database again (else the last one read)."""
        if (refresh_floor or self._clock is None) and self.store is not None:
            try:
                newest = self.store.list_events(limit=1)
            except EdgeError as exc:
                log.error("clock check: newest event time unknown: %s", exc)
            else:
                self._newest_event_ms = newest[0].time_ms if newest else None
        reading = check_clock(
            now_ms=int(self._wall_clock() * 1000),
            newest_event_ms=self._newest_event_ms,
            synchronized=clock_synchronized(self._timesync_dir, self._kernel_sync),
            require_sync=self.config.service.clock_require_sync,
        )
        was = self._clock
        self._clock = reading
        ahead = reading.ahead_event_ms
        if ahead is not None and ahead != self._ahead_warned:
            self._ahead_warned = ahead
            log.warning(
                "clock check: %s; not a floor for the clock (it is NTP synchronized)",
                reading.message(),
            )
        changed = was is None or was.plausible != reading.plausible
        if changed:
            monitors = self._scheduled_monitors()
            for mon in monitors:
                mon.trust_wall_clock(reading.plausible)
            if not reading.plausible:
                log.warning(
                    "wall clock implausible: %s; %d scheduled zone(s) stay armed at all hours "
                    "(fail-safe) until the clock is right: %s",
                    reading.message(), len(monitors),
                    ", ".join(f"{m.camera}/{m.task}/{m.spec.name}" for m in monitors) or "none",
                )  # fmt: skip
            elif was is not None:
                log.info(
                    "wall clock plausible again: %s; %d scheduled zone(s) follow their "
                    "schedule again", reading.message(), len(monitors),
                )  # fmt: skip
        if reading.plausible == self._clock_alerted:  # changed, or not queued before
            extra = {"clock": reading.as_dict()}
            msg = reading.message()
            if not reading.plausible:
                msg += "; scheduled zones stay armed at all hours until the clock is right"
            if self._alert("clock_unsynced", CLOCK_ALERT_KEY, not reading.plausible, msg,
                           "warning", extra=extra):  # fmt: skip
                self._clock_alerted = not reading.plausible
        return reading

    def _alert(
        self,
        kind: str,
        key: str,
        active: bool,
        message: str,
        severity: str,
        *,
        camera: str | None = None,
        task: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> bool:
        """Queue one alert on the alerts topic and keep the remembered set in step:
        an ``active`` one is remembered before it is queued (a crash in between costs at
        most a ``resolved`` for an alert never sent), a ``resolved`` one forgotten after
        (a crash in between costs at most a repeated ``resolved``). The payload carries
        ``camera`` for the camera alerts (``task`` is None), as it always has; a
        ``task_unavailable`` carries its camera and task in the key; a gateway-wide alert
        (``camera`` None: ``disk_low``) carries no camera and is remembered with camera
        ``""``. ``extra``: more payload fields. Returns whether it was queued."""
        if self.publisher is None:
            return False
        state = self.alert_state
        if active and state is not None:
            try:
                state.raised(
                    kind=kind, key=key, camera=camera or "", task=task, severity=severity,
                    message=message,
                )  # fmt: skip
            except EdgeError as exc:
                log.error(
                    "alert %s/%s not remembered (it will not be resolved if its camera or "
                    "task is removed from the config): %s",
                    kind, key, exc,
                )  # fmt: skip
        alert = {
            "kind": kind,
            "key": key,
            "state": "active" if active else "resolved",
            "severity": severity,
            "message": message,
            **({"camera": camera} if task is None and camera is not None else {}),
            **(extra or {}),
        }
        try:
            self.publisher.publish_alert(alert)
        except EdgeError as exc:
            log.error("alert %s/%s not queued: %s", kind, key, exc)
            return False
        if not active and state is not None:
            try:
                state.resolved(kind, key)
            except EdgeError as exc:
                log.error("alert %s/%s resolved but still remembered: %s", kind, key, exc)
        return True

    @staticmethod
    def _publisher_alert(alert: dict[str, Any]) -> None:
        log.warning("mqtt alert %s/%s %s: %s", alert.get("kind"), alert.get("key"),
                    alert.get("state"), alert.get("message"))  # fmt: skip

    def _publish_states(self, *, force: bool = False) -> None:
        if self.publisher is None:
            return
        for name, cam in self.cameras.items():
            pipe = cam.pipeline
            if pipe is None:
                continue
            zones = pipe.metrics()["tasks"]
            for runner in pipe.tasks:
                task = runner.spec.name
                stats = zones.get(task, {}).get("zones", {})
                counts = {
                    z.name: int(stats.get(z.name, {}).get("inside", 0)) for z in runner.spec.zones
                }
                crossed = zones.get(task, {}).get("lines", {})
                lines = {
                    ln.name: {d: int(crossed.get(ln.name, {}).get(d, 0)) for d in ("in", "out")}
                    for ln in runner.spec.lines
                }
                if force or cam.states.get(task) != (counts, lines):
                    try:
                        self.publisher.publish_state(name, task, counts, lines=lines)
                        cam.states[task] = (counts, lines)
                    except EdgeError as exc:
                        log.debug("state %s/%s not published: %s", name, task, exc)

    # -- supervision -------------------------------------------------------------------
    @property
    def api_url(self) -> str | None:
        """``http://host:port`` of the in-process API (``None`` when it is off)."""
        if self._api is None:
            return None
        return f"http://{self.config.api.host}:{self._api.port}"

    def problems(self) -> list[str]:
        """Why the service is not healthy now (empty = healthy): a pipeline thread or the
        API thread that ended unexpectedly (a file without ``loop`` may end), a
        pipeline without progress for more than ``service.stall_timeout_s``
        (:meth:`CameraPipeline.stalled_for`: its loop or its source reader is stuck; a
        camera that is offline and reconnecting is not), or an API event loop without a
        heartbeat for that long (blocked; an idle API keeps beating)."""
        out = []
        limit = self.config.service.stall_timeout_s
        for name, cam in self.cameras.items():
            pipe = cam.pipeline
            if pipe is None:
                continue
            if not pipe.wait(0):
                now = time.monotonic()
                stalled = pipe.stalled_for(now)
                if limit is not None and stalled > limit:
                    out.append(_stall_problem(name, stalled, pipe.progress_ages(now)))
                continue
            c = cam.config
            ends = isinstance(c.source, str) and source_kind(c.source) == "file" and not c.loop
            if not ends or not pipe.source.finished:
                out.append(f"camera {name}: pipeline ended")
        if self._api is not None:
            if not self._api.alive:
                out.append("API server ended")
            elif limit is not None:
                age = self._api.loop_age(time.monotonic())
                if age is not None and age > limit:
                    out.append(_api_stuck_problem(age))
        return out

    def run(self, stop_event: threading.Event) -> int:
        """Supervise until ``stop_event`` is set (0) or a part died (1); see the module
        docstring. Does not stop the service: call :meth:`stop` afterwards."""
        interval = self.config.service.state_interval_s
        wd = self.notifier.watchdog_interval_s
        tick = min(interval, wd) if wd is not None else interval
        tick = min(tick, 1.0)
        next_state = next_wd = time.monotonic()
        last_prune = last_disk = -float("inf")
        last_clock = time.monotonic()  # start() checked
        while not stop_event.is_set():
            now = time.monotonic()
            bad = self.problems()
            if bad:
                log.error("gateway unhealthy, stopping: %s", "; ".join(bad))
                self.notifier.status("unhealthy: " + "; ".join(bad))
                return 1
            if wd is not None and now >= next_wd:
                self.notifier.watchdog()
                next_wd = now + wd
            if now >= next_state:
                self._publish_states()
                next_state = now + interval
            self._due_offline_alerts(now)
            self._due_unstable_alerts(now)
            self._check_frame_sizes()
            minute = now - last_clock >= _CLOCK_EVERY_S
            if minute or (self._clock is not None and not self._clock.plausible):
                self.check_clock(refresh_floor=minute)
                if minute:
                    last_clock = now
            if now - last_disk >= _DISK_EVERY_S:
                last_disk = now
                self.check_disk()
            if now - last_prune >= _PRUNE_EVERY_S:
                last_prune = now
                self.prune_events()
            stop_event.wait(tick)
        return 0

    def prune_events(self) -> PruneReport | None:
        """One pruning pass (the run loop's hourly one): by ``storage.events_retention_days``,
        then by ``storage.events_max_mb`` (:func:`edge.stream.retention.prune_events`);
        counted in the metrics. ``None`` before :meth:`start` or when it failed (logged
        as an ERROR; the next pass tries again)."""
        st = self.config.storage
        if self.store is None:
            return None
        days = st.events_retention_days
        before = None if days is None else time.time_ns() // 1_000_000 - int(days * 86_400_000)
        try:
            report = retention.prune_events(
                self.store, self.acks, before_ms=before, max_bytes=st.events_max_bytes()
            )
        except EdgeError as exc:
            log.error("event pruning failed: %s", exc)
            return None
        if report.by_age:
            log.info("pruned %d events older than %g days", report.by_age, days)
        with self._prune_lock:
            self._pruned["age"] += report.by_age
            self._pruned["size"] += report.by_size
            self._events_size = report.size
        return report

    # -- health and metrics --------------------------------------------------------------
    def camera_metrics(self) -> list[dict[str, Any]]:
        """Per-camera metrics (:meth:`CameraPipeline.metrics` plus ``running``)."""
        out: list[dict[str, Any]] = []
        for name, cam in self.cameras.items():
            pipe = cam.pipeline
            if pipe is None:
                out.append({"camera": name, "online": False, "running": False})
                continue
            m = pipe.metrics()
            m["running"] = not pipe.wait(0)
            out.append(m)
        return out

    def health(self) -> dict[str, Any]:
        """The gateway part of ``/healthz``: ``status`` (``ok``/``degraded``), cameras,
        MQTT, disk, clock, uptime and ``problems`` (:meth:`problems`). Degraded: a camera
        offline or not running, a task off, a part ended unexpectedly or stalled, free disk
        space under ``storage.min_free_mb``, ``SNAPSHOT_FAILURES_DEGRADED`` snapshot saves
        failed in a row (a problem line names the folder), an API model whose last
        ``MODEL_FAILURES_OFF`` calls or more all raised (every request answers 5001; a
        problem line names the model and its last error), an implausible wall clock
        (``clock``: the last :meth:`check_clock` reading, with its ``message``). An offline
        camera shows ``offline_for_s`` and ``offline_alert`` (whether ``camera_offline`` is raised
        yet); ``disk`` is the last :meth:`check_disk` reading (``null`` before the first
        or when unreadable)."""
        cams: dict[str, Any] = {}
        problems = self.problems()
        degraded = bool(problems)
        now = time.monotonic()
        with self._lock:
            offline = {n: (now - st.since, st.raised) for n, st in self._offline.items()}
            unstable = {n for n, st in self._stability.items() if st.raised}
        for m in self.camera_metrics():
            name = m["camera"]
            cam = self.cameras[name]
            entry: dict[str, Any] = {
                "online": m.get("online"),
                "running": m["running"],
                "tasks": dict(cam.tasks_up),
            }
            if cam.reasons:
                entry["tasks_off"] = dict(cam.reasons)
                degraded = True
            if cam.off is not None:
                entry["off"] = cam.off
                degraded = degraded or cam.config.enabled
            if "fps" in m:
                entry.update(
                    fps=round(m["fps"], 2),
                    frames_processed=m["frames_processed"],
                    frames_dropped=m["frames_dropped"],
                    frames_skipped=m["frames_skipped"],
                    reconnects=m["reconnects"],
                    inference_ms={
                        t: round(v["stage_ms"]["inference"]["mean_ms"], 2)
                        for t, v in m["tasks"].items()
                    },
                    latency_ms={k: round(v, 1) for k, v in m["latency_ms"].items()},
                    events=m["events"],
                    open_incidents=m["open_incidents"],
                    progress_age_s={k: round(v, 1) for k, v in m["progress_age_s"].items()},
                )
            if cam.config.enabled and not m.get("online"):
                degraded = True
            if name in unstable:
                entry["unstable"] = True  # camera_unstable raised
                degraded = True
            if name in offline and not m.get("online"):
                entry["offline_for_s"] = round(offline[name][0], 1)
                entry["offline_alert"] = offline[name][1]
            cams[name] = entry
        mqtt: dict[str, Any] = {"configured": self.publisher is not None}
        if self.publisher is not None:
            mqtt.update(
                connected=bool(self.publisher.connected),
                outbox_rows=int(self.publisher.outbox.rows),
                last_error=self.publisher.last_error,
            )
        disk = self._disk
        if disk is not None and disk["low"]:
            degraded = True
        clock = self._clock
        if clock is not None and not clock.plausible:
            degraded = True
        for model in list(self._api_models.values()):
            failing = model.failing(MODEL_FAILURES_OFF)
            if failing is not None:  # every request answers 5001
                degraded = True
                problems.append(failing)
        snaps = self.snapshots
        if snaps is not None and snaps.failures_in_a_row >= SNAPSHOT_FAILURES_DEGRADED:
            degraded = True
            problems.append(
                f"snapshots: the last {snaps.failures_in_a_row} snapshots could not be saved "
                f"in {snaps.root} (storage.snapshot_dir; see the log)"
            )
        return {
            "status": "degraded" if degraded else "ok",
            "gateway": self.config.gateway_id,
            "version": __version__,
            "uptime_s": round(time.monotonic() - self._started_at, 1),
            "cameras": cams,
            "mqtt": mqtt,
            "disk": None if disk is None else dict(disk),
            "clock": None if clock is None else clock.as_dict(),
            "problems": problems,
        }

    def metrics_text(self) -> str:
        """Prometheus text of the cameras, tasks, publisher, the API event loop's
        progress age and the data folder's free space (:mod:`edge.service.metrics`)."""
        tasks_up = {
            (name, task): up
            for name, cam in self.cameras.items()
            for task, up in cam.tasks_up.items()
        }
        pub = self.publisher.metrics() if self.publisher is not None else None
        api_age = self._api.loop_age(time.monotonic()) if self._api is not None else None
        with self._prune_lock:
            size = self._events_size
            events_db: dict[str, int] | None = None
            if self.store is not None:
                events_db = {f"pruned_{k}": v for k, v in self._pruned.items()}
                if size is not None:
                    events_db.update(file_bytes=size.file_bytes, live_bytes=size.live_bytes)
        return prometheus_text(
            self.camera_metrics(),
            tasks_up=tasks_up,
            publisher=pub,
            api_loop_age_s=api_age,
            disk=self._disk,
            events_db=events_db,
        )

    # -- stop --------------------------------------------------------------------------
    def stop(self) -> dict[str, Any]:
        """Stop everything within ``service.stop_timeout_s`` (order in the module
        docstring); returns what happened (``pipelines_stopped``, ``api_stopped``,
        ``flushed``, ``outbox_left``, ``seconds``). Idempotent."""
        if self._stopped:
            return self.stop_report
        self._stopped = True
        svc = self.config.service
        t0 = time.monotonic()
        deadline = t0 + svc.stop_timeout_s
        self.notifier.stopping("stopping")
        log.info("gateway %s stopping", self.config.gateway_id)
        report: dict[str, Any] = {}

        def left() -> float:
            return max(0.0, deadline - time.monotonic())

        # 1. pipelines and the API in parallel; keep the flush budget (+1 s to close).
        budget = max(1.0, left() - svc.flush_timeout_s - 1.0)
        results: dict[str, bool] = {}
        threads = []
        for name, cam in self.cameras.items():
            pipe = cam.pipeline
            if pipe is not None:

                def stop_pipe(p: CameraPipeline = pipe, n: str = name) -> None:
                    results[n] = p.stop(timeout=budget)

                threads.append(threading.Thread(target=stop_pipe, name=f"stop-{name}"))
        if self._api is not None:
            api = self._api

            def stop_api() -> None:
                results["(api)"] = api.stop(timeout=budget)

            threads.append(threading.Thread(target=stop_api, name="stop-api"))
        for t in threads:
            t.start()
        for t in threads:
            t.join(budget + 0.5)
        report["pipelines_stopped"] = all(v for k, v in results.items() if k != "(api)")
        report["api_stopped"] = results.get("(api)", True)
        # 2. the outbox, as far as the broker acknowledges, then the publisher.
        if self.publisher is not None:
            flushed = self.publisher.flush(min(svc.flush_timeout_s, max(0.0, left() - 1.0)))
            report["flushed"] = flushed
            report["outbox_left"] = int(self.publisher.outbox.rows)
            if not flushed:
                log.warning(
                    "stopping with %d message(s) in the outbox; they go out after the next start",
                    report["outbox_left"],
                )
            self.publisher.close(timeout=max(0.5, left()))
        # 3. models and stores.
        for det in self.detectors.values():
            det.close()
        if self.snapshots is not None:
            self.snapshots.close(timeout=max(0.1, min(2.0, left())))
        if self.alert_state is not None:
            self.alert_state.close()
        if self.acks is not None:
            self.acks.close()
        if self.store is not None:
            self.store.close()
        self.notifier.close()
        report["seconds"] = round(time.monotonic() - t0, 3)
        log.info("gateway %s stopped: %s", self.config.gateway_id, report)
        self.stop_report = report
        return report

    def __enter__(self) -> GatewayService:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def disk_is_low(free_bytes: int, floor_bytes: int, *, was_low: bool) -> bool:
    """Whether free space is low: under ``floor_bytes``, or -- once low -- still under
    10 % above it (so a disk hovering at the floor does not flap). A floor of 0: never.

    >>> disk_is_low(400, 500, was_low=False), disk_is_low(520, 500, was_low=True)
    (True, True)
    >>> disk_is_low(550, 500, was_low=True), disk_is_low(0, 0, was_low=True)
    (False, False)
    """
    if floor_bytes <= 0:
        return False
    limit = floor_bytes * _DISK_RESOLVE_MARGIN if was_low else floor_bytes
    return free_bytes < limit


def _disk_message(path: Path, free: int, total: int, floor: int) -> str:
    return (
        f"{free / _MIB:.0f} MiB free of {total / _MIB:.0f} MiB in {str(path)!r} "
        f"(storage.min_free_mb: {floor / _MIB:g})"
    )


def _stall_problem(camera: str, stalled_s: float, ages: Mapping[str, float]) -> str:
    """``camera NAME: pipeline stalled for N s (no progress since <UTC>; stuck: ...)``."""
    since = datetime.fromtimestamp(time.time() - stalled_s, tz=timezone.utc)
    reader = ages.get("reader", 0.0) >= ages.get("loop", 0.0)
    where = "the source reader" if reader else "the camera loop"
    return (
        f"camera {camera}: pipeline stalled for {stalled_s:.0f} s (no progress since "
        f"{since.isoformat(timespec='seconds').replace('+00:00', 'Z')}; stuck: {where})"
    )


def _api_stuck_problem(age_s: float) -> str:
    """``API event loop stuck for N s (no progress since <UTC>)``."""
    since = datetime.fromtimestamp(time.time() - age_s, tz=timezone.utc)
    return (
        f"API event loop stuck for {age_s:.0f} s (no progress since "
        f"{since.isoformat(timespec='seconds').replace('+00:00', 'Z')})"
    )


def _source_spec(c: CameraConfig) -> SourceSpec:
    return SourceSpec(
        uri=c.resolved_source(),
        target_fps=c.target_fps,
        loop=c.loop,
        realtime=c.realtime,
        rtsp_tcp=c.rtsp_transport == "tcp",
        width=c.width,
        height=c.height,
        open_timeout_s=c.open_timeout_s,
        read_timeout_s=c.read_timeout_s,
        backoff_max_s=c.backoff_max_s,
    )


def _install_routes(app: Any, service: GatewayService) -> None:
    """Put gateway-aware ``/healthz`` and ``/metrics`` in front of the API's own: the
    API's answer (when its handler takes no arguments) extended with the cameras."""
    import anyio
    from starlette.requests import Request
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    base_health = None
    for route in app.router.routes:
        if getattr(route, "path", None) == "/healthz":
            endpoint = getattr(route, "endpoint", None)
            if endpoint is not None and not inspect.signature(endpoint).parameters:
                base_health = endpoint
            break

    async def healthz(_request: Request) -> Response:
        base: Mapping[str, Any] = {}
        if base_health is not None:
            got = await base_health()
            base = got if isinstance(got, Mapping) else {}
        extra = await anyio.to_thread.run_sync(service.health)
        return JSONResponse({**base, **extra})

    async def metrics(_request: Request) -> Response:
        def text() -> str:
            own = str(app.state.gateway.metrics_text())
            return own + service.metrics_text()

        body = await anyio.to_thread.run_sync(text)
        return PlainTextResponse(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    app.router.routes.insert(0, Route("/healthz", healthz, methods=["GET"]))
    app.router.routes.insert(0, Route("/metrics", metrics, methods=["GET"]))


def default_outbox_path(data_dir: Path) -> Path:
    """Where ``run`` keeps the MQTT outbox: ``data_dir / "outbox.sqlite3"``."""
    return Path(data_dir) / OUTBOX_FILENAME
