"""Durable outbox: MQTT messages wait in SQLite (WAL) until the broker acknowledges them.

Contract:

- :meth:`Outbox.append` returns only after the messages are committed; the publisher
  sends nothing that is not committed, and :meth:`Outbox.delete` removes a row only when
  its PUBACK (QoS 1) / PUBCOMP (QoS 2) has arrived. Rows are read back in id order, which
  is append order, so after a reconnect or a restart the remaining messages go out again
  oldest first. Delivery is at least once: a message whose acknowledgement was lost to a
  crash or a dropped connection is sent again, consumers dedupe on ``event_id``.
- Group commit: concurrent :meth:`append` calls share one transaction (the first caller
  to get the write lock commits everything queued), and one call may append a batch.
- Durability (``synchronous``): ``NORMAL`` (default) writes each commit to the WAL
  without fsync: a killed process (SIGKILL, OOM, segfault) loses nothing committed, a
  power cut or kernel crash can lose commits made since the last checkpoint (the WAL is
  fsynced at each checkpoint; the publisher checkpoints every
  ``checkpoint_interval_s``, 1 s by default, so at most about a second of events). The
  database is never corrupted. ``FULL`` fsyncs every commit: nothing committed is lost
  to a power cut, at one fsync per commit (0.3 ms on this machine's disk, often 5-50 ms
  on SD cards and eMMC); group commit spreads that cost over concurrent producers.
- Bounds: ``max_rows`` rows and ``max_bytes`` bytes (topic + payload). When a new batch
  does not fit, the oldest ``update`` events are deleted first, as many as needed; the
  kinds ``start``, ``end``, ``crossing`` and ``alert`` are never dropped. If the batch
  cannot fit even after dropping every stored ``update`` (the outbox is full of
  start/end/crossing/alert rows), the whole batch is refused with
  :class:`OutboxFullError` and nothing is dropped: what was accepted before stays
  deliverable, and the caller learns synchronously. Every dropped
  and refused message is counted (:meth:`Outbox.stats`); raising the alert is the
  publisher's job.
- One process per file: the database is opened in exclusive locking mode, a second
  opener gets :class:`OutboxError`. The lock dies with the process (also on SIGKILL).

All methods are thread-safe.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge.closing import Closing
from edge.errors import EdgeError

__all__ = [
    "AppendResult",
    "Kind",
    "Message",
    "Outbox",
    "OutboxError",
    "OutboxFullError",
    "StoredMessage",
]

log = logging.getLogger("edge.mqtt.outbox")

Kind = Literal["start", "update", "end", "crossing", "alert"]
DROPPABLE: Kind = "update"
_KINDS = frozenset({"start", "update", "end", "crossing", "alert"})
_SCHEMA = 1
_CHUNK = 500
_INSERT = "INSERT INTO outbox (id, key, kind, topic, qos, payload, size) VALUES (?,?,?,?,?,?,?)"


class OutboxError(EdgeError):
    """The outbox database failed (disk full, I/O error, in use by another process, closed)."""

    code = 5000


class OutboxFullError(OutboxError):
    """A batch cannot be stored: the outbox is full of messages that are never dropped."""


@dataclass(frozen=True, slots=True)
class Message:
    """A message to store. ``key`` is the event/alert id, ``kind`` decides the drop policy."""

    key: str
    kind: Kind
    topic: str
    payload: bytes
    qos: int = 1

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown outbox kind {self.kind!r}")


@dataclass(frozen=True, slots=True)
class StoredMessage:
    """A stored message with its row id (increasing in append order)."""

    id: int
    key: str
    kind: str
    topic: str
    qos: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class AppendResult:
    """Row ids of the appended messages, and how many old ``update`` rows were dropped
    (with their keys) to make room for them."""

    ids: tuple[int, ...]
    dropped: int = 0
    dropped_keys: tuple[str, ...] = ()


@dataclass(slots=True)
class _Pending:
    messages: Sequence[Message]
    done: bool = False
    result: AppendResult | None = None
    error: OutboxError | None = None
    sizes: list[int] = field(default_factory=list)


class Outbox(Closing):
    """SQLite outbox at ``path`` (created with its parent directory if missing).

    Args:
        path: database file; ``-wal`` sits beside it.
        max_rows: most messages stored at once (>= 1).
        max_bytes: most topic + payload bytes stored at once (>= 1).
        synchronous: ``"NORMAL"`` or ``"FULL"``, see the module docstring.
    """

    def __init__(
        self,
        *,
        path: Path,
        max_rows: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
    ) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise ValueError("max_rows and max_bytes must be >= 1")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._dropped_total = 0
        self._rejected_total = 0
        self._commits = 0
        self._upd_floor = 0  # no droppable row has an id <= this (see _drop_oldest_updates)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._con: sqlite3.Connection | None = self._open()
        except sqlite3.Error as exc:
            raise self._error("open", exc) from exc

    # -- setup ---------------------------------------------------------------------------

    def _open(self) -> sqlite3.Connection:
        con = sqlite3.connect(
            str(self.path), isolation_level=None, check_same_thread=False, timeout=0.5
        )
        try:
            con.execute("PRAGMA locking_mode=EXCLUSIVE")
            mode = con.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise OutboxError(f"outbox {self.path}: cannot enable WAL (got {mode!r})")
            con.execute(f"PRAGMA synchronous={self.synchronous}")
            con.execute("PRAGMA journal_size_limit=4194304")
            con.execute("BEGIN IMMEDIATE")  # takes the exclusive lock now
            con.execute(
                "CREATE TABLE IF NOT EXISTS outbox ("
                " id INTEGER PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL,"
                " topic TEXT NOT NULL, qos INTEGER NOT NULL, payload BLOB NOT NULL,"
                " size INTEGER NOT NULL)"
            )
            version = con.execute("PRAGMA user_version").fetchone()[0]
            if version == 0:
                con.execute(f"PRAGMA user_version={_SCHEMA}")
            elif version != _SCHEMA:
                raise OutboxError(f"outbox {self.path} has schema {version}, expected {_SCHEMA}")
            rows, nbytes, last = con.execute(
                "SELECT count(*), coalesce(sum(size), 0), coalesce(max(id), 0) FROM outbox"
            ).fetchone()
            upd, upd_bytes = con.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM outbox WHERE kind = 'update'"
            ).fetchone()
            con.execute("COMMIT")
        except BaseException:
            con.close()
            raise
        self._rows, self._bytes, self._last_id = int(rows), int(nbytes), int(last)
        self._upd_rows, self._upd_bytes = int(upd), int(upd_bytes)
        if self._rows:
            log.info("outbox %s: %d messages waiting from a previous run", self.path, self._rows)
        return con

    def _error(self, what: str, exc: sqlite3.Error) -> OutboxError:
        msg = str(exc)
        if "locked" in msg:
            return OutboxError(f"outbox {self.path} is in use by another process ({what}: {msg})")
        return OutboxError(f"outbox {self.path}: {what} failed: {msg}")

    def _conn(self) -> sqlite3.Connection:
        if self._con is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._con

    # -- writes ----------------------------------------------------------------------------

    def append(self, messages: Sequence[Message]) -> AppendResult:
        """Store ``messages`` (one batch, all or nothing) and return once committed.

        Raises:
            OutboxFullError: the batch does not fit even after dropping every stored
                ``update`` (nothing is dropped then), or is larger than the outbox.
            OutboxError: the database failed; nothing of the batch is stored.
        """
        if not messages:
            return AppendResult(ids=())
        pending = _Pending(messages=messages)
        with self._queue_lock:
            self._queue.append(pending)
        with self._lock:
            if not pending.done:
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._commit(batch)
        if pending.error is not None:
            raise pending.error
        assert pending.result is not None
        return pending.result

    def _commit(self, batch: list[_Pending]) -> None:
        try:
            con = self._conn()
        except OutboxError as exc:
            for p in batch:
                p.error, p.done = exc, True
            return
        if len(batch) == 1 and len(batch[0].messages) == 1 and self._commit_one(con, batch[0]):
            return
        rows, nbytes, upd_rows, upd_bytes = self._rows, self._bytes, self._upd_rows, self._upd_bytes
        last_id, rejected, dropped_total = self._last_id, 0, 0
        floor = self._upd_floor
        try:
            con.execute("BEGIN IMMEDIATE")
            for p in batch:
                sizes = [len(m.topic.encode()) + len(m.payload) for m in p.messages]
                need_rows, need_bytes = len(sizes), sum(sizes)
                over_rows = rows + need_rows - self.max_rows
                over_bytes = nbytes + need_bytes - self.max_bytes
                dropped_keys: list[str] = []
                if over_rows > 0 or over_bytes > 0:
                    if over_rows > upd_rows or over_bytes > upd_bytes:
                        rejected += need_rows
                        p.error = OutboxFullError(
                            f"outbox full: {rows} messages / {nbytes} bytes stored "
                            f"({upd_rows} droppable updates), limits {self.max_rows} / "
                            f"{self.max_bytes}; refused {need_rows} new message(s)"
                        )
                        continue
                    freed_rows, freed_bytes, dropped_keys, floor = self._drop_oldest_updates(
                        con, over_rows, over_bytes, floor
                    )
                    rows, nbytes = rows - freed_rows, nbytes - freed_bytes
                    upd_rows, upd_bytes = upd_rows - freed_rows, upd_bytes - freed_bytes
                    dropped_total += freed_rows
                ids = tuple(range(last_id + 1, last_id + 1 + need_rows))
                con.executemany(
                    _INSERT,
                    [
                        (i, m.key, m.kind, m.topic, m.qos, m.payload, s)
                        for i, m, s in zip(ids, p.messages, sizes, strict=True)
                    ],
                )
                last_id += need_rows
                rows, nbytes = rows + need_rows, nbytes + need_bytes
                for m, s in zip(p.messages, sizes, strict=True):
                    if m.kind == DROPPABLE:
                        upd_rows, upd_bytes = upd_rows + 1, upd_bytes + s
                p.result = AppendResult(
                    ids=ids, dropped=len(dropped_keys), dropped_keys=tuple(dropped_keys)
                )
            con.execute("COMMIT")
        except sqlite3.Error as exc:
            err = self._error("append", exc)
            log.error("%s", err)
            try:
                con.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("outbox %s: rollback failed", self.path)
            for p in batch:
                p.error, p.result, p.done = err, None, True
            return
        self._rows, self._bytes, self._upd_rows, self._upd_bytes = rows, nbytes, upd_rows, upd_bytes
        self._last_id = last_id
        self._upd_floor = floor
        self._rejected_total += rejected
        self._dropped_total += dropped_total
        self._commits += 1
        for p in batch:
            p.done = True

    def _commit_one(self, con: sqlite3.Connection, p: _Pending) -> bool:
        """Fast path for one message that fits: a single autocommit INSERT. Returns False
        (nothing done) when the general path is needed."""
        m = p.messages[0]
        size = len(m.topic.encode()) + len(m.payload)
        if self._rows + 1 > self.max_rows or self._bytes + size > self.max_bytes:
            return False
        rid = self._last_id + 1
        try:
            con.execute(_INSERT, (rid, m.key, m.kind, m.topic, m.qos, m.payload, size))
        except sqlite3.Error as exc:
            p.error = self._error("append", exc)
            log.error("%s", p.error)
        else:
            self._last_id = rid
            self._rows += 1
            self._bytes += size
            if m.kind == DROPPABLE:
                self._upd_rows += 1
                self._upd_bytes += size
            self._commits += 1
            p.result = AppendResult(ids=(rid,))
        p.done = True
        return True

    def _drop_oldest_updates(
        self, con: sqlite3.Connection, over_rows: int, over_bytes: int, floor: int
    ) -> tuple[int, int, list[str], int]:
        """Delete the oldest ``update`` rows until both excesses are covered (the caller
        checked that enough update rows exist), inside the caller's transaction.

        Updates are dropped oldest first and new rows get higher ids, so no update row is
        left at or below the last dropped id: the search starts from ``floor`` (returned
        updated) instead of needing an index that would slow every insert."""
        freed_rows = freed_bytes = 0
        keys: list[str] = []
        after = floor
        while freed_rows < over_rows or freed_bytes < over_bytes:
            want = max(over_rows - freed_rows, 64)
            found = con.execute(
                "SELECT id, key, size FROM outbox WHERE kind = 'update' AND id > ?"
                " ORDER BY id LIMIT ?",
                (after, want),
            ).fetchall()
            if not found:
                raise sqlite3.DatabaseError("update rows missing while making room")
            take = []
            for rid, key, size in found:
                if freed_rows >= over_rows and freed_bytes >= over_bytes:
                    break
                take.append(rid)
                keys.append(key)
                freed_rows += 1
                freed_bytes += size
                after = rid
            con.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in take])
        log.warning(
            "outbox %s full: dropped %d oldest update event(s) to make room", self.path, freed_rows
        )
        return freed_rows, freed_bytes, keys, after

    def delete(self, ids: Iterable[int]) -> int:
        """Delete acknowledged rows (ids that are already gone are ignored); returns the
        number deleted. One transaction for all ids."""
        id_list = list(ids)
        if not id_list:
            return 0
        with self._lock:
            con = self._conn()
            deleted = freed = upd = upd_bytes = 0
            try:
                con.execute("BEGIN IMMEDIATE")
                for start in range(0, len(id_list), _CHUNK):
                    chunk = id_list[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    for kind, size in con.execute(
                        f"DELETE FROM outbox WHERE id IN ({marks}) RETURNING kind, size", chunk
                    ).fetchall():
                        deleted += 1
                        freed += size
                        if kind == DROPPABLE:
                            upd += 1
                            upd_bytes += size
                con.execute("COMMIT")
            except sqlite3.Error as exc:
                err = self._error("delete", exc)
                try:
                    con.execute("ROLLBACK")
                except sqlite3.Error:
                    log.exception("outbox %s: rollback failed", self.path)
                raise err from exc
            self._rows -= deleted
            self._bytes -= freed
            self._upd_rows -= upd
            self._upd_bytes -= upd_bytes
            return deleted

    # -- reads -----------------------------------------------------------------------------

    def read_after(self, after_id: int, limit: int) -> list[StoredMessage]:
        """Up to ``limit`` stored messages with ``id > after_id``, oldest first."""
        if limit <= 0:
            return []
        with self._lock:
            con = self._conn()
            try:
                found = con.execute(
                    "SELECT id, key, kind, topic, qos, payload FROM outbox WHERE id > ?"
                    " ORDER BY id LIMIT ?",
                    (after_id, limit),
                ).fetchall()
            except sqlite3.Error as exc:
                raise self._error("read", exc) from exc
        return [StoredMessage(*row) for row in found]

    def checkpoint(self) -> None:
        """Copy the WAL into the database file, fsyncing both (bounds power-cut loss)."""
        with self._lock:
            con = self._conn()
            try:
                con.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            except sqlite3.Error as exc:
                raise self._error("checkpoint", exc) from exc

    @property
    def rows(self) -> int:
        """Messages stored now."""
        return self._rows

    @property
    def bytes(self) -> int:
        """Topic + payload bytes stored now."""
        return self._bytes

    @property
    def last_id(self) -> int:
        """Highest row id appended so far (0 when none); read without the lock."""
        return self._last_id

    def stats(self) -> dict[str, int]:
        """Counters since open: ``rows``, ``bytes``, ``update_rows``, ``dropped_total``
        (old updates dropped to make room), ``rejected_total`` (refused as full), ``commits``."""
        return {
            "rows": self._rows,
            "bytes": self._bytes,
            "update_rows": self._upd_rows,
            "dropped_total": self._dropped_total,
            "rejected_total": self._rejected_total,
            "commits": self._commits,
        }

    def close(self) -> None:
        """Close the database (idempotent); later calls raise :class:`OutboxError`."""
        with self._lock:
            con, self._con = self._con, None
        if con is not None:
            try:
                con.close()
            except sqlite3.Error:
                log.exception("outbox %s: close failed", self.path)
