"""The camera pipeline end to end with the real default detector (onnxruntime) on real video.

Ground truth for ``vtest.avi`` (opencv-doc's pedestrian video, 795 frames at 10 fps,
768x576), established by watching every 10th frame with the zone drawn (contact sheets
of frames 0-790 and 480-790): the zone ``GRASS`` is the lawn in the lower left, kept
~40 px below the road edge so people walking along the kerb stay outside. Exactly two
people walk on it:

- a man in a red jacket and a blonde woman enter together from the bottom right edge at
  frame ~510 (walking side by side, one box for both until ~540, the man hidden behind
  the woman around 560-575);
- the man walks back to the road and leaves the zone near the tripod at frame ~603;
- the woman crosses the lawn to the left and leaves it at the kerb at frame ~723.

No one else sets foot on the lawn (a man standing at the kerb at x~265 in frames 0-10 is
outside the margin). So: 2 incidents; one ends at ~603 + cooldown, the other at
~723 + cooldown.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import cv2
import pytest

from edge.runtime.detector import Detector
from edge.runtime.registry import load_manifest
from edge.stream.events import EventStore, ZoneEvent
from edge.stream.evidence import verify_evidence
from edge.stream.pipeline import CameraPipeline, TaskRunner, TaskSpec
from edge.stream.snapshots import SnapshotStore
from edge.stream.sources import SourceSpec
from edge.stream.zones import ZoneSpec
from tests.stream.media import SAMPLE, MjpegServer, free_port

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
GRASS = ((0, 300), (250, 340), (450, 410), (768, 540), (768, 640), (0, 640))
FPS = 10.0
COOLDOWN_S = 2.0


@pytest.fixture(scope="module")
def detector(default_model_manifest: Path) -> Detector:
    with Detector(load_manifest(default_model_manifest), intra_op_threads=2) as det:
        yield det  # type: ignore[misc]


def incidents(events: Sequence[ZoneEvent]) -> dict[str, list[ZoneEvent]]:
    """Events grouped by their incident (the start's id)."""
    out: dict[str, list[ZoneEvent]] = defaultdict(list)
    for e in events:
        out[e.event_id if e.type == "start" else str(e.start_event_id)].append(e)
    return dict(out)


def check_incident_shape(events: Sequence[ZoneEvent]) -> None:
    """Per incident: one start first, updates, one end last; times in order."""
    for key, evs in incidents(events).items():
        kinds = [e.type for e in evs]
        assert kinds[0] == "start" and kinds.count("start") == 1, (key, kinds)
        assert kinds[-1] == "end" and kinds.count("end") == 1, (key, kinds)
        assert all(k == "update" for k in kinds[1:-1]), (key, kinds)
        times = [e.time_ms for e in evs]
        assert times == sorted(times)
        assert len({e.track_id for e in evs}) == 1


def test_vtest_fence_incidents_match_what_we_watched(detector: Detector, tmp_path: Path) -> None:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing: apt-get install opencv-doc")
    spec = TaskSpec(
        name="fence",
        zones=(
            ZoneSpec(
                name="grass",
                polygon=GRASS,
                classes=("person",),
                min_dwell_s=1.0,
                cooldown_s=COOLDOWN_S,
                update_every_s=5.0,
            ),
        ),
    )
    seen: list[ZoneEvent] = []
    with (
        EventStore(path=tmp_path / "events.sqlite3") as store,
        SnapshotStore(root=tmp_path / "snaps") as snaps,
    ):
        pipe = CameraPipeline(
            camera="vtest",
            # every 3rd frame (3.3 detections/s), video time: deterministic on any CPU
            source=SourceSpec(uri=str(VTEST), realtime=False, frame_step=3),
            tasks=[TaskRunner(spec=spec, detector=detector, camera="vtest")],
            store=store,
            sinks=[seen.append],
            snapshots=snaps,
        )
        t0 = time.monotonic()
        n = pipe.run()
        elapsed = time.monotonic() - t0
        origin = pipe.source.media_origin_ms
        metrics = pipe.metrics()
        stored = store.list_events(limit=1000)
    assert origin is not None
    assert n == 265 and elapsed < 60

    def frame(e: ZoneEvent) -> float:
        return (e.time_ms - origin) * FPS / 1000

    check_incident_shape(seen)
    groups = incidents(seen)
    # Two people on the lawn; one extra split of a track at the occlusion is tolerated.
    assert 2 <= len(groups) <= 3, [[(e.type, frame(e)) for e in g] for g in groups.values()]
    spans = sorted((frame(g[0]), frame(g[-1])) for g in groups.values())
    ends = sorted(end for _, end in spans)
    assert all(505 <= start <= 570 for start, _ in spans[:2]), spans
    # the man leaves at ~603, the woman at ~723; ends come one cooldown later
    assert 603 <= ends[0] <= 603 + COOLDOWN_S * FPS + 15, spans
    assert 723 <= ends[-1] <= 723 + COOLDOWN_S * FPS + 15, spans
    longest = max(groups.values(), key=lambda g: g[-1].time_ms - g[0].time_ms)
    assert (longest[-1].time_ms - longest[0].time_ms) / 1000 >= 15  # the woman: one incident
    assert {e.attributes["reason"] for e in seen if e.type == "end"} <= {"left", "lost"}
    assert all(e.label == "person" and e.zone == "grass" for e in seen)

    # Every event was stored, with the snapshot path of its start and the file's SHA-256.
    assert sorted(e.event_id for e in stored) == sorted(e.event_id for e in seen)
    for e in seen:
        if e.type == "start":
            assert e.snapshot is not None
            img = cv2.imread(str(tmp_path / "snaps" / e.snapshot))
            assert img is not None and img.shape == (576, 768, 3)
            data = (tmp_path / "snaps" / e.snapshot).read_bytes()
            assert e.snapshot_sha256 == hashlib.sha256(data).hexdigest()
        else:
            assert e.snapshot is None and e.snapshot_sha256 is None
    conn = sqlite3.connect(tmp_path / "events.sqlite3", isolation_level=None)
    report = verify_evidence(conn, snapshots_root=tmp_path / "snaps", strict_snapshots=True)
    conn.close()
    assert (
        report.ok
        and report.rows == len(seen)
        and report.snapshots_ok == sum(e.type == "start" for e in seen)
    )

    counts = Counter(e.type for e in seen)
    assert metrics["events"] == {
        "start": counts["start"],
        "update": counts["update"],
        "end": counts["end"],
        "crossing": 0,
    }
    assert metrics["frames_processed"] == 265 and metrics["frames_dropped"] == 0
    assert metrics["frames_skipped"] == 795 - 265
    assert metrics["open_incidents"] == 0 and metrics["snapshots_saved"] == counts["start"]
    assert metrics["tasks"]["fence"]["stage_ms"]["inference"]["mean_ms"] > 0
    assert metrics["tasks"]["fence"]["model"] == "person_vehicle"


def write_still_video(path: Path, frames: int, fps: float) -> Path:
    """A clip of the sample frame (three people) repeated."""
    img = cv2.imread(str(SAMPLE))
    assert img is not None
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (768, 576))
    for _ in range(frames):
        vw.write(img)
    vw.release()
    return path


