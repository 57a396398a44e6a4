"""Commands to the gateway over MQTT: validation at the boundary and the reply for each.

A control room publishes a command on ``{prefix}/{gw}/cmd/{name}`` (QoS 1, not retained;
payloads in :mod:`edge.mqtt.schema`); the publisher hands ``(name, payload)`` to a
:class:`CommandDispatcher`, which checks, in this order, and answers the first failure
with ``{"ok": false, "error": {"code": ..., "message": ...}}`` on ``{prefix}/{gw}/cmd/reply``:

==================== ==============================================================
``too_large``        payload over ``mqtt.commands.max_bytes`` (default 4096 bytes)
``bad_json``         not UTF-8 JSON (also: nested deeper than the parser allows), or
                     not a JSON object
``bad_schema``       ``"schema"`` missing or not ``1``
``unknown_command``  a topic suffix or ``"cmd"`` the gateway does not know
``invalid``          a key missing, of the wrong type or length, unknown, or ``"cmd"``
                     not matching the topic
``unauthorized``     ``"token"`` not the configured one, or ``by`` not allowed
``unknown_event``    (ack) no event with that id on this gateway
``not_ackable``      (ack) a line ``crossing``: nothing to acknowledge
``busy``             too many commands waiting (``mqtt.commands.queue``); the
                     publisher drops such a command without sending this reply
``storage``          the acknowledgement could not be written
``internal``         a bug; logged with its traceback
==================== ==============================================================

Acknowledging an incident that is already acknowledged answers ``ok`` with
``"already": true`` and the first acknowledgement (MQTT QoS 1 may deliver a command
twice). The handler of a valid command raises :class:`CommandError` for the other
failures. Nothing here touches the network; the dispatcher never raises.

Authentication is the broker's job: per-gateway credentials and an ACL that lets only
the control-room user write ``{prefix}/+/cmd/#`` (``deploy/mosquitto/site.acl.template``).
The token and the ``by`` allow-list are a second, weaker check inside the gateway.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
)

from edge.errors import EdgeError
from edge.lograte import RateLimitedLog
from edge.mqtt.config import CommandsConfig
from edge.mqtt.schema import SCHEMA_VERSION, now_ms, reply_payload

__all__ = [
    "COMMANDS",
    "NAME_SHOWN",
    "AckCommand",
    "Command",
    "CommandDispatcher",
    "CommandError",
    "CommandHandler",
    "ErrorCode",
    "TokenBucket",
    "parse_command",
    "short_name",
]

log = logging.getLogger("edge.mqtt")

ErrorCode = Literal[
    "too_large",
    "bad_json",
    "bad_schema",
    "unknown_command",
    "invalid",
    "unauthorized",
    "unknown_event",
    "not_ackable",
    "busy",
    "storage",
    "internal",
]


def _visible_name(v: str) -> str:
    """Refuse control (Cc) and format (Cf: zero-width, bidi overrides/isolates, BOM)
    characters, and names with no letter, digit, punctuation or symbol: such a ``by``
    would show as nobody, or as someone else, in the log, the store and the console."""
    for ch in v:
        if unicodedata.category(ch) in ("Cc", "Cf"):
            raise ValueError(f"must not contain control or invisible characters (U+{ord(ch):04X})")
    if not any(unicodedata.category(ch)[0] in "LNPS" for ch in v):
        raise ValueError("must contain a visible character")
    return v


_Name = Annotated[
    str,
    StringConstraints(strip_whitespace=True, min_length=1, max_length=64),
    AfterValidator(_visible_name),
]
_EventId = Annotated[str, StringConstraints(pattern=r"^[0-9A-Za-z_-]{1,64}$")]


class CommandError(EdgeError):
    """A command that cannot be carried out; ``reason`` is its :data:`ErrorCode`."""

    def __init__(self, reason: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.reason: ErrorCode = reason


class AckCommand(BaseModel):
    """``ack``: acknowledge the incident an event belongs to.

    ``event_id``: any event of the incident (``start``/``update``/``end``); ``by``: who
    acknowledges (1..64 characters after stripping, at least one visible, no control or
    format characters such as zero-width or bidi controls); ``note``: up to 500 characters;
    ``request_id``: echoed in the reply (up to 128 characters); ``token``: see
    :class:`~edge.mqtt.config.CommandsConfig`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_: Literal[1] = Field(alias="schema")
    cmd: Literal["ack"]
    event_id: _EventId
    by: _Name
    note: Annotated[str, StringConstraints(max_length=500)] | None = None
    request_id: Annotated[str, StringConstraints(max_length=128)] | None = None
    token: Annotated[str, StringConstraints(max_length=256)] | None = None


