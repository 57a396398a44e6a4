"""``tools/compare_two_stage`` (the model card's single- vs two-stage table) on the real
hard-hat val split: its per-class column is the harness's mAP@0.5 of the shipped model, and
the two-stage design localises far worse than the single-stage one, as the card says.
Skips without ``../shared/data`` or the models."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.eval.commands import evaluate
from edge.eval.dataset import load_data_config
from edge.runtime.detector import Detector
from edge.runtime.registry import load_manifest
from tests.conftest import MODELS
from tools.compare_two_stage import DATA, measure


def test_hardhat_two_stage_against_single_stage(default_model_manifest: Path) -> None:
    if not (DATA / "hardhat").is_dir():
        pytest.skip(f"validation data not present at {DATA / 'hardhat'} (only in CI)")
    if not (MODELS / "hardhat.onnx").is_file():
        pytest.skip("models/hardhat.onnx not shipped")
    res = measure("hardhat", limit_train=60)
    assert res["val_images"] == 195
    with Detector(load_manifest(MODELS / "hardhat.yaml")) as det:
        harness = evaluate(det, load_data_config(DATA / "hardhat" / "data.yaml")).metrics
    assert res["single_stage_per_class_mean"]["ap50"] == pytest.approx(harness.map50, abs=1e-3)
    single = res["single_stage_class_agnostic"]["ap50"]
    two = res["two_stage_person_then_part_class_agnostic"]["ap50"]
    print(f"\nclass-agnostic AP@0.5: single-stage {single}, two-stage {two}")
    assert single > 0.6 and two < 0.2
