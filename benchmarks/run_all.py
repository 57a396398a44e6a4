"""Run every ``benchmarks/bench_*.py`` and gather their tables in ``results/README.md``.

Each script runs in its own process (one after the other, so they do not compete for
the CPU) and writes ``results/<name>.json`` and ``.md``; afterwards every
``results/*.md`` table is concatenated into ``results/README.md``.

    .venv/bin/python benchmarks/run_all.py [--quick] [--only nms,pip] [--timeout 900]
    .venv/bin/python benchmarks/run_all.py --collect   # only rebuild the READMEs, no runs

``--quick`` is passed on to the scripts that accept it. Exit status: 0 when every script
exited 0 (a script exits non-zero when it misses its bar or its results disagree).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"


def scripts(only: set[str] | None = None) -> list[Path]:
    """The bench_*.py scripts, sorted; ``only`` filters by name (``bench_<name>.py``)."""
    found = sorted(HERE.glob("bench_*.py"))
    if only:
        found = [p for p in found if p.stem.removeprefix("bench_") in only]
    return found


PROJECT_README = HERE.parent / "README.md"
BEGIN, END = "<!-- benchmarks:begin -->", "<!-- benchmarks:end -->"


def tables() -> str:
    """Every results/*.md table (except README.md), in name order, headings one level down
    (``## Title`` -> ``### Title``) so they sit under the project README's section."""
    parts = []
    for md in sorted(RESULTS.glob("*.md")):
        if md.name == "README.md":
            continue
        lines = md.read_text(encoding="utf-8").rstrip().splitlines()
        parts.append("\n".join("#" + ln if ln.startswith("#") else ln for ln in lines))
    return "\n\n".join(parts)


def results_readme() -> str:
    """The text of ``results/README.md``: every results/*.md (except README.md) in name
    order under one heading."""
    parts = ["# Benchmark results", ""]
    parts.append(
        "Written by `benchmarks/run_all.py` from the per-benchmark tables below; each "
        "table's own notes say what was measured, on which machine, and the bar."
    )
    parts.append("")
    for md in sorted(RESULTS.glob("*.md")):
        if md.name == "README.md":
            continue
        parts.append(md.read_text(encoding="utf-8").rstrip())
        parts.append("")
    return "\n".join(parts)


def with_tables(text: str) -> str:
    """``text`` (the project README) with the part between the benchmark markers replaced
    by :func:`tables`; unchanged when the markers are missing."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not (sep and sep2):
        return text
    return f"{head}{BEGIN}\n\n{tables()}\n\n{END}{tail}"


def collect_readme() -> Path:
    """Concatenate every results/*.md (except README.md) into results/README.md, and
    replace the part of the project README between the benchmark markers with them.
    Notes kept beside a table belong in its results/<name>.md: the README block is
    rewritten from those files alone."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "README.md"
    out.write_text(results_readme(), encoding="utf-8")
    if PROJECT_README.is_file():
        text = PROJECT_README.read_text(encoding="utf-8")
        new = with_tables(text)
        if new != text:
            PROJECT_README.write_text(new, encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="pass --quick to scripts that take it")
    ap.add_argument("--only", default="", help="comma-separated names, e.g. nms,pip")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per script")
    ap.add_argument(
        "--collect", action="store_true", help="only rebuild the READMEs from results/*.md"
    )
    args = ap.parse_args(argv)
    if args.collect:
        print(f"{collect_readme().relative_to(HERE.parent)} and README.md rebuilt, nothing run")
        return 0

    only = {s.strip() for s in args.only.split(",") if s.strip()} or None
    todo = scripts(only)
    if not todo:
        print("no benchmark scripts matched", file=sys.stderr)
        return 2
    status: list[tuple[str, int | str, float]] = []
    for path in todo:
        cmd = [sys.executable, str(path)]
        if args.quick and '"--quick"' in path.read_text(encoding="utf-8"):
            cmd.append("--quick")
        print(f"== {path.name} {' '.join(cmd[2:])}", flush=True)
        t0 = time.perf_counter()
        try:
            rc: int | str = subprocess.run(cmd, cwd=HERE.parent, timeout=args.timeout).returncode
        except subprocess.TimeoutExpired:
            rc = f"timeout after {args.timeout:g} s"
        status.append((path.name, rc, time.perf_counter() - t0))
    readme = collect_readme()
    print(f"\n{readme.relative_to(HERE.parent)} updated {_dt.datetime.now():%Y-%m-%d %H:%M}")
    for name, rc, secs in status:
        print(f"{name:<24} {'ok' if rc == 0 else f'FAILED ({rc})':<24} {secs:7.1f} s")
    return 0 if all(rc == 0 for _, rc, _ in status) else 1


if __name__ == "__main__":
    raise SystemExit(main())
