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
from typing import Any

import numpy as np
import numpy.typing as npt
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from edge.eval.commands import ImageScores

F64 = npt.NDArray[np.float64]


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


def coco_precision(images: Sequence[ImageScores], num_classes: int) -> F64:
    """``COCOeval``'s interpolated precision, ``(T, 101, C)``: IoU thresholds 0.50, ...,
    0.95, recall points 0, 0.01, ..., 1, classes; -1 for a class without ground truth."""
    imgs = [{"id": i + 1} for i in range(len(images))]
    cats = [{"id": k + 1} for k in range(num_classes)]
    gts: list[dict[str, Any]] = []
    dts: list[dict[str, Any]] = []
    for i, im in enumerate(images):
        gts += _anns(im.gt_xyxy, im.gt_class_ids, i + 1, len(gts) + 1)
        new = _anns(im.pred_xyxy, im.pred_class_ids, i + 1, len(dts) + 1)
        for d, s in zip(new, np.asarray(im.pred_scores, dtype=np.float64).reshape(-1), strict=True):
            d["score"] = float(s)
        dts += new
    ev = COCOeval(_coco(imgs, cats, gts), _coco(imgs, cats, dts), iouType="bbox")
    ev.params.areaRng = [[0.0, 1e12]]
    ev.params.areaRngLbl = ["all"]
    ev.params.maxDets = [10**9]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return np.asarray(ev.eval["precision"][:, :, :, 0, 0], dtype=np.float64)


def coco_ap(images: Sequence[ImageScores], num_classes: int) -> F64:
    """``(C, 10)`` AP per class at IoU 0.50, 0.55, ..., 0.95: the mean of
    :func:`coco_precision`'s 101 recall samples, as ``summarize`` takes it; ``NaN`` for a
    class without ground truth (COCO's -1)."""
    return ap_from_precision(coco_precision(images, num_classes))


def ap_from_precision(precision: F64) -> F64:
    """``(C, T)`` AP from a ``(T, 101, C)`` :func:`coco_precision` array."""
    ap = np.full((precision.shape[2], precision.shape[0]), np.nan)
    for k in range(precision.shape[2]):
        p = precision[:, :, k]
        if (p > -1).all():
            ap[k] = p.mean(axis=1)
    return ap


def recall_points_at_precision(precision: F64, min_precision: float) -> F64:
    """``(C,)`` the highest of COCO's recall points (0, 0.01, ..., 1) whose interpolated
    precision at IoU 0.5 is at least ``min_precision`` (-1 when none is)."""
    q = precision[0]  # (101, C)
    points = np.linspace(0.0, 1.0, 101)
    out = np.full(q.shape[1], -1.0)
    for k in range(q.shape[1]):
        hit = np.flatnonzero(q[:, k] >= min_precision)
        if hit.size:
            out[k] = points[hit.max()]
    return out


def tied_classes(images: Sequence[ImageScores], num_classes: int) -> npt.NDArray[np.bool_]:
    """``(C,)`` whether two detections of a class (over all images) share a score."""
    scores = np.concatenate(
        [np.asarray(im.pred_scores, dtype=np.float64).reshape(-1) for im in images] or [np.zeros(0)]
    )
    classes = np.concatenate(
        [np.asarray(im.pred_class_ids, dtype=np.int64).reshape(-1) for im in images]
        or [np.zeros(0, int)]
    )
    return np.array(
        [np.unique(scores[classes == k]).size < (classes == k).sum() for k in range(num_classes)]
    )


def check_recall_at_precision(
    images: Sequence[ImageScores],
    precision: F64,
    recall: npt.ArrayLike,
    score: npt.ArrayLike,
    min_precision: float,
) -> None:
    """Assert the harness's recall at precision >= ``min_precision`` (``recall`` (C,), and
    ``score`` (C,), ``NaN`` where no point qualifies) agrees with COCO's interpolated curve
    at IoU 0.5 (``precision`` from :func:`coco_precision` on ``images``).

    The interpolated precision at a recall point reaches ``min_precision`` exactly when some
    raw point at that recall or beyond does, so COCO's highest such point is the largest of
    0, 0.01, ..., 1 not above the highest qualifying raw recall. COCO's raw curve has a
    point per detection; the harness's only per distinct score (a threshold keeps or drops
    tied detections together), so for a class with tied scores COCO may reach further."""
    r = np.asarray(recall, dtype=np.float64).reshape(-1)
    s = np.asarray(score, dtype=np.float64).reshape(-1)
    got = recall_points_at_precision(precision, min_precision)
    ties = tied_classes(images, r.size)
    points = np.linspace(0.0, 1.0, 101)
    for k in range(r.size):
        if (precision[:, :, k] == -1).all():  # no ground truth for this class
            continue
        if np.isnan(s[k]):
            assert ties[k] or got[k] == -1.0, (k, got[k])
            continue
        want = points[points <= r[k] + 1e-9].max()
        assert got[k] >= want if ties[k] else got[k] == want, (k, r[k], got[k], want)
