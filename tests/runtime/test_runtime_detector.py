"""The Detector end to end on real onnxruntime sessions: planted boxes come back in
original-image pixels; user-supplied models work from a manifest alone."""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge.errors import ConfigError, InferenceError, ModelError
from edge.runtime.detector import Detector
from edge.runtime.preprocess import Letterbox
from edge.runtime.registry import discover_models, load_manifest
from edge.runtime.session import StageTimings
from tests.runtime.graphs import logit, planted_model, write_model_and_manifest, yolov8_output

IMG_W, IMG_H = 1280, 720


def image(w: int = IMG_W, h: int = IMG_H) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def ref_nms(xyxy: np.ndarray, scores: np.ndarray, iou: float, cls: np.ndarray) -> np.ndarray:
    """Plain greedy class-aware NMS, the comparison for the detector's kernel."""
    order = list(np.argsort(-scores, kind="stable"))
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(i)
        rest = []
        for j in order:
            if cls[j] != cls[i]:
                rest.append(j)
                continue
            x1, y1 = max(xyxy[i, 0], xyxy[j, 0]), max(xyxy[i, 1], xyxy[j, 1])
            x2, y2 = min(xyxy[i, 2], xyxy[j, 2]), min(xyxy[i, 3], xyxy[j, 3])
            inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
            a_i = (xyxy[i, 2] - xyxy[i, 0]) * (xyxy[i, 3] - xyxy[i, 1])
            a_j = (xyxy[j, 2] - xyxy[j, 0]) * (xyxy[j, 3] - xyxy[j, 1])
            union = a_i + a_j - inter
            if union <= 0 or inter / union <= iou:
                rest.append(j)
        order = rest
    return np.array(keep, dtype=np.int64)


