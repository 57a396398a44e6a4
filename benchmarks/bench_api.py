"""What the HTTP layer costs: the gateway beside a bare uvicorn echo endpoint, one run.

Starts, on loopback, (1) the real gateway (``safety-edge serve``: auth, validation, JSON,
quota draw in SQLite, monitoring, worker pool) with the tiny planted ONNX models of the
tests, and (2) a bare ASGI app on the same uvicorn that reads the body and answers a fixed
JSON. Then measures, in one run and interleaved request by request:

- per-request latency, one keep-alive client, a 64x64 JPEG: echo vs gateway hard-hat
  success, and the model's own time in-process (decode + detector + task, same image),
  so HTTP-layer overhead = gateway - echo - model (goal: <= 2 ms at p50);
- a request rejected by validation (4003) and one rejected by auth (4010);
- throughput with 32 concurrent keep-alive connections for echo and gateway;
- end-to-end latency for a 4.9 MB JPEG through the hard-hat API (and the echo).

    .venv/bin/python benchmarks/bench_api.py [--requests 400] [--seconds 5]

Writes ``benchmarks/results/api.json`` and ``api.md`` via ``benchmarks.common``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

GOAL_OVERHEAD_MS = 2.0

_ECHO = """
import sys, uvicorn
RESP = b'{"code":0,"message":"success","result":[],"data":[]}'
async def app(scope, receive, send):
    if scope["type"] != "http":
        return
    more = True
    while more:
        msg = await receive()
        more = msg.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(RESP)).encode())]})
    await send({"type": "http.response.body", "body": RESP})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning",
            access_log=False, lifespan="off", server_header=False)
"""


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


@contextlib.contextmanager
def echo_server() -> Iterator[str]:
    import httpx

    from tests.api.server_fixture import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", _ECHO, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(400):
            try:
                httpx.post(base + "/", content=b"{}", timeout=1.0)
                break
            except httpx.HTTPError:
                time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def big_jpeg(target: int = 4_900_000) -> bytes:
    """A noisy JPEG of about ``target`` bytes (quality tuned by bisection)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (2400, 3000, 3), dtype=np.uint8)  # 7.2 MP
    img = cv2.GaussianBlur(img, (3, 3), 0)
    lo, hi, best = 50, 100, b""
    while lo <= hi:  # highest quality that fits
        q = (lo + hi) // 2
        data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, q])[1].tobytes()
        if len(data) <= target:
            best, lo = data, q + 1
        else:
            hi = q - 1
    if lo <= 100:  # one quality step up, fewer rows: closer to the target size
        top, bottom = img.shape[0] // 2, img.shape[0]
        while top < bottom - 8:
            rows = (top + bottom) // 2
            data = cv2.imencode(".jpg", img[:rows], [cv2.IMWRITE_JPEG_QUALITY, lo])[1].tobytes()
            if len(data) <= target:
                best = max(best, data, key=len)
                top = rows
            else:
                bottom = rows
    if len(best) < 0.97 * target:
        raise RuntimeError(f"could not make a {target}-byte JPEG (got {len(best)})")
    return best


def model_only_ms(models_dir: Path, jpeg: bytes, n: int) -> list[float]:
    """The hard-hat task on the same image, in-process: decode + detector + task."""
    import cv2
    import numpy as np

    from edge.runtime.detector import Detector
    from edge.runtime.registry import discover_models
    from edge.tasks.hardhat import HardhatTask

    manifest = discover_models(models_dir)["hardhat"]
    out = []
    with Detector(manifest, intra_op_threads=1) as det:
        task = HardhatTask(detector=det)
        for _ in range(n):
            t0 = time.perf_counter()
            image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            task.run(image)
            out.append((time.perf_counter() - t0) * 1e3)
    return out


