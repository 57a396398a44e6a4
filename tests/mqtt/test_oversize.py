"""A message the broker will not take must not block the outbox: real mosquitto, real
SQLite outbox.

mosquitto drops the connection on a PUBLISH larger than its ``max_packet_size`` (MQTT 5
and 3.1.1), and an MQTT 5 client also on one over ``message_size_limit``. Before, the
publisher reconnected and sent the same oldest row again forever, so everything behind it
(alerts included) was stuck. Now a row over the limit (the broker's announced Maximum
Packet Size, or ``mqtt.max_message_bytes``) is never sent, and a row the connection keeps
dying on right after it was sent is set aside too: either way it is removed from the
outbox, logged with its row id and event id, counted, and reported in the
``mqtt_outbox_loss`` alert; delivery continues behind it.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt import Event, MqttConfig, Publisher
from edge.mqtt.publisher import publish_packet_size
from edge.mqtt.schema import dumps
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.events import event
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait

LOSS = "mqtt_outbox_loss"


def cfg(port: int, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = dict(host="127.0.0.1", port=port, backoff_min_s=0.05, backoff_max_s=0.3)
    base.update(kw)
    return MqttConfig.model_validate(base)


def big(i: int, n: int = 5000) -> Event:
    """A ``start`` event of about ``n`` + 450 bytes of JSON."""
    return dataclasses.replace(event(i, "start"), attributes={"note": "x" * n})


def loss_alerts(sub: Subscriber) -> list[dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for r in sub.on_topic("/alerts"):
        msg = r.json()
        if msg["alert"]["kind"] == LOSS:
            out.setdefault(msg["alert_id"], msg["alert"])
    return list(out.values())


def lost(alerts: list[dict[str, Any]], what: str) -> int:
    return sum(int(a.get(what, 0)) for a in alerts)


def run_ten(
    tmp_path: Path,
    broker_conf: str,
    caplog: pytest.LogCaptureFixture,
    **config: Any,
) -> tuple[set[str], list[str], str, list[dict[str, Any]], list[dict[str, Any]], dict[str, float]]:
    """Ten events, the sixth one 5 KB, through a broker configured with ``broker_conf``.
    Returns (event ids received, event ids sent, the oversized one's id, loss alerts
    received, loss alerts given to on_alert, metrics)."""
    caplog.set_level(logging.INFO, logger="edge.mqtt")
    hook: list[dict[str, Any]] = []
    with MosquittoBroker(tmp_path, extra_conf=broker_conf) as broker:
        sub = Subscriber(
            host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
        ).start()
        with Publisher(
            config=cfg(broker.port, **config),
            outbox_path=tmp_path / "o.db",
            gateway_id="gw",
            on_alert=hook.append,
            alert_interval_s=0.2,
        ) as pub:
            assert wait(lambda: pub.connected, 10)
            ids = [pub.publish_event(big(i) if i == 5 else event(i, "start")) for i in range(10)]
            assert pub.flush(20), (pub.outbox.rows, pub.metrics())
            assert sub.wait_for(lambda: len(loss_alerts(sub)) >= 1, 10), pub.metrics()
            assert sub.wait_for(lambda: len(set(sub.event_ids()) & set(ids)) >= 9, 10)
            m = pub.metrics()
        sub.stop()
    mine = [a for a in hook if a["kind"] == LOSS]
    return set(sub.event_ids()), ids, ids[5], loss_alerts(sub), mine, m


def test_mqtt5_oversized_event_is_set_aside_by_the_broker_maximum_packet_size(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto announces ``max_packet_size`` in CONNACK: the 5 KB event is never sent
    (no disconnect at all), the other nine arrive, the loss alert says 1 too large."""
    got, ids, bad, alerts, hook, m = run_ten(tmp_path, "max_packet_size 2000", caplog)
    assert got & set(ids) == set(ids) - {bad}
    assert lost(alerts, "too_large") == 1 and lost(hook, "too_large") == 1
    assert m['mqtt_messages_set_aside_total{reason="too_large"}'] == 1
    assert m["mqtt_connects_total"] == 1, m  # the broker never had to drop us
    assert m["mqtt_outbox_rows"] == 0
    assert any(bad in r.getMessage() and "row 6" in r.getMessage() for r in caplog.records)
    assert any("Maximum Packet Size 2000" in r.getMessage() for r in caplog.records)


