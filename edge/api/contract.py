"""The cloud contract in one place: paths, the code table per API, request validation.

Every way a request can fail is a :class:`Fault`; :data:`CODES` maps each fault to the
contract code of each API (``../shared/CONTRACT.md``), so no handler carries a code of
its own. Validation functions raise :class:`ApiFault` (fault + human-readable
``details``); the HTTP layer turns it into ``{"code", "message": "error", "details"}``.

Decisions this module encodes (the README restates them):

- Extension codes on every API: ``4000`` unknown path or service code (also a service
  code granted for another API than the path), ``4010`` authentication failed,
  ``4029`` quota exhausted / no active resource package.
- Hard-hat / workwear: an ``image`` key that is missing, not a string or empty is
  ``4001``; base64 that does not decode, bytes that are not a png/jpg/jpeg/bmp image,
  images over ``max_image_pixels`` (checked from the file header *before* decoding, so
  a small file claiming 10000x10000 pixels never allocates 300 MB) and JPEGs with more
  than 64 scans or 1024 marker segments (a "scan bomb": decode time grows with the
  scans, see :data:`MAX_JPEG_SCANS`) are ``4003``; a decoded image over 5 MiB, or a
  body over the limit that a 5 MiB image can need (base64 + JSON slack), is ``4002``;
  a body that is empty or only whitespace is ``4005``; a body that is not UTF-8 JSON,
  or JSON that is not an object, is ``4006``.
- Fence: keys must be exactly ``image`` and ``area`` (``4005`` names the missing and
  the unexpected ones); an image entry that is ``null``/empty/whitespace is ``4008``;
  an entry that is not a string, is not base64, is not a png/jpg/jpeg image, is over
  ``max_image_pixels`` or over the JPEG scan/segment limits is ``4009``. Per-image
  faults (4008, 4009, 4013, 5001) fail that image only; a request whose every image
  failed answers the first image's code.
- JSON ``NaN``/``Infinity`` literals are not JSON: ``4006`` (hat) / ``4003`` (fence).
- A ``data:image/...;base64,`` prefix is stripped; whitespace inside base64, missing
  padding and the URL-safe alphabet are accepted.
"""

from __future__ import annotations

import binascii
import enum
import json
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from edge.errors import (
    AreaError,
    AreaOutsideImageError,
    EdgeError,
    ImageDecodeError,
    InferenceError,
    ModelError,
)

__all__ = [
    "APIS",
    "API_PATHS",
    "CODES",
    "EXTENSION_CODES",
    "MAX_JPEG_SCANS",
    "MAX_JPEG_SEGMENTS",
    "PATH_PREFIX",
    "REST_STATUS",
    "Api",
    "ApiFault",
    "Fault",
    "FenceRequest",
    "HatRequest",
    "ImageInfo",
    "Limits",
    "code_for",
    "decode_base64_image",
    "failure_body",
    "fault_for_error",
    "fence_success_body",
    "hat_body_limit",
    "hat_success_body",
    "parse_json_object",
    "sniff_image",
    "validate_fence",
    "validate_hat",
]

Api = Literal["hardhat", "workwear", "fence"]
"""The three APIs (same literal as :data:`edge.api.store.Api`)."""

APIS: tuple[Api, ...] = ("hardhat", "workwear", "fence")

PATH_PREFIX = "/v1/aiop/api/"
API_PATHS: Mapping[Api, str] = {
    "hardhat": "SafeHat/base/hat_detect",
    "workwear": "UniformIdentity/base/clothes_detect",
    "fence": "ef-http/electron/fence",
}
"""Path suffix after ``/v1/aiop/api/{service_code}/`` for each API."""

FENCE_SAMPLE_SUFFIX = "electron/fence"
"""The path the provider's fence sample *signs* (without ``ef-http/``)."""


