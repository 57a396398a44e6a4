"""Alert rules over the store's monitoring data, and the hand-off to MQTT.

:class:`AlertEngine` evaluates the rules (all thresholds in :class:`AlertRules`, part of
the gateway config) against the last ``window_minutes`` of per-minute statistics, the
resource packages and the store's in-memory fault log. Each rule instance is one alert
keyed by ``(kind, key)``; it is opened when the condition holds and closed (``ended_at``
set) at the first evaluation where it no longer does. Run :meth:`AlertEngine.evaluate`
from the same background task that calls :meth:`~edge.api.store.Store.flush`.

Rules (``kind``: key — condition, defaults):

- ``error_rate``: ``app_key/api`` — answers with a non-zero code other than 4010/4029
  (those have their own rules) make up more than ``error_rate`` (5 %) of at least
  ``min_requests`` (20) requests in the window (5 min).
- ``p95_latency``: ``app_key/api`` — p95 response time above ``p95_ms`` (2000 ms) over at
  least ``min_requests`` requests in the window.
- ``quota_low``: ``app_key/api`` — the active packages of a granted API have less than
  ``quota_below_fraction`` (10 %) of their calls left, or every package has expired.
- ``package_expiring``: ``package/<id>`` — an active package with calls left expires
  within ``package_expiring_days`` (30 days).
- ``inference_failures``: ``api`` — at least ``inference_failures`` (5) answers with 5001
  (inference failed) in the window, all applications together.
- ``auth_failures``: AppKey or ``unknown`` — at least ``auth_failure_burst`` (20) answers
  with 4010 in the window for one AppKey (possible key leak, brute force, clock skew).
- ``store_fault``: fault kind (``locked``, ``full``, ``io``, ...) — the database failed in
  the window (see :meth:`~edge.api.store.Store.faults`).

Hand-off: every alert opened or resolved by an evaluation is passed, as the JSON-ready
dict of :meth:`~edge.api.store.AlertRecord.to_dict` (``state`` is ``active`` or
``resolved``; ``saved`` says whether it reached the database), to each
:data:`AlertSink` — the MQTT publisher's ``publish_alert`` fits. A sink that raises is
logged and does not stop the others. When the database cannot store an alert (disk
full), sinks still get it once, with ``id: None`` and ``saved: False``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from edge.api.store import (
    AlertRecord,
    MinuteStat,
    Store,
    StoreError,
    histogram_percentile,
)

__all__ = ["MANAGED_KINDS", "AlertEngine", "AlertRules", "AlertSink", "evaluate"]

log = logging.getLogger("edge.api.alerts")

AlertSink = Callable[[dict[str, Any]], None]
"""Receives each opened/resolved alert as a JSON-ready dict (e.g. MQTT ``publish_alert``)."""

MANAGED_KINDS: tuple[str, ...] = (
    "error_rate",
    "p95_latency",
    "quota_low",
    "package_expiring",
    "inference_failures",
    "auth_failures",
    "store_fault",
)
"""Alert kinds the engine opens and closes; other kinds are left alone."""

AUTH_FAILED = 4010
QUOTA_EXHAUSTED = 4029
INFERENCE_FAILED = 5001


class AlertRules(BaseModel):
    """Thresholds of the alert rules (``api.alert_rules`` in the gateway config)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    window_minutes: int = Field(default=5, ge=1, le=1440, description="sliding window, minutes")
    min_requests: int = Field(
        default=20, ge=1, description="requests in the window before error rate / p95 are judged"
    )
    error_rate: float = Field(
        default=0.05, gt=0.0, le=1.0, description="fraction of answers with an error code"
    )
    p95_ms: float = Field(default=2000.0, gt=0.0, description="p95 response time limit, ms")
    quota_below_fraction: float = Field(
        default=0.10,
        ge=0.0,
        le=1.0,
        description="alert when this fraction of calls or less is left",
    )
    package_expiring_days: int = Field(default=30, ge=0, description="alert this many days before")
    inference_failures: int = Field(
        default=5, ge=1, description="5001 answers per API in the window"
    )
    auth_failure_burst: int = Field(
        default=20, ge=1, description="4010 answers per AppKey in the window"
    )


_Want = dict[tuple[str, str], tuple[str, str | None, str | None]]


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(timezone.utc)
    return now.replace(tzinfo=timezone.utc) if now.tzinfo is None else now


def _short(key: str | None) -> str:
    return key or "unknown"


