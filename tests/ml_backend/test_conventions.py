"""Label Studio's conventions (Flask test client): the Connect dialog's extra params adopt an unlinked
project, a pinned model version, /versions, the score of a prediction, empty results for unreadable
images, and pool images for an adopted project's tasks."""

import json

import numpy as np
import pytest

from label_config import load_config
from ml_backend.app import ADOPTION_REPEAT_S, BrokerUnavailableError, celery_enqueue, create_app
from sync.state import SOURCE, ProjectLink, SyncState
from tests.ml_backend.conftest import PROJECT, backend_settings, p_positive, train_model, unanswered
from tests.ml_backend.test_app import predict_body

UNLINKED = 31
PARAMS = {"concept": "gourmet tuna", "positive": ["tuna steak", "sashimi"], "negative": "canned tuna"}


def setup_body(project=UNLINKED, extra_params=None, **kw):
    """What Label Studio 1.23.2 sends (checked against the real server, see /work/shared/LABEL_STUDIO.md)."""
    return {
        "project": f"{project}.1700000000",
        "schema": load_config("rating"),
        "hostname": "http://localhost:8080",
        "access_token": "0123456789abcdef",
        "extra_params": extra_params,
        **kw,
    }


def adoptions(queued):
    return [kw for kind, kw in queued if kind == "adopt"]


# --- /setup of a project no concept is linked to -------------------------------------------------
def test_setup_of_an_unlinked_project_without_params_says_both_ways_to_link_it(client, queued):
    response = client.post("/setup", json=setup_body())
    assert response.status_code == 422
    error = response.json["error"]
    assert f"project {UNLINKED} belongs to no concept" in error
    assert f"agile concept new NAME --from-project {UNLINKED}" in error and '"concept": "gourmet tuna"' in error
    # Label Studio shows "422 Client Error: <reason phrase> for url: ...", never the body: the phrase says it
    assert response.status.startswith("422 Label Studio project 31 belongs to no concept")
    assert "--from-project 31" in response.status and "\n" not in response.status
    assert queued == []


@pytest.mark.parametrize("as_text", [False, True], ids=["object", "JSON string"])
def test_setup_with_a_concept_in_the_extra_params_requests_an_adoption_once_per_ten_minutes(
    client, queued, monkeypatch, as_text
):
    now = [1000.0]
    monkeypatch.setattr(client.application.extensions["agile"]["adoptions"], "clock", lambda: now[0])
    body = setup_body(extra_params=json.dumps(PARAMS) if as_text else PARAMS)
    first = client.post("/setup", json=body)
    assert first.status_code == 200 and first.json["model_version"] is None
    expected = {
        "project_id": UNLINKED,
        "concept": "gourmet tuna",
        "positive": ["tuna steak", "sashimi"],
        "negative": ["canned tuna"],  # a single text is a list of one
        "positive_choice": None,
        "negative_choice": None,
    }
    assert adoptions(queued) == [expected]
    for _ in range(5):  # Label Studio calls /setup on every listing and before every predict
        now[0] += 60
        assert client.post("/setup", json=body).status_code == 200
    assert len(adoptions(queued)) == 1
    other = {**PARAMS, "negative": ["tinned tuna"]}  # other params: a new request at once
    assert client.post("/setup", json=setup_body(extra_params=other)).status_code == 200
    assert len(adoptions(queued)) == 2
    now[0] += ADOPTION_REPEAT_S
    client.post("/setup", json=body)
    assert adoptions(queued)[-1] == expected and len(adoptions(queued)) == 3


@pytest.mark.parametrize(
    "params, reason",
    [
        ({"concept": ""}, '"concept" must be a non-empty name'),
        ({"concept": "  "}, '"concept" must be a non-empty name'),
        ({"concept": 5}, '"concept" must be a non-empty name'),
        ({"concept": "x" * 101}, "at most 100 characters"),
        ({"concept": "tuna", "positive": [""]}, '"positive" item #0 must be a non-empty text'),
        ({"concept": "tuna", "positive": ["ok", 3]}, '"positive" item #1'),
        ({"concept": "tuna", "negative": {"a": 1}}, '"negative" must be a text or a list'),
        ({"concept": "tuna", "positive": ["p"] * 51}, "at most 50 texts"),
        ({"concept": "tuna", "postive": ["p"]}, "unknown extra param(s) 'postive'"),
        ({"concept": "tuna", "model_version": 3}, '"model_version" must be the name'),
        ({"concept": "tuna", "positive_choice": ["Tuna"]}, '"positive_choice" must be the value'),
        ("{concept: tuna}", "not a JSON object"),
        ("[1, 2]", "must be a JSON object"),
        ([1], "must be a JSON object"),
    ],
)
def test_bad_extra_params_are_a_422_saying_what_is_wrong(client, queued, params, reason):
    response = client.post("/setup", json=setup_body(extra_params=params))
    assert response.status_code == 422 and reason in response.json["error"], response.json
    assert reason.split("(")[0] in response.status  # shown by Label Studio too
    assert queued == []


