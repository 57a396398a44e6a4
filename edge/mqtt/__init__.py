"""MQTT output of the gateway: durable outbox, publisher, payload schema, HA discovery.

Modules: :mod:`~edge.mqtt.config` (validated settings), :mod:`~edge.mqtt.topics` (topic
tree), :mod:`~edge.mqtt.schema` (payloads, ``"schema": 1``), :mod:`~edge.mqtt.ids`
(time-ordered ids), :mod:`~edge.mqtt.outbox` (SQLite WAL outbox),
:mod:`~edge.mqtt.reconnect` (failure reasons, backoff), :mod:`~edge.mqtt.discovery`
(Home Assistant), :mod:`~edge.mqtt.commands` (commands to the gateway: validation and
replies), :mod:`~edge.mqtt.publisher` (threads and the public API).
Importing starts nothing.
"""

from edge.mqtt.config import MqttConfig, OutboxConfig, TlsConfig
from edge.mqtt.ids import new_event_id
from edge.mqtt.outbox import (
    Outbox,
    OutboxCorruptError,
    OutboxError,
    OutboxFullError,
    OutboxRecovery,
)
from edge.mqtt.publisher import AlertHook, Publisher, PublisherClosedError
from edge.mqtt.schema import SCHEMA_VERSION, CameraTask, Event, EventType
from edge.mqtt.topics import Topics

__all__ = [
    "SCHEMA_VERSION",
    "AlertHook",
    "CameraTask",
    "Event",
    "EventType",
    "MqttConfig",
    "Outbox",
    "OutboxConfig",
    "OutboxCorruptError",
    "OutboxError",
    "OutboxFullError",
    "OutboxRecovery",
    "Publisher",
    "PublisherClosedError",
    "TlsConfig",
    "Topics",
    "new_event_id",
]