class Fault(enum.Enum):
    """Every way a request can fail; :data:`CODES` gives each one's code per API."""

    UNKNOWN_PATH = "unknown path or service code"
    METHOD = "method is not POST"
    AUTH = "authentication failed"
    QUOTA = "quota exhausted"
    BODY_TOO_LARGE = "body too large"
    IMAGE_TOO_LARGE = "image too large"
    EMPTY_BODY = "empty body"
    NOT_JSON = "body is not JSON"
    NOT_OBJECT = "body is not a JSON object"
    KEYS = "missing or unexpected key"
    IMAGE_MISSING = "no image"
    IMAGE_NOT_LIST = "image is not a list"
    IMAGE_COUNT = "wrong number of images"
    IMAGE_EMPTY = "image entry empty"
    IMAGE_DECODE = "image not decodable"
    AREA_NOT_STRING = "area is not a string"
    AREA_MALFORMED = "area malformed"
    AREA_OUTSIDE = "area outside image"
    SERVICE = "service error"
    INFERENCE = "inference failed"
    DATABASE = "database error"
    BUSY = "gateway busy"
    DEADLINE = "deadline exceeded"


_HAT_CODES: Mapping[Fault, int] = {
    Fault.UNKNOWN_PATH: 4000,
    Fault.IMAGE_MISSING: 4001,
    Fault.KEYS: 4001,
    Fault.BODY_TOO_LARGE: 4002,
    Fault.IMAGE_TOO_LARGE: 4002,
    Fault.IMAGE_DECODE: 4003,
    Fault.METHOD: 4004,
    Fault.EMPTY_BODY: 4005,
    Fault.NOT_JSON: 4006,
    Fault.NOT_OBJECT: 4006,
    Fault.AUTH: 4010,
    Fault.QUOTA: 4029,
    Fault.SERVICE: 5000,
    Fault.INFERENCE: 5000,
    Fault.DATABASE: 5000,
    Fault.BUSY: 5000,
    Fault.DEADLINE: 5000,
    # Fence-only faults (_FENCE_ONLY), never raised on these APIs; mapped so the table
    # is total.
    Fault.IMAGE_NOT_LIST: 4001,
    Fault.IMAGE_COUNT: 4001,
    Fault.IMAGE_EMPTY: 4001,
    Fault.AREA_NOT_STRING: 4001,
    Fault.AREA_MALFORMED: 4001,
    Fault.AREA_OUTSIDE: 4001,
}

_FENCE_ONLY = frozenset(
    {
        Fault.IMAGE_NOT_LIST,
        Fault.IMAGE_COUNT,
        Fault.IMAGE_EMPTY,
        Fault.AREA_NOT_STRING,
        Fault.AREA_MALFORMED,
        Fault.AREA_OUTSIDE,
    }
)

_FENCE_CODES: Mapping[Fault, int] = {
    Fault.UNKNOWN_PATH: 4000,
    Fault.METHOD: 4001,
    Fault.BODY_TOO_LARGE: 4002,
    Fault.NOT_JSON: 4003,
    Fault.NOT_OBJECT: 4004,
    Fault.EMPTY_BODY: 4004,
    Fault.KEYS: 4005,
    Fault.IMAGE_MISSING: 4005,
    Fault.IMAGE_NOT_LIST: 4006,
    Fault.IMAGE_COUNT: 4007,
    Fault.IMAGE_EMPTY: 4008,
    Fault.IMAGE_DECODE: 4009,
    Fault.IMAGE_TOO_LARGE: 4009,
    Fault.AUTH: 4010,
    Fault.AREA_NOT_STRING: 4011,
    Fault.AREA_MALFORMED: 4012,
    Fault.AREA_OUTSIDE: 4013,
    Fault.QUOTA: 4029,
    Fault.SERVICE: 5000,
    Fault.BUSY: 5000,
    Fault.DEADLINE: 5000,
    Fault.INFERENCE: 5001,
    Fault.DATABASE: 5002,
}

