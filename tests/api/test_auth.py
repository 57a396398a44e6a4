"""Sign computation, header parsing, Timestamp window and replay cache (no server)."""

from __future__ import annotations

import hashlib
import json

import pytest

from edge.api.auth import (
    AuthError,
    Credentials,
    ReplayCache,
    SignHasher,
    check_timestamp,
    compute_sign,
    parse_credentials,
)
from edge.cloud.client import sign as client_sign

KEY, SECRET = "k" * 24, "s" * 32
PATH = "/v1/aiop/api/abcdefgh12345678/SafeHat/base/hat_detect"
NOW_MS = 1_780_000_000_000
MONO_MS = 5_000_000  # an injected monotonic clock (ms)


def provider_sign(key: str, secret: str, ts: str, path: str, body: str) -> str:
    """Exactly what the provider's Python sample does."""
    return hashlib.md5((key + secret + ts + path + body).encode("utf-8")).hexdigest()


def test_sign_matches_provider_sample_and_client() -> None:
    body = json.dumps({"image": "aGVsbG8=", "名": "中文"})
    ts = str(NOW_MS)
    want = provider_sign(KEY, SECRET, ts, PATH, body)
    assert compute_sign(KEY, SECRET, ts, PATH, body.encode("utf-8")) == want
    assert client_sign(KEY, SECRET, ts, PATH, body) == want
    assert len(want) == 32 and want == want.lower()


def test_hasher_incremental_equals_one_shot() -> None:
    body = b'{"image": "' + b"A" * 100_000 + b'"}'
    ts = str(NOW_MS)
    h = SignHasher(app_key=KEY, app_secret=SECRET, timestamp=ts, paths=[PATH])
    for i in range(0, len(body), 4096):
        h.update(body[i : i + 4096])
    h.verify(compute_sign(KEY, SECRET, ts, PATH, body))
    h.verify(compute_sign(KEY, SECRET, ts, PATH, body).upper())


def test_hasher_rejects_other_body_path_secret_without_leaking() -> None:
    body = b"{}"
    ts = str(NOW_MS)
    h = SignHasher(app_key=KEY, app_secret=SECRET, timestamp=ts, paths=[PATH])
    h.update(body)
    for bad in (
        compute_sign(KEY, SECRET, ts, PATH, b"{ }"),
        compute_sign(KEY, SECRET, ts, PATH + "x", body),
        compute_sign(KEY, "t" * 32, ts, PATH, body),
        compute_sign(KEY, SECRET, str(NOW_MS + 1), PATH, body),
    ):
        with pytest.raises(AuthError) as ei:
            h.verify(bad)
        assert ei.value.check == "bad_sign"
        assert SECRET not in str(ei.value)
        assert compute_sign(KEY, SECRET, ts, PATH, body) not in str(ei.value)


def test_hasher_accepts_any_listed_path() -> None:
    sample = "/v1/aiop/api/abc/electron/fence"
    real = "/v1/aiop/api/abc/ef-http/electron/fence"
    ts = str(NOW_MS)
    h = SignHasher(app_key=KEY, app_secret=SECRET, timestamp=ts, paths=[real, sample])
    h.update(b"{}")
    h.verify(compute_sign(KEY, SECRET, ts, sample, b"{}"))
    h.verify(compute_sign(KEY, SECRET, ts, real, b"{}"))


@pytest.mark.parametrize(
    ("headers", "check", "word"),
    [
        ({}, "missing_header", "AppKey"),
        ({"AppKey": KEY}, "missing_header", "Timestamp"),
        ({"AppKey": KEY, "Timestamp": str(NOW_MS)}, "missing_header", "Sign"),
        ({"AppKey": " ", "Timestamp": "1", "Sign": "a"}, "missing_header", "AppKey"),
        ({"AppKey": KEY, "Timestamp": "17800000000", "Sign": "a" * 32}, "malformed", "13 digits"),
        ({"AppKey": KEY, "Timestamp": "1780000000.00", "Sign": "a" * 32}, "malformed", "13"),
        ({"AppKey": KEY, "Timestamp": str(NOW_MS), "Sign": "g" * 32}, "malformed", "32 hex"),
        ({"AppKey": KEY, "Timestamp": str(NOW_MS), "Sign": "a" * 31}, "malformed", "32 hex"),
        ({"AppKey": "x" * 200, "Timestamp": str(NOW_MS), "Sign": "a" * 32}, "malformed", "128"),
    ],
)
def test_parse_credentials_failures(headers: dict[str, str], check: str, word: str) -> None:
    with pytest.raises(AuthError) as ei:
        parse_credentials(headers)
    assert ei.value.check == check
    assert word in str(ei.value)
    assert ei.value.code == 4010


def test_parse_credentials_ok_lowercases_sign() -> None:
    c = parse_credentials({"AppKey": KEY, "Timestamp": str(NOW_MS), "Sign": "AB" * 16})
    assert c == Credentials(KEY, str(NOW_MS), "ab" * 16)
    assert c.timestamp_ms == NOW_MS


