"""Applications, resource packages, per-minute monitoring and alerts in one SQLite file.

One :class:`Store` per process owns one writer connection (WAL journal, ``busy_timeout``,
``synchronous=NORMAL``, ``FULL`` for the durable writes, see *Durability* below) guarded
by a lock, and a small pool of read-only connections, so every method is thread-safe
(FastAPI runs sync handlers in a thread pool). Writes (``BEGIN IMMEDIATE``) take turns on
the writer connection; reads (application and grant lookups, quota, monitoring, alerts,
metrics) each borrow a reader and run in their own read transaction, so they never queue
behind a write that is waiting for the file's write lock: in WAL mode a reader needs no
write lock, and an authentication lookup keeps answering while another process (or a
flush) holds or waits for that lock. Other processes (the ``safety-edge apps|quota``
commands while the gateway runs) share the file through SQLite's own locking.

Data model (all times are UTC; stored as integer Unix seconds)::

    apps(id, name UNIQUE NOCASE, description, app_key UNIQUE, app_secret, enabled, created_at)
    grants(app_id, api, service_code UNIQUE)                 one per (app, api)
    packages(id, app_id, api, tier, calls, used, start_at, expires_at)
    minute_stats(minute, app_key, api, requests, errors, request_bytes, response_bytes,
                 latency_sum_ms, latency_max_ms)             one row per minute/app/api
    minute_codes(minute, app_key, api, code, count)          non-zero codes only
    minute_latency(minute, app_key, api, bucket, count)      log-spaced latency histogram
    alerts(id, kind, key, cause, app_key, api, started_at, last_seen_at, ended_at, count)

``app_key``/``api`` are ``''`` in the monitoring tables when the request could not be
attributed (unknown AppKey, unknown path); :class:`MinuteStat` reports them as ``None``.

Quota semantics (``../shared/CONTRACT.md``): per API, packages of 100k/400k/800k/4M/8M
calls stack; each is active from its start until one year later (same date next year;
29 Feb -> 28 Feb); a call draws from the active package that expires first; unused calls
of an expired package are lost. :meth:`Store.consume` is one ``BEGIN IMMEDIATE``
transaction, so concurrent consumers — threads of this process or other processes on
the same file — never overdraw.

Durability (the gateway loses power abruptly): in WAL mode a ``synchronous=NORMAL``
commit is in the OS page cache, not on disk, when it returns; a power cut (not a process
crash) can roll it back. So the writes that must survive once acknowledged commit with
``synchronous=FULL`` (the WAL is fsynced before ``COMMIT`` returns; the pragma is set
before ``BEGIN`` and restored after the transaction, since SQLite refuses to change it
inside one): :meth:`Store.create_app`, :meth:`Store.add_grant`, :meth:`Store.disable_app`,
:meth:`Store.rotate_secret`, :meth:`Store.add_package` (the console and the
``safety-edge apps|quota`` commands) and :meth:`Store.flush`.

:meth:`Store.consume` (once per metered API call) stays at ``NORMAL``: with ``FULL`` a draw
took 1.3-2.8 ms on average (median up to 4 ms) on the development machine's disk, against
0.03 ms, and every write queues behind it on the writer lock. Its loss is bounded: an
fsync of the WAL file makes every earlier commit in it durable too, and every answered
call is recorded and then written by the next :meth:`Store.flush` (every
``api.metrics_flush_s``, 5 s by default), so a power cut loses at most the draws of about
the last flush period (plus a request's duration): the application gets those calls for
free; a sold package or an administrative change is never lost. Alerts, pruning and
migrations stay at ``NORMAL`` too: :func:`edge.api.alerts.evaluate` derives the open
alerts from the data at every round, so an opening or closing lost in a power cut is
redone (and handed to the sinks again), and a lost prune or migration runs again.
``pragmas={"synchronous": "FULL"}`` makes every write durable.

Monitoring: :meth:`Store.record_request` only updates an in-memory per-minute aggregate
(a few dict operations under a lock); :meth:`Store.flush` writes the aggregates with
additive upserts (call it every few seconds and at shutdown; :meth:`close` flushes).
:meth:`Store.minute_stats` counts every recorded request exactly once, also while a
flush runs: aggregates being flushed stay visible in memory until their transaction
commits, and a reader takes its database snapshot and its copy of memory atomically with
respect to that commit.
Latency percentiles come from a histogram of :data:`LATENCY_BOUNDS_MS` buckets (12 %
relative width), so p50/p95/p99 survive restarts and merge across minutes exactly. When a
flush fails (disk full, locked) the aggregates are kept in memory and retried; at most
:data:`MAX_PENDING_MINUTES` minutes are kept, older ones are dropped and counted in
``safety_edge_metrics_dropped_minutes_total``.

Failures: every ``sqlite3.OperationalError``/``DatabaseError`` (database is locked, disk
I/O error, database or disk is full) becomes :class:`StoreError` (contract code 5002) with
the operation and SQLite's error name; the fault is also remembered in memory
(:meth:`Store.faults`) so that :func:`edge.api.alerts.evaluate` opens a ``store_fault``
alert once the database accepts writes again (and hands it to MQTT at once).
"""

from __future__ import annotations

import bisect
import logging
import re
import secrets
import sqlite3
import string
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from edge import RELEASE_FLOOR
from edge.closing import Closing
from edge.errors import EdgeError
from edge.service import clock as _clock

__all__ = [
    "APIS",
    "CLOCK_FLOOR",
    "CLOCK_SLACK",
    "DB_FILENAME",
    "LATENCY_BOUNDS_MS",
    "MAX_PENDING_MINUTES",
    "TIERS",
    "TIER_CALLS",
    "AlertRecord",
    "Api",
    "AppError",
    "AppRecord",
    "ConsumeResult",
    "Grant",
    "MinuteStat",
    "PackageRecord",
    "Store",
    "StoreError",
    "StoreFault",
    "Tier",
    "add_one_year",
    "db_path",
    "histogram_percentile",
    "validate_app_name",
]

log = logging.getLogger("edge.api.store")

Api = Literal["hardhat", "workwear", "fence"]
APIS: tuple[Api, ...] = get_args(Api)

Tier = Literal["100k", "400k", "800k", "4m", "8m"]
TIERS: tuple[Tier, ...] = get_args(Tier)
TIER_CALLS: dict[Tier, int] = {
    "100k": 100_000,
    "400k": 400_000,
    "800k": 800_000,
    "4m": 4_000_000,
    "8m": 8_000_000,
}

DB_FILENAME = "safety-edge.sqlite3"
"""File name of the database inside the gateway's data directory."""

NAME_MIN, NAME_MAX = 4, 15

CLOCK_FLOOR = RELEASE_FLOOR
"""No real clock reads earlier than this (:data:`edge.RELEASE_FLOOR`): a gateway clock
before it is unset (no RTC battery: 1970, or the image's build date) and not yet corrected
by NTP. :meth:`Store.add_package` refuses to date a package by such a clock."""

CLOCK_SLACK = timedelta(hours=1)
"""How far the clock may read behind the newest time recorded in the database before
:meth:`Store.add_package` takes it for an unset clock (NTP corrections of a drifting clock
step it back by seconds; a package dated up to this much early loses at most this much of
its year)."""

# Latency histogram: bucket i counts latencies in (BOUNDS[i-1], BOUNDS[i]] ms; bucket 0 is
# [0, 0.1] ms and bucket len(BOUNDS) is (100 s, inf). 20 buckets per decade.
LATENCY_BOUNDS_MS: tuple[float, ...] = tuple(0.1 * 10 ** (i / 20) for i in range(121))
_OVERFLOW_BUCKET = len(LATENCY_BOUNDS_MS)

# Coarser, standard buckets for the Prometheus histogram (seconds).
_PROM_BOUNDS_S: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

MAX_PENDING_MINUTES = 1440
"""Most distinct minutes kept in memory while flushes fail (about one day)."""

_IDLE_READERS = 4
"""Read connections kept open between reads; more are opened while reads overlap."""

_SERVICE_CODE_ALPHABET = string.ascii_lowercase + string.digits


