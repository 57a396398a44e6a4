"""``safety-edge run`` end to end: a real subprocess on vtest.avi with the default detector,
a real mosquitto on a free loopback port, a real subscriber, real SQLite files, the real
API over HTTP and a unix datagram socket standing in for systemd's ``NOTIFY_SOCKET``.
"""

from __future__ import annotations

import hashlib
import json
import signal
import sqlite3
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge.stream.events import EventStore, ZoneEvent, events_db_path
from edge.stream.evidence import verify_evidence
from tests.mqtt.broker import MOSQUITTO, MosquittoBroker, free_port
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait
from tests.service.gateway_proc import VTEST, Gateway, NotifySocket, gateway_config

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def _needs(default_model_manifest: Path) -> None:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing: apt-get install opencv-doc")
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (make deps)")


def stored_events(data_dir: Path) -> list[ZoneEvent]:
    with EventStore(path=events_db_path(data_dir)) as store:
        return store.list_events(limit=100_000)


def published(sub: Subscriber) -> dict[str, dict[str, Any]]:
    return {m.json()["event_id"]: m.json() for m in sub.on_topic("/events")}


def check_incidents(events: list[dict[str, Any]]) -> int:
    """Each incident: exactly one start, then updates, exactly one end. Returns how many."""
    by: dict[str, list[str]] = defaultdict(list)
    for e in sorted(events, key=lambda e: (e["time_ms"], e["type"] != "start")):
        key = e["event_id"] if e["type"] == "start" else e["start_event_id"]
        by[key].append(e["type"])
    for key, kinds in by.items():
        assert kinds.count("start") == 1 and kinds[0] == "start", (key, kinds)
        assert kinds.count("end") == 1 and kinds[-1] == "end", (key, kinds)
    return len(by)


def test_run_publishes_fence_events_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """start/end events of the footpath zone reach a subscriber; camera_offline and
    task_unavailable alerts (and resolved ones for what is available) and the retained
    state too; /healthz and /metrics show the cameras; sd_notify READY/WATCHDOG/STOPPING;
    SIGTERM in the middle of the event stream ends open incidents and loses nothing:
    every event of the events table arrives."""
    api_port = free_port()
    notify = NotifySocket()
    with MosquittoBroker(tmp_path) as broker:
        cfg = gateway_config(
            tmp_path,
            broker_port=broker.port,
            api_port=api_port,
            zone={"update_every_s": 0.5},  # a steady stream of events to interrupt
            extra_cameras=[
                {
                    "name": "gone",
                    "source": str(tmp_path / "no-such-video.avi"),
                    "offline_alert_after_s": 0,  # raised at once: no 60 s wait
                    "tasks": {
                        "fence": {"zones": [{"name": "all", "polygon": [[0, 0], [1, 0], [1, 1]]}]}
                    },
                },
                {
                    "name": "hats",
                    "source": str(VTEST),
                    "enabled": True,
                    "tasks": {"hardhat": {"model": "no-such-model"}},
                },
            ],
        )
        with Subscriber(
            host=broker.host, port=broker.port, topics=["se-test/gw-test/#"], client_id="sub-a"
        ) as sub:
            gw = Gateway(cfg, notify=notify)
            try:
                gw.wait_ready()
                base = f"http://127.0.0.1:{api_port}"
                # start and end of the fence zone at the subscriber
                assert sub.wait_for(
                    lambda: {"start", "end"} <= {e["type"] for e in published(sub).values()},
                    60,
                ), gw.output()[-3000:]
                health = httpx.get(f"{base}/healthz", timeout=10).json()
                metrics = httpx.get(f"{base}/metrics", timeout=10).text
                # SIGTERM while updates are flowing: an incident is open and has already
                # sent an update (else SIGTERM can land before the first update is due)
                assert wait(
                    lambda: (
                        health_open(base) > 0
                        and "update" in {e["type"] for e in published(sub).values()}
                    ),
                    30,
                    interval=0.05,
                ), gw.output()[-3000:]
                rc = gw.stop(signal.SIGTERM)
            except BaseException:
                gw.kill()
                raise
            finally:
                notify.close()
            out = gw.output()
            stored = stored_events(tmp_path / "data")
            assert sub.wait_for(lambda: len(published(sub)) >= len(stored), 10)
            pub = published(sub)
            alerts = [m.json()["alert"] for m in sub.on_topic("/alerts")]
            states = [m.json() for m in sub.on_topic("/vtest/fence/state")]

    assert rc == 0, out[-3000:]
    assert gw.exit_seconds is not None and gw.exit_seconds < 10 + 3
    assert "Traceback" not in out
    # nothing lost: every stored event was published, every published one was stored
    assert {e.event_id for e in stored} == set(pub), (len(stored), len(pub))
    kinds = Counter(e["type"] for e in pub.values())
    assert kinds["start"] >= 1 and kinds["end"] >= 1 and kinds["update"] >= 1, kinds
    assert all(e["camera"] == "vtest" and e["zone"] == "footpath" for e in pub.values())
    assert all(e["label"] == "person" and e["gateway"] == "gw-test" for e in pub.values())
    assert check_incidents(list(pub.values())) == kinds["start"]  # all ended, shutdown too
    assert "shutdown" in {e["attributes"].get("reason") for e in pub.values()}
    # snapshots of start events exist on disk, with the SHA-256 the MQTT event carries
    for e in pub.values():
        if e["type"] == "start":
            snap = tmp_path / "data" / "snapshots" / e["snapshot"]
            assert hashlib.sha256(snap.read_bytes()).hexdigest() == e["snapshot_sha256"]
    # the events table the gateway wrote is an intact hash chain (safety-edge events verify)
    conn = sqlite3.connect(events_db_path(tmp_path / "data"), isolation_level=None)
    chain = verify_evidence(
        conn, snapshots_root=tmp_path / "data" / "snapshots", strict_snapshots=True
    )
    conn.close()
    assert chain.ok and chain.rows == len(stored), chain.to_dict()
    # alerts: the missing video, the missing model
    assert {"kind": "camera_offline", "key": "gone", "state": "active"}.items() <= next(
        a for a in alerts if a["kind"] == "camera_offline"
    ).items()
    active = [a for a in alerts if a["state"] == "active"]
    unavailable = [a for a in active if a["kind"] == "task_unavailable"]
    assert [a["key"] for a in unavailable] == ["hats/hardhat"]
    assert "no-such-model" in unavailable[0]["message"]
    assert [a["key"] for a in active if a["kind"] == "camera_unavailable"] == ["hats"]
    # what is available is published resolved at start (clears an earlier start's alert)
    assert {
        (a["kind"], a["key"])
        for a in alerts
        if a["state"] == "resolved" and a["kind"] in ("task_unavailable", "camera_unavailable")
    } == {
        ("task_unavailable", "vtest/fence"),
        ("task_unavailable", "gone/fence"),
        ("camera_unavailable", "vtest"),
        ("camera_unavailable", "gone"),
    }
    # retained state with per-zone counts
    assert states and all(set(s["zones"]) == {"footpath"} for s in states)
    assert any(s["zones"]["footpath"] > 0 for s in states)
    # health and metrics
    assert health["status"] == "degraded"  # 'gone' is offline, 'hats' has no task
    assert health["models"]["fence"] == "up"  # the API's own part is kept
    cam = health["cameras"]["vtest"]
    assert cam["online"] is True and cam["running"] is True and cam["fps"] > 0
    assert cam["inference_ms"]["fence"] > 0 and cam["frames_processed"] > 0
    assert health["cameras"]["gone"]["online"] is False
    assert health["cameras"]["hats"]["running"] is False
    assert health["mqtt"]["connected"] is True
    for series in (
        'safety_edge_camera_fps{camera="vtest"}',
        'safety_edge_camera_frames_total{camera="vtest",stage="dropped"}',
        'safety_edge_camera_stage_seconds{camera="vtest",task="fence",stage="inference"}',
        'safety_edge_events_total{camera="vtest",type="start"}',
        'safety_edge_task_up{camera="hats",task="hardhat"} 0',
        "safety_edge_mqtt_outbox_rows",
        "safety_edge_inflight_requests",  # the API's own series are kept
    ):
        assert series in metrics, series
    # systemd: READY first, watchdog pings while running, STOPPING at the end
    lines = notify.lines()
    assert lines.index("READY=1") < lines.index("STOPPING=1")
    assert lines.count("WATCHDOG=1") >= 2
    assert json.loads(out.splitlines()[-1])["level"] in ("info", "warning")  # JSON logs


