"""Where a trained YOLOv3-tiny checkpoint loses AP, and what test-time tricks buy (model card).

Two measurements on a checkpoint of ``tools/train_yolo.py`` (its EMA weights, torch, the
trainer's multi-label decode, so the numbers can differ from the harness by ~0.01):

* ``errors``: mAP at IoU 0.1 / 0.3 / 0.5 / 0.7, per class and class-agnostic, on the val
  split and on the first ``--train-images`` train images (under- vs over-fitting), plus
  the recall ceiling (truths with any prediction at IoU >= 0.5 at score 0.01). A large
  drop from IoU 0.3 to 0.5 means boxes are found but placed loosely.
* ``tta``: mAP@0.5 and ``recall at precision >= 0.8`` of the first class when the
  predictions of several runs are merged by class-aware NMS: the image flipped
  (``f``), other input sizes, and other checkpoints (an ensemble).

Run from the repository root (needs the ``train`` extra and ``../shared/data``)::

    python -m tools.diagnose_yolo errors --ckpt var/train/hardhat/best.pt --size 512
    python -m tools.diagnose_yolo tta --ckpt a=var/train/hardhat/best.pt \\
        --ckpt b=var/train/hardhat512/best.pt --runs a@512 a@512+a@512f a@512+b@512

Each command prints one JSON line per result and writes ``--out`` (JSON) and the same
path with ``.md`` (a markdown table) when given.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
IOUS = (0.1, 0.3, 0.5, 0.7)


def _preds(net: Any, imgs: Sequence[Any], size: int, flip: bool) -> list[Any]:
    """Per image ``(xyxy in original pixels, scores, class ids)`` at score >= 0.01."""
    import numpy as np
    import torch

    from tools import yolo_torch as yt

    out = []
    for i in range(0, len(imgs), 8):
        batch, geo = [], []
        for img in imgs[i : i + 8]:
            im = np.ascontiguousarray(img[:, ::-1]) if flip else img
            lb, r, dx, dy = yt.letterbox(im, size)
            batch.append(lb)
            geo.append((r, dx, dy, img.shape[1]))
        with torch.no_grad():
            heads_out = [t.numpy() for t in net(yt.to_tensor(batch))]
        for b, (r, dx, dy, width) in enumerate(geo):
            boxes, scores, cls = yt.decode([o[b] for o in heads_out], net.heads, 0.01)
            boxes = boxes.copy()
            boxes[:, [0, 2]] = (boxes[:, [0, 2]] - dx) / r
            boxes[:, [1, 3]] = (boxes[:, [1, 3]] - dy) / r
            if flip:
                boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
            out.append((boxes, scores, cls))
    return out


def source_prefix(path: Path) -> str:
    """The letters before the number in a file name (``b000123.jpg`` -> ``b``,
    ``bpart2_0001.jpg`` -> ``bpart``), ``numeric`` when it starts with a digit: data sets
    merged from several sources often keep each source's naming."""
    m = re.match(r"[A-Za-z]+", path.stem)
    return m.group(0) if m else "numeric"


def spread(n: int, limit: int) -> list[int]:
    """``limit`` indices spread evenly over ``range(n)`` (all of them when ``limit`` is 0
    or >= ``n``), so a subset is not one source of a sorted, merged data set."""
    if not limit or limit >= n:
        return list(range(n))
    return [int(i * n / limit) for i in range(limit)]


def image_groups(
    paths: Sequence[Path], *, by_prefix: bool, without: Sequence[str] = ()
) -> dict[str, list[int]]:
    """Row name -> indices into ``paths``: ``all``; with ``by_prefix`` one row per
    :func:`source_prefix`; ``all but P`` for each prefix in ``without``."""
    groups = {"all": list(range(len(paths)))}
    if by_prefix:
        for i, p in enumerate(paths):
            groups.setdefault(source_prefix(p), []).append(i)
    for prefix in without:
        groups[f"all but {prefix}"] = [i for i, p in enumerate(paths) if source_prefix(p) != prefix]
    return groups


def _split(
    roots: Sequence[Path], split: str, limit: int
) -> tuple[list[Any], list[Any], list[Path]]:
    """Images (BGR), truths ``(xyxy pixels, class ids)`` and paths of a split (``limit``
    images spread over it, 0 = all)."""
    import cv2
    import numpy as np

    from tools import yolo_torch as yt

    sp = yt.read_split(roots, split)
    pick = spread(len(sp.images), limit)
    imgs, truths = [], []
    for path, lab in ((sp.images[i], sp.boxes[i]) for i in pick):
        img = cv2.imread(str(path))
        if img is None:
            raise SystemExit(f"{path}: not readable as an image")
        h, w = img.shape[:2]
        imgs.append(img)
        truths.append((yt.label_xyxy(lab, w, h), lab[:, 0].astype(np.int32)))
    return imgs, truths, [sp.images[i] for i in pick]


def _nms_all(parts: Sequence[Sequence[Any]]) -> list[Any]:
    import numpy as np

    from tools import yolo_torch as yt

    out = []
    for per_image in zip(*parts, strict=True):
        boxes = np.concatenate([p[0] for p in per_image])
        scores = np.concatenate([p[1] for p in per_image])
        cls = np.concatenate([p[2] for p in per_image])
        keep = yt.nms(boxes, scores, cls, 0.45, top_k=100)
        out.append((boxes[keep], scores[keep], cls[keep]))
    return out


