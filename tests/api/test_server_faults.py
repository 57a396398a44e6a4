"""Server-side faults on a real gateway: a locked database, a full disk, a missing model,
a model that fails at inference. Each is answered with its code (5002 on the fence API,
5000 on the others; 5001 / 5000 for the model), raises an alert or shows in the status,
and never crashes the server."""

from __future__ import annotations

import resource
import signal
import sqlite3
from pathlib import Path

from edge.api.store import db_path
from tests.api.server_fixture import (
    Server,
    b64,
    jpeg_bytes,
    start_server,
    write_models_with_broken_fence,
)

IMG = b64(jpeg_bytes())
FULL_AREA = "0,0,63,0,63,63,0,63"
FENCE = {"image": [IMG], "area": FULL_AREA}


def _assert_healthy(s: Server) -> None:
    assert s.health()["status"] == "ok"
    assert s.process.poll() is None
    assert "Traceback" not in s.log()


def test_locked_database_answers_5002_or_5000_and_raises_alert(tmp_path: Path) -> None:
    with start_server(tmp_path, api={"db_busy_timeout_ms": 200}) as s:
        app = s.create_app("locked-app")
        assert s.contract(s.post("fence", app, FENCE))["code"] == 0
        # Another writer holds the database's write lock.
        other = sqlite3.connect(str(db_path(s.data_dir)), isolation_level=None, timeout=5)
        try:
            other.execute("BEGIN EXCLUSIVE")
            doc = s.contract(s.post("fence", app, FENCE))
            assert doc == {
                "code": 5002,
                "message": "error",
                "details": "database error (locked); retry later",
            }
            doc = s.contract(s.post("hardhat", app, {"image": IMG}))
            assert doc["code"] == 5000 and "database error (locked)" in doc["details"]
            # Client errors are still answered as such (validation needs no write).
            assert s.contract(s.post("fence", app, {"image": [], "area": "x"}))["code"] == 4007
        finally:
            other.execute("ROLLBACK")
            other.close()
        # The background task opens a store_fault alert once the database accepts writes.
        s.wait_for(
            lambda: any(
                a["kind"] == "store_fault" and a["key"] == "locked"
                for a in s.console("alerts", active="true")
            ),
            timeout=15,
        )
        assert s.contract(s.post("fence", app, FENCE))["code"] == 0
        _assert_healthy(s)


def _limit_file_size() -> None:
    """In the server process: files may not grow past 256 KiB (a full disk for SQLite's
    WAL), and SIGXFSZ is ignored so the write fails instead of killing the process."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (256 * 1024, 256 * 1024))


def test_disk_full_answers_5002_or_5000_without_crash(tmp_path: Path) -> None:
    """The kernel's file-size limit makes SQLite's writes fail for real (SQLITE_FULL on
    the short write, disk I/O error after it): the portable stand-in for a full disk."""
    with start_server(tmp_path, preexec_fn=_limit_file_size) as s:
        app = s.create_app("full-disk", calls=100_000)
        codes = []
        for _ in range(400):
            doc = s.contract(s.post("fence", app, FENCE))
            codes.append(doc["code"])
            if doc["code"] == 5002:
                assert doc["details"] in (
                    "database error (full); retry later",
                    "database error (io); retry later",
                )
                break
        assert set(codes) <= {0, 5002} and codes[-1] == 5002, codes
        doc = s.contract(s.post("hardhat", app, {"image": IMG}))
        assert doc["code"] == 5000 and "database error" in doc["details"]
        status = s.console("status")
        assert {f["kind"] for f in status["store_faults"]} & {"full", "io"}
        metrics = s.http.get(s.base_url + "/metrics").text
        assert "safety_edge_store_faults_total" in metrics
        # Requests that need no write still work.
        assert s.contract(s.post("fence", app, {"image": [""], "area": FULL_AREA}))["code"] == 4008
        _assert_healthy(s)


def test_missing_and_failing_models(tmp_path: Path) -> None:
    write_models_with_broken_fence(tmp_path / "models")
    with start_server(
        tmp_path,
        tasks={"hardhat": "no-such-model", "fence": "broken", "workwear": None},
        write_model_files=False,
    ) as s:
        app = s.create_app("model-app", calls=10)
        doc = s.contract(s.post("hardhat", app, {"image": IMG}))
        assert doc["code"] == 5000 and "no-such-model" in doc["details"]
        doc = s.contract(s.post("workwear", app, {"image": IMG}))
        assert doc["code"] == 5000 and "switched off" in doc["details"]
        doc = s.contract(s.post("fence", app, FENCE))
        assert doc["code"] == 5001 and "inference failed" in doc["details"]
        # Client faults keep their codes even when the model is missing.
        assert s.contract(s.post("hardhat", app, {"image": "@@"}))["code"] == 4003
        health = s.health()  # unauthenticated: no model names, no paths
        assert health["models"] == {
            "hardhat": "model not available",
            "workwear": "model not available",
            "fence": "up",
        }
        status = s.console("status")  # the admin sees why
        assert "no-such-model" in status["models"]["hardhat"]
        assert str(s.models_dir) in status["models"]["hardhat"]
        assert "switched off" in status["models"]["workwear"]
        assert "no-such-model" in s.log()
        metrics = s.http.get(s.base_url + "/metrics").text
        assert 'safety_edge_model_up{api="hardhat"} 0' in metrics
        with s.store() as st:  # the fence call that failed in inference drew its call
            assert st.remaining(app_key=app.app_key, api="fence") == 9
            assert st.remaining(app_key=app.app_key, api="hardhat") == 10
        assert s.process.poll() is None
