"""The local events table: every zone event the gateway raised, for the console and queries.

One SQLite file in the data directory (:func:`events_db_path`), WAL mode, so the command
line (``safety-edge events list``) and the API can read while the pipeline writes. Rows
are never updated; :meth:`EventStore.prune` deletes old ones (the retention), and
:meth:`EventStore.prune_to_size` the oldest while the data is over a size bound (the
freed pages are reused, so the file stops growing; see there). The MQTT outbox is a
separate table owned by :mod:`edge.mqtt.outbox`: this one is a log, not a queue.

The rows form a SHA-256 hash chain (``seq``, ``prev_hash``, ``hash`` columns; the
canonical form, pruning anchor and what it proves are in :mod:`edge.stream.evidence`).
Appends run in ``BEGIN IMMEDIATE`` transactions that read the chain head and write the
new rows and the new head together, so the chain never forks, also with several
processes writing. Schema migrations are numbered (``PRAGMA user_version``); migration 2
added ``snapshot_sha256`` and the chain, and chained the rows already stored in their
insertion (``rowid``) order; migration 4 added the per-row link scheme (``link``,
``key_id``) and the keying record (``events_chain.key_id``, ``keyed_from_seq``,
``head_mac``) for keyed links.

**Who migrates**: only a store opened with ``migrate=True`` (the default: the gateway,
``safety-edge run``). The ``events`` commands open with ``migrate=False`` and refuse a file
at an older schema (:func:`old_schema_message`), changing nothing: a command of a newly
installed version must not migrate the file under a gateway of the old version that still
runs, which would go on appending rows without ``seq``/``hash`` (verification broken for
good, those rows never pruned). A migrating open warns when it finds such rows.

**Backup before migrating**: before migrating a file in place (schema 1 .. N-1, not a new
file) the store copies it with SQLite's backup API to
``events.sqlite3.schema<N>-<UTC stamp>.bak`` beside it (one self-contained file, logged),
under the migration's write lock, so a rollback to the version that wrote it stays
possible (the older version refuses the migrated file as "newer than this program"). It
first checks the folder's free space: less than :data:`MIGRATION_FREE_FACTOR` times the
file (with its WAL) plus :data:`MIGRATION_FREE_MARGIN` refuses the open with nothing
changed. Backups are never deleted by the program.

A migration logs its start and end (rows, MiB, seconds). It runs in one transaction, so
its WAL grows to about the rewritten data; after it the store checkpoints with
``wal_checkpoint(TRUNCATE)``, and every store sets ``journal_size_limit``
(:data:`JOURNAL_SIZE_LIMIT`), so no WAL of that size is left behind.

**Keyed links**: a store given a :class:`~edge.stream.chain_key.ChainKey` writes
HMAC-SHA256 links (the rule and what it proves are in :mod:`edge.stream.evidence`). Opening
it switches a plain chain over at once (``keyed_from_seq`` = next ``seq``, a head MAC);
opening it on a chain keyed with another key raises :class:`EventStoreError`. A store
without a key refuses to append to a keyed chain (plain links after keyed ones read as
tampering); it still reads and prunes. :meth:`EventStore.check_key` says up front whether
appends would be refused.

:class:`ZoneEvent` is the stream layer's event value (raised by
:class:`edge.stream.zones.ZoneMonitor`, stored here, handed to sinks).

Durability: ``synchronous=FULL`` (WAL): an append returns once its commit is fsynced, so
a power cut never takes back an event that was already handed to the MQTT outbox (and so
possibly to the control room), and the chain never hands out a ``seq`` twice with different
hashes. Appends are few (incident start/end, line crossings, one update per open incident
every ``update_every_s``), so one fsync each is cheap.

Thread-safety: one connection guarded by a lock; any thread may call any method.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from edge.closing import Closing
from edge.errors import EdgeError
from edge.fsutil import fsync_dir
from edge.stream.chain_key import ChainKey
from edge.stream.evidence import (
    CHAINED_COLUMNS,
    GENESIS_HASH,
    LINK_KEYED,
    LINK_PLAIN,
    ROTATIONS_TABLE,
    head_mac,
    row_hash,
    row_link,
)

__all__ = [
    "EVENTS_DB_FILENAME",
    "FUTURE_TOLERANCE_MS",
    "JOURNAL_SIZE_LIMIT",
    "MIGRATION_FREE_FACTOR",
    "MIGRATION_FREE_MARGIN",
    "SCHEMA_VERSION",
    "SIZE_PRUNE_BATCH",
    "SIZE_PRUNE_TO",
    "AttributeValue",
    "DbSize",
    "EventStore",
    "EventStoreError",
    "EventType",
    "LocalTime",
    "LocalTimeError",
    "SizePrune",
    "ZoneEvent",
    "event_to_dict",
    "events_db_path",
    "local_if_naive",
    "local_zone_name",
    "old_schema_message",
    "parse_time",
    "resolve_local",
    "utc_offset_text",
]

log = logging.getLogger("edge.stream")
_T = TypeVar("_T")

EVENTS_DB_FILENAME = "events.sqlite3"

FUTURE_TOLERANCE_MS = 86_400_000
"""How far (ms, one day) after the pruning clock a row's time may lie and still count as
written with a right clock; beyond it, :meth:`EventStore.prune` no longer lets the row hold
back the rows stored after it (and :meth:`edge.stream.acks.AckStore.prune` treats an
acknowledgement alike)."""

SIZE_PRUNE_TO = 0.9
""":meth:`EventStore.prune_to_size` deletes down to this fraction of the bound (hysteresis:
a prune frees a tenth of the bound at once, not one hour's events every hour)."""

SIZE_PRUNE_BATCH = 5000
"""The most rows :meth:`EventStore.prune_to_size` deletes in one transaction (~3.5 MiB of
events; appends wait for one batch at most)."""

_MIB = 1024 * 1024

MIGRATION_FREE_FACTOR = 3
"""A migration in place needs this many times the database (main file and WAL) free in its
folder: the backup copy, the rebuilt table (migration 3 copies it) and the WAL."""

MIGRATION_FREE_MARGIN = 32 * _MIB
"""Bytes free on top of :data:`MIGRATION_FREE_FACTOR` times the database, for a migration."""

JOURNAL_SIZE_LIMIT = 4 * _MIB
"""``PRAGMA journal_size_limit`` of every store (bytes): a WAL that one big transaction (a
migration, a prune) grew is truncated to this at its next checkpoint reset."""

EventType = Literal["start", "update", "end", "crossing"]
AttributeValue = str | int | float | bool | Mapping[str, str | int | float | bool | None]
"""A value in ``attributes``: a scalar, or one level of scalars (``ack`` on ``end``)."""


# -- the event ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class ZoneEvent:
    """One zone event; field names match :class:`edge.mqtt.schema.Event`, so
    ``Event(**event.mqtt_fields())`` builds the published payload.

    Attributes:
        event_id: time-ordered unique id (ULID layout, :mod:`edge.mqtt.ids`).
        type: ``start`` | ``update`` | ``end`` (zone incidents), or ``crossing`` (a track
            crossed a counting line, :mod:`edge.stream.lines`; ``zone`` is the line).
        camera, task, zone: where it happened.
        label: what: the track's class name, or the zone's ``label`` (e.g. ``no_hat``).
        score: detector score in [0, 1] of the box below.
        box: (x1, y1, x2, y2) pixels of the source frame; for ``end`` the last box seen
            inside the zone.
        track_id: tracker id of the object.
        time_ms: wall-clock Unix milliseconds of the frame that raised the event.
        start_event_id, start_time_ms: the incident's ``start`` (``None`` on ``start``).
        snapshot: path of the JPEG saved for the event (set by the pipeline).
        snapshot_sha256: lowercase hex SHA-256 of that JPEG's bytes as written to disk
            (``None`` without a snapshot).
        model: the detector's name.
        attributes: small extra values: ``dwell_s`` (float seconds inside, so far),
            ``reason`` on ``end``, ``last_inside_ms`` on ``end``, ``ack`` on the ``end`` of
            an incident acknowledged while open (``{"by", "at", "at_ms", "note"}``).
        mono_s: ``time.monotonic()`` when the frame that raised it was captured (latency
            metrics; not part of the public event); 0.0 when no frame did (ends raised at
            shutdown or while a camera is offline).
    """

    event_id: str
    type: EventType
    camera: str
    task: str
    zone: str
    label: str
    score: float
    box: tuple[float, float, float, float]
    track_id: int | None
    time_ms: int
    start_event_id: str | None = None
    start_time_ms: int | None = None
    snapshot: str | None = None
    model: str = ""
    attributes: Mapping[str, AttributeValue] = field(default_factory=dict)
    mono_s: float = 0.0
    snapshot_sha256: str | None = None

    _MQTT_FIELDS = (
        "event_id",
        "type",
        "camera",
        "task",
        "zone",
        "label",
        "score",
        "box",
        "track_id",
        "time_ms",
        "start_event_id",
        "start_time_ms",
        "snapshot",
        "snapshot_sha256",
        "model",
        "attributes",
    )

    def mqtt_fields(self) -> dict[str, Any]:
        """Keyword arguments for :class:`edge.mqtt.schema.Event` (everything but ``mono_s``)."""
        return {k: getattr(self, k) for k in self._MQTT_FIELDS}


def _migration_2_chain(conn: sqlite3.Connection) -> None:
    """Migration 2: ``snapshot_sha256``, the hash chain (``seq``, ``prev_hash``, ``hash``)
    and the one-row ``events_chain`` table (anchor and head). Rows already stored are
    chained in ``rowid`` (insertion) order from :data:`GENESIS_HASH`, with
    ``snapshot_sha256`` NULL (their files were not hashed when written)."""
    for sql in (
        "ALTER TABLE events ADD COLUMN snapshot_sha256 TEXT",
        "ALTER TABLE events ADD COLUMN seq INTEGER",
        "ALTER TABLE events ADD COLUMN prev_hash TEXT",
        "ALTER TABLE events ADD COLUMN hash TEXT",
        """CREATE TABLE events_chain (
            id          INTEGER PRIMARY KEY CHECK (id = 1),
            anchor_seq  INTEGER NOT NULL,
            anchor_hash TEXT NOT NULL,
            head_seq    INTEGER NOT NULL,
            head_hash   TEXT NOT NULL,
            pruned      INTEGER NOT NULL DEFAULT 0
        )""",
    ):
        conn.execute(sql)
    cols = [c for c in CHAINED_COLUMNS if c not in ("seq", "prev_hash")]
    rows = conn.execute(f"SELECT rowid, {', '.join(cols)} FROM events ORDER BY rowid").fetchall()
    seq, prev = 0, GENESIS_HASH
    for row in rows:
        seq += 1
        values = dict(zip(cols, row[1:], strict=True))
        values.update(seq=seq, prev_hash=prev)
        h = row_hash(values)
        conn.execute(
            "UPDATE events SET seq = ?, prev_hash = ?, hash = ? WHERE rowid = ?",
            (seq, prev, h, row[0]),
        )
        prev = h
    conn.execute("CREATE UNIQUE INDEX events_seq ON events (seq)")
    conn.execute(
        "INSERT INTO events_chain (id, anchor_seq, anchor_hash, head_seq, head_hash, pruned) "
        "VALUES (1, 0, ?, ?, ?, 0)",
        (GENESIS_HASH, seq, prev),
    )


def _migration_3_crossing(conn: sqlite3.Connection) -> None:
    """Migration 3: the ``type`` CHECK also allows ``crossing`` (line crossings,
    :mod:`edge.stream.lines`). SQLite cannot change a CHECK in place, so the table is
    rebuilt from its own stored definition: same columns, rows (``rowid`` kept, so the
    chain's insertion order too), values and indexes."""
    old_check = "CHECK (type IN ('start', 'update', 'end'))"
    row = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'events'")
    table_sql = str(row.fetchone()[0])
    if old_check not in table_sql or not table_sql.startswith("CREATE TABLE events ("):
        raise sqlite3.DatabaseError("events table definition is not the expected one")
    new_sql = table_sql.replace(
        old_check, "CHECK (type IN ('start', 'update', 'end', 'crossing'))"
    ).replace("CREATE TABLE events (", "CREATE TABLE events_v3 (", 1)
    indexes = [
        str(r[0])
        for r in conn.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'events' "
            "AND sql IS NOT NULL ORDER BY name"
        )
    ]
    cols = ", ".join(f'"{r[1]}"' for r in conn.execute("PRAGMA table_info(events)"))
    conn.execute(new_sql)
    conn.execute(f"INSERT INTO events_v3 (rowid, {cols}) SELECT rowid, {cols} FROM events")
    conn.execute("DROP TABLE events")
    conn.execute("ALTER TABLE events_v3 RENAME TO events")
    for sql in indexes:
        conn.execute(sql)


