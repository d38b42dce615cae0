"""Fuzzing the backend's HTTP endpoints and the parsers behind them with malformed input:
no 500, no crash, always a JSON error with a reason."""

import base64
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from label_config import LabelConfigError, parse_rating_config
from label_config.deliberation import deliberation_label, scoping_decision
from ml_backend import requests as parse
from ml_backend.app import create_app
from sync.settings import Settings
from tests.ml_backend.conftest import BACKEND, PROJECT, backend_settings, train_model
from tests.ml_backend.test_app import data_url, predict_body

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=25,
)
KEYS = st.sampled_from(
    [
        "tasks",
        "project",
        "label_config",
        "data",
        "image",
        "id",
        "action",
        "annotation",
        "task",
        "agile_image_id",
        "result",
        "params",
        "model_version",
        "1.7",
    ]
)
# bodies shaped like the real ones, with hostile values where it matters
PLAUSIBLE = st.fixed_dictionaries(
    {},
    optional={
        "tasks": st.lists(
            st.fixed_dictionaries({}, optional={"id": JSON, "data": st.dictionaries(KEYS, JSON, max_size=4)}),
            max_size=4,
        )
        | JSON,
        "project": st.sampled_from(["7.1700000000", "7", "x.y", "", "7.", "-1.0"]) | JSON,
        "label_config": st.sampled_from(["<View/>", "<View><Image name='i' value='$image'/></View>", "<<", ""]) | JSON,
        "action": st.sampled_from(
            ["ANNOTATION_CREATED", "ANNOTATION_UPDATED", "PROJECT_UPDATED", "ANNOTATIONS_DELETED"]
        )
        | JSON,
        "annotation": st.dictionaries(KEYS, JSON, max_size=4) | JSON,
        "task": st.dictionaries(KEYS, JSON, max_size=4) | JSON,
    },
)
ALLOWED = {200, 202, 400, 401, 403, 404, 405, 409, 413, 415, 422, 503}
FUZZ = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)


@pytest.fixture
def fuzz_client(backend_workspace):
    app = create_app(Settings(workspace=backend_workspace.root), enqueue=lambda kind, **kw: None)
    return app.test_client()


@pytest.fixture
def trained_client(backend_workspace):
    """A backend with a trained model, so /predict reaches the image path (fetch, decode, embed)."""
    train_model(backend_workspace)
    settings = backend_settings(backend_workspace, basic_auth_user="ls", basic_auth_pass="pw", webhook_secret="hook")
    return create_app(settings, enqueue=lambda kind, **kw: None).test_client()


# image URLs as a hostile task writes them: odd schemes, hosts, ports, paths; our own image route, signed or not
HOSTS = st.sampled_from(
    [
        "127.0.0.1",
        "127.0.0.1:9",
        "127.0.0.1:8080",
        "127.0.0.1:8080:1",
        "127.0.0.1:6379",
        "[::1]",
        "[::1",
        "localhost",
        "169.254.169.254",
        "evil.example",
        "\u4e2d.example",
        "",
        "user:pw@127.0.0.1:9",
        "127.0.0.1:99999",
        "127.0.0.1:-1",
        "%00",
        "a" * 70,
    ]
)
IMAGE_URLS = st.one_of(
    st.builds(
        lambda scheme, host, path: f"{scheme}{host}{path}",
        st.sampled_from(["http://", "https://", "ftp://", "file://", "HTTP://", "http:/", "//", "javascript:", ""]),
        HOSTS,
        st.sampled_from(
            [
                "/images/0",
                "/images/3?exp=1&sig=x",
                "/images/-1",
                "/images/99999999999999999999",
                "/x.png",
                "",
                "/%2e%2e/etc/passwd",
                "/images/0?exp=&sig=",
            ]
        )
        | st.text(max_size=20),
    ),
    st.builds(lambda payload: "data:image/png;base64," + payload, st.text(max_size=40)),
    st.builds(
        lambda raw: "data:image/png;base64," + base64.b64encode(raw).decode(),
        st.binary(max_size=80) | st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 40),
    ),
    st.sampled_from([data_url(), "data:,", "data:", "data:image/png,raw", "/etc/passwd", BACKEND + "/images/2"]),
    st.text(max_size=40),
    JSON,
)
HOSTILE_TASK = st.fixed_dictionaries(
    {"data": st.fixed_dictionaries({"image": IMAGE_URLS}, optional={"agile_image_id": st.integers(-5, 20) | JSON})},
    optional={"id": JSON},
)