CODES: Mapping[Api, Mapping[Fault, int]] = {
    "hardhat": _HAT_CODES,
    "workwear": _HAT_CODES,
    "fence": _FENCE_CODES,
}
"""THE code table: ``CODES[api][fault]`` is the contract code answered."""

EXTENSION_CODES: Mapping[int, str] = {
    4000: "unknown path or service code (or a service code granted for another API)",
    4010: "authentication failed (missing header, unknown/disabled AppKey, "
    "Timestamp outside the skew window, bad Sign, replayed request)",
    4029: "quota exhausted or no active resource package for this API",
}

REST_STATUS: Mapping[Fault, int] = {
    Fault.UNKNOWN_PATH: 404,
    Fault.METHOD: 405,
    Fault.AUTH: 401,
    Fault.QUOTA: 429,
    Fault.BODY_TOO_LARGE: 413,
    Fault.IMAGE_TOO_LARGE: 413,
    Fault.SERVICE: 500,
    Fault.INFERENCE: 500,
    Fault.DATABASE: 500,
    Fault.BUSY: 503,
    Fault.DEADLINE: 504,
}
"""HTTP status per fault when ``api.rest_status`` is on; every other fault is 400."""


def code_for(api: Api | None, fault: Fault) -> int:
    """The contract code for ``fault`` on ``api`` (``None``: the path named no API)."""
    if api is None:
        return 4000 if fault is Fault.UNKNOWN_PATH else _FENCE_CODES[fault]
    return CODES[api][fault]


def rest_status(fault: Fault) -> int:
    """HTTP status for ``fault`` under the REST-status option."""
    return REST_STATUS.get(fault, 400)


class ApiFault(EdgeError):
    """A request failed with ``fault``; ``details`` names the cause for the client."""

    def __init__(self, fault: Fault, details: str) -> None:
        super().__init__(details, code=_FENCE_CODES.get(fault, 5000))
        self.fault = fault

    def code_for(self, api: Api | None) -> int:
        return code_for(api, self.fault)


def fault_for_error(exc: BaseException) -> Fault:
    """The fault an exception from the inner layers stands for (by class, then code)."""
    if isinstance(exc, ApiFault):
        return exc.fault
    if isinstance(exc, AreaOutsideImageError):
        return Fault.AREA_OUTSIDE
    if isinstance(exc, AreaError):
        return Fault.AREA_MALFORMED
    if isinstance(exc, ImageDecodeError):
        return Fault.IMAGE_DECODE
    if isinstance(exc, (InferenceError, ModelError)):
        return Fault.INFERENCE
    if isinstance(exc, EdgeError) and exc.code == 5002:
        return Fault.DATABASE
    return Fault.SERVICE


# -- answer bodies -------------------------------------------------------------------


def failure_body(code: int, details: str) -> dict[str, Any]:
    """The contract's failure shape."""
    return {"code": code, "message": "error", "details": details}


def hat_success_body(items: list[Any]) -> dict[str, Any]:
    """Hard-hat/workwear success: the list under both ``result`` and ``data`` (decision)."""
    return {"code": 0, "message": "success", "result": items, "data": items}


def fence_success_body(items: list[dict[str, Any]], success: int, fail: int) -> dict[str, Any]:
    """Fence success: per-image items in order, with the success/fail counts."""
    return {"code": 0, "message": {"success": success, "fail": fail}, "result": items}


# -- limits --------------------------------------------------------------------------

MIB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Request limits (bytes / pixels / counts). Defaults are the contract's."""

    max_image_bytes: int = 5 * MIB
    max_fence_body_bytes: int = 50 * MIB
    max_image_pixels: int = 40_000_000
    max_fence_images: int = 32

    def body_limit(self, api: Api) -> int:
        """Bytes of body read at most before answering ``BODY_TOO_LARGE``."""
        if api == "fence":
            return self.max_fence_body_bytes
        return hat_body_limit(self.max_image_bytes)


