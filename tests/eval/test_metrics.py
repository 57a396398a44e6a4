"""Detection metrics against hand-computed cases, a literal port of the COCO procedure and
pycocotools' ``COCOeval`` itself."""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.eval.commands import ImageScores
from edge.eval.metrics import (
    COCO_IOU_THRESHOLDS,
    RECALL_POINTS,
    DetectionEvaluator,
    DetectionMetrics,
    average_precision_101,
    box_iou,
    confusion_matrix_image,
    match_detections,
    recall_at_precision,
)
from tests.eval.pycoco import (
    ap_from_precision,
    check_recall_at_precision,
    coco_ap,
    coco_precision,
    tied_classes,
)

NAMES = ("a", "b", "c")


def scored(im: dict[str, Any]) -> ImageScores:
    """An image given as a dict of lists (gt, gt_cls, pred, scores, cls) as arrays."""
    return ImageScores(
        gt_xyxy=np.array(im.get("gt", []), dtype=np.float64).reshape(-1, 4),
        gt_class_ids=np.array(im.get("gt_cls", []), dtype=np.int64),
        pred_xyxy=np.array(im.get("pred", []), dtype=np.float64).reshape(-1, 4),
        pred_scores=np.array(im.get("scores", []), dtype=np.float64),
        pred_class_ids=np.array(im.get("cls", []), dtype=np.int64),
    )


def evaluate(images: list[dict[str, Any]], *, score: float = 0.25) -> DetectionMetrics:
    """Run the evaluator over images given as dicts of lists (see :func:`scored`)."""
    ev = DetectionEvaluator(class_names=NAMES, score_threshold=score)
    for im in images:
        ev.add_image(**asdict(scored(im)))
    return ev.compute()


BOX_A = [10, 10, 50, 50]
BOX_B = [100, 100, 160, 140]
BOX_C = [200, 20, 230, 90]
BOX_D = [300, 300, 340, 360]


# -- IoU ----------------------------------------------------------------------------------
def test_box_iou_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 10]], np.float32)  # second is degenerate
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]], np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 3)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0])
    np.testing.assert_array_equal(iou[1], [0.0, 0.0, 0.0])
    assert box_iou(np.zeros((0, 4)), b).shape == (0, 3)
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)


# -- AP, hand-computed ----------------------------------------------------------------------
def test_perfect_predictions_give_ap_one_everywhere() -> None:
    m = evaluate(
        [
            {
                "gt": [BOX_A, BOX_B],
                "gt_cls": [0, 1],
                "pred": [BOX_A, BOX_B],
                "scores": [0.9, 0.8],
                "cls": [0, 1],
            },
            {"gt": [BOX_C], "gt_cls": [2], "pred": [BOX_C], "scores": [0.7], "cls": [2]},
        ]
    )
    np.testing.assert_array_equal(m.ap, np.ones((3, 10)))
    assert m.map50 == 1.0 and m.map50_95 == 1.0
    np.testing.assert_array_equal(m.precision, [1, 1, 1])
    np.testing.assert_array_equal(m.recall, [1, 1, 1])
    np.testing.assert_array_equal(m.n_gt, [1, 1, 1])
    np.testing.assert_array_equal(m.confusion, np.diag([1, 1, 1, 0]))
    assert m.n_images == 2


def test_empty_predictions_give_ap_zero() -> None:
    m = evaluate([{"gt": [BOX_A, BOX_B], "gt_cls": [0, 0]}, {"gt": [BOX_C], "gt_cls": [1]}])
    np.testing.assert_array_equal(m.ap50, [0.0, 0.0, np.nan])
    assert m.map50 == 0.0 and m.map50_95 == 0.0
    np.testing.assert_array_equal(m.recall, [0.0, 0.0, np.nan])
    assert np.isnan(m.precision).all()  # no detections: precision undefined
    expected = np.zeros((4, 4), np.int64)
    expected[3, 0], expected[3, 1] = 2, 1  # missed ground truth -> background row
    np.testing.assert_array_equal(m.confusion, expected)


