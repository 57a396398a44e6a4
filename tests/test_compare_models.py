"""``tools/compare_models``: the paired bootstrap behind the model card's ship decisions, on
hand-made detections and end to end with planted ONNX models (real onnxruntime)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.eval.commands import ImageScores
from tests.eval.test_eval_command import make_dataset, make_models
from tools.compare_models import bootstrap, main

BOX = np.array([[10.0, 10.0, 50.0, 50.0]])


def image(found: bool) -> ImageScores:
    one = np.zeros(1, np.int64)
    pred = BOX if found else BOX + 100.0  # a miss: the box is elsewhere
    return ImageScores(BOX, one, pred, np.array([0.9]), one)


def test_a_worse_model_is_worse_in_every_resample() -> None:
    a = [image(True) for _ in range(20)]
    b = [image(i % 2 == 0) for i in range(20)]  # finds half the objects
    rows = {r["metric"]: r for r in bootstrap(("hat",), a, b, resamples=200, focus="hat")}
    m = rows["mAP@0.5"]
    assert m["a"] == 1.0 and m["b"] < 0.5  # half the recall, and false boxes among the rest
    assert m["b_worse"] == 1.0 and m["diff_p95"] < 0
    assert rows["hat recall at P >= 0.8"]["a"] == 1.0


def test_the_same_model_is_neither_better_nor_worse() -> None:
    a = [image(i % 3 > 0) for i in range(30)]
    rows = bootstrap(("hat",), a, list(a), resamples=50)
    assert all(r["diff_mean"] == 0 and r["b_better"] == r["b_worse"] == 0 for r in rows)
    with pytest.raises(ValueError, match="same, non-empty"):
        bootstrap(("hat",), a, a[:-1])
    with pytest.raises(ValueError, match="not an evaluated class"):
        bootstrap(("hat",), a, a, focus="cap")


def test_end_to_end_with_planted_models(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    a = make_models(tmp_path / "a") / "hardhat.yaml"  # finds every labelled box
    b = make_models(tmp_path / "b", rename={"yellow": "person"}) / "hardhat.yaml"  # no yellow
    out = tmp_path / "cmp.json"
    argv = [str(a), str(b), "--data", str(data), "--resamples", "30", "--focus", "red"]
    assert main([*argv, "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert "| mAP@0.5 | 1.000 | 0.667 |" in table and "| red AP@0.5 | 1.000 | 1.000 |" in table
    assert out.is_file()
    assert main([*argv[:-1], "blue"]) == 2
    assert "not an evaluated class" in capsys.readouterr().err
