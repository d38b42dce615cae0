"""The person rating in Label Studio (issue 14): keys that only set a choice, no pre-selected
guess unless asked for, "I can't tell" as a skip, and the state of the loop where they are."""

from __future__ import annotations

import threading

import pytest

from agile_cli.services import service_env
from label_config import load_config, parse_rating_config
from sync.rounds import IMAGE_ID, UNSURE, ConceptSync
from tests.sync.conftest import run_agile
from tests.sync.test_label_studio_loop import rate

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["rating", "rating-note"])
def test_a_click_on_the_chosen_radio_never_clears_it(kind):
    # "single" choices are check boxes a second click clears; hotkeys toggle either way in Label
    # Studio 1.23 (tests/sync/test_browser_rating.py), which is why tasks open with nothing selected
    assert 'choice="single-radio"' in load_config(kind) and 'choice="single"' not in load_config(kind)


def test_tasks_open_without_the_models_guess_unless_asked_and_skip_means_unsure(manual_loop):
    loop = manual_loop("real stop signs", seed_size=20, batch_size=10)
    client, name = loop.sync.client, loop.spec.concept().name
    project = client.sdk.projects.get(id=loop.project_id)
    assert project.show_skip_button and project.skip_queue == "IGNORE_SKIPPED"
    assert not project.show_collab_predictions  # the rater sees the image, not the model's guess

    seed = list(client.iter_tasks(loop.project_id))
    skipped, rest = seed[0], seed[1:]
    client.create_annotation(skipped.id, [], was_cancelled=True)
    rate(client, loop.project_id, rest, loop.truth)
    report = loop.sync.sync(name)

    session = loop.workspace.sessions.open(name)
    image = skipped.data[IMAGE_ID]
    assert image not in session.labels() and session.withdrawn_images()[image] == UNSURE
    assert report.round == 1 and report.trained and report.pushed == 10  # the round completed without it
    batch_1 = [t for t in client.iter_tasks(loop.project_id) if not t.annotations]
    assert len(batch_1) == 10 and image not in {t.data[IMAGE_ID] for t in batch_1}
    assert all(t.prediction_version == report.trained for t in batch_1)  # scores stay in the Data Manager

    assert loop.sync.sync(name).new_labels == 0  # the skip is recorded once

    # rated after all, then skipped again: each change is followed, every time
    skip = next(a for a in client.sdk.tasks.get(id=skipped.id).annotations)
    skip_id = skip["id"] if isinstance(skip, dict) else skip.id
    for _ in range(2):
        client.sdk.annotations.update(
            id=skip_id, result=parse_rating_config(load_config()).rating(1), was_cancelled=False
        )
        loop.sync.sync(name)
        assert session.labels().get(image) == 1
        client.sdk.annotations.update(id=skip_id, result=[], was_cancelled=True)
        loop.sync.sync(name)
        assert image not in session.labels()
    assert loop.sync.sync(name).new_labels == 0

    # where the rater is: the round, how much of it is rated, positives, the newest version's estimate
    positives = int(sum(loop.truth[t.data[IMAGE_ID]] for t in rest))
    model = session.models()[0]
    assert model["name"] == report.trained and model["metrics"]["cv_positives"] == positives
    assert model["metrics"]["cv_labels"] == 19 and 0 < model["metrics"]["cv_auc_pr"] <= 1
    project = client.sdk.projects.get(id=loop.project_id)
    assert "Round 1: 0 of 10 rated." in project.description
    assert f"19 ratings so far, {positives} positive." in project.description
    assert (
        f"Newest model {report.trained} (round 0): estimated AUC-PR {model['metrics']['cv_auc_pr']:.2f}"
        in project.description
    )
    assert "Skip when you cannot tell" in project.expert_instruction
    rate(client, loop.project_id, batch_1[:3], loop.truth)
    loop.sync.sync(name)
    assert "Round 1: 3 of 10 rated." in client.sdk.projects.get(id=loop.project_id).description
    plot = loop.workspace.root / "reports" / session.slug / "progress.png"
    assert plot.stat().st_size > 5_000

    status = run_agile("concept", "status", name, env=service_env(loop.settings))
    assert status.returncode == 0, status.stderr
    assert f"model {report.trained}: 19 labels, estimated AUC-PR" in status.stdout and str(plot) in status.stdout

    # pre-selection, when the operator asks for it (AGILE_PREFILL_PREDICTIONS), applies on publish
    ConceptSync(loop.settings.with_(prefill_predictions=True), loop.workspace).publish(name)
    assert client.sdk.projects.get(id=loop.project_id).show_collab_predictions


def test_publishing_with_the_backend_on_another_port_leaves_no_stale_backend_or_webhook(manual_loop):
    """`agile up` with another backend port (explicit, or its port taken): Label Studio logged
    connection errors for the old backend and webhook entries that stayed in the project."""
    from werkzeug.serving import make_server

    from ml_backend.app import create_app

    loop = manual_loop("real stop signs", seed_size=10, batch_size=10)
    client, name = loop.sync.client, loop.spec.concept().name
    servers = [
        make_server("127.0.0.1", 0, create_app(loop.settings, enqueue=lambda kind, **kw: None), threaded=True)
        for _ in range(2)
    ]  # our backend app twice: Label Studio checks a backend's health before adding it
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    urls = [f"http://127.0.0.1:{server.server_port}" for server in servers]
    try:
        for url in urls:  # the first `agile up`, then one on another port
            ConceptSync(loop.settings.with_(backend_url=url), loop.workspace).publish(name)
    finally:
        for server in servers:
            server.shutdown()
    assert [b.url for b in client.sdk.ml.list(project=loop.project_id)] == [urls[1]]
    assert [h.url for h in client.sdk.webhooks.list(project=str(loop.project_id))] == [f"{urls[1]}/webhook"]