def to_input_cxcywh(box: Sequence[float], lb: Letterbox) -> tuple[float, float, float, float]:
    """An original-image box as the centre/size the model would emit in input pixels."""
    x1, y1, x2, y2 = lb.map_boxes(np.array([box], np.float32))[0]
    return (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1


def yolov8_detector(
    tmp_path: Path,
    boxes: Sequence[Sequence[float]],
    scores: Sequence[Sequence[float]],
    *,
    input_size: tuple[int, int] = (640, 640),
    image_size: tuple[int, int] = (IMG_W, IMG_H),
    input_dtype: type[np.floating[Any]] = np.float32,
    **fields: Any,
) -> Detector:
    lb = Letterbox.fit(image_size, input_size)
    out = yolov8_output([to_input_cxcywh(b, lb) for b in boxes], scores, num_anchors=200)
    model = planted_model({"output0": out}, input_size=input_size, input_dtype=input_dtype)
    path = write_model_and_manifest(
        tmp_path, model, family="yolov8", input_size=input_size, **fields
    )
    return Detector(load_manifest(path), warmup=0)


# -- user drop-in models ------------------------------------------------------------------


def test_user_drops_in_a_yolov8_model_and_manifest(tmp_path: Path) -> None:
    """A user's Ultralytics export plus a YAML file: discovered, loaded, boxes in image px."""
    models = tmp_path / "models"
    lb = Letterbox.fit((IMG_W, IMG_H), (640, 640))
    truth = [[100.0, 200.0, 300.0, 400.0], [900.0, 50.0, 1250.0, 700.0]]
    out = yolov8_output(
        [to_input_cxcywh(b, lb) for b in truth],
        [[0.2, 0.1, 0.9], [0.7, 0.0, 0.0]],
        num_anchors=8400,
    )
    write_model_and_manifest(
        models,
        planted_model({"output0": out}, input_size=(640, 640)),
        name="site_ppe",
        family="yolov8",
        input_size=(640, 640),
        class_names=["helmet", "vest", "person"],
    )
    found = discover_models(models)
    assert list(found) == ["site_ppe"]
    with Detector.from_name("site_ppe", models, warmup=1) as det:
        assert det.class_names == ["helmet", "vest", "person"]
        d = det.detect(image())
    np.testing.assert_allclose(d.xyxy, truth, atol=1e-3)
    np.testing.assert_allclose(d.scores, [0.9, 0.7], rtol=1e-6)
    np.testing.assert_array_equal(d.class_ids, [2, 0])


def test_user_drops_in_a_raw_yolox_model(tmp_path: Path) -> None:
    """YOLOX: BGR, raw 0..255 pixels, top-left padding, grid decode from the manifest."""
    size = (64, 64)
    lb = Letterbox.fit((128, 96), size, center=False)
    assert (lb.pad_x, lb.pad_y, lb.scale_x) == (0, 0, 0.5)
    out = np.zeros((1, 84, 5 + 1), np.float32)
    # stride 16 cell (x=2, y=1): box centre (2.5*16, 1.5*16) = (40, 24), size 32x16 input px
    out[0, 64 + 1 * 4 + 2] = [0.5, 0.5, math.log(2.0), 0.0, 0.95, 0.9]
    write_model_and_manifest(
        tmp_path,
        planted_model({"output": out}, input_size=size),
        name="yolox_nano",
        family="yolox",
        input_size=size,
        class_names=["person"],
        channel_order="bgr",
        scale=1.0,
        pad_position="top_left",
    )
    with Detector.from_name("yolox_nano", tmp_path, warmup=0) as det:
        d = det.detect(image(128, 96))
    np.testing.assert_allclose(d.xyxy, [[48, 32, 112, 64]], atol=1e-4)
    np.testing.assert_allclose(d.scores, [0.855], rtol=1e-6)


def test_from_name_unknown_model(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"no model named 'x'.*found: none"):
        Detector.from_name("x", tmp_path)


# -- yolov3 (the shipped model's family) --------------------------------------------------


def test_yolov3_planted_box_comes_back_in_image_pixels(tmp_path: Path) -> None:
    anchors = [[[81, 82], [135, 169], [344, 319]], [[10, 14], [23, 27], [37, 58]]]
    heads = [np.full((1, 33, g, g), -12.0, np.float32) for g in (13, 26)]
    # head 0, anchor 1 (135x169), cell x=6 y=6: centre (6.5*32, 6.25*32) = (208, 200)
    heads[0][0, 11:15, 6, 6] = [0.0, logit(0.25), 0.0, 0.0]
    heads[0][0, 15, 6, 6] = logit(0.9)
    heads[0][0, 16, 6, 6] = logit(0.9)  # class 0: person
    path = write_model_and_manifest(
        tmp_path,
        planted_model({"yolo_13": heads[0], "yolo_26": heads[1]}),
        family="yolov3",
        class_names=["person", "bicycle", "car", "motorcycle", "bus", "truck"],
        anchors=anchors,
        output_names=["yolo_13", "yolo_26"],
        pad_value=127.5,
    )
    with Detector(load_manifest(path), warmup=0) as det:
        d = det.detect(image(768, 576))
    s = 768 / 416  # letterbox 768x576 -> 416x312, pad_y 52
    cx, cy, w, h = 208.0, 200.0, 135.0, 169.0
    expect = [(cx - w / 2) * s, (cy - h / 2 - 52) * s, (cx + w / 2) * s, (cy + h / 2 - 52) * s]
    np.testing.assert_allclose(d.xyxy, [expect], rtol=1e-5)
    np.testing.assert_allclose(d.scores, [0.81], rtol=1e-5)
    assert d.class_ids.tolist() == [0]


# -- NMS, thresholds, classes -------------------------------------------------------------


def test_class_aware_nms_and_class_filter(tmp_path: Path) -> None:
    boxes = [
        [100, 100, 300, 300],  # person 0.9
        [110, 105, 310, 305],  # person 0.8: overlaps the first -> suppressed
        [110, 105, 310, 305],  # car 0.7: other class -> kept
        [600, 100, 700, 200],  # person 0.6, apart -> kept
    ]
    scores = [[0.9, 0.0], [0.8, 0.0], [0.0, 0.7], [0.6, 0.0]]
    with yolov8_detector(tmp_path, boxes, scores) as det:
        d = det.detect(image())
        np.testing.assert_allclose(d.scores, [0.9, 0.7, 0.6], rtol=1e-6)
        np.testing.assert_array_equal(d.class_ids, [0, 1, 0])
        only_cars = det.detect(image(), classes=["car"])
        np.testing.assert_allclose(only_cars.xyxy, [boxes[2]], atol=1e-3)
        assert det.detect(image(), iou_threshold=0.95).scores.tolist() == pytest.approx(
            [0.9, 0.8, 0.7, 0.6]
        )
        assert len(det.detect(image(), score_threshold=0.65)) == 2  # 0.9 and 0.7
        with pytest.raises(ConfigError, match="no class \\['dog'\\]"):
            det.detect(image(), classes=["dog"])
        with pytest.raises(ValueError, match="score_threshold"):
            det.detect(image(), score_threshold=1.5)


def test_matches_reference_greedy_nms_on_many_boxes(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    n = 150
    xy = rng.uniform([0, 0], [1100, 600], size=(n, 2))
    wh = rng.uniform(40, 250, size=(n, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [IMG_W, IMG_H])], axis=1).round(1)
    scores = np.zeros((n, 3))
    scores[np.arange(n), rng.integers(0, 3, n)] = rng.uniform(0.3, 1.0, n).round(4)
    with yolov8_detector(
        tmp_path, boxes.tolist(), scores.tolist(), class_names=["a", "b", "c"]
    ) as det:
        d = det.detect(image(), score_threshold=0.25, iou_threshold=0.5)
    best = scores.max(axis=1)
    cls = scores.argmax(axis=1)
    keep = ref_nms(boxes, best, 0.5, cls)
    assert len(d) == len(keep) > 10
    np.testing.assert_allclose(d.scores, best[keep], rtol=1e-6)
    np.testing.assert_array_equal(d.class_ids, cls[keep])
    np.testing.assert_allclose(d.xyxy, boxes[keep], atol=2e-3)


def test_max_detections_and_boxes_in_padding(tmp_path: Path) -> None:
    lb = Letterbox.fit((IMG_W, IMG_H), (640, 640))
    assert lb.pad_y == 140
    # one box entirely in the top padding (input y 10..100), one real
    out = yolov8_output(
        [(320, 55, 100, 90), (320, 320, 50, 50), (100, 320, 50, 50)],
        [[0.9], [0.8], [0.7]],
        num_anchors=10,
    )
    path = write_model_and_manifest(
        tmp_path,
        planted_model({"o": out}, input_size=(640, 640)),
        family="yolov8",
        input_size=(640, 640),
        class_names=["x"],
        max_detections=2,
    )
    with Detector(load_manifest(path), warmup=0) as det:
        d = det.detect(image())
    # the padding box is dropped before NMS, so max_detections=2 counts real boxes only
    np.testing.assert_allclose(d.scores, [0.8, 0.7], rtol=1e-6)


# -- model / manifest disagreements -------------------------------------------------------


def test_sha_mismatch_and_missing_file(tmp_path: Path) -> None:
    out = yolov8_output([(10, 10, 4, 4)], [[0.9, 0.0]], num_anchors=3)
    path = write_model_and_manifest(
        tmp_path, planted_model({"o": out}), name="tampered", sha256="0" * 64
    )
    m = load_manifest(path)
    with pytest.raises(ModelError, match="does not match the manifest's sha256"):
        Detector(m)
    with Detector(m, verify_sha256=False, warmup=0) as det:
        assert det.providers == ["CPUExecutionProvider"]
    (tmp_path / "tampered.onnx").unlink()
    with pytest.raises(ModelError, match=r"file .*tampered\.onnx does not exist"):
        Detector(m)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"input_size": (320, 320)}, "input is 416x416 .* input_size 320x320"),
        ({"dtype": "float16"}, "manifest dtype float16 but the model input is float32"),
        ({"output_names": ["nope"]}, r"output_names \['nope'\] not in the model's outputs"),
        ({"input_name": "pixels"}, "no input 'pixels'"),
    ],
)
def test_manifest_model_disagreements(tmp_path: Path, fields: dict[str, Any], message: str) -> None:
    out = yolov8_output([(10, 10, 4, 4)], [[0.9, 0.0]], num_anchors=3)
    path = write_model_and_manifest(tmp_path, planted_model({"o": out}), **fields)
    with pytest.raises(ModelError, match=message):
        Detector(load_manifest(path))


