"""Home Assistant MQTT discovery messages (opt-in: ``MqttConfig.ha_discovery``).

For every camera/task/zone the gateway announces, retained under ``{ha_prefix}/...``:

- a ``binary_sensor`` (device class ``safety``: on = unsafe) that is on while the zone's
  count in the retained state topic is above zero, and
- a ``sensor`` with that count (state class ``measurement``);

and for every counting line, two sensors with its ``in`` and ``out`` crossings
(state class ``total_increasing``: Home Assistant's statistics and ``utility_meter``
take the restart of a gateway, when the counts start at 0 again, as a reset).

Both read the existing state topic ``{prefix}/{gateway}/{camera}/{task}/state`` and take
availability from the status topic, so Home Assistant needs no configuration and no
extra traffic. All entities belong to one device per gateway. Topics are
``{ha_prefix}/{component}/{gateway id}/{object id}/config``, so a broker ACL line
``pattern write homeassistant/+/%u/#`` fits.

Object ids are ``{camera}_{task}_{zone or line}`` lower-cased with every run of
characters outside ``[a-z0-9_]`` turned into ``_``. Names that come out alike
(``Кран``/``Цех`` with the same zone, ``dock-1``/``dock_1``, ``Dock``/``dock``) would
share a config topic and unique id, and Home Assistant would keep only one sensor: such
an id gets ``_`` and the first 8 hex digits of the SHA-1 of ``camera/task/name`` appended
for each name whose id is not exactly its own ``camera_task_name`` (a name already made
only of ``[a-z0-9_]`` keeps the plain id). Ids that collide with no other keep the plain
form, so an upgrade gives existing entities no new ids. What still collides (two names
whose plain ids are identical, e.g. camera ``cam_fence`` zone ``z`` and camera ``cam``
zone ``fence_z``, task ``fence``) is listed by :func:`discovery_collisions`; the
publisher refuses such an inventory with a :class:`~edge.errors.ConfigError` when
discovery is on.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from edge.mqtt.schema import CameraTask
from edge.mqtt.topics import Topics

__all__ = ["DiscoveryMessage", "discovery_collisions", "discovery_messages"]

_UNSAFE = re.compile(r"[^a-z0-9_]+")


def _object_id(*parts: str) -> str:
    return _UNSAFE.sub("_", "_".join(parts).lower()).strip("_") or "x"


def _object_ids(entries: Sequence[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """Object id per ``(camera, task, name)``: the plain :func:`_object_id`, with a hash
    of the names appended where the plain id is shared and lost characters (module doc)."""
    plain = {e: _object_id(*e) for e in entries}
    users = Counter(plain.values())
    out: dict[tuple[str, str, str], str] = {}
    for e, oid in plain.items():
        if users[oid] > 1 and oid != "_".join(e):
            oid += "_" + hashlib.sha1("/".join(e).encode()).hexdigest()[:8]
        out[e] = oid
    return out


@dataclass(frozen=True, slots=True)
class DiscoveryMessage:
    """One retained config message: ``topic`` and JSON-ready ``payload``."""

    topic: str
    payload: dict[str, Any]


def discovery_messages(
    *, topics: Topics, ha_prefix: str, cameras: Sequence[CameraTask], version: str
) -> list[DiscoveryMessage]:
    """Config messages for all ``cameras`` zones (two per zone) and counting lines (two
    per line), in a stable order."""
    gw = topics.gateway
    node = gw  # already [A-Za-z0-9_-]: HA's node id rule, and the ACL's %u
    device = {
        "identifiers": [f"safety_edge_{_object_id(gw)}"],
        "name": f"safety-edge {gw}",
        "manufacturer": "safety-edge",
        "model": "gateway",
        "sw_version": version,
    }
    availability = {
        "availability_topic": topics.status,
        "availability_template": "{{ value_json.state }}",
        "payload_available": "online",
        "payload_not_available": "offline",
    }
    out: list[DiscoveryMessage] = []
    zone_ids = _object_ids([(c.camera, c.task, z) for c in cameras for z in c.zones])
    line_ids = _object_ids([(c.camera, c.task, ln) for c in cameras for ln in c.lines])
    for cam in cameras:
        state_topic = topics.state(cam.camera, cam.task)
        for zone in cam.zones:
            oid = zone_ids[(cam.camera, cam.task, zone)]
            count = "(value_json.zones[" + json.dumps(zone) + "] | default(0) | int)"
            common = {
                "state_topic": state_topic,
                "device": device,
                "origin": {"name": "safety-edge", "sw_version": version},
                **availability,
            }
            out.append(
                DiscoveryMessage(
                    topic=f"{ha_prefix}/binary_sensor/{node}/{oid}/config",
                    payload={
                        "name": f"{cam.camera} {zone} {cam.task}",
                        "unique_id": f"safety_edge_{_object_id(gw)}_{oid}",
                        "device_class": "safety",
                        "value_template": "{{ 'ON' if " + count + " > 0 else 'OFF' }}",
                        "payload_on": "ON",
                        "payload_off": "OFF",
                        **common,
                    },
                )
            )
            out.append(
                DiscoveryMessage(
                    topic=f"{ha_prefix}/sensor/{node}/{oid}_count/config",
                    payload={
                        "name": f"{cam.camera} {zone} {cam.task} count",
                        "unique_id": f"safety_edge_{_object_id(gw)}_{oid}_count",
                        "state_class": "measurement",
                        "icon": "mdi:counter",
                        "value_template": "{{ " + count + " }}",
                        **common,
                    },
                )
            )
        for line in cam.lines:
            oid = line_ids[(cam.camera, cam.task, line)]
            uid = f"safety_edge_{_object_id(gw)}_{oid}"
            per_line = "((value_json.lines | default({}))[" + json.dumps(line) + "] | default({}))"
            for direction in ("in", "out"):
                out.append(
                    DiscoveryMessage(
                        topic=f"{ha_prefix}/sensor/{node}/{oid}_crossings_{direction}/config",
                        payload={
                            "name": f"{cam.camera} {line} {cam.task} {direction}",
                            "unique_id": f"{uid}_crossings_{direction}",
                            "state_class": "total_increasing",
                            "icon": "mdi:transfer-right"
                            if direction == "in"
                            else "mdi:transfer-left",
                            "value_template": "{{ ("
                            + per_line
                            + "["
                            + json.dumps(direction)
                            + "] | default(0) | int) }}",
                            "state_topic": state_topic,
                            "device": device,
                            "origin": {"name": "safety-edge", "sw_version": version},
                            **availability,
                        },
                    )
                )
    return out


def discovery_collisions(
    *, topics: Topics, ha_prefix: str, cameras: Sequence[CameraTask]
) -> list[str]:
    """One line per config topic or unique id that more than one camera/task/zone (or
    line) would use -- Home Assistant would show only one of them; ``[]`` when none."""
    seen: dict[str, list[str]] = defaultdict(list)
    for msg in discovery_messages(topics=topics, ha_prefix=ha_prefix, cameras=cameras, version=""):
        seen[msg.topic].append(msg.payload["name"])
        seen["unique_id " + msg.payload["unique_id"]].append(msg.payload["name"])
    return [
        f"Home Assistant discovery: {' and '.join(repr(n) for n in names)} (camera zone "
        f"task) would share {key}; rename one of them"
        for key, names in seen.items()
        if len(names) > 1
    ]
