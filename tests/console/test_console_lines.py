"""Counting lines in the console without a browser: the line's points edited in the YAML
text (only they change), the server's line rules (the config's own), saving with a backup
and applying, a running :class:`LineCounter` moved with its counts kept, and the whole
chain over HTTP on an in-process gateway (real pipeline on a looped video, real uvicorn,
real ``gateway.yaml``): a bad line is refused and changes nothing, a good one changes only
that line in the file, keeps a backup and moves the running counter."""

from __future__ import annotations

import difflib
import html
import json
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml

from edge.api.console.zone_edit import (
    ZoneEditError,
    ZoneEditor,
    edit_text,
    validate_line_points,
)
from edge.config import LineConfig, load_config
from edge.kernels.geometry import MAX_LINE_POINTS
from edge.stream.lines import LineCounter, LineSpec
from edge.stream.tracker import TRACK_IDS
from edge.types import Detections
from tests.api.server_fixture import console_login, free_port, write_models
from tests.console.gateway import DOOR, FRAME, gateway_config, in_process_gateway, wait_for

# -- the YAML text --------------------------------------------------------------------------

NEW = "[[10, 20], [30, 40], [50, 60]]"
LAYOUTS = {
    "block with comments": """# top comment
cameras:
  - name: cam1   # the gate
    source: /x.avi
    tasks:
      fence:
        zones:
          - name: door-zone
            polygon: [[0, 0], [9, 0], [9, 9], [0, 9]]
        lines:
          - name: door
            points:   # drawn by hand
              - [1, 2]
              - [3, 4]   # c
            # after
            min_displacement_px: 5
          - name: other
            points: [[0, 0], [1, 1]]
  - name: cam2
    source: /y.avi
    tasks:
      fence:
        lines:
          - name: door   # same name, another camera: untouched
            points: [[5, 5], [6, 6]]
""",
    "string points": """cameras:
- name: cam1
  source: /x.avi
  tasks:
    fence:
      lines:
      - name: door
        points: "1,2,3,4"
""",
    "flow style": "cameras: [{name: cam1, source: /x.avi,"
    " tasks: {fence: {lines: [{name: door, points: [[1, 2], [3, 4]]}]}}}]\n",
    "compact nested block": """cameras:
- name: cam1
  source: /x.avi
  tasks:
    fence:
      lines:
      - points:
        - - 1
          - 2
        - - 3
          - 4
        name: door
        classes: [people]
""",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_edit_text_replaces_only_the_line_points_and_keeps_comments(layout: str) -> None:
    text = LAYOUTS[layout]
    out, rewritten = edit_text(
        text, camera="cam1", task="fence", zone="door", polygon_text=NEW, kind="line"
    )
    assert not rewritten
    want = yaml.safe_load(text)
    door = next(x for x in want["cameras"][0]["tasks"]["fence"]["lines"] if x["name"] == "door")
    door["points"] = yaml.safe_load(NEW)
    assert yaml.safe_load(out) == want  # cam2's door and the zone are as they were
    for line in text.splitlines():  # comments survive, but those inside the old points
        if "#" in line and "- [" not in line:
            assert line[line.index("#") :] in out


def test_edit_text_finds_lines_not_zones_of_that_name() -> None:
    with pytest.raises(ZoneEditError, match="no line 'door-zone'") as e:
        edit_text(
            LAYOUTS["block with comments"],
            camera="cam1",
            task="fence",
            zone="door-zone",
            polygon_text=NEW,
            kind="line",
        )
    assert e.value.status == 404


# -- the rules ------------------------------------------------------------------------------

SIXTEEN = [[10 + 40 * i, 100 + 30 * (i % 2)] for i in range(MAX_LINE_POINTS)]


@pytest.mark.parametrize(
    ("points", "why"),
    [
        ([[10, 10]], "at least 2 distinct points, got 1"),
        ([[10, 10], [10, 10]], "at least 2 distinct points, got 1"),
        ([*SIXTEEN, [700, 500]], f"at most {MAX_LINE_POINTS}"),
        ([[10, 10], [100, 100], [100, 10], [10, 100]], "crosses or touches itself"),
        ([[10, 10], [100, 10], [50, 10]], "crosses or touches itself"),  # folds back
        ([[10, 10], [100, 10], [100, 100], [50, 10]], "crosses or touches itself"),  # touches
        ([[10, 10], [800, 10]], "line point 2 \\(800, 10\\) lies outside the 768x576 image"),
        ([[10, 10], ["a", 10]], "number pairs"),
        ([[10, 10], [True, 10]], "number pairs"),
        ("10,10,100,10", "number pairs"),
    ],
)
def test_invalid_lines_are_refused_with_the_configs_reason(points: Any, why: str) -> None:
    with pytest.raises(ZoneEditError, match=why):
        validate_line_points(points, 768, 576)


@pytest.mark.parametrize(
    "points",
    [
        [[10, 10], [100, 10]],
        SIXTEEN,
        [[10, 10], [10, 10], *SIXTEEN[1:]],  # a repeat is dropped before counting, as config
        [[10, 10], [100, 10], [100, 100], [10, 10]],  # closed: meets itself where it ends
        [[0, 0], [768, 576]],  # the frame's corners
    ],
)
def test_valid_lines_pass_and_agree_with_the_config(points: list[list[float]]) -> None:
    got = validate_line_points(points, 768, 576)
    assert got == [(float(x), float(y)) for x, y in points]
    LineConfig(name="x", points=got)  # the config check says the same


def _config(tmp_path: Path, *, normalized: bool = False) -> Path:
    door = [[0.1, 0.5], [0.9, 0.5]] if normalized else [[50, 300], [700, 300]]
    text = "# my gateway\n" + yaml.safe_dump(
        {
            "data_dir": str(tmp_path / "data"),
            "cameras": [
                {
                    "name": "cam1",
                    "source": "/x.avi",
                    "tasks": {
                        "fence": {
                            "zones": [{"name": "gate", "polygon": [[1, 1], [9, 1], [9, 9]]}],
                            "lines": [
                                {"name": "door", "points": door, "min_displacement_px": 4},
                                {"name": "exit", "points": [[5, 5], [50, 5]]},
                            ],
                        }
                    },
                }
            ],
        },
        sort_keys=False,
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o640)
    return path


def _only_door_changed(before: str, after: str, door: Any) -> None:
    want = yaml.safe_load(before)
    want["cameras"][0]["tasks"]["fence"]["lines"][0]["points"] = door
    assert yaml.safe_load(after) == want


def test_save_line_writes_only_that_line_with_a_backup_and_applies_it(tmp_path: Path) -> None:
    path = _config(tmp_path)
    before = path.read_text(encoding="utf-8")
    applied: list[tuple[Any, ...]] = []
    ed = ZoneEditor(
        config=load_config(path),
        config_path=path,
        apply=lambda *a: pytest.fail("the zone hook was called"),
        apply_line=lambda *a: applied.append(a),
    )
    pts = [[700.04, 310], [380, 250.06], [40, 310]]
    res = ed.save_line(camera="cam1", task="fence", line="door", points=pts, width=768, height=576)
    assert res.applied and res.message.startswith("saved and applied") and not res.rewritten
    assert res.kind == "line" and res.to_dict()["points"] == [[700, 310], [380, 250.1], [40, 310]]
    assert applied == [("cam1", "fence", "door", res.points, False)]
    assert res.backup is not None and res.backup.read_text(encoding="utf-8") == before
    after = path.read_text(encoding="utf-8")
    assert after.startswith("# my gateway\n")
    _only_door_changed(before, after, [[700.0, 310.0], [380.0, 250.1], [40.0, 310.0]])
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    door = load_config(path).cameras[0].tasks["fence"].lines[0]
    assert door.points == res.points and door.min_displacement_px == 4
    assert ed.line("cam1", "fence", "door").points == res.points  # the console's view too


def test_a_normalized_line_stays_normalized(tmp_path: Path) -> None:
    path = _config(tmp_path, normalized=True)
    ed = ZoneEditor(config=load_config(path), config_path=path)
    res = ed.save_line(
        camera="cam1",
        task="fence",
        line="door",
        points=[[76.8, 57.6], [384, 288]],
        width=768,
        height=576,
    )
    assert res.normalized and res.points == [(0.1, 0.1), (0.5, 0.5)]
    assert not res.applied and "next starts" in res.message
    assert load_config(path).cameras[0].tasks["fence"].lines[0].normalized is True


def test_refused_lines_leave_the_file_alone(tmp_path: Path) -> None:
    path = _config(tmp_path)
    before = path.read_text(encoding="utf-8")
    applied: list[Any] = []
    ed = ZoneEditor(
        config=load_config(path), config_path=path, apply_line=lambda *a: applied.append(a)
    )
    ok = [[10, 10], [100, 10]]
    for points, why in [
        ([[10, 10], [100, 100], [100, 10], [10, 100]], "crosses or touches itself"),
        ([[10, 10]], "at least 2 distinct points"),
        ([[10, 10], [770, 10]], "outside the 768x576 image"),
    ]:
        with pytest.raises(ZoneEditError, match=why):
            ed.save_line(
                camera="cam1", task="fence", line="door", points=points, width=768, height=576
            )
    for line in ("gate", "nope"):  # a zone is not a line
        with pytest.raises(ZoneEditError, match=f"no line '{line}'") as e:
            ed.save_line(camera="cam1", task="fence", line=line, points=ok, width=768, height=576)
        assert e.value.status == 404
    assert path.read_text(encoding="utf-8") == before
    assert not list(tmp_path.glob("gateway.yaml.bak-*")) and not applied
    nowhere = ZoneEditor(config=load_config(path), config_path=None)
    with pytest.raises(ZoneEditError, match="nowhere to save the line") as e:
        nowhere.save_line(
            camera="cam1", task="fence", line="door", points=ok, width=768, height=576
        )
    assert e.value.status == 409


# -- the running counter ----------------------------------------------------------------------


def _feet(tid: int, x: float, y: float) -> Detections:
    """One tracked person whose feet (bottom centre) are at (x, y)."""
    return Detections(
        xyxy=np.array([[x - 10, y - 40, x + 10, y]], np.float32),
        scores=np.array([0.9], np.float32),
        class_ids=np.array([0], np.int32),
        data={TRACK_IDS: np.array([tid], np.int64)},
    )


def _walk(c: LineCounter, tid: int, ys: list[float], t0: float) -> list[str]:
    out: list[str] = []
    for i, y in enumerate(ys):
        evs = c.step(_feet(tid, 100, y), t=t0 + i * 0.1, wall_ms=0, frame_size=(640, 480))
        out += [str(e.attributes["direction"]) for e in evs]
    return out


def test_a_running_line_takes_new_points_and_keeps_its_counts() -> None:
    c = LineCounter(
        LineSpec(name="door", points=((0, 100), (200, 100))), camera="c", task="fence",
        class_names=["person"],
    )  # fmt: skip
    # Drawn left to right: walking down the image crosses it from left to right, "in".
    assert _walk(c, 1, [80, 120, 130], 0.0) == ["in"]
    c.set_points([(0, 300), (200, 300)], normalized=False)
    assert c.line_for(640, 480).tolist() == [[0, 300], [200, 300]]
    assert _walk(c, 2, [80, 120, 130], 1.0) == []  # the old line counts no more ...
    assert _walk(c, 2, [290, 320], 2.0) == ["in"]  # ... the new one does
    assert c.counts == {"in": 2, "out": 0}  # and the counts went on
    c.set_points([(0, 0.5), (1, 0.5)], normalized=True)
    assert c.line_for(640, 480).tolist() == [[0, 240], [640, 240]]
    with pytest.raises(ValueError, match="at least 2 distinct points"):
        c.set_points([(1, 1), (1, 1)], normalized=False)
    assert c.line_for(640, 480).tolist() == [[0, 240], [640, 240]]  # unchanged


def test_a_crossing_pending_on_the_old_line_is_dropped_when_it_moves() -> None:
    def counter() -> LineCounter:
        spec = LineSpec(name="door", points=((0, 100), (200, 100)), min_displacement_px=10)
        return LineCounter(spec, camera="c", task="fence", class_names=["person"])

    kept = counter()
    assert _walk(kept, 1, [90, 105, 120], 0.0) == ["in"]  # unmoved, it counts
    moved = counter()
    assert _walk(moved, 1, [90, 105], 0.0) == []  # pending: 5 px past the line
    moved.set_points([(0, 50), (200, 50)], normalized=False)  # above: never crossed
    assert _walk(moved, 1, [120], 0.2) == [] and moved.counts == {"in": 0, "out": 0}


# -- over HTTP on a running gateway ------------------------------------------------------------


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[Any, Path, str]]:
    """``safety-edge run``'s service in this process, as ``run`` starts it."""
    write_models(tmp_path / "models")
    port = free_port()
    cfg = gateway_config(tmp_path, port=port)

    def counting(svc: Any) -> bool:
        return bool(svc.cameras["gate-cam"].pipeline.metrics()["tasks"]["fence"]["lines"] != {})

    with in_process_gateway(cfg, ready=counting) as svc:
        yield svc, cfg, f"http://127.0.0.1:{port}"


