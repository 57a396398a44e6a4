"""Letterbox geometry, tensor layout/normalisation, and the inverse box mapping."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.runtime.preprocess import Letterbox, PreprocessSpec, preprocess
from edge.runtime.registry import ModelManifest
from tests.runtime.graphs import manifest_dict


@pytest.mark.parametrize(
    ("orig", "inp", "center", "expect"),
    [
        # (w, h) -> (w, h): (scale_x, scale_y, pad_x, pad_y, resized)
        ((768, 576), (416, 416), True, (416 / 768, 312 / 576, 0, 52, (416, 312))),
        ((768, 576), (416, 416), False, (416 / 768, 312 / 576, 0, 0, (416, 312))),
        ((576, 768), (416, 416), True, (312 / 576, 416 / 768, 52, 0, (312, 416))),
        ((1920, 1080), (640, 640), True, (640 / 1920, 360 / 1080, 0, 140, (640, 360))),
        ((416, 416), (416, 416), True, (1.0, 1.0, 0, 0, (416, 416))),
        ((100, 50), (416, 416), True, (416 / 100, 208 / 50, 0, 104, (416, 208))),
        ((101, 50), (64, 64), True, (64 / 101, 32 / 50, 0, 16, (64, 32))),
        ((100, 51), (64, 64), True, (64 / 100, 33 / 51, 0, 15, (64, 33))),  # odd pad: 15 + 16
    ],
)
def test_letterbox_fit(
    orig: tuple[int, int],
    inp: tuple[int, int],
    center: bool,
    expect: tuple[float, float, int, int, tuple[int, int]],
) -> None:
    lb = Letterbox.fit(orig, inp, center=center)
    sx, sy, px, py, resized = expect
    assert lb.scale_x == pytest.approx(sx)
    assert lb.scale_y == pytest.approx(sy)
    assert (lb.pad_x, lb.pad_y) == (px, py)
    assert lb.resized_size == resized
    assert lb.original_size == orig and lb.input_size == inp


def test_plain_resize_has_no_padding() -> None:
    lb = Letterbox.fit((768, 576), (320, 320), keep_aspect=False)
    assert (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y) == (320 / 768, 320 / 576, 0, 0)
    assert lb.resized_size == (320, 320)


def test_letterbox_rejects_empty_sizes() -> None:
    with pytest.raises(ValueError, match="positive"):
        Letterbox.fit((0, 10), (416, 416))


@settings(max_examples=200, deadline=None)
@given(
    w=st.integers(1, 4000),
    h=st.integers(1, 4000),
    iw=st.integers(32, 1280),
    ih=st.integers(32, 1280),
    keep=st.booleans(),
    center=st.booleans(),
    fx=st.lists(st.floats(0.0, 1.0), min_size=4, max_size=4),
)
def test_map_then_unmap_is_identity(
    w: int, h: int, iw: int, ih: int, keep: bool, center: bool, fx: list[float]
) -> None:
    lb = Letterbox.fit((w, h), (iw, ih), keep_aspect=keep, center=center)
    x1, x2 = sorted((fx[0] * w, fx[1] * w))
    y1, y2 = sorted((fx[2] * h, fx[3] * h))
    box = np.array([[x1, y1, x2, y2]], np.float32)
    mapped = lb.map_boxes(box)
    # the mapped box lies inside the resized region of the input
    rw, rh = lb.resized_size
    assert mapped[0, 0] >= lb.pad_x - 1e-3 and mapped[0, 2] <= lb.pad_x + rw + 1e-2
    assert mapped[0, 1] >= lb.pad_y - 1e-3 and mapped[0, 3] <= lb.pad_y + rh + 1e-2
    back = lb.unmap_boxes(mapped)
    np.testing.assert_allclose(back, box, rtol=1e-5, atol=max(w, h) * 1e-5)


def test_unmap_clips_to_image_and_collapses_boxes_in_padding() -> None:
    lb = Letterbox.fit((768, 576), (416, 416))  # pad_y = 52
    boxes = np.array(
        [
            [-20.0, 40.0, 100.0, 200.0],  # starts left of the input and in the top pad
            [10.0, 300.0, 430.0, 410.0],  # reaches into the bottom pad and past the right
            [10.0, 0.0, 100.0, 50.0],  # wholly in the top pad
        ],
        np.float32,
    )
    out = lb.unmap_boxes(boxes)
    assert out.dtype == np.float32 and out.shape == (3, 4)
    s = 768 / 416
    np.testing.assert_allclose(out[0], [0.0, 0.0, 100 * s, (200 - 52) * s], rtol=1e-5)
    np.testing.assert_allclose(out[1], [10 * s, (300 - 52) * s, 768.0, 576.0], rtol=1e-5)
    assert out[2, 1] == out[2, 3] == 0.0  # zero height on the top border


def test_unmap_empty() -> None:
    lb = Letterbox.fit((768, 576), (416, 416))
    assert lb.unmap_boxes(np.zeros((0, 4), np.float32)).shape == (0, 4)


def _bgr(w: int, h: int, b: int, g: int, r: int) -> np.ndarray:
    img = np.empty((h, w, 3), np.uint8)
    img[...] = (b, g, r)
    return img


def test_tensor_layout_channel_swap_and_pad() -> None:
    spec = PreprocessSpec(input_size=(64, 64), pad_value=127.5, scale=1 / 255)
    x, lb = preprocess(_bgr(128, 64, 10, 20, 30), spec)
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32 and x.flags.c_contiguous
    assert (lb.pad_x, lb.pad_y, lb.resized_size) == (0, 16, (64, 32))
    inner = x[0, :, 16:48, :]
    np.testing.assert_allclose(inner[0], 30 / 255, rtol=1e-6)  # R first (rgb network)
    np.testing.assert_allclose(inner[1], 20 / 255, rtol=1e-6)
    np.testing.assert_allclose(inner[2], 10 / 255, rtol=1e-6)
    np.testing.assert_allclose(x[0, :, :16, :], 0.5, rtol=1e-6)  # Darknet pad 0.5
    np.testing.assert_allclose(x[0, :, 48:, :], 0.5, rtol=1e-6)


def test_bgr_network_mean_std() -> None:
    spec = PreprocessSpec(
        input_size=(32, 32),
        swap_rb=False,
        scale=1 / 255,
        mean=(0.485, 0.456, 0.406),
        std=(0.229, 0.224, 0.225),
        pad_value=0.0,
    )
    x, _ = preprocess(_bgr(32, 16, 255, 0, 100), spec)
    inner = x[0, :, 8:24, :]
    np.testing.assert_allclose(inner[0], (1.0 - 0.485) / 0.229, rtol=1e-5)  # B stays first
    np.testing.assert_allclose(inner[1], (0.0 - 0.456) / 0.224, rtol=1e-5)
    np.testing.assert_allclose(inner[2], (100 / 255 - 0.406) / 0.225, rtol=1e-5)
    np.testing.assert_allclose(x[0, 0, :8], (0.0 - 0.485) / 0.229, rtol=1e-5)  # pad 0


def test_yolox_style_top_left_raw_pixels() -> None:
    spec = PreprocessSpec(
        input_size=(64, 64), center=False, swap_rb=False, scale=1.0, pad_value=114.0
    )
    x, lb = preprocess(_bgr(64, 32, 1, 2, 3), spec)
    assert (lb.pad_x, lb.pad_y) == (0, 0)
    np.testing.assert_array_equal(x[0, :, :32, :].reshape(3, -1).mean(axis=1), [1, 2, 3])
    np.testing.assert_array_equal(x[0, :, 32:, :], 114.0)


def test_float16_tensor() -> None:
    spec = PreprocessSpec(input_size=(48, 32), dtype="float16")
    x, _ = preprocess(_bgr(48, 32, 0, 128, 255), spec)
    assert x.dtype == np.float16 and x.shape == (1, 3, 32, 48)
    np.testing.assert_allclose(x[0, 0].astype(np.float32), 1.0, atol=1e-3)
    np.testing.assert_allclose(x[0, 1].astype(np.float32), 128 / 255, atol=1e-3)


def test_content_lands_where_the_letterbox_maps_it() -> None:
    img = np.zeros((300, 600, 3), np.uint8)
    img[100:200, 240:360] = 255  # white rectangle
    spec = PreprocessSpec(input_size=(320, 320), pad_value=0.0)
    x, lb = preprocess(img, spec)
    ys, xs = np.nonzero(x[0, 0] > 0.5)
    mapped = lb.map_boxes(np.array([[240, 100, 360, 200]], np.float32))[0]
    assert abs(xs.min() - mapped[0]) <= 1 and abs(xs.max() + 1 - mapped[2]) <= 1
    assert abs(ys.min() - mapped[1]) <= 1 and abs(ys.max() + 1 - mapped[3]) <= 1


def test_spec_from_manifest() -> None:
    m = ModelManifest.model_validate(
        manifest_dict(
            input_size=[320, 256],
            channel_order="bgr",
            letterbox=False,
            pad_position="top_left",
            pad_value=0,
            scale=1.0,
            mean=[1, 2, 3],
            std=[4, 5, 6],
        )
    )
    spec = PreprocessSpec.from_manifest(m, dtype="float16")
    assert spec == PreprocessSpec(
        input_size=(320, 256),
        letterbox=False,
        center=False,
        pad_value=0.0,
        swap_rb=False,
        scale=1.0,
        mean=(1.0, 2.0, 3.0),
        std=(4.0, 5.0, 6.0),
        dtype="float16",
    )
    x, lb = preprocess(np.zeros((100, 50, 3), np.uint8), spec)
    assert x.shape == (1, 3, 256, 320) and lb.pad_x == lb.pad_y == 0


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((10, 10), np.uint8),
        np.zeros((10, 10, 4), np.uint8),
        np.zeros((10, 10, 3), np.float32),
        np.zeros((0, 10, 3), np.uint8),
    ],
)
def test_rejects_bad_images(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="image"):
        preprocess(bad, PreprocessSpec(input_size=(32, 32)))
