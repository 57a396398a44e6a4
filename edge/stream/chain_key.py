"""The optional secret key of the events hash chain: where it comes from, how it is held.

With a key, each new link of the chain (:mod:`edge.stream.evidence`) is
``HMAC-SHA256(key, canonical row bytes)`` instead of ``SHA-256(canonical row bytes)``, so
someone who can write the database but does not know the key cannot recompute the links
after an edit.

**Sources**, first found wins: the environment variable :data:`EVENTS_KEY_ENV` (the key
itself, as for ``SAFETY_EDGE_MQTT_PASSWORD``), then a key file (``storage.events_key_file``
in ``gateway.yaml``, or ``--key-file`` of ``safety-edge events verify``, where the flag
comes before the environment). The key is the file's bytes, or the variable's UTF-8 text,
with surrounding whitespace (the trailing newline) removed; it must be at least
:data:`MIN_KEY_BYTES` bytes. Make one with, e.g.::

    head -c 32 /dev/urandom | base64 > /etc/safety-edge/events.key
    chmod 600 /etc/safety-edge/events.key

**Key id**: :attr:`ChainKey.key_id` (16 hex digits of ``HMAC-SHA256(key, "safety-edge events
key id v1")``) names a key without revealing it; it is stored with every keyed link, so
``events verify`` can tell "wrong key" from "edited row". It gives an attacker nothing the
keyed links themselves do not (each is a MAC of known bytes).

The secret never appears in a ``repr``, a log line or an error message: those name the
source (the variable's name or the file's path) and the key id only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import ConfigError

__all__ = ["EVENTS_KEY_ENV", "MIN_KEY_BYTES", "ChainKey", "load_chain_key"]

EVENTS_KEY_ENV = "SAFETY_EDGE_EVENTS_KEY"
"""Environment variable holding the key itself (wins over a configured key file)."""

MIN_KEY_BYTES = 16
"""Shortest key accepted (after stripping whitespace): 128 bits if random."""

_KEY_ID_MESSAGE = b"safety-edge events key id v1"
_MAX_KEY_FILE_BYTES = 4096


@dataclass(frozen=True, slots=True)
class ChainKey:
    """A chain key: the secret bytes, their public id and where they came from.

    Attributes:
        secret: the key bytes (hidden from ``repr``).
        source: ``"env SAFETY_EDGE_EVENTS_KEY"`` or ``"file /path"`` (for messages).
        key_id: 16 lowercase hex digits naming the key (see the module docstring).
    """

    secret: bytes = field(repr=False)
    source: str = "key"
    key_id: str = field(init=False)

    def __post_init__(self) -> None:
        if len(self.secret) < MIN_KEY_BYTES:
            raise ConfigError(
                f"events key from {self.source} is {len(self.secret)} bytes; at least "
                f"{MIN_KEY_BYTES} are needed (e.g. `head -c 32 /dev/urandom | base64`)"
            )
        kid = hmac.new(self.secret, _KEY_ID_MESSAGE, hashlib.sha256).hexdigest()[:16]
        object.__setattr__(self, "key_id", kid)

    def mac(self, data: bytes) -> str:
        """Lowercase hex ``HMAC-SHA256(secret, data)`` (64 digits)."""
        return hmac.new(self.secret, data, hashlib.sha256).hexdigest()


def load_chain_key(
    key_file: str | Path | None, *, env: bool = True, key_file_first: bool = False
) -> ChainKey | None:
    """The chain key from :data:`EVENTS_KEY_ENV` or ``key_file``; ``None`` when neither
    is set (an empty variable counts as unset).

    Args:
        key_file: a file holding the key, or ``None``.
        env: look at the environment variable at all.
        key_file_first: a given ``key_file`` wins over the variable (a command-line
            flag); otherwise the variable wins (as for every secret in ``gateway.yaml``).

    Raises:
        ConfigError: the file cannot be read, is larger than 4 KiB, or the key is shorter
            than :data:`MIN_KEY_BYTES`. The message names the source, never the key.
    """
    value = os.environ.get(EVENTS_KEY_ENV) if env else None
    if value and not (key_file_first and key_file is not None):
        return ChainKey(secret=value.strip().encode("utf-8"), source=f"env {EVENTS_KEY_ENV}")
    if key_file is None:
        return None
    p = Path(key_file)
    try:
        with open(p, "rb") as f:
            data = f.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(
            f"events key file {str(p)!r}: cannot read: {exc.strerror or exc}"
        ) from None
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise ConfigError(
            f"events key file {str(p)!r} is larger than {_MAX_KEY_FILE_BYTES} bytes; "
            "is it the right file?"
        )
    return ChainKey(secret=data.strip(), source=f"file {p}")
