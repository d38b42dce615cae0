"""The periodic sync (the worker's embedded beat) against the real Label Studio server: each project
is synced by the handler of its purpose, one failing project does not stop the others, and a task
the user deleted stays deleted."""

import uuid

import pytest

from agile_cli.services import service_env
from agile_modeling.simulate import load_suite
from label_config import parse_rating_config
from ml_backend.requests import annotation_event
from sync.crowd import CROWD, publish_crowd
from sync.purposes import sync_project
from sync.rounds import IMAGE_ID, TASK_DELETED, ConceptSync
from sync.settings import Settings
from sync.state import SyncState
from tests.sync.conftest import run_agile, wait_for
from tests.sync.test_label_studio_loop import open_tasks, rate, shared_workspace

pytestmark = pytest.mark.slow


def periods(log_path, n: int):
    """A condition: the worker's log shows at least ``n`` periodic syncs done (Celery's own line)."""

    def done() -> bool:
        text = log_path.read_text() if log_path.exists() else ""
        return sum("Task agile.sync_all[" in line and "succeeded" in line for line in text.splitlines()) >= n

    return done


def test_the_beat_records_only_crowd_majorities(tmp_path, manual_loop, services):
    loop = manual_loop("cats")
    ws, sync, truth = loop.workspace, loop.sync, loop.truth
    loop.rate_open_tasks()
    sync.sync("cat")  # the user's seed is rated: round 1 is pushed
    session = ws.sessions.open("cat")
    user_labels = session.labels()
    crowd_project, pushed = publish_crowd(sync, "cat")  # 3 annotators per task
    assert pushed == 30

    tag = uuid.uuid4().hex[:8]
    raters = [sync.client.create_user(f"beat-{tag}-{k}", f"beat-{tag}-{k}@agile.local") for k in range(4)]
    schema = parse_rating_config(sync.client.project_label_config(crowd_project))
    one_vote, two_votes, tie, majority = [
        t for t in sync.client.iter_tasks(crowd_project) if t.data["agile_round"] == 0
    ][:4]

    def vote(task, values):
        for rater, value in zip(raters, values):
            sync.client.create_annotation(task.id, schema.rating(value), completed_by=rater)

    def truth_of(task):
        return int(truth[task.data[IMAGE_ID]])

    vote(one_vote, [1])  # too few votes: the old beat made this single vote a label
    vote(two_votes, [truth_of(two_votes)] * 2)  # agreeing, but still fewer than 3
    vote(tie, [1, 0, 1, 0])  # 2-2: the old beat took the last voter's value
    vote(majority, [truth_of(majority), 1 - truth_of(majority), truth_of(majority)])

    settings, _, worker = services(ws.root, sync_seconds=1.0)
    wait_for(periods(worker.log, 4), 240, "four periodic syncs")
    assert session.labels(CROWD) == {majority.data[IMAGE_ID]: truth_of(majority)}
    assert session.labels() == user_labels  # no crowd vote ever becomes the user's rating
    assert f"crowd project {crowd_project}: 30 tasks; majority for 1, 1 ties" in worker.log.read_text()

    # a webhook from the crowd project goes through the same registry: the crowd handler, not the
    # rating one (which would take the annotator's vote for the user's rating)
    task = next(t for t in sync.client.iter_tasks(crowd_project) if t.id == one_vote.id)
    ann = task.annotations[0]
    body = {
        "action": "ANNOTATION_CREATED",
        "task": {"id": task.id, "data": task.data},
        "annotation": {
            "id": ann.id,
            "result": ann.result,
            "completed_by": ann.completed_by,
            "updated_at": ann.updated_at,
            "lead_time": 1.0,
        },
    }
    report = sync_project(ConceptSync(settings, ws), crowd_project, event=annotation_event(body))
    assert "majority for 1, 1 ties" in report.summary()
    assert session.labels() == user_labels
    assert session.labels(CROWD) == {majority.data[IMAGE_ID]: truth_of(majority)}


def test_one_deleted_project_stops_no_other_and_a_deleted_task_stays_deleted(
    tmp_path, label_studio, services, shared_data
):
    ws = shared_workspace(tmp_path / "ws", shared_data)
    suite = {s.title: s for s in load_suite()}
    cats, stop_signs = suite["cats"], suite["real stop signs"]
    publisher = Settings(
        label_studio_url=label_studio.url, label_studio_api_key=label_studio.credentials.token, workspace=ws.root
    )  # no backend: no webhooks, only the beat syncs these projects
    sync = ConceptSync(publisher, ws)
    for spec in (cats, stop_signs):  # the first concept's project is the first the beat syncs
        ws.sessions.create(spec.concept())
        sync.publish(spec.concept().name, seed_size=20, batch_size=10)
    state = SyncState(ws.root / "label_studio.sqlite")
    gone, kept = state.for_concept("cat").project_id, state.for_concept("stop-sign").project_id
    client = sync.client
    client.sdk.projects.delete(id=gone)  # the user deletes the first concept's project
    deleted = open_tasks(client, kept)[0]  # ... and one task of the second one: "not this image"
    client.sdk.tasks.delete(id=deleted.id)
    assert sync.sync("stop sign").pushed == 0  # a sync (here in-process) does not push it again

    settings, _, worker = services(ws.root, sync_seconds=1.0)
    wait_for(periods(worker.log, 3), 240, "three periodic syncs")
    remaining = list(client.iter_tasks(kept))
    assert len(remaining) == 19 and deleted.data[IMAGE_ID] not in {
        t.data[IMAGE_ID] for t in remaining
    }  # not pushed again

    rate(client, kept, remaining, stop_signs.ground_truth(shared_data.pool))
    wait_for(
        lambda: len(list(client.iter_tasks(kept))) == 29, 240, "the beat to complete round 0 without the deleted image"
    )
    session = ws.sessions.open("stop sign")
    assert session.current_round() == 1 and len(session.labels()) == 19
    assert deleted.data[IMAGE_ID] not in {t.data[IMAGE_ID] for t in client.iter_tasks(kept)}
    assert session.withdrawn_images() == {deleted.data[IMAGE_ID]: TASK_DELETED}
    assert deleted.data[IMAGE_ID] in session.batch(0)  # kept in the round's history
    assert f"sync of the rating project {gone} failed" in worker.log.read_text()  # every period, and the others went on

    status = run_agile("concept", "status", "cat", env=service_env(settings))
    assert status.returncode == 0, status.stderr
    assert f"the worker's last sync of the rating project {gone} failed" in status.stdout
    assert "was the project deleted?" in status.stdout
    status = run_agile("concept", "status", "stop sign", env=service_env(settings))
    assert "round 0 (seed): 19/20 rated, 1 withdrawn" in status.stdout and "failed" not in status.stdout
