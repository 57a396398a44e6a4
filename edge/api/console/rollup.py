"""Hourly sums of the monitoring data, kept for the console's week chart.

A week of per-minute rows with latency histograms is several hundred thousand rows;
summing them at each page load takes seconds on a small gateway. :class:`HourlyRollup`
sums each finished hour once into its own SQLite file
(``<data_dir>/console-rollup.sqlite3``, :data:`ROLLUP_FILENAME`) with the same columns
as the store's tables (``hour`` instead of ``minute``)::

    hour_stats(hour, app_key, api, requests, errors, request_bytes, response_bytes)
    hour_codes(hour, app_key, api, code, count)
    hour_latency(hour, app_key, api, bucket, count)
    hours_done(hour)                  hours summed so far

It is a cache: deleting the file loses nothing (it is rebuilt). :meth:`catch_up` sums
the hours that ended at least :data:`~edge.api.console.stats.RECENT_MINUTES` ago and
are not summed yet (after a first start on an existing database: up to
``retention_days`` of them, a few seconds of work in the background), and sums the
last :data:`RESUM_HOURS` finished hours again, so rows flushed late (the database was
locked or full for a while) are counted once the store writes them. Rows older than
``retention_days`` are deleted with the store's.

Thread-safety: one connection under a lock; :meth:`catch_up` runs in a worker thread
while requests read.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge.api.store import SCHEMA_VERSION, StoreError
from edge.closing import Closing

__all__ = ["RESUM_HOURS", "ROLLUP_FILENAME", "HourlyRollup"]

log = logging.getLogger("edge.api.console")

ROLLUP_FILENAME = "console-rollup.sqlite3"
RESUM_HOURS = 3
"""The latest finished hours summed again at every :meth:`HourlyRollup.catch_up`."""
_CHUNK_HOURS = 24
_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS hour_stats (
    hour INTEGER NOT NULL, app_key TEXT NOT NULL, api TEXT NOT NULL,
    requests INTEGER NOT NULL, errors INTEGER NOT NULL,
    request_bytes INTEGER NOT NULL, response_bytes INTEGER NOT NULL,
    PRIMARY KEY (hour, app_key, api)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hour_codes (
    hour INTEGER NOT NULL, app_key TEXT NOT NULL, api TEXT NOT NULL,
    code INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (hour, app_key, api, code)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hour_latency (
    hour INTEGER NOT NULL, app_key TEXT NOT NULL, api TEXT NOT NULL,
    bucket INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (hour, app_key, api, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hours_done (hour INTEGER PRIMARY KEY);
"""


