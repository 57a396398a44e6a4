"""The `safety-edge` CLI as a user runs it: a real subprocess on the built default model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.eval.dataset import label_path_for, read_labels
from edge.eval.metrics import box_iou
from tests.conftest import MODELS, SAMPLES

FRAME = SAMPLES / "vtest_frame.jpg"
# Pedestrians whose feet are in the right half of the sample frame (boxes checked by eye).
RIGHT_HALF = "300,250,768,250,768,576,300,576"


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_detect_fence_prints_contract_items(default_model_manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "ann.jpg"
    r = cli(
        "detect",
        "--task",
        "fence",
        "--area",
        RIGHT_HALF,
        "--json",
        "--annotate",
        str(out),
        "--models-dir",
        str(MODELS),
        str(FRAME),
    )
    assert r.returncode == 0, r.stderr
    item = json.loads(r.stdout)
    assert set(item) == {"image", "target_num", "location"}
    assert item["target_num"] == len(item["location"]) >= 3
    for loc in item["location"]:
        assert set(loc) == {"left", "top", "width", "height"}
        assert all(isinstance(v, int) for v in loc.values())
        foot_x, foot_y = loc["left"] + loc["width"] / 2, loc["top"] + loc["height"]
        assert foot_x >= 300 and foot_y >= 250
    ann = cv2.imread(str(out))
    assert ann is not None and ann.shape == cv2.imread(str(FRAME)).shape
    assert not np.array_equal(ann, cv2.imread(str(FRAME)))


def test_fence_subset_of_person(default_model_manifest: Path) -> None:
    everyone = json.loads(cli("detect", "--json", "--models-dir", str(MODELS), str(FRAME)).stdout)
    people = [o for o in everyone["objects"] if o["label"] == "person"]
    full = "0,0,767,0,767,575,0,575"
    inside = json.loads(
        cli(
            "detect",
            "--task",
            "fence",
            "--area",
            full,
            "--json",
            "--models-dir",
            str(MODELS),
            str(FRAME),
        ).stdout
    )
    # The whole-frame fence counts every person and vehicle whose feet are in the frame.
    assert inside["target_num"] >= len(people) >= 4


def test_several_images_one_line_each(default_model_manifest: Path, tmp_path: Path) -> None:
    r = cli(
        "detect",
        "--json",
        "--annotate",
        str(tmp_path / "a.jpg"),
        "--models-dir",
        str(MODELS),
        str(FRAME),
        str(FRAME),
    )
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 2 and json.loads(lines[0]) == json.loads(lines[1])
    assert (tmp_path / "a_0.jpg").is_file() and (tmp_path / "a_1.jpg").is_file()


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["--task", "fence", "--area", "1,2,3"], 4012, "odd number"),
        (["--task", "fence", "--area", "0,0,10,0,0,10"], 4012, ""),
        (["--task", "fence", "--area", "0,0,10,0,10,10,0,10,a,b"], 4012, ""),
        (["--task", "fence", "--area", "0,0,100,100,100,0,0,100"], 4012, ""),
        (["--task", "fence", "--area", "0,0,900,0,900,600,0,600"], 4013, "outside"),
        (["--task", "fence"], 4012, "--area"),
    ],
)
def test_bad_area_one_line_error(
    default_model_manifest: Path, args: list[str], code: int, fragment: str
) -> None:
    r = cli("detect", *args, "--models-dir", str(MODELS), str(FRAME))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error {code}: "), r.stderr
    assert fragment in lines[0]


def test_missing_and_unreadable_images(default_model_manifest: Path, tmp_path: Path) -> None:
    r = cli("detect", "--models-dir", str(MODELS), str(tmp_path / "nope.jpg"))
    assert r.returncode == 2 and r.stderr.startswith("error 4009: ") and "no such file" in r.stderr
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    r = cli("detect", "--models-dir", str(MODELS), str(junk))
    assert r.returncode == 2 and r.stderr.startswith("error 4009: ") and "decode" in r.stderr
    assert "Traceback" not in r.stderr


def test_unknown_model(tmp_path: Path) -> None:
    r = cli("detect", "--model", "nope", "--models-dir", str(tmp_path), str(FRAME))
    assert r.returncode == 2 and r.stderr.startswith("error 5001: ") and "make models" in r.stderr


def test_models_list_reports_sha(default_model_manifest: Path, tmp_path: Path) -> None:
    r = cli("models", "list", "--json", "--models-dir", str(MODELS))
    assert r.returncode == 0, r.stderr
    rows = {row["name"]: row for row in json.loads(r.stdout)}
    assert rows["person_vehicle"]["sha256"] == "ok"
    # A copy with a tampered byte is reported as MISMATCH and the command fails.
    (tmp_path / "person_vehicle.yaml").write_text(default_model_manifest.read_text())
    data = bytearray((MODELS / "person_vehicle.onnx").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "person_vehicle.onnx").write_bytes(bytes(data))
    r = cli("models", "list", "--models-dir", str(tmp_path))
    assert r.returncode == 1 and "MISMATCH" in r.stdout


# -- hard hat and workwear: the trained models on real validation photos -------------------
HAT_LABELS = ["no_hat", "red_hat", "blue_hat", "white_hat", "yellow_hat"]


def trained(name: str) -> Path:
    if not (MODELS / f"{name}.onnx").is_file():
        pytest.skip(f"models/{name}.onnx not shipped (train it: see models/MODEL_CARD.md)")
    return MODELS / f"{name}.yaml"


def labelled(data: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """A validation photo's labelled boxes (``xyxy`` pixels, the project's label reader)
    and their class ids."""
    path = data / "images" / "val" / name
    image = cv2.imread(str(path))
    assert image is not None, name
    labels = read_labels(label_path_for(path))
    return labels.xyxy(image.shape[1], image.shape[0]), labels.class_ids


def ious(item: dict, boxes: np.ndarray) -> np.ndarray:
    """IoU of a contract item's ``[top, left, bottom, right]`` box with ``xyxy`` boxes."""
    t, left, b, r = item["box"]
    return box_iou([[left, t, r, b]], boxes.reshape(-1, 4))[0]


