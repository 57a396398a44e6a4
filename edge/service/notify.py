"""systemd's notify protocol in the standard library (no ``python-systemd`` dependency).

With ``Type=notify`` systemd passes ``$NOTIFY_SOCKET`` (a unix datagram socket path, or
``@name`` for the abstract namespace) and, with ``WatchdogSec=``, ``$WATCHDOG_USEC``
(and ``$WATCHDOG_PID``). The service sends newline-separated ``KEY=VALUE`` datagrams:

- ``READY=1`` once start-up is complete (systemd then reports the unit started);
- ``WATCHDOG=1`` at least every ``WATCHDOG_USEC`` (we ping at half of it), only while
  the service is healthy, so a hung gateway is restarted;
- ``STOPPING=1`` when shutdown begins; ``STATUS=...`` free text shown by ``systemctl
  status``.

Without ``$NOTIFY_SOCKET`` (a terminal, a container) every call is a no-op returning
``False``. A send that fails (socket gone) is logged once at DEBUG and never raises: the
gateway must not die because its supervisor went away.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

__all__ = ["Notifier"]

log = logging.getLogger("edge.service")


class Notifier:
    """Sends sd_notify messages to ``$NOTIFY_SOCKET`` (see the module docstring).

    Args:
        environ: where to read ``NOTIFY_SOCKET``/``WATCHDOG_USEC``/``WATCHDOG_PID``
            (default ``os.environ``).

    Thread-safety: :meth:`notify` may be called from any thread (one ``sendto`` each).
    """

    def __init__(self, *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = None
        if raw.startswith("@"):
            self._address = b"\0" + raw[1:].encode()
        elif raw.startswith("/"):
            self._address = raw
        self._watchdog_s: float | None = None
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self._watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._failed = False

    @property
    def enabled(self) -> bool:
        """True when ``$NOTIFY_SOCKET`` names a socket."""
        return self._address is not None

    @property
    def watchdog_interval_s(self) -> float | None:
        """Seconds between ``WATCHDOG=1`` pings (half of ``WATCHDOG_USEC``), or ``None``
        when no watchdog is configured for this process."""
        return None if self._watchdog_s is None else self._watchdog_s / 2.0

    def notify(self, message: str) -> bool:
        """Send one datagram (``"READY=1\\nSTATUS=..."``); True when it was sent."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(message.encode("utf-8"), self._address)
            return True
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.debug("sd_notify to %r failed: %s", self._address, exc)
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1" + (f"\nSTATUS={status}" if status else ""))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1" + (f"\nSTATUS={status}" if status else ""))

    def status(self, text: str) -> bool:
        return self.notify(f"STATUS={text}")

    def close(self) -> None:
        """Close the socket (idempotent); later calls reopen it."""
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
