"""Scale-out over Celery: pool scoring and image embedding split into tasks, one per pool shard or
chunk of images, run by any number of workers (``docker compose up --scale worker=N``, or
``agile worker`` on several machines sharing the broker and the workspace's files).

Scoring: each task reads only its shard's file and returns that shard's best candidates; the merge
is exact (:mod:`agile_modeling.sharded`). Embedding: each task embeds a chunk and appends it to
the pool under the store's write lock; images already in the pool are skipped, so a stopped run
resumes where it was.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from celery import Celery, group
from tqdm import tqdm

from agile_modeling.errors import AgileError
from agile_modeling.sharded import ShardCandidates, merge_candidates, positives_wanted

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 1800.0


class ScaleOutError(AgileError):
    """Workers did not answer in time, or a shard task failed."""


@dataclass
class CelerySelector:
    """``selector(version, strategy, k, exclude) -> ids`` for :attr:`AgileLoop.selector`.

    Args:
        models_root: the concept's model registry folder (workers load the version from it).
        shards: ``(path, first id)`` of every pool shard, in id order.
        timeout: seconds to wait for all shard tasks.
    """

    models_root: Path
    shards: Sequence[tuple[Path, int]]
    timeout: float = DEFAULT_TIMEOUT
    app: Celery | None = None  # default: the worker's app (sync.celery_app)
    last_seconds: float = 0.0

    @classmethod
    def for_workspace(cls, workspace, concept: str, app: Celery | None = None) -> "CelerySelector":
        registry = workspace.registry(concept)
        return cls(registry.root, [(p, o) for p, o, _ in workspace.store().shard_files()], app=app)

    def __call__(self, version: str, strategy: str, k: int, exclude: np.ndarray) -> np.ndarray:
        app = self.app or default_app()
        k_pos = positives_wanted(strategy, k)
        exclude = [int(i) for i in np.asarray(exclude, dtype=np.int64)]
        started = time.perf_counter()
        job = group(app.signature("agile.score_shard", args=(str(self.models_root), version, str(path), int(offset),
                                                              int(k), k_pos, exclude))
                    for path, offset in self.shards).apply_async()
        try:
            parts = job.get(timeout=self.timeout, propagate=True)
        except Exception as exc:  # noqa: BLE001 - celery raises the worker's exception or TimeoutError
            raise ScaleOutError(f"sharded scoring of {len(self.shards)} shards failed ({exc.__class__.__name__}: {exc}); "
                                "are workers running (`agile worker`) and sharing the broker?") from None
        finally:
            job.forget()
        self.last_seconds = time.perf_counter() - started
        return merge_candidates([ShardCandidates.from_dict(p) for p in parts], k, k_pos)


def default_app() -> Celery:
    from sync.celery_app import app

    return app


def fan_out_embedding(workspace_root: Path, uris: Sequence[str], chunk: int = 256, timeout: float = DEFAULT_TIMEOUT,
                      progress: bool = True, app: Celery | None = None) -> dict:
    """Embed ``uris`` into the workspace's pool with one task per ``chunk`` images, showing progress.

    Returns totals ``{"added", "already_present", "skipped": [(uri, reason), ...]}``. Run it again
    after an interruption: what was embedded is skipped by content hash.
    """
    app = app or default_app()
    chunks = [list(uris[i:i + chunk]) for i in range(0, len(uris), chunk)]
    results = [app.send_task("agile.embed_images", args=(str(workspace_root), c)) for c in chunks]
    totals = {"added": 0, "already_present": 0, "skipped": []}
    bar = tqdm(total=len(uris), desc="embedding", unit="image", disable=not progress)
    deadline = time.monotonic() + timeout
    pending = dict(enumerate(results))
    try:
        while pending:
            for i, res in list(pending.items()):
                if res.ready():
                    out = res.get(propagate=True)
                    totals["added"] += out["added"]
                    totals["already_present"] += out["already_present"]
                    totals["skipped"] += [tuple(s) for s in out["skipped"]]
                    bar.update(len(chunks[i]))
                    res.forget()
                    del pending[i]
            if pending and time.monotonic() > deadline:
                raise ScaleOutError(f"{len(pending)} of {len(chunks)} embedding tasks did not finish in {timeout:.0f} s; "
                                    "run the same command again to resume")
            time.sleep(0.05)
    finally:
        bar.close()
    return totals
