"""Hostile command traffic against a real mosquitto: nothing a command publisher sends may
stop, slow down or bloat the gateway's own output (events), its log or its memory.

Each test uses the real :class:`~edge.mqtt.Publisher` with a real
:class:`~edge.mqtt.commands.CommandDispatcher` and an attacker client of its own."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import sys
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


# -- finding 4: oversized commands must not be received into memory -----------------------


def peak_rss_reset() -> None:
    """Reset this process's peak RSS (VmHWM) to its current RSS (Linux >= 4.0)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def mosquitto_pub(broker: MosquittoBroker, topic: str, path: Path, *, v5: bool) -> None:
    """Publish the file at ``path`` from another process (its memory is not ours)."""
    argv = ["mosquitto_pub", "-h", broker.host, "-p", str(broker.port), "-q", "1"]
    argv += ["-t", topic, "-f", str(path), "-V", "5" if v5 else "311", "-i", "big-sender"]
    subprocess.run(
        argv,
        check=True,
        timeout=60,
        capture_output=True,
    )


@pytest.mark.skipif(shutil.which("mosquitto_pub") is None, reason="mosquitto_pub missing")
def test_a_20_mb_command_never_reaches_the_gateways_memory(
    broker: MosquittoBroker, watcher: Subscriber, tmp_path: Path
) -> None:
    """MQTT 5: the gateway announces a Maximum Packet Size (commands ``max_bytes`` + 64
    KiB) in CONNECT, so the broker does not deliver a 20 MB command at all. Before, paho
    read the whole packet and the command queue kept a copy (the audit: 200 MB -> RSS
    +616 MB)."""
    big = tmp_path / "big.json"
    big.write_bytes(b'{"schema": 1, "cmd": "ack", "note": "' + b"x" * (20 << 20) + b'"}')
    handler = Gated()
    handler.gate.set()
    with make_publisher(broker, tmp_path, handler) as pub:
        assert wait(lambda: pub.connected, 5)
        time.sleep(0.3)  # SUBACK
        peak_rss_reset()
        before = peak_rss_kib()
        mosquitto_pub(broker, f"{CMD}/ack", big, v5=True)
        time.sleep(1.0)
        rise = peak_rss_kib() - before
        watcher.client.publish(f"{CMD}/ack", json.dumps(ACK).encode(), qos=1)
        assert watcher.wait_for(lambda: len(replies(watcher)) >= 1, 5)
        assert [r["request_id"] for r in replies(watcher)] == ["r1"], replies(watcher)
        assert rise < 8 * 1024, f"peak RSS rose by {rise} KiB for a 20 MB command"
        assert pub.metrics()["mqtt_commands_received_total"] == 1
        assert len(handler.seen) == 1


def test_an_oversized_command_is_not_queued_in_full(
    broker: MosquittoBroker, watcher: Subscriber, attacker: mqtt.Client, tmp_path: Path
) -> None:
    """MQTT 3.1.1 (no Maximum Packet Size): an oversized command still arrives in full,
    but only its size is queued; the reply is ``too_large`` with the real size."""
    handler = Gated()
    handler.gate.set()
    with make_publisher(broker, tmp_path, handler, protocol="3.1.1") as pub:
        assert wait(lambda: pub.connected, 5)
        time.sleep(0.3)
        attacker.publish(f"{CMD}/ack", b"x" * 300_000, qos=1)
        assert watcher.wait_for(lambda: len(replies(watcher)) >= 1, 5)
        (reply,) = replies(watcher)
        assert reply["error"]["code"] == "too_large"
        assert "300000 bytes" in reply["error"]["message"]


# -- finding 3: refusals must not flood the log; names are cut short ------------------------


