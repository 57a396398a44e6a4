"""The SQLite store on a real file: apps, quota packages, monitoring, alerts, faults."""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.api.store import (
    LATENCY_BOUNDS_MS,
    TIER_CALLS,
    AppError,
    Store,
    StoreError,
    add_one_year,
    db_path,
    histogram_percentile,
    validate_app_name,
)

NOW = datetime(2026, 6, 15, 12, 30, 10, tzinfo=timezone.utc)


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(path=db_path(tmp_path)) as s:
        yield s


# -- names ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["abcd", "a" * 15, "安全帽检", "工地围栏监控系统", "安" * 15, "Site-A 01", "é" * 4],
)
def test_valid_names(name: str) -> None:
    assert validate_app_name(name) == name


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("abc", "has 3 characters"),
        ("a" * 16, "has 16 characters"),
        ("安全帽", "has 3 characters"),
        ("安" * 16, "has 16 characters"),
        ("", "has 0 characters"),
        (" abcd", "whitespace"),
        ("abcd ", "whitespace"),
        ("ab\ncd", "control"),
        ("ab\x00cd", "control"),
    ],
)
def test_invalid_names_say_why(name: str, why: str) -> None:
    with pytest.raises(AppError, match=why):
        validate_app_name(name)


def test_combining_characters_count_after_nfc() -> None:
    # "e" + combining acute is one character after NFC: 4 characters, not 8.
    assert len(validate_app_name("e\u0301" * 4)) == 4


def test_names_are_unique_case_insensitively(store: Store) -> None:
    store.create_app(name="Site Alpha", description="", grants=["fence"])
    with pytest.raises(AppError, match="already taken"):
        store.create_app(name="site alpha", description="", grants=["fence"])
    with pytest.raises(AppError, match="has 3 characters"):
        store.create_app(name="abc", description="", grants=["fence"])
    assert [a.name for a in store.list_apps()] == ["Site Alpha"]


# -- applications --------------------------------------------------------------------


def test_create_app_keys_and_grants(store: Store) -> None:
    app = store.create_app(name="安全帽检测", description="gate 3", grants=["hardhat", "fence"])
    assert re.fullmatch(r"[0-9a-f]{24}", app.app_key)
    assert re.fullmatch(r"[0-9a-f]{32}", app.app_secret)
    assert set(app.service_codes) == {"hardhat", "fence"}
    for code in app.service_codes.values():
        assert re.fullmatch(r"[a-z0-9]{16}", code)
    assert len(set(app.service_codes.values())) == 2
    assert app.enabled and app.description == "gate 3"

    assert store.get_app(app.app_key) == app
    assert store.find_app("安全帽检测") == app
    assert store.find_app(app.app_key) == app
    assert store.get_app("0" * 24) is None and store.find_app("nobody") is None
    g = store.grant_for_service_code(app.service_codes["fence"])
    assert g is not None and (g.app_key, g.api) == (app.app_key, "fence")
    assert store.grant_for_service_code("nope") is None


def test_unknown_api_is_rejected(store: Store) -> None:
    with pytest.raises(AppError, match="unknown API 'helmet'"):
        store.create_app(name="abcd", description="", grants=["helmet"])


def test_disable_rotate_and_grant(store: Store) -> None:
    app = store.create_app(name="rotator", description="", grants=["fence"])
    rotated = store.rotate_secret("rotator")
    assert rotated.app_secret != app.app_secret and rotated.app_key == app.app_key
    assert store.get_app(app.app_key) == rotated
    assert store.disable_app(app.app_key).enabled is False
    assert store.get_app(app.app_key).enabled is False  # type: ignore[union-attr]
    assert store.disable_app("rotator", enabled=True).enabled is True
    granted = store.add_grant(app="rotator", api="workwear")
    assert set(granted.service_codes) == {"fence", "workwear"}
    assert store.add_grant(app="rotator", api="workwear") == granted  # idempotent
    with pytest.raises(AppError, match="no application"):
        store.disable_app("ghost-app")


