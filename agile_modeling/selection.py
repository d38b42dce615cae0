"""Active-learning selection over the whole pool: margin, margin + positive mining, margin + coverage
(explores the concept's neighbourhood), and random (the passive baseline).

Strategies read approximate logits of every pool image (bf16 or fp32, see ``scoring``) and
return exactly the images that float64 scoring of the whole pool would choose (ties by id).
The approximate logits carry a PROVEN bound ``b`` on ``|approx - exact|`` for every row
(``scoring.BoundedLogits``); keys (``|logit|``, ``-logit``) inherit it, since
``||x| - |y|| <= |x - y|``. The certificate: after re-scoring a frontier exactly, let ``t`` be
the k-th smallest exact key; any image outside the frontier that could beat it has
``exact <= t`` hence ``approx <= t + b``. So every such image is re-scored too; ``t`` can only
fall, so the loop ends (in practice after one widening) with no image outside the frontier able
to displace a chosen one. Without a known bound (a plain array) every eligible image is re-scored.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

MIN_FRONTIER = 512

#: maps pool ids ``(m,)`` to their exact (float64) logits, or keys, ``(m,)``
ExactLogits = Callable[[NDArray[np.integer[Any]]], NDArray[np.float64]]


def _exact_smallest(
    approx_key: NDArray[np.float32],
    k: int,
    exact_key: ExactLogits,
    frontier: int,
    bound: float | None = None,
) -> NDArray[np.int64]:
    """Ids of the ``k`` smallest exact keys (ties by id), certified by a proven bound.

    Re-scores the ``frontier`` best approximate candidates exactly, then every image whose
    approximate key is within ``bound`` of the k-th exact key, until no image outside the
    frontier could still beat it. ``approx_key`` ``(n,)`` holds ``inf`` for ineligible images;
    ``bound`` defaults to the one ``approx_key`` carries (``scoring.BoundedLogits``); without
    one, every eligible image is re-scored (exact, slow).
    """
    if bound is None:
        bound = getattr(approx_key, "bound", None)
    approx_key = np.asarray(approx_key)
    eligible = int(np.isfinite(approx_key).sum())
    k = min(k, eligible)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    m = eligible if bound is None else min(max(frontier, k), eligible)
    part = np.argpartition(approx_key, m - 1)[:m] if m < len(approx_key) else np.flatnonzero(np.isfinite(approx_key))
    exact = np.asarray(exact_key(part), dtype=np.float64)
    while True:
        order = np.lexsort((part, exact))
        chosen: NDArray[np.intp] = part[order[:k]]
        kth = exact[order[k - 1]]
        if len(part) >= eligible:
            return chosen.astype(np.int64)
        assert bound is not None  # without a bound the frontier is every eligible image: returned above
        could_beat = np.flatnonzero(approx_key <= _float32_at_least(kth + float(bound)))
        missing = np.setdiff1d(could_beat, part, assume_unique=True)
        if len(missing) == 0:
            return chosen.astype(np.int64)
        part = np.concatenate([part, missing])
        exact = np.concatenate([exact, np.asarray(exact_key(missing), dtype=np.float64)])


def _float32_at_least(x: float) -> np.float32:
    """The smallest float32 >= ``x``: for float32 keys, ``key <= it`` iff ``key <= x`` exactly."""
    y = np.float32(x)
    return y if float(y) >= x else np.nextafter(y, np.float32(np.inf))


def _eligible_keys(key: NDArray[np.floating[Any]], excluded: NDArray[np.integer[Any]]) -> NDArray[np.float32]:
    key = key.astype(np.float32, copy=True)
    if len(excluded):
        key[excluded] = np.inf
    return key


@dataclass(frozen=True)
class Neighbourhood:
    """Where the concept lives in the pool, for strategies that explore (``SelectionStrategy.explores``).

    Attributes:
        near_ids: ``(m,)`` int64 pool ids nearest the concept's queries (its positive and negative
            phrases, example images and rated positives), sorted; may include rated images.
        covered_ids: ``(r,)`` int64 ids already rated for training or queued: what the loop has
            looked at (images held out for evaluation are not: they would steer coverage away from
            their region; they are never picked, being excluded).
        embeddings: maps ids ``(m,)`` to their unit embeddings ``(m, d)``.
    """

    near_ids: NDArray[np.int64]
    covered_ids: NDArray[np.int64]
    embeddings: Callable[[NDArray[np.int64]], NDArray[np.floating[Any]]]


def most_uncertain(
    approx_logits: NDArray[np.float32],
    k: int,
    exclude: NDArray[np.integer[Any]],
    exact_logits: ExactLogits,
    frontier: int,
) -> NDArray[np.int64]:
    """The ``k`` eligible ids with the smallest exact ``|logit|`` (ties by id): margin's choice."""
    return _exact_smallest(
        _eligible_keys(np.abs(approx_logits), exclude), k, lambda ids: np.abs(exact_logits(ids)), frontier
    )


