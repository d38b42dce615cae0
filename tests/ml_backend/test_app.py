"""Every endpoint of the ML backend, with good and malformed input (Flask test client)."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from label_config import load_config
from ml_backend.app import create_app
from sync.image_signing import ImageSigner
from sync.settings import Settings
from tests.ml_backend.conftest import PROJECT, backend_settings, p_positive, train_model, unanswered


def predict_body(*tasks, project=f"{PROJECT}.1700000000", config=None):
    return {
        "tasks": list(tasks),
        "project": project,
        "label_config": config or load_config("rating"),
        "params": {"login": None, "password": None, "context": None},
    }


def data_url(color=(200, 10, 10)) -> str:
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), color).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def test_health_and_setup_report_the_real_model_version(client, backend_workspace):
    assert client.get("/health").json["status"] == "UP"
    body = {"project": f"{PROJECT}.1700000000", "schema": load_config("rating"), "hostname": "x", "access_token": "t"}
    assert client.post("/setup", json=body).json == {"model_version": None}  # nothing trained yet
    name = train_model(backend_workspace)
    assert client.post("/setup", json=body).json == {"model_version": name} and name == "red-things-v1"


def test_predict_answers_one_result_per_task_in_order(client, backend_workspace):
    tasks = [{"id": 10 + i, "data": {"image": f"http://127.0.0.1:1/images/{i}", "agile_image_id": i}} for i in range(8)]
    before = client.post("/predict", json=predict_body(*tasks)).json
    assert before["results"] == [[] for _ in tasks]  # no model yet: no prediction, not a made-up one
    train_model(backend_workspace)
    results = client.post("/predict", json=predict_body(*tasks)).json["results"]
    clf = backend_workspace.registry("red things").latest().load()
    expected = clf.predict_proba(backend_workspace.store().vectors().take(np.arange(8)).astype(np.float32))
    assert len(results) == 8
    for (pred,), p in zip(results, expected):
        assert pred["model_version"] == "red-things-v1" and p_positive(pred) == pytest.approx(float(p), abs=1e-6)
        assert pred["score"] == pytest.approx(max(float(p), 1 - float(p)), abs=1e-6)  # the chosen choice's
        assert pred["result"][0]["value"]["choices"] == ["Positive" if p >= 0.5 else "Negative"]
        assert pred["result"][0]["from_name"] == "label" and pred["result"][0]["to_name"] == "image"


def test_predict_embeds_an_unseen_image_on_the_fly_and_loads_the_model_once(client, backend_workspace):
    train_model(backend_workspace)
    task = {"id": 1, "data": {"image": data_url()}}
    first = client.post("/predict", json=predict_body(task)).json["results"][0][0]
    second = client.post("/predict", json=predict_body(task, task)).json["results"]
    assert [r[0]["score"] for r in second] == [first["score"]] * 2
    predictor = client.application.extensions["agile"]["predictor"]
    assert predictor.model_loads == 1 and len(predictor.embeddings.cache) == 1
    metrics = client.get("/metrics").data.decode()
    assert "agile_backend_predicted_tasks_total 3.0" in metrics and "agile_backend_images_embedded_total 1.0" in metrics
    train_model(backend_workspace)  # the worker saved a new version: picked up, loaded once more
    assert client.post("/predict", json=predict_body(task)).json["results"][0][0]["model_version"] == "red-things-v2"
    assert predictor.model_loads == 2


@pytest.mark.parametrize(
    "body, status, reason",
    [
        (None, 400, "JSON object"),
        ([1, 2], 400, "JSON object"),
        ({"project": "7.1"}, 400, '"tasks" must be a list'),
        ({"tasks": "x", "project": "7.1"}, 400, '"tasks" must be a list'),
        ({"tasks": [{"id": 1}], "project": "7.1"}, 400, 'task #0 must be an object with a "data"'),
        ({"tasks": [5], "project": "7.1"}, 400, "task #0"),
        ({"tasks": [], "project": None}, 400, '"project" must be a project id'),
        ({"tasks": [], "project": "abc"}, 400, '"project" must be a project id'),
        ({"tasks": [], "project": "99.1"}, 404, "project 99 belongs to no concept"),
        ({"tasks": [], "project": "7.1", "label_config": "<View><Text name='t' value='$t'/></View>"}, 422, "no <Image"),
        ({"tasks": [], "project": "7.1", "label_config": "<View><Image"}, 422, "not valid XML"),
    ],
)
def test_predict_rejects_malformed_requests_with_a_reason(client, body, status, reason):
    response = (
        client.post("/predict", json=body)
        if body is not None
        else client.post("/predict", data="{oops", content_type="application/json")
    )
    assert response.status_code == status, response.json
    assert reason in response.json["error"] and "Traceback" not in response.get_data(as_text=True)


@pytest.mark.parametrize(
    "image",
    [
        "/etc/passwd",
        "file:///etc/passwd",
        "data:image/png;base64,%%%",
        "http://127.0.0.1:9/none.png",
        data_url().replace("iVBOR", "AAAAA"),
    ],
)
def test_a_task_whose_image_cannot_be_read_is_answered_empty_with_its_reason(client, backend_workspace, image):
    train_model(backend_workspace)
    response = client.post("/predict", json=predict_body({"id": 42, "data": {"image": image}}))
    assert unanswered(response, 42)
    assert "root:" not in response.get_data(as_text=True)  # no local file was read


@pytest.mark.parametrize(
    "body, status, reason",
    [
        ({}, 400, '"action" must be'),
        ({"action": 5}, 400, '"action" must be'),
        ({"action": "ANNOTATION_CREATED"}, 400, '"project" must be'),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 404}}, 404, "belongs to no concept"),
    ],
)
def test_webhook_rejects_malformed_events(client, queued, body, status, reason):
    response = client.post("/webhook", json=body)
    assert response.status_code == status and reason in response.json["error"]
    assert queued == []


def test_webhook_hands_work_to_the_worker_and_answers_at_once(client, queued):
    event = {"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}, "annotation": {"id": 1}, "task": {"id": 2}}
    assert client.post("/webhook", json=event).status_code == 202
    assert client.post("/webhook", json={"action": "START_TRAINING", "project": {"id": PROJECT}}).status_code == 202
    assert (
        client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": PROJECT}}).json["status"]
        == "ignored"
    )
    assert [k for k, _ in queued] == ["sync", "retrain"] and queued[0][1]["project_id"] == PROJECT
    assert queued[1][1] == {"concept": "red-things"}


def test_images_route_serves_pool_files_only(client, backend_workspace):
    signer = ImageSigner.from_settings(client.application.extensions["agile"]["settings"])
    response = client.get("/images/0?" + signer.query(0))
    assert response.status_code == 200 and response.data[:4] in (b"\x89PNG", b"\xff\xd8\xff\xe0")
    assert client.get("/images/999?" + signer.query(999)).status_code == 404
    assert client.get("/images/../../etc/passwd").status_code == 404


def test_basic_auth_when_configured(backend_workspace):
    app = create_app(
        Settings(workspace=backend_workspace.root, basic_auth_user="ls", basic_auth_pass="s3cret"),
        enqueue=lambda *a, **k: None,
    )
    c = app.test_client()
    body = {"project": f"{PROJECT}.1"}
    denied = c.post("/setup", json=body)
    assert (
        denied.status_code == 401
        and "basic auth" in denied.json["error"]
        and "s3cret" not in denied.get_data(as_text=True)
    )
    assert c.post("/setup", json=body, auth=("ls", "wrong")).status_code == 401
    assert c.post("/setup", json=body, auth=("ls", "s3cret")).status_code == 200
    assert c.get("/health").status_code == 200  # health stays open for probes


def test_no_pool_is_a_503_that_says_what_to_do(tmp_path):
    settings = Settings(workspace=tmp_path / "empty", image_signing_key="k")
    c = create_app(settings, enqueue=lambda *a, **k: None).test_client()
    response = c.get("/images/0?" + ImageSigner.from_settings(settings).query(0))
    assert response.status_code == 503 and "agile pool add" in response.json["error"]


def test_webhooks_need_the_shared_secret_when_one_is_configured_not_basic_auth(backend_workspace):
    queued = []
    settings = Settings(
        workspace=backend_workspace.root, basic_auth_user="ls", basic_auth_pass="pw", webhook_secret="hook-secret"
    )
    c = create_app(settings, enqueue=lambda kind, **kw: queued.append(kind)).test_client()
    event = {"action": "ANNOTATION_CREATED", "project": {"id": PROJECT}}
    missing = c.post("/webhook", json=event)
    assert (
        missing.status_code == 401
        and "X-Agile-Secret" in missing.json["error"]
        and "hook-secret" not in missing.get_data(as_text=True)
    )
    assert c.post("/webhook", json=event, headers={"X-Agile-Secret": "guess"}).status_code == 401
    assert (
        c.post("/webhook", json=event, headers={"X-Agile-Secret": "hook-secret"}).status_code == 202
    )  # no basic auth needed
    assert queued == ["sync"]


def test_an_annotation_webhook_passes_its_annotation_to_the_worker(client, queued):
    annotation = {
        "id": 31,
        "result": [{"from_name": "label", "value": {"choices": ["Positive"]}}],
        "completed_by": 1,
        "updated_at": "2026-11-24T01:00:00Z",
        "was_cancelled": False,
        "lead_time": 2.5,
        "unrelated": {"big": "x" * 100},
    }
    event = {
        "action": "ANNOTATION_CREATED",
        "project": {"id": PROJECT},
        "annotation": annotation,
        "task": {"id": 8, "data": {"image": "x", "agile_image_id": 5, "agile_round": 2}},
    }
    assert client.post("/webhook", json=event).status_code == 202
    passed = queued[-1][1]["event"]
    assert passed["task_id"] == 8 and passed["image_id"] == 5 and passed["round"] == 2
    assert passed["annotation"]["id"] == 31 and "unrelated" not in passed["annotation"]
    # a payload the worker cannot use as it is: it will read the project instead
    event["task"]["data"].pop("agile_image_id")
    client.post("/webhook", json=event)
    assert queued[-1][1]["event"] is None


def test_a_busy_database_is_a_503_that_says_to_retry(client, backend_workspace, monkeypatch):
    from agile_modeling.database import DatabaseBusyError

    predictor = client.application.extensions["agile"]["predictor"]

    def busy(project_id):
        raise DatabaseBusyError("label_studio.sqlite is locked by another process; try again")

    monkeypatch.setattr(predictor.state, "for_project", busy)
    response = client.post("/setup", json={"project": f"{PROJECT}.1", "schema": load_config("rating")})
    assert response.status_code == 503 and "try again" in response.json["error"]


def test_a_backend_without_secrets_answers_only_this_machine(backend_workspace):
    """However it is served (plain gunicorn, another WSGI server), a backend with no secrets refuses
    requests from other machines with a 403 that names the variables; /health stays open."""
    app = create_app(backend_settings(backend_workspace))
    remote = app.test_client()
    body = {"project": f"{PROJECT}.1", "schema": load_config("rating")}
    response = remote.post("/setup", json=body, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert response.status_code == 403 and "BASIC_AUTH_USER" in response.json["error"]
    assert remote.get("/health", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200
    assert remote.post("/setup", json=body, environ_base={"REMOTE_ADDR": "127.0.0.1"}).status_code == 200
    guarded = create_app(
        backend_settings(backend_workspace, basic_auth_user="u", basic_auth_pass="p", webhook_secret="w")
    ).test_client()
    assert (
        guarded.post(
            "/setup", json=body, headers={"Authorization": "Basic dTpw"}, environ_base={"REMOTE_ADDR": "10.1.2.3"}
        ).status_code
        == 200
    )


def test_an_adopted_projects_new_tasks_are_handed_to_the_worker_and_its_annotations_are_not(
    client, queued, backend_workspace
):
    """A user's own project adopted as the pool: TASKS_CREATED syncs it (the new tasks get embedded); its
    annotations are the user's own business. Our rating project's TASKS_CREATED are our own imports."""
    from sync.state import SOURCE, ProjectLink, SyncState

    SyncState(backend_workspace.root / "label_studio.sqlite").link(ProjectLink("red-things", SOURCE, 77))
    created = {"action": "TASKS_CREATED", "project": {"id": 77}, "tasks": [{"id": 5}]}
    annotated = {"action": "ANNOTATION_CREATED", "project": {"id": 77}, "annotation": {"id": 1}, "task": {"id": 5}}
    assert client.post("/webhook", json=created).status_code == 202
    assert client.post("/webhook", json=annotated).json["status"] == "ignored"
    ours = {"action": "TASKS_CREATED", "project": {"id": PROJECT}, "tasks": [{"id": 9}]}
    assert client.post("/webhook", json=ours).json["status"] == "ignored"
    assert [(k, w["project_id"]) for k, w in queued] == [("sync", 77)]


TUNA_CONFIG = """<View><Image name="photo" value="$photo"/>
<Choices name="verdict" toName="photo"><Choice value="Tuna"/><Choice value="Not tuna"/></Choices></View>"""


@pytest.mark.parametrize("choices", [("Tuna", "Not tuna"), None])
def test_an_adopted_project_keeps_its_own_config_at_setup_and_predict(client, backend_workspace, choices):
    """The user's config is not a rating config: /setup stays connected, and /predict answers in the
    user's own choices (or, with none to name, an empty result scored with P(positive))."""
    from sync.state import SOURCE, ProjectLink, SyncState
    from tests.ml_backend.conftest import train_model

    state = SyncState(backend_workspace.root / "label_studio.sqlite")
    state.link(ProjectLink("red-things", SOURCE, 77))
    state.record_source_tasks(77, {5: 1, 6: 2}, {})
    config = TUNA_CONFIG if choices else '<View><Image name="photo" value="$photo"/></View>'
    if choices:
        state.set_source_choices(77, *choices)
    version = train_model(backend_workspace)
    setup = client.post("/setup", json={"project": "77.1", "schema": config})
    assert setup.status_code == 200 and setup.json["model_version"] == version
    tasks = [{"id": 5, "data": {"photo": "/data/upload/77/a.jpg"}}, {"id": 6, "data": {"photo": "s3://b/k.jpg"}}]
    answer = client.post("/predict", json={"project": "77.1", "label_config": config, "tasks": tasks})
    assert answer.status_code == 200, answer.json
    first, second = (r[0] for r in answer.json["results"])
    if choices:
        assert first["result"][0]["value"]["choices"][0] in choices and first["score"] >= 0.5
    else:
        assert first["result"] == [] and 0.0 <= first["score"] <= 1.0
    assert first["model_version"] == second["model_version"] == version
