"""A snapshot folder that cannot be written turns ``/healthz`` degraded (and back).

Before, every snapshot was lost (each save logged, the event stored without its picture)
while ``/healthz`` said ``ok``. Whole gateway in-process; the snapshot folder is a path
whose place is taken by a regular file, so creating it fails for root too."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edge.config import config_from_mapping
from edge.mqtt.ids import EventIdGenerator
from edge.service.gateway import SNAPSHOT_FAILURES_DEGRADED, GatewayService
from edge.stream.events import ZoneEvent
from tests.service.running import running_gateway

_ids = EventIdGenerator()


def event() -> ZoneEvent:
    return ZoneEvent(
        event_id=_ids(),
        type="start",
        camera="dock",
        task="fence",
        zone="bay",
        label="person",
        score=0.9,
        box=(1, 2, 3, 4),
        track_id=1,
        time_ms=1_780_000_000_000,
    )


def test_failing_snapshot_saves_make_the_gateway_degraded(tmp_path: Path) -> None:
    blocked = tmp_path / "snapshots"
    blocked.write_bytes(b"not a folder")
    cfg = config_from_mapping(
        {
            "gateway_id": "gw-snaphealth",
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "tasks": {"fence": None, "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "storage": {"snapshots": True, "snapshot_dir": str(blocked)},
        }
    )
    image = np.zeros((48, 64, 3), np.uint8)
    with running_gateway(GatewayService(config=cfg)) as gw:
        snaps = gw.service.snapshots
        assert snaps is not None
        assert gw.service.health()["status"] == "ok"
        for k in range(SNAPSHOT_FAILURES_DEGRADED):
            assert snaps.save_hashed(image, event=event()) is None
            degraded = gw.service.health()["status"] == "degraded"
            assert degraded == (k + 1 >= SNAPSHOT_FAILURES_DEGRADED)
        problems = gw.service.health()["problems"]
        assert any("snapshots could not be saved" in p and str(blocked) in p for p in problems)
        blocked.unlink()  # fixed: the folder can be created now
        assert snaps.save_hashed(image, event=event()) is not None
        health = gw.service.health()
        assert health["status"] == "ok", health["problems"]
