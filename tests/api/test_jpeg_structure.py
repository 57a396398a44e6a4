"""JPEG structure limits checked before decoding (``check_image_header``): scan count
(a progressive "scan bomb" repeating its last scan costs libjpeg a pass over the image per
copy) and marker-segment count, walked the way libjpeg reads a file. Files are made by
cv2.imencode here and edited byte-wise; cv2.imdecode confirms what libjpeg makes of them."""

from __future__ import annotations

import struct

import cv2
import numpy as np
import pytest

from edge.api import contract as C
from edge.api.contract import MAX_JPEG_SCANS, MAX_JPEG_SEGMENTS, ApiFault, Fault

PIXELS = 40_000_000


def progressive(w: int = 96, h: int = 64) -> bytes:
    """A progressive JPEG (libjpeg's script: 10 scans) of a smooth image."""
    ramp = np.linspace(0, 255, w * h * 3).reshape(h, w, 3).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", ramp, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    return buf.tobytes()


def scans_of(data: bytes) -> int:
    return data.count(b"\xff\xda")


def with_extra_scans(data: bytes, copies: int) -> bytes:
    """``data`` with its last scan (SOS header + entropy data) repeated ``copies`` times."""
    eoi = data.rindex(b"\xff\xd9")
    last = data.rindex(b"\xff\xda")
    return data[:eoi] + data[last:eoi] * copies + data[eoi:]


def segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload


def after_soi(data: bytes, extra: bytes) -> bytes:
    return data[:2] + extra + data[2:]


def check(data: bytes) -> C.ImageInfo:
    return C.check_image_header(data, formats=C.HAT_FORMATS, max_pixels=PIXELS)


def refused(data: bytes) -> str:
    with pytest.raises(ApiFault) as ei:
        check(data)
    assert ei.value.fault is Fault.IMAGE_DECODE
    return ei.value.details


def decodes(data: bytes) -> bool:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None


def test_ordinary_files_pass() -> None:
    base = progressive()
    assert scans_of(base) == 10
    assert check(base).format == "jpeg"
    ok, baseline = cv2.imencode(".jpg", np.zeros((64, 96, 3), np.uint8))
    assert check(baseline.tobytes()).width == 96
    # restart markers every MCU: hundreds of FF D0..D7, none counted
    ok, rst = cv2.imencode(
        ".jpg",
        np.random.default_rng(1).integers(0, 255, (256, 256, 3), dtype=np.uint8),
        [cv2.IMWRITE_JPEG_RST_INTERVAL, 1, cv2.IMWRITE_JPEG_PROGRESSIVE, 1],
    )
    assert ok and rst.tobytes().count(b"\xff\xd0") > 50
    check(rst.tobytes())


def test_scan_limit_is_exact_and_the_refusal_says_why() -> None:
    base = progressive()
    at_limit = with_extra_scans(base, MAX_JPEG_SCANS - 10)
    over = with_extra_scans(base, MAX_JPEG_SCANS - 9)
    assert scans_of(at_limit) == MAX_JPEG_SCANS and scans_of(over) == MAX_JPEG_SCANS + 1
    check(at_limit)
    details = refused(over)
    assert f"more than {MAX_JPEG_SCANS} scans" in details and "refused before decoding" in details
    assert decodes(over)  # libjpeg would have decoded every one of them


def test_scan_bomb_is_refused() -> None:
    """The audit's shape: a small progressive file whose tiny last scan is repeated
    thousands of times (tens of KB, minutes of decoding at 4 MP); refused by its count."""
    ok, buf = cv2.imencode(
        ".jpg", np.full((2048, 2048, 3), 128, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    )
    assert ok
    base = buf.tobytes()
    last_scan = len(base) - 2 - base.rindex(b"\xff\xda")
    bomb = with_extra_scans(base, 5000)
    assert last_scan < 60 and len(bomb) < len(base) + 300_000
    assert "scans" in refused(bomb)


def test_sos_bytes_inside_segments_and_after_eoi_are_not_scans() -> None:
    """``FF DA`` inside an APPn/COM payload (an EXIF thumbnail is a whole JPEG with its own
    scans) is skipped by the segment's length, as libjpeg skips it; data after EOI (MPF
    images, motion-photo video) is never read by libjpeg and not counted."""
    base = progressive()
    many = with_extra_scans(base, 200)  # 210 scans as a blob
    thumb = segment(0xE1, b"Exif\x00\x00" + many[:60_000])
    comment = segment(0xFE, b"\xff\xda" * 1000)
    # before the frame header, between two scans, and after the image
    second_sos = base.index(b"\xff\xda", base.index(b"\xff\xda") + 2)
    data = after_soi(base, thumb)
    data = data.replace(base[second_sos:], comment + base[second_sos:])
    data += many
    assert scans_of(data) > 1000
    assert decodes(data)
    assert check(data).width == 96


def test_marker_segment_limit() -> None:
    base = progressive()
    com = segment(0xFE, b"")
    check(after_soi(base, com * (MAX_JPEG_SEGMENTS - 30)))
    details = refused(after_soi(base, com * MAX_JPEG_SEGMENTS))
    assert f"{MAX_JPEG_SEGMENTS} marker segments" in details
    # 5 MB of 4-byte segments or fill bytes before the frame header: one Python step per
    # segment would be ~1 s per image; both stop at the limit.
    assert "header cannot be read" in refused(after_soi(base, com * 1_250_000))
    assert "header cannot be read" in refused(after_soi(base, b"\xff" * 5_000_000))
    # ...and after it, between scans.
    sof = base.index(b"\xff\xda")
    flood = base[:sof] + com * 1_250_000 + base[sof:]
    assert "marker segments" in refused(flood)


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xd8\xff\xc0\x00\x11\x08\x00\x10\x00\x10\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01",
        progressive()[:200],  # truncated inside the tables
        progressive()[:-2],  # no EOI
    ],
)
def test_truncated_files_pass_the_walk_and_fail_in_the_decoder(data: bytes) -> None:
    """The walk refuses only what is costly; a truncated file is the decoder's to judge."""
    assert check(data).format == "jpeg"
