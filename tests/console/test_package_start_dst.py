"""The console's package Start field names a time in the repeated or skipped hour of a DST
change as such (before: "out of range"). Runs in a child process with TZ=Europe/Berlin, so
the local zone is known whatever the test machine's zone."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

CODE = """
import time
time.tzset()
from edge.api.console.routes import _package_start
from edge.api.store import AppError
for text in ("2026-10-25T02:30", "2026-03-29T02:30"):
    try:
        _package_start(text)
    except AppError as exc:
        print(exc)
print(_package_start("2026-10-25T04:00").isoformat())
"""


@pytest.mark.skipif(sys.platform != "linux", reason="TZ environment variable semantics")
def test_start_in_the_repeated_or_skipped_hour_is_named() -> None:
    env = {**os.environ, "TZ": "Europe/Berlin"}
    out = subprocess.run(
        [sys.executable, "-c", CODE], env=env, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(out) == 3, out
    assert out[0].startswith("Start ") and "ambiguous" in out[0] and "+02:00" in out[0]
    assert out[1].startswith("Start ") and "does not exist" in out[1]
    assert out[2] == "2026-10-25T04:00:00+01:00"
