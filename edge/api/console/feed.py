"""The events table and snapshots as the console shows them.

:class:`EventFeed` reads the pipeline's events database
(:func:`edge.stream.events.events_db_path`, written by ``safety-edge run``) through a
read-only connection opened per call, so the console never writes to it and works in
``safety-edge serve`` too (the events of an earlier or separate ``run``; nothing when no
pipeline ever ran). Rows are addressed by SQLite's ``rowid``, which grows with every
insert: the live feed asks for ``rowid > last seen``, so an event written late (a camera
lagging behind another) is still delivered, once. :meth:`EventFeed.add_acks` adds who
acknowledged each row's incident (the ``event_acks`` table, :mod:`edge.stream.acks`);
:meth:`EventFeed.acks_after` follows that table by its ``rowid`` the same way, so an
acknowledgement reaches a live page that already shows the incident.

:class:`ThumbnailCache` serves snapshot JPEGs scaled down for the lists (decoded,
resized and re-encoded once, then kept in memory by path and modification time).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge.stream.acks import ACK_COLUMNS, ACKS_TABLE, ack_from_row, read_acks
from edge.stream.events import EventStoreError

__all__ = ["EventFeed", "EventFilter", "ThumbnailCache", "safe_snapshot_path"]

_COLS = (
    "rowid, event_id, type, time_ms, camera, task, zone, label, score, x1, y1, x2, y2, "
    "track_id, snapshot, model, start_event_id, start_time_ms, attributes"
)


@dataclass(frozen=True)
class EventFilter:
    """Which events: exact camera/task (``None`` = any), ``since_ms <= time_ms <
    until_ms`` (Unix ms, ``None`` = open).

    ``before_id`` (with ``until_ms``) makes the end a keyset cursor on the list's order
    ``(time_ms, event_id)``: ``(time_ms, event_id) < (until_ms, before_id)``, i.e. also the
    events at ``until_ms`` itself whose id sorts before ``before_id`` -- the next page after
    a page that ended with that event, inside one millisecond too, with nothing skipped or
    repeated. Without ``until_ms`` it is ignored."""

    camera: str | None = None
    task: str | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    before_id: str | None = None

    def where(self) -> tuple[str, list[Any]]:
        parts: list[str] = []
        args: list[Any] = []
        for col, op, val in (
            ("camera", "=", self.camera),
            ("task", "=", self.task),
            ("time_ms", ">=", self.since_ms),
            ("time_ms", "<", self.until_ms),
        ):
            if val is None:
                continue
            if col == "time_ms" and op == "<" and self.before_id is not None:
                parts.append("(time_ms < ? OR (time_ms = ? AND event_id < ?))")
                args.extend([val, val, self.before_id])
            else:
                parts.append(f"{col} {op} ?")
                args.append(val)
        return " AND ".join(parts), args


def _row(r: tuple[Any, ...]) -> dict[str, Any]:
    try:
        attrs = json.loads(r[18]) if r[18] else {}
    except ValueError:
        attrs = {}
    return {
        "id": int(r[0]),
        "event_id": r[1],
        "type": r[2],
        "time_ms": int(r[3]),
        "camera": r[4],
        "task": r[5],
        "zone": r[6],
        "label": r[7],
        "score": round(float(r[8]), 3),
        "box": [round(float(v), 1) for v in r[9:13]],
        "track_id": r[13],
        "snapshot": r[14],
        "model": r[15],
        "start_event_id": r[16],
        "start_time_ms": r[17],
        "attributes": attrs,
    }


class EventFeed:
    """Read-only access to the events table at ``path`` (which may not exist yet)."""

    def __init__(self, *, path: Path) -> None:
        self.path = Path(path)

    def _connect(self) -> sqlite3.Connection | None:
        if not self.path.exists():
            return None
        try:
            return sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=2.0)
        except sqlite3.Error as exc:
            raise EventStoreError(f"cannot open events database {self.path}: {exc}") from exc

    def _query(self, sql: str, args: list[Any]) -> list[tuple[Any, ...]]:
        conn = self._connect()
        if conn is None:
            return []
        try:
            return conn.execute(sql, args).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return []  # created but not migrated yet by the pipeline
            raise EventStoreError(f"cannot read events from {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise EventStoreError(f"cannot read events from {self.path}: {exc}") from exc
        finally:
            conn.close()

    def recent(self, flt: EventFilter, *, limit: int = 100) -> list[dict[str, Any]]:
        """Matching events, newest first (by ``(time_ms, event_id)``, the order
        :attr:`EventFilter.before_id` pages on), at most ``limit`` (1..1001: a page of
        1000 and the one row that says there are more)."""
        limit = max(1, min(int(limit), 1001))
        where, args = flt.where()
        sql = f"SELECT {_COLS} FROM events"
        if where:
            sql += " WHERE " + where
        sql += " ORDER BY time_ms DESC, event_id DESC LIMIT ?"
        return [_row(r) for r in self._query(sql, [*args, limit])]

    def after(self, rowid: int, flt: EventFilter, *, limit: int = 200) -> list[dict[str, Any]]:
        """Matching events inserted after ``rowid``, in insertion order."""
        where, args = flt.where()
        sql = f"SELECT {_COLS} FROM events WHERE rowid > ?"
        if where:
            sql += " AND " + where
        sql += " ORDER BY rowid LIMIT ?"
        return [_row(r) for r in self._query(sql, [int(rowid), *args, int(limit)])]

    def add_acks(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Set ``row["ack"]`` on each row (``{"by", "at", "at_ms", "note"}`` of its
        incident's acknowledgement, or ``None``); returns ``rows``."""
        ids = {
            r["event_id"] if r["type"] == "start" else r["start_event_id"]
            for r in rows
            if r["type"] != "crossing"
        }
        ids.discard(None)
        acks = {}
        conn = self._connect() if ids else None
        if conn is not None:
            try:
                acks = read_acks(conn, ids)
            except sqlite3.Error as exc:
                raise EventStoreError(f"cannot read acknowledgements: {exc}") from exc
            finally:
                conn.close()
        for r in rows:
            key = r["event_id"] if r["type"] == "start" else r["start_event_id"]
            ack = acks.get(key) if key is not None else None
            r["ack"] = None if ack is None else ack.summary()
        return rows

    def last_ack_id(self) -> int:
        """The newest acknowledgement's row id in ``event_acks`` (0: none, or no table)."""
        rows = self._query(f"SELECT COALESCE(MAX(rowid), 0) FROM {ACKS_TABLE}", [])
        return int(rows[0][0]) if rows else 0

    def acks_after(self, rowid: int, flt: EventFilter, *, limit: int = 200) -> list[dict[str, Any]]:
        """Acknowledgements recorded after row ``rowid`` of ``event_acks``, in insertion
        order, of incidents on ``flt``'s camera/task (its times are not applied: an old
        incident may be acknowledged now): ``{"id": rowid, "incident_id": the start
        event's id, "event_id": the id the command named, "ack": {"by", "at", "at_ms",
        "note"}}`` -- what the live Events page needs to fill the rows it shows."""
        sql = f"SELECT rowid, {ACK_COLUMNS} FROM {ACKS_TABLE} WHERE rowid > ?"
        args: list[Any] = [int(rowid)]
        for col, val in (("camera", flt.camera), ("task", flt.task)):
            if val is not None:
                sql += f" AND {col} = ?"
                args.append(val)
        sql += " ORDER BY rowid LIMIT ?"
        out = []
        for r in self._query(sql, [*args, int(limit)]):
            ack = ack_from_row(r[1:])
            out.append(
                {
                    "id": int(r[0]),
                    "incident_id": ack.incident_id,
                    "event_id": ack.event_id,
                    "ack": ack.summary(),
                }
            )
        return out

    def last_id(self) -> int:
        """The newest row's id (0 when there is none)."""
        rows = self._query("SELECT COALESCE(MAX(rowid), 0) FROM events", [])
        return int(rows[0][0]) if rows else 0

    def latest_snapshot(self, camera: str) -> str | None:
        """The newest snapshot path (relative to the snapshot folder) of a camera."""
        rows = self._query(
            "SELECT snapshot FROM events WHERE camera = ? AND snapshot IS NOT NULL"
            " ORDER BY time_ms DESC LIMIT 1",
            [camera],
        )
        return str(rows[0][0]) if rows else None

    def names(self) -> tuple[list[str], list[str]]:
        """Cameras and tasks that have events (for the filters), sorted."""
        cams = self._query("SELECT DISTINCT camera FROM events ORDER BY camera", [])
        tasks = self._query("SELECT DISTINCT task FROM events ORDER BY task", [])
        return [str(r[0]) for r in cams], [str(r[0]) for r in tasks]


