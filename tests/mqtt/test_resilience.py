"""Failure paths with real brokers and processes: broker down mid-burst, publisher
SIGKILLed mid-burst (last will), wrong password, TLS, and the outbox-full policy."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from edge.mqtt import MqttConfig, OutboxFullError, Publisher
from tests.mqtt.broker import BrokerTls, MosquittoBroker, free_port, mosquitto_passwd
from tests.mqtt.certs import Pki
from tests.mqtt.events import event
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait

REPO = Path(__file__).resolve().parents[2]


def cfg(port: int, **kw: Any) -> MqttConfig:
    base: dict[str, Any] = dict(host="127.0.0.1", port=port, backoff_min_s=0.05, backoff_max_s=0.5)
    base.update(kw)
    return MqttConfig.model_validate(base)


def report_duplicates(name: str, ids: Counter[str]) -> int:
    dups = sum(n - 1 for n in ids.values() if n > 1)
    print(f"{name}: {len(ids)} distinct event ids, {dups} duplicate deliveries")
    return dups


@pytest.mark.slow
def test_broker_down_20s_in_the_middle_of_a_2000_event_burst(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    sub = Subscriber(
        host=broker.host, port=broker.port, topics=["safety-edge/gw/events"], client_id="sub"
    ).start()
    published: list[str] = []
    with Publisher(config=cfg(broker.port), outbox_path=tmp_path / "o.db", gateway_id="gw") as pub:
        assert wait(lambda: pub.connected, 10)

        def burst() -> None:  # 2,000 events as fast as they go, start/update/end mix
            for i in range(2000):
                kind = "start" if i % 50 == 0 else "end" if i % 50 == 49 else "update"
                published.append(pub.publish_event(event(i, kind)))

        producer = threading.Thread(target=burst)
        producer.start()
        assert wait(lambda: len(published) >= 700, 30)
        in_flight = pub.metrics()["mqtt_inflight"]
        broker.stop()  # mid-burst, with messages in flight
        stopped_at = time.monotonic()
        print(f"broker stopped after {len(published)} events, {in_flight:.0f} in flight")
        assert wait(lambda: not pub.connected, 5)
        producer.join(60)
        assert len(published) == 2000
        assert pub.outbox.rows > 0  # the rest waits on disk
        time.sleep(max(0.0, 20.0 - (time.monotonic() - stopped_at)))
        broker.start()
        assert pub.flush(60), f"outbox not drained: {pub.outbox.rows} rows"
        m = pub.metrics()
    assert wait(lambda: set(sub.event_ids()) >= set(published), 30)
    sub.stop()
    ids = sub.event_ids()
    assert set(ids) == set(published)  # every event at least once
    report_duplicates("broker down 20 s", ids)
    # First deliveries are in publish order: resending starts from the oldest unacked row.
    order = {eid: k for k, eid in enumerate(published)}
    firsts = list(dict.fromkeys(r.json()["event_id"] for r in sub.on_topic("/events")))
    assert [order[e] for e in firsts] == sorted(order[e] for e in firsts)
    assert m["mqtt_connects_total"] >= 2
    assert (
        m.get('mqtt_disconnects_total{reason="connection_lost"}', 0)
        + m.get('mqtt_disconnects_total{reason="server_shutting_down"}', 0)
        >= 1
    )
    assert m['mqtt_connect_failures_total{reason="connection_refused"}'] >= 1


def _child(
    port: int, outbox: Path, ids: Path, count: int, first: int, rate: float
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable, "-m", "tests.mqtt.publisher_child", "--port", str(port),
            "--outbox", str(outbox), "--ids", str(ids), "--count", str(count),
            "--first", str(first), "--rate", str(rate),
        ],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip


def test_publisher_sigkilled_mid_burst_then_restarted(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    sub = Subscriber(
        host=broker.host, port=broker.port, topics=["safety-edge/gw-crash/#"], client_id="sub"
    ).start()
    outbox, ids_file = tmp_path / "outbox.db", tmp_path / "ids.txt"
    proc = _child(broker.port, outbox, ids_file, count=3000, first=0, rate=1500)
    accepted = lambda: ids_file.read_text().split() if ids_file.exists() else []  # noqa: E731
    assert wait(lambda: len(accepted()) >= 800, 30), proc.stdout.read() if proc.stdout else ""
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    killed_after = len(accepted())
    assert killed_after < 3000
    # The broker publishes the last will: retained offline status.
    assert wait(
        lambda: any(r.json().get("reason") == "connection_lost" for r in sub.on_topic("/status")),
        10,
    )

    proc = _child(broker.port, outbox, ids_file, count=200, first=3000, rate=0)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "DONE" in out, out
    everything = accepted()
    assert len(everything) == killed_after + 200
    assert wait(lambda: set(sub.event_ids()) >= set(everything), 30)
    sub.stop()
    got = sub.event_ids()
    missing = set(everything) - set(got)
    assert not missing
    report_duplicates(f"SIGKILL after {killed_after} accepted", got)
    states = [r.json()["state"] for r in sub.on_topic("/status")]
    assert states[:3] == ["online", "offline", "online"] and states[-1] == "offline"


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_wrong_password_is_a_clear_error_with_long_backoff(tmp_path: Path, protocol: str) -> None:
    pw = mosquitto_passwd(tmp_path / "passwd", {"gw": "right"})
    alerts: list[dict[str, Any]] = []
    with MosquittoBroker(tmp_path, password_file=pw) as broker:
        config = cfg(
            broker.port, protocol=protocol, username="gw", password="wrong", backoff_auth_s=1.5
        )
        with Publisher(
            config=config, outbox_path=tmp_path / "o.db", gateway_id="gw", on_alert=alerts.append
        ) as pub:
            pub.publish_event(event(1, "start"))  # accepted into the outbox regardless
            time.sleep(2.0)
            m = pub.metrics()
            assert not pub.connected and pub.outbox.rows == 1
        failures = {k: v for k, v in m.items() if k.startswith("mqtt_connect_failures_total")}
        # not a tight loop: first try, then one retry after ~1.5 s (+-20 %)
        assert 1 <= m["mqtt_connect_attempts_total"] <= 2, m
        (reason,) = failures
        assert reason in (
            'mqtt_connect_failures_total{reason="bad_credentials"}',
            'mqtt_connect_failures_total{reason="not_authorized"}',
        )
        assert pub.last_error is not None and "refused the connection" in pub.last_error
        assert "mqtt.username" in pub.last_error or "credentials" in pub.last_error
        assert alerts[0]["kind"] == "mqtt_connect_failed" and alerts[0]["severity"] == "critical"
        # with the right password the same outbox is delivered
        good = cfg(broker.port, protocol=protocol, username="gw", password="right")
        with Publisher(config=good, outbox_path=tmp_path / "o.db", gateway_id="gw") as pub:
            assert pub.flush(10)


def _tls_broker(tmp_path: Path, pki: Pki, *, require_cert: bool = False) -> MosquittoBroker:
    tls = BrokerTls(pki.ca_cert, pki.server_cert, pki.server_key, require_certificate=require_cert)
    return MosquittoBroker(tmp_path, tls=tls)


def test_tls_with_the_right_ca(tmp_path: Path, pki: Pki) -> None:
    with _tls_broker(tmp_path, pki) as broker:
        config = cfg(broker.port, tls={"ca_file": str(pki.ca_cert)})
        with Publisher(config=config, outbox_path=tmp_path / "o.db", gateway_id="gw") as pub:
            pub.publish_event(event(1, "start"))
            assert pub.flush(10)
            assert pub.metrics()["mqtt_connects_total"] == 1
        # by name: the host name is checked against the certificate's DNS:localhost
        config = cfg(broker.port, host="localhost", tls={"ca_file": str(pki.ca_cert)})
        with Publisher(config=config, outbox_path=tmp_path / "o2.db", gateway_id="gw") as pub:
            pub.publish_event(event(2, "start"))
            assert pub.flush(10) and pub.metrics()["mqtt_connects_total"] == 1


def test_tls_with_a_wrong_ca_fails_clearly_and_backs_off(tmp_path: Path, pki: Pki) -> None:
    with _tls_broker(tmp_path, pki) as broker:
        config = cfg(broker.port, tls={"ca_file": str(pki.other_ca_cert)}, backoff_auth_s=30)
        with Publisher(config=config, outbox_path=tmp_path / "o.db", gateway_id="gw") as pub:
            assert wait(lambda: pub.last_error is not None, 10)
            time.sleep(0.5)
            m = pub.metrics()
            assert not pub.connected
            assert "TLS certificate verification of 127.0.0.1" in (pub.last_error or "")
            assert "ca_file" in (pub.last_error or "")
        assert m['mqtt_connect_failures_total{reason="tls_verify_failed"}'] == 1
        assert m["mqtt_connect_attempts_total"] == 1  # hard failure: no retry within 30 s


def test_mutual_tls(tmp_path: Path, pki: Pki) -> None:
    with _tls_broker(tmp_path, pki, require_cert=True) as broker:
        tls = {
            "ca_file": str(pki.ca_cert),
            "cert_file": str(pki.client_cert),
            "key_file": str(pki.client_key),
        }
        with_cert = cfg(broker.port, tls=tls)
        with Publisher(config=with_cert, outbox_path=tmp_path / "o.db", gateway_id="gw") as pub:
            pub.publish_event(event(1, "start"))
            assert pub.flush(10)
        without = cfg(
            broker.port, tls={"ca_file": str(pki.ca_cert)}, backoff_min_s=5, backoff_max_s=5
        )
        with Publisher(config=without, outbox_path=tmp_path / "o2.db", gateway_id="gw") as pub:
            assert wait(lambda: pub.last_error is not None, 10)
            assert not pub.connected


def test_outbox_full_policy_is_counted_alerted_and_delivered(tmp_path: Path) -> None:
    """Broker away, outbox bounded to 20 rows: old updates are dropped (counted, one
    coalesced alert), start/end are never dropped, and when only they remain new events
    are refused with OutboxFullError. When the broker returns, every stored event and the
    loss alert arrive; received + dropped updates == published updates."""
    broker = MosquittoBroker(tmp_path, port=free_port())
    with broker:  # the subscriber's persistent session exists before the gateway connects
        Subscriber(
            host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
        ).start().stop()
    alerts: list[dict[str, Any]] = []
    config = cfg(broker.port, outbox={"max_rows": 20})
    protected, updates, refused = [], [], 0
    with Publisher(
        config=config, outbox_path=tmp_path / "o.db", gateway_id="gw", on_alert=alerts.append
    ) as pub:
        for i in range(5):
            protected.append(pub.publish_event(event(i, "start")))
        for i in range(100):
            updates.append(pub.publish_event(event(100 + i)))
        # 5 starts + 15 updates fill it; the 16th update drops the oldest and raises the
        # alert, whose own row drops one more; then each update drops the oldest update.
        assert len(alerts) == 1 and alerts[0]["kind"] == "mqtt_outbox_loss"
        assert alerts[0]["dropped_updates"] == 1 and alerts[0]["outbox_rows"] == 20
        for i in range(30):
            try:
                protected.append(pub.publish_event(event(200 + i, "end")))
            except OutboxFullError:
                refused += 1
        m = pub.metrics()
        kinds = Counter(r.kind for r in pub.outbox.read_after(0, 100))
        assert kinds == {"start": 5, "end": 14, "alert": 1}  # 14 ends replaced the last updates
        assert refused == 16
        assert m['mqtt_outbox_dropped_total{kind="update"}'] == 100
        assert m['mqtt_outbox_rejected_total{kind="end"}'] == 16
        assert len(alerts) == 1  # coalesced: at most one per alert_interval_s (60 s)
        with broker:
            sub = Subscriber(
                host=broker.host, port=broker.port, topics=["safety-edge/gw/#"], client_id="s"
            ).start()
            assert pub.flush(15)
            assert wait(lambda: len(sub.on_topic("/alerts")) == 1, 5)
            sub.stop()
        m = pub.metrics()
    got = sub.event_ids()
    assert set(got) == set(protected)
    assert len(set(updates) & set(got)) + m['mqtt_outbox_dropped_total{kind="update"}'] == 100
    (published,) = [r.json()["alert"] for r in sub.on_topic("/alerts")]
    assert published["kind"] == "mqtt_outbox_loss" and published["dropped_updates"] == 1
    # close() flushes what accumulated since the first alert: nothing goes uncounted.
    assert len(alerts) == 2
    assert alerts[1]["dropped_updates"] == 99 and alerts[1]["refused"] == 16
