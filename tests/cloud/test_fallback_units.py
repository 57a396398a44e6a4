"""The fallback's parts without a network: circuit breaker (with a test clock), daily
budget (a real SQLite file, day rollover with a test clock, threads racing), the band,
crop window and merge rule, and the ``fallback`` config section."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest

from edge.cloud.breaker import CircuitBreaker
from edge.cloud.budget import BudgetError, DailyBudget, budget_path
from edge.cloud.fallback import crop_window, iou_matrix, merge_boxes, uncertain_mask
from edge.config import FALLBACK_APP_SECRET_ENV, FallbackConfig, config_from_mapping
from edge.errors import ConfigError


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


# -- circuit breaker ---------------------------------------------------------------------


def test_breaker_closed_open_half_open_closed() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=3, cooldown_s=10.0, clock=clock)
    assert b.state == "closed"
    for _ in range(2):
        t = b.acquire()
        assert t == "call"
        b.record(t, success=False)
    assert b.state == "closed" and b.consecutive_failures == 2
    b.record(b.acquire() or "call", success=False)
    assert b.state == "open" and b.opened_total == 1
    assert b.acquire() is None
    assert b.retry_in_s() == pytest.approx(10.0)
    clock.t += 9.99
    assert b.state == "open" and b.acquire() is None
    clock.t += 0.01
    assert b.state == "half_open"
    probe = b.acquire()
    assert probe == "probe"
    assert b.acquire() is None, "only one probe while half-open"
    b.record(probe, success=True)
    assert b.state == "closed" and b.consecutive_failures == 0
    assert b.acquire() == "call"


def test_breaker_failed_probe_reopens_with_new_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=5.0, clock=clock)
    b.record(b.acquire() or "call", success=False)
    assert b.state == "open"
    clock.t += 5.0
    probe = b.acquire()
    assert probe == "probe"
    b.record(probe, success=False)
    assert b.state == "open" and b.opened_total == 2
    clock.t += 4.9
    assert b.acquire() is None
    clock.t += 0.1
    assert b.acquire() == "probe"


def test_breaker_released_probe_can_be_taken_again() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=1, cooldown_s=0.0, clock=clock)
    b.record(b.acquire() or "call", success=False)
    probe = b.acquire()
    assert probe == "probe" and b.acquire() is None
    b.release(probe)
    assert b.acquire() == "probe"


def test_breaker_success_resets_count_and_late_failures_do_not_restart_cooldown() -> None:
    clock = Clock()
    b = CircuitBreaker(failure_threshold=2, cooldown_s=10.0, clock=clock)
    b.record("call", success=False)
    b.record("call", success=True)
    b.record("call", success=False)
    assert b.state == "closed", "the success in between reset the count"
    b.record("call", success=False)
    assert b.state == "open"
    clock.t += 6
    b.record("call", success=False)  # a call that started before the breaker opened
    clock.t += 4
    assert b.state == "half_open"


def test_breaker_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=0, cooldown_s=1.0)
    with pytest.raises(ValueError):
        CircuitBreaker(failure_threshold=1, cooldown_s=-1.0)


# -- daily budget -------------------------------------------------------------------------


def test_budget_limit_persists_and_resets_next_day(tmp_path: Path) -> None:
    now = [datetime(2024, 5, 1, 23, 59, 0, tzinfo=timezone.utc)]
    path = budget_path(tmp_path)
    with DailyBudget(path=path, limit=3, day="utc", now=lambda: now[0]) as b:
        assert [b.try_take() for _ in range(5)] == [True, True, True, False, False]
        assert b.used() == 3 and b.remaining() == 0 and b.today() == "2024-05-01"
    assert path.is_file()
    with DailyBudget(path=path, limit=3, day="utc", now=lambda: now[0]) as b:
        assert not b.try_take(), "a restart must not reset the day's count"
        now[0] += timedelta(minutes=2)
        assert b.today() == "2024-05-02"
        assert b.try_take() and b.used() == 1 and b.used("2024-05-01") == 3


def test_budget_local_day_follows_the_local_calendar(tmp_path: Path) -> None:
    at = datetime(2024, 5, 1, 12, 0, 0)  # naive = local time
    with DailyBudget(path=tmp_path / "b.sqlite3", limit=1, day="local", now=lambda: at) as b:
        assert b.today() == "2024-05-01"
    aware = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone(timedelta(hours=14)))
    with DailyBudget(path=tmp_path / "b.sqlite3", limit=1, day="utc", now=lambda: aware) as b:
        assert b.today() == "2024-04-30"


def test_budget_never_exceeded_by_racing_threads_and_two_connections(tmp_path: Path) -> None:
    path = tmp_path / "budget.sqlite3"
    a = DailyBudget(path=path, limit=50, day="utc")
    b = DailyBudget(path=path, limit=50, day="utc")
    taken: list[bool] = []
    lock = threading.Lock()

    def worker(budget: DailyBudget) -> None:
        for _ in range(20):
            ok = budget.try_take()
            with lock:
                taken.append(ok)

    threads = [threading.Thread(target=worker, args=(x,)) for x in (a, b, a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(taken) == 50 and len(taken) == 80
    assert a.used() == 50 == b.used()
    a.close()
    b.close()
    a.close()  # idempotent


def test_budget_unlimited_counts(tmp_path: Path) -> None:
    with DailyBudget(path=tmp_path / "u.sqlite3", limit=None) as b:
        assert all(b.try_take() for _ in range(10))
        assert b.used() == 10 and b.remaining() is None


def test_budget_zero_sends_nothing_and_closed_budget_raises(tmp_path: Path) -> None:
    b = DailyBudget(path=tmp_path / "z.sqlite3", limit=0)
    assert not b.try_take()
    b.close()
    with pytest.raises(BudgetError, match="closed"):
        b.try_take()


def test_budget_unopenable_file_is_a_budget_error(tmp_path: Path) -> None:
    (tmp_path / "dir.sqlite3").mkdir()
    with pytest.raises(BudgetError, match="cannot open"):
        DailyBudget(path=tmp_path / "dir.sqlite3", limit=1)


# -- band, crop window, merge -------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "unsure"),
    [(0.0, False), (0.2999, False), (0.3, True), (0.45, True), (0.5999, True), (0.6, False)],
)
def test_uncertain_band_is_half_open(score: float, unsure: bool) -> None:
    assert uncertain_mask([score], (0.3, 0.6)).tolist() == [unsure]


def test_uncertain_mask_empty() -> None:
    assert uncertain_mask([], (0.3, 0.6)).shape == (0,)


def test_iou_matrix_values() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 0, 0]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    m = iou_matrix(a, b)
    assert m.shape == (2, 3)
    assert m[0].tolist() == pytest.approx([50 / 150, 1.0, 0.0])
    assert m[1].tolist() == [0.0, 0.0, 0.0]
    assert iou_matrix(np.zeros((0, 4)), b).shape == (0, 3)


@pytest.mark.parametrize(
    ("boxes", "size", "margin", "min_size", "window"),
    [
        # one 20 px box: +10 each side = 40, grown to 64 around its centre
        ([[78, 30, 98, 50]], (128, 128), 0.5, 64, (56, 8, 120, 72)),
        # near the corner: shifted inside the image, not cut
        ([[0, 0, 10, 10]], (128, 128), 0.5, 64, (0, 0, 64, 64)),
        ([[118, 118, 128, 128]], (128, 128), 0.5, 64, (64, 64, 128, 128)),
        # union of two boxes, no growth needed
        ([[10, 10, 20, 20], [80, 50, 90, 60]], (200, 100), 0.0, 8, (10, 10, 90, 60)),
        # image smaller than min_size: the whole image
        ([[5, 5, 10, 10]], (40, 30), 0.5, 64, (0, 0, 40, 30)),
        # fractional box
        ([[10.4, 10.6, 20.2, 20.9]], (100, 100), 0.0, 1, (10, 10, 21, 21)),
    ],
)
def test_crop_window(
    boxes: list[list[float]],
    size: tuple[int, int],
    margin: float,
    min_size: int,
    window: tuple[int, int, int, int],
) -> None:
    got = crop_window(np.array(boxes), size[0], size[1], margin=margin, min_size=min_size)
    assert got == window
    x0, y0, x1, y1 = got
    b = np.array(boxes)
    assert x0 <= b[:, 0].min() and y0 <= b[:, 1].min()
    assert x1 >= b[:, 2].max() and y1 >= b[:, 3].max()


def test_crop_window_needs_a_box() -> None:
    with pytest.raises(ValueError):
        crop_window(np.zeros((0, 4)), 10, 10, margin=0.0, min_size=1)


BAND = (0.3, 0.6)


@pytest.mark.parametrize(
    ("local", "scores", "remote", "window", "keep_l", "keep_r"),
    [
        # the uncertain box goes, the cloud box replaces it
        ([[0, 0, 10, 10]], [0.45], [[1, 1, 11, 11]], None, [], [0]),
        # a sure box stays; the cloud's copy of it is dropped, its new box added
        (
            [[0, 0, 10, 10], [50, 50, 60, 60]],
            [0.9, 0.4],
            [[0, 0, 10, 10], [50, 50, 60, 62]],
            None,
            [0],
            [1],
        ),
        # the cloud sees nothing: the uncertain box is deleted
        ([[0, 0, 10, 10], [50, 50, 60, 60]], [0.9, 0.4], [], None, [0], []),
        # scores below the band are sure too (the local threshold let them through)
        ([[0, 0, 10, 10]], [0.25], [[0, 0, 10, 10]], None, [0], []),
        # crop: a sure box cut by the crop border matches the cloud's cut copy
        (
            [[40, 0, 80, 20], [10, 0, 20, 10]],
            [0.9, 0.5],
            [[40, 0, 55, 20], [10, 0, 20, 10]],
            (0, 0, 55, 20),
            [0],
            [1],
        ),
        # without the window the cut copy would be counted twice
        (
            [[40, 0, 80, 20], [10, 0, 20, 10]],
            [0.9, 0.5],
            [[40, 0, 55, 20], [10, 0, 20, 10]],
            None,
            [0],
            [0, 1],
        ),
        # the local model failed: everything is the cloud's
        ([], [], [[1, 2, 3, 4], [5, 6, 7, 8]], None, [], [0, 1]),
    ],
)
def test_merge_rule(
    local: list[list[float]],
    scores: list[float],
    remote: list[list[float]],
    window: tuple[int, int, int, int] | None,
    keep_l: list[int],
    keep_r: list[int],
) -> None:
    kl, kr = merge_boxes(
        np.array(local, np.float32).reshape(-1, 4),
        np.array(scores, np.float32),
        np.array(remote, np.float32).reshape(-1, 4),
        band=BAND,
        match_iou=0.5,
        window=window,
    )
    assert kl.tolist() == keep_l and kr.tolist() == keep_r


# -- config -------------------------------------------------------------------------------


def test_fallback_off_by_default_and_validated() -> None:
    cfg = config_from_mapping({})
    assert cfg.fallback.enabled is False
    with pytest.raises(ConfigError, match="fallback: Value error, an enabled fallback needs"):
        config_from_mapping({"fallback": {"enabled": True}})
    with pytest.raises(ConfigError, match=r"fallback\.uncertain_band"):
        config_from_mapping({"fallback": {"uncertain_band": [0.6, 0.3]}})
    with pytest.raises(ConfigError, match=r"fallback\.service_codes\.bogus"):
        config_from_mapping({"fallback": {"service_codes": {"bogus": "x"}}})
    with pytest.raises(ConfigError, match=r"fallback\.retries"):
        config_from_mapping({"fallback": {"retries": 3}})
    ok = config_from_mapping(
        {
            "fallback": {
                "enabled": True,
                "base_url": "http://127.0.0.1:1",
                "service_codes": {"hardhat": "c"},
                "uncertain_band": [0.25, 0.5],
            }
        }
    )
    assert ok.fallback.uncertain_band == (0.25, 0.5)
    # round trip as serve's command-line overrides do
    assert type(ok).model_validate(ok.model_dump()) == ok


def test_fallback_credentials_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = FallbackConfig(
        enabled=True, base_url="http://x", app_key="k", service_codes={"fence": "f"}
    )
    monkeypatch.delenv(FALLBACK_APP_SECRET_ENV, raising=False)
    with pytest.raises(ConfigError, match=FALLBACK_APP_SECRET_ENV):
        cfg.credentials()
    monkeypatch.setenv(FALLBACK_APP_SECRET_ENV, "from-env")
    assert cfg.credentials() == ("http://x", "k", "from-env")
    cfg2 = cfg.model_copy(update={"app_secret": "in-file"})
    assert cfg2.credentials()[2] == "from-env", "the environment wins over the file"
