"""Celery tasks of the sync worker: thin wrappers over :class:`sync.rounds.ConceptSync`.

Each task logs what it did in a sentence; errors a person can fix (Label Studio down, project
deleted) are logged as such and retried by the next periodic sync rather than raised again.
"""

from __future__ import annotations

import logging
from functools import lru_cache

from agile_modeling.errors import AgileError
from sync.celery_app import app
from sync.rounds import ConceptSync
from sync.settings import Settings

log = logging.getLogger("agile.worker")


@lru_cache(maxsize=1)
def concept_sync() -> ConceptSync:
    """One per worker process: the workspace, its encoders and the client are reused across tasks."""
    return ConceptSync(Settings.from_env())


def _run(what: str, fn, *args, **kwargs):
    try:
        result = fn(*args, **kwargs)
    except AgileError as exc:
        log.error("%s failed: %s", what, exc)
        return None
    reports = result if isinstance(result, list) else [result]
    for report in reports:
        log.info("%s", report.summary())
    return [r.summary() for r in reports]


@app.task(name="agile.sync_project")
def sync_project(project_id: int, requested_at: float | None = None, event: dict | None = None):
    """A webhook said something changed in this project (``event``: its annotation, if it carried one)."""
    return _run(f"sync of project {project_id}", concept_sync().sync_project, int(project_id), requested_at, event)


@app.task(name="agile.sync_all")
def sync_all():
    """Periodic reconciliation of every published concept."""
    return _run("periodic sync", concept_sync().sync_all)


@app.task(name="agile.publish")
def publish(concept: str, seed_size: int = 100, batch_size: int = 100, strategy: str = "margin", seed: int = 0):
    return _run(f"publishing {concept!r}", concept_sync().publish, concept, seed_size, batch_size, strategy, seed)


@app.task(name="agile.retrain")
def retrain(concept: str):
    return _run(f"retraining {concept!r}", concept_sync().retrain, concept)