def test_an_adoption_the_broker_did_not_take_is_requested_again_by_the_next_setup(backend_workspace):
    calls = []

    def flaky(kind, **kw):
        calls.append(kind)
        if len(calls) == 1:
            raise BrokerUnavailableError("the worker's message broker is unreachable")

    c = create_app(backend_settings(backend_workspace), enqueue=flaky).test_client()
    assert c.post("/setup", json=setup_body(extra_params=PARAMS)).status_code == 503
    assert c.post("/setup", json=setup_body(extra_params=PARAMS)).status_code == 200
    assert c.post("/setup", json=setup_body(extra_params=PARAMS)).status_code == 200
    assert calls == ["adopt", "adopt"]


def test_the_projects_own_choice_names_go_to_the_worker(client, queued):
    params = {**PARAMS, "positive_choice": "Tuna", "negative_choice": " Not tuna "}
    assert client.post("/setup", json=setup_body(extra_params=params)).status_code == 200
    (adoption,) = adoptions(queued)
    assert (adoption["positive_choice"], adoption["negative_choice"]) == ("Tuna", "Not tuna")


def test_a_linked_project_ignores_the_adoption_params_left_in_its_connection(client, queued):
    response = client.post("/setup", json=setup_body(PROJECT, PARAMS))
    assert response.status_code == 200 and response.json == {"model_version": None}
    assert queued == []


def test_celery_enqueue_sends_the_adoption_task_with_its_kwargs():
    sent = []

    class FakeCelery:
        def send_task(self, name, args=None, kwargs=None, **options):
            sent.append((name, args, kwargs, options))

    enqueue = celery_enqueue(lambda: FakeCelery())  # type: ignore[arg-type,return-value]
    enqueue("adopt", project_id=3, concept="tuna", positive=["a"], negative=[], positive_choice="Tuna")
    assert sent == [
        (
            "agile.adopt_project",
            None,
            {
                "project_id": 3,
                "concept": "tuna",
                "positive": ["a"],
                "negative": [],
                "positive_choice": "Tuna",
                "negative_choice": None,
            },
            {"ignore_result": True},
        )
    ]


# --- model versions ------------------------------------------------------------------------------
def test_a_pinned_model_version_answers_setup_and_predict_and_an_unknown_one_names_the_versions(
    client, backend_workspace
):
    v1, v2 = train_model(backend_workspace), train_model(backend_workspace)
    assert client.post("/setup", json=setup_body(PROJECT)).json == {"model_version": v2}  # the newest by default
    pinned = setup_body(PROJECT, {"model_version": v1})
    assert client.post("/setup", json=pinned).json == {"model_version": v1}
    task = {"id": 1, "data": {"image": "x", "agile_image_id": 3}}
    # Label Studio sends no model version with /predict: the pin of the project's latest /setup holds
    assert client.post("/predict", json=predict_body(task)).json["results"][0][0]["model_version"] == v1
    asked = {**predict_body(task), "model_version": v2}  # a client that names one
    assert client.post("/predict", json=asked).json["results"][0][0]["model_version"] == v2
    unknown = client.post("/setup", json=setup_body(PROJECT, {"model_version": "red-things-v9"}))
    assert unknown.status_code == 422
    assert "'red-things-v9'" in unknown.json["error"] and f"choose one of {v2}, {v1}" in unknown.json["error"]
    other = client.post("/predict", json={**predict_body(task), "model_version": "blue-v1"})
    assert other.status_code == 422 and v1 in other.json["error"]
    client.post("/setup", json=setup_body(PROJECT))  # the pin removed from the connection: the newest again
    assert client.post("/predict", json=predict_body(task)).json["results"][0][0]["model_version"] == v2


