"""Snapshots: drawn JPEGs in a real folder, atomic and durable writes (file and folders
fsynced before save returns), retention by age and by size."""

from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.mqtt.ids import EventIdGenerator
from edge.stream.events import ZoneEvent
from edge.stream.snapshots import SnapshotStore, draw_snapshot
from edge.stream.tracker import TRACK_IDS
from edge.types import Detections
from tests.fsfaults import FsyncRecorder, Synced, file_size_limit

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "vtest_frame.jpg"
T = int(datetime(2024, 6, 3, 12, 0, tzinfo=timezone.utc).timestamp() * 1000)
_ids = EventIdGenerator()
DAY = 86_400.0


def event(camera: str = "gate", track: int = 2, t_ms: int = T) -> ZoneEvent:
    return ZoneEvent(
        event_id=_ids(),
        type="start",
        camera=camera,
        task="fence",
        zone="yard",
        label="person",
        score=0.9,
        box=(300, 100, 360, 300),
        track_id=track,
        time_ms=t_ms,
    )


def image() -> np.ndarray:  # type: ignore[type-arg]
    img = cv2.imread(str(SAMPLE))
    assert img is not None
    return img


def test_drawing_marks_zone_boxes_and_the_incident_track() -> None:
    img = np.zeros((200, 300, 3), np.uint8)
    dets = Detections(
        xyxy=np.array([[10, 10, 60, 100], [150, 20, 200, 120]], np.float32),
        scores=np.array([0.9, 0.6], np.float32),
        class_ids=np.array([0, 0], np.int32),
        data={TRACK_IDS: np.array([4, 5], np.int64)},
    )
    poly = np.array([[100, 100], [290, 100], [290, 190], [100, 190]], np.float64)
    out = draw_snapshot(img, dets=dets, class_names=["person"], polygon=poly, highlight_track=5)
    assert img.sum() == 0  # the input is untouched
    red = (out[..., 2] > 200) & (out[..., 1] < 50) & (out[..., 0] < 50)
    assert red[20:122, 148:152].any()  # track 5's box edge is red
    assert not red[10:100, 8:12].any()  # track 4 is not
    yellow = (out[..., 2] > 200) & (out[..., 1] > 180) & (out[..., 0] < 50)
    assert yellow[10:100, 8:12].any()
    inside_zone = out[150, 200].astype(int)
    assert inside_zone[0] > 30 and inside_zone[2] == 0  # light blue-ish fill (BGR)
    assert out[190:200, 0:50].sum() == 0  # outside everything stays black


def test_save_writes_a_decodable_jpeg_at_the_relative_path(tmp_path: Path) -> None:
    store = SnapshotStore(root=tmp_path / "snaps")
    e = event(camera="gate/../x")  # unsafe characters cannot escape the folder
    rel = store.save(image(), event=e, polygon=np.array([[0, 0], [100, 0], [100, 100.0]]))
    assert rel == f"gate_.._x/2024-06-03/{e.event_id}.jpg"
    path = tmp_path / "snaps" / rel
    assert path.is_file() and path.resolve().is_relative_to((tmp_path / "snaps").resolve())
    decoded = cv2.imread(str(path))
    assert decoded is not None and decoded.shape == (576, 768, 3)
    assert not list((tmp_path / "snaps").rglob("*.tmp"))
    assert store.stats()["snapshots_saved"] == 1


def test_save_failure_is_counted_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    store = SnapshotStore(root=blocker)
    with caplog.at_level("WARNING", logger="edge.stream"):
        assert store.save(image(), event=event()) is None
    assert store.stats()["snapshot_save_failures"] == 1
    assert "not saved" in caplog.text


def test_the_snapshot_and_its_folders_are_synced_before_save_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path.resolve() / "snaps"
    store = SnapshotStore(root=root)
    e = event()
    day = root / "gate" / "2024-06-03"
    final = day / f"{e.event_id}.jpg"
    rec = FsyncRecorder(monkeypatch, probe=final.exists)
    rel = store.save(image(), event=e)
    assert rel is not None and root / rel == final
    # new folders: each one's parent synced once it exists (snaps, gate, day)
    assert rec.paths[:3] == [tmp_path.resolve(), root, root / "gate"]
    # the JPEG's data before its rename (the final name absent), the day folder after
    assert rec.calls[3:] == [
        Synced(day / f"{e.event_id}.jpg.tmp", False),
        Synced(day, True),
    ]
    rec.clear()
    e2 = event()
    assert store.save(image(), event=e2) is not None  # same day: two fsyncs, no more
    assert rec.paths == [day / f"{e2.event_id}.jpg.tmp", day]


