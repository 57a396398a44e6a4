"""Which of the gateway's own alerts are active now, remembered across restarts.

The gateway raises ``task_unavailable`` (key ``camera/task``), ``camera_unavailable``
and ``camera_offline`` (key: the camera), and ``disk_low`` (key ``data_dir``, camera
``""``: it belongs to no camera) on ``{prefix}/{gw}/alerts``
(:mod:`edge.service.gateway`). Each start resolves what is configured and available, but
a camera or task *removed* from the config while its alert was active would otherwise
never be resolved: control-room subscribers would keep a stale alert forever. So the
gateway keeps the set of active alerts in ``<data_dir>/active-alerts.sqlite3``
(:data:`ALERTS_FILENAME`, table ``active_alerts``, one row per ``(kind, key)``): a raised
alert is added before it is queued, a resolved one removed after its ``resolved`` is in
the outbox; at the next start every row whose camera or camera task is no longer
configured is resolved ("camera removed from the config" / "task removed from the
config") and forgotten.

Why a file of its own: the outbox is opened in SQLite's exclusive locking mode and the
events database is the evidence store (hash chain, retention); this set is small
operational state that can be lost or rebuilt without touching either. Losing it costs
only the resolution of alerts of cameras removed meanwhile; the outbox is never at risk.

Durability: SQLite WAL with ``synchronous=FULL`` -- a commit is on disk when the call
returns, and a power cut leaves either the old or the new set, never half a write.
Opening runs ``PRAGMA quick_check``; :func:`open_active_alerts` moves a file that is not a
database or is damaged aside (``<name>.corrupt-<UTC time>``, kept for inspection), logs
an error and starts empty; a file that cannot be opened at all (permissions, a folder in
its place) is logged and the gateway runs without remembering (``None``).

Thread-safety: one connection guarded by a lock; any thread may call any method (camera
reader threads raise and resolve ``camera_offline``). Keyword-only constructor, context
manager, idempotent :meth:`ActiveAlerts.close`.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.closing import Closing
from edge.errors import EdgeError
from edge.fsutil import move_with_sidecars
from edge.mqtt.schema import iso_utc, now_ms

__all__ = [
    "ALERTS_FILENAME",
    "ActiveAlert",
    "ActiveAlerts",
    "AlertStateError",
    "active_alerts_path",
    "open_active_alerts",
]

log = logging.getLogger("edge.service")

ALERTS_FILENAME = "active-alerts.sqlite3"
_VERSION = 1
_DDL = """CREATE TABLE IF NOT EXISTS active_alerts (
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    camera   TEXT NOT NULL,
    task     TEXT,
    severity TEXT NOT NULL,
    message  TEXT NOT NULL,
    since_ms INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
)"""
_COLS = "kind, key, camera, task, severity, message, since_ms"
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26  # primary result codes (sqlite3 names them from 3.11)


class AlertStateError(EdgeError):
    """The active-alerts file cannot be opened, read or written.

    Attributes:
        corrupt: the file is not a SQLite database or is damaged (as opposed to, e.g.,
            not readable or a disk that is full).
    """

    def __init__(self, message: str, *, corrupt: bool = False) -> None:
        super().__init__(message)
        self.corrupt = corrupt


@dataclass(frozen=True, slots=True, kw_only=True)
class ActiveAlert:
    """One active alert as published.

    Attributes:
        kind: ``task_unavailable``, ``camera_unavailable``, ``camera_offline`` or
            ``disk_low``.
        key: the alert's key (``camera/task``, the camera, or ``data_dir``).
        camera: the camera it belongs to (``""``: none, ``disk_low``).
        task: the camera task (``task_unavailable`` only), else ``None``.
        severity: as published (``critical``, ``warning``).
        message: the message of the latest ``active`` publication.
        since_ms: when it was first raised, Unix milliseconds.
    """

    kind: str
    key: str
    camera: str
    task: str | None
    severity: str
    message: str
    since_ms: int

    @property
    def since(self) -> str:
        """``since_ms`` as ISO 8601 UTC (``...T08:30:12.345Z``)."""
        return iso_utc(self.since_ms)


def active_alerts_path(data_dir: str | Path) -> Path:
    """``<data_dir>/active-alerts.sqlite3``."""
    return Path(data_dir) / ALERTS_FILENAME


def _is_corrupt(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python >= 3.11
    if code is not None:
        return (int(code) & 0xFF) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


class ActiveAlerts(Closing):
    """The persisted set of active alerts (see the module docstring).

    Args:
        path: the SQLite file (its folder must exist).
        clock_ms: wall clock in Unix ms, for ``since_ms`` (tests pass their own).

    Raises:
        AlertStateError: the file cannot be opened or read (``corrupt`` says whether it
            is damaged).
    """

    def __init__(self, *, path: str | Path, clock_ms: Callable[[], int] = now_ms) -> None:
        self.path = Path(path)
        self._clock_ms = clock_ms
        self._lock = threading.Lock()
        self._closed = False
        self._rows: dict[tuple[str, str], ActiveAlert] = {}
        try:
            self._db = sqlite3.connect(
                str(self.path), timeout=2.0, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise AlertStateError(f"{self._where()}: cannot open: {exc}") from None
        try:
            self._setup()
        except sqlite3.Error as exc:
            self._db.close()
            raise AlertStateError(f"{self._where()}: {exc}", corrupt=_is_corrupt(exc)) from None
        except AlertStateError:
            self._db.close()
            raise

    def _where(self) -> str:
        return f"active alerts {str(self.path)!r}"

    def _setup(self) -> None:
        db = self._db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        check = [str(r[0]) for r in db.execute("PRAGMA quick_check").fetchall()]
        if check != ["ok"]:
            raise AlertStateError(f"{self._where()}: damaged: {'; '.join(check[:3])}", corrupt=True)
        version = int(db.execute("PRAGMA user_version").fetchone()[0])
        if version not in (0, _VERSION):
            raise AlertStateError(
                f"{self._where()}: written by a newer safety-edge (version {version}, "
                f"this one reads {_VERSION})"
            )
        db.execute(_DDL)
        db.execute(f"PRAGMA user_version={_VERSION}")
        for row in db.execute(f"SELECT {_COLS} FROM active_alerts"):
            kind, key, camera, task, severity, message, since_ms = row
            texts = (kind, key, camera, severity, message)
            if not all(isinstance(v, str) for v in texts) or not isinstance(since_ms, int):
                raise AlertStateError(f"{self._where()}: bad row {row!r}", corrupt=True)
            if task is not None and not isinstance(task, str):
                raise AlertStateError(f"{self._where()}: bad row {row!r}", corrupt=True)
            self._rows[(kind, key)] = ActiveAlert(
                kind=kind,
                key=key,
                camera=camera,
                task=task,
                severity=severity,
                message=message,
                since_ms=since_ms,
            )

    # -- lifecycle ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    # -- the set --------------------------------------------------------------------------
    def active(self) -> list[ActiveAlert]:
        """The active alerts, oldest first (from memory: no disk read)."""
        with self._lock:
            return sorted(self._rows.values(), key=lambda a: (a.since_ms, a.kind, a.key))

    def get(self, kind: str, key: str) -> ActiveAlert | None:
        """The active alert ``kind``/``key``, or ``None``."""
        with self._lock:
            return self._rows.get((kind, key))

    def raised(
        self,
        *,
        kind: str,
        key: str,
        camera: str,
        task: str | None,
        severity: str,
        message: str,
    ) -> ActiveAlert:
        """Remember ``kind``/``key`` as active. Raised again, it keeps its ``since_ms``
        and takes the new message and severity; written only when something changed.

        Raises:
            AlertStateError: the file cannot be written (the set is unchanged).
        """
        with self._lock:
            self._check_open()
            old = self._rows.get((kind, key))
            row = ActiveAlert(
                kind=kind,
                key=key,
                camera=camera,
                task=task,
                severity=severity,
                message=message,
                since_ms=old.since_ms if old is not None else int(self._clock_ms()),
            )
            if row == old:
                return row
            try:
                self._db.execute(
                    f"INSERT OR REPLACE INTO active_alerts ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (kind, key, camera, task, severity, message, row.since_ms),
                )
            except sqlite3.Error as exc:
                raise AlertStateError(f"{self._where()}: cannot write: {exc}") from None
            self._rows[(kind, key)] = row
            return row

    def resolved(self, kind: str, key: str) -> ActiveAlert | None:
        """Forget ``kind``/``key``; returns what was remembered (``None``: nothing, and
        nothing is written).

        Raises:
            AlertStateError: the file cannot be written (the set is unchanged).
        """
        with self._lock:
            self._check_open()
            old = self._rows.get((kind, key))
            if old is None:
                return None
            try:
                self._db.execute(
                    "DELETE FROM active_alerts WHERE kind = ? AND key = ?", (kind, key)
                )
            except sqlite3.Error as exc:
                raise AlertStateError(f"{self._where()}: cannot write: {exc}") from None
            del self._rows[(kind, key)]
            return old

    def _check_open(self) -> None:
        if self._closed:
            raise AlertStateError(f"{self._where()}: closed")


def open_active_alerts(path: str | Path) -> ActiveAlerts | None:
    """Open the active-alerts file for the gateway, never failing its start.

    A damaged file (not a database, ``quick_check`` not ok, a bad row) is moved aside
    with its ``-wal``/``-shm``/``-journal`` files to ``<name>.corrupt-<UTC time>`` and a
    new, empty one is opened; both are logged as errors (the alerts it held are not
    resolved automatically). Any other failure is logged and gives ``None``: the gateway
    then publishes its alerts without remembering them.
    """
    path = Path(path)
    try:
        return ActiveAlerts(path=path)
    except AlertStateError as exc:
        if not exc.corrupt:
            log.error("%s; alerts are not remembered across restarts this run", exc)
            return None
        first = exc
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        move_with_sidecars(path, aside)
    except OSError as exc:
        log.error(
            "%s; cannot move it aside (%s); alerts are not remembered across restarts this run",
            first,
            exc.strerror or exc,
        )
        return None
    log.error(
        "%s; moved aside to %r and started empty: alerts active before this start whose "
        "camera or task was removed from the config will not be resolved automatically",
        first,
        str(aside),
    )
    try:
        return ActiveAlerts(path=path)
    except AlertStateError as exc:
        log.error("%s; alerts are not remembered across restarts this run", exc)
        return None