def _migration_4_keyed_links(conn: sqlite3.Connection) -> None:
    """Migration 4: the link scheme of each row (``link``: ``sha256`` for every row stored
    so far, ``key_id`` NULL) and the keying record in ``events_chain`` (``key_id``,
    ``keyed_from_seq``, ``head_mac``; NULL until a store opens with a key). Outside the
    hashed bytes, so no row's hash changes."""
    for sql in (
        f"ALTER TABLE events ADD COLUMN link TEXT NOT NULL DEFAULT '{LINK_PLAIN}'",
        "ALTER TABLE events ADD COLUMN key_id TEXT",
        "ALTER TABLE events_chain ADD COLUMN key_id TEXT",
        "ALTER TABLE events_chain ADD COLUMN keyed_from_seq INTEGER",
        "ALTER TABLE events_chain ADD COLUMN head_mac TEXT",
    ):
        conn.execute(sql)


_MIGRATIONS: tuple[str | Callable[[sqlite3.Connection], None], ...] = (
    """
    CREATE TABLE events (
        event_id       TEXT PRIMARY KEY,
        type           TEXT NOT NULL CHECK (type IN ('start', 'update', 'end')),
        time_ms        INTEGER NOT NULL,
        camera         TEXT NOT NULL,
        task           TEXT NOT NULL,
        zone           TEXT NOT NULL,
        label          TEXT NOT NULL,
        score          REAL NOT NULL,
        x1 REAL NOT NULL, y1 REAL NOT NULL, x2 REAL NOT NULL, y2 REAL NOT NULL,
        track_id       INTEGER,
        snapshot       TEXT,
        model          TEXT NOT NULL DEFAULT '',
        start_event_id TEXT,
        start_time_ms  INTEGER,
        attributes     TEXT NOT NULL DEFAULT '{}'
    );
    CREATE INDEX events_time ON events (time_ms);
    CREATE INDEX events_camera_time ON events (camera, time_ms);
    CREATE INDEX events_task_time ON events (task, time_ms);
    """,
    _migration_2_chain,
    _migration_3_crossing,
    _migration_4_keyed_links,
)

