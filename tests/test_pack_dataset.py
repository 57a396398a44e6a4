"""tools/pack_dataset.py: the compact copy keeps every image and label, shrinks and
re-encodes, and the harness reads it (torch-free)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.eval.dataset import load_data_config
from tools.pack_dataset import main, pack


def _dataset(root: Path) -> Path:
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    rng = np.random.default_rng(3)
    for i, (split, w, h) in enumerate([("train", 200, 100), ("train", 40, 30), ("val", 90, 160)]):
        img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / split / f"im{i}.jpg"), img)
        (root / "labels" / split / f"im{i}.txt").write_text(f"{i % 2} 0.5 0.5 0.25 0.4\n")
    (root / "images" / "train" / "notes.txt").write_text("not an image")
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: a\n  1: b\n"
    )
    return root


def test_pack_shrinks_reencodes_and_keeps_labels(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src")
    dst = tmp_path / "dst"
    n, size = pack(src, dst, max_side=64, quality=70)
    assert n == 3 and size == sum(f.stat().st_size for f in dst.rglob("*.webp"))
    shapes = {p.name: cv2.imread(str(p)).shape[:2] for p in sorted(dst.glob("images/*/*.webp"))}
    # longer side 64 (area resize keeps the aspect), smaller images only re-encoded
    assert shapes == {"im0.webp": (32, 64), "im1.webp": (30, 40), "im2.webp": (64, 36)}
    for lab in src.glob("labels/*/*.txt"):
        assert (dst / lab.relative_to(src)).read_text() == lab.read_text()
    assert not list(dst.rglob("notes*"))
    cfg = load_data_config(dst / "data.yaml")
    assert list(cfg.class_names) == ["a", "b"]
    val = list(cfg.samples("val"))
    assert len(val) == 1 and val[0].image_path.suffix == ".webp"


def test_pack_jpeg(tmp_path: Path) -> None:
    src = _dataset(tmp_path / "src")
    n, _size = pack(src, tmp_path / "dst", max_side=50, quality=90, fmt="jpg", splits=["val"])
    assert n == 1 and (tmp_path / "dst" / "images" / "val" / "im2.jpg").is_file()
    assert not (tmp_path / "dst" / "images" / "train").exists()


def test_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = _dataset(tmp_path / "src")
    with pytest.raises(ValueError, match="format 'gif'"):
        pack(src, tmp_path / "d1", max_side=64, quality=70, fmt="gif")
    with pytest.raises(ValueError, match=r"no data\.yaml"):
        pack(tmp_path, tmp_path / "d2", max_side=64, quality=70)
    with pytest.raises(ValueError, match="images/test does not exist"):
        pack(src, tmp_path / "d3", max_side=64, quality=70, splits=["test"])
    (src / "images" / "val" / "broken.png").write_bytes(b"not a png")
    rc = main(["--src", str(src), "--dst", str(tmp_path / "d4"), "--max-side", "64"])
    assert rc == 2 and "cannot read image" in capsys.readouterr().err
