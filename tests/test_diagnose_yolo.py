"""tools/diagnose_yolo.py helpers that need no torch: source grouping, spread subsets, report."""

from __future__ import annotations

import json
from pathlib import Path

from tools.diagnose_yolo import _write, image_groups, source_prefix, spread


def test_source_prefix_groups_by_the_letters_before_the_number() -> None:
    assert source_prefix(Path("images/val/000123.jpg")) == "numeric"
    assert source_prefix(Path("a00803.jpg")) == "a"
    assert source_prefix(Path("bpart2_0001.jpg")) == "bpart"
    assert source_prefix(Path("b17.png")) == "b"


def test_spread_takes_every_source_of_a_sorted_split() -> None:
    assert spread(10, 0) == list(range(10))
    assert spread(10, 50) == list(range(10))
    idx = spread(1000, 4)
    assert idx == [0, 250, 500, 750]
    # a sorted merged split: 600 numeric names, then 400 lettered ones
    names = [f"{i:06d}" for i in range(600)] + [f"a{i:05d}" for i in range(400)]
    picked = {source_prefix(Path(names[i])) for i in spread(len(names), 10)}
    assert picked == {"numeric", "a"}


def test_write_gives_json_and_a_markdown_table(tmp_path: Path) -> None:
    rows = [
        {"split": "val", "map@0.5": 0.5, "per_class@0.5": {"x": 0.5}},
        {"split": "train", "map@0.5": 0.75, "per_class@0.5": {"x": 0.75}},
    ]
    out = tmp_path / "sub" / "d.json"
    _write(out, rows, {"ckpt": "c.pt"})
    data = json.loads(out.read_text(encoding="utf-8"))
    assert data["ckpt"] == "c.pt" and data["rows"] == rows
    md = out.with_suffix(".md").read_text(encoding="utf-8").splitlines()
    assert md[0] == "| split | map@0.5 |"
    assert md[2:] == ["| val | 0.5 |", "| train | 0.75 |"]


def test_image_groups_all_per_source_and_all_but_one() -> None:
    paths = [Path(n) for n in ("000001.jpg", "a01.jpg", "000002.jpg", "bpart2_7.jpg")]
    assert image_groups(paths, by_prefix=False) == {"all": [0, 1, 2, 3]}
    groups = image_groups(paths, by_prefix=True, without=["numeric"])
    assert groups == {
        "all": [0, 1, 2, 3],
        "numeric": [0, 2],
        "a": [1],
        "bpart": [3],
        "all but numeric": [1, 3],
    }