class StoreError(EdgeError):
    """The database failed: busy/locked, disk I/O error, disk full, corrupt (code 5002).

    ``kind`` is one of ``locked``, ``full``, ``io``, ``corrupt``, ``readonly``, ``other``.
    """

    code = 5002

    def __init__(self, message: str, *, kind: str = "other") -> None:
        super().__init__(message)
        self.kind = kind


class AppError(EdgeError):
    """A bad application/package request: invalid or duplicate name, unknown app, API not
    granted, unknown tier (code 5000 on the HTTP side; the CLI prints it and exits 2)."""

    code = 5000


@dataclass(frozen=True)
class Grant:
    """An application's grant of one API; ``service_code`` is the path segment."""

    app_key: str
    api: Api
    service_code: str


@dataclass(frozen=True)
class AppRecord:
    """An application. ``app_secret`` is the signing secret (32 chars)."""

    id: int
    name: str
    description: str
    app_key: str
    app_secret: str
    enabled: bool
    created_at: datetime
    grants: tuple[Grant, ...]

    @property
    def service_codes(self) -> dict[str, str]:
        """``{api: service_code}`` for every granted API."""
        return {g.api: g.service_code for g in self.grants}

    def to_dict(self, *, secret: bool = False) -> dict[str, Any]:
        """JSON-ready view; the secret only when ``secret`` is true."""
        out: dict[str, Any] = {
            "name": self.name,
            "description": self.description,
            "app_key": self.app_key,
        }
        if secret:
            out["app_secret"] = self.app_secret
        out.update(
            enabled=self.enabled,
            created_at=self.created_at.isoformat(),
            service_codes=self.service_codes,
        )
        return out


@dataclass(frozen=True)
class PackageRecord:
    """A resource package: ``calls`` calls of one API, valid ``[start, expires_at)``.

    ``active`` is evaluated at the time the record was read (started, not expired).
    """

    id: int
    app_key: str
    app_name: str
    api: Api
    tier: str
    calls: int
    used: int
    start: datetime
    expires_at: datetime
    active: bool

    @property
    def remaining(self) -> int:
        return self.calls - self.used

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "api": self.api,
            "tier": self.tier,
            "calls": self.calls,
            "used": self.used,
            "remaining": self.remaining,
            "start": self.start.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "active": self.active,
        }


@dataclass(frozen=True)
class ConsumeResult:
    """Outcome of :meth:`Store.consume`.

    ``ok``: one call was drawn. ``remaining``: calls left in all active packages of this
    app/API after the draw. ``package_id``: the package drawn from. ``reason``: ``"ok"``
    or the cause of the refusal (goes into the 4029 ``details``).
    """

    ok: bool
    remaining: int
    package_id: int | None
    reason: str


@dataclass(frozen=True)
class MinuteStat:
    """Traffic of one app/API in one minute.

    ``minute``: start of the minute (UTC). ``errors_by_code``: non-zero contract codes.
    ``p50_ms``/``p95_ms``/``p99_ms``: estimated from ``histogram`` (bucket index of
    :data:`LATENCY_BOUNDS_MS` -> count), within one bucket's width (12 %); ``None`` when
    no requests. Bytes are request/response body bytes.
    """

    minute: datetime
    app_key: str | None
    api: Api | None
    requests: int
    errors: int
    errors_by_code: dict[int, int]
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    mean_ms: float | None
    max_ms: float | None
    request_bytes: int
    response_bytes: int
    histogram: dict[int, int] = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "minute": self.minute.isoformat(),
            "app_key": self.app_key,
            "api": self.api,
            "requests": self.requests,
            "errors": self.errors,
            "errors_by_code": {str(k): v for k, v in sorted(self.errors_by_code.items())},
            "p50_ms": _round(self.p50_ms),
            "p95_ms": _round(self.p95_ms),
            "p99_ms": _round(self.p99_ms),
            "mean_ms": _round(self.mean_ms),
            "max_ms": _round(self.max_ms),
            "request_bytes": self.request_bytes,
            "response_bytes": self.response_bytes,
        }


@dataclass(frozen=True)
class AlertRecord:
    """An alert; open while ``ended_at`` is ``None``. At most one open per (kind, key).

    ``count``: how many times the condition was reported (opening plus each refresh by
    :meth:`Store.open_alert` while open); ``last_seen_at``: the latest of those.
    """

    id: int
    kind: str
    key: str
    cause: str
    app_key: str | None
    api: str | None
    started_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None
    count: int

    @property
    def active(self) -> bool:
        return self.ended_at is None

    def to_dict(self) -> dict[str, Any]:
        """The alert as handed to sinks (MQTT) and printed by ``alerts list``."""
        return {
            "id": self.id,
            "kind": self.kind,
            "key": self.key,
            "cause": self.cause,
            "app_key": self.app_key,
            "api": self.api,
            "state": "active" if self.active else "resolved",
            "started_at": self.started_at.isoformat(),
            "last_seen_at": self.last_seen_at.isoformat(),
            "ended_at": None if self.ended_at is None else self.ended_at.isoformat(),
            "count": self.count,
        }


@dataclass(frozen=True)
class StoreFault:
    """A database failure remembered in memory (see :meth:`Store.faults`)."""

    at: datetime
    kind: str
    operation: str
    cause: str


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _utc(dt: datetime | None) -> datetime:
    if dt is None:
        return datetime.now(timezone.utc)
    return dt.replace(tzinfo=timezone.utc) if dt.tzinfo is None else dt.astimezone(timezone.utc)


def _ts(dt: datetime) -> int:
    return int(_utc(dt).timestamp())


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, timezone.utc)


def add_one_year(dt: datetime) -> datetime:
    """Same date and time one year later (29 February -> 28 February)."""
    try:
        return dt.replace(year=dt.year + 1)
    except ValueError:
        return dt.replace(year=dt.year + 1, day=28)


def db_path(data_dir: Path | str) -> Path:
    """The database file inside a gateway data directory."""
    return Path(data_dir) / DB_FILENAME


def validate_app_name(name: str) -> str:
    """Return the NFC-normalized name or raise :class:`AppError` saying why it is bad.

    4..15 characters counted as Unicode code points after NFC normalization (a Chinese
    character counts as one); no control characters; no leading/trailing whitespace.
    """
    if not isinstance(name, str):
        raise AppError(f"application name must be a string, got {type(name).__name__}")
    norm = unicodedata.normalize("NFC", name)
    if norm != norm.strip():
        raise AppError(f"application name {name!r} must not start or end with whitespace")
    if any(unicodedata.category(c).startswith("C") for c in norm):
        raise AppError(f"application name {name!r} contains control or unprintable characters")
    n = len(norm)
    if not NAME_MIN <= n <= NAME_MAX:
        raise AppError(
            f"application name {name!r} has {n} characters; it must have "
            f"{NAME_MIN} to {NAME_MAX} (a Chinese character counts as one)"
        )
    return norm


def _check_api(api: str) -> Api:
    if api not in APIS:
        raise AppError(f"unknown API {api!r}; expected one of {', '.join(APIS)}")
    return api


def histogram_percentile(hist: Mapping[int, int], q: float) -> float | None:
    """The ``q`` quantile (0..1) in ms of a :data:`LATENCY_BOUNDS_MS` histogram.

    Linear interpolation inside the bucket holding the rank; ``None`` for an empty
    histogram. The overflow bucket (> 100 s) reports its lower bound.
    """
    total = sum(hist.values())
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for b in sorted(hist):
        c = hist[b]
        if c <= 0:
            continue
        if seen + c >= rank:
            if b >= _OVERFLOW_BUCKET:
                return LATENCY_BOUNDS_MS[-1]
            lo = 0.0 if b == 0 else LATENCY_BOUNDS_MS[b - 1]
            hi = LATENCY_BOUNDS_MS[b]
            frac = min(max((rank - seen) / c, 0.0), 1.0)
            return lo + (hi - lo) * frac
        seen += c
    return LATENCY_BOUNDS_MS[-1]


def _latency_bucket(ms: float) -> int:
    return bisect.bisect_left(LATENCY_BOUNDS_MS, ms)


