"""``deploy/install.sh`` as an upgrade (and a rollback): the program is really replaced.

pip takes a wheel or source tree of the version already installed as "already
satisfied" and replaces nothing, so ``pip install --upgrade`` alone made a rebuilt
release, or a rollback to an older wheel of the same version, a silent no-op while the
script went on to restart and print "installed". The script now force-reinstalls
safety-edge alone (``--force-reinstall --no-deps``), then installs its dependencies as
usual, and checks ``safety-edge --version``.

The script needs root and systemd for real, so these tests read its ``--dry-run`` output
(the exact commands it would run) and run its pip commands for real in a scratch venv
with two hand-built wheels of the same name and version (offline, ``--no-index``).
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shlex
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

import edge

REPO = Path(__file__).resolve().parents[1]
INSTALL_SH = REPO / "deploy" / "install.sh"
VENV_PYTHON = "/opt/safety-edge/venv/bin/python"


def dry_run(*args: str, models: Path) -> list[str]:
    """The commands ``install.sh --dry-run`` prints (``+ `` lines, prefix stripped)."""
    out = subprocess.run(
        ["bash", str(INSTALL_SH), "--dry-run", "--models", str(models), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    return [ln[2:] for ln in out.splitlines() if ln.startswith("+ ")]


def pip_installs(lines: list[str]) -> list[list[str]]:
    return [shlex.split(ln) for ln in lines if ln.startswith(f"{VENV_PYTHON} -m pip install ")]


def test_version_is_the_same_in_pyproject_and_package() -> None:
    # (no tomllib on Python 3.10): the one top-level `version = "..."` line of [project]
    found = re.findall(r'(?m)^version = "([^"]+)"$', (REPO / "pyproject.toml").read_text())
    assert found == [edge.__version__]


@pytest.mark.parametrize("wheel", [False, True])
def test_dry_run_force_reinstalls_safety_edge_then_installs_dependencies(
    tmp_path: Path, wheel: bool
) -> None:
    target = str(tmp_path / "safety_edge-0.2.0-py3-none-any.whl") if wheel else str(REPO)
    args = ("--wheel", target) if wheel else ()
    lines = dry_run(*args, models=tmp_path)
    pips = pip_installs(lines)
    assert len(pips) == 2, lines
    first, second = pips
    assert first[-1] == target and second[-1] == target
    assert "--force-reinstall" in first and "--no-deps" in first, first
    assert "--no-deps" not in second and "--force-reinstall" not in second, second
    want = "0.2.0" if wheel else edge.__version__
    check = f"/opt/safety-edge/venv/bin/safety-edge --version   # must print: safety-edge {want}"
    assert check in lines


def _wheel(folder: Path, mark: str, version: str = "0.2.0") -> Path:
    """A minimal pure-Python wheel named safety-edge ``version`` holding module
    ``edge_probe`` with ``MARK = mark`` (two of them differ only in content)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"safety_edge-{version}.dist-info"
    files = {
        "edge_probe.py": f"MARK = {mark!r}\n",
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: safety-edge\nVersion: {version}\n",
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for name, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=")
        record.append(f"{name},sha256={digest.decode()},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    files[f"{info}/RECORD"] = "\n".join(record) + "\n"
    path = folder / f"safety_edge-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    return path


def _isolated(cwd: Path) -> dict[str, object]:
    """subprocess arguments that keep the scratch venv's pip from seeing this checkout
    (``python -m`` puts the working folder, with its ``safety_edge.egg-info``, on
    ``sys.path``; ``PYTHONPATH``) or local pip settings (find-links, indexes)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON"))}
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return {"cwd": cwd, "env": env, "timeout": 120, "check": True, "capture_output": True}


def _probe(python: Path, cwd: Path) -> str:
    out = subprocess.run(
        [str(python), "-c", "import edge_probe; print(edge_probe.MARK)"],
        text=True,
        **_isolated(cwd),  # type: ignore[call-overload]
    )
    return str(out.stdout).strip()


def _run_pips(lines: list[str], python: Path, cwd: Path) -> None:
    for cmd in pip_installs(lines):
        cmd[0] = str(python)
        subprocess.run(cmd, **_isolated(cwd))  # type: ignore[call-overload]


def test_same_version_wheel_replaces_the_installed_one_and_rolls_back(tmp_path: Path) -> None:
    """Real pip in a scratch venv (offline): install wheel A, then run the pip commands
    install.sh prints for wheel B of the same name and version: B is installed; then
    those for A again (a rollback): A is back."""
    env = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env)
    python = env / "bin" / "python"
    a = _wheel(tmp_path / "a", "A")
    b = _wheel(tmp_path / "b", "B")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-index", str(a)],
        **_isolated(tmp_path),  # type: ignore[call-overload]
    )
    assert _probe(python, tmp_path) == "A"
    models = tmp_path / "models"
    models.mkdir()
    upgrade = dry_run("--wheel", str(b), "--wheelhouse", str(b.parent), models=models)
    _run_pips(upgrade, python, tmp_path)
    assert _probe(python, tmp_path) == "B"  # the old `pip install --upgrade B` left A
    rollback = dry_run("--wheel", str(a), "--wheelhouse", str(a.parent), models=models)
    _run_pips(rollback, python, tmp_path)
    assert _probe(python, tmp_path) == "A"


if sys.platform != "linux":  # pragma: no cover
    pytestmark = pytest.mark.skip("install.sh is for Linux gateways")


# -- the config check gates the restart ----------------------------------------------------
def _installed(tmp_path: Path, config: str) -> dict[str, str]:
    """A dry run's view of an installed gateway (install.sh's test hook): ``PREFIX`` whose
    ``venv/bin/safety-edge`` is this checkout's real CLI, and ``ETC/gateway.yaml``."""
    prefix = tmp_path / "opt"
    bin_dir = prefix / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    cli = bin_dir / "safety-edge"
    cli.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m edge.cli "$@"\n')
    cli.chmod(0o755)
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "gateway.yaml").write_text(config)
    env = dict(os.environ, INSTALL_SH_TEST_PREFIX=str(prefix), INSTALL_SH_TEST_ETC=str(etc))
    env["PYTHONPATH"] = str(REPO)
    return env