def check_items(answer: dict, allowed: set[str]) -> None:
    """Contract items: ``box`` four ints ``[top, left, bottom, right]``, a known classname,
    a score in (0, 1], highest score first."""
    image = cv2.imread(answer["image"])
    h, w = image.shape[:2]
    for it in answer["result"]:
        assert set(it) == {"box", "classname", "score"}
        t, left, b, r = it["box"]
        assert all(isinstance(v, int) for v in it["box"])
        assert 0 <= t < b <= h and 0 <= left < r <= w, (it, w, h)
        assert it["classname"] in allowed and 0 < it["score"] <= 1
    scores = [it["score"] for it in answer["result"]]
    assert scores == sorted(scores, reverse=True)


def detect_b001305(shared_data: Path, annotate: Path) -> dict[str, Any]:
    """``detect --task hardhat --json --annotate`` on val photo b001305 (four workers: two
    bare heads and a blue hard hat labelled; the fourth wears a navy baseball cap, not
    labelled: no hard hat)."""
    photo = shared_data / "hardhat" / "images" / "val" / "b001305.jpg"
    r = cli(
        "detect",
        "--task",
        "hardhat",
        "--json",
        "--annotate",
        str(annotate),
        "--models-dir",
        str(MODELS),
        str(photo),
    )
    assert r.returncode == 0, r.stderr
    answer: dict[str, Any] = json.loads(r.stdout)
    return answer


def test_detect_hardhat_on_a_real_photo(
    shared_data: Path, default_model_manifest: Path, tmp_path: Path
) -> None:
    """b001305: each labelled head is in the answer with its class; with the person
    detector the two bare-headed workers are violations, and an annotated copy is written.
    (The unlabelled cap: the next test.)"""
    trained("hardhat")
    out = tmp_path / "hats.jpg"
    answer = detect_b001305(shared_data, out)
    check_items(answer, {"blue_hat", "white_hat", "yellow_hat", "red_hat", "other_hat", "no_hat"})
    photo = shared_data / "hardhat" / "images" / "val" / "b001305.jpg"
    boxes, classes = labelled(shared_data / "hardhat", photo.name)
    found = set()
    for it in answer["result"]:
        overlap = ious(it, boxes)
        best = int(np.argmax(overlap))
        if overlap[best] >= 0.5:
            assert HAT_LABELS[classes[best]] == it["classname"], it
            found.add(best)
    assert found == set(range(len(boxes)))
    summary = answer["summary"]
    assert summary["rule"] == "person"
    bare = [p for p in summary["people"] if p["classname"] == "no_hat"]
    assert len(bare) == 2 and all(p["status"] == "violation" for p in bare), summary
    ann = cv2.imread(str(out))
    assert ann is not None and not np.array_equal(ann, cv2.imread(str(photo)))


