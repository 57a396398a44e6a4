"""A daily budget of cloud requests, persisted in SQLite so a restart does not reset it.

A flickering camera can produce an uncertain detection on every frame; without a cap the
gateway would burn the cloud package (billed per call) in hours. :class:`DailyBudget`
allows at most ``limit`` requests per calendar day and remembers what was used in
``<data_dir>/cloud-fallback.sqlite3`` (table ``fallback_budget(day, used)``), so
restarting the process, or a second process on the same data dir, shares the count.

- The day is the gateway's local calendar day (``day="local"``, the default) or the UTC
  day (``day="utc"``); the count starts at 0 on each new day.
- One :meth:`DailyBudget.try_take` is one HTTP request about to be sent (every retry
  draws again: each one may be billed by the cloud).
- Taking is atomic across threads and processes (``UPDATE ... WHERE used < limit`` in an
  ``IMMEDIATE`` transaction), so the limit is never exceeded.
- Rows older than ``keep_days`` are deleted when the budget is opened.
- Durability: WAL, ``synchronous=NORMAL``: after a power cut the last few draws may be
  lost (the budget errs by a handful of calls, never by a day's worth).

Thread-safety: all methods may be called from any thread. Keyword-only constructor,
context manager, :meth:`DailyBudget.close` is idempotent.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Literal

from edge.closing import Closing
from edge.errors import EdgeError

__all__ = ["BUDGET_FILE", "BudgetError", "DailyBudget", "DayMode", "budget_path"]

BUDGET_FILE = "cloud-fallback.sqlite3"

DayMode = Literal["local", "utc"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS fallback_budget (
    day  TEXT PRIMARY KEY,          -- YYYY-MM-DD
    used INTEGER NOT NULL DEFAULT 0 -- requests sent that day
)
"""


class BudgetError(EdgeError):
    """The budget file cannot be opened, read or written (the fallback then sends nothing)."""

    code = 5000


def budget_path(data_dir: str | Path) -> Path:
    """``<data_dir>/cloud-fallback.sqlite3``."""
    return Path(data_dir) / BUDGET_FILE


def _now_utc() -> datetime:
    return datetime.now(timezone.utc)


class DailyBudget(Closing):
    """At most ``limit`` requests per day (``None``: unlimited, still counted).

    Args:
        path: the SQLite file (created with its folder).
        limit: requests allowed per day, >= 0, or ``None``.
        day: ``"local"`` (the gateway's time zone) or ``"utc"`` calendar days.
        now: aware or naive-local current time (tests pass their own clock).
        keep_days: rows of older days are deleted on open.

    Raises:
        BudgetError: the file cannot be opened or migrated.
    """

    def __init__(
        self,
        *,
        path: str | Path,
        limit: int | None,
        day: DayMode = "local",
        now: Callable[[], datetime] = _now_utc,
        keep_days: int = 31,
    ) -> None:
        if limit is not None and limit < 0:
            raise ValueError(f"limit must be >= 0 or None, got {limit}")
        self._path = Path(path)
        self._limit = limit
        self._mode: DayMode = day
        self._now = now
        self._lock = threading.Lock()
        self._closed = False
        self._exhausted_day: str | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                str(self._path), timeout=2.0, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise BudgetError(f"cloud budget {str(self._path)!r}: cannot open: {exc}") from None
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(_SCHEMA)
            oldest = (self._today_date() - timedelta(days=keep_days)).isoformat()
            self._db.execute("DELETE FROM fallback_budget WHERE day < ?", (oldest,))
        except sqlite3.Error as exc:
            self._db.close()
            raise BudgetError(f"cloud budget {str(self._path)!r}: {exc}") from None

    # -- lifecycle ------------------------------------------------------------------------

    def close(self) -> None:
        """Close the database connection. Idempotent."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._db.close()

    # -- days -----------------------------------------------------------------------------

    def _today_date(self) -> datetime:
        now = self._now()
        if self._mode == "utc":
            now = now.astimezone(timezone.utc) if now.tzinfo else now
        elif now.tzinfo is not None:
            now = now.astimezone()  # the process's local time zone
        return now.replace(hour=0, minute=0, second=0, microsecond=0, tzinfo=None)

    def today(self) -> str:
        """The current budget day, ``YYYY-MM-DD``."""
        return self._today_date().date().isoformat()

    @property
    def limit(self) -> int | None:
        return self._limit

    @property
    def path(self) -> Path:
        return self._path

    # -- counting -------------------------------------------------------------------------

    def used(self, day: str | None = None) -> int:
        """Requests drawn on ``day`` (default: today)."""
        d = day or self.today()
        with self._lock:
            self._check_open()
            try:
                row = self._db.execute(
                    "SELECT used FROM fallback_budget WHERE day = ?", (d,)
                ).fetchone()
            except sqlite3.Error as exc:
                raise BudgetError(f"cloud budget: cannot read: {exc}") from None
        return int(row[0]) if row else 0

    def remaining(self) -> int | None:
        """Requests left today (``None`` when unlimited)."""
        if self._limit is None:
            return None
        return max(0, self._limit - self.used())

    def try_take(self) -> bool:
        """Draw one request for today; ``False`` when today's limit is reached.

        Raises:
            BudgetError: the database cannot be written (nothing was drawn).
        """
        d = self.today()
        with self._lock:
            self._check_open()
            if self._exhausted_day == d:
                return False
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    self._db.execute(
                        "INSERT INTO fallback_budget(day, used) VALUES (?, 0) "
                        "ON CONFLICT(day) DO NOTHING",
                        (d,),
                    )
                    if self._limit is None:
                        cur = self._db.execute(
                            "UPDATE fallback_budget SET used = used + 1 WHERE day = ?", (d,)
                        )
                    else:
                        cur = self._db.execute(
                            "UPDATE fallback_budget SET used = used + 1 WHERE day = ? AND used < ?",
                            (d, self._limit),
                        )
                    taken = cur.rowcount == 1
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise BudgetError(f"cloud budget: cannot draw: {exc}") from None
            if not taken:
                self._exhausted_day = d
            return taken

    def _check_open(self) -> None:
        if self._closed:
            raise BudgetError("cloud budget is closed")
