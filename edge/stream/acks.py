"""Acknowledgements of incidents: who acknowledged which incident, and when.

A control room acknowledges an incident (MQTT ``cmd/ack``, :mod:`edge.mqtt.commands`);
the gateway keeps one :class:`Ack` per incident, keyed by the incident's ``start`` event
id, in its own table ``event_acks`` of the events database
(:func:`edge.stream.events.events_db_path`). The chained ``events`` rows are never
touched, so the hash chain (:mod:`edge.stream.evidence`) stays intact; an incident
acknowledged while still open gets the acknowledgement into its ``end`` event
(``attributes.ack``), which *is* chained. An acknowledgement that arrives after the end
is only in this table (not attested by the chain).

Rows are written once (the first acknowledgement wins; later ones read it back) and
pruned with their incident's events, not by their own time (``at_ms`` is the wall clock
when recorded, possibly wrong): once neither the incident's ``start`` event nor the event
the command named is stored, after a prune by age (:meth:`AckStore.prune`) or by the size
bound (:meth:`AckStore.prune_detached`). The table is created
on open (``CREATE TABLE IF NOT EXISTS``, its own version in the ``event_acks_meta`` row),
independent of the events table's numbered migrations.

Durability: WAL with ``synchronous=FULL``, set explicitly (not left to the SQLite build's
default, which may be ``NORMAL``): :meth:`AckStore.record` returns once the acknowledgement
is on disk, so a power cut never forgets one that the control room was told about.

Thread-safety: one connection guarded by a lock; any thread may call any method.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.closing import Closing
from edge.mqtt.schema import iso_utc
from edge.stream.events import FUTURE_TOLERANCE_MS, EventStoreError

__all__ = ["ACKS_TABLE", "ACK_COLUMNS", "Ack", "AckStore", "ack_from_row", "read_acks"]

ACKS_TABLE = "event_acks"
log = logging.getLogger("edge.stream")

_VERSION = 1
_DDL = (
    f"""CREATE TABLE IF NOT EXISTS {ACKS_TABLE} (
        incident_id TEXT PRIMARY KEY,
        event_id    TEXT NOT NULL,
        by_name     TEXT NOT NULL,
        at_ms       INTEGER NOT NULL,
        note        TEXT,
        request_id  TEXT,
        camera      TEXT NOT NULL,
        task        TEXT NOT NULL,
        zone        TEXT NOT NULL
    )""",
    f"CREATE INDEX IF NOT EXISTS {ACKS_TABLE}_at ON {ACKS_TABLE} (at_ms)",
    f"""CREATE TABLE IF NOT EXISTS {ACKS_TABLE}_meta (
        id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)""",
    f"INSERT OR IGNORE INTO {ACKS_TABLE}_meta (id, version) VALUES (1, {_VERSION})",
)
ACK_COLUMNS = "incident_id, event_id, by_name, at_ms, note, request_id, camera, task, zone"
"""The acks table's columns in the order :func:`ack_from_row` reads them."""
# An acknowledgement whose incident has left the events table: neither its ``start``
# event nor the event its command named is stored (``prune`` and ``prune_detached``).
_DETACHED = (
    f"NOT EXISTS (SELECT 1 FROM events WHERE events.event_id = {ACKS_TABLE}.incident_id) "
    f"AND NOT EXISTS (SELECT 1 FROM events WHERE events.event_id = {ACKS_TABLE}.event_id)"
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ack:
    """One acknowledgement.

    Attributes:
        incident_id: the incident's ``start`` event id.
        event_id: the event id the command named (any event of the incident).
        by: who acknowledged (the command's ``by``).
        at_ms: when the gateway recorded it, Unix milliseconds by its wall clock (wrong
            if the clock was; retention does not go by it, :meth:`AckStore.prune`).
        note: free text from the command, or ``None``.
        request_id: the command's ``request_id``, or ``None``.
        camera, task, zone: where the incident is.
    """

    incident_id: str
    event_id: str
    by: str
    at_ms: int
    note: str | None
    request_id: str | None
    camera: str
    task: str
    zone: str

    def summary(self) -> dict[str, str | int | None]:
        """``{"by", "at", "at_ms", "note"}``: what goes into the ``end`` event's
        ``attributes.ack``, the command reply and ``events list``."""
        return {"by": self.by, "at": iso_utc(self.at_ms), "at_ms": self.at_ms, "note": self.note}


def _has_events_table(conn: sqlite3.Connection) -> bool:
    return (
        conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
        is not None
    )


def _iso(ms: int) -> str:
    """:func:`iso_utc`, or ``"<ms> ms"`` out of ``datetime``'s range (a garbage clock)."""
    try:
        return iso_utc(ms)
    except (OverflowError, OSError, ValueError):
        return f"{ms} ms"


def ack_from_row(r: Sequence[Any]) -> Ack:
    """An :class:`Ack` from a row selected as :data:`ACK_COLUMNS`."""
    return Ack(
        incident_id=r[0],
        event_id=r[1],
        by=r[2],
        at_ms=int(r[3]),
        note=r[4],
        request_id=r[5],
        camera=r[6],
        task=r[7],
        zone=r[8],
    )


def _select_many(conn: sqlite3.Connection, ids: list[str]) -> dict[str, Ack]:
    out: dict[str, Ack] = {}
    for i in range(0, len(ids), 500):  # SQLite's host-parameter limit
        chunk = ids[i : i + 500]
        sql = (
            f"SELECT {ACK_COLUMNS} FROM {ACKS_TABLE} "
            f"WHERE incident_id IN ({', '.join('?' * len(chunk))})"
        )
        for r in conn.execute(sql, chunk):
            out[r[0]] = ack_from_row(r)
    return out


def read_acks(conn: sqlite3.Connection, incident_ids: Iterable[str]) -> dict[str, Ack]:
    """Acknowledgements of ``incident_ids`` through any connection to the events
    database (e.g. a read-only one); ``{}`` when the table does not exist yet.

    Raises:
        sqlite3.Error: other database errors.
    """
    ids = sorted(set(incident_ids))
    if not ids:
        return {}
    try:
        return _select_many(conn, ids)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return {}
        raise


class AckStore(Closing):
    """The ``event_acks`` table in the events database file (created on open).

    Args:
        path: the events database (:func:`edge.stream.events.events_db_path`).
        busy_timeout_ms: how long a write waits for another connection's lock.

    Raises:
        EventStoreError: the file cannot be opened or the table created.
    """

    def __init__(self, *, path: str | Path, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
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
            conn.execute("PRAGMA synchronous = FULL")  # durable acks, module docstring
            with conn:
                for sql in _DDL:
                    conn.execute(sql)
            version = int(conn.execute(f"SELECT version FROM {ACKS_TABLE}_meta").fetchone()[0])
            if version > _VERSION:
                raise sqlite3.DatabaseError(
                    f"{ACKS_TABLE} version {version} is newer than this program ({_VERSION})"
                )
        except sqlite3.Error as exc:
            conn.close()
            raise EventStoreError(f"cannot prepare {ACKS_TABLE} in {self.path}: {exc}") from exc
        self._conn = conn

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise EventStoreError(f"events database {self.path} is closed")
        return self._conn

    def record(self, ack: Ack) -> tuple[Ack, bool]:
        """Store ``ack`` unless its incident is acknowledged already; returns the stored
        acknowledgement and whether it is ``ack`` (``False``: an earlier one is kept).

        Raises:
            EventStoreError: locked past the busy timeout, full or broken.
        """
        with self._lock:
            db = self._db()
            try:
                with db:
                    cur = db.execute(
                        f"INSERT OR IGNORE INTO {ACKS_TABLE} ({ACK_COLUMNS}) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            ack.incident_id,
                            ack.event_id,
                            ack.by,
                            int(ack.at_ms),
                            ack.note,
                            ack.request_id,
                            ack.camera,
                            ack.task,
                            ack.zone,
                        ),
                    )
                    if cur.rowcount == 1:
                        return ack, True
                    row = db.execute(
                        f"SELECT {ACK_COLUMNS} FROM {ACKS_TABLE} WHERE incident_id = ?",
                        (ack.incident_id,),
                    ).fetchone()
            except sqlite3.Error as exc:
                raise EventStoreError(
                    f"cannot record acknowledgement in {self.path}: {exc}"
                ) from exc
        return ack_from_row(row), False

    def get(self, incident_id: str) -> Ack | None:
        """The acknowledgement of one incident (its ``start`` event id), if any."""
        return self.get_many([incident_id]).get(incident_id)

    def get_many(self, incident_ids: Iterable[str]) -> dict[str, Ack]:
        """Acknowledgements by incident id, for those of ``incident_ids`` that have one."""
        with self._lock:
            db = self._db()
            try:
                return read_acks(db, incident_ids)
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read acknowledgements: {exc}") from exc

    def prune(self, *, before_ms: int, now_ms: int | None = None) -> int:
        """Delete the acknowledgements whose incident has left the events table (neither its
        ``start`` event nor the event its command named is stored any more, whatever the
        acknowledgement's own time); returns how many. Call it after :meth:`EventStore.prune
        <edge.stream.events.EventStore.prune>` (the gateway and ``safety-edge events prune``
        do): an acknowledgement lives exactly as long as its incident's events.

        ``at_ms`` is the wall clock when the gateway recorded it, which may have been wrong
        (an RTC at the image's build date before NTP synced, a bad GPS time): an
        acknowledgement stamped *before* ``before_ms`` whose incident is still stored is kept
        (deleting it by its own time lost the record of who acknowledged a current incident,
        and a repeated ``ack`` was taken as the first); one stamped more than
        :data:`~edge.stream.events.FUTURE_TOLERANCE_MS` after ``now_ms`` (default: the system
        clock) goes with its incident's events, not at its wrong date plus the retention.
        When either kind is stored, one WARNING per kind and call says how many, the
        furthest time and, for those stamped ahead, how many were deleted.

        Without an events table in the file (nothing to tell whether an incident is gone),
        those recorded before ``before_ms`` (Unix ms) are deleted and the others kept.

        Raises:
            EventStoreError: locked past the busy timeout, full or broken.
        """
        now = time.time_ns() // 1_000_000 if now_ms is None else int(now_ms)
        ahead = max(before_ms - 1, now + FUTURE_TOLERANCE_MS)
        behind = oldest = 0
        with self._lock:
            db = self._db()
            try:
                with db:
                    count, furthest = db.execute(
                        f"SELECT COUNT(*), MAX(at_ms) FROM {ACKS_TABLE} WHERE at_ms > ?", (ahead,)
                    ).fetchone()
                    if _has_events_table(db):
                        n = int(db.execute(f"DELETE FROM {ACKS_TABLE} WHERE {_DETACHED}").rowcount)
                        behind, oldest = db.execute(
                            f"SELECT COUNT(*), MIN(at_ms) FROM {ACKS_TABLE} WHERE at_ms < ?",
                            (before_ms,),
                        ).fetchone()
                    else:
                        n = int(
                            db.execute(
                                f"DELETE FROM {ACKS_TABLE} WHERE at_ms < ?", (before_ms,)
                            ).rowcount
                        )
                    left_ahead = 0
                    if count:
                        left_ahead = int(
                            db.execute(
                                f"SELECT COUNT(*) FROM {ACKS_TABLE} WHERE at_ms > ?", (ahead,)
                            ).fetchone()[0]
                        )
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot prune acknowledgements: {exc}") from exc
        if count:
            log.warning(
                "acknowledgements in %s: %d are stamped more than %g h after this prune's "
                "clock (%s; the furthest %s): the clock was wrong when they were recorded, "
                "or is wrong now; %d of them were deleted with their incidents' events",
                self.path,
                count,
                FUTURE_TOLERANCE_MS / 3_600_000,
                _iso(now),
                _iso(int(furthest)),
                int(count) - left_ahead,
            )
        if behind:
            log.warning(
                "acknowledgements in %s: %d are stamped before this prune's cutoff (%s; the "
                "oldest %s) while their incidents' events are still stored: the clock was "
                "behind when they were recorded, or is ahead now; kept, they go with those "
                "events",
                self.path,
                behind,
                _iso(before_ms),
                _iso(int(oldest)),
            )
        return n

    def prune_detached(self) -> int:
        """Delete the acknowledgements whose incident has left the events table: neither
        its ``start`` event nor the event its command named is stored any more; returns
        how many. :meth:`prune`'s rule without its warnings and its time rule for a file
        without events table: call it after
        :meth:`EventStore.prune_to_size <edge.stream.events.EventStore.prune_to_size>`
        (the size bound deletes events before their retention). Without an events table it
        deletes nothing.

        Raises:
            EventStoreError: locked past the busy timeout, full or broken.
        """
        with self._lock:
            db = self._db()
            try:
                with db:
                    if not _has_events_table(db):
                        return 0
                    return int(db.execute(f"DELETE FROM {ACKS_TABLE} WHERE {_DETACHED}").rowcount)
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot prune acknowledgements: {exc}") from exc

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
