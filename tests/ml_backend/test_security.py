"""Issue 11, items 5 and 6, on the Flask app: signed image URLs, CORS, constant-time checks that
never 500, /predict answering every readable task, only our own image URLs taken for pool ids,
the embedding space checked before embedding on the fly, and the on-the-fly cache."""

import base64
import io
import json
import logging
import threading

import numpy as np
import pytest
from PIL import Image

from agile_modeling.encoders import OpenClipSpec
from agile_modeling.simulate.shared_pool import SHARED_ENCODER
from agile_modeling.workspace import Workspace
from ml_backend.app import create_app
from ml_backend.images import POOL_ENCODER_KEY, EmbeddingCache
from sync.image_signing import ImageSigner
from sync.rounds import ConceptSync
from sync.settings import Settings
from sync.state import RATING, ProjectLink, RoundSettings, SyncState
from tests.ml_backend.conftest import (
    BACKEND,
    LABEL_STUDIO,
    PROJECT,
    backend_settings,
    p_positive,
    train_model,
    unanswered,
)
from tests.ml_backend.test_app import data_url, predict_body


def app_for(ws, **kw):
    return create_app(backend_settings(ws, **kw), enqueue=lambda *a, **k: None)


# --- signed image URLs ---------------------------------------------------------------------------
def test_the_sync_signs_image_urls_and_the_backend_serves_only_signed_unexpired_ones(backend_workspace):
    settings = backend_settings(backend_workspace)
    url = ConceptSync(settings, backend_workspace, client=object()).image_urls([0])[0]
    assert url.startswith(f"{BACKEND}/images/0?exp=") and "&sig=" in url
    c = app_for(backend_workspace).test_client()
    path = url[len(BACKEND) :]
    ok = c.get(path, headers={"Origin": LABEL_STUDIO})
    assert ok.status_code == 200 and ok.data[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")
    assert ok.headers["Access-Control-Allow-Origin"] == LABEL_STUDIO  # Label Studio's origin, never "*"

    for bad, reason in (
        ("/images/0", "not signed"),
        (path.replace("/images/0?", "/images/1?"), "signature is wrong"),
        (path[:-4] + "0000", "signature is wrong"),
        ("/images/0?exp=1&sig=00", "expired"),
        ("/images/0?exp=x&sig=00", "not a unix time"),
        ("/images/0?exp=99999999999&sig=%C3%A9", "wrong"),
    ):
        response = c.get(bad)
        assert response.status_code == 403 and reason in response.json["error"], (bad, response.json)
    signer = ImageSigner.from_settings(settings)
    expired = signer.query(0, now=0)  # signed 30 days after the epoch
    assert c.get("/images/0?" + expired).status_code == 403
    # signed with another key (another deployment) is refused too
    other = ImageSigner(b"another key").query(0)
    assert c.get("/images/0?" + other).status_code == 403


def test_without_any_secret_nothing_is_signed_or_served_and_the_message_says_what_to_set(backend_workspace):
    settings = Settings(workspace=backend_workspace.root, backend_url=BACKEND)
    from agile_modeling.errors import AgileError

    with pytest.raises(AgileError, match="AGILE_IMAGE_SIGNING_KEY"):
        ConceptSync(settings, backend_workspace, client=object()).image_urls([0])
    c = create_app(settings, enqueue=lambda *a, **k: None).test_client()
    response = c.get("/images/0")
    assert response.status_code == 403 and "AGILE_IMAGE_SIGNING_KEY" in response.json["error"]


def test_unsigned_development_mode_serves_loopback_clients_only(backend_workspace):
    settings = backend_settings(backend_workspace, images_unsigned=True)
    assert ConceptSync(settings, backend_workspace, client=object()).image_urls([3]) == [f"{BACKEND}/images/3"]
    c = create_app(settings, enqueue=lambda *a, **k: None).test_client()
    assert c.get("/images/3").status_code == 200  # the test client is 127.0.0.1
    far = c.get("/images/3", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert far.status_code == 403 and "this machine" in far.json["error"]


def test_an_explicit_key_wins_and_the_sync_and_backend_agree_through_the_environment(backend_workspace, monkeypatch):
    monkeypatch.setenv("AGILE_IMAGE_SIGNING_KEY", "explicit-key")
    monkeypatch.setenv("AGILE_WORKSPACE", str(backend_workspace.root))
    monkeypatch.setenv("AGILE_BACKEND_URL", BACKEND)
    settings = Settings.from_env()
    assert "explicit-key" not in repr(settings)
    url = ConceptSync(settings, backend_workspace, client=object()).image_urls([2])[0]
    assert ImageSigner(b"explicit-key").url(BACKEND + "/images", 2) == url
    assert create_app(settings, enqueue=lambda *a, **k: None).test_client().get(url[len(BACKEND) :]).status_code == 200


# --- reproducible 500s ---------------------------------------------------------------------------
@pytest.mark.parametrize("user, password", [("ü", "pw"), ("label-studio", "pässwörd"), ("\u4e2d", "\u4e2d")])
def test_non_ascii_basic_auth_is_a_401_not_a_500(backend_workspace, user, password):
    c = app_for(backend_workspace, basic_auth_user="label-studio", basic_auth_pass="pw").test_client()
    for raw in (
        (user + ":" + password).encode("utf-8"),
        (user + ":" + password).encode("utf-8", "replace")[:7] + b"\xff",
    ):
        header = {"Authorization": "Basic " + base64.b64encode(raw).decode()}
        response = c.post("/setup", json={"project": f"{PROJECT}.1"}, headers=header)
        assert response.status_code == 401 and "basic auth" in response.json["error"]
    # and a non-ASCII configured password still works for the right client
    c2 = app_for(backend_workspace, basic_auth_user=user, basic_auth_pass=password).test_client()
    good = {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    assert c2.post("/setup", json={"project": f"{PROJECT}.1"}, headers=good).status_code == 200


@pytest.mark.parametrize("secret", ["é", "s\u00e9cret", "\xff" * 3])
def test_non_ascii_webhook_secret_is_a_401_not_a_500(backend_workspace, secret):
    c = app_for(backend_workspace, webhook_secret="hook-secret").test_client()
    response = c.post(
        "/webhook",
        json={"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}},
        headers={"X-Agile-Secret": secret},
    )
    assert response.status_code == 401 and "X-Agile-Secret" in response.json["error"]


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1:8080:1/x",
        "http://[::1/x",
        "http://127.0.0.1:99999/x",
        "http://\u4e2d\u6587.example/x",
        "http://a" + "b" * 300 + ".example/x",
        "http://127.0.0.1:6379/",
    ],
)
def test_hostile_image_urls_leave_the_task_unanswered_not_a_500(client, backend_workspace, url):
    train_model(backend_workspace)
    response = client.post("/predict", json=predict_body({"id": 5, "data": {"image": url}}))
    assert unanswered(response, 5)


# --- /predict correctness ------------------------------------------------------------------------
def test_only_our_own_image_base_url_maps_to_pool_ids(client, backend_workspace):
    train_model(backend_workspace)
    signed = ImageSigner.from_settings(client.application.extensions["agile"]["settings"]).url(BACKEND + "/images", 3)
    clf = backend_workspace.registry("red things").latest().load()
    p3 = float(clf.predict_proba(backend_workspace.store().vectors().take(np.array([3])).astype(np.float32))[0])
    for ours in (f"{BACKEND}/images/3", signed):
        result = client.post("/predict", json=predict_body({"id": 1, "data": {"image": ours}})).json["results"][0]
        assert p_positive(result[0]) == pytest.approx(p3, abs=1e-6)
    # the same path on any other host is somebody else's image: fetched (here: refused), never pool image 3
    for theirs in (
        "http://evil.example/images/3",
        f"{LABEL_STUDIO}/x/images/3",
        f"{BACKEND}/images/3?q=1",
        f"{BACKEND}/imagesX/3",
        f"{BACKEND}/images/3/",
    ):
        response = client.post("/predict", json=predict_body({"id": 1, "data": {"image": theirs}}))
        assert unanswered(response, 1), theirs


def test_one_unreadable_image_leaves_the_other_tasks_answered_and_is_logged(client, backend_workspace, caplog):
    train_model(backend_workspace)
    tasks = [
        {"id": 1, "data": {"image": "x", "agile_image_id": 0}},
        {"id": 2, "data": {"image": "file:///etc/passwd"}},
        {"id": 3, "data": {"image": data_url()}},
        {"id": 4, "data": {"image": "https://127.0.0.1:8080:1/x"}},
    ]
    caplog.set_level(logging.WARNING, logger="agile.backend")
    response = client.post("/predict", json=predict_body(*tasks))
    assert response.status_code == 200, response.json
    results = response.json["results"]
    assert len(results) == 4 and results[1] == [] and results[3] == []
    assert results[0][0]["model_version"] == "red-things-v1" and results[2][0]["model_version"] == "red-things-v1"
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert (
        "task 2:" in logged and "neither an http(s)" in logged and "task 4:" in logged and "not a valid URL" in logged
    )
    assert "agile_backend_unreadable_images_total 2.0" in client.get("/metrics").data.decode()


@pytest.fixture
def precomputed_workspace(tmp_path, tiny_clip):
    """A pool of precomputed OpenAI CLIP embeddings (as the demo's), no open_clip model configured."""
    from agile_modeling.encoders import OpenClipEncoder

    ws = Workspace(tmp_path / "pre")
    dim = OpenClipEncoder(OpenClipSpec(model="ViT-S-32", pretrained=None)).dim
    x = np.random.default_rng(0).normal(size=(8, dim)).astype(np.float16)
    ws.store(dim, SHARED_ENCODER).append(
        x, [f"shared://x/{i}" for i in range(8)], [f"h{i}" for i in range(8)], [""] * 8
    )
    from agile_modeling.concepts import Concept

    ws.sessions.create(Concept("red things", ("red",)))
    SyncState(ws.root / "label_studio.sqlite").link(
        ProjectLink("red-things", RATING, PROJECT, RoundSettings("rating", 4, 2, "margin", 0))
    )
    train_model(ws)
    return ws


def test_on_the_fly_embedding_in_another_space_than_the_pool_is_refused_with_what_to_configure(precomputed_workspace):
    ws = precomputed_workspace
    c = app_for(ws).test_client()
    both = [{"id": 1, "data": {"image": "x", "agile_image_id": 2}}, {"id": 2, "data": {"image": data_url()}}]
    mixed = c.post("/predict", json=predict_body(*both))
    assert mixed.status_code == 200 and mixed.json["results"][1] == [] and mixed.json["results"][0]
    alone = c.post("/predict", json=predict_body(both[1]))
    error = unanswered(alone, 2)
    assert SHARED_ENCODER in error and "open_clip:ViT-B-32:laion2b_s34b_b79k" in error
    assert '"pretrained": "openai"' in error and POOL_ENCODER_KEY in error and "workspace.json" in error
    # configured as the message says (here with the test's tiny model standing in): embedded on the fly
    ws.set_config(
        open_clip={"model": "ViT-S-32", "pretrained": None, "device": "cpu"}, **{POOL_ENCODER_KEY: SHARED_ENCODER}
    )
    fixed = app_for(ws).test_client().post("/predict", json=predict_body(both[1]))
    assert fixed.status_code == 200 and fixed.json["results"][0][0]["model_version"] == "red-things-v1"


def test_the_on_the_fly_cache_is_keyed_by_digest_bounded_by_bytes_and_thread_safe(client, backend_workspace):
    train_model(backend_workspace)
    url = data_url()
    assert client.post("/predict", json=predict_body({"id": 1, "data": {"image": url}})).status_code == 200
    cache = client.application.extensions["agile"]["predictor"].embeddings.cache
    assert len(cache) == 1 and url in cache
    assert all(isinstance(k, bytes) and len(k) == 32 for k in cache._items)  # sha256, never the data: URL itself

    small = EmbeddingCache(max_bytes=10 * (512 * 4 + 32))
    errors = []

    def hammer(start):
        try:
            for i in range(start, start + 300):
                small.put(f"data:{i}", np.full(512, i, dtype=np.float32))
                got = small.get(f"data:{i - 3}")
                assert got is None or got[0] == i - 3
        except Exception as exc:  # noqa: BLE001 - any failure of a thread fails the test
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n * 1000,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(small) <= 10 and small.bytes <= small.max_bytes
    assert small.bytes == sum(v.nbytes + 32 for v in small._items.values())


def test_a_huge_image_is_refused_from_its_header_before_decoding(backend_workspace):
    train_model(backend_workspace)
    buffer = io.BytesIO()
    Image.new("L", (3000, 3000)).save(buffer, format="PNG")  # 9 megapixels, a few kB compressed
    big = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    c = app_for(backend_workspace, max_image_pixels=1_000_000).test_client()
    response = c.post("/predict", json=predict_body({"id": 9, "data": {"image": big}}))
    assert "3000x3000 pixels, more than the limit of 1000000" in unanswered(response, 9)


# --- inputs found by review (each was a 500) -----------------------------------------------------
def test_a_basic_auth_header_with_non_ascii_bytes_is_a_401(backend_workspace):
    c = app_for(backend_workspace, basic_auth_user="user", basic_auth_pass="pass").test_client()
    good = base64.b64encode(b"user:pass").decode()
    for route in ("/setup", "/predict", "/metrics"):
        response = c.post(route, json={"project": PROJECT}, headers={"Authorization": f"Basic {good}\u00e9"})
        assert response.status_code == 401, (route, response.status_code)
    assert c.get("/metrics").status_code == 401  # not an open route: a scraper sends the credentials too
    assert c.get("/metrics", headers={"Authorization": f"Basic {good}"}).status_code == 200


@pytest.mark.parametrize("url", ["http://\\ud800/", "data:image/png;base64,\\ud800", "data:\\ud800,abc"])
def test_an_image_url_with_an_unpaired_surrogate_leaves_the_other_tasks_answered(client, backend_workspace, url):
    train_model(backend_workspace)
    body = json.dumps(
        predict_body({"id": 1, "data": {"image": "URL"}}, {"id": 2, "data": {"image": "x", "agile_image_id": 0}})
    )
    body = body.replace('"URL"', f'"{url}"')  # valid JSON whose string decodes to a lone surrogate
    response = client.post("/predict", data=body, content_type="application/json")
    assert response.status_code == 200, response.json
    assert response.json["results"][0] == [] and response.json["results"][1][0]["score"] >= 0


def test_a_redirect_to_an_unparsable_url_is_that_task_s_error(backend_workspace):
    import http.server

    class Redirect(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", "http://[::1")
            self.end_headers()

    server = http.server.HTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        origin = f"127.0.0.1:{server.server_port}"
        train_model(backend_workspace)
        c = app_for(backend_workspace, image_hosts=origin).test_client()
        response = c.post(
            "/predict",
            json=predict_body(
                {"id": 1, "data": {"image": f"http://{origin}/x"}},
                {"id": 2, "data": {"image": "x", "agile_image_id": 0}},
            ),
        )
        assert response.status_code == 200, response.json
        assert response.json["results"][0] == [] and response.json["results"][1]
    finally:
        server.shutdown()


def test_a_deeply_nested_body_is_a_400_and_a_label_config_with_a_surrogate_a_422(client):
    deep = client.post("/setup", data='{"a":' * 5000 + "1" + "}" * 5000, content_type="application/json")
    assert deep.status_code == 400 and "nested" in deep.json["error"]
    odd = client.post("/setup", data=f'{{"project": {PROJECT}, "schema": "\\ud800"}}', content_type="application/json")
    assert odd.status_code == 422 and "label config" in odd.json["error"]


def test_a_webhook_while_the_broker_is_down_is_a_503_with_what_to_check(backend_workspace):
    from ml_backend.app import celery_enqueue
    from sync.celery_app import make_celery

    down = make_celery(Settings(workspace=backend_workspace.root, broker_url="redis://127.0.0.1:1/0"))
    down.conf.broker_connection_timeout = down.conf.broker_connection_max_retries = 1
    down.conf.task_publish_retry = False
    c = create_app(backend_settings(backend_workspace), enqueue=celery_enqueue(lambda: down)).test_client()
    response = c.post("/webhook", json={"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}})
    assert response.status_code == 503 and "CELERY_BROKER_URL" in response.json["error"], response.json
