"""What ``pip install safety-edge`` brings: the resolved packages, the installed size on this
machine and the download size on a 64-bit ARM gateway.

Resolution uses pip itself (``pip install --dry-run --report``) against PyPI, with every
local pip setting switched off (``PIP_CONFIG_FILE=/dev/null``, no ``PIP_*`` variables but
``PIP_CERT``), so it sees what a user's fresh ``pip install`` sees:

- **this machine**: ``pip install --dry-run --ignore-installed .`` for the running
  interpreter;
- **aarch64**: the same with ``--platform manylinux_2_{17..35}_aarch64 --only-binary=:all:
  --python-version 3.10 --target DIR`` (Jetson Linux 36 / JetPack 6 = Ubuntu 22.04,
  glibc 2.35, Python 3.10; Raspberry Pi OS 12 has glibc 2.36 and Python 3.11). pip
  evaluates environment markers for the machine it runs on, not the target; safety-edge's
  dependency tree has no ``platform_machine`` markers, so the result is the same.

Sizes:

- **installed** (``--installed``): a fresh venv in a temporary folder, ``pip install .``
  (no extras) from PyPI, then the size of ``site-packages`` (apparent bytes, and disk
  usage as ``du`` counts it) and per distribution (the files in its ``RECORD``); pip and
  setuptools, which every venv has, are listed apart. Downloads ~100 MB.
- **aarch64 download**: the sum of the wheel files pip resolves (``Content-Length`` of
  each wheel URL, one HEAD request each);
- **aarch64 unpacked** (unless ``--no-unpacked``): those wheels downloaded (~85 MB) and
  the uncompressed sizes of their members summed: what lands in ``site-packages`` on the
  gateway before pip compiles ``.pyc`` files (no ARM machine is needed, none is used).

Usage::

    python tools/measure_install_size.py                 # both, markdown on stdout
    python tools/measure_install_size.py --no-installed  # aarch64 sizes only (no venv)
    python tools/measure_install_size.py --json out.json

The test ``tests/test_install_deps.py`` uses :func:`resolve` and :func:`forbidden`.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import sys
import sysconfig
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

AARCH64_GLIBC = (35, 34, 33, 32, 31, 30, 29, 28, 27, 26, 25, 24, 23, 22, 21, 20, 19, 18, 17)
"""glibc minor versions accepted for the aarch64 resolution (2.35 = Ubuntu 22.04/JetPack 6)."""
AARCH64_PYTHON = "3.10"

FORBIDDEN = re.compile(r"^(torch|pytorch|triton|nvidia-|cuda|onnxruntime-gpu|tensorrt)")
"""Normalized names that mean torch or CUDA came along."""

PYPI_PROBE = "https://pypi.org/simple/pip/"


@dataclass(frozen=True, slots=True)
class Resolved:
    """One distribution pip would install: normalized ``name``, ``version``, and the
    ``url`` it would download (a local path for the project itself)."""

    name: str
    version: str
    url: str


def normalize(name: str) -> str:
    """PEP 503 name normalization (``Foo_Bar.baz`` -> ``foo-bar-baz``)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pip_env() -> dict[str, str]:
    """The environment for pip: no local config files, indexes, find-links or constraints."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    if "PIP_CERT" in os.environ:
        env["PIP_CERT"] = os.environ["PIP_CERT"]
    env["PIP_CONFIG_FILE"] = os.devnull
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def pypi_unreachable(timeout_s: float = 5.0) -> str | None:
    """``None`` when PyPI answers within ``timeout_s``, else why not."""
    req = urllib.request.Request(PYPI_PROBE, method="HEAD")
    try:
        with urllib.request.urlopen(req, timeout=timeout_s) as r:
            return None if r.status < 400 else f"{PYPI_PROBE} answered HTTP {r.status}"
    except (urllib.error.URLError, OSError) as exc:
        return f"PyPI not reachable ({PYPI_PROBE}: {exc})"


def aarch64_args(target_dir: str | Path, python_version: str = AARCH64_PYTHON) -> list[str]:
    """pip options that resolve for a manylinux aarch64 gateway."""
    args: list[str] = []
    for minor in AARCH64_GLIBC:
        args += ["--platform", f"manylinux_2_{minor}_aarch64"]
    args += ["--platform", "manylinux2014_aarch64", "--platform", "linux_aarch64"]
    return [
        *args,
        "--only-binary=:all:",
        "--python-version",
        python_version,
        "--target",
        str(target_dir),
    ]


def resolve(
    project: str | Path = REPO,
    *,
    extras: Sequence[str] = (),
    aarch64: bool = False,
    python: str = sys.executable,
    timeout_s: float = 180.0,
) -> list[Resolved]:
    """The distributions ``pip install project[extras]`` would install (nothing is
    installed: ``--dry-run --ignore-installed --report``).

    Dependency metadata is read with pip's ``fast-deps`` (HTTP range requests into each
    wheel) where the index serves no separate metadata files (PEP 658), so resolving
    the ``train`` extra does not download torch and the CUDA wheels (gigabytes).

    Raises:
        RuntimeError: pip failed (its stderr is in the message).
        subprocess.TimeoutExpired: it took longer than ``timeout_s``.
    """
    spec = str(project) + (f"[{','.join(extras)}]" if extras else "")
    with tempfile.TemporaryDirectory(prefix="resolve-") as tmp:
        report = Path(tmp) / "report.json"
        cmd = [
            python,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--quiet",
            "--report",
            str(report),
            "--timeout",
            "30",
        ]
        if aarch64:
            cmd += aarch64_args(Path(tmp) / "target")
        if python == sys.executable and _setuptools_ok():
            cmd.append("--no-build-isolation")  # no setuptools download per resolution

        def pip(args: list[str]) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                args, env=pip_env(), capture_output=True, text=True, timeout=timeout_s, cwd=tmp
            )

        proc = pip([*cmd, "--use-feature=fast-deps", spec])
        if proc.returncode != 0 and "fast-deps" in proc.stderr:  # a pip without the feature
            proc = pip([*cmd, spec])
        if proc.returncode != 0 or not report.is_file():
            raise RuntimeError(f"pip could not resolve {spec}: {proc.stderr.strip()[-2000:]}")
        data: dict[str, Any] = json.loads(report.read_text())
    return sorted(
        (
            Resolved(
                name=normalize(item["metadata"]["name"]),
                version=str(item["metadata"]["version"]),
                url=str(item["download_info"]["url"]),
            )
            for item in data["install"]
        ),
        key=lambda r: r.name,
    )


def _setuptools_ok() -> bool:
    """Whether this interpreter has the build backend (setuptools >= 77) the project needs."""
    try:
        from importlib.metadata import version

        return int(version("setuptools").split(".")[0]) >= 77
    except (ImportError, ValueError, LookupError):
        return False


def forbidden(resolved: Iterable[Resolved]) -> list[str]:
    """Names of torch/CUDA distributions among ``resolved`` (``name==version``)."""
    return [f"{r.name}=={r.version}" for r in resolved if FORBIDDEN.match(r.name)]


def download_sizes(resolved: Sequence[Resolved], *, timeout_s: float = 30.0) -> dict[str, int]:
    """Bytes of each resolved wheel (HEAD ``Content-Length``), by name; the local project
    itself is left out."""

    def head(r: Resolved) -> tuple[str, int]:
        req = urllib.request.Request(r.url, method="HEAD")
        with urllib.request.urlopen(req, timeout=timeout_s) as resp:
            return r.name, int(resp.headers["Content-Length"])

    remote = [r for r in resolved if r.url.startswith("https://")]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(pool.map(head, remote))


def unpacked_sizes(resolved: Sequence[Resolved], *, timeout_s: float = 120.0) -> dict[str, int]:
    """Bytes of each resolved wheel's contents once unpacked (the sum of its members'
    uncompressed sizes: the installed size before pip compiles ``.pyc`` files), by name.
    Downloads every wheel (to a temporary file)."""

    def unpacked(r: Resolved) -> tuple[str, int]:
        with tempfile.TemporaryFile() as f:
            with urllib.request.urlopen(r.url, timeout=timeout_s) as resp:
                while chunk := resp.read(1 << 20):
                    f.write(chunk)
            f.seek(0)
            with zipfile.ZipFile(f) as z:
                return r.name, sum(i.file_size for i in z.infolist())

    remote = [r for r in resolved if r.url.startswith("https://")]
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(pool.map(unpacked, remote))


def _disk_usage(root: Path) -> tuple[int, int]:
    """(apparent bytes, bytes on disk as ``du`` counts them) of every file under ``root``."""
    apparent = disk = 0
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for n in (*dirnames, *filenames):
            st = os.lstat(os.path.join(dirpath, n))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            apparent += st.st_size
            disk += st.st_blocks * 512
    return apparent, disk


def installed_sizes(project: str | Path = REPO, *, python: str = sys.executable) -> dict[str, Any]:
    """Install ``project`` (no extras) into a fresh venv from PyPI and measure it.

    Returns:
        ``{"python": ..., "platform": ..., "site_packages_bytes": apparent,
        "site_packages_du_bytes": on disk, "venv_tooling": {name: bytes},
        "packages": {name: bytes}}`` (``packages`` from each distribution's RECORD,
        biggest first, pip/setuptools under ``venv_tooling``).
    """
    with tempfile.TemporaryDirectory(prefix="install-size-") as tmp:
        venv = Path(tmp) / "venv"
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
        vpy = venv / "bin" / "python"
        before = {_dist_name(p) for p in _site_packages(vpy).glob("*.dist-info")}
        subprocess.run(
            [str(vpy), "-m", "pip", "install", "--quiet", str(project)],
            check=True,
            env=pip_env(),
            timeout=1800,
        )
        site = _site_packages(vpy)
        apparent, disk = _disk_usage(site)
        sizes: dict[str, int] = {}
        for info in site.glob("*.dist-info"):
            name = _dist_name(info)
            total = 0
            with open(info / "RECORD", newline="") as f:
                for row in csv.reader(f):
                    if row and (site / row[0]).is_file():
                        total += (site / row[0]).stat().st_size
            sizes[name] = total
        out_pkgs = {k: v for k, v in sizes.items() if k not in before}
        tooling = {k: v for k, v in sizes.items() if k in before}
        info_out = subprocess.run(
            [
                str(vpy),
                "-c",
                "import platform, sys; print(platform.machine(), sys.version.split()[0])",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    return {
        "platform": info_out[0],
        "python": info_out[1],
        "site_packages_bytes": apparent,
        "site_packages_du_bytes": disk,
        "venv_tooling": tooling,
        "packages": dict(sorted(out_pkgs.items(), key=lambda kv: -kv[1])),
    }


def _dist_name(info: Path) -> str:
    """``Foo_Bar-1.2.dist-info`` -> ``foo-bar``."""
    return normalize(info.name.removesuffix(".dist-info").rsplit("-", 1)[0])


def _site_packages(vpy: Path) -> Path:
    out = subprocess.run(
        [str(vpy), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return Path(out)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def main(argv: Sequence[str] | None = None) -> int:
    """Print the measurements as markdown (and JSON with ``--json``); exit 1 if torch or
    a CUDA package is in the runtime set, 2 if PyPI cannot be reached."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--no-installed", action="store_true", help="skip the fresh-venv install")
    ap.add_argument(
        "--no-unpacked",
        action="store_true",
        help="skip downloading the aarch64 wheels to sum their unpacked contents",
    )
    ap.add_argument("--top", type=int, default=10, help="largest packages to list (10)")
    ap.add_argument("--json", metavar="FILE", help="also write the numbers as JSON")
    args = ap.parse_args(argv)
    why = pypi_unreachable()
    if why:
        print(why, file=sys.stderr)
        return 2
    arm = resolve(REPO, aarch64=True)
    arm_sizes = download_sizes(arm)
    arm_unpacked = {} if args.no_unpacked else unpacked_sizes(arm)
    result: dict[str, Any] = {
        "aarch64": {
            "target": f"manylinux_2_35_aarch64 (and older), CPython {AARCH64_PYTHON}",
            "packages": {r.name: r.version for r in arm},
            "forbidden": forbidden(arm),
            "download_bytes": sum(arm_sizes.values()),
            "wheel_bytes": dict(sorted(arm_sizes.items(), key=lambda kv: -kv[1])),
            "unpacked_bytes": sum(arm_unpacked.values()) if arm_unpacked else None,
            "unpacked": arm_unpacked,
        }
    }
    if not args.no_installed:
        result["installed"] = installed_sizes(REPO)
        result["installed"]["machine"] = sysconfig.get_platform()
    lines: list[str] = []
    a = result["aarch64"]
    lines += [
        f"aarch64 ({a['target']}): {len(a['packages'])} distributions, "
        f"wheels to download {_mb(a['download_bytes'])}"
        + (
            f", unpacked {_mb(a['unpacked_bytes'])} (before .pyc compilation)"
            if a["unpacked_bytes"]
            else ""
        )
        + f"; torch/CUDA: {', '.join(a['forbidden']) or 'none'}",
        "",
        "| wheel (aarch64) | download | unpacked |",
        "|---|---|---|",
        *(
            f"| {k} {a['packages'][k]} | {_mb(v)} | "
            f"{_mb(arm_unpacked[k]) if k in arm_unpacked else '-'} |"
            for k, v in list(a["wheel_bytes"].items())[: args.top]
        ),
    ]
    if "installed" in result:
        i = result["installed"]
        lines += [
            "",
            f"installed on {i['platform']} (CPython {i['python']}, fresh venv, `pip install .`): "
            f"site-packages {_mb(i['site_packages_bytes'])} "
            f"({_mb(i['site_packages_du_bytes'])} on disk, du), of which venv tooling "
            f"(pip, setuptools) {_mb(sum(i['venv_tooling'].values()))}",
            "",
            "| package (installed) | size |",
            "|---|---|",
            *(f"| {k} | {_mb(v)} |" for k, v in list(i["packages"].items())[: args.top]),
        ]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if a["forbidden"] else 0


if __name__ == "__main__":
    sys.exit(main())
