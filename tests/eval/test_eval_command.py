"""``safety-edge eval`` end to end: a planted ONNX model (real onnxruntime session) over a
synthetic YOLO data set written here, through the argparse sub-command."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.errors import EdgeError, ModelError
from edge.eval.commands import (
    EvalError,
    Progress,
    add_subcommands,
    map_classes,
    parse_class_map,
)
from edge.eval.dataset import DatasetError
from tests.runtime.graphs import planted_model, write_model_and_manifest, yolov8_output

NET = 320  # network input side; the manifest uses a plain resize (letterbox: false)
DATA_NAMES = ["none", "red", "blue", "white", "yellow"]
# model class order differs from the data set's, has an extra class and lacks blue/white
MODEL_NAMES = ["person", "yellow", "red", "none"]
# planted detections, in network-input pixels: (cx, cy, w, h), model class, score
PLANTED = [
    ((80.0, 80.0, 60.0, 60.0), "red", 0.9),
    ((240.0, 160.0, 80.0, 100.0), "none", 0.8),
    ((160.0, 260.0, 40.0, 40.0), "yellow", 0.3),
]
IMAGE_SIZES = [(320, 320), (640, 480), (200, 300)]  # (w, h); plain resize keeps normalised boxes


def label_lines(classes: list[str]) -> str:
    return "".join(
        f"{DATA_NAMES.index(c)} {cx / NET:.6f} {cy / NET:.6f} {w / NET:.6f} {h / NET:.6f}\n"
        for ((cx, cy, w, h), _, _), c in zip(PLANTED, classes, strict=True)
    )


def make_dataset(root: Path, wrong_first: bool = False) -> Path:
    """Three images whose labels are exactly the planted boxes; with ``wrong_first`` the
    red box of the first image is labelled yellow."""
    rng = np.random.default_rng(1)
    for i, (w, h) in enumerate(IMAGE_SIZES):
        img = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        (root / "images" / "val").mkdir(parents=True, exist_ok=True)
        (root / "labels" / "val").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / "images" / "val" / f"im{i}.png"), img)
        classes = [c for _, c, _ in PLANTED]
        if wrong_first and i == 0:
            classes[0] = "yellow"
        (root / "labels" / "val" / f"im{i}.txt").write_text(label_lines(classes))
    names = "".join(f"  {i}: {n}\n" for i, n in enumerate(DATA_NAMES))
    y = root / "data.yaml"
    y.write_text(f"path: .\nval: images/val\nnames:\n{names}")
    return y


def make_models(
    folder: Path,
    names: list[str] = MODEL_NAMES,
    name: str = "hardhat",
    rename: dict[str, str] | None = None,
    **fields: Any,
) -> Path:
    """A planted model emitting :data:`PLANTED`; ``rename`` maps planted classes to other
    model class names (a planted class the model lacks gets score 0: not emitted)."""
    scores = [[0.0] * len(names) for _ in PLANTED]
    for j, (_, cls, s) in enumerate(PLANTED):
        cls = (rename or {}).get(cls, cls)
        if cls in names:
            scores[j][names.index(cls)] = s
    out = yolov8_output([b for b, _, _ in PLANTED], scores, num_anchors=32)
    model = planted_model({"output0": out}, input_size=(NET, NET))
    write_model_and_manifest(
        folder,
        model,
        name=name,
        family="yolov8",
        class_names=names,
        input_size=(NET, NET),
        letterbox=False,
        **fields,
    )
    return folder


def run_eval(*argv: str) -> int:
    """Parse like ``safety-edge`` does (the CLI registers the same sub-command)."""
    parser = argparse.ArgumentParser(prog="safety-edge")
    sub = parser.add_subparsers(dest="command", required=True)
    add_subcommands(sub)
    args = parser.parse_args(["eval", *argv])
    return int(args.func(args))


def read_report(out: Path, task: str = "hardhat") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((out / f"eval_{task}.json").read_text())
    return data


def per_class(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in report["per_class"]}


def test_perfect_model_scores_map_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = make_dataset(tmp_path / "data")
    models = make_models(tmp_path / "models")
    out = tmp_path / "out"
    rc = run_eval(
        "--task", "hardhat", "--data", str(data), "--models-dir", str(models), "--out", str(out)
    )
    assert rc == 0
    assert "mAP50 1.000" in capsys.readouterr().out
    r = read_report(out)
    s = r["summary"]
    assert s["map50"] == 1.0 and s["map50_95"] == pytest.approx(1.0, abs=1e-6)
    assert s["images"] == 3 and s["gt_boxes"] == 9
    assert s["precision_mean"] == 1.0 and s["recall_mean"] == 1.0
    # evaluated classes in data set order; blue/white are not predicted by the model
    assert [c["name"] for c in r["per_class"]] == ["none", "red", "yellow"]
    assert r["unevaluated_dataset_classes"] == ["blue", "white"]
    assert r["unmapped_model_classes"] == ["person"]
    assert r["class_map"] == {"none": "none", "red": "red", "yellow": "yellow"}
    assert all(c["gt"] == 3 and c["tp"] == 3 and c["fp"] == 0 for c in r["per_class"])
    assert r["confusion"]["labels"] == ["none", "red", "yellow", "background"]
    assert r["confusion"]["matrix"] == [[3, 0, 0, 0], [0, 3, 0, 0], [0, 0, 3, 0], [0, 0, 0, 0]]
    assert r["model"]["sha256_ok"] is True and len(r["model"]["sha256"]) == 64
    assert r["dataset"]["data_yaml"] == str(data.resolve())
    assert r["command"].startswith("safety-edge eval --task hardhat --data ")
    assert r["settings"]["map_score_threshold"] == 0.001
    # markdown report and samples (6 asked, 3 images)
    md = (out / "eval_hardhat.md").read_text()
    assert "| `red` | 1.000 | 1.000 | 1.000 | 1.000 | 3 | 3 | 0 | 0 |" in md
    assert "## Confusion matrix" in md and r["model"]["sha256"] in md
    samples = sorted((out / "samples").glob("*.jpg"))
    assert len(samples) == 3
    img = cv2.imread(str(samples[1]))
    assert img.shape == (480, 640, 3)  # drawn on the original image
    # the red (prediction) and green (ground truth) outlines are both there
    b, g, r_ = img[..., 0].astype(int), img[..., 1].astype(int), img[..., 2].astype(int)
    assert ((r_ > 200) & (g < 60) & (b < 60)).sum() > 100
    assert ((g > 150) & (r_ < 60) & (b < 60)).sum() > 100


def test_wrong_label_gives_hand_computed_values(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", wrong_first=True)
    models = make_models(tmp_path / "models")
    out = tmp_path / "out"
    args = ["--task", "hardhat", "--data", str(data), "--models-dir", str(models)]
    assert run_eval(*args, "--out", str(out), "--samples", "0") == 0
    r = read_report(out)
    pc = per_class(r)
    # none: 3 of 3, perfect
    assert pc["none"]["ap50"] == 1.0
    # red: 2 objects, detections (all 0.9, image order) FP TP TP: precision envelope 2/3
    assert pc["red"]["ap50"] == pytest.approx(2 / 3, abs=1e-6)
    assert (pc["red"]["tp"], pc["red"]["fp"], pc["red"]["gt"]) == (2, 1, 2)
    # yellow: 4 objects, 3 found with precision 1: recall points 0..0.75 -> 76/101
    assert pc["yellow"]["ap50"] == pytest.approx(76 / 101, abs=1e-6)
    assert pc["yellow"]["recall"] == 0.75 and pc["yellow"]["precision"] == 1.0
    assert r["summary"]["map50"] == pytest.approx((1 + 2 / 3 + 76 / 101) / 3, abs=1e-6)
    # the red box on a yellow-labelled hat: predicted red, true yellow
    assert r["confusion"]["matrix"] == [[3, 0, 0, 0], [0, 2, 1, 0], [0, 0, 3, 0], [0, 0, 0, 0]]
    assert not (out / "samples").exists()

    # above the yellow detections' score (0.3) they are gone from P/R and the matrix,
    # while AP (computed from the low-threshold run) is unchanged
    out2 = tmp_path / "out2"
    assert run_eval(*args, "--out", str(out2), "--score", "0.5", "--limit", "2") == 0
    r2 = read_report(out2)
    pc2 = per_class(r2)
    assert r2["summary"]["images"] == 2
    assert pc2["yellow"]["precision"] is None and pc2["yellow"]["recall"] == 0.0
    # AP of the first two images: yellow 3 objects, 2 found (recall points 0..0.66);
    # red: FP then TP on 1 object -> 1/2
    assert pc2["yellow"]["ap50"] == pytest.approx(67 / 101, abs=1e-6)
    assert pc2["red"]["ap50"] == pytest.approx(0.5, abs=1e-6)
    assert r2["confusion"]["matrix"][3] == [0, 0, 2, 0]  # two yellow hats missed
    assert "| `yellow` |" in (out2 / "eval_hardhat.md").read_text()

    # --classes restricts the evaluated set (as "mAP over wear/no_wear" needs)
    out3 = tmp_path / "out3"
    assert run_eval(*args, "--out", str(out3), "--classes", "red,yellow", "--samples", "0") == 0
    r3 = read_report(out3)
    assert [c["name"] for c in r3["per_class"]] == ["red", "yellow"]
    assert r3["summary"]["map50"] == pytest.approx((2 / 3 + 76 / 101) / 2, abs=1e-6)
    assert "--classes red,yellow" in r3["command"]
    assert len(list((out2 / "samples").glob("*.jpg"))) == 2


def test_class_mismatch_is_an_error_listing_both_sides(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    models = make_models(
        tmp_path / "models",
        names=["helmet", "head"],
        name="other",
        rename={"red": "helmet", "none": "head"},
    )
    with pytest.raises(EvalError) as err:
        run_eval(
            "--task", "hardhat", "--data", str(data), "--models-dir", str(models),
            "--model", "other", "--out", str(tmp_path / "out"),
        )  # fmt: skip
    msg = str(err.value)
    assert "['helmet', 'head']" in msg and "'yellow'" in msg and "--class-map" in msg
    assert err.value.code == 5000
    # an explicit map makes the same model usable
    rc = run_eval(
        "--task", "hardhat", "--data", str(data), "--models-dir", str(models),
        "--model", "other", "--class-map", "helmet=red,head=none", "--out", str(tmp_path / "o"),
    )  # fmt: skip
    assert rc == 0
    r = read_report(tmp_path / "o")
    assert r["class_map"] == {"head": "none", "helmet": "red"}
    # the planted red box comes as "helmet", the bare head as "head"; no yellow class
    assert per_class(r)["red"]["ap50"] == 1.0 and per_class(r)["none"]["ap50"] == 1.0
    assert r["unevaluated_dataset_classes"] == ["blue", "white", "yellow"]


def test_unknown_model_and_bad_data_are_edge_errors(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    models = make_models(tmp_path / "models")
    base = ["--data", str(data), "--models-dir", str(models), "--out", str(tmp_path / "o")]
    with pytest.raises(ModelError, match=r"model 'workwear' not found .*have: hardhat"):
        run_eval("--task", "workwear", *base)
    (tmp_path / "data" / "labels" / "val" / "im1.txt").write_text("9 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"im1.txt line 1: class id 9"):
        run_eval("--task", "hardhat", *base)
    with pytest.raises(EdgeError, match="no split 'test'"):
        run_eval("--task", "hardhat", *base[:-2], "--split", "test", "--out", str(tmp_path / "x"))
    with pytest.raises(SystemExit):
        run_eval("--task", "hardhat", *base, "--score", "1.5")


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--limit", "0", "argument --limit: 0 is not in 1..1000000000"),
        ("--limit", "-1", "argument --limit: -1 is not in 1..1000000000"),
        ("--samples", "-3", "argument --samples: -3 is not in 0..1000000000"),
        ("--threads", "0", "argument --threads: 0 is not in 1..256"),
        ("--threads", "many", "argument --threads: 'many' is not an integer"),
    ],
)
def test_counts_out_of_range_are_usage_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str, message: str
) -> None:
    """Before: ``--limit -1`` said 'no images to evaluate', ``--samples -3`` wrote none
    without a word, ``--threads -4`` ran with whatever onnxruntime made of it."""
    base = ["--data", str(tmp_path / "data.yaml"), "--out", str(tmp_path / "o")]
    with pytest.raises(SystemExit) as info:
        run_eval("--task", "hardhat", *base, option, value)
    assert info.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_score_defaults_to_the_models_operating_threshold(tmp_path: Path) -> None:
    """Without ``--score``, P/R and the matrix use the manifest's ``score_threshold`` (the
    threshold the API and cameras run at): at 0.5 the yellow detections (0.3) drop out."""
    data = make_dataset(tmp_path / "data")
    models = make_models(tmp_path / "models", score_threshold=0.5)
    base = ["--task", "hardhat", "--data", str(data), "--models-dir", str(models)]
    assert run_eval(*base, "--out", str(tmp_path / "a"), "--samples", "0") == 0
    r = read_report(tmp_path / "a")
    assert r["settings"]["score_threshold"] == 0.5 and "--score 0.5 " in r["command"]
    assert per_class(r)["yellow"]["precision"] is None
    assert run_eval(*base, "--out", str(tmp_path / "b"), "--samples", "0", "--score", "0.25") == 0
    assert per_class(read_report(tmp_path / "b"))["yellow"]["precision"] == 1.0


def test_several_data_sets_are_scored_as_one(tmp_path: Path) -> None:
    """``--data`` twice: both val splits in one evaluation (the workwear bar is over the
    workwear and vest sets together); the sets must share their classes and the split."""
    one = make_dataset(tmp_path / "one")
    two = make_dataset(tmp_path / "two", wrong_first=True)
    models = make_models(tmp_path / "models")
    base = ["--task", "hardhat", "--models-dir", str(models), "--samples", "0"]
    out = tmp_path / "out"
    assert run_eval(*base, "--data", str(one), "--data", str(two), "--out", str(out)) == 0
    r = read_report(out)
    assert r["summary"]["images"] == 6 and r["summary"]["gt_boxes"] == 18
    assert r["dataset"]["data_yamls"] == [str(one.resolve()), str(two.resolve())]
    assert r["command"].count("--data ") == 2
    # red over both: 5 objects (the second set's first red box is labelled yellow); six
    # detections at 0.9 in set then image order: TP TP TP FP TP TP. Precision 1 up to recall
    # 0.6, then the envelope is 5/6 (the last point) up to recall 1: 61 and 40 points.
    assert per_class(r)["red"]["ap50"] == pytest.approx((61 + 40 * 5 / 6) / 101, abs=1e-6)
    other = make_dataset(tmp_path / "other")
    (other).write_text(other.read_text().replace("4: yellow", "4: orange"))
    with pytest.raises(DatasetError, match="different classes"):
        run_eval(*base, "--data", str(one), "--data", str(other), "--out", str(out))
    no_val = tmp_path / "no_val.yaml"
    no_val.write_text(one.read_text().replace("val: images/val", "train: images/val"))
    no_val.write_text(no_val.read_text().replace("path: .", f"path: {tmp_path / 'one'}"))
    with pytest.raises(DatasetError, match="no split 'val'"):
        run_eval(*base, "--data", str(one), "--data", str(no_val), "--out", str(out))


def test_workwear_task_scores_the_wear_classes(tmp_path: Path) -> None:
    """``--task workwear`` evaluates the classes the workwear task reads (wear / no-wear),
    as the issue's bar does, unless ``--classes`` says otherwise."""
    data = make_dataset(tmp_path / "data")
    data.write_text(
        data.read_text().replace("0: none", "0: wear").replace("4: yellow", "4: no_wear")
    )
    models = make_models(
        tmp_path / "models",
        names=["person", "no_wear", "red", "wear"],
        name="workwear",
        rename={"none": "wear", "yellow": "no_wear"},
    )
    base = [
        "--task",
        "workwear",
        "--data",
        str(data),
        "--models-dir",
        str(models),
        "--samples",
        "0",
    ]
    assert run_eval(*base, "--out", str(tmp_path / "a")) == 0
    r = read_report(tmp_path / "a", "workwear")
    assert [c["name"] for c in r["per_class"]] == ["wear", "no_wear"]
    assert r["command"].endswith("--classes wear,no_wear")
    assert run_eval(*base, "--out", str(tmp_path / "b"), "--classes", "wear,red,no_wear") == 0
    assert [c["name"] for c in read_report(tmp_path / "b", "workwear")["per_class"]] == [
        "wear",
        "red",
        "no_wear",
    ]
    hats = make_dataset(tmp_path / "hats")
    with pytest.raises(EvalError, match="no wear / no-wear class"):
        run_eval(*base[:2], "--data", str(hats), *base[4:], "--out", str(tmp_path / "c"))