Command = AckCommand
"""Every command model (a union once there is more than one)."""

COMMANDS: Mapping[str, type[BaseModel]] = {"ack": AckCommand}
"""Command name (topic suffix and ``"cmd"``) -> its model."""

CommandHandler = Callable[[Command], Mapping[str, Any]]
"""Carries out a valid command and returns the reply's result keys (``ok`` is added);
raises :class:`CommandError` for a refusal. Called from the publisher's command
thread, one command at a time."""


NAME_SHOWN = 64
"""Characters of a command name (topic suffix) shown in replies and log lines."""


def short_name(name: str) -> str:
    """``name`` cut to :data:`NAME_SHOWN` characters, ``…`` marking a cut (a topic suffix
    can be 64 KB long)."""
    return name if len(name) <= NAME_SHOWN else name[:NAME_SHOWN] + "…"


def _request_id(data: Any) -> str | None:
    rid = data.get("request_id") if isinstance(data, dict) else None
    return rid[:128] if isinstance(rid, str) else None


def _loads(payload: bytes) -> Any:
    """``json.loads`` of UTF-8 ``payload``. Raises whatever the parser raises: besides
    ``UnicodeDecodeError``/``ValueError`` a ``RecursionError`` for nesting deeper than the
    interpreter's recursion limit (``b"[" * 4000`` fits in 4 KB)."""
    return json.loads(payload.decode("utf-8"))


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested too deeply"
    return str(exc)[:200]


def _first_error(exc: ValidationError) -> str:
    e = exc.errors()[0]
    loc = ".".join(str(x) for x in e["loc"]) or "(payload)"
    if e["type"] == "extra_forbidden":
        return f"unknown key {loc!r}"
    if e["type"] == "missing":
        return f"{loc!r} is required"
    return f"{loc}: {e['msg']}"


def parse_command(name: str, payload: bytes, *, max_bytes: int = 4096) -> Command:
    """Validate the command published on ``.../cmd/{name}``.

    Raises:
        CommandError: with the first failing check's code (module docstring table).
    """
    if len(payload) > max_bytes:
        raise CommandError("too_large", f"payload of {len(payload)} bytes > {max_bytes}")
    try:
        data = _loads(payload)
    except Exception as exc:  # any parse failure is the sender's error
        raise CommandError("bad_json", f"payload is not UTF-8 JSON: {_why(exc)}") from None
    if not isinstance(data, dict):
        raise CommandError("bad_json", f"payload must be a JSON object, not {type(data).__name__}")
    schema = data.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        raise CommandError(
            "bad_schema", f"'schema' must be {SCHEMA_VERSION}, got {json.dumps(schema)}"
        )
    model = COMMANDS.get(name)
    if model is None:
        raise CommandError(
            "unknown_command",
            f"unknown command topic cmd/{short_name(name)} (known: {', '.join(sorted(COMMANDS))})",
        )
    cmd = data.get("cmd")
    if cmd != name:
        if isinstance(cmd, str) and cmd not in COMMANDS:
            raise CommandError("unknown_command", f"unknown command {short_name(cmd)!r}")
        raise CommandError("invalid", f"'cmd' must be {name!r} on topic cmd/{name}")
    try:
        return AckCommand.model_validate(data)
    except ValidationError as exc:
        raise CommandError("invalid", _first_error(exc)) from None


