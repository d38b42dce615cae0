"""An evaluation set published to a real Label Studio, rated through the API, and the report."""

import numpy as np
import pytest

from agile_cli.services import service_env
from agile_modeling.evaluation import strata_of, url_hashes
from agile_modeling.metrics import binary_metrics
from agile_modeling.quality import pool_probabilities
from agile_modeling.session import EVALUATION
from sync.rounds import IMAGE_ID
from sync.state import SyncState
from tests.sync.conftest import run_agile
from tests.sync.test_label_studio_loop import rate

pytestmark = pytest.mark.slow


def test_evaluation_set_ratings_measure_models_and_never_train_them(tmp_path, manual_loop, shared_data):
    loop = manual_loop("real stop signs")
    ws, sync, truth, project_id = loop.workspace, loop.sync, loop.truth, loop.project_id
    for _ in range(2):  # seed, then round 1: two model versions
        loop.rate_open_tasks()
        sync.sync("stop sign")
    session = ws.sessions.open("stop sign")
    user_labels = session.labels()
    assert [m["name"] for m in session.models()] == ["stop-sign-v1", "stop-sign-v2"] and len(user_labels) == 30

    env = service_env(loop.settings)
    published = run_agile("concept", "evaluate", "stop sign", env=env)
    assert published.returncode == 0, published.stderr
    eval_project = SyncState(ws.root / "label_studio.sqlite").for_concept("stop-sign", EVALUATION).project_id
    assert "from stop-sign-v1, stop-sign-v2" in published.stdout and eval_project != project_id
    tasks = list(sync.client.iter_tasks(eval_project))
    images = [t.data[IMAGE_ID] for t in tasks]
    assert len(images) == len(set(images)) and 20 <= len(images) <= 400
    assert not set(images) & set(session.queued_ids())  # never an image used for training
    again = run_agile("concept", "evaluate", "stop sign", env=env)
    assert "(0 new)" in again.stdout  # deterministic: the same set again

    rate(sync.client, eval_project, tasks, truth)
    report = run_agile("report", "stop sign", "--output", str(tmp_path / "report"), env=env)
    assert report.returncode == 0, report.stderr
    assert f"recorded {len(images)} new evaluation ratings" in report.stdout
    assert "| zero-shot CLIP |" in report.stdout and "| stop-sign-v2 | 1 | 30 |" in report.stdout
    assert (tmp_path / "report" / "quality.png").stat().st_size > 10_000
    rated_positives = int(truth[images].sum())
    one_sided = min(rated_positives, len(images) - rated_positives) < 10
    assert ("warning: the evaluation set has only" in report.stderr) == one_sided, (rated_positives, report.stderr)
    assert ("**Warning**" in (tmp_path / "report" / "report.md").read_text()) == one_sided

    assert fresh_session(ws).labels() == user_labels  # evaluation ratings train nothing
    clf = ws.registry("stop sign").get("stop-sign-v2").load()
    ids = np.array(sorted(images))
    expected = binary_metrics(
        truth[ids].astype(int), clf.predict_proba(shared_data.pool.x[ids].astype(np.float32)), 0.5
    )
    assert f"| stop-sign-v2 | 1 | 30 | 1.0 | {expected.auc_pr:.3f} |" in report.stdout  # 30 ratings x 2 s lead time
    # every stratum of v2's scores contributed its 20 lowest-hash candidates (or all it had)
    version = ws.registry("stop sign").get("stop-sign-v2")
    probs = pool_probabilities([version], ws.store().vectors())["stop-sign-v2"]
    hashes = url_hashes(ws.store().uris(range(len(probs))))
    candidate = np.ones(len(probs), bool)
    candidate[session.queued_ids()] = False
    strata = strata_of(probs)
    for s in range(10):
        members = np.flatnonzero(candidate & (strata == s))
        expected_ids = set(members[np.argsort(hashes[members], kind="stable")][:20].tolist())
        assert expected_ids <= set(images), s


def fresh_session(ws):
    """The session as another process sees it now."""
    from agile_modeling.workspace import Workspace

    return Workspace(ws.root).sessions.open("stop sign")
