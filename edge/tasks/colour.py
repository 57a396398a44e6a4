"""Colour names from HSV statistics of an image crop.

Each pixel of the (central part of the) crop is put in one bin by fixed HSV rules
(OpenCV ranges: H 0..179, S and V 0..255); the crop's colour is the bin with most
pixels, and its share of pixels is the confidence. The rules are documented in the
README; they are deliberately simple so an integrator can reason about them.

Bins: ``dark`` (V < 60), ``light`` (S < 45 and V >= 150), ``grey`` (other low-S
pixels), ``red`` (H < 8 or H >= 165), ``orange`` (8..19), ``yellow`` (20..34),
``green`` (35..84), ``blue`` (85..130), ``purple`` (131..164).

Workwear (:func:`workwear_colour`) uses the same bins with rules measured on real torso
crops (``tests/data/workwear_colours.csv``, hand-labelled): hi-vis orange sits at H 5..16
and fluorescent lime at H 30..44, so the hue edges move (red < 5, orange 5..19, yellow
20..44, green 45..84, blue 85..130, purple 131..169, red >= 170); skin-like pixels
(warm hue, 45 <= S < 130) are not counted; and hi-vis pixels (orange or yellow bin,
S >= 100, V >= 100) name the crop ``yellow`` once they cover 16 % of the counted pixels,
even when a shirt or jacket under an open vest holds the majority.
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


_HUE_BINS = np.array(
    [BINS.index(n) for n in ("red", "orange", "yellow", "green", "blue", "purple", "red")]
)
_HAT_HUE_EDGES = np.array([8, 20, 35, 85, 131, 165])
_WORKWEAR_HUE_EDGES = np.array([5, 20, 45, 85, 131, 170])


def _bin_index(
    h: npt.NDArray[np.int16],
    s: npt.NDArray[np.int16],
    v: npt.NDArray[np.int16],
    hue_edges: npt.NDArray[np.int64],
) -> npt.NDArray[np.int64]:
    """(P,) int16 H, S, V -> (P,) int64 index into :data:`BINS` for each pixel."""
    idx = np.full(h.shape, BINS.index("grey"), dtype=np.int64)
    chroma = (s >= 45) & (v >= 60)
    idx[chroma] = _HUE_BINS[np.searchsorted(hue_edges, h[chroma], side="right")]
    idx[(s < 45) & (v >= 150)] = BINS.index("light")
    idx[v < 60] = BINS.index("dark")
    return idx


def _channels(
    hsv: npt.NDArray[np.uint8],
) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    return (
        hsv[..., 0].astype(np.int16).ravel(),
        hsv[..., 1].astype(np.int16).ravel(),
        hsv[..., 2].astype(np.int16).ravel(),
    )


def bin_pixels(hsv: npt.NDArray[np.uint8]) -> npt.NDArray[np.int64]:
    """(..., 3) uint8 HSV pixels -> (len(BINS),) int64 pixel counts per bin."""
    h, s, v = _channels(hsv)
    return np.bincount(_bin_index(h, s, v, _HAT_HUE_EDGES), minlength=len(BINS))


def _inner_hsv(crop_bgr: npt.NDArray[np.uint8], margin: float) -> npt.NDArray[np.uint8] | None:
    """The HSV pixels of ``crop_bgr`` less ``margin`` of each side (all of it when the
    trimmed part is empty); ``None`` for an empty crop."""
    hgt, wid = crop_bgr.shape[:2]
    y0, y1 = int(hgt * margin), int(np.ceil(hgt * (1 - margin)))
    x0, x1 = int(wid * margin), int(np.ceil(wid * (1 - margin)))
    inner = crop_bgr[y0:y1, x0:x1]
    if inner.size == 0:
        inner = crop_bgr
    if inner.size == 0:
        return None
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(inner), cv2.COLOR_BGR2HSV), np.uint8)


def crop_colour(crop_bgr: npt.NDArray[np.uint8], *, margin: float = 0.2) -> tuple[str, float]:
    """Dominant colour bin of a BGR crop and its pixel share in [0, 1].

    ``margin`` trims that fraction from each side before counting, so the background
    around a box weighs less. An empty crop gives ``("grey", 0.0)``.
    """
    hsv = _inner_hsv(crop_bgr, margin)
    if hsv is None:
        return "grey", 0.0
    counts = bin_pixels(hsv)
    best = int(np.argmax(counts))
    return BINS[best], float(counts[best] / max(int(counts.sum()), 1))


HIVIS_SHARE = 0.16
"""Share of counted torso pixels that are hi-vis (orange/yellow bin, S >= 100, V >= 100)
from which :func:`workwear_colour` answers ``yellow``. Measured on the tuning half of
``tests/data/workwear_colours.csv``: clear hi-vis crops had >= 0.18, other colours <= 0.15."""


def workwear_colour(
    crop_bgr: npt.NDArray[np.uint8], *, margin: float = 0.15, hivis_share: float = HIVIS_SHARE
) -> tuple[str, float]:
    """Contract workwear colour (``light``, ``blue``, ``other``, ``red``, ``dark``,
    ``yellow``) of a BGR torso crop, and its confidence in [0, 1].

    ``margin`` trims that fraction from each side (background at the box corners).
    Skin-like pixels (hue within 20 degrees of red/orange, 45 <= S < 130, V >= 60) are
    not counted, so arms, hands and faces do not read as orange. If hi-vis pixels
    (workwear orange or yellow bin with S >= 100 and V >= 100) make up at least
    ``hivis_share`` of the counted pixels the answer is ``yellow`` (hi-vis orange counts
    as yellow, :data:`WORKWEAR_COLOURS`) with that share as confidence; otherwise the
    majority bin (workwear hue edges, module docstring) mapped through
    :data:`WORKWEAR_COLOURS`, ``other`` for bins it lacks, with its share. An empty crop,
    or one that is all skin, gives ``("other", 0.0)``.
    """
    hsv = _inner_hsv(crop_bgr, margin)
    if hsv is None:
        return "other", 0.0
    h, s, v = _channels(hsv)
    warm = (h < 25) | (h >= 170)
    counted = ~(warm & (s >= 45) & (s < 130) & (v >= 60))
    n = int(np.count_nonzero(counted))
    if n == 0:
        return "other", 0.0
    idx = _bin_index(h[counted], s[counted], v[counted], _WORKWEAR_HUE_EDGES)
    hivis = (
        ((idx == BINS.index("orange")) | (idx == BINS.index("yellow")))
        & (s[counted] >= 100)
        & (v[counted] >= 100)
    )
    hivis_frac = float(np.count_nonzero(hivis)) / n
    if hivis_frac >= hivis_share:
        return "yellow", hivis_frac
    counts = np.bincount(idx, minlength=len(BINS))
    best = int(np.argmax(counts))
    return WORKWEAR_COLOURS.get(BINS[best], "other"), float(counts[best]) / n


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
