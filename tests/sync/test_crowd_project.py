"""A crowd project on a real Label Studio: three annotator accounts, majority vote from the server's data."""

import pytest

from agile_cli.services import service_env
from agile_modeling.crowd import Vote, majority_vote
from agile_modeling.workspace import Workspace
from label_config import parse_rating_config
from sync.crowd import CROWD
from sync.rounds import IMAGE_ID
from sync.state import SyncState
from tests.sync.conftest import run_agile

pytestmark = pytest.mark.slow


def test_three_annotators_majority_vote_from_the_server(manual_loop):
    loop = manual_loop("cats")
    ws, sync, truth = loop.workspace, loop.sync, loop.truth
    loop.rate_open_tasks()  # the user rates the seed
    sync.sync("cat")
    env = service_env(loop.settings)

    first = run_agile("concept", "crowd", "cat", env=env)
    assert first.returncode == 0, first.stderr
    crowd_project = SyncState(ws.root / "label_studio.sqlite").for_concept("cat", CROWD).project_id
    assert f"crowd project {crowd_project}" in first.stdout and "(30 new tasks, 3 annotators per task)" in first.stdout
    instructions = sync.client.sdk.projects.get(id=crowd_project).expert_instruction
    assert "cat" in instructions and "<img" in instructions  # description and the user's examples

    annotators = [sync.client.create_user(f"rater{k}", f"rater{k}@agile.local") for k in range(3)]
    schema = parse_rating_config(sync.client.project_label_config(crowd_project))
    tasks = [t for t in sync.client.iter_tasks(crowd_project) if t.data["agile_round"] == 0]
    votes = []
    for n, task in enumerate(tasks):
        image_id = task.data[IMAGE_ID]
        answers = [int(truth[image_id]), int(truth[image_id]), 1 - int(truth[image_id])]  # rater2 disagrees
        if n == 0:
            answers = answers[:2]  # a task with only two votes
        for user, value in zip(annotators, answers):
            sync.client.create_annotation(task.id, schema.rating(value), completed_by=user)
            votes.append(Vote(image_id, str(user), value, time=float(n)))
        if n == 1:  # rater0 votes twice on the same task, changing their mind: only the latest counts
            sync.client.create_annotation(task.id, schema.rating(1 - int(truth[image_id])), completed_by=annotators[0])
            votes.append(Vote(image_id, str(annotators[0]), 1 - int(truth[image_id]), time=99.0))

    pulled = run_agile("concept", "crowd", "cat", env=env)
    assert pulled.returncode == 0, pulled.stderr
    expected = majority_vote(votes)
    decided = {i: r.value for i, r in expected.items() if r.status == "decided"}
    assert f"majority for {len(decided)}, 0 ties, {1 + 10} with too few votes" in pulled.stdout  # + round 1 unrated
    labels = Workspace(ws.root).sessions.open("cat").labels(CROWD)
    assert labels == decided and len(decided) == 19
    assert decided[tasks[1].data[IMAGE_ID]] == 1 - int(truth[tasks[1].data[IMAGE_ID]])  # rater0 flipped, rater2 agreed
    assert f"annotator {annotators[2]}: 19 votes, agrees with the majority 5%, 0% with the user on 19" in pulled.stdout
    assert "with the user on 20" in pulled.stdout
    again = run_agile("concept", "crowd", "cat", env=env)
    assert "0 crowd labels changed" in again.stdout and "(0 new tasks" in again.stdout

    trained = run_agile("concept", "train", "cat", "--labels", "crowd", "--batch-size", "10", env=env)
    assert trained.returncode == 0 and "on 19 labels" in trained.stdout, trained.stderr
    both = run_agile("concept", "train", "cat", "--labels", "user+crowd", "--batch-size", "10", env=env)
    assert "on 20 labels" in both.stdout  # the crowd's 19 images are all among the user's 20: the user wins
