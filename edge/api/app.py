"""The composition root of the HTTP API: :func:`build_app` wires config, store, models,
worker pool and routes into one FastAPI application.

Paths (``../shared/CONTRACT.md``)::

    POST /v1/aiop/api/{service_code}/SafeHat/base/hat_detect
    POST /v1/aiop/api/{service_code}/UniformIdentity/base/clothes_detect
    POST /v1/aiop/api/{service_code}/ef-http/electron/fence
    GET  /metrics                      Prometheus text
    GET  /healthz                      liveness + model status (no secrets)
    GET  /console/api/...              JSON console (admin token), see :func:`_console_routes`
    GET  /openapi.json, /docs          the three APIs and their codes

Order of checks for an API request (the first failing check answers; codes per API in
:mod:`edge.api.contract`):

1. path and service code: unknown path, unknown service code, or a service code granted
   for another API than the path -> ``4000``;
2. method is not POST -> ``4004`` (hard-hat/workwear) / ``4001`` (fence);
3. auth headers (missing/malformed), Timestamp window, AppKey known, app enabled, AppKey
   owns the service code -> ``4010`` (before the body is read);
4. body size: ``Content-Length`` over the limit, or more bytes streamed than the limit
   (reading stops there; nothing over the limit is buffered) -> ``4002``; then the body
   budget (:mod:`edge.api.body_budget`): the AppKey already has
   ``api.max_body_reads_per_key`` bodies in flight, or the declared length (else each
   chunk as it comes) does not fit in its share or in ``api.max_inflight_body_bytes``
   -> ``5000`` "gateway busy" at once, without reading (more of) the body; the bytes
   stay reserved until the answer;
5. Sign over the raw body (computed while streaming), then the replay cache -> ``4010``;
6. the worker pool: full -> ``5000`` "gateway busy" at once (the slot is taken before
   parsing, so validation's copies of large bodies are bounded by the pool too);
7. empty body, JSON, object, keys, types, base64, image header (format and pixel count
   before decoding), area, area inside each image -> the contract's 4xxx codes;
8. quota already known exhausted (1 s negative cache) -> ``4029``;
9. in a worker: decode pixels (fails -> 4003/4009), draw one call of quota (none left ->
   ``4029``), run the model (fails -> 5000 / 5001); the per-request deadline bounds
   the wait (exceeded -> ``5000`` "deadline exceeded", the job is abandoned).

A request answered at 6.-9. before its model started (nothing charged) has its Sign
dropped from the replay cache again, so the identical bytes and headers may be retried
(else 4010 "replayed"); a request the model ran for stays remembered.

Quota: one call is drawn per request that reaches inference with at least one image
decoded, just before the model runs. Client errors (4xxx), busy and deadline answers
before that point never consume; a request whose model then fails (5000/5001) or whose
deadline expires during inference stays counted (the store keeps no refunds).
Database failures answer ``5002`` (fence) / ``5000`` and are remembered by the store, so
the background task opens a ``store_fault`` alert.

Every answer, success or failure, is counted with :meth:`Store.record_request` (app and
API when known; the AppKey only once it names a known app, so random keys cannot blow
up the statistics).

Compliance summary (opt-in, not part of the contract): a hard-hat/workwear success answer
gets a ``summary`` field (:meth:`edge.tasks.compliance.Analysis.summary`: per person
``compliant``/``violation``/``cannot_tell`` with the reason, and the hats not worn) when
``api.compliance_summary`` is true or the request carries the header
``X-Safety-Edge-Summary: 1`` (``0`` turns it off for that request). The Sign covers the
path and body only, so the header is not authenticated; it changes nothing but the
presence of that field. Without it the answer is byte for byte the contract's.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import anyio
import cv2
import numpy as np
import numpy.typing as npt
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from edge import __version__
from edge.api import contract as C
from edge.api.alerts import AlertEngine, AlertSink
from edge.api.auth import (
    AuthError,
    Credentials,
    ReplayCache,
    SignHasher,
    check_timestamp,
    parse_credentials,
)
from edge.api.body_budget import BodyBudget, BodyLease, BudgetFull
from edge.api.console import mount_console
from edge.api.console.auth import LoginThrottle, admin_token_problem
from edge.api.contract import Api, ApiFault, Fault
from edge.api.model_watch import WatchedModel
from edge.api.store import AppRecord, Grant, Store, StoreError, db_path
from edge.config import GatewayConfig
from edge.errors import EdgeError
from edge.stream.events import local_if_naive
from edge.stream.pipeline import MODEL_FAILURES_OFF
from edge.tasks.base import DetectorLike
from edge.tasks.compliance import Analysis

if TYPE_CHECKING:
    from edge.cloud.fallback import FallbackClient

__all__ = ["Gateway", "LoopHeartbeat", "ResultSink", "build_app"]

log = logging.getLogger("edge.api")

ResultSink = Callable[[Api, dict[str, Any]], None]
"""Receives ``(api, record)`` for every answer of the three APIs (see :func:`build_app`)."""

T = TypeVar("T")

_INLINE_VALIDATE_BYTES = 64 * 1024
"""Bodies up to this size are validated on the event loop; larger ones in a thread."""

_QUOTA_NEGATIVE_TTL_S = 1.0
_FALLBACK_MARGIN_S = 0.1
"""The cloud fallback must finish this long before the request's deadline."""
_MAX_SERVICE_CODE = 64
SUMMARY_HEADER = "x-safety-edge-summary"
"""Request header: ``1`` adds the compliance ``summary`` to the answer, ``0`` leaves it out."""
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def wants_summary(default: bool, header: str | None) -> bool:
    """The header's choice (``1/true/yes/on``, ``0/false/no/off``), else ``default``."""
    value = (header or "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    return default


# -- per-request state ---------------------------------------------------------------


@dataclass
class _Ctx:
    api: Api | None
    start: float
    app_key: str | None = None
    request_bytes: int = 0
    auth_check: str | None = None
    lease: BodyLease | None = None
    """The request's share of the body budget, released when it is answered."""


@dataclass
class _Job:
    """What a worker runs; ``cancel`` is set when the deadline passed."""

    api: Api
    app_key: str | None
    hat: C.HatRequest | None = None
    fence_images: list[tuple[bytes, C.ImageInfo] | ApiFault] = field(default_factory=list)
    polygon: npt.NDArray[np.float64] | None = None
    summary: bool = False
    """Add the opt-in compliance ``summary`` to a hard-hat/workwear answer."""
    cancel: threading.Event = field(default_factory=threading.Event)
    started: bool = False
    """Set by the worker, under ``lock`` and only while ``cancel`` is not set, just before
    the quota is charged and the model runs; a request refused before that may be sent
    again byte for byte (its Sign is dropped from the replay cache)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    deadline: float = 0.0
    """``time.perf_counter()`` value by which the answer is due."""


class _Answer(Exception):
    """Internal: a finished answer (used to leave the pipeline early)."""

    def __init__(self, body: dict[str, Any], status: int = 200) -> None:
        super().__init__("answer")
        self.body = body
        self.status = status


_MODEL_DOWN = "model not available"
"""What the unauthenticated ``/healthz`` says for an API without a model."""


def _decode_pixels(data: bytes, where: str) -> npt.NDArray[np.uint8]:
    """Image file bytes -> (H, W, 3) uint8 BGR in the frame the file header states.

    EXIF orientation is ignored: the header's width x height (which ``area`` and the
    pixel limit were checked against) is the frame of the pixels, the boxes and the fence
    polygon, as with any decoder that does not rotate. Decoding with rotation would put
    the detections of an orientation-6 photo in a frame the client never saw.
    """
    arr = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(arr, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None:
        raise ApiFault(Fault.IMAGE_DECODE, f"{where} could not be decoded (corrupt image data)")
    return np.asarray(image, dtype=np.uint8)


# -- event-loop heartbeat ------------------------------------------------------------


class LoopHeartbeat:
    """When the API's event loop last ran a tiny coroutine (hang detection).

    A loop blocked by a synchronous call inside an ``async def`` (or a deadlock) keeps
    its thread alive but answers nobody; :meth:`run`, started by the app's lifespan,
    stamps :attr:`last` every ``interval_s`` while the loop turns, so another thread
    sees the loop's progress age grow (:meth:`age`) once it stops. Costs one timer
    per ``interval_s``.

    Thread-safety: only the loop writes :attr:`last` (one float, replaced whole);
    any thread may read it.

    Args:
        interval_s: seconds between beats (> 0).
    """

    def __init__(self, *, interval_s: float = 1.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be > 0, got {interval_s!r}")
        self.interval_s = float(interval_s)
        self.last: float | None = None
        """``time.monotonic()`` of the last beat (``None``: not yet beaten)."""

    def beat(self) -> None:
        """Record that the loop is turning now."""
        self.last = time.monotonic()

    def age(self, *, since: float, now: float | None = None) -> float:
        """Seconds (>= 0) from the last beat -- or from ``since`` (``time.monotonic()``,
        e.g. when the server was started) before the first -- to ``now`` (default:
        ``time.monotonic()``)."""
        last = self.last
        ref = since if last is None else last
        return max(0.0, (time.monotonic() if now is None else now) - ref)

    async def run(self) -> None:
        """Beat every ``interval_s`` until cancelled."""
        while True:
            self.beat()
            await asyncio.sleep(self.interval_s)


# -- the gateway ---------------------------------------------------------------------


_MODEL_FAILING = "failing"
"""What the unauthenticated ``/healthz`` says for an API whose model's last
``MODEL_FAILURES_OFF`` calls all raised (every request answered 5001)."""


class _Runner:
    """The task behind one API, or why there is none; ``watched``: the models the task
    calls (its detector, the person detector), counting their calls failing in a row."""

    def __init__(
        self, *, task: Any | None, reason: str = "", watched: Sequence[WatchedModel] = ()
    ) -> None:
        self.task = task
        self.reason = reason
        self.watched = tuple(watched)

    def failing(self) -> str | None:
        """Why the API's model counts as failing (:meth:`WatchedModel.failing` with
        ``MODEL_FAILURES_OFF``), else ``None``."""
        for model in self.watched:
            why = model.failing(MODEL_FAILURES_OFF)
            if why is not None:
                return why
        return None

    def state(self, *, public: bool) -> str:
        """``up``, ``failing`` / the reason (``public``: no reason text), or why there
        is no model (``public``: :data:`_MODEL_DOWN`)."""
        if self.task is None:
            return _MODEL_DOWN if public else self.reason
        why = self.failing()
        if why is None:
            return "up"
        return _MODEL_FAILING if public else why


class Gateway:
    """Runtime state of the HTTP API: store, runners, pool, replay cache, counters.

    Built by :func:`build_app`; the FastAPI lifespan starts the background task and
    :meth:`close` releases what the gateway owns (idempotent).
    """

    def __init__(
        self,
        *,
        config: GatewayConfig,
        store: Store,
        owns_store: bool,
        runners: Mapping[Api, _Runner],
        detectors_to_close: Sequence[Any] = (),
        alert_sinks: Sequence[AlertSink] = (),
        result_sinks: Sequence[ResultSink] = (),
        fallback: FallbackClient | None = None,
    ) -> None:
        api = config.api
        self.fallback = fallback
        self.result_sinks = list(result_sinks)
        self.config = config
        self.store = store
        self._owns_store = owns_store
        self.runners = dict(runners)
        self._detectors_to_close = list(detectors_to_close)
        self.limits = C.Limits(
            max_image_bytes=api.max_image_bytes,
            max_fence_body_bytes=api.max_fence_body_bytes,
            max_image_pixels=api.max_image_pixels,
            max_fence_images=api.max_fence_images,
        )
        self.replay = ReplayCache(window_s=api.timestamp_skew_s, max_entries=api.replay_cache_max)
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=api.workers, thread_name_prefix="edge-infer"
        )
        self.capacity = api.workers + api.queue_size
        budget = api.body_budget_bytes()
        self.bodies = BodyBudget(
            total_bytes=budget,
            per_key_bytes=min(budget, max(budget // 2, api.largest_body_bytes())),
            per_key_reads=api.body_reads_per_key(),
        )
        self._inflight = 0
        self._inflight_lock = threading.Lock()
        self._quota_empty: dict[tuple[str, str], tuple[float, str]] = {}
        self.alerts = AlertEngine(store=store, rules=api.alert_rules, sinks=alert_sinks)
        self.counters: dict[str, int] = {
            "busy": 0,
            "deadline": 0,
            "unhandled": 0,
            "client_disconnects": 0,
        }
        self.auth_failures: dict[str, int] = {}
        self._admin_token = api.resolved_admin_token()
        self.admin_throttle = LoginThrottle()
        """Wrong admin tokens per client: ``/console/api`` and the console's login form."""
        self.admin_token_warning: str | None = None
        """Why the admin token is weak (in ``/console/api/status``), else ``None``."""
        self._admin_token_refused = ""
        problem = admin_token_problem(self._admin_token)
        if problem is not None and problem[0] == "placeholder":
            log.error("console off: %s", problem[1])
            self._admin_token, self._admin_token_refused = None, problem[1]
        elif problem is not None:
            log.warning("console: %s", problem[1])
            self.admin_token_warning = problem[1]
        self._last_prune = 0.0
        self._closed = False

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Stop the pool (waits for running jobs), close models and the owned store."""
        if self._closed:
            return
        self._closed = True
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.fallback is not None:
            self.fallback.close()
        for det in self._detectors_to_close:
            close = getattr(det, "close", None)
            if close is not None:
                close()
        if self._owns_store:
            self.store.close()

    def tick(self, now: datetime | None = None) -> None:
        """One background round: flush stats, evaluate alerts, prune hourly. Never raises
        StoreError (logged; the store remembers the fault for the alert rules)."""
        self.alerts.evaluate(now=now)  # flushes first
        if not self.config.api.alert_rules.enabled:
            try:
                self.store.flush()
            except StoreError as exc:
                log.error("monitoring flush failed: %s", exc)
        if time.monotonic() - self._last_prune > 3600:
            self._last_prune = time.monotonic()
            try:
                n = self.store.prune(self.config.api.retention_days)
                if n:
                    log.info(
                        "pruned %d monitoring rows older than %d days",
                        n,
                        self.config.api.retention_days,
                    )
            except StoreError as exc:
                log.error("prune failed: %s", exc)

    async def background(self) -> None:
        """Run :meth:`tick` every ``api.metrics_flush_s`` until cancelled."""
        period = self.config.api.metrics_flush_s
        while True:
            await asyncio.sleep(period)
            try:
                await anyio.to_thread.run_sync(self.tick)
            except Exception:  # the loop must survive a bad round; logged with traceback
                log.exception("background monitoring round failed")

    # -- metrics ---------------------------------------------------------------------

    @property
    def inflight(self) -> int:
        return self._inflight

    def metrics_text(self) -> str:
        """Prometheus text: the store's series plus the gateway's own gauges/counters."""
        lines = [self.store.prometheus_text().rstrip("\n")]
        add = lines.append
        add(
            "# HELP safety_edge_inflight_requests Requests being validated, queued or running "
            "in the worker pool."
        )
        add("# TYPE safety_edge_inflight_requests gauge")
        add(f"safety_edge_inflight_requests {self._inflight}")
        add("# HELP safety_edge_pool_capacity Workers plus queue slots.")
        add("# TYPE safety_edge_pool_capacity gauge")
        add(f"safety_edge_pool_capacity {self.capacity}")
        add("# HELP safety_edge_busy_rejections_total Requests answered busy (pool full).")
        add("# TYPE safety_edge_busy_rejections_total counter")
        add(f"safety_edge_busy_rejections_total {self.counters['busy']}")
        add("# HELP safety_edge_deadline_exceeded_total Requests answered deadline exceeded.")
        add("# TYPE safety_edge_deadline_exceeded_total counter")
        add(f"safety_edge_deadline_exceeded_total {self.counters['deadline']}")
        add("# HELP safety_edge_unhandled_errors_total Unexpected exceptions answered 5000.")
        add("# TYPE safety_edge_unhandled_errors_total counter")
        add(f"safety_edge_unhandled_errors_total {self.counters['unhandled']}")
        add("# HELP safety_edge_client_disconnects_total Clients gone before sending the body.")
        add("# TYPE safety_edge_client_disconnects_total counter")
        add(f"safety_edge_client_disconnects_total {self.counters['client_disconnects']}")
        add("# HELP safety_edge_auth_failures_total 4010 answers by failed check.")
        add("# TYPE safety_edge_auth_failures_total counter")
        for check, n in sorted(self.auth_failures.items()):
            add(f'safety_edge_auth_failures_total{{check="{check}"}} {n}')
        add("# HELP safety_edge_body_bytes_held Request-body bytes reserved by requests in flight.")
        add("# TYPE safety_edge_body_bytes_held gauge")
        add(f"safety_edge_body_bytes_held {self.bodies.held}")
        add("# HELP safety_edge_body_budget_bytes The body budget (api.max_inflight_body_bytes).")
        add("# TYPE safety_edge_body_budget_bytes gauge")
        add(f"safety_edge_body_budget_bytes {self.bodies.total_bytes}")
        add("# HELP safety_edge_replay_cache_entries Accepted signs remembered.")
        add("# TYPE safety_edge_replay_cache_entries gauge")
        add(f"safety_edge_replay_cache_entries {len(self.replay)}")
        add("# HELP safety_edge_model_up 1 when the API's model is loaded.")
        add("# TYPE safety_edge_model_up gauge")
        for api in C.APIS:
            add(f'safety_edge_model_up{{api="{api}"}} {int(self.runners[api].task is not None)}')
        if self.fallback is not None:
            from edge.cloud.fallback import prometheus_text

            add(prometheus_text(self.fallback.metrics()).rstrip("\n"))
        return "\n".join(lines) + "\n"

    # -- answering -------------------------------------------------------------------

    def _hand_result(self, ctx: _Ctx, code: int, latency_ms: float, body: dict[str, Any]) -> None:
        """Give one API answer to every result sink (e.g. MQTT ``results``, QoS 0)."""
        assert ctx.api is not None
        record = {
            "api": ctx.api,
            "app_key": ctx.app_key,
            "code": code,
            "latency_ms": round(latency_ms, 3),
            "answer": body,
        }
        for sink in self.result_sinks:
            try:
                sink(ctx.api, record)
            except Exception as exc:  # a sink must never break an answer
                log.error("result sink %r failed: %s", sink, exc)

    def _response(self, ctx: _Ctx, body: dict[str, Any], status: int) -> Response:
        raw = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        code = int(body.get("code", 5000))
        latency_ms = (time.perf_counter() - ctx.start) * 1000.0
        try:
            self.store.record_request(
                app_key=ctx.app_key,
                api=ctx.api,
                code=code,
                latency_ms=latency_ms,
                request_bytes=ctx.request_bytes,
                response_bytes=len(raw),
            )
        except EdgeError as exc:  # monitoring must never break an answer
            log.error("record_request failed: %s", exc)
        if ctx.api is not None and self.result_sinks:
            self._hand_result(ctx, code, latency_ms, body)
        if self.config.api.log_requests:
            log.info(
                json.dumps(
                    {
                        "api": ctx.api,
                        "app_key": ctx.app_key,
                        "code": code,
                        "ms": round(latency_ms, 3),
                        "in": ctx.request_bytes,
                        "out": len(raw),
                    }
                )
            )
        return Response(content=raw, status_code=status, media_type="application/json")

    def _fault_response(self, ctx: _Ctx, fault: Fault, details: str) -> Response:
        code = C.code_for(ctx.api, fault)
        status = C.rest_status(fault) if self.config.api.rest_status else 200
        return self._response(ctx, C.failure_body(code, details), status)

    async def handle(self, request: Request, api: Api | None) -> Response:
        """Answer one request to an API path (``api``) or an unknown path (``None``)."""
        ctx = _Ctx(api=api, start=time.perf_counter())
        try:
            if api is None:
                raise ApiFault(Fault.UNKNOWN_PATH, f"unknown path {_short_path(request)}")
            deadline = ctx.start + self.config.api.deadline_s
            body = await self._pipeline(request, api, ctx, deadline)
            return self._response(ctx, body, 200)
        except ApiFault as f:
            if f.fault is Fault.AUTH:
                self.auth_failures[ctx.auth_check or "other"] = (
                    self.auth_failures.get(ctx.auth_check or "other", 0) + 1
                )
            elif f.fault is Fault.BUSY:
                self.counters["busy"] += 1
            elif f.fault is Fault.DEADLINE:
                self.counters["deadline"] += 1
            return self._fault_response(ctx, f.fault, f.details)
        except ClientDisconnect:
            # Nobody to answer: the client went away while sending the body.
            log.info("client disconnected while sending %s", _short_path(request))
            self.counters["client_disconnects"] += 1
            return Response(status_code=400)
        except StoreError as exc:
            # The cause is logged by the store; the client learns the kind, not the path.
            return self._fault_response(
                ctx, Fault.DATABASE, f"database error ({exc.kind}); retry later"
            )
        except EdgeError as exc:
            return self._fault_response(ctx, C.fault_for_error(exc), exc.details)
        except Exception:  # never a traceback to the client; logged with context
            self.counters["unhandled"] += 1
            log.exception("unhandled error answering %s %s", request.method, _short_path(request))
            return self._fault_response(ctx, Fault.SERVICE, "internal service error (logged)")
        finally:
            if ctx.lease is not None:
                ctx.lease.release()

    async def _store(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call in a thread (SQLite may wait for a lock; the loop must not)."""
        return await anyio.to_thread.run_sync(lambda: fn(*args, **kwargs))

    def _lookup(
        self, service_code: str, app_key: str | None
    ) -> tuple[Grant | None, AppRecord | None]:
        grant = self.store.grant_for_service_code(service_code)
        app = self.store.get_app(app_key) if app_key else None
        return grant, app

    async def _pipeline(
        self, request: Request, api: Api, ctx: _Ctx, deadline: float
    ) -> dict[str, Any]:
        cfg = self.config.api
        service_code = str(request.path_params.get("service_code", ""))

        # 1. credentials syntax (raised after the path checks) + store lookups
        creds: Credentials | None = None
        creds_error: AuthError | None = None
        try:
            creds = parse_credentials(request.headers)
        except AuthError as exc:
            creds_error = exc
        if len(service_code) > _MAX_SERVICE_CODE:
            raise ApiFault(Fault.UNKNOWN_PATH, "unknown service code in the path")
        grant, app = await self._store(
            self._lookup, service_code, creds.app_key if creds is not None else None
        )
        if app is not None:
            ctx.app_key = app.app_key
        if grant is None and (cfg.auth or cfg.metered):
            raise ApiFault(Fault.UNKNOWN_PATH, "unknown service code in the path")
        if grant is not None and grant.api != api:
            raise ApiFault(
                Fault.UNKNOWN_PATH,
                f"service code is granted for the {grant.api} API, not this path ({api})",
            )

        # 2. method
        if request.method != "POST":
            raise ApiFault(Fault.METHOD, f"method {request.method} is not allowed; use POST")

        # 3. auth before reading the body
        hasher: SignHasher | None = None
        if cfg.auth:
            try:
                if creds_error is not None:
                    raise creds_error
                assert creds is not None
                check_timestamp(creds, skew_s=cfg.timestamp_skew_s)
                if app is None:
                    raise AuthError("unknown_app", "unknown AppKey")
                if not app.enabled:
                    raise AuthError("disabled_app", "application is disabled")
                assert grant is not None
                if grant.app_key != app.app_key:
                    raise AuthError(
                        "not_owner", "the service code in the path is not granted to this AppKey"
                    )
                paths = [request.scope.get("raw_path", b"").decode("latin-1") or request.url.path]
                if api == "fence" and cfg.accept_fence_sample_path:
                    paths.append(f"{C.PATH_PREFIX}{service_code}/{C.FENCE_SAMPLE_SUFFIX}")
                hasher = SignHasher(
                    app_key=app.app_key,
                    app_secret=app.app_secret,
                    timestamp=creds.timestamp,
                    paths=paths,
                )
            except AuthError as exc:
                ctx.auth_check = exc.check
                raise ApiFault(Fault.AUTH, exc.details) from None
        elif grant is not None:
            ctx.app_key = grant.app_key

        # 4. body, streamed under the size limit, the body budget and the deadline
        limit = self.limits.body_limit(api)
        body = await self._read_body(request, limit, hasher, ctx, deadline)

        # 5. sign + replay
        if hasher is not None:
            assert creds is not None
            try:
                hasher.verify(creds.sign)
                self.replay.check_and_add(creds)
            except AuthError as exc:
                ctx.auth_check = exc.check
                if exc.check == "replay_cache_full":
                    raise ApiFault(Fault.BUSY, f"gateway busy: {exc.details}") from None
                raise ApiFault(Fault.AUTH, exc.details) from None

        # 6.-9. A request refused before its model started (busy, deadline, a failure
        # before inference, quota known empty, an invalid image) used nothing: its Sign is
        # forgotten again, so the identical request may be retried (else 4010 "replayed").
        job: _Job | None = None
        try:
            # 6. a worker-pool slot before parsing; the job's done-callback frees it
            self._take_slot()
            try:
                # 7. validation (large bodies off the event loop)
                if len(body) <= _INLINE_VALIDATE_BYTES:
                    job = self._validate(api, body, ctx.app_key)
                else:
                    job = await anyio.to_thread.run_sync(self._validate, api, body, ctx.app_key)
                del body
                job.deadline = deadline
                if api != "fence":
                    job.summary = wants_summary(
                        cfg.compliance_summary, request.headers.get(SUMMARY_HEADER)
                    )

                # 8. model present, quota not known empty
                runner = self.runners[api]
                if runner.task is None:
                    raise ApiFault(Fault.INFERENCE, runner.reason)
                if cfg.metered and ctx.app_key is not None:
                    hit = self._quota_empty.get((ctx.app_key, api))
                    if hit is not None and hit[0] > time.monotonic():
                        raise ApiFault(Fault.QUOTA, hit[1])
                fut = self._start(job)
            except BaseException:
                self._free_slot()
                raise

            # 9. the worker, within the deadline
            return await self._wait(job, fut, deadline)
        except BaseException:
            if hasher is not None and (job is None or not job.started):
                assert creds is not None
                self.replay.discard(creds)
            raise

    async def _read_body(
        self,
        request: Request,
        limit: int,
        hasher: SignHasher | None,
        ctx: _Ctx,
        deadline: float,
    ) -> bytes:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            ctx.request_bytes = 0
            raise ApiFault(
                Fault.BODY_TOO_LARGE,
                f"request body of {int(declared)} bytes is over the limit of {limit} bytes",
            )
        # The body budget: reserved before reading (the declared length, else chunk by
        # chunk), released by handle() once the request is answered.
        try:
            ctx.lease = lease = self.bodies.lease(ctx.app_key)
            if declared is not None and declared.isdigit():
                lease.ensure(int(declared))
        except BudgetFull as full:
            raise ApiFault(Fault.BUSY, f"gateway busy: {full.details}; retry later") from None
        chunks: list[bytes] = []
        size = 0

        async def read() -> None:
            nonlocal size
            async for chunk in request.stream():
                if not chunk:
                    continue
                size += len(chunk)
                ctx.request_bytes = size
                if size > limit:
                    raise ApiFault(
                        Fault.BODY_TOO_LARGE,
                        f"request body is over the limit of {limit} bytes (stopped reading)",
                    )
                try:
                    lease.ensure(size)
                except BudgetFull as full:
                    raise ApiFault(
                        Fault.BUSY, f"gateway busy: {full.details}; retry later"
                    ) from None
                if hasher is not None:
                    hasher.update(chunk)
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), timeout=max(deadline - time.perf_counter(), 0.001))
        except asyncio.TimeoutError:
            raise ApiFault(
                Fault.DEADLINE,
                f"deadline exceeded ({self.config.api.deadline_s:g} s) while reading the body",
            ) from None
        return b"".join(chunks)

    def _validate(self, api: Api, body: bytes, app_key: str | None) -> _Job:
        obj = C.parse_json_object(body)
        job = _Job(api=api, app_key=app_key)
        if api != "fence":
            job.hat = C.validate_hat(obj, self.limits)
            return job
        from edge.kernels.geometry import check_polygon_in_image, parse_area

        req = C.validate_fence(obj, self.limits)
        try:
            polygon = parse_area(req.area)
        except EdgeError as exc:
            raise ApiFault(Fault.AREA_MALFORMED, f"area: {exc.details}") from None
        job.polygon = polygon
        for i, entry in enumerate(req.images):
            try:
                data, info = C.validate_fence_image(entry, i, self.limits)
                try:
                    check_polygon_in_image(polygon, info.width, info.height)
                except EdgeError as exc:
                    raise ApiFault(
                        C.fault_for_error(exc), f"image[{i}] ({info.width}x{info.height}): {exc}"
                    ) from None
                job.fence_images.append((data, info))
            except ApiFault as f:
                job.fence_images.append(f)
        if all(isinstance(x, ApiFault) for x in job.fence_images):
            first = job.fence_images[0]
            assert isinstance(first, ApiFault)
            if len(job.fence_images) == 1:
                raise first
            causes = "; ".join(f.details for f in job.fence_images if isinstance(f, ApiFault))
            raise ApiFault(first.fault, f"every image failed: {C._short(causes, 1000)}")
        return job

    def _take_slot(self) -> None:
        """Count one request against the pool's capacity (``BUSY`` when full)."""
        with self._inflight_lock:
            if self._inflight >= self.capacity:
                raise ApiFault(
                    Fault.BUSY,
                    f"gateway busy: {self._inflight} requests in progress or queued "
                    f"(capacity {self.capacity}); retry later",
                )
            self._inflight += 1

    def _free_slot(self) -> None:
        with self._inflight_lock:
            self._inflight -= 1

    def _start(self, job: _Job) -> concurrent.futures.Future[dict[str, Any]]:
        """Hand ``job`` to the pool; from then on its done-callback frees the slot taken
        by :meth:`_take_slot` (until then the caller frees it on failure)."""
        try:
            fut = self.pool.submit(self._run_job, job)
        except RuntimeError:  # pool shut down
            raise ApiFault(Fault.BUSY, "gateway is shutting down") from None
        fut.add_done_callback(self._job_done)
        return fut

    async def _wait(
        self, job: _Job, fut: concurrent.futures.Future[dict[str, Any]], deadline: float
    ) -> dict[str, Any]:
        remaining = deadline - time.perf_counter()
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), timeout=max(remaining, 0.001))
        except asyncio.TimeoutError:
            with job.lock:  # after this the worker cannot start the model (see _consume)
                job.cancel.set()
            fut.cancel()
            raise ApiFault(
                Fault.DEADLINE,
                f"deadline exceeded ({self.config.api.deadline_s:g} s): no result in time",
            ) from None

    def _job_done(self, _fut: concurrent.futures.Future[Any]) -> None:
        self._free_slot()

    # -- worker side -------------------------------------------------------------------

    def _check_cancel(self, job: _Job) -> None:
        if job.cancel.is_set():
            raise ApiFault(Fault.DEADLINE, "deadline exceeded")

    def _consume(self, job: _Job) -> None:
        """Mark the job started (``DEADLINE`` if already cancelled), then charge the quota."""
        with job.lock:
            if job.cancel.is_set():
                raise ApiFault(Fault.DEADLINE, "deadline exceeded")
            job.started = True
        if not self.config.api.metered or job.app_key is None:
            return
        res = self.store.consume(app_key=job.app_key, api=job.api)
        key = (job.app_key, job.api)
        if not res.ok:
            details = f"quota exhausted: {res.reason}"
            self._quota_empty[key] = (time.monotonic() + _QUOTA_NEGATIVE_TTL_S, details)
            job.started = False  # nothing charged, the model not run: may be retried
            raise ApiFault(Fault.QUOTA, details)
        self._quota_empty.pop(key, None)

    def _run_job(self, job: _Job) -> dict[str, Any]:
        self._check_cancel(job)
        task = self.runners[job.api].task
        if task is None:
            raise ApiFault(Fault.INFERENCE, self.runners[job.api].reason)
        if job.api != "fence":
            assert job.hat is not None
            image = _decode_pixels(job.hat.image, "image")
            self._consume(job)
            self._check_cancel(job)
            fb = self._fallback_for(job.api)
            failed: EdgeError | None = None
            analysis: Analysis | None = None
            items: list[Any] | None
            try:
                if job.summary:
                    analysis = task.analyse(image)
                    items = analysis.items
                else:
                    items = task.run(image)
            except EdgeError as exc:
                if fb is None:
                    raise ApiFault(Fault.INFERENCE, f"inference failed: {exc.details}") from None
                items, failed = None, exc
            else:
                if fb is None:
                    return _with_summary(C.hat_success_body(list(items)), analysis, items)
            hat_api: Literal["hardhat", "workwear"] = job.api
            review = fb.review_hat(
                hat_api,
                image_bgr=image,
                local=items,
                image_file=job.hat.image,
                timeout_s=self._fallback_time(job),
            )
            if failed is not None and not review.outcome.used:
                raise ApiFault(
                    Fault.INFERENCE,
                    f"inference failed: {failed.details} (cloud fallback: "
                    f"{review.outcome.status} {review.outcome.detail})".rstrip(),
                )
            if not self.config.fallback.report_source:
                return _with_summary(C.hat_success_body(list(review.items)), analysis, items)
            body = C.hat_success_body(review.annotated())
            body["fallback"] = review.outcome.to_dict()
            return _with_summary(body, analysis, items)
        return self._run_fence(job, task)

    def _fallback_for(self, api: Api) -> FallbackClient | None:
        fb = self.fallback
        return fb if fb is not None and fb.handles(api) else None

    @staticmethod
    def _fallback_time(job: _Job) -> float:
        return job.deadline - time.perf_counter() - _FALLBACK_MARGIN_S

    def _run_fence(self, job: _Job, task: Any) -> dict[str, Any]:
        from edge.tasks.fence import fence_result

        assert job.polygon is not None
        items: list[dict[str, Any]] = []
        faults: list[ApiFault] = []
        consumed = False
        fb = self._fallback_for(job.api)
        report = self.config.fallback.report_source and fb is not None
        for i, entry in enumerate(job.fence_images):
            self._check_cancel(job)
            if isinstance(entry, ApiFault):
                faults.append(entry)
                items.append(_failed_item(job.api, entry))
                continue
            data, _info = entry
            try:
                image = _decode_pixels(data, f"image[{i}]")
            except ApiFault as bad:
                faults.append(bad)
                items.append(_failed_item(job.api, bad))
                continue
            if not consumed:
                self._consume(job)
                consumed = True
            dets = None
            try:
                dets = task.run(image, job.polygon)
            except EdgeError as exc:
                detail = f"image[{i}]: inference failed: {exc.details}"
                if fb is None:
                    failed = ApiFault(Fault.INFERENCE, detail)
                    faults.append(failed)
                    items.append(_failed_item(job.api, failed))
                    continue
            if fb is None:
                assert dets is not None
                items.append(fence_result(dets))
                continue
            review = fb.review_fence(
                image_bgr=image,
                polygon=job.polygon,
                local=dets,
                image_file=data,
                anchor=task.anchor,
                overlap_threshold=task.overlap_threshold,
                default_class_id=_first_class_id(task),
                timeout_s=self._fallback_time(job),
            )
            del image
            if dets is None and not review.outcome.used:
                out = review.outcome
                failed = ApiFault(
                    Fault.INFERENCE,
                    f"{detail} (cloud fallback: {out.status} {out.detail})".rstrip(),
                )
                faults.append(failed)
                items.append(_failed_item(job.api, failed))
                continue
            item: dict[str, Any] = {
                "target_num": len(review.dets),
                "location": review.locations(with_source=report),
            }
            if report:
                item["fallback"] = review.outcome.to_dict()
            items.append(item)
        ok = len(items) - len(faults)
        if ok == 0:
            causes = "; ".join(f.details for f in faults)
            if len(faults) == 1:
                raise faults[0]
            raise ApiFault(faults[0].fault, f"every image failed: {C._short(causes, 1000)}")
        return C.fence_success_body(items, ok, len(faults))

    # -- console -------------------------------------------------------------------------

    @property
    def admin_token(self) -> str | None:
        """The admin token in force (``None``: console off, also for the placeholder)."""
        return self._admin_token

    @property
    def admin_token_refused(self) -> str:
        """Why a configured admin token was refused (the documented placeholder), else ``""``."""
        return self._admin_token_refused

    def check_admin(self, request: Request) -> Response | None:
        """None when the request carries the admin token; else the 401/403/429 answer.

        A wrong token counts against the client in :attr:`admin_throttle` (one budget with
        the console's login form); a client over it gets 429 with ``Retry-After`` before
        its token is looked at. A missing token is no guess and is not counted.
        """
        if self._admin_token is None:
            why = self._admin_token_refused or "set api.admin_token or SAFETY_EDGE_ADMIN_TOKEN"
            return JSONResponse(C.failure_body(4010, f"console disabled: {why}"), status_code=403)
        client = request.client.host if request.client else "?"
        wait = self.admin_throttle.blocked(client)
        if wait > 0:
            retry = int(wait) + 1
            return JSONResponse(
                C.failure_body(
                    4010, f"too many wrong admin tokens from this address; retry in {retry} s"
                ),
                status_code=429,
                headers={"Retry-After": str(retry)},
            )
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else ""
        token = token or request.headers.get("x-admin-token", "")
        if not token or not hmac.compare_digest(
            token.encode("utf-8"), self._admin_token.encode("utf-8")
        ):
            if token:
                self.admin_throttle.failed(client)
                log.warning("console api: wrong admin token from %s", client)
            return JSONResponse(
                C.failure_body(4010, "missing or wrong admin token (Authorization: Bearer ...)"),
                status_code=401,
            )
        return None


