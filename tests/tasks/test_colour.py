"""HSV colour naming on crafted patches (pure colours, noise, background margins), and the
workwear rules (hi-vis share, skin ignored, red vs orange)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.tasks.colour import (
    BINS,
    HAT_COLOURS,
    HIVIS_SHARE,
    WORKWEAR_COLOURS,
    bin_pixels,
    crop,
    crop_colour,
    torso_box,
    workwear_colour,
)
from edge.tasks.workwear import WORKWEAR_CLASSNAMES


def patch(bgr: tuple[int, int, int], size: int = 40) -> np.ndarray:
    return np.full((size, size, 3), bgr, dtype=np.uint8)


@pytest.mark.parametrize(
    ("bgr", "expected"),
    [
        ((0, 0, 220), "red"),
        ((30, 30, 160), "red"),
        ((0, 140, 255), "orange"),
        ((0, 220, 230), "yellow"),
        ((40, 200, 40), "green"),
        ((200, 60, 0), "blue"),
        ((140, 80, 40), "blue"),
        ((160, 40, 140), "purple"),
        ((240, 240, 240), "light"),
        ((190, 195, 200), "light"),
        ((20, 20, 20), "dark"),
        ((110, 110, 110), "grey"),
    ],
)
def test_pure_patches(bgr: tuple[int, int, int], expected: str) -> None:
    name, share = crop_colour(patch(bgr))
    assert name == expected
    assert share == pytest.approx(1.0)


def test_margin_ignores_background_ring() -> None:
    img = patch((20, 20, 20), 100)
    img[20:80, 20:80] = (0, 220, 230)  # yellow centre, dark ring of 20 px
    assert crop_colour(img, margin=0.2)[0] == "yellow"
    # With no margin the dark ring (64 % of pixels) wins.
    assert crop_colour(img, margin=0.0)[0] == "dark"


def test_noisy_majority_and_share() -> None:
    rng = np.random.default_rng(0)
    img = patch((200, 60, 0), 50)
    mask = rng.random((50, 50)) < 0.3
    img[mask] = (240, 240, 240)
    name, share = crop_colour(img, margin=0.0)
    assert name == "blue"
    assert 0.6 < share < 0.8


def test_bin_counts_sum_to_pixels() -> None:
    rng = np.random.default_rng(1)
    hsv = rng.integers(0, 256, size=(17, 23, 3), dtype=np.uint8)
    hsv[..., 0] %= 180
    counts = bin_pixels(hsv)
    assert counts.shape == (len(BINS),)
    assert counts.sum() == 17 * 23


def test_empty_crop() -> None:
    assert crop_colour(np.zeros((0, 0, 3), np.uint8)) == ("grey", 0.0)


def test_crop_clips_to_image() -> None:
    img = np.arange(10 * 12 * 3, dtype=np.uint8).reshape(10, 12, 3)
    assert crop(img, np.array([-5, -5, 4, 3], np.float32)).shape == (3, 4, 3)
    assert crop(img, np.array([10, 8, 50, 50], np.float32)).shape == (2, 2, 3)
    assert crop(img, np.array([20, 20, 30, 30], np.float32)).size == 0


def test_torso_box_geometry() -> None:
    t = torso_box(np.array([[100, 0, 200, 100]], np.float32))
    np.testing.assert_allclose(t, [[120, 20, 180, 60]])


def test_vocabularies_use_contract_names() -> None:
    assert set(HAT_COLOURS.values()) <= {"blue_hat", "white_hat", "yellow_hat", "red_hat"}
    assert set(WORKWEAR_COLOURS.values()) <= {"light", "blue", "red", "dark", "yellow"}
    assert set(HAT_COLOURS) | set(WORKWEAR_COLOURS) <= set(BINS)


def test_hsv_conversion_roundtrip_for_named_hues() -> None:
    # The bin edges are in OpenCV hue units (0..179); check a hue sweep lands in order.
    hues = np.arange(0, 180, dtype=np.uint8)
    hsv = np.stack([hues, np.full_like(hues, 200), np.full_like(hues, 200)], axis=1)
    bgr = cv2.cvtColor(hsv.reshape(1, -1, 3), cv2.COLOR_HSV2BGR)
    names = [crop_colour(bgr[:, i : i + 1], margin=0.0)[0] for i in range(180)]
    assert names[0] == "red" and names[179] == "red"
    assert names[25] == "yellow" and names[110] == "blue" and names[60] == "green"


# -- workwear_colour: rules measured on real crops (tests/tasks/test_colour_labels.py) ------


@pytest.mark.parametrize(
    ("bgr", "expected"),
    [
        ((0, 140, 255), "yellow"),  # hi-vis orange counts as yellow
        ((0, 255, 190), "yellow"),  # fluorescent lime (H 38): yellow, not green
        ((0, 220, 230), "yellow"),
        ((0, 0, 200), "red"),
        ((200, 60, 0), "blue"),
        ((50, 15, 10), "dark"),  # navy below V 60
        ((235, 235, 235), "light"),
        ((40, 200, 40), "other"),  # green has no contract name
        ((160, 40, 140), "other"),
        ((110, 110, 110), "other"),  # grey
    ],
)
def test_workwear_pure_patches(bgr: tuple[int, int, int], expected: str) -> None:
    name, share = workwear_colour(patch(bgr))
    assert name == expected
    assert share == pytest.approx(1.0)
    assert name in WORKWEAR_CLASSNAMES


def test_workwear_ignores_skin() -> None:
    img = patch((120, 160, 220), 100)  # skin tone: H 12, S 116, V 220
    img[:, 70:] = (200, 60, 0)  # 30 % blue shirt
    assert crop_colour(img, margin=0.0)[0] == "orange"
    assert workwear_colour(img, margin=0.0) == ("blue", 1.0)
    # A crop that is all skin names nothing.
    assert workwear_colour(patch((120, 160, 220))) == ("other", 0.0)


@pytest.mark.parametrize(("strip_rows", "expected"), [(20, "yellow"), (10, "dark")])
def test_workwear_hivis_share_beats_the_majority(strip_rows: int, expected: str) -> None:
    # A dark jacket under an open vest: hi-vis orange on strip_rows of 100 rows.
    img = patch((20, 20, 20), 100)
    img[:strip_rows] = (0, 140, 255)
    name, share = workwear_colour(img, margin=0.0)
    assert name == expected
    assert share == pytest.approx(
        strip_rows / 100 if expected == "yellow" else 1 - strip_rows / 100
    )
    assert (strip_rows / 100 >= HIVIS_SHARE) == (expected == "yellow")


def test_workwear_red_is_not_orange() -> None:
    # Hue 3 (red fabric) stays red; hue 10 (hi-vis orange) is yellow.
    for hue, expected in ((3, "red"), (176, "red"), (10, "yellow")):
        hsv = np.full((20, 20, 3), (hue, 220, 200), np.uint8)
        bgr = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
        assert workwear_colour(bgr, margin=0.0)[0] == expected, hue


def test_workwear_empty_crop() -> None:
    assert workwear_colour(np.zeros((0, 0, 3), np.uint8)) == ("other", 0.0)
