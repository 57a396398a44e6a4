"""Test media: short videos written with cv2.VideoWriter and a local HTTP MJPEG server.

The server is this test suite's own: a real ``multipart/x-mixed-replace`` stream over a
real loopback socket, which can be stopped (closing every client connection) and
started again on the same port, as a camera that reboots would.
"""

from __future__ import annotations

import http.server
import socket
import socketserver
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

SAMPLE = Path(__file__).resolve().parents[2] / "samples" / "vtest_frame.jpg"


def numbered_frame(i: int, size: tuple[int, int] = (160, 120)) -> npt.NDArray[np.uint8]:
    """A frame whose top-left 32x32 block has grey level ``(8 * i) % 256``."""
    w, h = size
    img = np.full((h, w, 3), 40, np.uint8)
    img[:32, :32] = (8 * i) % 256
    return img


def frame_number(img: npt.NDArray[np.uint8]) -> int:
    """Inverse of :func:`numbered_frame` (for i < 32), robust to JPEG noise."""
    return round(float(img[4:28, 4:28].mean()) / 8)


def write_video(path: Path, frames: int, fps: float, size: tuple[int, int] = (160, 120)) -> Path:
    """An MJPG .avi of ``frames`` numbered frames."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert vw.isOpened(), "cv2.VideoWriter cannot write MJPG avi"
    for i in range(frames):
        vw.write(numbered_frame(i, size))
    vw.release()
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MjpegServer:
    """``http://127.0.0.1:{port}/stream.mjpg``, ``fps`` frames per second: numbered
    frames (:func:`numbered_frame`), or ``images`` in a cycle."""

    def __init__(
        self,
        *,
        port: int,
        fps: float = 20.0,
        images: Sequence[npt.NDArray[np.uint8]] | None = None,
    ) -> None:
        self.port = port
        self.fps = fps
        self.url = f"http://127.0.0.1:{port}/stream.mjpg"
        self._server: socketserver.ThreadingTCPServer | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_sent = 0
        jpgs = []
        for img in images if images is not None else [numbered_frame(i) for i in range(32)]:
            ok, buf = cv2.imencode(".jpg", img)
            assert ok
            jpgs.append(buf.tobytes())
        self._jpgs = jpgs

    def start(self) -> MjpegServer:
        owner = self
        self._stop.clear()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                i = 0
                try:
                    while not owner._stop.is_set():
                        j = owner._jpgs[i % len(owner._jpgs)]
                        head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                        self.wfile.write(head % len(j) + j + b"\r\n")
                        owner.frames_sent += 1
                        i += 1
                        time.sleep(1.0 / owner.fps)
                except (BrokenPipeError, ConnectionResetError):
                    return

            def log_message(self, format: str, *args: object) -> None:
                return

        class Server(socketserver.ThreadingTCPServer):
            allow_reuse_address = True
            daemon_threads = True
            block_on_close = False

        self._server = Server(("127.0.0.1", self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting and end every open stream (clients see the connection close)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        time.sleep(2.0 / self.fps)  # handlers notice the flag and close their sockets


MJPEG_RESPONSE = (
    b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
)


def mjpeg_part(jpg: bytes) -> bytes:
    """One ``--frame`` part of a ``multipart/x-mixed-replace`` stream carrying ``jpg``."""
    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
    return head % len(jpg) + jpg + b"\r\n"


class ScriptedMjpeg:
    """A camera whose every connection follows a script: a raw listening socket on a free
    loopback port (``url``), each accepted connection in its own daemon thread, its request
    read and the ``multipart/x-mixed-replace`` response head sent, then :meth:`script` (a
    subclass's) writes parts with :func:`mjpeg_part` until it returns or ``closed`` is set.
    ``connections`` counts the accepted connections. Unlike :class:`MjpegServer`, each
    connection may behave differently (freeze, change resolution, hang up)."""

    def __init__(self) -> None:
        self.connections = 0
        self.closed = threading.Event()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(8)
        self.url = f"http://127.0.0.1:{self._sock.getsockname()[1]}/v.mjpg"
        threading.Thread(target=self._accept, daemon=True).start()

    def script(self, conn: socket.socket) -> None:
        """Serve one connection (the response head is sent); an ``OSError`` ends it."""
        raise NotImplementedError

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(4096)
                conn.sendall(MJPEG_RESPONSE)
                self.script(conn)
            except OSError:
                return

    def close(self) -> None:
        """Stop accepting; every connection's script ends at its next check of ``closed``."""
        self.closed.set()
        self._sock.close()
