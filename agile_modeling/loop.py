"""One concept's agile loop: seed batch, retrain on every label, next batch by active learning.

The loop only computes and records: who rates the images (a person in Label Studio, a crowd, a
simulated user) is the caller's business. Each step reads its inputs from the session, so a
process that crashed mid-round resumes by calling the same methods again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.classifier import (
    CLASSIFIERS,
    DEFAULT_RECIPE,
    ConceptClassifier,
    ModelRegistry,
    ModelVersion,
    TrainingRecipe,
    make_classifier,
    recipe_for_round,
)
from agile_modeling.classifier.validation import QualityEstimate, cross_validated_quality
from agile_modeling.encoders.base import TextEncoder
from agile_modeling.errors import SessionError
from agile_modeling.index.base import NeighbourIndex
from agile_modeling.scoring import pool_scorer
from agile_modeling.seeding import NEIGHBOURS_PER_QUERY, SEED_BATCH_SIZE, expand_queries, seed_batch
from agile_modeling.selection import DEFAULT_STRATEGY, Neighbourhood, strategy_by_name
from agile_modeling.session import EVALUATION, USER, Session
from agile_modeling.store.embedding_store import PoolView

log = logging.getLogger(__name__)

#: the concept's neighbourhood for exploring strategies: this many nearest images of each phrase and
#: example image (3x the seed's depth: beyond what the seed drew from), and of each rated positive
NEAR_PER_QUERY = 3 * NEIGHBOURS_PER_QUERY
NEAR_PER_POSITIVE = 10


@dataclass(frozen=True)
class LoopConfig:
    """Parameters of the loop (defaults: the paper's section 4.2)."""

    seed_size: int = SEED_BATCH_SIZE
    neighbours_per_query: int = NEIGHBOURS_PER_QUERY
    batch_size: int = 100
    strategy: str = DEFAULT_STRATEGY
    recipe: TrainingRecipe = field(default_factory=lambda: DEFAULT_RECIPE)
    #: whose labels train the model: one source, or several in order of trust (the first source
    #: that rated an image wins), e.g. ``("user", "crowd")`` for the paper's User-100 + Crowd-500
    label_source: str | tuple[str, ...] = USER
    seed: int = 0
    #: prepare the next batch once only this fraction of a batch is left to rate (0: once the
    #: batch is fully rated, the paper). The rater's queue then never runs dry while the model
    #: trains and selects; each selection misses the labels of that last fraction.
    prefetch: float = 0.0
    #: the model trained each round (``agile_modeling.classifier.CLASSIFIERS``): the paper's MLP, or
    #: ``logistic`` regression (a baseline)
    classifier: str = "mlp"

    def __post_init__(self) -> None:
        if not 0.0 <= self.prefetch < 1.0:
            raise ValueError(f"prefetch is a fraction of a batch in [0, 1), not {self.prefetch}")
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"unknown classifier {self.classifier!r}: choose one of {', '.join(CLASSIFIERS)}")


