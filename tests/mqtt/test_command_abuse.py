"""Hostile command traffic against a real mosquitto: nothing a command publisher sends may
stop, slow down or bloat the gateway's own output (events), its log or its memory.

Each test uses the real :class:`~edge.mqtt.Publisher` with a real
:class:`~edge.mqtt.commands.CommandDispatcher` and an attacker client of its own."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge.mqtt import MqttConfig, Publisher
from edge.mqtt.commands import AckCommand, CommandDispatcher, CommandError, parse_command
from edge.mqtt.schema import command_payload
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.events import event
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait

GW = "gw-abuse"
CMD = f"safety-edge/{GW}/cmd"
ACK = command_payload(cmd="ack", event_id="01HZX3J4E8Q6W2T4V9K0M5N7PB", by="Ana", request_id="r1")


class Gated:
    """An ack handler that blocks until ``gate`` is set (keeps the command queue full)."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.seen: list[AckCommand] = []

    def __call__(self, cmd: AckCommand) -> Mapping[str, Any]:
        self.gate.wait(20)
        self.seen.append(cmd)
        return {"acked": cmd.event_id}


def make_publisher(
    broker: MosquittoBroker, tmp_path: Path, handler: Any, **mqtt_cfg: Any
) -> Publisher:
    commands = {"enabled": True, **mqtt_cfg.pop("commands", {})}
    config = MqttConfig.model_validate(
        {
            "host": broker.host,
            "port": broker.port,
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.3,
            "commands": commands,
            **mqtt_cfg,
        }
    )
    d = CommandDispatcher(gateway=GW, config=config.commands, handlers={"ack": handler})
    return Publisher(config=config, outbox_path=tmp_path / "outbox.db", gateway_id=GW, commands=d)


@pytest.fixture
def watcher(broker: MosquittoBroker) -> Iterator[Subscriber]:
    """The control room: events and command replies."""
    with Subscriber(
        host=broker.host,
        port=broker.port,
        topics=[f"safety-edge/{GW}/events", f"{CMD}/reply"],
        client_id="control-room",
        persistent=False,
    ) as sub:
        yield sub


@pytest.fixture
def attacker(broker: MosquittoBroker) -> Iterator[mqtt.Client]:
    c = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="attacker",
        protocol=mqtt.MQTTv5,
    )
    c.max_queued_messages_set(0)
    c.max_inflight_messages_set(1000)
    c.connect(broker.host, broker.port, 30)
    c.loop_start()
    time.sleep(0.2)
    yield c
    c.disconnect()
    c.loop_stop()


def replies(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.on_topic("/cmd/reply") if "ok" in m.json()]


# -- finding 1: a parse failure must never reach paho's network thread ---------------------


@pytest.mark.parametrize("depth", [4000, 100_000])
def test_deeply_nested_json_is_bad_json(depth: int) -> None:
    with pytest.raises(CommandError) as err:
        parse_command("ack", b"[" * depth, max_bytes=200_000)
    assert err.value.reason == "bad_json"
    d = CommandDispatcher(
        gateway=GW,
        config=make_config(max_bytes=65536).commands,
        handlers={"ack": lambda c: {}},
    )
    reply = d.dispatch("ack", b"[" * min(depth, 65536))
    assert reply["error"]["code"] == "bad_json" and reply["request_id"] is None
    assert d.error_reply("ack", b'{"request_id": ' + b"[" * 5000, "busy", "x")["ok"] is False


def make_config(**commands: Any) -> MqttConfig:
    return MqttConfig.model_validate({"commands": {"enabled": True, **commands}})


def test_nested_json_burst_on_a_full_queue_does_not_stop_the_events(
    broker: MosquittoBroker, watcher: Subscriber, attacker: mqtt.Client, tmp_path: Path
) -> None:
    """The audit's crash: with the command queue full, ``[[[[...`` commands were answered
    ``busy`` from paho's network thread; the RecursionError escaped ``on_message``, paho's
    thread died and no event went out again while the publisher still said connected."""
    handler = Gated()
    with make_publisher(broker, tmp_path, handler, commands={"queue": 1}) as pub:
        assert wait(lambda: pub.connected, 5)
        time.sleep(0.3)  # SUBACK
        pub.publish_event(event(1, "start"))
        assert watcher.wait_for(lambda: len(watcher.on_topic("/events")) == 1, 5)
        ok = json.dumps({**ACK, "request_id": "held"}).encode()
        attacker.publish(f"{CMD}/ack", ok, qos=1)  # in the handler, blocked
        time.sleep(0.2)
        attacker.publish(f"{CMD}/ack", ok, qos=1)  # fills the queue
        time.sleep(0.3)
        for _ in range(50):
            attacker.publish(f"{CMD}/ack", b"[" * 4000, qos=0)
        assert wait(lambda: pub.metrics().get("mqtt_commands_received_total", 0) >= 52, 10)
        for i in range(2, 12):
            pub.publish_event(event(i))
        assert watcher.wait_for(lambda: len(watcher.on_topic("/events")) == 11, 10), (
            f"events stopped after the nested-JSON burst: {len(watcher.on_topic('/events'))}"
        )
        assert pub.connected
        handler.gate.set()
        assert wait(lambda: len(handler.seen) == 2, 5), pub.metrics()
