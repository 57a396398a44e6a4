"""The MQTT publisher: events and alerts through the durable outbox, state and results direct.

Threads (started by :meth:`Publisher.start`, joined by :meth:`Publisher.close`):

- *link*: opens the connection (TCP, TLS, CONNECT with a persistent session: MQTT 5
  ``clean_start=False`` + session expiry, MQTT 3.1.1 ``clean_session=False``), runs paho's
  network thread for it, and after a refusal or a lost connection waits per
  :class:`~edge.mqtt.reconnect.Backoff` before building a fresh client. Each failure is
  logged once with its reason and counted in ``mqtt_connect_failures_total{reason=...}``;
  bad credentials or a failed TLS verification wait ``backoff_auth_s`` (5 min default).
- *pump*: hands outbox rows to paho in id order and deletes them in batches when their
  PUBACK/PUBCOMP arrives. Paho keeps at most ``max_inflight`` unacknowledged on the wire
  (lowered for the next connection if an MQTT 5 broker announces a smaller Receive
  Maximum) and queues up to ``max(256, 8 * max_inflight)`` rows behind them, so the next
  message goes out the moment an acknowledgement arrives (no stop-and-go, which Nagle
  on the broker side would turn into 40 ms stalls). A new connection starts again from
  the oldest row, so whatever was unacknowledged when a connection or the process died
  goes out again; paho's queue dies with its client and is never the only copy.

Messages the broker will not take do not block the rows behind them. An outbox row whose
PUBLISH packet (fixed header, topic, packet id, MQTT 5 properties, payload:
:func:`publish_packet_size`) is larger than ``max_message_bytes``, or than the Maximum
Packet Size an MQTT 5 broker announces in CONNACK, is never sent. A row the connection
dies on -- the first row sent on a connection, still unacknowledged when the connection
ends within 2 s of sending it, 5 connections in a row (a broker that disconnects on
what it refuses without announcing a limit: mosquitto's ``max_packet_size`` with MQTT
3.1.1, its ``message_size_limit`` with MQTT 5) -- is set aside too; each further row set
aside that way before any row is acknowledged needs twice as many such connections, so
a connection that dies for other reasons cannot empty the outbox quickly. A set-aside
row is deleted from the outbox, logged as an error with its row id, kind, key (event or
alert id), topic and size, counted in ``mqtt_messages_set_aside_total{reason=
"too_large"|"disconnected_on_send"}`` and reported as lost in the ``mqtt_outbox_loss``
alert (``too_large``/``disconnected_on_send`` counts). Status, state, discovery, result
and reply messages over the limit are not sent either (logged once per topic, counted in
``mqtt_messages_not_sent_total{reason="too_large"}``).

Paho is used with ``CallbackAPIVersion.VERSION2``; each connection gets a new client, so
the outbox is the only place unacknowledged messages live. Callbacks run in paho's
thread and only touch a small lock that is never held while calling into paho.

Retained messages: ``{prefix}/{gw}/status`` (``online`` JSON at every connect, the
last will ``offline``/``connection_lost`` when the connection dies, ``offline``/``shutdown``
on :meth:`Publisher.close`), the per camera/task state, and Home Assistant discovery.

Commands (when a :class:`~edge.mqtt.commands.CommandDispatcher` is given): every
connection subscribes to ``{prefix}/{gw}/cmd/#`` at QoS 1 (MQTT 5: no-local, so the
gateway does not hear its own replies). Paho's network thread only queues each command
(bounded by ``commands.queue``; a command that does not fit is dropped without a
reply and counted in ``mqtt_commands_busy_total``); the *commands* thread dispatches
them one at a time and publishes each reply on ``{prefix}/{gw}/cmd/reply`` (not
retained, sent directly: a reply that finds no connection is dropped and counted).
Replies share the connection, its in-flight window and paho's queue with the events, so
only successful replies go at QoS 1; error replies go at QoS 0 and at most
``commands.reply_rate`` per second (bursts of ``commands.reply_burst``), the rest are
dropped and counted in ``mqtt_command_replies_rate_limited_total``: a flood of bad
commands (10,000 at QoS 1 delayed the events by 10 s before) costs the events little.
A command delivered with the retain flag (a retained message replayed at subscribe
time) is ignored and counted, so a command someone published retained is not carried
out again at every connect; anything on ``cmd/reply`` is ignored too.

Nothing is dropped silently: when the outbox is full the oldest ``update`` events go
first (``start``/``end``/alerts never), a batch that still does not fit raises
:class:`~edge.mqtt.outbox.OutboxFullError`; both are counted, logged and raised as an
alert (``mqtt_outbox_loss``) — to ``on_alert`` and to the alerts topic — at most once per
``alert_interval_s`` with the counts accumulated since the previous one (``since``).
Alerts may use the outbox's alert headroom (a bounded amount beyond ``max_rows`` /
``max_bytes``, :mod:`edge.mqtt.outbox`), so the loss alert is stored even when the outbox
is full of start/end rows. If it still cannot be stored (the headroom is used up, the
database failed), its counts are carried over with their original ``since`` and the
next attempt, ``alert_interval_s`` later, reports the full total
(``mqtt_loss_alerts_deferred_total`` counts the attempts carried over): every loss
reaches the alerts topic in the first loss alert stored after it, unless the process
ends before any can be stored (then the totals are only in the log).

A damaged outbox file (power cut on an SD card) does not stop the publisher from being
built: the outbox is opened with ``recover_damaged=True``, which keeps the messages it can
still read, moves the damaged file aside as ``<name>.corrupt-<UTC time>`` and logs an
error (:mod:`edge.mqtt.outbox`). The publisher then counts it
(``mqtt_outbox_corrupt_total`` 1, ``mqtt_outbox_salvaged_total`` the messages kept) and
raises the alert ``mqtt_outbox_corrupt`` (severity ``critical``; ``moved_to``,
``salvaged``, ``lost`` -- ``null`` when unknown) to ``on_alert`` at once and to the alerts
topic through the new outbox, so it goes out at the first connection. Other open
failures (permissions, a folder in the way, another process holding the file) still
raise :class:`~edge.mqtt.outbox.OutboxError` from the constructor.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge import __version__
from edge.errors import ConfigError, EdgeError
from edge.lograte import RateLimitedLog
from edge.mqtt.commands import CommandDispatcher, TokenBucket, short_name
from edge.mqtt.config import MqttConfig
from edge.mqtt.discovery import discovery_collisions, discovery_messages
from edge.mqtt.ids import new_event_id
from edge.mqtt.outbox import (
    Message,
    Outbox,
    OutboxError,
    OutboxFullError,
    OutboxRecovery,
    StoredMessage,
)
from edge.mqtt.reconnect import (
    Backoff,
    Failure,
    classify_connack,
    classify_exception,
    reason_slug,
)
from edge.mqtt.schema import (
    CameraTask,
    Event,
    alert_payload,
    dumps,
    iso_utc,
    now_ms,
    result_payload,
    state_payload,
    status_payload,
    will_payload,
)
from edge.mqtt.topics import Topics, validate_gateway_id

__all__ = [
    "AlertHook",
    "Publisher",
    "PublisherClosedError",
    "build_ssl_context",
    "publish_packet_size",
]

log = logging.getLogger("edge.mqtt")

AlertHook = Callable[[dict[str, Any]], None]
"""Receives the publisher's own alerts (outbox full, broker refusing us) as JSON-ready dicts
with ``kind``, ``key``, ``state`` (``active``/``resolved``), ``severity`` and ``message``.
Called from the thread that noticed; must be quick and must not call back into the
publisher's publish methods."""