class _Agg:
    """Mutable per-minute aggregate (in memory only)."""

    __slots__ = (
        "codes",
        "errors",
        "hist",
        "latency_max_ms",
        "latency_sum_ms",
        "request_bytes",
        "requests",
        "response_bytes",
    )

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.request_bytes = 0
        self.response_bytes = 0
        self.latency_sum_ms = 0.0
        self.latency_max_ms = 0.0
        self.codes: dict[int, int] = {}
        self.hist: dict[int, int] = {}

    def merge(self, other: _Agg) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.request_bytes += other.request_bytes
        self.response_bytes += other.response_bytes
        self.latency_sum_ms += other.latency_sum_ms
        self.latency_max_ms = max(self.latency_max_ms, other.latency_max_ms)
        for k, v in other.codes.items():
            self.codes[k] = self.codes.get(k, 0) + v
        for k, v in other.hist.items():
            self.hist[k] = self.hist.get(k, 0) + v


class _PromSeries:
    """Process-lifetime counters for one (app_key, api) (Prometheus counters)."""

    __slots__ = ("buckets", "codes", "count", "request_bytes", "response_bytes", "sum_s")

    def __init__(self) -> None:
        self.codes: dict[int, int] = {}
        self.buckets = [0] * (len(_PROM_BOUNDS_S) + 1)
        self.count = 0
        self.sum_s = 0.0
        self.request_bytes = 0
        self.response_bytes = 0


_MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE apps (
            id INTEGER PRIMARY KEY,
            name TEXT NOT NULL UNIQUE COLLATE NOCASE,
            description TEXT NOT NULL DEFAULT '',
            app_key TEXT NOT NULL UNIQUE,
            app_secret TEXT NOT NULL,
            enabled INTEGER NOT NULL DEFAULT 1,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
        )""",
        """CREATE TABLE grants (
            app_id INTEGER NOT NULL REFERENCES apps(id),
            api TEXT NOT NULL CHECK (api IN ('hardhat', 'workwear', 'fence')),
            service_code TEXT NOT NULL UNIQUE,
            created_at INTEGER NOT NULL,
            PRIMARY KEY (app_id, api)
        )""",
        """CREATE TABLE packages (
            id INTEGER PRIMARY KEY,
            app_id INTEGER NOT NULL REFERENCES apps(id),
            api TEXT NOT NULL CHECK (api IN ('hardhat', 'workwear', 'fence')),
            tier TEXT NOT NULL,
            calls INTEGER NOT NULL CHECK (calls > 0),
            used INTEGER NOT NULL DEFAULT 0 CHECK (used >= 0 AND used <= calls),
            start_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            created_at INTEGER NOT NULL
        )""",
        "CREATE INDEX packages_draw ON packages (app_id, api, expires_at)",
        """CREATE TABLE minute_stats (
            minute INTEGER NOT NULL,
            app_key TEXT NOT NULL,
            api TEXT NOT NULL,
            requests INTEGER NOT NULL,
            errors INTEGER NOT NULL,
            request_bytes INTEGER NOT NULL,
            response_bytes INTEGER NOT NULL,
            latency_sum_ms REAL NOT NULL,
            latency_max_ms REAL NOT NULL,
            PRIMARY KEY (minute, app_key, api)
        ) WITHOUT ROWID""",
        """CREATE TABLE minute_codes (
            minute INTEGER NOT NULL,
            app_key TEXT NOT NULL,
            api TEXT NOT NULL,
            code INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (minute, app_key, api, code)
        ) WITHOUT ROWID""",
        """CREATE TABLE minute_latency (
            minute INTEGER NOT NULL,
            app_key TEXT NOT NULL,
            api TEXT NOT NULL,
            bucket INTEGER NOT NULL,
            count INTEGER NOT NULL,
            PRIMARY KEY (minute, app_key, api, bucket)
        ) WITHOUT ROWID""",
        """CREATE TABLE alerts (
            id INTEGER PRIMARY KEY,
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            cause TEXT NOT NULL,
            app_key TEXT,
            api TEXT,
            started_at INTEGER NOT NULL,
            last_seen_at INTEGER NOT NULL,
            ended_at INTEGER,
            count INTEGER NOT NULL DEFAULT 1
        )""",
        "CREATE UNIQUE INDEX alerts_open ON alerts (kind, key) WHERE ended_at IS NULL",
        "CREATE INDEX alerts_started ON alerts (started_at)",
    ),
)
SCHEMA_VERSION = len(_MIGRATIONS)


_SYNC_NORMAL = 1  # PRAGMA synchronous levels
_SYNC_FULL = 2


def _rollback(conn: sqlite3.Connection) -> bool:
    """End the connection's open transaction, if any; ``False`` when that failed."""
    if conn.in_transaction:
        try:
            conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # the transaction may already be gone
            log.warning("rollback failed: %s", exc)
            return False
    return True


def _fault_kind(exc: sqlite3.Error) -> str:
    name = getattr(exc, "sqlite_errorname", "") or ""
    msg = str(exc).lower()
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in msg:
        return "locked"
    if name.startswith("SQLITE_FULL") or "is full" in msg:
        return "full"
    if name.startswith("SQLITE_IOERR") or "i/o error" in msg:
        return "io"
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in msg:
        return "corrupt"
    if name.startswith("SQLITE_READONLY") or "readonly" in msg:
        return "readonly"
    return "other"


