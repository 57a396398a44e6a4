"""Alarm acknowledgement end to end: a real ``safety-edge run`` subprocess on vtest.avi,
a real mosquitto with a password file and the shipped site ACL
(``deploy/mosquitto/site.acl.template`` rendered), a control room and two intruders as
real MQTT clients, the console over HTTP and ``safety-edge events list``.

Checks: a valid ``ack`` from the control-room user is answered ``ok``, recorded (who and
when), stops the incident's ``update`` events and is in its ``end`` event, in
``events list`` and on the console's events page; acks published by users the ACL does
not let write ``cmd/`` (a read-only account, a gateway's own account) never reach the
gateway (its command counter and the later ``already: false`` prove it); malformed and
unknown commands and an unknown event id get error replies; the gateway keeps running
and logs no traceback; the events hash chain still verifies."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path
from string import Template
from typing import Any

import httpx
import pytest
import yaml

from tests.api.server_fixture import console_login
from tests.mqtt.broker import MOSQUITTO, MosquittoBroker, free_port, mosquitto_passwd
from tests.mqtt.subscriber import Subscriber
from tests.service.gateway_proc import REPO, VTEST, Gateway, NotifySocket, gateway_config

pytestmark = pytest.mark.slow

PREFIX, GW = "se-test", "gw-test"
CMD = f"{PREFIX}/{GW}/cmd"
ADMIN = "ack-test-admin-token"
USERS = {
    GW: "gw-secret",
    "control-room": "cr-secret",
    "site-reader": "reader-secret",
}


@pytest.fixture(autouse=True)
def _needs(default_model_manifest: Path) -> None:
    if not VTEST.is_file():
        pytest.skip(f"{VTEST} missing: apt-get install opencv-doc")
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto not installed (make deps)")


def client(broker: MosquittoBroker, user: str, topics: list[str]) -> Subscriber:
    return Subscriber(
        host=broker.host,
        port=broker.port,
        topics=topics,
        client_id=f"{user}-test",
        persistent=False,
        username=user,
        password=USERS[user],
    )


def events(sub: Subscriber) -> list[dict[str, Any]]:
    return [m.json() for m in sub.on_topic("/events")]


def replies(sub: Subscriber) -> dict[str | None, list[dict[str, Any]]]:
    out: dict[str | None, list[dict[str, Any]]] = {}
    for m in sub.on_topic("/cmd/reply"):
        r = m.json()
        out.setdefault(r["request_id"], []).append(r)
    return out


def send(sub: Subscriber, name: str, payload: bytes | dict[str, Any]) -> None:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    sub.client.publish(f"{CMD}/{name}", body, qos=1).wait_for_publish(5)


def ack(event_id: str, rid: str, by: str = "Ana (control room)") -> dict[str, Any]:
    return {"schema": 1, "cmd": "ack", "event_id": event_id, "by": by, "request_id": rid}


def reply(sub: Subscriber, rid: str, timeout: float = 10.0) -> dict[str, Any]:
    assert sub.wait_for(lambda: rid in replies(sub), timeout), (rid, replies(sub))
    return replies(sub)[rid][0]


def login(c: httpx.Client, base: str) -> None:
    r = console_login(c, base, token=ADMIN, next_path="/console/events")
    assert r.status_code == 303, r.text


def test_control_room_acknowledges_an_incident_over_mqtt(tmp_path: Path) -> None:
    passwd = mosquitto_passwd(tmp_path / "passwd", USERS)
    acl = tmp_path / "site.acl"
    template = (REPO / "deploy" / "mosquitto" / "site.acl.template").read_text()
    acl.write_text(Template(template).substitute(PREFIX=PREFIX))
    api_port = free_port()
    notify = NotifySocket()
    with MosquittoBroker(tmp_path, password_file=passwd, acl_file=acl) as broker:
        cfg = gateway_config(
            tmp_path,
            broker_port=broker.port,
            api_port=api_port,
            zone={"update_every_s": 0.5},
            mqtt={"username": GW, "password": USERS[GW], "commands": {"enabled": True}},
        )
        data = yaml.safe_load(cfg.read_text())
        data["api"]["admin_token"] = ADMIN
        cfg.write_text(yaml.safe_dump(data, sort_keys=False))
        base = f"http://127.0.0.1:{api_port}"
        control = client(broker, "control-room", [f"{PREFIX}/{GW}/events", f"{CMD}/reply"])
        reader = client(broker, "site-reader", [f"{PREFIX}/{GW}/status"])
        gw_creds = client(broker, GW, [f"{PREFIX}/{GW}/status"])  # a stolen gateway password
        with control, reader, gw_creds:
            gw = Gateway(cfg, notify=notify)
            try:
                gw.wait_ready()
                # an incident whose updates are flowing, acknowledged while open
                acked: dict[str, Any] | None = None
                tried: set[str] = set()

                def fresh_updates() -> list[dict[str, Any]]:
                    return [
                        e
                        for e in events(control)
                        if e["type"] == "update" and e["start_event_id"] not in tried
                    ]

                for attempt in range(5):
                    assert control.wait_for(lambda: bool(fresh_updates()), 60), gw.output()[-3000:]
                    upd = fresh_updates()[-1]
                    incident = upd["start_event_id"]
                    tried.add(incident)
                    # intruders first: the broker drops their acks (ACL), nothing reaches
                    send(reader, "ack", ack(incident, f"evil-reader-{attempt}", by="Eve"))
                    send(gw_creds, "ack", ack(incident, f"evil-gw-{attempt}", by="Eve"))
                    send(control, "ack", ack(upd["event_id"], f"good-{attempt}"))
                    got = reply(control, f"good-{attempt}")
                    assert got["ok"] is True and got["already"] is False, got
                    assert got["incident_id"] == incident
                    if not got["ended"]:
                        acked = got
                        break
                assert acked is not None, "every incident ended before its ack"
                assert acked["ack"]["by"] == "Ana (control room)"
                at_ms = acked["ack"]["at_ms"]
                assert abs(at_ms - time.time() * 1000) < 10_000
                # again (QoS 1 may redeliver): idempotent, the first ack stands
                send(control, "ack", ack(incident, "again", by="Bo"))
                again = reply(control, "again")
                assert again["ok"] and again["already"] is True and again["ack"] == acked["ack"]
                # malformed, unknown command, unknown event: error replies
                send(control, "ack", b'{"schema": 1, "cmd": "ack", "by": ')
                send(control, "reboot", {**ack(incident, "reboot"), "cmd": "reboot"})
                send(control, "ack", ack("01AAAAAAAAAAAAAAAAAAAAAAAA", "nobody"))
                assert reply(control, "reboot")["error"]["code"] == "unknown_command"
                assert reply(control, "nobody")["error"]["code"] == "unknown_event"
                assert control.wait_for(lambda: None in replies(control), 10)
                assert replies(control)[None][0]["error"]["code"] == "bad_json"
                # the console shows who acknowledged
                with httpx.Client() as c:
                    login(c, base)
                    page = c.get(f"{base}/console/events").text
                assert re.search(r'class="ack"><span[^>]*>Ana \(control room\)</span>', page), page
                # updates of the acknowledged incident stop; the gateway keeps running
                time.sleep(3.0)
                metrics = httpx.get(f"{base}/metrics", timeout=10).text
                assert gw.proc.poll() is None
                rc = gw.stop()
            except BaseException:
                gw.kill()
                raise
            finally:
                notify.close()
            out = gw.output()
            assert control.wait_for(
                lambda: any(
                    e["type"] == "end" and e["start_event_id"] == incident for e in events(control)
                ),
                10,
            ), out[-3000:]
            published = events(control)
            seen = replies(control)

    assert rc == 0, out[-3000:]
    assert "Traceback" not in out
    # the intruders' acks never reached the gateway: 5 commands from the control room per
    # try (ack, again, malformed, reboot, nobody less the ones not sent before the break)
    tries = int(acked["request_id"].split("-")[1]) + 1
    received = re.search(r"^safety_edge_mqtt_commands_received_total (\S+)$", metrics, re.M)
    assert received is not None and float(received.group(1)) == tries + 4, metrics
    assert not any(str(k).startswith("evil") for k in seen)
    # no update after the ack (1 s margin for a frame in flight), and one end with the ack
    mine = [e for e in published if e["start_event_id"] == incident]
    assert [e for e in mine if e["type"] == "update" and e["time_ms"] > at_ms + 1000] == []
    assert any(e["type"] == "update" for e in mine)  # updates were flowing before
    (end,) = [e for e in mine if e["type"] == "end"]
    assert end["attributes"]["ack"] == acked["ack"]
    # events list: every event of the incident says who acknowledged it
    cli = [sys.executable, "-m", "edge.cli", "events"]
    data_dir = ["--data-dir", str(tmp_path / "data")]
    listed = subprocess.run(
        [*cli, "list", *data_dir, "--limit", "100000"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    rows = [
        r for r in json.loads(listed.stdout) if incident in (r["event_id"], r["start_event_id"])
    ]
    assert rows and all(r["ack"] == acked["ack"] for r in rows)
    # the acknowledgement lives beside the chain: it still verifies
    verify = subprocess.run(
        [*cli, "verify", *data_dir], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
