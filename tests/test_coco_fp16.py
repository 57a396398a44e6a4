"""tools/coco_fp16.py: Darknet weights to float16 and back (torch-free, synthetic file)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tools.coco_fp16 import main, pack, unpack
from tools.convert_darknet import read_weights


def _weights(path: Path, params: np.ndarray) -> Path:
    header = np.array([0, 2, 0], "<i4").tobytes() + np.array([32013312], "<i8").tobytes()
    path.write_bytes(header + params.astype("<f4").tobytes())
    return path


def test_round_trip_rounds_to_float16_and_keeps_the_header(tmp_path: Path) -> None:
    params = np.random.default_rng(0).normal(0, 0.3, 1000).astype(np.float32)
    w = _weights(tmp_path / "y.weights", params)
    cfg = tmp_path / "y.cfg"
    cfg.write_text("[net]\nwidth=416\n")
    size = pack(w, cfg, tmp_path / "packed")
    assert size == len(cfg.read_bytes()) + 20 + 2 * params.size
    out = unpack(tmp_path / "packed", tmp_path / "coco32")
    assert out.name == "yolov3-tiny.weights" and (tmp_path / "coco32" / "yolov3-tiny.cfg").is_file()
    header, got = read_weights(out.read_bytes())
    assert header == (0, 2, 0, 32013312)
    assert np.array_equal(got, params.astype(np.float16).astype(np.float32))
    assert np.max(np.abs(got - params) / np.maximum(np.abs(params), 1e-3)) <= 2.0**-11


def test_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "y.cfg"
    cfg.write_text("[net]\n")
    big = _weights(tmp_path / "big.weights", np.array([1.0, 1e6], np.float32))
    with pytest.raises(ValueError, match="does not fit float16"):
        pack(big, cfg, tmp_path / "p")
    with pytest.raises(FileNotFoundError, match=r"yolov3-tiny\.cfg is missing"):
        unpack(tmp_path, tmp_path / "u")
    assert main(["unpack", str(tmp_path), str(tmp_path / "u")]) == 2
    assert "not a folder written by `pack`" in capsys.readouterr().err
