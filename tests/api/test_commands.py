"""``safety-edge apps|quota|alerts`` on a real SQLite file: in-process through a fresh
argparse parser, and once as a real subprocess."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from edge.api.commands import add_subcommands
from edge.api.store import Store, db_path

REPO = Path(__file__).resolve().parents[2]


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="safety-edge")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    return parser


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str) -> tuple[int, Any, str]:
    """Run one command; returns (exit status, parsed stdout JSON or None, stderr)."""
    args = make_parser().parse_args([*argv, "--data-dir", str(data_dir)])
    rc = args.func(args)
    out, err = capsys.readouterr()
    return rc, (json.loads(out) if out.strip() else None), err


def test_app_lifecycle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, app, err = run(
        capsys, tmp_path, "apps", "create", "工地围栏监控", "--description", "gate 3",
        "--grant", "hardhat,fence",
    )  # fmt: skip
    assert (rc, err) == (0, "")
    assert app["name"] == "工地围栏监控" and app["description"] == "gate 3"
    assert re.fullmatch(r"[0-9a-f]{24}", app["app_key"])
    assert re.fullmatch(r"[0-9a-f]{32}", app["app_secret"])
    assert set(app["service_codes"]) == {"hardhat", "fence"}
    with Store(path=db_path(tmp_path)) as s:  # what was printed is what was stored
        stored = s.get_app(app["app_key"])
        assert stored is not None and stored.app_secret == app["app_secret"]
        assert stored.service_codes == app["service_codes"]

    rc, listed, _ = run(capsys, tmp_path, "apps", "list")
    assert rc == 0 and [a["app_key"] for a in listed] == [app["app_key"]]
    assert "app_secret" not in listed[0]

    rc, shown, _ = run(capsys, tmp_path, "apps", "show", "工地围栏监控")
    assert rc == 0 and "app_secret" not in shown
    assert shown["quota"] == {
        "hardhat": {"remaining": 0, "packages": 0},
        "fence": {"remaining": 0, "packages": 0},
    }
    rc, shown, _ = run(capsys, tmp_path, "apps", "show", app["app_key"], "--show-secret")
    assert shown["app_secret"] == app["app_secret"]

    rc, rotated, _ = run(capsys, tmp_path, "apps", "rotate-secret", app["app_key"])
    assert rc == 0 and rotated["app_secret"] != app["app_secret"]
    assert rotated["app_key"] == app["app_key"]

    rc, disabled, _ = run(capsys, tmp_path, "apps", "disable", "工地围栏监控")
    assert rc == 0 and disabled["enabled"] is False
    rc, enabled, _ = run(capsys, tmp_path, "apps", "enable", "工地围栏监控")
    assert rc == 0 and enabled["enabled"] is True
    rc, granted, _ = run(capsys, tmp_path, "apps", "grant", "工地围栏监控", "--api", "workwear")
    assert set(granted["service_codes"]) == {"hardhat", "workwear", "fence"}


def test_quota_add_and_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, tmp_path, "apps", "create", "quota-app", "--grant", "fence")
    rc, pkg, _ = run(
        capsys, tmp_path, "quota", "add", "quota-app", "--api", "fence", "--tier", "4m"
    )
    assert rc == 0
    assert (pkg["calls"], pkg["remaining"], pkg["active"], pkg["api_remaining"]) == (
        4_000_000,
        4_000_000,
        True,
        4_000_000,
    )
    rc, pkg2, _ = run(
        capsys, tmp_path, "quota", "add", "quota-app", "--api", "fence", "--tier", "100k",
        "--start", "2020-01-01",
    )  # fmt: skip
    assert rc == 0 and pkg2["active"] is False
    # a naive --start is the gateway's local time (midnight local, here in UTC)
    assert pkg2["expires_at"] == datetime(2021, 1, 1).astimezone(timezone.utc).isoformat()
    rc, shown, _ = run(capsys, tmp_path, "quota", "show", "quota-app")
    assert rc == 0
    fence = shown["apis"]["fence"]
    assert fence["remaining"] == 4_000_000
    assert [p["tier"] for p in fence["packages"]] == ["100k", "4m"]  # by expiry


def test_alerts_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Store(path=db_path(tmp_path)) as s:
        s.open_alert(kind="quota_low", key="k1", cause="9 of 100 calls left")
        s.open_alert(kind="error_rate", key="k2", cause="spike")
        s.close_alert(kind="error_rate", key="k2")
    rc, alerts, _ = run(capsys, tmp_path, "alerts", "list")
    assert rc == 0 and {a["key"]: a["state"] for a in alerts} == {
        "k1": "active",
        "k2": "resolved",
    }
    _, active, _ = run(capsys, tmp_path, "alerts", "list", "--active")
    assert [a["key"] for a in active] == ["k1"]
    _, resolved, _ = run(capsys, tmp_path, "alerts", "list", "--resolved")
    assert [a["key"] for a in resolved] == ["k2"]
    _, one, _ = run(capsys, tmp_path, "alerts", "list", "--limit", "1")
    assert len(one) == 1


@pytest.mark.parametrize("limit", ["-1", "0", "100001", "ten"])
def test_alerts_list_limit_out_of_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], limit: str
) -> None:
    """``--limit -1`` listed every alert (SQLite's LIMIT -1 is no limit) and ``--limit 0``
    none, both with exit 0; now a usage error as for ``events list``."""
    with pytest.raises(SystemExit) as info:
        make_parser().parse_args(["alerts", "list", "--limit", limit])
    assert info.value.code == 2 and "argument --limit: " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["apps", "create", "abc", "--grant", "fence"], "has 3 characters"),
        (["apps", "create", "abcd", "--grant", "helmet"], "unknown API 'helmet'"),
        (["apps", "create", "abcd", "--grant", ","], "--grant needs"),
        (["apps", "create", "taken", "--grant", "fence"], "already taken"),
        (["apps", "show", "ghost-app"], "no application"),
        (["apps", "disable", "ghost-app"], "no application"),
        (["quota", "add", "taken", "--api", "hardhat", "--tier", "8m"], "not granted"),
        (["quota", "add", "taken", "--api", "fence", "--tier", "8m", "--start", "soon"], "ISO"),
        (["quota", "show", "ghost-app"], "no application"),
        # a year of validity past datetime's range was a ValueError traceback (exit 1)
        (
            ["quota", "add", "taken", "--api", "fence", "--tier", "8m", "--start", "9999-12-31"],
            "package start 9999-12-31 00:00:00",  # + the local offset: naive = local time
        ),
        (
            [
                "quota",
                "add",
                "taken",
                "--api",
                "fence",
                "--tier",
                "8m",
                "--start",
                "0001-01-01T00:00+05:00",
            ],
            "is out of range",
        ),
    ],
)
def test_errors_are_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    run(capsys, tmp_path, "apps", "create", "taken", "--grant", "fence")
    rc, out, err = run(capsys, tmp_path, *argv)
    assert rc == 2 and out is None
    assert err.count("\n") == 1 and err.startswith("error ") and message in err
    assert "Traceback" not in err


def test_argparse_rejects_unknown_tier(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        make_parser().parse_args(["quota", "add", "x", "--api", "fence", "--tier", "1m"])
    assert info.value.code == 2
    assert "invalid choice: '1m'" in capsys.readouterr().err


def test_data_dir_from_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = tmp_path / "gwdata"
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(f"data_dir: {data}\n", encoding="utf-8")
    args = make_parser().parse_args(
        ["apps", "create", "from-config", "--grant", "fence", "--config", str(cfg)]
    )
    assert args.func(args) == 0
    capsys.readouterr()
    with Store(path=db_path(data)) as s:
        assert s.find_app("from-config") is not None
    bad = tmp_path / "bad.yaml"
    bad.write_text("data_dri: x\n", encoding="utf-8")
    args = make_parser().parse_args(["apps", "list", "--config", str(bad)])
    assert args.func(args) == 2
    assert "data_dri" in capsys.readouterr().err


def test_real_subprocess(tmp_path: Path) -> None:
    """The commands as a user runs them: through edge.cli when it registers them,
    otherwise through a parser built the way edge.cli will build it."""
    cli = (REPO / "edge" / "cli.py").read_text(encoding="utf-8")
    if "edge.api.commands" in cli:
        prefix = [sys.executable, "-m", "edge.cli"]
    else:
        code = (
            "import argparse, sys\n"
            "from edge.api.commands import add_subcommands\n"
            "p = argparse.ArgumentParser(prog='safety-edge')\n"
            "s = p.add_subparsers(dest='command', required=True)\n"
            "add_subcommands(s)\n"
            "a = p.parse_args(sys.argv[1:])\n"
            "sys.exit(a.func(a))\n"
        )
        prefix = [sys.executable, "-c", code]

    def sh(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, *argv, "--data-dir", str(tmp_path)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    created = sh(
        "apps", "create", "安全帽检测", "--description", "demo", "--grant", "hardhat,fence"
    )
    assert created.returncode == 0, created.stderr
    app = json.loads(created.stdout)
    assert set(app["service_codes"]) == {"hardhat", "fence"} and len(app["app_secret"]) == 32
    added = sh("quota", "add", "安全帽检测", "--api", "fence", "--tier", "100k")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["remaining"] == 100_000
    dup = sh("apps", "create", "安全帽检测", "--grant", "fence")
    assert dup.returncode == 2 and "already taken" in dup.stderr
    assert "Traceback" not in dup.stderr
