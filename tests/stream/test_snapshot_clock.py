"""Snapshot retention by age when a clock was wrong: real JPEGs, a real events database.

The bug these pin: the sweeper aged a snapshot by its file's modification time against the
wall clock. A snapshot saved after a reboot with the clock at the image's build date (before
NTP synced) looked months old once the clock stepped and was deleted at the next sweep, while
its event stayed in the events table; ``events verify`` then counted it as expired by
retention. With ``events_db`` the age of a stored event's snapshot is read from the events
table, in chain order (:meth:`SnapshotStore.sweep`)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.mqtt.ids import EventIdGenerator
from edge.stream.events import EventStore, ZoneEvent, events_db_path
from edge.stream.evidence import VerifyReport, verify_evidence
from edge.stream.snapshots import SnapshotStore

DAY_MS = 86_400_000
BUILD_DATE = int(datetime(2026, 1, 15, 8, 0, tzinfo=timezone.utc).timestamp() * 1000)
_ids = EventIdGenerator()


def start_event(
    t_ms: int, *, camera: str = "dock", zone: str = "bay", score: float = 0.9, track_id: int = 1
) -> ZoneEvent:
    """A fence ``start`` event of a person stamped ``t_ms`` (ms since the epoch)."""
    return ZoneEvent(
        event_id=_ids(),
        type="start",
        camera=camera,
        task="fence",
        zone=zone,
        label="person",
        score=score,
        box=(1, 2, 3, 4),
        track_id=track_id,
        time_ms=t_ms,
    )


def snapshot_from_1970(snaps: SnapshotStore) -> Path:
    """A snapshot saved by ``snaps`` for a ``start`` event stamped now (no events row), its
    file time set to 1970; returns the file."""
    saved = snaps.save_hashed(np.zeros((8, 8, 3), np.uint8), event=start_event(now_ms()))
    assert saved is not None
    path = snaps.root / saved.path
    os.utime(path, (0, 0))
    return path


class Site:
    """A data folder: the events database and the snapshot folder, as the gateway lays them
    out, with a 30-day snapshot retention and no size bound unless given."""

    def __init__(self, root: Path, *, max_total_bytes: int | None = None) -> None:
        self.db = events_db_path(root)
        self.events = EventStore(path=self.db)
        self.snaps = SnapshotStore(
            root=root / "snapshots",
            max_age_days=30,
            max_total_bytes=max_total_bytes,
            events_db=self.db,
        )

    def snapshot(self, t_ms: int, *, store: bool = True, mtime_ms: int | None = None) -> Path:
        """A ``start`` event stamped ``t_ms`` with its snapshot (file time ``mtime_ms``,
        default ``t_ms``: what the kernel stamps with the same clock), stored unless
        ``store`` is false; returns the file."""
        ev = start_event(t_ms)
        saved = self.snaps.save_hashed(np.zeros((48, 64, 3), np.uint8), event=ev)
        assert saved is not None
        path = self.snaps.root / saved.path
        m = (t_ms if mtime_ms is None else mtime_ms) / 1000
        os.utime(path, (m, m))
        if store:
            self.events.add(replace(ev, snapshot=saved.path, snapshot_sha256=saved.sha256))
        return path

    def plain(self, t_ms: int) -> None:
        """An event without a snapshot (another camera's, say)."""
        self.events.add(start_event(t_ms, camera="gate", zone="yard", score=0.8, track_id=2))

    def verify(self) -> VerifyReport:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, isolation_level=None)
        try:
            report = verify_evidence(conn, snapshots_root=self.snaps.root)
        finally:
            conn.close()
        assert report.ok, report.to_dict()
        return report

    def close(self) -> None:
        self.snaps.close()
        self.events.close()


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    s = Site(tmp_path)
    yield s
    s.close()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_a_snapshot_of_a_stored_event_outlives_a_file_time_from_1970(site: Site) -> None:
    """The audit's check: a snapshot of a stored current event with its file time at 1970
    stays; an orphan snapshot (no event) older than the retention still goes."""
    now = now_ms()
    kept = site.snapshot(now - DAY_MS, mtime_ms=0)
    orphan = site.snapshot(now - 40 * DAY_MS, store=False)
    r = site.snaps.sweep()
    assert kept.exists() and not orphan.exists()
    assert (r.deleted_by_age, r.held, r.kept_files) == (1, 1, 1)
    assert site.verify().snapshots_ok == 1