def test_empty_ground_truth_is_excluded_from_the_mean() -> None:
    # class 0 perfect, class 1 has only a false alarm and no ground truth
    img = {"gt": [BOX_A], "gt_cls": [0], "pred": [BOX_A, BOX_D], "scores": [0.9, 0.95]}
    m = evaluate([{**img, "cls": [0, 1]}])
    assert m.ap50[0] == 1.0
    assert np.isnan(m.ap[1]).all() and np.isnan(m.ap[2]).all()
    assert m.map50 == 1.0  # not (1 + 0) / 2: the class without ground truth is left out
    np.testing.assert_array_equal(m.evaluated, [True, False, False])
    assert m.precision[1] == 0.0 and np.isnan(m.recall[1])
    assert m.fp[1] == 1 and m.tp[1] == 0
    assert m.confusion[1, 3] == 1  # false detection -> background column
    assert m.confusion[0, 0] == 1


def test_no_images_at_all() -> None:
    m = evaluate([])
    assert math.isnan(m.map50) and math.isnan(m.map50_95)
    assert m.n_images == 0 and m.confusion.sum() == 0


def test_duplicate_detection_is_a_false_positive() -> None:
    # two objects; the first is detected twice (0.9 and 0.8), the second once (0.7)
    dup = [BOX_A[0] + 1, BOX_A[1], BOX_A[2] + 1, BOX_A[3]]  # IoU 0.95 with BOX_A
    m = evaluate(
        [
            {
                "gt": [BOX_A, BOX_B],
                "gt_cls": [0, 0],
                "pred": [BOX_A, dup, BOX_B],
                "scores": [0.9, 0.8, 0.7],
                "cls": [0, 0, 0],
            }
        ]
    )
    # TP, FP, TP: recall .5 .5 1, precision 1 .5 2/3 -> envelope 1 2/3 2/3;
    # recall points 0..0.50 (51) read 1, points 0.51..1.00 (50) read 2/3.
    assert m.ap50[0] == pytest.approx((51 * 1.0 + 50 * (2 / 3)) / 101, abs=1e-12)
    assert m.tp[0] == 2 and m.fp[0] == 1
    assert m.precision[0] == pytest.approx(2 / 3) and m.recall[0] == 1.0


def test_101_point_interpolation_by_hand_for_three_detections() -> None:
    # 3 objects; detections (scores .9 .8 .7) are TP, FP, TP; one object never found.
    # recall 1/3 1/3 2/3, precision 1 1/2 2/3 -> envelope 1 2/3 2/3.
    # Recall points 0.00..0.33 (34) -> 1; 0.34..0.66 (33) -> 2/3; 0.67..1.00 (34) -> 0.
    ap = average_precision_101(np.array([True, False, True]), np.array([0.9, 0.8, 0.7]), n_gt=3)
    assert ap.shape == (1,)
    assert ap[0] == pytest.approx((34 * 1.0 + 33 * (2 / 3) + 34 * 0.0) / 101, abs=1e-12)
    # the order of the input does not matter, only the scores do
    ap2 = average_precision_101(np.array([True, True, False]), np.array([0.7, 0.9, 0.8]), 3)
    assert ap2[0] == ap[0]


def test_ap_50_95_of_one_detection_with_iou_072() -> None:
    gt = [0, 0, 100, 100]
    det = [0, 0, 72, 100]  # IoU 0.72: a hit at 0.50, 0.55, 0.60, 0.65, 0.70; a miss above
    m = evaluate([{"gt": [gt], "gt_cls": [0], "pred": [det], "scores": [0.9], "cls": [0]}])
    np.testing.assert_array_equal(m.ap[0], [1, 1, 1, 1, 1, 0, 0, 0, 0, 0])
    assert m.ap50_95[0] == 0.5


def test_greedy_match_takes_highest_iou_not_first_ground_truth() -> None:
    g1 = [0, 0, 100, 100]
    g2 = [40, 0, 140, 100]  # IoU 0.43 with g1
    det_hi = [30, 0, 130, 100]  # IoU 0.82 with g2, 0.54 with g1
    det_lo = [0, 0, 100, 100]  # IoU 1 with g1, 0.43 with g2
    tp = match_detections(np.array([det_hi, det_lo]), np.array([0.9, 0.5]), np.array([g1, g2]))
    assert tp.shape == (2, 10)
    # det_hi takes g2 (best IoU), so det_lo still finds g1; had det_hi taken the first
    # label above 0.5 (g1), det_lo would have been a false positive
    assert tp[:, 0].tolist() == [True, True]


