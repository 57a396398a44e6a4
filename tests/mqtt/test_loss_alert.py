"""The outbox-loss alert survives a full outbox: real SQLite outbox, real mosquitto.

A long broker outage fills the outbox with ``start``/``end`` rows, which are never
dropped, so new events are refused. The alert that counts them (``mqtt_outbox_loss``)
must still reach the control room with the full totals: it goes into the outbox's alert
headroom, and when even that is used up its counts are carried over (same ``since``) into
the next attempt instead of being thrown away.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt import MqttConfig, OutboxFullError, Publisher
from edge.mqtt.outbox import ALERT_HEADROOM_ROWS
from tests.mqtt.broker import MosquittoBroker, free_port
from tests.mqtt.events import event
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait

LOSS = "mqtt_outbox_loss"


def cfg(port: int, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = dict(host="127.0.0.1", port=port, backoff_min_s=0.05, backoff_max_s=0.3)
    base.update(kw)
    return MqttConfig.model_validate(base)


def loss_alerts(sub: Subscriber) -> list[dict[str, Any]]:
    """Loss alerts received, once each (delivery is at least once: dedupe on alert_id)."""
    out: dict[str, dict[str, Any]] = {}
    for r in sub.on_topic("/alerts"):
        msg = r.json()
        if msg["alert"]["kind"] == LOSS:
            out.setdefault(msg["alert_id"], msg["alert"])
    return list(out.values())


def refused(alerts: list[dict[str, Any]]) -> int:
    return sum(int(a.get("refused", 0)) for a in alerts if a["kind"] == LOSS)


def test_loss_alert_is_stored_and_delivered_when_only_start_end_rows_remain(
    tmp_path: Path,
) -> None:
    """Two outages, each filling the 10-row outbox with start/end events and then refusing
    more: the loss alerts go into the headroom (the outbox holds more than ``max_rows``
    then), none is lost, and the alerts delivered after each outage add up to exactly the
    events refused in it."""
    broker = MosquittoBroker(tmp_path, port=free_port())
    hook: list[dict[str, Any]] = []
    with broker:
        sub = Subscriber(
            host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
        ).start()
        config = cfg(broker.port, outbox={"max_rows": 10})
        with Publisher(
            config=config,
            outbox_path=tmp_path / "o.db",
            gateway_id="gw",
            on_alert=hook.append,
            alert_interval_s=0.2,
        ) as pub:
            assert wait(lambda: pub.connected, 10)
            protected: list[str] = []
            expected = 0  # events refused so far
            for n_refused in (25, 7):
                broker.stop()
                assert wait(lambda: not pub.connected, 10)
                for i in range(10):
                    protected.append(pub.publish_event(event(i, "start" if i % 2 else "end")))
                for i in range(n_refused):
                    with pytest.raises(OutboxFullError):
                        pub.publish_event(event(100 + i, "start"))
                expected += n_refused
                # every refusal is in a stored alert (the pump flushes the rest within ~1 s)
                assert wait(lambda n=expected: refused(hook) == n, 5), hook
                kinds = Counter(r.kind for r in pub.outbox.read_after(0, 1000))
                assert kinds["start"] + kinds["end"] == 10 and kinds["alert"] >= 1, kinds
                assert pub.outbox.rows > config.outbox.max_rows
                broker.start()
                assert pub.flush(15)
                assert sub.wait_for(lambda n=expected: refused(loss_alerts(sub)) == n, 10), [
                    (a.get("refused"), a["since"]) for a in loss_alerts(sub)
                ]
            m = pub.metrics()
        sub.stop()
    assert set(sub.event_ids()) >= set(protected)
    assert refused(loss_alerts(sub)) == 32
    assert m['mqtt_outbox_rejected_total{kind="start"}'] == 32
    assert "mqtt_alerts_lost_total" not in m and "mqtt_loss_alerts_deferred_total" not in m


def test_loss_counts_are_carried_over_when_even_the_headroom_is_full(tmp_path: Path) -> None:
    """Alerts of other kinds used up the headroom: the loss alert cannot be stored, so its
    counts are kept (``since`` unchanged) and each later attempt reports the total so far;
    once the broker is back and the outbox drains, one loss alert arrives with all of
    them."""
    broker = MosquittoBroker(tmp_path, port=free_port())
    with broker:  # the subscriber's persistent session exists before the gateway connects
        Subscriber(
            host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
        ).start().stop()
    hook: list[dict[str, Any]] = []
    with Publisher(
        config=cfg(broker.port, outbox={"max_rows": 10}),
        outbox_path=tmp_path / "o.db",
        gateway_id="gw",
        on_alert=hook.append,
        alert_interval_s=0.2,
    ) as pub:
        for i in range(10):
            pub.publish_event(event(i, "start"))
        for i in range(ALERT_HEADROOM_ROWS):  # e.g. camera alerts during the outage
            pub.publish_alert(
                {"kind": "camera_offline", "key": f"cam-{i}", "state": "active", "message": "x"}
            )
        with pytest.raises(OutboxFullError):  # the headroom is used up: refused, counted
            pub.publish_alert({"kind": "camera_offline", "key": "one more", "state": "active"})
        for i in range(4):
            with pytest.raises(OutboxFullError):
                pub.publish_event(event(100 + i, "end"))
        assert wait(lambda: refused(hook[-1:]) == 5, 5), hook

        def settled() -> bool:
            # The hook sees an alert before the outbox is tried: wait until every loss
            # alert handed to it has also been counted as deferred.
            n = pub.metrics()["mqtt_loss_alerts_deferred_total"]
            return n == sum(a["kind"] == LOSS for a in hook)

        assert wait(settled, 5), (hook, pub.metrics())
        m = pub.metrics()
        assert m["mqtt_loss_alerts_deferred_total"] >= 1 and "mqtt_alerts_lost_total" not in m
        since = hook[0]["since"]
        deferred = m["mqtt_loss_alerts_deferred_total"]
        for i in range(3):  # a second round while the first counts still wait
            with pytest.raises(OutboxFullError):
                pub.publish_event(event(200 + i, "start"))
        assert wait(lambda: refused(hook[-1:]) == 8, 5), hook
        assert wait(settled, 5), (hook, pub.metrics())
        assert pub.metrics()["mqtt_loss_alerts_deferred_total"] > deferred
        assert {a["since"] for a in hook if a["kind"] == LOSS} == {since}
        assert pub.outbox.rows == 10 + ALERT_HEADROOM_ROWS  # none of the attempts stored
        with broker:
            sub = Subscriber(
                host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
            ).start()
            assert sub.wait_for(lambda: len(loss_alerts(sub)) >= 1, 15)
            assert pub.flush(10)
            time.sleep(1.2)  # a further pump tick: nothing more to report
            sub.stop()
        m = pub.metrics()
    (alert,) = loss_alerts(sub)
    assert alert["refused"] == 8 and alert["since"] == since
    assert len({r.json()["alert_id"] for r in sub.on_topic("/alerts")}) == ALERT_HEADROOM_ROWS + 1
    assert m['mqtt_outbox_rejected_total{kind="alert"}'] == 1
    assert m['mqtt_outbox_rejected_total{kind="end"}'] == 4
    assert m['mqtt_outbox_rejected_total{kind="start"}'] == 3
    assert "mqtt_alerts_lost_total" not in m