def test_data_persists_and_file_is_wal(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    with Store(path=path) as s:
        app = s.create_app(name="persisted", description="x", grants=["workwear"])
        assert s.schema_version == 1
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Store(path=path) as s:
        assert s.get_app(app.app_key) == app


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    Store(path=path).close()
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99"):
        Store(path=path)


def test_close_is_idempotent_and_closed_store_raises(tmp_path: Path) -> None:
    s = Store(path=db_path(tmp_path))
    s.close()
    s.close()
    assert s.closed
    with pytest.raises(StoreError, match="closed"):
        s.list_apps()


# -- quota ---------------------------------------------------------------------------


def test_tiers() -> None:
    assert TIER_CALLS == {
        "100k": 100_000,
        "400k": 400_000,
        "800k": 800_000,
        "4m": 4_000_000,
        "8m": 8_000_000,
    }


def test_one_year_validity() -> None:
    assert add_one_year(datetime(2024, 2, 29, 8, 0)) == datetime(2025, 2, 28, 8, 0)
    assert add_one_year(datetime(2026, 3, 1)) == datetime(2027, 3, 1)


def test_package_needs_grant_and_known_tier(store: Store) -> None:
    store.create_app(name="fenceonly", description="", grants=["fence"])
    with pytest.raises(AppError, match="not granted the hardhat API"):
        store.add_package(app="fenceonly", api="hardhat", tier="100k")
    with pytest.raises(AppError, match="unknown tier '1m'"):
        store.add_package(app="fenceonly", api="fence", tier="1m")
    with pytest.raises(AppError, match="no application"):
        store.add_package(app="ghost-app", api="fence", tier="100k")
    p = store.add_package(app="fenceonly", api="fence", tier="4m", start=NOW)
    assert (p.calls, p.remaining, p.expires_at) == (4_000_000, 4_000_000, add_one_year(NOW))


def test_draws_from_package_expiring_first_and_no_rollover(store: Store) -> None:
    app = store.create_app(name="stacker", description="", grants=["fence"])
    later = store.add_package(app="stacker", api="fence", tier="100k", start=NOW, calls=3)
    sooner = store.add_package(
        app="stacker", api="fence", tier="100k", start=NOW - timedelta(days=300), calls=2
    )
    expired = store.add_package(
        app="stacker", api="fence", tier="100k", start=NOW - timedelta(days=400), calls=50
    )
    future = store.add_package(
        app="stacker", api="fence", tier="100k", start=NOW + timedelta(days=5), calls=50
    )
    k = app.app_key
    assert store.remaining(app_key=k, api="fence", now=NOW) == 5  # expired/future not counted
    drawn = [store.consume(app_key=k, api="fence", now=NOW) for _ in range(6)]
    assert [r.package_id for r in drawn] == [sooner.id] * 2 + [later.id] * 3 + [None]
    assert [r.remaining for r in drawn[:5]] == [4, 3, 2, 1, 0]
    assert drawn[-1].ok is False and "used up" in drawn[-1].reason
    by_id = {p.id: p for p in store.quota("stacker", now=NOW)}
    assert by_id[expired.id].active is False and by_id[expired.id].remaining == 50
    assert by_id[future.id].active is False
    assert by_id[later.id].used == 3 and by_id[sooner.id].used == 2

    # The sooner package expires with calls left: they are lost (no rollover).
    fresh = store.create_app(name="rollover", description="", grants=["fence"])
    store.add_package(app="rollover", api="fence", tier="100k", start=NOW, calls=10)
    store.consume(app_key=fresh.app_key, api="fence", now=NOW)
    after = add_one_year(NOW) + timedelta(seconds=1)
    r = store.consume(app_key=fresh.app_key, api="fence", now=after)
    assert r.ok is False and "no active resource package" in r.reason
    # The future package becomes active on its start date.
    assert (
        store.consume(app_key=k, api="fence", now=NOW + timedelta(days=5)).package_id == future.id
    )


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        ("unknown", "unknown AppKey"),
        ("disabled", "application is disabled"),
        ("ungranted", "not granted the hardhat API"),
        ("nopackage", "no active resource package for the fence API"),
    ],
)
def test_consume_refusals(store: Store, setup: str, reason: str) -> None:
    app = store.create_app(name="refused", description="", grants=["fence"])
    key, api = app.app_key, "fence"
    if setup == "unknown":
        key = "f" * 24
    elif setup == "disabled":
        store.add_package(app="refused", api="fence", tier="100k")
        store.disable_app("refused")
    elif setup == "ungranted":
        api = "hardhat"
    r = store.consume(app_key=key, api=api)
    assert (r.ok, r.package_id) == (False, None)
    assert reason in r.reason