def whole_frame_task(**zone: object) -> TaskSpec:
    kwargs: dict[str, object] = {
        "name": "site",
        "classes": ("person",),
        "min_dwell_s": 0.0,
        "cooldown_s": 1.0,
        "update_every_s": None,
    }
    kwargs.update(zone)
    return TaskSpec(name="fence", zones=(ZoneSpec(**kwargs),))  # type: ignore[arg-type]


def test_failing_sink_and_store_do_not_stop_the_outputs(detector: Detector, tmp_path: Path) -> None:
    clip = write_still_video(tmp_path / "still.avi", frames=6, fps=10.0)
    store = EventStore(path=tmp_path / "events.sqlite3")
    store.close()  # every write fails

    def broken(event: ZoneEvent) -> None:
        raise RuntimeError("subscriber went away")

    good: list[ZoneEvent] = []
    pipe = CameraPipeline(
        camera="still",
        source=SourceSpec(uri=str(clip), realtime=False),
        tasks=[TaskRunner(spec=whole_frame_task(), detector=detector, camera="still")],
        store=store,
        sinks=[broken, good.append],
    )
    assert pipe.run() == 6
    m = pipe.metrics()
    starts = [e for e in good if e.type == "start"]
    assert len(starts) >= 2  # the sample frame shows three people
    # the file ended: open incidents end with reason "shutdown"
    assert sorted(e.start_event_id for e in good if e.type == "end") == sorted(
        e.event_id for e in starts
    )
    assert {e.attributes["reason"] for e in good if e.type == "end"} == {"shutdown"}
    assert m["sink_errors"] == len(good) and m["store_errors"] == len(good)