def test_the_build_date_clock_after_a_reboot(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    """The repro: an incident with the right clock, a reboot with the clock at the build
    date (event and file stamped then), NTP steps. The sweep keeps the snapshot (the event
    is stored after a current one, so it is no older) and says so once."""
    caplog.set_level(logging.WARNING, logger="edge.stream")
    now = now_ms()
    site.plain(now - 5 * 3_600_000)
    boot = site.snapshot(BUILD_DATE)
    assert now - BUILD_DATE > 30 * DAY_MS  # the file looks older than the retention
    for _ in range(3):
        r = site.snaps.sweep()
        assert boot.exists() and (r.deleted_by_age, r.held) == (0, 1)
    (warning,) = [m.getMessage() for m in caplog.records if "kept" in m.getMessage()]
    assert "1 snapshots" in warning and "clock" in warning
    report = site.verify()
    assert (report.snapshots_ok, report.snapshots_expired) == (1, 0)


def test_snapshots_of_expired_events_go_whatever_their_file_time(site: Site) -> None:
    """Retention still deletes by age: the snapshots of events older than 30 days, stored
    before the first current event, go even with a file time of now; a current event's stays
    with a file time of 1970; an expired event stored after a current one waits (the
    events prune keeps it too), as does one stamped a year ahead (no expired row after it)."""
    now = now_ms()
    old = [site.snapshot(now - (45 - k) * DAY_MS, mtime_ms=now) for k in range(3)]
    current = site.snapshot(now - 10 * DAY_MS, mtime_ms=0)
    late = site.snapshot(now - 31 * DAY_MS)
    ahead = site.snapshot(now + 365 * DAY_MS)
    r = site.snaps.sweep()
    assert [p.exists() for p in old] == [False] * 3
    assert current.exists() and late.exists() and ahead.exists()
    assert (r.deleted_by_age, r.held, r.kept_files) == (3, 2, 3)
    assert site.verify().snapshots_expired == 3


def test_a_clock_far_ahead_at_the_first_sweep_deletes_no_stored_events_snapshot(
    site: Site,
) -> None:
    """The gateway sweeps at start: with the clock ten years ahead (RTC garbage, no time
    sync yet) every file looked expired. Age is read against the events table's newest
    stamp, so snapshots of stored events stay; orphans go by their file time as before."""
    now = now_ms()
    files = [site.snapshot(now - k * DAY_MS) for k in (20, 5, 1)]
    orphan = site.snapshot(now - DAY_MS, store=False)
    r = site.snaps.sweep(now=(now + 3650 * DAY_MS) / 1000)
    assert all(p.exists() for p in files) and not orphan.exists()
    assert (r.deleted_by_age, r.held) == (1, 3)


def test_the_size_bound_still_deletes_the_oldest_files_first(tmp_path: Path) -> None:
    """``snapshot_max_mb`` is unchanged: over the bound, the oldest by file time go, stored
    events or not."""
    s = Site(tmp_path, max_total_bytes=1)
    try:
        now = now_ms()
        first = s.snapshot(now - 2 * DAY_MS, mtime_ms=0)
        second = s.snapshot(now - DAY_MS)
        size = second.stat().st_size
        s.snaps.max_total_bytes = size
        r = s.snaps.sweep()
        assert not first.exists() and second.exists()
        assert (r.deleted_by_age, r.deleted_by_size) == (0, 1)
    finally:
        s.close()


def test_without_the_events_database_file_every_snapshot_goes_by_file_time(
    tmp_path: Path,
) -> None:
    """No database yet (nothing was stored): nothing vouches for a snapshot, so its file
    time decides, as without ``events_db``."""
    snaps = SnapshotStore(root=tmp_path / "s", max_age_days=30, events_db=tmp_path / "no.db")
    snapshot_from_1970(snaps)
    assert snaps.sweep().deleted_by_age == 1
    assert not (tmp_path / "no.db").exists()  # the sweeper does not create it


def test_an_unreadable_events_database_deletes_nothing_by_age(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A damaged database: which snapshots are current is unknown, so none goes by age
    (one WARNING until it reads again); the size bound still applies."""
    caplog.set_level(logging.INFO, logger="edge.stream")
    db = tmp_path / "events.sqlite3"
    db.write_bytes(b"not a database" * 100)
    snaps = SnapshotStore(root=tmp_path / "s", max_age_days=30, events_db=db)
    path = snapshot_from_1970(snaps)
    for _ in range(2):
        assert snaps.sweep().deleted_by_age == 0 and path.exists()
    warnings = [m.getMessage() for m in caplog.records if m.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot read the events table" in warnings[0]
    db.unlink()
    assert snaps.sweep().deleted_by_age == 1 and not path.exists()
    assert any("reads again" in m.getMessage() for m in caplog.records)
