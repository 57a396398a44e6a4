"""Task logic on real onnxruntime sessions of tiny planted models (tests/runtime/graphs.py).

The image is 416x416, the models' input size, so planted network boxes are image boxes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from edge.runtime.detector import Detector
from edge.runtime.registry import load_manifest
from edge.tasks.fence import FenceTask, fence_result, inside_mask
from edge.tasks.hardhat import HAT_CLASSNAMES, HardhatTask, hat_classname
from edge.tasks.workwear import WORKWEAR_CLASSNAMES, WorkwearTask
from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output

SIZE = 416


def detector(
    tmp_path: Path,
    names: Sequence[str],
    boxes: Sequence[Sequence[float]],
    scores: Sequence[Sequence[float]],
) -> Iterator[Detector]:
    model = planted_model({"output0": yolov8_output(boxes, scores)})
    yaml_path = write_model_and_manifest(tmp_path, model, class_names=list(names))
    with Detector(load_manifest(yaml_path)) as det:
        yield det


def xyxy_to_cxcywh(x1: float, y1: float, x2: float, y2: float) -> list[float]:
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


@pytest.fixture
def grey() -> np.ndarray:
    return np.full((SIZE, SIZE, 3), 128, np.uint8)


@pytest.mark.parametrize(
    ("model_class", "expected"),
    [
        ("none", "no_hat"),
        ("no_helmet", "no_hat"),
        ("head", "no_hat"),
        ("red", "red_hat"),
        ("Blue", "blue_hat"),
        ("white_hat", "white_hat"),
        ("yellow", "yellow_hat"),
        ("orange", "other_hat"),
        ("other", "other_hat"),
        ("helmet", ""),
        ("hat", ""),
        ("wear", None),
        ("person", None),
    ],
)
def test_hat_classname_table(model_class: str, expected: str | None) -> None:
    assert hat_classname(model_class) == expected


def test_hardhat_colour_classes_map_to_contract(tmp_path: Path, grey: np.ndarray) -> None:
    names = ["none", "red", "blue", "white", "yellow"]
    boxes = [xyxy_to_cxcywh(10 + 60 * i, 20, 50 + 60 * i, 60) for i in range(5)]
    scores = [[0.9 - 0.1 * i if j == i else 0.0 for j in range(5)] for i in range(5)]
    for det in detector(tmp_path, names, boxes, scores):
        items = HardhatTask(detector=det).run(grey)
    assert [it["classname"] for it in items] == [
        "no_hat",
        "red_hat",
        "blue_hat",
        "white_hat",
        "yellow_hat",
    ]
    assert items[0]["box"] == [20, 10, 60, 50]  # [top, left, bottom, right]
    assert [it["score"] for it in items] == pytest.approx([0.9, 0.8, 0.7, 0.6, 0.5], abs=1e-4)
    assert {it["classname"] for it in items} <= set(HAT_CLASSNAMES)


def test_generic_helmet_gets_colour_from_pixels(tmp_path: Path, grey: np.ndarray) -> None:
    img = grey.copy()
    img[100:140, 100:160] = (0, 220, 230)  # yellow hat (BGR)
    img[200:240, 200:260] = (200, 60, 0)  # blue hat
    img[300:340, 300:360] = (60, 140, 40)  # green: no contract colour -> other_hat
    names = ["helmet", "no_helmet", "wear", "no_wear"]
    boxes = [
        xyxy_to_cxcywh(100, 100, 160, 140),
        xyxy_to_cxcywh(200, 200, 260, 240),
        xyxy_to_cxcywh(300, 300, 360, 340),
        xyxy_to_cxcywh(10, 300, 200, 410),
    ]
    scores = [[0.9, 0, 0, 0], [0.8, 0, 0, 0], [0.7, 0, 0, 0], [0, 0, 0.95, 0]]
    for det in detector(tmp_path, names, boxes, scores):
        items = HardhatTask(detector=det).run(img)
    # The `wear` box is not a head and is left out.
    assert [it["classname"] for it in items] == ["yellow_hat", "blue_hat", "other_hat"]


def test_workwear_colour_from_torso(tmp_path: Path, grey: np.ndarray) -> None:
    img = grey.copy()
    # Person 1: box 50..150 x 50..350; torso (20..60 % of height) painted red.
    img[110:230, 50:150] = (0, 0, 210)
    # Person 2: light workwear.
    img[110:230, 250:350] = (235, 235, 235)
    names = ["helmet", "no_helmet", "wear", "no_wear"]
    boxes = [
        xyxy_to_cxcywh(50, 50, 150, 350),
        xyxy_to_cxcywh(250, 50, 350, 350),
        xyxy_to_cxcywh(170, 60, 230, 300),
        xyxy_to_cxcywh(0, 0, 30, 30),
    ]
    scores = [[0, 0, 0.9, 0], [0, 0, 0.8, 0], [0, 0, 0, 0.7], [0.99, 0, 0, 0]]
    for det in detector(tmp_path, names, boxes, scores):
        items = WorkwearTask(detector=det).run(img)
    assert [it["classname"] for it in items] == ["red", "light", "no_workwear"]
    assert {it["classname"] for it in items} <= set(WORKWEAR_CLASSNAMES)


def test_tasks_with_a_model_that_knows_none_of_their_classes(
    tmp_path: Path, grey: np.ndarray
) -> None:
    for det in detector(tmp_path, ["person", "car"], [[50, 50, 20, 20]], [[0.9, 0]]):
        assert HardhatTask(detector=det).run(grey) == []
        assert WorkwearTask(detector=det).run(grey) == []


def test_fence_counts_feet_inside_polygon(tmp_path: Path, grey: np.ndarray) -> None:
    names = ["person", "car", "dog"]
    boxes = [
        xyxy_to_cxcywh(100, 50, 140, 150),  # feet (120,150) inside
        xyxy_to_cxcywh(100, 150, 140, 260),  # feet (120,260) outside (below)
        xyxy_to_cxcywh(160, 100, 260, 180),  # car, bottom-centre (210,180) inside
        xyxy_to_cxcywh(20, 60, 60, 120),  # person left of the zone
        xyxy_to_cxcywh(150, 60, 200, 110),  # dog inside, not a counted class
    ]
    scores = [[0.9, 0, 0], [0.8, 0, 0], [0, 0.85, 0], [0.7, 0, 0], [0, 0, 0.95]]
    polygon = np.array([[80, 40], [300, 40], [300, 200], [80, 200]], np.float64)
    for det in detector(tmp_path, names, boxes, scores):
        inside = FenceTask(detector=det).run(grey, polygon)
        people_only = FenceTask(detector=det, classes=("person",)).run(grey, polygon)
        centre = FenceTask(detector=det, anchor="center").run(grey, polygon)
    assert fence_result(inside) == {
        "target_num": 2,
        "location": [
            {"left": 100, "top": 50, "width": 40, "height": 100},
            {"left": 160, "top": 100, "width": 100, "height": 80},
        ],
    }
    assert len(people_only) == 1
    # Centre anchor: the second person's centre (120,205) is still outside; same answer.
    assert len(centre) == 2


def test_inside_mask_overlap_mode() -> None:
    from edge.types import Detections

    dets = Detections(xyxy=[[0, 0, 10, 10], [8, 0, 18, 10]], scores=[1, 1], class_ids=[0, 0])
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]], np.float64)
    assert inside_mask(dets, square, anchor="overlap", overlap_threshold=0.5).tolist() == [
        True,
        False,
    ]
    assert inside_mask(dets, square, anchor="overlap", overlap_threshold=0.2).tolist() == [
        True,
        True,
    ]
    assert inside_mask(Detections.empty(), square).shape == (0,)
