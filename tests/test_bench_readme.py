"""The benchmark results in the project README and in ``benchmarks/results/README.md``
are exactly what ``benchmarks/run_all.py`` writes from ``benchmarks/results/*.md``, so the
next ``make bench`` (or ``run_all.py --collect``) changes nothing but the numbers it
re-measures: no hand-written note in the README block that it would delete, no stale
table in results/README.md."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]


def run_all() -> ModuleType:
    spec = importlib.util.spec_from_file_location("run_all", REPO / "benchmarks" / "run_all.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_block_is_what_collect_writes() -> None:
    """Before: the README block had a LAN-hardening bullet that no results/*.md held."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert run_all().with_tables(text) == text


def test_results_readme_is_what_collect_writes() -> None:
    """Before: results/README.md still showed an older API run than results/api.md."""
    current = (REPO / "benchmarks" / "results" / "README.md").read_text(encoding="utf-8")
    assert run_all().results_readme() == current


def test_collect_rewrites_both_from_the_tables_without_running(tmp_path: Path) -> None:
    """``run_all.py --collect`` in a copy: rebuilds both files from results/*.md, runs no
    benchmark script."""
    bench = tmp_path / "benchmarks"
    shutil.copytree(REPO / "benchmarks" / "results", bench / "results")
    shutil.copy(REPO / "benchmarks" / "run_all.py", bench / "run_all.py")
    (bench / "bench_never.py").write_text("raise SystemExit('must not run')\n")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- benchmarks:begin -->\nold\n<!-- benchmarks:end -->\ntail\n")
    api = bench / "results" / "api.md"
    api.write_text(api.read_text(encoding="utf-8") + "- a note kept beside its table\n")
    r = subprocess.run(
        [sys.executable, str(bench / "run_all.py"), "--collect"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    out = readme.read_text(encoding="utf-8")
    assert out.startswith("intro\n<!-- benchmarks:begin -->\n\n### HTTP API")
    assert "- a note kept beside its table" in out and "\nold\n" not in out
    assert out.endswith("\n\n<!-- benchmarks:end -->\ntail\n")
    results = (bench / "results" / "README.md").read_text(encoding="utf-8")
    assert "- a note kept beside its table" in results
