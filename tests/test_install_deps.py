"""``pip install safety-edge`` pulls no torch and no CUDA packages, on this machine and on
an aarch64 gateway; the ``fast``/``dev``/``bench`` extras add none either, ``train`` does.

Real resolutions by pip against PyPI (``pip install --dry-run --report``, local pip
settings off; see ``tools/measure_install_size.py``): the aarch64 one for manylinux
glibc <= 2.35, CPython 3.10 (JetPack 6). Needs the network; skips at once, saying so,
when PyPI does not answer within 5 s. The four resolutions run in parallel (~10-30 s;
dependency metadata by HTTP range requests, so torch and CUDA wheels are not downloaded).
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from tools.measure_install_size import REPO, Resolved, forbidden, pypi_unreachable, resolve

RUNTIME_CORE = {"numpy", "onnxruntime", "opencv-python-headless", "shapely", "paho-mqtt"}


@pytest.fixture(scope="module")
def resolved() -> dict[str, list[Resolved]]:
    why = pypi_unreachable(timeout_s=5.0)
    if why is not None:
        pytest.skip(f"needs PyPI to resolve dependencies: {why}")
    jobs = {
        "host": dict(aarch64=False),
        "aarch64": dict(aarch64=True),
        "aarch64[fast,dev,bench]": dict(aarch64=True, extras=("fast", "dev", "bench")),
        "aarch64[train]": dict(aarch64=True, extras=("train",)),
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {k: pool.submit(resolve, REPO, timeout_s=120.0, **kw) for k, kw in jobs.items()}
        return {k: f.result() for k, f in futures.items()}


def names(rs: list[Resolved]) -> set[str]:
    return {r.name for r in rs}


@pytest.mark.parametrize("where", ["host", "aarch64"])
def test_runtime_install_pulls_no_torch_and_no_cuda(
    resolved: dict[str, list[Resolved]], where: str
) -> None:
    rs = resolved[where]
    assert "safety-edge" in names(rs)
    assert names(rs) >= RUNTIME_CORE, sorted(names(rs))  # a real, complete resolution
    assert forbidden(rs) == [], f"{where}: {forbidden(rs)}"


def test_aarch64_resolution_is_for_aarch64(resolved: dict[str, list[Resolved]]) -> None:
    wheels = [r.url.rsplit("/", 1)[-1] for r in resolved["aarch64"] if r.name in RUNTIME_CORE]
    binary = [w for w in wheels if not w.endswith("-none-any.whl")]
    assert binary, wheels
    for w in binary:
        assert "aarch64" in w and ("cp310" in w or "abi3" in w), w


def test_fast_dev_bench_extras_add_no_torch(resolved: dict[str, list[Resolved]]) -> None:
    rs = resolved["aarch64[fast,dev,bench]"]
    assert {"numba", "pytest", "matplotlib"} <= names(rs)  # the extras were resolved
    assert forbidden(rs) == []


def test_train_extra_pulls_torch(resolved: dict[str, list[Resolved]]) -> None:
    """The check can fail: the training extra does bring torch."""
    assert "torch" in names(resolved["aarch64[train]"])
    assert forbidden(resolved["aarch64[train]"])