class TokenBucket:
    """At most ``rate`` takes per second on average, ``burst`` at once.

    Args:
        rate: tokens added per second of ``clock`` (> 0).
        burst: bucket size (>= 1); the bucket starts full.
        clock: seconds, monotonic.

    Thread-safe.
    """

    def __init__(
        self, *, rate: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not rate > 0 or burst < 1:
            raise ValueError(f"need rate > 0 and burst >= 1, got {rate!r}, {burst!r}")
        self.rate, self.burst = float(rate), burst
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._t = clock()

    def take(self) -> bool:
        """Take one token if there is one; returns whether it was taken."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._t) * self.rate)
            self._t = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


class CommandDispatcher:
    """Turns ``(name, payload)`` into a reply payload (see the module docstring).

    Args:
        gateway: gateway id written into replies.
        config: limits, token and ``by`` allow-list.
        handlers: command name -> handler of its valid commands.

    Thread-safety: :meth:`dispatch` may be called from any thread; handlers are called
    from the caller's thread.
    """

    def __init__(
        self,
        *,
        gateway: str,
        config: CommandsConfig,
        handlers: Mapping[str, CommandHandler],
    ) -> None:
        unknown = set(handlers) - set(COMMANDS)
        if unknown:
            raise ValueError(f"handlers for unknown commands {sorted(unknown)}")
        self.gateway = gateway
        self.config = config
        self._handlers = dict(handlers)
        self._allowed = frozenset(config.allowed_by)
        # One line per refusal would let anyone who may publish commands flood the log.
        self._refusals = RateLimitedLog(log, interval_s=60.0, level=logging.INFO)

    def error_reply(
        self, name: str | None, payload: bytes, code: ErrorCode, message: str
    ) -> dict[str, Any]:
        """An error reply for ``payload`` (its ``request_id`` echoed when readable)."""
        rid: str | None = None
        if len(payload) <= self.config.max_bytes:
            try:
                rid = _request_id(_loads(payload))
            except Exception:  # unreadable: answered without a request id
                rid = None
        cmd = name if name in COMMANDS else None
        return reply_payload(
            gateway=self.gateway, cmd=cmd, request_id=rid, t_ms=now_ms(), error=(code, message)
        )

    def refuse_too_large(self, name: str, size: int) -> dict[str, Any]:
        """The ``too_large`` reply for a ``size``-byte payload the caller did not keep."""
        exc = CommandError("too_large", f"payload of {size} bytes > {self.config.max_bytes}")
        self._refused(name, exc)
        return self.error_reply(name, b"", exc.reason, str(exc))

    def flush_logs(self, *, force: bool = False) -> None:
        """Log the refusals not yet in a line (see :class:`~edge.lograte.RateLimitedLog`);
        call it now and then, and with ``force=True`` at the end."""
        self._refusals.flush(force=force)

    def _refused(self, name: str, exc: CommandError) -> None:
        self._refusals.hit(
            "mqtt command cmd/%s refused: %s (%s)", short_name(name), exc, exc.reason
        )

    def dispatch(self, name: str, payload: bytes) -> dict[str, Any]:
        """Validate, authorise and carry out one command; returns the reply payload."""
        try:
            command = parse_command(name, payload, max_bytes=self.config.max_bytes)
            self._authorise(command)
            handler = self._handlers.get(name)
            if handler is None:
                raise CommandError("unknown_command", f"command {name!r} is not enabled here")
            result = handler(command)
        except CommandError as exc:
            self._refused(name, exc)
            return self.error_reply(name, payload, exc.reason, str(exc))
        except Exception:  # a bug in a handler: answer, log with the traceback, go on
            log.exception("mqtt command cmd/%s failed", short_name(name))
            return self.error_reply(name, payload, "internal", "internal error (see the log)")
        return reply_payload(
            gateway=self.gateway,
            cmd=name,
            request_id=command.request_id,
            t_ms=now_ms(),
            result=result,
        )

    def _authorise(self, command: Command) -> None:
        token = self.config.token
        if token is not None:
            given = (command.token or "").encode()
            if not hmac.compare_digest(given, token.get_secret_value().encode()):
                raise CommandError("unauthorized", "missing or wrong token")
        if self._allowed and command.by not in self._allowed:
            raise CommandError("unauthorized", f"{command.by!r} may not send commands")