def test_wrong_class_count_is_refused_at_load(tmp_path: Path) -> None:
    """Not at the first frame (where it used to surface, killing a camera thread)."""
    out = yolov8_output([(10, 10, 4, 4)], [[0.9, 0.0]], num_anchors=3)
    path = write_model_and_manifest(tmp_path, planted_model({"o": out}), class_names=["a"])
    with pytest.raises(ModelError, match=r"\(1, 6, 3\), 1 classes in the manifest: .*4\+1"):
        Detector(load_manifest(path), warmup=0)


def test_float16_model(tmp_path: Path) -> None:
    with yolov8_detector(
        tmp_path, [[100, 200, 300, 400]], [[0.9, 0.0]], input_dtype=np.float16
    ) as det:
        assert det.input_dtype == "float16"
        d = det.detect(image())
    np.testing.assert_allclose(d.xyxy, [[100, 200, 300, 400]], atol=1e-3)


def test_dynamic_input_shape_model(tmp_path: Path) -> None:
    out = yolov8_output([(32, 32, 16, 16)], [[0.9, 0.0]], num_anchors=3)
    path = write_model_and_manifest(
        tmp_path, planted_model({"o": out}, dynamic_hw=True), input_size=(64, 64)
    )
    with Detector(load_manifest(path), warmup=1) as det:
        d = det.detect(image(64, 64))
    np.testing.assert_allclose(d.xyxy, [[24, 24, 40, 40]], atol=1e-4)


