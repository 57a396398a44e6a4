"""Colour names from HSV statistics of an image crop.

Each pixel of the (central part of the) crop is put in one bin by fixed HSV rules
(OpenCV ranges: H 0..179, S and V 0..255); the crop's colour is the bin with most
pixels, and its share of pixels is the confidence. The rules are documented in the
README; they are deliberately simple so an integrator can reason about them.

Bins: ``dark`` (V < 60), ``light`` (S < 45 and V >= 150), ``grey`` (other low-S
pixels), ``red`` (H < 8 or H >= 165), ``orange`` (8..19), ``yellow`` (20..34),
``green`` (35..84), ``blue`` (85..130), ``purple`` (131..164).
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np
import numpy.typing as npt

BINS: tuple[str, ...] = (
    "dark",
    "light",
    "grey",
    "red",
    "orange",
    "yellow",
    "green",
    "blue",
    "purple",
)

# Contract vocabularies (../shared/CONTRACT.md).
HAT_COLOURS: Mapping[str, str] = {
    "red": "red_hat",
    "blue": "blue_hat",
    "light": "white_hat",
    "yellow": "yellow_hat",
}
"""Bin -> hard-hat classname; any other bin is ``other_hat``."""

WORKWEAR_COLOURS: Mapping[str, str] = {
    "light": "light",
    "blue": "blue",
    "red": "red",
    "dark": "dark",
    "yellow": "yellow",
    "orange": "yellow",
}
"""Bin -> workwear classname; any other bin is ``other``. Hi-vis orange counts as yellow."""


def bin_pixels(hsv: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """(..., 3) uint8 HSV pixels -> (len(BINS),) int64 pixel counts per bin."""
    h = hsv[..., 0].astype(np.int16).ravel()
    s = hsv[..., 1].astype(np.int16).ravel()
    v = hsv[..., 2].astype(np.int16).ravel()
    idx = np.full(h.shape, BINS.index("grey"), dtype=np.int64)
    chroma = (s >= 45) & (v >= 60)
    hue_edges = np.array([8, 20, 35, 85, 131, 165])
    hue_bins = np.array(
        [BINS.index(n) for n in ("red", "orange", "yellow", "green", "blue", "purple", "red")]
    )
    idx[chroma] = hue_bins[np.searchsorted(hue_edges, h[chroma], side="right")]
    idx[(s < 45) & (v >= 150)] = BINS.index("light")
    idx[v < 60] = BINS.index("dark")
    return np.bincount(idx, minlength=len(BINS))


def crop_colour(crop_bgr: npt.NDArray[np.uint8], *, margin: float = 0.2) -> tuple[str, float]:
    """Dominant colour bin of a BGR crop and its pixel share in [0, 1].

    ``margin`` trims that fraction from each side before counting, so the background
    around a box weighs less. An empty crop gives ``("grey", 0.0)``.
    """
    hgt, wid = crop_bgr.shape[:2]
    y0, y1 = int(hgt * margin), int(np.ceil(hgt * (1 - margin)))
    x0, x1 = int(wid * margin), int(np.ceil(wid * (1 - margin)))
    inner = crop_bgr[y0:y1, x0:x1]
    if inner.size == 0:
        inner = crop_bgr
    if inner.size == 0:
        return "grey", 0.0
    hsv = np.asarray(cv2.cvtColor(np.ascontiguousarray(inner), cv2.COLOR_BGR2HSV), np.uint8)
    counts = bin_pixels(hsv)
    best = int(np.argmax(counts))
    return BINS[best], float(counts[best] / max(int(counts.sum()), 1))


def torso_box(xyxy: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """(N,4) person boxes -> (N,4) torso boxes: 20..60 % of the height, middle 60 % width."""
    x1, y1, x2, y2 = (xyxy[:, i] for i in range(4))
    w, h = x2 - x1, y2 - y1
    return np.stack([x1 + 0.2 * w, y1 + 0.2 * h, x2 - 0.2 * w, y1 + 0.6 * h], axis=1).astype(
        np.float32
    )


def crop(image: npt.NDArray[np.uint8], box: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """The pixels of ``image`` inside ``box`` (x1, y1, x2, y2), clipped; may be empty."""
    hgt, wid = image.shape[:2]
    x1, y1 = int(max(np.floor(box[0]), 0)), int(max(np.floor(box[1]), 0))
    x2, y2 = int(min(np.ceil(box[2]), wid)), int(min(np.ceil(box[3]), hgt))
    return image[y1 : max(y2, y1), x1 : max(x2, x1)]
