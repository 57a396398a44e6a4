"""Counting lines: a person standing on the line counts nothing, whatever their size.

The real :class:`~edge.stream.tracker.Tracker` (the gateway's default settings) feeds a
real :class:`~edge.stream.lines.LineCounter` at 10 det/s, as the camera pipeline does.
The detections are synthetic boxes with Gaussian noise on every coordinate, calibrated
on the real default detector over ``vtest.avi`` (standing people: feet-y standard
deviation median 3 %, p90 6 % of the box height). With the former fixed 10 px margin a
250 px person standing on the line for a minute counted 25 in and 26 out at 3 % and
about 80 each way at 6 %; the margin now scales with the box height.
"""

from __future__ import annotations

import numpy as np
import pytest

from edge.stream.lines import LineCounter, LineSpec
from edge.stream.tracker import Tracker, TrackerConfig
from tests.stream.test_tracker import dets

FRAME = (768, 576)
LINE_Y = 400.0
FPS = 10.0
T0_MS = 1_700_000_000_000


def gateway_tracker() -> Tracker:
    """The gateway's default tracker settings (``TrackerSettings`` in edge/config.py)."""
    return Tracker(
        config=TrackerConfig(high_score=0.5, low_score=0.1, match_iou=0.2, n_init=2, max_age_s=3.0)
    )


def line_counter(**spec: object) -> LineCounter:
    kwargs: dict[str, object] = {
        "name": "gate",
        "points": ((0.0, LINE_Y), (768.0, LINE_Y)),  # drawn rightwards: walking down is in
        "classes": ("person",),
    }
    kwargs.update(spec)
    return LineCounter(
        LineSpec(**kwargs),  # type: ignore[arg-type]
        camera="cam",
        task="fence",
        class_names=("person", "car"),
        forget_after_s=10.0,
    )


def box(cx: float, feet_y: float, h: float) -> list[float]:
    return [cx - 0.2 * h, feet_y - h, cx + 0.2 * h, feet_y]


def drive(
    ctr: LineCounter,
    boxes: list[list[float] | None],
    sizes: list[tuple[int, int]] | None = None,
) -> list[tuple[int, str]]:
    """One frame per entry (``None``: nothing detected), of ``sizes[k]`` (default
    ``FRAME``); ``(frame, direction)`` per event."""
    trk = gateway_tracker()
    out: list[tuple[int, str]] = []
    for k, b in enumerate(boxes):
        size = FRAME if sizes is None else sizes[k]
        t = 1000.0 + k / FPS
        boxes_k = [] if b is None else [b]
        tracked = trk.update(dets(boxes_k, [0.8] * len(boxes_k)), t=t)
        for e in ctr.step(tracked, t=t, wall_ms=T0_MS + round(k * 1000 / FPS), frame_size=size):
            out.append((k, str(e.attributes["direction"])))
    return out


def standing(h: float, sigma: float, seed: int, seconds: float = 60.0) -> list[list[float] | None]:
    """Feet on the line, every box coordinate + N(0, sigma * h)."""
    rng = np.random.default_rng(seed)
    base = np.asarray(box(384.0, LINE_Y, h))
    return [list(base + rng.normal(0.0, sigma * h, 4)) for _ in range(int(seconds * FPS))]


@pytest.mark.parametrize("h", [80.0, 150.0, 250.0])
@pytest.mark.parametrize("sigma", [0.03, 0.06])
def test_a_person_standing_on_the_line_counts_nothing(h: float, sigma: float) -> None:
    for seed in range(3):
        ctr = line_counter()
        assert drive(ctr, standing(h, sigma, seed)) == [], (h, sigma, seed)
        assert ctr.counts == {"in": 0, "out": 0}


def test_the_fixed_margin_alone_counts_a_standing_person_again_and_again() -> None:
    """The former behaviour (``min_displacement_frac=0``): 10 px is nothing to a near
    person's jitter -- why the margin scales with the box."""
    ctr = line_counter(min_displacement_frac=0.0)
    drive(ctr, standing(250.0, 0.03, 0))
    assert ctr.counts["in"] >= 10 and ctr.counts["out"] >= 10


