"""JPEG snapshots of incidents (boxes and zone drawn) with retention by age and total size.

Files live under ``root/<camera>/<YYYY-MM-DD>/<event_id>.jpg`` (UTC date of the event);
events carry the path relative to ``root``. :meth:`SnapshotStore.save_hashed` also
returns the SHA-256 of the exact bytes written (computed from the encoded JPEG buffer
before the write), which the event records (``snapshot_sha256``) and the events hash
chain attests (:mod:`edge.stream.evidence`).

Durability (:func:`edge.fsutil.write_atomic`): the JPEG is written to
``<event_id>.jpg.tmp``, ``fsync``-ed, renamed to ``<event_id>.jpg``, then its day folder
is ``fsync``-ed (a new day or camera folder also has its parent ``fsync``-ed when it is
created). So once :meth:`~SnapshotStore.save_hashed` returns -- before the pipeline
stores or publishes the event carrying the hash -- the file and its name are on disk and
survive a power cut (as far as the storage honours ``fsync``). A reader, a crash or a
power cut before that sees either no file under the final name or the complete JPEG,
never a partial one; a power cut may leave a ``*.jpg.tmp``, which the sweeper removes
(after an hour).
Cost: two ``fsync`` calls per snapshot (file and folder), one more per new folder.

Retention (:meth:`SnapshotStore.sweep`, run by a background thread every
``sweep_interval_s`` after :meth:`SnapshotStore.start`):

1. by age, ``max_age_days``: with ``events_db`` (the gateway's events database), the
   snapshot of an event still stored there goes once the events table says the event is
   older than that, in chain order (see :meth:`SnapshotStore.sweep`); a snapshot whose
   event is not stored (pruned, or never stored) goes when its modification time is older.
   Without ``events_db``, every JPEG goes by its modification time;
2. then, while the JPEGs left total more than ``max_total_bytes``, the oldest by
   modification time are deleted (so the newest snapshots are always the ones kept);
3. empty folders and stale temporary files (older than an hour) are removed.

Only ``*.jpg`` files (and this module's ``*.jpg.tmp``) under ``root`` are touched.
"""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.closing import Closing
from edge.fsutil import make_dirs, write_atomic
from edge.stream.events import FUTURE_TOLERANCE_MS, ZoneEvent
from edge.stream.tracker import TRACK_IDS
from edge.types import Detections

__all__ = ["SavedSnapshot", "SnapshotStore", "SweepResult", "draw_snapshot"]

log = logging.getLogger("edge.stream")

_TMP_SUFFIX = ".tmp"
_STALE_TMP_S = 3600.0

_RED = (0, 0, 255)
_YELLOW = (0, 220, 255)
_ZONE = (255, 160, 0)


