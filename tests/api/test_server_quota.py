"""Quota on a real gateway: exhaustion answers 4029, the draw is atomic under
concurrency (200 concurrent requests against 50 calls succeed exactly 50 times), and
an unmetered gateway draws nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.api.store import AppRecord
from tests.api.server_fixture import Server, b64, jpeg_bytes, provider_headers, start_server

IMG = b64(jpeg_bytes())
FULL_AREA = "0,0,63,0,63,63,0,63"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # 200 connections from one address: above the default per-client cap (64), which
    # would close the extra ones unanswered (tests/api/test_server_overload.py)
    api = {"workers": 2, "queue_size": 400, "max_connections_per_client": 256}
    with start_server(tmp_path_factory.mktemp("gw"), api=api) as server:
        yield server


async def _burst(srv: Server, app: AppRecord, api: str, body: bytes, n: int) -> list[int]:
    path = srv.path(api, app)
    base_ts = int(time.time() * 1000)
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(limits=limits, timeout=60.0) as client:

        async def one(i: int) -> int:
            # Distinct Timestamps: the same (AppKey, Timestamp, Sign) would be a replay.
            h = provider_headers(app.app_key, app.app_secret, path, body, str(base_ts - i))
            r = await client.post(srv.base_url + path, content=body, headers=h)
            assert r.status_code == 200
            return int(r.json()["code"])

        return list(await asyncio.gather(*(one(i) for i in range(n))))


@pytest.mark.parametrize(
    ("api", "body"),
    [
        ("hardhat", {"image": IMG}),
        ("fence", {"image": [IMG], "area": FULL_AREA}),
    ],
)
def test_200_concurrent_against_50_calls(srv: Server, api: str, body: dict[str, object]) -> None:
    app = srv.create_app(f"burst-{api}"[:15], calls=50)
    codes = asyncio.run(_burst(srv, app, api, json.dumps(body).encode(), 200))
    assert Counter(codes) == {0: 50, 4029: 150}
    with srv.store() as st:
        (pkg,) = st.quota(app.app_key, api=api)
        assert (pkg.used, pkg.remaining) == (50, 0)


def test_exhaustion_then_new_package(srv: Server) -> None:
    app = srv.create_app("topped-up", grants=["workwear"], calls=2)
    for _ in range(2):
        assert srv.contract(srv.post("workwear", app, {"image": IMG}))["code"] == 0
    doc = srv.contract(srv.post("workwear", app, {"image": IMG}))
    assert doc["code"] == 4029 and "used up" in doc["details"]
    with srv.store() as st:
        st.add_package(app=app.app_key, api="workwear", tier="100k", calls=1)
    # The gateway remembers an exhausted quota for at most one second.
    time.sleep(1.1)
    assert srv.contract(srv.post("workwear", app, {"image": IMG}))["code"] == 0
    assert srv.contract(srv.post("workwear", app, {"image": IMG}))["code"] == 4029


def test_stacked_packages_draw_from_earliest_expiry(srv: Server) -> None:
    from datetime import datetime, timedelta, timezone

    app = srv.create_app("stacked", grants=["hardhat"], calls=None)
    with srv.store() as st:
        later = st.add_package(app=app.app_key, api="hardhat", tier="100k", calls=5)
        earlier = st.add_package(
            app=app.app_key,
            api="hardhat",
            tier="100k",
            calls=2,
            start=datetime.now(timezone.utc) - timedelta(days=30),
        )
    for _ in range(3):
        assert srv.contract(srv.post("hardhat", app, {"image": IMG}))["code"] == 0
    with srv.store() as st:
        used = {p.id: p.used for p in st.quota(app.app_key)}
    assert used == {earlier.id: 2, later.id: 1}


def test_unmetered_gateway_draws_nothing(tmp_path: Path) -> None:
    with start_server(tmp_path, api={"metered": False}) as s:
        app = s.create_app("free-app", calls=None)
        assert s.contract(s.post("hardhat", app, {"image": IMG}))["code"] == 0
        # Auth stays on.
        doc = s.contract(s.post("hardhat", app, {"image": IMG}, ts="1000000000000"))
        assert doc["code"] == 4010
        with s.store() as st:
            assert st.quota(app.app_key) == []
