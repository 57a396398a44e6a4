"""Dead network cameras must not hold up the others' opens.

OpenCV's FFmpeg backend opens one source at a time per process, so a camera that accepts
TCP and then stays silent used to hold every other camera's (re)connect for its whole
``open_timeout_s`` on each retry. These tests run real readers against real loopback
servers: silent listeners (accept, never answer), half-alive HTTP servers (answer the
request, never send a frame) and the suite's MJPEG server.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.stream import sources
from edge.stream.sources import CameraSource, SourceSpec
from tests.stream.media import MjpegServer, free_port, write_video


class SilentServer:
    """Accepts TCP connections on ``port`` and never sends a byte (a hung camera); with
    ``answer`` it sends that once after reading the request, then stays silent."""

    def __init__(self, *, port: int, answer: bytes = b"") -> None:
        self.port = port
        self.answer = answer
        self.accepted = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self._sock.listen(50)
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
                self._held.append(conn)
            if self.answer:
                threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        try:
            conn.recv(4096)
            conn.sendall(self.answer)
        except OSError:
            return

    def close(self) -> None:
        """Stop listening and close every held connection (clients see EOF)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept()
        self._sock.close()
        with self._lock:
            for c in self._held:
                c.close()
            self._held.clear()


class Status:
    """``on_status`` calls with their ``time.monotonic()``."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, bool]] = []
        self._cond = threading.Condition()

    def __call__(self, online: bool, reason: str) -> None:
        with self._cond:
            self.calls.append((time.monotonic(), online))
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[bool]], bool], timeout: float) -> float | None:
        """``time.monotonic()`` of the call that made ``pred`` true, None on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not pred([c[1] for c in self.calls]):
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            return self.calls[-1][0]


def _dead_specs(port: int, open_timeout_s: float) -> list[SourceSpec]:
    uris = [
        f"rtsp://127.0.0.1:{port}/cam0",
        f"rtsp://user:pw@127.0.0.1:{port}/cam1",
        f"http://127.0.0.1:{port}/cam2.mjpg",
    ]
    return [_fast_retry(u, open_timeout_s, 0.2) for u in uris]


def _fast_retry(uri: str, open_timeout_s: float, backoff_max_s: float) -> SourceSpec:
    return SourceSpec(
        uri=uri, open_timeout_s=open_timeout_s, backoff_min_s=0.05, backoff_max_s=backoff_max_s
    )


def _healthy_drop_and_back(
    dead: list[CameraSource], limit_s: float, first_limit_s: float | None = None
) -> None:
    """Start a healthy MJPEG camera next to the (started) ``dead`` ones, drop its stream
    once and check that it is online within ``first_limit_s`` (default ``limit_s``) of its
    start and within ``limit_s`` of its return."""
    first_limit_s = limit_s if first_limit_s is None else first_limit_s
    server = MjpegServer(port=free_port(), fps=20.0).start()
    status = Status()
    spec = SourceSpec(uri=server.url, read_timeout_s=2.0, backoff_min_s=0.05, backoff_max_s=0.3)
    good = CameraSource(spec=spec, name="good", on_status=status)
    try:
        t0 = time.monotonic()
        good.start()
        first = status.wait_for(lambda s: s == [True], timeout=first_limit_s + 10)
        assert first is not None, "never online"
        assert first - t0 < first_limit_s, f"first online after {first - t0:.1f} s"
        assert good.read(timeout=2) is not None
        server.stop()  # the camera drops: connection closed, then refused
        assert status.wait_for(lambda s: s == [True, False], timeout=5) is not None
        server.start()
        t1 = time.monotonic()
        back = status.wait_for(lambda s: s == [True, False, True], timeout=limit_s + 10)
        assert back is not None, "never came back"
        assert back - t1 < limit_s, f"back {back - t1:.1f} s after the camera returned"
        assert good.read(timeout=2) is not None
        assert all(d.online is not True and d.running for d in dead)  # still retrying
    finally:
        good.close(5)
        server.stop()


def test_silent_cameras_do_not_delay_a_healthy_cameras_reconnect() -> None:
    """Three cameras that accept TCP and never answer (4 s open timeout, retrying every
    0.2 s) next to a healthy MJPEG camera: before the fix each of them held the open lock
    for 4 s per attempt and the healthy one waited 4-12 s for every (re)connect."""
    silent = SilentServer(port=free_port())
    dead = [
        CameraSource(spec=s, name=f"dead{i}") for i, s in enumerate(_dead_specs(silent.port, 4))
    ]
    try:
        for d in dead:
            d.start()
        time.sleep(0.3)  # every dead camera is in its first attempt
        _healthy_drop_and_back(dead, limit_s=2.0)
        assert silent.accepted >= 3  # the dead cameras did try
    finally:
        t = time.monotonic()
        for d in dead:
            d.close(6)
        closing = time.monotonic() - t
        silent.close()
    assert closing < 3.0, f"closing three cameras waiting on silent hosts took {closing:.1f} s"


