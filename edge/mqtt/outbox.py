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
  ``checkpoint_interval_s``, 1 s by default, so at most about a second of events). SQLite
  itself never corrupts the database (the medium can: see Damage below). ``FULL`` fsyncs
  every commit: nothing committed is lost to a power cut, at one fsync per commit (0.3 ms
  on this machine's disk, often 5-50 ms on SD cards and eMMC); group commit spreads that
  cost over concurrent producers.
- Bounds: ``max_rows`` rows and ``max_bytes`` bytes (topic + payload). When a new batch
  does not fit, the oldest ``update`` events are deleted first, as many as needed; the
  kinds ``start``, ``end``, ``crossing`` and ``alert`` are never dropped. If the batch
  cannot fit even after dropping every stored ``update`` (the outbox is full of
  start/end/crossing/alert rows), the whole batch is refused with
  :class:`OutboxFullError` and nothing is dropped: what was accepted before stays
  deliverable, and the caller learns synchronously. Every dropped
  and refused message is counted (:meth:`Outbox.stats`); raising the alert is the
  publisher's job.
- Alert headroom: a batch made only of ``alert`` messages is first handled like any
  other (the oldest updates are dropped if that makes room). Where the rule above would
  refuse it, it may instead go over the limits by at most ``alert_headroom_rows`` rows
  (:data:`ALERT_HEADROOM_ROWS`, 100) and ``alert_headroom_bytes`` bytes
  (:data:`ALERT_HEADROOM_BYTES`, 256 KiB), dropping the oldest updates only as far as
  needed to stay within those raised limits; so the alert that says events were refused
  is stored even when the outbox is full of start/end rows. At most
  ``max_rows + alert_headroom_rows`` rows and ``max_bytes + alert_headroom_bytes`` bytes
  are ever stored. Rows in the headroom count against the normal limits for every later
  batch: while they are there, a new event drops updates until the total is within
  ``max_rows``/``max_bytes`` again, or is refused. An alert batch that does not fit even
  with the headroom is refused like any other batch.
- One process per file: the database is opened in exclusive locking mode, a second
  opener gets :class:`OutboxError`. The lock dies with the process (also on SIGKILL).
- Damage: SQLite's own writes never corrupt the file, but the medium can (SD cards and
  eMMC losing power mid-write, bad blocks). Opening runs ``PRAGMA quick_check`` (and the
  row scan that counts the stored messages); a file that is not a database (its first
  16 bytes are checked before SQLite opens it, which would delete a ``-wal`` beside
  it), fails the check or whose rows cannot be read raises :class:`OutboxCorruptError`. With
  ``recover_damaged=True`` (what the publisher uses, so the gateway still starts) the
  outbox instead copies every row it can still read (a forward and a backward scan by
  id, so rows on both sides of a damaged page survive; a row must have a known kind,
  qos 0-2 and a ``size`` that matches its topic and payload) into a new file, moves the
  damaged file with its ``-wal``/``-shm``/``-journal`` aside to
  ``<name>.corrupt-<UTC time>`` (``-2``, ``-3``, ... appended rather than overwrite an
  earlier one; each can be as large as the outbox, so only the newest
  :data:`KEEP_CORRUPT_COPIES` (3), the new one included, are kept: older ones are
  deleted with their sidecars, oldest first, one warning each), puts the new file in
  its place and logs an error naming both files, how many messages were kept and how
  many were lost (a number only when the whole table was read, else "unknown").
  :attr:`Outbox.recovery` says what happened. Failures that are not damage
  (permissions, a folder in the way, a full disk, another process holding the file, a
  newer schema) still raise :class:`OutboxError` and nothing is moved. The copy is
  finished in ``<name>.salvage`` first and renamed into place right after the damaged
  file is moved, so a power cut during recovery leaves the damaged file (recovered again
  at the next start; a half-written ``.salvage`` is deleted), the new file, or --
  between the two renames -- no file and the finished ``.salvage``, which the next
  start with ``recover_damaged=True`` puts in place.

All methods are thread-safe.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from edge.closing import Closing
from edge.errors import EdgeError, QueueFullError
from edge.fsutil import SQLITE_SIDECARS, fsync_dir, move_with_sidecars

__all__ = [
    "ALERT_HEADROOM_BYTES",
    "ALERT_HEADROOM_ROWS",
    "KEEP_CORRUPT_COPIES",
    "AppendResult",
    "Kind",
    "Message",
    "Outbox",
    "OutboxCorruptError",
    "OutboxError",
    "OutboxFullError",
    "OutboxRecovery",
    "StoredMessage",
]

