"""Raw model outputs -> candidate :class:`~edge.types.Detections`, one decoder per family.

Every decoder:

- returns boxes as ``xyxy`` in **network-input pixels** (before letterbox unmapping),
  ``float32``; the caller maps them to the image (:meth:`Letterbox.unmap_boxes`);
- keeps, for each candidate box, its best class and that class's score, and drops the
  box unless that score is above ``score_threshold`` (``score > score_threshold`` stays,
  strictly, as in Darknet, Ultralytics, OpenCV and :func:`edge.kernels.nms.nms`);
- runs no NMS (the detector does, class-aware);
- takes thresholds as arguments; nothing is a constant inside a decoder;
- is vectorized numpy over all boxes (the only Python loop is over output heads);
- accepts float16 or float32 outputs, with or without the leading batch axis of 1;
- raises :class:`~edge.errors.ModelError` when an output's shape does not fit the
  manifest (wrong class count, anchors, strides), naming both.

The per-family formulas are in each function's docstring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import numpy.typing as npt

from edge.errors import ModelError
from edge.runtime.registry import Family, ModelManifest
from edge.types import Detections, FloatArray

__all__ = [
    "DECODERS",
    "decode_outputs",
    "decode_ssd",
    "decode_yolov3",
    "decode_yolov5",
    "decode_yolov8",
    "decode_yolox",
]

_F32 = np.float32
_EXP_CLIP = 20.0  # exp() argument cap: keeps absurd logits from overflowing to inf
# Largest tx, ty, tw, th a raw YOLOX head can plausibly give: offsets are within a cell or
# two, sizes are logs (exp(10) x stride 8 = 176,000 px); decoded pixels exceed it at once.
_YOLOX_RAW_MAX = 10.0


def _sigmoid(x: npt.NDArray[Any]) -> FloatArray:
    """Overflow-free logistic function (float32)."""
    x = np.asarray(x, dtype=_F32)
    return (0.5 * (1.0 + np.tanh(0.5 * x))).astype(_F32, copy=False)


def _exp(x: npt.NDArray[Any]) -> FloatArray:
    return np.exp(np.minimum(np.asarray(x, dtype=_F32), _EXP_CLIP)).astype(_F32, copy=False)


def _drop_batch(x: npt.NDArray[Any], ndim: int, what: str) -> FloatArray:
    """Remove a leading batch axis of 1 (if present) and convert to float32."""
    a = np.asarray(x)
    if a.ndim == ndim + 1:
        if a.shape[0] != 1:
            raise ModelError(f"{what}: batch size {a.shape[0]} is not supported (batch 1 only)")
        a = a[0]
    if a.ndim != ndim:
        raise ModelError(f"{what}: expected a {ndim}-D output (plus batch), got shape {x.shape}")
    return a.astype(_F32, copy=False)


def _class_hint(model_classes: int, num_classes: int) -> str:
    """Sentence for a class-count mismatch: what the output's width says the model has."""
    if model_classes <= 0 or model_classes == num_classes:
        return ""
    return (
        f"; the output looks like a model with {model_classes} classes: list all "
        f"{model_classes} class_names in the manifest, in the model's order (a zone's "
        "classes setting picks the ones to act on)"
    )


# Strides of the raw heads Ultralytics/YOLOX export: P3-P5 (standard), P2-P5 ("-p2"),
# P3-P6 ("-p6" / YOLOv5 "6" models).
_HEAD_STRIDES = ((8, 16, 32), (4, 8, 16, 32), (8, 16, 32, 64))
_NMS_EXPORT_HINT = (
    "looks like an export with NMS built in (end2end / nms=True, YOLOv10: (1, N, 6) boxes "
    "x1, y1, x2, y2, score, class): re-export without NMS (Ultralytics: nms=False; YOLOv10 "
    "is always end2end: use a YOLOv8/YOLO11 model)"
)