def mqtt_lines(caplog: pytest.LogCaptureFixture, needle: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edge.mqtt" and needle in r.getMessage()]


def test_a_thousand_bad_commands_log_a_few_lines(
    broker: MosquittoBroker,
    watcher: Subscriber,
    attacker: mqtt.Client,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Before: one INFO line per refused command and one WARNING per ``busy``."""
    caplog.set_level(logging.INFO, logger="edge.mqtt")
    handler = Gated()
    with make_publisher(broker, tmp_path, handler, commands={"queue": 1}) as pub:
        assert wait(lambda: pub.connected, 5)
        time.sleep(0.3)
        for _ in range(1000):  # refused by the dispatcher
            attacker.publish(f"{CMD}/ack", b"{nope", qos=0)
        assert wait(lambda: pub.metrics().get("mqtt_commands_received_total", 0) >= 1000, 20)
        assert wait(lambda: pub._cmd_queue.empty(), 10)
        ok = json.dumps({**ACK, "request_id": "held"}).encode()
        attacker.publish(f"{CMD}/ack", ok, qos=1)  # blocks the commands thread
        time.sleep(0.2)
        for _ in range(1000):  # the queue (1) is full: busy
            attacker.publish(f"{CMD}/ack", b"{nope", qos=0)
        assert wait(lambda: pub.metrics().get("mqtt_commands_busy_total", 0) >= 999, 20)
        handler.gate.set()
        time.sleep(0.3)
    refused = mqtt_lines(caplog, "refused")
    busy = mqtt_lines(caplog, "commands waiting")
    assert 1 <= len(refused) <= 5, [r.getMessage() for r in refused]
    assert 1 <= len(busy) <= 5, [r.getMessage() for r in busy]
    # the counts in the summary lines add up (nothing silently vanishes from the log)
    said = sum(int(m.group(1)) if (m := re.search(r"\[(\d+) like this", r.getMessage())) else 1
               for r in refused + busy)  # fmt: skip
    assert said == pub.metrics()["mqtt_commands_received_total"] - 1  # all but the held one


def test_a_60_kb_topic_gives_a_short_reply_and_log_line(
    broker: MosquittoBroker,
    watcher: Subscriber,
    attacker: mqtt.Client,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edge.mqtt")
    handler = Gated()
    handler.gate.set()
    with make_publisher(broker, tmp_path, handler) as pub:
        assert wait(lambda: pub.connected, 5)
        time.sleep(0.3)
        name = "z" * 60_000
        body = json.dumps({**ACK, "cmd": "ack", "request_id": "long"}).encode()
        attacker.publish(f"{CMD}/{name}", body, qos=1)
        assert watcher.wait_for(lambda: len(replies(watcher)) >= 1, 5)
        (reply,) = replies(watcher)
        assert reply["error"]["code"] == "unknown_command"
        assert len(reply["error"]["message"]) < 300, len(reply["error"]["message"])
        assert "z" * 64 + "…" in reply["error"]["message"]
        time.sleep(0.2)
    lines = mqtt_lines(caplog, "zzzz")
    assert lines and all(len(r.getMessage()) < 400 for r in lines), [
        len(r.getMessage()) for r in lines
    ]


# -- finding 2: a command flood must not delay the events ---------------------------------

FLOODER = """
import sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
port, topic, n = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="flooder",
                protocol=mqtt.MQTTv5)
c.max_inflight_messages_set(1000)
c.max_queued_messages_set(0)
c.connect("127.0.0.1", port, 30)
c.loop_start()
time.sleep(0.2)
infos = [c.publish(topic, b'{"schema": 1, "cmd": "ack"}', qos=1) for _ in range(n)]
for i in infos:
    i.wait_for_publish(60)
print("sent", n, flush=True)
c.disconnect()
c.loop_stop()
"""


class TimedEvents:
    """Receives events and notes each one's latency (receipt - its ``time_ms``), ms."""

    def __init__(self, broker: MosquittoBroker) -> None:
        self.latency_ms: list[float] = []
        self.replies = 0
        self._lock = threading.Lock()
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id="timed-events",
            protocol=mqtt.MQTTv5,
        )
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, 30)
        c.subscribe([(f"safety-edge/{GW}/events", 1), (f"{CMD}/reply", 1)])
        c.loop_start()
        self.client = c

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.time() * 1000
        with self._lock:
            if msg.topic.endswith("/events"):
                self.latency_ms.append(now - json.loads(msg.payload)["time_ms"])
            else:
                self.replies += 1

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_a_command_flood_does_not_delay_the_events(broker: MosquittoBroker, tmp_path: Path) -> None:
    """5,000 invalid commands at QoS 1 as fast as a client can send them, while the gateway
    publishes an event every 50 ms. Before: every refusal got a QoS 1 reply on the same
    connection as the events (20-message in-flight window, unbounded paho queue), so the
    events waited behind thousands of replies (audit: p50 9.6 s, p95 15.8 s for 10,000).
    Now error replies are rate limited (20/s, burst 50 by default), QoS 0, and ``busy``
    gets no reply."""
    timed = TimedEvents(broker)
    time.sleep(0.3)
    handler = Gated()
    handler.gate.set()
    try:
        with make_publisher(broker, tmp_path, handler) as pub:
            assert wait(lambda: pub.connected, 5)
            time.sleep(0.3)
            flood = subprocess.Popen(
                [sys.executable, "-c", FLOODER, str(broker.port), f"{CMD}/ack", "15000"],
                stdout=subprocess.PIPE,
                text=True,
            )
            t0 = time.monotonic()
            while flood.poll() is None and time.monotonic() - t0 < 60:
                pub.publish_event(event(1))
                time.sleep(0.05)
            flood_s = time.monotonic() - t0
            assert flood.wait(5) == 0 and "sent 15000" in (
                flood.stdout.read() if flood.stdout else ""
            )
            for _ in range(10):  # events right after the flood
                pub.publish_event(event(2))
                time.sleep(0.05)
            assert wait(lambda: pub.metrics().get("mqtt_commands_received_total", 0) >= 15000, 30)
            assert wait(lambda: pub.outbox.rows == 0, 30)
            time.sleep(0.5)
            m = pub.metrics()
            elapsed = time.monotonic() - t0
    finally:
        timed.close()
    lat = sorted(timed.latency_ms)
    assert len(lat) >= 10
    p95 = lat[int(0.95 * (len(lat) - 1))]
    assert p95 < 1500, (
        f"event latency p95 {p95:.0f} ms (p50 {lat[len(lat) // 2]:.0f} ms), "
        f"flood of {flood_s:.1f} s"
    )
    limited = m.get("mqtt_command_replies_rate_limited_total", 0)
    sent = m.get("mqtt_command_replies_sent_total", 0)
    assert sent <= 50 + 20 * elapsed + 5, (sent, elapsed)
    assert limited >= 15000 - sent - m.get("mqtt_commands_busy_total", 0) - 1
    assert timed.replies <= sent


# -- finding 6: `by` must name someone visible -------------------------------------------


@pytest.mark.parametrize(
    "by",
    [
        "\u200b",  # zero-width space only
        "\u200b\u200c\u200d\u2060",  # zero-width characters only
        "\ufeff",  # BOM
        "Ana\u202egnp.exe",  # right-to-left override
        "Ana\u2066x\u2069",  # bidi isolates
        "Ana\x00",  # control
        "Ana\nBob",  # control (forged log line)
        "\x1b[31mAna",  # terminal escape
        "\u0301\u0302",  # combining marks only
        " \u3000 ",  # whitespace only
    ],
)
def test_by_refuses_invisible_control_and_bidi_characters(by: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_command("ack", json.dumps({**ACK, "by": by}).encode())
    assert err.value.reason == "invalid"
    assert "by" in str(err.value)


@pytest.mark.parametrize(
    "by", ["Ana", "Åsa Nørgaard", "Кран-оператор", "李雷", "O'Neil (shift 2)", "Zoë"]
)
def test_by_accepts_real_names(by: str) -> None:
    assert parse_command("ack", json.dumps({**ACK, "by": by}).encode()).by == by
