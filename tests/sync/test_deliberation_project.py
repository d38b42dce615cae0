"""Agile Deliberation through a real Label Studio server: scoping, one borderline batch with
reasons, one refinement, and the new definition shown in the project."""

import numpy as np
import pytest

from agile_modeling.concepts import Concept
from agile_modeling.deliberation import SOURCE, DeliberationHistory
from label_config.deliberation import deliberation_label
from sync.client import LabelStudioClient
from sync.deliberation import DECISION, DELIBERATION, POSITION, SCOPING, DeliberationSync
from sync.rounds import IMAGE_ID, ConceptSync
from sync.settings import Settings
from sync.state import SyncState
from tests.sync.test_label_studio_loop import shared_workspace

pytestmark = pytest.mark.slow

WANTED = {"saxophone", "euphonium"}  # the user's private reading of "musical instrument"


def choice(name, to, value):
    return {"from_name": name, "to_name": to, "type": "choices", "value": {"choices": [value]}}


def text(name, value):
    return {"from_name": name, "to_name": "image", "type": "textarea", "value": {"text": [value]}}


def test_scoping_a_batch_with_reasons_and_a_refinement(tmp_path, label_studio, shared_data):
    ws = shared_workspace(tmp_path / "ws", shared_data)
    pool = shared_data.pool
    truth = np.array([d == "caltech101" and pool.class_name(i) in WANTED for i, d in enumerate(pool.dataset)])
    related = np.array(
        [
            d == "caltech101"
            and pool.class_name(i) in WANTED | {"accordion", "electric_guitar", "grand_piano", "mandolin"}
            for i, d in enumerate(pool.dataset)
        ]
    )
    ws.sessions.create(Concept("musical instrument", description="brass and wind instruments"))
    settings = Settings(
        label_studio_url=label_studio.url, label_studio_api_key=label_studio.credentials.token, workspace=ws.root
    )
    delib = DeliberationSync(ConceptSync(settings, ws))
    client = LabelStudioClient(label_studio.url, label_studio.credentials.token)

    # --- stage 1: the scoping project; decisions made in Label Studio --------------------------------
    report = delib.publish_scoping("musical instrument")
    assert report.pushed >= 5 and delib.publish_scoping("musical instrument").pushed == 0  # idempotent
    state = SyncState(ws.root / "label_studio.sqlite")
    scoping_project = state.for_concept("musical-instrument", SCOPING).project_id
    history = DeliberationHistory(ws.sessions.open("musical instrument"))
    items = {it.position: it for it in history.scoping()}
    expected = {}
    for task in client.iter_tasks(scoping_project):
        it = items[task.data[POSITION]]
        assert task.data["examples_html"].count("<img") == len(it.image_ids) and task.data["name"] == it.name
        ids = np.array(it.image_ids)
        wanted = "in" if truth[ids].mean() >= 0.5 else "out" if related[ids].mean() >= 0.5 else None
        decision = "discard" if wanted is None else "keep" if wanted == it.side else "flip"
        expected[it.position] = decision
        client.create_annotation(task.id, [choice("decision", "examples", decision)])
    assert delib.pull_scoping("musical instrument") == (len(items), len(items))
    assert {it.position: it.decision for it in history.scoping()} == expected

    # --- d0 and the first borderline batch, with the definition as the project's instructions ---------
    started = delib.start("musical instrument")
    deliberation_project = state.for_concept("musical-instrument", DELIBERATION).project_id
    assert started.definition_version == 0 and 1 <= started.pushed <= 5
    project = client.sdk.projects.get(id=deliberation_project)
    assert (
        "Current definition (v0)" in project.expert_instruction and "Concept: musical instrument" in project.description
    )
    tasks = list(client.iter_tasks(deliberation_project))
    assert len(tasks) == started.pushed and all(t.data["decision_text"] in ("IN SCOPE", "OUT OF SCOPE") for t in tasks)
    assert all(t.data["rationale"].startswith("Why: ") and "This batch:" in t.data["ambiguity"] for t in tasks)

    # --- labels with reasons: agree, or disagree with a reason ----------------------------------------
    disagreements = 0
    for task in tasks:
        image, shown = task.data[IMAGE_ID], task.data[DECISION]
        if int(truth[image]) == shown:
            result = [choice("verdict", "image", "Agree")]
        else:
            disagreements += 1
            word = pool.class_name(image).replace("_", " ")
            result = [
                choice("verdict", "image", "Disagree"),
                text("reason", f"a {word} is {'in' if truth[image] else 'out of'} scope for me"),
            ]
        client.create_annotation(task.id, result, lead_time=3.0)
    after = delib.sync_deliberation("musical instrument")
    session = ws.sessions.open("musical instrument")
    labels = session.labels(SOURCE)
    assert labels == {t.data[IMAGE_ID]: int(truth[t.data[IMAGE_ID]]) for t in tasks}  # exactly the server's answers
    notes = {i: label.note for i, label in session.latest_labels(SOURCE).items()}
    assert sum(1 for n in notes.values() if n and "scope for me" in n) == disagreements

    # --- one refinement, visible in Label Studio, and the next batch ----------------------------------
    v1 = history.current()
    assert after.definition_version == 1 and v1.version == 1 and v1.reason["round"] == 0
    assert len(v1.reason["feedback"]) == len(tasks)
    project = client.sdk.projects.get(id=deliberation_project)
    assert "Current definition (v1)" in project.expert_instruction and "v0</b> (scoping)" in project.expert_instruction
    assert f"Definition v1:\n{v1.definition.render()}"[:200] in project.description
    assert after.pushed >= 1 and len(list(client.iter_tasks(deliberation_project))) == len(tasks) + after.pushed
    again = delib.sync_deliberation("musical instrument")  # repeated: nothing new
    assert (again.recorded, again.pushed, again.definition_version) == (0, 0, 1)
    assert history.replay()[-1] == v1.definition


def test_labels_with_reasons_parsing():
    agree = [choice("verdict", "image", "Agree")]
    assert deliberation_label(agree, 1) == (1, "") and deliberation_label(agree, 0) == (0, "")
    disagree = [choice("verdict", "image", "Disagree"), text("reason", "too creamy"), text("comment", "also blurry")]
    assert deliberation_label(disagree, 1) == (0, "too creamy also blurry")
    assert deliberation_label([], 1) is None and deliberation_label([choice("verdict", "image", "Maybe")], 1) is None
    assert deliberation_label([{"from_name": "verdict", "value": "x"}], 1) is None
