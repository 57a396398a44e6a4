"""The `safety-edge` CLI as a user runs it: a real subprocess on the built default model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

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
