"""Camera sources: one reader thread per camera, latest-frame hand-off, reconnect.

Kinds (:func:`source_kind` tells them apart from the URI):

- ``rtsp``: ``rtsp://`` / ``rtsps://`` URLs through OpenCV's FFmpeg backend; TCP
  transport by default (``OPENCV_FFMPEG_CAPTURE_OPTIONS="rtsp_transport;tcp"`` is set
  only around the open call, under a lock, so cameras may differ);
- ``http``: ``http://`` / ``https://`` MJPEG streams (``multipart/x-mixed-replace``) and
  other streams FFmpeg reads;
- ``device``: V4L2 devices, an int index or ``/dev/videoN``;
- ``file``: a video file, optionally looped.

Hand-off: the reader keeps only the **latest** frame. A frame that is replaced before the
consumer took it is *dropped* and counted (``dropped``); frames left out on purpose by
the ``target_fps`` throttle are counted as ``skipped`` (they are grabbed but not
decoded to BGR). Nothing is buffered beyond one frame.

Files read in ``realtime`` mode are paced at their own frame rate and behave like a
live camera. With ``realtime=False`` the reader hands out every ``frame_step``-th frame and
waits for the consumer instead of dropping (offline analysis, tests, benchmarks); frame
times then follow the video (``index / fps``), so results do not depend on CPU speed.

Failures: a source that cannot be opened, stops delivering (read timeout), or whose
file disappeared (on loop) goes *offline*; the reader retries with jittered exponential
backoff (``backoff_min_s`` doubling up to ``backoff_max_s``) until it opens and delivers
a frame again (*online*). ``on_status(online, reason)`` is called on each change, from
the reader thread. A file that ends without ``loop`` *finishes*: :meth:`CameraSource.read`
then returns ``None`` at once.

Opens: OpenCV's FFmpeg backend opens one source at a time per process, so one camera
that does not answer would hold every other camera's (re)connect for its
``open_timeout_s``. Two rules keep that rare. (1) Before queueing for the open, a
network source checks outside the queue, within its own ``open_timeout_s``, that the
camera answers at all: a TCP connect plus the first bytes of the reply to RTSP
``OPTIONS`` / HTTP ``GET``, or a TLS handshake for ``rtsps`` / ``https`` (skipped for HTTP
when ``http_proxy`` is set). A hung, powered-off or rebooting camera fails there and
retries on its backoff without holding anyone; one that comes back passes on its next
try. (2) The queue (:data:`_open_queue`) serves sources whose last open gave frames (or
that have not tried yet) before sources whose last open under the lock gave none, then
first come, first served: a camera that dropped a moment ago waits at most for the open
in progress, not for every camera that answers but never streams.

Progress: the reader notes ``time.monotonic()`` (:attr:`CameraSource.last_progress_s`)
at each step of its loop (around every backend call: open, grab, decode) and at least
every 0.5 s while it waits on purpose (reconnect backoff, pacing a file, a slow consumer of
a non-realtime file, the probe of a network camera, its turn to open: FFmpeg opens
run one at a time, see :data:`_open_queue`). A camera that is offline and reconnecting
therefore keeps making progress; only a reader blocked inside the backend goes quiet -- for at most
``open_timeout_s`` / ``read_timeout_s`` on network sources when FFmpeg honours them,
forever when it hangs. :meth:`CameraSource.stalled_for` measures that silence.
"""

from __future__ import annotations

import errno
import logging
import math
import os
import re
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit

import cv2
import numpy as np
import numpy.typing as npt

from edge.mqtt.reconnect import Backoff

__all__ = [
    "CameraSource",
    "Frame",
    "SourceKind",
    "SourceSpec",
    "StatusCallback",
    "redact_uri",
    "source_kind",
]

log = logging.getLogger("edge.stream")

SourceKind = Literal["rtsp", "http", "device", "file"]
StatusCallback = Callable[[bool, str], None]
"""``on_status(online, reason)``: called from the reader thread on each state change."""