def timed(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def raw_request(base: str, path: str, body: bytes, headers: dict[str, str]) -> bytes:
    """One HTTP/1.1 keep-alive POST as bytes."""
    host = base.removeprefix("http://")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return head.encode() + b"\r\n" + body


async def throughput(
    base: str, requests: list[bytes], *, clients: int, seconds: float
) -> tuple[float, int, dict[int, int]]:
    """Requests/s with ``clients`` keep-alive connections of a minimal asyncio HTTP/1.1
    client (pre-built requests, so the load generator costs little CPU)."""
    host, port = base.removeprefix("http://").split(":")
    codes: dict[int, int] = {}
    it = iter(requests)
    end = time.perf_counter() + seconds

    async def worker() -> None:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            for req in it:
                if time.perf_counter() >= end:
                    break
                writer.write(req)
                head = await reader.readuntil(b"\r\n\r\n")
                n = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                code = int(json.loads(await reader.readexactly(n))["code"])
                codes[code] = codes.get(code, 0) + 1
        finally:
            writer.close()

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    elapsed = time.perf_counter() - t0
    done = sum(codes.values())
    return done / elapsed, done, codes


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=400, help="sequential requests per row")
    ap.add_argument("--seconds", type=float, default=5.0, help="throughput run length")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--big", type=int, default=20, help="requests with the 4.9 MB JPEG")
    args = ap.parse_args(argv)

    import httpx

    from benchmarks.common import write_results
    from tests.api.server_fixture import jpeg_bytes, provider_headers, start_server

    small = jpeg_bytes(64, 64)
    body_small = json.dumps({"image": base64.b64encode(small).decode()}).encode()
    body_bad = json.dumps({"image": "@@@@"}).encode()
    big = big_jpeg()
    body_big = json.dumps({"image": base64.b64encode(big).decode()}).encode()

    rows: list[dict[str, Any]] = []
    notes: list[str] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        echo_server() as echo,
        start_server(
            Path(tmp),
            api={
                "workers": 2,
                "queue_size": 256,
                "metrics_flush_s": 5.0,
                "max_image_pixels": 40_000_000,
            },
        ) as gw,
    ):
        app = gw.create_app("bench-app", calls=1_000_000)
        path = gw.path("hardhat", app)
        url = gw.base_url + path

        def gw_headers(body: bytes, ts: int | None = None) -> dict[str, str]:
            return provider_headers(
                app.app_key, app.app_secret, path, body, str(ts or int(time.time() * 1000))
            )

        with httpx.Client(timeout=60.0) as c:
            # Warm up both servers and the model.
            for _ in range(30):
                c.post(echo + "/", content=body_small)
                c.post(url, content=body_small, headers=gw_headers(body_small))
            lat: dict[str, list[float]] = {"echo": [], "gateway": [], "bad": [], "auth": []}
            ts0 = int(time.time() * 1000)
            for i in range(args.requests):
                h = gw_headers(body_small, ts0 - i)
                hb = gw_headers(body_bad, ts0 - i)
                lat["echo"].append(timed(lambda: c.post(echo + "/", content=body_small)))
                lat["gateway"].append(timed(lambda h=h: c.post(url, content=body_small, headers=h)))
                lat["bad"].append(timed(lambda hb=hb: c.post(url, content=body_bad, headers=hb)))
                ha = dict(h, Sign="0" * 32)
                lat["auth"].append(timed(lambda ha=ha: c.post(url, content=body_small, headers=ha)))
            r = c.post(url, content=body_small, headers=gw_headers(body_small))
            assert r.json()["code"] == 0, r.text
            model = model_only_ms(gw.models_dir, small, args.requests)

            big_lat: dict[str, list[float]] = {"echo": [], "gateway": []}
            for i in range(args.big):
                h = gw_headers(body_big, ts0 - 100_000 - i)
                big_lat["echo"].append(timed(lambda: c.post(echo + "/", content=body_big)))
                t0 = time.perf_counter()
                resp = c.post(url, content=body_big, headers=h)
                big_lat["gateway"].append((time.perf_counter() - t0) * 1e3)
                assert resp.json()["code"] == 0, resp.text[:200]
            big_model = model_only_ms(gw.models_dir, big, max(3, args.big // 4))

        n_req = 40_000
        ts1 = int(time.time() * 1000)
        echo_reqs = [raw_request(echo, "/", body_small, {})] * n_req
        gw_reqs = [
            raw_request(gw.base_url, path, body_small, gw_headers(body_small, ts1 - i))
            for i in range(n_req)
        ]
        echo_rps, echo_n, _ = asyncio.run(
            throughput(echo, echo_reqs, clients=args.clients, seconds=args.seconds)
        )
        gw_rps, gw_n, gw_codes = asyncio.run(
            throughput(gw.base_url, gw_reqs, clients=args.clients, seconds=args.seconds)
        )

    p50 = {k: statistics.median(v) for k, v in lat.items()}
    model_p50 = statistics.median(model)
    overhead = p50["gateway"] - p50["echo"] - model_p50
    for name, key, what in (
        ("bare uvicorn echo", "echo", "reads body, fixed JSON"),
        ("gateway hard-hat, success", "gateway", "auth+validation+quota+decode+model+JSON"),
        ("gateway, rejected 4003", "bad", "auth + JSON + base64 check, no pool"),
        ("gateway, rejected 4010", "auth", "bad Sign, after the body is read"),
    ):
        v = lat[key]
        rows.append(
            {
                "case": name,
                "what": what,
                "p50_ms": round(p50[key], 3),
                "p99_ms": round(pct(v, 0.99), 3),
                "ratio_p50_vs_echo": round(p50[key] / p50["echo"], 2),
            }
        )
    rows.append(
        {
            "case": "model only (in-process)",
            "what": "imdecode + detector + hard-hat task, 64x64",
            "p50_ms": round(model_p50, 3),
            "p99_ms": round(pct(model, 0.99), 3),
            "ratio_p50_vs_echo": round(model_p50 / p50["echo"], 2),
        }
    )
    for key, name in (("echo", "4.9 MB JPEG, echo"), ("gateway", "4.9 MB JPEG, gateway e2e")):
        v = big_lat[key]
        rows.append(
            {
                "case": name,
                "what": f"{len(body_big) / 1e6:.1f} MB body ({len(big) / 1e6:.2f} MB JPEG)",
                "p50_ms": round(statistics.median(v), 3),
                "p99_ms": round(pct(v, 0.99), 3),
                "ratio_p50_vs_echo": round(
                    statistics.median(v) / statistics.median(big_lat["echo"]), 2
                ),
            }
        )
    rows.append(
        {
            "case": "4.9 MB JPEG, model only",
            "what": "imdecode + detector + task in-process",
            "p50_ms": round(statistics.median(big_model), 3),
            "p99_ms": round(pct(big_model, 0.99), 3),
            "ratio_p50_vs_echo": None,
        }
    )
    ok = overhead <= GOAL_OVERHEAD_MS
    notes += [
        f"HTTP-layer overhead at p50 = gateway - echo - model = {p50['gateway']:.3f} - "
        f"{p50['echo']:.3f} - {model_p50:.3f} = {overhead:.3f} ms "
        f"(goal <= {GOAL_OVERHEAD_MS} ms): {'PASS' if ok else 'FAIL'}",
        f"throughput, {args.clients} concurrent keep-alive connections (minimal asyncio "
        f"HTTP/1.1 client, pre-built signed requests), {args.seconds:g} s: "
        f"echo {echo_rps:.0f} req/s ({echo_n} requests), gateway {gw_rps:.0f} req/s "
        f"({gw_n} requests, codes {dict(sorted(gw_codes.items()))}); "
        f"ratio {gw_rps / echo_rps:.2f}",
        f"{args.requests} sequential requests per row, interleaved echo/gateway, one "
        "keep-alive httpx client on loopback; gateway workers=2, intra-op threads 1, "
        "SQLite WAL on tmp; clients and servers share this machine's "
        f"{os.cpu_count()} CPUs; {platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}",
    ]
    write_results(
        "api",
        rows,
        title="HTTP API: gateway vs bare uvicorn echo (loopback, CPU)",
        columns=["case", "what", "p50_ms", "p99_ms", "ratio_p50_vs_echo"],
        notes=notes,
    )
    for r in rows:
        print(f"{r['case']:<30} p50 {r['p50_ms']:9.3f} ms  p99 {r['p99_ms']:9.3f} ms")
    for n in notes:
        print(n)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