@pytest.mark.xfail(
    strict=True,
    reason="known failure of the shipped hard-hat model (f2437c1a, 2026-11-27): it reads the "
    "navy baseball cap on b001305 as a blue hard hat (score 0.74); see models/MODEL_CARD.md, "
    "Known failure modes. The model before it (8e9d7bc0) left the cap out.",
)
def test_detect_hardhat_a_baseball_cap_is_not_a_hard_hat(
    shared_data: Path, default_model_manifest: Path, tmp_path: Path
) -> None:
    """b001305: the navy baseball cap (not labelled) may be ``no_hat`` or absent, never a
    hard hat: a hard hat there makes a worker without one compliant."""
    trained("hardhat")
    answer = detect_b001305(shared_data, tmp_path / "hats.jpg")
    boxes, _ = labelled(shared_data / "hardhat", "b001305.jpg")
    others = [it for it in answer["result"] if max(ious(it, boxes)) < 0.5]
    assert others == [] or all(it["classname"] == "no_hat" for it in others), others


def test_detect_hardhat_without_person_detector(shared_data: Path) -> None:
    """000599 (val): one worker in a yellow hat, close up; ``--no-person`` answers from the
    head model alone (rule ``detector``)."""
    trained("hardhat")
    photo = shared_data / "hardhat" / "images" / "val" / "000599.jpg"
    r = cli(
        "detect",
        "--task",
        "hardhat",
        "--no-person",
        "--json",
        "--models-dir",
        str(MODELS),
        str(photo),
    )
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    assert [it["classname"] for it in answer["result"]] == ["yellow_hat"]
    assert answer["summary"]["rule"] == "detector"
    assert answer["summary"]["counts"] == {"compliant": 1, "violation": 0, "cannot_tell": 0}


def test_detect_hardhat_person_model_missing(shared_data: Path, tmp_path: Path) -> None:
    """Without the person model (``make models`` not run) the default falls back to the head
    model's boxes, saying so on stderr; a person model asked for by name must exist."""
    trained("hardhat")
    for f in ("hardhat.yaml", "hardhat.onnx"):
        (tmp_path / f).symlink_to(MODELS / f)
    photo = shared_data / "hardhat" / "images" / "val" / "000599.jpg"
    r = cli("detect", "--task", "hardhat", "--json", "--models-dir", str(tmp_path), str(photo))
    assert r.returncode == 0, r.stderr
    assert (
        "person model 'person_vehicle' not in" in r.stderr and "without the worn rule" in r.stderr
    )
    assert json.loads(r.stdout)["summary"]["rule"] == "detector"
    r = cli(
        "detect",
        "--task",
        "hardhat",
        "--person-model",
        "nope",
        "--models-dir",
        str(tmp_path),
        str(photo),
    )
    assert r.returncode == 2 and r.stderr.startswith("error 5001: ") and "'nope'" in r.stderr


def test_detect_workwear_on_a_real_photo(shared_data: Path, default_model_manifest: Path) -> None:
    """vest_00602 (val): a row of workers, five in hi-vis vests and two without, labelled.
    Every confident answer (score >= 0.5) is on a labelled body of its kind; the vests read
    as ``yellow`` (hi-vis), the bare torsos as ``no_workwear``."""
    trained("workwear")
    photo = shared_data / "vest" / "images" / "val" / "vest_00602.jpg"
    r = cli("detect", "--task", "workwear", "--json", "--models-dir", str(MODELS), str(photo))
    assert r.returncode == 0, r.stderr
    answer = json.loads(r.stdout)
    check_items(answer, {"light", "blue", "other", "red", "dark", "yellow", "no_workwear"})
    boxes, classes = labelled(shared_data / "vest", photo.name)
    sure = [it for it in answer["result"] if it["score"] >= 0.5]
    for it in sure:
        kind = 3 if it["classname"] == "no_workwear" else 2  # no_wear / wear
        mine = boxes[classes == kind]
        assert ious(it, mine).max() >= 0.5, it
    names = [it["classname"] for it in sure]
    assert names.count("yellow") >= 4 and "no_workwear" in names, names
    assert answer["summary"]["rule"] == "person"


def test_detect_hardhat_with_a_model_without_hat_classes(default_model_manifest: Path) -> None:
    r = cli(
        "detect",
        "--task",
        "hardhat",
        "--model",
        "person_vehicle",
        "--models-dir",
        str(MODELS),
        str(FRAME),
    )
    assert r.returncode == 2 and r.stderr.startswith("error 5001: ")
    assert "no class the hardhat task reads" in r.stderr and "person" in r.stderr


