"""Validated MQTT settings: broker address, TLS, credentials, topics, outbox limits, backoff.

One pydantic v2 model per concern, all ``extra="forbid"`` so a typo in the gateway's YAML
fails at load time instead of silently using a default. The composition root embeds
:class:`MqttConfig` in the gateway config; the password may be overridden from the
environment by the caller (``model_copy(update={"password": SecretStr(...)})``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from edge.mqtt.topics import validate_prefix

__all__ = ["MQTT_MAX_PACKET", "CommandsConfig", "MqttConfig", "OutboxConfig", "TlsConfig"]

MQTT_MAX_PACKET = 268_435_460
"""The largest MQTT packet there is: 5 header bytes and a remaining length of 268,435,455."""


class TlsConfig(BaseModel):
    """TLS towards the broker. Present means TLS is on.

    ``ca_file`` (PEM) and/or ``use_system_ca`` say whom to trust; ``cert_file`` +
    ``key_file`` add a client certificate (mutual TLS). ``insecure`` keeps chain
    verification but skips the host-name check (a broker reached by an IP its certificate
    does not name); it never disables verification altogether.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    use_system_ca: bool = False
    insecure: bool = False

    @model_validator(mode="after")
    def _check(self) -> TlsConfig:
        if self.ca_file is None and not self.use_system_ca:
            raise ValueError("tls needs ca_file or use_system_ca: true")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls cert_file and key_file go together")
        return self


class OutboxConfig(BaseModel):
    """Bounds and durability of the on-disk outbox (see :mod:`edge.mqtt.outbox`).

    ``max_bytes`` bounds the sum of topic + payload bytes of stored messages; the SQLite
    file is larger by its page overhead. ``synchronous``: ``NORMAL`` (default) survives
    a killed process; a power cut can lose what was committed since the last checkpoint,
    which runs every ``checkpoint_interval_s`` (0: only SQLite's automatic checkpoints).
    ``FULL`` fsyncs every commit and survives power cuts at the price of one fsync per
    commit (group commit shares it between concurrent callers).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: int = Field(default=100_000, ge=10)
    max_bytes: int = Field(default=64 * 1024 * 1024, ge=64 * 1024)
    synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    checkpoint_interval_s: float = Field(default=1.0, ge=0.0)


class CommandsConfig(BaseModel):
    """Commands to the gateway over MQTT (``{prefix}/{gw}/cmd/...``, :mod:`edge.mqtt.commands`).

    Off by default. The real boundary is the broker: per-gateway credentials and an ACL
    that lets only the control-room user publish to ``{prefix}/+/cmd/#`` (the shipped
    ``deploy/mosquitto/site.acl.template``). ``token`` (env ``SAFETY_EDGE_CMD_TOKEN`` wins)
    and ``allowed_by`` are an extra check inside the gateway: a command must carry
    ``"token"`` equal to it, and its ``by`` must be one of the names listed (empty: any).

    Error replies share the connection with the events, so a flood of bad commands must
    not delay them: error replies go out at QoS 0 and at most ``reply_rate`` per second
    (bursts of ``reply_burst``); the rest are dropped and counted
    (``mqtt_command_replies_rate_limited_total``). A command that finds ``queue`` full
    is dropped without a reply (``mqtt_commands_busy_total``). Successful replies are
    never limited (QoS 1).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="subscribe to {prefix}/{gw}/cmd/#")
    token: SecretStr | None = Field(
        default=None, description="shared secret every command must carry (env wins)"
    )
    allowed_by: tuple[str, ...] = Field(
        default=(), description="operator names accepted in `by` (empty: any)"
    )
    max_bytes: int = Field(
        default=4096, ge=256, le=65536, description="larger command payloads are refused"
    )
    queue: int = Field(
        default=64,
        ge=1,
        le=10_000,
        description="commands waiting; more are dropped unanswered (counted as busy)",
    )
    reply_rate: float = Field(
        default=20.0,
        gt=0,
        le=10_000,
        description="error replies per second at most (token bucket); more are dropped, counted",
    )
    reply_burst: int = Field(
        default=50, ge=1, le=10_000, description="error replies sent at once before reply_rate"
    )

    @field_validator("token")
    @classmethod
    def _token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and not v.get_secret_value():
            raise ValueError("token must not be empty (leave it out for none)")
        return v


class MqttConfig(BaseModel):
    """How the gateway talks to its broker.

    Units: seconds for every ``*_s`` field. ``protocol`` is ``"5"`` (MQTT 5.0, default) or
    ``"3.1.1"``; the integer ``5`` in YAML is accepted. ``client_id`` defaults to the
    gateway id. ``qos`` applies to events and alerts (the outbox deletes a row at PUBACK for
    1, at PUBCOMP for 2). ``max_inflight`` bounds unacknowledged messages on the wire
    (default 20, mosquitto's default Receive Maximum); an MQTT 5 broker announcing a
    smaller Receive Maximum lowers it from the next connection on.

    ``max_message_bytes`` bounds the size of one PUBLISH packet (fixed header, topic,
    packet id, properties and payload) the gateway sends; an MQTT 5 broker announcing a
    smaller Maximum Packet Size lowers it for that connection. An outbox message over the
    limit is never sent (a broker would drop the connection, and the message would block
    everything behind it): it is removed, logged and reported as lost in the
    ``mqtt_outbox_loss`` alert. Set it at or below the broker's limit (mosquitto
    ``max_packet_size`` / ``message_size_limit``) where the broker does not announce one
    (MQTT 3.1.1, mosquitto's ``message_size_limit``): a broker limit below this setting
    means a dropped connection per oversized message (the publisher sets such a message
    aside after a few drops) or, for MQTT 3.1.1 and ``message_size_limit``, a message
    the broker acknowledges and silently discards.

    Backoff after a failed or lost connection is exponential with jitter between
    ``backoff_min_s`` and ``backoff_max_s``; refusals that retrying cannot fix (bad
    credentials, not authorised, banned, TLS verification failed) wait ``backoff_auth_s``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = "localhost"
    port: int = Field(default=1883, ge=1, le=65535)
    transport: Literal["tcp"] = "tcp"
    protocol: Literal["5", "3.1.1"] = "5"
    tls: TlsConfig | None = None
    username: str | None = None
    password: SecretStr | None = None
    client_id: str | None = None
    prefix: str = "safety-edge"
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    session_expiry_s: int = Field(default=7 * 24 * 3600, ge=0)
    qos: Literal[1, 2] = 1
    max_inflight: int = Field(default=20, ge=1, le=65535)
    max_message_bytes: int = Field(
        default=256 * 1024,
        ge=1024,
        le=MQTT_MAX_PACKET,
        description="largest PUBLISH packet sent; larger outbox messages are set aside as "
        "lost (alerted); at most the broker's max_packet_size/message_size_limit",
    )
    outbox: OutboxConfig = OutboxConfig()
    backoff_min_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=60.0, gt=0)
    backoff_auth_s: float = Field(default=300.0, gt=0)
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    results: bool = False
    commands: CommandsConfig = CommandsConfig()

    @field_validator("protocol", mode="before")
    @classmethod
    def _protocol_str(cls, v: object) -> object:
        return str(v) if isinstance(v, int | float) else v

    @field_validator("prefix", "ha_prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        return validate_prefix(v)

    @model_validator(mode="after")
    def _check(self) -> MqttConfig:
        if self.backoff_max_s < self.backoff_min_s:
            raise ValueError("backoff_max_s must be >= backoff_min_s")
        if self.password is not None and self.username is None:
            raise ValueError("password given without username")
        return self