def draw_snapshot(
    image_bgr: npt.NDArray[np.uint8],
    *,
    dets: Detections | None = None,
    class_names: Sequence[str] = (),
    polygon: npt.NDArray[np.float64] | None = None,
    highlight_track: int | None = None,
    caption: str = "",
    line: npt.NDArray[np.float64] | None = None,
) -> npt.NDArray[np.uint8]:
    """A copy of ``image_bgr`` with the zone polygon (outlined, lightly filled), every box
    (the ``highlight_track`` one in red and thicker, others in yellow) labelled
    ``class #track score``, and a caption at the top left.

    Args:
        image_bgr: (H, W, 3) uint8.
        dets: boxes in image pixels; ``data["track_ids"]`` is used when present.
        class_names: names for ``class_ids``.
        polygon: (M, 2) pixels, or None.
        line: (M, 2) pixels of a counting line (drawn open, with an arrow towards its
            ``in`` side at the middle of its first segment), or None.
    """
    out: npt.NDArray[np.uint8] = np.array(image_bgr, dtype=np.uint8, copy=True)
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    if polygon is not None and len(polygon) >= 3:
        pts = np.rint(polygon).astype(np.int32).reshape(-1, 1, 2)
        overlay = out.copy()
        cv2.fillPoly(overlay, [pts], _ZONE)
        cv2.addWeighted(overlay, 0.2, out, 0.8, 0, dst=out)
        cv2.polylines(out, [pts], isClosed=True, color=_ZONE, thickness=thick + 1)
    if line is not None and len(line) >= 2:
        pts = np.rint(line).astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], isClosed=False, color=_ZONE, thickness=thick + 1)
        a, b = np.asarray(line[0], np.float64), np.asarray(line[1], np.float64)
        d = b - a
        norm = float(np.hypot(d[0], d[1]))
        if norm > 0:  # the "in" side is to the right walking a -> b (y down): (-dy, dx)
            mid = (a + b) / 2
            tip = mid + np.array([-d[1], d[0]]) / norm * max(12.0, min(h, w) / 20)
            p0 = (round(float(mid[0])), round(float(mid[1])))
            p1 = (round(float(tip[0])), round(float(tip[1])))
            cv2.arrowedLine(out, p0, p1, _ZONE, thick + 1, cv2.LINE_AA, tipLength=0.35)
            cv2.putText(out, "in", p1, cv2.FONT_HERSHEY_SIMPLEX, 0.5, _ZONE, 1, cv2.LINE_AA)
    if dets is not None and len(dets):
        ids = dets.data.get(TRACK_IDS)
        for k in range(len(dets)):
            x1, y1, x2, y2 = (round(float(v)) for v in dets.xyxy[k])
            cid = int(dets.class_ids[k])
            name = class_names[cid] if 0 <= cid < len(class_names) else str(cid)
            tid = None if ids is None else int(ids[k])
            hot = highlight_track is not None and tid == highlight_track
            colour = _RED if hot else _YELLOW
            cv2.rectangle(out, (x1, y1), (x2, y2), colour, thick * (2 if hot else 1))
            label = f"{name} #{tid} {float(dets.scores[k]):.2f}" if tid is not None else name
            cv2.putText(
                out,
                label,
                (x1, max(y1 - 4, 12)),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.45,
                colour,
                1,
                cv2.LINE_AA,
            )
    if caption:
        # White text on a dark box: an outline drawn with a thicker stroke would not line up
        # (OpenCV 5 advances glyphs by stroke width, so the outline runs past the text).
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, 0.55, 1)
        cv2.rectangle(out, (4, 20 - th - 4), (12 + tw, 20 + base + 2), (0, 0, 0), cv2.FILLED)
        cv2.putText(
            out, caption, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA
        )
    return out


@dataclass(frozen=True, slots=True)
class SweepResult:
    """What one retention pass did: files/bytes deleted (by age, by size) and kept.

    ``held``: files kept although their modification time is older than ``max_age_days``,
    because their events are stored and not expired in the events table (written while the
    clock was behind, or the clock is ahead now); always 0 without ``events_db``.
    """

    deleted_by_age: int
    deleted_by_size: int
    deleted_bytes: int
    kept_files: int
    kept_bytes: int
    held: int = 0


@dataclass(frozen=True, slots=True)
class _EventAges:
    """What the events table says about the snapshots' events (:func:`_event_ages`).

    Attributes:
        stored: event id -> (``seq``, ``time_ms``) for those of the asked ids stored.
        last_expired_seq: the end of the chain prefix expired by ``cutoff_ms``, or ``None``.
        cutoff_ms: the age cutoff, Unix ms, on the events table's clock.
    """

    stored: dict[str, tuple[int, int]]
    last_expired_seq: int | None
    cutoff_ms: int


