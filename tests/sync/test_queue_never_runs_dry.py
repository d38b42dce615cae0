"""The next batch arrives before the rater's queue runs dry (issue 14, item 2), through the real
worker, backend and Label Studio: webhooks only, the default ``AGILE_PREFETCH`` of 0.5, and Label
Studio's own label stream (``/api/projects/<id>/next``, what its "Label All Tasks" button serves)
continuing from the old batch into the new one without the user navigating."""

from __future__ import annotations

import httpx
import pytest

from label_config import parse_rating_config
from sync.client import LabelStudioClient
from sync.rounds import IMAGE_ID, ROUND
from sync.settings import Settings
from sync.state import SyncState
from tests.sync.conftest import run_agile, wait_for
from tests.sync.test_label_studio_loop import shared_workspace

pytestmark = pytest.mark.slow

SEED, BATCH = 20, 10


def next_in_stream(label_studio, project_id: int) -> dict | None:
    """The task Label Studio's label stream shows the user next (None: "No More Tasks")."""
    reply = httpx.get(
        f"{label_studio.url}/api/projects/{project_id}/next",
        headers={"Authorization": f"Token {label_studio.credentials.token}"},
        timeout=30,
    )
    return reply.json() if reply.status_code == 200 else None


def test_the_next_batch_is_in_the_stream_before_the_last_one_is_rated(tmp_path, label_studio, services, shared_data):
    assert Settings.from_env().prefetch == 0.5  # what `agile up` and the compose stack run with
    ws = shared_workspace(tmp_path / "ws", shared_data)
    settings, _, _ = services(ws.root, sync_seconds=600, prefetch=Settings.from_env().prefetch)
    from agile_cli.services import service_env

    out = run_agile(
        "concept", "new", "stop sign", "--size", str(SEED), "--batch-size", str(BATCH), env=service_env(settings)
    )
    assert out.returncode == 0, out.stderr
    project = SyncState(ws.root / "label_studio.sqlite").for_concept("stop-sign").project_id
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)
    schema = parse_rating_config(client.project_label_config(project))

    def rate_from_stream(n: int) -> list[dict]:
        """Rate ``n`` tasks in the order the label stream serves them (the rating: the id's parity)."""
        rated = []
        for _ in range(n):
            task = next_in_stream(label_studio, project)
            assert task is not None, "the label stream ran dry"
            client.create_annotation(task["id"], schema.rating(task["data"][IMAGE_ID] % 2), lead_time=1.0)
            rated.append(task)
        return rated

    # the seed: after 15 of 20 ratings, only half a batch (5) is open: round 1 is selected and pushed
    seed_rated = rate_from_stream(SEED - BATCH // 2)
    assert {t["data"][ROUND] for t in seed_rated} == {0}
    wait_for(lambda: any(t.data[ROUND] == 1 for t in client.iter_tasks(project)), 180, "round 1 to be pushed early")
    tasks = list(client.iter_tasks(project))
    open_seed = [t for t in tasks if t.data[ROUND] == 0 and not t.annotations]
    assert len(open_seed) == BATCH // 2 and len([t for t in tasks if t.data[ROUND] == 1]) == BATCH

    # the stream finishes the seed first, then goes on into round 1 by itself
    rest = rate_from_stream(BATCH // 2 + 1)
    assert [t["data"][ROUND] for t in rest] == [0] * (BATCH // 2) + [1]
    session = ws.sessions.open("stop sign")
    wait_for(lambda: len(session.labels()) == SEED + 1, 120, "the worker to record every rating")
    models = session.models()
    assert models[0]["num_labels"] == SEED - BATCH // 2  # the model that chose round 1 saw 15 ratings
    assert session.rounds()[1].batch and not set(session.rounds()[1].batch) & set(session.batch(0))