class Store(Closing):
    """The gateway's SQLite store. See the module docstring for the data model.

    ``busy_timeout_ms``: how long a write waits for another connection's lock before
    failing with :class:`StoreError` (``kind="locked"``); reads wait for a lock only in
    SQLite's rare cases (WAL recovery), bounded by the same timeout. ``pragmas``: extra
    ``PRAGMA name = value`` applied to the writer connection after the defaults (e.g.
    ``{"max_page_count": 64}`` to cap the file size; ``{"synchronous": "FULL"}`` to make
    every write durable, not only the administrative ones).
    """

    def __init__(
        self,
        *,
        path: Path | str,
        busy_timeout_ms: int = 5000,
        pragmas: Mapping[str, int | str] | None = None,
    ) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = int(busy_timeout_ms)
        self._lock = threading.RLock()
        self._lock_timeout_s = max(busy_timeout_ms / 1000.0, 0.05) * 2
        self._agg_lock = threading.Lock()
        # Held around a flush's COMMIT (and the removal of its aggregates from memory) and
        # around a monitoring reader's snapshot start (and its copy of memory).
        self._view_lock = threading.Lock()
        self._readers: list[sqlite3.Connection] = []  # idle read connections
        self._readers_lock = threading.Lock()
        self._pending: dict[tuple[int, str, str], _Agg] = {}
        self._flushing: list[dict[tuple[int, str, str], _Agg]] = []  # taken, not committed
        self._prom: dict[tuple[str, str], _PromSeries] = {}
        self._dropped_minutes = 0
        self._faults: deque[StoreFault] = deque(maxlen=100)
        self._fault_count: dict[str, int] = {}
        self._closed = False
        self._sync_level = _SYNC_NORMAL  # the writer's level outside durable transactions
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create data directory {str(self.path.parent)!r}: {exc}"
            ) from exc
        try:
            self._conn = sqlite3.connect(
                str(self.path),
                timeout=busy_timeout_ms / 1000.0,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open database {str(self.path)!r}: {exc}", kind=_fault_kind(exc)
            ) from exc
        try:
            with self._guard("open database"):
                c = self._conn
                c.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
                mode = c.execute("PRAGMA journal_mode = WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    log.warning("SQLite journal_mode is %s, not wal (%s)", mode, self.path)
                c.execute("PRAGMA synchronous = NORMAL")
                c.execute("PRAGMA foreign_keys = ON")
                for name, value in (pragmas or {}).items():
                    if not re.fullmatch(r"[a-z_]+", name):
                        raise StoreError(f"bad pragma name {name!r}")
                    c.execute(
                        f"PRAGMA {name} = {value!r}"
                        if isinstance(value, str)
                        else f"PRAGMA {name} = {int(value)}"
                    )
                self._sync_level = int(c.execute("PRAGMA synchronous").fetchone()[0])
                self._migrate()
        except BaseException:
            self._conn.close()
            self._closed = True
            raise

    # -- plumbing ------------------------------------------------------------------

    def close(self) -> None:
        """Flush pending monitoring data (best effort) and close. Idempotent. A read
        running meanwhile finishes; its connection is closed when it returns."""
        with self._lock:
            if self._closed:
                return
            try:
                self.flush()
            except StoreError as exc:
                log.error("dropping unflushed monitoring data at close: %s", exc)
            self._closed = True
            self._conn.close()
            with self._readers_lock:
                idle, self._readers = self._readers, []
            for conn in idle:
                conn.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _note_fault(self, kind: str, operation: str, cause: str) -> None:
        fault = StoreFault(at=_utc(None), kind=kind, operation=operation, cause=cause)
        with self._agg_lock:
            self._faults.append(fault)
            self._fault_count[kind] = self._fault_count.get(kind, 0) + 1
        log.error("database fault (%s) during %s: %s", kind, operation, cause)

    def faults(self, *, since: datetime | None = None) -> list[StoreFault]:
        """Database failures remembered in memory (last 100), oldest first."""
        s = None if since is None else _utc(since)
        with self._agg_lock:
            faults = list(self._faults)
        return [f for f in faults if s is None or f.at >= s]

    @contextmanager
    def _guard(self, operation: str) -> Iterator[sqlite3.Connection]:
        """Hold the connection lock; map SQLite failures to StoreError; roll back.

        Waiting for the lock is bounded by the busy timeout too, so that while the file is
        locked by another process, queued callers fail after about one busy timeout each
        instead of one after the other.
        """
        if not self._lock.acquire(timeout=self._lock_timeout_s):
            cause = f"store busy: waited {self._lock_timeout_s:.1f} s for the connection"
            self._note_fault("locked", operation, cause)
            raise StoreError(f"database error during {operation}: {cause}", kind="locked")
        try:
            if self._closed:
                raise StoreError(f"{operation}: store is closed")
            try:
                yield self._conn
            except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                _rollback(self._conn)
                raise self._store_error(operation, exc) from exc
            except BaseException:
                _rollback(self._conn)
                raise
        finally:
            self._lock.release()

    def _store_error(self, operation: str, exc: sqlite3.Error) -> StoreError:
        """Remember a SQLite failure as a fault and convert it to :class:`StoreError`."""
        kind = _fault_kind(exc)
        name = getattr(exc, "sqlite_errorname", "") or "sqlite error"
        cause = f"{exc} ({name})"
        self._note_fault(kind, operation, cause)
        return StoreError(
            f"database error during {operation} on {str(self.path)!r}: {cause}", kind=kind
        )

    def _open_reader(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            str(self.path),
            timeout=self._busy_timeout_ms / 1000.0,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {self._busy_timeout_ms}")
            conn.execute("PRAGMA query_only = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    @contextmanager
    def _read(self, operation: str) -> Iterator[sqlite3.Connection]:
        """Borrow a read connection inside a read transaction (``BEGIN``: one snapshot
        from the first statement on); map SQLite failures to StoreError.

        Never takes the writer's lock: a read does not wait for a write in this process,
        nor (WAL) for another process's write lock. The connection is read-only
        (``query_only``); it goes back to the pool afterwards, or is closed when the pool
        is full, the read failed, or the store was closed meanwhile.
        """
        if self._closed:
            raise StoreError(f"{operation}: store is closed")
        with self._readers_lock:
            conn = self._readers.pop() if self._readers else None
        keep = True
        try:
            try:
                if conn is None:
                    conn = self._open_reader()
                conn.execute("BEGIN")
                yield conn
            except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
                keep = False
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                raise self._store_error(operation, exc) from exc
        finally:
            if conn is not None:
                keep = _rollback(conn) and keep
                with self._readers_lock:
                    if keep and not self._closed and len(self._readers) < _IDLE_READERS:
                        self._readers.append(conn)
                        conn = None
                if conn is not None:
                    conn.close()

    @contextmanager
    def _synced(self, c: sqlite3.Connection, *, durable: bool) -> Iterator[None]:
        """Run the enclosed transaction on ``c`` (the writer, outside a transaction, under
        :meth:`_guard`) with ``synchronous=FULL`` when ``durable`` and the connection's level
        is lower: its ``COMMIT`` returns once the WAL is fsynced. The level is set before
        and restored after the transaction (rolled back here if still open), because SQLite
        refuses to change it inside one. A failed restore leaves the connection at ``FULL``
        (slower, never less durable) and is logged."""
        if not durable or self._sync_level >= _SYNC_FULL:
            yield
            return
        c.execute("PRAGMA synchronous = FULL")
        try:
            yield
        finally:
            if _rollback(c):
                try:
                    c.execute(f"PRAGMA synchronous = {self._sync_level}")
                except sqlite3.Error as exc:
                    log.warning("cannot restore PRAGMA synchronous on %s: %s", self.path, exc)

    @contextmanager
    def _tx(
        self, operation: str, *, immediate: bool = True, durable: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """A transaction (``BEGIN IMMEDIATE`` for writers) under :meth:`_guard`;
        ``durable``: committed with ``synchronous=FULL`` (:meth:`_synced`)."""
        with self._guard(operation) as c, self._synced(c, durable=durable):
            c.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            yield c
            c.execute("COMMIT")

    def _migrate(self) -> None:
        c = self._conn
        version = int(c.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"database {str(self.path)!r} has schema version {version}, newer than this "
                f"software ({SCHEMA_VERSION}); upgrade safety-edge"
            )
        while version < SCHEMA_VERSION:
            c.execute("BEGIN IMMEDIATE")
            # Re-read inside the write lock: another process may have migrated meanwhile.
            version = int(c.execute("PRAGMA user_version").fetchone()[0])
            if version >= SCHEMA_VERSION:
                c.execute("COMMIT")
                break
            for stmt in _MIGRATIONS[version]:
                c.execute(stmt)
            version += 1
            c.execute(f"PRAGMA user_version = {version}")
            c.execute("COMMIT")
            log.info("migrated %s to schema version %d", self.path, version)

    @property
    def schema_version(self) -> int:
        with self._read("read schema version") as c:
            return int(c.execute("PRAGMA user_version").fetchone()[0])

    # -- applications ----------------------------------------------------------------

    def _grants(self, c: sqlite3.Connection, app_id: int, app_key: str) -> tuple[Grant, ...]:
        rows = c.execute(
            "SELECT api, service_code FROM grants WHERE app_id = ? ORDER BY api", (app_id,)
        ).fetchall()
        order = {a: i for i, a in enumerate(APIS)}
        return tuple(
            sorted((Grant(app_key, api, code) for api, code in rows), key=lambda g: order[g.api])
        )

    _APP_COLS = "id, name, description, app_key, app_secret, enabled, created_at"

    def _app_from_row(self, c: sqlite3.Connection, row: tuple[Any, ...]) -> AppRecord:
        id_, name, desc, key, secret, enabled, created = row
        return AppRecord(
            id=id_,
            name=name,
            description=desc,
            app_key=key,
            app_secret=secret,
            enabled=bool(enabled),
            created_at=_dt(created),
            grants=self._grants(c, id_, key),
        )

    def _find_row(self, c: sqlite3.Connection, name_or_key: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = c.execute(
            f"SELECT {self._APP_COLS} FROM apps WHERE app_key = ?", (name_or_key,)
        ).fetchone()
        if row is None:
            row = c.execute(
                f"SELECT {self._APP_COLS} FROM apps WHERE name = ?",
                (unicodedata.normalize("NFC", name_or_key),),
            ).fetchone()
        return row

    def _require_row(self, c: sqlite3.Connection, name_or_key: str) -> tuple[Any, ...]:
        row = self._find_row(c, name_or_key)
        if row is None:
            raise AppError(f"no application named or keyed {name_or_key!r}")
        return row

    def _new_service_code(self, c: sqlite3.Connection) -> str:
        while True:
            code = "".join(secrets.choice(_SERVICE_CODE_ALPHABET) for _ in range(16))
            if c.execute("SELECT 1 FROM grants WHERE service_code = ?", (code,)).fetchone() is None:
                return code

    def create_app(self, *, name: str, description: str, grants: Sequence[str]) -> AppRecord:
        """Create an application with a fresh AppKey (24 hex) and AppSecret (32 hex) and
        one service code (16 lowercase alnum) per granted API.

        Raises :class:`AppError` for a bad or taken name (case-insensitive) or an unknown API.
        """
        norm = validate_app_name(name)
        apis = list(dict.fromkeys(_check_api(a) for a in grants))
        if not isinstance(description, str) or len(description) > 500:
            raise AppError("description must be a string of at most 500 characters")
        now = _ts(_utc(None))
        with self._tx("create application", durable=True) as c:
            taken = c.execute("SELECT name FROM apps WHERE name = ?", (norm,)).fetchone()
            if taken is not None:
                raise AppError(f"application name {norm!r} is already taken (by {taken[0]!r})")
            key = secrets.token_hex(12)
            secret = secrets.token_hex(16)
            cur = c.execute(
                "INSERT INTO apps (name, description, app_key, app_secret, enabled, created_at,"
                " updated_at) VALUES (?, ?, ?, ?, 1, ?, ?)",
                (norm, description, key, secret, now, now),
            )
            app_id = int(cur.lastrowid or 0)
            for api in apis:
                c.execute(
                    "INSERT INTO grants (app_id, api, service_code, created_at) VALUES (?,?,?,?)",
                    (app_id, api, self._new_service_code(c), now),
                )
            row = c.execute(f"SELECT {self._APP_COLS} FROM apps WHERE id = ?", (app_id,)).fetchone()
            return self._app_from_row(c, row)

    def add_grant(self, *, app: str, api: str) -> AppRecord:
        """Grant ``api`` to an application (no-op when already granted)."""
        a = _check_api(api)
        with self._tx("grant API", durable=True) as c:
            row = self._require_row(c, app)
            exists = c.execute(
                "SELECT 1 FROM grants WHERE app_id = ? AND api = ?", (row[0], a)
            ).fetchone()
            if exists is None:
                c.execute(
                    "INSERT INTO grants (app_id, api, service_code, created_at) VALUES (?,?,?,?)",
                    (row[0], a, self._new_service_code(c), _ts(_utc(None))),
                )
            return self._app_from_row(c, row)

    def get_app(self, app_key: str) -> AppRecord | None:
        """The application with this AppKey (enabled or not), or ``None``."""
        with self._read("read application") as c:
            row = c.execute(
                f"SELECT {self._APP_COLS} FROM apps WHERE app_key = ?", (app_key,)
            ).fetchone()
            return None if row is None else self._app_from_row(c, row)

    def find_app(self, name_or_key: str) -> AppRecord | None:
        """The application with this AppKey or (case-insensitive) name, or ``None``."""
        with self._read("read application") as c:
            row = self._find_row(c, name_or_key)
            return None if row is None else self._app_from_row(c, row)

    def list_apps(self) -> list[AppRecord]:
        """All applications, oldest first."""
        with self._read("list applications") as c:
            rows = c.execute(f"SELECT {self._APP_COLS} FROM apps ORDER BY id").fetchall()
            return [self._app_from_row(c, r) for r in rows]

    def disable_app(self, name_or_key: str, *, enabled: bool = False) -> AppRecord:
        """Disable (or with ``enabled=True`` re-enable) an application."""
        with self._tx("disable application", durable=True) as c:
            row = self._require_row(c, name_or_key)
            c.execute(
                "UPDATE apps SET enabled = ?, updated_at = ? WHERE id = ?",
                (int(enabled), _ts(_utc(None)), row[0]),
            )
            row = c.execute(f"SELECT {self._APP_COLS} FROM apps WHERE id = ?", (row[0],)).fetchone()
            return self._app_from_row(c, row)

    def rotate_secret(self, name_or_key: str) -> AppRecord:
        """Give an application a new AppSecret; the old one stops working at once."""
        with self._tx("rotate secret", durable=True) as c:
            row = self._require_row(c, name_or_key)
            c.execute(
                "UPDATE apps SET app_secret = ?, updated_at = ? WHERE id = ?",
                (secrets.token_hex(16), _ts(_utc(None)), row[0]),
            )
            row = c.execute(f"SELECT {self._APP_COLS} FROM apps WHERE id = ?", (row[0],)).fetchone()
            return self._app_from_row(c, row)

    def grant_for_service_code(self, service_code: str) -> Grant | None:
        """The grant a path's service code names, or ``None``."""
        with self._read("read grant") as c:
            row = c.execute(
                "SELECT a.app_key, g.api FROM grants g JOIN apps a ON a.id = g.app_id"
                " WHERE g.service_code = ?",
                (service_code,),
            ).fetchone()
            return None if row is None else Grant(row[0], row[1], service_code)

    # -- resource packages -------------------------------------------------------------

    def add_package(
        self,
        *,
        app: str,
        api: str,
        tier: str,
        start: datetime | None = None,
        calls: int | None = None,
        now: datetime | None = None,
        clock_synchronized: Callable[[], bool | None] | None = None,
    ) -> PackageRecord:
        """Add a package of ``tier`` calls of ``api``, valid from ``start`` (default now)
        for one year. ``calls`` overrides the tier's call count (tests, promotions).
        ``now``: the current time (default the system clock; tests inject theirs).
        ``clock_synchronized``: is the clock NTP synchronized? (default
        :func:`edge.service.clock.clock_synchronized`: the kernel's NTP state or
        systemd-timesyncd; tests inject theirs).

        Without ``start`` the package is dated by the clock, so the clock must be
        plausible: it must not read before :data:`CLOCK_FLOOR` nor, unless it is NTP
        synchronized, more than :data:`CLOCK_SLACK` before the newest time recorded in the
        database (an application, grant or package change, a monitoring minute, an alert).
        A gateway that booted without a real-time clock reads 1970 or its image's build date
        until NTP sets it; a package sold then would start (and expire) in the wrong year
        and, once the clock is set, refuse every call with 4029. Such a request is refused
        with an :class:`AppError` asking for an explicit ``start`` (or a set clock)
        instead. A synchronized clock is right by definition: a record after it was written
        while the clock ran ahead (a bad RTC reading, a wrong NTP/GPS step) and is logged
        (WARNING), not a floor -- else every sale would be refused until that date.

        Raises :class:`AppError` for an unknown app/tier/API, an API the app is not
        granted, a start whose year of validity does not fit a ``datetime``, or no
        ``start`` while the clock is implausible (see above).
        """
        a = _check_api(api)
        if tier not in TIER_CALLS:
            raise AppError(f"unknown tier {tier!r}; expected one of {', '.join(TIERS)}")
        n = TIER_CALLS[tier] if calls is None else int(calls)
        if n <= 0:
            raise AppError(f"a package needs a positive call count, got {n}")
        t_now = _utc(now)
        try:
            begin = _utc(t_now if start is None else start).replace(microsecond=0)
            expires = add_one_year(begin)
        except (ValueError, OverflowError):
            raise AppError(
                f"package start {start} is out of range: its one year of validity must lie "
                "within the years 1 to 9999 (UTC)"
            ) from None
        with self._tx("add package", durable=True) as c:
            row = self._require_row(c, app)
            granted = c.execute(
                "SELECT 1 FROM grants WHERE app_id = ? AND api = ?", (row[0], a)
            ).fetchone()
            if granted is None:
                raise AppError(f"application {row[1]!r} is not granted the {a} API; grant it first")
            if start is None:
                probe = clock_synchronized or _clock.clock_synchronized
                self._check_clock(c, t_now, synchronized=probe)
            cur = c.execute(
                "INSERT INTO packages (app_id, api, tier, calls, used, start_at, expires_at,"
                " created_at) VALUES (?, ?, ?, ?, 0, ?, ?, ?)",
                (row[0], a, tier, n, _ts(begin), _ts(expires), _ts(t_now)),
            )
            pid = int(cur.lastrowid or 0)
        return PackageRecord(
            id=pid,
            app_key=row[3],
            app_name=row[1],
            api=a,
            tier=tier,
            calls=n,
            used=0,
            start=begin,
            expires_at=expires,
            active=begin <= t_now < expires,
        )

    _NEWEST_TIMES = (
        ("an application change", "SELECT MAX(MAX(created_at), MAX(updated_at)) FROM apps"),
        ("an API grant", "SELECT MAX(created_at) FROM grants"),
        ("a resource package sale", "SELECT MAX(created_at) FROM packages"),
        ("a monitoring minute", "SELECT MAX(minute) FROM minute_stats"),
        ("an alert", "SELECT MAX(last_seen_at) FROM alerts"),
    )

    def _check_clock(
        self,
        c: sqlite3.Connection,
        now: datetime,
        *,
        synchronized: Callable[[], bool | None],
    ) -> None:
        """Raise :class:`AppError` when ``now`` cannot be the real time (see add_package).
        ``synchronized()``: is the clock NTP synchronized (the recorded times are then no
        floor)? Asked only when ``now`` is before a floor."""
        release = f"before this software's release ({CLOCK_FLOOR.date()})"
        floor, what = CLOCK_FLOOR, release
        slack_h = CLOCK_SLACK.total_seconds() / 3600
        for name, sql in self._NEWEST_TIMES:
            ts = c.execute(sql).fetchone()[0]
            if ts is not None and _dt(int(ts)) - CLOCK_SLACK > floor:
                floor = _dt(int(ts)) - CLOCK_SLACK
                what = (
                    f"more than {slack_h:g} h before {name} recorded at {_dt(int(ts)).isoformat()}"
                )
        if now >= floor:
            return
        synced = synchronized() is True
        if synced and now >= CLOCK_FLOOR:
            log.warning(
                "package dated by the NTP-synchronized clock %s, though it reads %s: that "
                "record was written while the clock ran ahead",
                now.isoformat(timespec="seconds"),
                what,
            )
            return
        if synced:  # only the fixed floor binds a synchronized clock
            what = release
        log.warning(
            "package not added: the clock reads %s, %s; it is probably not set yet",
            now.isoformat(timespec="seconds"),
            what,
        )
        raise AppError(
            f"the gateway clock reads {now.isoformat(timespec='seconds')}, which is {what}: "
            "the clock is probably not set yet (no RTC, NTP not reached). A package "
            "starting now would start and expire at the wrong date (and refuse calls with 4029 "
            "once the clock is set). Set the clock, or give the start explicitly "
            "(safety-edge quota add ... --start YYYY-MM-DDTHH:MM, or the console's Start field)"
        )

    def quota(
        self, app: str, *, api: str | None = None, now: datetime | None = None
    ) -> list[PackageRecord]:
        """Every package of an application (optionally one API), ordered by API then expiry,
        with ``used``/``remaining`` and ``active`` evaluated at ``now``."""
        t = _ts(_utc(now))
        with self._read("read quota") as c:
            row = self._require_row(c, app)
            sql = (
                "SELECT id, api, tier, calls, used, start_at, expires_at FROM packages"
                " WHERE app_id = ?"
            )
            params: list[Any] = [row[0]]
            if api is not None:
                sql += " AND api = ?"
                params.append(_check_api(api))
            rows = c.execute(sql + " ORDER BY api, expires_at, id", params).fetchall()
        return [
            PackageRecord(
                id=r[0],
                app_key=row[3],
                app_name=row[1],
                api=r[1],
                tier=r[2],
                calls=r[3],
                used=r[4],
                start=_dt(r[5]),
                expires_at=_dt(r[6]),
                active=r[5] <= t < r[6],
            )
            for r in rows
        ]

    def remaining(self, *, app_key: str, api: str, now: datetime | None = None) -> int:
        """Calls left in the active packages of one app/API."""
        t = _ts(_utc(now))
        with self._read("read quota") as c:
            r = c.execute(
                "SELECT COALESCE(SUM(p.calls - p.used), 0) FROM packages p JOIN apps a"
                " ON a.id = p.app_id WHERE a.app_key = ? AND p.api = ? AND p.start_at <= ?"
                " AND p.expires_at > ?",
                (app_key, api, t, t),
            ).fetchone()
            return int(r[0])

    def consume(self, *, app_key: str, api: str, now: datetime | None = None) -> ConsumeResult:
        """Draw one call of ``api`` for ``app_key`` from the active package that expires
        first. Atomic (``BEGIN IMMEDIATE``). ``ok=False`` with a ``reason`` when the app is
        unknown/disabled/not granted or no active package has calls left.

        Raises :class:`StoreError` when the database fails (locked past the busy timeout,
        disk full, I/O error).
        """
        t = _ts(_utc(now))
        with self._tx("consume quota") as c:
            app = c.execute("SELECT id, enabled FROM apps WHERE app_key = ?", (app_key,)).fetchone()
            if app is None:
                return ConsumeResult(False, 0, None, "unknown AppKey")
            if not app[1]:
                return ConsumeResult(False, 0, None, "application is disabled")
            rows = c.execute(
                "SELECT id, calls - used FROM packages WHERE app_id = ? AND api = ?"
                " AND start_at <= ? AND expires_at > ? ORDER BY expires_at, id",
                (app[0], api, t, t),
            ).fetchall()
            pick = next((r[0] for r in rows if r[1] > 0), None)
            if pick is None:
                if rows:
                    reason = f"all active resource packages of the {api} API are used up"
                else:
                    granted = c.execute(
                        "SELECT 1 FROM grants WHERE app_id = ? AND api = ?", (app[0], api)
                    ).fetchone()
                    reason = (
                        f"application is not granted the {api} API"
                        if granted is None
                        else f"no active resource package for the {api} API"
                    )
                return ConsumeResult(False, 0, None, reason)
            c.execute("UPDATE packages SET used = used + 1 WHERE id = ?", (pick,))
            left = sum(r[1] for r in rows) - 1
            return ConsumeResult(True, left, pick, "ok")

    # -- monitoring --------------------------------------------------------------------

    def record_request(
        self,
        *,
        app_key: str | None,
        api: str | None,
        code: int,
        latency_ms: float,
        request_bytes: int,
        response_bytes: int,
        at: datetime | None = None,
    ) -> None:
        """Count one answered request (cheap: in-memory only; see :meth:`flush`).

        ``app_key``/``api``: ``None`` when unknown. ``code``: the contract code answered
        (0 = success). ``latency_ms``: time from first byte read to answer, ms.
        """
        ts = time.time() if at is None else _utc(at).timestamp()
        minute = int(ts // 60) * 60
        key = (minute, app_key or "", api or "")
        lat = max(float(latency_ms), 0.0)
        request_bytes = max(int(request_bytes), 0)
        response_bytes = max(int(response_bytes), 0)
        bucket = _latency_bucket(lat)
        prom_bucket = bisect.bisect_left(_PROM_BOUNDS_S, lat / 1000.0)
        with self._agg_lock:
            agg = self._pending.get(key)
            if agg is None:
                agg = self._pending[key] = _Agg()
            agg.requests += 1
            agg.request_bytes += request_bytes
            agg.response_bytes += response_bytes
            agg.latency_sum_ms += lat
            if lat > agg.latency_max_ms:
                agg.latency_max_ms = lat
            agg.hist[bucket] = agg.hist.get(bucket, 0) + 1
            if code != 0:
                agg.errors += 1
                agg.codes[code] = agg.codes.get(code, 0) + 1
            s = self._prom.get(key[1:])
            if s is None:
                s = self._prom[key[1:]] = _PromSeries()
            s.codes[code] = s.codes.get(code, 0) + 1
            s.buckets[prom_bucket] += 1
            s.count += 1
            s.sum_s += lat / 1000.0
            s.request_bytes += request_bytes
            s.response_bytes += response_bytes

    def _take_pending(self) -> dict[tuple[int, str, str], _Agg]:
        """Move the pending aggregates to the in-flight list (still visible to readers)."""
        with self._agg_lock:
            pending, self._pending = self._pending, {}
            if pending:
                self._flushing.append(pending)
        return pending

    def _drop_flushing(self, pending: dict[tuple[int, str, str], _Agg]) -> None:
        """Forget in-flight aggregates; call with ``_agg_lock`` held."""
        for i, d in enumerate(self._flushing):
            if d is pending:
                del self._flushing[i]
                return

    def _restore_pending(self, pending: dict[tuple[int, str, str], _Agg]) -> None:
        """Put the aggregates of a failed flush back (one step for readers)."""
        with self._agg_lock:
            self._drop_flushing(pending)
            for k, v in pending.items():
                cur = self._pending.get(k)
                if cur is None:
                    self._pending[k] = v
                else:
                    cur.merge(v)
            minutes = sorted({k[0] for k in self._pending})
            if len(minutes) > MAX_PENDING_MINUTES:
                cut = minutes[-MAX_PENDING_MINUTES]
                old = [k for k in self._pending if k[0] < cut]
                for k in old:
                    del self._pending[k]
                self._dropped_minutes += len(minutes) - MAX_PENDING_MINUTES
                log.error("dropped %d minutes of unflushed monitoring data", len(old))

    def flush(self) -> int:
        """Write the in-memory aggregates to SQLite (additive upserts, one transaction).

        Returns the number of (minute, app, API) rows written. On failure the aggregates
        stay in memory for the next flush and :class:`StoreError` is raised. Readers
        (:meth:`minute_stats`) see the aggregates in memory until the commit, and in the
        database from the commit on; never both, never neither.
        """
        pending = self._take_pending()
        if not pending:
            return 0
        try:
            # Durable: also makes the quota draws committed before it durable (one WAL).
            with (
                self._guard("flush monitoring data") as c,
                self._synced(c, durable=True),
            ):
                c.execute("BEGIN IMMEDIATE")
                for (minute, app_key, api), a in pending.items():
                    c.execute(
                        "INSERT INTO minute_stats (minute, app_key, api, requests, errors,"
                        " request_bytes, response_bytes, latency_sum_ms, latency_max_ms)"
                        " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (minute, app_key, api) DO UPDATE"
                        " SET requests = requests + excluded.requests,"
                        " errors = errors + excluded.errors,"
                        " request_bytes = request_bytes + excluded.request_bytes,"
                        " response_bytes = response_bytes + excluded.response_bytes,"
                        " latency_sum_ms = latency_sum_ms + excluded.latency_sum_ms,"
                        " latency_max_ms = MAX(latency_max_ms, excluded.latency_max_ms)",
                        (
                            minute,
                            app_key,
                            api,
                            a.requests,
                            a.errors,
                            a.request_bytes,
                            a.response_bytes,
                            a.latency_sum_ms,
                            a.latency_max_ms,
                        ),
                    )
                    c.executemany(
                        "INSERT INTO minute_codes (minute, app_key, api, code, count)"
                        " VALUES (?,?,?,?,?) ON CONFLICT (minute, app_key, api, code)"
                        " DO UPDATE SET count = count + excluded.count",
                        [(minute, app_key, api, k, v) for k, v in a.codes.items()],
                    )
                    c.executemany(
                        "INSERT INTO minute_latency (minute, app_key, api, bucket, count)"
                        " VALUES (?,?,?,?,?) ON CONFLICT (minute, app_key, api, bucket)"
                        " DO UPDATE SET count = count + excluded.count",
                        [(minute, app_key, api, k, v) for k, v in a.hist.items()],
                    )
                with self._view_lock:
                    c.execute("COMMIT")
                    with self._agg_lock:
                        self._drop_flushing(pending)
        except BaseException:
            self._restore_pending(pending)
            raise
        return len(pending)

    @property
    def pending_rows(self) -> int:
        """(minute, app, API) aggregates not yet in the database (a flush may be writing
        some of them now)."""
        with self._agg_lock:
            return len(self._pending) + sum(len(d) for d in self._flushing)

    def minute_stats(
        self,
        *,
        app_key: str | None = None,
        api: str | None = None,
        since: datetime,
        until: datetime | None = None,
    ) -> list[MinuteStat]:
        """Per-minute rows with ``since <= minute < until`` (default: up to now, inclusive
        of the current minute), ordered by minute, app, API. ``app_key``/``api`` ``None``
        = all. Includes data not yet flushed. Reads only; never writes.
        """
        lo = int(_utc(since).timestamp() // 60) * 60
        hi = 2**62 if until is None else int(_utc(until).timestamp())
        where = "minute >= ? AND minute < ?"
        params: list[Any] = [lo, hi]
        if app_key is not None:
            where += " AND app_key = ?"
            params.append(app_key)
        if api is not None:
            where += " AND api = ?"
            params.append(api)
        aggs: dict[tuple[int, str, str], _Agg] = {}
        memory: dict[tuple[int, str, str], _Agg] = {}
        with self._read("read monitoring data") as c:
            with self._view_lock:
                # Start the read transaction's snapshot and copy what is in memory with no
                # flush committing in between: each aggregate is in exactly one of them.
                c.execute("SELECT 1 FROM minute_stats LIMIT 1").fetchall()
                with self._agg_lock:
                    for part in (self._pending, *self._flushing):
                        for key, pa in part.items():
                            m, k, ap = key
                            if not lo <= m < hi:
                                continue
                            if (app_key is not None and k != app_key) or (
                                api is not None and ap != api
                            ):
                                continue
                            memory.setdefault(key, _Agg()).merge(pa)
            for r in c.execute(
                "SELECT minute, app_key, api, requests, errors, request_bytes, response_bytes,"
                f" latency_sum_ms, latency_max_ms FROM minute_stats WHERE {where}",
                params,
            ):
                a = aggs[(r[0], r[1], r[2])] = _Agg()
                (
                    a.requests,
                    a.errors,
                    a.request_bytes,
                    a.response_bytes,
                    a.latency_sum_ms,
                    a.latency_max_ms,
                ) = r[3:]
            for table, col in (("minute_codes", "code"), ("minute_latency", "bucket")):
                for m, k, ap, b, n in c.execute(
                    f"SELECT minute, app_key, api, {col}, count FROM {table} WHERE {where}",
                    params,
                ):
                    a = aggs.setdefault((m, k, ap), _Agg())
                    (a.codes if table == "minute_codes" else a.hist)[b] = n
        for key, ma in memory.items():
            aggs.setdefault(key, _Agg()).merge(ma)
        out = []
        for (m, k, ap), a in sorted(aggs.items()):
            out.append(
                MinuteStat(
                    minute=_dt(m),
                    app_key=k or None,
                    api=ap or None,  # type: ignore[arg-type]
                    requests=a.requests,
                    errors=a.errors,
                    errors_by_code=dict(sorted(a.codes.items())),
                    p50_ms=histogram_percentile(a.hist, 0.50),
                    p95_ms=histogram_percentile(a.hist, 0.95),
                    p99_ms=histogram_percentile(a.hist, 0.99),
                    mean_ms=a.latency_sum_ms / a.requests if a.requests else None,
                    max_ms=a.latency_max_ms if a.requests else None,
                    request_bytes=a.request_bytes,
                    response_bytes=a.response_bytes,
                    histogram=dict(sorted(a.hist.items())),
                )
            )
        return out

    def prune(self, retention_days: int, *, now: datetime | None = None) -> int:
        """Delete monitoring rows older than ``retention_days`` and resolved alerts that
        ended before then. Returns the number of rows deleted."""
        if retention_days < 0:
            raise ValueError("retention_days must be >= 0")
        cut = _ts(_utc(now) - timedelta(days=retention_days))
        n = 0
        with self._tx("prune old data") as c:
            for table in ("minute_stats", "minute_codes", "minute_latency"):
                n += c.execute(f"DELETE FROM {table} WHERE minute < ?", (cut,)).rowcount
            n += c.execute(
                "DELETE FROM alerts WHERE ended_at IS NOT NULL AND ended_at < ?", (cut,)
            ).rowcount
        return n

    # -- Prometheus ------------------------------------------------------------------

    def prometheus_text(self, *, now: datetime | None = None) -> str:
        """Prometheus text exposition (format 0.0.4).

        Counters are process-lifetime totals from :meth:`record_request` (they restart at
        zero with the process, which Prometheus handles); gauges (remaining quota, active
        alerts) are read from the database. Labels: ``app`` (application name, ``""`` when
        unknown), ``api``, ``code``.
        """
        names: dict[str, str] = {}
        quota_rows: list[tuple[str, str, int, int]] = []
        alerts_by_kind: dict[str, int] = {}
        db_ok = 1
        t = _ts(_utc(now))
        try:
            with self._read("read metrics") as c:
                names = dict(c.execute("SELECT app_key, name FROM apps").fetchall())
                quota_rows = c.execute(
                    "SELECT a.name, p.api, COALESCE(SUM(p.calls - p.used), 0), COUNT(*)"
                    " FROM packages p JOIN apps a ON a.id = p.app_id"
                    " WHERE p.start_at <= ? AND p.expires_at > ? GROUP BY a.name, p.api"
                    " ORDER BY a.name, p.api",
                    (t, t),
                ).fetchall()
                alerts_by_kind = dict(
                    c.execute(
                        "SELECT kind, COUNT(*) FROM alerts WHERE ended_at IS NULL GROUP BY kind"
                    ).fetchall()
                )
        except StoreError:
            db_ok = 0

        def lab(**kw: str) -> str:
            inner = ",".join(f'{k}="{_esc(v)}"' for k, v in kw.items())
            return "{" + inner + "}"

        with self._agg_lock:
            series = sorted(self._prom.items())
            snap = [
                (
                    k,
                    dict(s.codes),
                    list(s.buckets),
                    s.count,
                    s.sum_s,
                    s.request_bytes,
                    s.response_bytes,
                )
                for k, s in series
            ]
            dropped = self._dropped_minutes
        lines: list[str] = []
        add = lines.append
        add("# HELP safety_edge_requests_total Answered API requests by contract code.")
        add("# TYPE safety_edge_requests_total counter")
        for (k, ap), codes, *_ in snap:
            for code, n in sorted(codes.items()):
                labels = lab(app=names.get(k, ""), api=ap, code=str(code))
                add(f"safety_edge_requests_total{labels} {n}")
        add("# HELP safety_edge_request_duration_seconds Time to answer an API request.")
        add("# TYPE safety_edge_request_duration_seconds histogram")
        for (k, ap), _codes, buckets, count, sum_s, *_ in snap:
            app = names.get(k, "")
            cum = 0
            for bound, n in zip(_PROM_BOUNDS_S, buckets, strict=False):
                cum += n
                add(
                    "safety_edge_request_duration_seconds_bucket"
                    f"{lab(app=app, api=ap, le=repr(bound))} {cum}"
                )
            labels = lab(app=app, api=ap, le="+Inf")
            add(f"safety_edge_request_duration_seconds_bucket{labels} {count}")
            add(f"safety_edge_request_duration_seconds_sum{lab(app=app, api=ap)} {sum_s:.6f}")
            add(f"safety_edge_request_duration_seconds_count{lab(app=app, api=ap)} {count}")
        for metric, idx, help_ in (
            ("safety_edge_request_bytes_total", 5, "Request body bytes received."),
            ("safety_edge_response_bytes_total", 6, "Response body bytes sent."),
        ):
            add(f"# HELP {metric} {help_}")
            add(f"# TYPE {metric} counter")
            for row in snap:
                (k, ap) = row[0]
                add(f"{metric}{lab(app=names.get(k, ''), api=ap)} {row[idx]}")
        add("# HELP safety_edge_quota_remaining_calls Calls left in active resource packages.")
        add("# TYPE safety_edge_quota_remaining_calls gauge")
        for name, ap, left, _n in quota_rows:
            add(f"safety_edge_quota_remaining_calls{lab(app=name, api=ap)} {left}")
        add("# HELP safety_edge_alerts_active Open alerts by kind.")
        add("# TYPE safety_edge_alerts_active gauge")
        for kind, n in sorted(alerts_by_kind.items()):
            add(f"safety_edge_alerts_active{lab(kind=kind)} {n}")
        add("# HELP safety_edge_store_faults_total Database failures by kind.")
        add("# TYPE safety_edge_store_faults_total counter")
        with self._agg_lock:
            fault_counts = sorted(self._fault_count.items())
        for kind, n in fault_counts:
            add(f"safety_edge_store_faults_total{lab(kind=kind)} {n}")
        add("# HELP safety_edge_store_up 1 when the database answered this scrape.")
        add("# TYPE safety_edge_store_up gauge")
        add(f"safety_edge_store_up {db_ok}")
        add("# HELP safety_edge_metrics_pending_rows Monitoring aggregates not yet flushed.")
        add("# TYPE safety_edge_metrics_pending_rows gauge")
        add(f"safety_edge_metrics_pending_rows {self.pending_rows}")
        add("# HELP safety_edge_metrics_dropped_minutes_total Minutes of monitoring data dropped.")
        add("# TYPE safety_edge_metrics_dropped_minutes_total counter")
        add(f"safety_edge_metrics_dropped_minutes_total {dropped}")
        return "\n".join(lines) + "\n"

    # -- alerts ----------------------------------------------------------------------

    _ALERT_COLS = "id, kind, key, cause, app_key, api, started_at, last_seen_at, ended_at, count"

    @staticmethod
    def _alert(r: tuple[Any, ...]) -> AlertRecord:
        return AlertRecord(
            id=r[0],
            kind=r[1],
            key=r[2],
            cause=r[3],
            app_key=r[4],
            api=r[5],
            started_at=_dt(r[6]),
            last_seen_at=_dt(r[7]),
            ended_at=None if r[8] is None else _dt(r[8]),
            count=r[9],
        )

    def open_alert(
        self,
        *,
        kind: str,
        key: str,
        cause: str,
        app_key: str | None = None,
        api: str | None = None,
        now: datetime | None = None,
    ) -> AlertRecord:
        """Open an alert, or refresh the open one for (kind, key): its ``cause`` and
        ``last_seen_at`` are updated and ``count`` incremented; ``started_at`` is kept."""
        t = _ts(_utc(now))
        with self._tx("open alert") as c:
            row = c.execute(
                f"SELECT {self._ALERT_COLS} FROM alerts WHERE kind = ? AND key = ?"
                " AND ended_at IS NULL",
                (kind, key),
            ).fetchone()
            if row is None:
                cur = c.execute(
                    "INSERT INTO alerts (kind, key, cause, app_key, api, started_at,"
                    " last_seen_at, count) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                    (kind, key, cause, app_key, api, t, t),
                )
                rid = int(cur.lastrowid or 0)
            else:
                rid = row[0]
                c.execute(
                    "UPDATE alerts SET cause = ?, last_seen_at = ?, count = count + 1 WHERE id = ?",
                    (cause, t, rid),
                )
            return self._alert(
                c.execute(f"SELECT {self._ALERT_COLS} FROM alerts WHERE id = ?", (rid,)).fetchone()
            )

    def close_alert(
        self, *, kind: str, key: str, now: datetime | None = None
    ) -> AlertRecord | None:
        """Close the open alert for (kind, key); returns it, or ``None`` if none was open."""
        t = _ts(_utc(now))
        with self._tx("close alert") as c:
            row = c.execute(
                "SELECT id FROM alerts WHERE kind = ? AND key = ? AND ended_at IS NULL",
                (kind, key),
            ).fetchone()
            if row is None:
                return None
            c.execute("UPDATE alerts SET ended_at = ? WHERE id = ?", (t, row[0]))
            return self._alert(
                c.execute(
                    f"SELECT {self._ALERT_COLS} FROM alerts WHERE id = ?", (row[0],)
                ).fetchone()
            )

    def list_alerts(self, *, active: bool | None = None, limit: int = 100) -> list[AlertRecord]:
        """Alerts, newest first; ``active`` True = open only, False = resolved only."""
        sql = f"SELECT {self._ALERT_COLS} FROM alerts"
        if active is True:
            sql += " WHERE ended_at IS NULL"
        elif active is False:
            sql += " WHERE ended_at IS NOT NULL"
        sql += " ORDER BY started_at DESC, id DESC LIMIT ?"
        with self._read("list alerts") as c:
            return [self._alert(r) for r in c.execute(sql, (int(limit),)).fetchall()]


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
