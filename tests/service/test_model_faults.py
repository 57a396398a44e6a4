"""Model faults do not take the site down (audit: models folder and run-time model errors).

- A bad YAML in the models folder (a manifest with a misspelt key, a stray Ultralytics
  ``data.yaml``) used to make model discovery fail for the whole folder: every camera
  went off. Now only the task that wants the broken manifest is off, with the file and
  its problem in ``/healthz`` and the ``task_unavailable`` alert; the other models load.
- A model that raises at inference (here: an output whose class count does not match its
  manifest, seen only at run time: the graph's output shape is symbolic and grows a row
  for bright frames) used to end the camera thread, and the supervisor then stopped the
  whole gateway (systemd restarted it every 5 s and gave up: the site dark). Now the task
  skips a failing frame and is switched off after ``MODEL_FAILURES_OFF`` failures in a
  row (``task_unavailable`` alert, ``/healthz`` degraded); everything else runs on.
- Such a task used to stay off until the gateway restarted (a transient GPU/driver fault
  left a safety task off for months). Now it is retried with backoff and comes back on
  (alerts resolved, ``/healthz`` ok) when its model works again.

Real parts: tiny planted ONNX models run by onnxruntime, a still video read by OpenCV, a
real mosquitto and subscriber, real SQLite files.
"""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
import onnx
import pytest
import yaml
from onnx import TensorProto, helper, numpy_helper

from edge.cli import main
from edge.config import config_from_mapping
from edge.errors import ModelError
from edge.runtime.registry import file_sha256
from edge.service.config_check import check_text
from edge.service.gateway import GatewayService
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output
from tests.service.running import running_gateway
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


# -- models that fail at run time -------------------------------------------------------------
PERSON_BOX = [140.0, 220.0, 80.0, 320.0]  # cx, cy, w, h in the 416 x 416 input


def write_bright_fails_model(models: Path, name: str) -> None:
    """A one-class yolov8 model (``class_names: [person]``) whose output gains a row --
    looks like two classes, which the decoder refuses (ModelError) -- when the mean input
    value is above 0.6 (a bright frame). Dark frames decode to one person. The output
    shape is symbolic, so nothing can tell at load time."""
    c = yolov8_output([PERSON_BOX], [[0.9]])
    inits = [
        numpy_helper.from_array(c, "C"),
        numpy_helper.from_array(np.array(0.6, np.float32), "th"),
        numpy_helper.from_array(np.array([1], np.int64), "shape1"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
    ]
    nodes = [
        helper.make_node("ReduceMean", ["images"], ["m"], keepdims=0),
        helper.make_node("Greater", ["m", "th"], ["g"]),
        helper.make_node("Cast", ["g"], ["gi"], to=TensorProto.INT64),
        helper.make_node("Reshape", ["gi", "shape1"], ["e"]),
        helper.make_node("Slice", ["C", "zero", "e", "axis1"], ["extra"]),
        helper.make_node("Concat", ["C", "extra"], ["output0"], axis=1),
    ]
    inp = helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, 416, 416])
    out = helper.make_tensor_value_info("output0", TensorProto.FLOAT, ["b", "rows", "n"])
    graph = helper.make_graph(nodes, "bright_fails", [inp], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    models.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(models / f"{name}.onnx"))
    doc = {
        "name": name,
        "file": f"{name}.onnx",
        "sha256": file_sha256(models / f"{name}.onnx"),
        "family": "yolov8",
        "input_size": [416, 416],
        "class_names": ["person"],
        "licence": "test graph, no weights",
        "source": "tests/service/test_model_faults.py",
    }
    (models / f"{name}.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")