class AlertEngine:
    """Evaluates :class:`AlertRules` against a :class:`~edge.api.store.Store`.

    Holds no resources; keep one per gateway so alerts that could not be saved (database
    down) are handed to the sinks once, not at every evaluation. Not thread-safe: call
    :meth:`evaluate` from one background task.
    """

    def __init__(self, *, store: Store, rules: AlertRules, sinks: Sequence[AlertSink] = ()) -> None:
        self.store = store
        self.rules = rules
        self.sinks: list[AlertSink] = list(sinks)
        self._unsaved: set[tuple[str, str]] = set()

    # -- rule evaluation ----------------------------------------------------------------

    def _traffic_rules(self, stats: Iterable[MinuteStat], want: _Want) -> None:
        r = self.rules
        per_app: dict[tuple[str, str], list[MinuteStat]] = {}
        per_api_5001: dict[str, int] = {}
        per_key_4010: dict[str, int] = {}
        for s in stats:
            if s.app_key is not None and s.api is not None:
                per_app.setdefault((s.app_key, s.api), []).append(s)
            if s.api is not None and INFERENCE_FAILED in s.errors_by_code:
                per_api_5001[s.api] = (
                    per_api_5001.get(s.api, 0) + s.errors_by_code[INFERENCE_FAILED]
                )
            if AUTH_FAILED in s.errors_by_code:
                k = _short(s.app_key)
                per_key_4010[k] = per_key_4010.get(k, 0) + s.errors_by_code[AUTH_FAILED]
        win = f"{r.window_minutes} min"
        for (app_key, api), rows in per_app.items():
            n = sum(s.requests for s in rows)
            if n < r.min_requests:
                continue
            errs = sum(
                c
                for s in rows
                for code, c in s.errors_by_code.items()
                if code not in (AUTH_FAILED, QUOTA_EXHAUSTED)
            )
            if errs / n > r.error_rate:
                codes: dict[int, int] = {}
                for s in rows:
                    for code, c in s.errors_by_code.items():
                        codes[code] = codes.get(code, 0) + c
                top = ", ".join(f"{k}: {v}" for k, v in sorted(codes.items()))
                want[("error_rate", f"{app_key}/{api}")] = (
                    f"{errs} of {n} {api} requests failed in the last {win} "
                    f"({errs / n:.1%} > {r.error_rate:.1%}); codes {top}",
                    app_key,
                    api,
                )
            hist: dict[int, int] = {}
            for s in rows:
                for b, c in s.histogram.items():
                    hist[b] = hist.get(b, 0) + c
            p95 = histogram_percentile(hist, 0.95)
            if p95 is not None and p95 > r.p95_ms:
                want[("p95_latency", f"{app_key}/{api}")] = (
                    f"p95 response time of {api} was {p95:.0f} ms over {n} requests in the "
                    f"last {win} (limit {r.p95_ms:.0f} ms)",
                    app_key,
                    api,
                )
        for api, n in per_api_5001.items():
            if n >= r.inference_failures:
                want[("inference_failures", api)] = (
                    f"{n} {api} requests failed with 5001 (inference failed) in the last {win} "
                    f"(limit {r.inference_failures})",
                    None,
                    api,
                )
        for key, n in per_key_4010.items():
            if n >= r.auth_failure_burst:
                who = "unknown AppKeys" if key == "unknown" else f"AppKey {key}"
                want[("auth_failures", key)] = (
                    f"{n} authentication failures (4010) for {who} in the last {win} "
                    f"(limit {r.auth_failure_burst}): possible key leak, guessing or clock skew",
                    None if key == "unknown" else key,
                    None,
                )

    def _quota_rules(self, now: datetime, want: _Want) -> None:
        r = self.rules
        horizon = now + timedelta(days=r.package_expiring_days)
        for app in self.store.list_apps():
            if not app.enabled:
                continue
            packages = self.store.quota(app.app_key, now=now)
            for grant in app.grants:
                mine = [p for p in packages if p.api == grant.api]
                if not mine:
                    continue  # never metered: nothing to warn about
                active = [p for p in mine if p.active]
                key = f"{app.app_key}/{grant.api}"
                if not active:
                    if any(p.start > now for p in mine):
                        continue  # a package starts later; nothing is active yet
                    want[("quota_low", key)] = (
                        f"application {app.name!r} has no active {grant.api} resource package "
                        "(all expired); calls are refused with 4029",
                        app.app_key,
                        grant.api,
                    )
                    continue
                total = sum(p.calls for p in active)
                left = sum(p.remaining for p in active)
                if left < r.quota_below_fraction * total or left == 0:
                    want[("quota_low", key)] = (
                        f"application {app.name!r} has {left} of {total} {grant.api} calls "
                        f"left ({left / total:.1%}, alert below {r.quota_below_fraction:.0%})",
                        app.app_key,
                        grant.api,
                    )
                for p in active:
                    if p.remaining > 0 and p.expires_at <= horizon:
                        days = (p.expires_at - now).total_seconds() / 86400
                        want[("package_expiring", f"package/{p.id}")] = (
                            f"{grant.api} package {p.id} ({p.tier}) of application {app.name!r} "
                            f"expires {p.expires_at.isoformat()} (in {days:.1f} days) with "
                            f"{p.remaining} unused calls, which do not roll over",
                            app.app_key,
                            grant.api,
                        )

    def _fault_rule(self, now: datetime, want: _Want) -> None:
        since = min(now, datetime.now(timezone.utc)) - timedelta(minutes=self.rules.window_minutes)
        by_kind: dict[str, list[str]] = {}
        for f in self.store.faults(since=since):
            by_kind.setdefault(f.kind, []).append(f"{f.operation}: {f.cause}")
        for kind, causes in by_kind.items():
            want[("store_fault", kind)] = (
                f"database fault ({kind}) {len(causes)} time(s) in the last "
                f"{self.rules.window_minutes} min; last: {causes[-1]}",
                None,
                None,
            )

    # -- apply --------------------------------------------------------------------------

    def evaluate(self, *, now: datetime | None = None) -> list[AlertRecord]:
        """Flush monitoring data, evaluate every rule, open/refresh/close alerts and hand
        the opened and resolved ones to the sinks. Returns those opened or resolved now
        (that could be saved). Never raises :class:`StoreError`; a failing database opens
        a ``store_fault`` alert (or hands it to the sinks unsaved)."""
        t = _utc(now)
        if not self.rules.enabled:
            return []
        try:
            self.store.flush()
        except StoreError as exc:
            log.error("alerts: flush failed: %s", exc)
        want: _Want = {}
        complete = True
        since = t - timedelta(minutes=self.rules.window_minutes)
        try:
            self._traffic_rules(
                self.store.minute_stats(since=since, until=t + timedelta(minutes=1)), want
            )
            self._quota_rules(t, want)
        except StoreError as exc:
            complete = False  # don't close alerts on a partial view
            log.error("alerts: cannot read the store: %s", exc)
        self._fault_rule(t, want)

        changed: list[AlertRecord] = []
        try:
            open_now = {
                (a.kind, a.key): a
                for a in self.store.list_alerts(active=True, limit=1_000_000)
                if a.kind in MANAGED_KINDS
            }
        except StoreError as exc:
            log.error("alerts: cannot list open alerts: %s", exc)
            open_now = None
        for (kind, key), (cause, app_key, api) in want.items():
            try:
                rec = self.store.open_alert(
                    kind=kind, key=key, cause=cause, app_key=app_key, api=api, now=t
                )
            except StoreError as exc:
                log.error("alerts: cannot save alert %s/%s: %s", kind, key, exc)
                if (kind, key) not in self._unsaved:
                    self._unsaved.add((kind, key))
                    self._emit(_unsaved_dict(kind, key, cause, app_key, api, t))
                continue
            self._unsaved.discard((kind, key))
            if open_now is not None and (kind, key) not in open_now:
                changed.append(rec)
                self._emit({**rec.to_dict(), "saved": True})
        if complete and open_now is not None:
            for (kind, key), _rec in open_now.items():
                if (kind, key) in want:
                    continue
                try:
                    closed = self.store.close_alert(kind=kind, key=key, now=t)
                except StoreError as exc:
                    log.error("alerts: cannot close alert %s/%s: %s", kind, key, exc)
                    continue
                if closed is not None:
                    changed.append(closed)
                    self._emit({**closed.to_dict(), "saved": True})
        return changed

    def _emit(self, payload: dict[str, Any]) -> None:
        for sink in self.sinks:
            try:
                sink(payload)
            except Exception:  # a broken sink must not stop alerting; logged with context
                log.exception(
                    "alert sink %r failed for alert %s/%s", sink, payload["kind"], payload["key"]
                )


def _unsaved_dict(
    kind: str, key: str, cause: str, app_key: str | None, api: str | None, t: datetime
) -> dict[str, Any]:
    return {
        "id": None,
        "kind": kind,
        "key": key,
        "cause": cause,
        "app_key": app_key,
        "api": api,
        "state": "active",
        "started_at": t.isoformat(),
        "last_seen_at": t.isoformat(),
        "ended_at": None,
        "count": 1,
        "saved": False,
    }


def evaluate(
    store: Store,
    rules: AlertRules,
    *,
    now: datetime | None = None,
    sinks: Sequence[AlertSink] = (),
) -> list[AlertRecord]:
    """One-shot :meth:`AlertEngine.evaluate` (a long-running gateway keeps an engine)."""
    return AlertEngine(store=store, rules=rules, sinks=sinks).evaluate(now=now)
