"""Evaluation report: a JSON document, a markdown page, and annotated sample images.

The JSON holds the same numbers as the markdown, with ``null`` where a value is undefined
(``NaN`` in :class:`~edge.eval.metrics.DetectionMetrics`), so other tools (model card,
regression tests, CI) read it without parsing markdown.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from edge.errors import EdgeError
from edge.eval.metrics import DetectionMetrics

__all__ = [
    "GT_COLOUR",
    "PRED_COLOUR",
    "ReportContext",
    "build_report",
    "draw_sample",
    "render_markdown",
    "write_json",
    "write_markdown",
]

GT_COLOUR = (0, 200, 0)
"""BGR green: ground-truth boxes."""
PRED_COLOUR = (0, 0, 255)
"""BGR red: detections at the operating threshold."""

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class ReportContext:
    """Where the numbers came from (everything in the report that is not a metric).

    Attributes:
        task: ``hardhat`` / ``workwear``.
        command: the command line as typed.
        created: ISO-8601 UTC time of the run.
        model: name, file, sha256 (of the file), manifest sha256 and whether they agree,
            family, class names.
        dataset: data.yaml path, root, split, image count, class names.
        class_map: model class name -> data set class name, for the classes evaluated.
        unmapped_model_classes: model classes with no data set class (their detections
            are ignored).
        unevaluated_dataset_classes: data set classes the model does not predict (left out
            of every metric, ground truth included).
        settings: thresholds and limits of the run.
        timing: images, seconds, ms per image.
    """

    task: str
    command: str
    created: str
    model: Mapping[str, Any]
    dataset: Mapping[str, Any]
    class_map: Mapping[str, str]
    unmapped_model_classes: Sequence[str] = ()
    unevaluated_dataset_classes: Sequence[str] = ()
    settings: Mapping[str, Any] = field(default_factory=dict)
    timing: Mapping[str, Any] = field(default_factory=dict)


def _num(x: float | np.floating[Any]) -> float | None:
    v = float(x)
    return None if math.isnan(v) else round(v, 6)


def build_report(metrics: DetectionMetrics, context: ReportContext) -> dict[str, Any]:
    """The JSON-able report dictionary (``NaN`` -> ``None``)."""
    m = metrics
    ap50, ap5095 = m.ap50, m.ap50_95
    per_class = [
        {
            "name": name,
            "gt": int(m.n_gt[k]),
            "ap50": _num(ap50[k]),
            "ap50_95": _num(ap5095[k]),
            "precision": _num(m.precision[k]),
            "recall": _num(m.recall[k]),
            "tp": int(m.tp[k]),
            "fp": int(m.fp[k]),
            "fn": int(m.n_gt[k] - m.tp[k]),
            "recall_at_min_precision": _num(m.recall_at_min_precision[k]),
            "score_at_min_precision": _num(m.score_at_min_precision[k]),
        }
        for k, name in enumerate(m.class_names)
    ]
    tp, fp, n_gt = int(m.tp.sum()), int(m.fp.sum()), int(m.n_gt.sum())
    return {
        "schema_version": SCHEMA_VERSION,
        **{k: v for k, v in asdict(context).items() if k not in ("settings", "timing")},
        "settings": dict(context.settings),
        "summary": {
            "images": m.n_images,
            "gt_boxes": n_gt,
            "map50": _num(m.map50),
            "map50_95": _num(m.map50_95),
            "precision_mean": _num(m.mean_precision),
            "recall_mean": _num(m.mean_recall),
            "precision_micro": _num(tp / (tp + fp)) if tp + fp else None,
            "recall_micro": _num(tp / n_gt) if n_gt else None,
            "score_threshold": m.score_threshold,
            "match_iou": m.match_iou,
            "min_precision": m.min_precision,
            "iou_thresholds": [round(float(t), 4) for t in m.iou_thresholds],
        },
        "per_class": per_class,
        "confusion": {
            "labels": [*m.class_names, "background"],
            "axes": "matrix[predicted][true]; last row = missed ground truth, "
            "last column = false detections",
            "matrix": m.confusion.tolist(),
        },
        "timing": dict(context.timing),
    }


def write_json(report: Mapping[str, Any], path: Path) -> None:
    """Write the report as indented JSON (strict: no NaN).

    Raises:
        EdgeError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    except OSError as exc:
        raise EdgeError(f"cannot write {path}: {exc}") from exc


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], align: str) -> list[str]:
    out = ["| " + " | ".join(header) + " |"]
    out.append("|" + "|".join(":---" if a == "l" else "---:" for a in align) + "|")
    out.extend("| " + " | ".join(r) + " |" for r in rows)
    return out


