"""Fixtures for the gateway tests: one real mosquitto per test module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.mqtt.broker import MOSQUITTO, MosquittoBroker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MosquittoBroker]:
    """A started mosquitto on a free loopback port, shared by a module's tests;
    skips where mosquitto is not installed."""
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (make deps)")
    with MosquittoBroker(tmp_path_factory.mktemp("broker")) as b:
        yield b
