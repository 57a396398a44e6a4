"""Measure the two-stage design against the single-stage detector (model card numbers).

The issue allows two designs: one detector that finds heads / torsos with their class
(what ships), or a person detector followed by a classifier on a head / torso crop. A
crop classifier can only be as good as the boxes it is given, so this script measures
the *localisation* each design reaches, class-agnostic, on the val split:

* ``two-stage``: the COCO person detector (``models/person_vehicle``), each person box
  mapped to a head (hardhat) or torso (workwear) box by fixed ratios of the person box,
  fitted as medians on the train split (the person box must contain >= 80 % of a
  labelled box); scores are the person scores.
* ``single-stage``: the shipped model's boxes with their classes merged (class-agnostic
  NMS at IoU 0.5), i.e. the ceiling a perfect crop classifier could reach on them.
* ``single-stage per class``: the shipped model as it is (mean AP over the classes).

AP is COCO 101-point (``edge.eval.metrics``), IoU 0.5 and 0.5:0.95. Run from the
repository root (needs ``../shared/data`` and the built models)::

    python -m tools.compare_two_stage --task workwear --out var/eval/two_stage_workwear.json
    python -m tools.compare_two_stage --task hardhat --out var/eval/two_stage_hardhat.json
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"


@dataclass(frozen=True)
class Setup:
    roots: tuple[str, ...]
    classes: tuple[str, ...]  # data set classes that are the localised part (head/torso)
    model: str
    part: str


SETUPS = {
    "hardhat": Setup(("hardhat",), ("none", "red", "blue", "white", "yellow"), "hardhat", "head"),
    "workwear": Setup(("workwear", "vest"), ("wear", "no_wear"), "workwear", "torso"),
}


def _images(roots: list[Path], split: str, limit: int) -> list[Path]:
    imgs = sorted(p for r in roots for p in (r / "images" / split).glob("*.jpg"))
    if limit and len(imgs) > limit:
        imgs = imgs[:: len(imgs) // limit][:limit]
    return imgs


def _truth(path: Path, ids: np.ndarray, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    from edge.eval.dataset import label_path_for, read_labels

    lab = read_labels(label_path_for(path))
    keep = np.isin(lab.class_ids, ids)
    return lab.xyxy(w, h)[keep].reshape(-1, 4), lab.class_ids[keep]


def _contained(g: np.ndarray, b: np.ndarray) -> float:
    iw = max(0.0, min(g[2], b[2]) - max(g[0], b[0]))
    ih = max(0.0, min(g[3], b[3]) - max(g[1], b[1]))
    return float(iw * ih / max(1e-9, (g[2] - g[0]) * (g[3] - g[1])))


def fit_ratios(person: Any, roots: list[Path], ids: np.ndarray, limit: int) -> np.ndarray:
    """Median (x1, y1, x2, y2) of the labelled part relative to the person box (train)."""
    from edge.cli import read_image

    rel = []
    for p in _images(roots, "train", limit):
        im = read_image(p)
        gt, _ = _truth(p, ids, im.shape[1], im.shape[0])
        if not len(gt):
            continue
        d = person.detect(im, score_threshold=0.4, classes=["person"])
        for b in d.xyxy:
            bw, bh = b[2] - b[0], b[3] - b[1]
            g = max(gt, key=lambda t: _contained(t, b))
            if _contained(g, b) > 0.8:
                rel.append(
                    [(g[0] - b[0]) / bw, (g[1] - b[1]) / bh, (g[2] - b[0]) / bw, (g[3] - b[1]) / bh]
                )
    if not rel:
        raise SystemExit("no person box contains a labelled part on the train split")
    return np.median(np.asarray(rel), axis=0)


def _apply(boxes: np.ndarray, r: np.ndarray) -> np.ndarray:
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    x, y = boxes[:, :1], boxes[:, 1:2]
    return np.concatenate([x + r[0] * w, y + r[1] * h, x + r[2] * w, y + r[3] * h], 1)


def _agnostic_nms(boxes: np.ndarray, scores: np.ndarray) -> np.ndarray:
    from edge.kernels.nms import nms

    return np.asarray(nms(boxes, scores, iou_threshold=0.5), dtype=np.int64)


def measure(task: str, limit_train: int) -> dict[str, Any]:
    from edge.cli import read_image
    from edge.eval.metrics import DetectionEvaluator
    from edge.runtime.detector import Detector

    s = SETUPS[task]
    roots = [DATA / r for r in s.roots]
    person = Detector.from_name("person_vehicle", REPO / "models")
    model = Detector.from_name(s.model, REPO / "models")
    data_names = list(s.classes)
    ids = model.class_ids_for(data_names)  # model class order == data set order (ascending)
    ratios = fit_ratios(person, roots, ids, limit_train)

    two = DetectionEvaluator(class_names=[s.part])
    agn = DetectionEvaluator(class_names=[s.part])
    per = DetectionEvaluator(class_names=data_names)
    n = 0
    for p in _images(roots, "val", 0):
        im = read_image(p)
        gt, gc = _truth(p, ids, im.shape[1], im.shape[0])
        zeros = np.zeros(len(gt), np.int64)
        d = person.detect(im, score_threshold=0.001, classes=["person"])
        pb = _apply(d.xyxy.astype(np.float64), ratios) if len(d.scores) else d.xyxy
        two.add_image(
            gt_xyxy=gt, gt_class_ids=zeros, pred_xyxy=pb, pred_scores=d.scores,
            pred_class_ids=np.zeros(len(d.scores), np.int64),
        )  # fmt: skip
        m = model.detect(im, score_threshold=0.001)
        sel = np.isin(m.class_ids, ids)
        mb, ms, mc = m.xyxy[sel], m.scores[sel], m.class_ids[sel]
        per.add_image(
            gt_xyxy=gt,
            gt_class_ids=np.searchsorted(ids, gc),
            pred_xyxy=mb,
            pred_scores=ms,
            pred_class_ids=np.searchsorted(ids, mc),
        )
        keep = _agnostic_nms(mb, ms) if len(ms) else np.zeros(0, np.int64)
        agn.add_image(
            gt_xyxy=gt, gt_class_ids=zeros, pred_xyxy=mb[keep], pred_scores=ms[keep],
            pred_class_ids=np.zeros(len(keep), np.int64),
        )  # fmt: skip
        n += 1

    def ap(ev: Any) -> dict[str, float]:
        mt = ev.compute()
        return {
            "ap50": round(float(np.nanmean(mt.ap[:, 0])), 4),
            "ap50_95": round(float(np.nanmean(mt.ap)), 4),
        }

    return {
        "task": task,
        "val_images": n,
        "part": s.part,
        "ratios_x1y1x2y2_of_person_box": [round(float(v), 3) for v in ratios],
        "two_stage_person_then_part_class_agnostic": ap(two),
        "single_stage_class_agnostic": ap(agn),
        "single_stage_per_class_mean": ap(per),
        "model": s.model,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=sorted(SETUPS), required=True)
    ap.add_argument("--limit-train", type=int, default=500, help="train images for the fit")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not DATA.is_dir():
        raise SystemExit(f"{DATA} not found: this measurement needs ../shared/data")
    res = measure(args.task, args.limit_train)
    text = json.dumps(res, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(REPO))
    sys.exit(main())
