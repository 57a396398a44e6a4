"""Admin surface hardening: the bearer token of ``/console/api`` shares the login form's
throttle (per client address, IPv6 by /64), the throttle table evicts its oldest entries
instead of forgetting everyone when full, weak or placeholder admin tokens are reported
(``config check``, the log, ``/console/api/status``) and the placeholder is refused, and
malformed console input (event ids, zone sizes, deeply nested JSON, times) gets a 4xx
with a reason instead of a bare 500.

Server tests run a real ``safety-edge serve`` (uvicorn subprocess); a second client
address is 127.0.0.2, which Linux routes to the loopback interface like 127.0.0.1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from edge.api.console.auth import (
    LOGIN_FAILURES,
    MIN_ADMIN_TOKEN_CHARS,
    LoginThrottle,
    admin_token_problem,
    throttle_key,
)
from edge.service.config_check import check_text
from tests.api.server_fixture import ADMIN_TOKEN, Server, console_login, start_server


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


# -- the throttle table ------------------------------------------------------------------


def test_a_full_throttle_table_evicts_its_oldest_entries_not_everyone() -> None:
    clock = Clock()
    th = LoginThrottle(failures=2, window_s=60, clock=clock, max_clients=3)
    for client in ("a", "b", "c"):
        clock.t += 1
        th.failed(client)
        th.failed(client)
    assert all(th.blocked(c) > 0 for c in "abc")
    clock.t += 1
    th.failed("d")  # one more address than the table holds: "a" (oldest) goes
    assert th.blocked("a") == 0.0
    assert th.blocked("b") > 0 and th.blocked("c") > 0
    assert len(th) == 3


def test_a_spray_of_addresses_does_not_reset_a_blocked_client() -> None:
    """The default table (10 000 addresses): the old code cleared it on the 10 001st."""
    th = LoginThrottle(clock=Clock())
    for i in range(10_000):
        th.failed(f"10.{i // 256}.{i % 256}.1")
    for _ in range(LOGIN_FAILURES):
        th.failed("192.0.2.7")
    assert th.blocked("192.0.2.7") > 0
    assert len(th) == 10_000


def test_an_entry_that_fails_again_is_kept_over_older_ones() -> None:
    clock = Clock()
    th = LoginThrottle(failures=2, window_s=60, clock=clock, max_clients=2)
    th.failed("a")
    clock.t += 1
    th.failed("b")
    clock.t += 1
    th.failed("a")  # "a" is now the most recently failed
    th.failed("c")  # evicts "b", not "a"
    assert th.blocked("a") > 0 and len(th) == 2


@pytest.mark.parametrize(
    ("host", "key"),
    [
        ("192.0.2.7", "192.0.2.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("2001:db8:1:2::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:3::1", "2001:db8:1:3::/64"),
        ("::ffff:192.0.2.7", "192.0.2.7"),  # IPv4-mapped: the IPv4 address
        ("fe80::1%eth0", "fe80::/64"),
        ("?", "?"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_throttle_keys_group_ipv6_by_64_prefix(host: str, key: str) -> None:
    assert throttle_key(host) == key


# -- token strength -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("token", "kind"),
    [
        (None, None),
        ("change-me", "placeholder"),
        ("  CHANGE-ME ", "placeholder"),
        ("changeme", "placeholder"),
        ("short-token", "weak"),
        ("x" * (MIN_ADMIN_TOKEN_CHARS - 1), "weak"),
        ("x" * MIN_ADMIN_TOKEN_CHARS, None),
        (ADMIN_TOKEN, None),
    ],
)
def test_admin_token_problems(token: str | None, kind: str | None) -> None:
    got = admin_token_problem(token)
    assert (got[0] if got else None) == kind


def _token_problems(text: str) -> list[tuple[str, int | None, str, str]]:
    config, problems = check_text(text, environment=False)
    assert config is not None  # never an error: an installed gateway still starts
    return [(p.path, p.line, p.severity, p.message) for p in problems if "admin" in p.path]


def test_config_check_warns_about_placeholder_and_short_admin_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SAFETY_EDGE_ADMIN_TOKEN", raising=False)
    ((path, line, sev, msg),) = _token_problems("api:\n  port: 8080\n  admin_token: change-me\n")
    assert (path, line, sev) == ("api.admin_token", 3, "warning")
    assert "placeholder" in msg and "console" in msg and "off" in msg
    ((path, line, sev, msg),) = _token_problems("api:\n  admin_token: short-token\n")
    assert (path, line, sev) == ("api.admin_token", 2, "warning")
    assert "11 characters" in msg and f"at least {MIN_ADMIN_TOKEN_CHARS}" in msg
    assert _token_problems("api:\n  admin_token: 3f9a1c0d4b7e2a8c5d6f\n") == []
    assert _token_problems("api:\n  port: 8080\n") == []  # no token: console off, no warning


def test_config_check_judges_the_environment_token_that_wins(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    text = "api:\n  admin_token: 3f9a1c0d4b7e2a8c5d6f\n"
    monkeypatch.setenv("SAFETY_EDGE_ADMIN_TOKEN", "abc")
    config, problems = check_text(text, environment=True)
    assert config is not None
    msgs = [p.message for p in problems if p.path == "api.admin_token"]
    assert len(msgs) == 1 and "SAFETY_EDGE_ADMIN_TOKEN" in msgs[0] and "3 characters" in msgs[0]
    monkeypatch.setenv("SAFETY_EDGE_ADMIN_TOKEN", "a-long-enough-random-token")
    _, problems = check_text("api:\n  admin_token: change-me\n", environment=True)
    assert [p for p in problems if p.path == "api.admin_token"] == []  # the env one is used


def test_the_cli_config_check_prints_the_warning(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    cfg = tmp_path / "gateway.yaml"
    cfg.write_text("api:\n  admin_token: change-me\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if k != "SAFETY_EDGE_ADMIN_TOKEN"}
    r = subprocess.run(
        [sys.executable, "-m", "edge.cli", "config", "check", "--offline", str(cfg)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"gateway.yaml:2: warning: api.admin_token: .*placeholder", r.stdout), r.stdout


# -- the bearer token on a real server ---------------------------------------------------


def _bearer(client: httpx.Client, srv: Server, token: str) -> httpx.Response:
    return client.get(
        f"{srv.base_url}/console/api/status", headers={"Authorization": f"Bearer {token}"}
    )


def test_wrong_bearer_tokens_are_throttled_per_client_address(tmp_path: Path) -> None:
    with (
        start_server(tmp_path) as s,
        httpx.Client(timeout=10) as attacker,
        httpx.Client(timeout=10, transport=httpx.HTTPTransport(local_address="127.0.0.2")) as other,
    ):
        codes = [_bearer(attacker, s, f"guess-{i:04d}-guess").status_code for i in range(12)]
        assert codes == [401] * LOGIN_FAILURES + [429] * (12 - LOGIN_FAILURES)
        r = _bearer(attacker, s, ADMIN_TOKEN)  # even the right token, until the window ends
        assert r.status_code == 429 and r.json()["code"] == 4010
        assert 1 <= int(r.headers["retry-after"]) <= 60 and "retry" in r.json()["details"]
        r = attacker.get(
            f"{s.base_url}/console/api/apps", headers={"X-Admin-Token": "guess-via-header"}
        )
        assert r.status_code == 429  # the other header is the same door
        # One budget for both doors: the login form refuses this address too.
        login = console_login(attacker, s.base_url, token=ADMIN_TOKEN)
        assert login.status_code == 429 and "retry-after" in login.headers
        # Another address is not affected; a right token is never counted.
        for _ in range(LOGIN_FAILURES + 2):
            assert _bearer(other, s, ADMIN_TOKEN).status_code == 200
        assert other.get(f"{s.base_url}/console/api/apps").status_code == 401  # no token
        assert "wrong admin token" in s.log()


def test_the_placeholder_token_is_refused_and_a_short_one_warned_about(tmp_path: Path) -> None:
    with start_server(tmp_path / "p", api={"admin_token": "change-me"}) as s:
        r = _bearer(s.http, s, "change-me")
        assert r.status_code == 403 and "placeholder" in r.json()["details"]
        page = s.http.get(f"{s.base_url}/console/login")  # console off, and it says why
        assert page.status_code == 403 and "placeholder" in page.text, page.text
        assert "no admin token is set" not in page.text
        assert "placeholder" in s.log()
        assert s.health()  # the gateway itself runs
    with start_server(tmp_path / "w", api={"admin_token": "short-admin"}) as s:
        r = _bearer(s.http, s, "short-admin")
        assert r.status_code == 200, r.text
        assert "11 characters" in r.json()["admin_token_warning"]
        assert "11 characters" in s.log()
    with start_server(tmp_path / "ok") as s:
        assert s.console("status")["admin_token_warning"] is None


# -- malformed console input ---------------------------------------------------------------


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with start_server(tmp_path_factory.mktemp("admin-hardening")) as s:
        yield s


@pytest.fixture
def console(srv: Server) -> Iterator[tuple[httpx.Client, str]]:
    """A logged-in console client and its CSRF token."""
    with httpx.Client(timeout=15) as c:
        assert console_login(c, srv.base_url, token=ADMIN_TOKEN).status_code == 303
        page = c.get(f"{srv.base_url}/console/apps")
        m = re.search(r'name="csrf-token" content="([^"]+)"', page.text)
        assert m is not None
        yield c, m.group(1)


@pytest.mark.parametrize(
    ("headers", "params"),
    [
        ({"Last-Event-ID": "²".encode("latin-1")}, {}),  # str.isdigit() yes, int() no
        ({}, {"after": "²"}),
        ({}, {"after": "٣"}),  # Arabic-Indic three: int() takes it, SQLite ids are ASCII
        ({}, {"after": "9" * 5000}),  # past Python's int-from-string limit
        ({}, {"after": "9" * 20}),  # past SQLite's 64-bit integers
        ({}, {"after": "-1"}),
        ({}, {"after": "abc"}),
    ],
)
def test_bad_event_ids_are_a_400(
    srv: Server,
    console: tuple[httpx.Client, str],
    headers: dict[str, bytes],
    params: dict[str, str],
) -> None:
    c, _ = console
    r = c.get(f"{srv.base_url}/console/events/stream", headers=headers, params=params)
    assert r.status_code == 400, r.text[:200]
    assert "event id" in r.json()["error"]


def test_a_good_event_id_still_streams(srv: Server, console: tuple[httpx.Client, str]) -> None:
    c, _ = console
    with c.stream(
        "GET", f"{srv.base_url}/console/events/stream", headers={"Last-Event-ID": "0"}
    ) as r:
        assert r.status_code == 200
        assert next(r.iter_lines()) == "retry: 500"


@pytest.mark.parametrize(
    ("body", "why"),
    [
        ('{"width": Infinity, "height": 480, "points": []}', "finite"),
        ('{"width": 640, "height": -Infinity, "points": []}', "finite"),
        ('{"width": NaN, "height": 480, "points": []}', "finite"),
    ],
)
def test_zone_saves_with_non_finite_sizes_are_a_400(
    srv: Server, console: tuple[httpx.Client, str], body: str, why: str
) -> None:
    c, csrf = console
    for kind in ("zones", "lines"):
        r = c.post(
            f"{srv.base_url}/console/{kind}/cam/fence/gate",
            content=body,
            headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
        )
        assert r.status_code == 400, r.text[:200]
        assert r.json()["code"] == 4012 and why in r.json()["error"]


def test_deeply_nested_json_is_a_400(srv: Server, console: tuple[httpx.Client, str]) -> None:
    c, csrf = console
    r = c.post(
        f"{srv.base_url}/console/zones/cam/fence/gate",
        content=b"[" * 60_000,
        headers={"Content-Type": "application/json", "X-CSRF-Token": csrf},
    )
    assert r.status_code == 400, r.text[:200]
    assert "nested" in r.json()["error"]
    assert srv.health()  # and the server is fine


@pytest.mark.parametrize("since", ["9" * 400 + "w", "9" * 30, "9" * 5000, "²"])
def test_out_of_range_event_times_are_explained_not_a_500(
    srv: Server, console: tuple[httpx.Client, str], since: str
) -> None:
    c, _ = console
    r = c.get(f"{srv.base_url}/console/events", params={"since": since})
    assert r.status_code == 200 and 'class="error"' in r.text, r.text[:300]
    assert "out of range" in r.text or "not a duration" in r.text
    # The live stream ignores a filter the page already flagged (as it always has).
    with c.stream("GET", f"{srv.base_url}/console/events/stream", params={"since": since}) as r:
        assert r.status_code == 200
        assert next(r.iter_lines()) == "retry: 500"