_FFMPEG_OPTIONS_ENV = "OPENCV_FFMPEG_CAPTURE_OPTIONS"
_DEVICE_RE = re.compile(r"^/dev/video(\d+)$")
_BEAT_S = 0.5  # deliberate waits show progress at least this often
_RANK_RECENT = 0  # the source's last open delivered frames, or it has not tried yet
_RANK_FAILING = 1  # its last open(s) did not
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


class _OpenQueue:
    """The process-wide open lock, handed out by rank, then in arrival order.

    OpenCV's FFmpeg backend opens one source at a time per process anyway (a camera that
    does not answer holds every other camera's open, files included, for up to its
    ``open_timeout_s``); queueing here instead lets a reader show progress while it waits
    its turn, and lets a camera that was online a moment ago (rank ``_RANK_RECENT``) go
    before cameras that have been failing (``_RANK_FAILING``). It also guards
    ``OPENCV_FFMPEG_CAPTURE_OPTIONS``. Thread-safe.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._held = False
        self._queue: list[tuple[int, int]] = []  # (rank, arrival) of every waiter
        self._arrivals = 0

    def acquire(self, *, rank: int, waiting: Callable[[], bool] | None = None) -> bool:
        """Wait for the lock; True once held. ``waiting()`` is called at least every
        ``_BEAT_S`` while queued; when it returns False the waiter leaves (False)."""
        with self._cond:
            ticket = (rank, self._arrivals)
            self._arrivals += 1
            self._queue.append(ticket)
            try:
                while self._held or min(self._queue) != ticket:
                    self._cond.wait(_BEAT_S)
                    if waiting is not None and not waiting():
                        return False
                self._held = True
                return True
            finally:
                self._queue.remove(ticket)
                self._cond.notify_all()  # the next best waiter looks again

    def release(self) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


_open_queue = _OpenQueue()


def source_kind(uri: str | int) -> SourceKind:
    """Which kind of source ``uri`` is: int or ``/dev/videoN`` -> device, ``rtsp(s)://`` ->
    rtsp, ``http(s)://`` -> http, anything else -> file."""
    if isinstance(uri, int):
        return "device"
    s = uri.strip()
    low = s.lower()
    if low.startswith(("rtsp://", "rtsps://")):
        return "rtsp"
    if low.startswith(("http://", "https://")):
        return "http"
    if _DEVICE_RE.match(s) or s.isdigit():
        return "device"
    return "file"


_URL_HEAD = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.\-]+:/+")
_SECRET_PARAM = re.compile(r"pass|pwd|token|secret|key|auth|sig|cred|user|login", re.IGNORECASE)


