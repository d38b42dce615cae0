"""Faults injected, then nothing lost: a sync killed while training and while pushing a batch, webhooks
reordered and late, and Label Studio down while the worker has work (it backs off and catches up)."""

import os
import signal

import pytest

from agile_cli.services import service_env, worker_command
from agile_modeling.simulate import load_suite
from label_config import parse_rating_config
from ml_backend.requests import annotation_event
from sync.client import LabelStudioClient
from sync.purposes import sync_project
from sync.rounds import IMAGE_ID, ConceptSync
from sync.server import LabelStudioServer
from sync.settings import Settings
from tests.conftest import label_studio_venv
from tests.sync.conftest import REPO, Service, run_agile, wait_for
from tests.sync.test_label_studio_loop import open_tasks, rate, shared_workspace

pytestmark = pytest.mark.slow


def images_of(client, project_id):
    return [t.data[IMAGE_ID] for t in client.iter_tasks(project_id)]


def test_a_sync_killed_while_training_and_while_pushing_loses_nothing(manual_loop):
    loop = manual_loop("real stop signs", seed_size=20, batch_size=80)
    sync, ws, name = loop.sync, loop.workspace, "stop sign"
    env = service_env(loop.settings)
    loop.rate_open_tasks()
    session = ws.sessions.open(name)

    killed = run_agile("concept", "sync", name, env={**env, "AGILE_FAULT_POINT": "training:3"})
    assert killed.returncode == -signal.SIGKILL  # died in the 3rd epoch of training
    assert len(session.labels()) == 20 and session.current_round() == 0  # labels recorded before it died
    assert ws.registry(name).versions() == []

    killed = run_agile("concept", "sync", name, env={**env, "AGILE_FAULT_POINT": "push:1"})
    assert killed.returncode == -signal.SIGKILL  # died after importing the first 50 tasks of round 1
    assert [v.name for v in ws.registry(name).versions()] == ["stop-sign-v1"] and session.current_round() == 1
    assert len(images_of(sync.client, loop.project_id)) == 20 + 50

    done = run_agile("concept", "sync", name, env=env)
    assert done.returncode == 0, done.stderr
    images = images_of(sync.client, loop.project_id)
    assert len(images) == len(set(images)) == 100  # the other 30 pushed, none twice
    assert sorted(images[20:]) == sorted(session.batch(1))
    assert [v.name for v in ws.registry(name).versions()] == ["stop-sign-v1"]  # the saved model was reused
    assert len(session.labels()) == 20


def test_reordered_and_late_webhooks_end_at_the_servers_state(manual_loop):
    loop = manual_loop("real stop signs", seed_size=20, batch_size=10)
    sync, client = loop.sync, loop.sync.client
    schema = parse_rating_config(client.project_label_config(loop.project_id))
    task = open_tasks(client, loop.project_id)[0]
    image = task.data[IMAGE_ID]
    first = client.create_annotation(task.id, schema.rating(1))
    client.sdk.annotations.update(id=first, result=schema.rating(0))
    server = {t.data[IMAGE_ID]: t for t in client.iter_tasks(loop.project_id)}[image].annotations[0]

    def event(value: int, updated_at: str) -> dict:
        body = {
            "action": "ANNOTATION_UPDATED",
            "task": {"id": task.id, "data": task.data},
            "annotation": {
                "id": first,
                "result": schema.rating(value),
                "completed_by": 1,
                "updated_at": updated_at,
                "lead_time": 1.0,
            },
        }
        return annotation_event(body)

    older = "2020-01-01T00:00:00.000000Z"
    sync_project(sync, loop.project_id, event=event(0, server.updated_at))  # the newest state arrives first
    sync_project(sync, loop.project_id, event=event(1, older))  # the first version arrives late
    sync_project(sync, loop.project_id, event=event(1, older))  # ... and again
    session = loop.workspace.sessions.open("stop sign")
    assert session.labels()[image] == 0  # the server's state, not the last delivery
    sync.sync("stop sign")
    assert session.labels() == {image: 0}


