"""Image input on a real gateway (uvicorn subprocess, real SQLite, tiny ONNX models): a
JPEG "scan bomb" is refused before decoding and before the quota draw, and a JPEG with an
EXIF orientation tag is answered in the frame its header states (the frame ``area`` is
checked against); the CLI's ``read_image`` decodes local files in that frame too."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import cv2
import numpy as np

from edge.api.contract import MAX_JPEG_SCANS
from edge.cli import read_image
from tests.api.server_fixture import b64, start_server


def progressive(w: int, h: int) -> bytes:
    ok, buf = cv2.imencode(
        ".jpg", np.full((h, w, 3), (200, 80, 20), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]
    )
    assert ok
    return buf.tobytes()


def scan_bomb(w: int, h: int, copies: int) -> bytes:
    """A progressive JPEG with its (tiny) last scan repeated ``copies`` times."""
    data = progressive(w, h)
    eoi = data.rindex(b"\xff\xd9")
    last = data.rindex(b"\xff\xda")
    return data[:eoi] + data[last:eoi] * copies + data[eoi:]


def with_orientation(data: bytes, orientation: int) -> bytes:
    """``data`` (a JPEG) with an EXIF APP1 segment holding only the Orientation tag."""
    ifd = struct.pack(">H", 1) + struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff = b"MM\x00*" + struct.pack(">I", 8) + ifd + struct.pack(">I", 0)
    payload = b"Exif\x00\x00" + tiff
    return data[:2] + b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload + data[2:]


def test_scan_bomb_refused_before_decoding_and_quota(tmp_path: Path) -> None:
    # 1 MP, 20000 copies of a ~12-byte scan: ~250 KB that libjpeg would spend ~13 s on.
    bomb = scan_bomb(1024, 1024, 20_000)
    assert len(bomb) < 300_000
    normal = progressive(1024, 1024)
    with start_server(tmp_path) as s:
        app = s.create_app("scan-app", calls=10)
        assert s.contract(s.post("hardhat", app, {"image": b64(normal)}))["code"] == 0

        t0 = time.monotonic()
        doc = s.contract(s.post("hardhat", app, {"image": b64(bomb)}))
        took = time.monotonic() - t0
        assert doc["code"] == 4003, doc
        assert f"more than {MAX_JPEG_SCANS} scans" in doc["details"]
        assert took < 5.0  # no decode (the pool would be busy for ~13 s)

        doc = s.contract(
            s.post(
                "fence",
                app,
                {"image": [b64(bomb), b64(normal)], "area": "0,0,1000,0,1000,1000,0,1000"},
            )
        )
        assert doc["code"] == 0 and doc["message"] == {"success": 1, "fail": 1}, doc
        assert doc["result"][0]["error"]["code"] == 4009
        assert "scans" in doc["result"][0]["error"]["details"]

        # A normal request is answered at once after them (no worker is decoding).
        t0 = time.monotonic()
        assert s.contract(s.post("workwear", app, {"image": b64(normal)}))["code"] == 0
        assert time.monotonic() - t0 < 5.0
        with s.store() as st:  # the refused image drew no call
            assert st.remaining(app_key=app.app_key, api="hardhat") == 9
            assert st.remaining(app_key=app.app_key, api="fence") == 9


def test_exif_orientation_is_ignored(tmp_path: Path) -> None:
    """A 64x48 JPEG tagged "rotate 90 CW" (orientation 6): the area (x up to 62, valid
    only in the 64-wide header frame) and every box are in the header frame, exactly as for
    the same file without the tag. Decoding with rotation (48x64 pixels) moved the planted
    hats and put the fence person outside the area."""
    plain = progressive(64, 48)
    tagged = with_orientation(plain, 6)
    rotated = cv2.imdecode(np.frombuffer(tagged, np.uint8), cv2.IMREAD_COLOR)
    assert rotated is not None and rotated.shape == (64, 48, 3)  # what a default decode makes
    area = "1,1,62,1,62,46,1,46"
    with start_server(tmp_path) as s:
        app = s.create_app("exif-app", calls=10)
        answers = {}
        for name, data in (("plain", plain), ("tagged", tagged)):
            hat = s.contract(s.post("hardhat", app, {"image": b64(data)}))
            fence = s.contract(s.post("fence", app, {"image": [b64(data)], "area": area}))
            assert hat["code"] == 0 and fence["code"] == 0, (hat, fence)
            answers[name] = (hat["result"], fence["result"])
        hats, fences = answers["plain"]
        assert len(hats) == 2 and fences[0]["target_num"] == 2  # the person and the car
        assert answers["tagged"] == answers["plain"]
        for loc in fences[0]["location"]:  # boxes lie in the 64x48 frame
            assert loc["left"] + loc["width"] <= 64 and loc["top"] + loc["height"] <= 48


def test_cli_reads_the_header_frame_like_the_api(tmp_path: Path) -> None:
    """``safety-edge detect`` checks ``--area`` against the decoded image: it must be the
    64x48 header frame the API uses, not the 48x64 EXIF-rotated one."""
    plain = progressive(64, 48)
    (tmp_path / "plain.jpg").write_bytes(plain)
    (tmp_path / "tagged.jpg").write_bytes(with_orientation(plain, 6))
    got = read_image(tmp_path / "tagged.jpg")
    assert got.shape == (48, 64, 3)
    assert np.array_equal(got, read_image(tmp_path / "plain.jpg"))