def _with_summary(
    body: dict[str, Any], analysis: Analysis | None, local: Sequence[Any] | None
) -> dict[str, Any]:
    """``body`` with the opt-in ``summary`` (nothing when ``analysis`` is ``None``). When
    the cloud fallback changed the list, the summary is still the gateway's own analysis:
    its ``item`` indices are dropped and ``source`` says ``local``."""
    if analysis is None:
        return body
    summary = analysis.summary()
    if list(body["result"]) != list(local or []):
        for person in summary["people"]:
            person["item"] = None
        summary["source"] = "local"
    body["summary"] = summary
    return body


def _first_class_id(task: Any) -> int:
    """The fence task's first counted class id (for cloud boxes overlapping no local one)."""
    names = list(task.detector.class_names)
    known = [c for c in task.classes if c in names]
    return names.index(known[0]) if known else 0


def _failed_item(api: Api, f: ApiFault) -> dict[str, Any]:
    return {
        "target_num": 0,
        "location": [],
        "error": {"code": C.code_for(api, f.fault), "details": f.details},
    }


def _short_path(request: Request) -> str:
    p = request.url.path
    return repr(p if len(p) <= 120 else p[:117] + "...")


# -- ASGI endpoints ----------------------------------------------------------------------


class _ApiEndpoint:
    """ASGI app for one API path (any method; the gateway answers non-POST itself)."""

    def __init__(self, gateway: Gateway, api: Api | None) -> None:
        self.gateway = gateway
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.gateway.handle(request, self.api)
        await response(scope, receive, send)