def redact_uri(uri: str | int) -> str:
    """``uri`` fit for logs and the ``camera_offline`` alert (MQTT): no credentials.

    A URL (``scheme:/...``, any number of slashes) loses everything between the scheme
    and the *last* ``@`` of the rest, user name included: ``rtsp://***@host:554/path``.
    The last ``@`` rather than the URL grammar's authority, because a hand-written
    password may hold unencoded ``@``, ``/``, ``:``, ``?`` or ``#`` (which make
    ``urllib.parse`` and a first-``/`` rule leave part of it in clear); the price is
    that an ``@`` in a path or query hides the host too, never that a password shows.
    Query parameters whose name looks like a credential (``pass``, ``pwd``, ``token``,
    ``key``, ``auth``, ``sig``, ``user``, ...: ``?user=admin&pwd=x`` of HTTP cameras)
    keep their name and lose their value up to the next ``&``, ``;``, ``?`` or ``#``.
    Device indexes, ``/dev/videoN`` and file paths come back as they are.
    """
    text = str(uri)
    m = _URL_HEAD.match(text)
    if m is None:
        return text
    head, rest = text[: m.end()], text[m.end() :]
    at = rest.rfind("@")
    if at >= 0:
        head, rest = head + "***@", rest[at + 1 :]
    # Split the rest at every ? & ; # (not only after the first ?): when the last @ sat in
    # the query, what is left of it is still query text.
    parts = []
    for part in re.split(r"([?&;#])", rest):
        name, eq, _value = part.partition("=")
        parts.append(f"{name}=***" if eq and _SECRET_PARAM.search(name) else part)
    return head + "".join(parts)


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    """How to read one camera.

    Attributes:
        uri: RTSP/HTTP URL, ``/dev/videoN`` or device index, or a file path.
        target_fps: hand out at most this many frames per second (live sources and
            realtime files); ``None``: every frame. For non-realtime files it sets
            ``frame_step`` to ``round(file_fps / target_fps)`` when that is 1.
        loop: files: start over at the end (re-opening the path, so a replaced or
            vanished file is noticed).
        realtime: files: pace at the file's frame rate and drop like a live camera.
        frame_step: non-realtime files: hand out every n-th frame (>= 1).
        rtsp_tcp: RTSP over TCP (interleaved) instead of UDP.
        width, height: requested capture size (devices); ``None``: the default.
        open_timeout_s, read_timeout_s: FFmpeg timeouts for network sources.
        backoff_min_s, backoff_max_s: reconnect delay range (jittered, doubling).
    """

    uri: str | int
    target_fps: float | None = None
    loop: bool = False
    realtime: bool = True
    frame_step: int = 1
    rtsp_tcp: bool = True
    width: int | None = None
    height: int | None = None
    open_timeout_s: float = 10.0
    read_timeout_s: float = 10.0
    backoff_min_s: float = 0.5
    backoff_max_s: float = 30.0

    def __post_init__(self) -> None:
        if isinstance(self.uri, str) and not self.uri.strip():
            raise ValueError("source uri must be non-empty")
        if isinstance(self.uri, int) and self.uri < 0:
            raise ValueError("device index must be >= 0")
        if self.target_fps is not None and not (
            math.isfinite(self.target_fps) and self.target_fps > 0
        ):
            raise ValueError("target_fps must be > 0 or None")
        if self.frame_step < 1:
            raise ValueError("frame_step must be >= 1")
        if self.open_timeout_s <= 0 or self.read_timeout_s <= 0:
            raise ValueError("timeouts must be > 0")
        if not 0 < self.backoff_min_s <= self.backoff_max_s:
            raise ValueError("need 0 < backoff_min_s <= backoff_max_s")

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.uri)


@dataclass(frozen=True, slots=True)
class Frame:
    """One frame handed to the consumer.

    Attributes:
        image: (H, W, 3) uint8 BGR.
        seq: 0, 1, 2, ... frames handed out by this source.
        index: frames read from the source so far, including skipped ones (for files:
            the position in the video, counting across loops).
        t: frame time in seconds on a monotonic clock (live: when it was read; non-realtime
            files: start + index / fps).
        wall_ms: frame time as Unix milliseconds (same rule).
        captured_mono: ``time.monotonic()`` when it was read (latency measurements).
    """

    image: npt.NDArray[np.uint8]
    seq: int
    index: int
    t: float
    wall_ms: int
    captured_mono: float

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


_Outcome = tuple[Literal["stop", "loop", "offline"], str]


def _probe_target(spec: SourceSpec) -> tuple[str, str, int, bytes | None] | None:
    """``(scheme, host, port, request)`` to probe before a network open (``request`` None:
    a TLS handshake is the probe); None when no probe applies: not a network URL, a URL
    this parser cannot read (FFmpeg then decides alone), or HTTP through a proxy."""
    if spec.kind not in ("rtsp", "http"):
        return None
    if spec.kind == "http" and any(os.environ.get(k) for k in ("http_proxy", "HTTP_PROXY")):
        return None  # FFmpeg goes through the proxy; the camera itself may be unreachable
    try:
        parts = urlsplit(str(spec.uri).strip())
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if not host or scheme not in _DEFAULT_PORTS:
        return None
    port = port or _DEFAULT_PORTS[scheme]
    if scheme in ("rtsps", "https"):
        return scheme, host, port, None
    hostport = parts.netloc.rpartition("@")[2]
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if scheme == "rtsp":  # what FFmpeg sends first; the URL without user and password
        req = f"OPTIONS rtsp://{hostport}{target} RTSP/1.0\r\nCSeq: 1\r\n\r\n"
    else:
        req = f"GET {target} HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    return scheme, host, port, req.encode("latin-1", "replace")