def test_versions_lists_the_model_versions_newest_first(client, backend_workspace):
    assert client.get("/versions").json == {"versions": []}
    names = [train_model(backend_workspace) for _ in range(3)]
    assert client.get("/versions").json == {"versions": names[::-1]}  # as Label Studio asks: no project
    assert client.get(f"/versions?project={PROJECT}.1700000000").json == {
        "versions": names[::-1],
        "concept": "red-things",
    }
    assert client.get("/versions?project=99").status_code == 404
    assert client.get("/versions?project=x").status_code == 400


# --- /predict ------------------------------------------------------------------------------------
def test_score_is_the_probability_of_the_chosen_choice_with_p_positive_kept(client, backend_workspace):
    train_model(backend_workspace)
    tasks = [{"id": i, "data": {"image": "x", "agile_image_id": i}} for i in range(8)]
    results = client.post("/predict", json=predict_body(*tasks)).json["results"]
    for (pred,) in results:
        p = p_positive(pred)
        assert pred["score"] == pytest.approx(max(p, 1 - p)) and pred["score"] >= 0.5
        assert pred["result"][0]["value"]["choices"] == ["Positive" if p >= 0.5 else "Negative"]


def test_unreadable_images_are_empty_results_in_order_with_their_reasons(client, backend_workspace):
    train_model(backend_workspace)
    tasks = [
        {"id": 1, "data": {"image": "/etc/passwd"}},
        {"id": 2, "data": {"image": "x", "agile_image_id": 2}},
        {"id": 3, "data": {"image": "data:image/png;base64,%%%"}},
    ]
    response = client.post("/predict", json=predict_body(*tasks))
    assert response.status_code == 200
    results = response.json["results"]
    assert results[0] == [] and results[2] == [] and results[1][0]["model_version"] == "red-things-v1"
    assert [e["task"] for e in response.json["errors"]] == [1, 3]
    assert "neither an http(s) nor a data: URL" in response.json["errors"][0]["error"]
    assert "not valid base64" in unanswered(client.post("/predict", json=predict_body(tasks[2])), 3)


def test_predictor_takes_pool_images_for_mapped_tasks_instead_of_their_urls(client, backend_workspace):
    train_model(backend_workspace)
    predictor = client.application.extensions["agile"]["predictor"]
    schema = predictor.schema(load_config("rating"), PROJECT)
    tasks = [{"id": 50, "data": {"image": "http://127.0.0.1:9/unreachable.png"}}, {"id": 51, "data": {"image": "x"}}]
    results, fresh, errors = predictor.predict(PROJECT, tasks, schema, pool_ids={50: 4, 51: 5})
    assert fresh == 0 and errors == {}
    clf = backend_workspace.registry("red things").latest().load()
    expected = clf.predict_proba(backend_workspace.store().vectors().take(np.array([4, 5])).astype(np.float32))
    assert [p_positive(r[0]) for r in results] == pytest.approx(expected.tolist(), abs=1e-6)
    _, _, errors = predictor.predict(PROJECT, tasks, schema)  # unmapped: the URLs are read (and fail)
    assert sorted(errors) == [0, 1]


def test_predict_passes_an_adopted_projects_task_mapping_to_the_predictor(client, backend_workspace, monkeypatch):
    train_model(backend_workspace)
    SyncState(backend_workspace.root / "label_studio.sqlite").link(ProjectLink("red-things", SOURCE, 40))
    predictor = client.application.extensions["agile"]["predictor"]
    asked = []

    def source_image_ids(project_id, task_ids):
        asked.append((project_id, task_ids))
        return {task_id: 6 for task_id in task_ids}

    monkeypatch.setattr(predictor.state, "source_image_ids", source_image_ids)
    task = {"id": 77, "data": {"image": "http://127.0.0.1:9/none.png"}}
    response = client.post("/predict", json=predict_body(task, project="40.1700000000"))
    assert response.status_code == 200 and response.json["results"][0][0]["model_version"] == "red-things-v1"
    assert asked == [(40, [77])]
    client.post("/predict", json=predict_body(task))  # a rating project: never asked
    assert asked == [(40, [77])]