# -- OpenAPI ------------------------------------------------------------------------------

_TITLE = {
    "hardhat": "Hard-hat wearing",
    "workwear": "Workwear wearing",
    "fence": "Electronic fence",
}

_HAT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image"],
    "properties": {
        "image": {
            "type": "string",
            "description": "base64 of a png/jpg/jpeg/bmp file (decoded at most 5 MiB); "
            "a data:image/...;base64, prefix is stripped",
        }
    },
}
_FENCE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["image", "area"],
    "additionalProperties": False,
    "properties": {
        "image": {
            "type": "array",
            "minItems": 1,
            "maxItems": 32,
            "items": {"type": "string", "description": "base64 png/jpg/jpeg"},
        },
        "area": {
            "type": "string",
            "description": "x1,y1,x2,y2,... pixel coordinates, 4 to 9 points",
            "example": "0,0,640,0,640,480,0,480",
        },
    },
}
_HAT_OK = {
    "code": 0,
    "message": "success",
    "result": [{"box": [10, 20, 60, 70], "classname": "blue_hat", "score": 0.93}],
    "data": [{"box": [10, 20, 60, 70], "classname": "blue_hat", "score": 0.93}],
}
_FENCE_OK = {
    "code": 0,
    "message": {"success": 1, "fail": 0},
    "result": [{"target_num": 1, "location": [{"left": 5, "top": 8, "width": 40, "height": 90}]}],
}