def test_map_classes_rules() -> None:
    m = map_classes(["Person", " RED ", "none"], ["none", "red", "blue"])
    assert m.pairs == (("none", "none"), (" RED ", "red"))
    assert m.model_to_eval.tolist() == [-1, 1, 0]
    assert m.data_to_eval.tolist() == [0, 1, -1]
    assert m.unmapped_model == ("Person",) and m.unevaluated_data == ("blue",)
    with pytest.raises(EvalError, match="several model classes"):
        map_classes(["red", "r"], ["red"], {"r": "red"})
    with pytest.raises(EvalError, match="has no class 'x'"):
        map_classes(["red"], ["red"], {"x": "red"})
    only = map_classes(["Person", "red", "none"], ["none", "red", "blue"], only=["red"])
    assert only.pairs == (("red", "red"),) and only.unevaluated_data == ("none", "blue")
    assert only.unmapped_model == ("Person", "none")
    with pytest.raises(EvalError, match=r"predicts no class for \['blue'\]"):
        map_classes(["red"], ["red", "blue"], only=["blue"])
    with pytest.raises(EvalError, match=r"has no class \['pink'\]"):
        map_classes(["red"], ["red"], only=["pink"])
    assert parse_class_map(" a = b ,c=d") == {"a": "b", "c": "d"}
    with pytest.raises(EvalError, match="MODEL_CLASS=DATA_CLASS"):
        parse_class_map("a=b,c")


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_only_on_a_terminal() -> None:
    tty = _Tty()
    bar = Progress(label="eval", stream=tty)
    for i in range(1, 4):
        bar.update(i, 3)
    bar.close()
    bar.close()
    text = tty.getvalue()
    assert text.startswith("\reval 1/3 [") and "\reval 3/3 [" in text
    assert text.endswith("\n") and text.count("\n") == 1
    pipe = io.StringIO()
    quiet = Progress(label="eval", stream=pipe)
    quiet.update(1, 1)
    quiet.close()
    assert pipe.getvalue() == ""
