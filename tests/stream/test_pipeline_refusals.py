"""Events a sink refuses as full (the MQTT outbox during a long outage) are logged as
rate-limited one-line warnings, not one traceback each; other sink failures keep theirs.

The sink is the real MQTT publisher (as the gateway wires it) on a real SQLite outbox
that is full of ``start`` events, which are never dropped, so it refuses every new event
with ``OutboxFullError``. It is never started: a refusal happens at the outbox, before
any broker is involved. The detector is scripted (one person in every frame; the
pipeline takes any :class:`~edge.tasks.base.DetectorLike`), so each frame gives an event:
the ``start``, then an ``update`` per frame (``update_every_s`` below the frame gap).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest

from edge.mqtt import Event, MqttConfig, Publisher
from edge.stream import pipeline as pipeline_module
from edge.stream.events import ZoneEvent
from edge.stream.pipeline import CameraPipeline, TaskRunner, TaskSpec
from edge.stream.sources import Frame, SourceSpec
from edge.stream.zones import ZoneSpec
from edge.tasks.base import ImageBGR
from edge.types import Detections
from tests.stream.media import free_port


class OnePerson:
    """Finds one person in the middle of every frame."""

    @property
    def class_names(self) -> Sequence[str]:
        return ["person"]

    def detect(
        self,
        image_bgr: ImageBGR,
        *,
        score_threshold: float | None = None,
        iou_threshold: float | None = None,
        classes: Sequence[str] | None = None,
    ) -> Detections:
        return Detections(
            xyxy=np.array([[60, 30, 100, 110]], np.float32),
            scores=np.array([0.9], np.float32),
            class_ids=np.array([0], np.int32),
        )


@pytest.fixture
def full_publisher(tmp_path: Path) -> Iterator[Publisher]:
    """A publisher whose outbox (10 rows) is full of start events."""
    config = MqttConfig.model_validate(
        {"host": "127.0.0.1", "port": free_port(), "outbox": {"max_rows": 10}}
    )
    pub = Publisher(config=config, outbox_path=tmp_path / "outbox.sqlite3", gateway_id="gw")
    for i in range(10):
        pub.publish_event(
            Event(
                type="start",
                camera="c",
                task="fence",
                zone="z",
                label="person",
                score=0.9,
                box=(0, 0, 5, 5),
                track_id=i,
            )
        )
    try:
        yield pub
    finally:
        pub.close()


def build(sink: object, tmp_path: Path) -> CameraPipeline:
    spec = TaskSpec(
        name="fence",
        zones=(ZoneSpec(name="all", polygon=None, update_every_s=0.01, cooldown_s=60.0),),
    )
    runner = TaskRunner(spec=spec, detector=OnePerson(), camera="cam")
    return CameraPipeline(
        camera="cam",
        source=SourceSpec(uri=str(tmp_path / "unused.avi")),
        tasks=[runner],
        sinks=[sink],  # type: ignore[list-item]
    )


def frames(start: int, n: int) -> Iterator[Frame]:
    image = np.zeros((120, 160, 3), np.uint8)
    for i in range(start, start + n):
        yield Frame(
            image=image,
            seq=i,
            index=i,
            t=100.0 + i * 0.1,
            wall_ms=1_700_000_000_000 + i * 100,
            captured_mono=time.monotonic(),
        )


def refusal_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "edge.stream" and "refused" in r.getMessage()]


def counted(record: logging.LogRecord) -> int:
    m = re.search(r"\[(\d+) like this in the last \d+ s", record.getMessage())
    return 1 if m is None else int(m.group(1))


def to_publisher(pub: Publisher) -> object:
    def sink(ev: ZoneEvent) -> None:  # what the gateway's outbox sink does
        pub.publish_event(Event(**ev.mqtt_fields()))

    return sink


def test_refused_events_log_one_line_then_a_counted_summary(
    full_publisher: Publisher, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    pipe = build(to_publisher(full_publisher), tmp_path)
    events = [ev for f in frames(0, 60) for ev in pipe.process(f)]
    assert len(events) >= 55  # start + an update per frame (the track needs a few hits)
    lines = refusal_lines(caplog)
    assert len(lines) == 1, [r.getMessage() for r in lines]  # 60 refusals within a minute
    (first,) = lines
    assert first.levelno == logging.WARNING and first.exc_info is None
    assert "camera cam:" in first.getMessage() and "outbox full" in first.getMessage()
    assert "\n" not in first.getMessage()
    assert not [r for r in caplog.records if r.name == "edge.stream" and r.exc_info]
    pipe.stop()  # ends the incident (refused too) and reports the rest
    lines = refusal_lines(caplog)
    assert len(lines) == 2 and lines[1].exc_info is None
    refused = pipe.metrics()["sink_errors"]
    assert refused == len(events) + 1  # every event, and the end at stop
    assert sum(counted(r) for r in lines) == refused
    m = full_publisher.metrics()
    assert sum(v for k, v in m.items() if k.startswith("mqtt_outbox_rejected_total")) == refused


def test_a_summary_line_per_interval_counts_the_refusals_since_the_last(
    full_publisher: Publisher,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pipeline_module, "SINK_REFUSED_LOG_INTERVAL_S", 2.0)
    caplog.set_level(logging.INFO)
    pipe = build(to_publisher(full_publisher), tmp_path)
    t0 = time.monotonic()
    first = [ev for f in frames(0, 20) for ev in pipe.process(f)]
    assert len(refusal_lines(caplog)) == 1 and time.monotonic() - t0 < 2.0
    time.sleep(max(0.0, t0 + 2.1 - time.monotonic()))
    later = pipe.process(next(frames(20, 1)))
    assert len(later) == 1
    lines = refusal_lines(caplog)
    assert len(lines) == 2
    assert counted(lines[1]) == len(first)  # the 19 not logged and this one
    assert f"event {later[0].event_id} (update)" in lines[1].getMessage()
    assert re.search(
        r"\[\d+ like this in the last 2 s, this one included\]$", lines[1].getMessage()
    )
    pipe.stop()
    assert sum(counted(r) for r in refusal_lines(caplog)) == pipe.metrics()["sink_errors"]


def test_other_sink_failures_keep_their_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(ev: ZoneEvent) -> None:
        raise RuntimeError("subscriber went away")

    caplog.set_level(logging.INFO)
    pipe = build(broken, tmp_path)
    events = [ev for f in frames(0, 10) for ev in pipe.process(f)]
    pipe.stop()
    failed = [r for r in caplog.records if r.name == "edge.stream" and "failed on" in r.message]
    assert len(failed) == len(events) + 1 == pipe.metrics()["sink_errors"]
    assert all(r.levelno == logging.ERROR and r.exc_info is not None for r in failed)
    assert not refusal_lines(caplog)