SCHEMA_VERSION = len(_MIGRATIONS)
"""The events database's schema version this program writes (``PRAGMA user_version``)."""


def old_schema_message(path: str | Path, version: int) -> str:
    """The refusal of a command that does not migrate, for a file at schema ``version`` <
    :data:`SCHEMA_VERSION`: only the upgraded gateway migrates it."""
    return (
        f"events database {path} is at schema version {version}, older than this program "
        f"({SCHEMA_VERSION}): start the upgraded gateway (`safety-edge run`, e.g. `systemctl "
        "restart safety-edge`) to migrate it; commands do not migrate (an older gateway that "
        "still runs would go on writing the old way). nothing was changed"
    )


_COLUMNS = (
    "event_id, type, time_ms, camera, task, zone, label, score, x1, y1, x2, y2, track_id, "
    "snapshot, model, start_event_id, start_time_ms, attributes, snapshot_sha256"
)
_INSERT = (
    f"INSERT INTO events ({', '.join(CHAINED_COLUMNS)}, hash) "
    f"VALUES ({', '.join('?' * (len(CHAINED_COLUMNS) + 1))})"
)
_INSERT_KEYED = (
    f"INSERT INTO events ({', '.join(CHAINED_COLUMNS)}, hash, link, key_id) "
    f"VALUES ({', '.join('?' * (len(CHAINED_COLUMNS) + 3))})"
)


@dataclass(frozen=True, slots=True)
class _KeyedHead:
    """The chain head as a keyed store sees it inside a write transaction.

    ``authentic``: the stored head MAC matches (or the chain is switching over now, so
    there is nothing to match yet); ``switch_on``: the chain was plain until now."""

    seq: int
    hash: str
    keyed_from_seq: int
    stored_mac: str | None
    authentic: bool
    switch_on: bool


@dataclass(frozen=True, slots=True)
class DbSize:
    """The events database's pages (SQLite ``PRAGMA page_size``, ``page_count``,
    ``freelist_count``, as committed, WAL included).

    ``file_bytes`` (``page_count * page_size``) is the size of the main file (the ``-wal``
    file comes on top, a few MiB); ``live_bytes`` (``(page_count - freelist_count) *
    page_size``) is what the tables and indexes use; the difference is free pages that
    later writes reuse before the file grows."""

    page_size: int
    page_count: int
    freelist_count: int

    @property
    def file_bytes(self) -> int:
        """Bytes of the main database file."""
        return self.page_count * self.page_size

    @property
    def live_bytes(self) -> int:
        """Bytes of the pages in use (not on the freelist)."""
        return (self.page_count - self.freelist_count) * self.page_size


@dataclass(frozen=True, slots=True, kw_only=True)
class SizePrune:
    """What :meth:`EventStore.prune_to_size` did.

    Attributes:
        deleted: events deleted (the oldest, a prefix of the chain).
        before, after: the database's pages before and after.
        oldest_kept_ms: ``time_ms`` of the first row left in chain order (``None``: no
            row left).
    """

    deleted: int
    before: DbSize
    after: DbSize
    oldest_kept_ms: int | None


class EventStoreError(EdgeError):
    """The events database cannot be opened, read or written (locked, full, corrupt)."""

    code = 5002


def events_db_path(data_dir: str | Path) -> Path:
    """The events database in a data directory: ``data_dir / "events.sqlite3"``."""
    return Path(data_dir) / EVENTS_DB_FILENAME


_REL = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.IGNORECASE)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86_400, "w": 604_800}


@dataclass(frozen=True, slots=True)
class LocalTime:
    """What a wall-clock reading (a naive date-time) means in a time zone.

    Attributes:
        kind: ``"unique"``; ``"ambiguous"``: the clock read it twice (fall back: the
            repeated hour); ``"nonexistent"``: the clock skipped it (spring forward).
        first: the first moment the clock read it, aware UTC. Ambiguous: the first
            occurrence (``fold=0``); nonexistent: the moment of the change (the first
            moment the clock reads later than it).
        last: the last occurrence (``fold=1``), aware UTC; equals ``first`` unless
            ambiguous.
    """

    kind: Literal["unique", "ambiguous", "nonexistent"]
    first: datetime
    last: datetime


def _wall(u: datetime, tz: tzinfo | None) -> datetime:
    """The naive wall-clock reading of the aware ``u`` in ``tz`` (``None``: local)."""
    return (u.astimezone(tz) if tz is not None else u.astimezone()).replace(tzinfo=None)


def resolve_local(naive: datetime, tz: tzinfo | None = None) -> LocalTime:
    """Map a wall-clock reading to real time in ``tz`` (``None``: the process's local time
    zone, ``TZ`` or ``/etc/localtime``), telling a repeated or skipped reading apart.

    Round trip: ``fold=0`` and ``fold=1`` giving different UTC times that both read back
    as ``naive`` is ambiguous; a reading that does not come back is nonexistent, and its
    change is found by bisection (whole seconds, ~12 steps for a one-hour gap).

    Raises:
        ValueError, OverflowError: the time is out of range in that zone.
    """
    naive = naive.replace(tzinfo=None)
    u = [
        (
            naive.replace(fold=f, tzinfo=tz)
            if tz is not None
            else naive.replace(fold=f).astimezone()
        ).astimezone(timezone.utc)
        for f in (0, 1)
    ]
    if _wall(u[0], tz) == naive and _wall(u[1], tz) == naive:
        if u[0] == u[1]:
            return LocalTime(kind="unique", first=u[0], last=u[0])
        lo, hi = min(u), max(u)
        return LocalTime(kind="ambiguous", first=lo, last=hi)
    # skipped: the wall clock is before naive until the change, after it from then on
    lo_s, hi_s = int(min(u).timestamp()), int(max(u).timestamp()) + 1
    while hi_s - lo_s > 1:
        mid = (lo_s + hi_s) // 2
        if _wall(datetime.fromtimestamp(mid, timezone.utc), tz) > naive:
            hi_s = mid
        else:
            lo_s = mid
    change = datetime.fromtimestamp(hi_s, timezone.utc)
    return LocalTime(kind="nonexistent", first=change, last=change)


class LocalTimeError(ValueError):
    """A time typed without an offset that the local clock read twice or never."""