_AUTH_HEADERS = [
    {"name": "AppKey", "in": "header", "required": True, "schema": {"type": "string"}},
    {
        "name": "Timestamp",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]{13}$"},
        "description": "Unix time in ms; within ±timestamp_skew_s (300 s) of the gateway",
    },
    {
        "name": "Sign",
        "in": "header",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "description": "lowercase hex MD5(AppKey + AppSecret + Timestamp + Path + Body)",
    },
]


def _doc_route(api: Api) -> APIRoute:
    async def endpoint(service_code: str) -> None:  # documentation only, never mounted
        return None

    ok = _FENCE_OK if api == "fence" else _HAT_OK
    return APIRoute(
        f"{C.PATH_PREFIX}{{service_code}}/{C.API_PATHS[api]}",
        endpoint,
        methods=["POST"],
        name=api,
        summary=_TITLE[api],
        description=(
            f"{_TITLE[api]} (cloud contract). HTTP 200 carries every answer unless "
            "`api.rest_status` is on. Codes:\n\n" + C.codes_markdown(api)
        ),
        tags=["contract"],
        openapi_extra={
            "parameters": _AUTH_HEADERS,
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": _FENCE_SCHEMA if api == "fence" else _HAT_SCHEMA}
                },
            },
        },
        responses={
            200: {
                "description": "success (code 0) or failure (code != 0)",
                "content": {
                    "application/json": {
                        "examples": {
                            "success": {"value": ok},
                            "failure": {"value": C.failure_body(4010, "Sign does not match ...")},
                        }
                    }
                },
            }
        },
    )