def video(path: Path, bright: list[bool]) -> Path:
    """An MJPG file of 416 x 416 frames, white where ``bright`` else black."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (416, 416))
    for b in bright:
        vw.write(np.full((416, 416, 3), 255 if b else 0, np.uint8))
    vw.release()
    return path


def test_a_model_failing_at_run_time_turns_its_task_off_not_the_gateway(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """gate's model fails on every (bright) frame: its task is off after 3 frames, with
    the decoder's message in /healthz and the task_unavailable alert; the run loop keeps
    going (before: 'pipeline ended', run() returned 1); dock keeps processing frames."""
    models = tmp_path / "models"
    write_people_model(models, "people")
    write_bright_fails_model(models, "flaky")
    bright = str(video(tmp_path / "bright.avi", [True] * 8))
    gate = camera("gate", bright, loop=True, realtime=True, target_fps=10)
    gate["tasks"]["fence"]["model"] = "flaky"
    dock = camera("dock", str(still_video(tmp_path / "still.avi")), loop=True, realtime=True)
    cfg = gateway_config(tmp_path, broker.port, [dock, gate])
    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="mf-2") as sub:
        with running_gateway(GatewayService(config=cfg)) as gw:
            service = gw.service
            assert wait(lambda: "fence" in service.cameras["gate"].reasons, 20, interval=0.05)
            why = service.cameras["gate"].reasons["fence"]
            assert "ModelError" in why and "4+1=5" in why and "3 frames in a row" in why, why
            dock_pipe = service.cameras["dock"].pipeline
            assert dock_pipe is not None
            seen = dock_pipe.metrics()["frames_processed"]
            assert wait(lambda: dock_pipe.metrics()["frames_processed"] >= seen + 3, 20)
            assert gw.rc == []  # the run loop goes on
            health = service.health()
            assert health["status"] == "degraded"
            assert health["cameras"]["gate"]["tasks"] == {"fence": False}
            assert health["cameras"]["gate"]["tasks_off"]["fence"] == why
            assert health["cameras"]["dock"]["tasks"] == {"fence": True}
            assert health["problems"] == [], health["problems"]
            assert 'safety_edge_task_up{camera="gate",task="fence"} 0' in service.metrics_text()
            assert wait(lambda: ("task_unavailable", "gate/fence") in alerts(sub), 10)
            assert alerts(sub)[("task_unavailable", "gate/fence")] == ("active", why)
            assert wait(lambda: ("camera_unavailable", "gate") in alerts(sub), 10)
            assert alerts(sub)[("camera_unavailable", "gate")][0] == "active"
        assert gw.rc == [0]


def test_a_task_skips_failing_frames_and_is_off_after_three_in_a_row(tmp_path: Path) -> None:
    """One camera, two tasks: 'flaky' fails on bright frames, 'steady' never. Bright
    frames 1, 3-4 are skipped by flaky alone (no made-up empty detections: its tracker is
    not stepped); 6-8 are three in a row: flaky is off from then on (frame 9 is not run),
    steady sees all 10 frames."""
    models = tmp_path / "models"
    write_people_model(models, "people")
    write_bright_fails_model(models, "flaky")
    from edge.runtime.detector import Detector
    from edge.runtime.registry import load_manifest
    from edge.stream.pipeline import MODEL_FAILURES_OFF, CameraPipeline, TaskRunner, TaskSpec
    from edge.stream.sources import SourceSpec
    from edge.stream.zones import ZoneSpec

    assert MODEL_FAILURES_OFF == 3
    pattern = [False, True, False, True, True, False, True, True, True, False]
    src = video(tmp_path / "mixed.avi", pattern)
    told: list[tuple[str, str, str]] = []
    zone = ZoneSpec(name="all", polygon=None)
    with (
        Detector(load_manifest(models / "flaky.yaml")) as flaky_det,
        Detector(load_manifest(models / "people.yaml")) as steady_det,
    ):
        flaky = TaskRunner(
            spec=TaskSpec(name="flaky", zones=(zone,)), detector=flaky_det, camera="cam"
        )
        steady = TaskRunner(
            spec=TaskSpec(name="steady", zones=(zone,)), detector=steady_det, camera="cam"
        )
        pipe = CameraPipeline(
            camera="cam",
            source=SourceSpec(uri=str(src), realtime=False),
            tasks=[flaky, steady],
            task_off_sinks=[lambda cam, task, why: told.append((cam, task, why))],
        )
        assert pipe.run() == len(pattern)
    m = pipe.metrics()["tasks"]
    assert m["flaky"]["model_failures"] == 6
    assert m["steady"]["model_failures"] == 0
    assert steady.stage_ms["detect"].count == 10
    assert flaky.stage_ms["track"].count == 3  # frames 0, 2 and 5
    assert flaky.off is not None and m["flaky"]["off"] == flaky.off
    assert told == [("cam", "flaky", flaky.off)]
    assert steady.off is None


def test_healthz_is_degraded_while_an_api_model_fails_every_call(tmp_path: Path) -> None:
    """API-only gateway: its fence model fails on bright images. Before, /healthz said ok
    while every request answered 5001. Now 3 failures in a row make it degraded with the
    model's error; one success makes it ok again (a bad image is not a broken model).
    The calls go through the API's own fence task (the detector the app was built with)."""
    from tests.mqtt.broker import free_port

    models = tmp_path / "models"
    write_bright_fails_model(models, "flaky")
    cfg = config_from_mapping(
        {
            "gateway_id": GW,
            "data_dir": str(tmp_path / "data"),
            "models_dir": str(models),
            "tasks": {"fence": "flaky", "hardhat": None, "workwear": None},
            "api": {"host": "127.0.0.1", "port": free_port(), "workers": 1},
            "service": {"stop_timeout_s": 5, "flush_timeout_s": 1},
            "cameras": [],
        }
    )
    bright = np.full((416, 416, 3), 255, np.uint8)
    dark = np.zeros((416, 416, 3), np.uint8)
    area = np.array([[0, 0], [416, 0], [416, 416], [0, 416]], np.float64)
    with running_gateway(GatewayService(config=cfg)) as gw:
        url = gw.service.api_url
        task = gw.service.app.state.gateway.runners["fence"].task

        def healthz() -> dict[str, Any]:
            body: dict[str, Any] = httpx.get(f"{url}/healthz", timeout=10).json()
            return body

        assert healthz()["status"] == "ok"
        for k in range(3):
            with pytest.raises(ModelError, match="4\\+1=5"):
                task.run(bright, area)
            assert healthz()["status"] == ("degraded" if k == 2 else "ok")
        body = healthz()
        assert any("'flaky'" in p and "the last 3 calls failed" in p for p in body["problems"])
        assert len(task.run(dark, area)) == 1
        assert healthz()["status"] == "ok"
        assert gw.rc == []