def safe_snapshot_path(root: Path, rel: str) -> Path | None:
    """``root / rel`` when it is a ``.jpg`` file inside ``root`` (no ``..``, no absolute
    path, no symlink out of it); else ``None``."""
    if not rel or rel.startswith(("/", "\\")) or "\x00" in rel or not rel.endswith(".jpg"):
        return None
    try:
        base = root.resolve()
        p = (base / rel).resolve()
    except (OSError, RuntimeError):
        return None
    if not p.is_relative_to(base) or not p.is_file():
        return None
    return p


class ThumbnailCache:
    """JPEG thumbnails of snapshots, ``width`` pixels wide, the last ``size`` in memory."""

    def __init__(self, *, width: int = 240, size: int = 256, quality: int = 75) -> None:
        self.width = width
        self.size = size
        self.quality = quality
        self._cache: OrderedDict[tuple[str, int], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> bytes | None:
        """The thumbnail of the JPEG at ``path`` (``None``: unreadable or not an image)."""
        try:
            key = (str(path), path.stat().st_mtime_ns)
        except OSError:
            return None
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        data = np.fromfile(str(path), dtype=np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            return None
        h, w = image.shape[:2]
        if w > self.width:
            image = cv2.resize(
                image, (self.width, max(1, round(h * self.width / w))), interpolation=cv2.INTER_AREA
            )
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            return None
        out = buf.tobytes()
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
        return out
