"""Scale-out over real Celery workers: webhook-driven rounds whose pool scoring is a chord of shard
tasks (real Label Studio, the backend under gunicorn, workers over a real redis-server or the default
folder broker) select exactly the single-process batch and never deadlock; embedding fans out across
workers and resumes."""

import time

import numpy as np
import pytest

from agile_cli.services import service_env, worker_command
from agile_modeling.concepts import slugify
from agile_modeling.loop import LoopConfig, SelectionRequest
from agile_modeling.simulate import load_suite
from agile_modeling.workspace import Workspace
from sync.client import LabelStudioClient
from sync.rounds import IMAGE_ID, ROUND
from sync.settings import Settings
from sync.state import SyncState
from tests.sync.conftest import REPO, Service, run_agile, wait_for
from tests.sync.test_label_studio_loop import rate, shared_workspace

pytestmark = pytest.mark.slow


def start_workers(tmp_path, workspace, redis_url, n: int) -> list[Service]:
    settings = Settings(workspace=workspace, broker_url=redis_url, prefetch=0.0)  # the paper's rounds
    env = {**service_env(settings), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return [
        Service(worker_command(beat=False) + ["-n", f"w{i}@%h"], env, tmp_path / f"worker{i}.log").start()
        for i in range(n)
    ]


@pytest.fixture
def celery_env(redis_url, tmp_path):
    """This process's Celery app on the test's Redis (what the backend or the CLI would use)."""
    from sync.celery_app import make_celery

    app = make_celery(Settings(workspace=tmp_path, broker_url=redis_url))
    yield app
    app.close()


def in_process_batch(ws_root, concept: str, round_index: int, batch_size: int, strategy: str) -> list[int]:
    """What single-process selection picks for ``round_index`` from the same labels and model."""
    ws = Workspace(ws_root)
    session = ws.sessions.open(concept)
    loop = ws.loop(concept, LoopConfig(batch_size=batch_size, strategy=strategy))
    model = [v for v in loop.registry.versions() if v.info.get("round") == round_index - 1][-1]
    queued = sorted({i for r in range(round_index) for i in session.batch(r)})
    exclude = np.union1d(queued, list(loop.labels())).astype(np.int64)
    return loop.select(model.load(), SelectionRequest(round_index, strategy, batch_size, exclude)).tolist()


def publish(spec, settings, strategy: str, seed_size: int = 20, batch_size: int = 10) -> int:
    out = run_agile(
        "concept",
        "publish",
        spec.concept().name,
        "--size",
        str(seed_size),
        "--batch-size",
        str(batch_size),
        "--strategy",
        strategy,
        env=service_env(settings),
    )
    assert out.returncode == 0, out.stderr
    return SyncState(settings.workspace / "label_studio.sqlite").for_concept(slugify(spec.concept().name)).project_id


def round_tasks(client, project_id: int, round_index: int) -> list:
    return sorted((t for t in client.iter_tasks(project_id) if t.data[ROUND] == round_index), key=lambda t: t.id)


def concept_log_lines(slug: str, *logs) -> str:
    """What the workers logged about ``slug`` (the story of a failed assertion)."""
    return "\n".join(line for log in logs for line in log.read_text().splitlines() if f"{slug}:" in line)


def test_webhook_driven_sharded_rounds_of_two_concepts_on_two_workers(
    tmp_path, label_studio, services, redis_url, shared_data, monkeypatch
):
    """Two concepts' rounds at once on 2 solo workers over Redis, pool scoring sharded: no task waits
    for another, both rounds complete, and each batch is exactly the single-process selection. A third
    concept's strategy (margin+coverage) does not split by shard: its worker selects it whole, exactly."""
    specs = {s.title: s for s in load_suite() if s.title in ("cats", "real stop signs", "sunflowers")}
    ws = shared_workspace(tmp_path / "ws", shared_data)
    for spec in specs.values():
        ws.sessions.create(spec.concept())
    settings, backend, worker = services(
        ws.root,
        sync_seconds=600,
        broker_url=redis_url,  # webhooks drive it
        sharded_scoring=True,
        shard_rows=6000,
    )  # the shared pool in 7 pieces
    env = {**service_env(settings), "PYTHONPATH": str(REPO), "AGILE_SYNC_SECONDS": "600"}
    second = Service(worker_command(beat=False) + ["-n", "second@%h"], env, tmp_path / "worker2.log").start()
    try:
        # margin+coverage does not split by shard: the worker selects it in one process, exactly the same
        strategies = {"cats": "margin", "real stop signs": "margin+positive", "sunflowers": "margin+coverage"}
        projects = {title: publish(spec, settings, strategies[title]) for title, spec in specs.items()}
        client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
        seeds = {title: list(client.iter_tasks(pid)) for title, pid in projects.items()}
        for title, pid in projects.items():  # the last ratings of both seed batches land together
            rate(client, pid, seeds[title][:-1], specs[title].ground_truth(shared_data.pool))
        for title, pid in projects.items():
            rate(client, pid, seeds[title][-1:], specs[title].ground_truth(shared_data.pool))
        for title, pid in projects.items():
            wait_for(
                lambda pid=pid: len(round_tasks(client, pid, 1)) == 10, 180, f"round 1 of {title!r} on the workers"
            )
        for title, pid in projects.items():
            slug = slugify(specs[title].concept().name)
            pushed = round_tasks(client, pid, 1)
            expected = in_process_batch(ws.root, slug, 1, 10, strategies[title])
            assert Workspace(ws.root).sessions.open(slug).batch(1) == expected, title
            assert [t.data[IMAGE_ID] for t in pushed] == expected, title  # pushed in the batch's order
            assert {t.prediction_version for t in pushed} == {f"{slug}-v1"}, (  # with the new model's predictions
                concept_log_lines(slug, worker.log, tmp_path / "worker2.log")
            )
            # a later sync (the beat's, a repeated webhook) changes nothing
            again = run_agile("concept", "sync", specs[title].concept().name, env=service_env(settings))
            assert again.returncode == 0 and "pushed" not in again.stdout, again.stdout + again.stderr
            assert len(list(client.iter_tasks(pid))) == 30
    finally:
        second.stop()
    logs = worker.log.read_text(), (tmp_path / "worker2.log").read_text()
    assert all("agile.score_shard" in log for log in logs)  # the shards were spread over both workers
    assert sum(log.count("agile.finish_selection") for log in logs) >= 2
    assert not any("result.get() within a task" in log or "Traceback" in log for log in logs), logs


def test_sharded_round_over_the_default_folder_broker(tmp_path, label_studio, services, shared_data, monkeypatch):
    """The embedded default: filesystem broker, file:// results (the chord polls with
    ``celery.chord_unlock``), one solo worker with a frequent beat syncing while the chord runs."""
    spec = next(s for s in load_suite() if s.title == "cats")
    ws = shared_workspace(tmp_path / "ws", shared_data)
    ws.sessions.create(spec.concept())
    settings, backend, worker = services(ws.root, sync_seconds=2, sharded_scoring=True, shard_rows=10000)
    project_id = publish(spec, settings, "margin")
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    rate(client, project_id, list(client.iter_tasks(project_id)), spec.ground_truth(shared_data.pool))
    wait_for(lambda: len(round_tasks(client, project_id, 1)) == 10, 180, "round 1 over the folder broker")
    time.sleep(5)  # a few more periodic syncs: none pushes anything again
    assert [t.data[IMAGE_ID] for t in round_tasks(client, project_id, 1)] == in_process_batch(
        ws.root, "cat", 1, 10, "margin"
    )
    assert len(list(client.iter_tasks(project_id))) == 30
    log = worker.log.read_text()
    assert "celery.chord_unlock" in log and "agile.finish_selection" in log
    assert "result.get() within a task" not in log and "Traceback" not in log, log[-3000:]


def test_embedding_fans_out_over_workers_and_resumes(tmp_path, celery_env, redis_url, image_folder, tiny_clip):
    from agile_modeling.encoders import OpenClipSpec
    from sync.sharded import fan_out_embedding

    ws = Workspace(tmp_path / "ws")
    ws.image_encoder(OpenClipSpec(model="ViT-S-32", pretrained=None))  # recorded: workers load the same model
    ws.store(tiny_clip.dim, tiny_clip.name)
    uris = sorted(str(p) for p in image_folder.iterdir())
    workers = start_workers(tmp_path, ws.root, redis_url, 2)
    try:
        first = fan_out_embedding(ws.root, uris[:6], celery_env, chunk=2, timeout=300, progress=False)
        second = fan_out_embedding(
            ws.root, uris, chunk=3, timeout=300, progress=False, app=celery_env
        )  # resumes: 6 already there
    finally:
        for w in workers:
            w.stop()
    store = Workspace(ws.root).store()
    good = [u for u in uris if u.endswith((".png", ".jpg")) and "broken" not in u]
    assert len(store) == len(good) == 8
    assert first["added"] + second["added"] == 8 and second["already_present"] >= 4
    assert sorted(u for u, _ in second["skipped"]) == sorted(set(uris) - set(good))
    ids = store.ids_of_uris(good)
    expected = tiny_clip.encode_images([__import__("PIL.Image").Image.open(u).convert("RGB") for u in good])
    got = store.vectors().take([ids[u] for u in good]).astype(np.float32)
    # the workers' model is the same seeded model, in the precision their CPU runs fastest (same space)
    assert ((got * expected).sum(1) / np.linalg.norm(got, axis=1)).min() >= 0.999
