"""A compact copy of a YOLO-layout data set, for moving it to a training machine.

Images are shrunk (area interpolation) so their longer side is at most ``--max-side`` and
re-encoded (WebP or JPEG at ``--quality``); labels are copied unchanged (YOLO labels are
normalised to the image, so a uniform resize keeps them exact); ``data.yaml`` is copied.
Images already smaller are only re-encoded. The trainer caches images at
``size * cache_scale`` anyway, so packing at the training size loses only the detail that
zoom-in augmentation would have used, plus the re-encoding.

    python -m tools.pack_dataset --src ../shared/data/hardhat --dst var/pack/hardhat \\
        --max-side 512 --quality 75

Prints the number of images and bytes written.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt

from edge.eval.dataset import IMAGE_SUFFIXES

FORMATS = {"webp": (".webp", cv2.IMWRITE_WEBP_QUALITY), "jpg": (".jpg", cv2.IMWRITE_JPEG_QUALITY)}


def load_shrunk(path: Path, max_side: int) -> npt.NDArray[np.uint8]:
    """BGR image resized (area) so its longer side is at most ``max_side`` (the trainer's
    image cache uses the same); ``OSError`` when OpenCV cannot read it."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"cannot read image {path}")
    h, w = img.shape[:2]
    r = max_side / max(h, w)
    if r < 1.0:
        img = cv2.resize(img, (round(w * r), round(h * r)), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def pack(
    src: Path,
    dst: Path,
    *,
    max_side: int,
    quality: int,
    fmt: str = "webp",
    splits: Sequence[str] = ("train", "val"),
) -> tuple[int, int]:
    """Write the compact copy of ``src`` to ``dst``; returns ``(images, bytes)`` written.

    Raises ``ValueError`` for an unknown format or a missing ``data.yaml``/split folder, and
    ``OSError`` for an image OpenCV cannot read or encode (nothing is skipped silently).
    """
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r}: expected one of {sorted(FORMATS)}")
    if not (src / "data.yaml").is_file():
        raise ValueError(f"{src} has no data.yaml: not a YOLO data folder")
    ext, flag = FORMATS[fmt]
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "data.yaml", dst / "data.yaml")
    count = size = 0
    for split in splits:
        img_dir, lab_dir = src / "images" / split, src / "labels" / split
        if not img_dir.is_dir():
            raise ValueError(f"{img_dir} does not exist")
        (dst / "images" / split).mkdir(parents=True, exist_ok=True)
        (dst / "labels" / split).mkdir(parents=True, exist_ok=True)
        for img_path in sorted(img_dir.iterdir()):
            if img_path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            img = load_shrunk(img_path, max_side)
            ok, buf = cv2.imencode(ext, img, [flag, quality])
            if not ok:
                raise OSError(f"cannot encode {img_path} as {fmt}")
            out = dst / "images" / split / (img_path.stem + ext)
            out.write_bytes(buf.tobytes())
            lab = lab_dir / (img_path.stem + ".txt")
            if lab.is_file():
                shutil.copyfile(lab, dst / "labels" / split / lab.name)
            count += 1
            size += len(buf)
    return count, size


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--src", type=Path, required=True, help="YOLO data folder (data.yaml)")
    ap.add_argument("--dst", type=Path, required=True)
    ap.add_argument("--max-side", type=int, required=True)
    ap.add_argument("--quality", type=int, default=75)
    ap.add_argument("--format", default="webp", choices=sorted(FORMATS))
    ap.add_argument("--splits", default="train,val", help="comma-separated")
    args = ap.parse_args(argv)
    try:
        n, size = pack(
            args.src,
            args.dst,
            max_side=args.max_side,
            quality=args.quality,
            fmt=args.format,
            splits=[s for s in args.splits.split(",") if s],
        )
    except (ValueError, OSError) as e:
        print(f"pack_dataset: {e}", file=sys.stderr)
        return 2
    print(f"{n} images, {size / 1e6:.1f} MB -> {args.dst}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
