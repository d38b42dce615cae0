"""Celery tasks of the sync worker: thin wrappers over :class:`sync.rounds.ConceptSync` and the
purposes' handlers (:mod:`sync.purposes`).

Each task logs what it did in a sentence; errors a person can fix (Label Studio down, project
deleted) are logged as such and retried by the next periodic sync rather than raised again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agile_modeling.errors import AgileError
from agile_modeling.selection import DEFAULT_STRATEGY
from sync import purposes, sharded
from sync.celery_app import app
from sync.client import LabelStudioError
from sync.rounds import ConceptSync
from sync.state import SOURCE

if TYPE_CHECKING:
    from celery import Task

    from agile_modeling.classifier import ConceptClassifier

log = logging.getLogger("agile.worker")


@lru_cache(maxsize=1)
def concept_sync() -> ConceptSync:
    """One per worker process: the workspace, its encoders and the client are reused across tasks."""
    return sharded.concept_sync(app.settings)


RETRY_BACKOFF_MAX_S = 60  # the longest pause between retries while Label Studio is unreachable
MAX_RETRIES = 12  # about 8 minutes of backoff; after that the periodic sync catches up


def _run(what: str, fn: Callable[..., Any], *args: Any, task: Task | None = None, **kwargs: Any) -> list[str] | None:
    """Run ``fn`` and log its reports. While Label Studio is down or restarting, a bound ``task`` is
    retried with exponential backoff (1, 2, 4 ... 60 s); other errors a person can fix are logged."""
    try:
        result = fn(*args, **kwargs)
    except LabelStudioError as exc:
        if task is None or task.request.retries >= MAX_RETRIES:
            log.error("%s failed: %s (the periodic sync will catch up)", what, exc)
            return None
        delay = min(2**task.request.retries, RETRY_BACKOFF_MAX_S)
        log.warning(
            "%s: %s; retrying in %d s (retry %d of %d)", what, exc, delay, task.request.retries + 1, MAX_RETRIES
        )
        raise task.retry(countdown=delay, max_retries=MAX_RETRIES) from None
    except AgileError as exc:
        log.error("%s failed: %s", what, exc)
        return None
    reports = result if isinstance(result, list) else [result]
    for report in reports:
        log.info("%s", report.summary())
    _write_back_new_models(reports)
    return [r.summary() for r in reports]


def _write_back_new_models(reports: list[Any]) -> None:
    """With ``AGILE_APPLY_EACH_ROUND``, queue the write-back of each concept a report trained a model for,
    where the concept adopted a Label Studio project."""
    if not app.settings.apply_each_round:
        return
    state = None
    for concept in dict.fromkeys(r.concept for r in reports if getattr(r, "trained", None)):
        state = state or concept_sync().state
        if state.for_concept(concept, SOURCE) is not None:
            apply_newest.delay(concept)


@app.task(name="agile.apply_newest", bind=True, acks_late=True, reject_on_worker_lost=True)
def apply_newest(self: Task, concept: str) -> list[str] | None:
    """Write the concept's newest model onto every task of its adopted project (a no-op if it is there).
    Retried while Label Studio is unreachable, and run again if the worker dies: it resumes exactly."""
    from sync.write_back import apply_predictions

    return _run(
        f"writing {concept!r}'s newest model back", lambda: apply_predictions(concept_sync(), concept), task=self
    )


@app.task(name="agile.sync_project", bind=True)
def sync_project(
    self: Task, project_id: int, requested_at: float | None = None, event: dict | None = None
) -> list[str] | None:
    """A webhook said something changed in this project (``event``: its annotation, if it carried one)."""
    return _run(
        f"sync of project {project_id}",
        lambda: purposes.sync_project(concept_sync(), int(project_id), requested_at, event),
        task=self,
    )


@app.task(name="agile.sync_all")
def sync_all() -> list[str] | None:
    """Periodic reconciliation of every published project (not retried: it runs again on schedule).

    Each project is isolated (a failing one is recorded and the others still sync). A project a
    webhook fully synced within the last half period is skipped: half, so that this run never skips
    the work of the previous periodic run, one period (give or take the queue's jitter) ago."""
    # concept_sync() inside _run: a worker that cannot reach Label Studio logs one line, not a traceback
    return _run("periodic sync", lambda: purposes.sync_all(concept_sync(), app.settings.sync_seconds / 2))


@app.task(name="agile.adopt_project")
def adopt_project(
    project_id: int,
    concept: str,
    positive: list[str] | None = None,
    negative: list[str] | None = None,
    positive_choice: str | None = None,
    negative_choice: str | None = None,
) -> list[str] | None:
    """Adopt a project connected in Label Studio's UI with extra params (``/setup``); idempotent."""
    from sync.adoption import adopt_project as adopt

    return _run(
        f"adopting project {project_id} for {concept!r}",
        lambda: adopt(
            concept_sync(),
            concept,
            int(project_id),
            positive or (),
            negative or (),
            positive_choice=positive_choice,
            negative_choice=negative_choice,
        ),
    )


@app.task(name="agile.publish")
def publish(
    concept: str, seed_size: int = 100, batch_size: int = 100, strategy: str = DEFAULT_STRATEGY, seed: int = 0
) -> list[str] | None:
    return _run(
        f"publishing {concept!r}", lambda: concept_sync().publish(concept, seed_size, batch_size, strategy, seed)
    )


@app.task(name="agile.retrain", bind=True)
def retrain(self: Task, concept: str) -> list[str] | None:
    return _run(f"retraining {concept!r}", lambda: concept_sync().retrain(concept), task=self)


# --- scale-out: work split by pool shard ----------------------------------------------------------
@lru_cache(maxsize=4)
def _model(models_root: str, version: str) -> ConceptClassifier:
    from agile_modeling.classifier import ModelRegistry

    root = Path(models_root)
    return ModelRegistry(root, root.name).get(version).load()


@app.task(name="agile.score_shard", ignore_result=False, acks_late=True, reject_on_worker_lost=True)
def score_shard(
    models_root: str,
    version: str,
    shard_path: str,
    offset: int,
    k: int,
    k_pos: int,
    exclude: list[int],
    rows: list[int] | None = None,
) -> dict:
    """One shard's best candidates (see :mod:`agile_modeling.sharded`); reads only that shard's file
    (rows ``[start, stop)`` of it when ``rows`` is given; ``offset`` is the global id of the first)."""
    from agile_modeling.sharded import shard_candidates

    shard = np.load(shard_path, mmap_mode="r")
    if rows is not None:
        shard = shard[int(rows[0]) : int(rows[1])]
    return shard_candidates(
        _model(models_root, version), shard, int(offset), int(k), int(k_pos), np.asarray(exclude, dtype=np.int64)
    ).as_dict()


@app.task(name="agile.finish_selection", bind=True, acks_late=True, reject_on_worker_lost=True)
def finish_selection(
    self: Task, parts: list[dict], concept: str, round_index: int, version: str, token: str, k: int, k_pos: int
) -> list[str] | None:
    """The callback of a sharded selection's chord: merge, record the round, push its tasks (never
    waits on another task; a duplicate or superseded callback is a no-op, see :mod:`sync.sharded`)."""
    from sync.sharded import finish_selection as finish

    return _run(
        f"selection of round {round_index} of {concept!r}",
        finish,
        concept_sync(),
        parts,
        concept,
        int(round_index),
        version,
        token,
        int(k),
        int(k_pos),
        task=self,
    )


@app.task(name="agile.selection_failed")
def selection_failed(request: Any, exc: object, traceback: object, concept: str, token: str) -> bool:
    """The error callback of a sharded selection's chord (Celery calls it with the failed request,
    the exception and its traceback): ends launch ``token`` in the ledger, unless a newer launch
    replaced it, and keeps the reason as the project's ``last_error``; the next sync relaunches."""
    from sync.sharded import fail_selection

    reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, BaseException) else str(exc)
    try:
        return fail_selection(concept_sync(), concept, token, reason)
    except Exception:  # an errback's failure is only logged by Celery: say what it means for the round
        log.exception(
            "%s: the failed selection %s could not be ended; it is launched again after AGILE_SELECTION_TIMEOUT",
            concept,
            token[:8],
        )
        raise


@app.task(name="agile.embed_images", ignore_result=False, acks_late=True, reject_on_worker_lost=True)
def embed_images(workspace: str, uris: list[str], device: str = "auto", precision: str = "auto") -> dict:
    """Embed a chunk of images into the workspace's pool (already-embedded images are skipped): decoded in
    parallel, embedded in batches, on this worker's GPU if it has one, else in the precision its CPU runs
    fastest (same embedding space, see :mod:`agile_modeling.encoders.open_clip`); the model is loaded once per process."""
    from agile_modeling.workspace import Workspace

    ws = Workspace(workspace)
    encoder = ws.image_encoder().with_runtime(device=device, precision=precision)
    report = ws.store().add_images(uris, encoder, progress=False)
    return {
        "added": len(report.added_ids),
        "already_present": report.already_present,
        "skipped": [list(f) for f in report.skipped],
    }
