"""Task images are fetched only from allowed hosts, within size and time limits, never from files."""

import io
import threading
import time

import numpy as np
import pytest
from flask import Flask, Response, redirect, request
from PIL import Image
from werkzeug.serving import make_server

from agile_modeling.errors import ImageReadError
from ml_backend.images import fetch_task_image
from sync.safe_fetch import FetchPolicy, check_url, fetch_image_bytes


def png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray((np.random.default_rng(0).random((16, 16, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def server():
    app = Flask("images")
    image = png()

    @app.get("/ok.png")
    def ok():
        return Response(image, mimetype="image/png")

    @app.get("/huge")
    def huge():
        return Response((b"\0" * 65536 for _ in range(64)), mimetype="image/png")  # 4 MiB, streamed, no length

    @app.get("/slow")
    def slow():
        def drip():
            for _ in range(50):
                time.sleep(0.1)
                yield b"\0" * 10

        return Response(drip(), mimetype="image/png")

    @app.get("/slow-headers")
    def slow_headers():
        time.sleep(3)
        return Response(image, mimetype="image/png")

    @app.get("/to-file")
    def to_file():
        return redirect("file:///etc/passwd")

    @app.get("/to-elsewhere")
    def to_elsewhere():
        return redirect("http://169.254.169.254/latest/meta-data/")

    @app.get("/to-ok")
    def to_ok():
        return redirect("/ok.png")

    @app.get("/loop")
    def loop():
        return redirect("/loop")

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_port}", image
    srv.shutdown()


def allow_local(base: str, **kw) -> FetchPolicy:
    return FetchPolicy.from_urls(base, **kw)


def test_allowed_host_is_fetched_and_redirects_are_checked(server):
    base, image = server
    assert fetch_image_bytes(f"{base}/ok.png", allow_local(base)) == image
    assert fetch_image_bytes(f"{base}/to-ok", allow_local(base)) == image
    assert fetch_task_image(f"{base}/ok.png", allow_local(base)).size == (16, 16)
    with pytest.raises(ImageReadError, match="must be http"):
        fetch_image_bytes(f"{base}/to-file", allow_local(base))
    with pytest.raises(ImageReadError, match="origin http://169.254.169.254:80 is not allowed"):
        fetch_image_bytes(f"{base}/to-elsewhere", allow_local(base))
    with pytest.raises(ImageReadError, match="more than 3 redirects"):
        fetch_image_bytes(f"{base}/loop", allow_local(base))


def test_size_and_time_limits(server):
    base, _ = server
    with pytest.raises(ImageReadError, match="larger than 1048576 bytes"):
        fetch_image_bytes(f"{base}/huge", allow_local(base, max_bytes=1 << 20))
    started = time.monotonic()
    with pytest.raises(ImageReadError, match="took longer than the time limit"):
        fetch_image_bytes(f"{base}/slow", allow_local(base, timeout_s=1.0))
    assert time.monotonic() - started < 3


def test_hosts_not_listed_and_internal_addresses_are_refused(server):
    base, _ = server
    nobody = FetchPolicy()
    with pytest.raises(
        ImageReadError, match="origin http://127.0.0.1:[0-9]+ is not allowed; add it to AGILE_IMAGE_HOSTS"
    ):
        fetch_image_bytes(f"{base}/ok.png", nobody)
    anyone = FetchPolicy(any_public=True)  # any *public* host: loopback and metadata addresses stay closed
    for url in (f"{base}/ok.png", "http://localhost/x.png", "http://169.254.169.254/", "http://10.0.0.1/a.png"):
        with pytest.raises(ImageReadError, match="internal address"):
            check_url(url, anyone)


@pytest.mark.parametrize(
    "url",
    [
        "/etc/passwd",
        "file:///etc/passwd",
        "ftp://example.com/a.png",
        "gopher://x/",
        "http:///nohost.png",
        "javascript:alert(1)",
    ],
)
def test_other_schemes_and_paths_are_refused(url):
    with pytest.raises(ImageReadError):
        fetch_task_image(url, FetchPolicy(any_public=True))


def test_policy_from_the_configured_urls():
    policy = FetchPolicy.from_urls(
        "http://LS.example:8080",
        "http://10.1.2.3:9090/images",
        None,
        extra=" cdn.example.com ,https://img.example.org:8443, 10.9.9.9:81",
        max_bytes=10,
        timeout_s=2,
    )
    assert policy.allowed == {
        ("http", "ls.example", 8080),
        ("http", "10.1.2.3", 9090),
        ("http", "cdn.example.com", 80),
        ("https", "cdn.example.com", 443),
        ("https", "img.example.org", 8443),
        ("http", "10.9.9.9", 81),
        ("https", "10.9.9.9", 81),
    }
    assert (policy.max_bytes, policy.timeout_s) == (10, 2) and not policy.any_public
    assert (
        check_url("http://10.1.2.3:9090/images/5", policy).address == "10.1.2.3"
    )  # listed exactly: allowed although private
    assert FetchPolicy.from_urls(extra="*,a.example").any_public


def test_the_allow_list_matches_scheme_host_and_port():
    """With Label Studio on 127.0.0.1:8080, its other ports (redis on 6379) stay closed."""
    policy = FetchPolicy.from_urls("http://127.0.0.1:8080", "http://127.0.0.1:9090/images")
    check_url("http://127.0.0.1:8080/data/upload/1.png", policy)
    check_url("http://127.0.0.1:9090/images/1", policy)
    for url in (
        "http://127.0.0.1:6379/",
        "http://127.0.0.1/",
        "https://127.0.0.1:8080/x",
        "http://127.0.0.1:80/",
        "http://localhost:8080/x",
    ):
        with pytest.raises(ImageReadError, match="is not allowed"):
            check_url(url, policy)
    with pytest.raises(ImageReadError, match="not a valid URL"):  # was an httpx.InvalidURL escaping as a 500
        check_url("https://127.0.0.1:8080:1/x", policy)


def test_the_connection_goes_to_the_address_that_was_checked(server, monkeypatch):
    """DNS rebinding: the name resolves to a public address when checked, to 127.0.0.1 a moment later.
    The connection must go to the checked address, never re-resolve the name."""
    import socket

    import httpcore

    base, _ = server
    port = int(base.rsplit(":", 1)[1])
    answers = iter(["8.8.8.8"] + ["127.0.0.1"] * 10)
    real = socket.getaddrinfo

    def rebinding(host, *args, **kwargs):
        if host == "rebind.example":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]
        return real(host, *args, **kwargs)

    connected = []

    def record(self, host, port, *args, **kwargs):
        connected.append(host)
        raise httpcore.ConnectError("no network in this test")

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    monkeypatch.setattr(httpcore.SyncBackend, "connect_tcp", record)
    with pytest.raises(ImageReadError, match="cannot fetch"):
        fetch_image_bytes(f"http://rebind.example:{port}/ok.png", FetchPolicy(any_public=True))
    assert connected == ["8.8.8.8"]


def test_a_listed_name_is_asked_for_by_name_on_the_address_it_resolved_to(monkeypatch):
    """Pinning keeps the Host header (and SNI for https): virtual hosts still work."""
    import socket

    app = Flask("vhost")
    seen = []

    @app.get("/img.png")
    def img():
        seen.append(request.headers.get("Host"))
        return Response(png(), mimetype="image/png")

    srv = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        real = socket.getaddrinfo
        monkeypatch.setattr(
            socket,
            "getaddrinfo",
            lambda host, *a, **k: real("127.0.0.1" if host == "images.internal" else host, *a, **k),
        )
        url = f"http://images.internal:{srv.server_port}/img.png"
        assert fetch_image_bytes(url, FetchPolicy.from_urls(url)) == png()
        assert seen == [f"images.internal:{srv.server_port}"]
    finally:
        srv.shutdown()


def test_slow_headers_are_cut_at_the_time_limit(server):
    base, _ = server
    started = time.monotonic()
    with pytest.raises(ImageReadError, match="took longer than the time limit"):
        fetch_image_bytes(f"{base}/slow-headers", allow_local(base, timeout_s=1.0))
    assert time.monotonic() - started < 2.5


def test_the_pixel_limit_is_checked_from_the_header(server):
    base, _ = server
    with pytest.raises(ImageReadError, match="16x16 pixels, more than the limit of 100"):
        fetch_task_image(f"{base}/ok.png", allow_local(base, max_pixels=100))
    assert fetch_task_image(f"{base}/ok.png", allow_local(base, max_pixels=256)).size == (16, 16)