def test_label_studio_down_while_the_worker_has_work(tmp_path, shared_data):
    """The worker finds Label Studio unreachable, backs off, and completes the round once it is back."""
    venv = label_studio_venv()
    server = LabelStudioServer(tmp_path / "ls", venv=venv).start()
    ws = shared_workspace(tmp_path / "ws", shared_data)
    spec = next(s for s in load_suite() if s.title == "real stop signs")
    ws.sessions.create(spec.concept())
    settings = Settings(
        label_studio_url=server.url, label_studio_api_key=server.credentials.token, workspace=ws.root, prefetch=0.0
    )
    sync = ConceptSync(settings, ws)
    project = sync.publish(spec.concept().name, seed_size=20, batch_size=10).project_id
    client = LabelStudioClient(server.url, server.credentials.token)
    rate(client, project, open_tasks(client, project), spec.ground_truth(shared_data.pool))
    server.stop()  # Label Studio goes away ...

    env = {**service_env(settings), "AGILE_SYNC_SECONDS": "600", "PYTHONPATH": str(REPO)}
    worker = Service(worker_command(beat=False), env, tmp_path / "worker.log").start()
    try:
        from sync.celery_app import make_celery

        app = make_celery(settings)
        app.send_task("agile.sync_project", args=(project, None, None))  # ... while the worker has work
        wait_for(
            lambda: (tmp_path / "worker.log").read_text().count("retrying in") >= 3,
            120,
            "the worker to retry with backoff",
        )
        log = (tmp_path / "worker.log").read_text()
        assert "retrying in 1 s" in log and "retrying in 2 s" in log and "cannot reach Label Studio" in log
        server = LabelStudioServer(tmp_path / "ls", port=server.port, venv=venv).start()  # back, same data
        client = LabelStudioClient(server.url, server.credentials.token)
        wait_for(lambda: len(images_of(client, project)) == 30, 240, "round 1 after Label Studio came back")
        images = images_of(client, project)
        assert len(set(images)) == 30
    finally:
        worker.stop()
        server.stop()
    assert len(ws.sessions.open(spec.concept().name).labels()) == 20


def test_a_celery_worker_killed_mid_push_is_replaced_and_the_round_completes(tmp_path, manual_loop):
    """The real worker, SIGKILLed by the fault point while pushing round 1; a new worker finishes it."""
    loop = manual_loop("real stop signs", seed_size=20, batch_size=80)
    env = {**service_env(loop.settings), "AGILE_SYNC_SECONDS": "2", "PYTHONPATH": str(REPO)}
    loop.rate_open_tasks()  # no worker yet: these ratings wait for the periodic sync
    doomed = Service(worker_command(beat=True), {**env, "AGILE_FAULT_POINT": "push:1"}, tmp_path / "doomed.log").start()
    wait_for(lambda: doomed.process.poll() is not None, 180, "the worker to die mid-push")
    assert doomed.process.returncode == -signal.SIGKILL
    try:  # its embedded beat child lives on in the process group: a dead worker's beat must not linger
        os.killpg(doomed.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    client = loop.sync.client
    assert len(images_of(client, loop.project_id)) == 70
    worker = Service(worker_command(beat=True), env, tmp_path / "worker.log").start()
    try:
        wait_for(lambda: len(images_of(client, loop.project_id)) == 100, 180, "the new worker to finish the round")
    finally:
        worker.stop()
    images = images_of(client, loop.project_id)
    session = loop.workspace.sessions.open("stop sign")
    assert len(set(images)) == 100 and sorted(images[20:]) == sorted(session.batch(1))
    assert len(session.labels()) == 20 and [v.name for v in loop.workspace.registry("stop sign").versions()] == [
        "stop-sign-v1"
    ]