def _probe(spec: SourceSpec, *, waiting: Callable[[], bool] | None = None) -> str | None:
    """Does the camera answer at all? Checked *outside* the open lock, so that a host that
    accepts TCP and then stays silent (hung, half-booted) waits out its own
    ``open_timeout_s`` without holding every other camera's open.

    The check is a TCP connect plus the first bytes of the reply to the request FFmpeg
    would send first (RTSP ``OPTIONS``, HTTP ``GET``), or a TLS handshake for ``rtsps`` /
    ``https``, all within ``open_timeout_s``. Any answer passes (an error status or 401
    too: FFmpeg judges it). Returns None when the camera answered or no probe applies,
    else why not (for the debug log). ``waiting()`` is called every ``_BEAT_S``; when it
    returns False the probe stops with ``"stopped"``.
    """
    target = _probe_target(spec)
    if target is None:
        return None
    _scheme, host, port, request = target
    deadline = time.monotonic() + spec.open_timeout_s
    try:
        addrs = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        return f"cannot resolve the host ({exc})"
    why: str | None = "no address"
    for family, socktype, proto, _name, addr in addrs:
        with socket.socket(family, socktype, proto) as sock:
            sock.setblocking(False)
            why = _probe_one(sock, addr, host, request, deadline, waiting)
            if why is None or why == "stopped" or time.monotonic() >= deadline:
                return why
    return why


def _wait_io(
    sock: socket.socket,
    *,
    write: bool,
    deadline: float,
    waiting: Callable[[], bool] | None,
) -> str | None:
    """Wait until ``sock`` is readable/writable: None, or ``"stopped"`` / ``"timeout"``.
    ``poll``, not ``select``: a gateway may hold more than 1024 descriptors."""
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLOUT if write else select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return "timeout"
        if poller.poll(math.ceil(min(left, _BEAT_S) * 1000)):
            return None  # ready, or an error/hang-up that the next call reports
        if waiting is not None and not waiting():
            return "stopped"


def _probe_one(
    sock: socket.socket,
    addr: Any,
    host: str,
    request: bytes | None,
    deadline: float,
    waiting: Callable[[], bool] | None,
) -> str | None:
    """One address of :func:`_probe` on a non-blocking ``sock``."""
    err = sock.connect_ex(addr)
    if err not in (0, errno.EINPROGRESS, errno.EAGAIN):
        return f"connect failed: {os.strerror(err)}"
    if (why := _wait_io(sock, write=True, deadline=deadline, waiting=waiting)) is not None:
        return why if why == "stopped" else "no TCP connection within open_timeout_s"
    err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        return f"connect failed: {os.strerror(err)}"
    if request is None:  # TLS: the server's half of the handshake is its first bytes
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # liveness only; FFmpeg does its own checks
        tls = ctx.wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
        try:
            while True:
                try:
                    tls.do_handshake()
                    return None
                except ssl.SSLWantReadError:
                    why = _wait_io(tls, write=False, deadline=deadline, waiting=waiting)
                except ssl.SSLWantWriteError:
                    why = _wait_io(tls, write=True, deadline=deadline, waiting=waiting)
                except (ssl.SSLError, OSError) as exc:
                    return f"TLS handshake failed: {exc}"
                if why is not None:
                    return why if why == "stopped" else "no TLS handshake within open_timeout_s"
        finally:
            tls.close()
    try:
        sock.send(request)  # a few hundred bytes into a fresh socket's buffer
        if (why := _wait_io(sock, write=False, deadline=deadline, waiting=waiting)) is not None:
            return why if why == "stopped" else "connected, but no answer within open_timeout_s"
        if not sock.recv(64):
            return "connected, but the host closed the connection without answering"
    except OSError as exc:
        return f"connection failed: {exc}"
    return None


