"""Helpers shared by the benchmark scripts: timing, machine info, result files.

Every ``benchmarks/bench_<name>.py`` writes ``benchmarks/results/<name>.json`` (rows plus
machine info) and ``benchmarks/results/<name>.md`` (a markdown table) through
:func:`write_results`; ``benchmarks/run_all.py`` runs them all and concatenates the tables.
Ratios are meant to be measured in one run, alternatives interleaved
(:func:`interleaved`), so that a noisy machine slows every contender alike.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"

__all__ = ["RESULTS", "interleaved", "machine_info", "timeit", "timings", "write_results"]


def timings(fn: Callable[[], object], *, repeat: int = 7, number: int = 1) -> list[float]:
    """Seconds per call of ``fn`` for each of ``repeat`` batches of ``number`` calls."""
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        out.append((time.perf_counter() - t0) / number)
    return out


def timeit(fn: Callable[[], object], *, repeat: int = 7, number: int = 1) -> float:
    """Median seconds per call of ``fn`` (``repeat`` batches of ``number`` calls)."""
    return statistics.median(timings(fn, repeat=repeat, number=number))


def interleaved(
    fns: Mapping[str, Callable[[], object]], *, repeat: int = 7, number: int = 1
) -> dict[str, list[float]]:
    """Seconds per call for each function, the functions taking turns batch by batch."""
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            out[name] += timings(fn, repeat=1, number=number)
    return out


def _version(module: str) -> str:
    try:
        mod = __import__(module)
    except ImportError:
        return "not installed"
    return str(getattr(mod, "__version__", "unknown"))


def machine_info() -> dict[str, Any]:
    """CPU count, platform, load and library versions, for the JSON results."""
    try:
        load: list[float] | None = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "python": sys.version.split()[0],
        "numpy": _version("numpy"),
        "cv2": _version("cv2"),
        "shapely": _version("shapely"),
        "loadavg_1_5_15": load,
    }


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:
            return "-"
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"
    return str(value)


def write_results(
    name: str,
    rows: Sequence[Mapping[str, Any]],
    *,
    title: str,
    columns: Sequence[str],
    notes: str | Sequence[str] = (),
) -> tuple[Path, Path]:
    """Write ``results/<name>.json`` and ``results/<name>.md``; return both paths.

    ``columns`` picks and orders the table's columns (the JSON keeps every key);
    ``notes`` (one string or several) go under the table and into the JSON.
    """
    note_list = [notes] if isinstance(notes, str) else list(notes)
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()
    machine = machine_info()
    doc = {
        "name": name,
        "title": title,
        "created": now,
        "machine": machine,
        "columns": list(columns),
        "rows": [dict(r) for r in rows],
        "notes": note_list,
    }
    json_path = RESULTS / f"{name}.json"
    json_path.write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    lines = [f"## {title}", ""]
    lines.append("| " + " | ".join(columns) + " |")
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
    lines.append("")
    lines += [f"- {n}" for n in note_list]
    lines.append(
        f"- machine: {machine['processor']}, {machine['cpu_count']} CPUs, {machine['platform']}, "
        f"python {machine['python']}, numpy {machine['numpy']}, cv2 {machine['cv2']}, "
        f"shapely {machine['shapely']}, load {machine['loadavg_1_5_15']}; {now}"
    )
    md_path = RESULTS / f"{name}.md"
    md_path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return json_path, md_path
