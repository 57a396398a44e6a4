"""Electronic fence: which people/vehicles are inside a polygon.

A target is inside when its *anchor* lies in the polygon (contract decision: the
bottom-centre point, i.e. the feet), or, in ``overlap`` mode, when at least
``overlap_threshold`` of its box area lies in the polygon.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from edge.kernels.geometry import box_anchors, box_polygon_overlap, points_in_polygon
from edge.tasks.base import DetectorLike, ImageBGR
from edge.types import Detections

AnchorMode = Literal["bottom_center", "center", "overlap"]

PEOPLE: tuple[str, ...] = ("person",)
VEHICLES: tuple[str, ...] = ("bicycle", "car", "motorcycle", "bus", "truck")
PEOPLE_AND_VEHICLES: tuple[str, ...] = PEOPLE + VEHICLES


def inside_mask(
    dets: Detections,
    polygon: npt.NDArray[np.float64],
    *,
    anchor: AnchorMode = "bottom_center",
    overlap_threshold: float = 0.5,
) -> npt.NDArray[np.bool_]:
    """(N,) bool: which detections are inside ``polygon`` ((M,2) pixels), one vectorized call."""
    if len(dets) == 0:
        return np.zeros((0,), dtype=np.bool_)
    if anchor == "overlap":
        return np.asarray(box_polygon_overlap(dets.xyxy, polygon) >= overlap_threshold)
    return np.asarray(points_in_polygon(box_anchors(dets.xyxy, anchor), polygon))


@dataclass(frozen=True)
class FenceTask:
    """People (and optionally vehicles) inside a polygon, from any person/vehicle detector.

    ``classes`` are detector class names that count as targets; names the detector
    does not know are ignored, so a person-only model works too.
    """

    detector: DetectorLike
    classes: Sequence[str] = field(default=PEOPLE_AND_VEHICLES)
    anchor: AnchorMode = "bottom_center"
    overlap_threshold: float = 0.5
    score_threshold: float | None = None

    def targets(self, image_bgr: ImageBGR) -> Detections:
        """All targets of the counted classes in the image (original pixels)."""
        known = [c for c in self.classes if c in self.detector.class_names]
        if not known:
            return Detections.empty()
        return self.detector.detect(image_bgr, score_threshold=self.score_threshold, classes=known)

    def run(self, image_bgr: ImageBGR, polygon: npt.NDArray[np.float64]) -> Detections:
        """Targets inside ``polygon``, highest score first."""
        dets = self.targets(image_bgr)
        dets = dets[
            inside_mask(dets, polygon, anchor=self.anchor, overlap_threshold=self.overlap_threshold)
        ]
        return dets[np.argsort(-dets.scores, kind="stable")]


def fence_result(dets: Detections) -> dict[str, object]:
    """The contract's per-image fence item: ``{"target_num": n, "location": [...]}``."""
    return {"target_num": len(dets), "location": dets.to_ltwh_dicts()}
