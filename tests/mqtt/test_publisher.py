"""Publisher against a real mosquitto: topics, payloads, retained status/state, discovery,
results, ordering, lifecycle and broker refusals."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from edge.errors import ConfigError
from edge.mqtt import (
    CameraTask,
    MqttConfig,
    Publisher,
    PublisherClosedError,
)
from tests.mqtt.broker import MosquittoBroker, free_port
from tests.mqtt.events import event
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait

CAMS = [CameraTask("cam-1", "hardhat", ("dock", "gate"))]


def cfg(broker: MosquittoBroker | None = None, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = dict(
        host="127.0.0.1",
        port=broker.port if broker else free_port(),
        backoff_min_s=0.05,
        backoff_max_s=0.3,
    )
    base.update(kw)
    return MqttConfig.model_validate(base)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_everything_reaches_a_subscriber(
    broker: MosquittoBroker, tmp_path: Path, protocol: str
) -> None:
    sub = Subscriber(
        host=broker.host, port=broker.port, topics=["safety-edge/#", "homeassistant/#"],
        client_id="sub-all",
    ).start()  # fmt: skip
    config = cfg(broker, protocol=protocol, ha_discovery=True)
    with Publisher(
        config=config, outbox_path=tmp_path / "o.db", gateway_id="gw-1",
        version="1.2.3", models=["hardhat@1"], cameras=CAMS,
    ) as pub:  # fmt: skip
        ids = pub.publish_events([event(0, "start"), *[event(i) for i in range(1, 49)]])
        ids.append(pub.publish_event(event(49, "end")))
        pub.publish_alert({"kind": "error_rate", "key": "app/api", "state": "active"})
        assert wait(lambda: pub.connected)
        pub.publish_state("cam-1", "hardhat", {"dock": 2, "gate": 0})
        assert pub.flush(10)
        m = pub.metrics()
    assert m["mqtt_events_accepted_total"] == 50 and m["mqtt_messages_acked_total"] == 51
    assert m["mqtt_connects_total"] == 1 and m["mqtt_outbox_rows"] == 0
    assert wait(lambda: len(sub.on_topic("/status")) >= 2)
    sub.stop()

    events = [r.json() for r in sub.on_topic("safety-edge/gw-1/events")]
    assert [e["event_id"] for e in events] == ids  # in order, once each
    assert all(e["schema"] == 1 and e["gateway"] == "gw-1" for e in events)
    assert events[0]["type"] == "start" and events[-1]["type"] == "end"
    (alert,) = [r.json() for r in sub.on_topic("safety-edge/gw-1/alerts")]
    assert alert["schema"] == 1 and alert["alert"]["kind"] == "error_rate"
    online, offline = (r.json() for r in sub.on_topic("safety-edge/gw-1/status"))
    assert online["state"] == "online" and online["version"] == "1.2.3"
    assert online["models"] == ["hardhat@1"] and online["cameras"] == ["cam-1"]
    assert offline["state"] == "offline" and offline["reason"] == "shutdown"
    (state,) = [r.json() for r in sub.on_topic("/cam-1/hardhat/state")]
    assert state["zones"] == {"dock": 2, "gate": 0} and state["total"] == 2
    assert len([r for r in sub.messages if r.topic.startswith("homeassistant/")]) == 4

    # Retained: a newcomer sees status, state and discovery without the gateway.
    late = Subscriber(
        host=broker.host, port=broker.port, topics=["safety-edge/#", "homeassistant/#"],
        client_id="sub-late", persistent=False,
    ).start()  # fmt: skip
    assert wait(lambda: len(late.messages) >= 6)
    late.stop()
    retained = {r.topic: r for r in late.messages}
    assert all(r.retain for r in late.messages)
    assert retained["safety-edge/gw-1/status"].json()["state"] == "offline"
    assert "safety-edge/gw-1/cam-1/hardhat/state" in retained
    assert not any(t.endswith("/events") for t in retained)


def test_events_queued_before_the_broker_is_up_go_out_in_order(tmp_path: Path) -> None:
    broker = MosquittoBroker(tmp_path)
    with broker:  # the subscriber's persistent session exists before the gateway connects
        Subscriber(
            host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
        ).start().stop()
    with Publisher(config=cfg(broker), outbox_path=tmp_path / "o.db", gateway_id="gw") as pub:
        ids = [pub.publish_event(event(i, "start")) for i in range(30)]
        pub.publish_state("cam-1", "hardhat", {"dock": 1})  # kept, sent at connect
        pub.publish_state("cam-1", "hardhat", {"dock": 3})  # only the latest is
        refused = 'mqtt_connect_failures_total{reason="connection_refused"}'
        assert wait(lambda: pub.metrics().get(refused, 0) >= 1)
        assert not pub.connected and pub.outbox.rows == 30
        assert pub.last_error is not None and "refused" in pub.last_error
        with broker:
            sub = Subscriber(
                host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
            ).start()
            assert pub.flush(15)
            assert wait(lambda: len(sub.event_ids()) == 30)
            pub.set_inventory(models=["fence@2"], cameras=CAMS)
            assert wait(lambda: any(b"fence@2" in r.payload for r in sub.on_topic("/status")))
            sub.stop()
    assert [r.json()["event_id"] for r in sub.on_topic("/events")] == ids
    states = [r.json()["zones"] for r in sub.on_topic("/state")]
    assert states and all(z == {"dock": 3} for z in states)  # never the stale state
    statuses = [r.json() for r in sub.on_topic("/status")]
    assert any(st["models"] == ["fence@2"] and st["cameras"] == ["cam-1"] for st in statuses)


def test_results_are_qos0_and_counted_when_dropped(broker: MosquittoBroker, tmp_path: Path) -> None:
    sub = Subscriber(
        host=broker.host, port=broker.port, topics=["safety-edge/gw/results"], client_id="r"
    ).start()
    with Publisher(
        config=cfg(broker, results=True), outbox_path=tmp_path / "o.db", gateway_id="gw"
    ) as pub:
        assert wait(lambda: pub.connected)
        assert pub.publish_result({"code": 0, "data": [1]}, camera="cam-1", task="fence")
        assert wait(lambda: len(sub.messages) == 1)
        broker.stop()
        assert wait(lambda: not pub.connected)
        assert not pub.publish_result({"code": 0})
        assert pub.metrics()["mqtt_results_dropped_total"] == 1
    sub.stop()
    r = sub.messages[0].json()
    assert r["schema"] == 1 and r["result"] == {"code": 0, "data": [1]} and r["task"] == "fence"
    with Publisher(config=cfg(broker), outbox_path=tmp_path / "o2.db", gateway_id="gw") as off:
        assert not off.publish_result({"code": 0})  # results topic disabled: not counted
        assert "mqtt_results_dropped_total" not in off.metrics()


def test_lifecycle(tmp_path: Path) -> None:
    pub = Publisher(config=cfg(), outbox_path=tmp_path / "o.db", gateway_id="gw")
    eid = pub.publish_event(event(1, "start"))  # before start(): stored, sent later
    pub.close()
    pub.close()
    with pytest.raises(PublisherClosedError):
        pub.publish_event(event(2))
    with pytest.raises(PublisherClosedError):
        pub.start()
    with Publisher(config=cfg(), outbox_path=tmp_path / "o.db", gateway_id="gw") as again:
        assert [r.key for r in again.outbox.read_after(0, 10)] == [eid]
    bad_tls = cfg(tls={"ca_file": str(tmp_path / "missing.pem")})
    pub = Publisher(config=bad_tls, outbox_path=tmp_path / "o3.db", gateway_id="gw")
    with pytest.raises(ConfigError, match="tls"):
        pub.start()
    pub.close()


def test_broker_refusing_a_message_is_counted_and_alerted(tmp_path: Path) -> None:
    """MQTT 5: a PUBACK with a failure code (ACL denies the topic) removes the row, counts it
    and raises an alert instead of retrying it forever."""
    acl = tmp_path / "acl"
    acl.write_text("topic write safety-edge/gw/status\ntopic write safety-edge/gw/alerts\n")
    alerts: list[dict[str, Any]] = []
    with MosquittoBroker(tmp_path, acl_file=acl) as broker, Publisher(
        config=cfg(broker), outbox_path=tmp_path / "o.db", gateway_id="gw",
        on_alert=alerts.append,
    ) as pub:  # fmt: skip
        pub.publish_event(event(1, "start"))
        assert pub.flush(10)
        m = pub.metrics()
    assert m['mqtt_publish_rejected_total{reason="not_authorized"}'] == 1
    assert alerts and alerts[0]["kind"] == "mqtt_outbox_loss"
    assert alerts[0]["refused_by_broker_not_authorized"] == 1
    assert "not_authorized" in json.dumps(alerts[0])