def render_markdown(report: Mapping[str, Any]) -> str:
    """The markdown page for a report from :func:`build_report`."""
    s = report["summary"]
    model, data, settings = report["model"], report["dataset"], report["settings"]
    thr, iou = s["score_threshold"], s["match_iou"]
    lines = [
        f"# Evaluation: {report['task']} — model `{model.get('name', '?')}`",
        "",
        f"- date (UTC): {report['created']}",
        f"- command: `{report['command']}`",
        f"- model file: `{model.get('file', '?')}`, sha256 `{model.get('sha256', '?')}`"
        + ("" if model.get("sha256_ok", True) else " (**differs from the manifest**)"),
        f"- data set: `{data.get('data_yaml', '?')}`, split `{data.get('split', '?')}`, "
        f"{s['images']} images, {s['gt_boxes']} ground-truth boxes",
        f"- detections for AP at score >= {settings.get('map_score_threshold', '?')}; "
        f"operating point score >= {thr}, IoU >= {iou}; "
        f"NMS IoU {settings.get('nms_iou', '?')}",
    ]
    timing = report.get("timing") or {}
    if timing.get("ms_per_image") is not None:
        lines.append(
            f"- time: {timing['seconds']:.1f} s, {timing['ms_per_image']:.1f} ms per image "
            "(decode + detect, this machine)"
        )
    if report.get("unevaluated_dataset_classes"):
        lines.append(
            "- data set classes the model does not predict (not evaluated): "
            + ", ".join(f"`{c}`" for c in report["unevaluated_dataset_classes"])
        )
    if report.get("unmapped_model_classes"):
        lines.append(
            "- model classes with no data set class (ignored): "
            + ", ".join(f"`{c}`" for c in report["unmapped_model_classes"])
        )
    lines += [
        "",
        "## Summary",
        "",
        *_table(
            ["mAP50", "mAP50-95", f"P@{thr}", f"R@{thr}", "P micro", "R micro"],
            [
                [
                    _fmt(s["map50"]),
                    _fmt(s["map50_95"]),
                    _fmt(s["precision_mean"]),
                    _fmt(s["recall_mean"]),
                    _fmt(s["precision_micro"]),
                    _fmt(s["recall_micro"]),
                ]
            ],
            "rrrrrr",
        ),
        "",
        "## Per class",
        "",
    ]
    pmin = s["min_precision"]
    rows = [
        [
            f"`{c['name']}`",
            _fmt(c["ap50"]),
            _fmt(c["ap50_95"]),
            _fmt(c["precision"]),
            _fmt(c["recall"]),
            str(c["gt"]),
            str(c["tp"]),
            str(c["fp"]),
            str(c["fn"]),
            _fmt(c["recall_at_min_precision"])
            + (
                f" (score {c['score_at_min_precision']:.3f})"
                if c["score_at_min_precision"] is not None
                else ""
            ),
        ]
        for c in report["per_class"]
    ]
    lines += _table(
        ["class", "AP50", "AP50-95", "P", "R", "GT", "TP", "FP", "FN", f"R at P>={pmin}"],
        rows,
        "lrrrrrrrrr",
    )
    labels = report["confusion"]["labels"]
    matrix = report["confusion"]["matrix"]
    lines += [
        "",
        "## Confusion matrix",
        "",
        f"Rows = predicted, columns = true; score >= {thr}, class-agnostic match at "
        f"IoU >= {iou}. Last row: missed ground truth; last column: false detections.",
        "",
        *_table(
            ["pred \\ true", *[f"`{x}`" for x in labels]],
            [[f"`{labels[i]}`", *[str(v) for v in row]] for i, row in enumerate(matrix)],
            "l" + "r" * len(labels),
        ),
        "",
        "## Definitions",
        "",
        "- **AP50 / AP50-95**: COCO 101-point interpolated average precision at IoU 0.5 / "
        "averaged over IoU 0.50:0.05:0.95; detections greedily matched by descending score "
        "to the unmatched same-class ground truth with the highest IoU. A second detection "
        "of one object is a false positive. mAP = mean over classes with ground truth "
        "(a class with none shows `–` and is not averaged; COCO writes -1).",
        f"- **P / R**: precision TP/(TP+FP) and recall TP/GT of detections with "
        f"score >= {thr}, matched at IoU >= {iou} (`–` when undefined).",
        f"- **R at P>={pmin}**: the highest recall on the PR curve (IoU {iou}) whose "
        "precision is at least that, and the score threshold that gives it.",
        "",
    ]
    return "\n".join(lines)


def write_markdown(report: Mapping[str, Any], path: Path) -> None:
    """Write :func:`render_markdown` to ``path``.

    Raises:
        EdgeError: the file cannot be written.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(render_markdown(report), encoding="utf-8")
    except OSError as exc:
        raise EdgeError(f"cannot write {path}: {exc}") from exc


def _box(
    image: npt.NDArray[np.uint8],
    box: npt.NDArray[np.float32],
    label: str,
    colour: tuple[int, int, int],
    below: bool,
    thickness: int,
) -> None:
    h, w = image.shape[:2]
    x1, y1, x2, y2 = (round(float(v)) for v in box)
    cv2.rectangle(image, (x1, y1), (x2, y2), colour, thickness)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    ty = min(y2 + th + 4, h - 2) if below else max(y1 - 4, th + 2)
    tx = min(max(x1, 0), max(w - tw - 2, 0))
    cv2.rectangle(image, (tx, ty - th - 2), (tx + tw + 2, ty + base), colour, -1)
    cv2.putText(
        image, label, (tx + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA
    )


def draw_sample(
    image_bgr: npt.NDArray[np.uint8],
    gt_xyxy: npt.NDArray[np.float32],
    gt_labels: Sequence[str],
    pred_xyxy: npt.NDArray[np.float32],
    pred_labels: Sequence[str],
) -> npt.NDArray[np.uint8]:
    """A copy of ``image_bgr`` (H, W, 3) uint8 with ground truth in green (4 px, label below
    the box) and detections in red (2 px on top, label above), boxes ``xyxy`` in pixels; a
    perfect detection shows as a red line inside a green frame."""
    out: npt.NDArray[np.uint8] = np.array(image_bgr, dtype=np.uint8, copy=True)
    for box, label in zip(gt_xyxy, gt_labels, strict=True):
        _box(out, box, label, GT_COLOUR, below=True, thickness=4)
    for box, label in zip(pred_xyxy, pred_labels, strict=True):
        _box(out, box, label, PRED_COLOUR, below=False, thickness=2)
    return out
