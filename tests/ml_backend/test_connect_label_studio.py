"""The Connect flow against the real Label Studio server (1.23.2): our backend, served by a real HTTP
server thread, connected through the API with and without extra params."""

from __future__ import annotations

import threading

import httpx
import pytest
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError
from werkzeug.serving import make_server

from agile_modeling.workspace import Workspace
from label_config import load_config
from ml_backend.app import create_app
from sync.settings import Settings
from sync.state import SOURCE, ProjectLink, SyncState

pytestmark = pytest.mark.slow


@pytest.fixture
def backend(tmp_path):
    """Our backend app for an empty workspace, on a free loopback port; yields (url, queued, workspace)."""
    ws = Workspace(tmp_path / "ws")
    queued: list[tuple[str, dict]] = []
    app = create_app(Settings(workspace=ws.root), enqueue=lambda kind, **kw: queued.append((kind, kw)))
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", queued, ws
    server.shutdown()
    thread.join(5)


def test_connect_dialog_adopts_an_unlinked_project_through_its_extra_params(label_studio, backend):
    url, queued, ws = backend
    sdk = LabelStudio(base_url=label_studio.url, api_key=label_studio.credentials.token)
    headers = {"Authorization": f"Token {label_studio.credentials.token}"}
    pid = sdk.projects.create(title="My own harbour photos", label_config=load_config("rating")).id

    # no extra params: Label Studio refuses the connection and shows our reason (from the status line)
    with pytest.raises(ApiError) as refused:
        sdk.ml.create(project=pid, url=url, title="agile")
    shown = str(refused.value.body)
    assert refused.value.status_code == 400 and "422 Client Error" in shown
    assert f"agile concept new NAME --from-project {pid}" in shown and "extra params" in shown
    assert sdk.ml.list(project=pid) == [] and queued == []

    # with them: connected, and the worker is asked once however often Label Studio calls /setup
    params = {"concept": "gourmet tuna", "positive": ["tuna steak"], "negative": ["canned tuna"]}
    ml = sdk.ml.create(project=pid, url=url, title="agile", extra_params=params)
    assert ml.state == "CO" and ml.extra_params == params and not ml.error_message
    for _ in range(3):
        assert sdk.ml.get(id=ml.id).state == "CO"
    sdk.ml.list(project=pid)
    expected = {
        "project_id": pid,
        "concept": "gourmet tuna",
        "positive": ["tuna steak"],
        "negative": ["canned tuna"],
        "positive_choice": None,
        "negative_choice": None,
    }
    assert queued == [("adopt", expected)]

    # what Label Studio asks for the model versions: a bare GET /versions, answered as it is
    versions = httpx.get(f"{label_studio.url}/api/ml/{ml.id}/versions", headers=headers, timeout=10)
    assert versions.status_code == 200 and versions.json() == {"versions": []}

    # the worker adopted it: the same connection now answers for the concept, nothing more is queued
    SyncState(ws.root / "label_studio.sqlite").link(ProjectLink("gourmet-tuna", SOURCE, pid))
    again = sdk.ml.get(id=ml.id)
    assert again.state == "CO" and again.model_version in (None, "")
    assert queued == [("adopt", expected)]


def test_extra_params_saved_as_a_json_string_are_read_too(label_studio, backend):
    url, queued, _ = backend
    headers = {"Authorization": f"Token {label_studio.credentials.token}"}
    sdk = LabelStudio(base_url=label_studio.url, api_key=label_studio.credentials.token)
    pid = sdk.projects.create(title="Photos, params as text", label_config=load_config("rating")).id
    response = httpx.post(
        f"{label_studio.url}/api/ml",
        json={"project": pid, "url": url, "title": "agile", "extra_params": '{"concept": "tuna", "positive": "tuna"}'},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 201 and response.json()["state"] == "CO", response.text
    no_choices = {"positive_choice": None, "negative_choice": None}
    assert queued == [
        ("adopt", {"project_id": pid, "concept": "tuna", "positive": ["tuna"], "negative": [], **no_choices})
    ]
    # a typo is refused with the reason, and the connection is not saved
    bad = httpx.post(
        f"{label_studio.url}/api/ml",
        json={"project": pid, "url": url, "title": "x", "extra_params": {"concept": "tuna", "postive": ["a"]}},
        headers=headers,
        timeout=30,
    )
    assert bad.status_code == 400 and "unknown extra param(s) 'postive'" in bad.text
