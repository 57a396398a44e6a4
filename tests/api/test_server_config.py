"""gateway.yaml validation (edge/config.py) and the serve/demo-app command-line overrides."""

from __future__ import annotations

import argparse
import socket
from pathlib import Path
from typing import Any

import pytest

from edge.api import server as server_cmd
from edge.config import ADMIN_TOKEN_ENV, GatewayConfig, config_from_mapping, load_config
from edge.errors import ConfigError


def test_defaults_without_file() -> None:
    c = load_config(None)
    assert c == GatewayConfig()
    assert (c.api.host, c.api.port, c.api.timestamp_skew_s) == ("127.0.0.1", 8080, 300.0)
    assert c.api.auth and c.api.metered and not c.api.rest_status
    assert c.api.max_image_bytes == 5 * 1024 * 1024
    assert c.api.max_fence_body_bytes == 50 * 1024 * 1024
    assert c.tasks.fence == "person_vehicle"
    assert c.api.alert_rules.quota_below_fraction == pytest.approx(0.10)
    assert c.api.alert_rules.package_expiring_days == 30


def test_full_file(tmp_path: Path) -> None:
    p = tmp_path / "gateway.yaml"
    p.write_text(
        "gateway_id: site-a\n"
        "data_dir: /var/lib/se\n"
        "api:\n"
        "  port: 9000\n"
        "  workers: 4\n"
        "  rest_status: true\n"
        "  alert_rules: {error_rate: 0.2, p95_ms: 500}\n"
        "tasks:\n"
        "  hardhat: my_hats\n"
        "  workwear: null\n",
        encoding="utf-8",
    )
    c = load_config(p)
    assert c.gateway_id == "site-a" and c.data_dir == Path("/var/lib/se")
    assert (c.api.port, c.api.workers, c.api.rest_status) == (9000, 4, True)
    assert c.api.alert_rules.p95_ms == 500
    assert c.tasks.hardhat == "my_hats" and c.tasks.workwear is None


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("api:\n  prot: 1\n", "api.prot"),
        ("api:\n  port: 70000\n", "api.port"),
        ("api:\n  workers: 0\n", "api.workers"),
        ("api:\n  alert_rules: {error_rate: 2}\n", "api.alert_rules.error_rate"),
        ("tasks:\n  fence_anchor: feet\n", "tasks.fence_anchor"),
        ("colour: red\n", "colour"),
        ("- 1\n- 2\n", "mapping"),
        ("api: [\n", "invalid YAML"),
    ],
)
def test_bad_files_name_the_key(tmp_path: Path, text: str, word: str) -> None:
    p = tmp_path / "gateway.yaml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as ei:
        load_config(p)
    assert word in str(ei.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "nope.yaml")