def _login(c: httpx.Client, base: str) -> str:
    assert console_login(c, base).status_code == 303
    page = c.get(f"{base}/console/cameras")
    m = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
    assert m is not None
    return m.group(1)


def _drawn_lines(c: httpx.Client, base: str) -> list[dict[str, Any]]:
    page = c.get(f"{base}/console/cameras")
    m = re.search(r'data-lines="([^"]*)"', page.text)
    assert m is not None, page.text
    return list(json.loads(html.unescape(m.group(1))))


def test_a_line_saved_over_http_changes_only_it_and_moves_the_running_counter(
    service: tuple[Any, Path, str],
) -> None:
    svc, cfg, base = service
    original = cfg.read_text(encoding="utf-8")
    counter = svc.cameras["gate-cam"].pipeline.tasks[0].counter("door")
    url = f"{base}/console/lines/gate-cam/fence/door"
    with httpx.Client(timeout=10) as c:
        csrf = _login(c, base)
        drawn = _drawn_lines(c, base)
        assert drawn == [
            {
                "name": "door",
                "points": DOOR,
                "normalized": False,
                "counts": {"in": 0, "out": 0},  # the running counter's, since the start
                "task": "fence",
            }
        ]
        page = c.get(url)
        assert page.status_code == 200 and "in</strong> (the arrow)" in page.text
        assert "they are not reset" in page.text
        assert "<script>" not in page.text
        assert "unsafe-inline" not in page.headers["content-security-policy"]
        assert c.get(f"{base}/console/lines/gate-cam/fence/gate").status_code == 404  # a zone

        def post(points: Any, **headers: str) -> httpx.Response:
            body = {"points": points, "width": FRAME[0], "height": FRAME[1]}
            return c.post(url, json=body, headers={"X-CSRF-Token": csrf, **headers})

        bow = [[100, 100], [400, 300], [400, 100], [100, 300]]
        r = post(bow)
        assert r.status_code == 400 and r.json() == {
            "error": "line crosses or touches itself",
            "code": 4012,
        }
        r = post([[10, 10], [800, 10]])
        assert r.status_code == 400 and r.json()["code"] == 4013
        r = post([[10 + i, 10 + (i % 2) * 20] for i in range(MAX_LINE_POINTS + 1)])
        assert r.status_code == 400 and f"at most {MAX_LINE_POINTS}" in r.json()["error"]
        good = [[80, 400], [400, 380], [720, 400]]
        assert post(good, **{"X-CSRF-Token": "forged"}).status_code == 403
        assert post(good, Origin="http://evil.example").status_code == 403
        bare = c.post(url, json={"points": good, "width": 768, "height": 576})
        assert bare.status_code == 403
        assert cfg.read_text(encoding="utf-8") == original
        assert not list(cfg.parent.glob("gateway.yaml.bak-*"))
        assert counter.spec.points == tuple((float(x), float(y)) for x, y in DOOR)

        r = post(good)
        assert r.status_code == 200, r.text
        res = r.json()
        assert res["applied"] and res["message"].startswith("saved and applied"), res
        assert res["points"] == good and not res["rewritten"]
        after = cfg.read_text(encoding="utf-8")
        _only_door_changed(original, after, good)
        removed = [
            x for x in difflib.ndiff(original.splitlines(), after.splitlines()) if x[0] in "-+"
        ]
        assert [x for x in removed if x[0] == "+"] == [
            "+         points: [[80, 400], [400, 380], [720, 400]]"
        ], removed  # one line in; out: only the old points' block lines
        assert all(re.fullmatch(r"-\s+(points:|- - \d+|- \d+)", x) for x in removed if x[0] == "-")
        backups = list(cfg.parent.glob("gateway.yaml.bak-*"))
        assert len(backups) == 1 and backups[0].read_text(encoding="utf-8") == original
        # The running counter counts against the new line from the next frame.
        assert counter.spec.points == ((80.0, 400.0), (400.0, 380.0), (720.0, 400.0))
        assert counter.line_for(*FRAME).tolist() == good
        pipe = svc.cameras["gate-cam"].pipeline
        done = pipe.metrics()["frames_processed"]  # and frames go on with the new line
        wait_for(lambda: pipe.metrics()["frames_processed"] >= done + 2, 20, "two more frames")
        assert _drawn_lines(c, base)[0]["points"] == good