@pytest.mark.parametrize("h", [80.0, 150.0, 250.0])
@pytest.mark.parametrize("fps_step", [1, 5])  # 10 and 2 det/s
def test_a_walk_across_counts_once_each_way(h: float, fps_step: int) -> None:
    """Down through the line (in), a pause below it, back up through it (out), with 3 %
    jitter: exactly one count each way, a step (a quarter of the height) after the line."""
    rng = np.random.default_rng(7)
    speed = 0.8 * h  # px/s: about 1.4 m/s for a 1.7 m person
    feet: list[float] = []
    y = LINE_Y - 1.5 * h
    while y < LINE_Y + 1.5 * h:  # walk down
        feet.append(y)
        y += speed / FPS
    feet += [y] * 30  # stands 3 s below the line
    while y > LINE_Y - 1.5 * h:  # walks back up
        feet.append(y)
        y -= speed / FPS
    boxes: list[list[float] | None] = [
        list(np.asarray(box(384.0, fy, h)) + rng.normal(0.0, 0.03 * h, 4)) for fy in feet
    ]
    ctr = line_counter()
    got = drive(ctr, boxes[::fps_step])
    assert [d for _, d in got] == ["in", "out"], got
    assert ctr.counts == {"in": 1, "out": 1}
    # each counted within 1 s of the feet crossing the line
    crossed_in = next(k for k, fy in enumerate(feet) if fy > LINE_Y)
    crossed_out = next(k for k, fy in enumerate(feet) if k > crossed_in and fy < LINE_Y)
    (k_in, _), (k_out, _) = got
    assert 0 <= k_in * fps_step - crossed_in <= FPS
    assert 0 <= k_out * fps_step - crossed_out <= FPS


def test_a_pixel_line_follows_the_camera_to_another_frame_size() -> None:
    """A line drawn in pixels on the camera's 1280x720 view (y = 500); the camera comes
    back from a reconnect at 640x360. The line is scaled with the frame (y = 250): a
    person walking down across it there counts once, one standing on it (3 % and 6 %
    jitter) counts nothing -- the margin, max(10 px, a quarter of the box height), is in
    pixels of the frame the boxes come from. Before, the line stayed at y = 500, below
    the 360 px frame: nobody ever crossed it again."""
    big, small = (1280, 720), (640, 360)
    line = ((0.0, 500.0), (1280.0, 500.0))  # drawn rightwards: walking down is in
    rng = np.random.default_rng(11)
    h = 90.0  # px at 640x360
    before = [box(640.0, 300.0, 2 * h) for _ in range(20)]  # above the line, at 1280x720
    feet = list(np.arange(250.0 - 1.3 * h, 250.0 + 1.2 * h, 0.8 * h / FPS))  # walks down
    after = [list(np.asarray(box(320.0, fy, h)) + rng.normal(0.0, 0.03 * h, 4)) for fy in feet]
    ctr = line_counter(points=line)
    got = drive(ctr, [*before, *after], [big] * len(before) + [small] * len(after))
    assert [d for _, d in got] == ["in"], got
    crossed = len(before) + next(k for k, fy in enumerate(feet) if fy > 250.0)
    assert 0 <= got[0][0] - crossed <= FPS
    np.testing.assert_array_equal(ctr.line_for(*small), [[0, 250], [640, 250]])
    for sigma in (0.03, 0.06):
        for hh in (40.0, 90.0):
            ctr = line_counter(points=line)
            stand = [
                list(np.asarray(box(320.0, 250.0, hh)) + rng.normal(0.0, sigma * hh, 4))
                for _ in range(600)
            ]
            ups = [box(640.0, 300.0, 2 * hh) for _ in range(10)]
            got = drive(ctr, [*ups, *stand], [big] * len(ups) + [small] * len(stand))
            assert got == [] and ctr.counts == {"in": 0, "out": 0}, (sigma, hh)
            assert ctr.line_for(*small)[0, 1] == 250.0


def test_line_spec_checks_min_displacement_frac() -> None:
    for bad in (-0.1, float("nan"), 11.0):
        with pytest.raises(ValueError, match="min_displacement_frac"):
            LineSpec(name="g", points=((0.0, 0.0), (1.0, 1.0)), min_displacement_frac=bad)
    assert LineSpec(name="g", points=((0.0, 0.0), (9.0, 9.0))).min_displacement_frac == 0.25