def _openapi(app: FastAPI) -> Callable[[], dict[str, Any]]:
    def build() -> dict[str, Any]:
        if app.openapi_schema is None:
            routes = [_doc_route(api) for api in C.APIS] + [
                r for r in app.routes if isinstance(r, APIRoute)
            ]
            ext = "\n".join(f"- `{c}`: {t}" for c, t in C.EXTENSION_CODES.items())
            app.openapi_schema = get_openapi(
                title="safety-edge gateway API",
                version=__version__,
                description=(
                    "The cloud contract's three APIs served locally, plus monitoring.\n\n"
                    f"Extension codes on every API:\n{ext}"
                ),
                routes=routes,
            )
        return app.openapi_schema

    return build


# -- composition root ---------------------------------------------------------------------


def _load_runners(
    config: GatewayConfig,
    detectors: Mapping[Api, DetectorLike | None] | None,
    person_detector: DetectorLike | None = None,
) -> tuple[dict[Api, _Runner], list[Any]]:
    from edge.tasks.fence import FenceTask
    from edge.tasks.hardhat import HardhatTask
    from edge.tasks.workwear import WorkwearTask

    tc = config.tasks
    names: dict[Api, str | None] = {
        "hardhat": tc.hardhat,
        "workwear": tc.workwear,
        "fence": tc.fence,
    }
    loaded: dict[Api, DetectorLike | None] = {}
    reasons: dict[Api, str] = {}
    owned: list[Any] = []
    person: DetectorLike | None = person_detector
    person_name = tc.wearing.person_model_name(tc)
    if detectors is not None:
        for api in C.APIS:
            loaded[api] = detectors.get(api)
            if loaded[api] is None:
                reasons[api] = f"no model serves the {api} API"
    else:
        from edge.runtime.detector import Detector
        from edge.runtime.registry import discover_models

        manifests: dict[str, Any] = {}
        discover_error = ""
        try:
            manifests = discover_models(config.models_dir)
        except EdgeError as exc:
            discover_error = exc.details
            log.error("models: %s", exc)
        by_name: dict[str, DetectorLike | str] = {}
        for api in C.APIS:
            name = names[api]
            if name is None:
                loaded[api] = None
                reasons[api] = f"the {api} API is switched off (tasks.{api} is null)"
                continue
            if name not in by_name:
                if name not in manifests:
                    by_name[name] = (
                        discover_error
                        or f"no manifest for model {name!r} in {str(config.models_dir)!r} "
                        f"(have: {', '.join(sorted(manifests)) or 'none'})"
                    )
                else:
                    try:
                        detector = Detector(
                            manifests[name],
                            providers=tuple(config.api.providers),
                            intra_op_threads=config.api.intra_op_threads,
                            allow_spinning=config.api.allow_spinning,
                        )
                        owned.append(detector)
                        by_name[name] = detector
                    except EdgeError as exc:
                        by_name[name] = exc.details
                if isinstance(by_name[name], str):
                    log.error("%s API: model %r not available: %s", api, name, by_name[name])
            got = by_name[name]
            if isinstance(got, str):
                loaded[api] = None
                reasons[api] = f"model {name!r} for the {api} API is not available: {got}"
            else:
                loaded[api] = got
        wears = loaded["hardhat"] is not None or loaded["workwear"] is not None
        if person_name is not None and wears:
            got_person = by_name.get(person_name)
            if got_person is None and person_name in manifests:
                try:
                    got_person = Detector(
                        manifests[person_name],
                        providers=tuple(config.api.providers),
                        intra_op_threads=config.api.intra_op_threads,
                        allow_spinning=config.api.allow_spinning,
                    )
                    owned.append(got_person)
                except EdgeError as exc:
                    got_person = exc.details
            if isinstance(got_person, str) or got_person is None:
                log.error(
                    "worn rule off: person model %r not available (%s)",
                    person_name,
                    got_person or "no manifest",
                )
            else:
                person = got_person
    if person_name is None:
        person = None
    # Every model the API calls is watched (calls failing in a row, for /healthz); one
    # watcher per detector object. The service hands in its own WatchedModel instances.
    watchers: dict[int, WatchedModel] = {}

    def watch(det: DetectorLike | None, name: str | None) -> Any:
        if det is None or isinstance(det, WatchedModel):
            return det
        if id(det) not in watchers:
            watchers[id(det)] = WatchedModel(det, name or type(det).__name__)
        return watchers[id(det)]

    for api in C.APIS:
        loaded[api] = watch(loaded.get(api), names[api])
    person = watch(person, person_name)
    rule = tc.wearing.to_rule()
    runners: dict[Api, _Runner] = {}
    for api in C.APIS:
        det = loaded.get(api)
        uses = [m for m in (det, person if api != "fence" else None) if isinstance(m, WatchedModel)]
        if det is None:
            runners[api] = _Runner(task=None, reason=reasons.get(api, "no model"))
        elif api == "hardhat":
            runners[api] = _Runner(
                task=HardhatTask(
                    detector=det,
                    score_threshold=tc.score_threshold,
                    person_detector=person,
                    rule=rule,
                ),
                watched=uses,
            )
        elif api == "workwear":
            runners[api] = _Runner(
                task=WorkwearTask(
                    detector=det,
                    score_threshold=tc.score_threshold,
                    person_detector=person,
                    rule=rule,
                ),
                watched=uses,
            )
        else:
            runners[api] = _Runner(
                task=FenceTask(
                    detector=det,
                    classes=tuple(tc.fence_classes),
                    anchor=tc.fence_anchor,
                    overlap_threshold=tc.fence_overlap_threshold,
                    score_threshold=tc.score_threshold,
                ),
                watched=uses,
            )
    return runners, owned


