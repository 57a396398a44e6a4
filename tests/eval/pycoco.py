"""AP by the reference implementation, pycocotools' ``COCOeval``, for cross-checks.

The harness (:mod:`edge.eval.metrics`) re-implements COCO's matching and 101-point AP in
numpy; these helpers feed the same boxes to the real ``COCOeval`` so tests can compare the
two. Settings match the harness's documented conventions: one area range covering every
box, no crowd boxes and no ``maxDets`` cap.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class CocoImage:
    """One image: ``gt`` (G, 4) / ``gt_cls`` (G,) and ``pred`` (P, 4) / ``scores`` (P,) /
    ``cls`` (P,); boxes ``xyxy`` pixels, class ids in ``[0, C)``."""

    gt: npt.ArrayLike
    gt_cls: npt.ArrayLike
    pred: npt.ArrayLike
    scores: npt.ArrayLike
    cls: npt.ArrayLike


def _coco(
    images: list[dict[str, int]], cats: list[dict[str, int]], anns: list[dict[str, Any]]
) -> COCO:
    c = COCO()
    c.dataset = {"images": images, "categories": cats, "annotations": anns}
    with contextlib.redirect_stdout(io.StringIO()):
        c.createIndex()
    return c


def _anns(
    boxes: npt.ArrayLike, classes: npt.ArrayLike, image_id: int, first_id: int
) -> list[dict[str, Any]]:
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    k = np.asarray(classes, dtype=np.int64).reshape(-1)
    out = []
    for i, (box, c) in enumerate(zip(b, k, strict=True)):
        w, h = float(box[2] - box[0]), float(box[3] - box[1])
        out.append(
            {
                # ids start at 1: COCOeval takes a matched id of 0 for "unmatched"
                "id": first_id + i,
                "image_id": image_id,
                "category_id": int(c) + 1,
                "bbox": [float(box[0]), float(box[1]), w, h],
                "area": w * h,
                "iscrowd": 0,
            }
        )
    return out


def coco_ap(images: Sequence[CocoImage], num_classes: int) -> F64:
    """``(C, 10)`` AP per class at IoU 0.50, 0.55, ..., 0.95 from ``COCOeval``'s
    precision array (the mean of its 101 recall samples, as ``summarize`` does); ``NaN``
    for a class without ground truth (COCO's -1)."""
    imgs = [{"id": i + 1} for i in range(len(images))]
    cats = [{"id": k + 1} for k in range(num_classes)]
    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    for i, im in enumerate(images):
        gts += _anns(im.gt, im.gt_cls, i + 1, len(gts) + 1)
        new = _anns(im.pred, im.cls, i + 1, len(dts) + 1)
        for d, s in zip(new, np.asarray(im.scores, dtype=np.float64).reshape(-1), strict=True):
            d["score"] = float(s)
        dts += new
    ev = COCOeval(_coco(imgs, cats, gts), _coco(imgs, cats, dts), iouType="bbox")
    ev.params.areaRng = [[0.0, 1e12]]
    ev.params.areaRngLbl = ["all"]
    ev.params.maxDets = [10**9]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    precision = ev.eval["precision"][:, :, :, 0, 0]  # (T, R, K)
    ap = np.full((num_classes, precision.shape[0]), np.nan)
    for k in range(num_classes):
        p = precision[:, :, k]
        if (p > -1).all():
            ap[k] = p.mean(axis=1)
    return ap
