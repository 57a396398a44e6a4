"""Each family decoder recovers boxes planted in real onnxruntime outputs of tiny graphs."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge.errors import ModelError
from edge.runtime.decoders import (
    decode_outputs,
    decode_ssd,
    decode_yolov3,
    decode_yolov5,
    decode_yolov8,
    decode_yolox,
)
from edge.runtime.registry import ModelManifest, load_manifest
from edge.runtime.session import OnnxSession
from edge.types import Detections
from tests.runtime.graphs import logit, planted_model, write_model_and_manifest, yolov8_output

CLASSES6 = ["person", "bicycle", "car", "motorcycle", "bus", "truck"]
TINY_ANCHORS = [[[81, 82], [135, 169], [344, 319]], [[10, 14], [23, 27], [37, 58]]]


def run_planted(
    tmp_path: Path, outputs: dict[str, np.ndarray], **manifest_fields: Any
) -> tuple[ModelManifest, list[np.ndarray]]:
    """Save a planted graph + manifest, run it once in onnxruntime on a grey image tensor."""
    size = tuple(manifest_fields.get("input_size", (416, 416)))
    model = planted_model(outputs, input_size=size)
    m = load_manifest(write_model_and_manifest(tmp_path, model, **manifest_fields))
    with OnnxSession(model_path=m.model_path) as s:
        x = np.full((1, 3, size[1], size[0]), 0.5, np.float32)
        outs = s.run(x, m.output_names)
    return m, outs


def by_score(d: Detections) -> Detections:
    return d[np.argsort(-d.scores, kind="stable")]


# -- yolov3 -------------------------------------------------------------------------------


def yolov3_heads(
    plants: list[tuple[int, int, int, int, list[float], float, int, float]],
    *,
    grids: tuple[tuple[int, int], ...] = ((13, 13), (26, 26)),
    num_classes: int = 6,
) -> list[np.ndarray]:
    """Heads full of 'nothing here' logits, with planted (head, anchor, gx, gy, txtytwth,
    obj p, class, class p)."""
    heads = []
    for gh, gw in grids:
        h = np.full((1, 3 * (5 + num_classes), gh, gw), -12.0, np.float32)
        heads.append(h)
    for head, a, gx, gy, t, obj, cls, p in plants:
        base = a * (5 + num_classes)
        heads[head][0, base : base + 4, gy, gx] = t
        heads[head][0, base + 4, gy, gx] = logit(obj)
        heads[head][0, base + 5 + cls, gy, gx] = logit(p)
    return heads


def test_yolov3_planted_cells(tmp_path: Path) -> None:
    t0 = [logit(0.25), logit(0.75), math.log(1.5), math.log(0.5)]
    t1 = [0.0, 0.0, 0.0, math.log(2.0)]
    heads = yolov3_heads(
        [
            (0, 1, 4, 7, t0, 0.9, 2, 0.8),  # 13x13 head, stride 32, anchor (135, 169)
            (1, 0, 20, 3, t1, 0.95, 0, 0.6),  # 26x26 head, stride 16, anchor (10, 14)
        ]
    )
    m, outs = run_planted(
        tmp_path,
        {"yolo_13": heads[0], "yolo_26": heads[1]},
        family="yolov3",
        class_names=CLASSES6,
        anchors=TINY_ANCHORS,
        output_names=["yolo_13", "yolo_26"],
    )
    d = by_score(decode_outputs(m, outs, score_threshold=0.3))
    assert len(d) == 2
    cx, cy, w, h = (0.25 + 4) * 32, (0.75 + 7) * 32, 1.5 * 135, 0.5 * 169
    np.testing.assert_allclose(
        d.xyxy[0], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5
    )
    cx, cy, w, h = (0.5 + 20) * 16, (0.5 + 3) * 16, 10.0, 28.0
    np.testing.assert_allclose(
        d.xyxy[1], [cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], rtol=1e-5
    )
    np.testing.assert_allclose(d.scores, [0.72, 0.57], rtol=1e-5)
    np.testing.assert_array_equal(d.class_ids, [2, 0])
    assert d.xyxy.dtype == np.float32 and d.class_ids.dtype == np.int32


def test_yolov3_threshold_is_an_argument(tmp_path: Path) -> None:
    heads = yolov3_heads([(0, 0, 0, 0, [0, 0, 0, 0], 0.9, 5, 0.5)])
    kw: dict[str, Any] = {"anchors": TINY_ANCHORS, "num_classes": 6, "input_size": (416, 416)}
    assert len(decode_yolov3(heads, score_threshold=0.449, **kw)) == 1  # 0.9 * 0.5
    assert len(decode_yolov3(heads, score_threshold=0.451, **kw)) == 0
    # threshold 0 keeps every anchor of every cell, each with its best class
    assert len(decode_yolov3(heads, score_threshold=0.0, **kw)) == 3 * (13 * 13 + 26 * 26)


def test_yolov3_non_square_input_uses_per_axis_stride() -> None:
    # 320x256 input: 10x8 grid, stride 32 on both axes; 640x256: stride 64 in x
    heads = yolov3_heads([(0, 2, 9, 7, [0, 0, 0, 0], 0.99, 1, 0.99)], grids=((8, 10),))
    d = decode_yolov3(
        heads,
        anchors=[[(1, 1), (2, 2), (30, 40)]],
        num_classes=6,
        input_size=(640, 256),
        score_threshold=0.5,
    )
    np.testing.assert_allclose(
        d.xyxy[0], [9.5 * 64 - 15, 7.5 * 32 - 20, 9.5 * 64 + 15, 7.5 * 32 + 20]
    )


def test_yolov3_shape_errors_name_the_cause() -> None:
    heads = yolov3_heads([], num_classes=80)
    kw: dict[str, Any] = {"input_size": (416, 416), "score_threshold": 0.5}
    with pytest.raises(ModelError, match=r"255 channels; 3 anchors x \(5\+6 classes\) = 33"):
        decode_yolov3(heads, anchors=TINY_ANCHORS, num_classes=6, **kw)
    with pytest.raises(ModelError, match="2 outputs but the manifest gives anchors for 1"):
        decode_yolov3(heads, anchors=TINY_ANCHORS[:1], num_classes=80, **kw)


def test_yolov3_float16_outputs_and_huge_logits() -> None:
    heads = yolov3_heads([(1, 2, 0, 25, [50.0, -50.0, 100.0, -100.0], 0.99, 3, 0.99)])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        d = decode_yolov3(
            [h.astype(np.float16) for h in heads],
            anchors=TINY_ANCHORS,
            num_classes=6,
            input_size=(416, 416),
            score_threshold=0.5,
        )
    assert len(d) == 1 and np.all(np.isfinite(d.xyxy))
    assert d.class_ids[0] == 3


# -- ultralytics --------------------------------------------------------------------------


def test_yolov5_planted_rows(tmp_path: Path) -> None:
    out = np.zeros((1, 100, 5 + 6), np.float32)
    out[0, :, :4] = [200, 200, 20, 20]
    out[0, 10, :] = [100, 120, 40, 60, 0.9, 0.1, 0.2, 0.7, 0, 0, 0]
    out[0, 50, :] = [300, 310, 10, 20, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.8]
    out[0, 60, :] = [300, 310, 10, 20, 0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.99]  # 0.198 < 0.3
    m, outs = run_planted(tmp_path, {"output0": out}, family="yolov5", class_names=CLASSES6)
    d = by_score(decode_outputs(m, outs, score_threshold=0.3))
    np.testing.assert_allclose(d.xyxy, [[80, 90, 120, 150], [295, 300, 305, 320]])
    np.testing.assert_allclose(d.scores, [0.63, 0.4], rtol=1e-6)
    np.testing.assert_array_equal(d.class_ids, [2, 5])


def test_yolov5_class_count_mismatch() -> None:
    with pytest.raises(ModelError, match=r"85 columns .* 6 classes need 5\+6=11"):
        decode_yolov5(np.zeros((1, 10, 85), np.float32), num_classes=6, score_threshold=0.1)


def test_yolov8_planted_columns(tmp_path: Path) -> None:
    out = yolov8_output(
        [(100, 100, 50, 80), (400, 300, 20, 10)],
        [[0.1, 0.85], [0.6, 0.2]],
        num_anchors=8400,
    )
    m, outs = run_planted(tmp_path, {"output0": out}, family="yolo11", input_size=(640, 640))
    d = by_score(decode_outputs(m, outs, score_threshold=0.25))
    np.testing.assert_allclose(d.xyxy, [[75, 60, 125, 140], [390, 295, 410, 305]])
    np.testing.assert_allclose(d.scores, [0.85, 0.6], rtol=1e-6)
    np.testing.assert_array_equal(d.class_ids, [1, 0])


def test_yolov8_accepts_transposed_and_unbatched_output() -> None:
    out = yolov8_output([(10, 10, 4, 4)], [[0.0, 0.0, 0.9]], num_anchors=5)
    a = decode_yolov8(out, num_classes=3, score_threshold=0.5)
    b = decode_yolov8(out[0].T.copy(), num_classes=3, score_threshold=0.5)
    c = decode_yolov8(out[0], num_classes=3, score_threshold=0.5)
    for d in (a, b, c):
        np.testing.assert_allclose(d.xyxy, [[8, 8, 12, 12]])
        np.testing.assert_array_equal(d.class_ids, [2])
    with pytest.raises(ModelError, match=r"4\+2=6 attributes"):
        decode_yolov8(out, num_classes=2, score_threshold=0.5)
    with pytest.raises(ModelError, match="batch size 2"):
        decode_yolov8(np.concatenate([out, out]), num_classes=3, score_threshold=0.5)


def test_empty_result_shapes() -> None:
    out = yolov8_output([(10, 10, 4, 4)], [[0.1, 0.1]], num_anchors=5)
    d = decode_yolov8(out, num_classes=2, score_threshold=0.5)
    assert len(d) == 0 and d.xyxy.shape == (0, 4)
    rows = np.zeros((1, 7, 7), np.float32)
    assert len(decode_yolov5(rows, num_classes=2, score_threshold=0.5)) == 0


# -- yolox --------------------------------------------------------------------------------


def test_yolox_raw_grid_decode(tmp_path: Path) -> None:
    # 64x64 input, strides 8/16/32 -> 8x8 + 4x4 + 2x2 = 84 rows
    out = np.zeros((1, 84, 5 + 2), np.float32)
    out[0, 64 + 1 * 4 + 3] = [0.5, 0.25, math.log(2.0), 0.0, 0.9, 0.1, 0.5]  # stride 16, x3 y1
    out[0, 80 + 1 * 2 + 0] = [0.0, 0.0, 0.0, 0.0, 0.8, 0.9, 0.0]  # stride 32, x0 y1
    m, outs = run_planted(
        tmp_path,
        {"output": out},
        family="yolox",
        input_size=(64, 64),
        channel_order="bgr",
        scale=1.0,
        pad_position="top_left",
    )
    d = by_score(decode_outputs(m, outs, score_threshold=0.3))
    np.testing.assert_allclose(d.xyxy, [[-16, 16, 16, 48], [40, 12, 72, 28]], atol=1e-5)
    np.testing.assert_allclose(d.scores, [0.72, 0.45], rtol=1e-6)
    np.testing.assert_array_equal(d.class_ids, [0, 1])


def test_yolox_grid_mismatch_and_decoded_flag() -> None:
    rows = np.zeros((1, 84, 7), np.float32)
    with pytest.raises(ModelError, match="84 rows; input \\(64, 32\\)"):
        decode_yolox(rows, num_classes=2, input_size=(64, 32), score_threshold=0.1)
    rows[0, 0] = [30, 40, 10, 20, 1.0, 0.0, 0.7]
    d = decode_yolox(rows, num_classes=2, input_size=(64, 32), decoded=True, score_threshold=0.5)
    np.testing.assert_allclose(d.xyxy, [[25, 30, 35, 50]])


# -- ssd ----------------------------------------------------------------------------------


def test_ssd_yxyx_normalised_with_background(tmp_path: Path) -> None:
    boxes = np.zeros((1, 20, 4), np.float32)
    scores = np.zeros((1, 20, 3), np.float32)
    scores[0, :, 0] = 1.0  # background everywhere ...
    boxes[0, 3] = [0.1, 0.2, 0.5, 0.6]  # y1 x1 y2 x2
    scores[0, 3] = [0.1, 0.3, 0.6]
    boxes[0, 7] = [0.0, 0.0, 1.0, 1.0]
    scores[0, 7] = [0.5, 0.45, 0.05]
    m, outs = run_planted(
        tmp_path,
        {"scores": scores, "boxes": boxes},  # scores first: recognised by shape
        family="ssd",
        input_size=(300, 200),
        box_format="yxyx",
        has_background=True,
        letterbox=False,
    )
    d = by_score(decode_outputs(m, outs, score_threshold=0.4))
    np.testing.assert_allclose(d.xyxy, [[60, 20, 180, 100], [0, 0, 300, 200]], rtol=1e-6)
    np.testing.assert_allclose(d.scores, [0.6, 0.45], rtol=1e-6)
    np.testing.assert_array_equal(d.class_ids, [1, 0])


def test_ssd_pixel_xyxy_and_errors() -> None:
    boxes = np.array([[[1, 2, 3, 4], [5, 6, 7, 8]]], np.float32)
    scores = np.array([[[0.2, 0.9], [0.3, 0.1]]], np.float32)
    d = decode_ssd(
        boxes,
        scores,
        num_classes=2,
        input_size=(10, 10),
        box_normalized=False,
        score_threshold=0.25,
    )
    np.testing.assert_allclose(d.xyxy, [[1, 2, 3, 4], [5, 6, 7, 8]])
    np.testing.assert_array_equal(d.class_ids, [1, 0])
    with pytest.raises(ModelError, match="3 columns; 2 classes need 2"):
        decode_ssd(
            boxes,
            np.zeros((1, 2, 3), np.float32),
            num_classes=2,
            input_size=(9, 9),
            score_threshold=0.1,
        )
    with pytest.raises(ModelError, match="differ in N"):
        decode_ssd(
            boxes,
            np.zeros((1, 3, 2), np.float32),
            num_classes=2,
            input_size=(9, 9),
            score_threshold=0.1,
        )


def test_single_output_family_with_two_outputs_asks_for_output_names(tmp_path: Path) -> None:
    out = yolov8_output([(10, 10, 4, 4)], [[0.9, 0.1]], num_anchors=5)
    m, outs = run_planted(tmp_path, {"a": out, "b": out}, family="yolov8")
    with pytest.raises(ModelError, match="set output_names"):
        decode_outputs(m, outs, score_threshold=0.5)


def test_threshold_is_strict_like_nms_and_darknet() -> None:
    out = yolov8_output([(10, 10, 4, 4), (30, 30, 4, 4)], [[0.5], [0.5000001]], num_anchors=4)
    d = decode_yolov8(out, num_classes=1, score_threshold=0.5)
    np.testing.assert_allclose(d.xyxy, [[28, 28, 32, 32]])
