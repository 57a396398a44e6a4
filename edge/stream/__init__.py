"""The stream layer: cameras in, zone events out.

Modules, in data-flow order (importing this package imports none of them):

- :mod:`~edge.stream.sources`: :class:`CameraSource`, one reader thread per camera (RTSP,
  HTTP MJPEG, V4L2, files) with latest-frame hand-off and reconnect;
- :mod:`~edge.stream.tracker`: :class:`Tracker`, ByteTrack-style IoU tracking on numpy;
- :mod:`~edge.stream.zones`: :class:`ZoneSpec`, :class:`Schedule` and :class:`ZoneMonitor`,
  per-(zone, track) dwell / cooldown state that turns frames into incidents;
- :mod:`~edge.stream.lines`: :class:`LineSpec` and :class:`LineCounter`, counting lines:
  one ``crossing`` event per crossing of a line, per direction;
- :mod:`~edge.stream.events`: :class:`ZoneEvent` and the SQLite events table;
- :mod:`~edge.stream.evidence`: the events table's SHA-256 hash chain and its verification
  (with the snapshot files' hashes);
- :mod:`~edge.stream.acks`: who acknowledged which incident (``event_acks`` table);
- :mod:`~edge.stream.snapshots`: incident JPEGs with retention by age and size;
- :mod:`~edge.stream.pipeline`: :class:`CameraPipeline`, the per-camera loop;
- :mod:`~edge.stream.commands`: ``safety-edge events list|prune|verify``.
"""
