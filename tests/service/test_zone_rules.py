"""Colour rules per zone: config validation (with paths and lines), the rule on subjects,
task specs, and the whole gateway in-process (:class:`GatewayService`) on a still video
with tiny planted models (a person model and a hard-hat model with the classes of
models/hardhat.yaml), a real mosquitto and a real subscriber, real SQLite files.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import yaml

from edge.config import GatewayConfig, config_from_mapping
from edge.errors import ConfigError
from edge.service.config_check import check_text
from edge.service.gateway import GatewayService
from edge.service.tasks import build_task_spec, build_zone_rules
from edge.stream.events import EventStore, events_db_path
from edge.tasks.compliance import (
    CANNOT_TELL,
    CLASSNAME,
    COMPLIANT,
    HAS_PERSON,
    ITEM,
    REASON,
    STATUS,
    VIOLATION,
    reason_id,
)
from edge.tasks.hardhat import HAT_CLASSNAMES
from edge.tasks.rules import Requirement
from edge.types import Detections
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output

SUBJECTS = (*HAT_CLASSNAMES, "cannot_tell")


# -- config validation ------------------------------------------------------------------------
def camera_yaml(zone_lines: str, kind: str = "hardhat", *more_zones: str) -> str:
    """A camera with one task whose first zone ``bay`` has ``zone_lines`` (YAML at the
    zone's indentation, line 8 onwards); ``more_zones`` are further zones' YAML."""
    zones = ["name: bay\n" + zone_lines, *more_zones]
    items = "".join(
        textwrap.indent(z, " " * 12).replace(" " * 12, " " * 10 + "- ", 1) for z in zones
    )
    return (
        "cameras:\n"
        "  - name: dock\n"
        "    source: 0\n"
        "    tasks:\n"
        f"      {kind}:\n"
        "        zones:\n"
        f"{items}"
    )


@pytest.mark.parametrize(
    ("zone", "kind", "path", "line", "message"),
    [
        (
            "require:\n  hardhat: {colours: [red, pink]}\n",
            "hardhat",
            "cameras[0].tasks.hardhat.zones[0].require.hardhat.colours",
            9,
            "unknown hard-hat colour 'pink'; valid: red, white, blue, yellow, other",
        ),
        (
            "require:\n  hardhat: {colours: []}\n",
            "hardhat",
            "cameras[0].tasks.hardhat.zones[0].require.hardhat.colours",
            9,
            "colours must not be empty",
        ),
        (
            "require:\n  workwear:\n    colours: [hivis]\n",
            "workwear",
            "cameras[0].tasks.workwear.zones[0].require.workwear.colours",
            10,
            "unknown workwear colour 'hivis'; valid: light, blue, red, dark, yellow, other",
        ),
        (
            "require:\n  workwear: {colours: [blue], reflective: true}\n",
            "workwear",
            "cameras[0].tasks.workwear.zones[0].require.workwear",
            9,
            "reflective workwear is yellow (hi-vis); colours ['blue'] exclude it",
        ),
        (
            "require: {}\n",
            "hardhat",
            "cameras[0].tasks.hardhat.zones[0].require",
            8,
            "name what the zone requires",
        ),
        (
            "require:\n  hardhat: {colour: [red]}\n",
            "hardhat",
            "cameras[0].tasks.hardhat.zones[0].require.hardhat.colour",
            9,
            "unknown key; did you mean 'colours'?",
        ),
        (
            "require:\n  workwear: {reflective: true}\n",
            "hardhat",
            "cameras[0].tasks.hardhat.zones[0].require.workwear",
            9,
            "workwear does not apply to the hardhat task: a hardhat zone may require only hardhat",
        ),
        (
            "polygon: [[0, 0], [1, 0], [1, 1]]\nrequire:\n  hardhat: {}\n",
            "fence",
            "cameras[0].tasks.fence.zones[0].require.hardhat",
            10,
            "hardhat does not apply to the fence task: fence zones require nothing",
        ),
    ],
)
def test_bad_rules_are_reported_with_path_and_line(
    zone: str, kind: str, path: str, line: int, message: str
) -> None:
    config, problems = check_text(camera_yaml(zone, kind), environment=False)
    assert config is None
    got = {p.path: (p.line, p.message) for p in problems}
    assert path in got, got
    assert got[path][0] == line
    assert message in got[path][1]


def test_good_rules_are_normalised() -> None:
    text = camera_yaml("require:\n  hardhat: {colours: [red, white_hat, RED]}\n")
    config, problems = check_text(text, environment=False)
    assert config is not None and problems == []
    req = config.cameras[0].tasks["hardhat"].zones[0].require
    assert req is not None and req.hardhat is not None and req.hardhat.colours == ["red", "white"]
    rule = req.to_requirement("hardhat")
    assert rule is not None and rule.describe() == "hardhat colour must be one of red, white"
    assert req.to_requirement("workwear") is None
    ww = config_from_mapping(
        yaml.safe_load(camera_yaml("require:\n  workwear: {reflective: true}\n", "workwear"))
    )
    wreq = ww.cameras[0].tasks["workwear"].zones[0].require
    assert wreq is not None
    rule = wreq.to_requirement("workwear")
    assert rule is not None and rule.allowed == frozenset({"yellow"})
    with pytest.raises(ConfigError, match="uncertain_band"):
        config_from_mapping({"tasks": {"wearing": {"uncertain_band": [0.6, 0.2]}}})
    assert GatewayConfig().tasks.wearing.person_model_name(GatewayConfig().tasks) == (
        "person_vehicle"
    )


# -- the rule on subjects ----------------------------------------------------------------------
def subjects(rows: list[tuple[int, str | None]]) -> Detections:
    """One subject per (status, classname seen)."""
    n = len(rows)
    seen = [SUBJECTS.index(c) if c is not None else -1 for _, c in rows]
    return Detections(
        xyxy=np.tile(np.array([[0, 0, 10, 40]], np.float32), (n, 1)),
        scores=np.full((n,), 0.9, np.float32),
        class_ids=np.array([s if s >= 0 else len(SUBJECTS) - 1 for s in seen], np.int32),
        data={
            STATUS: np.array([s for s, _ in rows], np.int8),
            REASON: np.zeros((n,), np.int8),
            CLASSNAME: np.array(seen, np.int16),
            ITEM: np.full((n,), -1, np.int64),
            HAS_PERSON: np.ones((n,), np.bool_),
        },
    )


@pytest.mark.parametrize(
    ("req", "row", "broken", "rule"),
    [
        (
            Requirement(kind="hardhat", colours=("red", "white")),
            (COMPLIANT, "red_hat"),
            False,
            None,
        ),
        (
            Requirement(kind="hardhat", colours=("red", "white")),
            (COMPLIANT, "yellow_hat"),
            True,
            "hardhat colour must be one of red, white; saw yellow_hat",
        ),
        (
            Requirement(kind="hardhat", colours=("red", "white")),
            (VIOLATION, "no_hat"),
            True,
            "hardhat required; saw no_hat",
        ),
        (Requirement(kind="hardhat", colours=("red",)), (CANNOT_TELL, "yellow_hat"), False, None),
        (Requirement(kind="hardhat"), (COMPLIANT, "other_hat"), False, None),
        (Requirement(kind="hardhat", colours=("other",)), (COMPLIANT, "other_hat"), False, None),
    ],
)
def test_requirement_table(
    req: Requirement, row: tuple[int, str], broken: bool, rule: str | None
) -> None:
    subj = subjects([row])
    assert req.broken(subj, SUBJECTS).tolist() == [broken]
    attrs = req.explain(subj, 0, SUBJECTS)
    assert attrs.get("rule") == rule
    assert attrs["classname"] == row[1]
    if broken:
        assert attrs["compliance"] == "violation"


def test_workwear_requirements() -> None:
    names = ("light", "blue", "other", "red", "dark", "yellow", "no_workwear", "cannot_tell")
    rows = [(COMPLIANT, "yellow"), (COMPLIANT, "blue"), (VIOLATION, "no_workwear")]
    n = len(rows)
    subj = Detections(
        xyxy=np.zeros((n, 4), np.float32),
        scores=np.ones((n,), np.float32),
        class_ids=np.zeros((n,), np.int32),
        data={
            STATUS: np.array([s for s, _ in rows], np.int8),
            REASON: np.full((n,), reason_id("workwear_worn"), np.int8),
            CLASSNAME: np.array([names.index(c) for _, c in rows], np.int16),
        },
    )
    hivis = Requirement(kind="workwear", reflective=True)
    assert hivis.broken(subj, names).tolist() == [False, True, True]
    assert hivis.explain(subj, 1, names)["rule"] == (
        "reflective (hi-vis yellow/orange) workwear required; saw blue"
    )
    assert Requirement(kind="workwear", colours=("blue",)).broken(subj, names).tolist() == [
        True,
        False,
        True,
    ]
    with pytest.raises(ValueError, match="reflective applies to workwear only"):
        Requirement(kind="hardhat", reflective=True)
    assert subjects([]).data[STATUS].shape == (0,)
    assert hivis.broken(subjects([]), names).shape == (0,)


def test_task_spec_on_subjects() -> None:
    cfg = config_from_mapping(
        yaml.safe_load(
            camera_yaml(
                "require:\n  hardhat: {colours: [red]}\n",
                "hardhat",
                "name: heads\nclasses: [head, helmet]\n",
            )
        )
    )
    task = cfg.cameras[0].tasks["hardhat"]
    spec = build_task_spec("hardhat", task, class_names=list(SUBJECTS), filters=cfg.filters)
    bay, heads = spec.zones
    assert bay.classes == HAT_CLASSNAMES and bay.label is None  # every person seen
    # The model's own class names read as the classnames they give.
    assert set(heads.classes) == set(HAT_CLASSNAMES) and heads.label == "no_hat"
    conditions, explainers = build_zone_rules("hardhat", task, class_names=list(SUBJECTS))
    assert set(conditions) == {"bay"} and set(explainers) == {"bay", "heads"}
    assert build_zone_rules("hardhat", task, class_names=["head", "helmet"]) == ({}, {})
    with pytest.raises(ValueError, match="require needs the hardhat task's analysis"):
        build_task_spec("hardhat", task, class_names=["head", "helmet"], filters=cfg.filters)


# -- the whole gateway ----------------------------------------------------------------------------
SIZE = 416
PERSON = (100.0, 60.0, 180.0, 380.0)
HAT = (122.0, 48.0, 158.0, 82.0)
HAT_MODEL_CLASSES = ["none", "red", "blue", "white", "yellow"]


def write_models(models: Path, hat_class: str) -> None:
    def cxcywh(b: tuple[float, ...]) -> list[float]:
        return [(b[0] + b[2]) / 2, (b[1] + b[3]) / 2, b[2] - b[0], b[3] - b[1]]

    hat_scores = [[0.9 if c == hat_class else 0.0 for c in HAT_MODEL_CLASSES]]
    for name, classes, box, scores in (
        ("hardhat", HAT_MODEL_CLASSES, HAT, hat_scores),
        ("people", ["person"], PERSON, [[0.9]]),
    ):
        model = planted_model({"output0": yolov8_output([cxcywh(box)], scores)})
        write_model_and_manifest(models, model, name=name, class_names=classes)


def still_video(path: Path, frames: int = 8) -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 5.0, (SIZE, SIZE))
    for _ in range(frames):
        vw.write(np.full((SIZE, SIZE, 3), 128, np.uint8))
    vw.release()
    return path


def run_gateway(root: Path, broker: MosquittoBroker, hat_class: str) -> tuple[list[Any], list[Any]]:
    """Run the gateway over the still video; returns (stored events, published events)."""
    write_models(root / "models", hat_class)
    zone = {"min_dwell_s": 0.0, "cooldown_s": 1.0, "update_every_s": None}
    cfg = config_from_mapping(
        {
            "gateway_id": "gw-rules",
            "data_dir": str(root / "data"),
            "models_dir": str(root / "models"),
            "tasks": {"fence": "people", "hardhat": "hardhat", "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 3},
            "mqtt": {"host": "127.0.0.1", "port": broker.port, "prefix": "rules"},
            "cameras": [
                {
                    "name": "dock",
                    "source": str(still_video(root / "still.avi")),
                    "realtime": False,
                    "target_fps": None,
                    "tasks": {
                        "hardhat": {
                            "tracker": {"n_init": 1},
                            "zones": [
                                {
                                    "name": "bay",
                                    "require": {"hardhat": {"colours": ["red", "white"]}},
                                    **zone,
                                },
                                {"name": "yard", **zone},  # the plain rule: no hat only
                            ],
                        }
                    },
                }
            ],
        }
    )
    with Subscriber(
        host=broker.host, port=broker.port, topics=["rules/gw-rules/events"], client_id=hat_class
    ) as sub:
        service = GatewayService(config=cfg)
        service.start()
        try:
            pipe = service.cameras["dock"].pipeline
            assert pipe is not None, service.cameras["dock"].reasons
            assert pipe.wait(timeout=30)
        finally:
            service.stop()
        with EventStore(path=events_db_path(root / "data")) as store:
            stored = store.list_events(limit=100)
        sub.wait_for(lambda: len(sub.on_topic("/events")) >= len(stored), timeout=10)
        published = [m.json() for m in sub.on_topic("/events")]
    return stored, published


@pytest.mark.parametrize(
    ("hat_class", "expected"),
    [
        (
            "yellow",
            {("bay", "yellow_hat", "hardhat colour must be one of red, white; saw yellow_hat")},
        ),
        ("red", set()),
        (
            "none",
            {
                ("bay", "no_hat", "hardhat required; saw no_hat"),
                ("yard", "no_hat", "hardhat required; saw no_hat"),
            },
        ),
    ],
)
def test_gateway_raises_one_event_naming_the_broken_rule(
    tmp_path: Path, broker: MosquittoBroker, hat_class: str, expected: set[tuple[str, str, str]]
) -> None:
    stored, published = run_gateway(tmp_path, broker, hat_class)
    starts = [e for e in stored if e.type == "start"]
    assert {(e.zone, e.label, e.attributes["rule"]) for e in starts} == expected
    assert len(starts) == len(expected)  # one incident per zone, not one per frame
    assert sum(e.type == "end" for e in stored) == len(expected)
    for e in starts:
        assert e.attributes["compliance"] == "violation"
        assert e.box == PERSON  # the person is tracked, not the hat
    by_id = {p["event_id"]: p for p in published}
    assert set(by_id) == {e.event_id for e in stored}  # every event reached the broker
    for e in stored:  # the summary is in every published event
        attrs = by_id[e.event_id]["attributes"]
        assert attrs["compliance"] == "violation" and attrs["rule"] == e.attributes["rule"]
        assert attrs["compliance_reason"] in ("colour_not_allowed", "bare_head")
        assert attrs["classname"] == e.label


def test_config_check_warns_when_the_person_model_is_missing(tmp_path: Path) -> None:
    write_models(tmp_path, "red")  # hardhat + people, but tasks.fence names another model
    base = f"models_dir: {tmp_path}\n" + camera_yaml("min_dwell_s: 1\n")
    _, problems = check_text(base)
    warned = [p for p in problems if "worn rule needs a person model" in p.message]
    assert [(p.path, p.severity) for p in warned] == [("tasks.fence", "warning")]
    assert "'person_vehicle' not found" in warned[0].message
    _, problems = check_text("tasks: {wearing: {person_model: people}}\n" + base)
    assert not [p for p in problems if "person model" in p.message]
    _, problems = check_text("tasks: {wearing: {worn_rule: false}}\n" + base)
    assert not [p for p in problems if "person model" in p.message]


def test_workwear_task_spec_on_subjects() -> None:
    from edge.tasks.workwear import WORKWEAR_CLASSNAMES

    names = [*WORKWEAR_CLASSNAMES, "cannot_tell"]
    cfg = config_from_mapping(
        yaml.safe_load(
            camera_yaml(
                "require:\n  workwear: {reflective: true}\n",
                "workwear",
                "name: plain\n",
                "name: by-model-class\nclasses: [no_wear]\n",
            )
        )
    )
    task = cfg.cameras[0].tasks["workwear"]
    spec = build_task_spec("workwear", task, class_names=names, filters=cfg.filters)
    bay, plain, by_model = spec.zones
    assert bay.classes == WORKWEAR_CLASSNAMES and bay.label is None
    assert plain.classes == ("no_workwear",) and plain.label == "no_workwear"
    assert by_model.classes == ("no_workwear",)
    conditions, explainers = build_zone_rules("workwear", task, class_names=names)
    assert set(conditions) == {"bay"} and len(explainers) == 3
    rows = [(COMPLIANT, 5), (COMPLIANT, 1), (CANNOT_TELL, -1)]  # yellow, blue, unknown
    subj = Detections(
        xyxy=np.zeros((3, 4), np.float32),
        scores=np.ones((3,), np.float32),
        class_ids=np.array([5, 1, 7], np.int32),
        data={
            STATUS: np.array([r[0] for r in rows], np.int8),
            REASON: np.full((3,), reason_id("workwear_worn"), np.int8),
            CLASSNAME: np.array([r[1] for r in rows], np.int16),
        },
    )
    assert names[5] == "yellow" and names[1] == "blue"
    assert conditions["bay"](subj).tolist() == [False, True, False]
    assert explainers["plain"](subj, 1) == {
        "compliance": "compliant",
        "compliance_reason": "workwear_worn",
        "classname": "blue",
    }


def test_config_check_accepts_answer_classnames_in_hardhat_zones(tmp_path: Path) -> None:
    write_models(tmp_path, "red")
    text = "tasks: {fence: people}\n" + f"models_dir: {tmp_path}\n"
    ok = text + camera_yaml("classes: [no_hat, none]\n")
    _, problems = check_text(ok)
    assert [p for p in problems if p.severity == "error"] == []
    _, problems = check_text(text + camera_yaml("classes: [no_workwear]\n"))
    assert [p.path for p in problems if p.severity == "error"] == [
        "cameras[0].tasks.hardhat.zones[0].classes"
    ]
