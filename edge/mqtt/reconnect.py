"""Reconnect policy: why a connection failed, and how long to wait before the next try.

Every failure gets a short ``reason`` (a metric label and a log word) and a ``hard``
flag. Hard failures are refusals that retrying cannot fix until someone changes a
password, an ACL or a certificate (bad credentials, not authorised, banned, bad auth
method, client id rejected, unsupported protocol, TLS verification failed); they wait
the long ``hard_s`` so a misconfigured fleet does not hammer its broker. Everything
else (refused TCP connection, timeout, DNS, broker busy, lost connection) backs off
exponentially with jitter: attempt ``n`` waits uniformly in ``[cap/2, cap]`` with
``cap = min(max_s, min_s * 2**n)``, so gateways restarted together spread out.
"""

from __future__ import annotations

import random
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Backoff", "Failure", "classify_connack", "classify_exception", "reason_slug"]

# MQTT 5 CONNACK reason codes (paho maps MQTT 3.1.1 return codes onto the same values).
_HARD: dict[int, tuple[str, str]] = {
    0x84: ("unsupported_protocol", "the broker does not support this MQTT version"),
    0x85: ("client_id_rejected", "the broker rejected the client id"),
    0x86: ("bad_credentials", "bad user name or password (check mqtt.username/password)"),
    0x87: ("not_authorized", "not authorised (check credentials and the broker's ACL)"),
    0x8A: ("banned", "this client is banned by the broker"),
    0x8C: ("bad_auth_method", "bad authentication method"),
}
_SOFT: dict[int, str] = {
    0x80: "unspecified_error",
    0x81: "malformed_packet",
    0x82: "protocol_error",
    0x83: "implementation_specific_error",
    0x88: "server_unavailable",
    0x89: "server_busy",
    0x95: "packet_too_large",
    0x97: "quota_exceeded",
    0x99: "payload_format_invalid",
    0x9A: "retain_not_supported",
    0x9B: "qos_not_supported",
    0x9C: "use_another_server",
    0x9D: "server_moved",
    0x9F: "connection_rate_exceeded",
}


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure: ``reason`` label, human ``message``, ``hard`` = long backoff."""

    reason: str
    message: str
    hard: bool = False


def reason_slug(name: str) -> str:
    """``"Session taken over"`` -> ``"session_taken_over"``."""
    return "_".join(name.lower().replace("-", " ").split()) or "unknown"


def classify_connack(value: int, name: str) -> Failure:
    """A CONNACK refusal (``value`` >= 0x80, as in paho's ``ReasonCode.value``)."""
    if value in _HARD:
        reason, text = _HARD[value]
        return Failure(reason, f"broker refused the connection: {text} (0x{value:02X})", True)
    reason = _SOFT.get(value, reason_slug(name))
    return Failure(reason, f"broker refused the connection: {name} (0x{value:02X})")


def classify_exception(exc: BaseException, *, host: str, port: int) -> Failure:
    """A failure raised while opening the TCP/TLS connection."""
    where = f"{host}:{port}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = getattr(exc, "verify_message", None) or str(exc)
        return Failure(
            "tls_verify_failed",
            f"TLS certificate verification of {where} failed: {detail} "
            "(check mqtt.tls.ca_file / use_system_ca and the broker's host name)",
            True,
        )
    if isinstance(exc, ssl.SSLError):
        return Failure("tls_error", f"TLS handshake with {where} failed: {exc}")
    if isinstance(exc, ConnectionRefusedError):
        return Failure("connection_refused", f"connection to {where} refused (broker down?)")
    if isinstance(exc, socket.gaierror):
        return Failure("dns", f"cannot resolve {host!r}: {exc}")
    if isinstance(exc, TimeoutError):
        return Failure("timeout", f"connection to {where} timed out")
    return Failure("network_error", f"cannot connect to {where}: {exc}")


class Backoff:
    """Jittered exponential backoff; ``next_delay(hard)`` advances, ``reset()`` after success.

    Args:
        min_s, max_s: range of the exponential schedule, seconds.
        hard_s: wait after a hard failure (jittered +-20 %), seconds.
        rng: uniform [0, 1) source (tests pass a fixed one).
    """

    def __init__(
        self,
        *,
        min_s: float,
        max_s: float,
        hard_s: float,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.min_s, self.max_s, self.hard_s = min_s, max_s, hard_s
        self._rng = rng
        self.attempt = 0

    def next_delay(self, hard: bool = False) -> float:
        """Seconds to wait before the next attempt."""
        if hard:
            self.attempt += 1
            return self.hard_s * (0.8 + 0.4 * self._rng())
        cap = min(self.max_s, self.min_s * (2.0 ** min(self.attempt, 60)))
        self.attempt += 1
        return cap / 2.0 + self._rng() * cap / 2.0

    def reset(self) -> None:
        self.attempt = 0