def hat_body_limit(max_image_bytes: int) -> int:
    """Largest body a hard-hat/workwear request with a ``max_image_bytes`` image can need.

    Base64 is 4/3 of the bytes; 25 % more covers what JSON encoders add to it: MIME line
    breaks (CRLF every 76 characters, escaped as ``\\r\\n``: +5.3 %, .NET's
    ``InsertLineBreaks``, PHP's ``chunk_split``) and escaped ``+`` / ``/`` (``\\u002B``,
    ``\\u002F``: +7.8 % each, .NET's ``System.Text.Json``); 64 KiB covers the JSON wrapper
    and a ``data:`` prefix. The decoded size is then checked exactly.
    """
    b64 = (max_image_bytes + 2) // 3 * 4
    return b64 + b64 // 4 + 64 * 1024


# -- JSON ------------------------------------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Raw body -> JSON object, raising EMPTY_BODY / NOT_JSON / NOT_OBJECT with the cause."""
    if not body.strip():
        raise ApiFault(Fault.EMPTY_BODY, "request body is empty")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiFault(
            Fault.NOT_JSON, f"request body is not UTF-8 (invalid byte at offset {exc.start})"
        ) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise ApiFault(
            Fault.NOT_JSON,
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}",
        ) from None
    except RecursionError:
        raise ApiFault(Fault.NOT_JSON, "request body JSON is nested too deeply") from None
    except ValueError as exc:
        raise ApiFault(Fault.NOT_JSON, f"request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ApiFault(
            Fault.NOT_OBJECT, f"request body must be a JSON object, got a JSON {_json_type(value)}"
        )
    return value


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


# -- images --------------------------------------------------------------------------

_DATA_URL = re.compile(r"^\s*data:[^,]{0,100}?;base64,", re.IGNORECASE)
_WS_BYTES = b" \t\r\n\v\f"
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_URLSAFE = bytes.maketrans(b"-_", b"+/")

ImageFormat = Literal["png", "jpeg", "bmp"]


@dataclass(frozen=True)
class ImageInfo:
    """What an image file's header says: format and size in pixels."""

    format: ImageFormat
    width: int
    height: int


def decode_base64_image(
    text: str,
    *,
    max_bytes: int,
    too_large: Fault,
    where: str = "image",
) -> bytes:
    """Base64 text (optionally with a ``data:`` prefix) -> bytes.

    The decoded size is computed from the text length and checked against ``max_bytes``
    (fault ``too_large``) *before* decoding. Bad base64 is ``IMAGE_DECODE``. Every pass
    over the text is a C-level bytes operation (a 7 MB image costs milliseconds).
    """
    m = _DATA_URL.match(text, 0, 200)
    if m:
        text = text[m.end() :]
    if not text.isascii():
        raise ApiFault(Fault.IMAGE_DECODE, f"{where} is not base64: non-ASCII characters")
    raw = text.encode("ascii")
    stripped = raw.translate(None, _WS_BYTES)
    if b"-" in stripped or b"_" in stripped:
        stripped = stripped.translate(_URLSAFE)
    if len(stripped) % 4:
        stripped += b"=" * (-len(stripped) % 4)
    if not stripped:
        raise ApiFault(Fault.IMAGE_DECODE, f"{where} is empty after removing the data: prefix")
    body = stripped.rstrip(b"=")
    decoded_len = len(stripped) * 3 // 4 - (len(stripped) - len(body))
    if decoded_len > max_bytes:
        raise ApiFault(
            too_large,
            f"{where} is {decoded_len} bytes decoded, over the limit of {max_bytes} bytes",
        )
    if len(stripped) - len(body) > 2 or body.translate(None, _B64_ALPHABET):
        raise ApiFault(
            Fault.IMAGE_DECODE, f"{where} is not base64: characters outside the base64 alphabet"
        )
    try:
        return binascii.a2b_base64(stripped)
    except binascii.Error as exc:
        raise ApiFault(Fault.IMAGE_DECODE, f"{where} is not valid base64: {exc}") from None