def highest_scored(
    approx_logits: NDArray[np.float32],
    k: int,
    exclude: NDArray[np.integer[Any]],
    exact_logits: ExactLogits,
    frontier: int,
) -> NDArray[np.int64]:
    """The ``k`` eligible ids with the largest exact logit (ties by id): the likeliest positives."""
    return _exact_smallest(_eligible_keys(-approx_logits, exclude), k, lambda ids: -exact_logits(ids), frontier)


class SelectionStrategy(ABC):
    """Chooses the next batch to rate from pool logits."""

    name: str
    #: whether :meth:`select` needs a :class:`Neighbourhood` (the caller builds one only then)
    explores: ClassVar[bool] = False

    @abstractmethod
    def select(
        self,
        approx_logits: NDArray[np.float32],
        k: int,
        exclude: Sequence[int] | NDArray[np.integer[Any]],
        exact_logits: ExactLogits,
        neighbourhood: Neighbourhood | None = None,
    ) -> NDArray[np.int64]:
        """Pick ``k`` image ids.

        Args:
            approx_logits: ``(n,)`` float32 approximate logits of every pool image, with the
                proven bound of their error as ``.bound`` (``scoring.BoundedLogits``; a plain
                array means "no bound known": everything eligible is re-scored).
            k: batch size.
            exclude: int ids never to pick (already rated or queued).
            exact_logits: maps ids ``(m,)`` to their exact (float64) logits ``(m,)``.
            neighbourhood: the concept's neighbourhood; required by strategies that explore.

        Returns:
            ``(min(k, eligible),)`` int64 ids, most informative first.
        """


class MarginSelection(SelectionStrategy):
    """Uncertainty (margin) sampling: the images whose probability is closest to 0.5.

    For a binary classifier the margin ``|p - (1 - p)|`` is monotonic in ``|logit|``.
    """

    name = "margin"

    def __init__(self, frontier_factor: int = 5) -> None:
        self.frontier_factor = frontier_factor

    def select(
        self,
        approx_logits: NDArray[np.float32],
        k: int,
        exclude: Sequence[int] | NDArray[np.integer[Any]],
        exact_logits: ExactLogits,
        neighbourhood: Neighbourhood | None = None,
    ) -> NDArray[np.int64]:
        frontier = max(MIN_FRONTIER, self.frontier_factor * k)
        return most_uncertain(approx_logits, k, np.asarray(exclude, dtype=np.int64), exact_logits, frontier)


class MarginPositiveMining(SelectionStrategy):
    """Margin sampling plus positive mining (Mullapudi et al. 2021, the paper's comparison).

    Half of the batch are the highest-scoring unrated images (likely positives, to grow a rare
    concept's positive set), the other half the most uncertain among the rest.
    """

    name = "margin+positive"

    def __init__(self, positive_fraction: float = 0.5, frontier_factor: int = 5) -> None:
        self.positive_fraction = positive_fraction
        self.frontier_factor = frontier_factor

    def select(
        self,
        approx_logits: NDArray[np.float32],
        k: int,
        exclude: Sequence[int] | NDArray[np.integer[Any]],
        exact_logits: ExactLogits,
        neighbourhood: Neighbourhood | None = None,
    ) -> NDArray[np.int64]:
        exclude = np.asarray(exclude, dtype=np.int64)
        k_pos = int(round(k * self.positive_fraction))
        frontier = max(MIN_FRONTIER, self.frontier_factor * k)
        positives = highest_scored(approx_logits, k_pos, exclude, exact_logits, frontier)
        rest = np.concatenate([exclude, positives])
        uncertain = most_uncertain(approx_logits, k - len(positives), rest, exact_logits, frontier)
        return np.concatenate([positives, uncertain]).astype(np.int64)


class RandomSelection(SelectionStrategy):
    """Passive learning: ``k`` eligible images drawn uniformly, ignoring the model (the baseline
    active learning is measured against). The draw is a function of ``seed``, the pool size and
    how many images are excluded, so a round's batch is reproducible and each round draws anew."""

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed

    def select(
        self,
        approx_logits: NDArray[np.float32],
        k: int,
        exclude: Sequence[int] | NDArray[np.integer[Any]],
        exact_logits: ExactLogits,
        neighbourhood: Neighbourhood | None = None,
    ) -> NDArray[np.int64]:
        exclude = np.asarray(exclude, dtype=np.int64)
        rng = np.random.default_rng([self.seed, len(approx_logits), len(exclude)])
        key = _eligible_keys(rng.random(len(approx_logits)).astype(np.float32), exclude)
        eligible = int(np.isfinite(key).sum())
        order = np.argsort(key, kind="stable")[: min(k, eligible)]
        return order.astype(np.int64)


