"""Task images are fetched only from allowed hosts, within size and time limits, never from files."""

import io
import threading
import time

import numpy as np
import pytest
from flask import Flask, Response, redirect
from PIL import Image
from werkzeug.serving import make_server

from agile_modeling.errors import ImageReadError
from ml_backend.fetch import FetchPolicy, check_url, fetch_image_bytes
from ml_backend.images import fetch_task_image


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


def allow_local(**kw) -> FetchPolicy:
    return FetchPolicy(frozenset({"127.0.0.1"}), **kw)


def test_allowed_host_is_fetched_and_redirects_are_checked(server):
    base, image = server
    assert fetch_image_bytes(f"{base}/ok.png", allow_local()) == image
    assert fetch_image_bytes(f"{base}/to-ok", allow_local()) == image
    assert fetch_task_image(f"{base}/ok.png", allow_local()).size == (16, 16)
    with pytest.raises(ImageReadError, match="must be http"):
        fetch_image_bytes(f"{base}/to-file", allow_local())
    with pytest.raises(ImageReadError, match="'169.254.169.254' is not allowed"):
        fetch_image_bytes(f"{base}/to-elsewhere", allow_local())
    with pytest.raises(ImageReadError, match="more than 3 redirects"):
        fetch_image_bytes(f"{base}/loop", allow_local())


def test_size_and_time_limits(server):
    base, _ = server
    with pytest.raises(ImageReadError, match="larger than 1048576 bytes"):
        fetch_image_bytes(f"{base}/huge", allow_local(max_bytes=1 << 20))
    started = time.monotonic()
    with pytest.raises(ImageReadError, match="took longer than 1 s"):
        fetch_image_bytes(f"{base}/slow", allow_local(timeout_s=1.0))
    assert time.monotonic() - started < 3


def test_hosts_not_listed_and_internal_addresses_are_refused(server):
    base, _ = server
    nobody = FetchPolicy(frozenset())
    with pytest.raises(ImageReadError, match="'127.0.0.1' is not allowed; add it to AGILE_IMAGE_HOSTS"):
        fetch_image_bytes(f"{base}/ok.png", nobody)
    anyone = FetchPolicy(frozenset({"*"}))  # any *public* host: loopback and metadata addresses stay closed
    for url in (f"{base}/ok.png", "http://localhost/x.png", "http://169.254.169.254/", "http://10.0.0.1/a.png"):
        with pytest.raises(ImageReadError, match="internal address"):
            check_url(url, anyone)


@pytest.mark.parametrize("url", ["/etc/passwd", "file:///etc/passwd", "ftp://example.com/a.png", "gopher://x/",
                                 "http:///nohost.png", "javascript:alert(1)"])
def test_other_schemes_and_paths_are_refused(url):
    with pytest.raises(ImageReadError):
        fetch_task_image(url, FetchPolicy(frozenset({"*"})))


def test_policy_from_the_configured_urls():
    policy = FetchPolicy.from_urls("http://LS.example:8080", "http://10.1.2.3:9090/images", None,
                                   extra=" cdn.example.com ,img.example.org", max_bytes=10, timeout_s=2)
    assert policy.allowed_hosts == {"ls.example", "10.1.2.3", "cdn.example.com", "img.example.org"}
    assert (policy.max_bytes, policy.timeout_s) == (10, 2)
    check_url("http://10.1.2.3:9090/images/5", policy)  # listed exactly: allowed although private
