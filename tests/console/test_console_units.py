"""The console's parts without a browser: sessions and login throttling, zone edits of
the YAML file, monitoring buckets (against the store's own per-minute rows), the hourly
rollup, the events feed and snapshot paths, and the running zone's polygon swap."""

from __future__ import annotations

import os
import random
import stat
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from edge.api.console.auth import LoginThrottle, SessionStore, check_token, same_token
from edge.api.console.feed import EventFeed, EventFilter, ThumbnailCache, safe_snapshot_path
from edge.api.console.rollup import HourlyRollup
from edge.api.console.stats import RANGES, StatsQuery, bucket_stats
from edge.api.console.zone_edit import (
    KEEP_BACKUPS,
    ZoneEditError,
    ZoneEditor,
    edit_text,
    validate_points,
)
from edge.api.store import APIS, Store, histogram_percentile
from edge.config import load_config
from edge.stream.events import EventStore, ZoneEvent
from edge.stream.tracker import TRACK_IDS
from edge.stream.zones import ZoneMonitor, ZoneSpec
from edge.types import Detections
from tests.fsfaults import FsyncRecorder, file_size_limit

# -- sessions and login -------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_sessions_expire_when_idle_or_old_and_logout_ends_them() -> None:
    clock = Clock()
    store = SessionStore(clock=clock, idle_timeout_s=60, max_age_s=300)
    s = store.create(client="1.2.3.4")
    assert len(s.sid) >= 40 and len(s.csrf) >= 40 and s.sid != s.csrf
    clock.t += 59
    assert store.get(s.sid) is s  # used: idle timer restarts
    clock.t += 59
    assert store.get(s.sid) is s
    clock.t += 61
    assert store.get(s.sid) is None  # idle too long
    s2 = store.create()
    for _ in range(6):
        clock.t += 50
        assert store.get(s2.sid) is s2
    clock.t += 10
    assert store.get(s2.sid) is None  # older than max_age_s, used or not
    s3 = store.create()
    store.delete(s3.sid)
    assert store.get(s3.sid) is None
    assert store.get("") is None and store.get(None) is None


def test_sessions_are_bounded() -> None:
    clock = Clock()
    store = SessionStore(clock=clock, max_sessions=3)
    made = []
    for _ in range(5):
        clock.t += 1
        made.append(store.create())
    assert len(store) == 3
    assert store.get(made[0].sid) is None and store.get(made[-1].sid) is made[-1]


def test_login_throttle_blocks_after_repeated_failures_then_forgets() -> None:
    clock = Clock()
    th = LoginThrottle(failures=3, window_s=60, clock=clock)
    for _ in range(2):
        th.failed("a")
    assert th.blocked("a") == 0.0
    th.failed("a")
    assert 59 < th.blocked("a") <= 60
    assert th.blocked("b") == 0.0  # per address
    clock.t += 61
    assert th.blocked("a") == 0.0
    th.failed("a")
    th.succeeded("a")
    assert th.blocked("a") == 0.0


@pytest.mark.parametrize(
    ("given", "token", "ok"),
    [("t0ken", "t0ken", True), ("t0ken", "t0ken ", False), ("", "x", False), (None, "x", False)],
)
def test_token_comparison(given: str | None, token: str, ok: bool) -> None:
    assert same_token(given, token) is ok
    assert check_token(given, token) is ok
    assert check_token(given, None) is False  # console off: nothing matches


# -- zone edits -----------------------------------------------------------------------------

