"""``.ci/debian-deps`` (run by ``make run``, ``make test`` and CI) installs every Debian
package whose program the README or the gateway tells the user to run, when missing.

The script runs for real with ``--dry-run`` (prints what it would install, installs
nothing) under a ``PATH`` this test controls: an empty folder, or one holding a stand-in
for the program, so the answer does not depend on what this machine has installed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / ".ci" / "debian-deps"
BASH = "/bin/bash"


def wanted(path_dir: Path) -> list[str]:
    """The packages ``debian-deps --dry-run`` would install with ``PATH=path_dir``."""
    r = subprocess.run(
        [BASH, str(SCRIPT), "--dry-run"],
        env={"PATH": str(path_dir), "HOME": os.environ.get("HOME", "/tmp")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("would install:"), r.stdout
    return r.stdout.removeprefix("would install:").split()


def readme_programs() -> set[str]:
    """Programs of Debian packages the README's shell blocks tell the user to run."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    return {p for p in ("mosquitto_sub", "mosquitto_pub") if f"\n{p} " in text}


def test_readme_tells_the_user_to_run_mosquitto_sub() -> None:
    # the demo's "watch the events" line; `safety-edge run` prints the same command
    assert "mosquitto_sub" in readme_programs()
    src = (REPO / "edge" / "service" / "commands.py").read_text(encoding="utf-8")
    assert '"mosquitto_sub"' in src


@pytest.mark.parametrize("program", ["mosquitto_sub"])
def test_missing_mosquitto_sub_installs_mosquitto_clients(tmp_path: Path, program: str) -> None:
    """Before: the script installed `mosquitto` (broker only); `mosquitto_sub` from the
    README's first steps was `command not found` on a fresh Debian machine."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "mosquitto-clients" in wanted(empty)
    # with the program on PATH the package is not asked for
    have = tmp_path / "have"
    have.mkdir()
    stub = have / program
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    assert "mosquitto-clients" not in wanted(have)


def test_dry_run_with_everything_present_wants_nothing(tmp_path: Path) -> None:
    have = tmp_path / "have"
    have.mkdir()
    for prog in ("mosquitto", "mosquitto_sub", "openssl"):
        stub = have / prog
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    got = wanted(have)
    # opencv-doc and chromium are checked by file, so this machine decides those two
    assert set(got) <= {"opencv-doc", "chromium"}
