"""Payload schema, ids, topics, config validation and Home Assistant discovery (no broker)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from pydantic import ValidationError

from edge.mqtt.config import MqttConfig
from edge.mqtt.discovery import discovery_messages
from edge.mqtt.ids import EventIdGenerator, event_id_time_ms, is_event_id, new_event_id
from edge.mqtt.schema import (
    SCHEMA_VERSION,
    CameraTask,
    Event,
    dumps,
    iso_utc,
    state_payload,
    status_payload,
    will_payload,
)
from edge.mqtt.topics import Topics, validate_gateway_id, validate_segment

EVENT_KEYS = {
    "schema", "event_id", "type", "time", "time_ms", "start_event_id", "start_time",
    "start_time_ms", "gateway", "camera", "task", "zone", "label", "score", "box",
    "track_id", "snapshot", "snapshot_sha256", "model", "attributes",
}  # fmt: skip


def make_event(**kw: Any) -> Event:
    base: dict[str, Any] = dict(
        type="start", camera="cam-1", task="hardhat", zone="dock", label="no_hardhat",
        score=0.9, box=(1, 2, 3, 4),
    )  # fmt: skip
    base.update(kw)
    return Event(**base)


# -- ids ------------------------------------------------------------------------------------


def test_ids_are_ulid_shaped_and_carry_their_time() -> None:
    gen = EventIdGenerator(clock_ms=lambda: 1_717_230_612_345, random_bytes=lambda n: b"\0" * n)
    eid = gen()
    assert len(eid) == 26 and is_event_id(eid)
    assert event_id_time_ms(eid) == 1_717_230_612_345
    assert eid == "01HZ9EQBVS" + "0" * 16  # 48-bit ms in 10 chars, then the random part


def test_ids_strictly_increase_within_a_millisecond_and_when_the_clock_steps_back() -> None:
    clock = iter([1000, 1000, 1000, 999, 998, 1001])
    gen = EventIdGenerator(clock_ms=lambda: next(clock))
    ids = [gen() for _ in range(6)]
    assert ids == sorted(ids) and len(set(ids)) == 6
    assert [event_id_time_ms(i) for i in ids] == [1000, 1000, 1000, 1000, 1000, 1001]


def test_ids_unique_and_sorted_across_threads() -> None:
    out: list[list[str]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        out[k].extend(new_event_id() for _ in range(5000))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flat = [i for ids in out for i in ids]
    assert len(set(flat)) == len(flat) == 20000
    for ids in out:  # each thread sees increasing ids
        assert ids == sorted(ids)


@pytest.mark.parametrize("text", ["", "0" * 25, "8" + "0" * 25, "0" * 25 + "U", "0" * 27])
def test_non_ids_are_rejected(text: str) -> None:
    assert not is_event_id(text)
    with pytest.raises(ValueError):
        event_id_time_ms(text)


# -- events and payloads ----------------------------------------------------------------------


def test_event_payload_has_the_documented_keys_and_values() -> None:
    ev = make_event(
        type="end", track_id=7, snapshot="snap/a.jpg", model="m@1", time_ms=1_717_230_612_345,
        start_time_ms=1_717_230_600_000, start_event_id="01HZ9EQBVS0000000000000000",
        attributes={"colour": "red"},
    )  # fmt: skip
    p = json.loads(dumps(ev.to_payload("gw-1")))
    assert set(p) == EVENT_KEYS
    assert p["schema"] == SCHEMA_VERSION == 1
    assert p["time"] == "2024-06-01T08:30:12.345Z" and p["time_ms"] == 1_717_230_612_345
    assert p["start_time"] == "2024-06-01T08:30:00.000Z"
    assert p["box"] == [1.0, 2.0, 3.0, 4.0] and p["score"] == 0.9 and p["track_id"] == 7
    assert p["gateway"] == "gw-1" and p["type"] == "end" and p["attributes"] == {"colour": "red"}
    assert is_event_id(p["event_id"])
    assert p["snapshot_sha256"] is None
    digest = "0123456789abcdef" * 4
    assert (
        make_event(snapshot="a.jpg", snapshot_sha256=digest).to_payload("gw")["snapshot_sha256"]
        == digest
    )
    for bad in ("ABCDEF" * 10 + "0000", "0" * 63, "g" * 64):
        with pytest.raises(ValueError, match="snapshot_sha256"):
            make_event(snapshot="a.jpg", snapshot_sha256=bad)


def test_event_coerces_numpy_like_numbers() -> None:
    import numpy as np

    ev = make_event(
        score=np.float32(0.5), box=np.array([1, 2, 3, 4], np.float32), track_id=np.int64(3)
    )
    p = json.loads(dumps(ev.to_payload("gw")))
    assert p["score"] == 0.5 and p["box"] == [1.0, 2.0, 3.0, 4.0] and p["track_id"] == 3


@pytest.mark.parametrize(
    "kw",
    [
        {"type": "begin"},
        {"score": 1.5},
        {"score": -0.1},
        {"box": (1, 2, 3)},
        {"box": (1, 2, 3, float("nan"))},
        {"camera": "a/b"},
        {"camera": ""},
        {"task": "hard hat"},
        {"task": "x#"},
        {"zone": ""},
        {"label": ""},
    ],
)
def test_invalid_events_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        make_event(**kw)


def test_status_will_and_state_payloads() -> None:
    cams = [
        CameraTask("cam-1", "hardhat", ("dock", "gate")),
        CameraTask("cam-1", "fence", ("yard",)),
    ]
    s = status_payload(gateway="gw", version="1.2", models=["m"], cameras=cams, t_ms=0)
    assert s["state"] == "online" and s["schema"] == 1 and s["cameras"] == ["cam-1"]
    assert s["tasks"][0] == {
        "camera": "cam-1",
        "task": "hardhat",
        "zones": ["dock", "gate"],
        "lines": [],
    }
    w = will_payload(gateway="gw", reason="connection_lost")
    assert w == {"schema": 1, "state": "offline", "gateway": "gw", "reason": "connection_lost"}
    st = state_payload(gateway="gw", camera="c", task="t", counts={"a": 2, "b": 0}, t_ms=0)
    assert st["zones"] == {"a": 2, "b": 0} and st["total"] == 2 and st["time"].endswith("Z")
    with pytest.raises(ValueError):
        state_payload(gateway="gw", camera="c", task="t", counts={"a": -1}, t_ms=0)
    with pytest.raises(ValueError):
        dumps({"x": float("inf")})
    assert iso_utc(0) == "1970-01-01T00:00:00.000Z"


# -- topics -----------------------------------------------------------------------------------


def test_topic_tree() -> None:
    t = Topics("safety-edge", "gw-1")
    assert t.status == "safety-edge/gw-1/status"
    assert t.events == "safety-edge/gw-1/events"
    assert t.alerts == "safety-edge/gw-1/alerts"
    assert t.results == "safety-edge/gw-1/results"
    assert t.state("cam-1", "hardhat") == "safety-edge/gw-1/cam-1/hardhat/state"
    assert Topics("plant/a", "gw").events == "plant/a/gw/events"


@pytest.mark.parametrize("gw", ["", "-gw", "gw/1", "gw 1", "gw+", "a" * 65, "gw.1"])
def test_bad_gateway_ids(gw: str) -> None:
    with pytest.raises(ValueError):
        validate_gateway_id(gw)


@pytest.mark.parametrize("seg", ["", "a/b", "+", "#", "$SYS", "a b", "x\x00", "a" * 129])
def test_bad_topic_levels(seg: str) -> None:
    with pytest.raises(ValueError):
        validate_segment(seg)


# -- config -----------------------------------------------------------------------------------


def test_config_defaults_and_coercions() -> None:
    c = MqttConfig.model_validate({"host": "broker", "protocol": 5, "outbox": {"max_rows": 50}})
    assert c.protocol == "5" and c.port == 1883 and c.prefix == "safety-edge"
    assert c.outbox.max_rows == 50 and c.outbox.synchronous == "NORMAL"
    assert MqttConfig.model_validate({"protocol": "3.1.1"}).protocol == "3.1.1"


@pytest.mark.parametrize(
    "data",
    [
        {"hots": "typo"},
        {"protocol": 4},
        {"port": 0},
        {"prefix": "a/#"},
        {"prefix": "/a"},
        {"tls": {}},
        {"tls": {"ca_file": "ca.pem", "cert_file": "c.pem"}},
        {"tls": {"use_system_ca": True, "verify": False}},
        {"password": "x"},
        {"backoff_min_s": 10, "backoff_max_s": 1},
        {"qos": 0},
        {"outbox": {"synchronous": "OFF"}},
    ],
)
def test_config_rejects(data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        MqttConfig.model_validate(data)


# -- Home Assistant discovery -----------------------------------------------------------------


def _discovery() -> list[Any]:
    topics = Topics("safety-edge", "gw-1")
    cams = [CameraTask("Dock-Cam", "hardhat", ("loading bay", 'gate "B"'))]
    return discovery_messages(topics=topics, ha_prefix="homeassistant", cameras=cams, version="9")


def test_discovery_topics_ids_and_availability() -> None:
    msgs = _discovery()
    assert [m.topic for m in msgs] == [
        "homeassistant/binary_sensor/gw-1/dock_cam_hardhat_loading_bay/config",
        "homeassistant/sensor/gw-1/dock_cam_hardhat_loading_bay_count/config",
        "homeassistant/binary_sensor/gw-1/dock_cam_hardhat_gate_b/config",
        "homeassistant/sensor/gw-1/dock_cam_hardhat_gate_b_count/config",
    ]
    assert len({m.payload["unique_id"] for m in msgs}) == 4
    for m in msgs:
        assert m.payload["state_topic"] == "safety-edge/gw-1/Dock-Cam/hardhat/state"
        assert m.payload["availability_topic"] == "safety-edge/gw-1/status"
        assert m.payload["device"]["identifiers"] == ["safety_edge_gw_1"]
    assert msgs[0].payload["device_class"] == "safety"
    assert msgs[1].payload["state_class"] == "measurement"


def test_discovery_templates_render_against_the_state_payload() -> None:
    """Renders the value templates with Jinja2 (what Home Assistant runs them with)."""
    jinja2 = pytest.importorskip("jinja2")
    env = jinja2.Environment()

    def render(template: str, payload: dict[str, Any]) -> str:
        return str(env.from_string(template).render(value_json=payload)).strip()

    msgs = _discovery()
    state = state_payload(
        gateway="gw-1", camera="Dock-Cam", task="hardhat", counts={'gate "B"': 3}, t_ms=0
    )
    binary_bay, count_bay, binary_gate, count_gate = (m.payload["value_template"] for m in msgs)
    assert render(binary_bay, state) == "OFF" and render(count_bay, state) == "0"
    assert render(binary_gate, state) == "ON" and render(count_gate, state) == "3"
    avail = msgs[0].payload["availability_template"]
    online = status_payload(gateway="g", version="", models=[], cameras=[], t_ms=0)
    assert render(avail, online) == "online"
    assert render(avail, will_payload(gateway="g", reason="connection_lost")) == "offline"
