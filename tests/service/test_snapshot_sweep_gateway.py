"""The gateway wires its events database into the snapshot sweeper.

A snapshot saved while the clock was wrong carries a file time far in the past; its event is
still stored, so the gateway's sweeper must keep it (age from the events table), while an
orphan snapshot with the same file time and no event goes by file time. Before the gateway
passed ``events_db`` both were deleted at the first sweep. Whole gateway in-process, real
SQLite, real JPEG files."""

from __future__ import annotations

import time
from pathlib import Path

from edge.config import config_from_mapping
from edge.service.gateway import GatewayService
from tests.polling import wait
from tests.service.running import running_gateway
from tests.stream.test_snapshot_clock import DAY_MS, Site


def test_the_gateway_keeps_a_stored_events_snapshot_whatever_its_file_time(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    now = time.time_ns() // 1_000_000
    site = Site(data)
    try:
        kept = site.snapshot(now - DAY_MS, mtime_ms=1_000)  # stamped 1970 by a wrong clock
        orphan = site.snapshot(now - DAY_MS, store=False, mtime_ms=1_000)
    finally:
        site.close()
    assert site.snaps.root == data / "snapshots"  # where the gateway looks by default
    cfg = config_from_mapping(
        {
            "gateway_id": "gw-snap",
            "data_dir": str(data),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": None, "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "storage": {"snapshots": True, "snapshot_retention_days": 30},
        }
    )
    with running_gateway(GatewayService(config=cfg)):
        assert wait(lambda: not orphan.exists(), 15), "the sweeper did not run"
        assert kept.exists()
