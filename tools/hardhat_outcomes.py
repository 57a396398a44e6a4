"""What a site would see from a hard-hat model: per-person outcomes over a labelled split.

mAP scores head boxes; a site sees people judged compliant or in violation. This counts,
for every person the default person detector finds in a val photo, what the hard-hat task
answers (the model's heads through the worn rule, :func:`edge.tasks.hardhat.assess_hats`)
against what the *labelled* heads give through the same rule and the same person boxes:

* labelled hat worn -> ``compliant`` (right), ``violation`` (**false violation**: a worker
  in a hat reported without one), ``cannot_tell``;
* labelled bare head -> ``violation`` (caught), ``compliant`` (**missed violation**: a
  bare-headed worker passed, the error this product must not make), ``cannot_tell``;
* people whose labelled heads give no verdict (no labelled head on them, too small, cut
  off, occluded) are not judged.

With two manifests, the images are resampled with replacement (paired bootstrap, as
:mod:`tools.compare_models`) and the difference in false / missed violations is given with
its 90 % interval. The model card's ship decision quotes it::

    python -m tools.hardhat_outcomes --data ../shared/data/hardhat/data.yaml \\
        models/hardhat.yaml var/cand/run/hardhat.yaml

Prints a markdown table; ``--out`` also writes it as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

REPO = Path(__file__).resolve().parents[1]
PERSON_MANIFEST = REPO / "models" / "person_vehicle.yaml"
LABEL_CLASSNAMES = ("no_hat", "red_hat", "blue_hat", "white_hat", "yellow_hat")
"""Contract classnames of the hard-hat data set's class ids 0-4 (none, red, blue, white,
yellow)."""

FALSE_VIOLATION = ("hat", "violation")
MISSED_VIOLATION = ("bare", "compliant")
OUTCOMES = (
    ("hat", "compliant"),
    FALSE_VIOLATION,
    ("hat", "cannot_tell"),
    ("bare", "violation"),
    MISSED_VIOLATION,
    ("bare", "cannot_tell"),
)
"""(truth, answer) pairs counted, in table order."""


def truth_of(status: str, classname: str) -> str | None:
    """``hat`` / ``bare`` for a person the labelled heads give a verdict on, else ``None``."""
    if status == "compliant":
        return "hat"
    if status == "violation" and classname == "no_hat":
        return "bare"
    return None


def tally(
    truth: Sequence[dict[str, Any]], answer: Sequence[dict[str, Any]]
) -> Counter[tuple[str, str]]:
    """Count (truth, answer status) over the people of one image.

    Args:
        truth: ``summary()["people"]`` of the labelled heads through the worn rule.
        answer: ``summary()["people"]`` of the model's heads with the same person boxes.
            People are paired by their ``person`` box; entries without one (heads nobody
            was found under) are not people and are skipped on both sides.
    """
    verdict = {
        tuple(p["person"]): truth_of(p["status"], p["classname"])
        for p in truth
        if p["person"] is not None
    }
    out: Counter[tuple[str, str]] = Counter()
    for p in answer:
        if p["person"] is None:
            continue
        t = verdict.get(tuple(p["person"]))
        if t is not None:
            out[(t, str(p["status"]))] += 1
    return out


@dataclass(frozen=True)
class ImageOutcome:
    """One image's counts."""

    name: str
    counts: Counter[tuple[str, str]]


def run(
    manifests: Sequence[Path],
    data: Path,
    *,
    split: str = "val",
    stride: int = 1,
    person_manifest: Path = PERSON_MANIFEST,
    threads: int | None = None,
) -> list[list[ImageOutcome]]:
    """Per-image outcomes of each manifest over every ``stride``-th image of the split
    (sorted by path); one person-detector run per image, shared by the models.

    Raises:
        EdgeError: a model that cannot load or run; DatasetError: bad labels.
    """
    import cv2

    from edge.eval.dataset import load_data_config
    from edge.runtime.detector import Detector
    from edge.runtime.registry import load_manifest
    from edge.tasks.hardhat import HardhatTask, assess_hats
    from edge.types import Detections

    cfg = load_data_config(data)
    samples = sorted(cfg.samples(split), key=lambda s: s.image_path)[::stride]
    dets = [Detector(load_manifest(m), intra_op_threads=threads) for m in manifests]
    tasks = [HardhatTask(detector=d) for d in dets]
    out: list[list[ImageOutcome]] = [[] for _ in manifests]
    with Detector(load_manifest(person_manifest), intra_op_threads=threads) as person:
        try:
            for s in samples:
                raw = cv2.imread(str(s.image_path))
                if raw is None:
                    raise OSError(f"cannot read {s.image_path}")
                img = np.asarray(raw, dtype=np.uint8)
                h, w = img.shape[:2]
                lab = s.labels(cfg.num_classes)
                gt = Detections(
                    xyxy=lab.xyxy(w, h),
                    scores=np.full(len(lab), 0.9, np.float32),
                    class_ids=lab.class_ids,
                )
                names = [LABEL_CLASSNAMES[int(c)] for c in lab.class_ids]
                people = person.detect(img, classes=["person"])
                people = people[np.argsort(-people.scores, kind="stable")]
                truth = assess_hats(gt, names, people).summary()["people"]
                for k, task in enumerate(tasks):
                    heads, classnames, _ = task.heads(img)
                    answer = assess_hats(heads, classnames, people, rule=task.rule)
                    counts = tally(truth, answer.summary()["people"])
                    out[k].append(ImageOutcome(s.image_path.name, counts))
        finally:
            for d in dets:
                d.close()
    return out