class HourlyRollup(Closing):
    """The hourly sums of one store database (see the module docstring).

    Args:
        path: the rollup file (created).
        store_path: the store's SQLite file (read only).
        retention_days: hours older than this are neither summed nor kept.
        recent_minutes: an hour is summed once it ended at least this long ago.
    """

    def __init__(
        self,
        *,
        path: Path,
        store_path: Path,
        retention_days: int = 30,
        recent_minutes: int = 10,
    ) -> None:
        self.path = Path(path)
        self.store_path = Path(store_path)
        self.retention_days = retention_days
        self.recent_minutes = recent_minutes
        self._lock = threading.Lock()
        self._closed = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), timeout=5.0, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = NORMAL")
            version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
            if version not in (0, _VERSION):  # a cache: start over rather than fail
                self._conn.executescript(
                    "DROP TABLE IF EXISTS hour_stats; DROP TABLE IF EXISTS hour_codes;"
                    " DROP TABLE IF EXISTS hour_latency; DROP TABLE IF EXISTS hours_done;"
                )
            self._conn.executescript(_SCHEMA)
            self._conn.execute(f"PRAGMA user_version = {_VERSION}")
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the console rollup {str(self.path)!r}: {exc}") from exc

    # -- lifecycle ---------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    @contextmanager
    def connection(self) -> Iterator[sqlite3.Connection]:
        """The rollup connection, locked (read the ``hour_*`` tables with it)."""
        with self._lock:
            if self._closed:
                raise StoreError("the console rollup is closed")
            yield self._conn

    # -- reading -----------------------------------------------------------------------

    def done_hours(self, lo: int, hi: int) -> list[int]:
        """Summed hours (Unix s) in ``[lo, hi)``, ascending."""
        with self.connection() as c:
            return [
                int(h)
                for (h,) in c.execute(
                    "SELECT hour FROM hours_done WHERE hour >= ? AND hour < ? ORDER BY hour",
                    (lo, hi),
                )
            ]

    # -- summing -----------------------------------------------------------------------

    def catch_up(self, *, now: float | None = None, budget_s: float | None = None) -> int:
        """Sum every finished hour not summed yet (newest first) and the last
        :data:`RESUM_HOURS` again; delete expired hours. Returns the hours summed.

        ``budget_s``: stop after about this long (the rest waits for the next call).

        Raises:
            StoreError: either database cannot be read or written.
        """
        t0 = time.monotonic()
        t = time.time() if now is None else now
        last_end = (int(t) // 60 - self.recent_minutes) * 60 // 3600 * 3600
        first = (int(t) - self.retention_days * 86_400) // 3600 * 3600 + 3600
        with self.connection() as c:
            done = {
                int(h)
                for (h,) in c.execute(
                    "SELECT hour FROM hours_done WHERE hour >= ? AND hour < ?", (first, last_end)
                )
            }
        redo = {h for h in range(last_end - RESUM_HOURS * 3600, last_end, 3600) if h >= first}
        todo = sorted(
            {h for h in range(first, last_end, 3600) if h not in done} | redo, reverse=True
        )
        n = 0
        try:
            src = sqlite3.connect(f"file:{self.store_path}?mode=ro", uri=True, timeout=2.0)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read {str(self.store_path)!r}: {exc}") from exc
        try:
            version = int(src.execute("PRAGMA user_version").fetchone()[0])
            if version != SCHEMA_VERSION:
                raise StoreError(
                    f"store schema version {version}; the console rollup reads {SCHEMA_VERSION}"
                )
            for chunk in _runs(todo, _CHUNK_HOURS):
                self._sum(src, chunk)
                n += len(chunk)
                if budget_s is not None and time.monotonic() - t0 > budget_s:
                    break
        except sqlite3.Error as exc:
            raise StoreError(f"console rollup failed: {exc}") from exc
        finally:
            src.close()
        with self.connection() as c, c:
            for table in ("hour_stats", "hour_codes", "hour_latency", "hours_done"):
                c.execute(f"DELETE FROM {table} WHERE hour < ?", (first,))
        took = time.monotonic() - t0
        level = logging.INFO if took > 0.5 else logging.DEBUG
        log.log(level, "console rollup: summed %d hours in %.2f s", n, took)
        return n

    def _sum(self, src: sqlite3.Connection, hours: list[int]) -> None:
        """Sum the contiguous ``hours`` (ascending) from the store into the rollup."""
        lo, hi = hours[0], hours[-1] + 3600
        stats = src.execute(
            "SELECT minute / 3600 * 3600, app_key, api, SUM(requests), SUM(errors),"
            " SUM(request_bytes), SUM(response_bytes) FROM minute_stats"
            " WHERE minute >= ? AND minute < ? GROUP BY 1, 2, 3",
            (lo, hi),
        ).fetchall()
        codes = src.execute(
            "SELECT minute / 3600 * 3600, app_key, api, code, SUM(count) FROM minute_codes"
            " WHERE minute >= ? AND minute < ? GROUP BY 1, 2, 3, 4",
            (lo, hi),
        ).fetchall()
        lat = src.execute(
            "SELECT minute / 3600 * 3600, app_key, api, bucket, SUM(count) FROM minute_latency"
            " WHERE minute >= ? AND minute < ? GROUP BY 1, 2, 3, 4",
            (lo, hi),
        ).fetchall()
        with self.connection() as c, c:
            for table in ("hour_stats", "hour_codes", "hour_latency"):
                c.execute(f"DELETE FROM {table} WHERE hour >= ? AND hour < ?", (lo, hi))
            c.executemany("INSERT INTO hour_stats VALUES (?,?,?,?,?,?,?)", stats)
            c.executemany("INSERT INTO hour_codes VALUES (?,?,?,?,?)", codes)
            c.executemany("INSERT INTO hour_latency VALUES (?,?,?,?,?)", lat)
            c.executemany("INSERT OR IGNORE INTO hours_done VALUES (?)", [(h,) for h in hours])


def _runs(hours_desc: list[int], size: int) -> Iterator[list[int]]:
    """Split hours (descending) into ascending runs of consecutive hours, ``size`` at most."""
    run: list[int] = []
    for h in hours_desc:
        if run and (run[0] - h != 3600 or len(run) >= size):
            yield run
            run = []
        run.insert(0, h)
    if run:
        yield run
