"""The body budget's bookkeeping (:mod:`edge.api.body_budget`) and its config rules."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from edge.api.body_budget import BodyBudget, BudgetFull
from edge.api.contract import hat_body_limit
from edge.config import ApiConfig

MIB = 1024 * 1024


def test_total_share_and_read_caps() -> None:
    b = BodyBudget(total_bytes=100, per_key_bytes=60, per_key_reads=2)
    a1 = b.lease("a")
    a1.ensure(50)
    a1.ensure(40)  # already held: no-op
    assert (b.held, a1.reserved) == (50, 50)
    a2 = b.lease("a")
    with pytest.raises(BudgetFull, match="hold 50 bytes of its 60 bytes share"):
        a2.ensure(11)  # 61 > 60 for key a
    assert b.held == 50  # a failed reservation holds nothing more
    with pytest.raises(BudgetFull, match="already has 2"):
        b.lease("a")
    c = b.lease(None)
    with pytest.raises(BudgetFull, match="in progress hold 50 bytes of 100 bytes; 51 bytes more"):
        c.ensure(51)  # 101 > 100 in total
    c.ensure(50)
    assert b.held == 100
    a1.release()
    a1.release()  # idempotent
    assert b.held == 50
    a2.ensure(10)
    with a2:
        pass
    c.release()
    assert (b.held, b.leases) == (0, 0)
    with pytest.raises(RuntimeError):
        a2.ensure(1)


@pytest.mark.parametrize(
    ("total", "share", "reads"), [(0, 0, 1), (10, 11, 1), (10, 0, 1), (10, 5, 0)]
)
def test_bad_arguments(total: int, share: int, reads: int) -> None:
    with pytest.raises(ValueError):
        BodyBudget(total_bytes=total, per_key_bytes=share, per_key_reads=reads)


def test_config_defaults_and_floor() -> None:
    api = ApiConfig()
    assert api.largest_body_bytes() == 50 * MIB
    assert api.body_budget_bytes() == 100 * MIB
    assert api.body_reads_per_key() == api.workers + api.queue_size
    small = ApiConfig(max_fence_body_bytes=MIB, max_image_bytes=2 * MIB)
    assert small.largest_body_bytes() == hat_body_limit(2 * MIB)
    assert ApiConfig(max_inflight_body_bytes=50 * MIB).body_budget_bytes() == 50 * MIB
    with pytest.raises(ValidationError, match="at least the largest request body"):
        ApiConfig(max_inflight_body_bytes=50 * MIB - 1)
    with pytest.raises(ValidationError):
        ApiConfig(header_timeout_s=0)
