"""The whole loop through a real Label Studio server, as a user runs it.

A test "user" answers from the ground truth of the shared real embeddings and posts annotations
through the Label Studio API. The webhook reaches the real ML backend (gunicorn), which hands the
work to a real Celery worker; the worker retrains and pushes the next batch with predictions.
"""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from agile_cli.services import service_env
from agile_modeling.metrics import binary_metrics
from agile_modeling.simulate import SimulationContext, load_suite, simulate_session
from agile_modeling.simulate.shared_pool import SHARED_ENCODER, import_shared_pool
from agile_modeling.workspace import Workspace
from label_config import parse_rating_config
from sync.client import LabelStudioClient
from sync.rounds import IMAGE_ID, ROUND, ConceptSync
from sync.state import SyncState
from tests.sync.conftest import REPO, wait_for

pytestmark = pytest.mark.slow

CONCEPT = "sunflower"
BATCH = 100


@pytest.fixture(scope="module")
def suite_concept():
    return next(s for s in load_suite() if s.title == "sunflowers")


def shared_workspace(root, data) -> Workspace:
    ws = Workspace(root)
    import_shared_pool(ws.store(512, SHARED_ENCODER), data)
    ws.set_config(text_vocabulary=str(data.root / "text_vocabulary.npz"))
    return ws


def rate(client: LabelStudioClient, project_id: int, tasks, truth: np.ndarray) -> None:
    schema = parse_rating_config(client.project_label_config(project_id))
    for task in tasks:
        client.create_annotation(task.id, schema.rating(int(truth[task.data[IMAGE_ID]])), lead_time=2.0)


def whole_round(client, project_id: int, round_index: int) -> list:
    """The round's open tasks once all BATCH are there (they are imported in chunks), else []."""
    tasks = [t for t in open_tasks(client, project_id) if t.data[ROUND] == round_index]
    return tasks if len(tasks) >= BATCH else []


def open_tasks(client, project_id):
    return [t for t in client.iter_tasks(project_id) if not t.annotations]


def test_the_loop_through_label_studio_matches_the_engine(tmp_path, label_studio, services, shared_data, suite_concept):
    ws = shared_workspace(tmp_path / "ws", shared_data)
    settings, backend, worker = services(ws.root, sync_seconds=600)  # webhooks alone must drive it
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    truth = suite_concept.ground_truth(shared_data.pool)

    # the user creates the concept from the command line: with LABEL_STUDIO_URL set, it is published
    concept = suite_concept.concept()
    assert concept.positives == (concept.name,) and concept.example_ids == ()
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "agile_cli",
            "concept",
            "new",
            concept.name,
            "--negative",
            *concept.negatives,
            "--description",
            concept.description,
            "--size",
            str(BATCH),
            "--batch-size",
            str(BATCH),
        ],
        capture_output=True,
        text=True,
        env=service_env(settings),
        cwd=REPO,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert Workspace(ws.root).sessions.open(CONCEPT).concept == concept  # the same concept as the simulation's
    project_id = SyncState(ws.root / "label_studio.sqlite").for_concept(CONCEPT).project_id
    assert (
        f"published to Label Studio as project {project_id}" in out.stdout and f"({BATCH} tasks pushed)" in out.stdout
    )

    seed = list(client.iter_tasks(project_id))
    assert len(seed) == BATCH and {t.data[ROUND] for t in seed} == {0}
    assert all(t.prediction_version is None for t in seed)  # no model yet, no made-up prediction
    assert client.find_ml_backend(project_id, settings.backend_url) is not None

    # half the seed batch, then the worker crashes; the user goes on rating while it is down
    rate(client, project_id, seed[:50], truth)
    worker.kill()
    rate(client, project_id, seed[50:], truth)
    # Label Studio's webhooks reached the backend and wait in the broker; a repeated delivery too
    worker.start()
    round1 = wait_for(lambda: whole_round(client, project_id, 1), 180, "round 1 to appear in Label Studio")
    assert len(round1) == BATCH
    assert {t.prediction_version for t in round1} == {"sunflower-v1"}  # pushed WITH the new model's predictions
    # opening a task asks /predict (through basic auth) for a task without a prediction of the current model
    client.sdk.actions.create(id="retrieve_tasks_predictions", project=project_id)
    first = next(t for t in client.iter_tasks(project_id) if t.id == seed[0].id)
    assert first.prediction_version == "sunflower-v1"

    rate(client, project_id, round1, truth)
    round2 = wait_for(lambda: whole_round(client, project_id, 2), 180, "round 2 to appear in Label Studio")
    assert len(round2) == BATCH and {t.prediction_version for t in round2} == {"sunflower-v2"}

    # every annotation's webhook reached the backend (through basic auth being on) and was queued
    access_log = backend.log.read_text()
    assert access_log.count('"POST /webhook HTTP/1.1" 202') >= 2 * BATCH, access_log[-2000:]
    assert '"POST /webhook HTTP/1.1" 401' not in access_log
    worker_log = worker.log.read_text()  # mid-round ratings were recorded straight from the webhook payloads
    assert worker_log.count("to rate (from the webhook)") >= BATCH, worker_log[-3000:]
    for secret in (settings.basic_auth_pass, settings.webhook_secret, settings.label_studio_api_key):
        assert secret not in access_log and secret not in worker_log  # secrets never reach the logs

    # nothing lost, nothing duplicated
    tasks = list(client.iter_tasks(project_id))
    images = Counter(t.data[IMAGE_ID] for t in tasks)
    assert len(tasks) == 3 * BATCH and max(images.values()) == 1
    session = Workspace(ws.root).sessions.open(CONCEPT)
    labels = session.labels()
    assert len(labels) == 2 * BATCH and all(labels[i] == truth[i] for i in labels)
    assert [m["name"] for m in session.models()] == ["sunflower-v1", "sunflower-v2"]

    # the same model quality as the engine's own simulation, for the same concept and seed
    sim = simulate_session(
        suite_concept, SimulationContext.build(shared_data), tmp_path / "sim", rounds=1, batch_size=BATCH, seed=0
    )
    test_truth = suite_concept.ground_truth(shared_data.test)
    via_label_studio = Workspace(ws.root).registry(CONCEPT).get("sunflower-v2").load()
    ours = binary_metrics(test_truth, via_label_studio.predict_proba(shared_data.test.x.astype(np.float32)), 0.5)
    assert ours.auc_pr == pytest.approx(sim.rounds[1].metrics["auc_pr"], abs=1e-6)
    assert ours.auc_pr > 0.9


