"""Is the gateway's wall clock plausible? (for zone schedules and event times)

A gateway without an RTC battery boots in 1970, at its image's build date, or (with
``fake-hwclock`` / systemd-timesyncd's saved clock) at its last shutdown, and keeps that
time until NTP answers -- on an isolated site, never. Zone schedules read the wall clock,
so a zone armed ``mon-fri 07:00-19:00`` would silently raise nothing all shift.

The check here is deliberately simple and never guesses the right time:

- **floor**: the clock is implausible while it reads before a floor, the latest of
  :data:`BUILD_FLOOR_MS` (a date fixed in the code at release; no correct clock can be
  earlier) and the newest event time in the events database (events were stamped by a
  clock that was right, or at least no earlier, before this boot);
- **systemd-timesyncd** (extra information): ``/run/systemd/timesync/synchronized``
  exists once timesyncd has synchronized since boot. Its absence alone says nothing
  (many images run chrony, ntpd or no NTP at all), so it only makes the clock
  implausible when the config asks for it (``service.clock_require_sync``: then the clock
  is implausible until timesyncd has synchronized -- only for images that run it);
  otherwise it is reported in ``/healthz`` and in the alert message.

What is *not* caught: a clock that reads after the floor but is still wrong (the last
shutdown time restored at boot, a clock hours behind) -- unless
``service.clock_require_sync`` is set and timesyncd has not synchronized yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from edge import RELEASE_FLOOR

__all__ = [
    "BUILD_FLOOR_MS",
    "TIMESYNC_DIR",
    "ClockReading",
    "check_clock",
    "iso_ms",
    "timesync_synchronized",
]

BUILD_FLOOR_MS = int(RELEASE_FLOOR.timestamp() * 1000)
""":data:`edge.RELEASE_FLOOR` (2026-11-01T00:00Z) in Unix ms: no correct clock running this
release reads earlier."""

TIMESYNC_DIR = Path("/run/systemd/timesync")
"""systemd-timesyncd's runtime folder; ``synchronized`` in it once it has synchronized."""


def iso_ms(ms: int) -> str:
    """Unix milliseconds as ``YYYY-MM-DDTHH:MM:SSZ``."""
    dt = datetime.fromtimestamp(ms / 1000.0, tz=timezone.utc)
    return dt.isoformat(timespec="seconds").replace("+00:00", "Z")


def timesync_synchronized(folder: Path = TIMESYNC_DIR) -> bool | None:
    """``True``: systemd-timesyncd has synchronized the clock since boot (its
    ``synchronized`` flag file exists); ``False``: timesyncd runs (its folder exists) but
    has not; ``None``: no timesyncd here (unknown: another NTP client, or none)."""
    try:
        if (folder / "synchronized").exists():
            return True
        return False if folder.is_dir() else None
    except OSError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ClockReading:
    """One clock check.

    Attributes:
        now_ms: the wall clock read, Unix ms.
        floor_ms: the floor it was compared with, Unix ms.
        floor_source: where the floor comes from (``"build date"`` or
            ``"newest event in the events database"``).
        synchronized: :func:`timesync_synchronized`.
        plausible: ``now_ms >= floor_ms`` (and synchronized, when required).
    """

    now_ms: int
    floor_ms: int
    floor_source: str
    synchronized: bool | None
    plausible: bool

    def message(self) -> str:
        """One line for the log, the alert and ``/healthz``."""
        sync = {True: "yes", False: "no", None: "unknown (no systemd-timesyncd)"}
        reads = f"wall clock reads {iso_ms(self.now_ms)}"
        floor = f"{self.floor_source} {iso_ms(self.floor_ms)}"
        if self.now_ms < self.floor_ms:
            head = f"{reads}, before the {floor}"
        elif not self.plausible:
            head = f"{reads}, not synchronized yet (service.clock_require_sync)"
        else:
            head = f"{reads}, at or after the {floor}"
        return f"{head}; NTP synchronized: {sync[self.synchronized]}"

    def as_dict(self) -> dict[str, object]:
        """The ``clock`` section of ``/healthz``."""
        return {
            "plausible": self.plausible,
            "now": iso_ms(self.now_ms),
            "floor": iso_ms(self.floor_ms),
            "floor_source": self.floor_source,
            "synchronized": self.synchronized,
            "message": self.message(),
        }


def check_clock(
    *,
    now_ms: int,
    newest_event_ms: int | None,
    synchronized: bool | None,
    require_sync: bool = False,
    build_floor_ms: int = BUILD_FLOOR_MS,
) -> ClockReading:
    """Compare ``now_ms`` with the floor (see the module docstring).

    >>> check_clock(now_ms=0, newest_event_ms=None, synchronized=None).plausible
    False
    >>> r = check_clock(now_ms=BUILD_FLOOR_MS + 10, newest_event_ms=BUILD_FLOOR_MS + 20,
    ...                 synchronized=True)
    >>> r.plausible, r.floor_source
    (False, 'newest event in the events database')
    >>> check_clock(now_ms=BUILD_FLOOR_MS, newest_event_ms=None, synchronized=False).plausible
    True
    """
    floor, source = build_floor_ms, "build date"
    if newest_event_ms is not None and newest_event_ms > floor:
        floor, source = newest_event_ms, "newest event in the events database"
    plausible = now_ms >= floor and (synchronized is True or not require_sync)
    return ClockReading(
        now_ms=now_ms,
        floor_ms=floor,
        floor_source=source,
        synchronized=synchronized,
        plausible=plausible,
    )