class _OriginForm:
    """ASGI middleware: an absolute-form request target (``POST http://host:port/v1/...``,
    which RFC 9112 3.2.2 says a server must accept; clients behind an HTTP proxy send it)
    becomes origin-form before routing and the Sign check: ``scheme://authority`` is cut
    from ``path`` and ``raw_path`` (uvicorn's h11 protocol passes the whole target as the
    path). The Sign covers the path only, as for origin-form. Other requests pass as is.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Any]) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = scope.get("path", "")
            low = path[:8].lower()
            if low.startswith(("http://", "https://")):
                scope = dict(scope)
                scope["path"] = _strip_authority(path)
                raw = scope.get("raw_path")
                if isinstance(raw, bytes):
                    scope["raw_path"] = _strip_authority(raw.decode("latin-1")).encode("latin-1")
        await self.app(scope, receive, send)


def _strip_authority(target: str) -> str:
    """``http://host:port/a/b`` -> ``/a/b``; no path after the authority -> ``/``."""
    rest = target.split("://", 1)[1]
    slash = rest.find("/")
    return rest[slash:] if slash >= 0 else "/"


def build_app(
    config: GatewayConfig,
    *,
    store: Store | None = None,
    detectors: Mapping[Api, DetectorLike | None] | None = None,
    person_detector: DetectorLike | None = None,
    alert_sinks: Sequence[AlertSink] = (),
    result_sinks: Sequence[ResultSink] = (),
) -> FastAPI:
    """Build the gateway's ASGI application from ``config``.

    Args:
        config: the validated gateway configuration.
        store: an open store to use (not closed by the app); default: open
            ``<data_dir>/safety-edge.sqlite3`` (closed at shutdown).
        detectors: detectors per API instead of loading ``config.tasks`` models from
            ``config.models_dir`` (``None`` values switch an API off).
        person_detector: people for the hard-hat/workwear worn rule and summary
            (:mod:`edge.tasks.wearing`) when ``detectors`` is given; without
            ``detectors`` the model ``tasks.wearing.person_model`` (default
            ``tasks.fence``) is loaded. Ignored when ``tasks.wearing.worn_rule`` is off.
        alert_sinks: receive every opened/resolved alert (e.g. the MQTT publisher).
        result_sinks: receive every answer of the three APIs as ``(api, record)`` with
            ``record = {api, app_key, code, latency_ms, answer}`` (e.g. MQTT ``results``).
            Called on the answering thread: a sink must be quick and must not block.

    The returned app's ``state.gateway`` is the :class:`Gateway` and
    ``state.loop_heartbeat`` a :class:`LoopHeartbeat` (the event loop's progress, for
    hang detection by another thread). The lifespan starts the background flush/alert
    task and the heartbeat, and at shutdown cancels both and closes the gateway.
    """
    owns = store is None
    st = store or Store(
        path=db_path(config.data_dir), busy_timeout_ms=config.api.db_busy_timeout_ms
    )
    fallback: FallbackClient | None = None
    owned: list[Any] = []
    try:
        runners, owned = _load_runners(config, detectors, person_detector)
        if config.fallback.enabled:
            from edge.cloud.fallback import FallbackClient

            fallback = FallbackClient(config=config.fallback, data_dir=config.data_dir)
    except BaseException:
        for det in owned:
            det.close()
        if owns:
            st.close()
        raise
    gateway = Gateway(
        config=config,
        store=st,
        owns_store=owns,
        runners=runners,
        detectors_to_close=owned,
        alert_sinks=alert_sinks,
        result_sinks=result_sinks,
        fallback=fallback,
    )

    heartbeat = LoopHeartbeat()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(gateway.background(), name="edge-monitoring"),
            asyncio.create_task(heartbeat.run(), name="edge-loop-heartbeat"),
        ]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await anyio.to_thread.run_sync(gateway.close)

    app = FastAPI(
        title="safety-edge gateway API",
        version=__version__,
        lifespan=lifespan,
        redirect_slashes=False,
        # The gateway is offline: Swagger UI/ReDoc pages load their assets from a CDN,
        # so they are off; the OpenAPI document itself is served at /openapi.json.
        docs_url=None,
        redoc_url=None,
    )
    app.state.gateway = gateway
    app.state.loop_heartbeat = heartbeat
    app.openapi = _openapi(app)  # type: ignore[method-assign]

    for api in C.APIS:
        app.router.routes.append(
            Route(
                f"{C.PATH_PREFIX}{{service_code}}/{C.API_PATHS[api]}",
                _ApiEndpoint(gateway, api),
                name=f"api_{api}",
                include_in_schema=False,
            )
        )

    @app.get("/metrics", response_class=PlainTextResponse, tags=["monitoring"])
    async def metrics() -> Response:
        """Prometheus text exposition (requests by app/api/code, latency, quota, alerts)."""
        text = await anyio.to_thread.run_sync(gateway.metrics_text)
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz", tags=["monitoring"])
    async def healthz() -> dict[str, Any]:
        """Liveness: ``status`` (``ok``; ``degraded`` while a model is ``failing``), models
        per API (``up`` / ``failing``: its last ``MODEL_FAILURES_OFF`` calls all raised,
        every request answered 5001 / ``model not available``), pool use. Unauthenticated,
        so it says no more than that: why a model is missing or failing (paths, file names,
        the error) is in the log and the admin's ``/console/api/status``."""
        models = {api: r.state(public=True) for api, r in runners.items()}
        return {
            "status": "degraded" if _MODEL_FAILING in models.values() else "ok",
            "models": models,
            "inflight": gateway.inflight,
            "capacity": gateway.capacity,
        }

    _console_routes(app, gateway)
    mount_console(app, gateway)  # the web console (edge/api/console)

    app.router.routes.append(
        Route("/{path:path}", _ApiEndpoint(gateway, None), name="unknown", include_in_schema=False)
    )
    app.add_middleware(_OriginForm)  # added last: outermost, before every route and check
    return app