def sniff_image(data: bytes) -> ImageInfo | None:
    """Format and pixel size from a PNG/JPEG/BMP header, or None when it is none of them.

    Reads only headers (JPEG: marker segments up to the first SOF), never pixel data.
    """
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        if len(data) < 24 or data[12:16] != b"IHDR":
            return None
        w, h = struct.unpack(">II", data[16:24])
        return ImageInfo("png", int(w), int(h))
    if data[:2] == b"\xff\xd8":
        return _sniff_jpeg(data)
    if data[:2] == b"BM" and len(data) >= 26:
        (dib,) = struct.unpack("<I", data[14:18])
        if dib == 12:
            w, h = struct.unpack("<HH", data[18:22])
        elif dib >= 40:
            w, h = struct.unpack("<ii", data[18:26])
        else:
            return None
        return ImageInfo("bmp", abs(int(w)), abs(int(h)))
    return None


_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}

MAX_JPEG_SCANS = 64
"""Most scans (SOS markers) a JPEG may have; more is refused before decoding.

libjpeg decodes every scan of a progressive JPEG, even one that repeats an earlier
scan (it only warns "Inconsistent progression sequence"), and each scan costs a pass
over the image's coefficients (~2.5 ms per scan at 4 MP on one core). A 66 KB request
repeating a 16-byte scan thousands of times would hold a worker for minutes, and a
decode cannot be interrupted. Encoders write 1 (baseline) to 3 (non-interleaved)
scans, libjpeg's progressive script 10 (6 for grey), others a dozen or two; 64 keeps
the worst decode within a few times a normal progressive one.
"""

MAX_JPEG_SEGMENTS = 1024
"""Most marker segments (APPn, COM, tables, SOF, SOS, ...; restart markers not counted)
a JPEG may have up to its EOI. Bounds the Python work of the header and scan walks
(a file of 4-byte COM segments would otherwise cost a loop step per 4 bytes); real
files have a few dozen (EXIF, ICC and XMP chunks, tables, scans)."""

# A marker as libjpeg finds one: 0xFF, any 0xFF fill bytes, then a byte that is not 0
# (0xFF 0x00 is a stuffed data byte). Restart markers (D0-D7) carry no length and are
# skipped, so a restart-heavy entropy stream costs no Python steps.
_JPEG_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_structure_problem(data: bytes) -> str | None:
    """Why the JPEG ``data`` is refused before decoding (too many scans or segments), or
    None.

    Walks the file the way libjpeg reads it: from the SOI, find the next marker, skip a
    segment by its length field (so ``FF DA`` bytes inside an APPn/COM payload, such as
    an EXIF thumbnail's own scans, are never counted), and between segments search for
    the next marker (in entropy-coded data ``FF DA`` cannot occur by chance: a data
    byte 0xFF is always stuffed as ``FF 00``). Stops at the first EOI (libjpeg stops
    there too, so data appended after it -- MPF images, motion-photo video -- is not
    read) or a second SOI (libjpeg fails on it). A truncated file stops the walk; the
    decode reports it. Python work: one step per marker, at most
    :data:`MAX_JPEG_SEGMENTS` + 1; the searches between them are C-level.
    """
    i, n = 2, len(data)
    scans = segments = 0
    while i < n:
        m = _JPEG_MARKER.search(data, i)
        if m is None:
            return None
        code = data[m.end() - 1]
        if code in (0xD8, 0xD9):  # second SOI (error in libjpeg) / EOI: decoding ends
            return None
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            return f"more than {MAX_JPEG_SEGMENTS} JPEG marker segments"
        i = m.end()
        if code == 0x01:  # TEM: no length
            continue
        if i + 2 > n:
            return None
        if code == 0xDA:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                return (
                    f"a JPEG with more than {MAX_JPEG_SCANS} scans (progressive passes); "
                    "decoding it would cost a pass over the image per scan"
                )
        (length,) = struct.unpack(">H", data[i : i + 2])
        if length < 2:  # libjpeg fails on it
            return None
        i += length
    return None


