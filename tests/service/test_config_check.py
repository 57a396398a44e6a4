"""``safety-edge config check|example`` and start-up on a bad config: every problem with its
YAML path and line, never a traceback; env overrides; camera tasks built from the config."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from edge.cli import main
from edge.config import GatewayConfig
from edge.service.config_check import Problem, check_text, load_checked
from edge.service.example import EXAMPLE_YAML
from edge.service.tasks import build_task_spec

REPO = Path(__file__).resolve().parents[2]

BAD = textwrap.dedent(
    """\
    gateway_id: gw-1
    cameras:
      - name: gate
        source: rtsp://cam/stream
        target_fps: -2
        tasks:
          fence:
            zones:
              - name: grass
                polygon: [[0, 0], [10, 10], [10, 0], [0, 10]]
                min_dwel_s: 2
              - name: road
                polygon: [[0, 0], [10, 0], [10, 10]]
                schedule: {days: moonday, hours: ["07:00-19:00"], tz: Mars/Base}
      - name: yard
        tasks:
          bogus: {}
    mqtt:
      host: broker
      port: 99999
    storage:
      jpeg_quality: 85
    storage:  # duplicate: YAML would keep only this one
      snapshot_max_mb: -1
    """
)


def errors(problems: list[Problem]) -> dict[str, int | None]:
    return {p.path: p.line for p in problems if p.severity == "error"}


def test_every_problem_is_reported_with_its_path_and_line() -> None:
    config, problems = check_text(BAD, source="bad.yaml", environment=False)
    assert config is None
    assert errors(problems) == {
        "cameras[0].target_fps": 5,
        "cameras[0].tasks.fence.zones[0].polygon": 10,
        "cameras[0].tasks.fence.zones[0].min_dwel_s": 11,
        "cameras[0].tasks.fence.zones[1].schedule.days": 14,
        "cameras[0].tasks.fence.zones[1].schedule.tz": 14,
        "cameras[1].source": 15,  # missing: reported at the camera's line
        "cameras[1].tasks.bogus": 17,
        "mqtt.port": 20,
        "storage": 23,  # duplicate key
        "storage.snapshot_max_mb": 24,
    }
    by_path = {p.path: p.message for p in problems}
    assert "did you mean 'min_dwell_s'" in by_path["cameras[0].tasks.fence.zones[0].min_dwel_s"]
    assert "Self-intersection" in by_path["cameras[0].tasks.fence.zones[0].polygon"]
    assert "moonday" in by_path["cameras[0].tasks.fence.zones[1].schedule.days"]
    assert "99999" in by_path["mqtt.port"]
    assert by_path["cameras[1].source"] == "required key is missing"
    assert Problem("a.b", 3, "bad").format("f.yaml") == "f.yaml:3: a.b: bad"


def test_yaml_syntax_error_has_its_line() -> None:
    config, problems = check_text(
        "cameras:\n  - name: a\n    source: [unclosed\n", environment=False
    )
    assert config is None and len(problems) == 1
    assert problems[0].line is not None and problems[0].line >= 3
    assert problems[0].message.startswith("invalid YAML")


@pytest.mark.parametrize("bad", ["gate/1", "gate+", "gate#", "gate 1", "$SYS"])
def test_camera_and_zone_names_must_be_topic_safe(bad: str) -> None:
    text = textwrap.dedent(
        f"""\
        cameras:
          - name: {bad!r}
            source: /dev/video0
            tasks:
              fence:
                zones:
                  - name: {bad!r}
                    polygon: [[0, 0], [1, 0], [1, 1]]
        """
    )
    _, problems = check_text(text, environment=False)
    assert errors(problems) == {
        "cameras[0].name": 2,
        "cameras[0].tasks.fence.zones[0].name": 7,
    }


def test_duplicate_names_and_cross_field_rules() -> None:
    text = textwrap.dedent(
        """\
        gateway_id: "gw 1"
        cameras:
          - {name: a, source: 0, tasks: {fence: {zones: []}}}
          - name: a
            source: 1
            tasks:
              hardhat:
                zones: [{name: z}, {name: z}]
        mqtt: {host: broker}
        service: {stop_timeout_s: 5, flush_timeout_s: 10}
        """
    )
    _, problems = check_text(text, environment=False)
    msgs = {p.path: (p.line, p.message) for p in problems}
    assert (
        msgs["cameras[0].tasks"][0] == 3
        and "needs at least one zone" in msgs["cameras[0].tasks"][1]
    )
    assert msgs["cameras[1].tasks.hardhat.zones"][0] == 8
    assert "unique" in msgs["cameras[1].tasks.hardhat.zones"][1]
    assert msgs["mqtt"][0] == 9 and "gateway id" in msgs["mqtt"][1]
    assert msgs["service"][0] == 10


def test_config_example_passes_config_check(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], default_model_manifest: Path
) -> None:
    assert main(["config", "example"]) == 0
    text = capsys.readouterr().out
    assert text == EXAMPLE_YAML
    assert (REPO / "deploy" / "gateway.example.yaml").read_text() == EXAMPLE_YAML
    path = tmp_path / "gateway.yaml"
    # The example's broker (RFC 2606 .example) never resolves: looking it up would ask a
    # DNS server, and tests talk to loopback only (that warning: test_config_check_audit)
    assert text.count("host: broker.site-a.example\n") == 1
    path.write_text(text.replace("host: broker.site-a.example\n", "host: localhost\n"))
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: OK (3 cameras)")
    # only this machine's state can warn: a secret variable, models not installed here, the
    # example's USB camera not plugged in
    for line in out.splitlines()[1:]:
        assert "warning:" in line and (
            "environment variable" in line or "not found" in line or "/dev/video0" in line
        )
    # the bundled demo config of `make run` passes too
    assert main(["config", "check", str(REPO / "deploy" / "gateway.demo.yaml")]) == 0


def test_run_with_a_bad_config_prints_the_report_and_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(BAD)
    assert main(["run", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith(f"10 errors in {path}")
    assert f"{path}:11: cameras[0].tasks.fence.zones[0].min_dwel_s: unknown key" in err
    assert "not starting" in err
    assert main(["config", "check", str(path)]) == 1
    assert main(["config", "check", str(tmp_path / "missing.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_run_override_out_of_range_names_the_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(f"data_dir: {tmp_path / 'data'}\n")
    assert main(["run", "--config", str(path), "--port", "70000"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error 5000: command-line override --port 70000: ")
    assert err.count("\n") == 1 and not (tmp_path / "data").exists()


def test_environment_overrides_and_source_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    text = textwrap.dedent(
        """\
        gateway_id: gw-1
        models_dir: /nonexistent
        cameras:
          - name: gate
            source: rtsp://viewer:${CAM_PW_TEST}@10.0.0.5/stream
            tasks: {fence: {zones: [{name: z}]}}
        mqtt: {host: 127.0.0.1, username: file-user, password: file-pass}
        """
    )
    monkeypatch.delenv("CAM_PW_TEST", raising=False)
    config, problems = check_text(text)
    assert config is not None  # unset variable: a warning when only checking
    assert [(p.path, p.line, p.severity) for p in problems if "CAM_PW_TEST" in p.message] == [
        ("cameras[0].source", 5, "warning")
    ]
    path = tmp_path / "gw.yaml"
    path.write_text(text)
    with pytest.raises(Exception, match="CAM_PW_TEST") as info:
        load_checked(path)  # at start-up it is an error
    assert "gw.yaml:5" in str(info.value)
    monkeypatch.setenv("CAM_PW_TEST", "s3cret")
    config, _ = load_checked(path)
    assert config.cameras[0].resolved_source() == "rtsp://viewer:s3cret@10.0.0.5/stream"
    mqtt = config.resolved_mqtt()
    assert mqtt is not None and mqtt.password is not None
    assert (mqtt.username, mqtt.password.get_secret_value()) == ("file-user", "file-pass")
    monkeypatch.setenv("SAFETY_EDGE_MQTT_USERNAME", "env-user")
    monkeypatch.setenv("SAFETY_EDGE_MQTT_PASSWORD", "env-pass")
    mqtt = config.resolved_mqtt()
    assert mqtt is not None and mqtt.password is not None
    assert (mqtt.username, mqtt.password.get_secret_value()) == ("env-user", "env-pass")


def test_zone_classes_are_checked_against_the_model(default_model_manifest: Path) -> None:
    text = textwrap.dedent(
        f"""\
        models_dir: {default_model_manifest.parent}
        cameras:
          - name: gate
            source: 0
            tasks:
              fence:
                zones:
                  - name: z
                    classes: [people, vehicles, forklift]
              hardhat:
                model: person_vehicle
        """
    )
    _, problems = check_text(text)
    errs = {p.path: (p.line, p.message) for p in problems if p.severity == "error"}
    assert errs["cameras[0].tasks.fence.zones[0].classes"][0] == 9
    assert "['forklift']" in errs["cameras[0].tasks.fence.zones[0].classes"][1]
    assert errs["cameras[0].tasks.hardhat"][0] == 11  # the value of hardhat: starts there
    assert "no class a hardhat violation" in errs["cameras[0].tasks.hardhat"][1]


def test_task_specs_from_config() -> None:
    cfg = GatewayConfig.model_validate(
        yaml.safe_load(
            textwrap.dedent(
                """\
                filters: {min_score: 0.4, min_box_area: 100}
                cameras:
                  - name: gate
                    source: 0
                    tasks:
                      fence:
                        zones:
                          - {name: z, polygon: "0,0,1,0,1,1", classes: [people, vehicles]}
                      hardhat:
                        filters: {min_score: 0.6}
                        tracker: {n_init: 3}
                """
            )
        )
    )
    cam = cfg.cameras[0]
    fence = build_task_spec(
        "fence",
        cam.tasks["fence"],
        class_names=["person", "bicycle", "car", "motorcycle", "bus", "truck"],
        filters=cfg.filters,
    )
    z = fence.zones[0]
    assert z.classes == ("person", "bicycle", "car", "motorcycle", "bus", "truck")
    assert z.normalized and z.label is None
    assert (fence.score_threshold, fence.min_box_area) == (0.4, 100)
    hat = build_task_spec(
        "hardhat", cam.tasks["hardhat"], class_names=["helmet", "head"], filters=cfg.filters
    )
    assert [(z.name, z.classes, z.label, z.polygon) for z in hat.zones] == [
        ("frame", ("head",), "no_hat", None)
    ]
    assert hat.score_threshold == 0.6 and hat.tracker.n_init == 3
    with pytest.raises(ValueError, match="no hardhat classes"):
        build_task_spec(
            "hardhat", cam.tasks["hardhat"], class_names=["person"], filters=cfg.filters
        )


def test_config_reference_is_generated_from_the_models(capsys: pytest.CaptureFixture[str]) -> None:
    from edge.config import CameraConfig, ZoneConfig

    assert main(["config", "reference"]) == 0
    text = capsys.readouterr().out
    sections = {
        block.split("`")[1]: block for block in text.split("\n## ")[1:] if block.startswith("`")
    }
    zones = sections["cameras[].tasks.<fence|hardhat|workwear>.zones[]"]
    for name in ZoneConfig.model_fields:
        assert f"| `{name}` |" in zones, name
    cams = sections["cameras[]"]
    assert "| `name` | str | **required** |" in cams
    assert "| `target_fps` | float \\| null | `5.0` |" in cams
    assert set(CameraConfig.model_fields) <= {
        line.split("`")[1] for line in cams.splitlines() if line.startswith("| `")
    }
    for section in ("mqtt", "mqtt.outbox", "storage", "service", "runtime", "api"):
        assert section in sections, section


@pytest.mark.parametrize("reserved", ["cmd", "status", "events", "alerts", "results"])
def test_camera_names_may_not_shadow_the_gateways_own_topics(reserved: str) -> None:
    text = textwrap.dedent(
        f"""\
        cameras:
          - name: {reserved}
            source: /dev/video0
            tasks:
              fence:
                zones:
                  - name: {reserved}
                    polygon: [[0, 0], [1, 0], [1, 1]]
        """
    )
    _, problems = check_text(text, environment=False)
    # The camera name is a topic level right under {prefix}/{gw}/; a zone name is not.
    assert errors(problems) == {"cameras[0].name": 2}
    assert any("reserved" in p.message for p in problems)
