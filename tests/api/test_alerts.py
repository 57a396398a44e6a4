"""Alert rules against a real SQLite store: each rule opens and later resolves its alert,
and every change reaches the sinks (the MQTT hand-off)."""

from __future__ import annotations

import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from edge.api.alerts import AlertEngine, AlertRules, evaluate
from edge.api.store import Store, StoreError, db_path

NOW = datetime(2026, 6, 15, 12, 30, 10, tzinfo=timezone.utc)
LATER = NOW + timedelta(minutes=30)  # traffic of NOW is outside the window by then


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(path=db_path(tmp_path)) as s:
        yield s


def traffic(
    store: Store, *, app_key: str | None, api: str | None, codes: list[int], ms: float = 5.0
) -> None:
    for code in codes:
        store.record_request(
            app_key=app_key,
            api=api,
            code=code,
            latency_ms=ms,
            request_bytes=100,
            response_bytes=50,
            at=NOW,
        )


class Sink:
    def __init__(self) -> None:
        self.got: list[dict[str, Any]] = []

    def __call__(self, alert: dict[str, Any]) -> None:
        self.got.append(alert)


def kinds(sink: Sink, state: str) -> set[tuple[str, str]]:
    return {(a["kind"], a["key"]) for a in sink.got if a["state"] == state}


def test_rules_config_is_strict() -> None:
    assert AlertRules().quota_below_fraction == 0.10
    assert AlertRules().package_expiring_days == 30
    with pytest.raises(ValidationError):
        AlertRules(error_rat=0.2)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AlertRules(error_rate=1.5)


def test_error_rate_and_inference_failures_open_then_resolve(store: Store) -> None:
    key = "a" * 24
    traffic(store, app_key=key, api="fence", codes=[0] * 24 + [5001] * 6)
    sink = Sink()
    engine = AlertEngine(store=store, rules=AlertRules(), sinks=[sink])
    opened = engine.evaluate(now=NOW)
    assert {(a.kind, a.key) for a in opened} == {
        ("error_rate", f"{key}/fence"),
        ("inference_failures", "fence"),
    }
    assert kinds(sink, "active") == {(a.kind, a.key) for a in opened}
    err = next(a for a in sink.got if a["kind"] == "error_rate")
    assert "6 of 30 fence requests failed" in err["cause"] and "5001: 6" in err["cause"]
    assert err["saved"] is True and err["app_key"] == key and err["api"] == "fence"

    assert engine.evaluate(now=NOW + timedelta(seconds=5)) == []  # still open: no news
    assert len(sink.got) == 2
    [open_err] = [a for a in store.list_alerts(active=True) if a.kind == "error_rate"]
    assert open_err.count == 2

    resolved = engine.evaluate(now=LATER)
    assert {(a.kind, a.key) for a in resolved} == kinds(sink, "active")
    assert kinds(sink, "resolved") == kinds(sink, "active")
    assert all(a.ended_at == LATER.replace(microsecond=0) for a in resolved)
    assert store.list_alerts(active=True) == []


@pytest.mark.parametrize(
    ("codes", "expect"),
    [
        ([0] * 9 + [5000] * 10, set()),  # below min_requests (20)
        ([0] * 29 + [4009], set()),  # 3.3 % <= 5 %
        ([0] * 20 + [4010] * 10 + [4029] * 10, set()),  # own rules, not "errors"
        ([0] * 18 + [4009] * 2, {"error_rate"}),  # 10 % of 20
    ],
)
def test_error_rate_threshold_table(store: Store, codes: list[int], expect: set[str]) -> None:
    traffic(store, app_key="b" * 24, api="hardhat", codes=codes)
    got = {a.kind for a in evaluate(store, AlertRules(), now=NOW)}
    assert got - {"auth_failures"} == expect


def test_p95_latency(store: Store) -> None:
    traffic(store, app_key="c" * 24, api="workwear", codes=[0] * 19, ms=20.0)
    traffic(store, app_key="c" * 24, api="workwear", codes=[0], ms=5000.0)
    assert evaluate(store, AlertRules(), now=NOW) == []  # p95 falls in the 20 ms part
    traffic(store, app_key="c" * 24, api="workwear", codes=[0] * 5, ms=5000.0)
    [alert] = evaluate(store, AlertRules(p95_ms=1000), now=NOW)
    assert (alert.kind, alert.key) == ("p95_latency", f"{'c' * 24}/workwear")
    assert "limit 1000 ms" in alert.cause