def _sniff_jpeg(data: bytes) -> ImageInfo | None:
    i, n = 2, len(data)
    for _ in range(MAX_JPEG_SEGMENTS):  # fill bytes and standalone markers count too
        if i + 4 > n:
            break
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # standalone markers
            i += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI / SOS before any SOF
            return None
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        if marker in _SOF:
            if i + 9 > n:
                return None
            h, w = struct.unpack(">HH", data[i + 5 : i + 9])
            return ImageInfo("jpeg", int(w), int(h))
        i += 2 + length
    return None


def check_image_header(
    data: bytes,
    *,
    formats: tuple[ImageFormat, ...],
    max_pixels: int,
    where: str = "image",
) -> ImageInfo:
    """Header check before decoding: known format, allowed here, non-zero, under max_pixels;
    a JPEG also at most :data:`MAX_JPEG_SCANS` scans and :data:`MAX_JPEG_SEGMENTS` marker
    segments (a scan bomb is refused here, since a running decode cannot be stopped)."""
    if not data:
        raise ApiFault(Fault.IMAGE_DECODE, f"{where} decodes to zero bytes")
    info = sniff_image(data)
    allowed = "/".join("jpg/jpeg" if f == "jpeg" else f for f in formats)
    if info is None and data[:2] == b"\xff\xd8" and "jpeg" in formats:
        raise ApiFault(
            Fault.IMAGE_DECODE,
            f"{where} starts like a JPEG but its header cannot be read (no frame header "
            f"before the first scan or within {MAX_JPEG_SEGMENTS} marker segments, or a "
            "broken segment)",
        )
    if info is None:
        raise ApiFault(Fault.IMAGE_DECODE, f"{where} is not a {allowed} image")
    if info.format not in formats:
        raise ApiFault(
            Fault.IMAGE_DECODE, f"{where} is a {info.format} image; this API accepts {allowed}"
        )
    if info.width <= 0 or info.height <= 0:
        raise ApiFault(Fault.IMAGE_DECODE, f"{where} header says {info.width}x{info.height} pixels")
    if info.width * info.height > max_pixels:
        raise ApiFault(
            Fault.IMAGE_DECODE,
            f"{where} is {info.width}x{info.height} pixels, over the limit of {max_pixels} "
            "pixels (checked from the header, not decoded)",
        )
    if info.format == "jpeg":
        problem = _jpeg_structure_problem(data)
        if problem is not None:
            raise ApiFault(Fault.IMAGE_DECODE, f"{where} is {problem}; refused before decoding")
    return info


HAT_FORMATS: tuple[ImageFormat, ...] = ("png", "jpeg", "bmp")
FENCE_FORMATS: tuple[ImageFormat, ...] = ("png", "jpeg")


# -- requests ----------------------------------------------------------------------------


@dataclass(frozen=True)
class HatRequest:
    """A validated hard-hat/workwear request: the image file bytes, header checked."""

    image: bytes
    info: ImageInfo


def validate_hat(obj: Mapping[str, Any], limits: Limits) -> HatRequest:
    """Hard-hat/workwear body object -> :class:`HatRequest` (extra keys are ignored)."""
    if "image" not in obj:
        keys = ", ".join(repr(_short(k, 30)) for k in list(obj)[:5]) or "none"
        raise ApiFault(Fault.IMAGE_MISSING, f"no 'image' key in the request (keys: {keys})")
    value = obj["image"]
    if not isinstance(value, str):
        raise ApiFault(
            Fault.IMAGE_MISSING, f"'image' must be a base64 string, got a JSON {_json_type(value)}"
        )
    if not value.strip():
        raise ApiFault(Fault.IMAGE_MISSING, "'image' is an empty string")
    data = decode_base64_image(
        value, max_bytes=limits.max_image_bytes, too_large=Fault.IMAGE_TOO_LARGE
    )
    info = check_image_header(data, formats=HAT_FORMATS, max_pixels=limits.max_image_pixels)
    return HatRequest(image=data, info=info)