def local_zone_name() -> str:
    """The gateway's local time zone by name, for messages and the start-up log: the
    ``TZ`` variable (``Europe/Berlin``, ``:/usr/share/zoneinfo/Europe/Berlin``), else
    the zone ``/etc/localtime`` links to, else :data:`time.tzname` (``CET/CEST``)."""
    tz = os.environ.get("TZ", "").lstrip(":")
    link = tz or ""
    if not tz:
        try:
            link = os.path.realpath("/etc/localtime") if os.path.islink("/etc/localtime") else ""
        except OSError:
            link = ""
    if link:
        marker = "zoneinfo/"
        k = link.rfind(marker)
        return link[k + len(marker) :] if k >= 0 else link
    std, dst = time.tzname
    return std if std == dst else f"{std}/{dst}"


def utc_offset_text(delta: timedelta) -> str:
    """A UTC offset as ``+HH:MM`` / ``-HH:MM`` (whole minutes)."""
    minutes = round(delta.total_seconds() / 60)
    sign = "+" if minutes >= 0 else "-"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _offset(u: datetime, naive: datetime) -> str:
    """``naive`` minus the UTC ``u`` as ``+HH:MM``."""
    return utc_offset_text(naive - u.replace(tzinfo=None))


def _typed(dt: datetime) -> str:
    return dt.isoformat(timespec="minutes" if not dt.second and not dt.microsecond else "auto")


def local_if_naive(dt: datetime) -> datetime:
    """``dt`` as an aware time: a naive ``dt`` is read as the gateway's local time.

    The one rule for every time typed without a zone offset (``events list --since``, the
    console's event filter, ``/console/api/stats?since=``, ``quota add --start``, the
    console's package Start field): naive = the gateway's local time (its ``TZ`` or
    ``/etc/localtime``, what ``date`` prints). Aware times are returned unchanged.

    Raises:
        LocalTimeError: a naive time the local clock read twice (the repeated hour when
            the clock goes back: which one is meant?) or never (the hour skipped when it
            goes forward); the message names the offsets or the time to type instead.
        ValueError, OverflowError: out of range in the local zone (years 1 and 9999).
    """
    if dt.tzinfo is not None:
        return dt
    try:
        r = resolve_local(dt)
    except (ValueError, OverflowError):  # at the ends of datetime's range: no change there
        return dt.astimezone()
    if r.kind == "ambiguous":
        raise LocalTimeError(
            f"{_typed(dt)} is ambiguous in {local_zone_name()} (the clock went back): "
            f"add {_offset(r.first, dt)} or {_offset(r.last, dt)}"
        )
    if r.kind == "nonexistent":
        # the reading the clock showed instead: read with the offset before the change
        later = max(_wall(dt.replace(fold=f).astimezone(timezone.utc), None) for f in (0, 1))
        use = _typed(later) if later.date() != dt.date() else _typed(later)[11:]
        raise LocalTimeError(
            f"{_typed(dt)} does not exist in {local_zone_name()} (the clock went forward): "
            f"add an offset or use {use}"
        )
    return dt.astimezone()


def parse_time(text: str, *, now_ms: int | None = None) -> int:
    """A point in time as Unix milliseconds.

    Accepts a duration back from now (``90s``, ``15m``, ``1h``, ``2d``, ``1w``), an ISO 8601
    date or date-time (naive means local time), or Unix seconds/milliseconds as digits
    (more than 11 digits is taken as milliseconds).

    Raises:
        ValueError: none of those forms.
    """
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    m = _REL.match(text)
    if m:
        return now - round(float(m.group(1)) * _UNIT_S[m.group(2).lower()] * 1000)
    s = text.strip()
    if s.isdigit():
        v = int(s)
        return v if len(s) > 11 else v * 1000
    try:
        dt = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"time {text!r} is not a duration (1h, 30m, 2d), an ISO date-time or Unix time"
        ) from None
    return int(local_if_naive(dt).astimezone(timezone.utc).timestamp() * 1000)


def _row_to_event(row: Sequence[Any]) -> ZoneEvent:
    attrs = cast(dict[str, AttributeValue], json.loads(row[17]) if row[17] else {})
    return ZoneEvent(
        event_id=row[0],
        type=cast(EventType, row[1]),
        time_ms=int(row[2]),
        camera=row[3],
        task=row[4],
        zone=row[5],
        label=row[6],
        score=float(row[7]),
        box=(float(row[8]), float(row[9]), float(row[10]), float(row[11])),
        track_id=None if row[12] is None else int(row[12]),
        snapshot=row[13],
        model=row[14],
        start_event_id=row[15],
        start_time_ms=None if row[16] is None else int(row[16]),
        attributes=attrs,
        snapshot_sha256=row[18],
    )


def _chained_values(e: ZoneEvent, *, seq: int, prev_hash: str) -> dict[str, Any]:
    """The stored value of every chained column (the hash input, exactly as inserted)."""
    x1, y1, x2, y2 = (float(v) for v in e.box)
    return {
        "seq": seq,
        "event_id": e.event_id,
        "type": e.type,
        "time_ms": int(e.time_ms),
        "camera": e.camera,
        "task": e.task,
        "zone": e.zone,
        "label": e.label,
        "score": float(e.score),
        "x1": x1,
        "y1": y1,
        "x2": x2,
        "y2": y2,
        "track_id": None if e.track_id is None else int(e.track_id),
        "snapshot": e.snapshot,
        "snapshot_sha256": e.snapshot_sha256,
        "model": e.model,
        "start_event_id": e.start_event_id,
        "start_time_ms": None if e.start_time_ms is None else int(e.start_time_ms),
        "attributes": json.dumps(dict(e.attributes), separators=(",", ":"), ensure_ascii=False),
        "prev_hash": prev_hash,
    }