def test_file_that_is_not_utf8(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A photo saved as gateway.yaml, or a Latin-1 file: ConfigError naming the file, and
    serve / demo-app / apps print one line and exit 2 (before: a UnicodeDecodeError
    traceback, exit 1); the file is left as it was."""
    p = tmp_path / "gateway.yaml"
    raw = "gateway_id: b\u00fcro-1\n".encode("latin-1")
    p.write_bytes(raw)
    with pytest.raises(ConfigError, match=r"gateway\.yaml'?: cannot read: 'utf-8' codec"):
        load_config(p)
    for argv in (("serve", "--config", str(p)), ("demo-app", "--config", str(p))):
        args = _args(*argv)
        assert args.func(args) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error 5000: config {str(p)!r}: cannot read: ")
        assert err.count("\n") == 1 and "Traceback" not in err
    assert p.read_bytes() == raw


def test_admin_token_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    c = config_from_mapping({"api": {"admin_token": "from-file"}})
    monkeypatch.delenv(ADMIN_TOKEN_ENV, raising=False)
    assert c.api.resolved_admin_token() == "from-file"
    monkeypatch.setenv(ADMIN_TOKEN_ENV, "from-env")
    assert c.api.resolved_admin_token() == "from-env"
    monkeypatch.delenv(ADMIN_TOKEN_ENV)
    assert config_from_mapping({}).api.resolved_admin_token() is None


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="cmd")
    server_cmd.add_subcommands(sub)
    return parser.parse_args(list(argv))


def test_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "gateway.yaml"
    p.write_text("api: {port: 9000, workers: 3}\ndata_dir: d1\n", encoding="utf-8")
    c = server_cmd.resolve_config(
        _args("serve", "--config", str(p), "--port", "9100", "--host", "0.0.0.0")
    )
    assert (c.api.port, c.api.host, c.api.workers, c.data_dir) == (9100, "0.0.0.0", 3, Path("d1"))
    c = server_cmd.resolve_config(_args("serve", "--config", str(p), "--data-dir", "d2"))
    assert c.data_dir == Path("d2")
    monkeypatch.setenv("SAFETY_EDGE_DATA_DIR", str(tmp_path / "env"))
    assert server_cmd.resolve_config(_args("serve")).data_dir == tmp_path / "env"
    # With a config file, the file's data_dir wins over the environment.
    assert server_cmd.resolve_config(_args("serve", "--config", str(p))).data_dir == Path("d1")
    with pytest.raises(ConfigError, match=r"^command-line override --port 99999: .*65535"):
        server_cmd.resolve_config(_args("serve", "--port", "99999"))
    with pytest.raises(ConfigError, match=r"^command-line override --port -1: "):
        server_cmd.resolve_config(_args("serve", "--port", "-1"))


def test_serve_that_cannot_bind_exits_2_naming_the_address(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real uvicorn on a port another socket holds: one error line naming host:port and
    exit 2, as ``run`` does (before: uvicorn's exit status 3 and its log line alone)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = _args(
            "serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
            "--models-dir", str(tmp_path / "no-models"),
        )  # fmt: skip
        assert args.func(args) == 2
    err = capsys.readouterr().err
    assert f"error 5000: the API could not start on 127.0.0.1:{port} " in err


def test_serve_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "gateway.yaml"
    p.write_text("api: {prot: 1}\n", encoding="utf-8")
    args = _args("serve", "--config", str(p))
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error 5000: ") and "api.prot" in err and err.count("\n") == 1


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, False), (True, True), (False, False), ("true", True), ("off", False)],
)
def test_api_allow_spinning_parses(value: object, expected: bool) -> None:
    api = {} if value is None else {"allow_spinning": value}
    assert config_from_mapping({"api": api}).api.allow_spinning is expected


@pytest.mark.parametrize("junk", ["maybe", 2, [True], {"on": 1}])
def test_api_allow_spinning_rejects_non_bool(junk: object) -> None:
    with pytest.raises(ConfigError, match=r"api\.allow_spinning"):
        config_from_mapping({"api": {"allow_spinning": junk}})


@pytest.mark.parametrize("spin", [False, True])
def test_api_allow_spinning_reaches_the_detectors_the_app_and_gateway_build(
    tmp_path: Path, spin: bool
) -> None:
    """``api.allow_spinning`` in gateway.yaml is what the API's and the gateway's
    onnxruntime sessions are built with (a tiny real model, real sessions)."""
    from edge.api.app import _load_runners
    from edge.service.gateway import GatewayService
    from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output

    out = yolov8_output([(10, 10, 4, 4)], [[0.9, 0.0]], num_anchors=3)
    model = planted_model({"output0": out}, input_size=(64, 64))
    write_model_and_manifest(tmp_path / "models", model, name="people", input_size=(64, 64))
    cfg = config_from_mapping(
        {
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(tmp_path / "models"),
            "api": {"allow_spinning": spin, "intra_op_threads": 1},
            "tasks": {"fence": "people", "hardhat": None, "workwear": None},
        }
    )

    def entry(detector: Any) -> str:
        opts = detector._session._session.get_session_options()
        return str(opts.get_session_config_entry("session.intra_op.allow_spinning"))

    want = "1" if spin else "0"
    _, owned = _load_runners(cfg, None)
    try:
        assert owned, "the app built no detector"
        assert [entry(d) for d in owned] == [want] * len(owned)
    finally:
        for d in owned:
            d.close()
    service = GatewayService(config=cfg)
    service._load_detectors()
    try:
        assert list(service.detectors) == ["people"], service.model_errors
        assert entry(service.detectors["people"]) == want
    finally:
        for d in service.detectors.values():
            d.close()
