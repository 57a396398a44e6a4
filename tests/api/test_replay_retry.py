"""A request refused before its model started may be re-sent byte for byte.

The replay cache remembers a Sign once it is verified; a ``5000 gateway busy`` (or a
deadline, or a failure before inference) answered after that used nothing, so the gateway
forgets that Sign again (:meth:`ReplayCache.discard`) and the identical retry is served
instead of getting ``4010 request replayed``. A served request stays remembered.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from edge.api.auth import AuthError, Credentials, ReplayCache
from tests.api.server_fixture import Server, b64, jpeg_bytes, provider_headers, start_server

KEY = "k" * 16
NOW_MS = 1_750_000_000_000
MONO_MS = 10_000_000
IMG = b64(jpeg_bytes())


def test_discard_lets_the_same_sign_in_again_and_only_once() -> None:
    cache = ReplayCache(window_s=300)
    c = Credentials(KEY, str(NOW_MS), "a" * 32)
    cache.check_and_add(c, now_ms=NOW_MS, mono_ms=MONO_MS)
    assert cache.discard(Credentials(KEY, str(NOW_MS), "A" * 32))  # case-insensitive sign
    assert not cache.discard(c)
    assert len(cache) == 0
    cache.check_and_add(c, now_ms=NOW_MS + 10, mono_ms=MONO_MS + 10)
    with pytest.raises(AuthError) as ei:
        cache.check_and_add(c, now_ms=NOW_MS + 20, mono_ms=MONO_MS + 20)
    assert ei.value.check == "replayed"


def test_the_discarded_entry_does_not_forget_a_later_one_when_it_expires() -> None:
    """Accepted, discarded, then accepted again after the wall clock stepped back 100 s:
    the new entry is held 100 s longer in real time than the first one was; when the first
    one's heap entry expires it must not take the new one with it."""
    cache = ReplayCache(window_s=300)
    c = Credentials(KEY, str(NOW_MS), "a" * 32)
    cache.check_and_add(c, now_ms=NOW_MS, mono_ms=MONO_MS)  # held until mono +300 s
    cache.discard(c)
    cache.check_and_add(c, now_ms=NOW_MS - 100_000, mono_ms=MONO_MS + 1)  # held +400 s
    # 350 s later in real time, the wall clock past the window: the first entry expires.
    other = Credentials(KEY, str(NOW_MS + 251_000), "b" * 32)
    cache.check_and_add(other, now_ms=NOW_MS + 251_000, mono_ms=MONO_MS + 350_000)
    with pytest.raises(AuthError) as ei:
        cache.check_and_add(c, now_ms=NOW_MS + 251_000, mono_ms=MONO_MS + 350_001)
    assert ei.value.check == "replayed"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(
        tmp_path_factory.mktemp("gw"),
        api={"workers": 1, "queue_size": 0, "deadline_s": 30},
        slow_matmuls=400,
    ) as server:
        yield server


def _send(srv: Server, path: str, raw: bytes, headers: dict[str, str]) -> dict[str, Any]:
    doc = srv.contract(srv.http.post(srv.base_url + path, content=raw, headers=headers))
    return doc


def test_busy_request_retried_byte_for_byte_is_served_then_replayed(srv: Server) -> None:
    occupier = srv.create_app("occupier", calls=10)
    retrier = srv.create_app("retrier", calls=10)
    done: list[dict[str, Any]] = []
    t = threading.Thread(
        target=lambda: done.append(srv.post("hardhat", occupier, {"image": IMG}).json())
    )
    t.start()
    srv.wait_for(lambda: srv.health()["inflight"] == 1)
    path = srv.path("hardhat", retrier)
    raw = json.dumps({"image": IMG}).encode()
    headers = provider_headers(retrier.app_key, retrier.app_secret, path, raw)
    first = _send(srv, path, raw, headers)
    assert first["code"] == 5000 and "busy" in first["details"], first
    t.join(timeout=30)
    assert done and done[0]["code"] == 0, done
    srv.wait_for(lambda: srv.health()["inflight"] == 0)
    again = _send(srv, path, raw, headers)
    assert again["code"] == 0, again
    replay = _send(srv, path, raw, headers)
    assert replay["code"] == 4010 and "replayed" in replay["details"], replay
    with srv.store() as st:  # the busy answer drew no quota, the served retry one
        assert st.remaining(app_key=retrier.app_key, api="hardhat") == 9
