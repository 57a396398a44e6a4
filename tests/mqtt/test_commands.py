"""MQTT commands: validation of every error case (table-driven), the dispatcher's token
and ``by`` checks, and the publisher against a real mosquitto: subscription on every
connect (also after a broker restart that lost the session), replies on ``cmd/reply``,
retained and reply-topic messages ignored, a command dropped when the queue is full."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt import MqttConfig, Publisher
from edge.mqtt.commands import (
    AckCommand,
    CommandDispatcher,
    CommandError,
    parse_command,
)
from edge.mqtt.config import CommandsConfig
from edge.mqtt.schema import command_payload
from tests.mqtt.broker import MosquittoBroker
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait

GW = "gw-cmd"
ACK = command_payload(cmd="ack", event_id="01HZX3J4E8Q6W2T4V9K0M5N7PB", by="Ana", request_id="r1")


def raw(obj: Any) -> bytes:
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("name", "payload", "code"),
    [
        ("ack", b"{not json", "bad_json"),
        ("ack", b"\xff\xfe", "bad_json"),
        ("ack", raw([1, 2]), "bad_json"),
        ("ack", raw({**ACK, "schema": 2}), "bad_schema"),
        ("ack", raw({k: v for k, v in ACK.items() if k != "schema"}), "bad_schema"),
        ("ack", raw({**ACK, "schema": True}), "bad_schema"),
        ("reboot", raw({**ACK, "cmd": "reboot"}), "unknown_command"),
        ("ack/extra", raw(ACK), "unknown_command"),
        ("ack", raw({**ACK, "cmd": "reboot"}), "unknown_command"),
        ("ack", raw({k: v for k, v in ACK.items() if k != "cmd"}), "invalid"),
        ("ack", raw({k: v for k, v in ACK.items() if k != "event_id"}), "invalid"),
        ("ack", raw({**ACK, "by": "   "}), "invalid"),
        ("ack", raw({**ACK, "by": "x" * 65}), "invalid"),
        ("ack", raw({**ACK, "event_id": "../etc"}), "invalid"),
        ("ack", raw({**ACK, "event_id": 17}), "invalid"),
        ("ack", raw({**ACK, "note": "n" * 501}), "invalid"),
        ("ack", raw({**ACK, "evnt_id": "x"}), "invalid"),
        ("ack", raw({**ACK, "note": "n" * 5000}), "too_large"),
    ],
)
def test_parse_command_refuses_each_malformed_command(name: str, payload: bytes, code: str) -> None:
    with pytest.raises(CommandError) as err:
        parse_command(name, payload)
    assert err.value.reason == code, err.value


def test_parse_command_accepts_a_valid_ack() -> None:
    cmd = parse_command("ack", raw({**ACK, "by": "  Ana  ", "note": "guard sent"}))
    assert isinstance(cmd, AckCommand)
    assert (cmd.event_id, cmd.by, cmd.note, cmd.request_id) == (
        ACK["event_id"],
        "Ana",
        "guard sent",
        "r1",
    )


def dispatcher(handler: Any = None, **config: Any) -> CommandDispatcher:
    return CommandDispatcher(
        gateway=GW,
        config=CommandsConfig.model_validate({"enabled": True, **config}),
        handlers={"ack": handler or (lambda c: {"acked": c.event_id})},
    )


def test_dispatcher_replies_ok_or_with_the_error_code() -> None:
    d = dispatcher()
    ok = d.dispatch("ack", raw(ACK))
    assert ok["ok"] is True and ok["error"] is None and ok["acked"] == ACK["event_id"]
    assert (ok["schema"], ok["gateway"], ok["cmd"], ok["request_id"]) == (1, GW, "ack", "r1")
    bad = d.dispatch("ack", raw({**ACK, "schema": 9}))
    assert bad["ok"] is False and bad["error"]["code"] == "bad_schema"
    assert bad["request_id"] == "r1"  # echoed even when the command is refused
    assert d.dispatch("ack", b"{")["request_id"] is None


def test_dispatcher_checks_token_and_allowed_names() -> None:
    d = dispatcher(token="s3cret", allowed_by=["Ana", "Bo"])
    assert d.dispatch("ack", raw({**ACK, "token": "s3cret"}))["ok"] is True
    for payload in (ACK, {**ACK, "token": "wrong"}, {**ACK, "token": "s3cret", "by": "Eve"}):
        reply = d.dispatch("ack", raw(payload))
        assert reply["error"]["code"] == "unauthorized", payload
        assert "s3cret" not in json.dumps(reply)


def test_dispatcher_survives_a_failing_handler(caplog: pytest.LogCaptureFixture) -> None:
    def refuse(c: AckCommand) -> Mapping[str, Any]:
        raise CommandError("unknown_event", f"no event {c.event_id}")

    def crash(c: AckCommand) -> Mapping[str, Any]:
        raise RuntimeError("bug")

    assert dispatcher(refuse).dispatch("ack", raw(ACK))["error"]["code"] == "unknown_event"
    assert dispatcher(crash).dispatch("ack", raw(ACK))["error"] == {
        "code": "internal",
        "message": "internal error (see the log)",
    }
    assert "RuntimeError: bug" in caplog.text  # logged with its traceback


# -- the publisher against a real broker ------------------------------------------------


class Recorder:
    """A handler that records commands; ``gate`` (when set) blocks it until released."""

    def __init__(self) -> None:
        self.seen: list[AckCommand] = []
        self.gate: threading.Event | None = None

    def __call__(self, cmd: AckCommand) -> Mapping[str, Any]:
        if self.gate is not None:
            self.gate.wait(10)
        self.seen.append(cmd)
        return {"acked": cmd.event_id}


def publisher(
    broker: MosquittoBroker, tmp_path: Path, handler: Recorder | None, **mqtt: Any
) -> Publisher:
    commands = {"enabled": True, **mqtt.pop("commands", {})}
    config = MqttConfig.model_validate(
        {
            "host": broker.host,
            "port": broker.port,
            "backoff_min_s": 0.05,
            "backoff_max_s": 0.3,
            "commands": commands,
            **mqtt,
        }
    )
    d = None
    if handler is not None:
        d = CommandDispatcher(gateway=GW, config=config.commands, handlers={"ack": handler})
    return Publisher(config=config, outbox_path=tmp_path / "outbox.db", gateway_id=GW, commands=d)


@pytest.fixture
def control(broker: MosquittoBroker) -> Iterator[Subscriber]:
    with Subscriber(
        host=broker.host,
        port=broker.port,
        topics=[f"safety-edge/{GW}/cmd/reply"],
        client_id="control-room",
        persistent=False,
    ) as sub:
        yield sub


def send(sub: Subscriber, name: str, payload: bytes | Mapping[str, Any], **kw: Any) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sub.client.publish(f"safety-edge/{GW}/cmd/{name}", body, qos=1, **kw)


def replies(sub: Subscriber) -> list[dict[str, Any]]:
    """Replies seen (the test's own message on ``cmd/reply`` has no ``ok``)."""
    return [m.json() for m in sub.on_topic("/cmd/reply") if "ok" in m.json()]


def by_request(sub: Subscriber, rid: str, timeout: float = 5.0) -> dict[str, Any]:
    assert sub.wait_for(lambda: any(r["request_id"] == rid for r in replies(sub)), timeout), (
        replies(sub)
    )
    return next(r for r in replies(sub) if r["request_id"] == rid)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_commands_get_replies_and_never_stop_the_publisher(
    broker: MosquittoBroker, control: Subscriber, tmp_path: Path, protocol: str
) -> None:
    rec = Recorder()
    with publisher(broker, tmp_path, rec, protocol=protocol) as pub:
        assert control.wait_for(lambda: pub.connected, 5)
        time.sleep(0.2)  # SUBACK
        send(control, "ack", ACK)
        assert by_request(control, "r1")["ok"] is True
        assert [c.event_id for c in rec.seen] == [ACK["event_id"]]
        send(control, "ack", b'{"schema": 1, "cmd": "ack", "request_id": "r2", "by": ')
        send(control, "reboot", {**ACK, "cmd": "reboot", "request_id": "r3"})
        send(control, "ack", {**ACK, "request_id": "r4", "note": "x" * 5000})
        send(control, "ack", {**ACK, "request_id": "r5", "by": ""})
        send(control, "reply", {**ACK, "request_id": "r7"})  # not a command
        assert by_request(control, "r3")["error"]["code"] == "unknown_command"
        assert by_request(control, "r5")["error"]["code"] == "invalid"
        # unreadable or too large to read: answered without a request id
        assert control.wait_for(lambda: len(replies(control)) >= 5, 5)
        anonymous = [r for r in replies(control) if r["request_id"] is None]
        assert sorted(r["error"]["code"] for r in anonymous) == ["bad_json", "too_large"]
        send(control, "ack", {**ACK, "request_id": "r8"})  # still answering
        assert by_request(control, "r8")["ok"] is True
        time.sleep(0.3)
        rids = [r["request_id"] for r in replies(control)]
        assert sorted(map(str, rids)) == sorted(["r1", "None", "r3", "None", "r5", "r8"])
        assert pub.connected and len(rec.seen) == 2
        m = pub.metrics()
        assert m["mqtt_commands_received_total"] == 6
        assert m["mqtt_command_errors_total"] == 4
        assert m["mqtt_command_replies_sent_total"] == 6


def test_a_retained_command_is_not_replayed_at_connect(
    broker: MosquittoBroker, control: Subscriber, tmp_path: Path
) -> None:
    """A command someone published retained would come back at every subscribe (with the
    retain flag): it is ignored and counted, not carried out again."""
    send(control, "ack", {**ACK, "request_id": "old"}, retain=True)
    time.sleep(0.2)
    rec = Recorder()
    with publisher(broker, tmp_path, rec) as pub:
        key = 'mqtt_commands_ignored_total{reason="retained"}'
        assert wait(lambda: pub.metrics().get(key, 0) == 1, 5)
        send(control, "ack", ACK)
        assert by_request(control, "r1")["ok"] is True
        assert [r["request_id"] for r in replies(control)] == ["r1"] and len(rec.seen) == 1


def test_subscription_is_made_again_when_the_broker_lost_the_session(
    tmp_path: Path,
) -> None:
    with MosquittoBroker(tmp_path, persistence=False) as broker:
        rec = Recorder()
        with publisher(broker, tmp_path, rec) as pub:
            assert wait(lambda: pub.connected, 5)
            broker.restart()  # no persistence: the session and its subscription are gone
            assert wait(lambda: pub.metrics().get("mqtt_connects_total", 0) >= 2, 10)
            with Subscriber(
                host=broker.host,
                port=broker.port,
                topics=[f"safety-edge/{GW}/cmd/reply"],
                client_id="control-room",
                persistent=False,
            ) as control:
                time.sleep(0.2)
                send(control, "ack", ACK)
                assert by_request(control, "r1")["ok"] is True


def test_a_full_queue_drops_the_command_unanswered(
    broker: MosquittoBroker, control: Subscriber, tmp_path: Path
) -> None:
    """A command that finds the queue full is dropped and counted, without a reply (a
    reply from paho's network thread is what a command flood must not get)."""
    rec = Recorder()
    rec.gate = threading.Event()
    with publisher(broker, tmp_path, rec, commands={"queue": 1}) as pub:
        assert control.wait_for(lambda: pub.connected, 5)
        time.sleep(0.2)
        for i in range(1, 4):  # 1 in the handler, 2 waiting, 3 does not fit
            send(control, "ack", {**ACK, "request_id": f"q{i}"})
            time.sleep(0.15)
        assert wait(lambda: pub.metrics().get("mqtt_commands_busy_total") == 1, 5)
        rec.gate.set()
        assert by_request(control, "q1")["ok"] and by_request(control, "q2")["ok"]
        time.sleep(0.3)
        assert sorted(r["request_id"] for r in replies(control)) == ["q1", "q2"]


def test_without_a_dispatcher_nothing_subscribes(
    broker: MosquittoBroker, control: Subscriber, tmp_path: Path
) -> None:
    with publisher(broker, tmp_path, None) as pub:
        assert control.wait_for(lambda: pub.connected, 5)
        time.sleep(0.2)
        send(control, "ack", ACK)
        time.sleep(0.5)
        assert replies(control) == []
        assert "mqtt_commands_received_total" not in pub.metrics()


# -- configuration ------------------------------------------------------------------------


def test_token_from_the_environment_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    from edge.config import GatewayConfig

    cfg = GatewayConfig.model_validate(
        {"mqtt": {"username": "gw", "commands": {"enabled": True, "token": "from-file"}}}
    )
    monkeypatch.delenv("SAFETY_EDGE_CMD_TOKEN", raising=False)
    mqtt = cfg.resolved_mqtt()
    assert mqtt is not None and mqtt.commands.token is not None
    assert mqtt.commands.token.get_secret_value() == "from-file"
    monkeypatch.setenv("SAFETY_EDGE_CMD_TOKEN", "from-env")
    mqtt = cfg.resolved_mqtt()
    assert mqtt is not None and mqtt.commands.token is not None
    assert mqtt.commands.token.get_secret_value() == "from-env"
    assert mqtt.commands.enabled and mqtt.username == "gw"
    with pytest.raises(ValueError, match="token must not be empty"):
        CommandsConfig(token="")  # type: ignore[arg-type]


def test_config_check_warns_about_commands_without_broker_credentials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from edge.service.config_check import check_text

    monkeypatch.delenv("SAFETY_EDGE_MQTT_USERNAME", raising=False)
    text = "mqtt:\n  host: 127.0.0.1\n  commands:\n    enabled: true\n"
    config, problems = check_text(text)
    assert config is not None
    (warning,) = [p for p in problems if p.path == "mqtt.commands.enabled"]
    assert warning.severity == "warning" and "acknowledge alarms" in warning.message
    _, problems = check_text(text.replace("  host:", "  username: gw-1\n  host:"))
    assert not [p for p in problems if p.path.startswith("mqtt")]
