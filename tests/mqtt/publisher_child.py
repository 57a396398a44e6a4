"""A gateway process for the crash tests: ``python -m tests.mqtt.publisher_child ...``.

Publishes ``--count`` events (track ids from ``--first``) through a real
:class:`~edge.mqtt.Publisher` and appends each event id to ``--ids`` right after
``publish_event`` returned (i.e. after the outbox commit), so a test that SIGKILLs this
process knows which events were accepted. ``--rate`` limits events per second. At the
end it waits for the outbox to drain, closes, and prints ``DONE``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from edge.mqtt import Event, MqttConfig, Publisher


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--outbox", type=Path, required=True)
    ap.add_argument("--ids", type=Path, required=True)
    ap.add_argument("--gateway", default="gw-crash")
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--first", type=int, default=0)
    ap.add_argument("--rate", type=float, default=0.0)
    args = ap.parse_args(argv)

    config = MqttConfig(host=args.host, port=args.port, backoff_min_s=0.05, backoff_max_s=0.5)
    fd = os.open(args.ids, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    period = 1.0 / args.rate if args.rate > 0 else 0.0
    t0 = time.monotonic()
    with Publisher(config=config, outbox_path=args.outbox, gateway_id=args.gateway) as pub:
        print("STARTED", flush=True)
        for i in range(args.first, args.first + args.count):
            event = Event(
                type="start" if i % 10 == 0 else "update",
                camera="cam-1",
                task="hardhat",
                zone="dock",
                label="no_hardhat",
                score=0.5,
                box=(1.0, 2.0, 3.0, 4.0),
                track_id=i,
            )
            eid = pub.publish_event(event)
            os.write(fd, f"{eid}\n".encode())
            if period:
                delay = t0 + (i - args.first + 1) * period - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
        drained = pub.flush(60.0)
    os.close(fd)
    print("DONE" if drained else "NOT-DRAINED", flush=True)
    return 0 if drained else 1


if __name__ == "__main__":
    sys.exit(main())
