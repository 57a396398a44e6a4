"""Detection metrics: COCO-style AP / mAP, precision and recall at an operating threshold,
and an Ultralytics-style confusion matrix. Pure numpy, no I/O.

Conventions (what each number means)
------------------------------------

Boxes are ``xyxy`` pixels; IoU is area of intersection over area of union with no ``+1``
(as COCO's ``maskUtils.iou`` for boxes). A degenerate box (zero area) has IoU 0 with all.

**Matching** (COCO ``evaluateImg``), separately for every image, class and IoU threshold
``t``: detections are sorted by descending score (stable), and each in turn takes the
still-unmatched ground-truth box of its class with the highest IoU, provided that IoU is
``>= t``; when several unmatched boxes tie for the highest IoU, the last one in label order
wins (as COCO's loop does). A matched detection is a true positive (TP), an unmatched one a
false positive (FP); a second detection of an already-matched object is therefore an FP.
Differences from pycocotools: no area ranges, no ``iscrowd``/ignore flags, and no
``maxDets`` cap (the detector's own ``max_detections`` applies).

**AP** (COCO ``accumulate``) per class and IoU threshold: all detections of the class over
all images are sorted by descending score (stable merge sort, images in the order they
were added); cumulative TP and FP give recall ``TP / n_gt`` and precision
``TP / (TP + FP)``; precision is made monotone (each point takes the maximum precision at
any higher recall); it is then sampled at the 101 recall points ``0, 0.01, ..., 1``
(for each point the first operating point whose recall reaches it, 0 when none does) and
averaged. ``AP50`` uses ``t = 0.5``; ``AP50-95`` averages the ten thresholds
``0.50, 0.55, ..., 0.95``. A class with no ground-truth box has AP ``NaN`` (COCO writes
-1) and is left out of the means ``mAP50`` / ``mAP50-95``.

**Precision / recall at the operating threshold**: only detections with
``score >= score_threshold``, matched as above at ``match_iou`` (0.5 by default).
Because greedy matching visits detections in descending score order, the matches of the
detections above a threshold do not depend on the ones below it, so one detector run at a
low threshold serves both AP and P/R. Precision is ``NaN`` when the class has no detection
above the threshold; recall is ``NaN`` when it has no ground truth.

**Recall at a minimum precision**: the highest recall among the operating points of the
(un-interpolated) PR curve at ``match_iou`` whose precision is ``>= min_precision``, with
the score threshold that reaches it (0 and ``NaN`` when no point qualifies).

**Confusion matrix** (Ultralytics ``ConfusionMatrix.process_batch`` convention):
``matrix[predicted, true]`` of shape ``(C + 1, C + 1)``; index ``C`` is *background*.
Detections with ``score >= score_threshold`` are matched to ground truth *class-agnostically*
per image: all pairs with IoU ``>= match_iou`` are sorted by descending IoU, each detection
keeps its best pair, then each ground-truth box keeps its best remaining pair. A matched pair
adds 1 to ``[det_class, gt_class]`` (diagonal = correct class, off-diagonal = class mix-up);
an unmatched ground-truth box adds 1 to ``[C, gt_class]`` (missed, "background" row); an
unmatched detection adds 1 to ``[det_class, C]`` (false alarm, "background" column). Unlike
Ultralytics the comparisons are inclusive (``>=``) and unmatched detections are counted
even in images where nothing matched. Because matching ignores the class here, the diagonal
can differ slightly from the per-class TP counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "COCO_IOU_THRESHOLDS",
    "RECALL_POINTS",
    "DetectionEvaluator",
    "DetectionMetrics",
    "average_precision_101",
    "box_iou",
    "confusion_matrix_image",
    "match_detections",
    "recall_at_precision",
]

F64Array = npt.NDArray[np.float64]
I64Array = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

COCO_IOU_THRESHOLDS: F64Array = np.linspace(0.5, 0.95, 10)
"""(10,) float64, the COCO IoU thresholds 0.50, 0.55, ..., 0.95."""

RECALL_POINTS: F64Array = np.linspace(0.0, 1.0, 101)
"""(101,) float64, the COCO recall sampling points 0, 0.01, ..., 1."""


def _boxes(a: npt.ArrayLike, name: str) -> F64Array:
    arr = np.asarray(a, dtype=np.float64)
    if arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"{name} must have shape (N, 4), got {arr.shape}")
    return arr


def box_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> F64Array:
    """Pairwise IoU.

    Args:
        a: (N, 4) boxes ``xyxy``.
        b: (M, 4) boxes ``xyxy``.

    Returns:
        (N, M) float64 IoU in [0, 1]; 0 where the union is empty.
    """
    a64 = _boxes(a, "a")
    b64 = _boxes(b, "b")
    area_a = np.clip(a64[:, 2] - a64[:, 0], 0, None) * np.clip(a64[:, 3] - a64[:, 1], 0, None)
    area_b = np.clip(b64[:, 2] - b64[:, 0], 0, None) * np.clip(b64[:, 3] - b64[:, 1], 0, None)
    lt = np.maximum(a64[:, None, :2], b64[None, :, :2])
    rb = np.minimum(a64[:, None, 2:], b64[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = np.where(union > 0, inter / union, 0.0)
    return np.asarray(iou, dtype=np.float64)


def match_detections(
    pred_xyxy: npt.ArrayLike,
    pred_scores: npt.ArrayLike,
    gt_xyxy: npt.ArrayLike,
    iou_thresholds: npt.ArrayLike = COCO_IOU_THRESHOLDS,
) -> BoolArray:
    """COCO greedy matching of one image's detections of **one class** to its ground truth.

    Args:
        pred_xyxy: (P, 4) detection boxes.
        pred_scores: (P,) scores.
        gt_xyxy: (G, 4) ground-truth boxes of the same class.
        iou_thresholds: (T,) IoU thresholds.

    Returns:
        (P, T) bool, ``True`` where detection ``p`` (in the *input* order) is a true
        positive at threshold ``t``. See the module docstring for the rule.
    """
    pred = _boxes(pred_xyxy, "pred_xyxy")
    scores = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
    gt = _boxes(gt_xyxy, "gt_xyxy")
    thr = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
    if scores.shape[0] != pred.shape[0]:
        raise ValueError(f"{pred.shape[0]} boxes but {scores.shape[0]} scores")
    n_pred, n_gt, n_thr = pred.shape[0], gt.shape[0], thr.shape[0]
    tp = np.zeros((n_pred, n_thr), dtype=bool)
    if n_pred == 0 or n_gt == 0 or n_thr == 0:
        return tp
    order = np.argsort(-scores, kind="mergesort")
    iou = box_iou(pred[order], gt)  # (P, G) in score order
    # A detection whose best IoU is below every threshold is an FP everywhere; matching
    # only ever removes candidates, so it can be skipped without changing anyone else.
    thr_min = min(float(thr.min()), 1.0 - 1e-10)
    candidates = np.flatnonzero(iou.max(axis=1) >= thr_min)
    if candidates.size == 0:
        return tp
    thr_eff = np.minimum(thr, 1.0 - 1e-10)  # COCO's cap, so t = 1 can still match
    matched = np.zeros((n_thr, n_gt), dtype=bool)
    rows = np.arange(n_thr)
    tp_sorted = np.zeros((n_pred, n_thr), dtype=bool)
    for i in candidates:
        cand = np.where(matched, -1.0, iou[i][None, :])  # (T, G)
        best = n_gt - 1 - np.argmax(cand[:, ::-1], axis=1)  # last index among ties (COCO)
        best_iou = cand[rows, best]
        ok = best_iou >= thr_eff
        tp_sorted[i] = ok
        matched[rows[ok], best[ok]] = True
    tp[order] = tp_sorted
    return tp


def _pr_curve(tp: BoolArray, scores: F64Array, n_gt: int) -> tuple[F64Array, F64Array, F64Array]:
    """Sorted PR curve: (P, T) recall, (P, T) precision, (P,) sorted scores."""
    order = np.argsort(-scores, kind="mergesort")
    tps = tp[order]
    tpc = np.cumsum(tps, axis=0, dtype=np.float64)
    fpc = np.cumsum(~tps, axis=0, dtype=np.float64)
    recall = tpc / n_gt if n_gt > 0 else np.full_like(tpc, np.nan)
    precision = tpc / (tpc + fpc)  # >= 1 detection per row: no 0/0
    return recall, precision, scores[order]


def average_precision_101(tp: npt.ArrayLike, scores: npt.ArrayLike, n_gt: int) -> F64Array:
    """COCO 101-point interpolated AP of one class, for every IoU threshold at once.

    Args:
        tp: (P,) or (P, T) bool, true-positive flags of all detections of the class (all
            images), as from :func:`match_detections`.
        scores: (P,) detection scores.
        n_gt: number of ground-truth boxes of the class.

    Returns:
        (T,) float64 AP (a (1,) array for 1-D ``tp``); ``NaN`` when ``n_gt == 0``; 0 when
        there are ground-truth boxes but no detections.
    """
    tp_arr = np.asarray(tp, dtype=bool)
    if tp_arr.ndim == 1:
        tp_arr = tp_arr[:, None]
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape[0] != tp_arr.shape[0]:
        raise ValueError(f"{tp_arr.shape[0]} tp rows but {s.shape[0]} scores")
    n_thr = tp_arr.shape[1]
    if n_gt <= 0:
        return np.full(n_thr, np.nan)
    if tp_arr.shape[0] == 0:
        return np.zeros(n_thr)
    recall, precision, _ = _pr_curve(tp_arr, s, n_gt)
    # monotone precision envelope: max over this and every later (higher-recall) point
    envelope = np.maximum.accumulate(precision[::-1], axis=0)[::-1]
    ap = np.empty(n_thr)
    n = recall.shape[0]
    for t in range(n_thr):
        idx = np.searchsorted(recall[:, t], RECALL_POINTS, side="left")
        q = np.where(idx < n, envelope[np.minimum(idx, n - 1), t], 0.0)
        ap[t] = q.mean()
    return ap


def recall_at_precision(
    tp: npt.ArrayLike, scores: npt.ArrayLike, n_gt: int, min_precision: float
) -> tuple[float, float]:
    """Best recall with precision ``>= min_precision`` on the raw PR curve of one class.

    Operating points are score cut-offs: each distinct score ``s`` keeps the detections
    with ``score >= s`` (ties are kept or dropped together).

    Args:
        tp: (P,) bool true-positive flags at one IoU threshold.
        scores: (P,) scores.
        n_gt: ground-truth count of the class.
        min_precision: the precision floor in [0, 1].

    Returns:
        ``(recall, score_threshold)``: ``(NaN, NaN)`` when ``n_gt == 0``; ``(0.0, NaN)``
        when no operating point reaches the floor.
    """
    tp_arr = np.asarray(tp, dtype=bool).reshape(-1, 1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if n_gt <= 0:
        return float("nan"), float("nan")
    if tp_arr.shape[0] == 0:
        return 0.0, float("nan")
    recall, precision, s_sorted = _pr_curve(tp_arr, s, n_gt)
    # operating points = last index of each run of equal scores
    last = np.append(s_sorted[1:] != s_sorted[:-1], True)
    rec, prec, thr = recall[last, 0], precision[last, 0], s_sorted[last]
    ok = prec >= min_precision
    if not ok.any():
        return 0.0, float("nan")
    i = int(np.flatnonzero(ok)[np.argmax(rec[ok])])
    return float(rec[i]), float(thr[i])


def confusion_matrix_image(
    pred_xyxy: npt.ArrayLike,
    pred_class_ids: npt.ArrayLike,
    gt_xyxy: npt.ArrayLike,
    gt_class_ids: npt.ArrayLike,
    num_classes: int,
    match_iou: float = 0.5,
) -> I64Array:
    """One image's confusion matrix (detections already filtered by score).

    Args:
        pred_xyxy: (P, 4) detection boxes.
        pred_class_ids: (P,) int class ids in ``[0, num_classes)``.
        gt_xyxy: (G, 4) ground-truth boxes.
        gt_class_ids: (G,) int class ids in ``[0, num_classes)``.
        num_classes: C.
        match_iou: IoU needed for a pair (inclusive).

    Returns:
        (C + 1, C + 1) int64 ``matrix[predicted, true]``, index C = background; see the
        module docstring for the convention.
    """
    pred = _boxes(pred_xyxy, "pred_xyxy")
    gt = _boxes(gt_xyxy, "gt_xyxy")
    pc = np.asarray(pred_class_ids, dtype=np.int64).reshape(-1)
    gc = np.asarray(gt_class_ids, dtype=np.int64).reshape(-1)
    c = int(num_classes)
    m = np.zeros((c + 1, c + 1), dtype=np.int64)
    iou = box_iou(gt, pred)  # (G, P)
    gi, pi = np.nonzero(iou >= match_iou)
    if gi.size:
        v = iou[gi, pi]
        o = np.argsort(-v, kind="stable")
        gi, pi, v = gi[o], pi[o], v[o]
        _, first = np.unique(pi, return_index=True)  # best pair per detection
        gi, pi, v = gi[first], pi[first], v[first]
        o = np.argsort(-v, kind="stable")
        gi, pi = gi[o], pi[o]
        _, first = np.unique(gi, return_index=True)  # then best pair per ground truth
        gi, pi = gi[first], pi[first]
    np.add.at(m, (pc[pi], gc[gi]), 1)
    gt_free = np.ones(gc.shape[0], dtype=bool)
    gt_free[gi] = False
    np.add.at(m, (np.full(int(gt_free.sum()), c), gc[gt_free]), 1)
    pred_free = np.ones(pc.shape[0], dtype=bool)
    pred_free[pi] = False
    np.add.at(m, (pc[pred_free], np.full(int(pred_free.sum()), c)), 1)
    return m


@dataclass(frozen=True)
class DetectionMetrics:
    """Results of :meth:`DetectionEvaluator.compute`; arrays are indexed by class id.

    Attributes:
        class_names: C names.
        iou_thresholds: (T,) the AP thresholds (COCO's ten by default).
        ap: (C, T) float64 AP per class and threshold; ``NaN`` rows for classes without
            ground truth.
        n_gt: (C,) int64 ground-truth boxes per class.
        n_images: images evaluated.
        score_threshold, match_iou: the operating point of the next fields.
        tp, fp: (C,) int64 true / false positives at the operating point.
        precision, recall: (C,) float64 at the operating point (``NaN`` when undefined).
        min_precision: floor used for ``recall_at_min_precision``.
        recall_at_min_precision, score_at_min_precision: (C,) float64, see
            :func:`recall_at_precision`.
        confusion: (C + 1, C + 1) int64 ``[predicted, true]``, index C = background.
    """

    class_names: tuple[str, ...]
    iou_thresholds: F64Array
    ap: F64Array
    n_gt: I64Array
    n_images: int
    score_threshold: float
    match_iou: float
    tp: I64Array
    fp: I64Array
    precision: F64Array
    recall: F64Array
    min_precision: float
    recall_at_min_precision: F64Array
    score_at_min_precision: F64Array
    confusion: I64Array

    def _ap_at(self, iou: float) -> F64Array:
        hit = np.flatnonzero(np.isclose(self.iou_thresholds, iou))
        if hit.size == 0:
            raise ValueError(f"IoU {iou} is not one of {self.iou_thresholds.tolist()}")
        return np.asarray(self.ap[:, int(hit[0])], dtype=np.float64)

    @property
    def ap50(self) -> F64Array:
        """(C,) AP at IoU 0.5."""
        return self._ap_at(0.5)

    @property
    def ap50_95(self) -> F64Array:
        """(C,) AP averaged over all thresholds (0.50:0.05:0.95 by default)."""
        out = np.full(self.ap.shape[0], np.nan)
        rows = ~np.isnan(self.ap).any(axis=1)
        out[rows] = self.ap[rows].mean(axis=1)
        return out

    @property
    def evaluated(self) -> BoolArray:
        """(C,) classes with at least one ground-truth box (the ones in the means)."""
        return np.asarray(self.n_gt > 0)

    @property
    def map50(self) -> float:
        """Mean AP50 over classes with ground truth (``NaN`` when there are none)."""
        return _nanmean(self.ap50)

    @property
    def map50_95(self) -> float:
        """Mean AP50-95 over classes with ground truth (``NaN`` when there are none)."""
        return _nanmean(self.ap50_95)

    @property
    def mean_precision(self) -> float:
        """Mean of the defined per-class precisions at the operating point."""
        return _nanmean(self.precision)

    @property
    def mean_recall(self) -> float:
        """Mean of the defined per-class recalls at the operating point."""
        return _nanmean(self.recall)


def _nanmean(a: F64Array) -> float:
    v = a[~np.isnan(a)]
    return float(v.mean()) if v.size else float("nan")


class DetectionEvaluator:
    """Accumulates images, then computes :class:`DetectionMetrics`.

    Args:
        class_names: the C class names; class ids index this.
        score_threshold: operating score threshold for P/R and the confusion matrix
            (inclusive).
        match_iou: IoU for P/R and the confusion matrix (inclusive).
        iou_thresholds: AP thresholds (default COCO's ten).
        min_precision: floor for :func:`recall_at_precision` (default 0.8).

    Not thread-safe. Detections should come from a low score threshold (e.g. 0.001) so the
    PR curve is complete; the operating threshold is applied here.
    """

    def __init__(
        self,
        *,
        class_names: Sequence[str],
        score_threshold: float = 0.25,
        match_iou: float = 0.5,
        iou_thresholds: npt.ArrayLike = COCO_IOU_THRESHOLDS,
        min_precision: float = 0.8,
    ) -> None:
        if not class_names:
            raise ValueError("need at least one class")
        if not 0.0 <= score_threshold <= 1.0 or not 0.0 < match_iou <= 1.0:
            raise ValueError("score_threshold must be in [0, 1] and match_iou in (0, 1]")
        self._names = tuple(class_names)
        self._score = float(score_threshold)
        self._match_iou = float(match_iou)
        self._min_precision = float(min_precision)
        thr = np.asarray(iou_thresholds, dtype=np.float64).reshape(-1)
        if thr.size == 0 or (thr <= 0).any() or (thr > 1).any():
            raise ValueError("iou_thresholds must be a non-empty list in (0, 1]")
        self._ap_thr = thr
        hit = np.flatnonzero(np.isclose(thr, self._match_iou))
        if hit.size:
            self._all_thr, self._op_col = thr, int(hit[0])
        else:
            self._all_thr, self._op_col = np.append(thr, self._match_iou), thr.size
        c = len(self._names)
        self._n_gt = np.zeros(c, dtype=np.int64)
        self._scores: list[F64Array] = []
        self._classes: list[I64Array] = []
        self._tp: list[BoolArray] = []
        self._confusion = np.zeros((c + 1, c + 1), dtype=np.int64)
        self._n_images = 0

    @property
    def class_names(self) -> tuple[str, ...]:
        return self._names

    @property
    def num_images(self) -> int:
        return self._n_images

    def add_image(
        self,
        *,
        gt_xyxy: npt.ArrayLike,
        gt_class_ids: npt.ArrayLike,
        pred_xyxy: npt.ArrayLike,
        pred_scores: npt.ArrayLike,
        pred_class_ids: npt.ArrayLike,
    ) -> None:
        """Add one image: (G, 4) / (G,) ground truth and (P, 4) / (P,) / (P,) detections,
        boxes in the same pixel space, class ids in ``[0, C)``.

        Raises:
            ValueError: shapes disagree or a class id is out of range.
        """
        c = len(self._names)
        gt = _boxes(gt_xyxy, "gt_xyxy")
        gc = np.asarray(gt_class_ids, dtype=np.int64).reshape(-1)
        pred = _boxes(pred_xyxy, "pred_xyxy")
        ps = np.asarray(pred_scores, dtype=np.float64).reshape(-1)
        pc = np.asarray(pred_class_ids, dtype=np.int64).reshape(-1)
        if gc.shape[0] != gt.shape[0] or not ps.shape[0] == pc.shape[0] == pred.shape[0]:
            raise ValueError("box, score and class arrays must have the same length")
        for name, ids in (("gt_class_ids", gc), ("pred_class_ids", pc)):
            if ids.size and (ids.min() < 0 or ids.max() >= c):
                raise ValueError(f"{name} must be in [0, {c}), got {ids.min()}..{ids.max()}")
        tp = np.zeros((pred.shape[0], self._all_thr.size), dtype=bool)
        for k in np.union1d(np.unique(gc), np.unique(pc)):
            pm = pc == k
            if pm.any():
                tp[pm] = match_detections(pred[pm], ps[pm], gt[gc == k], self._all_thr)
        self._n_gt += np.bincount(gc, minlength=c)
        self._scores.append(ps)
        self._classes.append(pc)
        self._tp.append(tp)
        keep = ps >= self._score
        self._confusion += confusion_matrix_image(
            pred[keep], pc[keep], gt, gc, c, match_iou=self._match_iou
        )
        self._n_images += 1

    def compute(self) -> DetectionMetrics:
        """Metrics over every image added so far (see the module docstring)."""
        c = len(self._names)
        n_thr = self._all_thr.size
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        classes = np.concatenate(self._classes) if self._classes else np.zeros(0, np.int64)
        tp = np.concatenate(self._tp) if self._tp else np.zeros((0, n_thr), bool)
        ap = np.full((c, self._ap_thr.size), np.nan)
        tp_op = np.zeros(c, dtype=np.int64)
        fp_op = np.zeros(c, dtype=np.int64)
        r_at_p = np.full(c, np.nan)
        s_at_p = np.full(c, np.nan)
        for k in range(c):
            sel = classes == k
            n_gt = int(self._n_gt[k])
            ap[k] = average_precision_101(tp[sel, : self._ap_thr.size], scores[sel], n_gt)
            above = sel & (scores >= self._score)
            tp_op[k] = int(tp[above, self._op_col].sum())
            fp_op[k] = int(above.sum()) - int(tp_op[k])
            r_at_p[k], s_at_p[k] = recall_at_precision(
                tp[sel, self._op_col], scores[sel], n_gt, self._min_precision
            )
        n_pred = tp_op + fp_op
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = np.where(n_pred > 0, tp_op / np.maximum(n_pred, 1), np.nan)
            recall = np.where(self._n_gt > 0, tp_op / np.maximum(self._n_gt, 1), np.nan)
        return DetectionMetrics(
            class_names=self._names,
            iou_thresholds=self._ap_thr.copy(),
            ap=ap,
            n_gt=self._n_gt.copy(),
            n_images=self._n_images,
            score_threshold=self._score,
            match_iou=self._match_iou,
            tp=tp_op,
            fp=fp_op,
            precision=precision.astype(np.float64),
            recall=recall.astype(np.float64),
            min_precision=self._min_precision,
            recall_at_min_precision=r_at_p,
            score_at_min_precision=s_at_p,
            confusion=self._confusion.copy(),
        )
