"""A real workspace for the backend: real images embedded by a real (random-weight) open_clip model,
a concept linked to a Label Studio project id, and a trained model version."""

import numpy as np
import pytest

from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier
from agile_modeling.concepts import Concept
from agile_modeling.encoders import OpenClipSpec
from agile_modeling.store import list_image_files
from agile_modeling.workspace import Workspace
from ml_backend.app import create_app
from sync.settings import Settings
from sync.state import RATING, ProjectLink, RoundSettings, SyncState

PROJECT = 7


@pytest.fixture
def backend_workspace(tmp_path, image_folder, tiny_clip):
    ws = Workspace(tmp_path / "ws")
    encoder = ws.image_encoder(OpenClipSpec(model="ViT-S-32", pretrained=None))
    store = ws.store(encoder.dim, encoder.name)
    store.add_images(list_image_files(image_folder), encoder, progress=False)
    ws.sessions.create(Concept("red things", ("red",)))
    SyncState(ws.root / "label_studio.sqlite").link(
        ProjectLink("red-things", RATING, PROJECT, RoundSettings("rating", 4, 2, "margin", 0))
    )
    return ws


def train_model(ws: Workspace) -> str:
    x = ws.store().vectors().take(np.arange(8)).astype(np.float32)
    clf = MLPClassifier(DEFAULT_RECIPE.with_(epochs=2, epoch_size=256, hidden=(8,))).fit(x, np.arange(8) % 2)
    return ws.registry("red things").save(clf, {}, round=0, num_labels=8, num_positive=4).name


@pytest.fixture
def queued():
    return []


LABEL_STUDIO = "http://127.0.0.1:8080"
BACKEND = "http://127.0.0.1:9"  # nothing listens there: a fetch from it fails at once


def backend_settings(ws: Workspace, **kw) -> Settings:
    """What the backend reads in a real deployment: Label Studio's URL and key, its own URL."""
    return Settings(
        workspace=ws.root,
        label_studio_url=LABEL_STUDIO,
        backend_url=BACKEND,
        label_studio_api_key="0123456789abcdef0123456789abcdef01234567",
        **kw,
    )


@pytest.fixture
def client(backend_workspace, queued):
    app = create_app(backend_settings(backend_workspace), enqueue=lambda kind, **kw: queued.append((kind, kw)))
    return app.test_client()


def unanswered(response, task_id) -> str:
    """The reason a one-task /predict answered no prediction: still a 200 with one empty result (a
    non-200 would make Label Studio drop the whole batch), the task named under "errors"."""
    assert response.status_code == 200, response.json
    assert response.json["results"] == [[]], response.json
    (error,) = response.json["errors"]
    assert error["task"] == task_id, error
    return str(error["error"])


def p_positive(prediction: dict) -> float:
    """The raw P(positive) of a /predict prediction (its score is the chosen choice's probability)."""
    return float(prediction["result"][0]["meta"]["p_positive"])