def test_iou_tie_goes_to_the_last_ground_truth_like_coco() -> None:
    g1, g2 = [0, 0, 10, 10], [10, 0, 20, 10]
    between = [5, 0, 15, 10]  # IoU 1/3 with both
    tp = match_detections(np.array([between, g1]), np.array([0.9, 0.5]), np.array([g1, g2]), [0.3])
    # COCO's loop keeps the later of equal IoUs (g2), leaving g1 for the second detection
    assert tp[:, 0].tolist() == [True, True]


def test_detections_are_matched_in_score_order_not_input_order() -> None:
    gt = np.array([[0, 0, 10, 10]], np.float64)
    pred = np.array([[0, 0, 10, 9], [0, 0, 10, 10]], np.float64)  # the exact one scores higher
    tp = match_detections(pred, np.array([0.3, 0.9]), gt, [0.5])
    assert tp[:, 0].tolist() == [False, True]


def test_ap_without_detections_or_ground_truth() -> None:
    assert average_precision_101(np.zeros((0, 10), bool), np.zeros(0), 4).tolist() == [0.0] * 10
    assert np.isnan(average_precision_101(np.ones(3, bool), np.ones(3), 0)).all()


def test_class_mixups_fill_the_confusion_matrix() -> None:
    m = evaluate(
        [
            {
                "gt": [BOX_A, BOX_B, BOX_C],
                "gt_cls": [0, 1, 2],
                # A predicted as class 1 (mix-up), B right, C missed, D a false alarm,
                # and a class-2 box on C below the operating threshold (ignored here)
                "pred": [BOX_A, BOX_B, BOX_D, BOX_C],
                "scores": [0.9, 0.8, 0.6, 0.1],
                "cls": [1, 1, 2, 2],
            }
        ]
    )
    expected = np.zeros((4, 4), np.int64)
    expected[1, 0] = 1  # predicted b, true a
    expected[1, 1] = 1  # predicted b, true b
    expected[3, 2] = 1  # true c missed
    expected[2, 3] = 1  # predicted c where nothing is
    np.testing.assert_array_equal(m.confusion, expected)
    # per-class view of the same image at score 0.25
    np.testing.assert_array_equal(m.tp, [0, 1, 0])
    np.testing.assert_array_equal(m.fp, [0, 1, 1])
    np.testing.assert_array_equal(m.recall, [0.0, 1.0, 0.0])
    np.testing.assert_allclose(m.precision, [np.nan, 0.5, 0.0])
    # AP: class a has no detection; b is FP(.9) then TP(.8): envelope 1/2 -> AP 0.5;
    # c: FP(.6) then TP(.1): envelope 1/2 over all recall points -> 0.5
    np.testing.assert_allclose(m.ap50, [0.0, 0.5, 0.5])


def test_confusion_matrix_one_detection_per_ground_truth() -> None:
    # two detections on one object: the better one is matched, the other is a false alarm
    near = [11, 10, 51, 50]
    cm = confusion_matrix_image(
        np.array([near, BOX_A]), np.array([0, 1]), np.array([BOX_A]), np.array([1]), 2
    )
    expected = np.zeros((3, 3), np.int64)
    expected[1, 1] = 1  # exact box (class 1) wins on IoU
    expected[0, 2] = 1  # the other is background
    np.testing.assert_array_equal(cm, expected)


def test_operating_threshold_is_inclusive() -> None:
    img = {"gt": [BOX_A], "gt_cls": [0], "pred": [BOX_A], "scores": [0.25], "cls": [0]}
    assert evaluate([img], score=0.25).tp[0] == 1
    assert evaluate([img], score=0.26).tp[0] == 0


def test_recall_at_precision_by_hand() -> None:
    # scores .9 .8 .7 .6 -> TP TP FP TP, 5 objects: (P, R) = (1, .2) (1, .4) (.67, .4) (.75, .6)
    tp = np.array([True, True, False, True])
    scores = np.array([0.9, 0.8, 0.7, 0.6])
    assert recall_at_precision(tp, scores, 5, 0.8) == (pytest.approx(0.4), 0.8)
    assert recall_at_precision(tp, scores, 5, 0.7) == (pytest.approx(0.6), 0.6)
    r, s = recall_at_precision(~tp, scores, 5, 0.5)
    assert r == 0.0 and math.isnan(s)
    # tied scores are one operating point: TP and FP at .5 together give P = 1/2
    r, s = recall_at_precision(np.array([True, False]), np.array([0.5, 0.5]), 1, 0.8)
    assert r == 0.0 and math.isnan(s)


