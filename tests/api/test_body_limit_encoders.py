"""The hard-hat/workwear body limit leaves room for what real JSON encoders write.

.NET's ``Convert.ToBase64String(..., InsertLineBreaks)`` puts CRLF every 76 characters
(escaped in JSON as ``\\r\\n``: +5.3 %) and ``System.Text.Json`` writes ``+`` as
``\\u002B`` (+7.8 %), so a 4.95 MB image (under the contract's 5 MiB) makes a body 13 %
over plain base64. The body limit is base64 + 25 % + 64 KiB; the decoded size is then
checked exactly (5 MiB + 1 byte -> 4002).
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import pytest

from edge.api import contract as C
from tests.api.server_fixture import Server, b64, jpeg_bytes, start_server

MIB = 1024 * 1024


def _dotnet_body(size: int, seed: int = 0) -> bytes:
    """``{"image": ...}`` as .NET writes it for a ``size``-byte JPEG-headed file."""
    head = jpeg_bytes()
    rng = np.random.default_rng(seed)
    data = head + rng.integers(0, 256, size - len(head), dtype=np.uint8).tobytes()
    s = b64(data)
    lined = "\r\n".join(s[i : i + 76] for i in range(0, len(s), 76))
    return json.dumps({"image": lined}).replace("+", "\\u002B").encode()


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("gw"), api={"deadline_s": 60}) as server:
        yield server


def test_limit_formula_covers_escaped_and_line_broken_base64() -> None:
    limit = C.hat_body_limit(5 * MIB)
    b64_len = (5 * MIB + 2) // 3 * 4
    assert limit == b64_len + b64_len // 4 + 64 * 1024
    assert len(_dotnet_body(5 * MIB)) < limit


def test_dotnet_encoded_image_under_5mib_is_not_refused_as_too_large(srv: Server) -> None:
    app = srv.create_app("dotnet", grants=("hardhat",), calls=10)
    raw = _dotnet_body(4_950_000)
    assert len(raw) > (5 * MIB + 2) // 3 * 4 * 21 // 20 + 64 * 1024  # over the old limit
    doc = srv.contract(srv.post("hardhat", app, raw))
    assert doc["code"] != 4002, doc
    # the bytes decode to a JPEG header followed by noise: refused as an image, not a size
    assert doc["code"] in (0, 4003, 4009), doc


def test_decoded_size_over_5mib_is_still_4002(srv: Server) -> None:
    app = srv.create_app("dotnet-big", grants=("hardhat",), calls=10)
    raw = _dotnet_body(5 * MIB + 1)
    assert len(raw) < C.hat_body_limit(5 * MIB)  # reaches the exact decoded-size check
    doc = srv.contract(srv.post("hardhat", app, raw))
    assert doc["code"] == 4002, doc
    assert str(5 * MIB) in doc["details"], doc
