"""Fixtures for the MQTT tests: a real mosquitto per test, a test PKI per session."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqtt.broker import MOSQUITTO, MosquittoBroker
from tests.mqtt.certs import Pki, make_pki


@pytest.fixture(scope="session", autouse=True)
def _need_mosquitto() -> None:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (make deps)")


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """A started mosquitto (anonymous, persistence on) on a free loopback port."""
    with MosquittoBroker(tmp_path) as b:
        yield b


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """CA, server (127.0.0.1/localhost) and client certificates, plus an unrelated CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl command not available")
    return make_pki(tmp_path_factory.mktemp("pki"))