def _open_capture(
    spec: SourceSpec, *, rank: int = _RANK_RECENT, waiting: Callable[[], bool] | None = None
) -> Any:
    """A ``cv2.VideoCapture`` for ``spec`` (may be not opened; ``None`` for a missing file).

    FFmpeg opens take :data:`_open_queue` with ``rank``; while queued, ``waiting()`` is
    called every ``_BEAT_S`` and the open is given up (``None``) when it returns False.
    Network sources are probed first (:func:`_probe`); one that does not answer is not
    opened (``None``).
    """
    kind = spec.kind
    if kind == "device":
        m = _DEVICE_RE.match(str(spec.uri))
        index = int(spec.uri) if not m else int(m.group(1))
        cap = cv2.VideoCapture(index, cv2.CAP_V4L2)
        if cap.isOpened():
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if spec.width:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, spec.width)
            if spec.height:
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, spec.height)
        return cap
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        round(spec.open_timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        round(spec.read_timeout_s * 1000),
    ]
    uri = str(spec.uri)
    if kind == "file" and not Path(uri).is_file():
        return None
    why = _probe(spec, waiting=waiting)
    if why is not None:
        log.debug("%s does not answer: %s", redact_uri(uri), why)
        return None
    if not _open_queue.acquire(rank=rank, waiting=waiting):
        return None
    try:
        if kind != "rtsp":
            return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        # the option is read from the environment during open only
        old = os.environ.get(_FFMPEG_OPTIONS_ENV)
        os.environ[_FFMPEG_OPTIONS_ENV] = (
            "rtsp_transport;tcp" if spec.rtsp_tcp else "rtsp_transport;udp"
        )
        try:
            return cv2.VideoCapture(uri, cv2.CAP_FFMPEG, params)
        finally:
            if old is None:
                os.environ.pop(_FFMPEG_OPTIONS_ENV, None)
            else:
                os.environ[_FFMPEG_OPTIONS_ENV] = old
    finally:
        _open_queue.release()


