"""The sharded round's bookkeeping against the real Label Studio server, with no worker consuming the
broker: the sync launches a chord and returns; a sync while it is in flight launches nothing; a stale
one is relaunched; the callback records and pushes exactly the single-process batch once, and a
duplicate or superseded callback changes nothing.

The shard tasks' results are computed here by the real task function on the arguments of the
messages the sync put into the (folder) broker, as a worker would."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest

from agile_modeling.loop import LoopConfig, SelectionRequest
from sync.rounds import IMAGE_ID, ROUND
from sync.settings import Settings

pytestmark = pytest.mark.slow


def queued(app, task: str) -> list[tuple[list, dict]]:
    """``(args, kwargs)`` of every message of ``task`` waiting in the app's folder broker."""
    folder = Path(app.conf.broker_transport_options["data_folder_in"])
    out = []
    for path in sorted(folder.iterdir()):
        message = json.loads(path.read_text())
        if message["headers"].get("task") != task:
            continue
        body = message["body"]
        if message["properties"].get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args, kwargs, _ = json.loads(body)
        out.append((args, kwargs))
    return out


def callback_kwargs(message) -> dict:
    """The keyword arguments of the ``agile.finish_selection`` callback a chord message carries."""
    stack = [message]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if item.get("task") == "agile.finish_selection":
                return item["kwargs"]
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    raise AssertionError(f"no agile.finish_selection callback in {message}")


@pytest.fixture
def broker_app(tmp_path, monkeypatch):
    """A Celery app on a folder broker nobody consumes, used by the sync for its launches."""
    monkeypatch.setenv("AGILE_WORKSPACE", str(tmp_path / "worker-ws"))  # if this process makes the worker's app
    import sync.sharded
    from sync.celery_app import make_celery

    app = make_celery(Settings(workspace=tmp_path / "broker-ws"))
    monkeypatch.setattr(sync.sharded, "default_app", lambda settings: app)
    yield app
    app.close()


def test_selection_in_flight_is_launched_once_and_recorded_once(manual_loop, broker_app):
    from sync.sharded import finish_selection, ledger_of, start_sharded_selection
    from sync.tasks import score_shard

    ml = manual_loop("cats", seed_size=20, batch_size=10, strategy="margin")  # a strategy that splits by shard
    ml.sync.settings = ml.settings.with_(shard_rows=8000)
    ml.sync.launch_selection = start_sharded_selection
    name = ml.spec.concept().name
    ml.rate_open_tasks()
    first = ml.sync.sync(name)  # trains, launches the chord, returns: nothing waits for the shards
    assert first.trained == "cat-v1" and first.pushed == 0 and first.round == 0
    shards = queued(broker_app, "agile.score_shard")
    n_pieces = -(-len(ml.workspace.store()) // 8000)
    assert len(shards) == n_pieces and len(queued(broker_app, "celery.chord_unlock")) == 1
    entry = ledger_of(ml.sync).get("cat")
    assert (entry.round, entry.version) == (1, "cat-v1")

    # the periodic sync (or a repeated webhook) while the chord runs: no second launch
    assert ml.sync.sync(name).pushed == 0
    assert len(queued(broker_app, "agile.score_shard")) == n_pieces and ledger_of(ml.sync).get("cat") == entry
    # ... unless the launch is stale (its workers died): then it is launched again
    ledger_of(ml.sync).db.execute("UPDATE selections_in_flight SET started = started - 100000")
    ml.sync.sync(name)
    relaunched = ledger_of(ml.sync).get("cat")
    assert relaunched.token != entry.token and len(queued(broker_app, "agile.score_shard")) == 2 * n_pieces

    # the chord's callback, with the results the workers return for the first launch's messages
    parts = [score_shard(*args, **kwargs) for args, kwargs in shards]
    callback = callback_kwargs(queued(broker_app, "celery.chord_unlock")[0])
    assert callback == {
        "concept": "cat",
        "round_index": 1,
        "version": "cat-v1",
        "token": entry.token,
        "k": 10,
        "k_pos": 0,
    }
    stale_wrong_model = finish_selection(ml.sync, parts, **{**callback, "version": "cat-v0"})
    assert stale_wrong_model.pushed == 0 and ml.workspace.sessions.open("cat").current_round() == 0
    done = finish_selection(ml.sync, parts, **callback)
    assert done.pushed == 10 and done.round == 1

    session = ml.workspace.sessions.open("cat")
    loop = ml.workspace.loop("cat", LoopConfig(batch_size=10, strategy="margin"))
    exclude = np.union1d(session.batch(0), list(loop.labels())).astype(np.int64)
    single = loop.select(loop.registry.get("cat-v1").load(), SelectionRequest(1, "margin", 10, exclude)).tolist()
    assert session.batch(1) == single  # exactly the single-process selection
    tasks = sorted((t for t in ml.sync.client.iter_tasks(ml.project_id) if t.data[ROUND] == 1), key=lambda t: t.id)
    assert [t.data[IMAGE_ID] for t in tasks] == single and {t.prediction_version for t in tasks} == {"cat-v1"}
    assert ledger_of(ml.sync).get("cat") is None

    # the relaunched chord's callback arrives too, and later syncs: nothing new
    again = finish_selection(ml.sync, parts, **{**callback, "token": relaunched.token})
    assert again.pushed == 0 and ml.sync.sync(name).pushed == 0
    assert len(list(ml.sync.client.iter_tasks(ml.project_id))) == 30
    assert ml.workspace.sessions.open("cat").current_round() == 1
    assert len(queued(broker_app, "agile.score_shard")) == 2 * n_pieces  # round 1 is open: no launch
