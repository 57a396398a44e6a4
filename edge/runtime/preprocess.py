"""Image -> network input tensor, and network-input boxes -> image boxes.

The forward path (:func:`preprocess`) resizes a BGR ``uint8`` image to the network input
size (letterbox: keep aspect ratio and pad; or plain resize), reorders channels,
normalises ``(pixel * scale - mean) / std`` per channel and lays the result out as NCHW
``float32`` (or ``float16``). The :class:`Letterbox` it returns maps boxes back to the
original image (:meth:`Letterbox.unmap_boxes`).

Geometry convention: pixel coordinates are continuous, the image spans ``[0, W] x [0, H]``,
and a resize by ``new_w / w`` maps ``x -> x * new_w / w`` (the convention of
``cv2.resize``), so a box mapped forward and back is returned unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import cv2
import numpy as np
import numpy.typing as npt

from edge.runtime.registry import ModelManifest
from edge.types import FloatArray

__all__ = ["Letterbox", "PreprocessSpec", "preprocess"]

InputDType = Literal["float32", "float16"]


@dataclass(frozen=True)
class Letterbox:
    """How an image was placed into the network input.

    ``x_input = x_original * scale_x + pad_x`` (likewise y). With letterboxing
    ``scale_x == scale_y`` up to the rounding of the resized size to whole pixels; with a
    plain resize the two scales differ and the pads are 0.

    Attributes:
        scale_x, scale_y: resized size / original size per axis.
        pad_x, pad_y: offset in network-input pixels of the resized image's top-left corner.
        original_size: (width, height) of the original image in pixels.
        input_size: (width, height) of the network input in pixels.
    """

    scale_x: float
    scale_y: float
    pad_x: int
    pad_y: int
    original_size: tuple[int, int]
    input_size: tuple[int, int]

    @classmethod
    def fit(
        cls,
        original_size: tuple[int, int],
        input_size: tuple[int, int],
        *,
        keep_aspect: bool = True,
        center: bool = True,
    ) -> Letterbox:
        """Place an ``original_size`` image into ``input_size`` (both (width, height)).

        ``keep_aspect=False`` is a plain resize. ``center=False`` puts the image at the
        top-left and pads right/bottom (YOLOX); ``center=True`` splits the padding (Darknet,
        Ultralytics; the odd pixel goes right/bottom).
        """
        w, h = original_size
        iw, ih = input_size
        if w < 1 or h < 1 or iw < 1 or ih < 1:
            raise ValueError(
                f"sizes must be positive: original {original_size}, input {input_size}"
            )
        if not keep_aspect:
            return cls(iw / w, ih / h, 0, 0, (w, h), (iw, ih))
        r = min(iw / w, ih / h)
        nw = min(iw, max(1, round(w * r)))
        nh = min(ih, max(1, round(h * r)))
        px, py = ((iw - nw) // 2, (ih - nh) // 2) if center else (0, 0)
        return cls(nw / w, nh / h, px, py, (w, h), (iw, ih))

    @property
    def resized_size(self) -> tuple[int, int]:
        """(width, height) of the resized image inside the input, in pixels."""
        w, h = self.original_size
        return round(w * self.scale_x), round(h * self.scale_y)

    def map_boxes(self, xyxy: npt.ArrayLike) -> FloatArray:
        """(N, 4) original-image boxes -> (N, 4) float32 network-input boxes."""
        b = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        mul = np.array([self.scale_x, self.scale_y] * 2, dtype=np.float32)
        add = np.array([self.pad_x, self.pad_y] * 2, dtype=np.float32)
        return (b * mul + add).astype(np.float32, copy=False)

    def unmap_boxes(self, xyxy: npt.ArrayLike) -> FloatArray:
        """(N, 4) network-input boxes -> (N, 4) float32 original-image boxes.

        Boxes are clipped to ``[0, width] x [0, height]`` of the original image, so a box
        lying wholly in the padding collapses to zero area on the image border.
        """
        b = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
        add = np.array([self.pad_x, self.pad_y] * 2, dtype=np.float32)
        inv = np.array([1.0 / self.scale_x, 1.0 / self.scale_y] * 2, dtype=np.float32)
        out = (b - add) * inv
        w, h = self.original_size
        hi = np.array([w, h, w, h], dtype=np.float32)
        np.clip(out, 0.0, hi, out=out)
        return out.astype(np.float32, copy=False)


@dataclass(frozen=True)
class PreprocessSpec:
    """Everything :func:`preprocess` needs, normally built by :meth:`from_manifest`.

    Attributes:
        input_size: network input (width, height) in pixels.
        letterbox: keep aspect ratio and pad (``True``) or plain resize (``False``).
        center: centre the letterboxed image (``False``: top-left, pad right/bottom).
        pad_value: border pixel value in 0..255, before normalisation.
        swap_rb: reverse BGR to RGB (the network wants RGB).
        scale: pixel multiplier (e.g. 1/255).
        mean, std: per network channel; value = (pixel * scale - mean) / std.
        dtype: input tensor dtype.
    """

    input_size: tuple[int, int]
    letterbox: bool = True
    center: bool = True
    pad_value: float = 114.0
    swap_rb: bool = True
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    dtype: InputDType = "float32"

    @classmethod
    def from_manifest(
        cls, manifest: ModelManifest, *, dtype: InputDType = "float32"
    ) -> PreprocessSpec:
        """Spec for a :class:`~edge.runtime.registry.ModelManifest` and a resolved dtype."""
        return cls(
            input_size=manifest.input_size,
            letterbox=manifest.letterbox,
            center=manifest.pad_position == "center",
            pad_value=manifest.pad_value,
            swap_rb=manifest.channel_order == "rgb",
            scale=manifest.scale,
            mean=manifest.mean,
            std=manifest.std,
            dtype=dtype,
        )

    def affine(self) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
        """Per-channel (3,) ``a, b`` with network value = pixel * a + b."""
        std = np.asarray(self.std, dtype=np.float64)
        a = self.scale / std
        b = -np.asarray(self.mean, dtype=np.float64) / std
        return a.astype(np.float32), b.astype(np.float32)


def preprocess(
    image_bgr: npt.NDArray[Any], spec: PreprocessSpec
) -> tuple[npt.NDArray[Any], Letterbox]:
    """BGR image -> network input tensor.

    Args:
        image_bgr: (H, W, 3) uint8, OpenCV channel order (BGR).
        spec: sizes, channel order and normalisation.

    Returns:
        ``(tensor, letterbox)``: tensor (1, 3, input_h, input_w) C-contiguous, dtype
        ``spec.dtype``; letterbox maps network-input boxes back to ``image_bgr``.

    Raises:
        ValueError: the image is not a non-empty (H, W, 3) uint8 array.
    """
    if not isinstance(image_bgr, np.ndarray) or image_bgr.dtype != np.uint8:
        raise ValueError("image must be a uint8 numpy array")
    if (
        image_bgr.ndim != 3
        or image_bgr.shape[2] != 3
        or image_bgr.shape[0] < 1
        or image_bgr.shape[1] < 1
    ):
        raise ValueError(f"image must have shape (H, W, 3), got {image_bgr.shape}")
    h, w = image_bgr.shape[:2]
    iw, ih = spec.input_size
    lb = Letterbox.fit((w, h), (iw, ih), keep_aspect=spec.letterbox, center=spec.center)
    nw, nh = lb.resized_size
    resized: npt.NDArray[Any]
    if (nw, nh) == (w, h):
        resized = image_bgr
    else:  # bilinear, as Darknet and Ultralytics train with
        resized = cv2.resize(image_bgr, (nw, nh), interpolation=cv2.INTER_LINEAR)

    a, b = spec.affine()
    a3, b3 = a.reshape(3, 1, 1), b.reshape(3, 1, 1)
    dtype = np.float16 if spec.dtype == "float16" else np.float32
    out = np.empty((1, 3, ih, iw), dtype=dtype)
    x0, y0 = lb.pad_x, lb.pad_y
    x1, y1 = x0 + nw, y0 + nh
    if (nw, nh) != (iw, ih):  # fill only the border strips
        pad = (spec.pad_value * a3 + b3).astype(dtype)
        out[0, :, :y0, :] = pad
        out[0, :, y1:, :] = pad
        out[0, :, y0:y1, :x0] = pad
        out[0, :, y0:y1, x1:] = pad
    region = out[0, :, y0:y1, x0:x1]
    # (3, nh, nw) uint8 view in network channel order: BGR -> RGB is a reversed-axis view
    src = (resized[:, :, ::-1] if spec.swap_rb else resized).transpose(2, 0, 1)
    if dtype == np.float32:
        np.multiply(src, a3, out=region, casting="unsafe")
        if np.any(b3):
            region += b3
    else:
        region[...] = src * a3 + b3
    return out, lb
