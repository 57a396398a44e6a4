"""The gateway's hourly event pruning: retention, then the size bound.

The whole gateway in-process (:class:`GatewayService`, its :meth:`~GatewayService.run`
loop in a thread; the loop prunes at its first tick), no cameras, no MQTT, no API, on a
real SQLite events file filled beforehand; checked with the real ``safety-edge events
verify`` and the gateway's ``/metrics`` text."""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest

from edge.config import config_from_mapping
from edge.service.gateway import GatewayService
from edge.stream.commands import add_subcommands
from edge.stream.events import SIZE_PRUNE_TO, EventStore, events_db_path
from tests.polling import wait
from tests.service.running import running_gateway
from tests.stream.chain_events import ev

MIB = 1024 * 1024
DAY = 86_400_000


def gateway_config(data: Path, *, max_mb: float | None) -> Any:
    return config_from_mapping(
        {
            "gateway_id": "gw-prune",
            "data_dir": str(data),
            "models_dir": str(data.parent / "models"),
            "tasks": {"fence": None, "hardhat": None, "workwear": None},
            "service": {"api": False, "stop_timeout_s": 10, "flush_timeout_s": 5},
            "storage": {"events_max_mb": max_mb, "snapshots": False},
        }
    )


def metric(text: str, name: str) -> float | None:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return None if m is None else float(m.group(1))


def run_once(data: Path, *, max_mb: float | None) -> str:
    """Start the gateway, let its run loop make its first pass, stop it; its metrics."""
    service = GatewayService(config=gateway_config(data, max_mb=max_mb))
    with running_gateway(service) as gateway:
        assert wait(lambda: "safety_edge_events_db_bytes" in service.metrics_text(), 10)
        text = service.metrics_text()
    assert gateway.rc == [0]
    return text


def verify(data: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="safety-edge")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["events", "verify", "--no-snapshots", "--data-dir", str(data)])
    code = int(args.func(args))
    report: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert code == 0 and report["ok"], report
    return report


def test_the_gateway_prunes_by_age_then_by_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """10 events 100 days old, then 4000 of the last days (~1.6 MiB); ``events_max_mb: 1``.
    The first pass deletes the 10 by age (default retention 90 days), then the oldest
    recent ones until under 90 % of 1 MiB, with one WARNING; ``/metrics`` counts both
    reasons and shows the sizes; the chain verifies. A second start with ``events_max_mb:
    0`` deletes nothing more."""
    caplog.set_level(logging.WARNING, logger="edge.stream")
    data = tmp_path / "data"
    now = time.time_ns() // 1_000_000
    old = [ev(k, t_ms=now - 100 * DAY + k) for k in range(10)]
    recent = [ev(10 + k, t_ms=now - 3 * DAY + k * 60_000) for k in range(4000)]
    with EventStore(path=events_db_path(data)) as store:
        store.add_many([*old, *recent])
        assert store.db_size().live_bytes > 1.5 * MIB  # the premise

    text = run_once(data, max_mb=1)

    by_size = metric(text, 'safety_edge_events_pruned_total{reason="size"}')
    assert metric(text, 'safety_edge_events_pruned_total{reason="age"}') == 10
    assert by_size is not None and by_size > 0
    live = metric(text, "safety_edge_events_db_live_bytes")
    assert live is not None and live <= SIZE_PRUNE_TO * MIB
    assert (metric(text, "safety_edge_events_db_bytes") or 0) >= live
    report = verify(data, capsys)
    assert report["anchor"]["pruned"] == 10 + by_size
    assert report["rows"] == 4010 - report["anchor"]["pruned"]
    warnings = [r.getMessage() for r in caplog.records if "size bound" in r.getMessage()]
    assert len(warnings) == 1 and f"deleted the oldest {int(by_size)} events" in warnings[0]

    text = run_once(data, max_mb=0)
    assert metric(text, 'safety_edge_events_pruned_total{reason="size"}') == 0
    assert verify(data, capsys)["rows"] == report["rows"]
