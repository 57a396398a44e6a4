"""Monitoring on a real gateway: /metrics, the admin-token console, per-minute stats
that survive a restart, alerts, the OpenAPI document and the demo-app command."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest

from edge.api import server as server_cmd
from edge.api.store import Store, db_path
from tests.api.server_fixture import ADMIN_TOKEN, b64, jpeg_bytes, start_server

IMG = b64(jpeg_bytes())


def test_metrics_console_stats_survive_restart(tmp_path: Path) -> None:
    with start_server(tmp_path, api={"alert_rules": {"min_requests": 5, "error_rate": 0.2}}) as s:
        app = s.create_app("watched")
        for _ in range(6):
            assert s.contract(s.post("hardhat", app, {"image": IMG}))["code"] == 0
        for _ in range(4):
            assert s.contract(s.post("hardhat", app, {"image": "@@"}))["code"] == 4003
        assert s.contract(s.http.post(s.base_url + "/nowhere"))["code"] == 4000

        text = s.http.get(s.base_url + "/metrics").text
        assert re.search(
            r'safety_edge_requests_total\{app="watched",api="hardhat",code="0"\} 6', text
        )
        assert re.search(r'safety_edge_requests_total\{[^}]*code="4003"\} 4', text)
        assert re.search(r'safety_edge_requests_total\{app="",api="",code="4000"\} 1', text)
        assert "safety_edge_inflight_requests 0" in text
        assert 'safety_edge_quota_remaining_calls{app="watched",api="hardhat"} 99994' in text

        # Console: token required.
        r = s.http.get(s.base_url + "/console/api/apps")
        assert r.status_code == 401 and r.json()["code"] == 4010
        r = s.http.get(s.base_url + "/console/api/apps", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401
        apps = s.console("apps")
        (watched,) = [a for a in apps if a["name"] == "watched"]
        assert "app_secret" not in watched
        assert watched["quota"]["hardhat"]["remaining"] == 99994
        assert s.console(f"apps/{app.app_key}")["name"] == "watched"

        stats = s.console("stats", app="watched", api="hardhat")["stats"]
        assert sum(r["requests"] for r in stats) == 10
        assert sum(r["errors_by_code"].get("4003", 0) for r in stats) == 4
        assert all(r["p50_ms"] is not None and r["p99_ms"] >= r["p50_ms"] for r in stats)
        assert sum(r["request_bytes"] for r in stats) > 6 * len(IMG)

        # Error rate 4/10 > 20 %: the background task opens an alert.
        s.wait_for(
            lambda: any(a["kind"] == "error_rate" for a in s.console("alerts", active="true")),
            timeout=15,
        )
        status = s.console("status")
        assert status["models"] == {"hardhat": "up", "workwear": "up", "fence": "up"}

    # A restart keeps the per-minute stats (flushed at shutdown).
    with Store(path=db_path(tmp_path / "data")) as st:
        app_key = st.find_app("watched").app_key  # type: ignore[union-attr]
    with start_server(tmp_path, write_model_files=False) as s2:
        stats = s2.console("stats", app=app_key)["stats"]
        assert sum(r["requests"] for r in stats) == 10


def test_console_disabled_without_token(tmp_path: Path) -> None:
    with start_server(tmp_path, api={"admin_token": None}) as s:
        r = s.http.get(
            s.base_url + "/console/api/apps", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )
        assert r.status_code == 403 and "disabled" in r.json()["details"]


def test_openapi_lists_the_three_apis_and_codes(tmp_path: Path) -> None:
    with start_server(tmp_path) as s:
        doc = s.http.get(s.base_url + "/openapi.json").json()
        paths = doc["paths"]
        for suffix in (
            "SafeHat/base/hat_detect",
            "UniformIdentity/base/clothes_detect",
            "ef-http/electron/fence",
        ):
            op = paths[f"/v1/aiop/api/{{service_code}}/{suffix}"]["post"]
            assert "| 4010 |" in op["description"] and "| 4029 |" in op["description"]
            names = {p["name"] for p in op["parameters"]}
            assert {"AppKey", "Timestamp", "Sign", "service_code"} <= names
        fence = paths["/v1/aiop/api/{service_code}/ef-http/electron/fence"]["post"]
        for code in (4005, 4011, 4012, 4013, 5001, 5002):
            assert f"| {code} |" in fence["description"]
        assert "/metrics" in paths and "/console/api/stats" in paths
        assert s.http.get(s.base_url + "/docs").status_code == 200


def _demo(tmp_path: Path, *extra: str) -> int:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    server_cmd.add_subcommands(sub)
    args = parser.parse_args(["demo-app", "--data-dir", str(tmp_path / "data"), *extra])
    rc: int = args.func(args)
    return rc


def test_demo_app_is_idempotent(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = _demo(tmp_path, "--json")
    first = json.loads(capsys.readouterr().out)
    assert rc == 0 and first["created"] is True
    assert sorted(first["packages_added"]) == ["fence", "hardhat", "workwear"]
    assert first["remaining"] == {"hardhat": 100_000, "workwear": 100_000, "fence": 100_000}
    rc = _demo(tmp_path, "--json")
    second = json.loads(capsys.readouterr().out)
    assert second["created"] is False and second["packages_added"] == []
    assert second["app_key"] == first["app_key"]
    assert _demo(tmp_path) == 0
    text = capsys.readouterr().out
    assert first["app_secret"] in text and "curl -s -X POST" in text and "md5sum" in text


def test_demo_app_curl_snippet_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Run the printed bash snippet against a real gateway."""
    import shutil
    import subprocess

    if shutil.which("curl") is None or shutil.which("md5sum") is None:
        pytest.skip("curl/md5sum not installed")
    with start_server(tmp_path) as s:
        port = s.base_url.rsplit(":", 1)[1]
        assert _demo(tmp_path, "--json", "--port", port) == 0
        info = json.loads(capsys.readouterr().out)
        image = tmp_path / "x.jpg"
        image.write_bytes(jpeg_bytes())
        script = server_cmd.curl_example(info, image=str(image))
        script = script.replace("/tmp/body.json", str(tmp_path / "body.json"))
        out = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=30, check=True
        ).stdout
        doc = json.loads(out)
        assert doc["code"] == 0 and doc["result"][0]["classname"] == "blue_hat"
