"""Bare-head detection of a hard-hat model on site-camera photos it was not selected on.

The workwear and vest data sets (``../shared/data/workwear``, ``../shared/data/vest``) label
heads as ``helmet`` (0) / ``no_helmet`` (1) on site-camera photos, a view closer to a
gateway's than the hard-hat set's web photos. Their helmet boxes carry no colour (and the
workwear set's cover the hat alone, not hat + face as the hard-hat set's do), so only the
``no_helmet`` heads are used, as truths of the hard-hat model's ``none`` class: ``none`` AP@0.5,
recall at precision >= 0.8, and precision / recall at the manifest's threshold, per set::

    python -m tools.site_heads --data ../shared/data/workwear --data ../shared/data/vest \\
        models/hardhat.yaml [var/cand/run/hardhat.yaml ...]

The val images holding at least one labelled head are copied with the relabelled truths into
a temporary folder (removed afterwards) and scored by the project's harness
(:func:`edge.eval.commands.evaluate`). Prints one markdown row per model and set.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HELMET, NO_HELMET = 0, 1
"""Class ids of the workwear/vest data sets' heads."""
HARDHAT_NAMES = ("none", "red", "blue", "white", "yellow")


def bare_head_rows(label_text: str) -> tuple[bool, list[str]]:
    """``(has_heads, rows)``: whether a workwear/vest label file has any head, and its
    ``no_helmet`` rows as hard-hat ``none`` (class 0) rows.

    >>> bare_head_rows("1 0.5 0.5 0.1 0.1\\n0 0.2 0.2 0.1 0.1\\n2 0.5 0.7 0.3 0.4\\n")
    (True, ['0 0.5 0.5 0.1 0.1'])
    >>> bare_head_rows("2 0.5 0.7 0.3 0.4\\n")
    (False, [])
    """
    rows = [ln.split() for ln in label_text.splitlines() if ln.strip()]
    heads = [r for r in rows if int(r[0]) in (HELMET, NO_HELMET)]
    return bool(heads), [" ".join(["0", *r[1:]]) for r in heads if int(r[0]) == NO_HELMET]


def build_split(src: Path, dst: Path, split: str = "val") -> int:
    """Copy ``src``'s ``split`` images that hold a labelled head into ``dst`` (YOLO layout)
    with :func:`bare_head_rows` labels and a hard-hat ``data.yaml``; returns the image count."""
    import yaml

    (dst / "images" / split).mkdir(parents=True)
    (dst / "labels" / split).mkdir(parents=True)
    n = 0
    for img in sorted((src / "images" / split).iterdir()):
        lab = src / "labels" / split / f"{img.stem}.txt"
        has_heads, rows = bare_head_rows(lab.read_text() if lab.is_file() else "")
        if not has_heads:
            continue
        shutil.copyfile(img, dst / "images" / split / img.name)
        (dst / "labels" / split / f"{img.stem}.txt").write_text("".join(r + "\n" for r in rows))
        n += 1
    meta = {"path": str(dst), split: f"images/{split}", "names": list(HARDHAT_NAMES)}
    (dst / "data.yaml").write_text(yaml.safe_dump(meta))
    return n


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, type=Path, help="set (repeat)")
    ap.add_argument("manifests", nargs="+", type=Path, help="hard-hat model manifests")
    args = ap.parse_args(argv)
    from edge.eval.commands import evaluate
    from edge.eval.dataset import load_data_config
    from edge.runtime.detector import Detector
    from edge.runtime.registry import load_manifest

    print(
        "| model | set | images | bare heads | `none` AP@0.5 | recall at P >= 0.8 "
        "| P / R at threshold |"
    )
    print("|---|---|---:|---:|---:|---:|---|")
    with tempfile.TemporaryDirectory(prefix="site_heads_") as tmp:
        sets = {}
        for src in args.data:
            dst = Path(tmp) / src.resolve().name
            n = build_split(src, dst)
            sets[src.resolve().name] = (load_data_config(dst / "data.yaml"), n)
        for manifest in args.manifests:
            m_info = load_manifest(manifest)
            if tuple(m_info.class_names) != HARDHAT_NAMES:
                print(f"{manifest}: classes {m_info.class_names} are not {HARDHAT_NAMES}",
                      file=sys.stderr)  # fmt: skip
                return 2
            thr = m_info.score_threshold
            with Detector(m_info) as det:
                for name, (cfg, n) in sets.items():
                    m = evaluate(det, cfg, split="val", score_threshold=thr).metrics
                    print(
                        f"| {manifest} | {name} | {n} | {m.n_gt[0]} | {m.ap50[0]:.3f} | "
                        f"{m.recall_at_min_precision[0]:.3f} | "
                        f"{m.precision[0]:.2f} / {m.recall[0]:.2f} |",
                        flush=True,
                    )
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(REPO))
    sys.exit(main())
