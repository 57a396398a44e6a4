"""A user's own ONNX export whose outputs do not fit its manifest is refused when the
detector LOADS, with a message that says what to change; the fitting variants still work.

Every test writes a real ``.onnx`` file and YAML manifest, discovers it through the
registry (:meth:`Detector.from_name`) and runs it in onnxruntime. The planted graphs imitate
exporter layouts: Ultralytics raw heads and NMS-included exports (YOLOv10 / ``end2end`` /
``nms=True``), YOLOX with and without ``decode_in_inference``, two-output SSD, and NHWC
(TensorFlow-style) inputs.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge.errors import ModelError
from edge.runtime.decoders import decode_yolov5, decode_yolov8, decode_yolox
from edge.runtime.detector import Detector
from edge.runtime.preprocess import Letterbox
from edge.runtime.registry import load_manifest
from tests.runtime.graphs import (
    OPSET,
    fails_on_real_images_model,
    planted_model,
    write_model_and_manifest,
    yolov8_output,
)

IMG_W, IMG_H = 1280, 720
COCO = [f"c{i}" for i in range(80)]


def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(IMG_H, IMG_W, 3), dtype=np.uint8)


def drop_in(
    folder: Path,
    outputs: dict[str, np.ndarray],
    *,
    family: str,
    class_names: list[str],
    input_size: tuple[int, int] = (640, 640),
    **fields: Any,
) -> Path:
    """A planted model + manifest called ``m`` in ``folder``; returns the manifest path."""
    return write_model_and_manifest(
        folder,
        planted_model(outputs, input_size=input_size),
        name="m",
        family=family,
        input_size=input_size,
        class_names=class_names,
        **fields,
    )


def to_input_cxcywh(box: list[float], size: tuple[int, int] = (640, 640)) -> list[float]:
    x1, y1, x2, y2 = Letterbox.fit((IMG_W, IMG_H), size).map_boxes(np.array([box], np.float32))[0]
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


# -- 1. class count ------------------------------------------------------------------------


@pytest.mark.parametrize("warmup", [1, 0])
def test_class_count_mismatch_is_refused_at_load(tmp_path: Path, warmup: int) -> None:
    """An 80-class COCO YOLOv8 export with a manifest listing only the 3 classes the user
    wants: before, it loaded and raised on the first frame (killing the camera thread)."""
    out = yolov8_output([(320, 320, 100, 200)], [[0.9] + [0.0] * 79], num_anchors=8400)
    yaml_path = drop_in(tmp_path, {"output0": out}, family="yolov8", class_names=["a", "b", "c"])
    with pytest.raises(ModelError) as err:
        Detector.from_name("m", tmp_path, warmup=warmup)
    msg = str(err.value)
    assert str(yaml_path) in msg
    assert "yolov8" in msg and "(1, 84, 8400)" in msg
    assert "4+3=7" in msg and "3 classes" in msg
    assert "80 classes" in msg  # what the output looks like


def test_class_count_match_still_loads_and_detects(tmp_path: Path) -> None:
    truth = [100.0, 200.0, 300.0, 400.0]
    out = yolov8_output([to_input_cxcywh(truth)], [[0.0, 0.0, 0.9]], num_anchors=8400)
    drop_in(tmp_path, {"output0": out}, family="yolov8", class_names=["a", "b", "c"])
    with Detector.from_name("m", tmp_path) as det:
        d = det.detect(image())
    np.testing.assert_allclose(d.xyxy, [truth], atol=1e-3)
    np.testing.assert_array_equal(d.class_ids, [2])


# -- 2. exports with NMS built in ---------------------------------------------------------


def nms_export(rows: list[list[float]], n: int = 300) -> np.ndarray:
    """(1, n, 6) rows x1, y1, x2, y2, score, class (Ultralytics end2end / nms=True)."""
    out = np.zeros((1, n, 6), np.float32)
    if rows:
        out[0, : len(rows)] = rows
    return out


@pytest.mark.parametrize(
    ("family", "classes"),
    [("yolov8", ["person", "car"]), ("yolo11", ["person", "car"]), ("yolov5", ["person"])],
)
def test_nms_export_whose_shape_fits_is_refused_at_load(
    tmp_path: Path, family: str, classes: list[str]
) -> None:
    """(1, 300, 6) fits 4+2 (yolov8) and 5+1 (yolov5) attributes: before, the rows were
    silently read as cx, cy, w, h[, obj] and boxes came out wrong."""
    out = nms_export([[220.0, 270.0, 420.0, 370.0, 0.9, 1.0]])
    drop_in(tmp_path, {"output0": out}, family=family, class_names=classes)
    with pytest.raises(ModelError, match=r"\(1, 300, 6\).*NMS built in.*re-export without NMS"):
        Detector.from_name("m", tmp_path)


def test_nms_export_with_other_class_count_names_nms(tmp_path: Path) -> None:
    drop_in(tmp_path, {"output0": nms_export([])}, family="yolov8", class_names=COCO)
    with pytest.raises(ModelError, match=r"4\+80=84.*NMS built in"):
        Detector.from_name("m", tmp_path)


def test_raw_exports_with_six_columns_still_decode(tmp_path: Path) -> None:
    """The transposed raw heads that look like (N, 6) but have one row per anchor."""
    truth = [100.0, 200.0, 300.0, 400.0]
    cx, cy, w, h = to_input_cxcywh(truth)
    v8 = np.zeros((1, 8400, 6), np.float32)  # YOLOv8 transposed, 2 classes, 640 input
    v8[0, 5] = [cx, cy, w, h, 0.1, 0.8]
    drop_in(tmp_path / "v8", {"output0": v8}, family="yolov8", class_names=["a", "b"])
    v5 = np.zeros((1, 25200, 6), np.float32)  # YOLOv5, 1 class: 3 anchors per cell
    v5[0, 7] = [cx, cy, w, h, 0.9, 0.9]
    drop_in(tmp_path / "v5", {"output0": v5}, family="yolov5", class_names=["a"])
    for sub, cls, score in (("v8", 1, 0.8), ("v5", 0, 0.81)):
        with Detector.from_name("m", tmp_path / sub) as det:
            d = det.detect(image())
        np.testing.assert_allclose(d.xyxy, [truth], atol=1e-3)
        np.testing.assert_allclose(d.scores, [score], rtol=1e-6)
        np.testing.assert_array_equal(d.class_ids, [cls])
    # The decoders alone (no input size known) keep their old behaviour.
    assert len(decode_yolov8(nms_export([]), num_classes=2, score_threshold=0.5)) == 0
    assert len(decode_yolov5(nms_export([]), num_classes=1, score_threshold=0.5)) == 0


# -- 3. YOLOX exported with decode_in_inference --------------------------------------------


def yolox_decoded_rows(num_classes: int, size: int = 640) -> np.ndarray:
    """What ``decode_in_inference`` gives on a featureless image: every grid cell's box
    centred on its cell, 2 strides wide, in input pixels; low scores."""
    rows = []
    for s in (8, 16, 32):
        g = size // s
        ys, xs = np.meshgrid(np.arange(g), np.arange(g), indexing="ij")
        cell = np.zeros((g * g, 5 + num_classes), np.float32)
        cell[:, 0] = (xs.ravel() + 0.5) * s
        cell[:, 1] = (ys.ravel() + 0.5) * s
        cell[:, 2:4] = 2 * s
        cell[:, 4] = 0.01
        cell[:, 5:] = 0.02
        rows.append(cell)
    return np.concatenate(rows)[None]


def test_yolox_decoded_export_with_decoded_false_is_refused_at_load(tmp_path: Path) -> None:
    """Same (1, 8400, 5+C) shape as the raw export: before, the pixel sizes went through
    exp() again and one whole-frame box came out (every fence zone occupied)."""
    out = yolox_decoded_rows(1)
    out[0, 100, :6] = [320.0, 320.0, 100.0, 200.0, 0.95, 0.9]
    drop_in(tmp_path, {"output": out}, family="yolox", class_names=["person"])
    with pytest.raises(ModelError, match=r"look already decoded.*set decoded: true"):
        Detector.from_name("m", tmp_path)
    # decoded: true is the fix, and the planted box comes back.
    drop_in(tmp_path, {"output": out}, family="yolox", class_names=["person"], decoded=True)
    with Detector.from_name("m", tmp_path) as det:
        d = det.detect(np.zeros((640, 640, 3), np.uint8))
    np.testing.assert_allclose(d.xyxy, [[270, 220, 370, 420]], atol=1e-3)
    # The decoder checks every frame too, not only the warm-up.
    with pytest.raises(ModelError, match="set decoded: true"):
        decode_yolox(out, num_classes=1, input_size=(640, 640), score_threshold=0.5)


def test_yolox_raw_export_with_large_but_possible_offsets_decodes() -> None:
    rows = np.zeros((1, 8400, 6), np.float32)
    r = 6400 + 1600 + 10 * 20 + 5  # stride 32, cell x=5, y=10
    rows[0, r] = [0.0, 0.0, math.log(640 / 32), math.log(200 / 32), 0.9, 0.95]
    rows[0, 0, :4] = [-3.0, 2.0, -9.0, 9.9]  # unusual, not impossible
    d = decode_yolox(rows, num_classes=1, input_size=(640, 640), score_threshold=0.5)
    np.testing.assert_allclose(d.xyxy, [[-160, 220, 480, 420]], atol=1e-3)


# -- 4. SSD with equal last axes -----------------------------------------------------------


def ssd_outputs() -> tuple[np.ndarray, np.ndarray]:
    """3 classes + background: boxes (1, 100, 4) yxyx normalised, scores (1, 100, 4)."""
    b = np.zeros((1, 100, 4), np.float32)
    s = np.zeros((1, 100, 4), np.float32)
    s[0, :, 0] = 1.0
    b[0, 0] = [270 / 640, 220 / 640, 370 / 640, 420 / 640]
    s[0, 0] = [0.05, 0.9, 0.03, 0.02]
    return b, s


def test_ssd_with_equal_last_axes_needs_output_names(tmp_path: Path) -> None:
    """Scores-first export of 3 classes + background: both outputs end in 4, the shape
    swap cannot tell them apart; before, no detections and no error."""
    b, s = ssd_outputs()
    fields: dict[str, Any] = {"box_format": "yxyx", "has_background": True}
    classes = ["person", "car", "truck"]
    drop_in(tmp_path, {"scores": s, "boxes": b}, family="ssd", class_names=classes, **fields)
    with pytest.raises(ModelError, match=r"ambiguous outputs.*set output_names"):
        Detector.from_name("m", tmp_path)
    drop_in(
        tmp_path,
        {"scores": s, "boxes": b},
        family="ssd",
        class_names=classes,
        output_names=["boxes", "scores"],
        **fields,
    )
    with Detector.from_name("m", tmp_path) as det:
        d = det.detect(np.zeros((640, 640, 3), np.uint8))
    np.testing.assert_allclose(d.xyxy, [[220, 270, 420, 370]], atol=1e-3)
    np.testing.assert_array_equal(d.class_ids, [0])


# -- 5. NHWC input -------------------------------------------------------------------------


def conv_model(in_shape: list[int | str], *, nhwc: bool, num_classes: int = 2) -> onnx.ModelProto:
    """A real 1x1 convolution, stride 32, to a YOLOv8-style (1, 4+C, N) output; ``nhwc``
    transposes an NHWC input to NCHW first (as tf2onnx exports do)."""
    w = np.random.default_rng(0).normal(0, 0.1, (4 + num_classes, 3, 1, 1)).astype(np.float32)
    nodes = []
    x = "images"
    if nhwc:
        nodes.append(helper.make_node("Transpose", ["images"], ["nchw"], perm=[0, 3, 1, 2]))
        x = "nchw"
    nodes.append(helper.make_node("Conv", [x, "w"], ["c"], strides=[32, 32]))
    nodes.append(helper.make_node("Reshape", ["c", "shape"], ["output0"]))
    graph = helper.make_graph(
        nodes,
        "conv",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, [1, 4 + num_classes, "n"])],
        initializer=[
            numpy_helper.from_array(w, "w"),
            numpy_helper.from_array(np.array([1, 4 + num_classes, -1], np.int64), "shape"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.mark.parametrize(
    "in_shape",
    [[1, 640, 640, 3], ["batch", "height", "width", 3], ["batch", "h", "w", "c"]],
    ids=["static", "dynamic-hw", "all-dynamic"],
)
def test_nhwc_input_is_named(tmp_path: Path, in_shape: list[int | str]) -> None:
    """Before: 'input is 3xwidth (WxH)', 'input has 640 channels', or an onnxruntime
    Conv error (all-dynamic) - none of which says what is wrong."""
    write_model_and_manifest(
        tmp_path, conv_model(in_shape, nhwc=True), name="m", input_size=(640, 640)
    )
    with pytest.raises(ModelError, match=r"NHWC input \(last dimension 3\); export it NCHW"):
        Detector.from_name("m", tmp_path)


def test_dynamic_nchw_conv_model_loads(tmp_path: Path) -> None:
    path = write_model_and_manifest(
        tmp_path, conv_model(["batch", 3, "h", "w"], nhwc=False), name="m", input_size=(640, 640)
    )
    with Detector(load_manifest(path)) as det:
        assert len(det.detect(image(), score_threshold=1.0)) == 0


# -- run-time faults still reach detect() ----------------------------------------------


def test_fault_model_loads_and_fails_on_real_frames(tmp_path: Path) -> None:
    """The graph other tests use to inject a decoder fault at run time, now that a
    class-count mismatch no longer loads: passes the grey load check, fails on frames."""
    out = yolov8_output([(32, 40, 10, 20)], [[0.9, 0.0]])
    path = write_model_and_manifest(
        tmp_path, fails_on_real_images_model(out, input_size=(64, 64)), input_size=(64, 64)
    )
    with Detector(load_manifest(path)) as det:
        with pytest.raises(ModelError, match=r"\(1, 7, 64\) does not have 4\+2=6"):
            det.detect(image())
        with pytest.raises(ModelError):
            det.detect(image())  # every frame, not only the first