# -- retry with backoff -----------------------------------------------------------------------
def levels_video(path: Path, bright: list[bool]) -> Path:
    """Like :func:`video`, but frame ``i`` is grey ``160 + 3 i`` when bright (the flaky
    model fails) else ``3 i`` (it works), so a model call tells which frame it got."""
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (416, 416))
    for i, b in enumerate(bright):
        vw.write(np.full((416, 416, 3), (160 if b else 0) + 3 * i, np.uint8))
    vw.release()
    return path


class FrameNoting:
    """A real detector that notes the index of each frame it is called on (from its grey
    level: :func:`levels_video`)."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.class_names = detector.class_names
        self.manifest = detector.manifest
        self.called: list[int] = []

    def _note(self, image: Any) -> None:
        v = float(image.mean())
        self.called.append(round((v - 160) / 3) if v >= 150 else round(v / 3))

    def detect(self, image: Any, **kw: Any) -> Any:
        self._note(image)
        return self.detector.detect(image, **kw)

    def detect_with_timings(self, image: Any, **kw: Any) -> Any:
        self._note(image)
        return self.detector.detect_with_timings(image, **kw)


def test_an_off_task_is_retried_with_backoff_and_comes_back_on(tmp_path: Path) -> None:
    """Non-realtime file at 5 fps (frame i at t0 + 0.2 i); first retry 0.25 s, cap 0.9 s,
    backoff reset after 1 s on. Bright frames 0-16, 24-26 fail. Off at frame 2 (t 0.4):
    retries at frames 4 (0.8, +0.25), 7 (1.4, +0.5), 12 (2.4, +1.0 capped to 0.9) fail,
    17 (3.4, +0.9) works: back on, fresh tracker. It runs 17-23 (over 1 s: backoff reset),
    is off again at 26 and its first retry is again 0.25 s later (frame 28, works).
    Before: off until restart (frames 0-2 and nothing after)."""
    models = tmp_path / "models"
    write_bright_fails_model(models, "flaky")
    from edge.runtime.detector import Detector
    from edge.runtime.registry import load_manifest
    from edge.stream.pipeline import CameraPipeline, TaskRunner, TaskSpec
    from edge.stream.sources import SourceSpec
    from edge.stream.zones import ZoneSpec

    pattern = [True] * 17 + [False] * 7 + [True] * 3 + [False] * 3
    src = levels_video(tmp_path / "levels.avi", pattern)
    told: list[tuple[str, str, str, str]] = []
    zone = ZoneSpec(name="all", polygon=None)
    with Detector(load_manifest(models / "flaky.yaml")) as det:
        noting = FrameNoting(det)
        flaky = TaskRunner(
            spec=TaskSpec(name="flaky", zones=(zone,)), detector=noting, camera="cam"
        )
        events: list[Any] = []
        pipe = CameraPipeline(
            camera="cam",
            source=SourceSpec(uri=str(src), realtime=False),
            tasks=[flaky],
            sinks=[events.append],
            task_off_sinks=[lambda cam, task, why: told.append(("off", cam, task, why))],
            task_on_sinks=[lambda cam, task, msg: told.append(("on", cam, task, msg))],
            model_retry_s=0.25,
            model_retry_max_s=0.9,
            model_retry_reset_s=1.0,
        )
        assert pipe.run() == len(pattern)
    assert noting.called == [0, 1, 2, 4, 7, 12, *range(17, 27), 28, 29]
    assert [(k, c, t) for k, c, t, _ in told] == [
        ("off", "cam", "flaky"),
        ("on", "cam", "flaky"),
        ("off", "cam", "flaky"),
        ("on", "cam", "flaky"),
    ]
    assert "3 frames in a row; retry in 0.25 s" in told[0][3]
    assert "works again" in told[1][3] and "retry 3 failed; next retry in 0.9 s" in told[1][3]
    assert "retry in 0.25 s" in told[2][3]  # the backoff was reset
    assert flaky.off is None and pipe.metrics()["tasks"]["flaky"]["off"] is None
    assert pipe.metrics()["tasks"]["flaky"]["model_failures"] == 3 + 3 + 3
    # the incident the off ended is not left open; the task's incidents resume after
    kinds = [(e.type, e.attributes.get("reason") if e.type == "end" else None) for e in events]
    assert ("end", "shutdown") in kinds, kinds
    off_end = kinds.index(("end", "shutdown"))
    assert any(k == "start" for k, _ in kinds[:off_end]), kinds
    assert any(k == "start" for k, _ in kinds[off_end + 1 :]), kinds
    assert kinds.count(("start", None)) == sum(1 for k, _ in kinds if k == "end"), kinds


def test_a_task_off_after_model_failures_comes_back_on_when_the_model_works_again(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    """gate's model fails on the first 12 (bright) frames, then works (dark frames, one
    person in the zone). Retry after 0.5 s: the task goes off (task_unavailable and
    camera_unavailable active, /healthz degraded), a retry on a bright frame fails, a
    later one works: the alerts are resolved, /healthz is ok, events come from the task
    again. Before: off until the gateway restarts."""
    models = tmp_path / "models"
    write_bright_fails_model(models, "flaky")
    src = video(tmp_path / "flaky.avi", [True] * 12 + [False] * 100)
    gate = camera("gate", str(src), realtime=True, target_fps=10)
    gate["tasks"]["fence"]["model"] = "flaky"
    gate["tasks"]["fence"]["zones"][0]["polygon"] = [[0, 0], [1, 0], [1, 1], [0, 1]]
    cfg = gateway_config(tmp_path, broker.port, [gate])
    with Subscriber(host=broker.host, port=broker.port, topics=[TOPIC], client_id="mf-3") as sub:
        service = GatewayService(config=cfg, model_retry_s=0.5)
        with running_gateway(service) as gw:

            def state(kind: str, key: str) -> str:
                return alerts(sub).get((kind, key), ("", ""))[0]

            def raised(kind: str, key: str) -> list[str]:
                """Messages of the ``active`` alerts of that key so far."""
                got = (m.json()["alert"] for m in sub.on_topic("/alerts"))
                return [a["message"] for a in got if (a["kind"], a["key"], a["state"]) == (
                    kind, key, "active")]  # fmt: skip

            assert wait(lambda: raised("task_unavailable", "gate/fence"), 20)
            why = raised("task_unavailable", "gate/fence")[0]
            assert "3 frames in a row; retry in 0.5 s" in why, why
            assert wait(lambda: raised("camera_unavailable", "gate"), 10)
            pipe = service.cameras["gate"].pipeline
            assert pipe is not None
            assert wait(lambda: state("task_unavailable", "gate/fence") == "resolved", 20)
            health = service.health()
            assert health["status"] == "ok", health
            assert health["cameras"]["gate"]["tasks"] == {"fence": True}
            assert "tasks_off" not in health["cameras"]["gate"]
            assert 'safety_edge_task_up{camera="gate",task="fence"} 1' in service.metrics_text()
            assert alerts(sub)[("task_unavailable", "gate/fence")][1].startswith(
                "model 'flaky' works again"
            )
            assert wait(lambda: state("camera_unavailable", "gate") == "resolved", 10)
            assert pipe.metrics()["tasks"]["fence"]["model_failures"] >= 4  # a retry failed
            assert wait(lambda: pipe.metrics()["events"]["start"] >= 1, 20)  # none while bright
            assert len(raised("task_unavailable", "gate/fence")) == 1  # not raised per retry
            assert gw.rc == []
