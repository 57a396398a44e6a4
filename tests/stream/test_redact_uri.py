"""Camera URIs lose their credentials before they reach logs and the ``camera_offline``
alert: the table of shapes (``redact_uri``), then a real reader on an unreachable loopback
port whose offline reason and log must not hold the password."""

from __future__ import annotations

import threading

import pytest

from edge.stream.sources import CameraSource, SourceSpec, redact_uri
from tests.stream.media import free_port


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        # no credentials: unchanged
        (
            "rtsp://cam.local:554/Streaming/Channels/102",
            "rtsp://cam.local:554/Streaming/Channels/102",
        ),
        ("rtsp://[::1]:554/live", "rtsp://[::1]:554/live"),
        (
            "rtsp://h/cam/realmonitor?channel=1&subtype=0",
            "rtsp://h/cam/realmonitor?channel=1&subtype=0",
        ),
        ("http://cam/video.mjpg", "http://cam/video.mjpg"),
        # user, user:pass
        ("rtsp://admin@cam:554/s", "rtsp://***@cam:554/s"),
        ("rtsp://admin:pw@cam:554/s", "rtsp://***@cam:554/s"),
        ("RTSPS://admin:pw@cam/s", "RTSPS://***@cam/s"),
        ("  rtsp://admin:pw@cam/s", "  rtsp://***@cam/s"),
        # '@', '/', ':', '?', '#' in the password (the audit's two shapes first)
        ("rtsp://admin:P@ssw0rd@host", "rtsp://***@host"),
        ("rtsp://admin:a/b@host", "rtsp://***@host"),
        ("rtsp://admin:a/b@host:554/live", "rtsp://***@host:554/live"),
        ("rtsp://admin:x:y@host/live", "rtsp://***@host/live"),
        ("rtsp://admin:p?a#s@host/live", "rtsp://***@host/live"),
        ("rtsp://admin:p%40ss@host/live", "rtsp://***@host/live"),
        ("rtsp://a:b@c@d/e@f/live", "rtsp://***@f/live"),
        # IPv6 host with credentials
        ("rtsp://admin:pw@[::1]:554/live", "rtsp://***@[::1]:554/live"),
        ("rtsp://admin:p@w@[fe80::1%25eth0]:554/", "rtsp://***@[fe80::1%25eth0]:554/"),
        # credentials in the query (HTTP cameras) and an '@' in the query
        (
            "http://cam/videostream.cgi?user=admin&pwd=s3cret&res=1#x",
            "http://cam/videostream.cgi?user=***&pwd=***&res=1#x",
        ),
        ("http://cam/s?token=abc;chan=2", "http://cam/s?token=***;chan=2"),
        ("http://cam/s?mail=a@b.c&password=z", "http://***@b.c&password=***"),
        ("rtsp://u:p@cam/live?access_key=k", "rtsp://***@cam/live?access_key=***"),
        # a typo'd single slash is still a URL
        ("rtsp:/admin:pw@host/live", "rtsp:/***@host/live"),
        # not URLs: devices and files, unchanged
        ("/dev/video0", "/dev/video0"),
        (0, "0"),
        (3, "3"),
        ("2", "2"),
        ("/data/site@2/gate.mp4", "/data/site@2/gate.mp4"),
        ("clips/a:b@c.avi", "clips/a:b@c.avi"),
    ],
)
def test_redact_uri(uri: str | int, shown: str) -> None:
    assert redact_uri(uri) == shown


@pytest.mark.parametrize(
    ("secret", "tail"),
    [("P@ssw0rd", "ssw0rd"), ("se/cr3t", "cr3t"), ("x:yq?z#w9", "z#w9"), ("p%40ss", "40ss")],
)
def test_password_absent_from_offline_reason_and_log(
    secret: str, tail: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real reader on a loopback port where nothing listens: the offline reason (what the
    ``camera_offline`` alert publishes) and the log carry the host, never the password."""
    port = free_port()
    spec = SourceSpec(
        uri=f"rtsp://admin:{secret}@127.0.0.1:{port}/live", open_timeout_s=1.0, backoff_min_s=5
    )
    reasons: list[str] = []
    offline = threading.Event()

    def on_status(online: bool, reason: str) -> None:
        reasons.append(reason)
        if not online:
            offline.set()

    with (
        caplog.at_level("DEBUG", logger="edge.stream"),
        CameraSource(spec=spec, name="gate", on_status=on_status),
    ):
        assert offline.wait(10)
    assert reasons == [f"cannot open rtsp://***@127.0.0.1:{port}/live"]
    for text in (caplog.text, reasons[0]):
        assert secret not in text and "admin" not in text
        assert tail not in text  # nor the part after an '@' or '/' in it