def _raw_row_counts(input_size: tuple[int, int]) -> frozenset[int]:
    """Row counts a raw (pre-NMS) YOLO head output can have for ``input_size``: one or three
    (YOLOv5 anchors) rows per grid cell of each stride, grids rounded down or up (inputs
    that are not a multiple of the stride)."""
    iw, ih = input_size
    counts: set[int] = set()
    for strides in _HEAD_STRIDES:
        floor = sum((iw // st) * (ih // st) for st in strides)
        ceil = sum((-(-iw // st)) * (-(-ih // st)) for st in strides)
        counts.update((floor, 3 * floor, ceil, 3 * ceil))
    return frozenset(counts)


def _nms_hint(shape: tuple[int, ...]) -> str:
    """Appended to a shape error when the output has the NMS-included (1, N, 6) layout."""
    return f"; it {_NMS_EXPORT_HINT}" if len(shape) >= 2 and shape[-1] == 6 else ""


def _refuse_nms_rows(
    rows: FloatArray, shape: tuple[int, ...], input_size: tuple[int, int] | None, what: str
) -> None:
    """Rows (N, 6) fit the family (4+2 or 5+1 attributes) but could also be NMS-included
    boxes. A raw head has one row per anchor (8400 or 25200 at 640x640); any other N is
    not a raw head output: refuse instead of reading x1, y1, x2, y2 as cx, cy, w, h."""
    if input_size is None or rows.shape[1] != 6:
        return
    if rows.shape[0] not in _raw_row_counts(input_size):
        raise ModelError(
            f"{what} shape {shape} has {rows.shape[0]} rows, not one per anchor of a raw "
            f"head at input {tuple(input_size)}; it {_NMS_EXPORT_HINT}"
        )


def _cxcywh_to_xyxy(cx: FloatArray, cy: FloatArray, w: FloatArray, h: FloatArray) -> FloatArray:
    hw, hh = 0.5 * w, 0.5 * h
    return np.stack([cx - hw, cy - hh, cx + hw, cy + hh], axis=1).astype(_F32, copy=False)


def _detections(xyxy: FloatArray, scores: FloatArray, class_ids: npt.NDArray[Any]) -> Detections:
    return Detections(
        xyxy=xyxy.reshape(-1, 4),
        scores=scores.astype(_F32, copy=False),
        class_ids=class_ids.astype(np.int32, copy=False),
    )


def _from_rows(
    rows: FloatArray, score_threshold: float, *, objectness: bool
) -> tuple[FloatArray, FloatArray, npt.NDArray[np.intp]]:
    """Rows ``(N, 4 [+1] + C)`` of cx, cy, w, h, [obj], class scores (probabilities)
    -> (score, cx/cy/w/h (K, 4), best class) of the rows whose
    ``[obj *] max(class score) > score_threshold``."""
    first = 5 if objectness else 4
    if objectness:
        # score = obj * cls <= obj: rows whose objectness is below the bar cannot pass.
        rows = rows[rows[:, 4] > score_threshold]
    cls = rows[:, first:]
    best = cls.argmax(axis=1) if cls.shape[0] else np.zeros((0,), np.intp)
    score = cls[np.arange(cls.shape[0]), best]
    if objectness:
        score = score * rows[:, 4]
    keep = score > score_threshold
    return score[keep], rows[keep, :4], best[keep]


def decode_yolov5(
    output: npt.NDArray[Any],
    *,
    num_classes: int,
    score_threshold: float,
    input_size: tuple[int, int] | None = None,
) -> Detections:
    """Ultralytics YOLOv5 export (also YOLOX exported with decoded boxes).

    Args:
        output: (1, N, 5+C) or (N, 5+C): cx, cy, w, h in input pixels, objectness and C
            class probabilities (already sigmoid).
        num_classes: C.
        score_threshold: keep ``obj * max(cls) > score_threshold``.
        input_size: network input (width, height). When given and 5+C is 6 (one class),
            N must be a raw head's row count for it (3 per grid cell, or 1 for YOLOX),
            else the output is taken for an NMS-included (1, N, 6) export and refused.
    """
    rows = _drop_batch(output, 2, "yolov5 output")
    shape = tuple(np.shape(output))
    if rows.shape[1] != 5 + num_classes:
        raise ModelError(
            f"yolov5 output has {rows.shape[1]} columns per box; the manifest's "
            f"{num_classes} classes need 5+{num_classes}={5 + num_classes}"
            + (_nms_hint(shape) or _class_hint(rows.shape[1] - 5, num_classes))
        )
    _refuse_nms_rows(rows, shape, input_size, "yolov5 output")
    score, box, best = _from_rows(rows, score_threshold, objectness=True)
    xyxy = _cxcywh_to_xyxy(box[:, 0], box[:, 1], box[:, 2], box[:, 3])
    return _detections(xyxy, score, best)


def decode_yolov8(
    output: npt.NDArray[Any],
    *,
    num_classes: int,
    score_threshold: float,
    input_size: tuple[int, int] | None = None,
) -> Detections:
    """Ultralytics YOLOv8 / YOLO11 export (no objectness).

    Args:
        output: (1, 4+C, N) as exported (or (1, N, 4+C) transposed, recognised by shape):
            cx, cy, w, h in input pixels, then C class probabilities.
        num_classes: C.
        score_threshold: keep ``max(cls) > score_threshold``.
        input_size: network input (width, height). When given and a transposed output has
            4+C = 6 columns (two classes), N must be a raw head's row count for it (one per
            grid cell of strides 8/16/32, 8400 at 640x640), else the output is taken for an
            NMS-included (1, N, 6) export (end2end, YOLOv10) and refused.
    """
    a = _drop_batch(output, 2, "yolov8 output")
    shape = tuple(np.shape(output))
    n_attr = 4 + num_classes
    if a.shape[0] == n_attr:
        cls = a[4:]  # (C, N)
        score_all = cls.max(axis=0)
        idx = np.flatnonzero(score_all > score_threshold)
        best = cls[:, idx].argmax(axis=0)
        box = a[:4, idx]
        xyxy = _cxcywh_to_xyxy(box[0], box[1], box[2], box[3])
        return _detections(xyxy, score_all[idx], best)
    if a.shape[1] == n_attr:
        _refuse_nms_rows(a, shape, input_size, "yolov8 output")
        score, box, best2 = _from_rows(a, score_threshold, objectness=False)
        xyxy = _cxcywh_to_xyxy(box[:, 0], box[:, 1], box[:, 2], box[:, 3])
        return _detections(xyxy, score, best2)
    raise ModelError(
        f"yolov8 output shape {tuple(np.shape(output))} does not have 4+{num_classes}="
        f"{n_attr} attributes per box (manifest has {num_classes} classes)"
        # Raw heads have far more boxes than attributes: the smaller axis is 4+C.
        + (_nms_hint(shape) or _class_hint(min(a.shape) - 4, num_classes))
    )


@lru_cache(maxsize=16)
def _yolox_grid(
    input_size: tuple[int, int], strides: tuple[int, ...]
) -> tuple[FloatArray, FloatArray]:
    """(N, 2) cell (x, y) and (N,) stride for YOLOX's anchor-free grid (read-only)."""
    iw, ih = input_size
    grids, stride_col = [], []
    for s in strides:
        gw, gh = iw // s, ih // s
        ys, xs = np.meshgrid(np.arange(gh, dtype=_F32), np.arange(gw, dtype=_F32), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        stride_col.append(np.full(gw * gh, s, dtype=_F32))
    grid = np.concatenate(grids)
    stride = np.concatenate(stride_col)
    grid.setflags(write=False)
    stride.setflags(write=False)
    return grid, stride


def decode_yolox(
    output: npt.NDArray[Any],
    *,
    num_classes: int,
    input_size: tuple[int, int],
    strides: Sequence[int] = (8, 16, 32),
    decoded: bool = False,
    score_threshold: float,
) -> Detections:
    """Megvii YOLOX export.

    Args:
        output: (1, N, 5+C). Raw export (``decoded=False``): per cell of each stride's grid
            (strides in order, cells row-major), tx, ty, tw, th, objectness, C classes;
            objectness and classes already sigmoid (as YOLOX's head emits them).
            ``cx = (tx + cell_x) * stride``, ``w = exp(tw) * stride``, likewise y / h.
            ``N`` must equal ``sum((W // s) * (H // s))``. With ``decoded=True`` the boxes
            are already cx, cy, w, h in input pixels (``decode_in_inference`` export).
            A raw output with any tx/ty/tw/th above 10 (in any row, scored or not) is
            taken for a decoded export and refused.
        num_classes: C.
        input_size: network input (width, height).
        strides: grid strides, in output order.
        decoded: the export already decoded the boxes.
        score_threshold: keep ``obj * max(cls) > score_threshold``.
    """
    if decoded:
        return decode_yolov5(
            output, num_classes=num_classes, score_threshold=score_threshold, input_size=input_size
        )
    rows = _drop_batch(output, 2, "yolox output")
    if rows.shape[1] != 5 + num_classes:
        raise ModelError(
            f"yolox output has {rows.shape[1]} columns per box; the manifest's "
            f"{num_classes} classes need 5+{num_classes}={5 + num_classes}"
            + _class_hint(rows.shape[1] - 5, num_classes)
        )
    grid, stride = _yolox_grid(tuple(input_size), tuple(int(s) for s in strides))
    if rows.shape[0] != grid.shape[0]:
        raise ModelError(
            f"yolox output has {rows.shape[0]} rows; input {tuple(input_size)} with strides "
            f"{list(strides)} gives {grid.shape[0]} grid cells (is 'decoded' or 'strides' wrong?)"
        )
    # A decode_in_inference export has the same shape; its cx, cy, w, h in pixels would go
    # through exp() again (one whole-frame box). Every row has a box, even a low-score one.
    biggest = float(rows[:, :4].max()) if rows.shape[0] else 0.0
    if biggest > _YOLOX_RAW_MAX:
        raise ModelError(
            f"yolox outputs look already decoded: largest tx/ty/tw/th value {biggest:.1f}, "
            f"but a raw head gives cell offsets and log sizes (> {_YOLOX_RAW_MAX:g} would be "
            "a box far beyond any image); set decoded: true in the manifest "
            "(a decode_in_inference export)"
        )
    obj_ok = np.flatnonzero(rows[:, 4] > score_threshold)
    sub = rows[obj_ok]
    cls = sub[:, 5:]
    best = cls.argmax(axis=1) if sub.shape[0] else np.zeros((0,), np.intp)
    score = cls[np.arange(sub.shape[0]), best] * sub[:, 4]
    keep = score > score_threshold
    idx = obj_ok[keep]
    sub = sub[keep]
    s = stride[idx]
    cx = (sub[:, 0] + grid[idx, 0]) * s
    cy = (sub[:, 1] + grid[idx, 1]) * s
    w = _exp(sub[:, 2]) * s
    h = _exp(sub[:, 3]) * s
    return _detections(_cxcywh_to_xyxy(cx, cy, w, h), score[keep], best[keep])


def decode_yolov3(
    outputs: Sequence[npt.NDArray[Any]],
    *,
    anchors: Sequence[Sequence[Sequence[float]]],
    num_classes: int,
    input_size: tuple[int, int],
    score_threshold: float,
) -> Detections:
    """Darknet YOLOv3 / YOLOv3-tiny raw heads.

    Args:
        outputs: one (1, A*(5+C), H, W) tensor per head, channel ``a*(5+C) + k`` holding
            attribute ``k`` (tx, ty, tw, th, objectness, C classes; all logits) of anchor
            ``a``.
        anchors: per head (same order as ``outputs``), A anchors (w, h) in input pixels.
        num_classes: C.
        input_size: network input (width, height); ``stride = input / grid`` per axis.
        score_threshold: keep ``sigmoid(obj) * max(sigmoid(cls)) > score_threshold``
            (Darknet's YOLOv3 score).

    Box: ``cx = (sigmoid(tx) + cell_x) * stride_x``, ``w = exp(tw) * anchor_w``, likewise
    y / h, then centre/size -> corners.
    """
    if len(outputs) != len(anchors):
        raise ModelError(
            f"yolov3 model has {len(outputs)} outputs but the manifest gives anchors for "
            f"{len(anchors)}"
        )
    iw, ih = input_size
    parts: list[Detections] = []
    for i, (out, head) in enumerate(zip(outputs, anchors, strict=True)):
        x = _drop_batch(out, 3, f"yolov3 output {i}")
        n_anchor = len(head)
        n_attr = 5 + num_classes
        if x.shape[0] != n_anchor * n_attr:
            raise ModelError(
                f"yolov3 output {i} has {x.shape[0]} channels; {n_anchor} anchors x "
                f"(5+{num_classes} classes) = {n_anchor * n_attr} expected"
            )
        gh, gw = x.shape[1:]
        p = x.reshape(n_anchor, n_attr, gh, gw)
        obj = _sigmoid(p[:, 4])  # (A, H, W)
        a_idx, gy, gx = np.nonzero(obj > score_threshold)  # score <= obj: safe prefilter
        sel = p[a_idx, :, gy, gx]  # (K, 5+C)
        cls = _sigmoid(sel[:, 5:])
        best = cls.argmax(axis=1) if sel.shape[0] else np.zeros((0,), np.intp)
        score = cls[np.arange(sel.shape[0]), best] * obj[a_idx, gy, gx]
        keep = score > score_threshold
        sel, a_idx, gx, gy = sel[keep], a_idx[keep], gx[keep], gy[keep]
        anc = np.asarray(head, dtype=_F32).reshape(n_anchor, 2)
        cx = (_sigmoid(sel[:, 0]) + gx.astype(_F32)) * _F32(iw / gw)
        cy = (_sigmoid(sel[:, 1]) + gy.astype(_F32)) * _F32(ih / gh)
        w = _exp(sel[:, 2]) * anc[a_idx, 0]
        h = _exp(sel[:, 3]) * anc[a_idx, 1]
        parts.append(_detections(_cxcywh_to_xyxy(cx, cy, w, h), score[keep], best[keep]))
    return Detections.concatenate(parts)


def decode_ssd(
    boxes: npt.NDArray[Any],
    scores: npt.NDArray[Any],
    *,
    num_classes: int,
    input_size: tuple[int, int],
    box_format: str = "xyxy",
    box_normalized: bool = True,
    has_background: bool = False,
    score_threshold: float,
) -> Detections:
    """SSD-style two-output export (boxes already decoded against the priors).

    Args:
        boxes: (1, N, 4) corners, ``xyxy`` or ``yxyx`` (``box_format``), in 0..1 of the
            input size when ``box_normalized`` else in input pixels.
        scores: (1, N, C) class probabilities, or (1, N, C+1) with background in column 0
            when ``has_background``.
        num_classes: C.
        input_size: network input (width, height).
        score_threshold: keep ``max(class score) > score_threshold`` (background ignored).
    """
    b = _drop_batch(boxes, 2, "ssd boxes")
    s = _drop_batch(scores, 2, "ssd scores")
    if b.shape[1] != 4:
        raise ModelError(f"ssd boxes output must be (1, N, 4), got {tuple(np.shape(boxes))}")
    want = num_classes + (1 if has_background else 0)
    if s.shape[1] != want:
        raise ModelError(
            f"ssd scores have {s.shape[1]} columns; {num_classes} classes"
            f"{' + background' if has_background else ''} need {want}"
        )
    if s.shape[0] != b.shape[0]:
        raise ModelError(f"ssd boxes ({b.shape[0]}) and scores ({s.shape[0]}) differ in N")
    if has_background:
        s = s[:, 1:]
    score_all = s.max(axis=1)
    idx = np.flatnonzero(score_all > score_threshold)
    best = s[idx].argmax(axis=1) if idx.size else np.zeros((0,), np.intp)
    sel = b[idx]
    if box_format == "yxyx":
        sel = sel[:, [1, 0, 3, 2]]
    elif box_format != "xyxy":
        raise ModelError(f"unknown ssd box_format {box_format!r}")
    if box_normalized:
        iw, ih = input_size
        sel = sel * np.array([iw, ih, iw, ih], dtype=_F32)
    return _detections(np.ascontiguousarray(sel, dtype=_F32), score_all[idx], best)


# -- dispatch by manifest family --------------------------------------------------------

DecodeFn = Callable[[ModelManifest, Sequence[npt.NDArray[Any]], float], Detections]


def _one(manifest: ModelManifest, outputs: Sequence[npt.NDArray[Any]]) -> npt.NDArray[Any]:
    if len(outputs) != 1:
        raise ModelError(
            f"family {manifest.family!r} expects one output, model gives {len(outputs)}; "
            "set output_names in the manifest"
        )
    return outputs[0]


def _run_yolov3(m: ModelManifest, outs: Sequence[npt.NDArray[Any]], thr: float) -> Detections:
    assert m.anchors is not None  # guaranteed by ModelManifest validation
    return decode_yolov3(
        outs,
        anchors=m.anchors,
        num_classes=m.num_classes,
        input_size=m.input_size,
        score_threshold=thr,
    )


def _run_yolov5(m: ModelManifest, outs: Sequence[npt.NDArray[Any]], thr: float) -> Detections:
    return decode_yolov5(
        _one(m, outs), num_classes=m.num_classes, score_threshold=thr, input_size=m.input_size
    )


def _run_yolov8(m: ModelManifest, outs: Sequence[npt.NDArray[Any]], thr: float) -> Detections:
    return decode_yolov8(
        _one(m, outs), num_classes=m.num_classes, score_threshold=thr, input_size=m.input_size
    )


def _run_yolox(m: ModelManifest, outs: Sequence[npt.NDArray[Any]], thr: float) -> Detections:
    return decode_yolox(
        _one(m, outs),
        num_classes=m.num_classes,
        input_size=m.input_size,
        strides=m.yolox_strides,
        decoded=m.decoded,
        score_threshold=thr,
    )


def _run_ssd(m: ModelManifest, outs: Sequence[npt.NDArray[Any]], thr: float) -> Detections:
    if len(outs) != 2:
        raise ModelError(f"family 'ssd' expects two outputs (boxes, scores), got {len(outs)}")
    boxes, scores = outs
    if m.output_names is None:
        # Without output_names, recognise the boxes tensor by its last axis of 4. With 4
        # score columns (3 classes + background, or 4 classes) both end in 4: the order
        # cannot be told from the shapes, and a wrong guess gives no boxes and no error.
        b_last, s_last = np.shape(boxes)[-1], np.shape(scores)[-1]
        if b_last == s_last:
            raise ModelError(
                f"family 'ssd': ambiguous outputs: both end in {b_last} "
                f"({tuple(np.shape(boxes))}, {tuple(np.shape(scores))}), so which is the "
                "boxes tensor cannot be told from the shapes; set output_names in the "
                "manifest: [<boxes output>, <scores output>]"
            )
        if b_last != 4 and s_last == 4:
            boxes, scores = scores, boxes
    return decode_ssd(
        boxes,
        scores,
        num_classes=m.num_classes,
        input_size=m.input_size,
        box_format=m.box_format,
        box_normalized=m.box_normalized,
        has_background=m.has_background,
        score_threshold=thr,
    )


DECODERS: Mapping[Family, DecodeFn] = {
    "yolov3": _run_yolov3,
    "yolov5": _run_yolov5,
    "yolov8": _run_yolov8,
    "yolo11": _run_yolov8,
    "yolox": _run_yolox,
    "ssd": _run_ssd,
}


def decode_outputs(
    manifest: ModelManifest,
    outputs: Sequence[npt.NDArray[Any]],
    *,
    score_threshold: float,
) -> Detections:
    """Decode a model's outputs with the decoder for ``manifest.family``.

    Args:
        manifest: selects the decoder and gives classes, anchors, strides, box format.
        outputs: the session outputs, ordered as ``manifest.output_names`` (if set).
        score_threshold: candidates whose score is not above it are dropped.

    Returns:
        Candidates (before NMS) in network-input pixels.
    """
    return DECODERS[manifest.family](manifest, outputs, score_threshold)