def test_bad_inputs_are_rejected() -> None:
    ev = DetectionEvaluator(class_names=NAMES)
    with pytest.raises(ValueError, match="pred_class_ids"):
        ev.add_image(
            gt_xyxy=np.zeros((0, 4)),
            gt_class_ids=np.zeros(0),
            pred_xyxy=np.array([BOX_A]),
            pred_scores=[0.5],
            pred_class_ids=[3],
        )
    with pytest.raises(ValueError, match="same length"):
        ev.add_image(
            gt_xyxy=np.array([BOX_A]),
            gt_class_ids=[0, 1],
            pred_xyxy=np.zeros((0, 4)),
            pred_scores=[],
            pred_class_ids=[],
        )
    with pytest.raises(ValueError):
        DetectionEvaluator(class_names=())


# -- cross-check against a literal port of pycocotools' evaluateImg + accumulate ----------
def _iou(a: list[float], b: list[float]) -> float:
    iw = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0)
    ih = max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def coco_reference(
    images: list[dict[str, Any]], num_classes: int, score: float
) -> tuple[np.ndarray, np.ndarray]:
    """(C, T) AP and (C,) TP count at IoU 0.5 and ``score``, by the COCO loops, written
    out plainly (one area range, no crowd boxes, no maxDets cap)."""
    thrs = [float(t) for t in COCO_IOU_THRESHOLDS]
    rec_thrs = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)
    ap = np.full((num_classes, len(thrs)), np.nan)
    tp_at_score = np.zeros(num_classes, np.int64)
    for c in range(num_classes):
        scores: list[float] = []
        matched: list[list[bool]] = []
        n_gt = 0
        for im in images:
            g = [b for b, k in zip(im["gt"], im["gt_cls"], strict=True) if k == c]
            d = [
                (b, s)
                for b, s, k in zip(im["pred"], im["scores"], im["cls"], strict=True)
                if k == c
            ]
            order = np.argsort([-s for _, s in d], kind="mergesort")
            d = [d[i] for i in order]
            n_gt += len(g)
            dtm = [[False] * len(thrs) for _ in d]
            for t, thr in enumerate(thrs):
                gtm = [False] * len(g)
                for di, (db, _) in enumerate(d):
                    best = min(thr, 1 - 1e-10)
                    m = -1
                    for gi, gb in enumerate(g):
                        if gtm[gi]:
                            continue
                        v = _iou(db, gb)
                        if v < best:
                            continue
                        best, m = v, gi
                    if m == -1:
                        continue
                    gtm[m] = True
                    dtm[di][t] = True
            scores += [s for _, s in d]
            matched += dtm
            # P/R at the operating point: a fresh matching of the detections >= score
            strong = [(b, s) for b, s in d if s >= score]
            gtm = [False] * len(g)
            for db, _ in strong:
                best, m = 0.5, -1
                for gi, gb in enumerate(g):
                    if not gtm[gi] and _iou(db, gb) >= best:
                        best, m = _iou(db, gb), gi
                if m >= 0:
                    gtm[m] = True
                    tp_at_score[c] += 1
        if n_gt == 0:
            continue
        inds = np.argsort([-s for s in scores], kind="mergesort")
        for t in range(len(thrs)):
            tps = np.array([matched[i][t] for i in inds], dtype=bool)
            tp_sum = np.cumsum(tps).astype(float)
            fp_sum = np.cumsum(~tps).astype(float)
            rc = tp_sum / n_gt
            pr = (tp_sum / (fp_sum + tp_sum)).tolist() if len(tps) else []
            for i in range(len(pr) - 1, 0, -1):
                if pr[i] > pr[i - 1]:
                    pr[i - 1] = pr[i]
            q = np.zeros(len(rec_thrs))
            for ri, pi in enumerate(np.searchsorted(rc, rec_thrs, side="left")):
                if pi < len(pr):
                    q[ri] = pr[pi]
            ap[c, t] = q.mean()
    return ap, tp_at_score