class MarginCoverage(SelectionStrategy):
    """Margin sampling, with a share of every batch spent covering the concept's neighbourhood.

    Margin refines the boundary the model has and never looks where it has not been: a mode of the
    concept that neither the phrases nor the model reach stays unseen (issue 12's outdoor pools).
    Here ``coverage_fraction`` of the batch goes to the images of the concept's neighbourhood (the
    nearest images of its phrases, examples and rated positives, and the model's highest-scoring
    images) that are farthest from everything already rated: greedy k-center (Sener & Savarese,
    "Active Learning for Convolutional Neural Networks: A Core-Set Approach", ICLR 2018) restricted
    to that neighbourhood, so that coverage is spent near the concept, not on the whole pool's
    outliers. The rest of the batch is margin's, chosen exactly as :class:`MarginSelection`.
    """

    name = "margin+coverage"
    explores = True

    def __init__(self, coverage_fraction: float = 0.25, top_scored: int = 1000, frontier_factor: int = 5) -> None:
        if not 0.0 <= coverage_fraction <= 1.0:
            raise ValueError(f"coverage_fraction is a share of the batch in [0, 1], not {coverage_fraction}")
        self.coverage_fraction = coverage_fraction
        self.top_scored = top_scored
        self.frontier_factor = frontier_factor

    def select(
        self,
        approx_logits: NDArray[np.float32],
        k: int,
        exclude: Sequence[int] | NDArray[np.integer[Any]],
        exact_logits: ExactLogits,
        neighbourhood: Neighbourhood | None = None,
    ) -> NDArray[np.int64]:
        if neighbourhood is None:
            raise ValueError(f"{self.name} explores the concept's neighbourhood: pass one (Neighbourhood)")
        exclude = np.asarray(exclude, dtype=np.int64)
        frontier = max(MIN_FRONTIER, self.frontier_factor * k)
        scored = highest_scored(approx_logits, self.top_scored, exclude, exact_logits, frontier)
        candidates = np.setdiff1d(np.union1d(neighbourhood.near_ids, scored), exclude)
        covering = k_center_greedy(
            neighbourhood.embeddings(candidates),
            neighbourhood.embeddings(neighbourhood.covered_ids),
            int(k * self.coverage_fraction + 0.5),  # half up: a batch of 10 spends 3, not 2
        )
        chosen: NDArray[np.int64] = candidates[covering]
        rest = np.concatenate([exclude, chosen])
        uncertain = most_uncertain(approx_logits, k - len(chosen), rest, exact_logits, frontier)
        return np.concatenate([uncertain, chosen]).astype(np.int64)


def k_center_greedy(
    candidates: NDArray[np.floating[Any]], centres: NDArray[np.floating[Any]], k: int
) -> NDArray[np.int64]:
    """Greedy k-center: ``k`` rows of ``candidates`` ``(m, d)``, each the farthest (cosine) from
    ``centres`` ``(r, d)`` and the rows picked before it; ties go to the lower row. Returns
    ``(min(k, m),)`` row indices in pick order. In float64, so that a BLAS's rounding can only
    reorder candidates whose distances agree to about 1e-15. Costs ``m x r`` float64 (``m`` is a
    few thousand: the neighbourhood), then ``k`` matrix-vector products."""
    m = len(candidates)
    k = min(k, m)
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    x = np.asarray(candidates, dtype=np.float64)
    nearest = np.full(m, -np.inf)  # cosine to the nearest centre
    if len(centres):
        nearest = (x @ np.asarray(centres, dtype=np.float64).T).max(axis=1)
    picks = np.zeros(k, dtype=np.int64)
    for j in range(k):
        pick = int(np.argmin(nearest))  # farthest: the smallest best cosine
        picks[j] = pick
        nearest = np.maximum(nearest, x @ x[pick])
        nearest[pick] = np.inf
    return picks


STRATEGIES: dict[str, type[SelectionStrategy]] = {
    MarginSelection.name: MarginSelection,
    MarginPositiveMining.name: MarginPositiveMining,
    MarginCoverage.name: MarginCoverage,
    RandomSelection.name: RandomSelection,
}


#: the paper's strategy (section 4.2)
PAPER_STRATEGY = MarginSelection.name
#: the loop's default: better than the paper's on concepts it was not chosen on, and it explores
#: (docs/benchmarks.md "The loop's default"); sharded scoring selects it in one worker
DEFAULT_STRATEGY = MarginCoverage.name


def strategy_by_name(name: str) -> SelectionStrategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown selection strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None
