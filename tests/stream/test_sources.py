"""Camera sources on real media: files written with cv2.VideoWriter, the opencv-doc sample
video, and a local HTTP MJPEG server of the test's own that is stopped and restarted."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.stream.sources import CameraSource, Frame, SourceSpec, source_kind
from tests.stream.media import MjpegServer, frame_number, free_port, write_video

VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")


class StatusLog:
    """Collects ``on_status`` calls (from the reader thread)."""

    def __init__(self) -> None:
        self.calls: list[tuple[bool, str]] = []
        self._cond = threading.Condition()

    def __call__(self, online: bool, reason: str) -> None:
        with self._cond:
            self.calls.append((online, reason))
            self._cond.notify_all()

    @property
    def states(self) -> list[bool]:
        with self._cond:
            return [c[0] for c in self.calls]

    def wait_for(self, pred: Callable[[list[bool]], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred([c[0] for c in self.calls]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True


def read_all(src: CameraSource, timeout: float = 5.0) -> list[Frame]:
    out = []
    while (f := src.read(timeout=timeout)) is not None:
        out.append(f)
    return out


@pytest.mark.parametrize(
    ("uri", "kind"),
    [
        (0, "device"),
        ("/dev/video2", "device"),
        ("3", "device"),
        ("rtsp://user:pw@cam.local:554/stream1", "rtsp"),
        ("RTSPS://cam/x", "rtsp"),
        ("http://10.0.0.5/mjpg/video.mjpg", "http"),
        ("https://cam/x.mjpg", "http"),
        ("/data/clip.mp4", "file"),
        ("clip.avi", "file"),
    ],
)
def test_source_kind(uri: str | int, kind: str) -> None:
    assert source_kind(uri) == kind


@pytest.mark.parametrize(
    "bad",
    [
        {"uri": ""},
        {"uri": -1},
        {"uri": "a.avi", "target_fps": 0.0},
        {"uri": "a.avi", "frame_step": 0},
        {"uri": "a.avi", "backoff_min_s": 2.0, "backoff_max_s": 1.0},
        {"uri": "a.avi", "read_timeout_s": 0.0},
    ],
)
def test_spec_rejects(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SourceSpec(**bad)  # type: ignore[arg-type]


def test_file_every_nth_frame_no_drops_video_time(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", frames=30, fps=10.0)
    with CameraSource(spec=SourceSpec(uri=str(video), realtime=False, frame_step=3)) as src:
        frames = read_all(src)
        assert src.finished and src.read(timeout=0.1) is None
        stats = src.stats()
    assert [f.index for f in frames] == list(range(0, 30, 3))
    assert [frame_number(f.image) for f in frames] == list(range(0, 30, 3))
    assert [f.seq for f in frames] == list(range(10))
    # Times follow the video (10 fps), not the reading speed.
    assert [round(f.t - frames[0].t, 6) for f in frames] == [round(0.3 * k, 6) for k in range(10)]
    assert [f.wall_ms - frames[0].wall_ms for f in frames] == [300 * k for k in range(10)]
    assert frames[0].size == (160, 120) and frames[0].image.dtype.name == "uint8"
    assert stats["frames_read"] == 30 and stats["frames_skipped"] == 20
    assert stats["frames_dropped"] == 0 and stats["online"] is True


def test_target_fps_sets_the_step_for_offline_files(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", frames=20, fps=20.0)
    with CameraSource(spec=SourceSpec(uri=str(video), realtime=False, target_fps=5.0)) as src:
        assert [f.index for f in read_all(src)] == [0, 4, 8, 12, 16]


def test_opencv_sample_video() -> None:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing: apt-get install opencv-doc")
    spec = SourceSpec(uri=str(VTEST), realtime=False, frame_step=40)
    with CameraSource(spec=spec, name="vtest") as src:
        frames = read_all(src)
        assert src.fps == pytest.approx(10.0)
    assert len(frames) == 20 and frames[0].size == (768, 576)  # 795 frames / 40


def test_realtime_latest_frame_drops_stale_frames_for_a_slow_consumer(tmp_path: Path) -> None:
    """A 50 fps 'camera' and a consumer taking 5 frames/s: nothing queues up; the frames it
    missed are counted as dropped and what it gets is recent."""
    video = write_video(tmp_path / "clip.avi", frames=100, fps=50.0)
    with CameraSource(spec=SourceSpec(uri=str(video), realtime=True), name="slow") as src:
        got = []
        ages = []
        while (f := src.read(timeout=3)) is not None:
            got.append(f)
            ages.append(time.monotonic() - f.captured_mono)
            time.sleep(0.2)
        stats = src.stats()
    # The latest frame (a frame period old at most), not one from a growing backlog.
    assert sorted(ages)[len(ages) // 2] < 0.1 and max(ages) < 0.3, ages
    assert 5 <= len(got) <= 15  # ~2 s of video at 5 frames/s
    assert stats["frames_read"] == 100 and stats["frames_skipped"] == 0
    assert stats["frames_dropped"] >= 70
    assert stats["frames_delivered"] == stats["frames_taken"] + stats["frames_dropped"]
    indices = [f.index for f in got]
    assert indices == sorted(indices) and indices[-1] >= 80


def test_target_fps_throttle_skips_without_counting_drops(tmp_path: Path) -> None:
    video = write_video(tmp_path / "clip.avi", frames=100, fps=50.0)  # 2 s
    spec = SourceSpec(uri=str(video), realtime=True, target_fps=5.0)
    with CameraSource(spec=spec, name="throttled") as src:
        frames = read_all(src, timeout=3)
        stats = src.stats()
    assert 8 <= len(frames) <= 12  # 5 per second for 2 s
    gaps = [b.index - a.index for a, b in itertools.pairwise(frames)]
    assert all(6 <= g <= 14 for g in gaps), gaps  # ~10 frames of the 50 fps source
    assert stats["frames_dropped"] == 0
    assert stats["frames_skipped"] == 100 - len(frames)


def test_file_renamed_away_and_back_goes_offline_then_online(tmp_path: Path) -> None:
    video = write_video(tmp_path / "cam.avi", frames=10, fps=50.0)
    away = tmp_path / "away.avi"
    status = StatusLog()
    spec = SourceSpec(
        uri=str(video), realtime=True, loop=True, backoff_min_s=0.05, backoff_max_s=0.2
    )
    with CameraSource(spec=spec, name="loop", on_status=status) as src:
        assert status.wait_for(lambda s: s == [True])
        first = src.read(timeout=2)
        assert first is not None
        os.rename(video, away)  # the camera disappears at the next loop
        assert status.wait_for(lambda s: s == [True, False])
        assert src.read(timeout=0.5) is None or src.online is False
        seq_offline = src.stats()["frames_delivered"]
        os.rename(away, video)  # and comes back
        assert status.wait_for(lambda s: s == [True, False, True])
        after = [src.read(timeout=2) for _ in range(5)]
        stats = src.stats()
    assert all(f is not None for f in after)
    assert stats["frames_delivered"] > seq_offline
    assert stats["reconnects"] >= 1 and stats["failures"] == 1
    assert "gone" in status.calls[1][1]


def test_missing_file_at_start_is_offline_until_it_appears(tmp_path: Path) -> None:
    path = tmp_path / "later.avi"
    status = StatusLog()
    spec = SourceSpec(uri=str(path), realtime=False, backoff_min_s=0.05, backoff_max_s=0.1)
    with CameraSource(spec=spec, on_status=status) as src:
        assert status.wait_for(lambda s: s == [False])
        assert src.online is False
        write_video(tmp_path / "tmp.avi", frames=6, fps=10.0).rename(path)
        frames = read_all(src)
    assert status.states == [False, True]
    assert [f.index for f in frames] == list(range(6))


def test_http_mjpeg_server_stopped_and_restarted() -> None:
    port = free_port()
    server = MjpegServer(port=port, fps=25.0).start()
    status = StatusLog()
    spec = SourceSpec(uri=server.url, read_timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=0.3)
    try:
        with CameraSource(spec=spec, name="mjpeg", on_status=status) as src:
            assert status.wait_for(lambda s: s == [True])
            before = [src.read(timeout=2) for _ in range(5)]
            assert all(f is not None and f.size == (160, 120) for f in before)
            server.stop()
            assert status.wait_for(lambda s: s == [True, False])
            time.sleep(0.5)  # several reconnect attempts fail while it is down
            server.start()
            assert status.wait_for(lambda s: s == [True, False, True])
            after = [src.read(timeout=2) for _ in range(5)]
            assert all(f is not None for f in after)
            assert after[0] is not None and before[-1] is not None
            assert after[0].seq > before[-1].seq
            stats = src.stats()
        assert stats["reconnects"] >= 2 and stats["failures"] == 1
    finally:
        server.stop()


def test_rtsp_unreachable_is_offline_and_env_is_restored() -> None:
    port = free_port()  # nothing listens there
    status = StatusLog()
    before = os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS")
    spec = SourceSpec(uri=f"rtsp://127.0.0.1:{port}/live", open_timeout_s=1.0, backoff_min_s=0.05)
    with CameraSource(spec=spec, on_status=status) as src:
        assert status.wait_for(lambda s: s == [False])
        assert src.read(timeout=0.2) is None
    assert os.environ.get("OPENCV_FFMPEG_CAPTURE_OPTIONS") == before
    assert "cannot open rtsp://127.0.0.1" in status.calls[0][1]


def test_close_is_prompt_during_backoff_and_idempotent(tmp_path: Path) -> None:
    spec = SourceSpec(uri=str(tmp_path / "none.avi"), backoff_min_s=30.0, backoff_max_s=60.0)
    src = CameraSource(spec=spec)
    src.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    assert src.close(timeout=5) is True
    assert time.monotonic() - t0 < 1.0
    assert src.close() is True
    assert src.finished and src.read(timeout=0.1) is None


def test_password_is_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    spec = SourceSpec(uri=f"http://admin:s3cret@127.0.0.1:{port}/x.mjpg", backoff_min_s=5)
    status = StatusLog()
    with (
        caplog.at_level("WARNING", logger="edge.stream"),
        CameraSource(spec=spec, on_status=status),
    ):
        assert status.wait_for(lambda s: s == [False])
    assert "s3cret" not in caplog.text and "s3cret" not in status.calls[0][1]
    assert "//***@127.0.0.1" in status.calls[0][1]


def test_missing_v4l2_device_is_offline() -> None:
    if Path("/dev/video63").exists():
        pytest.skip("/dev/video63 exists here")
    status = StatusLog()
    spec = SourceSpec(uri="/dev/video63", backoff_min_s=0.05, backoff_max_s=0.1)
    with CameraSource(spec=spec, name="usb", on_status=status) as src:
        assert status.wait_for(lambda s: s == [False])
        assert src.read(timeout=0.2) is None
    assert status.calls[0][1] == "cannot open /dev/video63"
