"""The topic tree: one place that spells every topic the gateway publishes.

::

    {prefix}/{gateway}/status                 retained, JSON, last will = offline
    {prefix}/{gateway}/events                 QoS 1, via the outbox
    {prefix}/{gateway}/alerts                 QoS 1, via the outbox
    {prefix}/{gateway}/{camera}/{task}/state  retained, current counts per zone
    {prefix}/{gateway}/results                QoS 0, optional, every HTTP API result
    {prefix}/{gateway}/cmd/{name}             subscribed (QoS 1): commands to the gateway
    {prefix}/{gateway}/cmd/reply              QoS 1, not retained: answers to commands

Names that become topic levels (gateway, camera, task) are validated here: non-empty,
at most 128 characters, none of ``/ + # $`` or whitespace, so a subscriber's ``+`` always
matches exactly one of them, and no code point a broker may refuse as a malformed packet
(mosquitto drops the connection, and a retained state topic would be sent again at every
connect): control characters (Unicode category Cc, NUL included), format characters (Cf,
e.g. U+200B zero width space), surrogates (Cs), private use (Co) and noncharacters
(U+FDD0..U+FDEF, U+xFFFE and U+xFFFF). Letters of any script are fine. Gateway ids are
stricter (letters, digits, ``_`` and ``-``) because they also serve as MQTT client id,
ACL ``%u``/``%c`` and Home Assistant node id.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

__all__ = ["Topics", "validate_gateway_id", "validate_prefix", "validate_segment"]

_GATEWAY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_FORBIDDEN = frozenset("/+#$")
_BAD_CATEGORIES = {
    "Cc": "a control character",
    "Cf": "a format character",
    "Cs": "a surrogate",
    "Co": "a private-use character",
}


def _why_bad(c: str) -> str | None:
    """Why ``c`` may not appear in a topic level, or ``None`` when it may."""
    if c in _FORBIDDEN:
        return "an MQTT topic separator or wildcard"
    cp = ord(c)
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return "a Unicode noncharacter"
    why = _BAD_CATEGORIES.get(unicodedata.category(c))
    if why is None and c.isspace():
        return "whitespace"
    return why


def validate_segment(name: str, what: str = "name") -> str:
    """Return ``name`` if it is usable as one topic level, else raise ``ValueError``
    naming the first character that is not allowed (see the module docstring)."""
    if not name or len(name) > 128:
        raise ValueError(f"{what} must be 1..128 characters, got {name!r}")
    for i, c in enumerate(name):
        why = _why_bad(c)
        if why is not None:
            label = unicodedata.name(c, "")
            raise ValueError(
                f"{what} {name!r} contains U+{ord(c):04X}{f' {label}' if label else ''} at "
                f"position {i}, {why}, which is not allowed in an MQTT topic level"
            )
    return name


def validate_gateway_id(gateway_id: str) -> str:
    """Return ``gateway_id`` if it matches ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``."""
    if not _GATEWAY_RE.match(gateway_id):
        raise ValueError(
            f"gateway id {gateway_id!r} must be 1..64 letters, digits, '_' or '-' "
            "(it is also the MQTT client id and Home Assistant node id)"
        )
    return gateway_id


def validate_prefix(prefix: str) -> str:
    """A topic prefix: one or more valid levels joined by ``/`` (no leading/trailing ``/``)."""
    for level in prefix.split("/"):
        validate_segment(level, "topic prefix level")
    return prefix


@dataclass(frozen=True, slots=True)
class Topics:
    """Topic names of one gateway. ``prefix`` and ``gateway`` are validated on construction."""

    prefix: str
    gateway: str

    def __post_init__(self) -> None:
        validate_prefix(self.prefix)
        validate_gateway_id(self.gateway)

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.gateway}"

    @property
    def status(self) -> str:
        return f"{self.base}/status"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def alerts(self) -> str:
        return f"{self.base}/alerts"

    @property
    def results(self) -> str:
        return f"{self.base}/results"

    @property
    def cmd_filter(self) -> str:
        """``{base}/cmd/#``: the filter the gateway subscribes to for commands."""
        return f"{self.base}/cmd/#"

    @property
    def cmd_reply(self) -> str:
        """``{base}/cmd/reply``: where the gateway answers commands (QoS 1, not retained)."""
        return f"{self.base}/cmd/reply"

    def cmd(self, name: str) -> str:
        """``{base}/cmd/{name}``, e.g. ``cmd("ack")``; raises ``ValueError`` for bad names."""
        validate_segment(name, "command")
        return f"{self.base}/cmd/{name}"

    def cmd_name(self, topic: str) -> str | None:
        """The part of ``topic`` after ``{base}/cmd/`` (may hold further levels), or
        ``None`` when ``topic`` is not under this gateway's command tree."""
        head = f"{self.base}/cmd/"
        return topic[len(head) :] if topic.startswith(head) else None

    def state(self, camera: str, task: str) -> str:
        """Retained per camera/task state topic; raises ``ValueError`` for bad names."""
        validate_segment(camera, "camera")
        validate_segment(task, "task")
        return f"{self.base}/{camera}/{task}/state"
