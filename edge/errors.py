"""The project's exception tree.

Every error carries the contract code it maps to (``../shared/CONTRACT.md``) so the
HTTP layer can answer without scattered ``if``s. Codes are looked up per API in
``edge/api/contract.py``; ``code`` here is the fence-API/default code.
"""

from __future__ import annotations


class EdgeError(Exception):
    """Root of all safety-edge errors. ``code`` is the contract code (5000 by default)."""

    code: int = 5000

    def __init__(self, message: str, *, code: int | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code

    @property
    def details(self) -> str:
        return str(self)


class ConfigError(EdgeError):
    """A configuration file or value is invalid."""

    code = 5000


class ModelError(EdgeError):
    """A model file or manifest is missing, corrupt or inconsistent."""

    code = 5001


class InferenceError(EdgeError):
    """onnxruntime failed while running a model."""

    code = 5001


class ImageDecodeError(EdgeError):
    """Bytes are not a decodable png/jpg/jpeg/bmp image (fence 4009, hard-hat 4003)."""

    code = 4009


class AreaError(EdgeError):
    """An area/polygon is malformed: non-numeric, odd count, wrong point count,
    self-intersecting or zero-area (fence code 4012)."""

    code = 4012


class AreaOutsideImageError(EdgeError):
    """An area polygon lies (partly) outside the image it is applied to (fence 4013)."""

    code = 4013


class QueueFullError(EdgeError):
    """A bounded queue or store refused new items by its documented policy for when it is
    full (e.g. the MQTT outbox holding only messages it never drops). Expected during a
    long outage, and its owner counts and alerts it; callers that only pass items on
    should log it briefly (no traceback) instead of as a crash."""

    code = 5000