def _map(aps: Sequence[Any]) -> float:
    import numpy as np

    vals = [a.ap50 for a in aps if not np.isnan(a.ap50)]
    return round(float(np.mean(vals)), 4) if vals else 0.0


def errors(
    ckpt: Path, size: int, train_images: int, by_prefix: bool, without: Sequence[str] = ()
) -> list[dict[str, Any]]:
    from tools.train_yolo import _load_ckpt_net

    net, cfg, names, _ = _load_ckpt_net(ckpt)
    roots = [Path(d) for d in cfg.data]
    rows = []
    for split, limit in (("val", 0), ("train", train_images)):
        imgs, truths, paths = _split(roots, split, limit)
        preds = _nms_all([_preds(net, imgs, size, False)])
        groups = image_groups(paths, by_prefix=by_prefix, without=without)
        for group, idx in groups.items():
            row = _error_row(
                [preds[i] for i in idx], [truths[i] for i in idx], names, split, group, size
            )
            print(json.dumps(row), flush=True)
            rows.append(row)
    return rows


def _error_row(
    preds: Sequence[Any],
    truths: Sequence[Any],
    names: Sequence[str],
    split: str,
    group: str,
    size: int,
) -> dict[str, Any]:
    import numpy as np

    from tools import yolo_torch as yt

    row: dict[str, Any] = {"split": split, "source": group, "images": len(preds), "size": size}
    for thr in IOUS:
        aps = yt.average_precision(preds, truths, len(names), iou_thr=thr)
        merged = yt.average_precision(
            [(b, s, np.zeros_like(c)) for b, s, c in preds],
            [(t, np.zeros_like(c)) for t, c in truths],
            1,
            iou_thr=thr,
        )
        row[f"map@{thr}"] = _map(aps)
        row[f"agnostic@{thr}"] = round(float(merged[0].ap50), 4)
        row[f"per_class@{thr}"] = {
            n: round(float(a.ap50), 4) for n, a in zip(names, aps, strict=True)
        }
    hit = total = 0
    for (pb, _s, _c), (tb, _tc) in zip(preds, truths, strict=True):
        total += len(tb)
        if len(tb) and len(pb):
            hit += int((yt._iou_matrix(tb, pb).max(1) >= 0.5).sum())
    row["recall_ceiling@0.5"] = round(hit / max(total, 1), 4)
    return row


def tta(ckpts: dict[str, Path], runs: Sequence[str]) -> list[dict[str, Any]]:
    from tools import yolo_torch as yt
    from tools.train_yolo import _load_ckpt_net

    nets, data = {}, None
    for key, path in ckpts.items():
        net, cfg, names, _ = _load_ckpt_net(path)
        nets[key] = (net, names)
        if data is None:
            data = (cfg.data, names)
        elif (cfg.data, names) != data:
            raise SystemExit(f"--ckpt {key}: data/classes differ from the first checkpoint")
    assert data is not None
    imgs, truths, _paths = _split([Path(d) for d in data[0]], "val", 0)
    cache: dict[tuple[str, int, bool], list[Any]] = {}
    rows = []
    for spec in runs:
        parts = []
        for item in spec.split("+"):
            key, _, rest = item.partition("@")
            flip = rest.endswith("f")
            if key not in nets or not rest.rstrip("f").isdigit():
                raise SystemExit(f"--runs {spec!r}: expected KEY@SIZE[f] joined by '+'")
            size = int(rest.rstrip("f"))
            if (key, size, flip) not in cache:
                cache[key, size, flip] = _preds(nets[key][0], imgs, size, flip)
            parts.append(cache[key, size, flip])
        aps = yt.average_precision(_nms_all(parts), truths, len(data[1]))
        row = {
            "runs": spec,
            "map50": _map(aps),
            "first_class_r@p80": round(aps[0].recall_at_p80, 4),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def _write(out: Path | None, rows: list[dict[str, Any]], meta: dict[str, Any]) -> None:
    if out is None:
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n", encoding="utf-8")
    cols = [k for k in rows[0] if not k.startswith("per_class")]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("errors", help="mAP vs IoU threshold, val and a train subset")
    e.add_argument("--ckpt", type=Path, required=True)
    e.add_argument("--size", type=int, required=True)
    e.add_argument("--train-images", type=int, default=300, help="spread over the split")
    e.add_argument("--by-prefix", action="store_true", help="rows per file-name prefix too")
    e.add_argument(
        "--without", action="append", default=[], help="a row for all but this prefix (repeat)"
    )
    e.add_argument("--out", type=Path)
    t = sub.add_parser("tta", help="flip / multi-size / ensemble merges")
    t.add_argument("--ckpt", action="append", required=True, help="KEY=PATH (repeat)")
    t.add_argument("--runs", nargs="+", required=True, help="KEY@SIZE[f]+... per result")
    t.add_argument("--out", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.cmd == "errors":
        rows = errors(args.ckpt, args.size, args.train_images, args.by_prefix, args.without)
        _write(args.out, rows, {"ckpt": str(args.ckpt)})
    else:
        ckpts = {}
        for item in args.ckpt:
            key, sep, path = item.partition("=")
            if not sep or not Path(path).is_file():
                raise SystemExit(f"--ckpt {item!r}: expected KEY=PATH to an existing file")
            ckpts[key] = Path(path)
        rows = tta(ckpts, args.runs)
        _write(args.out, rows, {"ckpts": {k: str(v) for k, v in ckpts.items()}})
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(REPO))
    raise SystemExit(main())
