"""Is the gateway's wall clock plausible? (for zone schedules and event times)

A gateway without an RTC battery boots in 1970, at its image's build date, or (with
``fake-hwclock`` / systemd-timesyncd's saved clock) at its last shutdown, and keeps that
time until NTP answers -- on an isolated site, never. Zone schedules read the wall clock,
so a zone armed ``mon-fri 07:00-19:00`` would silently raise nothing all shift.

The check here is deliberately simple and never guesses the right time:

- **NTP synchronized** (:func:`clock_synchronized`): ``True`` when the kernel says an NTP
  client disciplines the clock (:func:`kernel_clock_synchronized`: ``adjtimex`` without
  privilege; timesyncd, chrony and ntpd all clear the kernel's ``STA_UNSYNC`` flag, it is
  what ``timedatectl`` shows as "System clock synchronized") or systemd-timesyncd's flag
  file says so (:func:`timesync_synchronized`); ``False`` when either says not (and none
  says yes); ``None`` when neither can tell (not Linux, no timesyncd).
- **floor**: the clock is implausible while it reads before a floor: :data:`BUILD_FLOOR_MS`
  (a date fixed in the code at release; no correct clock can be earlier) and, while the
  clock is *not* NTP synchronized, also the newest event time in the events database
  (events were stamped by a clock that was right, or at least no earlier, before this
  boot). A synchronized clock is right by definition, so the newest event is no floor for
  it: an event stamped while the clock ran ahead (a bad RTC reading of 2099, a wrong
  GPS/NTP step) would otherwise hold every later, correct clock implausible forever. Such
  an event (more than :data:`AHEAD_SLACK_MS` after a synchronized clock) is named in the
  reading's message instead.
- ``service.clock_require_sync``: the clock is also implausible until it is NTP
  synchronized (either signal above); otherwise the state is only reported in
  ``/healthz`` and in the alert message.

What is *not* caught: a clock that reads after the floor but is still wrong (the last
shutdown time restored at boot, a clock hours behind) -- unless
``service.clock_require_sync`` is set and the clock is not synchronized yet; nor a wrong
time that an NTP (or GPS) source itself serves, as long as it is after the build date.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cache
from pathlib import Path

from edge import RELEASE_FLOOR

__all__ = [
    "AHEAD_SLACK_MS",
    "BUILD_FLOOR_MS",
    "TIMESYNC_DIR",
    "ClockReading",
    "check_clock",
    "clock_synchronized",
    "combine_sync",
    "iso_ms",
    "kernel_clock_synchronized",
    "timesync_synchronized",
]

BUILD_FLOOR_MS = int(RELEASE_FLOOR.timestamp() * 1000)
""":data:`edge.RELEASE_FLOOR` (2026-11-01T00:00Z) in Unix ms: no correct clock running this
release reads earlier."""

TIMESYNC_DIR = Path("/run/systemd/timesync")
"""systemd-timesyncd's runtime folder; ``synchronized`` in it once it has synchronized."""

AHEAD_SLACK_MS = 60_000
"""A newest event this far (ms) after a synchronized clock is named in the reading's
message (it was stamped by a clock that ran ahead); less is ordinary skew."""

_STA_UNSYNC = 0x0040  # linux/timex.h: clock not synchronized (set at boot, by no NTP)
_TIME_ERROR = 5  # adjtimex() return: clock not synchronized


class _Timex(ctypes.Structure):
    """glibc's ``struct timex`` for the plain ``adjtimex`` symbol: ``long`` fields (64-bit
    on LP64 -- x86_64, aarch64 --, 32-bit on 32-bit ABIs), ``int`` status/shift/tai,
    natural alignment (208 bytes on x86_64: status at 40, tai at 160, as gcc lays it out),
    then slack so that a kernel or libc writing more never writes past the buffer."""

    _fields_ = (
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
        ("_slack", ctypes.c_char * 64),
    )


@cache
def _adjtimex() -> Callable[[ctypes._Pointer[_Timex]], int]:  # raises OSError, AttributeError
    fn = ctypes.CDLL(None, use_errno=True).adjtimex  # the C library already loaded
    fn.argtypes = [ctypes.POINTER(_Timex)]
    fn.restype = ctypes.c_int
    return fn