@st.composite
def image_sets(draw: st.DrawFn) -> list[dict[str, Any]]:
    images = []
    for _ in range(draw(st.integers(1, 4))):
        n_gt = draw(st.integers(0, 5))
        gt, gt_cls = [], []
        for _ in range(n_gt):
            x, y = draw(st.integers(0, 30)), draw(st.integers(0, 30))
            w, h = draw(st.integers(1, 12)), draw(st.integers(1, 12))
            gt.append([float(x), float(y), float(x + w), float(y + h)])
            gt_cls.append(draw(st.integers(0, 2)))
        pred, scores, cls = [], [], []
        for _ in range(draw(st.integers(0, 7))):
            if gt and draw(st.booleans()):  # near a ground-truth box: real matches
                b = draw(st.sampled_from(gt))
                j = [draw(st.integers(-2, 2)) for _ in range(4)]
                box = [b[0] + j[0], b[1] + j[1], b[2] + j[2], b[3] + j[3]]
                if box[2] <= box[0] or box[3] <= box[1]:
                    box = list(b)
            else:
                x, y = draw(st.integers(0, 30)), draw(st.integers(0, 30))
                box = [float(x), float(y), float(x + draw(st.integers(1, 12))), float(y + 6)]
            pred.append([float(v) for v in box])
            scores.append(draw(st.sampled_from([0.1, 0.2, 0.3, 0.5, 0.7, 0.9])))  # ties
            cls.append(draw(st.integers(0, 2)))
        images.append({"gt": gt, "gt_cls": gt_cls, "pred": pred, "scores": scores, "cls": cls})
    return images


@settings(max_examples=150, deadline=None)
@given(image_sets())
def test_matches_literal_coco_procedure(images: list[dict[str, Any]]) -> None:
    m = evaluate(images, score=0.3)
    ref_ap, ref_tp = coco_reference(images, 3, score=0.3)
    np.testing.assert_allclose(m.ap, ref_ap, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(m.tp, ref_tp)
    # AP is a mean of 101 precision samples in [0, 1]
    ok = ~np.isnan(m.ap)
    assert ((m.ap[ok] >= 0) & (m.ap[ok] <= 1)).all()
    # every ground-truth box and every kept detection lands in exactly one confusion cell
    n_pred = sum(sum(s >= 0.3 for s in im["scores"]) for im in images)
    n_gt = sum(len(im["gt"]) for im in images)
    cm = m.confusion
    assert cm[:, :3].sum() == n_gt
    assert cm[:3, :].sum() == n_pred
    assert cm[3, 3] == 0


@settings(max_examples=150, deadline=None)
@given(image_sets())
def test_matches_pycocotools(images: list[dict[str, Any]]) -> None:
    """The same boxes through the reference implementation, ``COCOeval`` itself."""
    m = evaluate(images, score=0.3)
    rows = [scored(im) for im in images]
    precision = coco_precision(rows, 3)
    np.testing.assert_allclose(m.ap, ap_from_precision(precision), rtol=0, atol=1e-12)
    check_recall_at_precision(
        rows, precision, m.recall_at_min_precision, m.score_at_min_precision, min_precision=0.8
    )
    # the same with every score distinct, so the recall check is exact for every class
    n = 0
    for im in images:
        im["scores"] = [s + 1e-6 * (n + i) for i, s in enumerate(im["scores"])]
        n += len(im["scores"])
    m, rows = evaluate(images, score=0.3), [scored(im) for im in images]
    assert not tied_classes(rows, 3).any()
    precision = coco_precision(rows, 3)
    np.testing.assert_allclose(m.ap, ap_from_precision(precision), rtol=0, atol=1e-12)
    check_recall_at_precision(
        rows, precision, m.recall_at_min_precision, m.score_at_min_precision, min_precision=0.8
    )


def test_pycocotools_check_sees_a_wrong_match() -> None:
    """The cross-check can fail: one detection moved off its box changes COCOeval's AP."""
    good = [{"gt": [BOX_A], "gt_cls": [0], "pred": [BOX_A], "scores": [0.9], "cls": [0]}]
    moved = [dict(good[0], pred=[[30, 30, 70, 70]])]
    ref_good = coco_ap([scored(im) for im in good], 3)
    ref_moved = coco_ap([scored(im) for im in moved], 3)
    assert ref_good[0, 0] == pytest.approx(1.0) and ref_moved[0, 0] == pytest.approx(0.0)
    assert np.isnan(ref_good[1:]).all()
    np.testing.assert_allclose(evaluate(moved).ap, ref_moved, rtol=0, atol=1e-12)


def test_recall_points_are_coco_points() -> None:
    assert RECALL_POINTS.shape == (101,) and RECALL_POINTS[50] == 0.5
    np.testing.assert_allclose(COCO_IOU_THRESHOLDS, [0.5 + 0.05 * i for i in range(10)])
