"""Fleet bridging with the shipped broker configs: deploy/mosquitto/*.template rendered on
loopback ports, a site broker bridging to a central broker over TLS with passwords and
ACLs, the central broker stopped while a gateway publishes 500 events."""

from __future__ import annotations

import ssl
import time
from pathlib import Path
from string import Template
from typing import Any

from edge.mqtt import Event, MqttConfig, Publisher
from tests.mqtt.broker import MosquittoBroker, free_port, mosquitto_passwd
from tests.mqtt.certs import Pki
from tests.mqtt.subscriber import Subscriber
from tests.polling import wait

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "mosquitto"


def render(name: str, **values: Any) -> str:
    """``${VAR}`` substitution like envsubst; a placeholder without a value is an error."""
    return Template((DEPLOY / name).read_text()).substitute({k: str(v) for k, v in values.items()})


def test_site_bridge_queues_while_central_is_down(tmp_path: Path, pki: Pki) -> None:
    prefix, site = "safety-edge", "site-a"
    central_port, site_port = free_port(), free_port()

    certs = tmp_path / "certs"
    certs.mkdir()
    for src, dst in [
        (pki.ca_cert, "ca.pem"),
        (pki.server_cert, "server.pem"),
        (pki.server_key, "server.key"),
    ]:
        (certs / dst).write_bytes(src.read_bytes())
    central_pw = mosquitto_passwd(
        tmp_path / "central.passwd", {f"bridge-{site}": "bridge-secret", "ingest": "ingest-secret"}
    )
    central_acl = tmp_path / "central.acl"
    central_acl.write_text(render("central.acl.template", PREFIX=prefix, SITE_ID=site))
    central = MosquittoBroker(
        tmp_path,
        name="central",
        port=central_port,
        conf_text=render(
            "central.conf.template",
            CENTRAL_BIND="127.0.0.1",
            CENTRAL_PORT=central_port,
            PREFIX=prefix,
            DATA_DIR=tmp_path / "central",
            PASSWORD_FILE=central_pw,
            ACL_FILE=central_acl,
            CERT_DIR=certs,
        ),
    )
    site_pw = mosquitto_passwd(tmp_path / "site.passwd", {"gw-7": "gw-secret"})
    site_acl = tmp_path / "site.acl"
    site_acl.write_text(render("site.acl.template", PREFIX=prefix))
    site_broker = MosquittoBroker(
        tmp_path,
        name="site",
        port=site_port,
        conf_text=render(
            "site.conf.template",
            SITE_ID=site,
            SITE_BIND="127.0.0.1",
            SITE_PORT=site_port,
            PREFIX=prefix,
            DATA_DIR=tmp_path / "site",
            PASSWORD_FILE=site_pw,
            ACL_FILE=site_acl,
            CENTRAL_HOST="127.0.0.1",
            CENTRAL_PORT=central_port,
            CENTRAL_CA_FILE=certs / "ca.pem",
            BRIDGE_PASSWORD="bridge-secret",
            BRIDGE_RESTART_TIMEOUT="1 2",
        ),
    )
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    with central, site_broker:
        # A central consumer with a persistent session (QoS 1, clean_start=False): it gets
        # what arrives while it is disconnected, and its session survives the restart.
        sub = Subscriber(
            host="127.0.0.1", port=central_port, client_id="ingest-1",
            topics=[f"{prefix}/+/events", f"{prefix}/_bridges/#"],
            username="ingest", password="ingest-secret", tls_context=ctx,
        ).start()  # fmt: skip
        bridge_up = lambda: any(  # noqa: E731
            m.topic == f"{prefix}/_bridges/{site}/state" and m.payload == b"1" for m in sub.messages
        )
        assert wait(bridge_up, 15, interval=0.05), site_broker.log_text()[-2000:]

        config = MqttConfig(
            host="127.0.0.1", port=site_port, username="gw-7", password="gw-secret",
            backoff_min_s=0.05, backoff_max_s=0.5,
        )  # fmt: skip
        with Publisher(config=config, outbox_path=tmp_path / "gw.db", gateway_id="gw-7") as pub:
            pub.publish_event(_event(-1))
            assert pub.flush(10)
            # the path works end to end
            assert wait(lambda: len(sub.event_ids()) == 1, 10, interval=0.05)

            central.stop()
            ids = pub.publish_events([_event(i) for i in range(500)])
            assert pub.flush(20)  # the site broker took them all (PUBACK), central is down
        time.sleep(0.5)
        central.start()  # session of "ingest-1" and of the bridge restored from disk
        assert wait(lambda: set(ids) <= set(sub.event_ids()), 30, interval=0.05), (
            f"{len(set(ids) & set(sub.event_ids()))}/500 arrived\n{site_broker.log_text()[-2000:]}"
        )
        sub.stop()
    got = sub.event_ids()
    dups = sum(n - 1 for n in got.values() if n > 1)
    print(f"fleet: {len(set(ids) & set(got))}/500 events at the central broker, {dups} duplicates")


def _event(i: int) -> Event:
    return Event(
        type="start" if i % 2 else "end",
        camera="cam-9",
        task="fence",
        zone="yard",
        label="person",
        score=0.6,
        box=(1, 1, 9, 9),
        track_id=i,
    )
