"""What the durable outbox costs: QoS 1 events/s through the outbox beside raw paho, one run.

Starts a local mosquitto (default settings: Receive Maximum 20, no persistence) and, in
one run with the variants interleaved per repeat, sends ``--events`` prebuilt events:

- ``raw paho``: one paho client (MQTT 5, QoS 1, 20 in flight, paho's own queue), payload
  built and published per event, timed until the last PUBACK. Nothing is stored: a crash
  loses what is queued in memory.
- ``outbox``: :class:`edge.mqtt.Publisher`, ``publish_event`` one event at a time (each
  call returns after its own SQLite commit), timed until the outbox is empty (every row
  PUBACKed and deleted). ``synchronous=NORMAL`` (the default).
- ``outbox, batches of 16``: ``publish_events`` with 16 events per call (one commit each),
  as a pipeline does for the events of one frame.
- the same two with ``synchronous=FULL`` (an fsync per commit).

Goal: the outbox keeps >= 70 % of raw paho's rate and >= 3,000 events/s.

    .venv/bin/python benchmarks/bench_outbox.py [--events 20000] [--repeats 5] [--quick]

Exit status 1 when the ``outbox NORMAL, batches of 16`` row (the group-commit path a
pipeline uses) misses the goal; the one-event-per-call rows are reported beside it.

Writes ``benchmarks/results/outbox.json`` and ``outbox.md`` via ``benchmarks.common``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GOAL_RATIO = 0.70
GOAL_RATE = 3000.0
INFLIGHT = 20


def _events(n: int) -> list[Any]:
    from edge.mqtt import Event

    kinds = ("start", "update", "update", "update", "end")
    return [
        Event(
            type=kinds[i % 5],  # type: ignore[arg-type]
            camera="cam-1",
            task="hardhat",
            zone="loading-bay",
            label="no_hardhat",
            score=0.87,
            box=(412.0, 96.5, 488.0, 301.0),
            track_id=i,
            snapshot=f"snapshots/cam-1/{i}.jpg",
            model="hardhat-yolov8n@1",
        )
        for i in range(n)
    ]


def run_raw(host: str, port: int, events: Sequence[Any]) -> float:
    """Events/s for raw paho QoS 1, until the last PUBACK."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.mqtt.schema import dumps

    n = len(events)
    done = threading.Event()
    acked = [0]

    def on_publish(c: Any, u: Any, mid: int, rc: Any, props: Any) -> None:
        acked[0] += 1
        if acked[0] == n:
            done.set()

    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id="bench-raw",
        protocol=mqtt.MQTTv5,
    )
    client.on_publish = on_publish
    client.max_inflight_messages_set(INFLIGHT)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    time.sleep(0.2)
    t0 = time.perf_counter()
    for ev in events:
        client.publish("safety-edge/bench/events", dumps(ev.to_payload("bench")), qos=1)
    if not done.wait(120):
        raise RuntimeError(f"raw paho: only {acked[0]}/{n} acked")
    dt = time.perf_counter() - t0
    client.disconnect()
    client.loop_stop()
    return n / dt