def test_half_alive_cameras_let_a_recently_online_camera_open_first() -> None:
    """Three HTTP servers that answer the request and then never send a frame pass the
    probe and time out inside FFmpeg's open (2 s each, one at a time). At start nothing
    tells them from a good camera (first come, first served: up to 3 x 2 s). After that
    the healthy camera was online a moment ago, so its reconnect goes before all of them:
    it waits at most for the open in progress, not for the whole queue of failing ones."""
    head = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
    zombie = SilentServer(port=free_port(), answer=head)
    dead = [
        CameraSource(
            spec=_fast_retry(f"http://127.0.0.1:{zombie.port}/z{i}", 2.0, 0.1), name=f"z{i}"
        )
        for i in range(3)
    ]
    try:
        for d in dead:
            d.start()
        time.sleep(0.3)
        _healthy_drop_and_back(dead, limit_s=2.0 + 1.0, first_limit_s=3 * 2.0 + 1.5)
    finally:
        for d in dead:
            d.close(6)
        zombie.close()


def test_a_silent_camera_that_comes_back_is_found_within_its_backoff() -> None:
    """A camera hung at the TCP level (accepts, never answers) that reboots into a
    working MJPEG server on the same port is online again within a retry or two."""
    port = free_port()
    silent = SilentServer(port=port)
    status = Status()
    spec = SourceSpec(
        uri=f"http://127.0.0.1:{port}/stream.mjpg",
        open_timeout_s=3.0,
        read_timeout_s=2.0,
        backoff_min_s=0.05,
        backoff_max_s=0.3,
    )
    server = MjpegServer(port=port, fps=20.0)
    with CameraSource(spec=spec, name="back", on_status=status) as src:
        assert status.wait_for(lambda s: s == [False], timeout=10) is not None
        time.sleep(0.5)
        silent.close()  # the hung camera reboots ...
        server.start()  # ... and serves again
        t1 = time.monotonic()
        back = status.wait_for(lambda s: s == [False, True], timeout=10)
        assert back is not None and back - t1 < 1.5, f"back after {back} s"
        assert src.read(timeout=2) is not None
    server.stop()


def test_refused_port_is_offline_at_once() -> None:
    """Nothing listens: the probe fails at once (connection refused), no lock, no wait."""
    status = Status()
    spec = SourceSpec(uri=f"rtsp://127.0.0.1:{free_port()}/live", open_timeout_s=5.0)
    t0 = time.monotonic()
    with CameraSource(spec=spec, on_status=status):
        off = status.wait_for(lambda s: s == [False], timeout=10)
    assert off is not None and off - t0 < 1.0


def test_open_queue_serves_recently_online_before_failing_then_fifo() -> None:
    """The open lock hands itself to the best rank first, then in arrival order; a waiter
    whose ``waiting()`` says stop leaves the queue without taking the lock."""
    q = sources._OpenQueue()
    assert q.acquire(rank=0)
    order: list[str] = []
    started: list[threading.Thread] = []

    def waiter(name: str, rank: int) -> None:
        if q.acquire(rank=rank):
            order.append(name)
            q.release()

    quitter_go = threading.Event()
    beats: list[float] = []

    def quitter_waiting() -> bool:
        beats.append(time.monotonic())
        return not quitter_go.is_set()

    quitter = threading.Thread(
        target=lambda: order.append(str(q.acquire(rank=0, waiting=quitter_waiting)))
    )
    quitter.start()
    for name, rank in (("fail-a", 1), ("fail-b", 1), ("recent", 0)):
        t = threading.Thread(target=waiter, args=(name, rank))
        t.start()
        started.append(t)
        time.sleep(0.05)
    time.sleep(0.6)  # the quitter shows progress while it waits
    assert beats, "waiting() not called while queued"
    quitter_go.set()
    quitter.join(2)
    assert order == ["False"]
    q.release()
    for t in started:
        t.join(2)
    assert order == ["False", "recent", "fail-a", "fail-b"]
    assert q.acquire(rank=1)  # free again
    q.release()


@pytest.mark.parametrize("scheme", ["https", "rtsps"])
def test_tls_silent_camera_does_not_hold_a_file_sources_open(scheme: str, tmp_path: Path) -> None:
    """TLS URLs are probed with a handshake outside the open lock: while a silent TLS
    camera waits out its 3 s open timeout, a video file next to it opens at once."""
    silent = SilentServer(port=free_port())
    video = write_video(tmp_path / "v.avi", frames=10, fps=10.0)
    status = Status()
    spec = SourceSpec(uri=f"{scheme}://127.0.0.1:{silent.port}/x", open_timeout_s=3.0)
    try:
        t0 = time.monotonic()
        with CameraSource(spec=spec, on_status=status):
            time.sleep(0.3)
            with CameraSource(spec=SourceSpec(uri=str(video), realtime=False)) as f:
                t1 = time.monotonic()
                assert f.read(timeout=10) is not None
                took = time.monotonic() - t1
            off = status.wait_for(lambda s: s == [False], timeout=10)
        assert took < 1.0, f"the file waited {took:.1f} s for its open"
        assert off is not None and 2.5 < off - t0 < 5.0
        assert silent.accepted >= 1
    finally:
        silent.close()
