"""Scale-out over real Celery workers and a real redis-server: sharded pool scoring merges to exactly
the single-process selection, and embedding fans out across workers and resumes."""


import numpy as np
import pytest

from agile_cli.services import service_env, worker_command
from agile_modeling.concepts import Concept
from agile_modeling.loop import LoopConfig
from agile_modeling.simulate.shared_pool import SHARED_ENCODER
from agile_modeling.workspace import Workspace
from sync.settings import Settings
from tests.sync.conftest import REPO, Service

pytestmark = pytest.mark.slow


def start_workers(tmp_path, workspace, redis_url, n: int) -> list[Service]:
    settings = Settings(workspace=workspace, broker_url=redis_url)
    env = {**service_env(settings), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}
    return [Service(worker_command(beat=False) + ["-n", f"w{i}@%h"], env, tmp_path / f"worker{i}.log").start()
            for i in range(n)]


@pytest.fixture
def celery_env(redis_url, tmp_path):
    """This process's Celery app on the test's Redis (what the backend or the CLI would use)."""
    from sync.celery_app import make_celery

    app = make_celery(Settings(workspace=tmp_path, broker_url=redis_url))
    yield app
    app.close()


def test_sharded_selection_over_workers_equals_one_process(tmp_path, shared_data, celery_env, redis_url):
    ws = Workspace(tmp_path / "ws")
    store = ws.store(512, SHARED_ENCODER)
    x = shared_data.pool.x
    bounds = [0, 9000, 20000, 31000, len(x)]  # four shards of the store
    for a, b in zip(bounds[:-1], bounds[1:]):
        store.append(x[a:b], [f"shared://{i}" for i in range(a, b)], [f"h{i}" for i in range(a, b)])
    assert [o for _, o, _ in store.shard_files()] == bounds[:-1]
    ws.set_config(text_vocabulary=str(shared_data.root / "text_vocabulary.npz"))
    ws.sessions.create(Concept("dog"))
    truth = np.array([shared_data.pool.class_name(i) == "pug" for i in range(len(x))])
    workers = start_workers(tmp_path, ws.root, redis_url, 2)
    try:
        for strategy in ("margin", "margin+positive"):
            loop = ws.loop("dog", LoopConfig(seed_size=40, batch_size=30, strategy=strategy))
            batch = loop.start()
            loop.session.record_labels((i, int(truth[i]) or int(i % 3 == 0)) for i in batch)
            version, clf = loop.train()
            from sync.sharded import CelerySelector

            selector = CelerySelector.for_workspace(ws, "dog", app=celery_env)
            exclude = np.union1d(loop.session.queued_ids(), list(loop.labels())).astype(np.int64)
            distributed = selector(version.name, strategy, 30, exclude)
            from agile_modeling.scoring import PoolScorer
            from agile_modeling.selection import strategy_by_name

            scorer, view = PoolScorer(clf), ws.store().vectors()
            single = strategy_by_name(strategy).select(scorer.approximate_logits(view), 30, exclude,
                                                       lambda ids: scorer.exact_logits(view, ids))
            assert distributed.tolist() == single.tolist(), strategy
            # the loop itself, with the selector plugged in, records the same round
            loop.selector = selector
            assert loop.next_batch(clf, version=version.name) == single.tolist()
            ws.sessions.db.execute("DELETE FROM batch_items WHERE concept = 'dog' AND round > 0")
            ws.sessions.db.execute("DELETE FROM rounds WHERE concept = 'dog' AND round > 0")
    finally:
        for w in workers:
            w.stop()
    logs = "".join((tmp_path / f"worker{i}.log").read_text() for i in range(2))
    assert logs.count("agile.score_shard") >= 8  # 2 strategies x 4 shards, spread over the workers


def test_embedding_fans_out_over_workers_and_resumes(tmp_path, celery_env, redis_url, image_folder, tiny_clip):
    from agile_modeling.encoders import OpenClipSpec
    from sync.sharded import fan_out_embedding

    ws = Workspace(tmp_path / "ws")
    ws.image_encoder(OpenClipSpec(model="ViT-S-32", pretrained=None))  # recorded: workers load the same model
    ws.store(tiny_clip.dim, tiny_clip.name)
    uris = sorted(str(p) for p in image_folder.iterdir())
    workers = start_workers(tmp_path, ws.root, redis_url, 2)
    try:
        first = fan_out_embedding(ws.root, uris[:6], chunk=2, timeout=300, progress=False, app=celery_env)
        second = fan_out_embedding(ws.root, uris, chunk=3, timeout=300, progress=False, app=celery_env)  # resumes: 6 already there
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
    assert np.allclose(got, expected, atol=2e-3)  # the workers' model is the same seeded model
