"""Independent numpy forward pass of a darknet YOLOv3(-tiny) cfg + weights.

Test oracle for ``tools/convert_darknet.py``: it has its own (deliberately small)
cfg/weights parser and applies batch norm unfolded, the way darknet's
``forward_convolutional_layer`` does, so a parsing, folding, padding or channel-order
bug in the converter shows up as a mismatch instead of being shared by both sides.

Only what YOLOv3-tiny uses: convolutional (leaky/linear, optional batch norm),
maxpool (darknet semantics: ``padding = size-1`` by default, window offset
``-padding/2``, out-of-range cells ignored), route, upsample (nearest), yolo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]


def _sections(cfg_text: str) -> list[dict[str, str]]:
    out: list[dict[str, str]] = []
    for raw in cfg_text.splitlines():
        line = raw.split("#")[0].strip()
        if line.startswith("["):
            out.append({"type": line.strip("[]")})
        elif "=" in line:
            k, v = line.split("=", 1)
            out[-1][k.strip()] = v.strip()
    return out


class DarknetReference:
    """Loads ``cfg`` + ``weights`` and runs :meth:`forward` in numpy (float32)."""

    def __init__(self, cfg: Path, weights: Path) -> None:
        self.layers = _sections(cfg.read_text())[1:]
        raw = weights.read_bytes()
        major, minor = np.frombuffer(raw, np.int32, 2)
        skip = 20 if (major * 10 + minor >= 2 and major < 1000) else 16
        flat = np.frombuffer(raw[skip:], np.float32)
        self.params: dict[int, dict[str, Any]] = {}
        pos, chans = 0, [int(_sections(cfg.read_text())[0].get("channels", 3))]
        out_c: list[int] = []
        for i, L in enumerate(self.layers):
            c_in = out_c[-1] if out_c else chans[0]
            if L["type"] == "convolutional":
                n, k = int(L["filters"]), int(L["size"])
                p: dict[str, Any] = {}
                names = (
                    ["bias", "scale", "mean", "var"]
                    if L.get("batch_normalize") == "1"
                    else ["bias"]
                )
                for name in names:
                    p[name] = flat[pos : pos + n]
                    pos += n
                p["w"] = flat[pos : pos + n * c_in * k * k].reshape(n, c_in, k, k)
                pos += n * c_in * k * k
                self.params[i] = p
                out_c.append(n)
            elif L["type"] == "route":
                idx = [int(v) for v in L["layers"].split(",")]
                out_c.append(sum(out_c[j if j >= 0 else i + j] for j in idx))
            else:
                out_c.append(c_in)
        assert pos == flat.size, f"weights: {flat.size - pos} floats left over"

    def forward(self, x: F32) -> list[F32]:
        """``x (1, C, H, W)`` float32 -> raw conv outputs feeding each [yolo], cfg order."""
        outs: list[F32] = []
        heads: list[F32] = []
        for i, L in enumerate(self.layers):
            t = L["type"]
            if t == "convolutional":
                p = self.params[i]
                k, s = p["w"].shape[2], int(L.get("stride", 1))
                pad = k // 2 if L.get("pad") == "1" else 0
                xp = np.pad(x[0], ((0, 0), (pad, pad), (pad, pad)))
                win = np.lib.stride_tricks.sliding_window_view(xp, (k, k), axis=(1, 2))
                win = win[:, ::s, ::s]  # (C, Ho, Wo, k, k)
                y = np.tensordot(p["w"], win, axes=([1, 2, 3], [0, 3, 4]))  # (O, Ho, Wo)
                if "scale" in p:
                    y = (y - p["mean"][:, None, None]) / (np.sqrt(p["var"])[:, None, None] + 1e-6)
                    y = y * p["scale"][:, None, None]
                y = y + p["bias"][:, None, None]
                if L["activation"] == "leaky":
                    y = np.where(y > 0, y, np.float32(0.1) * y)
                x = y[None].astype(np.float32)
            elif t == "maxpool":
                size, s = int(L["size"]), int(L["stride"])
                padding = int(L.get("padding", size - 1))
                _, c, h, w = x.shape
                oh, ow = (h + padding - size) // s + 1, (w + padding - size) // s + 1
                off = padding // 2
                y = np.full((c, oh, ow), -np.inf, np.float32)
                for dy in range(size):
                    for dx in range(size):
                        rows = np.arange(oh) * s + dy - off
                        cols = np.arange(ow) * s + dx - off
                        ok_r = (rows >= 0) & (rows < h)
                        ok_c = (cols >= 0) & (cols < w)
                        vals = x[0][:, rows.clip(0, h - 1)][:, :, cols.clip(0, w - 1)]
                        vals = np.where(ok_r[:, None] & ok_c[None, :], vals, -np.inf)
                        y = np.maximum(y, vals)
                x = y[None]
            elif t == "route":
                idx = [int(v) for v in L["layers"].split(",")]
                x = np.concatenate([outs[j if j >= 0 else i + j] for j in idx], axis=1)
            elif t == "upsample":
                s = int(L["stride"])
                x = x.repeat(s, axis=2).repeat(s, axis=3)
            elif t == "yolo":
                heads.append(x)
            else:
                raise NotImplementedError(t)
            outs.append(x)
        return heads


def yolo_channels(classes: int, n_anchors: int, keep: list[int]) -> list[int]:
    """Channels of a full head that survive keeping the class indices ``keep``."""
    per = 5 + classes
    return [a * per + j for a in range(n_anchors) for j in [*range(5), *(5 + c for c in keep)]]
