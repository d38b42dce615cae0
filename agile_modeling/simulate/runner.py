"""The paper's simulated-user protocol: seed batch, then rounds of active learning, measured on test rows."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.classifier import DEFAULT_RECIPE, ConceptClassifier, ModelRegistry, TrainingRecipe
from agile_modeling.index import ExactIndex, NeighbourIndex
from agile_modeling.loop import AgileLoop, LoopConfig
from agile_modeling.metrics import binary_metrics
from agile_modeling.seeding import NEIGHBOURS_PER_QUERY
from agile_modeling.selection import DEFAULT_STRATEGY, RandomSelection
from agile_modeling.session import SessionStore
from agile_modeling.simulate.data import SharedData
from agile_modeling.simulate.suite import SimulatedConcept
from agile_modeling.simulate.users import SimulatedCrowd, SimulatedUser
from agile_modeling.store.embedding_store import PoolView
from agile_modeling.zero_shot import CLIP_ZERO_SHOT_THRESHOLD, zero_shot_scores


@dataclass(frozen=True)
class RoundResult:
    """The model trained after one round, measured on the test rows."""

    round: int
    num_labels: int
    num_positive: int
    model_version: str
    metrics: dict[str, Any]  # the model version's (ModelVersion.metrics)
    train_seconds: float
    select_seconds: float


@dataclass
class SessionResult:
    title: str
    difficulty: str
    strategy: str
    batch_size: int
    zero_shot: dict[str, float]
    test_positives: int
    rounds: list[RoundResult] = field(default_factory=list)


@dataclass
class SimulationContext:
    """What every simulated session shares: the data, the pool view and its index (built once)."""

    data: SharedData
    pool: PoolView
    index: NeighbourIndex

    @classmethod
    def build(cls, data: SharedData) -> SimulationContext:
        pool = PoolView([data.pool.x], data.pool.x.shape[1])
        return cls(data, pool, ExactIndex(pool))


#: how a simulated session's seed batch is chosen
SEED_BATCHES = ("phrases", "random")


def _random_draw(n: int, k: int, exclude: NDArray[np.int64], seed: int) -> NDArray[np.int64]:
    """``(k,)`` pool ids drawn uniformly from ``range(n)`` minus ``exclude`` (``RandomSelection``'s draw)."""
    return RandomSelection(seed).select(np.zeros(n, np.float32), k, exclude, lambda ids: np.zeros(len(ids)))


def _next_random_batch(loop: AgileLoop, seed: int) -> list[int]:
    """The next round's random batch while there is no model yet (no positive rated)."""
    request = loop.selection_request()
    if request is None:
        return []
    return loop.record_batch(request, _random_draw(len(loop.pool), request.k, request.exclude, seed + request.round))


def simulate_session(
    spec: SimulatedConcept,
    ctx: SimulationContext,
    workdir: str | Path,
    rounds: int = 5,
    batch_size: int = 100,
    strategy: str = DEFAULT_STRATEGY,
    recipe: TrainingRecipe = DEFAULT_RECIPE,
    error_rate: float = 0.0,
    seed: int = 0,
    on_round: Callable[[RoundResult], None] | None = None,
    rater: str = "user",
    crowd_error_rate: float = 0.1,
    then_crowd_batch: int = 0,
    prefetch: float = 0.0,
    classifier: str = "mlp",
    seed_batch: str = "phrases",
) -> SessionResult:
    """Run one concept: seed of ``batch_size``... then ``rounds`` rounds, retraining after each.

    ``rater`` is who rates every batch: ``"user"`` (answers from the concept's ground truth, with
    ``error_rate``) or ``"crowd"`` (the majority of 3 raters applying the crowd's reading of the
    concept, each wrong with ``crowd_error_rate``). Models are always measured against the user's
    ground truth. ``then_crowd_batch`` > 0 adds the paper's "User-100 + Crowd-500" step: one
    more round of that many images rated by the crowd, and a model trained on the user's labels
    then the crowd's. ``prefetch`` > 0 prepares each next batch when that fraction of a batch is
    still to rate (the product's queue that never runs dry, ``LoopConfig.prefetch``): every model
    but the last then trains on fewer ratings. ``classifier``: the model trained each round
    (``LoopConfig.classifier``). ``seed_batch``: ``phrases`` (the paper: neighbours of the concept's
    phrases) or ``random`` (a uniform draw from the pool: with ``strategy="random"``, passive learning from
    the start). A round whose ratings hold no positive has no model: it is scored as a constant score
    (AUC-PR = the test set's share of positives) and only ``random`` can select the next batch. The session,
    its labels and model versions are written under ``workdir`` with the real session store and registry,
    exactly as the service would.
    """
    if seed_batch not in SEED_BATCHES:
        raise ValueError(f"seed_batch must be one of {', '.join(SEED_BATCHES)}, not {seed_batch!r}")
    data = ctx.data
    concept = spec.concept()
    workdir = Path(workdir)
    sessions = SessionStore(workdir / "sessions.sqlite")
    session = sessions.create(concept)
    registry = ModelRegistry(workdir / "models" / concept.slug, concept.slug)
    if rater not in ("user", "crowd"):
        raise ValueError(f"rater must be 'user' or 'crowd', not {rater!r}")
    # a seed larger than 100 (Crowd-500) needs more than the paper's 100 neighbours per phrase
    config = LoopConfig(
        seed_size=batch_size,
        batch_size=batch_size,
        strategy=strategy,
        recipe=recipe.with_(seed=seed),
        seed=seed,
        label_source=rater,
        neighbours_per_query=max(NEIGHBOURS_PER_QUERY, batch_size),
        prefetch=prefetch,
        classifier=classifier,
    )
    loop = AgileLoop(session, ctx.pool, ctx.index, data.vocabulary, registry, config)
    raters: SimulatedUser | SimulatedCrowd
    if rater == "user":
        raters = SimulatedUser(spec.ground_truth(data.pool), error_rate, seed)
    else:
        raters = SimulatedCrowd(spec.crowd_truth(data.pool), raters=3, error_rate=crowd_error_rate, seed=seed)
    test_truth = spec.ground_truth(data.test)
    test_x = data.test.x.astype(np.float32)

    text = data.vocabulary.encode_texts([concept.name])[0]
    result = SessionResult(
        spec.title,
        spec.difficulty,
        strategy,
        batch_size,
        binary_metrics(test_truth, zero_shot_scores(test_x, text), CLIP_ZERO_SHOT_THRESHOLD).as_dict(),
        int(test_truth.sum()),
    )

    def evaluate(classifier: ConceptClassifier) -> dict[str, float]:
        return binary_metrics(test_truth, classifier.predict_proba(test_x), 0.5).as_dict()

    if seed_batch == "random":
        session.start_round(0, "random", _random_draw(len(ctx.pool), batch_size, loop.held_out_ids(), seed).tolist())
    queue = list(loop.start())  # the rater's queue: open images, oldest round first
    no_model = binary_metrics(test_truth, np.full(len(test_truth), 0.5), 0.5).as_dict()
    for r in range(rounds + 1):
        # the rater works down the queue until only the prefetch share of a batch is left (all of
        # it in the last round); the model trains and selects the next batch at that point
        keep = int(prefetch * batch_size) if r < rounds else 0
        rated, queue = queue[: max(len(queue) - keep, 0)], queue[max(len(queue) - keep, 0) :]
        session.record_labels(zip(rated, raters.rate(rated)), rater=f"simulated-{rater}", source=rater)
        t0 = time.perf_counter()
        trained: ConceptClassifier | None = None
        if any(session.labels(rater).values()) or strategy != "random":
            version, trained = loop.train(evaluate)
            name, metrics = version.name, version.metrics
        else:  # passive learning has drawn no positive yet: nothing to train
            name, metrics = "-", no_model
        t1 = time.perf_counter()
        if r < rounds:
            queue += loop.next_batch(trained) if trained is not None else _next_random_batch(loop, seed)
        t2 = time.perf_counter()
        labels = session.labels(rater)
        rr = RoundResult(r, len(labels), sum(labels.values()), name, metrics, t1 - t0, t2 - t1 if r < rounds else 0.0)
        result.rounds.append(rr)
        if on_round:
            on_round(rr)
    if then_crowd_batch:
        crowd = SimulatedCrowd(spec.crowd_truth(data.pool), raters=3, error_rate=crowd_error_rate, seed=seed + 1)
        if trained is None:
            raise ValueError("the crowd step selects with the user's last model: the user rated no positive")
        batch = loop.next_batch(trained, size=then_crowd_batch)
        session.record_labels(zip(batch, crowd.rate(batch)), rater="simulated-crowd", source="crowd")
        loop.config = replace(loop.config, label_source=(rater, "crowd"))
        version, trained = loop.train(evaluate)
        labels = loop.labels()
        rr = RoundResult(rounds + 1, len(labels), sum(labels.values()), version.name, version.metrics, 0.0, 0.0)
        result.rounds.append(rr)
        if on_round:
            on_round(rr)
    sessions.close()
    return result