log = logging.getLogger("edge.mqtt.outbox")

Kind = Literal["start", "update", "end", "crossing", "alert"]
ALERT_HEADROOM_ROWS = 100
"""Rows ``alert`` batches may store beyond ``max_rows`` when nothing else makes room (at
one loss alert a minute, 100 minutes of a full outbox; a loss alert is about 0.6 KB)."""
ALERT_HEADROOM_BYTES = 256 * 1024
"""Bytes ``alert`` batches may store beyond ``max_bytes`` (100 rows of up to 2.6 KB)."""
KEEP_CORRUPT_COPIES = 3
"""Moved-aside damaged files (``<name>.corrupt-<UTC time>[-n]``) kept: the newest ones,
the one just made always among them; older ones are deleted with their sidecars."""
DROPPABLE: Kind = "update"
_KINDS = frozenset({"start", "update", "end", "crossing", "alert"})
_SCHEMA = 1
_CHUNK = 500
_INSERT = "INSERT INTO outbox (id, key, kind, topic, qos, payload, size) VALUES (?,?,?,?,?,?,?)"
_SELECT_ALL = "SELECT id, key, kind, topic, qos, payload, size FROM outbox ORDER BY id"
_MAGIC = b"SQLite format 3\x00"  # the first 16 bytes of every SQLite database file
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26  # primary result codes
_Row = tuple[int, str, str, str, int, bytes, int]


class OutboxError(EdgeError):
    """The outbox database failed (disk full, I/O error, in use by another process, closed)."""

    code = 5000


class OutboxFullError(OutboxError, QueueFullError):
    """A batch cannot be stored: the outbox is full of messages that are never dropped.
    Also a :class:`~edge.errors.QueueFullError`, so code that knows nothing of MQTT (the
    camera pipeline's sinks) can tell this expected refusal from a failure."""


class OutboxCorruptError(OutboxError):
    """The outbox file is damaged: not a SQLite database, ``quick_check`` not ok, or its
    rows cannot be read. Raised at open unless ``recover_damaged=True``.

    Attributes:
        reason: what SQLite said (the error, or the first lines of ``quick_check``).
    """

    def __init__(self, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True, kw_only=True)
