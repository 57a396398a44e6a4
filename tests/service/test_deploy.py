"""Deployment files: the systemd unit (systemd's own verifier when present), the install
script's plan (``--dry-run``), and the demo/example configs ``make run`` and docs use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "deploy" / "systemd" / "safety-edge.service"


def unit_service() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    section = ""
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        if section == "Service":
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


def test_unit_is_hardened_notify_with_watchdog() -> None:
    svc = unit_service()
    want = {
        "Type": "notify",
        "User": "safety-edge",
        "ProtectSystem": "strict",
        "Restart": "always",
        "NoNewPrivileges": "yes",
        "CapabilityBoundingSet": "",
    }
    for key, value in want.items():
        assert svc.get(key) == [value], key
    # data, and the config folder for the console's zone / line editor (install.sh makes
    # it sticky so secrets.env stays root's)
    assert svc["ReadWritePaths"] == ["/var/lib/safety-edge", "/etc/safety-edge"]
    assert int(svc["WatchdogSec"][0]) > 0
    assert svc["ExecStart"][0].endswith("safety-edge run --config /etc/safety-edge/gateway.yaml")
    # SIGTERM must be able to finish: systemd waits longer than the gateway's own bound
    assert int(svc["TimeoutStopSec"][0]) > 20 + 5


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_unit_passes_systemd_analyze_verify(tmp_path: Path) -> None:
    # The real ExecStart path exists only on a gateway: point it at /bin/true to verify.
    unit = tmp_path / "safety-edge.service"
    unit.write_text(UNIT.read_text().replace("/opt/safety-edge/venv/bin/safety-edge", "/bin/true"))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip() == "", r.stderr


def test_install_script_plan() -> None:
    r = subprocess.run(
        ["bash", str(REPO / "deploy" / "install.sh"), "--dry-run", "--no-start"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    plan = r.stdout
    for step in (
        "useradd --system",
        "python3 -m venv --system-site-packages /opt/safety-edge/venv",
        "/opt/safety-edge/models",
        "install -m 0644 " + str(REPO / "deploy/systemd/safety-edge.service"),
        "safety-edge config check /etc/safety-edge/gateway.yaml",
        "systemctl enable safety-edge.service",
        "install -d -m 1770 -o root -g safety-edge /etc/safety-edge",
        "chown safety-edge:safety-edge /etc/safety-edge/gateway.yaml",
    ):
        assert step in plan, step
    assert "systemctl restart" not in plan  # --no-start
    bad = subprocess.run(
        ["bash", str(REPO / "deploy" / "install.sh"), "--dry-run", "--bogus"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert bad.returncode == 2 and "unknown option" in bad.stderr
