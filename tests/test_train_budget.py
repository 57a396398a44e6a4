"""tools/train_yolo.py's --budget-s arithmetic (torch-free, so it runs in CI)."""

from __future__ import annotations

import pytest

from tools.train_yolo import _budget_epochs


def test_rate_leaves_out_the_first_epoch() -> None:
    # epoch 1 took 10 s (start-up), epochs 2-3 took 2 s each: 100 s -> 3 + (100 - 14) / 2
    assert _budget_epochs(100.0, [10.0, 12.0, 14.0]) == 3 + 43


def test_single_epoch_uses_its_own_time() -> None:
    assert _budget_epochs(100.0, [10.0]) == 1 + 9


@pytest.mark.parametrize("budget", [0.0, 5.0, 14.0])
def test_spent_budget_keeps_the_epochs_done(budget: float) -> None:
    assert _budget_epochs(budget, [10.0, 12.0, 14.0]) == 3