NEW = "[[10, 20], [30, 40], [50, 60], [7, 8]]"
LAYOUTS = {
    "block sequence with comments": """# top comment
cameras:
  - name: cam1   # the gate
    source: /x.avi
    tasks:
      fence:
        zones:
          - name: gate
            polygon:   # drawn by hand
              - [1, 2]
              - [3, 4]   # c
              - [5, 6]
            # after
            min_dwell_s: 1
          - name: other
            polygon: [[0, 0], [1, 0], [1, 1]]
""",
    "string polygon": """cameras:
- name: cam1
  source: /x.avi
  tasks:
    fence:
      zones:
      - name: gate
        polygon: "1,2,3,4,5,6"
      - name: other
""",
    "no polygon yet": """cameras:
- name: cam1
  source: /x.avi
  tasks:
    fence:
      zones:
      - name: gate   # whole frame
""",
    "flow style": "cameras: [{name: cam1, source: /x.avi,"
    " tasks: {fence: {zones: [{name: gate}]}}}]\n",
    "compact nested block": """cameras:
- name: cam1
  source: /x.avi
  tasks:
    fence:
      zones:
      - polygon:
        - - 1
          - 2
        - - 3
          - 4
        name: gate
        classes: [people]
""",
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_edit_text_replaces_only_the_polygon_and_keeps_comments(layout: str) -> None:
    text = LAYOUTS[layout]
    out, rewritten = edit_text(text, camera="cam1", task="fence", zone="gate", polygon_text=NEW)
    assert not rewritten
    want = yaml.safe_load(text)
    gate = next(z for z in want["cameras"][0]["tasks"]["fence"]["zones"] if z["name"] == "gate")
    gate["polygon"] = yaml.safe_load(NEW)
    assert yaml.safe_load(out) == want
    for line in text.splitlines():  # comments survive, but those inside the old polygon
        if "#" in line and "- [" not in line:
            assert line[line.index("#") :] in out


def test_edit_text_refuses_unknown_zones_and_non_yaml() -> None:
    with pytest.raises(ZoneEditError, match="no zone 'nope'") as e:
        edit_text(
            LAYOUTS["string polygon"], camera="cam1", task="fence", zone="nope", polygon_text=NEW
        )
    assert e.value.status == 404
    with pytest.raises(ZoneEditError, match="not valid YAML"):
        edit_text("a: [1, 2", camera="c", task="fence", zone="z", polygon_text=NEW)


@pytest.mark.parametrize(
    ("points", "why"),
    [
        ([[10, 10], [100, 10], [100, 100]], "4 to 9 points, got 3"),
        ([[i, i * i % 7] for i in range(10)], "4 to 9 points, got 10"),
        ([[10, 10], [100, 100], [100, 10], [10, 100]], "not simple"),
        ([[10, 10], [800, 10], [100, 100], [10, 100]], "outside the 768x576 image"),
        ([[10, 10], [50, 10], [100, 10], [200, 10]], "not simple"),
        ([[10, 10], ["a", 10], [100, 100], [10, 100]], "number pairs"),
        ("10,10,100,10", "number pairs"),
        ([[10, 10], [True, 10], [100, 100], [10, 100]], "number pairs"),
    ],
)
def test_invalid_polygons_are_refused(points: Any, why: str) -> None:
    with pytest.raises(ZoneEditError, match=why):
        validate_points(points, 768, 576)


def _config(tmp_path: Path, *, normalized: bool = False) -> Path:
    poly = (
        [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]
        if normalized
        else [
            [10, 10],
            [300, 10],
            [300, 200],
            [10, 200],
        ]
    )
    text = "# my gateway\n" + yaml.safe_dump(
        {
            "data_dir": str(tmp_path / "data"),
            "cameras": [
                {
                    "name": "cam1",
                    "source": "/x.avi",
                    "tasks": {"fence": {"zones": [{"name": "gate", "polygon": poly}]}},
                }
            ],
        },
        sort_keys=False,
    )
    path = tmp_path / "gateway.yaml"
    path.write_text(text, encoding="utf-8")
    os.chmod(path, 0o640)
    return path


def test_save_writes_the_file_with_a_backup_and_applies_it(tmp_path: Path) -> None:
    path = _config(tmp_path)
    before = path.read_text(encoding="utf-8")
    applied: list[tuple[Any, ...]] = []
    ed = ZoneEditor(
        config=load_config(path),
        config_path=path,
        apply=lambda *a: applied.append(a),
    )
    pts = [[20.04, 30], [400, 30], [400, 300.06], [20, 300]]
    res = ed.save(camera="cam1", task="fence", zone="gate", points=pts, width=768, height=576)
    assert res.applied and res.message == "saved and applied" and not res.rewritten
    assert res.polygon == [(20.0, 30.0), (400.0, 30.0), (400.0, 300.1), (20.0, 300.0)]
    assert applied == [("cam1", "fence", "gate", res.polygon, False)]
    assert res.backup is not None and res.backup.read_text(encoding="utf-8") == before
    after = path.read_text(encoding="utf-8")
    assert after.startswith("# my gateway\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    cfg = load_config(path)
    assert cfg.cameras[0].tasks["fence"].zones[0].polygon == res.polygon
    assert ed.zone("cam1", "fence", "gate").polygon == res.polygon  # the console's view too
    assert not list(tmp_path.glob(".gateway.yaml.tmp-*"))


def test_save_syncs_the_new_file_before_the_rename_and_the_folder_after(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _config(tmp_path).resolve()
    before = path.read_text(encoding="utf-8")
    ed = ZoneEditor(config=load_config(path), config_path=path)
    rec = FsyncRecorder(monkeypatch, probe=lambda: path.read_text(encoding="utf-8"))
    pts = [[20, 30], [400, 30], [400, 300], [20, 300]]
    ed.save(camera="cam1", task="fence", zone="gate", points=pts, width=768, height=576)
    after = path.read_text(encoding="utf-8")
    assert after != before
    assert [(c.path, c.probe) for c in rec.calls] == [
        (path.with_name(f".gateway.yaml.tmp-{os.getpid()}"), before),  # data, then rename
        (path.parent, after),  # the folder, once the new name is in it
    ]


def test_a_disk_full_save_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = _config(tmp_path)
    ed = ZoneEditor(config=load_config(path), config_path=path)
    four = [[20, 30], [400, 30], [400, 300], [20, 300]]
    ed.save(camera="cam1", task="fence", zone="gate", points=four, width=768, height=576)
    before = path.read_text(encoding="utf-8")  # the polygon now on one line
    nine = [[20, 30], [200, 20], [400, 30], [420, 150], [400, 300], [200, 310], [20, 300],
            [10, 200], [10, 100]]  # fmt: skip
    # the backup (a copy of the old file) fits; the longer new file fails midway (EFBIG)
    with file_size_limit(len(before.encode())), pytest.raises(ZoneEditError) as e:
        ed.save(camera="cam1", task="fence", zone="gate", points=nine, width=768, height=576)
    assert "cannot write the config file" in str(e.value) and e.value.status == 500
    assert path.read_text(encoding="utf-8") == before
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert not list(tmp_path.glob(".gateway.yaml.tmp-*"))
    backups = sorted(tmp_path.glob("gateway.yaml.bak-*"))  # the failure was the new file's
    assert len(backups) == 2 and backups[-1].read_text(encoding="utf-8") == before
    res = ed.save(camera="cam1", task="fence", zone="gate", points=nine, width=768, height=576)
    assert len(res.polygon) == 9 and stat.S_IMODE(path.stat().st_mode) == 0o640


def test_a_normalized_zone_stays_normalized(tmp_path: Path) -> None:
    path = _config(tmp_path, normalized=True)
    ed = ZoneEditor(config=load_config(path), config_path=path)
    res = ed.save(
        camera="cam1",
        task="fence",
        zone="gate",
        points=[[76.8, 57.6], [384, 57.6], [384, 288], [76.8, 288]],
        width=768,
        height=576,
    )
    assert res.normalized and res.polygon == [(0.1, 0.1), (0.5, 0.1), (0.5, 0.5), (0.1, 0.5)]
    assert not res.applied and "next starts" in res.message
    assert load_config(path).cameras[0].tasks["fence"].zones[0].normalized is True


def test_save_failures_leave_the_file_alone(tmp_path: Path) -> None:
    path = _config(tmp_path)
    before = path.read_text(encoding="utf-8")
    square = [[20, 30], [400, 30], [400, 300], [20, 300]]

    def boom(*_a: Any) -> None:
        raise KeyError("camera 'cam1' is not running")

    ed = ZoneEditor(config=load_config(path), config_path=path, apply=boom)
    with pytest.raises(ZoneEditError, match="not simple"):
        ed.save(
            camera="cam1",
            task="fence",
            zone="gate",
            points=[[20, 30], [400, 300], [400, 30], [20, 300]],
            width=768,
            height=576,
        )
    with pytest.raises(ZoneEditError, match="no zone") as e:
        ed.save(camera="cam1", task="fence", zone="x", points=square, width=768, height=576)
    assert e.value.status == 404
    assert path.read_text(encoding="utf-8") == before
    assert not list(tmp_path.glob("gateway.yaml.bak-*"))
    res = ed.save(camera="cam1", task="fence", zone="gate", points=square, width=768, height=576)
    assert res.path is not None and not res.applied and "not applied" in res.message
    nowhere = ZoneEditor(config=load_config(path), config_path=None)
    with pytest.raises(ZoneEditError, match="nowhere to save") as e:
        nowhere.save(camera="cam1", task="fence", zone="gate", points=square, width=768, height=576)
    assert e.value.status == 409


def test_old_backups_are_pruned(tmp_path: Path) -> None:
    path = _config(tmp_path)
    ed = ZoneEditor(config=load_config(path), config_path=path)
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    for i in range(KEEP_BACKUPS + 3):
        x = 20 + i
        ed.save(
            camera="cam1",
            task="fence",
            zone="gate",
            points=[[x, 30], [400, 30], [400, 300], [20, 300]],
            width=768,
            height=576,
            now=t0 + timedelta(seconds=i),
        )
    backups = sorted(tmp_path.glob("gateway.yaml.bak-*"))
    assert len(backups) == KEEP_BACKUPS
    assert backups[-1].name.endswith("20260101T000022000000Z")


def test_a_running_zone_takes_a_new_polygon() -> None:
    mon = ZoneMonitor(
        ZoneSpec(name="gate", polygon=((0, 0), (100, 0), (100, 100), (0, 100)), min_dwell_s=0),
        camera="c",
        task="fence",
        class_names=["person"],
    )
    dets = Detections(
        xyxy=np.array([[40, 0, 60, 50]], np.float32),
        scores=np.array([0.9], np.float32),
        class_ids=np.array([0], np.int32),
        data={TRACK_IDS: np.array([7], np.int64)},
    )
    assert mon.inside(dets, (640, 480)).tolist() == [True]
    mon.set_polygon([(200, 200), (300, 200), (300, 300), (200, 300)], normalized=False)
    assert mon.inside(dets, (640, 480)).tolist() == [False]
    mon.set_polygon([(0, 0), (0.5, 0), (0.5, 0.5), (0, 0.5)], normalized=True)
    assert mon.inside(dets, (640, 480)).tolist() == [True]
    with pytest.raises(ValueError):
        mon.set_polygon([(0, 0), (10, 10), (10, 0), (0, 10)], normalized=False)
    assert mon.spec.normalized  # unchanged after a refused polygon


# -- monitoring buckets ----------------------------------------------------------------------


def _reference(store: Store, q: StatsQuery, now: datetime) -> dict[str, Any]:
    """The chart series from Store.minute_stats, summed in Python (the slow, obvious way)."""
    span, step = RANGES[q.range]
    end = (int(now.timestamp()) // step + 1) * step
    lo = end - span
    rows = store.minute_stats(
        app_key=q.app_key,
        api=q.api,
        since=datetime.fromtimestamp(lo, timezone.utc),
        until=datetime.fromtimestamp(end, timezone.utc),
    )
    n = span // step
    req, err, hist = [0] * n, [0] * n, [dict[int, int]() for _ in range(n)]
    codes: dict[str, list[int]] = {}
    for r in rows:
        i = (int(r.minute.timestamp()) - lo) // step
        req[i] += r.requests
        err[i] += r.errors
        for b, c in r.histogram.items():
            hist[i][b] = hist[i].get(b, 0) + c
        for code, c in r.errors_by_code.items():
            codes.setdefault(str(code), [0] * n)[i] += c
    p95 = [histogram_percentile(h, 0.95) for h in hist]
    return {
        "requests": req,
        "errors": err,
        "p95_ms": [None if v is None else round(v, 3) for v in p95],
        "codes": codes,
    }


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, HourlyRollup, datetime]:
    root = tmp_path_factory.mktemp("stats")
    store = Store(path=root / "safety-edge.sqlite3")
    apps = [store.create_app(name=f"app-{i}", description="", grants=list(APIS)) for i in range(2)]
    rng = random.Random(3)
    now = datetime.now(timezone.utc)
    for m in range(9 * 24 * 60, 0, -37):  # nine days, one minute in 37
        at = now - timedelta(minutes=m)
        for app in apps:
            for api in APIS:
                for _ in range(rng.randint(0, 3)):
                    store.record_request(
                        app_key=app.app_key,
                        api=api,
                        code=rng.choice([0, 0, 0, 4010, 4029]),
                        latency_ms=rng.uniform(1, 400),
                        request_bytes=100,
                        response_bytes=10,
                        at=at,
                    )
    store.flush()
    for s in range(0, 300, 7):  # recent requests, not flushed
        store.record_request(
            app_key=apps[0].app_key,
            api="fence",
            code=0,
            latency_ms=5.0,
            request_bytes=1,
            response_bytes=1,
            at=now - timedelta(seconds=s),
        )
    rollup = HourlyRollup(path=root / "rollup.sqlite3", store_path=store.path, retention_days=30)
    return store, rollup, now


@pytest.mark.parametrize("rng", ["hour", "day", "week"])
@pytest.mark.parametrize("which", ["all", "app", "api"])
def test_buckets_equal_the_store_rows_summed(
    traffic: tuple[Store, HourlyRollup, datetime], rng: str, which: str
) -> None:
    store, rollup, now = traffic
    key = store.list_apps()[0].app_key
    q = StatsQuery(
        range=rng,  # type: ignore[arg-type]
        app_key=key if which == "app" else None,
        api="fence" if which == "api" else None,
    )
    want = _reference(store, q, now)
    raw = bucket_stats(store, q, now=now)
    rollup.catch_up(now=now.timestamp())
    with_rollup = bucket_stats(store, q, now=now, rollup=rollup)
    for got in (raw, with_rollup):
        assert got["requests"] == want["requests"]
        assert got["errors"] == want["errors"]
        assert got["p95_ms"] == want["p95_ms"]
        assert got["codes"] == want["codes"]
        assert sum(r["requests"] for r in got["table"]) == sum(want["requests"])
    assert sum(raw["requests"]) > 0
    if rng == "hour":
        assert raw["requests"][-1] > 0  # unflushed requests of this minute are counted


def test_rollup_sums_late_rows_again_and_drops_expired_hours(tmp_path: Path) -> None:
    store = Store(path=tmp_path / "s.sqlite3")
    app = store.create_app(name="late-app", description="", grants=["fence"])
    now = datetime(2026, 3, 1, 12, 30, tzinfo=timezone.utc)

    def add(at: datetime, n: int) -> None:
        for _ in range(n):
            store.record_request(
                app_key=app.app_key,
                api="fence",
                code=0,
                latency_ms=3.0,
                request_bytes=1,
                response_bytes=1,
                at=at,
            )
        store.flush()

    add(now - timedelta(hours=2), 5)
    add(now - timedelta(days=40), 9)  # older than retention: never summed
    ru = HourlyRollup(path=tmp_path / "r.sqlite3", store_path=store.path, retention_days=30)
    assert ru.catch_up(now=now.timestamp()) > 0
    q = StatsQuery(range="week")
    assert sum(bucket_stats(store, q, now=now, rollup=ru)["requests"]) == 5
    add(now - timedelta(hours=2), 4)  # flushed late into an hour already summed
    ru.catch_up(now=now.timestamp())
    assert sum(bucket_stats(store, q, now=now, rollup=ru)["requests"]) == 9
    with ru.connection() as c:
        oldest = c.execute("SELECT MIN(hour) FROM hours_done").fetchone()[0]
    assert oldest >= (now - timedelta(days=30)).timestamp()
    ru.close()
    ru.close()
    store.close()


def test_stats_query_is_checked() -> None:
    with pytest.raises(ValueError, match="range"):
        StatsQuery(range="year")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown API"):
        StatsQuery(api="face")


# -- events feed and snapshots ---------------------------------------------------------------


def _event(i: int, camera: str, t_ms: int, snapshot: str | None = None) -> ZoneEvent:
    return ZoneEvent(
        event_id=f"01J{i:023d}",
        type="start",
        camera=camera,
        task="fence",
        zone="gate",
        label="person",
        score=0.9,
        box=(1, 2, 3, 4),
        track_id=i,
        time_ms=t_ms,
        snapshot=snapshot,
        attributes={"dwell_s": 1.5},
    )


def test_event_feed_lists_filters_and_tails_by_insertion(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    feed = EventFeed(path=path)
    assert feed.recent(EventFilter()) == [] and feed.last_id() == 0  # no file yet
    with EventStore(path=path) as st:
        st.add_many([_event(i, "a" if i % 2 else "b", 1000 + i) for i in range(10)])
        mark = feed.last_id()
        st.add(_event(50, "a", 5))  # late: an older time, inserted last
    assert [e["event_id"] for e in feed.after(mark, EventFilter())] == [_event(50, "a", 5).event_id]
    assert feed.after(mark, EventFilter(camera="b")) == []
    recent = feed.recent(EventFilter(camera="a", since_ms=1003), limit=2)
    assert [e["time_ms"] for e in recent] == [1009, 1007]
    assert recent[0]["attributes"] == {"dwell_s": 1.5}
    assert feed.names() == (["a", "b"], ["fence"])


def test_snapshot_paths_stay_inside_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "snaps"
    (root / "cam" / "2026-01-01").mkdir(parents=True)
    good = root / "cam" / "2026-01-01" / "e1.jpg"
    import cv2

    _, buf = cv2.imencode(".jpg", np.full((300, 600, 3), 90, np.uint8))
    good.write_bytes(buf.tobytes())
    (tmp_path / "secret.jpg").write_bytes(b"x")
    os.symlink(tmp_path / "secret.jpg", root / "cam" / "link.jpg")
    assert safe_snapshot_path(root, "cam/2026-01-01/e1.jpg") == good.resolve()
    for bad in (
        "../secret.jpg",
        "cam/../../secret.jpg",
        str(tmp_path / "secret.jpg"),
        "cam/link.jpg",
        "cam/2026-01-01/e1.png",
        "cam/2026-01-01/missing.jpg",
        "",
    ):
        assert safe_snapshot_path(root, bad) is None, bad
    thumbs = ThumbnailCache(width=120)
    small = thumbs.get(good)
    assert small is not None
    img = cv2.imdecode(np.frombuffer(small, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (60, 120, 3)
    assert thumbs.get(good) is small  # cached