def _event_ages(db_path: Path, ids: list[str], *, now_ms: int, max_age_ms: int) -> _EventAges:
    """Read the snapshots' events from the events database ``db_path`` (read-only, one
    read transaction; never created). The clock is the newest ``time_ms`` not stamped in
    the future, if earlier than ``now_ms``; the expired prefix is the rule of
    :meth:`EventStore.prune <edge.stream.events.EventStore.prune>` with ``clock -
    max_age_ms`` as the cutoff: up to the last row older than it before the first current
    row.

    Raises:
        sqlite3.Error: the database cannot be read (damaged, locked, not migrated).
    """
    if not db_path.exists():
        return _EventAges(stored={}, last_expired_seq=None, cutoff_ms=now_ms - max_age_ms)
    uri = db_path.resolve().as_uri() + "?mode=ro"
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=5.0)
    try:
        conn.execute("BEGIN")
        has_table = conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'events'"
        ).fetchone()
        if has_table is None:
            return _EventAges(stored={}, last_expired_seq=None, cutoff_ms=now_ms - max_age_ms)
        ahead = now_ms + FUTURE_TOLERANCE_MS
        (newest,) = conn.execute(
            "SELECT MAX(time_ms) FROM events WHERE time_ms <= ?", (ahead,)
        ).fetchone()
        clock = now_ms if newest is None else min(now_ms, int(newest))
        cutoff = clock - max_age_ms
        (first_current,) = conn.execute(
            "SELECT MIN(seq) FROM events WHERE time_ms >= ? AND time_ms <= ?", (cutoff, ahead)
        ).fetchone()
        if first_current is None:
            row = conn.execute("SELECT MAX(seq) FROM events WHERE time_ms < ?", (cutoff,))
        else:
            row = conn.execute(
                "SELECT MAX(seq) FROM events WHERE time_ms < ? AND seq < ?",
                (cutoff, int(first_current)),
            )
        (last,) = row.fetchone()
        stored: dict[str, tuple[int, int]] = {}
        for i in range(0, len(ids), 500):  # SQLite's host-parameter limit
            chunk = ids[i : i + 500]
            sql = (
                "SELECT event_id, seq, time_ms FROM events "
                f"WHERE event_id IN ({', '.join('?' * len(chunk))})"
            )
            for eid, seq, t in conn.execute(sql, chunk):
                stored[str(eid)] = (int(seq), int(t))
        conn.execute("COMMIT")
    finally:
        conn.close()
    return _EventAges(
        stored=stored, last_expired_seq=None if last is None else int(last), cutoff_ms=cutoff
    )


@dataclass(frozen=True, slots=True)
class SavedSnapshot:
    """A snapshot written to disk.

    Attributes:
        path: relative to the store's root (``<camera>/<YYYY-MM-DD>/<event_id>.jpg``).
        sha256: lowercase hex SHA-256 of the file's bytes.
        size: bytes written.
    """

    path: str
    sha256: str
    size: int