class AgileLoop:
    """Drives one concept's session over a pool.

    Args:
        session: the concept's persistent state.
        pool: every pool embedding (memory-mapped).
        index: nearest-neighbour search over the same pool.
        text_encoder: embeds the concept's phrases.
        registry: where model versions are written.
        config: loop parameters.
    """

    def __init__(
        self,
        session: Session,
        pool: PoolView,
        index: NeighbourIndex,
        text_encoder: TextEncoder,
        registry: ModelRegistry,
        config: LoopConfig = LoopConfig(),
    ) -> None:
        self.session = session
        self.pool = pool
        self.index = index
        self.text_encoder = text_encoder
        self.registry = registry
        self.config = config
        self.strategy = strategy_by_name(config.strategy)

    @property
    def sources(self) -> tuple[str, ...]:
        source = self.config.label_source
        return (source,) if isinstance(source, str) else tuple(source)

    def labels(self) -> dict[int, int]:
        """``{image_id: value}`` merged over the configured sources, the first source winning."""
        merged: dict[int, int] = {}
        for source in reversed(self.sources):
            merged.update(self.session.labels(source))
        return merged

    def query_vectors(self) -> NDArray[np.float32]:
        """``(q, d)``: every phrase of the concept, then every example image."""
        concept = self.session.concept
        parts = [self.text_encoder.encode_texts(list(concept.phrases))]
        if concept.example_ids:
            parts.append(self.pool.take(list(concept.example_ids)).astype(np.float32))
        return np.concatenate(parts)

    def start(self) -> list[int]:
        """The seed batch (round 0): created once, returned as recorded on later calls."""
        if self.session.current_round() >= 0:
            return self.session.batch(0)
        ids = seed_batch(
            self.index,
            self.query_vectors(),
            size=self.config.seed_size,
            per_query=self.config.neighbours_per_query,
            seed=self.config.seed,
        )
        self.session.start_round(0, "seed", ids.tolist())
        batch: list[int] = ids.tolist()
        return batch

    def training_data(self) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
        """``(ids (n,), x (n, d) float32, y (n,))`` of every label from the configured source."""
        labels = self.labels()
        ids = np.array(sorted(labels), dtype=np.int64)
        y = np.array([labels[i] for i in ids], dtype=np.int64)
        return ids, self.pool.take(ids).astype(np.float32), y

    def labels_digest(self) -> str:
        """A short fingerprint of the training labels (which images, which values): recorded with
        every model version, so a caller can tell whether a saved model saw exactly today's labels."""
        labels = self.labels()
        pairs = np.array(sorted(labels.items()), dtype=np.int64).reshape(-1, 2)
        return hashlib.sha256(pairs.tobytes()).hexdigest()[:16]

    def held_out_ids(self) -> NDArray[np.int64]:
        """Images with an evaluation rating ``(m,)``: never selected for rating, never a random negative."""
        return np.asarray(sorted(self.session.labels(EVALUATION)), dtype=np.int64)

    def random_negative_ids(
        self, recipe: TrainingRecipe, labeled: NDArray[np.int64], round_index: int | None = None
    ) -> NDArray[np.int64]:
        """Random unlabeled pool images to use as negatives (seeded, at most ``max_random_negatives``).

        Only as many distinct images as the epochs will draw are taken: sampling them from a
        uniform random subset of ``max_random_negatives`` pool images is the same distribution.
        With ``recipe.one_pass_over_random_negatives`` (the paper's recipe) every epoch passes over
        all of them, so ``min(max_random_negatives, unlabeled pool images)`` are taken.
        """
        n = len(self.pool)
        want = int(recipe.epochs * recipe.epoch_size * (1 - recipe.positive_fraction - recipe.negative_fraction))
        if recipe.one_pass_over_random_negatives:
            want = recipe.max_random_negatives
        want = min(max(want, 1), recipe.max_random_negatives, max(n - len(labeled), 0))
        if want == 0:
            return np.zeros(0, dtype=np.int64)
        if round_index is None:
            round_index = self.session.current_round()
        rng = np.random.default_rng(recipe.seed + 7919 * (round_index + 1))
        if recipe.one_pass_over_random_negatives:  # exactly ``want``: every unlabeled image, shuffled,
            # when ``want`` is most of the pool or a draw with replacement falls short
            if 2 * want <= n:
                draw = np.unique(rng.integers(0, n, size=int(want * 1.2) + 16))
                draw = np.setdiff1d(draw, labeled, assume_unique=True)
                if len(draw) >= want:
                    return rng.permutation(draw)[:want]
            return rng.permutation(np.setdiff1d(np.arange(n, dtype=np.int64), labeled))[:want]
        draw = np.unique(rng.integers(0, n, size=int(want * 1.2) + 16))
        draw = np.setdiff1d(draw, labeled, assume_unique=True)
        return rng.permutation(draw)[:want]

    def train(
        self,
        evaluate: Callable[[ConceptClassifier], dict[str, Any]] | None = None,
        progress: Callable[[int, float], None] | None = None,
    ) -> tuple[ModelVersion, ConceptClassifier]:
        """Train on every label so far and save a new model version.

        The first model (only the seed batch rated) is the small 16-unit MLP; later ones the
        recipe's (1x128 by default, 3x128 with the paper's).
        ``evaluate`` may add metrics to the version (the simulation's test-set scores); ``progress``
        is called as ``progress(epoch, mean_loss)`` after every epoch.
        """
        round_index = self.session.current_round()
        if round_index < 0:
            raise SessionError("nothing to train on: start the concept's seed batch first")
        recipe = recipe_for_round(round_index, self.config.recipe)
        ids, x, y = self.training_data()
        neg_ids = self.random_negative_ids(recipe, np.union1d(ids, self.held_out_ids()))
        classifier = make_classifier(self.config.classifier, recipe).fit(
            x, y, self.pool.take(neg_ids).astype(np.float32), progress=progress
        )
        metrics = evaluate(classifier) if evaluate else {}
        version = self.registry.save(
            classifier,
            metrics,
            round=round_index,
            num_labels=int(len(y)),
            num_positive=int(y.sum()),
            labels_digest=self.labels_digest(),
        )
        self.session.record_model(version.name, round_index, int(len(y)), metrics)
        log.info("trained %s on %d labels (%d positive)", version.name, len(y), int(y.sum()))
        return version, classifier

    def estimate_quality(self, version: ModelVersion) -> QualityEstimate | None:
        """Cross-validate ``version``'s recipe on the labels it was trained on and record the
        estimate with the version (:mod:`agile_modeling.classifier.validation`). None, recording
        nothing, when the labels changed since that version was trained or either class has too
        few ratings. Costs about ``folds`` trainings: callers run it off the rater's critical path.
        """
        if version.info.get("labels_digest") != self.labels_digest():
            return None
        round_index = int(version.info.get("round", self.session.current_round()))
        recipe = recipe_for_round(round_index, self.config.recipe)
        ids, x, y = self.training_data()
        rated = np.union1d(ids, self.held_out_ids())
        negatives = self.pool.take(self.random_negative_ids(recipe, rated, round_index)).astype(np.float32)
        estimate = cross_validated_quality(recipe, x, y, negatives, kind=version.kind)
        if estimate is not None:
            self.session.update_model_metrics(version.name, estimate.as_dict())
        return estimate

    def next_batch_due(self) -> bool:
        """Whether the next round's batch should be selected now: the seed batch exists and the open
        images (of every round) are down to ``prefetch`` of a batch (none, by default)."""
        current = self.session.current_round()
        if current < 0:
            return False
        open_images = len(self.session.pending(source=self.sources[0]))
        if open_images == 0:
            return True
        batch = len(self.session.batch(current))  # a seed smaller than a batch: half of it, not half a batch
        threshold = int(self.config.prefetch * min(self.config.batch_size, batch))
        # early only with a positive to learn from: a rare concept's seed waits for its last rating
        return open_images <= threshold and any(self.labels().values())

    def selection_request(self, size: int | None = None) -> SelectionRequest | None:
        """What the next round's selection must compute, or None while more than ``prefetch`` of a
        batch is still unlabeled (:meth:`next_batch_due`: nothing to select yet).

        Split from :meth:`next_batch` so that a caller can score the pool elsewhere (sharded over
        workers, asynchronously) and record the result later with :meth:`record_batch`.
        """
        if not self.next_batch_due():
            return None
        exclude = np.union1d(np.union1d(self.session.queued_ids(), list(self.labels())), self.held_out_ids()).astype(
            np.int64
        )
        return SelectionRequest(
            self.session.current_round() + 1, self.strategy.name, int(size or self.config.batch_size), exclude
        )

    def select(self, classifier: ConceptClassifier, request: SelectionRequest) -> NDArray[np.int64]:
        """The request's batch, scored over the whole pool in this process (``(<= k,)`` int64)."""
        scorer = pool_scorer(classifier)
        approx = scorer.approximate_logits(self.pool)
        near = (
            self.neighbourhood(np.setdiff1d(request.exclude, self.held_out_ids())) if self.strategy.explores else None
        )
        return self.strategy.select(
            approx, request.k, request.exclude, lambda i: scorer.exact_logits(self.pool, i), near
        )

    def neighbourhood(self, covered: NDArray[np.int64]) -> Neighbourhood:
        """The concept's neighbourhood in the pool: the nearest images of its phrases (positive and
        negative) and example images (``NEAR_PER_QUERY`` each) and of its rated positives
        (``NEAR_PER_POSITIVE`` each); ``covered`` ``(r,)``: the ids rated for training or queued.

        One search of the pool with a query per phrase, example and rated positive: ``d`` (512)
        multiply-adds per pool image and query, where scoring with the 1x128 MLP takes 128 times
        that; with 300 rated positives the search costs about 2.5 scorings of the pool."""
        near = [expand_queries(self.index, self.query_vectors(), NEAR_PER_QUERY)]
        positives = np.array(sorted(i for i, v in self.labels().items() if v), dtype=np.int64)
        if len(positives):
            near.append(expand_queries(self.index, self.pool.take(positives).astype(np.float32), NEAR_PER_POSITIVE))
        return Neighbourhood(
            np.unique(np.concatenate(near)), covered, lambda ids: self.pool.take(ids).astype(np.float32)
        )

    def record_batch(self, request: SelectionRequest, ids: NDArray[np.integer[Any]] | list[int]) -> list[int]:
        """Record ``ids`` as the batch of ``request.round`` (idempotent: if that round is already
        recorded, its recorded batch is returned and ``ids`` is ignored).

        Raises:
            SessionError: the session moved on to another round since the request was made.
        """
        if self.session.current_round() >= request.round:
            return self.session.batch(request.round)
        self.session.start_round(request.round, request.strategy, [int(i) for i in ids])
        return self.session.batch(request.round)

    def next_batch(self, classifier: ConceptClassifier, size: int | None = None) -> list[int]:
        """Select and record the next round's batch over the whole pool (idempotent per round).

        Excludes every image already queued or labeled. While the next batch is not due
        (:meth:`next_batch_due`), the open images are returned instead of starting a new round.
        """
        request = self.selection_request(size)
        if request is None:
            return self.session.pending(source=self.sources[0])
        return self.record_batch(request, self.select(classifier, request))


@dataclass(frozen=True)
class SelectionRequest:
    """The inputs of one round's selection: the round it starts, the strategy, the batch size and
    every image it must not pick (already queued or labeled)."""

    round: int
    strategy: str
    k: int
    exclude: NDArray[np.int64]  # (n,) sorted