class OutboxRecovery:
    """What :class:`Outbox` did with a damaged file at open (``recover_damaged=True``).

    Attributes:
        path: the outbox file (now a new database).
        moved_to: where the damaged file went (``<name>.corrupt-<UTC time>[-n]``); its
            ``-wal``/``-shm``/``-journal``, if any, sit beside it with the same suffix.
        reason: why it counted as damaged (SQLite's error or ``quick_check`` output).
        salvaged: messages read from the damaged file and kept in the new outbox (they
            are sent as usual, in their old order and with their old row ids).
        lost: messages that could not be read: ``0`` when the whole table was read and
            every row passed the checks, ``None`` when unknown (a scan hit the damage,
            or the file could not be read as a database at all).
    """

    path: Path
    moved_to: Path
    reason: str
    salvaged: int
    lost: int | None


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
        recover_damaged: a damaged file is moved aside and replaced by a new outbox
            holding what could still be read (see "Damage" in the module docstring;
            :attr:`recovery` says what happened) instead of raising
            :class:`OutboxCorruptError`.
        alert_headroom_rows: rows ``alert`` batches may store beyond ``max_rows`` (>= 0;
            see "Alert headroom" in the module docstring).
        alert_headroom_bytes: bytes ``alert`` batches may store beyond ``max_bytes``
            (>= 0).

    Raises:
        OutboxCorruptError: the file is damaged and ``recover_damaged`` is False.
        OutboxError: the file cannot be opened for any other reason (in use by another
            process, no permission, a newer schema, ...), or a damaged file cannot be
            moved aside.
    """

    def __init__(
        self,
        *,
        path: Path,
        max_rows: int = 100_000,
        max_bytes: int = 64 * 1024 * 1024,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        recover_damaged: bool = False,
        alert_headroom_rows: int = ALERT_HEADROOM_ROWS,
        alert_headroom_bytes: int = ALERT_HEADROOM_BYTES,
    ) -> None:
        if max_rows < 1 or max_bytes < 1:
            raise ValueError("max_rows and max_bytes must be >= 1")
        if alert_headroom_rows < 0 or alert_headroom_bytes < 0:
            raise ValueError("alert_headroom_rows and alert_headroom_bytes must be >= 0")
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError(f"synchronous must be NORMAL or FULL, got {synchronous!r}")
        self.path = Path(path)
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.alert_headroom_rows = alert_headroom_rows
        self.alert_headroom_bytes = alert_headroom_bytes
        self.synchronous = synchronous
        self._lock = threading.Lock()
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._dropped_total = 0
        self._rejected_total = 0
        self._commits = 0
        self._upd_floor = 0  # no droppable row has an id <= this (see _drop_oldest_updates)
        self.recovery: OutboxRecovery | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutboxError(
                f"outbox {self.path}: cannot create its folder: {exc.strerror or exc}"
            ) from exc
        if recover_damaged:
            self._finish_interrupted_recovery()
        try:
            self._con: sqlite3.Connection | None = self._open_checked()
        except OutboxCorruptError as exc:
            if not recover_damaged:
                raise
            self.recovery = self._recover(exc)
            self._con = self._open_checked()

    # -- setup ---------------------------------------------------------------------------

    def _open_checked(self) -> sqlite3.Connection:
        bad = _header_problem(self.path)
        if bad is not None:  # SQLite is not let near it: it would delete a -wal beside it
            raise OutboxCorruptError(f"outbox {self.path} is damaged: {bad}", reason=bad)
        try:
            return self._open()
        except sqlite3.Error as exc:
            if _is_corrupt(exc):
                raise OutboxCorruptError(
                    f"outbox {self.path} is damaged: {exc}", reason=str(exc)
                ) from exc
            raise self._error("open", exc) from exc

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
            check = [str(r[0]) for r in con.execute("PRAGMA quick_check").fetchall()]
            if check != ["ok"]:
                lines = [ln for c in check for ln in c.splitlines() if not ln.startswith("***")]
                reason = "; ".join(lines[:3])
                raise OutboxCorruptError(
                    f"outbox {self.path} is damaged: quick_check: {reason}", reason=reason
                )
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

    def _salvage_path(self) -> Path:
        return self.path.with_name(self.path.name + ".salvage")

    def _finish_interrupted_recovery(self) -> None:
        """No outbox file but a finished ``.salvage``: a power cut hit a recovery between
        moving the damaged file aside and renaming the copy into place."""
        salvage = self._salvage_path()
        if os.path.lexists(self.path) or not os.path.exists(salvage):
            return  # (also when the folder cannot be searched: the open reports that)
        try:
            move_with_sidecars(salvage, self.path)
        except OSError as exc:
            raise OutboxError(
                f"outbox {self.path}: cannot put the copy saved by an interrupted recovery "
                f"({salvage.name}) in place: {exc.strerror or exc}"
            ) from exc
        _fsync_dir(self.path.parent)
        log.warning(
            "outbox %s: a recovery was interrupted; the messages saved from the damaged "
            "file (%s) are now the outbox",
            self.path,
            salvage.name,
        )

    def _recover(self, damaged: OutboxCorruptError) -> OutboxRecovery:
        """Keep what can be read of the damaged file in a new one and move the damaged
        file aside (order and crash windows: module docstring)."""
        rows: list[_Row] = []
        complete = False
        if _header_problem(self.path) is None:
            rows, complete = _readable_rows(self.path)
        salvage = self._salvage_path()
        _remove_with_sidecars(salvage)  # half-written by a recovery a power cut interrupted
        salvaged: list[_Row] = []
        if rows:
            try:
                with Outbox(
                    path=salvage,
                    max_rows=self.max_rows,
                    max_bytes=self.max_bytes,
                    synchronous=self.synchronous,
                ) as fresh:
                    fresh._put_salvaged(rows)
                _fsync_dir(self.path.parent)
                salvaged = rows
            except (OutboxError, OSError) as exc:
                log.error(
                    "outbox %s: cannot copy the %d readable message(s) out of the damaged "
                    "file (%s); they stay in the moved-aside file only",
                    self.path,
                    len(rows),
                    exc,
                )
                complete = False
                _remove_with_sidecars(salvage)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = _free_name(self.path.with_name(f"{self.path.name}.corrupt-{stamp}"))
        try:
            move_with_sidecars(self.path, aside)
            if salvaged:
                move_with_sidecars(salvage, self.path)
        except OSError as exc:
            raise OutboxError(
                f"{damaged}; cannot move it aside to {str(aside)!r}: {exc.strerror or exc}"
            ) from exc
        _fsync_dir(self.path.parent)
        self._prune_corrupt_copies(aside)
        lost = 0 if complete else None
        if lost == 0:
            kept = f"all {len(salvaged)} undelivered message(s) in it were read and kept"
        elif salvaged:
            kept = (
                f"{len(salvaged)} undelivered message(s) in it were read and kept; an unknown "
                "number more could not be read and are lost"
            )
        else:
            kept = (
                "no message in it could be read: its undelivered messages (an unknown "
                "number, possibly none) are lost"
            )
        log.error(
            "%s; moved it aside to %r and started a new outbox: %s",
            damaged,
            str(aside),
            kept,
        )
        return OutboxRecovery(
            path=self.path,
            moved_to=aside,
            reason=damaged.reason,
            salvaged=len(salvaged),
            lost=lost,
        )

    def _prune_corrupt_copies(self, newest: Path) -> None:
        """Delete moved-aside damaged files (with their sidecars) beyond the newest
        :data:`KEEP_CORRUPT_COPIES`, oldest first, logging each; ``newest`` (the one just
        made) is always kept, also when a clock set back gave it an older time than
        earlier ones. Age is the UTC time in the name, then the ``-n`` suffix. A file that
        cannot be deleted is logged and left; it never stops the open."""
        pattern = re.compile(re.escape(self.path.name) + r"\.corrupt-(\d{8}T\d{6}Z)(?:-(\d+))?")
        found: list[tuple[tuple[str, int], Path]] = []
        try:
            names = os.listdir(self.path.parent)
        except OSError as exc:
            log.error("outbox %s: cannot list old damaged copies: %s", self.path, exc)
            return
        for name in names:
            m = pattern.fullmatch(name)
            if m is not None and name != newest.name:
                found.append(((m.group(1), int(m.group(2) or 1)), self.path.parent / name))
        found.sort()
        excess = len(found) - (KEEP_CORRUPT_COPIES - 1)
        for _, old in found[: max(0, excess)]:
            try:
                _remove_with_sidecars(old)
            except OSError as exc:
                log.error("outbox %s: cannot delete old damaged copy %s: %s", self.path, old, exc)
                continue
            log.warning(
                "outbox %s: deleted old damaged copy %s (keeping the newest %d)",
                self.path,
                old.name,
                KEEP_CORRUPT_COPIES,
            )
        if excess > 0:
            _fsync_dir(self.path.parent)

    def _put_salvaged(self, rows: Sequence[_Row]) -> None:
        """Insert ``rows`` with their ids in one transaction (a new, empty outbox)."""
        with self._lock:
            con = self._conn()
            try:
                con.execute("BEGIN IMMEDIATE")
                con.executemany(_INSERT, rows)
                con.execute("COMMIT")
            except sqlite3.Error as exc:
                raise self._error("salvage", exc) from exc

    def _error(self, what: str, exc: sqlite3.Error) -> OutboxError:
        msg = str(exc)
        if "locked" in msg:
            return OutboxError(f"outbox {self.path} is in use by another process ({what}: {msg})")
        hint = self._access_hint() if what == "open" else ""
        return OutboxError(f"outbox {self.path}: {what} failed: {msg}{hint}")

    def _access_hint(self) -> str:
        """Why SQLite's "unable to open database file" may have happened, in words."""
        folder = self.path.parent
        if not os.access(folder, os.W_OK | os.X_OK):
            return f" (folder {folder} is not writable by this user, uid {os.geteuid()})"
        if os.path.exists(self.path) and not os.access(self.path, os.R_OK | os.W_OK):
            return f" (the file is not readable and writable by this user, uid {os.geteuid()})"
        return ""

    def _conn(self) -> sqlite3.Connection:
        if self._con is None:
            raise OutboxError(f"outbox {self.path} is closed")
        return self._con

    # -- writes ----------------------------------------------------------------------------

    def append(self, messages: Sequence[Message]) -> AppendResult:
        """Store ``messages`` (one batch, all or nothing) and return once committed.

        Raises:
            OutboxFullError: the batch does not fit even after dropping every stored
                ``update`` (nothing is dropped then; a batch of alerts: not even into
                the alert headroom), or is larger than the outbox.
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
                    if (over_rows > upd_rows or over_bytes > upd_bytes) and all(
                        m.kind == "alert" for m in p.messages
                    ):  # last resort for alerts: the headroom above the limits
                        over_rows -= self.alert_headroom_rows
                        over_bytes -= self.alert_headroom_bytes
                    if over_rows > upd_rows or over_bytes > upd_bytes:
                        rejected += need_rows
                        p.error = OutboxFullError(
                            f"outbox full: {rows} messages / {nbytes} bytes stored "
                            f"({upd_rows} droppable updates), limits {self.max_rows} / "
                            f"{self.max_bytes} (alerts: {self.alert_headroom_rows} / "
                            f"{self.alert_headroom_bytes} more); refused {need_rows} new "
                            "message(s)"
                        )
                        continue
                if over_rows > 0 or over_bytes > 0:
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


def _header_problem(path: Path) -> str | None:
    """``"file is not a database (...)"`` when ``path`` is non-empty and does not start
    with SQLite's magic string (random bytes, zeros), else ``None`` -- also when it cannot
    be read: SQLite's open then says why."""
    try:
        with open(path, "rb") as f:
            head = f.read(len(_MAGIC))
    except OSError:
        return None
    if not head or head == _MAGIC:
        return None
    return "file is not a database (no SQLite header)"


