"""Model faults do not take the site down (audit: models folder and run-time model errors).

- A bad YAML in the models folder (a manifest with a misspelt key, a stray Ultralytics
  ``data.yaml``) used to make model discovery fail for the whole folder: every camera
  went off. Now only the task that wants the broken manifest is off, with the file and
  its problem in ``/healthz`` and the ``task_unavailable`` alert; the other models load.

Real parts: tiny planted ONNX models run by onnxruntime, a still video read by OpenCV, a
real mosquitto and subscriber, real SQLite files.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edge.cli import main
from edge.config import config_from_mapping
from edge.service.config_check import check_text
from edge.service.gateway import GatewayService
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output
from tests.service.test_stall_and_alerts import camera, still_video, write_people_model

GW = "gw-modelfault"
TOPIC = f"mf/{GW}/alerts"
DATA_YAML = "path: ../datasets/helmet\ntrain: images/train\nval: images/val\nnames:\n  0: person\n"


def gateway_config(tmp_path: Path, port: int | None, cameras: list[dict[str, Any]]) -> Any:
    doc: dict[str, Any] = {
        "gateway_id": GW,
        "data_dir": str(tmp_path / "data"),
        "models_dir": str(tmp_path / "models"),
        "tasks": {"fence": "people", "hardhat": None, "workwear": None},
        "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
        "cameras": cameras,
    }
    if port is not None:
        doc["mqtt"] = {"host": "127.0.0.1", "port": port, "prefix": "mf"}
    return config_from_mapping(doc)


def alerts(sub: Subscriber) -> dict[tuple[str, str], tuple[str, str]]:
    """(kind, key) -> (state, message) of the last alert of each key."""
    out = {}
    for msg in sub.on_topic("/alerts"):
        a = msg.json()["alert"]
        out[(a["kind"], a["key"])] = (a["state"], a["message"])
    return out


def test_a_broken_manifest_turns_off_only_the_task_that_wants_it(
    tmp_path: Path, broker: MosquittoBroker, caplog: pytest.LogCaptureFixture
) -> None:
    models = tmp_path / "models"
    write_people_model(models, "people")
    typo = write_people_model_yaml_with_typo(models)
    (models / "data.yaml").write_text(DATA_YAML, encoding="utf-8")
    video = str(still_video(tmp_path / "still.avi"))
    gate = camera("gate", video, loop=True)
    gate["tasks"]["fence"]["model"] = "mine"
    cfg = gateway_config(tmp_path, broker.port, [camera("dock", video, loop=True), gate])
    caplog.set_level(logging.ERROR, logger="edge.service")
    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="mf-1") as sub:
        service = GatewayService(config=cfg)
        service.start()
        try:
            dock = service.cameras["dock"].pipeline
            assert dock is not None, service.cameras["dock"].off
            assert wait(lambda: dock.metrics()["frames_processed"] >= 2, 20, interval=0.05)
            assert service.cameras["gate"].pipeline is None
            health = service.health()
            assert health["cameras"]["dock"]["tasks"] == {"fence": True}
            why = health["cameras"]["gate"]["tasks_off"]["fence"]
            assert str(typo) in why and "score_treshold" in why, why
            assert health["problems"] == []
            assert wait(lambda: ("task_unavailable", "gate/fence") in alerts(sub), 10)
            assert wait(lambda: ("task_unavailable", "dock/fence") in alerts(sub), 10)
            got = alerts(sub)
            state, message = got[("task_unavailable", "gate/fence")]
            assert state == "active" and "mine.yaml" in message and "score_treshold" in message
            assert got[("task_unavailable", "dock/fence")][0] == "resolved"
        finally:
            service.stop()
    logged = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("data.yaml" in m and "not a model manifest" in m for m in logged), logged


def write_people_model_yaml_with_typo(models: Path) -> Path:
    """``mine.onnx`` + ``mine.yaml`` whose ``score_threshold`` is misspelt."""
    model = planted_model({"output0": yolov8_output([[140.0, 220.0, 80.0, 320.0]], [[0.9]])})
    return write_model_and_manifest(
        models, model, name="mine", class_names=["person"], score_treshold=0.4
    )


def test_config_check_names_each_broken_manifest_and_resolves_the_good_ones(
    tmp_path: Path,
) -> None:
    """Before: one bad file made every model 'not found', and only as a warning (config
    check passed while the gateway would run no camera)."""
    models = tmp_path / "models"
    write_people_model(models, "people")
    write_people_model_yaml_with_typo(models)
    (models / "data.yaml").write_text(DATA_YAML, encoding="utf-8")
    text = textwrap.dedent(
        f"""\
        models_dir: {models}
        tasks: {{fence: people, hardhat: null, workwear: null}}
        cameras:
          - name: dock
            source: 0
            tasks: {{fence: {{zones: [{{name: z, polygon: [[0, 0], [1, 0], [1, 1]]}}]}}}}
          - name: gate
            source: 1
            tasks:
              fence: {{model: mine, zones: [{{name: z, polygon: [[0, 0], [1, 0], [1, 1]]}}]}}
        """
    )
    config, problems = check_text(text)
    assert config is None  # config check fails
    errors = [(p.path, p.message) for p in problems if p.severity == "error"]
    at_folder = [m for path, m in errors if path == "models_dir"]
    assert any("data.yaml" in m and "not a model manifest" in m for m in at_folder), errors
    assert any("mine.yaml" in m and "score_treshold" in m for m in at_folder), errors
    gate = [m for path, m in errors if path == "cameras[1].tasks.fence"]
    assert gate and "mine.yaml" in gate[0], errors
    # the good model resolves: nothing is said about the dock camera
    assert not [p for p in problems if p.path.startswith("cameras[0].tasks")], problems
    # at start-up the same files are warnings: the gateway runs what loads
    _, startup = check_text(text, env_errors=True)
    assert not [p for p in startup if p.severity == "error"], startup


def test_models_list_lists_the_good_ones_and_names_the_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    models = tmp_path / "models"
    write_people_model(models, "people")
    (models / "data.yaml").write_text(DATA_YAML, encoding="utf-8")
    assert main(["models", "list", "--models-dir", str(models)]) == 1
    out, err = capsys.readouterr()
    assert "people" in out
    assert "data.yaml" in err and "not a model manifest" in err
    (models / "data.yaml").unlink()
    assert main(["models", "list", "--models-dir", str(models)]) == 0
