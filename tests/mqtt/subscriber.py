"""A collecting MQTT subscriber for tests (real paho client, persistent session by default).

With ``persistent=True`` it connects with MQTT 5 ``clean_start=False`` and a session
expiry of one hour, subscribes at QoS 1, and reconnects on its own (0.1-1 s backoff), so a
broker with persistence hands it every QoS 1 message published while it was disconnected.
(``clean_start=False`` from the very first connect matters: mosquitto 2.0 saves only
sessions that were not started clean into its persistence file.) Use a client id that is
unique on the broker.
"""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

__all__ = ["Received", "Subscriber"]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool

    def json(self) -> Any:
        return json.loads(self.payload)


class Subscriber:
    def __init__(
        self,
        *,
        host: str,
        port: int,
        topics: Sequence[str],
        client_id: str,
        persistent: bool = True,
        username: str | None = None,
        password: str | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.topics = host, port, list(topics)
        self.persistent = persistent
        self._lock = threading.Lock()
        self.messages: list[Received] = []
        self.connected = threading.Event()
        self.connects = 0
        c = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=mqtt.MQTTv5,
        )
        if username is not None:
            c.username_pw_set(username, password)
        if tls_context is not None:
            c.tls_set_context(tls_context)
        c.reconnect_delay_set(0.1, 1)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        self.client = c

    def _on_connect(self, c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            return
        self.connects += 1
        c.subscribe([(t, 1) for t in self.topics])
        self.connected.set()

    def _on_disconnect(self, c: mqtt.Client, u: Any, flags: Any, rc: Any, props: Any) -> None:
        self.connected.clear()

    def _on_message(self, c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(msg.topic, bytes(msg.payload), bool(msg.retain)))

    def start(self, timeout: float = 10.0) -> Subscriber:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if self.persistent else 0
        clean = not self.persistent
        self.client.connect(self.host, self.port, 30, clean_start=clean, properties=props)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError("subscriber did not connect")
        time.sleep(0.1)  # SUBACK
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def on_topic(self, suffix: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic.endswith(suffix)]

    def event_ids(self, suffix: str = "/events") -> Counter[str]:
        return Counter(m.json()["event_id"] for m in self.on_topic(suffix))

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.02)
        return predicate()
