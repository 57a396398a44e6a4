"""YOLO data.yaml + label reader on small files written here, and on the shared hard-hat
validation split when ``../shared/data`` is present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge.errors import EdgeError
from edge.eval.dataset import (
    DatasetError,
    label_path_for,
    load_data_config,
    read_labels,
)

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def make_set(root: Path, yaml_text: str) -> Path:
    for split, stems in (("train", ["t1", "t2"]), ("val", ["v1", "v2", "v3"])):
        for s in stems:
            write(root / "images" / split / f"{s}.jpg", "not decoded by the reader")
    write(root / "labels" / "val" / "v1.txt", "0 0.5 0.5 0.2 0.4\n1 0.25 0.75 0.1 0.1\n")
    write(root / "labels" / "val" / "v2.txt", "\n")  # empty = background image
    # v3 has no label file at all: also background
    return write(root / "data.yaml", yaml_text)


def test_relative_path_resolves_against_the_yaml_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    y = make_set(
        tmp_path / "set", "path: .\ntrain: images/train\nval: images/val\nnames: {0: a, 1: b}\n"
    )
    monkeypatch.chdir(tmp_path)  # a cwd where "images/val" does not exist
    cfg = load_data_config(Path("set/data.yaml"))
    assert cfg.yaml_path == y.resolve()
    assert cfg.root == (tmp_path / "set").resolve()
    assert cfg.class_names == ("a", "b")
    val = cfg.samples("val")
    assert [s.image_path.name for s in val] == ["v1.jpg", "v2.jpg", "v3.jpg"]
    assert val[0].label_path == (tmp_path / "set" / "labels" / "val" / "v1.txt").resolve()
    counts = [len(s.labels(cfg.num_classes)) for s in val]
    assert counts == [2, 0, 0]
    assert len(cfg.samples("train")) == 2


def test_names_as_list_missing_path_and_subfolder_root(tmp_path: Path) -> None:
    root = tmp_path / "deep"
    make_set(root / "data", "x")
    y = write(
        tmp_path / "deep" / "cfg.yaml", "path: data\nval: [images/val]\nnames: [a, b]\nnc: 2\n"
    )
    cfg = load_data_config(y)
    assert cfg.root == (root / "data").resolve() and cfg.class_names == ("a", "b")
    assert len(cfg.samples("val")) == 3
    y2 = write(root / "data" / "nopath.yaml", "val: images/val\nnames: [a, b]\n")
    assert load_data_config(y2).root == (root / "data").resolve()


def test_image_list_file(tmp_path: Path) -> None:
    make_set(tmp_path, "x")
    write(tmp_path / "val.txt", "./images/val/v1.jpg\nimages/val/v3.jpg\n\n")
    y = write(tmp_path / "list.yaml", "val: val.txt\nnames: [a, b]\n")
    names = [s.image_path.name for s in load_data_config(y).samples("val")]
    assert names == ["v1.jpg", "v3.jpg"]


def test_read_labels_values_and_pixels(tmp_path: Path) -> None:
    p = write(tmp_path / "labels" / "x.txt", "2 0.5 0.25 0.5 0.1\n0 0.1 0.2 0.3 0.2 0.2 0.6\n")
    lab = read_labels(p, num_classes=3)
    assert lab.class_ids.dtype == np.int32 and lab.class_ids.tolist() == [2, 0]
    # the segment (0.1,0.2) (0.3,0.2) (0.2,0.6) becomes its bounding box
    np.testing.assert_allclose(lab.cxcywh[1], [0.2, 0.4, 0.2, 0.4], atol=1e-6)
    xyxy = lab.xyxy(200, 100)  # non-square image: x scales by 200, y by 100
    np.testing.assert_allclose(xyxy[0], [50, 20, 150, 30], atol=1e-4)
    np.testing.assert_allclose(xyxy[1], [20, 20, 60, 60], atol=1e-4)
    assert read_labels(tmp_path / "labels" / "missing.txt").cxcywh.shape == (0, 4)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("0 0.5 0.5 0.2", "fields"),
        ("0 0.5 0.5 0.2 0.2 0.3", "fields"),
        ("x 0.5 0.5 0.2 0.2", "not a number"),
        ("1.5 0.5 0.5 0.2 0.2", "not an integer"),
        ("-1 0.5 0.5 0.2 0.2", "not an integer"),
        ("3 0.5 0.5 0.2 0.2", r"not in \[0, 3\)"),
        ("0 0.5 0.5 0 0.2", "width and height"),
        ("0 0.5 nan 0.2 0.2", "non-finite"),
    ],
)
def test_bad_label_lines_name_file_and_line(tmp_path: Path, line: str, match: str) -> None:
    p = write(tmp_path / "l.txt", f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(DatasetError, match=match) as err:
        read_labels(p, num_classes=3)
    assert "line 2" in str(err.value) and str(p) in str(err.value)
    assert isinstance(err.value, EdgeError) and err.value.code == 5000


@pytest.mark.parametrize(
    ("yaml_text", "match"),
    [
        ("val: images/val\n", "missing 'names'"),
        ("val: images/val\nnames: [a, a]\n", "duplicate"),
        ("val: images/val\nnames: [a, b]\nnc: 3\n", "nc is 3"),
        ("val: images/val\nnames: {0: a, 2: b}\n", "without gaps"),
        ("val: images/val\nnames: 5\n", "mapping id -> name"),
        ("- a\n- b\n", "expected a mapping"),
        ("names: [a\n", "invalid YAML"),
        ("val: 3\nnames: [a]\n", "path or list"),
    ],
)
def test_bad_yaml(tmp_path: Path, yaml_text: str, match: str) -> None:
    with pytest.raises(DatasetError, match=match):
        load_data_config(write(tmp_path / "d.yaml", yaml_text))


def test_missing_things_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        load_data_config(tmp_path / "nope.yaml")
    y = make_set(tmp_path, "val: images/val\ntest: images/nothere\nnames: [a, b]\n")
    cfg = load_data_config(y)
    with pytest.raises(DatasetError, match=r"no split 'train' \(has: test, val\)"):
        cfg.samples("train")
    with pytest.raises(DatasetError, match="not a folder"):
        cfg.samples("test")
    (tmp_path / "images" / "empty").mkdir()
    y2 = write(tmp_path / "e.yaml", "val: images/empty\nnames: [a]\n")
    with pytest.raises(DatasetError, match="no images"):
        load_data_config(y2).samples("val")


def test_files_that_are_not_utf8_are_dataset_errors(tmp_path: Path) -> None:
    """A data.yaml or a .txt image list that is not UTF-8 (before: UnicodeDecodeError,
    a traceback from ``safety-edge eval``): a DatasetError naming the file."""
    make_set(tmp_path, "x")
    png = tmp_path / "png.yaml"
    png.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(DatasetError, match=r"data set YAML .*png\.yaml: cannot read: 'utf-8'"):
        load_data_config(png)
    (tmp_path / "val.txt").write_bytes("images/val/caf\u00e9.jpg\n".encode("latin-1"))
    y = write(tmp_path / "list.yaml", "val: val.txt\nnames: [a, b]\n")
    cfg = load_data_config(y)
    with pytest.raises(DatasetError, match=r"image list .*val\.txt: cannot read: 'utf-8'"):
        cfg.samples("val")


def test_label_path_rule() -> None:
    assert label_path_for(Path("/d/images/val/a/x.png")) == Path("/d/labels/val/a/x.txt")
    # the last "images" folder is the one replaced
    assert label_path_for(Path("/images/s/images/val/x.jpg")) == Path("/images/s/labels/val/x.txt")
    with pytest.raises(DatasetError, match="'images' folder"):
        label_path_for(Path("/d/pics/val/x.jpg"))


@pytest.mark.data
def test_shared_hardhat_val_split_matches_its_readme() -> None:
    data_yaml = SHARED_DATA / "hardhat" / "data.yaml"
    if not data_yaml.is_file():
        pytest.skip(f"shared data set not present at {data_yaml} (only on the project's CI)")
    cfg = load_data_config(data_yaml)
    assert cfg.class_names == ("none", "red", "blue", "white", "yellow")
    val = cfg.samples("val")
    ids = [s.labels(cfg.num_classes).class_ids for s in val]
    # README "Counts" table: val 195 images, none 79, red 108, blue 55, white 70, yellow 167
    assert len(val) == 195
    assert sum(len(i) for i in ids) == 479
    assert np.bincount(np.concatenate(ids), minlength=5).tolist() == [79, 108, 55, 70, 167]
    assert all(s.label_path.is_file() for s in val)  # "every image has at least one box"
    assert min(len(i) for i in ids) >= 1 and max(len(i) for i in ids) <= 11
