"""Prometheus text for the camera pipelines and the MQTT publisher (``/metrics`` of
``safety-edge run``, appended to the HTTP API's own series).

Series (labels in braces; times in seconds, as Prometheus wants):

- ``safety_edge_camera_up{camera}`` 1 online, 0 offline or not started;
- ``safety_edge_camera_fps{camera}`` frames processed per second (last 64 frames);
- ``safety_edge_camera_frames_total{camera,stage}`` read / processed / dropped /
  skipped (dropped: replaced before the loop took them -- the loop is too slow; skipped:
  left out on purpose by ``target_fps``);
- ``safety_edge_camera_reconnects_total{camera}``, ``..._failures_total{camera}``;
- ``safety_edge_camera_frame_seconds{camera}`` mean time per frame (all tasks);
- ``safety_edge_camera_stage_seconds{camera,task,stage}`` mean of preprocess, inference,
  decode, nms, track, zones;
- ``safety_edge_camera_event_latency_seconds{camera,quantile}`` frame capture to event
  handed to the outbox (p50, p95 of the last 512 events);
- ``safety_edge_events_total{camera,type}`` start / update / end;
- ``safety_edge_zone_inside{camera,task,zone}``, ``safety_edge_zone_open_incidents{...}``;
- ``safety_edge_line_crossings_total{camera,task,line,direction}`` crossings counted
  per counting line and direction (``in``/``out``) since the start;
- ``safety_edge_camera_output_errors_total{camera,output}`` store / sink failures;
- ``safety_edge_camera_progress_age_seconds{camera,thread}`` seconds since the camera
  ``loop`` / the source ``reader`` last made progress (hang detection; 0 when not
  running);
- ``safety_edge_api_loop_age_seconds`` seconds since the in-process API's event loop
  last ran its heartbeat (hang detection; absent when the API is off);
- ``safety_edge_data_free_bytes`` / ``safety_edge_data_size_bytes`` free space (what an
  unprivileged user may still write) and size of the filesystem holding ``data_dir``,
  and ``safety_edge_data_free_low`` 1 while free space is low (``disk_low``; from the
  gateway's minutely check; absent before the first or while it cannot be read);
- ``safety_edge_snapshots_*`` saved, failures, deleted, bytes;
- ``safety_edge_events_pruned_total{reason}`` events deleted from the events database
  by the gateway's hourly prune: ``age`` (``storage.events_retention_days``) or ``size``
  (``storage.events_max_mb``; a rising count means the bound, not the retention, decides
  how far back events go); ``safety_edge_events_db_bytes`` /
  ``safety_edge_events_db_live_bytes`` the database file's size and the part in use
  (free pages are reused) at the last prune (absent before the first);
- ``safety_edge_task_up{camera,task}`` 0 when the task's model is unavailable;
- the publisher's series prefixed ``safety_edge_`` (``safety_edge_mqtt_outbox_rows`` is
  the outbox depth, ``safety_edge_mqtt_connected``, ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

__all__ = ["prometheus_text"]

_STAGES = ("preprocess", "inference", "decode", "nms", "track", "zones")


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(**kv: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(v)}"' for k, v in kv.items()) + "}"


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


class _Out:
    """Samples grouped by family (Prometheus wants each family's samples together)."""

    def __init__(self) -> None:
        self._families: dict[str, tuple[str, str, list[str]]] = {}

    def head(self, name: str, kind: str, text: str) -> None:
        self._families.setdefault(name, (kind, text, []))

    def add(self, name: str, labels: str, value: float) -> None:
        self._families[name][2].append(f"{name}{labels} {_num(value)}")

    def text(self) -> str:
        lines: list[str] = []
        for name, (kind, text, samples) in self._families.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def prometheus_text(
    cameras: Iterable[Mapping[str, Any]],
    *,
    tasks_up: Mapping[tuple[str, str], bool],
    publisher: Mapping[str, float] | None = None,
    api_loop_age_s: float | None = None,
    disk: Mapping[str, Any] | None = None,
    events_db: Mapping[str, int] | None = None,
) -> str:
    """Prometheus text exposition (ends with a newline).

    Args:
        cameras: :meth:`edge.stream.pipeline.CameraPipeline.metrics` dicts (plus
            ``running``); a camera that is not running may pass ``{"camera": name}``.
        tasks_up: ``(camera, task) -> available`` for every configured camera task.
        publisher: :meth:`edge.mqtt.publisher.Publisher.metrics` (``None``: MQTT off).
        api_loop_age_s: seconds since the API's event loop last beat (``None``: API off).
        disk: the data folder's last free-space reading (``free_bytes``, ``size_bytes``,
            ``low``; :meth:`~edge.service.gateway.GatewayService.check_disk`; ``None``:
            none yet).
        events_db: the gateway's event pruning: ``pruned_age``, ``pruned_size`` (events
            deleted since the start) and, after the first pass, ``file_bytes``,
            ``live_bytes`` (:class:`edge.stream.events.DbSize`); ``None``: no events
            database.
    """
    o = _Out()
    for m in cameras:
        cam = str(m["camera"])
        lab = _labels(camera=cam)
        o.head("safety_edge_camera_up", "gauge", "1 when the camera delivers frames.")
        o.add("safety_edge_camera_up", lab, 1 if m.get("online") else 0)
        if "fps" not in m:
            continue
        o.head("safety_edge_camera_fps", "gauge", "Frames processed per second (last 64).")
        o.add("safety_edge_camera_fps", lab, float(m["fps"]))
        o.head(
            "safety_edge_camera_frames_total",
            "counter",
            "Frames by stage: read from the source, processed, dropped (loop too slow), "
            "skipped (target_fps).",
        )
        for stage, key in (
            ("read", "frames_read"),
            ("processed", "frames_processed"),
            ("dropped", "frames_dropped"),
            ("skipped", "frames_skipped"),
        ):
            o.add("safety_edge_camera_frames_total", _labels(camera=cam, stage=stage), m[key])
        o.head("safety_edge_camera_reconnects_total", "counter", "Source reconnect attempts.")
        o.add("safety_edge_camera_reconnects_total", lab, m["reconnects"])
        o.head("safety_edge_camera_failures_total", "counter", "Times the camera went offline.")
        o.add("safety_edge_camera_failures_total", lab, m["failures"])
        o.head("safety_edge_camera_frame_seconds", "gauge", "Mean time per frame, all tasks.")
        o.add("safety_edge_camera_frame_seconds", lab, m["frame_ms"]["mean_ms"] / 1e3)
        o.head(
            "safety_edge_camera_stage_seconds",
            "gauge",
            "Mean time per frame of each stage of each task.",
        )
        for task, t in m["tasks"].items():
            for stage in _STAGES:
                st = t["stage_ms"].get(stage)
                if st is not None:
                    o.add(
                        "safety_edge_camera_stage_seconds",
                        _labels(camera=cam, task=task, stage=stage),
                        st["mean_ms"] / 1e3,
                    )
        o.head(
            "safety_edge_camera_event_latency_seconds",
            "gauge",
            "Frame capture to event handed to the outputs (last 512 events).",
        )
        for q, key in (("0.5", "p50"), ("0.95", "p95")):
            o.add(
                "safety_edge_camera_event_latency_seconds",
                _labels(camera=cam, quantile=q),
                m["latency_ms"][key] / 1e3,
            )
        o.head("safety_edge_events_total", "counter", "Zone events raised, by type.")
        for kind, n in sorted(m["events"].items()):
            o.add("safety_edge_events_total", _labels(camera=cam, type=kind), n)
        o.head("safety_edge_zone_inside", "gauge", "Tracks inside the zone on the last frame.")
        o.head("safety_edge_zone_open_incidents", "gauge", "Incidents started, not yet ended.")
        for task, t in m["tasks"].items():
            for zone, z in t["zones"].items():
                zl = _labels(camera=cam, task=task, zone=zone)
                o.add("safety_edge_zone_inside", zl, z["inside"])
                o.add("safety_edge_zone_open_incidents", zl, z["open"])
        o.head(
            "safety_edge_line_crossings_total",
            "counter",
            "Crossings of the counting line, by direction, since the start.",
        )
        for task, t in m["tasks"].items():
            for line, c in t.get("lines", {}).items():
                for direction in ("in", "out"):
                    o.add(
                        "safety_edge_line_crossings_total",
                        _labels(camera=cam, task=task, line=line, direction=direction),
                        c[direction],
                    )
        o.head(
            "safety_edge_camera_output_errors_total",
            "counter",
            "Events not stored (store) or not handed to the outbox (sink).",
        )
        o.add(
            "safety_edge_camera_output_errors_total",
            _labels(camera=cam, output="store"),
            m["store_errors"],
        )
        o.add(
            "safety_edge_camera_output_errors_total",
            _labels(camera=cam, output="sink"),
            m["sink_errors"],
        )
        o.head(
            "safety_edge_camera_progress_age_seconds",
            "gauge",
            "Seconds since the camera loop / source reader last made progress.",
        )
        for thread, age in sorted(m.get("progress_age_s", {}).items()):
            o.add(
                "safety_edge_camera_progress_age_seconds",
                _labels(camera=cam, thread=thread),
                float(age),
            )
        if "snapshots_saved" in m:
            for key, kind, text in (
                ("snapshots_saved", "counter", "Snapshots written."),
                ("snapshot_save_failures", "counter", "Snapshots not written (disk)."),
                ("snapshots_deleted", "counter", "Snapshots deleted by retention."),
                ("snapshot_bytes", "gauge", "Bytes kept in the snapshot folder (-1: unknown)."),
            ):
                name = f"safety_edge_{key}" + ("_total" if kind == "counter" else "")
                o.head(name, kind, text)
                o.add(name, lab, m[key])
    if api_loop_age_s is not None:
        o.head(
            "safety_edge_api_loop_age_seconds",
            "gauge",
            "Seconds since the API event loop last made progress.",
        )
        o.add("safety_edge_api_loop_age_seconds", "", float(api_loop_age_s))
    if disk is not None:
        for name, value, text in (
            (
                "safety_edge_data_free_bytes",
                disk["free_bytes"],
                "Free bytes (for unprivileged users) on the filesystem holding data_dir.",
            ),
            (
                "safety_edge_data_size_bytes",
                disk["size_bytes"],
                "Size in bytes of the filesystem holding data_dir.",
            ),
            (
                "safety_edge_data_free_low",
                1 if disk["low"] else 0,
                "1 while free space is under storage.min_free_mb (disk_low alert).",
            ),
        ):
            o.head(name, "gauge", text)
            o.add(name, "", int(value))
    if events_db is not None:
        name = "safety_edge_events_pruned_total"
        o.head(name, "counter", "Events deleted by the hourly prune, by reason (age, size).")
        for reason in ("age", "size"):
            o.add(name, _labels(reason=reason), int(events_db[f"pruned_{reason}"]))
        for key, name, text in (
            ("file_bytes", "safety_edge_events_db_bytes", "Events database file size"),
            ("live_bytes", "safety_edge_events_db_live_bytes", "Events database pages in use"),
        ):
            if key in events_db:
                o.head(name, "gauge", f"{text} (bytes, at the last prune).")
                o.add(name, "", int(events_db[key]))
    o.head("safety_edge_task_up", "gauge", "1 when the camera task runs (its model loaded).")
    for (cam, task), up in sorted(tasks_up.items()):
        o.add("safety_edge_task_up", _labels(camera=cam, task=task), 1 if up else 0)
    if publisher is not None:
        for key, value in sorted(publisher.items()):
            name, _, rest = key.partition("{")
            full = f"safety_edge_{name}"
            kind = "counter" if name.endswith("_total") else "gauge"
            o.head(full, kind, f"MQTT publisher: {name.replace('_', ' ')}.")
            o.add(full, ("{" + rest) if rest else "", value)
    return o.text()