def _parse_time(text: str | None, default: datetime) -> datetime:
    """An ISO 8601 ``since``/``until`` as an aware UTC datetime; naive = the gateway's local
    time (:func:`edge.stream.events.local_if_naive`, the rule of every typed time)."""
    if not text:
        return default
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO 8601 time: {text!r}") from None
    return local_if_naive(dt).astimezone(timezone.utc)


def _console_routes(app: FastAPI, gateway: Gateway) -> None:
    """``/console/api``: apps with quota, per-minute stats, alerts, status (admin token)."""
    store = gateway.store

    async def guarded(request: Request, fn: Callable[[], Any]) -> Response:
        denied = gateway.check_admin(request)
        if denied is not None:
            return denied
        try:
            return JSONResponse(await anyio.to_thread.run_sync(fn))
        except StoreError as exc:
            return JSONResponse(C.failure_body(5002, f"database error: {exc}"), status_code=503)
        except (ValueError, EdgeError) as exc:
            return JSONResponse(C.failure_body(4000, str(exc)), status_code=400)

    def app_view(rec: AppRecord) -> dict[str, Any]:
        packages = store.quota(rec.app_key)
        out = rec.to_dict(secret=False)
        out["paths"] = {
            g.api: f"{C.PATH_PREFIX}{g.service_code}/{C.API_PATHS[g.api]}" for g in rec.grants
        }
        out["quota"] = {
            g.api: {
                "remaining": sum(p.remaining for p in packages if p.api == g.api and p.active),
                "packages": [p.to_dict() for p in packages if p.api == g.api],
            }
            for g in rec.grants
        }
        return out

    @app.get("/console/api/apps", tags=["console"])
    async def console_apps(request: Request) -> Response:
        """Applications (no secrets) with grants, paths and remaining quota."""
        return await guarded(request, lambda: [app_view(a) for a in store.list_apps()])

    @app.get("/console/api/apps/{app}", tags=["console"])
    async def console_app(request: Request, app: str) -> Response:
        """One application by name or AppKey."""

        def one() -> Any:
            rec = store.find_app(app)
            if rec is None:
                raise ValueError(f"no application {app!r}")
            return app_view(rec)

        return await guarded(request, one)

    @app.get("/console/api/stats", tags=["console"])
    async def console_stats(
        request: Request,
        app: str | None = None,
        api: str | None = None,
        since: str | None = None,
        until: str | None = None,
        minutes: int = 60,
    ) -> Response:
        """Per-minute stats (requests, errors by code, p50/p95/p99 ms, bytes) per app/API.

        ``app``: name or AppKey; ``api``: hardhat|workwear|fence; ``since``/``until``:
        ISO 8601, without an offset the gateway's local time (default: the last
        ``minutes`` minutes)."""

        def stats() -> Any:
            key = None
            if app:
                rec = store.find_app(app)
                if rec is None:
                    raise ValueError(f"no application {app!r}")
                key = rec.app_key
            if api is not None and api not in C.APIS:
                raise ValueError(f"unknown api {api!r}")
            now = datetime.now(timezone.utc)
            lo = _parse_time(since, now - timedelta(minutes=max(minutes, 1)))
            hi = _parse_time(until, now + timedelta(minutes=1))
            rows = store.minute_stats(app_key=key, api=api, since=lo, until=hi)
            return {
                "since": lo.isoformat(),
                "until": hi.isoformat(),
                "stats": [r.to_dict() for r in rows],
            }

        return await guarded(request, stats)

    @app.get("/console/api/alerts", tags=["console"])
    async def console_alerts(
        request: Request, active: bool | None = None, limit: int = 100
    ) -> Response:
        """Alerts, newest first (``active=true`` open only, ``false`` resolved only)."""
        return await guarded(
            request,
            lambda: [
                a.to_dict()
                for a in store.list_alerts(active=active, limit=max(1, min(limit, 10_000)))
            ],
        )

    @app.get("/console/api/status", tags=["console"])
    async def console_status(request: Request) -> Response:
        """Gateway status: models, pool, counters, recent database faults."""

        def status() -> Any:
            cfg = gateway.config
            return {
                "gateway_id": cfg.gateway_id,
                "version": __version__,
                "models": {api: r.state(public=False) for api, r in gateway.runners.items()},
                "inflight": gateway.inflight,
                "capacity": gateway.capacity,
                "counters": dict(gateway.counters),
                "auth_failures": dict(gateway.auth_failures),
                "replay_cache_entries": len(gateway.replay),
                "metered": cfg.api.metered,
                "auth": cfg.api.auth,
                "admin_token_warning": gateway.admin_token_warning,
                "fallback": gateway.fallback.metrics() if gateway.fallback is not None else None,
                "store_faults": [
                    {
                        "at": f.at.isoformat(),
                        "kind": f.kind,
                        "operation": f.operation,
                        "cause": f.cause,
                    }
                    for f in store.faults()
                ],
            }

        return await guarded(request, status)