def test_a_disk_full_midway_is_counted_and_leaves_no_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SnapshotStore(root=tmp_path / "snaps")
    e = event()
    with caplog.at_level("WARNING", logger="edge.stream"), file_size_limit(4096):
        assert store.save_hashed(image(), event=e) is None  # the JPEG is ~100 KB
    assert "File too large" in caplog.text
    assert store.stats()["snapshot_save_failures"] == 1
    assert [p.name for p in (tmp_path / "snaps").rglob("*") if p.is_file()] == []
    assert store.save_hashed(image(), event=e) is not None  # space again: saved


def fill(root: Path, n: int, size: int, start: float, step: float) -> list[Path]:
    """``n`` fake JPEGs of ``size`` bytes with mtimes start, start+step, ..."""
    out = []
    for k in range(n):
        p = root / "cam" / f"d{k % 3}" / f"{k:03d}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"\xff" * size)
        os.utime(p, (start + k * step, start + k * step))
        out.append(p)
    return out


def test_retention_by_age(tmp_path: Path) -> None:
    now = time.time()
    files = fill(tmp_path, 10, 100, start=now - 10 * DAY, step=DAY)  # 10 .. 1 days old
    (tmp_path / "notes.txt").write_text("not a snapshot")
    store = SnapshotStore(root=tmp_path, max_age_days=3.5, max_total_bytes=None)
    r = store.sweep(now=now)
    assert (r.deleted_by_age, r.deleted_by_size, r.kept_files) == (7, 0, 3)
    assert [p.exists() for p in files] == [False] * 7 + [True] * 3
    assert (tmp_path / "notes.txt").exists()


def test_retention_by_total_size_keeps_the_newest(tmp_path: Path) -> None:
    now = time.time()
    files = fill(tmp_path, 10, 1000, start=now - 100, step=1)
    store = SnapshotStore(root=tmp_path, max_age_days=None, max_total_bytes=4500)
    r = store.sweep(now=now)
    assert (r.deleted_by_size, r.kept_files, r.kept_bytes, r.deleted_bytes) == (6, 4, 4000, 6000)
    assert [p.exists() for p in files] == [False] * 6 + [True] * 4
    assert store.sweep(now=now).deleted_by_size == 0  # idempotent


def test_retention_removes_stale_temp_files_and_empty_folders(tmp_path: Path) -> None:
    now = time.time()
    old = fill(tmp_path, 3, 10, start=now - 40 * DAY, step=1)
    stale = tmp_path / "cam" / "x.jpg.tmp"
    stale.write_bytes(b"half")
    os.utime(stale, (now - 7200, now - 7200))
    fresh = tmp_path / "cam" / "y.jpg.tmp"
    fresh.write_bytes(b"being written")
    SnapshotStore(root=tmp_path, max_age_days=30).sweep(now=now)
    assert not any(p.exists() for p in old)
    assert not stale.exists() and fresh.exists()
    assert sorted(p.name for p in (tmp_path / "cam").iterdir()) == ["y.jpg.tmp"]


def test_background_sweeper_and_close(tmp_path: Path) -> None:
    store = SnapshotStore(
        root=tmp_path, max_age_days=None, max_total_bytes=0, sweep_interval_s=0.05
    )
    with store:
        store.start()
        rel = store.save(image(), event=event())
        assert rel is not None
        deadline = time.monotonic() + 5
        while (tmp_path / rel).exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not (tmp_path / rel).exists()
    assert store._thread is None
    store.close()  # idempotent
    assert store.stats()["snapshots_deleted"] >= 1


@pytest.mark.parametrize(
    "bad",
    [{"max_age_days": 0}, {"max_total_bytes": -1}, {"jpeg_quality": 0}, {"sweep_interval_s": 0}],
)
def test_rejects(tmp_path: Path, bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SnapshotStore(root=tmp_path, **bad)  # type: ignore[arg-type]
