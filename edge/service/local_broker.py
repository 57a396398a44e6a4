"""A local mosquitto for ``safety-edge run --local-broker`` (``make run``): a demo gateway
with no broker configured still publishes somewhere you can watch.

It listens on 127.0.0.1 only (port 1883 when free, else any free port), anonymous, with
its persistence and log in ``<data_dir>/mosquitto/``. When ``mosquitto`` is not installed
:meth:`LocalBroker.start` returns ``False`` and the caller says how to install it; the
gateway still runs and its events wait in the outbox.
"""

from __future__ import annotations

import getpass
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

__all__ = ["INSTALL_HINT", "LocalBroker", "find_mosquitto"]

log = logging.getLogger("edge.service")

INSTALL_HINT = (
    "mosquitto is not installed; install it with `sudo apt-get install mosquitto "
    "mosquitto-clients` (Debian/Ubuntu) or `brew install mosquitto` (macOS)"
)


def find_mosquitto() -> str | None:
    """Path of the ``mosquitto`` broker binary (``PATH``, then ``/usr/sbin``), or None."""
    found = shutil.which("mosquitto")
    if found:
        return found
    for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto", "/opt/homebrew/sbin/mosquitto"):
        if os.access(p, os.X_OK):
            return p
    return None


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    """One mosquitto child process (see the module docstring). Keyword-only; a context
    manager; :meth:`stop` is idempotent.

    Args:
        data_dir: its files go to ``data_dir / "mosquitto"``.
        port: preferred port (taken when free, else a free one).
    """

    host = "127.0.0.1"

    def __init__(self, *, data_dir: Path, port: int = 1883) -> None:
        # Absolute: mosquitto runs with this folder as its working directory, so relative
        # paths in its config would resolve against it a second time.
        self.dir = (Path(data_dir) / "mosquitto").resolve()
        self.preferred_port = port
        self.port = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> bool:
        """Start and wait until it listens; False when mosquitto is not installed.

        Raises:
            OSError: it is installed but exited or did not listen within ``timeout``.
        """
        exe = find_mosquitto()
        if exe is None:
            return False
        self.dir.mkdir(parents=True, exist_ok=True)
        preferred = self.preferred_port
        self.port = preferred if preferred and _port_free(preferred) else _free_port()
        conf = self.dir / "mosquitto.conf"
        conf.write_text(
            f"user {getpass.getuser()}\n"
            f"listener {self.port} {self.host}\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {self.dir}/\n"
            f"log_dest file {self.dir / 'mosquitto.log'}\n"
            "max_queued_messages 100000\n",
            encoding="utf-8",
        )
        self._proc = subprocess.Popen(
            [exe, "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.dir,
            start_new_session=True,  # a terminal's Ctrl-C goes to the gateway, which stops it
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise OSError(f"mosquitto exited with status {code}; see {self.dir}/mosquitto.log")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    log.info("local mosquitto listening on %s:%d", self.host, self.port)
                    return True
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise OSError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` (idempotent)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def __enter__(self) -> LocalBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