def kernel_clock_synchronized() -> bool | None:
    """The kernel's NTP state, whatever NTP client runs (systemd-timesyncd, chrony and ntpd
    all clear ``STA_UNSYNC`` while they discipline the clock): ``True`` when synchronized
    (``adjtimex`` does not return ``TIME_ERROR`` and ``STA_UNSYNC`` is clear); ``False``
    when not (no NTP client, or none has reached a server since boot); ``None`` when it
    cannot tell (not Linux, no ``adjtimex`` in the C library, the call refused). Reads
    only (``modes = 0``): no privilege needed. Microseconds."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = _adjtimex()
    except (OSError, AttributeError):
        return None
    tx = _Timex()  # zeroed: modes = 0, read only
    rc = fn(ctypes.pointer(tx))
    if rc < 0:
        return None
    return rc != _TIME_ERROR and not tx.status & _STA_UNSYNC


def combine_sync(timesyncd: bool | None, kernel: bool | None) -> bool | None:
    """Either signal saying synchronized is enough (``True``); otherwise ``False`` when one
    says not synchronized; ``None`` only when both are unknown.

    >>> combine_sync(None, True), combine_sync(False, True), combine_sync(None, False)
    (True, True, False)
    >>> combine_sync(None, None)
    """
    if timesyncd or kernel:
        return True
    if timesyncd is False or kernel is False:
        return False
    return None


def clock_synchronized(
    folder: Path = TIMESYNC_DIR,
    kernel: Callable[[], bool | None] = kernel_clock_synchronized,
) -> bool | None:
    """Is the wall clock NTP synchronized? :func:`combine_sync` of
    :func:`timesync_synchronized` (``folder``) and ``kernel()``."""
    return combine_sync(timesync_synchronized(folder), kernel())


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
        synchronized: :func:`clock_synchronized`.
        plausible: ``now_ms >= floor_ms`` (and synchronized, when required).
        ahead_event_ms: the newest stored event when it lies more than
            :data:`AHEAD_SLACK_MS` after this synchronized clock (stamped by a clock that
            ran ahead; no floor), Unix ms; else ``None``.
    """

    now_ms: int
    floor_ms: int
    floor_source: str
    synchronized: bool | None
    plausible: bool
    ahead_event_ms: int | None = None

    def message(self) -> str:
        """One line for the log, the alert and ``/healthz``."""
        sync = {True: "yes", False: "no", None: "unknown (no systemd-timesyncd, no kernel state)"}
        reads = f"wall clock reads {iso_ms(self.now_ms)}"
        floor = f"{self.floor_source} {iso_ms(self.floor_ms)}"
        if self.now_ms < self.floor_ms:
            head = f"{reads}, before the {floor}"
        elif not self.plausible:
            head = f"{reads}, not synchronized yet (service.clock_require_sync)"
        else:
            head = f"{reads}, at or after the {floor}"
        if self.ahead_event_ms is not None:
            head += (
                f"; the newest stored event {iso_ms(self.ahead_event_ms)} is after this "
                "synchronized clock: it was stamped by a clock that ran ahead"
            )
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
    """Compare ``now_ms`` with the floor (see the module docstring): the build date, and
    the newest event unless the clock is synchronized.

    >>> check_clock(now_ms=0, newest_event_ms=None, synchronized=None).plausible
    False
    >>> r = check_clock(now_ms=BUILD_FLOOR_MS + 10, newest_event_ms=BUILD_FLOOR_MS + 20,
    ...                 synchronized=None)
    >>> r.plausible, r.floor_source
    (False, 'newest event in the events database')
    >>> r = check_clock(now_ms=BUILD_FLOOR_MS + 10, newest_event_ms=BUILD_FLOOR_MS + 20,
    ...                 synchronized=True)
    >>> r.plausible, r.floor_source
    (True, 'build date')
    >>> check_clock(now_ms=BUILD_FLOOR_MS, newest_event_ms=None, synchronized=False).plausible
    True
    """
    floor, source = build_floor_ms, "build date"
    ahead = None
    if newest_event_ms is not None and synchronized is True:
        if newest_event_ms > now_ms + AHEAD_SLACK_MS:
            ahead = newest_event_ms
    elif newest_event_ms is not None and newest_event_ms > floor:
        floor, source = newest_event_ms, "newest event in the events database"
    plausible = now_ms >= floor and (synchronized is True or not require_sync)
    return ClockReading(
        now_ms=now_ms,
        floor_ms=floor,
        floor_source=source,
        synchronized=synchronized,
        plausible=plausible,
        ahead_event_ms=ahead,
    )