class CameraSource:
    """Reads one camera in a background thread; :meth:`read` returns the latest frame.

    Keyword-only; use as a context manager (starts on enter) or call :meth:`start` and
    :meth:`close`.

    Args:
        spec: what to read.
        name: camera name (logs, thread name).
        on_status: ``(online, reason)`` on each online/offline change (reader thread).
        rng: uniform [0, 1) source for the backoff jitter.
    """

    def __init__(
        self,
        *,
        spec: SourceSpec,
        name: str = "camera",
        on_status: StatusCallback | None = None,
        rng: Callable[[], float] | None = None,
    ) -> None:
        self.spec = spec
        self.name = name
        self._on_status = on_status
        self._backoff = Backoff(
            min_s=spec.backoff_min_s,
            max_s=spec.backoff_max_s,
            hard_s=spec.backoff_max_s,
            **({"rng": rng} if rng is not None else {}),
        )
        self._cond = threading.Condition()
        self._slot: Frame | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._online: bool | None = None
        self._finished = False
        self._fps: float | None = None
        self._t0: float | None = None  # non-realtime files: time of index 0
        self._wall0 = 0
        # counters (read under the condition's lock)
        self._read = 0
        self._delivered = 0
        self._taken = 0
        self._dropped = 0
        self._skipped = 0
        self._reconnects = 0
        self._failures = 0
        self._last_error = ""
        self._progress_s = time.monotonic()  # written by the reader thread only
        # the last FFmpeg open of this source (under the open lock) gave no frame: it queues
        # behind cameras that were online (reader thread only)
        self._last_open_failed = False

    # -- state ---------------------------------------------------------------------
    @property
    def online(self) -> bool | None:
        """True after a frame arrived, False after a failure, None before either."""
        return self._online

    @property
    def finished(self) -> bool:
        """A file ended without ``loop`` (or the source was closed)."""
        return self._finished

    @property
    def media_origin_ms(self) -> int | None:
        """Non-realtime files: the ``wall_ms`` of frame index 0 (frame ``i`` is at
        ``origin + i * 1000 / fps``); ``None`` for other sources or before the first frame."""
        return self._wall0 if self._t0 is not None else None

    @property
    def fps(self) -> float | None:
        """The source's own frame rate as reported by the backend (None if unknown)."""
        return self._fps

    @property
    def last_progress_s(self) -> float:
        """``time.monotonic()`` when the reader last showed progress (see the module
        docstring); any thread may read it."""
        return self._progress_s

    @property
    def running(self) -> bool:
        """The reader thread is running (started, not finished or ended)."""
        t = self._thread
        return t is not None and t.is_alive() and not self._finished

    def stalled_for(self, now: float | None = None) -> float:
        """Seconds since the reader last showed progress (``now``: a ``time.monotonic()``
        reading, default the current one); ``0.0`` when the reader is not running."""
        if not self.running:
            return 0.0
        now = time.monotonic() if now is None else now
        return max(0.0, now - self._progress_s)

    def stats(self) -> dict[str, Any]:
        """Counters for /metrics: frames ``read`` (grabbed), ``delivered`` to the slot,
        ``taken`` by the consumer, ``dropped`` (replaced before taken), ``skipped``
        (throttle/frame_step), ``reconnects``, ``failures``; and ``online``."""
        with self._cond:
            return {
                "online": self._online,
                "finished": self._finished,
                "frames_read": self._read,
                "frames_delivered": self._delivered,
                "frames_taken": self._taken,
                "frames_dropped": self._dropped,
                "frames_skipped": self._skipped,
                "reconnects": self._reconnects,
                "failures": self._failures,
                "last_error": self._last_error,
            }

    # -- consumer side ---------------------------------------------------------------
    def read(self, timeout: float | None = None) -> Frame | None:
        """The latest frame not yet taken; waits up to ``timeout`` seconds (None: until a
        frame comes, the file finishes or the source is closed). ``None`` on timeout,
        finish or close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._slot is None:
                if self._finished or self._stop.is_set():
                    return None
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame, self._slot = self._slot, None
            self._taken += 1
            self._cond.notify_all()
            return frame

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        """Start the reader thread (idempotent)."""
        if self._thread is not None:
            return
        self._progress_s = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"source-{self.name}", daemon=True)
        self._thread.start()

    def close(self, timeout: float = 5.0) -> bool:
        """Stop the reader and wait up to ``timeout`` s for it; True if it ended.

        A read blocked inside the backend ends within ``read_timeout_s``; the capture is
        released by the reader thread itself. Idempotent.
        """
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        t = self._thread
        if t is None:
            return True
        t.join(timeout)
        alive = t.is_alive()
        if alive:
            log.warning("camera %s: reader did not stop within %.1f s", self.name, timeout)
        return not alive

    def __enter__(self) -> CameraSource:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- reader thread -----------------------------------------------------------------
    def _set_status(self, online: bool, reason: str) -> None:
        with self._cond:
            if self._online is online:
                return
            self._online = online
            if not online:
                self._failures += 1
                self._last_error = reason
        level = logging.INFO if online else logging.WARNING
        log.log(level, "camera %s %s: %s", self.name, "online" if online else "offline", reason)
        if self._on_status is not None:
            try:
                self._on_status(online, reason)
            except Exception:  # a faulty callback must not kill the reader
                log.exception("camera %s: status callback failed", self.name)

    def _beat(self) -> None:
        self._progress_s = time.monotonic()

    def _still_waiting(self) -> bool:
        """Waiting for another camera's open: progress, unless the source was closed."""
        self._beat()
        return not self._stop.is_set()

    def _pause(self, seconds: float) -> bool:
        """A deliberate wait of ``seconds`` that shows progress every ``_BEAT_S``; True
        when the source was closed meanwhile."""
        end = time.monotonic() + seconds
        while True:
            self._beat()
            left = end - self._progress_s
            if left <= 0:
                return self._stop.is_set()
            if self._stop.wait(min(left, _BEAT_S)):
                return True

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._beat()
                what, reason = self._read_session()
                if what == "stop" or self._stop.is_set():
                    break
                if what == "loop":
                    log.debug("camera %s: end of file, looping", self.name)
                    continue
                self._set_status(False, reason)
                delay = self._backoff.next_delay()
                log.debug("camera %s: retry in %.2f s", self.name, delay)
                if self._pause(delay):
                    break
                with self._cond:
                    self._reconnects += 1
        except Exception:
            log.exception("camera %s: reader thread failed", self.name)
            raise
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _read_session(self) -> _Outcome:
        """Open and read until the source fails, the file ends, or the reader stops."""
        spec = self.spec
        rank = _RANK_FAILING if self._last_open_failed else _RANK_RECENT
        cap = _open_capture(spec, rank=rank, waiting=self._still_waiting)
        self._beat()
        if cap is None:  # not tried: missing file, no answer to the probe, or closed
            return "offline", f"cannot open {self._where()}"
        delivered = self._delivered
        try:
            if not cap.isOpened():
                return "offline", f"cannot open {self._where()}"
            fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            self._fps = fps if math.isfinite(fps) and 0 < fps < 1000 else None
            return self._read_loop(cap)
        finally:
            cap.release()
            self._last_open_failed = self._delivered == delivered

    def _where(self) -> str:
        return redact_uri(self.spec.uri)  # no passwords in logs and alerts

    def _read_loop(self, cap: Any) -> _Outcome:
        spec = self.spec
        is_file = spec.kind == "file"
        paced_file = is_file and spec.realtime
        offline_file = is_file and not spec.realtime
        fps = self._fps or 25.0
        step = spec.frame_step
        if offline_file and step == 1 and spec.target_fps is not None:
            step = max(1, round(fps / spec.target_fps))
        period = (1.0 / spec.target_fps) if spec.target_fps and not offline_file else None
        frames_here = 0
        t_open = time.monotonic()
        next_due = t_open
        while not self._stop.is_set():
            self._beat()
            if paced_file:  # behave like a camera producing fps frames per second
                wait = t_open + frames_here / fps - time.monotonic()
                if wait > 0 and self._pause(wait):
                    return "stop", ""
            ok = bool(cap.grab())
            if not ok:
                if is_file and frames_here > 0:  # end of file
                    if not spec.loop:
                        log.info("camera %s: end of file", self.name)
                        return "stop", "end of file"
                    if Path(str(spec.uri)).is_file():
                        return "loop", ""
                    return "offline", f"{self._where()} is gone"
                return "offline", f"no frame from {self._where()} (read failed or timed out)"
            frames_here += 1
            now = time.monotonic()
            with self._cond:
                index = self._read
                self._read += 1
            if offline_file:
                want = index % step == 0
            elif period is not None:
                want = now >= next_due
                if want:
                    next_due = next_due + period if now - next_due < period else now + period
            else:
                want = True
            if not want:
                with self._cond:
                    self._skipped += 1
                continue
            self._beat()
            ok, image = cap.retrieve()
            if not ok or image is None:
                return "offline", f"cannot decode a frame from {self._where()}"
            self._backoff.reset()
            self._set_status(True, "receiving frames")
            self._deliver(np.ascontiguousarray(image, dtype=np.uint8), index, now, offline_file)
        return "stop", ""

    def _deliver(self, image: npt.NDArray[np.uint8], index: int, now: float, wait: bool) -> None:
        if wait:
            fps = self._fps or 25.0
            if self._t0 is None:
                self._t0 = now - index / fps
                self._wall0 = time.time_ns() // 1_000_000 - round(index * 1000 / fps)
            t = self._t0 + index / fps
            wall_ms = self._wall0 + round(index * 1000 / fps)
        else:
            t = now
            wall_ms = time.time_ns() // 1_000_000
        with self._cond:
            if wait:  # offline file: never drop, wait for the consumer
                while self._slot is not None and not self._stop.is_set():
                    self._cond.wait(0.1)
                    self._beat()
                if self._stop.is_set():
                    return
            if self._slot is not None:
                self._dropped += 1
            self._slot = Frame(
                image=image,
                seq=self._delivered,
                index=index,
                t=t,
                wall_ms=wall_ms,
                captured_mono=now,
            )
            self._delivered += 1
            self._cond.notify_all()
