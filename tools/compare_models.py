"""Is detector B better than detector A beyond the noise of the val images? (paired bootstrap)

Both models run once over the split (as ``safety-edge eval`` runs them: score >= 0.001, the
manifest's NMS, classes paired by name); then the images are resampled with replacement
and every metric is recomputed for both models on the same resample. The model card's
ship / don't-ship decisions quote these intervals::

    python -m tools.compare_models --data ../shared/data/hardhat/data.yaml \\
        models/hardhat.yaml var/cand/run/hardhat.yaml --focus none --resamples 500

Prints a markdown table (metric, A, B, B - A with its 90 % interval, share of resamples in
which B is better / worse); ``--out`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from edge.eval.commands import ImageScores

REPO = Path(__file__).resolve().parents[1]


def run_model(manifest: Path, data: Path, split: str) -> tuple[tuple[str, ...], list[ImageScores]]:
    """``manifest``'s detections on every image of ``data``'s ``split`` as the harness scores
    them (:func:`edge.eval.commands.evaluate`), with the evaluated class names."""
    from edge.eval.commands import evaluate
    from edge.eval.dataset import load_data_config
    from edge.runtime.detector import Detector
    from edge.runtime.registry import load_manifest

    out: list[ImageScores] = []
    with Detector(load_manifest(manifest)) as det:
        run = evaluate(det, load_data_config(data), split=split, on_image=out.append)
    return run.mapping.eval_names, out


def metrics(
    names: Sequence[str],
    images: Sequence[ImageScores],
    index: Sequence[int] | npt.NDArray[np.int64],
    *,
    focus: str | None,
) -> dict[str, float]:
    """mAP@0.5 and mAP@0.5:0.95 over the images ``index`` picks (repeats count again);
    with ``focus``, that class's AP@0.5 and recall at precision >= 0.8 as well (none of
    them depends on an operating threshold)."""
    from edge.eval.metrics import DetectionEvaluator

    ev = DetectionEvaluator(class_names=names)
    for i in index:
        r = images[int(i)]
        ev.add_image(
            gt_xyxy=r.gt_xyxy,
            gt_class_ids=r.gt_class_ids,
            pred_xyxy=r.pred_xyxy,
            pred_scores=r.pred_scores,
            pred_class_ids=r.pred_class_ids,
        )
    m = ev.compute()
    res = {"mAP@0.5": m.map50, "mAP@0.5:0.95": m.map50_95}
    if focus is not None:
        k = list(names).index(focus)
        res[f"{focus} AP@0.5"] = float(m.ap50[k])
        res[f"{focus} recall at P >= 0.8"] = float(m.recall_at_min_precision[k])
    return res


def bootstrap(
    names: Sequence[str],
    a: Sequence[ImageScores],
    b: Sequence[ImageScores],
    *,
    resamples: int = 500,
    seed: int = 0,
    focus: str | None = None,
) -> list[dict[str, Any]]:
    """Per metric: A and B on all images, and over ``resamples`` paired resamples the mean
    of B - A, its 5th and 95th percentiles and the share of resamples with B > A / B < A."""
    if len(a) != len(b) or not a:
        raise ValueError(f"need the same, non-empty image list for both ({len(a)} vs {len(b)})")
    if focus is not None and focus not in names:
        raise ValueError(f"--focus {focus!r} is not an evaluated class ({', '.join(names)})")
    everything = np.arange(len(a))
    full_a = metrics(names, a, everything, focus=focus)
    full_b = metrics(names, b, everything, focus=focus)
    rng = np.random.default_rng(seed)
    diffs: dict[str, list[float]] = {k: [] for k in full_a}
    for _ in range(resamples):
        idx = rng.integers(0, len(a), len(a))
        ma = metrics(names, a, idx, focus=focus)
        mb = metrics(names, b, idx, focus=focus)
        for k in diffs:
            diffs[k].append(mb[k] - ma[k])
    rows = []
    for k, values in diffs.items():
        d = np.asarray(values, dtype=np.float64)
        rows.append(
            {
                "metric": k,
                "a": full_a[k],
                "b": full_b[k],
                "diff_mean": float(d.mean()),
                "diff_p5": float(np.percentile(d, 5)),
                "diff_p95": float(np.percentile(d, 95)),
                "b_better": float(np.mean(d > 0)),
                "b_worse": float(np.mean(d < 0)),
            }
        )
    return rows


def markdown(rows: Sequence[dict[str, Any]], resamples: int, images: int) -> str:
    lines = [
        f"Paired bootstrap, {resamples} resamples of {images} images",
        "",
        "| metric | A | B | B - A (90 % interval) | B better | B worse |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['metric']} | {r['a']:.3f} | {r['b']:.3f} | {r['diff_mean']:+.3f} "
            f"({r['diff_p5']:+.3f} ... {r['diff_p95']:+.3f}) | {r['b_better']:.0%} "
            f"| {r['b_worse']:.0%} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a", type=Path, help="manifest of model A (e.g. the shipped one)")
    ap.add_argument("b", type=Path, help="manifest of model B (the candidate)")
    ap.add_argument("--data", type=Path, required=True, help="data.yaml")
    ap.add_argument("--split", default="val")
    ap.add_argument("--focus", default=None, help="a class to report on its own (e.g. none)")
    ap.add_argument("--resamples", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None, help="JSON file")
    args = ap.parse_args(argv)
    names_a, a = run_model(args.a, args.data, args.split)
    names_b, b = run_model(args.b, args.data, args.split)
    if names_a != names_b:
        print(
            f"compare_models: the models cover other classes: {names_a} vs {names_b}",
            file=sys.stderr,
        )
        return 2
    try:
        rows = bootstrap(
            names_a,
            a,
            b,
            resamples=args.resamples,
            seed=args.seed,
            focus=args.focus,
        )
    except ValueError as e:
        print(f"compare_models: {e}", file=sys.stderr)
        return 2
    print(markdown(rows, args.resamples, len(a)))
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"a": str(args.a), "b": str(args.b), "data": str(args.data), "rows": rows}
        args.out.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(REPO))
    sys.exit(main())