def test_mqtt311_oversized_event_is_set_aside_by_max_message_bytes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MQTT 3.1.1: the broker announces nothing; ``max_message_bytes`` set to the broker's
    limit keeps the 5 KB event off the wire."""
    got, ids, bad, alerts, hook, m = run_ten(
        tmp_path, "max_packet_size 2000", caplog, protocol="3.1.1", max_message_bytes=2000
    )
    assert got & set(ids) == set(ids) - {bad}
    assert lost(alerts, "too_large") == 1 and lost(hook, "too_large") == 1
    assert m['mqtt_messages_set_aside_total{reason="too_large"}'] == 1
    assert m["mqtt_connects_total"] == 1, m


@pytest.mark.parametrize(
    ("protocol", "broker_conf"),
    [("3.1.1", "max_packet_size 2000"), ("5", "message_size_limit 2000")],
)
def test_row_the_broker_keeps_disconnecting_on_is_set_aside(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: str, broker_conf: str
) -> None:
    """No limit announced and none configured below the message: the broker drops the
    connection each time it gets the 5 KB event. After a few such drops right after
    sending it, the row is set aside (poison guard) and the rest goes through."""
    got, ids, bad, alerts, hook, m = run_ten(tmp_path, broker_conf, caplog, protocol=protocol)
    assert got & set(ids) == set(ids) - {bad}
    assert lost(alerts, "disconnected_on_send") == 1 and lost(hook, "disconnected_on_send") == 1
    assert m['mqtt_messages_set_aside_total{reason="disconnected_on_send"}'] == 1
    assert 6 <= m["mqtt_connects_total"] <= 12, m
    assert any(
        bad in r.getMessage() and "connection" in r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR
    )


def test_mqtt311_message_size_limit_drop_is_counted_not_delivered(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """MQTT 3.1.1 and ``message_size_limit``: mosquitto acknowledges the oversized
    message and drops it. With ``max_message_bytes`` at the broker's limit the publisher
    never sends it and counts it as lost instead of as delivered."""
    got, ids, bad, alerts, _, m = run_ten(
        tmp_path, "message_size_limit 2000", caplog, protocol="3.1.1", max_message_bytes=2000
    )
    assert got & set(ids) == set(ids) - {bad}
    assert lost(alerts, "too_large") == 1
    assert m["mqtt_messages_acked_total"] == 9 + len(alerts)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_packet_size_is_exact_at_the_broker_limit(tmp_path: Path, protocol: str) -> None:
    """An event whose PUBLISH packet is exactly ``max_packet_size`` bytes goes through;
    one byte more is set aside (so the size computed is the broker's)."""
    limit = 2000
    v5 = protocol == "5"
    with MosquittoBroker(tmp_path, extra_conf=f"max_packet_size {limit}") as broker:
        sub = Subscriber(
            host=broker.host, port=broker.port, topics=["safety-edge/gw/events"], client_id="s"
        ).start()
        config = cfg(broker.port, protocol=protocol, max_message_bytes=limit)
        with Publisher(config=config, outbox_path=tmp_path / "o.db", gateway_id="gw") as pub:
            assert wait(lambda: pub.connected, 10)
            sized = []
            for want in (limit, limit + 1):
                e = big(want, 0)
                while True:
                    payload = dumps(e.to_payload("gw"))
                    size = publish_packet_size(pub.topics.events, len(payload), qos=1, v5=v5)
                    if size >= want:
                        break
                    e = big(want, len(e.attributes["note"]) + want - size)  # type: ignore[arg-type]
                assert size == want
                sized.append(pub.publish_event(e))
            tail = pub.publish_event(event(1, "end"))
            assert pub.flush(10)
            assert sub.wait_for(lambda: tail in sub.event_ids(), 10)
            m = pub.metrics()
        sub.stop()
    assert sized[0] in sub.event_ids() and sized[1] not in sub.event_ids()
    assert m['mqtt_messages_set_aside_total{reason="too_large"}'] == 1
    assert m["mqtt_connects_total"] == 1


def test_second_poison_row_without_an_ack_between_needs_twice_the_evidence(
    tmp_path: Path,
) -> None:
    """Two oversized events back to back, MQTT 3.1.1, nothing configured: the first is
    set aside after 5 quick disconnects, the second (no acknowledgement in between) only
    after 10, so a connection that dies for reasons of its own loses rows ever more
    slowly; both are reported, the rest arrives."""
    with MosquittoBroker(tmp_path, extra_conf="max_packet_size 2000") as broker:
        sub = Subscriber(
            host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
        ).start()
        config = cfg(broker.port, protocol="3.1.1", backoff_max_s=0.1)
        with Publisher(
            config=config, outbox_path=tmp_path / "o.db", gateway_id="gw", alert_interval_s=0.2
        ) as pub:
            assert wait(lambda: pub.connected, 10)
            pub.publish_event(event(0, "start"))
            assert pub.flush(5)  # acknowledged: the guard starts from 5
            ids = [
                pub.publish_event(big(i) if i in (2, 3) else event(i, "start")) for i in range(6)
            ]
            assert pub.flush(30), pub.metrics()
            assert sub.wait_for(lambda: lost(loss_alerts(sub), "disconnected_on_send") == 2, 10)
            m = pub.metrics()
        sub.stop()
    assert set(sub.event_ids()) & set(ids) == set(ids) - {ids[2], ids[3]}
    assert m['mqtt_messages_set_aside_total{reason="disconnected_on_send"}'] == 2
    assert m["mqtt_connects_total"] >= 1 + 5 + 10, m
