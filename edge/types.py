"""Value types shared by every layer.

:class:`Detections` is the one value type for boxes: parallel numpy arrays, filtered
by indexing (``dets[mask]``), never lists of per-box objects in hot paths.
Coordinates are pixels of the original image, ``xyxy`` = (x1, y1, x2, y2).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]

__all__ = ["BoolArray", "Detections", "FloatArray", "IntArray"]


def _as_f32(a: Any, shape_tail: tuple[int, ...], name: str) -> FloatArray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.size == 0:
        arr = arr.reshape((0, *shape_tail))
    if arr.ndim != 1 + len(shape_tail) or arr.shape[1:] != shape_tail:
        raise ValueError(f"{name} must have shape (N,{','.join(map(str, shape_tail))})")
    return arr


@dataclass(frozen=True, eq=False)
class Detections:
    """N detections as parallel arrays.

    Attributes:
        xyxy: (N, 4) float32, pixel corners (x1, y1, x2, y2) in the original image.
        scores: (N,) float32 in [0, 1].
        class_ids: (N,) int32, indices into the model's class names.
        data: optional extra parallel arrays keyed by name (``track_ids``,
            ``colour_ids``, ...), each with first dimension N.
    """

    xyxy: FloatArray
    scores: FloatArray
    class_ids: IntArray
    data: Mapping[str, npt.NDArray[Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = _as_f32(self.xyxy, (4,), "xyxy")
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        class_ids = np.asarray(self.class_ids, dtype=np.int32).reshape(-1)
        n = xyxy.shape[0]
        if scores.shape[0] != n or class_ids.shape[0] != n:
            raise ValueError(
                f"length mismatch: xyxy {n}, scores {scores.shape[0]}, "
                f"class_ids {class_ids.shape[0]}"
            )
        data = {k: np.asarray(v) for k, v in self.data.items()}
        for k, v in data.items():
            if v.shape[:1] != (n,):
                raise ValueError(f"data[{k!r}] has length {v.shape[:1]}, expected {n}")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "data", data)

    # -- construction ---------------------------------------------------------
    @classmethod
    def empty(cls, data_keys: Sequence[str] = ()) -> Detections:
        """Zero detections (with empty extra arrays for ``data_keys``)."""
        return cls(
            xyxy=np.zeros((0, 4), np.float32),
            scores=np.zeros((0,), np.float32),
            class_ids=np.zeros((0,), np.int32),
            data={k: np.zeros((0,), np.float32) for k in data_keys},
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Detections]) -> Detections:
        """Join several Detections; extra arrays are kept only when every part has them."""
        if not parts:
            return cls.empty()
        keys = set(parts[0].data)
        for p in parts[1:]:
            keys &= set(p.data)
        return cls(
            xyxy=np.concatenate([p.xyxy for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            class_ids=np.concatenate([p.class_ids for p in parts]),
            data={k: np.concatenate([p.data[k] for p in parts]) for k in sorted(keys)},
        )

    # -- container protocol ---------------------------------------------------
    def __len__(self) -> int:
        return int(self.xyxy.shape[0])

    def __getitem__(self, index: Any) -> Detections:
        """Boolean mask, integer array, slice or int; always returns Detections."""
        if isinstance(index, (int, np.integer)):
            index = np.array([int(index)])
        return Detections(
            xyxy=self.xyxy[index],
            scores=self.scores[index],
            class_ids=self.class_ids[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    def __iter__(self) -> Iterator[Detections]:
        for i in range(len(self)):
            yield self[i]

    def with_data(self, **arrays: npt.NDArray[Any]) -> Detections:
        """A copy with extra parallel arrays added or replaced."""
        return Detections(
            xyxy=self.xyxy,
            scores=self.scores,
            class_ids=self.class_ids,
            data={**self.data, **arrays},
        )

    # -- derived geometry -----------------------------------------------------
    @property
    def area(self) -> FloatArray:
        """(N,) box areas; zero for inverted boxes."""
        wh: FloatArray = np.clip(self.xyxy[:, 2:] - self.xyxy[:, :2], 0.0, None)
        area: FloatArray = (wh[:, 0] * wh[:, 1]).astype(np.float32)
        return area

    def clip(self, width: int, height: int) -> Detections:
        """Boxes clipped to the image ``[0, width] x [0, height]``."""
        xyxy = self.xyxy.copy()
        xyxy[:, [0, 2]] = np.clip(xyxy[:, [0, 2]], 0, width)
        xyxy[:, [1, 3]] = np.clip(xyxy[:, [1, 3]], 0, height)
        return Detections(xyxy=xyxy, scores=self.scores, class_ids=self.class_ids, data=self.data)

    # -- contract conversions -------------------------------------------------
    def to_tlbr_ints(self) -> list[list[int]]:
        """Boxes as the hard-hat/workwear contract's ``[top, left, bottom, right]`` ints."""
        r = np.rint(self.xyxy).astype(np.int64)
        return [[int(b[1]), int(b[0]), int(b[3]), int(b[2])] for b in r]

    def to_ltwh_dicts(self) -> list[dict[str, int]]:
        """Boxes as the fence contract's ``{left, top, width, height}`` int dicts."""
        r = np.rint(self.xyxy).astype(np.int64)
        return [
            {
                "left": int(b[0]),
                "top": int(b[1]),
                "width": int(max(b[2] - b[0], 0)),
                "height": int(max(b[3] - b[1], 0)),
            }
            for b in r
        ]
