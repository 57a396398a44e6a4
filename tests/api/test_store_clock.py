"""Resource packages sold while the gateway clock is unset (booted without a real-time
clock, NTP not reached yet) are refused instead of dated to the wrong year. A clock that is
NTP synchronized is believed even behind a record written while the clock ran ahead."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from edge.api.commands import add_subcommands
from edge.api.store import CLOCK_FLOOR, CLOCK_SLACK, AppError, Store, add_one_year, db_path

EPOCH_BOOT = datetime(1970, 1, 1, 0, 0, 42, tzinfo=timezone.utc)  # no RTC battery
Y2099 = datetime(2099, 1, 1, 0, 0, tzinfo=timezone.utc)  # an RTC reading of garbage


def synced() -> bool | None:
    return True


def unsynced() -> bool | None:
    return False


@pytest.fixture
def store(tmp_path: Path) -> Store:
    with Store(path=db_path(tmp_path)) as s:
        yield s


def test_package_without_start_refused_under_1970_clock(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    app = store.create_app(name="line3", description="", grants=["hardhat"])
    with caplog.at_level(logging.WARNING, "edge.api.store"), pytest.raises(AppError) as ei:
        store.add_package(app="line3", api="hardhat", tier="4m", now=EPOCH_BOOT)
    msg = str(ei.value)
    assert "clock reads 1970-01-01T00:00:42+00:00" in msg
    assert "--start" in msg and "Start field" in msg
    assert "probably not set yet" in caplog.text
    assert store.quota("line3") == []  # nothing was sold

    # With an explicit start the sale goes through at the wrong clock, and after NTP the
    # package serves calls (the audit's case: before, it was dated 1970 and expired).
    real = datetime.now(timezone.utc).replace(microsecond=0)
    p = store.add_package(app="line3", api="hardhat", tier="4m", start=real, now=EPOCH_BOOT)
    assert (p.start, p.expires_at, p.active) == (real, add_one_year(real), False)
    r = store.consume(app_key=app.app_key, api="hardhat", now=real + timedelta(seconds=5))
    assert (r.ok, r.remaining) == (True, 3_999_999)


def test_clock_behind_newest_record_is_refused(store: Store) -> None:
    """A clock at the image's build date passes the fixed floor once the code is older than
    the build, but not the database's own history (here: a monitoring minute)."""
    store.create_app(name="line3", description="", grants=["fence"])
    served = datetime.now(timezone.utc) + timedelta(days=2)  # yesterday's traffic, say
    store.record_request(
        app_key=None, api=None, code=0, latency_ms=1.0, request_bytes=1, response_bytes=1,
        at=served,
    )  # fmt: skip
    store.flush()
    minute = datetime.fromtimestamp(int(served.timestamp()) // 60 * 60, timezone.utc)
    with pytest.raises(
        AppError, match=re.escape(f"before a monitoring minute recorded at {minute.isoformat()}")
    ):
        store.add_package(app="line3", api="fence", tier="100k", clock_synchronized=unsynced)
    # Within the slack (an NTP step back of a drifting clock) the clock is believed.
    ok = store.add_package(
        app="line3", api="fence", tier="100k", now=minute - CLOCK_SLACK, clock_synchronized=unsynced
    )
    assert ok.start == minute - CLOCK_SLACK and ok.active


def test_records_from_a_clock_that_ran_ahead_bind_only_an_unsynchronized_clock(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    """The clock once read 2099 (RTC garbage, a wrong NTP/GPS step): an alert and a
    monitoring minute were stamped then. Today's clock, NTP synchronized, is right by
    definition: the sale goes through (a WARNING names the record). Not synchronized: the
    records are a floor, as before (fail-safe)."""
    store.create_app(name="line3", description="", grants=["fence"])
    store.open_alert(
        kind="store_fault", key="disk", cause="garbage clock", now=Y2099 + timedelta(hours=1)
    )
    store.record_request(
        app_key=None, api=None, code=0, latency_ms=1.0, request_bytes=1, response_bytes=1,
        at=Y2099,
    )  # fmt: skip
    store.flush()
    for probe in (unsynced, lambda: None):  # not synchronized, or unknown: refused
        with pytest.raises(AppError, match="before an alert recorded at 2099-01-01T01:00:00"):
            store.add_package(app="line3", api="fence", tier="100k", clock_synchronized=probe)
    assert store.quota("line3") == []
    with caplog.at_level(logging.WARNING, "edge.api.store"):
        p = store.add_package(app="line3", api="fence", tier="100k", clock_synchronized=synced)
    now = datetime.now(timezone.utc)
    assert p.active and abs((p.start - now).total_seconds()) < 5
    assert "NTP-synchronized clock" in caplog.text and "2099-01-01" in caplog.text
    # The fixed floor still holds for a synchronized clock (it cannot be earlier).
    with pytest.raises(AppError, match=re.escape("before this software's release")):
        store.add_package(
            app="line3",
            api="fence",
            tier="100k",
            now=CLOCK_FLOOR - timedelta(seconds=1),
            clock_synchronized=synced,
        )


def test_fixed_floor_without_history(store: Store) -> None:
    """Every record written at the unset clock (first boot): only CLOCK_FLOOR is left."""
    store.create_app(name="line3", description="", grants=["fence"])
    with sqlite3.connect(store.path) as db:  # as if created at the 1970 clock
        db.execute("UPDATE apps SET created_at = 42, updated_at = 42")
        db.execute("UPDATE grants SET created_at = 42")
    with pytest.raises(AppError, match=re.escape("before this software's release (2026-11-01)")):
        store.add_package(
            app="line3", api="fence", tier="100k", now=CLOCK_FLOOR - timedelta(seconds=1)
        )
    assert store.add_package(app="line3", api="fence", tier="100k", now=CLOCK_FLOOR).active


def test_plausible_clock_unchanged(store: Store) -> None:
    store.create_app(name="line3", description="", grants=["fence"])
    p = store.add_package(app="line3", api="fence", tier="100k")
    now = datetime.now(timezone.utc)
    assert p.active and abs((p.start - now).total_seconds()) < 5
    # A package scheduled to start next year does not raise the floor (start is not a
    # clock reading; its sale time is).
    later = now + timedelta(days=300)
    store.add_package(app="line3", api="fence", tier="100k", start=later)
    assert store.add_package(app="line3", api="fence", tier="100k").active


def test_cli_quota_add_asks_for_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # This machine's clock may be NTP synchronized (then it is believed): the command runs
    # with the probe saying not synchronized, as on a gateway whose NTP is not reached.
    monkeypatch.setattr("edge.service.clock.clock_synchronized", unsynced)
    with Store(path=db_path(tmp_path)) as st:
        st.create_app(name="line3", description="", grants=["fence"])
        st.record_request(
            app_key=None, api=None, code=0, latency_ms=1.0, request_bytes=1, response_bytes=1,
            at=datetime.now(timezone.utc) + timedelta(days=2),
        )  # fmt: skip
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    argv = ["quota", "add", "line3", "--api", "fence", "--tier", "8m", "--data-dir", str(tmp_path)]
    args = parser.parse_args(argv)
    assert args.func(args) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error 5000: the gateway clock reads ")
    assert "quota add ... --start" in err and err.count("\n") == 1
    args = parser.parse_args([*argv, "--start", "2026-12-01T08:00Z"])
    assert args.func(args) == 0
    assert json.loads(capsys.readouterr().out)["start"] == "2026-12-01T08:00:00+00:00"
