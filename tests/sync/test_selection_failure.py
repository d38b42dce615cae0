"""A sharded selection whose chord fails (a shard file that cannot be read, a worker bug) ends at
once through the chord body's error callback (``agile.selection_failed``), not after
``AGILE_SELECTION_TIMEOUT``: its ledger entry is gone, the reason is the project's ``last_error``
and the next sync launches the selection again. Checked with a real worker over the default folder
broker with ``file://`` results (the chord polls with ``celery.chord_unlock``) and over a real
redis-server (native chords); a late errback of a replaced launch changes nothing."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from agile_cli.services import service_env, worker_command
from sync.rounds import ROUND, ConceptSync
from sync.settings import Settings
from sync.state import RATING, ProjectLink, RoundSettings, SyncState
from tests.sync.conftest import REPO, Service, run_agile, wait_for


def broken_shard(path: Path) -> Path:
    """A shard file cut short by a full disk: np.load cannot read it."""
    np.save(path, np.zeros((64, 512), dtype=np.float16))
    path.write_bytes(path.read_bytes()[:200])
    return path


def worker(tmp_path, settings: Settings, name: str) -> Service:
    env = {**service_env(settings), "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "AGILE_SHARDED_SCORING": "1"}
    return Service(worker_command(beat=False) + ["-n", f"{name}@%h"], env, tmp_path / f"{name}.log").start()


class _LockedState:
    """What :func:`sync.sharded.fail_selection` uses of a :class:`ConceptSync`, without Label Studio."""

    concept_lock = ConceptSync.concept_lock

    def __init__(self, root: Path) -> None:
        self.workspace = SimpleNamespace(root=root)
        self.state = SyncState(root / "label_studio.sqlite")


def _link(state: SyncState, concept: str = "cat", project_id: int = 7) -> None:
    state.link(ProjectLink(concept, RATING, project_id, RoundSettings("<View/>", 20, 10, "margin", 0)))


def test_a_late_errback_of_a_replaced_launch_changes_nothing(tmp_path):
    from sync.sharded import fail_selection, ledger_of

    sync = _LockedState(tmp_path)
    _link(sync.state)
    ledger = ledger_of(sync)
    old = ledger.begin("cat", 1, "cat-v1")
    new = ledger.begin("cat", 1, "cat-v1")  # relaunched (stale, or a newer model)
    assert not fail_selection(sync, "cat", old.token, "ChordError: late")
    assert ledger.get("cat") == new and sync.state.for_concept("cat").last_error is None
    assert fail_selection(sync, "cat", new.token, "ChordError: Dependency x raised ValueError('bad shard')")
    assert ledger.get("cat") is None
    assert "round 1 from cat-v1" in sync.state.for_concept("cat").last_error
    assert "ValueError('bad shard')" in sync.state.for_concept("cat").last_error
    assert not fail_selection(sync, "cat", new.token, "twice")  # a duplicate errback: nothing left to end


@pytest.mark.slow
def test_a_failed_shard_ends_the_round_at_once_and_the_next_sync_relaunches_it(tmp_path, manual_loop, monkeypatch):
    """Default folder broker + file:// results, one real solo worker; one piece of the pool points
    at a shard file cut short, so its score_shard task raises."""
    import sync.sharded as sharded
    from sync.celery_app import make_celery

    ml = manual_loop("cats", seed_size=20, batch_size=10, strategy="margin")  # a strategy that splits by shard
    ml.sync.settings = ml.settings.with_(shard_rows=10000)
    name = ml.spec.concept().name
    service = worker(tmp_path, ml.settings, "w")  # starts while the seed is rated and the model trained
    app = make_celery(Settings(workspace=ml.workspace.root))  # the same folder broker as the worker's
    try:
        monkeypatch.setattr(sharded, "default_app", lambda settings: app)
        ml.sync.launch_selection = sharded.start_sharded_selection
        launched = []
        real_launch, real_pieces = sharded.launch_selection, sharded.shard_pieces
        monkeypatch.setattr(
            sharded, "launch_selection", lambda *a, **kw: launched.append(real_launch(*a, **kw)) or launched[-1]
        )
        bad = broken_shard(tmp_path / "cut-short.npy")
        monkeypatch.setattr(
            sharded,
            "shard_pieces",
            lambda shards, rows: [*real_pieces(shards, rows)[:-1], (bad, *real_pieces(shards, rows)[-1][1:])],
        )

        ml.rate_open_tasks()
        assert ml.sync.sync(name).trained == "cat-v1"
        assert len(launched) == 1 and (launched[0].round, launched[0].version) == (1, "cat-v1")
        started = time.monotonic()
        wait_for(lambda: sharded.ledger_of(ml.sync).get("cat") is None, 60, "the failed selection to end")
        assert time.monotonic() - started < 60  # not AGILE_SELECTION_TIMEOUT (900 s)
        error = ml.sync.state.for_concept("cat").last_error
        assert "selection of round 1 from cat-v1 failed" in error and "ValueError" in error, error
        status = run_agile("concept", "status", name, env=service_env(ml.settings))
        assert "selection of round 1 from cat-v1 failed" in status.stdout, status.stdout + status.stderr
        assert ml.workspace.sessions.open("cat").current_round() == 0

        # the file is mended; the next sync launches the selection again at once and the round completes
        monkeypatch.setattr(sharded, "shard_pieces", real_pieces)
        assert ml.sync.sync(name).pushed == 0
        assert len(launched) == 2 and launched[1].token != launched[0].token
        wait_for(
            lambda: sum(t.data[ROUND] == 1 for t in ml.sync.client.iter_tasks(ml.project_id)) == 10,
            90,
            "round 1 selected by the relaunch",
        )
        assert sharded.ledger_of(ml.sync).get("cat") is None
    finally:
        service.stop()
        app.close()
    log = service.log.read_text()
    assert "celery.chord_unlock" in log and "agile.finish_selection" in log, log[-3000:]
    assert "cat: the selection of round 1 from cat-v1 failed on the workers" in log, log[-3000:]  # for a person
    assert "Errback" not in log, log[-3000:]  # the errback itself did not raise


@pytest.mark.slow
def test_a_failed_shard_ends_the_selection_over_redis(tmp_path, redis_url):
    """The same errback through Redis's native chords (no Label Studio: the launch is made by hand)."""
    from sync.celery_app import make_celery
    from sync.sharded import launch_selection, ledger_of

    root = tmp_path / "ws"
    root.mkdir()
    sync = _LockedState(root)
    _link(sync.state)
    settings = Settings(
        workspace=root,
        broker_url=redis_url,
        label_studio_url="http://127.0.0.1:9",
        label_studio_api_key="unused",
        prefetch=0.0,
    )
    service = worker(tmp_path, settings, "r")
    app = make_celery(settings)
    ledger = ledger_of(sync)
    try:
        bad = broken_shard(tmp_path / "cut-short.npy")
        request = SimpleNamespace(strategy="margin", k=10, round=1, exclude=np.array([], dtype=np.int64))
        entry = launch_selection(
            app, ledger, "cat", request, "cat-v1", root / "models", [(bad, 0, 64), (bad, 64, 64)], settings.shard_rows
        )
        assert ledger.get("cat") == entry
        wait_for(lambda: ledger.get("cat") is None, 60, "the failed selection to end over Redis")
        error = sync.state.for_concept("cat").last_error
        assert "selection of round 1 from cat-v1 failed" in error and "ValueError" in error, error
    finally:
        service.stop()
        app.close()
        ledger.close()
    log = service.log.read_text()
    assert "agile.score_shard" in log and "celery.chord_unlock" not in log, log[-3000:]