_STABLE_S = 10.0  # a connection that lasted this long resets the backoff
_DRAIN_S = 2.0  # close() waits this long for in-flight acknowledgements
_PUMP_TICK_S = 0.25  # longest pump sleep (bounds ack-delete latency when idle)
_TICK_S = 1.0  # loss-alert flush and checkpoint check period
_CMD_PACKET_SLACK = 64 * 1024  # CONNECT Maximum Packet Size = commands.max_bytes + this
_HANDOFF_MIN = 256  # rows handed to paho ahead of acks (paho queues beyond max_inflight)
_POISON_WINDOW_S = 2.0  # a connection that dies this soon after sending its first row ...
_POISON_TRIES = 5  # ... this many times in a row with that row unacknowledged: set it aside
# Disconnect reasons that say nothing about the message just sent.
_BENIGN_DOWN = frozenset(
    {
        "closing",
        "normal_disconnection",
        "server_shutting_down",
        "session_taken_over",
        "administrative_action",
        "server_busy",
        "use_another_server",
        "server_moved",
        "connection_rate_exceeded",
        "keep_alive_timeout",
    }
)


def _handoff(inflight: int) -> int:
    return max(_HANDOFF_MIN, 8 * inflight)


def publish_packet_size(topic: str, payload_len: int, *, qos: int, v5: bool) -> int:
    """Bytes of the PUBLISH packet paho sends for ``topic`` (str, UTF-8 on the wire) and a
    ``payload_len``-byte payload: fixed header (1 byte + 1..4 bytes remaining length),
    topic (2 + its UTF-8 bytes), packet id (2, QoS 1/2), MQTT 5 properties (1: none),
    payload. This is what a broker compares with its maximum packet size."""
    remaining = 2 + len(topic.encode()) + payload_len + (2 if qos > 0 else 0) + (1 if v5 else 0)
    length_bytes = 1
    while remaining >= 128**length_bytes and length_bytes < 4:
        length_bytes += 1
    return 1 + length_bytes + remaining


class PublisherClosedError(EdgeError):
    """A publish method was called after :meth:`Publisher.close`."""