def test_auth_failure_burst_per_key(store: Store) -> None:
    traffic(store, app_key=None, api="fence", codes=[4010] * 20)
    traffic(store, app_key="d" * 24, api="fence", codes=[4010] * 19)
    [alert] = evaluate(store, AlertRules(), now=NOW)
    assert (alert.kind, alert.key, alert.app_key) == ("auth_failures", "unknown", None)
    assert "20 authentication failures" in alert.cause and "key leak" in alert.cause
    traffic(store, app_key="d" * 24, api="fence", codes=[4010])
    [alert] = evaluate(store, AlertRules(), now=NOW)
    assert (alert.key, alert.app_key) == ("d" * 24, "d" * 24)


def test_quota_low_and_package_expiring(store: Store) -> None:
    app = store.create_app(name="metered", description="", grants=["fence", "hardhat"])
    store.add_package(app="metered", api="fence", tier="100k", calls=100, start=NOW)
    for _ in range(90):
        assert store.consume(app_key=app.app_key, api="fence", now=NOW).ok
    assert evaluate(store, AlertRules(), now=NOW) == []  # exactly 10 % left: not below
    store.consume(app_key=app.app_key, api="fence", now=NOW)
    sink = Sink()
    [low] = evaluate(store, AlertRules(), now=NOW, sinks=[sink])
    assert (low.kind, low.key) == ("quota_low", f"{app.app_key}/fence")
    assert "9 of 100 fence calls left" in low.cause
    assert sink.got[0]["state"] == "active"

    # A second package lifts the quota; the alert resolves.
    pkg = store.add_package(
        app="metered", api="fence", tier="100k", calls=1000, start=NOW - timedelta(days=340)
    )
    changed = evaluate(store, AlertRules(), now=NOW)
    assert {(a.kind, a.key, a.active) for a in changed} == {
        ("quota_low", f"{app.app_key}/fence", False),
        ("package_expiring", f"package/{pkg.id}", True),
    }
    expiring = next(a for a in changed if a.kind == "package_expiring")
    assert "1000 unused calls" in expiring.cause and "in 25.0 days" in expiring.cause
    assert evaluate(store, AlertRules(package_expiring_days=20), now=NOW)[0].active is False

    # Everything expired: refused with 4029, and said so.
    gone = NOW + timedelta(days=367)
    changed = evaluate(store, AlertRules(), now=gone)
    assert [(a.kind, a.active) for a in changed] == [("quota_low", True)]
    assert "no active fence resource package" in changed[0].cause


def test_store_fault_alert_and_unsaved_hand_off(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    with Store(path=path, busy_timeout_ms=50) as s:
        app = s.create_app(name="faulty", description="", grants=["fence"])
        sink = Sink()

        def broken(alert: dict[str, Any]) -> None:
            raise RuntimeError("broker gone")

        engine = AlertEngine(store=s, rules=AlertRules(), sinks=[broken, sink])
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(StoreError, match="locked"):
                s.consume(app_key=app.app_key, api="fence")
            assert engine.evaluate() == []  # cannot save while locked
            assert engine.evaluate() == []
        finally:
            other.execute("ROLLBACK")
            other.close()
        # Handed over once, unsaved, despite the broken sink before it.
        unsaved = [a for a in sink.got if a["kind"] == "store_fault"]
        assert len(unsaved) == 1
        assert unsaved[0]["saved"] is False and unsaved[0]["id"] is None
        assert unsaved[0]["key"] == "locked" and "consume quota" in unsaved[0]["cause"]

        [saved] = engine.evaluate()  # the database is back: the alert is stored
        assert (saved.kind, saved.key) == ("store_fault", "locked")
        assert [a.kind for a in s.list_alerts(active=True)] == ["store_fault"]
        assert sink.got[-1]["saved"] is True


def test_disabled_rules_do_nothing(store: Store) -> None:
    traffic(store, app_key=None, api=None, codes=[4010] * 50)
    assert evaluate(store, AlertRules(enabled=False), now=NOW) == []
    assert store.list_alerts() == []


def test_unmanaged_alerts_are_left_open(store: Store) -> None:
    store.open_alert(kind="camera_offline", key="cam1", cause="no frames")
    evaluate(store, AlertRules(), now=NOW)
    assert [a.kind for a in store.list_alerts(active=True)] == ["camera_offline"]
