"""``config check`` findings of the s17 audit: mistakes that passed the check and failed
(or silently did nothing) at ``safety-edge run``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from edge.service.config_check import Problem, check_text


def _cfg(zone_lines: str, **extra: str) -> str:
    body = textwrap.dedent(
        """\
        gateway_id: gw-1
        cameras:
          - name: gate
            source: rtsp://cam/stream
            tasks:
              fence:
                zones:
                  - name: footpath
        """
    )
    body += textwrap.indent(textwrap.dedent(zone_lines), " " * 12)
    for key, value in extra.items():
        body += f"{key}: {value}\n"
    return body


def by_path(problems: list[Problem], severity: str = "error") -> dict[str, str]:
    return {p.path: p.message for p in problems if p.severity == severity}


def test_percent_polygon_gets_a_warning_and_slip_an_error() -> None:
    _, problems = check_text(
        _cfg("polygon: [[50, 30], [80, 30], [100, 45], [100, 82], [50, 57]]\n"),
        environment=False,
    )
    warns = by_path(problems, "warning")
    assert "percentages" in warns["cameras[0].tasks.fence.zones[0].polygon"]
    config, problems = check_text(
        _cfg("polygon: [[50, 30], [80, 30], [100, 45]]\nnormalized: false\n"),
        environment=False,
    )
    assert config is not None and not problems
    config, problems = check_text(
        _cfg("polygon: [[0.5, 0.3], [1.05, 0.3], [1.05, 0.82], [0.5, 0.57]]\n"),
        environment=False,
    )
    assert config is None
    (msg,) = by_path(problems).values()
    assert "looks like 0-1 fractions" in msg and "'footpath'" in msg


def _plain(**extra: str) -> str:
    body = "gateway_id: gw-1\ncameras:\n  - name: gate\n    source: rtsp://cam/stream\n"
    body += "    tasks: {fence: {zones: [{name: z, polygon: [[0, 0], [0.5, 0], [0.5, 0.5]]}]}}\n"
    for key, value in extra.items():
        body += f"{key}: {value}\n"
    return body


def test_a_provider_typo_is_an_error_with_did_you_mean() -> None:
    for key in ("runtime", "api"):
        config, problems = check_text(
            _plain(**{key: "{providers: [tensortt, cpu]}"}), environment=False
        )
        assert config is None
        msg = by_path(problems)[f"{key}.providers"]
        assert "'tensortt'" in msg and "did you mean 'tensorrt'?" in msg
    config, problems = check_text(
        _plain(runtime="{providers: [TensorRT, CUDAExecutionProvider, cpu]}"), environment=False
    )
    assert config is not None, problems


def _models_with(tmp_path: Path, manifest: Path, **changes: str) -> Path:
    """A models folder holding the real default model under a manifest with ``changes``."""
    d = tmp_path / "models"
    d.mkdir()
    data = yaml.safe_load(manifest.read_text())
    (d / data["file"]).symlink_to(manifest.parent / data["file"])
    data.update(changes)
    (d / manifest.name).write_text(yaml.safe_dump(data))
    return d


def test_a_model_sha256_mismatch_is_an_error_at_check(
    tmp_path: Path, default_model_manifest: Path
) -> None:
    d = _models_with(tmp_path, default_model_manifest, sha256="0" * 64)
    text = _plain(models_dir=str(d))
    config, problems = check_text(text)
    assert config is None
    errs = by_path(problems)
    assert "does not match the manifest's sha256" in errs["cameras[0].tasks.fence"]
    assert "will not run: no task can run" in errs["cameras[0].tasks"]
    # start-up: warnings, the loader turns the task off and other cameras still run
    config, problems = check_text(text, env_errors=True)
    assert config is not None
    assert "does not match" in by_path(problems, "warning")["cameras[0].tasks.fence"]
    # the real manifest passes
    config, problems = check_text(_plain(models_dir=str(default_model_manifest.parent)))
    assert config is not None and not by_path(problems), problems


def test_a_model_name_typo_suggests_the_close_name(default_model_manifest: Path) -> None:
    text = _plain(models_dir=str(default_model_manifest.parent)).replace(
        "{fence: {zones:", "{fence: {model: person_vehical, zones:"
    )
    config, problems = check_text(text)
    assert config is None
    assert (
        "did you mean 'person_vehicle'?" in by_path(problems, "warning")["cameras[0].tasks.fence"]
    )
    assert "no task can run" in by_path(problems)["cameras[0].tasks"]


# -- start-up failures (finding 4) ---------------------------------------------------------

NOBODY = 65534
PY = (sys.executable, "-c")
OPENSSL_REQ = ("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1")
REPO = Path(__file__).resolve().parents[2]


def _as_nobody(text: str) -> dict[str, tuple[str, str]]:
    """``check_text(text)`` run by uid 65534 in a real subprocess: {path: (severity, msg)}."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run the check as another user")
    code = (
        "import json, sys\n"
        "from edge.service.config_check import check_text\n"
        "_, ps = check_text(sys.stdin.read())\n"
        "print(json.dumps({p.path: [p.severity, p.message] for p in ps}))\n"
    )
    r = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", *PY, code],
        input=text,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
        check=True,
    )
    return {k: (v[0], v[1]) for k, v in json.loads(r.stdout).items()}


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A folder other users can enter (pytest's tmp_path is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="cc-audit-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


def _pem(d: Path) -> tuple[Path, Path]:
    """A real self-signed certificate and key (openssl), or skip."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    crt, key = d / "gw.crt", d / "gw.key"
    subprocess.run(
        [*OPENSSL_REQ, "-keyout", str(key), "-out", str(crt), "-subj", "/CN=cc"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return crt, key


def _both(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """(problems of config check, of start-up): {path: 'severity: message'}."""
    out = []
    for env_errors in (False, True):
        _, problems = check_text(text, env_errors=env_errors)
        out.append({p.path: f"{p.severity}: {p.message}" for p in problems})
    return out[0], out[1]


def test_mqtt_tls_files_missing_invalid_or_unreadable(shared_dir: Path) -> None:
    crt, key = _pem(shared_dir)
    tls = "{host: 127.0.0.1, tls: {ca_file: %s}}"
    check, start = _both(_plain(mqtt=tls % (shared_dir / "ca.pem")))
    assert (
        check["mqtt.tls.ca_file"].startswith("warning: ")
        and "not found" in check["mqtt.tls.ca_file"]
    )
    assert start["mqtt.tls.ca_file"].startswith("error: ")
    # a folder (or anything that cannot be opened) is an error wherever it is checked
    check, _ = _both(_plain(mqtt=tls % shared_dir))
    assert check["mqtt.tls.ca_file"].startswith("error: cannot read")
    # not PEM: the publisher's own loader says which setting failed
    bad = shared_dir / "bad.pem"
    bad.write_text("not a certificate\n")
    check, _ = _both(_plain(mqtt=tls % bad))
    assert check["mqtt.tls"].startswith(f"error: cannot load mqtt.tls.ca_file '{bad}'")
    # mutual TLS: the missing key is named, not 'CA/certificate/key'
    mtls = "{host: 127.0.0.1, tls: {ca_file: %s, cert_file: %s, key_file: %s}}"
    check, start = _both(_plain(mqtt=mtls % (crt, crt, shared_dir / "nokey.pem")))
    assert "mqtt.tls.ca_file" not in check and "mqtt.tls.cert_file" not in check
    assert "not found" in start["mqtt.tls.key_file"] and start["mqtt.tls.key_file"].startswith(
        "error"
    )
    config, problems = check_text(_plain(mqtt=mtls % (crt, crt, key)))
    assert config is not None and not [p for p in problems if p.path.startswith("mqtt")]
    # readable by root, not by the service user
    crt.chmod(0o600)
    got = _as_nobody(_plain(mqtt=tls % crt))
    assert got["mqtt.tls.ca_file"] == ("error", f"cannot read '{crt}': Permission denied")


def test_publisher_tls_error_names_the_setting(shared_dir: Path) -> None:
    from edge.errors import ConfigError
    from edge.mqtt.config import MqttConfig
    from edge.mqtt.publisher import build_ssl_context

    crt, _ = _pem(shared_dir)
    missing = shared_dir / "gw.key.missing"
    for tls, named in (
        ({"ca_file": str(shared_dir / "ca.pem")}, "mqtt.tls.ca_file"),
        ({"ca_file": str(crt), "cert_file": str(crt), "key_file": str(missing)}, "key_file"),
    ):
        cfg = MqttConfig.model_validate({"host": "127.0.0.1", "tls": tls})
        with pytest.raises(ConfigError) as info:
            build_ssl_context(cfg)
        assert named in str(info.value) and "No such file" in str(info.value)
        assert "CA/certificate/key" not in str(info.value)


def test_events_key_file_and_fallback_secrets(
    shared_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SAFETY_EDGE_EVENTS_KEY", raising=False)
    monkeypatch.delenv("SAFETY_EDGE_FALLBACK_APP_KEY", raising=False)
    monkeypatch.delenv("SAFETY_EDGE_FALLBACK_APP_SECRET", raising=False)
    text = _plain(storage="{events_key_file: %s}" % (shared_dir / "events.key"))
    check, start = _both(text)
    assert check["storage.events_key_file"].startswith("warning: ")
    assert start["storage.events_key_file"].startswith("error: ")
    (shared_dir / "events.key").write_text("short\n")
    check, _ = _both(text)
    assert check["storage.events_key_file"].startswith("error: ")
    fb = "{enabled: true, base_url: 'https://cloud.example.com', service_codes: {fence: C3}}"
    check, start = _both(_plain(fallback=fb))
    assert "fallback.app_key" in check["fallback"] and check["fallback"].startswith("warning")
    assert start["fallback"].startswith("error: ")
    monkeypatch.setenv("SAFETY_EDGE_FALLBACK_APP_KEY", "k")
    monkeypatch.setenv("SAFETY_EDGE_FALLBACK_APP_SECRET", "s")
    check, _ = _both(_plain(fallback=fb))
    assert "fallback" not in check


def test_data_dir_and_api_address(shared_dir: Path) -> None:
    (shared_dir / "file").write_text("x")
    check, _ = _both(_plain(data_dir=str(shared_dir / "file" / "data")))
    assert "is not a folder" in check["data_dir"]
    check, start = _both(_plain(api="{host: 192.0.2.77, port: 0}"))
    assert "not an address of this machine" in check["api.host"]
    assert check["api.host"].startswith("warning") and start["api.host"].startswith("error")
    config, problems = check_text(_plain(api="{host: 127.0.0.1, port: 0}"))
    assert config is not None and not [p for p in problems if p.path.startswith("api")]
    ro = shared_dir / "ro"
    ro.mkdir(mode=0o755)
    got = _as_nobody(_plain(data_dir=str(ro), api="{host: 127.0.0.1, port: 80}"))
    assert got["data_dir"][0] == "error" and "not writable" in got["data_dir"][1]
    assert got["api.port"][0] == "error" and "CAP_NET_BIND_SERVICE" in got["api.port"][1]
    got = _as_nobody(_plain(data_dir=str(ro / "new" / "data")))
    assert (
        got["data_dir"][0] == "warning" and f"nearest existing parent '{ro}'" in got["data_dir"][1]
    )


def test_an_unwritable_snapshot_dir_is_a_warning(shared_dir: Path) -> None:
    (shared_dir / "file").write_text("x")
    check, start = _both(_plain(storage="{snapshot_dir: %s}" % (shared_dir / "file" / "s")))
    for got in (check, start):
        assert got["storage.snapshot_dir"].startswith("warning: ")
        assert "every snapshot would be lost" in got["storage.snapshot_dir"]
    ro = shared_dir / "ro"
    ro.mkdir(mode=0o755)
    got = _as_nobody(_plain(storage=f"{{snapshot_dir: {ro}}}"))
    assert got["storage.snapshot_dir"][0] == "warning"


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("htps:/cloud.example.com", "did you mean 'https://cloud.example.com'?"),
        ("http:/cloud.example.com", "did you mean 'http://cloud.example.com'?"),
        ("https:///v1", ""),
        ("cloud.example.com", ""),
    ],
)
def test_a_fallback_base_url_needs_a_scheme_and_host(url: str, hint: str) -> None:
    fb = f"{{enabled: true, base_url: '{url}', app_key: k, app_secret: s, "
    fb += "service_codes: {fence: C3}}"
    config, problems = check_text(_plain(fallback=fb), environment=False)
    assert config is None
    msg = by_path(problems)["fallback.base_url"]
    assert "must be http://HOST or https://HOST" in msg and hint in msg
    ok = fb.replace(url, "https://cloud.example.com:8443/edge")
    assert check_text(_plain(fallback=ok), environment=False)[0] is not None


def _no_such_host(host: str, port: int) -> object:
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


def test_an_mqtt_host_that_does_not_resolve_is_a_warning() -> None:
    """The resolver is the check's parameter: tests talk to no DNS server. What it raises
    is what glibc's getaddrinfo raises for a name no server knows."""
    text = _plain(mqtt="{host: brokr.site.lan, port: 1883}")
    for env_errors in (False, True):  # config check and start-up: a warning both
        config, problems = check_text(text, env_errors=env_errors, resolve=_no_such_host)
        assert config is not None
        got = {p.path: p for p in problems}
        assert got["mqtt.host"].severity == "warning" and got["mqtt.host"].line == 6
        msg = got["mqtt.host"].message
        assert "'brokr.site.lan' does not resolve" in msg, msg
        assert "Name or service not known" in msg and "connected: false" in msg, msg
    _, problems = check_text(text, environment=False, resolve=_no_such_host)  # --offline
    assert not [p for p in problems if p.path.startswith("mqtt")]
    for ip in ("10.0.0.5", "::1"):  # literals are not looked up
        _, problems = check_text(_plain(mqtt=f"{{host: '{ip}'}}"), resolve=_no_such_host)
        assert not [p for p in problems if p.path.startswith("mqtt")], ip


def test_an_mqtt_host_lookup_that_hangs_gives_up_after_3_s() -> None:
    release = threading.Event()
    asked: list[str] = []

    def hangs(host: str, port: int) -> object:
        asked.append(host)
        release.wait(30)  # a broken resolver; let go when the test is done
        return []

    try:
        t0 = time.monotonic()
        _, problems = check_text(_plain(mqtt="{host: broker.lan}"), resolve=hangs)
        took = time.monotonic() - t0
    finally:
        release.set()
    assert asked == ["broker.lan"]
    assert 2.9 <= took < 6.0, took
    msg = {p.path: p.message for p in problems if p.severity == "warning"}["mqtt.host"]
    assert "'broker.lan' did not resolve within 3 s" in msg, msg


def test_localhost_resolves_without_a_warning() -> None:
    """The real resolver (socket.getaddrinfo, the default): localhost comes from
    /etc/hosts, no DNS server is asked."""
    for host in ("localhost", None):  # None: mqtt's default host, localhost
        mqtt = "{port: 1883}" if host is None else f"{{host: {host}}}"
        config, problems = check_text(_plain(mqtt=mqtt))
        assert config is not None and config.mqtt is not None
        assert not [p for p in problems if p.path.startswith("mqtt")], problems
