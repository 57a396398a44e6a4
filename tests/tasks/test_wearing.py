"""Worn, not held: the head-region rule, the three-way result and the contract answer.

Geometry tables on plain arrays; whole-task cases on real onnxruntime sessions of tiny
planted models (a person model and a hard-hat model with the classes of
models/hardhat.yaml); real photos when the trained hard-hat model exists.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.runtime.detector import Detector
from edge.runtime.registry import load_manifest
from edge.tasks.compliance import CANNOT_TELL, COMPLIANT, STATUS, VIOLATION, SubjectDetector
from edge.tasks.hardhat import HardhatTask, assess_hats
from edge.tasks.wearing import (
    WearingRule,
    containing_box,
    greedy_assign,
    head_regions,
    match_heads,
    match_workwear,
    occlusion,
    on_head,
)
from edge.tasks.workwear import WorkwearTask
from edge.types import Detections
from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output

SIZE = 416
HAT_CLASSES = ["none", "red", "blue", "white", "yellow"]
PERSON = (100.0, 60.0, 180.0, 380.0)  # w 80, h 320: head region x 108..172, y 60..140
OTHER = (250.0, 60.0, 330.0, 380.0)
ON_HEAD = (122.0, 48.0, 158.0, 82.0)  # centre (140, 65), 45 % of the person's width
AT_WAIST = (150.0, 200.0, 186.0, 232.0)  # centre (168, 216): inside the box, below the head
ON_FLOOR = (196.0, 350.0, 232.0, 380.0)  # beside the feet, outside every person box


def dets(
    boxes: Sequence[Sequence[float]], scores: Sequence[float], classes: Sequence[int] = ()
) -> Detections:
    n = len(boxes)
    return Detections(
        xyxy=np.asarray(boxes, np.float32).reshape(n, 4),
        scores=np.asarray(scores, np.float32),
        class_ids=np.asarray(classes or [0] * n, np.int32),
    )


# -- geometry ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("box", "expected"),
    [
        (ON_HEAD, True),
        ((120.0, 20.0, 160.0, 44.0), True),  # centre y 32: 8.75 % above the box top
        ((120.0, 0.0, 160.0, 40.0), False),  # centre y 20: 12.5 % above
        (AT_WAIST, False),
        (ON_FLOOR, False),
        ((100.0, 50.0, 180.0, 90.0), True),  # as wide as the person (a side view)
        ((90.0, 50.0, 190.0, 90.0), False),  # 125 % of the width: too wide
        ((137.0, 60.0, 143.0, 70.0), False),  # 7.5 % of the width: too narrow
        ((160.0, 60.0, 200.0, 90.0), False),  # centre x 180 > 172: beside the head
        ((110.0, 120.0, 170.0, 160.0), True),  # centre y 140 = the region's lower edge
        ((110.0, 122.0, 170.0, 162.0), False),  # centre y 142: just below
    ],
)
def test_on_head_table(box: tuple[float, ...], expected: bool) -> None:
    assert on_head([PERSON], [box])[0, 0] == expected


def test_head_region_and_empty_inputs() -> None:
    assert head_regions([PERSON]).tolist() == [[108.0, 60.0, 172.0, 140.0]]
    assert on_head(np.zeros((0, 4)), [ON_HEAD]).shape == (0, 1)
    assert on_head([PERSON], np.zeros((0, 4))).shape == (1, 0)
    p, h = match_heads(np.zeros((0, 4)), np.zeros((0, 4)))
    assert p.shape == (0,) and h.shape == (0,)
    assert containing_box(np.zeros((0, 4)), [PERSON]).shape == (0,)
    assert occlusion(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)
    # A degenerate person box wears nothing.
    assert not on_head([(10.0, 10.0, 10.0, 10.0)], [ON_HEAD]).any()


def test_one_hat_two_heads_goes_to_the_closer_head() -> None:
    near = (90.0, 60.0, 170.0, 380.0)  # shifted 10 px left: the hat is off its centre
    person_hat, hat_person = match_heads([near, PERSON], [ON_HEAD])
    assert person_hat.tolist() == [-1, 0] and hat_person.tolist() == [1]
    # Two hats on one head: the person gets the closer one; ties go to the higher score.
    twin = (122.0, 48.0, 158.0, 82.0)
    person_hat, hat_person = match_heads([PERSON], [twin, ON_HEAD], [0.6, 0.9])
    assert person_hat.tolist() == [1] and hat_person.tolist() == [-1, 0]


def test_greedy_assign_is_one_to_one() -> None:
    allowed = np.array([[True, True], [True, False]])
    cost = np.array([[0.1, 0.2], [0.05, 0.0]])
    rows, cols = greedy_assign(allowed, cost)
    assert rows.tolist() == [1, 0] and cols.tolist() == [1, 0]


def test_containing_box_picks_the_smallest() -> None:
    big = (0.0, 0.0, 400.0, 400.0)
    got = containing_box([AT_WAIST, ON_FLOOR, (500.0, 500.0, 510.0, 510.0)], [big, PERSON])
    assert got.tolist() == [1, 0, -1]


def test_occlusion_counts_only_people_in_front() -> None:
    back = (100.0, 40.0, 180.0, 300.0)  # head region 116..164 x 40..105
    front = (90.0, 30.0, 200.0, 400.0)  # feet lower: in front, covers back's head region
    share = occlusion([back, front], head_regions([back, front]))
    assert share[0] == pytest.approx(1.0) and share[1] == 0.0


def test_match_workwear_needs_half_the_box_inside() -> None:
    inside = (110.0, 120.0, 170.0, 250.0)
    half_out = (150.0, 120.0, 260.0, 250.0)  # 30 of 110 px inside: not this person's
    p, b = match_workwear([PERSON], [inside, half_out])
    assert p.tolist() == [0] and b.tolist() == [0, -1]


def test_rule_validation() -> None:
    with pytest.raises(ValueError, match="uncertain_band"):
        WearingRule(uncertain_band=(0.6, 0.5))
    with pytest.raises(ValueError, match="hat_width"):
        WearingRule(hat_width=(0.8, 0.2))
    with pytest.raises(ValueError, match="occluded_fraction"):
        WearingRule(occluded_fraction=0.0)


# -- the analysis on crafted boxes --------------------------------------------------------------
def statuses(analysis: Any) -> list[tuple[str, str]]:
    return [(p["status"], p["reason"]) for p in analysis.summary()["people"]]


@pytest.mark.parametrize(
    ("people", "hats", "classnames", "expected_people", "expected_items", "not_worn"),
    [
        pytest.param(
            [PERSON],
            [ON_HEAD],
            ["red_hat"],
            [("compliant", "hat_worn")],
            [("red_hat", ON_HEAD)],
            [],
            id="hat-on-head",
        ),
        pytest.param(
            [PERSON],
            [AT_WAIST],
            ["yellow_hat"],
            [("violation", "hat_not_worn")],
            [("no_hat", (108, 60, 172, 140))],
            ["held_hat"],
            id="hat-at-waist",
        ),
        pytest.param(
            [PERSON],
            [ON_FLOOR],
            ["white_hat"],
            [("violation", "hat_not_worn")],
            [("no_hat", (108, 60, 172, 140))],
            ["loose_hat"],
            id="hat-on-floor",
        ),
        pytest.param(
            [PERSON, OTHER],
            [ON_HEAD],
            ["blue_hat"],
            [("compliant", "hat_worn"), ("violation", "no_hat_on_head")],
            [("blue_hat", ON_HEAD), ("no_hat", (258, 60, 322, 140))],
            [],
            id="two-people-one-hat",
        ),
        pytest.param(
            [PERSON],
            [ON_HEAD],
            ["no_hat"],
            [("violation", "bare_head")],
            [("no_hat", ON_HEAD)],
            [],
            id="bare-head",
        ),
        pytest.param(  # the wearer was not detected: the model's word stands
            [],
            [ON_HEAD],
            ["red_hat"],
            [("compliant", "hat_worn")],
            [("red_hat", ON_HEAD)],
            [],
            id="hat-and-no-person",
        ),
        pytest.param(  # a neighbour the person detector missed, at head height
            [PERSON],
            [ON_HEAD, (350.0, 48.0, 386.0, 82.0)],
            ["red_hat", "white_hat"],
            [("compliant", "hat_worn"), ("compliant", "hat_worn")],
            [("red_hat", ON_HEAD), ("white_hat", (350.0, 48.0, 386.0, 82.0))],
            [],
            id="hat-of-an-undetected-neighbour",
        ),
        pytest.param(
            [],
            [ON_HEAD],
            ["no_hat"],
            [("violation", "bare_head")],
            [("no_hat", ON_HEAD)],
            [],
            id="bare-head-no-person",
        ),
    ],
)
def test_assess_hats_cases(
    people: list[tuple[float, ...]],
    hats: list[tuple[float, ...]],
    classnames: list[str],
    expected_people: list[tuple[str, str]],
    expected_items: list[tuple[str, tuple[float, ...]]],
    not_worn: list[str],
) -> None:
    a = assess_hats(
        dets(hats, [0.8] * len(hats)),
        classnames,
        dets(people, [0.9 - 0.01 * i for i in range(len(people))]),
    )
    assert statuses(a) == expected_people
    got = [(it["classname"], it["box"]) for it in a.items]
    want = [(c, [int(b[1]), int(b[0]), int(b[3]), int(b[2])]) for c, b in expected_items]
    assert sorted(got) == sorted(want)
    assert [h["classname"] for h in a.summary()["not_worn"]] == not_worn
    for entry in a.summary()["people"]:  # each entry points at the answer item it qualifies
        if entry["item"] is not None:
            assert a.items[entry["item"]]["classname"] == entry["classname"]


@pytest.mark.parametrize(
    ("person", "hat_score", "person_score", "reason"),
    [
        ((105.0, 60.0, 175.0, 110.0), 0.8, 0.9, "too_small"),  # 50 px < 64 px
        ((100.0, 0.0, 180.0, 320.0), None, 0.9, "head_cut_off"),
        (PERSON, 0.4, 0.9, "uncertain_score"),  # the hat's score is in the band
        (PERSON, None, 0.4, "uncertain_score"),  # nothing on the head, a doubtful person
    ],
)
def test_cannot_tell_reasons(
    person: tuple[float, ...], hat_score: float | None, person_score: float, reason: str
) -> None:
    hats = dets([ON_HEAD], [hat_score]) if hat_score is not None else dets([], [])
    names = ["red_hat"] if hat_score is not None else []
    a = assess_hats(hats, names, dets([person], [person_score]))
    assert statuses(a) == [("cannot_tell", reason)]
    # cannot_tell adds no no_hat of its own; a hat the model saw on the head stays.
    assert all(it["classname"] != "no_hat" for it in a.items)


def test_occluded_head_is_cannot_tell_but_a_visible_bare_head_decides() -> None:
    back = (100.0, 40.0, 180.0, 300.0)
    front = (90.0, 30.0, 200.0, 400.0)
    a = assess_hats(dets([], []), [], dets([back, front], [0.9, 0.8]))
    assert statuses(a) == [("cannot_tell", "occluded"), ("violation", "no_hat_on_head")]
    assert "100% of the head region" in a.summary()["people"][0]["details"]


def test_unsure_boxes_on_nobody_are_items_but_not_people() -> None:
    far = (350.0, 48.0, 386.0, 82.0)
    a = assess_hats(dets([far, ON_HEAD], [0.4, 0.45]), ["no_hat", "red_hat"], dets([], []))
    assert sorted(it["classname"] for it in a.items) == ["no_hat", "red_hat"]
    assert a.summary()["people"] == [] and a.summary()["counts"]["cannot_tell"] == 0


def test_detector_only_mode_keeps_every_box() -> None:
    a = assess_hats(dets([ON_HEAD, AT_WAIST], [0.9, 0.45]), ["red_hat", "no_hat"], None)
    assert [it["classname"] for it in a.items] == ["red_hat", "no_hat"]
    s = a.summary()
    assert s["rule"] == "detector" and s["counts"] == {
        "compliant": 1,
        "violation": 0,
        "cannot_tell": 1,
    }
    assert [p["person"] for p in s["people"]] == [None, None]


def test_no_band_decides_on_any_score() -> None:
    rule = WearingRule(uncertain_band=None)
    a = assess_hats(dets([ON_HEAD], [0.1]), ["red_hat"], dets([PERSON], [0.1]), rule=rule)
    assert statuses(a) == [("compliant", "hat_worn")]


# -- real sessions of planted models ----------------------------------------------------------
def cxcywh(box: Sequence[float]) -> list[float]:
    x1, y1, x2, y2 = box
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


def planted(
    folder: Path, names: Sequence[str], boxes: Sequence[Sequence[float]], classes: Sequence[int]
) -> Iterator[Detector]:
    scores = [[0.9 if j == c else 0.0 for j in range(len(names))] for c in classes]
    model = planted_model({"output0": yolov8_output([cxcywh(b) for b in boxes], scores)})
    path = write_model_and_manifest(folder, model, name=folder.name, class_names=list(names))
    with Detector(load_manifest(path)) as det:
        yield det


@pytest.mark.parametrize(
    ("hat", "hat_class", "people", "expected"),
    [
        (ON_HEAD, 1, [PERSON], [("red_hat", "compliant")]),
        (AT_WAIST, 4, [PERSON], [("no_hat", "violation")]),
        (ON_FLOOR, 3, [PERSON], [("no_hat", "violation")]),
        (ON_HEAD, 2, [PERSON, OTHER], [("blue_hat", "compliant"), ("no_hat", "violation")]),
    ],
    ids=["hat-on-head", "hat-at-waist", "hat-on-floor", "two-people-one-hat"],
)
def test_planted_models_through_the_task(
    tmp_path: Path,
    hat: tuple[float, ...],
    hat_class: int,
    people: list[tuple[float, ...]],
    expected: list[tuple[str, str]],
) -> None:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    for hats_det in planted(tmp_path / "hats", HAT_CLASSES, [hat], [hat_class]):
        for person_det in planted(tmp_path / "people", ["person"], people, [0] * len(people)):
            task = HardhatTask(detector=hats_det, person_detector=person_det)
            a = task.analyse(image)
            assert task.run(image) == a.items
            plain = HardhatTask(detector=hats_det).run(image)  # no person model: as before
    got = [(a.items[p["item"]]["classname"], p["status"]) for p in a.summary()["people"]]
    assert sorted(got) == sorted(expected)
    assert len(plain) == 1 and plain[0]["classname"] == HAT_CLASSES[hat_class] + "_hat"


def test_subject_detector_for_the_pipeline(tmp_path: Path) -> None:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    for hats_det in planted(tmp_path / "hats", HAT_CLASSES, [ON_HEAD], [4]):
        for person_det in planted(tmp_path / "people", ["person"], [PERSON, OTHER], [0, 0]):
            sd = SubjectDetector(task=HardhatTask(detector=hats_det, person_detector=person_det))
            subjects = sd.detect(image)
            only_bare, timings = sd.detect_with_timings(image, classes=["no_hat"])
    assert sd.class_names[-1] == "cannot_tell" and "yellow_hat" in sd.class_names
    names = [sd.class_names[c] for c in subjects.class_ids]
    assert names == ["yellow_hat", "no_hat"]
    assert subjects.data[STATUS].tolist() == [COMPLIANT, VIOLATION]
    assert subjects.xyxy.tolist() == [list(PERSON), list(OTHER)]  # person boxes: feet anchor
    assert len(only_bare) == 1 and only_bare.data[STATUS].tolist() == [VIOLATION]
    assert timings.inference_ms > 0  # both models' stages, for the pipeline's metrics
    assert CANNOT_TELL == 2


def test_workwear_summary_with_people(tmp_path: Path) -> None:
    image = np.full((SIZE, SIZE, 3), 128, np.uint8)
    image[124:252, 100:180] = (0, 220, 230)  # yellow torso of PERSON
    wear = (100.0, 60.0, 180.0, 380.0)
    third = (20.0, 60.0, 90.0, 380.0)  # a person the model said nothing about
    for wear_det in planted(tmp_path / "wear", ["wear", "no_wear"], [wear, OTHER], [0, 1]):
        for person_det in planted(tmp_path / "people", ["person"], [PERSON, OTHER, third], [0] * 3):
            a = WorkwearTask(detector=wear_det, person_detector=person_det).analyse(image)
            plain = WorkwearTask(detector=wear_det).run(image)
    assert a.items == plain  # the contract answer is the model's boxes either way
    assert [it["classname"] for it in a.items] == ["yellow", "no_workwear"]
    assert statuses(a) == [
        ("compliant", "workwear_worn"),
        ("violation", "no_workwear"),
        ("cannot_tell", "not_detected"),
    ]


# -- real photos -------------------------------------------------------------------------------
HARDHAT_MODEL = Path(__file__).resolve().parents[2] / "models" / "hardhat.yaml"
LABEL_NAMES = ["no_hat", "red_hat", "blue_hat", "white_hat", "yellow_hat"]
WORN_PHOTOS = ["000720.jpg", "000628.jpg", "000087.jpg", "000599.jpg"]
"""Validation photos picked by eye: every worker the person detector finds wears a hat
(four at a site, two at a river, a climber, a man seen from behind)."""


def labelled_heads(data: Path, name: str) -> tuple[np.ndarray, Detections, list[str]]:
    """A validation photo and its labelled head boxes as detections (score 0.9)."""
    import cv2

    img = cv2.imread(str(data / "images" / "val" / name))
    assert img is not None, name
    h, w = img.shape[:2]
    lab = np.loadtxt(data / "labels" / "val" / name.replace(".jpg", ".txt"), ndmin=2)
    cx, cy, bw, bh = lab[:, 1] * w, lab[:, 2] * h, lab[:, 3] * w, lab[:, 4] * h
    xyxy = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
    cls = lab[:, 0].astype(int)
    heads = Detections(xyxy=xyxy, scores=np.full(len(cls), 0.9), class_ids=cls)
    return np.asarray(img, dtype=np.uint8), heads, [LABEL_NAMES[c] for c in cls]


@pytest.fixture(scope="module")
def person_detector(default_model_manifest: Path) -> Iterator[Detector]:
    with Detector(load_manifest(default_model_manifest), intra_op_threads=1) as det:
        yield det


@pytest.mark.parametrize("name", WORN_PHOTOS)
def test_real_photos_hats_on_heads_are_worn(
    shared_data: Path, person_detector: Detector, name: str
) -> None:
    """The rule on real geometry: the labelled hats (the hard-hat model's boxes are head
    boxes like these) and the real person detector. Every person found wears their hat."""
    img, heads, names = labelled_heads(shared_data / "hardhat", name)
    people = person_detector.detect(img, classes=["person"])
    analysis = assess_hats(heads, names, people[np.argsort(-people.scores)])
    s = analysis.summary()
    with_person = [p for p in s["people"] if p["person"] is not None]
    assert with_person and all(p["reason"] == "hat_worn" for p in with_person), s["people"]
    assert s["not_worn"] == []
    assert sorted(it["classname"] for it in analysis.items) == sorted(names)


@pytest.mark.parametrize("where", ["waist", "floor"])
def test_real_photo_with_the_hat_taken_off(
    shared_data: Path, person_detector: Detector, where: str
) -> None:
    """000628 (two workers at a river), the yellow hat moved from its wearer's head to
    his waist (held) or onto the ground beside his feet (loose): he gets no_hat on his
    head region, the hat leaves the answer, the other worker stays compliant."""
    img, heads, names = labelled_heads(shared_data / "hardhat", "000628.jpg")
    people = person_detector.detect(img, classes=["person"])
    people = people[np.argsort(-people.scores)]
    before = assess_hats(heads, names, people)
    yellow = names.index("yellow_hat")
    wearer = next(p for p in before.summary()["people"] if p["classname"] == "yellow_hat")
    top, left, bottom, right = wearer["person"]
    xyxy = heads.xyxy.copy()
    bw, bh = xyxy[yellow, 2] - xyxy[yellow, 0], xyxy[yellow, 3] - xyxy[yellow, 1]
    if where == "waist":
        x0, y0 = (left + right) / 2 - bw / 2, top + 0.5 * (bottom - top)
    else:
        x0, y0 = left - 0.1 * (right - left) - bw, bottom - bh  # the side away from the other
    xyxy[yellow] = [x0, y0, x0 + bw, y0 + bh]
    moved = Detections(xyxy=xyxy, scores=heads.scores, class_ids=heads.class_ids)
    after = assess_hats(moved, names, people).summary()
    off = after["not_worn"]
    assert [(h["classname"], h["colour"]) for h in off] == [
        ("held_hat" if where == "waist" else "loose_hat", "yellow_hat")
    ]
    him = after["people"][off[0]["person"]]
    assert him["person"] == wearer["person"]
    assert (him["status"], him["reason"], him["classname"]) == (
        "violation",
        "hat_not_worn",
        "no_hat",
    )
    assert after["counts"]["compliant"] == 1


# -- real photos with the trained model -------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                strict=True,
                reason="known failure of the shipped hard-hat model (f2437c1a, 2026-11-27): "
                "the yellow hat of one worker scores 0.61, under the 0.65 threshold, so he "
                "is a violation; see models/MODEL_CARD.md, Known failure modes",
            ),
        )
        if name == "000628.jpg"
        else name
        for name in WORN_PHOTOS
    ],
)
def test_real_photos_with_the_trained_models(
    shared_data: Path, person_detector: Detector, name: str
) -> None:
    """The trained hard-hat model and the person detector on the photos picked above
    (everyone found wears a hat): nobody is a violation, someone is compliant, and no
    held or loose hat reaches the answer. Skips until models/hardhat.onnx is trained."""
    if not HARDHAT_MODEL.is_file():
        pytest.skip("models/hardhat.onnx not trained yet (the hard-hat model is optional)")
    img, _, _ = labelled_heads(shared_data / "hardhat", name)
    with Detector(load_manifest(HARDHAT_MODEL), intra_op_threads=1) as hats:
        a = HardhatTask(detector=hats, person_detector=person_detector).analyse(img)
    s = a.summary()
    assert s["rule"] == "person" and sum(s["counts"].values()) == len(s["people"])
    assert s["counts"]["violation"] == 0, s["people"]
    assert s["counts"]["compliant"] >= 1
    assert not {tuple(h["box"]) for h in s["not_worn"]} & {tuple(it["box"]) for it in a.items}
    assert "no_hat" not in {it["classname"] for it in a.items if it["score"] >= 0.5}
