"""Workwear wearing: one item per person, ``classname`` = workwear colour or ``no_workwear``.

The detector says whether a person wears workwear (class ``wear``) or not
(``no_wear``); the colour is named from HSV statistics of the torso part of the box
(:func:`edge.tasks.colour.torso_box`), mapped to the contract's
``light/blue/red/dark/yellow/other``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge.tasks.base import DetectorLike, ImageBGR
from edge.tasks.colour import WORKWEAR_COLOURS, crop, crop_colour, torso_box
from edge.tasks.hardhat import ResultItem

NO_WORKWEAR = "no_workwear"
WORKWEAR_CLASSNAMES = ("light", "blue", "other", "red", "dark", "yellow", NO_WORKWEAR)

_WEAR = {"wear", "workwear", "vest", "uniform"}
_NO_WEAR = {"no_wear", "no_workwear", "no_vest", "no_uniform"}


@dataclass(frozen=True)
class WorkwearTask:
    """People with their workwear colour (or ``no_workwear``) from a wear/no_wear detector."""

    detector: DetectorLike
    score_threshold: float | None = None
    box_is_torso: bool = False
    """True when the model's boxes already cover only the torso (no torso crop needed)."""

    def run(self, image_bgr: ImageBGR) -> list[ResultItem]:
        names = [n.strip().lower() for n in self.detector.class_names]
        wanted = [
            orig
            for orig, n in zip(self.detector.class_names, names, strict=True)
            if n in _WEAR or n in _NO_WEAR
        ]
        if not wanted:
            return []
        dets = self.detector.detect(image_bgr, score_threshold=self.score_threshold, classes=wanted)
        dets = dets[np.argsort(-dets.scores, kind="stable")]
        torsos = dets.xyxy if self.box_is_torso else torso_box(dets.xyxy)
        out: list[ResultItem] = []
        for torso, tlbr, score, cid in zip(
            torsos, dets.to_tlbr_ints(), dets.scores, dets.class_ids, strict=True
        ):
            if names[int(cid)] in _NO_WEAR:
                classname = NO_WORKWEAR
            else:
                colour, _ = crop_colour(crop(image_bgr, torso), margin=0.1)
                classname = WORKWEAR_COLOURS.get(colour, "other")
            out.append({"box": tlbr, "classname": classname, "score": round(float(score), 4)})
        return out
