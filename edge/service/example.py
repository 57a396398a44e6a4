"""The commented example ``gateway.yaml`` printed by ``safety-edge config example``.

It is also the config reference kept beside the models of :mod:`edge.config`: every
section and most keys appear with their default or a typical value and a comment.
``deploy/gateway.example.yaml`` is a copy (a test keeps the two identical and checks that
the example passes ``safety-edge config check``).
"""

from __future__ import annotations

__all__ = ["EXAMPLE_YAML"]

EXAMPLE_YAML = """\
# safety-edge gateway configuration (safety-edge config example > gateway.yaml)
# Check it with:  safety-edge config check gateway.yaml
# Unknown keys are errors. Every key is optional unless marked "required".
# Secrets may come from the environment instead of this file:
#   SAFETY_EDGE_MQTT_USERNAME, SAFETY_EDGE_MQTT_PASSWORD   (override mqtt.username/password)
#   SAFETY_EDGE_ADMIN_TOKEN                                (overrides api.admin_token)
#   SAFETY_EDGE_CMD_TOKEN                                  (overrides mqtt.commands.token)
#   SAFETY_EDGE_FALLBACK_APP_KEY                           (overrides fallback.app_key)
#   SAFETY_EDGE_FALLBACK_APP_SECRET                        (overrides fallback.app_secret)
#   SAFETY_EDGE_EVENTS_KEY                                 (overrides storage.events_key_file)
#   ${ANY_NAME} inside a camera source is replaced from the environment at start.

gateway_id: site-a-gw-01        # letters, digits, _ and -; MQTT client id and topic level
data_dir: /var/lib/safety-edge  # SQLite files (events, outbox, API), snapshots
models_dir: models              # ONNX models + manifests (safety-edge models list)

# Which model serves each task by default (manifest names in models_dir); the HTTP API
# uses the same models. A camera task may name another model.
tasks:
  fence: person_vehicle
  hardhat: hardhat
  workwear: workwear
  wearing:                      # worn, not held: a hat counts only on a person's head
    person_model: null          # people for the rule and the summary; null: tasks.fence
    worn_rule: true             # false: every hat the model sees counts (head crops)
    min_person_px: 64           # lower person boxes: cannot_tell (too_small)
    occluded_fraction: 0.5      # head covered this much by a person in front: cannot_tell
    uncertain_band: [0.25, 0.5] # deciding score < 0.5: cannot_tell; people < 0.25 ignored

# Detections kept for tracking and zones (a camera task may override them).
filters:
  min_score: 0.35               # null: the model's own threshold
  min_box_area: 400             # pixels^2 of the camera frame

cameras:
  - name: gate                  # required; MQTT topic level: no / + # $ or spaces
    source: rtsp://viewer:${GATE_CAM_PASSWORD}@192.168.1.64:554/Streaming/Channels/102
    target_fps: 5               # detections per second at most; null: every frame
    rtsp_transport: tcp         # tcp | udp
    open_timeout_s: 10
    read_timeout_s: 10          # no frame for this long: offline, reconnect with backoff
    backoff_max_s: 30
    offline_alert_after_s: 60   # camera_offline alert only after offline this long
                                # without a break (flaky cameras); 0: at once
    tasks:                      # required: fence, hardhat and/or workwear
      fence:
        zones:
          - name: loading-bay   # required; unique within the task
            # [x, y] points in pixels of the camera frame, or 0-1 fractions of its
            # width and height (normalized: null = auto, true, false)
            polygon: [[0.05, 0.55], [0.6, 0.5], [0.95, 0.95], [0.05, 0.95]]
            classes: [people, vehicles]   # class names, or people / vehicles
            anchor: bottom_center         # bottom_center (feet) | center | overlap
            min_dwell_s: 2      # inside this long before "start"
            cooldown_s: 3       # gone (left or not seen) this long before "end"
            update_every_s: 30  # at most one "update" per this while inside; null: none
            schedule:           # absent: always armed
              days: mon-fri     # mon-fri, sat,sun, weekdays, daily, [mon, wed]
              hours: ["18:00-06:00"]      # overnight ranges run past midnight
              tz: Europe/Berlin # null: the gateway's local time zone
        lines:                  # counting lines: crossings per direction, on the state topic
          - name: gate-line     # required; unique within the task, zones included
            # 2 or more [x, y] points (pixels or 0-1). Walking the line from its first
            # point to its last as drawn, crossing from its left to its right is "in",
            # the other way "out": this one, drawn upwards, counts rightwards as "in".
            points: [[0.3, 0.95], [0.3, 0.4]]
            classes: [people, vehicles]
            anchor: bottom_center         # bottom_center (feet) | center
            min_displacement_px: 10       # counts once the anchor is this far past it
                                          # (or a quarter of the box height if larger)
            snapshots: false    # no JPEG per crossing (a busy gate)
      hardhat:                  # a person without a hard hat for min_dwell_s
        zones:
          - name: dock
            polygon: "0,0,1,0,1,1,0,1"    # "x1,y1,x2,y2,..." also works
            require:            # absent: a hard hat of any colour
              hardhat: {colours: [red, white]}  # events name the rule a person breaks
            min_dwell_s: 5
            cooldown_s: 5
        tracker:
          n_init: 2             # hits before a track counts
          max_age_s: 3          # unseen this long: the track is gone
        snapshots: true         # JPEG with boxes and zone for each "start"

  - name: yard
    source: /dev/video0         # V4L2 device (or an index: 0)
    width: 1280
    height: 720
    target_fps: 2
    enabled: true
    tasks:
      workwear:
        filters: {min_score: 0.5, min_box_area: 900}
        # no zones: the whole frame, one zone named "frame"

  - name: demo-video
    source: /usr/share/doc/opencv-doc/examples/data/vtest.avi
    loop: true                  # files: start over at the end
    realtime: true              # files: pace at the file's frame rate
    target_fps: 2
    tasks:
      fence:
        zones:
          - name: grass
            polygon: [[0, 300], [250, 340], [450, 410], [768, 540], [768, 640], [0, 640]]
            classes: [person]
        lines:
          - name: walkway       # across the footpath; "in" = walking to the right
            points: [[560, 450], [560, 150]]
            classes: [person]

mqtt:                           # absent: no MQTT (events stay in the local table)
  host: broker.site-a.example
  port: 8883
  protocol: "5"                 # "5" or "3.1.1"
  tls:
    ca_file: /etc/safety-edge/ca.pem
  username: site-a-gw-01        # or SAFETY_EDGE_MQTT_USERNAME
  # password: ...               # better: SAFETY_EDGE_MQTT_PASSWORD
  prefix: safety-edge           # topics: {prefix}/{gateway_id}/events, ...
  qos: 1
  outbox:
    max_rows: 100000
    max_bytes: 67108864
    synchronous: NORMAL         # FULL: fsync every commit (survives power cuts)
  ha_discovery: false           # Home Assistant MQTT discovery
  commands:                     # control-room commands on {prefix}/{gateway_id}/cmd/ack
    enabled: false              # the broker ACL decides who may send them
    # token: ...                # better: SAFETY_EDGE_CMD_TOKEN
    allowed_by: []              # operator names accepted in "by" (empty: any)

storage:
  snapshots: true
  snapshot_dir: null            # null: <data_dir>/snapshots
  snapshot_retention_days: 30
  snapshot_max_mb: 2048         # oldest snapshots go first beyond this
  jpeg_quality: 85
  events_retention_days: 90     # rows of the events table
  events_max_mb: 1024           # and the oldest go while the table holds more; 0: no bound
  min_free_mb: 500              # disk_low alert under this much free space on the
                                # data_dir filesystem (checked every minute); 0: off
  # events_key_file: /etc/safety-edge/events.key  # keyed chain (HMAC); outside data_dir

api:                            # the local HTTP API (cloud contract)
  host: 127.0.0.1
  port: 8080
  workers: 2
  compliance_summary: false     # true: hard-hat/workwear answers carry "summary"
  # admin_token: ...            # better: SAFETY_EDGE_ADMIN_TOKEN; console off without

# Cloud fallback, off when absent: boxes the local model is unsure of (and, with
# on_model_error, failed inferences) ask an endpoint that speaks the same contract, the
# provider's cloud or a bigger safety-edge box. Uncomment to use it.
# fallback:
#   enabled: true
#   base_url: https://cloud.example.com   # or http://big-box:8080
#   app_key: KEY                # better: SAFETY_EDGE_FALLBACK_APP_KEY
#   app_secret: SECRET          # better: SAFETY_EDGE_FALLBACK_APP_SECRET
#   service_codes: {hardhat: C1, workwear: C2, fence: C3}   # only these APIs use it
#   uncertain_band: [0.3, 0.6]  # a box scored in [low, high) asks the cloud
#   send: image                 # image | crop (one JPEG crop around the uncertain boxes)
#   on_model_error: true        # also ask when local inference fails
#   deadline_s: 2.0             # whole fallback, retries included
#   daily_budget: 1000          # requests per day, retries included; null: unlimited
#   max_concurrent: 2           # cloud calls in flight; more are answered locally

service:                        # safety-edge run
  api: true                     # serve the HTTP API in this process
  stop_timeout_s: 20            # SIGTERM to exit, at most
  stall_timeout_s: 120          # no camera progress this long: exit 1, restart (null: off)
  flush_timeout_s: 5            # SIGTERM: wait this long for the broker's acks
  state_interval_s: 1           # retained per-zone counts refresh
  log_format: json              # text | json (JSON lines for journald / log shippers)
  log_level: info

# onnxruntime execution providers of the models safety-edge run loads (cameras and the
# in-process API); absent: api.providers (cpu). E.g. on a Jetson with TensorRT:
# runtime:
#   providers: [tensorrt, cuda, cpu]   # preference order; ones not installed are skipped
#   provider_options:           # per provider named in providers
#     tensorrt: {trt_fp16_enable: true, trt_engine_cache_enable: true,
#                trt_engine_cache_path: /var/lib/safety-edge/trt-cache}
#   intra_op_threads: null      # null: api.intra_op_threads
"""