def _is_corrupt(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB (not: locked, no permission, disk full, I/O error)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return (int(code) & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def _valid_row(row: tuple[object, ...]) -> _Row | None:
    """``row`` (text columns as bytes) as a row a healthy outbox could hold, else ``None``
    (damaged cells can parse into nonsense: bad UTF-8, unknown kinds, wrong sizes)."""
    rid, key, kind, topic, qos, payload, size = row
    if not (
        isinstance(rid, int)
        and rid > 0
        and isinstance(key, bytes)
        and isinstance(kind, bytes)
        and isinstance(topic, bytes)
        and qos in (0, 1, 2)
        and isinstance(payload, bytes)
        and isinstance(size, int)
        and size == len(topic) + len(payload)
        and topic
    ):
        return None
    try:
        k, t, s = key.decode(), kind.decode(), topic.decode()
    except UnicodeDecodeError:
        return None
    if t not in _KINDS:
        return None
    return (rid, k, t, s, int(qos), payload, size)


def _readable_rows(path: Path) -> tuple[list[_Row], bool]:
    """The valid rows SQLite can still read from a damaged outbox (opened read-only), in
    id order, and whether that is all of them (a full forward scan, every row valid).

    The table is scanned forward by id until the damage stops it, then backward from the
    end, so rows on both sides of a bad page are kept. Text comes back as bytes and is
    decoded here, so one row of bad UTF-8 is skipped instead of ending the scan."""
    wal = Path(f"{path}-wal")
    has_wal = wal.exists() and wal.stat().st_size > 0
    # immutable: no locks, no -wal/-shm created beside the file kept for inspection; a
    # non-empty -wal may hold committed rows, so then read through it (read-only).
    query = "mode=ro" if has_wal else "immutable=1"
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?" + query
    try:
        con = sqlite3.connect(uri, uri=True, timeout=0.5, check_same_thread=False)
    except sqlite3.Error:
        return [], False
    con.text_factory = bytes
    found: dict[int, _Row] = {}
    complete = False
    try:
        for order in ("ASC", "DESC"):
            invalid = False
            try:
                for raw in con.execute(f"{_SELECT_ALL} {order}"):
                    row = _valid_row(raw)
                    if row is None:
                        invalid = True
                    else:
                        found.setdefault(row[0], row)
            except sqlite3.Error as exc:
                log.warning("outbox %s: %s scan stopped: %s", path, order.lower(), exc)
                continue
            complete = order == "ASC" and not invalid
            break
    finally:
        con.close()
    return [found[i] for i in sorted(found)], complete


def _free_name(base: Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first whose file and sidecar names
    are all free, so an earlier moved-aside file is never overwritten."""
    n = 1
    cand = base
    while any(Path(f"{cand}{s}").exists() for s in ("", *SQLITE_SIDECARS)):
        n += 1
        cand = base.with_name(f"{base.name}-{n}")
    return cand


def _remove_with_sidecars(path: Path) -> None:
    for suffix in ("", *SQLITE_SIDECARS):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    """Make the renames in ``folder`` durable (best effort: never raises; a refusing file
    system is skipped by :func:`edge.fsutil.fsync_dir`, other failures are logged)."""
    try:
        fsync_dir(folder)
    except OSError:
        log.debug("outbox: fsync of folder %s failed", folder, exc_info=True)
