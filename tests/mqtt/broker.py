"""A real mosquitto broker for tests, on a free 127.0.0.1 port in a temporary directory.

Reusable by any test (``from tests.mqtt.broker import MosquittoBroker``)::

    with MosquittoBroker(tmp_path) as broker:          # starts, waits for the port
        client.connect(broker.host, broker.port)
        broker.restart()                               # same port, persistence kept
    # stopped (SIGTERM, then SIGKILL after 10 s)

Options: ``tls=BrokerTls(...)`` for a TLS listener, ``password_file=`` (anonymous access
is then off), ``acl_file=``, ``persistence=`` (default on, saved every second and at
shutdown), ``extra_conf=`` lines appended, or ``conf_text=`` for a complete
configuration (a rendered deploy template; it must listen on ``port``). The broker's
output goes to ``<dir>/mosquitto.log`` (:meth:`MosquittoBroker.log_text`).
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

__all__ = ["MOSQUITTO", "BrokerTls", "MosquittoBroker", "free_port", "mosquitto_passwd"]

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mosquitto_passwd(path: Path, users: dict[str, str]) -> Path:
    """Write a mosquitto password file for ``users`` (name -> password) with the
    ``mosquitto_passwd`` tool that ships with the broker."""
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    path.unlink(missing_ok=True)
    for i, (user, password) in enumerate(users.items()):
        args = [tool, "-b", *(["-c"] if i == 0 else []), str(path), user, password]
        subprocess.run(args, check=True, capture_output=True, timeout=30)
    return path


@dataclass(frozen=True)
class BrokerTls:
    """Server side of a TLS listener: CA that signs client certs, server cert and key."""

    ca_file: Path
    cert_file: Path
    key_file: Path
    require_certificate: bool = False


class MosquittoBroker:
    """One mosquitto process; see the module docstring."""

    host = "127.0.0.1"

    def __init__(
        self,
        tmp_path: Path,
        *,
        port: int | None = None,
        name: str = "mosquitto",
        tls: BrokerTls | None = None,
        password_file: Path | None = None,
        acl_file: Path | None = None,
        persistence: bool = True,
        extra_conf: str = "",
        conf_text: str | None = None,
    ) -> None:
        self.dir = Path(tmp_path) / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls = tls
        self.password_file = password_file
        self.acl_file = acl_file
        self.persistence = persistence
        self.extra_conf = extra_conf
        self.conf_text = conf_text
        self.conf_path = self.dir / "mosquitto.conf"
        self.log_path = self.dir / "mosquitto.log"
        self._proc: subprocess.Popen[bytes] | None = None

    def config(self) -> str:
        """The configuration file text this broker runs with."""
        # Run as the current user: mosquitto started as root would switch to "mosquitto".
        head = f"user {getpass.getuser()}\n"
        if self.conf_text is not None:
            return head + self.conf_text
        lines = [
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            f"allow_anonymous {'false' if self.password_file else 'true'}",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_file}",
                f"certfile {self.tls.cert_file}",
                f"keyfile {self.tls.key_file}",
                "tls_version tlsv1.2",
                f"require_certificate {'true' if self.tls.require_certificate else 'false'}",
            ]
        if self.password_file is not None:
            lines.append(f"password_file {self.password_file}")
        if self.acl_file is not None:
            lines.append(f"acl_file {self.acl_file}")
        if self.persistence:
            lines += [
                "persistence true",
                f"persistence_location {self.dir}/",
                "autosave_interval 1",
            ]
        lines += [
            "max_queued_messages 100000",
            "log_dest stderr",
            "log_type all",
            "connection_messages true",
        ]
        return head + "\n".join(lines) + "\n" + self.extra_conf + "\n"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        """Write the config, start mosquitto and wait until the port accepts connections.

        Raises:
            RuntimeError: mosquitto exited or did not listen within ``timeout`` (the
                message carries the end of its log).
        """
        if self.running:
            return self
        self.conf_path.write_text(self.config())
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the process lifetime
        self._proc = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.conf_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"mosquitto exited with {self._proc.returncode}:\n{self.log_text()[-3000:]}"
                )
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"mosquitto did not listen on {self.port}:\n{self.log_text()[-3000:]}")

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (mosquitto saves its persistence file) and wait; SIGKILL after ``timeout``."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved since the last autosave."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)

    def restart(self, timeout: float = 10.0) -> MosquittoBroker:
        """Stop gracefully and start again on the same port with the same data."""
        self.stop()
        return self.start(timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