def check(response):
    assert response.status_code in ALLOWED, (response.status_code, response.get_data()[:300])
    if response.status_code >= 400:
        body = response.get_json(silent=True)
        assert body and isinstance(body.get("error"), str) and body["error"], response.get_data()[:300]
        assert "Traceback" not in response.get_data(as_text=True)


@FUZZ
@given(route=st.sampled_from(["/predict", "/setup", "/webhook"]), body=PLAUSIBLE | JSON)
def test_json_bodies_never_break_the_backend(fuzz_client, route, body):
    check(fuzz_client.post(route, data=json.dumps(body), content_type="application/json"))


@FUZZ
@given(
    route=st.sampled_from(["/predict", "/setup", "/webhook", "/health", "/metrics", "/"]),
    method=st.sampled_from(["GET", "POST", "PUT", "DELETE"]),
    raw=st.binary(max_size=200),
    ctype=st.sampled_from(["application/json", "text/plain", "multipart/form-data", ""]),
)
def test_raw_bytes_and_odd_methods_never_break_the_backend(fuzz_client, route, method, raw, ctype):
    response = fuzz_client.open(route, method=method, data=raw, content_type=ctype)
    if route == "/metrics" and response.status_code == 200:
        return
    check(response)


@FUZZ
@given(tasks=st.lists(HOSTILE_TASK, min_size=1, max_size=4), user=st.text(max_size=8), password=st.text(max_size=8))
def test_predict_with_a_trained_model_and_hostile_image_urls_never_breaks(trained_client, tasks, user, password):
    auth = {
        "Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode("utf-8", "surrogatepass")).decode()
    }
    for headers in (auth, {"Authorization": "Basic " + base64.b64encode(b"ls:pw").decode()}):
        response = trained_client.post(
            "/predict", data=json.dumps(predict_body(*tasks)), content_type="application/json", headers=headers
        )
        check(response)
        if response.status_code == 200:
            assert len(response.json["results"]) == len(tasks)


@FUZZ
@given(secret=st.text(max_size=12), image_tail=st.text(max_size=30))
def test_hostile_secrets_and_image_queries_never_break(trained_client, secret, image_tail):
    latin = secret.encode("utf-8", "surrogatepass").decode("latin-1")  # what a WSGI header can carry
    latin = "".join(ch for ch in latin if ch not in "\r\n")
    check(
        trained_client.post(
            "/webhook",
            json={"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}},
            headers={"X-Agile-Secret": latin},
        )
    )
    response = trained_client.get("/images/0?" + image_tail.replace("\x00", ""))
    assert response.status_code in {200, 403, 404}
    if response.status_code == 403:
        check(response)


@FUZZ
@given(tail=st.text(max_size=20))
def test_image_route_with_odd_ids(fuzz_client, tail):
    response = fuzz_client.get("/images/" + tail.replace("\x00", ""))
    assert response.status_code in {301, 308, 400, 403, 404, 405}  # never served unsigned


@settings(max_examples=300, deadline=None)
@given(
    st.text(max_size=300)
    | st.sampled_from(
        [
            "<View><Image name='img' value='$img'/><Choices name='c' toName='img'><Choice value='Positive'/></Choices></View>",
            "<!DOCTYPE x [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]><View>&b;</View>",
            "<?xml version='1.0'?><View><Image/></View>",
        ]
    )
)
def test_label_config_parser_accepts_or_explains(text):
    try:
        parse_rating_config(text)
    except LabelConfigError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None)
@given(
    result=JSON
    | st.lists(
        st.dictionaries(
            st.sampled_from(["from_name", "type", "value", "to_name"]),
            JSON | st.sampled_from(["verdict", "choices", "reason", "textarea", "decision"]),
            max_size=4,
        ),
        max_size=4,
    ),
    decision=st.sampled_from([0, 1]),
)
def test_annotation_result_parsers_never_raise(result, decision):
    out = deliberation_label(result if isinstance(result, list) else [result], decision)
    assert out is None or (out[0] in (0, 1) and isinstance(out[1], str))
    assert scoping_decision(result if isinstance(result, list) else [result]) in (None, "keep", "flip", "discard")


@settings(max_examples=300, deadline=None)
@given(body=PLAUSIBLE | JSON)
def test_webhook_event_parser_accepts_or_explains(body):
    from werkzeug.exceptions import HTTPException

    try:
        parse.annotation_event(body) if isinstance(body, dict) else None
    except HTTPException as exc:
        assert exc.code in (400, 422) and exc.description