def run_outbox(
    host: str, port: int, events: Sequence[Any], path: Path, *, batch: int, sync: str
) -> tuple[float, float]:
    """(events/s until the outbox is empty, commits per event)."""
    from edge.mqtt import MqttConfig, Publisher

    config = MqttConfig(host=host, port=port, max_inflight=INFLIGHT, outbox={"synchronous": sync})
    n = len(events)
    with Publisher(config=config, outbox_path=path, gateway_id="bench") as pub:
        deadline = time.monotonic() + 10
        while not pub.connected:
            if time.monotonic() > deadline:
                raise RuntimeError(f"outbox: not connected: {pub.last_error}")
            time.sleep(0.01)
        t0 = time.perf_counter()
        if batch == 1:
            for ev in events:
                pub.publish_event(ev)
        else:
            for i in range(0, n, batch):
                pub.publish_events(events[i : i + batch])
        if not pub.flush(120):
            raise RuntimeError(f"outbox: {pub.outbox.rows} rows left")
        dt = time.perf_counter() - t0
        m = pub.metrics()
    return n / dt, m["mqtt_outbox_commits_total"] / n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="5,000 events, 3 repeats")
    args = ap.parse_args(argv)
    if args.quick:
        args.events, args.repeats = 5000, 3

    from benchmarks.common import write_results
    from tests.mqtt.broker import MosquittoBroker

    events = _events(args.events)
    tmp = Path(tempfile.mkdtemp(prefix="bench-outbox-"))
    variants: list[tuple[str, Callable[[MosquittoBroker, int], tuple[float, float | None]]]] = [
        ("raw paho QoS 1 (no storage)", lambda b, k: (run_raw(b.host, b.port, events), None)),
    ]
    for sync in ("NORMAL", "FULL"):
        for batch in (1, 16):
            # An fsync per event is slow (~3 ms here): a tenth of the events gives its rate.
            part = events if sync == "NORMAL" or batch > 1 else events[: len(events) // 10]

            def fn(
                b: MosquittoBroker, k: int, batch: int = batch, sync: str = sync, part: Any = part
            ) -> Any:
                path = tmp / f"outbox-{sync}-{batch}-{k}.db"
                return run_outbox(b.host, b.port, part, path, batch=batch, sync=sync)

            label = f"outbox {sync}, " + ("publish_event" if batch == 1 else f"batches of {batch}")
            variants.append((label, fn))

    rates: dict[str, list[float]] = {name: [] for name, _ in variants}
    commits: dict[str, float | None] = {}
    ratios: dict[str, list[float]] = {name: [] for name, _ in variants}
    with MosquittoBroker(tmp, persistence=False) as broker:
        for k in range(args.repeats):
            raw_rate = 0.0
            for name, fn in variants:
                rate, per_event = fn(broker, k)
                rates[name].append(rate)
                commits[name] = per_event
                if name.startswith("raw"):
                    raw_rate = rate
                ratios[name].append(rate / raw_rate)
                print(
                    f"repeat {k}: {name:34s} {rate:9.0f} events/s  ({rate / raw_rate:.0%} of raw)"
                )

    rows = []
    for name, _ in variants:
        med = statistics.median(rates[name])
        ratio = statistics.median(ratios[name])
        meets = (
            ""
            if name.startswith("raw")
            else ("yes" if ratio >= GOAL_RATIO and med >= GOAL_RATE else "no")
        )
        per = commits[name]
        rows.append(
            {
                "variant": name,
                "events_per_s": round(med),
                "min": round(min(rates[name])),
                "max": round(max(rates[name])),
                "ratio_vs_raw": round(ratio, 3),
                "commits_per_event": "-" if per is None else round(per, 4),
                "meets_goal": meets,
            }
        )
    notes = [
        f"{args.events} events per run ({args.events // 10} for FULL one at a time), "
        f"{args.repeats} repeats interleaved; medians; "
        f"ratio = median over repeats of (variant / raw in the same repeat).",
        f"Goal: >= {GOAL_RATIO:.0%} of raw and >= {GOAL_RATE:.0f} events/s.",
        "Broker: local mosquitto 2.x, default settings (Receive Maximum 20), no persistence; "
        f"client in-flight {INFLIGHT}.",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; shared with other work, so absolute numbers "
        "vary run to run.",
        "outbox = commit to SQLite (WAL) before sending, delete on PUBACK; timed until the "
        "outbox is empty. raw = paho's in-memory queue, timed until the last PUBACK.",
    ]
    headline = next(r for r in rows if r["variant"] == "outbox NORMAL, batches of 16")
    write_results(
        "outbox",
        rows,
        title="MQTT QoS 1 events/s: durable outbox vs raw paho",
        columns=[
            "variant",
            "events_per_s",
            "min",
            "max",
            "ratio_vs_raw",
            "commits_per_event",
            "meets_goal",
        ],
        notes=notes,
    )
    return 0 if headline["meets_goal"] == "yes" else 1


if __name__ == "__main__":
    sys.exit(main())
