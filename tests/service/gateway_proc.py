"""``safety-edge run`` as a real subprocess for tests, and a systemd-style notify socket.

:class:`NotifySocket` is what systemd does for ``Type=notify``: a unix datagram socket
(abstract namespace by default) whose address goes to the child in ``$NOTIFY_SOCKET``;
it collects every datagram the child sends.

:class:`Gateway` starts ``python -m edge.cli run --config FILE`` with that socket,
waits for ``READY=1`` and stops it with a signal, timing the exit.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
VTEST = Path("/usr/share/doc/opencv-doc/examples/data/vtest.avi")
FOOTPATH = [[0.5, 0.3], [0.8, 0.3], [1.0, 0.45], [1.0, 0.82], [0.5, 0.57]]
"""The right half of vtest's footpath (0-1 frame coordinates): people cross it all along."""


class NotifySocket:
    """A unix datagram socket collecting sd_notify messages (see the module docstring)."""

    def __init__(self, *, path: Path | None = None) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        if path is None:
            name = f"safety-edge-test-{secrets.token_hex(6)}"
            self.sock.bind("\0" + name)
            self.address = "@" + name
        else:
            self.sock.bind(str(path))
            self.address = str(path)
        self.sock.settimeout(0.1)
        self.messages: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            with self._lock:
                self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[str]:
        """Every ``KEY=VALUE`` line received so far, in order."""
        with self._lock:
            return [line for _, m in self.messages for line in m.split("\n")]

    def times_of(self, line: str) -> list[float]:
        with self._lock:
            return [t for t, m in self.messages if line in m.split("\n")]

    def wait_for(self, line: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if line in self.lines():
                return True
            time.sleep(0.02)
        return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        self.sock.close()


def gateway_config(
    tmp: Path,
    *,
    broker_port: int,
    api_port: int,
    extra_cameras: list[dict[str, Any]] | None = None,
    zone: dict[str, Any] | None = None,
    service: dict[str, Any] | None = None,
    mqtt: dict[str, Any] | None = None,
) -> Path:
    """A gateway.yaml on vtest.avi (looped, realtime) with the footpath fence zone."""
    z = {
        "name": "footpath",
        "polygon": FOOTPATH,
        "classes": ["people"],
        "min_dwell_s": 0.5,
        "cooldown_s": 1.0,
        "update_every_s": 1.0,
    }
    z.update(zone or {})
    cfg: dict[str, Any] = {
        "gateway_id": "gw-test",
        "data_dir": str(tmp / "data"),
        "models_dir": str(REPO / "models"),
        "tasks": {"hardhat": None, "workwear": None},
        "cameras": [
            {
                "name": "vtest",
                "source": str(VTEST),
                "loop": True,
                "realtime": True,
                "target_fps": 4,
                "tasks": {"fence": {"zones": [z]}},
            },
            *(extra_cameras or []),
        ],
        "mqtt": {
            "host": "127.0.0.1",
            "port": broker_port,
            "prefix": "se-test",
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.5,
            **(mqtt or {}),
        },
        "api": {"host": "127.0.0.1", "port": api_port, "workers": 1},
        "service": {
            "stop_timeout_s": 10,
            "flush_timeout_s": 2,
            "state_interval_s": 0.5,
            "log_format": "json",
            **(service or {}),
        },
    }
    path = tmp / "gateway.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


class Gateway:
    """One ``safety-edge run`` child process."""

    def __init__(self, config: Path, *, notify: NotifySocket, watchdog_usec: int = 1_000_000):
        self.config = config
        self.notify = notify
        env = dict(os.environ)
        env.update(
            NOTIFY_SOCKET=notify.address,
            WATCHDOG_USEC=str(watchdog_usec),
            PYTHONUNBUFFERED="1",
        )
        env.pop("WATCHDOG_PID", None)
        self.log_path = config.with_suffix(f".{secrets.token_hex(3)}.log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.cli", "run", "--config", str(config)],
            cwd=REPO,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        self.exit_seconds: float | None = None

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if "READY=1" in self.notify.lines():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"gateway exited {self.proc.returncode}:\n{self.output()}")
            time.sleep(0.05)
        raise AssertionError(f"gateway not ready within {timeout} s:\n{self.output()}")

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send ``sig`` and wait; returns the exit status (``exit_seconds`` is set)."""
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
            raise AssertionError(
                f"gateway did not exit within {timeout} s:\n{self.output()}"
            ) from None
        finally:
            self._log.close()
        self.exit_seconds = time.monotonic() - t0
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        self._log.close()