def totals(images: Sequence[ImageOutcome]) -> Counter[tuple[str, str]]:
    """Sum of the images' counts."""
    t: Counter[tuple[str, str]] = Counter()
    for im in images:
        t.update(im.counts)
    return t


def _errors(images: Sequence[ImageOutcome]) -> npt.NDArray[np.int64]:
    """(n, 2) false / missed violations per image."""
    return np.array(
        [[im.counts[FALSE_VIOLATION], im.counts[MISSED_VIOLATION]] for im in images],
        dtype=np.int64,
    ).reshape(-1, 2)


def paired_bootstrap(
    a: Sequence[ImageOutcome], b: Sequence[ImageOutcome], *, resamples: int, seed: int = 0
) -> dict[str, dict[str, float]]:
    """B - A in false violations, missed violations and their sum over image resamples:
    the observed difference, the 90 % interval and the share of resamples where B has
    fewer / more."""
    ea, eb = _errors(a), _errors(b)
    if ea.shape != eb.shape:
        raise ValueError("the two runs cover different images")
    diff = np.concatenate([eb - ea, (eb - ea).sum(1, keepdims=True)], axis=1)
    rng = np.random.default_rng(seed)
    n = len(diff)
    sums = np.stack([diff[rng.integers(0, n, n)].sum(0) for _ in range(resamples)])
    res: dict[str, dict[str, float]] = {}
    for k, name in enumerate(("false violations", "missed violations", "both")):
        lo, hi = np.percentile(sums[:, k], [5, 95])
        res[name] = {
            "difference": float(diff[:, k].sum()),
            "low": float(lo),
            "high": float(hi),
            "b_fewer": float((sums[:, k] < 0).mean()),
            "b_more": float((sums[:, k] > 0).mean()),
        }
    return res


def table(labels: Sequence[str], runs: Sequence[Sequence[ImageOutcome]]) -> str:
    """Markdown table: one row per (truth, answer), one column per model."""
    tot = [totals(r) for r in runs]
    lines = [
        "| labelled -> answered | " + " | ".join(labels) + " |",
        "|---|" + "---:|" * len(labels),
    ]
    for key in OUTCOMES:
        mark = " **(error)**" if key in (FALSE_VIOLATION, MISSED_VIOLATION) else ""
        lines.append(
            f"| {key[0]} -> {key[1]}{mark} | " + " | ".join(str(t[key]) for t in tot) + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m tools.hardhat_outcomes", description=__doc__.split("\n")[0]
    )
    p.add_argument("manifests", nargs="+", type=Path, help="hard-hat manifests (A [B])")
    p.add_argument("--data", type=Path, required=True, help="the data set's data.yaml")
    p.add_argument("--split", default="val")
    p.add_argument("--stride", type=int, default=1, help="every N-th image (default 1: all)")
    p.add_argument("--resamples", type=int, default=2000, help="bootstrap resamples (two models)")
    p.add_argument("--out", type=Path, help="also write the table and intervals as JSON")
    args = p.parse_args(argv)
    if len(args.manifests) > 2:
        p.error("one or two manifests")
    if args.stride < 1 or args.resamples < 1:
        p.error("--stride and --resamples must be >= 1")
    runs = run(args.manifests, args.data, split=args.split, stride=args.stride)
    labels = [str(m) for m in args.manifests]
    print(f"{len(runs[0])} images ({args.split}, every {args.stride})\n")
    print(table(labels, runs))
    report: dict[str, Any] = {
        "images": len(runs[0]),
        "models": {
            lab: {f"{k[0]} -> {k[1]}": totals(r)[k] for k in OUTCOMES}
            for lab, r in zip(labels, runs, strict=True)
        },
    }
    if len(runs) == 2:
        boot = paired_bootstrap(runs[0], runs[1], resamples=args.resamples)
        report["bootstrap"] = boot
        print(f"\nB - A over {args.resamples} resamples of the images (90 % interval):\n")
        print("| errors | B - A | 90 % interval | B fewer | B more |\n|---|---:|---|---:|---:|")
        for name, r in boot.items():
            print(
                f"| {name} | {r['difference']:+.0f} | {r['low']:+.0f} ... {r['high']:+.0f} "
                f"| {r['b_fewer']:.0%} | {r['b_more']:.0%} |"
            )
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
