"""The code table and request validation of edge/api/contract.py (no server)."""

from __future__ import annotations

import base64
import json
import struct
import zlib

import cv2
import numpy as np
import pytest

from edge.api import contract as C
from edge.api.contract import ApiFault, Fault, Limits
from edge.errors import (
    AreaError,
    AreaOutsideImageError,
    EdgeError,
    ImageDecodeError,
    InferenceError,
)

LIMITS = Limits()


def png(w: int = 8, h: int = 6) -> bytes:
    ok, buf = cv2.imencode(".png", np.full((h, w, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def jpeg(w: int = 8, h: int = 6) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.full((h, w, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def bmp(w: int = 8, h: int = 6) -> bytes:
    ok, buf = cv2.imencode(".bmp", np.full((h, w, 3), 128, np.uint8))
    assert ok
    return buf.tobytes()


def png_header_only(w: int, h: int) -> bytes:
    """A PNG signature + IHDR claiming w x h pixels (no pixel data)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- the table -------------------------------------------------------------------------


CONTRACT_HAT = {
    4001: Fault.IMAGE_MISSING,
    4002: Fault.IMAGE_TOO_LARGE,
    4003: Fault.IMAGE_DECODE,
    4004: Fault.METHOD,
    4005: Fault.EMPTY_BODY,
    4006: Fault.NOT_OBJECT,
    5000: Fault.SERVICE,
}
CONTRACT_FENCE = {
    4000: Fault.UNKNOWN_PATH,
    4001: Fault.METHOD,
    4002: Fault.BODY_TOO_LARGE,
    4003: Fault.NOT_JSON,
    4004: Fault.NOT_OBJECT,
    4005: Fault.KEYS,
    4006: Fault.IMAGE_NOT_LIST,
    4007: Fault.IMAGE_COUNT,
    4008: Fault.IMAGE_EMPTY,
    4009: Fault.IMAGE_DECODE,
    4011: Fault.AREA_NOT_STRING,
    4012: Fault.AREA_MALFORMED,
    4013: Fault.AREA_OUTSIDE,
    5000: Fault.SERVICE,
    5001: Fault.INFERENCE,
    5002: Fault.DATABASE,
}


@pytest.mark.parametrize("api", ["hardhat", "workwear"])
@pytest.mark.parametrize(("code", "fault"), sorted(CONTRACT_HAT.items()))
def test_hat_codes_match_contract(api: C.Api, code: int, fault: Fault) -> None:
    assert C.code_for(api, fault) == code


@pytest.mark.parametrize(("code", "fault"), sorted(CONTRACT_FENCE.items()))
def test_fence_codes_match_contract(code: int, fault: Fault) -> None:
    assert C.code_for("fence", fault) == code


@pytest.mark.parametrize("api", C.APIS)
def test_every_fault_has_a_code_on_every_api(api: C.Api) -> None:
    for fault in Fault:
        code = C.code_for(api, fault)
        assert 4000 <= code <= 5002
    assert C.code_for(api, Fault.UNKNOWN_PATH) == 4000
    assert C.code_for(api, Fault.AUTH) == 4010
    assert C.code_for(api, Fault.QUOTA) == 4029


@pytest.mark.parametrize("api", C.APIS)
def test_client_faults_never_map_to_5xxx(api: C.Api) -> None:
    server = {
        Fault.SERVICE,
        Fault.INFERENCE,
        Fault.DATABASE,
        Fault.BUSY,
        Fault.DEADLINE,
    }
    for fault in Fault:
        assert (C.code_for(api, fault) >= 5000) == (fault in server), fault


def test_database_and_busy_codes_per_api() -> None:
    assert C.code_for("fence", Fault.DATABASE) == 5002
    assert C.code_for("hardhat", Fault.DATABASE) == 5000
    assert C.code_for("fence", Fault.BUSY) == 5000
    assert C.code_for("workwear", Fault.DEADLINE) == 5000


def test_rest_statuses() -> None:
    assert C.rest_status(Fault.AUTH) == 401
    assert C.rest_status(Fault.QUOTA) == 429
    assert C.rest_status(Fault.METHOD) == 405
    assert C.rest_status(Fault.BODY_TOO_LARGE) == 413
    assert C.rest_status(Fault.UNKNOWN_PATH) == 404
    assert C.rest_status(Fault.NOT_JSON) == 400
    assert C.rest_status(Fault.SERVICE) == 500


@pytest.mark.parametrize(
    ("exc", "fault"),
    [
        (AreaError("x"), Fault.AREA_MALFORMED),
        (AreaOutsideImageError("x"), Fault.AREA_OUTSIDE),
        (ImageDecodeError("x"), Fault.IMAGE_DECODE),
        (InferenceError("x"), Fault.INFERENCE),
        (EdgeError("x", code=5002), Fault.DATABASE),
        (EdgeError("x"), Fault.SERVICE),
        (ValueError("x"), Fault.SERVICE),
    ],
)
def test_fault_for_error(exc: BaseException, fault: Fault) -> None:
    assert C.fault_for_error(exc) is fault


def test_codes_markdown_lists_every_code() -> None:
    md = C.codes_markdown("fence")
    for code in CONTRACT_FENCE:
        assert f"| {code} |" in md


# -- JSON ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "fault"),
    [
        (b"", Fault.EMPTY_BODY),
        (b"  \n\t", Fault.EMPTY_BODY),
        (b"\xff\xfe{}", Fault.NOT_JSON),
        (b"{", Fault.NOT_JSON),
        (b'{"a": NaN}', Fault.NOT_JSON),
        (b"[1]", Fault.NOT_OBJECT),
        (b"null", Fault.NOT_OBJECT),
        (b'"x"', Fault.NOT_OBJECT),
        (b"[" * 100_000 + b"]" * 100_000, Fault.NOT_JSON),
    ],
)
def test_parse_json_object_faults(body: bytes, fault: Fault) -> None:
    with pytest.raises(ApiFault) as ei:
        C.parse_json_object(body)
    assert ei.value.fault is fault
    assert ei.value.details


def test_parse_json_object_ok() -> None:
    assert C.parse_json_object(b' {"image": "x"} ') == {"image": "x"}


# -- images ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "fmt", "size"),
    [
        (png(17, 5), "png", (17, 5)),
        (jpeg(33, 21), "jpeg", (33, 21)),
        (bmp(9, 4), "bmp", (9, 4)),
        (png_header_only(10000, 10000), "png", (10000, 10000)),
    ],
)
def test_sniff_image(data: bytes, fmt: str, size: tuple[int, int]) -> None:
    info = C.sniff_image(data)
    assert info is not None
    assert (info.format, info.width, info.height) == (fmt, *size)


@pytest.mark.parametrize(
    "data", [b"", b"GIF89a....", b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\nxxxx", b"hello world"]
)
def test_sniff_rejects_non_images(data: bytes) -> None:
    assert C.sniff_image(data) is None


def test_header_pixel_limit_before_decoding() -> None:
    with pytest.raises(ApiFault) as ei:
        C.check_image_header(
            png_header_only(10000, 10000), formats=C.HAT_FORMATS, max_pixels=40_000_000
        )
    assert ei.value.fault is Fault.IMAGE_DECODE
    assert "10000x10000" in ei.value.details


def test_fence_rejects_bmp() -> None:
    with pytest.raises(ApiFault) as ei:
        C.validate_fence_image(b64(bmp()), 0, LIMITS)
    assert ei.value.fault is Fault.IMAGE_DECODE
    assert "bmp" in ei.value.details


@pytest.mark.parametrize(
    "text",
    [
        "data:image/png;base64," + b64(png()),
        b64(png())[:40] + "\n" + b64(png())[40:],
        b64(png()).rstrip("="),
        base64.urlsafe_b64encode(png()).decode(),
    ],
)
def test_lenient_base64_forms(text: str) -> None:
    assert C.decode_base64_image(text, max_bytes=10**6, too_large=Fault.IMAGE_TOO_LARGE) == png()


@pytest.mark.parametrize("text", ["@@@@", "abcde", "a===", "ab=c"])
def test_bad_base64(text: str) -> None:
    with pytest.raises(ApiFault) as ei:
        C.decode_base64_image(text, max_bytes=10**6, too_large=Fault.IMAGE_TOO_LARGE)
    assert ei.value.fault is Fault.IMAGE_DECODE


def test_decoded_size_is_checked_exactly_without_decoding() -> None:
    limit = 5 * 1024 * 1024
    ok = "A" * ((limit // 3) * 4)  # exactly limit - limit % 3 bytes
    assert len(C.decode_base64_image(ok, max_bytes=limit, too_large=Fault.IMAGE_TOO_LARGE)) <= limit
    over = b64(b"\0" * (limit + 1))
    with pytest.raises(ApiFault) as ei:
        C.decode_base64_image(over, max_bytes=limit, too_large=Fault.IMAGE_TOO_LARGE)
    assert ei.value.fault is Fault.IMAGE_TOO_LARGE
    assert str(limit + 1) in ei.value.details


def test_hat_body_limit_fits_a_5mib_image() -> None:
    limit = C.hat_body_limit(5 * 1024 * 1024)
    body = json.dumps({"image": b64(b"\0" * (5 * 1024 * 1024))})
    assert len(body) < limit < 9 * 1024 * 1024


# -- request objects ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "fault"),
    [
        ({}, Fault.IMAGE_MISSING),
        ({"img": b64(png())}, Fault.IMAGE_MISSING),
        ({"image": 3}, Fault.IMAGE_MISSING),
        ({"image": None}, Fault.IMAGE_MISSING),
        ({"image": ["x"]}, Fault.IMAGE_MISSING),
        ({"image": "  "}, Fault.IMAGE_MISSING),
        ({"image": "!!!!"}, Fault.IMAGE_DECODE),
        ({"image": b64(b"not an image at all")}, Fault.IMAGE_DECODE),
        ({"image": b64(png_header_only(10000, 10000))}, Fault.IMAGE_DECODE),
    ],
)
def test_validate_hat_faults(obj: dict[str, object], fault: Fault) -> None:
    with pytest.raises(ApiFault) as ei:
        C.validate_hat(obj, LIMITS)
    assert ei.value.fault is fault
    assert C.code_for("hardhat", fault) in {4001, 4002, 4003}


def test_validate_hat_ok_ignores_extra_keys() -> None:
    req = C.validate_hat({"image": b64(jpeg(20, 10)), "other": 1}, LIMITS)
    assert (req.info.format, req.info.width, req.info.height) == ("jpeg", 20, 10)


@pytest.mark.parametrize(
    ("obj", "fault"),
    [
        ({"image": ["x"]}, Fault.KEYS),
        ({"area": "1,2"}, Fault.KEYS),
        ({"image": ["x"], "area": "1", "extra": 1}, Fault.KEYS),
        ({"image": "x", "area": "1"}, Fault.IMAGE_NOT_LIST),
        ({"image": {}, "area": "1"}, Fault.IMAGE_NOT_LIST),
        ({"image": [], "area": "1"}, Fault.IMAGE_COUNT),
        ({"image": ["x"] * 33, "area": "1"}, Fault.IMAGE_COUNT),
        ({"image": ["x"], "area": 5}, Fault.AREA_NOT_STRING),
        ({"image": ["x"], "area": ["1", "2"]}, Fault.AREA_NOT_STRING),
        ({"image": ["x"], "area": ",".join(["1"] * 19)}, Fault.AREA_MALFORMED),
        ({"image": ["x"], "area": "1," * 5_000_000}, Fault.AREA_MALFORMED),
        ({"image": ["x"], "area": "1" * 5000}, Fault.AREA_MALFORMED),
    ],
)
def test_validate_fence_faults(obj: dict[str, object], fault: Fault) -> None:
    with pytest.raises(ApiFault) as ei:
        C.validate_fence(obj, LIMITS)
    assert ei.value.fault is fault


def test_validate_fence_keys_details_name_the_keys() -> None:
    with pytest.raises(ApiFault) as ei:
        C.validate_fence({"image": [], "areas": "x"}, LIMITS)
    assert "'area'" in ei.value.details and "'areas'" in ei.value.details


@pytest.mark.parametrize(
    ("entry", "fault"),
    [
        (None, Fault.IMAGE_EMPTY),
        ("", Fault.IMAGE_EMPTY),
        ("   ", Fault.IMAGE_EMPTY),
        (7, Fault.IMAGE_DECODE),
        ("%%%%", Fault.IMAGE_DECODE),
        (b64(b"GIF89a-not-accepted"), Fault.IMAGE_DECODE),
    ],
)
def test_validate_fence_image_faults(entry: object, fault: Fault) -> None:
    with pytest.raises(ApiFault) as ei:
        C.validate_fence_image(entry, 3, LIMITS)
    assert ei.value.fault is fault
    assert "image[3]" in ei.value.details


def test_answer_bodies() -> None:
    assert C.failure_body(4010, "why") == {"code": 4010, "message": "error", "details": "why"}
    hat = C.hat_success_body([{"box": [1, 2, 3, 4], "classname": "red_hat", "score": 0.5}])
    assert hat["code"] == 0 and hat["message"] == "success" and hat["result"] is hat["data"]
    fence = C.fence_success_body([{"target_num": 0, "location": []}], 1, 0)
    assert fence["message"] == {"success": 1, "fail": 0}
