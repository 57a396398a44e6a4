"""RateLimitedLog: the first occurrence at once, then one line per interval with a count.

The clock is a plain counter the test advances (the class takes any monotonic clock), so
minutes pass without waiting; the logger and the records are real.
"""

from __future__ import annotations

import logging
import re
import threading

import pytest

from edge.lograte import RateLimitedLog

LOGGER = "tests.lograte"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def counted(line: str) -> int:
    """Occurrences a line stands for (1 without a count)."""
    m = re.search(r"\[(\d+) like this in the last \d+ s, this one included\]$", line)
    return 1 if m is None else int(m.group(1))


def test_first_at_once_then_one_summary_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    clock = Clock()
    rl = RateLimitedLog(logging.getLogger(LOGGER), interval_s=60.0, clock=clock)
    assert rl.hit("event %s refused", "e0") is True
    for i in range(1, 500):  # 499 more within the same minute: nothing logged
        clock.t += 0.1
        assert rl.hit("event %s refused", f"e{i}") is False
    assert lines(caplog) == ["event e0 refused"]
    assert rl.pending == 499
    assert rl.flush() is False  # the minute is not over
    clock.t = 1000.0 + 60.0
    assert rl.hit("event %s refused", "e500") is True
    assert (
        lines(caplog)[-1]
        == "event e500 refused [500 like this in the last 60 s, this one included]"
    )
    for i in range(501, 531):
        clock.t += 1.0
        rl.hit("event %s refused", f"e{i}")
    clock.t += 60.0
    assert rl.flush() is True  # no new occurrence: flush reports the last 30
    assert (
        lines(caplog)[-1] == "event e530 refused [30 like this in the last 90 s, this one included]"
    )
    assert rl.flush(force=True) is False  # nothing pending
    assert sum(counted(line) for line in lines(caplog)) == 531
    assert len(lines(caplog)) == 3
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)
    clock.t += 3600.0  # after a quiet hour, the next one is logged at once and plain
    assert rl.hit("event %s refused", "late") is True
    assert lines(caplog)[-1] == "event late refused"


def test_force_flush_and_threads(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    rl = RateLimitedLog(logging.getLogger(LOGGER), interval_s=3600.0, level=logging.INFO)
    threads = [
        threading.Thread(target=lambda: [rl.hit("x %d", i) for i in range(250)]) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert rl.flush(force=True) is True
    assert len(lines(caplog)) == 2
    assert sum(counted(line) for line in lines(caplog)) == 2000
    assert all(r.levelno == logging.INFO for r in caplog.records)
    with pytest.raises(ValueError):
        RateLimitedLog(logging.getLogger(LOGGER), interval_s=0)
