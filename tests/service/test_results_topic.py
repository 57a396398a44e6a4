"""``mqtt.results: true``: every answer of the HTTP API reaches ``{prefix}/{gw}/results``
(QoS 0) from a real ``safety-edge run`` process, through a real mosquitto."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge.api.store import Store, db_path
from edge.cloud.client import ContractClient
from tests.conftest import SAMPLES
from tests.mqtt.broker import MOSQUITTO, MosquittoBroker, free_port
from tests.mqtt.subscriber import Subscriber
from tests.service.gateway_proc import VTEST, Gateway, NotifySocket, gateway_config

pytestmark = pytest.mark.slow


def test_api_answers_are_published_on_the_results_topic(
    tmp_path: Path, default_model_manifest: Path
) -> None:
    if not VTEST.is_file() or not Path(MOSQUITTO).exists():
        pytest.skip("needs opencv-doc's vtest.avi and mosquitto (make deps)")
    api_port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    with Store(path=db_path(data)) as store:
        app = store.create_app(name="results", description="", grants=["fence"])
        store.add_package(app=app.name, api="fence", tier="100k")
    notify = NotifySocket()
    with MosquittoBroker(tmp_path) as broker:
        cfg = gateway_config(
            tmp_path, broker_port=broker.port, api_port=api_port, mqtt={"results": True}
        )
        with Subscriber(
            host=broker.host,
            port=broker.port,
            topics=["se-test/gw-test/results"],
            client_id="sub-results",
        ) as sub:
            gw = Gateway(cfg, notify=notify)
            try:
                gw.wait_ready()
                with ContractClient(
                    base_url=f"http://127.0.0.1:{api_port}",
                    app_key=app.app_key,
                    app_secret=app.app_secret,
                    service_codes=dict(app.service_codes),
                ) as client:
                    image = (SAMPLES / "vtest_frame.jpg").read_bytes()
                    ok = client.fence([image], "300,250,768,250,768,576,300,576")
                    bad = client.fence([image], "1,2,3")
                assert sub.wait_for(lambda: len(sub.on_topic("/results")) >= 2, 20)
                records = [m.json() for m in sub.on_topic("/results")]
            finally:
                gw.stop()
                notify.close()
    assert ok.ok and not bad.ok and bad.code == 4012
    assert [r["schema"] for r in records] == [1, 1]
    assert {r["task"] for r in records} == {"fence"}
    first, second = (r["result"] for r in records)
    assert first["api"] == "fence" and first["app_key"] == app.app_key and first["code"] == 0
    assert first["answer"]["result"][0]["target_num"] == ok.items[0].target_num
    assert second["code"] == 4012 and second["answer"]["message"] == "error"