def _dry(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    models = tmp_path / "models"
    models.mkdir(exist_ok=True)
    return subprocess.run(
        ["bash", str(INSTALL_SH), "--dry-run", "--models", str(models), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def _systemctl(out: str) -> list[str]:
    return [
        ln
        for ln in out.splitlines()
        if ln.startswith("+ systemctl") or "safety-edge.service /etc/systemd" in ln
    ]


BAD_CONFIG = "data_dir: /var/lib/safety-edge\nno_such_key: 1\n"


def test_failed_config_check_stops_before_the_unit_and_restart(tmp_path: Path) -> None:
    env = _installed(tmp_path, BAD_CONFIG)
    r = _dry(tmp_path, env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "no_such_key: unknown key" in r.stdout + r.stderr  # the check's own report
    assert "the config check of" in r.stderr and "NOT restarted" in r.stderr
    assert "--force restarts anyway" in r.stderr
    assert _systemctl(r.stdout) == [], r.stdout  # no unit installed, nothing enabled
    assert "installed. Config:" not in r.stdout


@pytest.mark.parametrize("flag", ["--force", "--no-start"])
def test_failed_config_check_goes_on_with_force_or_no_start(tmp_path: Path, flag: str) -> None:
    env = _installed(tmp_path, BAD_CONFIG)
    r = _dry(tmp_path, env, flag)
    assert r.returncode == 0, r.stderr
    assert "WARNING: the config check" in r.stderr
    assert any("systemctl enable safety-edge.service" in ln for ln in _systemctl(r.stdout))


def test_passing_config_check_goes_on(tmp_path: Path) -> None:
    example = subprocess.run(
        [sys.executable, "-m", "edge.cli", "config", "example"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=REPO,
    ).stdout
    # its broker name (RFC 2606 .example) would be looked up by a DNS server; tests talk
    # to loopback only (an MQTT host that does not resolve is a warning, not a failure)
    assert example.count("host: broker.site-a.example\n") == 1
    example = example.replace("host: broker.site-a.example\n", "host: localhost\n")
    env = _installed(tmp_path, example)
    r = _dry(tmp_path, env)
    assert r.returncode == 0, r.stderr
    assert ": OK (" in r.stdout
    assert "config check" not in r.stderr
    assert any("systemctl enable safety-edge.service" in ln for ln in _systemctl(r.stdout))