class SnapshotStore(Closing):
    """Saves incident snapshots and enforces retention.

    Args:
        root: folder for snapshots (created).
        max_age_days: delete snapshots older than this; ``None`` = no age limit.
        max_total_bytes: keep the folder's JPEGs under this total; ``None`` = no limit.
        jpeg_quality: 1..100.
        sweep_interval_s: period of the background sweeper (see :meth:`start`).
        clock: wall clock in Unix seconds (tests pass a fixed one).
        events_db: the events database (:func:`edge.stream.events.events_db_path`), read
            only by :meth:`sweep` to age the snapshots of stored events by the events
            table instead of by file time; ``None``: every snapshot by its file time.

    Thread-safety: :meth:`save` may be called from several threads; the sweeper runs in
    its own thread. :meth:`close` stops the sweeper (idempotent).
    """

    def __init__(
        self,
        *,
        root: str | Path,
        max_age_days: float | None = 30.0,
        max_total_bytes: int | None = 2 * 1024**3,
        jpeg_quality: int = 85,
        sweep_interval_s: float = 600.0,
        clock: Callable[[], float] = time.time,
        events_db: str | Path | None = None,
    ) -> None:
        if max_age_days is not None and max_age_days <= 0:
            raise ValueError("max_age_days must be > 0 or None")
        if max_total_bytes is not None and max_total_bytes < 0:
            raise ValueError("max_total_bytes must be >= 0 or None")
        if not 1 <= jpeg_quality <= 100:
            raise ValueError("jpeg_quality must be in 1..100")
        if sweep_interval_s <= 0:
            raise ValueError("sweep_interval_s must be > 0")
        self.root = Path(root)
        self.max_age_days = max_age_days
        self.max_total_bytes = max_total_bytes
        self.jpeg_quality = jpeg_quality
        self.sweep_interval_s = sweep_interval_s
        self._clock = clock
        self.events_db = None if events_db is None else Path(events_db)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._sweep_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.saved = 0
        self.save_failures = 0
        self._failures_in_a_row = 0
        self.swept_files = 0
        self.last_sweep: SweepResult | None = None
        self._events_error: str | None = None  # the last sweep's events-table read failure
        self._last_held = 0  # SweepResult.held of the last sweep (logged when it changes)

    # -- saving ----------------------------------------------------------------------
    def relative_path(self, event: ZoneEvent) -> str:
        """``<camera>/<YYYY-MM-DD>/<event_id>.jpg`` (UTC date of the event)."""
        day = datetime.fromtimestamp(event.time_ms / 1000, tz=timezone.utc).strftime("%Y-%m-%d")
        return f"{_safe(event.camera)}/{day}/{_safe(event.event_id)}.jpg"

    def save(
        self,
        image_bgr: npt.NDArray[np.uint8],
        *,
        event: ZoneEvent,
        dets: Detections | None = None,
        class_names: Sequence[str] = (),
        polygon: npt.NDArray[np.float64] | None = None,
    ) -> str | None:
        """Draw and save the snapshot of ``event``; returns its path relative to ``root``
        (:meth:`save_hashed` without the hash)."""
        saved = self.save_hashed(
            image_bgr, event=event, dets=dets, class_names=class_names, polygon=polygon
        )
        return None if saved is None else saved.path

    def save_hashed(
        self,
        image_bgr: npt.NDArray[np.uint8],
        *,
        event: ZoneEvent,
        dets: Detections | None = None,
        class_names: Sequence[str] = (),
        polygon: npt.NDArray[np.float64] | None = None,
        line: npt.NDArray[np.float64] | None = None,
    ) -> SavedSnapshot | None:
        """Draw and save the snapshot of ``event``; returns its relative path and the
        SHA-256 of the bytes written. ``polygon``/``line``: the zone or counting line
        drawn (see :func:`draw_snapshot`).

        A returned snapshot is on disk (file and name ``fsync``-ed; see the module
        docstring), so the event may carry its hash. Returns ``None`` (and logs a WARNING,
        counts ``save_failures``, leaves no temporary file) when the file cannot be
        written -- disk full, folder not writable: the event goes on without a snapshot
        rather than being lost.
        """
        drawn = draw_snapshot(
            image_bgr,
            dets=dets,
            class_names=class_names,
            polygon=polygon,
            highlight_track=event.track_id,
            caption=f"{event.camera} {event.zone} {event.label} {event.type}"
            + (f" {event.attributes['direction']}" if "direction" in event.attributes else ""),
            line=line,
        )
        ok, buf = cv2.imencode(".jpg", drawn, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
        rel = self.relative_path(event)
        path = self.root / rel
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        try:
            if not ok:
                raise OSError("JPEG encoding failed")
            data = buf.tobytes()
            digest = hashlib.sha256(data).hexdigest()
            try:
                make_dirs(path.parent)
                write_atomic(path, data, tmp=tmp)
            except FileNotFoundError:  # the sweeper removed the empty folder just now
                make_dirs(path.parent)
                write_atomic(path, data, tmp=tmp)
        except OSError as exc:  # write_atomic removed its temporary file
            with self._stats_lock:
                self.save_failures += 1
                self._failures_in_a_row += 1
            log.warning("snapshot %s not saved: %s", path, exc)
            return None
        with self._stats_lock:
            self.saved += 1
            self._failures_in_a_row = 0
        return SavedSnapshot(path=rel, sha256=digest, size=len(data))

    # -- retention -------------------------------------------------------------------
    def sweep(self, *, now: float | None = None) -> SweepResult:
        """One retention pass (see the module docstring); safe to call any time.

        Age with ``events_db``: a file's modification time is stamped by the wall clock
        when it was written, and so is its event's ``time_ms``; either may be wrong (an RTC
        at the image's build date until NTP syncs), so neither alone says how old a
        snapshot is. The events table's order does: rows are appended in ``seq`` order. The
        snapshot of a stored event (the file is ``<event_id>.jpg``) goes when that event
        is older than the cutoff and no current event was stored before it (the prefix
        rule of :meth:`EventStore.prune <edge.stream.events.EventStore.prune>`, with
        ``max_age_days``): one stamped behind after a current event stays until the events
        before it expire, whatever its file time. The cutoff is read against the events
        table's newest stamp (not stamped in the future) when that is earlier than ``now``:
        a clock that jumped ahead before any event was written with it deletes no
        snapshot of a stored event (an idle gateway keeps its last ``max_age_days`` of
        snapshots until a new event is stored, or until their events are pruned). A
        snapshot whose event is not stored goes by its modification time, as before.
        When the database cannot be read, no snapshot goes by age (one WARNING until it
        reads again); the size bound still applies.

        Args:
            now: the wall clock, Unix seconds (``None``: the store's ``clock``).
        """
        now = self._clock() if now is None else now
        with self._sweep_lock:
            files: list[tuple[float, int, Path]] = []
            if self.root.is_dir():
                for p in self.root.rglob("*"):
                    try:
                        if p.name.endswith(".jpg" + _TMP_SUFFIX):
                            if now - p.stat().st_mtime > _STALE_TMP_S:
                                p.unlink()
                            continue
                        if p.suffix.lower() != ".jpg" or not p.is_file():
                            continue
                        st = p.stat()
                    except FileNotFoundError:
                        continue
                    files.append((st.st_mtime, st.st_size, p))
            files.sort(key=lambda f: (f[0], str(f[2])))
            by_age = by_size = freed = held = 0
            keep: list[tuple[float, int, Path]] = []
            cutoff = None if self.max_age_days is None else now - self.max_age_days * 86_400
            ages: _EventAges | None = None
            if cutoff is not None and self.events_db is not None and files:
                ages = self._read_event_ages(files, now)
            for f in files:
                old = cutoff is not None and f[0] < cutoff
                if cutoff is not None and self.events_db is not None:
                    expired = self._expired(ages, f[2].stem, old)
                    held += old and not expired and ages is not None
                else:
                    expired = old
                if expired and _unlink(f[2]):
                    by_age += 1
                    freed += f[1]
                else:
                    keep.append(f)
            total = sum(f[1] for f in keep)
            if self.max_total_bytes is not None:
                while keep and total > self.max_total_bytes:
                    _, size, p = keep.pop(0)
                    if _unlink(p):
                        by_size += 1
                        freed += size
                    total -= size
            self._remove_empty_dirs()
            result = SweepResult(
                deleted_by_age=by_age,
                deleted_by_size=by_size,
                deleted_bytes=freed,
                kept_files=len(keep),
                kept_bytes=total,
                held=held,
            )
            last_held, self._last_held = self._last_held, held
        with self._stats_lock:
            self.swept_files += by_age + by_size
            self.last_sweep = result
        if by_age or by_size:
            log.info(
                "snapshot retention: deleted %d by age, %d by size (%d bytes); kept %d (%d bytes)",
                by_age,
                by_size,
                freed,
                len(keep),
                total,
            )
        if held and held != last_held:
            log.warning(
                "snapshot retention: %d snapshots older than %g days by their file time are "
                "kept: their events in %s are not expired (the clock was behind when they "
                "were written, or is ahead now); they go with their events' age",
                held,
                self.max_age_days,
                self.events_db,
            )
        return result

    def _read_event_ages(
        self, files: list[tuple[float, int, Path]], now: float
    ) -> _EventAges | None:
        """:func:`_event_ages` for ``files``; ``None`` (logged once) when it cannot be read."""
        assert self.events_db is not None and self.max_age_days is not None
        try:
            ages = _event_ages(
                self.events_db,
                sorted({f[2].stem for f in files}),
                now_ms=round(now * 1000),
                max_age_ms=round(self.max_age_days * 86_400_000),
            )
        except (sqlite3.Error, OSError) as exc:
            if self._events_error is None:
                log.warning(
                    "snapshot retention: cannot read the events table %s (%s): no snapshot "
                    "is deleted by age until it reads again (the size bound still applies)",
                    self.events_db,
                    exc,
                )
            self._events_error = str(exc)
            return None
        if self._events_error is not None:
            log.info("snapshot retention: the events table %s reads again", self.events_db)
            self._events_error = None
        return ages

    @staticmethod
    def _expired(ages: _EventAges | None, event_id: str, old_file: bool) -> bool:
        """Whether the snapshot of ``event_id`` goes by age (see :meth:`sweep`)."""
        if ages is None:  # the events table could not be read
            return False
        hit = ages.stored.get(event_id)
        if hit is None:  # no stored event: its file time decides
            return old_file
        seq, t = hit
        last = ages.last_expired_seq
        return last is not None and seq <= last and t < ages.cutoff_ms

    def _remove_empty_dirs(self) -> None:
        if not self.root.is_dir():
            return
        for d in sorted((p for p in self.root.rglob("*") if p.is_dir()), reverse=True):
            try:
                d.rmdir()  # only succeeds when empty
            except OSError:
                continue

    @property
    def failures_in_a_row(self) -> int:
        """Saves that failed since the last one that succeeded (0 after a success): a
        folder that cannot be written shows here while every snapshot is lost."""
        with self._stats_lock:
            return self._failures_in_a_row

    def probe_writable(self) -> OSError | None:
        """Create ``root`` and write and remove one small file in it; the error, or
        ``None`` when snapshots can be written."""
        probe = self.root / f".write-probe{_TMP_SUFFIX}"
        try:
            make_dirs(self.root)
            probe.write_bytes(b"probe")
            probe.unlink()
        except OSError as exc:
            return exc
        return None

    # -- background sweeper ------------------------------------------------------------
    def start(self) -> None:
        """Start the background sweeper (a daemon thread; first pass at once). Probes the
        folder first (:meth:`probe_writable`): one WARNING naming it and the errno when
        snapshots cannot be written there (the events still go on without them)."""
        if self._thread is not None:
            return
        err = self.probe_writable()
        if err is not None:
            log.warning(
                "snapshot folder %s is not writable (errno %s: %s): every snapshot will be "
                "lost until it is fixed (storage.snapshot_dir)",
                self.root,
                err.errno,
                err.strerror or err,
            )
        self._stop.clear()
        self._thread = threading.Thread(target=self._sweeper, name="snapshot-sweeper", daemon=True)
        self._thread.start()

    def _sweeper(self) -> None:
        while not self._stop.is_set():
            try:
                self.sweep()
            except OSError as exc:
                log.warning("snapshot retention pass failed: %s", exc)
            self._stop.wait(self.sweep_interval_s)

    def stats(self) -> dict[str, int]:
        """Counters for /metrics."""
        with self._stats_lock:
            last = self.last_sweep
            return {
                "snapshots_saved": self.saved,
                "snapshot_save_failures": self.save_failures,
                "snapshots_deleted": self.swept_files,
                "snapshot_bytes": -1 if last is None else last.kept_bytes,
            }

    def close(self, timeout: float = 5.0) -> None:
        """Stop the sweeper thread (idempotent)."""
        self._stop.set()
        t, self._thread = self._thread, None
        if t is not None:
            t.join(timeout)


def _unlink(p: Path) -> bool:
    try:
        p.unlink()
        return True
    except FileNotFoundError:
        return False
    except OSError as exc:
        log.warning("cannot delete snapshot %s: %s", p, exc)
        return False


def _safe(name: str) -> str:
    """A file-name-safe version of a camera name or id (no separators, no leading dot)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).lstrip(".")
    return cleaned or "_"