def test_graceful_stop_ends_open_incidents(detector: Detector, tmp_path: Path) -> None:
    clip = write_still_video(tmp_path / "still.avi", frames=10, fps=10.0)
    seen: list[ZoneEvent] = []
    got_start = threading.Event()

    def sink(e: ZoneEvent) -> None:
        seen.append(e)
        if e.type == "start":
            got_start.set()

    with EventStore(path=tmp_path / "events.sqlite3") as store:
        pipe = CameraPipeline(
            camera="live",
            source=SourceSpec(uri=str(clip), realtime=True, loop=True, target_fps=5.0),
            tasks=[TaskRunner(spec=whole_frame_task(), detector=detector, camera="live")],
            store=store,
            sinks=[sink],
        )
        pipe.start()
        assert got_start.wait(20)
        time.sleep(0.5)
        t0 = time.monotonic()
        assert pipe.stop(timeout=10) is True
        assert time.monotonic() - t0 < 5
        assert pipe.source.finished
        pipe.stop()  # idempotent
        stored = store.list_events(limit=1000)
    check_incident_shape(seen)
    ends = [e for e in seen if e.type == "end"]
    assert ends and all(e.attributes["reason"] == "shutdown" for e in ends)
    assert len(stored) == len(seen)
    assert pipe.metrics()["open_incidents"] == 0


def test_camera_that_goes_away_and_comes_back(detector: Detector) -> None:
    """An HTTP MJPEG camera (the test's own server) stops and restarts: offline/online
    status, open incidents end as 'lost' while it is away, and the pipeline goes on."""
    img = cv2.imread(str(SAMPLE))
    assert img is not None
    server = MjpegServer(port=free_port(), fps=5.0, images=[img]).start()
    status: list[tuple[str, bool]] = []
    seen: list[ZoneEvent] = []
    cond = threading.Condition()

    def on_status(camera: str, online: bool, reason: str) -> None:
        with cond:
            status.append((camera, online))
            cond.notify_all()

    def sink(e: ZoneEvent) -> None:
        with cond:
            seen.append(e)
            cond.notify_all()

    def wait_for(pred: object, timeout: float = 20.0) -> bool:
        with cond:
            return cond.wait_for(pred, timeout)  # type: ignore[arg-type]

    pipe = CameraPipeline(
        camera="gate",
        source=SourceSpec(uri=server.url, read_timeout_s=2.0, backoff_min_s=0.1, backoff_max_s=0.5),
        tasks=[TaskRunner(spec=whole_frame_task(), detector=detector, camera="gate")],
        sinks=[sink],
        status_sinks=[on_status],
        idle_tick_s=0.2,
    )
    try:
        with pipe:
            assert wait_for(lambda: any(e.type == "start" for e in seen))
            first_starts = {e.event_id for e in seen if e.type == "start"}
            server.stop()
            assert wait_for(lambda: ("gate", False) in status)
            # while offline, every open incident ends (lost) after the cooldown
            assert wait_for(
                lambda: {e.start_event_id for e in seen if e.type == "end"} >= first_starts
            )
            frames_offline = pipe.metrics()["frames_processed"]
            n_before = len(seen)
            server.start()
            assert wait_for(lambda: status[-1] == ("gate", True))
            assert wait_for(lambda: any(e.type == "start" for e in seen[n_before:]))
            assert pipe.metrics()["frames_processed"] > frames_offline
    finally:
        server.stop()
    assert [s for _, s in status] == [True, False, True]
    lost = [e for e in seen if e.type == "end" and e.start_event_id in first_starts]
    assert {e.attributes["reason"] for e in lost} == {"lost"}
    check_incident_shape(seen)
    m = pipe.metrics()
    assert m["reconnects"] >= 1 and m["open_incidents"] == 0
