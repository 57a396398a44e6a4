"""Failure classification and the backoff schedule (no broker)."""

from __future__ import annotations

import socket
import ssl

import pytest

from edge.mqtt.reconnect import Backoff, classify_connack, classify_exception, reason_slug


@pytest.mark.parametrize(
    ("code", "name", "reason", "hard"),
    [
        (0x86, "Bad user name or password", "bad_credentials", True),
        (0x87, "Not authorized", "not_authorized", True),
        (0x8A, "Banned", "banned", True),
        (0x85, "Client identifier not valid", "client_id_rejected", True),
        (0x88, "Server unavailable", "server_unavailable", False),
        (0x89, "Server busy", "server_busy", False),
        (0x9F, "Connection rate exceeded", "connection_rate_exceeded", False),
        (0xA0, "Some future code", "some_future_code", False),
    ],
)
def test_connack_refusals(code: int, name: str, reason: str, hard: bool) -> None:
    f = classify_connack(code, name)
    assert (f.reason, f.hard) == (reason, hard)
    assert f"0x{code:02X}" in f.message


@pytest.mark.parametrize(
    ("exc", "reason", "hard"),
    [
        (ssl.SSLCertVerificationError(1, "certificate verify failed"), "tls_verify_failed", True),
        (ssl.SSLError(1, "wrong version number"), "tls_error", False),
        (ConnectionRefusedError(111, "refused"), "connection_refused", False),
        (socket.gaierror(-2, "Name or service not known"), "dns", False),
        (TimeoutError("timed out"), "timeout", False),
        (OSError(113, "No route to host"), "network_error", False),
    ],
)
def test_socket_failures(exc: BaseException, reason: str, hard: bool) -> None:
    f = classify_exception(exc, host="broker", port=8883)
    assert (f.reason, f.hard) == (reason, hard)
    assert "broker" in f.message


def test_backoff_doubles_with_jitter_caps_and_resets() -> None:
    lo = Backoff(min_s=0.5, max_s=8.0, hard_s=300.0, rng=lambda: 0.0)
    hi = Backoff(min_s=0.5, max_s=8.0, hard_s=300.0, rng=lambda: 0.999999)
    lows = [lo.next_delay() for _ in range(7)]
    highs = [hi.next_delay() for _ in range(7)]
    assert lows == [0.25, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]  # cap/2
    assert highs == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0], rel=1e-5)  # cap
    lo.reset()
    assert lo.next_delay() == 0.25


def test_hard_failures_wait_long_whatever_the_attempt() -> None:
    b = Backoff(min_s=0.5, max_s=8.0, hard_s=300.0, rng=lambda: 0.5)
    assert b.next_delay(hard=True) == pytest.approx(300.0)
    b2 = Backoff(min_s=0.5, max_s=8.0, hard_s=300.0, rng=lambda: 0.0)
    assert b2.next_delay(hard=True) == pytest.approx(240.0)  # -20 % jitter floor


def test_reason_slug() -> None:
    assert reason_slug("Session taken over") == "session_taken_over"
    assert reason_slug("Keep-alive timeout") == "keep_alive_timeout"
