"""The same loop with Celery over a real Redis server: the distributed set-up's code path."""

import subprocess
import sys

import pytest

from agile_cli.services import service_env
from agile_modeling.simulate import load_suite
from sync.client import LabelStudioClient
from sync.rounds import IMAGE_ID, ROUND
from sync.state import SyncState
from tests.sync.conftest import REPO, wait_for
from tests.sync.test_label_studio_loop import open_tasks, rate, shared_workspace

pytestmark = pytest.mark.slow


def test_webhook_driven_round_over_redis(tmp_path, label_studio, services, redis_url, shared_data):
    import redis

    spec = next(s for s in load_suite() if s.title == "cats")
    ws = shared_workspace(tmp_path / "ws", shared_data)
    ws.sessions.create(spec.concept())
    settings, backend, worker = services(ws.root, sync_seconds=600, broker_url=redis_url)
    published = subprocess.run(
        [
            sys.executable,
            "-m",
            "agile_cli",
            "concept",
            "publish",
            spec.concept().name,
            "--size",
            "20",
            "--batch-size",
            "10",
        ],
        capture_output=True,
        text=True,
        env=service_env(settings),
        cwd=REPO,
        timeout=300,
    )
    assert published.returncode == 0 and "published 'cat' as project" in published.stdout, published.stderr
    project_id = SyncState(ws.root / "label_studio.sqlite").for_concept("cat").project_id
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    rate(client, project_id, list(client.iter_tasks(project_id)), spec.ground_truth(shared_data.pool))
    round1 = wait_for(
        lambda: [t for t in open_tasks(client, project_id) if t.data[ROUND] == 1], 120, "round 1 over the Redis broker"
    )
    assert len(round1) == 10 and {t.prediction_version for t in round1} == {"cat-v1"}
    assert not (ws.root / "broker" / "queue").exists() or not any((ws.root / "broker" / "queue").iterdir())
    assert redis.Redis.from_url(redis_url).dbsize() > 0  # the messages went through Redis
    assert len({t.data[IMAGE_ID] for t in client.iter_tasks(project_id)}) == 30