def test_detect_area_is_for_the_fence_only(default_model_manifest: Path) -> None:
    r = cli(
        "detect", "--task", "person", "--area", RIGHT_HALF, "--models-dir", str(MODELS), str(FRAME)
    )
    assert r.returncode == 2 and r.stderr.startswith("error 4012: ") and "--task fence" in r.stderr


# -- bad command-line input: one line on stderr, exit 2, no input file touched -----------------
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--score", "2"], "argument --score: 2 is not in [0, 1]"),
        (["--score", "-0.1"], "argument --score: -0.1 is not in [0, 1]"),
        (["--score", "nan"], "argument --score: nan is not in [0, 1]"),
        (["--score", "high"], "argument --score: 'high' is not a number"),
        (["--threads", "0"], "argument --threads: 0 is not in 1..256"),
        (["--threads", "-4"], "argument --threads: -4 is not in 1..256"),
    ],
)
def test_detect_out_of_range_numbers_are_usage_errors(args: list[str], fragment: str) -> None:
    """Before: ``--score 2`` ended in a ValueError traceback (exit 1) from the task, and
    ``--threads -4`` ran with whatever onnxruntime made of it."""
    r = cli("detect", *args, "--models-dir", str(MODELS), str(FRAME))
    assert r.returncode == 2 and r.stdout == ""
    assert fragment in r.stderr and "Traceback" not in r.stderr


def test_detect_truncated_and_empty_images(tmp_path: Path) -> None:
    """A JPEG cut short (a copy that stopped half-way) is not called 'not a jpg'."""
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(FRAME.read_bytes()[: FRAME.stat().st_size // 2])
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    for path in (cut, empty):
        r = cli("detect", "--models-dir", str(MODELS), str(path))
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.strip() == (
            f"error 4009: cannot decode image {str(path)!r}: empty, truncated or not a "
            "png/jpg/jpeg/bmp image"
        )


def test_detect_image_that_is_a_folder(tmp_path: Path) -> None:
    r = cli("detect", "--models-dir", str(MODELS), str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip() == f"error 4009: cannot read image {str(tmp_path)!r}: a folder, not a file"
    )


def test_detect_models_dir_that_is_a_file(tmp_path: Path) -> None:
    r = cli("detect", "--models-dir", str(FRAME), str(FRAME))
    assert r.returncode == 2
    assert r.stderr.strip() == f"error 5001: models folder {FRAME} is not a folder"


@pytest.mark.parametrize("name", ["out.txt", "noext"])
def test_detect_annotate_without_an_image_writer(tmp_path: Path, name: str) -> None:
    """Refused before the model runs (before: a cv2.error traceback after the JSON)."""
    r = cli("detect", "--annotate", str(tmp_path / name), "--models-dir", str(MODELS), str(FRAME))
    assert r.returncode == 2 and r.stdout == "" and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error 5000: --annotate {str(tmp_path / name)!r}: no image writer")
    assert list(tmp_path.iterdir()) == []


def test_detect_annotate_never_overwrites_an_input_image(tmp_path: Path) -> None:
    """``--annotate`` naming an input (or, with several images, an ``_<i>`` copy landing on
    one) is refused before any work: the photo is kept as it was."""
    photo = tmp_path / "site.jpg"
    photo.write_bytes(FRAME.read_bytes())
    r = cli("detect", "--annotate", str(photo), "--models-dir", str(MODELS), str(photo))
    assert r.returncode == 2 and r.stdout == ""
    assert (
        r.stderr.strip() == f"error 5000: --annotate would overwrite the input image {str(photo)!r}"
    )
    second = tmp_path / "a_1.jpg"
    second.write_bytes(FRAME.read_bytes())
    r = cli(
        "detect", "--annotate", str(tmp_path / "a.jpg"), "--models-dir", str(MODELS),
        str(photo), str(second),
    )  # fmt: skip
    assert r.returncode == 2 and "would overwrite the input image" in r.stderr
    assert photo.read_bytes() == second.read_bytes() == FRAME.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_1.jpg", "site.jpg"]


def test_detect_annotate_under_a_file(default_model_manifest: Path, tmp_path: Path) -> None:
    """A folder part of ``--annotate`` that is a file: one error line, not a traceback."""
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    out = blocker / "ann.jpg"
    r = cli("detect", "--json", "--annotate", str(out), "--models-dir", str(MODELS), str(FRAME))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith(f"error 5000: cannot write {str(out)!r}: ")
    assert blocker.read_text() == "x"
