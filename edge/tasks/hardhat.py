"""Hard-hat wearing: one item per head, ``classname`` = hat colour or ``no_hat``.

Works with any detector whose class names say what a box is:

- colour classes (``red``, ``blue``, ``white``, ``yellow``, ``other`` or with a
  ``_hat`` suffix) name the colour directly;
- generic hat classes (``helmet``, ``hat``, ``hardhat``) get their colour from HSV
  statistics of the box (:mod:`edge.tasks.colour`);
- bare-head classes (``none``, ``no_hat``, ``no_helmet``, ``head``) give ``no_hat``.

Other classes of the model (e.g. ``wear``) are ignored.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

import numpy as np

from edge.tasks.base import DetectorLike, ImageBGR
from edge.tasks.colour import HAT_COLOURS, crop, crop_colour

NO_HAT = "no_hat"
OTHER_HAT = "other_hat"
HAT_CLASSNAMES = ("blue_hat", "white_hat", "yellow_hat", "red_hat", OTHER_HAT, NO_HAT)

_BARE = {"none", "no_hat", "no_helmet", "head", "nohat"}
_GENERIC = {"helmet", "hat", "hardhat", "hard_hat"}
_DIRECT = {
    "red": "red_hat",
    "blue": "blue_hat",
    "white": "white_hat",
    "yellow": "yellow_hat",
    "other": OTHER_HAT,
    "orange": OTHER_HAT,
}


class ResultItem(TypedDict):
    """One item of the hard-hat/workwear contract's result list."""

    box: list[int]
    classname: str
    score: float


def hat_classname(model_class: str) -> str | None:
    """Contract classname for a model class name; ``""`` = colour from pixels; None = ignore."""
    name = model_class.strip().lower()
    if name in _BARE:
        return NO_HAT
    if name in _GENERIC:
        return ""
    base = name[: -len("_hat")] if name.endswith("_hat") else name
    return _DIRECT.get(base)


@dataclass(frozen=True)
class HardhatTask:
    """Heads with their hat colour (or ``no_hat``) from a head/hat detector."""

    detector: DetectorLike
    score_threshold: float | None = None

    def run(self, image_bgr: ImageBGR) -> list[ResultItem]:
        names = list(self.detector.class_names)
        wanted = [n for n in names if hat_classname(n) is not None]
        if not wanted:
            return []
        dets = self.detector.detect(image_bgr, score_threshold=self.score_threshold, classes=wanted)
        order = np.argsort(-dets.scores, kind="stable")
        dets = dets[order]
        out: list[ResultItem] = []
        for box, tlbr, score, cid in zip(
            dets.xyxy, dets.to_tlbr_ints(), dets.scores, dets.class_ids, strict=True
        ):
            classname = hat_classname(names[int(cid)])
            if classname == "":
                colour, _ = crop_colour(crop(image_bgr, box))
                classname = HAT_COLOURS.get(colour, OTHER_HAT)
            assert classname is not None
            out.append({"box": tlbr, "classname": classname, "score": round(float(score), 4)})
        return out
