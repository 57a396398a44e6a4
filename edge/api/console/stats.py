"""Monitoring series for the console charts: the store's per-minute rows summed into
fixed buckets (1 min over an hour, 10 min over a day, 1 h over a week).

Why not :meth:`Store.minute_stats`: a week of one app/API is 10,080 minute rows, and
with several apps and APIs and a latency histogram per minute that is hundreds of
thousands of rows to build in Python -- seconds, where the console must answer in well
under one. Here SQLite does the summing (``GROUP BY`` over the primary key's ``minute``
range) on its own read-only connection, and only the last :data:`RECENT_MINUTES`
minutes come from :meth:`Store.minute_stats`, which includes the aggregates not yet
flushed; the two parts never overlap, so nothing is counted twice. Aggregates that stay
unflushed for longer (flushes failing for more than that) appear once they are flushed.

Latency percentiles per bucket are computed from the merged histograms
(:func:`edge.api.store.histogram_percentile`), so p50/p95 over an hour are exact to the
histogram's bucket width, not averages of per-minute percentiles.

This module reads the store's tables (``minute_stats``, ``minute_codes``,
``minute_latency``; see :mod:`edge.api.store`); it refuses a database whose schema
version it does not know.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, get_args

from edge.api.console.rollup import HourlyRollup
from edge.api.store import (
    APIS,
    SCHEMA_VERSION,
    MinuteStat,
    Store,
    StoreError,
    histogram_percentile,
)

__all__ = ["RANGES", "RECENT_MINUTES", "Range", "StatsQuery", "bucket_stats"]

Range = Literal["hour", "day", "week"]
RANGES: dict[Range, tuple[int, int]] = {
    "hour": (3600, 60),
    "day": (86_400, 600),
    "week": (7 * 86_400, 3600),
}
"""``range -> (span_s, bucket_s)``."""
RECENT_MINUTES = 10
"""Minutes read through :meth:`Store.minute_stats` (flushed or not)."""


@dataclass(frozen=True)
class StatsQuery:
    """What to chart: ``range`` ending now, one app (AppKey; ``None`` = all) and one API
    (``None`` = all)."""

    range: Range = "hour"
    app_key: str | None = None
    api: str | None = None

    def __post_init__(self) -> None:
        if self.range not in RANGES:
            raise ValueError(f"range must be one of {', '.join(get_args(Range))}")
        if self.api is not None and self.api not in APIS:
            raise ValueError(f"unknown API {self.api!r}; expected one of {', '.join(APIS)}")


@dataclass
class _Acc:
    requests: int = 0
    errors: int = 0
    request_bytes: int = 0
    response_bytes: int = 0
    codes: dict[int, int] = field(default_factory=dict)
    hist: dict[int, int] = field(default_factory=dict)

    def add_stat(self, s: MinuteStat) -> None:
        self.requests += s.requests
        self.errors += s.errors
        self.request_bytes += s.request_bytes
        self.response_bytes += s.response_bytes
        for k, v in s.errors_by_code.items():
            self.codes[k] = self.codes.get(k, 0) + v
        for k, v in s.histogram.items():
            self.hist[k] = self.hist.get(k, 0) + v


def _connect(path: Path) -> sqlite3.Connection:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2.0)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open {str(path)!r} for reading: {exc}") from exc
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    except sqlite3.Error as exc:
        conn.close()
        raise StoreError(f"cannot read {str(path)!r}: {exc}") from exc
    if version != SCHEMA_VERSION:
        conn.close()
        raise StoreError(
            f"database {str(path)!r} has schema version {version}; the console reads "
            f"version {SCHEMA_VERSION}"
        )
    return conn


def _round(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


_RAW = ("minute", "minute_stats", "minute_codes", "minute_latency")
_HOURLY = ("hour", "hour_stats", "hour_codes", "hour_latency")


def _accumulate(
    conn: sqlite3.Connection,
    tables: tuple[str, str, str, str],
    *,
    origin: int,
    step: int,
    a: int,
    b: int,
    query: StatsQuery,
    buckets: list[_Acc],
    rows: dict[tuple[str, str], _Acc],
) -> None:
    """Add the rows with ``a <= time < b`` to the chart buckets (bucket ``i`` starts at
    ``origin + i * step``) and to the per-(app, API) rows: one grouped query per table."""
    tcol, stats, codes, latency = tables
    where = f"{tcol} >= ? AND {tcol} < ?"
    params: list[Any] = [origin, step, a, b]
    if query.app_key is not None:
        where += " AND app_key = ?"
        params.append(query.app_key)
    if query.api is not None:
        where += " AND api = ?"
        params.append(query.api)
    n = len(buckets)
    for i, k, ap, r, e, qb, sb in conn.execute(
        f"SELECT ({tcol} - ?) / ?, app_key, api, SUM(requests), SUM(errors),"
        f" SUM(request_bytes), SUM(response_bytes) FROM {stats} WHERE {where} GROUP BY 1, 2, 3",
        params,
    ):
        row = rows.setdefault((k, ap), _Acc())
        row.requests += r
        row.errors += e
        row.request_bytes += qb
        row.response_bytes += sb
        if 0 <= i < n:
            acc = buckets[i]
            acc.requests += r
            acc.errors += e
            acc.request_bytes += qb
            acc.response_bytes += sb
    for table, col, target in ((codes, "code", "codes"), (latency, "bucket", "hist")):
        for i, k, ap, x, c in conn.execute(
            f"SELECT ({tcol} - ?) / ?, app_key, api, {col}, SUM(count) FROM {table}"
            f" WHERE {where} GROUP BY 1, 2, 3, 4",
            params,
        ):
            d: dict[int, int] = getattr(rows.setdefault((k, ap), _Acc()), target)
            d[x] = d.get(x, 0) + c
            if 0 <= i < n:
                d = getattr(buckets[i], target)
                d[x] = d.get(x, 0) + c


def _spans(
    lo: int, hi: int, done: Iterable[int]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Split ``[lo, hi)`` (hour aligned) into runs of summed hours and runs of the rest."""
    have = set(done)
    summed: list[tuple[int, int]] = []
    raw: list[tuple[int, int]] = []
    h = lo
    while h < hi:
        target = summed if h in have else raw
        start = h
        while h < hi and (h in have) == (target is summed):
            h += 3600
        target.append((start, h))
    return summed, raw


