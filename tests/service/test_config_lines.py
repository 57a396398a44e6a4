"""``lines:`` in gateway.yaml: validated like zones (every problem with its path and YAML
line), mapped onto the stream layer's :class:`~edge.stream.lines.LineSpec`, checked
against the model's classes, and present in the shipped example and demo configs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from edge.config import CameraTaskConfig, FiltersConfig, LineConfig, config_from_mapping
from edge.errors import ConfigError
from edge.service.config_check import check_text
from edge.service.example import EXAMPLE_YAML
from edge.service.tasks import build_task_spec

REPO = Path(__file__).resolve().parents[2]
MODEL = ["person", "bicycle", "car", "motorcycle", "bus", "truck"]


def camera(task: dict[str, object], kind: str = "fence") -> dict[str, object]:
    return {"cameras": [{"name": "gate", "source": 0, "tasks": {kind: task}}]}


BAD = textwrap.dedent(
    """\
    cameras:
      - name: gate
        source: 0
        tasks:
          fence:
            zones:
              - name: yard
            lines:
              - name: yard
                points: [[0, 0], [10, 0]]
              - name: a/b
                points: [[0, 0]]
              - name: c
                points: "1,2,3"
              - name: d
                points: [[0, 0], [10, 0], [10, 10], [5, -5]]
                min_displacement_px: -1
              - name: e
                points: [[0.1, 0.1], [2, 0.5]]
                normalized: true
              - name: f
                points: [[0, 0], [1, 1]]
                anchor: overlap
              - name: g
                pionts: [[0, 0], [1, 1]]
    """
)


def test_every_line_problem_is_reported_with_its_path_and_line() -> None:
    config, problems = check_text(BAD, source="bad.yaml", environment=False)
    assert config is None
    got = {p.path: (p.line, p.message) for p in problems if p.severity == "error"}
    lines = "cameras[0].tasks.fence.lines"
    want_lines = {
        f"{lines}[1].name": 11,
        f"{lines}[1].points": 12,
        f"{lines}[2].points": 14,
        f"{lines}[3].points": 16,
        f"{lines}[3].min_displacement_px": 17,
        f"{lines}[4]": 18,
        f"{lines}[5].anchor": 23,
        f"{lines}[6].points": 24,
        f"{lines}[6].pionts": 25,
    }
    for path, line in want_lines.items():
        assert path in got and got[path][0] == line, (path, got.get(path), sorted(got))
    assert "at least 2 distinct" in got[f"{lines}[1].points"][1]
    assert "odd count" in got[f"{lines}[2].points"][1]
    assert "crosses or touches itself" in got[f"{lines}[3].points"][1]
    assert "within 0-1" in got[f"{lines}[4]"][1]
    assert "did you mean 'points'" in got[f"{lines}[6].pionts"][1]
    assert got[f"{lines}[6].points"][1] == "required key is missing"
    assert "/" in got[f"{lines}[1].name"][1]
    # the repeated name (also a zone's) is reported on the list once the items are valid
    good = yaml.safe_load(BAD)
    good["cameras"][0]["tasks"]["fence"]["lines"] = good["cameras"][0]["tasks"]["fence"]["lines"][
        :1
    ]
    with pytest.raises(ConfigError, match=r"line names must be unique.*\['yard'\]"):
        config_from_mapping(good)


def test_line_config_forms_and_mapping() -> None:
    cfg = config_from_mapping(
        camera(
            {
                "lines": [
                    {"name": "door", "points": "0.2,0.9,0.2,0.1"},
                    {
                        "name": "fence-line",
                        "points": [[10, 400], [300, 380], [700, 420]],
                        "classes": ["vehicles"],
                        "anchor": "center",
                        "min_displacement_px": 25,
                        "schedule": {"days": "mon-fri", "hours": ["18:00-06:00"]},
                        "label": "intruder",
                        "snapshots": False,
                    },
                ]
            }
        )
    )
    task = cfg.cameras[0].tasks["fence"]
    assert task.zones == [] and [ln.name for ln in task.lines] == ["door", "fence-line"]
    door, fence = task.lines
    assert door.normalized is True and fence.normalized is False
    assert fence.classes == ["bicycle", "car", "motorcycle", "bus", "truck"]
    spec = build_task_spec("fence", task, class_names=MODEL, filters=FiltersConfig())
    assert spec.zones == ()
    d, f = spec.lines
    assert d.points == ((0.2, 0.9), (0.2, 0.1)) and d.normalized and d.classes == ("person",)
    assert d.min_displacement_px == 10.0 and d.anchor == "bottom_center" and d.snapshots
    assert d.label is None
    assert f.classes == ("bicycle", "car", "motorcycle", "bus", "truck")
    assert f.anchor == "center" and f.min_displacement_px == 25.0 and not f.snapshots
    assert f.label == "intruder" and f.schedule is not None
    assert f.points == ((10.0, 400.0), (300.0, 380.0), (700.0, 420.0))


def test_tasks_without_zones() -> None:
    with pytest.raises(ConfigError, match="at least one zone or line"):
        config_from_mapping(camera({}))
    # hardhat keeps watching the whole frame when it also has lines
    cfg = config_from_mapping(
        camera({"lines": [{"name": "door", "points": [[0, 0], [0, 100]]}]}, kind="hardhat")
    )
    spec = build_task_spec(
        "hardhat",
        cfg.cameras[0].tasks["hardhat"],
        class_names=["helmet", "head"],
        filters=FiltersConfig(),
    )
    assert [z.name for z in spec.zones] == ["frame"]
    assert [(ln.name, ln.classes, ln.label) for ln in spec.lines] == [("door", ("head",), "no_hat")]
    task = CameraTaskConfig(lines=[LineConfig(name="l", points=[(0, 0), (9, 9)], classes=["x"])])
    with pytest.raises(ValueError, match=r"line 'l': the model does not detect \['x'\]"):
        build_task_spec("fence", task, class_names=MODEL, filters=FiltersConfig())


def test_line_classes_are_checked_against_the_model(default_model_manifest: Path) -> None:
    text = textwrap.dedent(
        f"""\
        models_dir: {default_model_manifest.parent}
        cameras:
          - name: gate
            source: 0
            tasks:
              fence:
                lines:
                  - name: l
                    points: [[0, 0], [0, 100]]
                    classes: [people, forklift]
        """
    )
    _, problems = check_text(text)
    errs = {p.path: (p.line, p.message) for p in problems if p.severity == "error"}
    assert errs["cameras[0].tasks.fence.lines[0].classes"][0] == 10
    assert "['forklift']" in errs["cameras[0].tasks.fence.lines[0].classes"][1]


def test_example_and_demo_configs_have_lines() -> None:
    for text in (EXAMPLE_YAML, (REPO / "deploy" / "gateway.demo.yaml").read_text()):
        cfg, problems = check_text(text, environment=False)
        assert cfg is not None and not [p for p in problems if p.severity == "error"]
        lines = [ln for c in cfg.cameras for t in c.tasks.values() for ln in t.lines]
        assert lines, "the config shows a counting line"