class EventStore(Closing):
    """The events table in a SQLite file (created, migrated on open).

    Args:
        path: the database file; its folder is created.
        busy_timeout_ms: how long a write waits for another process's lock.
        key: the chain key (keyed links); ``None``: plain SHA-256 links. Opening with a
            key switches a plain chain over to keyed links at once.
        migrate: create or migrate the schema (the gateway), and warn about rows left
            outside the chain; ``False`` (the ``events`` commands): the file must be at
            :data:`SCHEMA_VERSION` already (module docstring, "Who migrates").

    Raises:
        EventStoreError: the file cannot be opened or migrated, is at a newer schema, at
            an older one with ``migrate=False`` (:func:`old_schema_message`), or the chain
            is keyed with another key than ``key``.
    """

    def __init__(
        self,
        *,
        path: str | Path,
        busy_timeout_ms: int = 5000,
        key: ChainKey | None = None,
        migrate: bool = True,
    ) -> None:
        self.path = Path(path)
        self._key = key
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._head_warned = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                str(self.path), timeout=busy_timeout_ms / 1000.0, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise EventStoreError(f"cannot open events database {self.path}: {exc}") from exc
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = FULL")  # durable appends, module docstring
            conn.execute(f"PRAGMA journal_size_limit = {JOURNAL_SIZE_LIMIT}")
            if migrate:
                self._migrate(conn)
                self._warn_unchained(conn)
            else:
                self._require_current(conn)
        except sqlite3.Error as exc:
            conn.close()
            raise EventStoreError(f"cannot prepare events database {self.path}: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        if key is not None:
            try:
                self._switch_on()
            except BaseException:
                self.close()
                raise

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Run the missing numbered migrations in one ``BEGIN IMMEDIATE`` transaction (the
        version is read again under the lock, so two processes opening an old file at
        once migrate it once). An existing file (schema >= 1) is backed up first, under
        that lock, after a free-space check (module docstring)."""

        def check(version: int) -> None:
            if version > len(_MIGRATIONS):
                raise sqlite3.DatabaseError(
                    f"database schema version {version} is newer than this program "
                    f"({len(_MIGRATIONS)})"
                )

        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        check(version)
        if version == len(_MIGRATIONS):
            return
        if version > 0:
            self._check_free_space(version)
        t0 = time.monotonic()
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            check(version)
            in_place = 0 < version < SCHEMA_VERSION
            rows = 0
            if in_place:
                rows = int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
                log.info(
                    "events database %s: migrating schema %d -> %d (%d rows, %.1f MiB); "
                    "backup first",
                    self.path,
                    version,
                    SCHEMA_VERSION,
                    rows,
                    _file_size(self.path) / _MIB,
                )
                self._backup(version)
            for n in range(version, len(_MIGRATIONS)):
                step = _MIGRATIONS[n]
                if isinstance(step, str):
                    for sql in step.split(";"):  # plain DDL: no ';' inside statements
                        if sql.strip():
                            conn.execute(sql)
                else:
                    step(conn)
                conn.execute(f"PRAGMA user_version = {n + 1}")
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        if in_place:
            self._after_migration(conn, version, rows, time.monotonic() - t0)

    def _after_migration(
        self, conn: sqlite3.Connection, version: int, rows: int, took_s: float
    ) -> None:
        """Truncate the WAL the migration grew and log the end."""
        wal = Path(f"{self.path}-wal")
        wal_before = _file_size(wal)
        busy = int(conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0])
        log.info(
            "events database %s: migrated schema %d -> %d in %.1f s (%d rows, %.1f MiB); "
            "WAL %.1f MiB -> %.1f MiB%s",
            self.path,
            version,
            SCHEMA_VERSION,
            took_s,
            rows,
            _file_size(self.path) / _MIB,
            wal_before / _MIB,
            _file_size(wal) / _MIB,
            " (another process is reading: truncated at a later checkpoint)" if busy else "",
        )

    def _check_free_space(self, version: int) -> None:
        """Refuse a migration in place without room for the backup and the rewrite."""
        size = sum(_file_size(Path(f"{self.path}{s}")) for s in ("", "-wal"))
        try:
            free = shutil.disk_usage(self.path.parent).free
        except OSError as exc:
            raise EventStoreError(
                f"cannot read the free space of {self.path.parent}: {exc}"
            ) from exc
        need = MIGRATION_FREE_FACTOR * size + MIGRATION_FREE_MARGIN
        if free < need:
            raise EventStoreError(
                f"events database {self.path} is at schema version {version} and needs "
                f"migrating to {SCHEMA_VERSION}, but {self.path.parent} has {free / _MIB:.0f} "
                f"MiB free, less than the {need / _MIB:.0f} MiB the backup copy and the "
                f"migration need ({MIGRATION_FREE_FACTOR} x {size / _MIB:.1f} MiB + "
                f"{MIGRATION_FREE_MARGIN / _MIB:.0f} MiB). Nothing was changed: free space on "
                "that disk, then start the gateway again"
            )

    def _backup(self, version: int) -> Path:
        """Copy the database (schema ``version``) to ``<name>.schema<version>-<UTC>.bak``
        with SQLite's backup API, through a second, read-only connection (the caller holds
        the write lock, so it is the state about to be migrated); a temporary name, then a
        rename and a folder fsync. Returns the backup's path.

        Raises:
            EventStoreError: the copy failed (the temporary file is removed; nothing else
                was changed).
        """
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        final = self.path.with_name(f"{self.path.name}.schema{version}-{stamp}.bak")
        k = 2
        while final.exists():
            final = self.path.with_name(f"{self.path.name}.schema{version}-{stamp}-{k}.bak")
            k += 1
        tmp = final.with_name(final.name + ".tmp")
        t0 = time.monotonic()
        try:
            src = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                dst = sqlite3.connect(str(tmp))
                try:
                    src.backup(dst)
                    dst.execute("PRAGMA journal_mode = DELETE")  # one self-contained file
                finally:
                    dst.close()
            finally:
                src.close()
            os.replace(tmp, final)
            fsync_dir(final.parent)
        except (OSError, sqlite3.Error) as exc:
            for leftover in (tmp, Path(f"{tmp}-journal"), Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                try:
                    leftover.unlink(missing_ok=True)
                except OSError as why:
                    log.warning("cannot remove %s: %s", leftover, why)
            raise EventStoreError(
                f"cannot back up events database {self.path} (schema version {version}) "
                f"to {final} before migrating it: {exc}. Nothing was changed"
            ) from exc
        log.info(
            "events database %s: backed up to %s before migrating schema %d -> %d "
            "(%.1f MiB, %.1f s; keep it to roll back to the version that wrote it)",
            self.path,
            final,
            version,
            SCHEMA_VERSION,
            _file_size(final) / _MIB,
            time.monotonic() - t0,
        )
        return final

    def _require_current(self, conn: sqlite3.Connection) -> None:
        """Refuse a file not at :data:`SCHEMA_VERSION` (``migrate=False``)."""
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version < SCHEMA_VERSION:
            raise EventStoreError(old_schema_message(self.path, version))
        if version > SCHEMA_VERSION:
            raise EventStoreError(
                f"events database {self.path} is at schema version {version}, newer than "
                f"this program ({SCHEMA_VERSION}): use the version that wrote it"
            )

    def _warn_unchained(self, conn: sqlite3.Connection) -> None:
        """One WARNING when rows have no ``seq`` (not in the chain): written by an older
        gateway process still running after a newer program migrated its file."""
        n = int(conn.execute("SELECT COUNT(*) FROM events WHERE seq IS NULL").fetchone()[0])
        if n:
            log.warning(
                "events database %s: %d rows are not in the hash chain (no seq): an older "
                "gateway process wrote them after the file was migrated under it. `safety-edge "
                "events verify` reports the chain broken and pruning never deletes them; "
                "they are kept as they were written",
                self.path,
                n,
            )

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise EventStoreError(f"events database {self.path} is closed")
        return self._conn

    # -- keys ----------------------------------------------------------------------
    @property
    def key_id(self) -> str | None:
        """The id of this store's key (``None``: plain links)."""
        return None if self._key is None else self._key.key_id

    def _write(self, what: str, step: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run ``step`` in one ``BEGIN IMMEDIATE`` transaction under the lock."""
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    out = step(db)
                    db.commit()
                except BaseException:
                    db.rollback()
                    raise
                return out
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot {what} {self.path}: {exc}") from exc

    def _switch_on(self) -> None:
        """With a key: check it is the chain's, and switch a plain chain to keyed links
        now (keying record and head MAC), so no window is left without a head MAC."""
        key = self._key
        assert key is not None

        def step(db: sqlite3.Connection) -> None:
            head = self._keyed_head(db, key)
            if head.switch_on:
                db.execute(
                    "UPDATE events_chain SET key_id = ?, keyed_from_seq = ?, head_mac = ?",
                    (
                        key.key_id,
                        head.keyed_from_seq,
                        head_mac(
                            key,
                            head_seq=head.seq,
                            head_hash=head.hash,
                            keyed_from_seq=head.keyed_from_seq,
                        ),
                    ),
                )
                log.info(
                    "events chain %s: keyed links from seq %d on (key id %s, from %s)",
                    self.path,
                    head.keyed_from_seq,
                    key.key_id,
                    key.source,
                )
            elif not head.authentic:
                self._warn_head()

        self._write("switch to keyed links in", step)

    def check_key(self) -> None:
        """Raise when appends would be refused for the key: the chain is keyed and this
        store has no key (configure ``storage.events_key_file`` or ``SAFETY_EDGE_EVENTS_KEY``),
        or it is keyed with another key.

        Raises:
            EventStoreError: as above, or the database cannot be read.
        """
        with self._lock:
            db = self._db()
            try:
                chain_key = db.execute("SELECT key_id FROM events_chain").fetchone()[0]
                self._refuse(chain_key, db)
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read events database {self.path}: {exc}") from exc

    def _refuse(self, chain_key: str | None, db: sqlite3.Connection) -> None:
        if chain_key is None:
            return
        if self._key is None:
            raise EventStoreError(
                f"the events chain in {self.path} is keyed (key id {chain_key}) and no key is "
                "configured: set storage.events_key_file or SAFETY_EDGE_EVENTS_KEY (unkeyed "
                "links after keyed ones would read as tampering)"
            )
        if chain_key != self._key.key_id:
            raise EventStoreError(
                f"the events chain in {self.path} is keyed with key id {chain_key}; the key "
                f"from {self._key.source} has id {self._key.key_id} (wrong key"
                f"{_retired_note(db, self._key.key_id)})"
            )

    def _keyed_head(self, db: sqlite3.Connection, key: ChainKey) -> _KeyedHead:
        """Read the head and keying record inside a write transaction.

        Raises:
            EventStoreError: the chain is keyed with another key.
        """
        seq, prev, chain_key, keyed_from, stored = db.execute(
            "SELECT head_seq, head_hash, key_id, keyed_from_seq, head_mac FROM events_chain"
        ).fetchone()
        seq = int(seq)
        if chain_key is not None:
            self._refuse(str(chain_key), db)
        first_keyed = db.execute(
            "SELECT MIN(seq) FROM events WHERE link = ?", (LINK_KEYED,)
        ).fetchone()[0]
        if chain_key is None and keyed_from is None and stored is None and first_keyed is None:
            return _KeyedHead(seq, str(prev), seq + 1, None, authentic=True, switch_on=True)
        if keyed_from is None:  # a keying record that was cleared: never bless this head
            start = seq + 1 if first_keyed is None else int(first_keyed)
            return _KeyedHead(seq, str(prev), start, stored, authentic=False, switch_on=False)
        start = int(keyed_from)
        expected = head_mac(key, head_seq=seq, head_hash=str(prev), keyed_from_seq=start)
        authentic = (
            chain_key is not None
            and stored is not None
            and hmac.compare_digest(str(stored).encode(), expected.encode())
        )
        return _KeyedHead(seq, str(prev), start, stored, authentic=authentic, switch_on=False)

    def _warn_head(self) -> None:
        if not self._head_warned:
            self._head_warned = True
            log.error(
                "events chain %s: the stored head MAC does not match this key (the head or "
                "keying record was changed outside the gateway); new events are still "
                "chained, and `safety-edge events verify` keeps reporting it",
                self.path,
            )

    # -- writing -------------------------------------------------------------------
    def add(self, event: ZoneEvent) -> bool:
        """Store one event; ``False`` when its ``event_id`` is already stored.

        Raises:
            EventStoreError: the database is locked past the busy timeout, full, or broken.
        """
        return self.add_many([event]) == 1

    def add_many(self, events: Iterable[ZoneEvent]) -> int:
        """Store events in one transaction, appended to the hash chain in the order given
        (ids already stored, or repeated, are skipped); returns how many were new.

        Raises:
            EventStoreError: locked past the busy timeout, full, broken, or an event with a
                value SQLite/JSON cannot hold (NaN score).
        """
        batch = list(events)
        if not batch:
            return 0
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")  # the write lock first: the head cannot move
                try:
                    if self._key is None:
                        chain_key = db.execute("SELECT key_id FROM events_chain").fetchone()[0]
                        self._refuse(chain_key, db)
                        n = self._append(db, batch)
                    else:
                        n = self._append_keyed(db, batch, self._key)
                    db.commit()
                except BaseException:
                    db.rollback()
                    raise
                return n
            except (sqlite3.Error, ValueError, TypeError) as exc:
                raise EventStoreError(f"cannot write events to {self.path}: {exc}") from exc

    @staticmethod
    def _insert(
        db: sqlite3.Connection,
        batch: Sequence[ZoneEvent],
        seq: int,
        prev: str,
        key: ChainKey | None,
    ) -> tuple[int, int, str]:
        """Chain and insert the new events of ``batch`` after head ``(seq, prev)``;
        returns (how many, new head seq, new head hash). Plain rows are inserted without
        ``link``/``key_id`` (their defaults), so this also runs on a schema-2/3 table."""
        seen: set[str] = set()
        n = 0
        for e in batch:
            if (
                e.event_id in seen
                or db.execute("SELECT 1 FROM events WHERE event_id = ?", (e.event_id,)).fetchone()
            ):
                continue
            seen.add(e.event_id)
            values = _chained_values(e, seq=seq + 1, prev_hash=prev)
            h = row_link(values, key)
            if key is None:
                db.execute(_INSERT, (*values.values(), h))
            else:
                db.execute(_INSERT_KEYED, (*values.values(), h, LINK_KEYED, key.key_id))
            seq, prev = seq + 1, h
            n += 1
        return n, seq, prev

    @staticmethod
    def _append(db: sqlite3.Connection, batch: Sequence[ZoneEvent]) -> int:
        """Chain and insert ``batch`` with plain links inside the caller's write
        transaction (the caller checked the chain is not keyed)."""
        seq, prev = db.execute("SELECT head_seq, head_hash FROM events_chain").fetchone()
        n, seq, prev = EventStore._insert(db, batch, int(seq), str(prev), None)
        if n:
            db.execute("UPDATE events_chain SET head_seq = ?, head_hash = ?", (seq, prev))
        return n

    def _append_keyed(
        self, db: sqlite3.Connection, batch: Sequence[ZoneEvent], key: ChainKey
    ) -> int:
        """Chain and insert ``batch`` with keyed links; the head MAC is renewed only when
        the stored one matched (a head changed outside the store stays unauthenticated)."""
        head = self._keyed_head(db, key)
        n, seq, prev = self._insert(db, batch, head.seq, head.hash, key)
        if not n:
            return 0
        if head.authentic:
            mac: str | None = head_mac(
                key, head_seq=seq, head_hash=prev, keyed_from_seq=head.keyed_from_seq
            )
        else:
            mac = head.stored_mac
            self._warn_head()
        db.execute(
            "UPDATE events_chain SET head_seq = ?, head_hash = ?, key_id = ?, "
            "keyed_from_seq = ?, head_mac = ?",
            (seq, prev, key.key_id, head.keyed_from_seq, mac),
        )
        return n

    def prune(self, *, before_ms: int, now_ms: int | None = None) -> int:
        """Delete the oldest events, a prefix of the chain, up to the last one older than
        ``before_ms`` (Unix ms) that no current event precedes; returns how many.

        The rule, over the rows in ``seq`` (append) order: a row is *expired* when
        ``time_ms < before_ms``; *stamped in the future* when it is not expired and
        ``time_ms > now_ms +`` :data:`FUTURE_TOLERANCE_MS`; otherwise *current*. The deleted
        prefix ends at the last expired row before the first current row (the last expired
        row of all when none is current). So:

        - a current row stops the prefix: an event older than ``before_ms`` stored after a
          newer one (events of several cameras arrive slightly out of time order) stays
          until a later prune reaches it;
        - a row stamped in the future does not stop it: the clock was wrong when it was
          written (RTC garbage after a power cut, a bad NTP or GPS time, a mistyped
          ``date``). Rows are appended in ``seq`` order, so it is no newer than the expired
          row stored after it, and goes with that row. (Otherwise one such row would hold
          back every later row until its wrong date plus the retention, and the file would
          grow until the disk is full.) One with no expired row after it (among the newest
          rows) is kept: nothing says yet that it is old.

        Only a prefix is deleted, so the chain stays verifiable: the last deleted row's
        ``seq`` and ``hash`` become the anchor verification starts from. When rows stamped
        in the future are stored, one WARNING per call says how many, the furthest time and
        how many of them this call deleted.

        A wrong *current* clock: ``now_ms`` (default: the system clock) only decides which
        rows count as stamped in the future, and every row deleted is one stored no later
        than an expired row, read against ``before_ms``. Compared with the time test alone
        (delete up to the first row not older than ``before_ms``), this deletes in addition
        only rows stamped more than the tolerance after ``now_ms`` and expired rows stored
        after them.

        - ``now_ms`` (and ``before_ms`` with it) far ahead: rows written before the jump do
          not count as future, so they are deleted as by the time test alone: every row
          older than ``before_ms``, possibly all of them. Nothing here guards against that
          (a store cannot tell a clock that jumped ahead from a gateway that was idle); the
          clock must be right before the gateway starts.
        - ``now_ms`` far behind: rows written with the right clock look stamped in the
          future, and go only once rows stored after them are older than ``before_ms`` by
          that same wrong clock, i.e. once it has itself counted off the retention since.

        Args:
            before_ms: delete rows older than this (Unix ms), in chain order.
            now_ms: the current time (Unix ms) the future test is made against; ``None``:
                the system clock.

        Raises:
            EventStoreError: locked past the busy timeout, full, or broken.
        """
        now = time.time_ns() // 1_000_000 if now_ms is None else int(now_ms)
        with self._lock:
            db = self._db()
            try:
                db.execute("BEGIN IMMEDIATE")
                try:
                    n, future = self._prune_prefix(db, before_ms, now + FUTURE_TOLERANCE_MS)
                    db.commit()
                except BaseException:
                    db.rollback()
                    raise
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot prune {self.path}: {exc}") from exc
        if future is not None:
            count, furthest, deleted = future
            log.warning(
                "events %s: %d rows are stamped more than %g h after this prune's clock "
                "(%s; the furthest %s): the clock was wrong when they were written, or is "
                "wrong now; %d of them were deleted with the older rows stored after them, "
                "the rest wait for one",
                self.path,
                count,
                FUTURE_TOLERANCE_MS / 3_600_000,
                _iso(now),
                _iso(furthest),
                deleted,
            )
        return n

    @staticmethod
    def _prune_prefix(
        db: sqlite3.Connection, before_ms: int, future_after_ms: int
    ) -> tuple[int, tuple[int, int, int] | None]:
        """Delete the prefix :meth:`prune` describes inside the caller's write transaction;
        returns (rows deleted, ``None`` or (rows stamped after ``future_after_ms``, the
        furthest ``time_ms``, how many of those were deleted))."""
        first_current = db.execute(
            "SELECT MIN(seq) FROM events WHERE time_ms >= ? AND time_ms <= ?",
            (before_ms, future_after_ms),
        ).fetchone()[0]
        sql = "SELECT seq, hash FROM events WHERE time_ms < ?"
        args: tuple[int, ...] = (before_ms,)
        if first_current is not None:
            sql += " AND seq < ?"
            args = (before_ms, int(first_current))
        last = db.execute(sql + " ORDER BY seq DESC LIMIT 1", args).fetchone()
        ahead = max(before_ms - 1, future_after_ms)  # expired rows are never "future"
        count, furthest = db.execute(
            "SELECT COUNT(*), MAX(time_ms) FROM events WHERE time_ms > ?", (ahead,)
        ).fetchone()
        future: tuple[int, int, int] | None = None
        if count:
            gone = 0
            if last is not None:
                gone = db.execute(
                    "SELECT COUNT(*) FROM events WHERE time_ms > ? AND seq <= ?", (ahead, last[0])
                ).fetchone()[0]
            future = (int(count), int(furthest), int(gone))
        if last is None:
            return 0, future
        return _delete_through(db, int(last[0]), str(last[1])), future

    # -- size bound ----------------------------------------------------------------
    def db_size(self) -> DbSize:
        """The database's pages now (:class:`DbSize`: file and live bytes).

        Raises:
            EventStoreError: the database cannot be read.
        """
        with self._lock:
            db = self._db()
            try:
                return _db_size(db)
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read the size of {self.path}: {exc}") from exc

    def prune_to_size(self, *, max_bytes: int, batch_rows: int = SIZE_PRUNE_BATCH) -> SizePrune:
        """Delete the oldest events, a prefix of the chain, while the database holds more
        than ``max_bytes`` of live pages, down to :data:`SIZE_PRUNE_TO` of it; returns what
        was done.

        *Live* bytes are ``(page_count - freelist_count) * page_size``
        (:attr:`DbSize.live_bytes`): the pages the tables and indexes use. SQLite does not
        shrink the file on ``DELETE`` (this store sets no ``auto_vacuum``, and a ``VACUUM``
        needs the file's size again in free space and blocks every writer); the freed pages
        go to the freelist and later inserts take them before the file grows. So the file
        stays at its high-water mark (the bound plus what is written between two prunes,
        or the size it had already reached before a bound was set) and stops growing, while
        live bytes fall to the target.

        Rows are deleted in chain (``seq``) order whatever their time, exactly as
        :meth:`prune` deletes its prefix: the last deleted row becomes the anchor and
        ``safety-edge events verify`` still passes. The work is split into transactions of
        at most ``batch_rows`` rows (the size is measured again before each), so appends
        wait for one batch, not the whole prune, and the WAL stays small. Stops early when
        no event is left (the rest of the file is schema, acknowledgements and free pages).

        When anything was deleted, one WARNING says how many, the live size before and
        after, and the time of the oldest event kept: the size bound, not the retention,
        decided how far back the table now reaches.

        Args:
            max_bytes: the bound on live bytes (> 0).
            batch_rows: the most rows deleted per transaction (>= 1).

        Raises:
            ValueError: ``max_bytes`` or ``batch_rows`` out of range.
            EventStoreError: locked past the busy timeout, full, or broken.
        """
        if max_bytes <= 0:
            raise ValueError("max_bytes must be > 0")
        if batch_rows < 1:
            raise ValueError("batch_rows must be >= 1")
        target = int(max_bytes * SIZE_PRUNE_TO)
        before = self.db_size()
        deleted = 0
        if before.live_bytes > max_bytes:
            while True:
                n = self._write("prune", lambda db: self._prune_size_batch(db, target, batch_rows))
                if n == 0:
                    break
                deleted += n
        with self._lock:
            db = self._db()
            try:
                after = _db_size(db)
                row = db.execute("SELECT time_ms FROM events ORDER BY seq LIMIT 1").fetchone()
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read the size of {self.path}: {exc}") from exc
        oldest = None if row is None else int(row[0])
        if deleted:
            log.warning(
                "events %s: %.1f MiB of live data was over the size bound of %.1f MiB "
                "(storage.events_max_mb): deleted the oldest %d events, down to %.1f MiB; "
                "the oldest event kept is from %s. The size bound, not "
                "events_retention_days, now decides how far back events go: find what "
                "raises so many events, or raise the bound if the disk has room",
                self.path,
                before.live_bytes / _MIB,
                max_bytes / _MIB,
                deleted,
                after.live_bytes / _MIB,
                "(none left)" if oldest is None else _iso(oldest),
            )
        return SizePrune(deleted=deleted, before=before, after=after, oldest_kept_ms=oldest)

    @staticmethod
    def _prune_size_batch(db: sqlite3.Connection, target: int, batch_rows: int) -> int:
        """One batch of :meth:`prune_to_size` inside the caller's write transaction: 0 when
        live bytes are at most ``target`` or no event is left, else delete the oldest rows
        (about as many as the average row size says bring it to ``target``, at most
        ``batch_rows``, at least one) and return how many."""
        live = _db_size(db).live_bytes
        if live <= target:
            return 0
        anchor, head = db.execute("SELECT anchor_seq, head_seq FROM events_chain").fetchone()
        rows = max(int(head) - int(anchor), 1)  # seq is contiguous after the anchor
        per_row = max(live // rows, 1)
        n = min(max(-(-(live - target) // per_row), 1), batch_rows)
        last = db.execute(
            "SELECT seq, hash FROM events ORDER BY seq LIMIT 1 OFFSET ?", (n - 1,)
        ).fetchone()
        if last is None:  # fewer rows than n: all of them
            last = db.execute("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1").fetchone()
        if last is None:
            return 0
        return _delete_through(db, int(last[0]), str(last[1]))

    # -- reading -------------------------------------------------------------------
    def list_events(
        self,
        *,
        since: int | None = None,
        until: int | None = None,
        camera: str | None = None,
        task: str | None = None,
        zone: str | None = None,
        type: EventType | None = None,
        limit: int = 100,
    ) -> list[ZoneEvent]:
        """Events matching every given filter, newest first.

        Args:
            since, until: Unix ms, ``since <= time_ms < until``.
            camera, task, zone, type: exact matches.
            limit: at most this many (1 .. 100000).
        """
        if not 1 <= limit <= 100_000:
            raise ValueError("limit must be in 1..100000")
        where: list[str] = []
        args: list[Any] = []
        for col, op, val in (
            ("time_ms", ">=", since),
            ("time_ms", "<", until),
            ("camera", "=", camera),
            ("task", "=", task),
            ("zone", "=", zone),
            ("type", "=", type),
        ):
            if val is not None:
                where.append(f"{col} {op} ?")
                args.append(val)
        sql = f"SELECT {_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY time_ms DESC, event_id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            db = self._db()
            try:
                rows = db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read events from {self.path}: {exc}") from exc
        return [_row_to_event(r) for r in rows]

    def get(self, event_id: str) -> ZoneEvent | None:
        """One event by id."""
        with self._lock:
            db = self._db()
            try:
                row = db.execute(
                    f"SELECT {_COLUMNS} FROM events WHERE event_id = ?", (event_id,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read events from {self.path}: {exc}") from exc
        return None if row is None else _row_to_event(row)

    def counts(self, *, since: int | None = None) -> dict[str, int]:
        """Number of events by type (``start``/``update``/``end``/``crossing``), since
        ``since`` (Unix ms)."""
        sql = "SELECT type, COUNT(*) FROM events"
        args: tuple[Any, ...] = ()
        if since is not None:
            sql += " WHERE time_ms >= ?"
            args = (since,)
        with self._lock:
            db = self._db()
            try:
                rows = db.execute(sql + " GROUP BY type", args).fetchall()
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read events from {self.path}: {exc}") from exc
        out = {"start": 0, "update": 0, "end": 0, "crossing": 0}
        out.update({str(k): int(v) for k, v in rows})
        return out

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


def event_to_dict(event: ZoneEvent) -> dict[str, Any]:
    """JSON-ready dict of an event (ISO time added), as the ``events list`` command prints."""
    d = event.mqtt_fields()
    d["box"] = list(event.box)
    d["attributes"] = dict(event.attributes)
    d["time"] = (
        datetime.fromtimestamp(event.time_ms / 1000, tz=timezone.utc)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )
    return d


def _db_size(db: sqlite3.Connection) -> DbSize:
    def pragma(name: str) -> int:
        return int(db.execute(f"PRAGMA {name}").fetchone()[0])

    return DbSize(
        page_size=pragma("page_size"),
        page_count=pragma("page_count"),
        freelist_count=pragma("freelist_count"),
    )


def _delete_through(db: sqlite3.Connection, seq: int, hash_: str) -> int:
    """Delete the rows up to ``seq`` (a prefix of the chain) inside the caller's write
    transaction and make row ``seq`` (hash ``hash_``) the anchor; returns how many."""
    n = int(db.execute("DELETE FROM events WHERE seq <= ?", (seq,)).rowcount)
    db.execute(
        "UPDATE events_chain SET anchor_seq = ?, anchor_hash = ?, pruned = pruned + ?",
        (seq, hash_, n),
    )
    return n


def _file_size(path: Path) -> int:
    """Bytes of ``path``; 0 when it does not exist."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _iso(ms: int) -> str:
    """``ms`` (Unix ms) as ISO 8601 UTC for log lines; ``"<ms> ms"`` when out of
    ``datetime``'s range (a garbage clock)."""
    try:
        dt = datetime.fromtimestamp(ms / 1000, tz=timezone.utc)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def _retired_note(db: sqlite3.Connection, key_id: str) -> str:
    """``"; it was retired by key rotation N ..."`` when ``key_id`` was rotated out of
    this chain (``safety-edge events rotate-key``), else ``""``."""
    has = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (ROTATIONS_TABLE,)
    ).fetchone()
    if has is None:
        return ""
    row = db.execute(
        f"SELECT n, from_seq, new_key_id FROM {ROTATIONS_TABLE} WHERE old_key_id = ? "
        "ORDER BY n LIMIT 1",
        (key_id,),
    ).fetchone()
    if row is None:
        return ""
    return (
        f"; it was retired by key rotation {row[0]} from seq {row[1]}, next key id "
        f"{row[2]}: configure the key file that rotation moved to"
    )