def test_repeated_and_lost_webhooks_change_nothing(tmp_path, label_studio, shared_data, suite_concept):
    """Syncs driven by hand (no worker): repeats are no-ops; a lost webhook is caught up by the next sync."""
    from sync.settings import Settings

    ws = shared_workspace(tmp_path / "ws", shared_data)
    spec = next(s for s in load_suite() if s.title == "real stop signs")
    ws.sessions.create(spec.concept())
    settings = Settings(
        label_studio_url=label_studio.url,
        label_studio_api_key=label_studio.credentials.token,
        workspace=ws.root,
        label_config="rating-note",
        prefetch=0.0,
    )  # the paper's rounds
    sync = ConceptSync(settings)
    report = sync.publish(spec.concept().name, seed_size=20, batch_size=10)
    again = sync.publish(spec.concept().name, seed_size=20, batch_size=10)
    assert report.pushed == 20 and again.pushed == 0
    truth = spec.ground_truth(shared_data.pool)
    rate(sync.client, report.project_id, list(sync.client.iter_tasks(report.project_id))[:19], truth)
    assert sync.sync(spec.concept().name).new_labels == 19
    assert sync.sync(spec.concept().name).new_labels == 0  # the same events again
    session = sync.workspace.sessions.open(spec.concept().name)
    # the user deletes one annotation and changes another: the labels follow the server
    rated = [t for t in sync.client.iter_tasks(report.project_id) if t.annotations]
    sync.client.sdk.annotations.delete(id=rated[0].annotations[0].id)
    schema = parse_rating_config(sync.client.project_label_config(report.project_id))
    flipped = 1 - int(truth[rated[1].data[IMAGE_ID]])
    sync.client.sdk.annotations.update(id=rated[1].annotations[0].id, result=schema.rating(flipped))
    assert sync.sync(spec.concept().name).new_labels == 2
    labels = session.labels()
    assert rated[0].data[IMAGE_ID] not in labels and labels[rated[1].data[IMAGE_ID]] == flipped and len(labels) == 18
    assert sync.sync(spec.concept().name).new_labels == 0
    # rated again, with a note (the rating-note config): the reasoning is kept with the label
    sync.client.create_annotation(rated[0].id, schema.rating(int(truth[rated[0].data[IMAGE_ID]]), "octagon, red"))
    last = open_tasks(sync.client, report.project_id)
    rate(sync.client, report.project_id, last, truth)  # its webhook is "lost": nobody is listening
    done = sync.sync(spec.concept().name)  # the periodic sync catches up
    assert done.new_labels == 2 and done.trained == "stop-sign-v1" and done.pushed == 10 and done.round == 1
    assert sync.sync(spec.concept().name).pushed == 0
    assert len(list(sync.client.iter_tasks(report.project_id))) == 30
    assert [label.note for label in session.label_history() if label.image_id == rated[0].data[IMAGE_ID]][
        -1
    ] == "octagon, red"
    # a forced retrain mid-round: a new version, and the open tasks get its predictions
    forced = sync.retrain(spec.concept().name)
    assert forced.trained == "stop-sign-v2" and forced.refreshed == 10 and forced.pushed == 0
    open_now = open_tasks(sync.client, report.project_id)
    assert len(open_now) == 10 and {t.prediction_version for t in open_now} == {"stop-sign-v2"}
