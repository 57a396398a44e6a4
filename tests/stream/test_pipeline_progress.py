"""Hang detection in the camera pipeline: the progress heartbeat of its loop and of its
source reader (:meth:`CameraPipeline.stalled_for`, :meth:`CameraPipeline.progress_ages`).

Real stalls, real sources: a detector that blocks inside ``detect`` (the pipeline takes
any detector through the :class:`~edge.tasks.base.DetectorLike` interface; this one
finds nothing and waits on an event while its gate is closed, as a ``session.run`` that
never returns would), and an HTTP camera whose server accepts the connection and never
answers, so the reader really sits inside OpenCV/FFmpeg's open call. Offline cameras
that reconnect (a missing file, an RTSP URL on a closed loopback port) must not count
as stalled, even when their reconnect backoff is longer than the check window.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from edge.stream.pipeline import CameraPipeline, TaskRunner, TaskSpec
from edge.stream.sources import SourceSpec
from edge.stream.zones import ZoneSpec
from edge.tasks.base import ImageBGR
from edge.types import Detections
from tests.polling import wait
from tests.stream.media import free_port, write_video


class GatedDetector:
    """Finds nothing; while :attr:`gate` is clear, ``detect`` blocks until it is set."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # a call is blocked at the gate

    @property
    def class_names(self) -> Sequence[str]:
        return ["person"]

    def detect(
        self,
        image_bgr: ImageBGR,
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        classes: Sequence[str] | None = None,
    ) -> Detections:
        if not self.gate.is_set():
            self.entered.set()
            self.gate.wait()
        return Detections.empty()


class SilentServer:
    """Accepts TCP connections on 127.0.0.1, answers the request with the headers of an
    MJPEG stream and then never sends a frame: a camera whose HTTP server hangs after
    answering (so the sources' pre-open check passes and FFmpeg blocks reading).
    :meth:`close` stops listening, then drops every connection."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self.clients: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                conn.settimeout(2)
                conn.recv(4096)
                conn.sendall(
                    b"HTTP/1.0 200 OK\r\n"
                    b"Content-Type: multipart/x-mixed-replace; boundary=f\r\n\r\n"
                )
            except OSError:
                pass
            self.clients.append(conn)

    def close(self) -> None:
        """Idempotent."""
        self.sock.close()
        self._thread.join(2)
        for c in self.clients:
            c.close()
        self.clients.clear()


def pipeline(source: SourceSpec, detector: GatedDetector) -> CameraPipeline:
    spec = TaskSpec(name="fence", zones=(ZoneSpec(name="all", polygon=None),))
    runner = TaskRunner(spec=spec, detector=detector, camera="cam")
    return CameraPipeline(camera="cam", source=source, tasks=[runner])


def test_not_running_is_not_stalled(tmp_path: Path) -> None:
    pipe = pipeline(SourceSpec(uri=str(tmp_path / "none.avi")), GatedDetector())
    time.sleep(0.3)
    assert pipe.stalled_for() == 0.0  # built, not started
    assert pipe.progress_ages() == {"loop": 0.0, "reader": 0.0}
    pipe.stop()
    assert pipe.stalled_for(time.monotonic() + 100) == 0.0


def test_a_blocked_detector_stalls_the_loop_and_recovers(tmp_path: Path) -> None:
    video = write_video(tmp_path / "v.avi", frames=20, fps=20.0)
    det = GatedDetector()
    pipe = pipeline(SourceSpec(uri=str(video), loop=True, realtime=True), det)
    with pipe:
        assert wait(lambda: pipe.metrics()["frames_processed"] >= 3, 10)
        assert pipe.stalled_for() < 0.5
        det.gate.clear()
        assert det.entered.wait(5)
        blocked_at = time.monotonic()
        try:
            time.sleep(1.2)
            now = time.monotonic()
            assert pipe.stalled_for(now) >= now - blocked_at - 0.05
            assert pipe.last_progress_s <= blocked_at
            ages = pipe.progress_ages(now)
            assert ages["loop"] >= 1.1, ages
            assert ages["reader"] < 0.6, ages  # the reader goes on (dropping frames)
            assert pipe.metrics()["progress_age_s"]["loop"] >= 1.1
        finally:
            det.gate.set()
        assert wait(lambda: pipe.stalled_for() < 0.5, 5)
        n = pipe.metrics()["frames_processed"]
        assert wait(lambda: pipe.metrics()["frames_processed"] > n, 5)
    assert pipe.stalled_for() == 0.0  # ended


def test_a_source_read_blocked_in_the_backend_stalls_the_reader(tmp_path: Path) -> None:
    """The reader sits in FFmpeg's open of a server that never answers (its own
    open_timeout_s is a minute here); its loop keeps going. A second camera (a video
    file) started meanwhile waits for its turn to open -- FFmpeg opens run one at a
    time -- and is not stalled. Once the server goes away, the open fails, the first
    camera is offline and reconnecting (no longer stalled) and the file plays."""
    server = SilentServer()
    spec = SourceSpec(
        uri=f"http://127.0.0.1:{server.port}/video.mjpg",
        open_timeout_s=60.0,
        read_timeout_s=60.0,
        backoff_min_s=0.2,
        backoff_max_s=0.4,
    )
    pipe = pipeline(spec, GatedDetector())
    video = write_video(tmp_path / "v.avi", frames=20, fps=20.0)
    queued = pipeline(SourceSpec(uri=str(video), loop=True, realtime=True), GatedDetector())
    try:
        pipe.start()
        assert wait(lambda: len(server.clients) >= 1, 10)
        queued.start()
        t0 = time.monotonic()
        worst_queued = 0.0
        while time.monotonic() < t0 + 1.2:
            worst_queued = max(worst_queued, queued.stalled_for())
            time.sleep(0.05)
        now = time.monotonic()
        ages = pipe.progress_ages(now)
        assert ages["reader"] >= now - t0 - 0.05, ages
        assert ages["loop"] < 0.6, ages
        assert pipe.stalled_for(now) == ages["reader"]
        assert pipe.source.online is None  # never opened
        assert worst_queued < 0.8, worst_queued
        server.close()
        assert wait(lambda: pipe.source.online is False, 10)
        assert wait(lambda: pipe.stalled_for() < 0.6, 5)
        assert wait(lambda: queued.metrics()["frames_processed"] > 0, 10)
    finally:
        server.close()
        stopped = [pipe.stop(timeout=10), queued.stop(timeout=10)]
    assert stopped == [True, True]


def test_offline_reconnecting_sources_are_not_stalled(tmp_path: Path) -> None:
    """A missing file and an RTSP URL on a closed loopback port go offline and retry
    every 1-2 s (jittered backoff); the reader shows progress while it waits, so neither
    pipeline is ever behind by more than a fraction of a second."""
    common = {"backoff_min_s": 2.0, "backoff_max_s": 2.0, "open_timeout_s": 1.0}
    pipes = [
        pipeline(SourceSpec(uri=str(tmp_path / "missing.avi"), **common), GatedDetector()),
        pipeline(SourceSpec(uri=f"rtsp://127.0.0.1:{free_port()}/live", **common), GatedDetector()),
    ]
    worst = 0.0
    try:
        for p in pipes:
            p.start()
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            worst = max([worst, *(p.stalled_for() for p in pipes)])
            time.sleep(0.05)
        for p in pipes:
            assert p.source.online is False
            assert p.metrics()["reconnects"] >= 1
    finally:
        for p in pipes:
            assert p.stop(timeout=5)
    assert worst < 0.8, worst