@dataclass(frozen=True)
class FenceRequest:
    """A validated fence request: the area text (parsed later) and the raw image entries.

    Entries are validated one by one by :func:`validate_fence_image` so a bad image fails
    only its own item.
    """

    images: list[Any]
    area: str


_FENCE_KEYS = frozenset({"image", "area"})
MAX_AREA_POINTS = 9
MAX_AREA_CHARS = 4096


def validate_fence(obj: Mapping[str, Any], limits: Limits) -> FenceRequest:
    """Fence body object -> :class:`FenceRequest`: keys, image list shape, area type."""
    keys = set(obj)
    if keys != _FENCE_KEYS:
        missing = sorted(_FENCE_KEYS - keys)
        extra = sorted(keys - _FENCE_KEYS)
        parts = []
        if missing:
            parts.append("missing " + ", ".join(repr(k) for k in missing))
        if extra:
            shown = ", ".join(repr(_short(k, 30)) for k in extra[:5])
            more = f" and {len(extra) - 5} more" if len(extra) > 5 else ""
            parts.append(f"unexpected {shown}{more}")
        raise ApiFault(Fault.KEYS, "; ".join(parts) + " (only 'image' and 'area' are accepted)")
    images = obj["image"]
    if not isinstance(images, list):
        raise ApiFault(
            Fault.IMAGE_NOT_LIST, f"'image' must be a list, got a JSON {_json_type(images)}"
        )
    if not 1 <= len(images) <= limits.max_fence_images:
        raise ApiFault(
            Fault.IMAGE_COUNT,
            f"'image' has {len(images)} entries; 1 to {limits.max_fence_images} are accepted",
        )
    area = obj["area"]
    if not isinstance(area, str):
        raise ApiFault(
            Fault.AREA_NOT_STRING, f"'area' must be a string, got a JSON {_json_type(area)}"
        )
    # Cheap bound before parsing: 9 points are 18 values, 17 commas. A 50 MB area string
    # is refused here rather than parsed number by number.
    if area.count(",") > 2 * MAX_AREA_POINTS - 1 or len(area) > MAX_AREA_CHARS:
        raise ApiFault(
            Fault.AREA_MALFORMED,
            f"area is too long ({area.count(',') + 1} values, {len(area)} characters); "
            f"expected 4 to {MAX_AREA_POINTS} points",
        )
    return FenceRequest(images=images, area=area)


def validate_fence_image(entry: Any, index: int, limits: Limits) -> tuple[bytes, ImageInfo]:
    """One fence image entry -> (file bytes, header info); faults name ``image[index]``."""
    where = f"image[{index}]"
    if entry is None or (isinstance(entry, str) and not entry.strip()):
        raise ApiFault(Fault.IMAGE_EMPTY, f"{where} is empty")
    if not isinstance(entry, str):
        raise ApiFault(
            Fault.IMAGE_DECODE, f"{where} must be a base64 string, got a JSON {_json_type(entry)}"
        )
    data = decode_base64_image(
        entry,
        max_bytes=limits.max_fence_body_bytes,
        too_large=Fault.IMAGE_TOO_LARGE,
        where=where,
    )
    info = check_image_header(
        data, formats=FENCE_FORMATS, max_pixels=limits.max_image_pixels, where=where
    )
    return data, info


def codes_markdown(api: Api) -> str:
    """The code table of ``api`` as markdown (used in the OpenAPI description)."""
    by_code: dict[int, list[str]] = {}
    for fault, code in CODES[api].items():
        if api != "fence" and fault in _FENCE_ONLY:
            continue
        by_code.setdefault(code, []).append(fault.value)
    rows = [f"| {c} | {'; '.join(by_code[c])} |" for c in sorted(by_code)]
    return "| code | cause |\n|---|---|\n" + "\n".join(rows)