def build_ssl_context(config: MqttConfig) -> ssl.SSLContext | None:
    """The client TLS context for ``config.tls`` (``None`` without TLS).

    Raises:
        ConfigError: a CA/certificate/key file is missing or not valid PEM.
    """
    tls = config.tls
    if tls is None:
        return None
    step = f"mqtt.tls.ca_file {str(tls.ca_file)!r}" if tls.ca_file else "the system CAs"
    try:
        ctx = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if tls.ca_file is None else str(tls.ca_file)
        )
        if tls.ca_file is not None and tls.use_system_ca:
            step = "the system CAs"
            ctx.load_default_certs(ssl.Purpose.SERVER_AUTH)
        if tls.cert_file is not None and tls.key_file is not None:
            for key, path in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
                step = f"mqtt.tls.{key} {str(path)!r}"
                with open(path, "rb"):  # names which of the two is missing/unreadable
                    pass
            step = f"mqtt.tls.cert_file {str(tls.cert_file)!r} with key_file {str(tls.key_file)!r}"
            ctx.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    except (OSError, ssl.SSLError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
        raise ConfigError(f"cannot load {step}: {why}") from exc
    if tls.insecure:
        ctx.check_hostname = False
    return ctx


@dataclass(eq=False)
class _Link:
    """State of one connection attempt (one paho client)."""

    gen: int
    connack: threading.Event = field(default_factory=threading.Event)
    down: threading.Event = field(default_factory=threading.Event)
    failure: Failure | None = None
    closing: bool = False


class Publisher:
    """Publishes a gateway's events, alerts, state and results to one MQTT broker.

    Args:
        config: broker, TLS, credentials, topics, outbox and backoff settings.
        outbox_path: SQLite file of the outbox (one process per file).
        gateway_id: ``[A-Za-z0-9][A-Za-z0-9_-]{0,63}``; topic level, default client id.
        version: software version announced in the online status.
        models: model names announced in the online status.
        cameras: camera/task/zones announced in the status and to Home Assistant.
        on_alert: hook for the publisher's own alerts (see :data:`AlertHook`).
        alert_interval_s: at most one outbox-loss alert per this many seconds.
        commands: answers commands on ``{prefix}/{gw}/cmd/...`` (``None``: the
            gateway does not subscribe to commands).

    Thread-safety: every public method may be called from any thread.
    """

    def __init__(
        self,
        *,
        config: MqttConfig,
        outbox_path: Path,
        gateway_id: str,
        version: str = __version__,
        models: Sequence[str] = (),
        cameras: Sequence[CameraTask] = (),
        on_alert: AlertHook | None = None,
        alert_interval_s: float = 60.0,
        commands: CommandDispatcher | None = None,
    ) -> None:
        self.config = config
        self.gateway_id = validate_gateway_id(gateway_id)
        self.topics = Topics(config.prefix, gateway_id)
        self.client_id = config.client_id or gateway_id
        self._version = version
        self._models: tuple[str, ...] = tuple(models)
        self._check_discovery(cameras)
        self._cameras: tuple[CameraTask, ...] = tuple(cameras)
        self._on_alert = on_alert
        self._alert_interval_s = alert_interval_s
        self._ssl_context: ssl.SSLContext | None = None
        self._outbox = Outbox(
            path=outbox_path,
            max_rows=config.outbox.max_rows,
            max_bytes=config.outbox.max_bytes,
            synchronous=config.outbox.synchronous,
            recover_damaged=True,
        )
        # Shared state, guarded by _lock. Never held while calling into paho.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._client: mqtt.Client | None = None  # the connected client, if any
        self._gen = 0
        self._link_seq = 0  # link thread only
        self._window = _handoff(config.max_inflight)  # rows the pump keeps handed to paho
        self._paho_inflight = config.max_inflight  # MQTT in-flight limit for new clients
        self._max_packet = config.max_message_bytes  # largest PUBLISH on this connection
        self._broker_max_packet: int | None = None  # the broker's last announced limit
        self._last_down: tuple[int, str] = (0, "")  # (gen, reason) of the last lost link
        self._too_large_topics: set[str] = set()  # direct topics already logged
        self._acks: list[tuple[int, int, int]] = []  # (gen, mid, reason code value)
        self._pump_waiting = False
        self._wake_acks = 1
        self._inflight_n = 0
        self._draining = False
        # Retained state per topic; _state_lock orders state publishes against reconnects.
        self._state_lock = threading.Lock()
        self._states: dict[str, bytes] = {}
        # Counters.
        self._metrics_lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._last_error: str | None = None
        # Loss alerts, coalesced.
        self._alert_lock = threading.Lock()
        self._loss: Counter[str] = Counter()
        self._loss_since_ms: int | None = None
        self._last_loss_alert = -float("inf")
        self._hard_alert_reason: str | None = None
        self._fail_reason: str | None = None  # link thread only
        self._fail_streak = 0
        # Lifecycle.
        self._life_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._stopping = threading.Event()
        self._wake_link = threading.Event()
        self._link_done = threading.Event()
        self._threads: list[threading.Thread] = []
        # Commands: queued by paho's thread, dispatched by the commands thread.
        self._commands = commands
        # (name, payload, size); payload b"" when size > commands.max_bytes
        self._cmd_queue: queue.Queue[tuple[str, bytes, int]] = queue.Queue(
            maxsize=config.commands.queue
        )
        self._cmd_fault_log = RateLimitedLog(log, interval_s=60.0, level=logging.ERROR)
        self._cmd_busy_log = RateLimitedLog(log, interval_s=60.0)
        self._reply_bucket = TokenBucket(
            rate=config.commands.reply_rate, burst=config.commands.reply_burst
        )
        self._cmd_reply_log = RateLimitedLog(log, interval_s=60.0)
        if self._outbox.recovery is not None:
            self._report_recovery(self._outbox.recovery)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Validate TLS files and start the link and pump threads (idempotent).

        Raises:
            ConfigError: TLS files cannot be loaded.
            PublisherClosedError: after :meth:`close`.
        """
        with self._life_lock:
            if self._closed:
                raise PublisherClosedError("publisher is closed")
            if self._started:
                return
            self._ssl_context = build_ssl_context(self.config)
            self._started = True
            targets = [("link", self._run_link), ("pump", self._run_pump)]
            if self._commands is not None:
                targets.append(("cmd", self._run_commands))
            for name, target in targets:
                t = threading.Thread(
                    target=target, name=f"mqtt-{name}-{self.gateway_id}", daemon=True
                )
                self._threads.append(t)
                t.start()

    def close(self, timeout: float = 10.0) -> None:
        """Stop sending, wait up to 2 s for in-flight acknowledgements, publish the retained
        ``offline`` status, disconnect and close the outbox (idempotent). Messages not yet
        acknowledged stay in the outbox for the next start."""
        if not self._closed:
            self._maybe_emit_loss_alert(force=True)  # stored for the next run if not sent
        with self._life_lock:
            if self._closed:
                return
            self._closed = True
            started = self._started
        if started:
            with self._cond:
                self._draining = True
                self._cond.notify_all()
            self._stopping.set()
            self._wake_link.set()
            deadline = time.monotonic() + timeout
            for t in self._threads:
                t.join(max(0.1, deadline - time.monotonic()))
                if t.is_alive():
                    log.error("mqtt: thread %s did not stop within %.1f s", t.name, timeout)
        self._outbox.close()

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public publishing API ----------------------------------------------------------------

    def publish_event(self, event: Event) -> str:
        """Commit ``event`` to the outbox and return its ``event_id``; it is sent (QoS
        ``config.qos``, at least once) as soon as a connection allows.

        Raises:
            OutboxFullError: the outbox is full of start/end/alert messages (counted,
                alerted); old ``update`` events are dropped to make room before that.
            OutboxError: the database failed.
            PublisherClosedError: after :meth:`close`.
        """
        return self.publish_events([event])[0]

    def publish_events(self, events: Sequence[Event]) -> list[str]:
        """Like :meth:`publish_event` for a batch, committed in one transaction (all or
        none stored). Returns the event ids in order."""
        if not events:
            return []
        topic, gw, qos = self.topics.events, self.gateway_id, self.config.qos
        messages = [
            Message(
                key=e.event_id, kind=e.type, topic=topic, payload=dumps(e.to_payload(gw)), qos=qos
            )
            for e in events
        ]
        self._store(messages)
        self._inc("mqtt_events_accepted_total", len(events))
        return [e.event_id for e in events]

    def publish_alert(self, alert: Mapping[str, Any]) -> None:
        """Commit an alert (a JSON-ready dict, e.g. from the API's alert engine) to the
        outbox for ``{prefix}/{gw}/alerts``; alerts are never dropped to make room.

        Raises:
            OutboxFullError, OutboxError, PublisherClosedError: as :meth:`publish_event`.
        """
        self._store([self._alert_message(alert)])
        self._inc("mqtt_alerts_accepted_total")

    def publish_state(
        self,
        camera: str,
        task: str,
        counts: Mapping[str, int],
        *,
        lines: Mapping[str, Mapping[str, int]] | None = None,
    ) -> None:
        """Set the retained state of ``camera``/``task``: objects counted per zone now, and
        crossings per counting line and direction (``{"in": a, "out": b}``) so far.

        Sent at once when connected (QoS 1, retained) and again after every reconnect;
        only the latest state per camera/task is kept, so nothing queues up.
        """
        self._check_open()
        topic = self.topics.state(camera, task)
        payload = dumps(
            state_payload(
                gateway=self.gateway_id,
                camera=camera,
                task=task,
                counts=counts,
                t_ms=now_ms(),
                lines=lines,
            )
        )
        with self._state_lock:
            self._states[topic] = payload
            client = self._client
            if client is not None and self._fits(topic, payload, qos=1):
                client.publish(topic, payload, qos=1, retain=True)
                self._inc("mqtt_state_published_total")

    def publish_result(
        self, result: Mapping[str, Any], *, camera: str | None = None, task: str | None = None
    ) -> bool:
        """Send one API result to ``{prefix}/{gw}/results`` at QoS 0 (not through the
        outbox). Returns False, counting ``mqtt_results_dropped_total``, when not connected;
        returns False without counting when ``config.results`` is off."""
        self._check_open()
        if not self.config.results:
            return False
        client = self._client
        if client is not None:
            payload = dumps(
                result_payload(
                    gateway=self.gateway_id, result=result, t_ms=now_ms(), camera=camera, task=task
                )
            )
            if not self._fits(self.topics.results, payload, qos=0):
                return False
            info = client.publish(self.topics.results, payload, qos=0)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._inc("mqtt_results_published_total")
                return True
        self._inc("mqtt_results_dropped_total")
        return False

    def set_inventory(
        self, *, models: Sequence[str] | None = None, cameras: Sequence[CameraTask] | None = None
    ) -> None:
        """Change what the online status (and Home Assistant discovery) announces; sent at
        once when connected, else at the next connect.

        Raises:
            ConfigError: with ``ha_discovery`` on, two of ``cameras``' zones or lines would
                share a Home Assistant id (:func:`~edge.mqtt.discovery.discovery_collisions`).
        """
        self._check_open()
        if cameras is not None:
            self._check_discovery(cameras)
        if models is not None:
            self._models = tuple(models)
        if cameras is not None:
            self._cameras = tuple(cameras)
        client = self._client
        if client is not None:
            self._announce(client, self._max_packet)

    def _check_discovery(self, cameras: Sequence[CameraTask]) -> None:
        if not self.config.ha_discovery:
            return
        clash = discovery_collisions(
            topics=self.topics, ha_prefix=self.config.ha_prefix, cameras=cameras
        )
        if clash:
            raise ConfigError("; ".join(clash[:5]))

    def flush(self, timeout: float) -> bool:
        """Wait until the outbox is empty (every message acknowledged); False on timeout."""
        deadline = time.monotonic() + timeout
        while self._outbox.rows > 0:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        return True

    @property
    def connected(self) -> bool:
        """True while a connection is up and CONNACKed."""
        return self._client is not None

    @property
    def last_error(self) -> str | None:
        """Message of the latest connection failure (None if the last attempt worked)."""
        return self._last_error

    @property
    def outbox(self) -> Outbox:
        """The outbox (read its ``rows``/``bytes``/``stats()``; do not write to it)."""
        return self._outbox

    def metrics(self) -> dict[str, float]:
        """Counters and gauges as Prometheus series names (labels inside the key), e.g.
        ``'mqtt_connect_failures_total{reason="bad_credentials"}': 3.0``."""
        with self._metrics_lock:
            out = {k: float(v) for k, v in self._counts.items()}
        st = self._outbox.stats()
        out["mqtt_connected"] = 1.0 if self.connected else 0.0
        out["mqtt_inflight"] = float(self._inflight_n)
        out["mqtt_outbox_rows"] = float(st["rows"])
        out["mqtt_outbox_bytes"] = float(st["bytes"])
        out["mqtt_outbox_max_rows"] = float(self._outbox.max_rows)
        out["mqtt_outbox_max_bytes"] = float(self._outbox.max_bytes)
        out["mqtt_outbox_commits_total"] = float(st["commits"])
        return out

    # -- storing and loss accounting -----------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PublisherClosedError("publisher is closed")

    def _alert_message(self, alert: Mapping[str, Any]) -> Message:
        alert_id = new_event_id()
        payload = alert_payload(
            gateway=self.gateway_id, alert=alert, alert_id=alert_id, t_ms=now_ms()
        )
        return Message(
            key=alert_id,
            kind="alert",
            topic=self.topics.alerts,
            payload=dumps(payload),
            qos=self.config.qos,
        )

    def _store(
        self, messages: Sequence[Message], *, internal: bool = False, carried: bool = False
    ) -> None:
        """Append to the outbox, counting drops and refusals as losses (``internal``: do
        not raise the loss alert from here). ``carried``: a refusal is not a loss (the
        caller keeps the content for a later message) and is not counted."""
        self._check_open()
        try:
            result = self._outbox.append(messages)
        except OutboxFullError:
            if carried:
                raise
            kinds = Counter(m.kind for m in messages)
            for kind, n in kinds.items():
                self._inc(f'mqtt_outbox_rejected_total{{kind="{kind}"}}', n)
            self._note_loss("refused", len(messages), internal=internal)
            raise
        except OutboxError:
            self._inc("mqtt_outbox_errors_total")
            raise
        if result.dropped:
            self._inc('mqtt_outbox_dropped_total{kind="update"}', result.dropped)
            self._note_loss("dropped_updates", result.dropped, internal=internal)
        self._wake_pump()

    def _wake_pump(self) -> None:
        with self._cond:
            if self._pump_waiting:
                self._cond.notify()

    def _note_loss(self, what: str, n: int, *, internal: bool = False) -> None:
        with self._alert_lock:
            if self._loss_since_ms is None:
                self._loss_since_ms = now_ms()
            self._loss[what] += n
        if not internal:
            self._maybe_emit_loss_alert()

    def _maybe_emit_loss_alert(self, *, force: bool = False) -> None:
        with self._alert_lock:
            if not self._loss:
                return
            now = time.monotonic()
            if not force and now - self._last_loss_alert < self._alert_interval_s:
                return
            self._last_loss_alert = now
            loss, self._loss = self._loss, Counter()
            since, self._loss_since_ms = self._loss_since_ms, None
        st = self._outbox.stats()
        parts = [f"{n} {what.replace('_', ' ')}" for what, n in sorted(loss.items())]
        alert: dict[str, Any] = {
            "kind": "mqtt_outbox_loss",
            "key": self.gateway_id,
            "state": "active",
            "severity": "warning",
            "message": (
                f"MQTT outbox lost messages since {iso_utc(since or now_ms())}: {', '.join(parts)}"
                f" (outbox {st['rows']}/{self._outbox.max_rows} rows,"
                f" {st['bytes']}/{self._outbox.max_bytes} bytes)"
            ),
            "since": iso_utc(since or now_ms()),
            **{k: int(v) for k, v in loss.items()},
            "outbox_rows": st["rows"],
            "outbox_bytes": st["bytes"],
        }
        log.warning("mqtt: %s", alert["message"])
        if not self._raise_alert(alert, publish=True, deferrable=True):
            with self._alert_lock:  # carried over: the next alert reports the full total
                self._loss.update(loss)
                if self._loss_since_ms is None or (
                    since is not None and since < self._loss_since_ms
                ):
                    self._loss_since_ms = since

    def _report_recovery(self, rec: OutboxRecovery) -> None:
        """The outbox replaced a damaged file at open: count it and raise the alert (the
        outbox has logged the error with the details)."""
        self._inc("mqtt_outbox_corrupt_total")
        self._inc("mqtt_outbox_salvaged_total", rec.salvaged)
        lost = "an unknown number" if rec.lost is None else str(rec.lost)
        alert: dict[str, Any] = {
            "kind": "mqtt_outbox_corrupt",
            "key": self.gateway_id,
            "state": "active",
            "severity": "critical",
            "message": (
                f"MQTT outbox file was damaged ({rec.reason}) and moved aside to "
                f"{str(rec.moved_to)!r}: {rec.salvaged} undelivered message(s) kept, "
                f"{lost} lost"
            ),
            "moved_to": str(rec.moved_to),
            "salvaged": rec.salvaged,
            "lost": rec.lost,
        }
        self._raise_alert(alert, publish=True)

    def _raise_alert(
        self, alert: dict[str, Any], *, publish: bool, deferrable: bool = False
    ) -> bool:
        """Hand ``alert`` to ``on_alert`` and, with ``publish``, store it in the outbox for
        the alerts topic. Returns whether it was stored. An alert that cannot be stored
        is counted in ``mqtt_alerts_lost_total`` (and, refused as full, as a loss in the
        next loss alert), or with ``deferrable`` (the caller carries its content over
        into a later alert) only in ``mqtt_loss_alerts_deferred_total``."""
        self._inc("mqtt_alerts_raised_total")
        if self._on_alert is not None:
            try:
                self._on_alert(dict(alert))
            except Exception:  # a broken hook must not break publishing; logged with context
                self._inc("mqtt_alert_hook_errors_total")
                log.exception("mqtt: on_alert hook failed for %s", alert.get("kind"))
        if not publish or self._closed:
            return False
        try:
            self._store([self._alert_message(alert)], internal=True, carried=deferrable)
        except EdgeError as exc:  # outbox full/failed, or closed meanwhile
            if deferrable:
                self._inc("mqtt_loss_alerts_deferred_total")
                log.warning(
                    "mqtt: cannot store alert %s now (%s); its counts go into the next one",
                    alert.get("kind"),
                    exc,
                )
            else:
                self._inc("mqtt_alerts_lost_total")
                log.error("mqtt: cannot store alert %s: %s", alert.get("kind"), exc)
            return False
        return True

    def _inc(self, name: str, n: int = 1) -> None:
        with self._metrics_lock:
            self._counts[name] += n

    # -- link thread -------------------------------------------------------------------------

    def _run_link(self) -> None:
        cfg = self.config
        backoff = Backoff(
            min_s=cfg.backoff_min_s, max_s=cfg.backoff_max_s, hard_s=cfg.backoff_auth_s
        )
        try:
            while not self._stopping.is_set():
                failure, up_s = self._connect_once()
                if self._stopping.is_set():
                    break
                if up_s >= _STABLE_S:
                    backoff.reset()
                delay = backoff.next_delay(failure.hard)
                self._record_failure(failure, delay, connected=up_s > 0)
                self._wake_link.clear()
                if self._stopping.wait(delay):
                    break
        except Exception:  # the link thread must not die silently
            log.exception("mqtt: link thread crashed")
            raise
        finally:
            self._link_done.set()
            with self._cond:
                self._cond.notify_all()

    def _new_client(self, link: _Link) -> mqtt.Client:
        cfg = self.config
        v5 = cfg.protocol == "5"
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else False,
            userdata=link,
            reconnect_on_failure=False,
        )
        client.connect_timeout = cfg.connect_timeout_s
        if cfg.username is not None:
            pw = cfg.password.get_secret_value() if cfg.password is not None else None
            client.username_pw_set(cfg.username, pw)
        if self._ssl_context is not None:
            client.tls_set_context(self._ssl_context)
            if cfg.tls is not None and cfg.tls.insecure:
                client.tls_insecure_set(True)
        will = will_payload(gateway=self.gateway_id, reason="connection_lost")
        client.will_set(self.topics.status, dumps(will), qos=1, retain=True)
        client.max_inflight_messages_set(self._paho_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        return client

    def _connect_once(self) -> tuple[Failure, float]:
        """One connection from CONNECT to its end; returns why it ended and how long it
        was up (0 if it never was)."""
        cfg = self.config
        self._link_seq += 1
        link = _Link(gen=self._link_seq)
        client = self._new_client(link)
        self._inc("mqtt_connect_attempts_total")
        try:
            if cfg.protocol == "5":
                props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                props.SessionExpiryInterval = cfg.session_expiry_s
                if self._commands is not None:
                    # The broker then never delivers a command too large to accept (it
                    # drops it) instead of us reading it in full. We subscribe to nothing
                    # but cmd/#, so this caps nothing else we receive.
                    props.MaximumPacketSize = cfg.commands.max_bytes + _CMD_PACKET_SLACK
                client.connect(
                    cfg.host, cfg.port, cfg.keepalive_s, clean_start=False, properties=props
                )
            else:
                client.connect(cfg.host, cfg.port, cfg.keepalive_s)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            return classify_exception(exc, host=cfg.host, port=cfg.port), 0.0
        client.loop_start()
        if not link.connack.wait(cfg.connect_timeout_s):
            link.failure = Failure(
                "connack_timeout", f"no CONNACK within {cfg.connect_timeout_s} s"
            )
            link.closing = True
            client.disconnect()
            client.loop_stop()
            return link.failure, 0.0
        if link.failure is not None:  # refused in CONNACK
            client.loop_stop()
            return link.failure, 0.0
        t_up = time.monotonic()
        while not link.down.is_set() and not self._stopping.is_set():
            self._wake_link.wait(1.0)
            self._wake_link.clear()
        if not link.down.is_set():  # close(): drain, say goodbye, disconnect
            self._goodbye(client, link)
        client.loop_stop()
        with self._cond:
            if self._client is client:
                self._client = None
            self._cond.notify_all()
        up_s = time.monotonic() - t_up
        return link.failure or Failure("connection_lost", "connection lost"), up_s

    def _goodbye(self, client: mqtt.Client, link: _Link) -> None:
        deadline = time.monotonic() + _DRAIN_S
        with self._cond:
            while self._inflight_n > 0 and not link.down.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(min(left, 0.05))
        link.closing = True
        payload = will_payload(gateway=self.gateway_id, reason="shutdown", t_ms=now_ms())
        info = client.publish(self.topics.status, dumps(payload), qos=1, retain=True)
        try:
            info.wait_for_publish(1.0)
        except (RuntimeError, ValueError) as exc:
            log.warning("mqtt: offline status not confirmed: %s", exc)
        client.disconnect()

    def _record_failure(self, failure: Failure, delay: float, *, connected: bool) -> None:
        if connected:
            self._inc(f'mqtt_disconnects_total{{reason="{failure.reason}"}}')
        else:
            self._inc(f'mqtt_connect_failures_total{{reason="{failure.reason}"}}')
        self._last_error = failure.message
        where = f"{self.config.host}:{self.config.port}"
        # One line per failure, but a long outage of the same kind logs every 10th only.
        self._fail_streak = self._fail_streak + 1 if failure.reason == self._fail_reason else 1
        self._fail_reason = failure.reason
        level = logging.WARNING if self._fail_streak % 10 == 1 else logging.DEBUG
        if failure.hard:
            log.error(
                "mqtt: %s as %r: %s [%s]; needs a configuration change, retrying in %.0f s",
                where, self.client_id, failure.message, failure.reason, delay,
            )  # fmt: skip
            if self._hard_alert_reason != failure.reason:
                self._hard_alert_reason = failure.reason
                self._raise_alert(
                    {
                        "kind": "mqtt_connect_failed",
                        "key": failure.reason,
                        "state": "active",
                        "severity": "critical",
                        "message": f"{where}: {failure.message}",
                    },
                    publish=False,
                )
        elif connected:
            log.warning("mqtt: connection to %s ended: %s; reconnecting in %.1f s",
                        where, failure.message, delay)  # fmt: skip
        else:
            log.log(level, "mqtt: connect to %s failed [%s] (%d in a row): %s; retrying in %.1f s",
                    where, failure.reason, self._fail_streak, failure.message, delay)  # fmt: skip

    # -- paho callbacks (network thread) -----------------------------------------------------

    def _on_connect(
        self,
        client: mqtt.Client,
        link: _Link,
        flags: mqtt.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            link.failure = classify_connack(int(reason_code.value), reason_code.getName())
            link.connack.set()
            return
        recv_max = getattr(properties, "ReceiveMaximum", None)
        if isinstance(recv_max, int) and 0 < recv_max < self._paho_inflight:
            # paho cannot change its limit on a live connection; the next client uses it.
            log.warning(
                "mqtt: broker Receive Maximum %d < max_inflight %d; using %d from the next "
                "connection", recv_max, self._paho_inflight, recv_max,
            )  # fmt: skip
            self._paho_inflight = recv_max
        window = _handoff(self._paho_inflight)
        limit = self.config.max_message_bytes
        broker_max = getattr(properties, "MaximumPacketSize", None)
        if isinstance(broker_max, int) and 0 < broker_max < limit:
            if broker_max != self._broker_max_packet:
                log.warning(
                    "mqtt: broker Maximum Packet Size %d < max_message_bytes %d; larger "
                    "outbox messages are set aside as lost", broker_max, limit,
                )  # fmt: skip
            limit = broker_max
        self._broker_max_packet = broker_max if isinstance(broker_max, int) else None
        self._announce(client, limit)
        self._subscribe_commands(client, session_present=bool(flags.session_present))
        with self._cond:
            self._client = client
            self._gen = link.gen
            self._window = window
            self._max_packet = limit
            self._cond.notify_all()
        self._inc("mqtt_connects_total")
        self._last_error = None
        self._fail_reason, self._fail_streak = None, 0
        log.info(
            "mqtt: connected to %s:%d as %r (MQTT %s, session present %s, in flight %d, outbox %d)",
            self.config.host, self.config.port, self.client_id, self.config.protocol,
            flags.session_present, self._paho_inflight, self._outbox.rows,
        )  # fmt: skip
        if self._hard_alert_reason is not None:
            reason, self._hard_alert_reason = self._hard_alert_reason, None
            self._raise_alert(
                {
                    "kind": "mqtt_connect_failed",
                    "key": reason,
                    "state": "resolved",
                    "severity": "critical",
                    "message": "connected again",
                },
                publish=True,
            )
        link.connack.set()

    def _announce(self, client: mqtt.Client, limit: int) -> None:
        """Retained online status, Home Assistant discovery and the last states (each
        only if its packet is at most ``limit`` bytes)."""
        status = status_payload(
            gateway=self.gateway_id,
            version=self._version,
            models=self._models,
            cameras=self._cameras,
            t_ms=now_ms(),
        )
        retained = [(self.topics.status, dumps(status))]
        if self.config.ha_discovery:
            retained += [
                (msg.topic, dumps(msg.payload))
                for msg in discovery_messages(
                    topics=self.topics,
                    ha_prefix=self.config.ha_prefix,
                    cameras=self._cameras,
                    version=self._version,
                )
            ]
        with self._state_lock:
            retained += list(self._states.items())
        for topic, payload in retained:
            if self._fits(topic, payload, qos=1, limit=limit):
                client.publish(topic, payload, qos=1, retain=True)

    def _fits(self, topic: str, payload: bytes, *, qos: int, limit: int | None = None) -> bool:
        """Whether a direct (not outbox) message fits the connection's packet limit
        (``limit``, default the current one); one that does not is counted, and logged
        once per topic."""
        lim = self._max_packet if limit is None else limit
        size = publish_packet_size(topic, len(payload), qos=qos, v5=self.config.protocol == "5")
        if size <= lim:
            return True
        self._inc('mqtt_messages_not_sent_total{reason="too_large"}')
        if topic not in self._too_large_topics:
            self._too_large_topics.add(topic)
            log.error("mqtt: not sending %s: its PUBLISH packet is %d bytes, the limit is %d "
                      "(max_message_bytes or the broker's Maximum Packet Size)",
                      topic, size, lim)  # fmt: skip
        return False

    def _subscribe_commands(self, client: mqtt.Client, *, session_present: bool) -> None:
        """Subscribe to the command tree on every connection (a broker without our session
        forgot it); without a dispatcher, drop a subscription a kept session still has."""
        topic = self.topics.cmd_filter
        if self._commands is None:
            if session_present:
                client.unsubscribe(topic)
            return
        if self.config.protocol == "5":
            client.subscribe(topic, options=SubscribeOptions(qos=1, noLocal=True))
        else:
            client.subscribe(topic, qos=1)

    def _on_subscribe(
        self,
        client: mqtt.Client,
        link: _Link,
        mid: int,
        reason_codes: list[ReasonCode],
        properties: Properties | None,
    ) -> None:
        refused = [rc for rc in reason_codes if rc.is_failure]
        if refused:
            self._inc("mqtt_command_subscribe_refused_total")
            log.error(
                "mqtt: broker refused the subscription to %s: %s (does the broker ACL let "
                "user %r read it?); commands will not arrive",
                self.topics.cmd_filter, refused[0].getName(), self.config.username,
            )  # fmt: skip

    def _on_message(self, client: mqtt.Client, link: _Link, msg: mqtt.MQTTMessage) -> None:
        # Runs in paho's network thread: an exception escaping here kills that thread
        # (paho re-raises it) and with it every publish, while the connection looks up.
        try:
            self._take_command(msg)
        except Exception as exc:  # logged (rate-limited) and counted
            self._inc('mqtt_commands_ignored_total{reason="error"}')
            self._cmd_fault_log.hit(
                "mqtt: a command on %s could not be handled: %s: %s",
                msg.topic[:100], type(exc).__name__, str(exc)[:200],
            )  # fmt: skip

    def _take_command(self, msg: mqtt.MQTTMessage) -> None:
        """Queue one command for the commands thread (network thread; see _on_message)."""
        dispatcher = self._commands
        name = self.topics.cmd_name(msg.topic)
        if dispatcher is None or name is None or name == "reply":
            return
        size = len(msg.payload)
        # An oversized command is refused by its size alone: never copied nor queued.
        payload = bytes(msg.payload) if size <= self.config.commands.max_bytes else b""
        if msg.retain:
            self._inc('mqtt_commands_ignored_total{reason="retained"}')
            log.warning("mqtt: ignoring a retained command on %s (clear it)",
                        short_name(msg.topic))  # fmt: skip
            return
        self._inc("mqtt_commands_received_total")
        try:
            self._cmd_queue.put_nowait((name, payload, size))
        except queue.Full:
            self._inc("mqtt_commands_busy_total")
            # No reply from here: replying costs the network thread (and the events) time
            # and bandwidth, which is what a flood of commands must not get.
            self._cmd_busy_log.hit("mqtt: %d commands waiting; dropping cmd/%s unanswered",
                                   self._cmd_queue.maxsize, short_name(name))  # fmt: skip

    def _run_commands(self) -> None:
        """The commands thread: dispatch queued commands until :meth:`close`."""
        dispatcher = self._commands
        assert dispatcher is not None
        while True:
            try:
                name, payload, size = self._cmd_queue.get(timeout=0.25)
            except queue.Empty:
                self._flush_command_logs(force=self._stopping.is_set())
                if self._stopping.is_set():
                    return
                continue
            try:
                if size > len(payload):  # over max_bytes, left behind in _take_command
                    reply = dispatcher.refuse_too_large(name, size)
                else:
                    reply = dispatcher.dispatch(name, payload)  # never raises
                self._send_reply(reply)
            except Exception:  # e.g. a reply that is not JSON: keep serving commands
                self._inc("mqtt_command_errors_total")
                log.exception("mqtt: reply to a cmd/%s command not sent", short_name(name))

    def _flush_command_logs(self, *, force: bool = False) -> None:
        """Report the suppressed lines of the rate-limited command logs (commands thread)."""
        self._cmd_fault_log.flush(force=force)
        self._cmd_busy_log.flush(force=force)
        self._cmd_reply_log.flush(force=force)
        if self._commands is not None:
            self._commands.flush_logs(force=force)

    def _send_reply(self, reply: Mapping[str, Any]) -> None:
        """Publish a command reply (not retained) on the live connection, if any: QoS 1 when
        ``ok``, else QoS 0 and only if the reply rate limit allows (else dropped, counted)."""
        ok = bool(reply.get("ok"))
        if not ok:
            self._inc("mqtt_command_errors_total")
            if not self._reply_bucket.take():
                self._inc("mqtt_command_replies_rate_limited_total")
                return
        qos = 1 if ok else 0
        client = self._client
        payload = dumps(reply)
        if client is not None and self._fits(self.topics.cmd_reply, payload, qos=qos):
            info = client.publish(self.topics.cmd_reply, payload, qos=qos, retain=False)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                self._inc("mqtt_command_replies_sent_total")
                return
        self._inc("mqtt_command_replies_dropped_total")
        self._cmd_reply_log.hit("mqtt: reply to request %r not sent: not connected",
                                reply.get("request_id"))  # fmt: skip

    def _on_disconnect(
        self,
        client: mqtt.Client,
        link: _Link,
        flags: mqtt.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if link.failure is None and not link.closing:
            if flags.is_disconnect_packet_from_server:
                name = reason_code.getName()
                link.failure = Failure(reason_slug(name), f"broker closed the connection: {name}")
            else:
                link.failure = Failure("connection_lost", "connection lost")
        reason = "closing" if link.closing or link.failure is None else link.failure.reason
        with self._cond:
            if self._client is client:
                self._client = None
            self._last_down = (link.gen, reason)
            self._cond.notify_all()
        link.down.set()
        link.connack.set()
        self._wake_link.set()

    def _on_publish(
        self,
        client: mqtt.Client,
        link: _Link,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties,
    ) -> None:
        with self._cond:
            self._acks.append((link.gen, mid, int(reason_code.value)))
            if self._pump_waiting and len(self._acks) >= self._wake_acks:
                self._cond.notify()

    # -- pump thread --------------------------------------------------------------------------

    def _run_pump(self) -> None:
        pump = _Pump(self)
        while True:
            try:
                if not pump.step():
                    return
            except OutboxError as exc:
                self._inc("mqtt_outbox_errors_total")
                log.error("mqtt: outbox error in the sender: %s; retrying in 1 s", exc)
                if self._stopping.wait(1.0) and self._link_done.is_set():
                    return
            except Exception:  # keep sending whatever happens; logged with context
                self._inc("mqtt_pump_errors_total")
                log.exception("mqtt: sender failed; retrying in 1 s")
                if self._stopping.wait(1.0) and self._link_done.is_set():
                    return


class _Pump:
    """Sender state owned by the pump thread (no locking needed for these fields)."""

    def __init__(self, pub: Publisher) -> None:
        self.pub = pub
        self.inflight: dict[int, int] = {}  # mid -> row id, current connection
        self.gen = -1
        self.cursor = 0  # highest row id handed to the current connection
        self.max_sent = 0  # highest row id ever sent by this process (resend counting)
        self.checkpoint_s = pub.config.outbox.checkpoint_interval_s
        now = time.monotonic()
        self.next_checkpoint = now + self.checkpoint_s if self.checkpoint_s > 0 else float("inf")
        self.next_tick = now + _TICK_S
        self.checkpointed = (0, 0)  # (commits, acked) at the last checkpoint
        self.acked = 0
        self.v5 = pub.config.protocol == "5"
        # Poison guard: the first row sent on this connection and when; the row the last
        # connections died on and how many in a row; how many it takes to set one aside.
        self.probe: tuple[int, float] | None = None
        self.suspect, self.suspect_n = 0, 0
        self.poison_need = _POISON_TRIES

    def _room(self, window: int) -> int:
        """Rows that may be handed to paho now: ``window`` less those in flight, and only
        the suspect row alone while a connection died on it (so an acknowledgement lost
        with the connection of a row sent just before a poison row does not make the
        poison guard blame the wrong row)."""
        return (1 if self.suspect_n > 0 else window) - len(self.inflight)

    def _want_to_run(self, client: mqtt.Client | None, gen: int, window: int) -> bool:
        pub = self.pub
        if pub._acks or pub._link_done.is_set():
            return True
        if client is None:
            return bool(self.inflight) or self.gen != -1
        if gen != self.gen:
            return True
        room = self._room(window)
        need = max(1, window // 2) if self.inflight and not self.suspect_n else 1
        return not pub._draining and room >= need and pub._outbox.last_id > self.cursor

    def step(self) -> bool:
        """One round: wait for work, apply acks, send. False when the pump should exit."""
        pub = self.pub
        with pub._cond:
            while not self._want_to_run(pub._client, pub._gen, pub._window):
                left = self.next_tick - time.monotonic()
                unsent = pub._outbox.last_id > self.cursor
                n = len(self.inflight)
                pub._wake_acks = max(1, n - pub._window // 2) if unsent else max(1, n)
                pub._pump_waiting = True
                pub._cond.wait(max(0.001, min(_PUMP_TICK_S, left)))
                pub._pump_waiting = False
                if time.monotonic() >= self.next_tick:
                    break
            acks, pub._acks = pub._acks, []
            client, gen, window = pub._client, pub._gen, pub._window
            limit, last_down = pub._max_packet, pub._last_down
            draining, final = pub._draining, pub._link_done.is_set()

        self._apply_acks(acks)
        if client is None or gen != self.gen:  # connection gone or new: start from the oldest
            if self.gen != -1:
                self._connection_ended(last_down)
            self.inflight.clear()
            self.cursor = 0
            self.gen = gen if client is not None else -1
        if client is not None and not draining:
            self._send(client, window, limit)
        with pub._cond:
            pub._inflight_n = len(self.inflight)
            pub._cond.notify_all()
        self._periodic()
        return not final

    def _apply_acks(self, acks: list[tuple[int, int, int]]) -> None:
        if not acks:
            return
        pub = self.pub
        done: list[int] = []
        for gen, mid, code in acks:
            if gen != self.gen:
                continue
            rid = self.inflight.pop(mid, None)
            if rid is None:  # status/state/discovery/result message
                continue
            done.append(rid)
            self.suspect, self.suspect_n = 0, 0  # answered: the connection survived it
            if code < 0x80:
                self.poison_need = _POISON_TRIES  # the broker takes messages again
            else:
                reason = reason_slug(ReasonCode(PacketTypes.PUBACK, identifier=code).getName())
                pub._inc(f'mqtt_publish_rejected_total{{reason="{reason}"}}')
                log.error("mqtt: broker refused outbox row %d (0x%02X %s)", rid, code, reason)
                pub._note_loss(f"refused_by_broker_{reason}", 1)
        if done:
            pub._outbox.delete(done)
            pub._inc("mqtt_messages_acked_total", len(done))
            self.acked += len(done)

    def _send(self, client: mqtt.Client, window: int, limit: int) -> None:
        pub = self.pub
        room = self._room(window)
        if room <= 0:
            return
        last = pub._outbox.last_id
        if last <= self.cursor:
            return
        rows = pub._outbox.read_after(self.cursor, room)
        sent = resent = 0
        too_large: list[tuple[StoredMessage, int]] = []
        for row in rows:
            size = publish_packet_size(row.topic, len(row.payload), qos=row.qos, v5=self.v5)
            if size > limit:  # a broker would drop the connection: never send it
                too_large.append((row, size))
                self.cursor = row.id
                continue
            info = client.publish(row.topic, row.payload, qos=row.qos)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                break  # connection going down; on_disconnect follows
            if self.probe is None:
                self.probe = (row.id, time.monotonic())
            self.inflight[info.mid] = row.id
            self.cursor = row.id
            sent += 1
            if row.id <= self.max_sent:
                resent += 1
        else:
            if len(rows) < room:  # read everything up to `last`: rows below it are gone
                self.cursor = max(self.cursor, last)
        self.max_sent = max(self.max_sent, self.cursor)
        if sent:
            pub._inc("mqtt_messages_sent_total", sent)
        if resent:
            pub._inc("mqtt_messages_resent_total", resent)
        if too_large:
            self._set_aside(
                too_large,
                "too_large",
                f"is larger than the limit of {limit} bytes (max_message_bytes or the "
                "broker's Maximum Packet Size)",
            )

    def _connection_ended(self, last_down: tuple[int, str]) -> None:
        """Poison guard, run once per connection when the pump sees it gone: did it die
        right after its first row was sent, with that row unacknowledged?"""
        probe, self.probe = self.probe, None
        if probe is None:  # nothing sent: no evidence either way
            return
        rid, t_sent = probe
        gen, reason = last_down
        quick = time.monotonic() - t_sent <= _POISON_WINDOW_S
        if (
            not quick
            or (gen == self.gen and reason in _BENIGN_DOWN)
            or rid not in self.inflight.values()
        ):
            self.suspect, self.suspect_n = 0, 0
            return
        if rid == self.suspect:
            self.suspect_n += 1
        else:
            self.suspect, self.suspect_n = rid, 1
        log.info("mqtt: connection died right after sending outbox row %d (%d of %d in a row)",
                 rid, self.suspect_n, self.poison_need)  # fmt: skip
        if self.suspect_n < self.poison_need:
            return
        self.suspect, self.suspect_n = 0, 0
        found = self.pub._outbox.read_after(rid - 1, 1)
        if found and found[0].id == rid:
            row = found[0]
            size = publish_packet_size(row.topic, len(row.payload), qos=row.qos, v5=self.v5)
            self._set_aside(
                [(row, size)],
                "disconnected_on_send",
                f"was followed by the connection dying within {_POISON_WINDOW_S:g} s, "
                f"unacknowledged, {self.poison_need} connections in a row (a broker limit "
                "on size or content that it does not announce? see the broker's log)",
            )
        self.poison_need *= 2  # the next one needs more evidence, until an ack arrives

    def _set_aside(self, rows: list[tuple[StoredMessage, int]], reason: str, why: str) -> None:
        """Delete rows that cannot be delivered from the outbox and report them as lost."""
        pub = self.pub
        n = pub._outbox.delete([row.id for row, _ in rows])
        for row, size in rows:
            log.error(
                "mqtt: outbox row %d (%s %s, topic %s, %d-byte PUBLISH packet) %s; removed "
                "from the outbox and reported as lost", row.id, row.kind, row.key, row.topic,
                size, why,
            )  # fmt: skip
        if n:
            pub._inc(f'mqtt_messages_set_aside_total{{reason="{reason}"}}', n)
            pub._note_loss(reason, n)

    def _periodic(self) -> None:
        """Once a second: flush a pending loss alert; every ``checkpoint_interval_s``:
        checkpoint the WAL if anything was written since the last one."""
        pub = self.pub
        now = time.monotonic()
        if now < self.next_tick:
            return
        self.next_tick = now + _TICK_S
        pub._maybe_emit_loss_alert()
        if now >= self.next_checkpoint:
            self.next_checkpoint = now + self.checkpoint_s
            mark = (pub._outbox.stats()["commits"], self.acked)
            if mark != self.checkpointed:
                pub._outbox.checkpoint()
                self.checkpointed = mark