def health_open(base: str) -> int:
    try:
        h = httpx.get(f"{base}/healthz", timeout=5).json()
    except httpx.HTTPError:
        return 0
    return int(h["cameras"]["vtest"].get("open_incidents", 0))


def test_sigterm_with_broker_down_keeps_events_for_the_next_start(tmp_path: Path) -> None:
    """The broker goes away during the event stream; SIGTERM then exits within the bound
    (the flush gives up after flush_timeout_s) with events left in the outbox. After the
    broker and the gateway come back, the subscriber has every event of the table."""
    api_port = free_port()
    with MosquittoBroker(tmp_path) as broker:
        cfg = gateway_config(tmp_path, broker_port=broker.port, api_port=api_port)
        sub = Subscriber(
            host=broker.host, port=broker.port, topics=["se-test/gw-test/events"], client_id="sub-b"
        ).start()
        try:
            notify = NotifySocket()
            gw = Gateway(cfg, notify=notify)
            try:
                gw.wait_ready()
                assert sub.wait_for(lambda: len(published(sub)) >= 1, 60), gw.output()[-3000:]
                broker.stop()
                base = f"http://127.0.0.1:{api_port}"
                assert wait(lambda: outbox_rows(base) > 0, 40, interval=0.05), gw.output()[-3000:]
                rc = gw.stop(signal.SIGTERM)
            except BaseException:
                gw.kill()
                raise
            finally:
                notify.close()
            assert rc == 0, gw.output()[-3000:]
            assert gw.exit_seconds is not None and gw.exit_seconds < 10 + 3
            first_run = stored_events(tmp_path / "data")
            assert len(first_run) > len(published(sub))  # some wait in the outbox

            broker.start()
            notify = NotifySocket()
            gw = Gateway(cfg, notify=notify)
            try:
                gw.wait_ready()
                want = {e.event_id for e in first_run}
                assert sub.wait_for(lambda: want <= set(published(sub)), 30), gw.output()[-3000:]
                rc = gw.stop(signal.SIGTERM)
            except BaseException:
                gw.kill()
                raise
            finally:
                notify.close()
            assert rc == 0
            all_stored = {e.event_id for e in stored_events(tmp_path / "data")}
            assert sub.wait_for(lambda: all_stored <= set(published(sub)), 10)
        finally:
            sub.stop()
    assert set(published(sub)) == all_stored
    check_incidents(list(published(sub).values()))


def outbox_rows(base: str) -> int:
    try:
        return int(httpx.get(f"{base}/healthz", timeout=5).json()["mqtt"]["outbox_rows"])
    except httpx.HTTPError:
        return 0
