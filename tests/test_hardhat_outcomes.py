"""`tools/hardhat_outcomes.py`: per-person outcomes of the hard-hat task against the labels.

The counting and the bootstrap on hand-made cases; then the shipped model on every second
val photo (the floors test's subset), whose false and missed violations must stay at or
under a ceiling a few above what was measured when it shipped, with enough people judged
that the ceiling means something. Skips without ``../shared/data`` or the models.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import MODELS
from tools.hardhat_outcomes import (
    FALSE_VIOLATION,
    MISSED_VIOLATION,
    ImageOutcome,
    main,
    paired_bootstrap,
    run,
    table,
    tally,
    truth_of,
)


def person(box: list[int] | None, status: str, classname: str) -> dict[str, object]:
    return {"person": box, "status": status, "classname": classname}


def test_truth_of() -> None:
    assert truth_of("compliant", "red_hat") == "hat"
    assert truth_of("violation", "no_hat") == "bare"
    assert truth_of("cannot_tell", "no_hat") is None  # too small, cut off, occluded
    assert truth_of("violation", "red_hat") is None  # not a verdict on the head


def test_tally_pairs_people_by_box() -> None:
    a, b, c, d = [0, 0, 10, 10], [0, 20, 10, 30], [0, 40, 10, 50], [0, 60, 10, 70]
    truth = [
        person(a, "compliant", "white_hat"),
        person(b, "violation", "no_hat"),
        person(c, "violation", "no_hat"),
        person(d, "cannot_tell", "no_hat"),  # no verdict: not judged
        person(None, "compliant", "red_hat"),  # a head with nobody under it
    ]
    answer = [
        person(c, "compliant", "blue_hat"),  # order does not matter
        person(a, "violation", "no_hat"),
        person(b, "violation", "no_hat"),
        person(d, "compliant", "red_hat"),
        person(None, "violation", "no_hat"),
        person([5, 5, 9, 9], "violation", "no_hat"),  # not in the truth: skipped
    ]
    assert tally(truth, answer) == Counter(
        {FALSE_VIOLATION: 1, ("bare", "violation"): 1, MISSED_VIOLATION: 1}
    )
    assert tally(truth, []) == Counter()


def outcome(false: int, missed: int, right: int = 3) -> ImageOutcome:
    return ImageOutcome(
        "x.jpg",
        Counter({FALSE_VIOLATION: false, MISSED_VIOLATION: missed, ("hat", "compliant"): right}),
    )


def test_paired_bootstrap() -> None:
    a = [outcome(2, 1), outcome(1, 0), outcome(3, 1), outcome(0, 0)]
    b = [outcome(1, 1), outcome(0, 0), outcome(1, 1), outcome(0, 0)]
    r = paired_bootstrap(a, b, resamples=400)
    fv, mv, both = r["false violations"], r["missed violations"], r["both"]
    assert fv["difference"] == -4 and mv["difference"] == 0 and both["difference"] == -4
    # B never has more false violations on any image: no resample can favour A
    assert fv["b_more"] == 0.0 and fv["b_fewer"] > 0.9 and fv["high"] <= 0
    assert mv["b_fewer"] == 0.0 and mv["b_more"] == 0.0 and mv["low"] == mv["high"] == 0
    assert paired_bootstrap(a, a, resamples=50)["both"]["b_fewer"] == 0.0
    with pytest.raises(ValueError, match="different images"):
        paired_bootstrap(a, b[:2], resamples=10)


def test_table() -> None:
    text = table(["A", "B"], [[outcome(2, 1)], [outcome(0, 1)]])
    assert "| hat -> violation **(error)** | 2 | 0 |" in text
    assert "| bare -> compliant **(error)** | 1 | 1 |" in text
    assert "| hat -> compliant | 3 | 3 |" in text


def test_main_refuses_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        ["a.yaml", "b.yaml", "c.yaml", "--data", "d.yaml"],
        ["a", "--data", "d", "--stride", "0"],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
    assert "one or two manifests" in capsys.readouterr().err


CEILING_FALSE = 13
"""Shipped model (f2437c1a) on every second val photo: 10 false violations (83 hat-wearers
judged), measured 2026-11-27 with ``python -m tools.hardhat_outcomes --stride 2``; the model
before it had 15."""
CEILING_MISSED = 4
"""Same run: 2 missed violations (45 bare-headed workers judged); the model before: 4."""


def test_shipped_model_outcomes_under_ceiling(
    shared_data: Path, default_model_manifest: Path
) -> None:
    if not (MODELS / "hardhat.onnx").is_file():
        pytest.skip("models/hardhat.onnx not shipped (train it: see models/MODEL_CARD.md)")
    (images,) = run(
        [MODELS / "hardhat.yaml"],
        shared_data / "hardhat" / "data.yaml",
        stride=2,
        person_manifest=default_model_manifest,
        threads=2,
    )
    assert len(images) == 98
    tot: Counter[tuple[str, str]] = Counter()
    for im in images:
        tot.update(im.counts)
    hats = sum(v for k, v in tot.items() if k[0] == "hat")
    bare = sum(v for k, v in tot.items() if k[0] == "bare")
    assert hats >= 75 and bare >= 40, tot  # enough people judged for the ceilings to bite
    assert tot[FALSE_VIOLATION] <= CEILING_FALSE, tot
    assert tot[MISSED_VIOLATION] <= CEILING_MISSED, tot
