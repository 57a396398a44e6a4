"""A counting line in ``safety-edge run`` end to end: a real subprocess on vtest.avi with the
default detector, a real mosquitto and subscriber: ``crossing`` events on the events topic
(stored in the events table too), per-direction counts on the retained state topic, the
line in the status inventory and in ``/metrics``."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge.stream.events import EventStore, events_db_path
from tests.mqtt.broker import MOSQUITTO, MosquittoBroker, free_port
from tests.mqtt.subscriber import Subscriber
from tests.service.gateway_proc import VTEST, Gateway, NotifySocket, gateway_config

pytestmark = pytest.mark.slow

WALKWAY = {"name": "walkway", "points": [[560, 450], [560, 150]], "classes": ["people"]}
"""Across vtest's footpath, drawn upwards: walking right is "in" (the first crossings:
out at ~4 s, in at ~11 s of the video; see tests/stream/test_lines_vtest.py)."""


@pytest.fixture(autouse=True)
def _needs(default_model_manifest: Path) -> None:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing: apt-get install opencv-doc")
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (make deps)")


def test_run_counts_line_crossings_on_the_state_topic(tmp_path: Path) -> None:
    api_port = free_port()
    notify = NotifySocket()
    with MosquittoBroker(tmp_path) as broker:
        path = gateway_config(tmp_path, broker_port=broker.port, api_port=api_port)
        cfg = yaml.safe_load(path.read_text())
        cfg["cameras"][0]["tasks"]["fence"]["lines"] = [WALKWAY]
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        with Subscriber(
            host=broker.host, port=broker.port, topics=["se-test/gw-test/#"], client_id="sub-l"
        ) as sub:

            def states() -> list[dict[str, Any]]:
                return [m.json() for m in sub.on_topic("/vtest/fence/state")]

            def both_ways() -> bool:
                return any(
                    s["lines"]["walkway"]["in"] >= 1 and s["lines"]["walkway"]["out"] >= 1
                    for s in states()
                )

            gw = Gateway(path, notify=notify)
            try:
                gw.wait_ready()
                assert sub.wait_for(both_ways, 90), gw.output()[-3000:]
                metrics = httpx.get(f"http://127.0.0.1:{api_port}/metrics", timeout=10).text
                rc = gw.stop(signal.SIGTERM)
            except BaseException:
                gw.kill()
                raise
            finally:
                notify.close()
            out = gw.output()
            with EventStore(path=events_db_path(tmp_path / "data")) as store:
                stored = store.list_events(type="crossing", limit=10_000)
            assert sub.wait_for(
                lambda: len([m for m in sub.on_topic("/events")]) >= len(stored), 10
            )
            events = [m.json() for m in sub.on_topic("/events")]
            status = [m.json() for m in sub.on_topic("/status")]
            final = states()

    assert rc == 0, out[-3000:]
    assert "Traceback" not in out
    crossings = [e for e in events if e["type"] == "crossing"]
    assert {e["event_id"] for e in crossings} == {e.event_id for e in stored}
    assert all(e["zone"] == "walkway" and e["label"] == "person" for e in crossings)
    assert all(e["attributes"]["line"] == "walkway" for e in crossings)
    for direction in ("in", "out"):
        mine = [e for e in crossings if e["attributes"]["direction"] == direction]
        assert [e["attributes"]["count"] for e in mine] == list(range(1, len(mine) + 1))
        # the state topic never counts more than the events published, and caught up
        # with them at some point
        seen = [s["lines"]["walkway"][direction] for s in final]
        assert seen == sorted(seen) and seen[-1] <= len(mine)
        assert any(v >= 1 for v in seen)
    assert all(set(s["zones"]) == {"footpath"} and set(s["lines"]) == {"walkway"} for s in final)
    online = [s for s in status if s["state"] == "online"][-1]  # after the inventory
    vtest = next(t for t in online["tasks"] if t["camera"] == "vtest")
    assert vtest["lines"] == ["walkway"] and vtest["zones"] == ["footpath"]
    assert 'safety_edge_line_crossings_total{camera="vtest",task="fence",line="walkway",' in (
        metrics
    )