# -- timings, threads, lifecycle ----------------------------------------------------------


def test_timings_are_returned_and_recorded(tmp_path: Path) -> None:
    with yolov8_detector(tmp_path, [[100, 200, 300, 400]], [[0.9, 0.0]]) as det:
        assert det.last_timings == StageTimings()
        dets, t = det.detect_with_timings(image())
        assert len(dets) == 1
        assert det.last_timings == t
        assert t.inference_ms > 0 and t.preprocess_ms > 0 and t.decode_ms > 0 and t.nms_ms > 0
        assert t.total_ms == pytest.approx(
            t.preprocess_ms + t.inference_ms + t.decode_ms + t.nms_ms
        )


def test_concurrent_detect_calls_agree(tmp_path: Path) -> None:
    boxes = [[100, 100, 300, 300], [600, 100, 700, 200], [50, 400, 500, 700]]
    scores = [[0.9, 0.0], [0.0, 0.6], [0.5, 0.0]]
    results: list[np.ndarray] = []
    errors: list[BaseException] = []
    lock = threading.Lock()
    with yolov8_detector(tmp_path, boxes, scores) as det:
        ref = det.detect(image())

        def work(seed: int) -> None:
            try:
                for _ in range(5):
                    d = det.detect(image())
                    with lock:
                        results.append(np.concatenate([d.xyxy, d.scores[:, None]], axis=1))
            except BaseException as exc:  # collected and re-raised in the main thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(timeout=30)
    assert not errors
    assert len(results) == 20
    expect = np.concatenate([ref.xyxy, ref.scores[:, None]], axis=1)
    for r in results:
        np.testing.assert_array_equal(r, expect)


def test_close_is_idempotent_and_final(tmp_path: Path) -> None:
    det = yolov8_detector(tmp_path, [[100, 200, 300, 400]], [[0.9, 0.0]])
    assert "yolov8" in repr(det)
    det.close()
    det.close()
    assert det.closed and "closed" in repr(det)
    with pytest.raises(InferenceError, match="closed"):
        det.detect(image())


def test_bad_image_is_a_value_error(tmp_path: Path) -> None:
    with (
        yolov8_detector(tmp_path, [[100, 200, 300, 400]], [[0.9, 0.0]]) as det,
        pytest.raises(ValueError, match="image"),
    ):
        det.detect(np.zeros((10, 10), np.uint8))


# -- the shipped default model ------------------------------------------------------------


def test_default_model_finds_pedestrians(default_model_manifest: Path, repo_root: Path) -> None:
    frame = cv2.imread(str(repo_root / "samples" / "vtest_frame.jpg"))
    assert frame is not None
    with Detector(load_manifest(default_model_manifest), intra_op_threads=1) as det:
        d = det.detect(frame, classes=["person"])
        h, w = frame.shape[:2]
        assert len(d) >= 2
        assert set(d.class_ids.tolist()) == {det.class_names.index("person")}
        assert np.all(d.xyxy >= 0) and np.all(d.xyxy[:, [0, 2]] <= w)
        assert np.all(d.xyxy[:, [1, 3]] <= h)
        assert np.all(np.diff(d.scores) <= 0)
        # pedestrians are taller than wide
        wh = d.xyxy[:, 2:] - d.xyxy[:, :2]
        assert np.median(wh[:, 1] / wh[:, 0]) > 1.2


@pytest.mark.parametrize(("kwargs", "entry"), [({}, "0"), ({"allow_spinning": True}, "1")])
def test_allow_spinning_passes_through_to_the_session(
    tmp_path: Path, kwargs: dict[str, bool], entry: str
) -> None:
    """Default off (several detectors share a gateway's cores); True reaches onnxruntime."""
    out = yolov8_output([(10, 10, 4, 4)], [[0.9, 0.0]], num_anchors=3)
    path = write_model_and_manifest(
        tmp_path, planted_model({"output0": out}, input_size=(64, 64)), input_size=(64, 64)
    )
    with Detector(load_manifest(path), warmup=0, **kwargs) as det:
        ort_session = det._session._session
        assert ort_session is not None
        opts = ort_session.get_session_options()
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == entry
        assert det.allow_spinning is (entry == "1")
