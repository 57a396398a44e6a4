"""What a task needs from a detector, as a Protocol so tasks stay testable with any model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from edge.types import Detections

ImageBGR = npt.NDArray[np.uint8]
"""(H, W, 3) uint8 BGR image, as OpenCV decodes it."""


class DetectorLike(Protocol):
    """The part of :class:`edge.runtime.detector.Detector` the tasks use."""

    @property
    def class_names(self) -> Sequence[str]: ...

    def detect(
        self,
        image_bgr: ImageBGR,
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        classes: Sequence[str] | None = None,
    ) -> Detections: ...