@pytest.mark.parametrize(
    ("offset_s", "ok"), [(0, True), (299, True), (-299, True), (301, False), (-301, False)]
)
def test_timestamp_window(offset_s: int, ok: bool) -> None:
    c = Credentials(KEY, str(NOW_MS + offset_s * 1000), "a" * 32)
    if ok:
        check_timestamp(c, skew_s=300, now_ms=NOW_MS)
    else:
        with pytest.raises(AuthError) as ei:
            check_timestamp(c, skew_s=300, now_ms=NOW_MS)
        assert ei.value.check == "timestamp"
        assert ("ahead" if offset_s > 0 else "behind") in str(ei.value)


def test_replay_cache_rejects_repeat_inside_window_and_forgets_after() -> None:
    cache = ReplayCache(window_s=300)
    c = Credentials(KEY, str(NOW_MS), "a" * 32)
    cache.check_and_add(c, now_ms=NOW_MS, mono_ms=MONO_MS)
    with pytest.raises(AuthError) as ei:
        cache.check_and_add(c, now_ms=NOW_MS + 1000, mono_ms=MONO_MS + 1000)
    assert ei.value.check == "replayed"
    # Upper-case variant of the same sign is the same request.
    with pytest.raises(AuthError):
        cache.check_and_add(
            Credentials(KEY, str(NOW_MS), "A" * 32), now_ms=NOW_MS + 2000, mono_ms=MONO_MS + 2000
        )
    # Another sign or timestamp is a new request.
    cache.check_and_add(Credentials(KEY, str(NOW_MS), "b" * 32), now_ms=NOW_MS, mono_ms=MONO_MS)
    cache.check_and_add(Credentials(KEY, str(NOW_MS + 1), "a" * 32), now_ms=NOW_MS, mono_ms=MONO_MS)
    assert len(cache) == 3
    # After the timestamp left the window, entries expire (memory bounded).
    later = NOW_MS + 400_000
    cache.check_and_add(
        Credentials(KEY, str(later), "c" * 32), now_ms=later, mono_ms=MONO_MS + 400_000
    )
    assert len(cache) == 1


def _accept(cache: ReplayCache, ts: int, sign: str, wall: int, mono: int) -> None:
    c = Credentials(KEY, str(ts), sign)
    check_timestamp(c, skew_s=300, now_ms=wall)  # the server checks the window first
    cache.check_and_add(c, now_ms=wall, mono_ms=mono)


def test_replay_refused_after_the_clock_steps_forward_and_back() -> None:
    """A bad NTP answer steps the clock 1 h ahead, the next one corrects it 2 s later:
    a request accepted just before is inside the window again and must still be refused
    (by the wall clock alone its entry was forgotten at the forward step)."""
    cache = ReplayCache(window_s=300)
    _accept(cache, NOW_MS, "a" * 32, NOW_MS, MONO_MS)
    ahead = NOW_MS + 3_600_000
    _accept(cache, ahead, "b" * 32, ahead, MONO_MS + 1000)  # traffic in sync with the step
    back = NOW_MS + 2000
    with pytest.raises(AuthError) as ei:
        _accept(cache, NOW_MS, "a" * 32, back, MONO_MS + 2000)
    assert ei.value.check == "replayed"
    # Memory stays bounded: "a" is forgotten once both clocks are past its window; "b"
    # (Timestamp 1 h ahead) is held until the wall clock gets there.
    _accept(cache, back + 700_000, "c" * 32, back + 700_000, MONO_MS + 702_000)
    assert len(cache) == 2


def test_replay_refused_after_the_clock_steps_back() -> None:
    """NTP steps a 2 h fast clock back: the requests of the last window before the step
    are held until the wall clock passes their Timestamp again (a replay sent then passes
    the Timestamp check), while later traffic expires as usual (memory: one extra window)."""
    cache = ReplayCache(window_s=300)
    _accept(cache, NOW_MS, "a" * 32, NOW_MS, MONO_MS)
    wall, mono = NOW_MS - 7_200_000, MONO_MS
    for i in range(1, 7_201):  # 2 h of one request a second after the step
        wall, mono = wall + 1000, mono + 1000
        _accept(cache, wall, f"{i:032x}", wall, mono)
    assert len(cache) <= 300 + 2  # one window of traffic + the pre-step entry
    with pytest.raises(AuthError) as ei:
        _accept(cache, NOW_MS, "a" * 32, wall + 1000, mono + 1000)
    assert ei.value.check == "replayed"


def test_replay_cache_full_fails_closed() -> None:
    cache = ReplayCache(window_s=300, max_entries=2)
    cache.check_and_add(Credentials(KEY, str(NOW_MS), "a" * 32), now_ms=NOW_MS)
    cache.check_and_add(Credentials(KEY, str(NOW_MS), "b" * 32), now_ms=NOW_MS)
    with pytest.raises(AuthError) as ei:
        cache.check_and_add(Credentials(KEY, str(NOW_MS), "c" * 32), now_ms=NOW_MS)
    assert ei.value.check == "replay_cache_full"
    # The earlier entries still protect.
    with pytest.raises(AuthError) as ei:
        cache.check_and_add(Credentials(KEY, str(NOW_MS), "a" * 32), now_ms=NOW_MS)
    assert ei.value.check == "replayed"