def test_200_concurrent_consumers_against_50_calls(tmp_path: Path) -> None:
    """Exactly 50 of 200 simultaneous draws succeed: 4 stores (separate SQLite
    connections on the same file, as separate processes would have) x 50 threads."""
    path = db_path(tmp_path)
    with Store(path=path) as setup:
        app = setup.create_app(name="contended", description="", grants=["fence"])
        setup.add_package(app="contended", api="fence", tier="100k", calls=50)
    stores = [Store(path=path, busy_timeout_ms=30_000) for _ in range(4)]
    barrier = threading.Barrier(200)
    results: list[bool] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def worker(s: Store) -> None:
        barrier.wait()
        try:
            ok = s.consume(app_key=app.app_key, api="fence").ok
        except BaseException as exc:
            with lock:
                errors.append(exc)
            return
        with lock:
            results.append(ok)

    threads = [threading.Thread(target=worker, args=(stores[i % 4],)) for i in range(200)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        for s in stores:
            s.close()
    assert errors == []
    assert len(results) == 200
    assert sum(results) == 50
    with Store(path=path) as check:
        [pkg] = check.quota("contended")
        assert (pkg.used, pkg.remaining) == (50, 0)


# -- faults ----------------------------------------------------------------------------


def test_locked_database_is_store_error_5002(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    with Store(path=path, busy_timeout_ms=50) as s:
        app = s.create_app(name="lockedout", description="", grants=["fence"])
        s.add_package(app="lockedout", api="fence", tier="100k")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # hold the write lock
        try:
            with pytest.raises(StoreError) as info:
                s.consume(app_key=app.app_key, api="fence")
            assert info.value.code == 5002 and info.value.kind == "locked"
            assert "consume quota" in str(info.value) and "locked" in str(info.value)
            [fault] = s.faults()
            assert (fault.kind, fault.operation) == ("locked", "consume quota")
            assert s.get_app(app.app_key) is not None  # reads still work in WAL
        finally:
            other.execute("ROLLBACK")
            other.close()
        assert s.consume(app_key=app.app_key, api="fence").ok  # recovers


def test_disk_full_is_store_error_not_crash(tmp_path: Path) -> None:
    """A genuine SQLITE_FULL: the file is capped with PRAGMA max_page_count."""
    path = db_path(tmp_path)
    Store(path=path).close()
    with sqlite3.connect(path) as raw:
        pages = raw.execute("PRAGMA page_count").fetchone()[0]
    with Store(path=path, pragmas={"max_page_count": pages + 2}) as s:
        s.create_app(name="fullapp", description="", grants=["fence"])
        with pytest.raises(StoreError) as info:
            for i in range(500):
                s.create_app(name=f"app{i:04d}", description="x" * 400, grants=["fence"])
        assert info.value.code == 5002 and info.value.kind == "full"
        assert "full" in str(info.value)
        n_apps = len(s.list_apps())  # the failed transaction was rolled back; reads work
        assert n_apps >= 1

        # Monitoring data that cannot be flushed stays in memory and stays visible.
        for minute in range(200):
            s.record_request(
                app_key="k" * 24,
                api="fence",
                code=0,
                latency_ms=3.0,
                request_bytes=10,
                response_bytes=20,
                at=NOW + timedelta(minutes=minute),
            )
        with pytest.raises(StoreError):
            s.flush()
        assert s.pending_rows == 200
        stats = s.minute_stats(since=NOW)
        assert sum(m.requests for m in stats) == 200
        assert {f.kind for f in s.faults()} == {"full"}
        assert "safety_edge_store_faults_total" in s.prometheus_text()
    # close() could not flush either; it logged and closed without raising.


# -- monitoring ------------------------------------------------------------------------


def test_percentiles_from_histogram() -> None:
    assert histogram_percentile({}, 0.5) is None
    rng = np.random.default_rng(0)
    lat = rng.lognormal(mean=3.0, sigma=1.0, size=5000)
    hist: dict[int, int] = {}
    for v in lat:
        b = int(np.searchsorted(LATENCY_BOUNDS_MS, v, side="left"))
        hist[b] = hist.get(b, 0) + 1
    for q in (0.5, 0.95, 0.99):
        est = histogram_percentile(hist, q)
        assert est is not None
        assert abs(est - np.quantile(lat, q)) / np.quantile(lat, q) < 0.125


def test_record_flush_query_and_restart(tmp_path: Path) -> None:
    path = db_path(tmp_path)
    lat = np.linspace(1.0, 200.0, 100)
    with Store(path=path) as s:
        for i, v in enumerate(lat):
            s.record_request(
                app_key="a" * 24,
                api="fence",
                code=0 if i % 10 else (5001 if i % 20 else 4009),
                latency_ms=float(v),
                request_bytes=1000,
                response_bytes=100,
                at=NOW,
            )
        s.record_request(
            app_key=None, api=None, code=4000, latency_ms=0.5, request_bytes=7,
            response_bytes=9, at=NOW + timedelta(minutes=1),
        )  # fmt: skip
        before = s.minute_stats(since=NOW - timedelta(minutes=5))  # unflushed, visible
        assert s.flush() == 2
        assert s.pending_rows == 0
        # More requests in the same minute after a flush add up.
        s.record_request(
            app_key="a" * 24, api="fence", code=0, latency_ms=10.0, request_bytes=1000,
            response_bytes=100, at=NOW,
        )  # fmt: skip
    assert [m.requests for m in before] == [100, 1]
    with Store(path=path) as s:  # survives restart
        stats = s.minute_stats(since=NOW - timedelta(minutes=5))
        [m, unknown] = stats
        assert m.minute == NOW.replace(second=0)
        assert (m.app_key, m.api, m.requests, m.errors) == ("a" * 24, "fence", 101, 10)
        assert m.errors_by_code == {4009: 5, 5001: 5}
        assert (m.request_bytes, m.response_bytes) == (101_000, 10_100)
        ref = np.append(lat, 10.0)
        for got, q in ((m.p50_ms, 0.5), (m.p95_ms, 0.95), (m.p99_ms, 0.99)):
            assert got is not None
            assert abs(got - np.quantile(ref, q)) / np.quantile(ref, q) < 0.13
        assert m.max_ms == pytest.approx(200.0)
        assert (unknown.app_key, unknown.api, unknown.errors_by_code) == (None, None, {4000: 1})
        assert s.minute_stats(app_key="a" * 24, api="fence", since=NOW) == [m]
        assert s.minute_stats(api="hardhat", since=NOW) == []
        assert s.minute_stats(since=NOW, until=NOW.replace(second=0)) == []
        d = m.to_dict()
        assert d["errors_by_code"] == {"4009": 5, "5001": 5} and d["requests"] == 101

        # Retention: rows older than the cut go.
        deleted = s.prune(1, now=NOW + timedelta(days=1, minutes=1, seconds=30))
        assert deleted > 0
        assert s.minute_stats(since=NOW - timedelta(minutes=5)) == []


def test_prune_keeps_recent_and_open_alerts(store: Store) -> None:
    store.record_request(
        app_key=None, api="fence", code=0, latency_ms=1, request_bytes=1, response_bytes=1,
        at=NOW,
    )  # fmt: skip
    store.open_alert(kind="x", key="open", cause="c", now=NOW - timedelta(days=90))
    store.open_alert(kind="x", key="old", cause="c", now=NOW - timedelta(days=90))
    store.close_alert(kind="x", key="old", now=NOW - timedelta(days=89))
    store.flush()
    assert store.prune(30, now=NOW) == 1  # only the old resolved alert
    assert [a.key for a in store.list_alerts()] == ["open"]
    assert len(store.minute_stats(since=NOW - timedelta(minutes=1))) == 1


def test_prometheus_text(store: Store) -> None:
    app = store.create_app(name='quo"te\\app', description="", grants=["fence"])
    store.add_package(app=app.app_key, api="fence", tier="100k", calls=40)
    for i, ms in enumerate([0.5, 3.0, 30.0, 300.0, 3000.0, 30000.0]):
        store.record_request(
            app_key=app.app_key,
            api="fence",
            code=0 if i else 4012,
            latency_ms=ms,
            request_bytes=100,
            response_bytes=10,
        )
    store.open_alert(kind="quota_low", key="k", cause="c")
    text = store.prometheus_text()
    assert text.endswith("\n")
    lab = 'app="quo\\"te\\\\app",api="fence"'
    assert f'safety_edge_requests_total{{{lab},code="0"}} 5' in text
    assert f'safety_edge_requests_total{{{lab},code="4012"}} 1' in text
    buckets = [
        (m.group(1), int(m.group(2)))
        for m in re.finditer(
            r'safety_edge_request_duration_seconds_bucket\{.*le="([^"]+)"\} (\d+)', text
        )
    ]
    counts = [n for _, n in buckets]
    assert counts == sorted(counts) and buckets[-1] == ("+Inf", 6)
    assert dict(buckets)["0.001"] == 1 and dict(buckets)["10.0"] == 5
    assert f"safety_edge_request_duration_seconds_count{{{lab}}} 6" in text
    assert f"safety_edge_request_bytes_total{{{lab}}} 600" in text
    assert f"safety_edge_quota_remaining_calls{{{lab}}} 40" in text
    assert 'safety_edge_alerts_active{kind="quota_low"} 1' in text
    assert "safety_edge_store_up 1" in text
    for line in text.splitlines():  # every sample line is "name{labels} number"
        if not line.startswith("#"):
            assert re.fullmatch(r"[a-z_]+(\{.*\})? -?[0-9.e+]+", line), line


# -- alerts in the store ---------------------------------------------------------------


def test_alert_open_is_idempotent_and_close(store: Store) -> None:
    a1 = store.open_alert(kind="k", key="x", cause="first", app_key="a", api="fence", now=NOW)
    a2 = store.open_alert(kind="k", key="x", cause="second", now=NOW + timedelta(minutes=1))
    assert a1.id == a2.id and a2.count == 2 and a2.cause == "second"
    assert a2.started_at == NOW.replace(microsecond=0) and a2.active
    other = store.open_alert(kind="k", key="y", cause="c", now=NOW + timedelta(minutes=2))
    assert [a.id for a in store.list_alerts(active=True)] == [other.id, a1.id]
    closed = store.close_alert(kind="k", key="x", now=NOW + timedelta(minutes=3))
    assert closed is not None and closed.ended_at is not None and not closed.active
    assert store.close_alert(kind="k", key="x") is None
    assert [a.id for a in store.list_alerts(active=False)] == [a1.id]
    reopened = store.open_alert(kind="k", key="x", cause="again", now=NOW + timedelta(minutes=4))
    assert reopened.id != a1.id and reopened.count == 1
    assert len(store.list_alerts(limit=2)) == 2
    assert reopened.to_dict()["state"] == "active"


def test_waiting_on_a_locked_file_is_bounded(tmp_path: Path) -> None:
    """16 callers queued behind a file locked by another process all fail within about
    two busy timeouts, not one busy timeout after another (16 x 0.2 s)."""
    path = db_path(tmp_path)
    with Store(path=path, busy_timeout_ms=200) as s:
        app = s.create_app(name="queued", description="", grants=["fence"])
        s.add_package(app="queued", api="fence", tier="100k")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        outcomes: list[str] = []

        def call() -> None:
            try:
                s.consume(app_key=app.app_key, api="fence")
                outcomes.append("ok")
            except StoreError as exc:
                outcomes.append(exc.kind)

        threads = [threading.Thread(target=call) for _ in range(16)]
        t0 = time.perf_counter()
        try:
            for t in threads:
                t.start()
            for t in threads:
                t.join(30)
        finally:
            other.execute("ROLLBACK")
            other.close()
        elapsed = time.perf_counter() - t0
        assert outcomes == ["locked"] * 16
        assert elapsed < 2.0, elapsed


def _wait_until_writer_holds_connection(s: Store, thread: threading.Thread) -> None:
    """Block until ``thread`` holds the store's writer connection (white box: the
    connection lock is private) -- it is then waiting for the file's write lock."""
    end = time.monotonic() + 10
    while time.monotonic() < end and thread.is_alive():
        if not s._lock.acquire(blocking=False):
            return
        s._lock.release()
        time.sleep(0.001)
    raise AssertionError("the writer never took the connection")


def test_reads_do_not_queue_behind_a_write_waiting_for_the_lock(tmp_path: Path) -> None:
    """WAL readers need no write lock: while a write of this store waits (up to its busy
    timeout) for a lock another process holds, lookups, quota, monitoring, alerts and
    metrics still answer at once, instead of queueing behind the waiting write."""
    path = db_path(tmp_path)
    with Store(path=path, busy_timeout_ms=5000) as s:
        app = s.create_app(name="readers", description="", grants=["fence"])
        s.add_package(app="readers", api="fence", tier="100k", calls=10)
        s.open_alert(kind="quota_low", key="x", cause="test")
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        results: list[object] = []
        writer = threading.Thread(
            target=lambda: results.append(s.consume(app_key=app.app_key, api="fence"))
        )
        try:
            writer.start()
            _wait_until_writer_holds_connection(s, writer)
            assert s.get_app(app.app_key) == app
            assert s.find_app("readers") == app
            assert [a.app_key for a in s.list_apps()] == [app.app_key]
            assert s.grant_for_service_code(app.service_codes["fence"]) is not None
            assert s.remaining(app_key=app.app_key, api="fence") == 10
            assert [p.used for p in s.quota("readers")] == [0]
            assert s.minute_stats(since=NOW) == []
            assert [a.key for a in s.list_alerts(active=True)] == ["x"]
            assert "safety_edge_store_up 1" in s.prometheus_text()
            assert s.schema_version == 1
            # All answered while the write was still waiting for the lock.
            assert writer.is_alive() and results == []
        finally:
            other.execute("ROLLBACK")
            other.close()
            writer.join(10)
        [res] = results
        assert res.ok and res.remaining == 9  # the write went through once the lock freed
        assert s.faults() == []


def test_a_flush_waiting_for_the_lock_keeps_its_rows_visible(tmp_path: Path) -> None:
    """Aggregates a flush has taken from memory but not committed yet are counted by
    minute_stats (once), and once it commits they are counted from the file (once)."""
    path = db_path(tmp_path)
    with Store(path=path, busy_timeout_ms=5000) as s:
        for _ in range(5):
            s.record_request(
                app_key="k" * 24, api="fence", code=0, latency_ms=2.0, request_bytes=1,
                response_bytes=1, at=NOW,
            )  # fmt: skip
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        flushed: list[int] = []
        flusher = threading.Thread(target=lambda: flushed.append(s.flush()))
        try:
            flusher.start()
            _wait_until_writer_holds_connection(s, flusher)
            assert [m.requests for m in s.minute_stats(since=NOW)] == [5]
            assert s.pending_rows == 1
            assert flusher.is_alive() and flushed == []
        finally:
            other.execute("ROLLBACK")
            other.close()
            flusher.join(10)
        assert flushed == [1]
        assert s.pending_rows == 0
        assert [m.requests for m in s.minute_stats(since=NOW)] == [5]


def test_minute_stats_counts_each_request_once_while_flushes_run(tmp_path: Path) -> None:
    """A request recorded before a read is in that read exactly once, whichever step of a
    concurrent flush (taken from memory, written, committed) the read meets."""
    with Store(path=db_path(tmp_path)) as s:
        stop = threading.Event()
        flushes = 0

        def flush_forever() -> None:
            nonlocal flushes
            while not stop.is_set():
                flushes += s.flush() > 0

        t = threading.Thread(target=flush_forever)
        t.start()
        wrong: list[tuple[int, int]] = []
        n = 0
        end = time.monotonic() + 1.0
        try:
            while time.monotonic() < end:
                s.record_request(
                    app_key="k" * 24, api="fence", code=0, latency_ms=1.0, request_bytes=1,
                    response_bytes=1, at=NOW,
                )  # fmt: skip
                n += 1
                got = sum(m.requests for m in s.minute_stats(since=NOW))
                if got != n:
                    wrong.append((n, got))
        finally:
            stop.set()
            t.join(10)
        assert flushes > 10  # the reads really met flushes
        assert wrong == [], f"{len(wrong)} of {n} reads miscounted, e.g. {wrong[:5]}"


# -- durability (power cuts) ---------------------------------------------------------

_SYNC_STATEMENTS = ("PRAGMA synchronous", "BEGIN", "COMMIT", "ROLLBACK")


def _traced(s: Store) -> list[str]:
    """Record every statement the store's writer connection runs from now on."""
    stmts: list[str] = []
    s._conn.set_trace_callback(stmts.append)
    return stmts


def _tx_shape(stmts: list[str]) -> list[str]:
    """The transaction and ``synchronous`` statements of ``stmts`` (cleared after)."""
    out = [x for x in stmts if x.startswith(_SYNC_STATEMENTS)]
    stmts.clear()
    return out


DURABLE = ["PRAGMA synchronous = FULL", "BEGIN IMMEDIATE", "COMMIT", "PRAGMA synchronous = 1"]


def test_admin_writes_commit_with_synchronous_full(tmp_path: Path) -> None:
    """Creating an app, granting, disabling, rotating a secret and selling a package must
    survive a power cut once they return: each commits with synchronous=FULL (set before
    BEGIN: SQLite refuses it inside a transaction), and the writer goes back to NORMAL."""
    with Store(path=db_path(tmp_path)) as s:  # as the gateway and the CLI open it
        sync = "PRAGMA synchronous"
        assert s._conn.execute(sync).fetchone()[0] == 1  # NORMAL between durable writes
        stmts = _traced(s)
        app = s.create_app(name="site-a", description="", grants=["hardhat"])
        assert _tx_shape(stmts) == DURABLE
        s.add_grant(app="site-a", api="workwear")
        assert _tx_shape(stmts) == DURABLE
        s.add_package(app="site-a", api="hardhat", tier="100k", start=NOW - timedelta(days=1))
        assert _tx_shape(stmts) == DURABLE
        s.rotate_secret("site-a")
        assert _tx_shape(stmts) == DURABLE
        s.disable_app("site-a")
        assert _tx_shape(stmts) == DURABLE
        s.disable_app(app.app_key, enabled=True)
        assert _tx_shape(stmts) == DURABLE
        # the FULL level is really in force inside the transaction path, and only there
        with s._tx("probe", durable=True) as c:
            assert c.in_transaction
            assert c.execute(sync).fetchone()[0] == 2
        with s._tx("probe") as c:
            assert c.execute(sync).fetchone()[0] == 1
        assert s._conn.execute(sync).fetchone()[0] == 1
        # a refused admin write rolls back, then restores the level; the writer still works
        stmts.clear()
        with pytest.raises(AppError, match="already taken"):
            s.create_app(name="SITE-A", description="", grants=["hardhat"])
        assert _tx_shape(stmts) == [
            "PRAGMA synchronous = FULL",
            "BEGIN IMMEDIATE",
            "ROLLBACK",
            "PRAGMA synchronous = 1",
        ]
        assert s._conn.execute(sync).fetchone()[0] == 1
        assert s.consume(app_key=app.app_key, api="hardhat", now=NOW).ok


def test_quota_draws_stay_normal_and_the_flush_makes_them_durable(tmp_path: Path) -> None:
    """consume (once per API call) commits at NORMAL (an fsync each would cost ms); the
    monitoring flush that follows every answered call commits at FULL, whose WAL fsync
    also covers the draws committed before it."""
    with Store(path=db_path(tmp_path)) as s:
        app = s.create_app(name="site-a", description="", grants=["hardhat"])
        s.add_package(app="site-a", api="hardhat", tier="100k", start=NOW - timedelta(days=1))
        stmts = _traced(s)
        assert s.consume(app_key=app.app_key, api="hardhat", now=NOW).ok
        assert _tx_shape(stmts) == ["BEGIN IMMEDIATE", "COMMIT"]
        s.record_request(
            app_key=app.app_key,
            api="hardhat",
            code=0,
            latency_ms=3.0,
            request_bytes=10,
            response_bytes=20,
            at=NOW,
        )
        assert s.flush() == 1
        assert _tx_shape(stmts) == DURABLE
        assert s.flush() == 0  # nothing pending: no transaction at all
        assert _tx_shape(stmts) == []


def test_synchronous_full_pragma_makes_every_write_durable(tmp_path: Path) -> None:
    """``pragmas={"synchronous": "FULL"}``: the writer stays at FULL (no switching back to
    NORMAL after an admin write), so quota draws are durable too."""
    with Store(path=db_path(tmp_path), pragmas={"synchronous": "FULL"}) as s:
        stmts = _traced(s)
        app = s.create_app(name="site-a", description="", grants=["hardhat"])
        assert _tx_shape(stmts) == ["BEGIN IMMEDIATE", "COMMIT"]
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2
        s.add_package(app="site-a", api="hardhat", tier="100k", start=NOW - timedelta(days=1))
        assert s.consume(app_key=app.app_key, api="hardhat", now=NOW).ok
        assert s._conn.execute("PRAGMA synchronous").fetchone()[0] == 2


_STRACE_CHILD = r"""
import os, sys
from datetime import datetime, timezone
from edge.api.store import Store

def mark(name):  # a syscall strace shows, between the operations
    os.access("/nonexistent-safety-edge-mark/" + name, os.F_OK)

now = datetime(2026, 6, 15, 12, 30, 10, tzinfo=timezone.utc)
s = Store(path=sys.argv[1])
mark("open")
app = s.create_app(name="site-a", description="", grants=["hardhat"])
mark("create_app")
s.add_grant(app="site-a", api="workwear")
mark("add_grant")
s.add_package(app="site-a", api="hardhat", tier="100k", start=now.replace(month=1))
mark("add_package")
for _ in range(5):
    assert s.consume(app_key=app.app_key, api="hardhat", now=now).ok
mark("consume")
s.rotate_secret("site-a")
mark("rotate_secret")
s.disable_app("site-a")
mark("disable_app")
s.record_request(app_key=app.app_key, api="hardhat", code=0, latency_ms=1.0,
                 request_bytes=1, response_bytes=1, at=now)
s.flush()
mark("flush")
s.close()
"""


def test_durable_writes_fsync_the_wal_before_returning(tmp_path: Path) -> None:
    """The system calls themselves (strace): each admin write and the flush fsync the
    ``-wal`` file before returning; quota draws do not."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("strace is not installed")
    path = db_path(tmp_path)
    log_path = tmp_path / "strace.txt"
    trace = ["-qq", "-y", "-e", "trace=fsync,fdatasync,access", "-o", str(log_path)]
    proc = subprocess.run(
        [strace, *trace, sys.executable, "-c", _STRACE_CHILD, str(path)],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if proc.returncode != 0 and "ptrace" in proc.stderr.lower():
        pytest.skip(f"strace cannot trace here: {proc.stderr.strip()[:200]}")
    assert proc.returncode == 0, proc.stderr
    wal_syncs: dict[str, int] = {}
    n = 0
    for line in log_path.read_text().splitlines():
        m = re.search(r"/nonexistent-safety-edge-mark/(\w+)", line)
        if m:
            wal_syncs[m.group(1)], n = n, 0
        elif re.match(rf"f(data)?sync\(\d+<{re.escape(str(path))}-wal>\) = 0", line):
            n += 1
    assert wal_syncs == {
        "open": wal_syncs["open"],  # migrations: not asserted
        "create_app": 1,
        "add_grant": 1,
        "add_package": 1,
        "consume": 0,
        "rotate_secret": 1,
        "disable_app": 1,
        "flush": 1,
    }