def bucket_stats(
    store: Store,
    query: StatsQuery,
    *,
    now: datetime | None = None,
    rollup: HourlyRollup | None = None,
    app_names: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Chart series and a per-app/API table for ``query`` (JSON-ready).

    Returns::

        {"range", "bucket_s", "since", "until" (ISO UTC),
         "t": [bucket start, Unix s], "requests", "errors", "request_bytes",
         "response_bytes", "p50_ms", "p95_ms" (None where no requests): [per bucket],
         "codes": {"4010": [per bucket], ...}   non-zero contract codes seen,
         "table": [{"app_key", "app", "api", "requests", "errors", "error_rate",
                    "p50_ms", "p95_ms", "request_bytes", "response_bytes", "codes"}],
         "totals": {"requests", "errors", "p50_ms", "p95_ms"}}

    ``rollup``: hourly sums to use for hour-sized buckets (the week range) where they
    exist. ``app_names``: AppKey -> name for the table (default: read from the store).

    Raises:
        StoreError: the database cannot be read.
    """
    span_s, step = RANGES[query.range]
    t_now = (now or datetime.now(timezone.utc)).timestamp()
    end = (int(t_now) // step + 1) * step
    lo = end - span_s
    cut = max(lo, (int(t_now) // 60 - RECENT_MINUTES + 1) * 60)
    buckets = [_Acc() for _ in range(span_s // step)]
    rows: dict[tuple[str, str], _Acc] = {}
    common: dict[str, Any] = {
        "origin": lo,
        "step": step,
        "query": query,
        "buckets": buckets,
        "rows": rows,
    }
    raw_spans = [(lo, cut)] if cut > lo else []
    if rollup is not None and step % 3600 == 0 and cut > lo:
        hour_cut = cut // 3600 * 3600
        summed, raw_spans = _spans(lo, hour_cut, rollup.done_hours(lo, hour_cut))
        if hour_cut < cut:
            raw_spans.append((hour_cut, cut))
        try:
            with rollup.connection() as rc:
                for a, b in summed:
                    _accumulate(rc, _HOURLY, a=a, b=b, **common)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read the console rollup: {exc}") from exc
    if raw_spans:
        conn = _connect(store.path)
        try:
            for t0, t1 in raw_spans:
                _accumulate(conn, _RAW, a=t0, b=t1, **common)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot read monitoring data: {exc}") from exc
        finally:
            conn.close()
    recent = store.minute_stats(
        app_key=query.app_key,
        api=query.api,
        since=datetime.fromtimestamp(cut, timezone.utc),
        until=datetime.fromtimestamp(end, timezone.utc),
    )
    for s in recent:
        idx = (int(s.minute.timestamp()) - lo) // step
        if 0 <= idx < len(buckets):
            buckets[idx].add_stat(s)
        rows.setdefault((s.app_key or "", s.api or ""), _Acc()).add_stat(s)

    names = dict(app_names) if app_names is not None else {a.app_key: a.name for a in _apps(store)}
    codes = sorted({c for b in buckets for c in b.codes})
    total = _Acc()
    for acc in rows.values():
        total.requests += acc.requests
        total.errors += acc.errors
        for hb, v in acc.hist.items():
            total.hist[hb] = total.hist.get(hb, 0) + v
    table = []
    for (key, api_name), acc in sorted(rows.items(), key=lambda kv: (-kv[1].requests, kv[0])):
        table.append(
            {
                "app_key": key or None,
                "app": names.get(key, "(unknown AppKey)" if key else "(no AppKey)"),
                "api": api_name or None,
                "requests": acc.requests,
                "errors": acc.errors,
                "error_rate": round(acc.errors / acc.requests, 4) if acc.requests else None,
                "p50_ms": _round(histogram_percentile(acc.hist, 0.50)),
                "p95_ms": _round(histogram_percentile(acc.hist, 0.95)),
                "request_bytes": acc.request_bytes,
                "response_bytes": acc.response_bytes,
                "codes": {str(c): v for c, v in sorted(acc.codes.items())},
            }
        )
    return {
        "range": query.range,
        "bucket_s": step,
        "since": datetime.fromtimestamp(lo, timezone.utc).isoformat(),
        "until": datetime.fromtimestamp(end, timezone.utc).isoformat(),
        "t": [lo + i * step for i in range(len(buckets))],
        "requests": [b.requests for b in buckets],
        "errors": [b.errors for b in buckets],
        "request_bytes": [b.request_bytes for b in buckets],
        "response_bytes": [b.response_bytes for b in buckets],
        "p50_ms": [_round(histogram_percentile(b.hist, 0.50)) for b in buckets],
        "p95_ms": [_round(histogram_percentile(b.hist, 0.95)) for b in buckets],
        "codes": {str(c): [b.codes.get(c, 0) for b in buckets] for c in codes},
        "table": table,
        "totals": {
            "requests": total.requests,
            "errors": total.errors,
            "p50_ms": _round(histogram_percentile(total.hist, 0.50)),
            "p95_ms": _round(histogram_percentile(total.hist, 0.95)),
        },
    }


def _apps(store: Store) -> Iterable[Any]:
    return store.list_apps()


def span(range_: Range) -> timedelta:
    """The time a range covers."""
    return timedelta(seconds=RANGES[range_][0])
