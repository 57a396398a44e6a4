"""A snapshot folder that cannot be written: one WARNING at start naming it and the
errno, and a failures-in-a-row count the gateway can turn into degraded health."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from edge.stream.events import ZoneEvent
from edge.stream.snapshots import SnapshotStore


def _event(i: int) -> ZoneEvent:
    return ZoneEvent(
        event_id=f"01J000000000000000000000{i:02d}",
        type="start",
        camera="cam",
        task="fence",
        zone="z",
        label="person",
        score=0.9,
        box=(10, 10, 30, 40),
        track_id=1,
        time_ms=1_700_000_000_000 + i,
    )


def test_an_unwritable_folder_warns_once_at_start_and_counts_failures(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")  # root cannot write below a file either (ENOTDIR)
    store = SnapshotStore(root=blocker / "snaps", sweep_interval_s=3600)
    with caplog.at_level(logging.WARNING, logger="edge.stream"):
        store.start()
    store.close()
    lines = [r.getMessage() for r in caplog.records if "not writable" in r.getMessage()]
    assert len(lines) == 1 and str(blocker / "snaps") in lines[0] and "errno 20" in lines[0]
    img = np.zeros((48, 64, 3), np.uint8)
    for i in range(3):
        assert store.save(img, event=_event(i)) is None
    assert store.failures_in_a_row == 3 and store.save_failures == 3
    blocker.unlink()  # fixed: the next save succeeds and the run of failures ends
    assert store.probe_writable() is None
    assert store.save(img, event=_event(4)) is not None
    assert store.failures_in_a_row == 0 and store.save_failures == 3
