"""A counting line on real video with the real default detector (onnxruntime), tracker,
events table and snapshots: counts per direction against what we watched.

Ground truth for ``vtest.avi`` (opencv-doc's pedestrian video, 10 fps, 768x576), frames
0-558, established by watching every 5th frame cropped around the line (and every 3rd
or 4th frame, enlarged, where people overlap): the line ``WALKWAY`` runs across the
footpath at x = 560 from the grass edge (y = 450) up to the road (y = 150), drawn
upwards, so walking right is ``in`` and walking left ``out``. Crossing frames:

- out: 11 man in a black coat; 43 man in a red jacket and 52 the blonde woman with
  him; 137 woman in a light-blue hooded jacket; 155 man in a striped jacket; 189 man
  coming down from the road at the top right; 225 man in a black jacket and jeans (on
  his way back); 250 man in black from the top right; 258 man in black with papers;
  421 man in black (on his way back); 454 woman in a red jacket; 507 bald man in a
  black jacket and jeans;
- in: 109 the blonde woman and 116 the man in the red jacket (walking back up);
  125 the man in a black coat; 175 man with a bag; 189 the man in the black jacket
  and jeans (while the man from the top right crosses the other way); 362 man in
  jeans; 377 man in black with papers; 384 man in black and 472 the same man again;
  495 man in a black jacket and jeans (behind the bald man walking the other way).

Near misses that must not count: a man in jeans who walks up to x ~ 578 (frames
75-95) and turns back; a couple who come down from the road to x ~ 593 (frame 300).
So 12 ``out`` and 10 ``in``. The detector misses some of them (the man at frame 11 is
detected too late, the couple at 109/116 walk as one box, the man at 495 is hidden), so
counts may fall short by 2 per direction; every event counted must be a real crossing.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import cv2
import pytest

from edge.runtime.detector import Detector
from edge.runtime.registry import load_manifest
from edge.stream.events import EventStore, ZoneEvent
from edge.stream.lines import LineSpec
from edge.stream.pipeline import CameraPipeline, TaskRunner, TaskSpec
from edge.stream.snapshots import SnapshotStore
from edge.stream.sources import SourceSpec

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
WALKWAY = ((560.0, 450.0), (560.0, 150.0))
FPS = 10.0
FRAMES = 187  # every 3rd frame: 0, 3, ..., 558
WATCHED = {
    "out": [11, 43, 52, 137, 155, 189, 225, 250, 258, 421, 454, 507],
    "in": [109, 116, 125, 175, 189, 362, 377, 384, 472, 495],
}
LATE = 12  # frames: an event comes once the feet are 10 px past, on a sampled frame


@pytest.fixture(scope="module")
def detector(default_model_manifest: Path) -> Detector:
    with Detector(load_manifest(default_model_manifest), intra_op_threads=2) as det:
        yield det  # type: ignore[misc]


def test_vtest_walkway_counts_match_what_we_watched(detector: Detector, tmp_path: Path) -> None:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing: apt-get install opencv-doc")
    spec = TaskSpec(
        name="fence",
        zones=(),
        lines=(LineSpec(name="walkway", points=WALKWAY, classes=("person",)),),
    )
    seen: list[ZoneEvent] = []
    with (
        EventStore(path=tmp_path / "events.sqlite3") as store,
        SnapshotStore(root=tmp_path / "snaps") as snaps,
    ):
        pipe = CameraPipeline(
            camera="vtest",
            source=SourceSpec(uri=str(VTEST), realtime=False, frame_step=3),
            tasks=[TaskRunner(spec=spec, detector=detector, camera="vtest")],
            store=store,
            sinks=[seen.append],
            snapshots=snaps,
        )
        t0 = time.monotonic()
        n = pipe.run(max_frames=FRAMES)
        elapsed = time.monotonic() - t0
        origin = pipe.source.media_origin_ms
        metrics = pipe.metrics()
        stored = store.list_events(limit=1000)
    assert origin is not None
    assert n == FRAMES and elapsed < 60

    def frame(e: ZoneEvent) -> float:
        return (e.time_ms - origin) * FPS / 1000

    got = {
        d: sorted(frame(e) for e in seen if e.attributes["direction"] == d) for d in ("in", "out")
    }
    for direction, watched in WATCHED.items():
        counted = got[direction]
        assert len(watched) - 2 <= len(counted) <= len(watched), (direction, counted)
        # every count is a real crossing, each matched once, a little after it happened
        free = list(watched)
        for f in counted:
            match = next((w for w in free if w - 3 <= f <= w + LATE), None)
            assert match is not None, (direction, f, counted)
            free.remove(match)
    counts = {d: len(v) for d, v in got.items()}
    assert metrics["tasks"]["fence"]["lines"] == {"walkway": counts}
    assert metrics["events"]["crossing"] == len(seen)

    # every crossing is stored, with a snapshot (line and box drawn) and its SHA-256
    assert sorted(e.event_id for e in stored) == sorted(e.event_id for e in seen)
    assert all(e.type == "crossing" and e.zone == "walkway" for e in stored)
    assert all(e.label == "person" and e.attributes["line"] == "walkway" for e in stored)
    drawn: list[float] = []
    for e in seen:
        assert e.snapshot is not None
        path = tmp_path / "snaps" / e.snapshot
        img = cv2.imread(str(path))
        assert img is not None and img.shape == (576, 768, 3)
        assert e.snapshot_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
        # the line is drawn in the zone colour (BGR 255, 160, 0) along x = 560
        band = img[160:440, 557:564].astype(int)  # (rows, 7 columns, BGR)
        blueish = (band[..., 0] > 170) & (band[..., 1] > 90) & (band[..., 2] < 100)
        drawn.append(float(blueish.any(axis=1).mean()))
    # boxes drawn over it hide parts of the line (the crossing person's box always does)
    assert min(drawn) > 0.4 and sorted(drawn)[len(drawn) // 2] > 0.9, drawn
