"""Active-learning selection over the whole pool: margin, and margin + positive mining.

Strategies read approximate (bf16) logits of every pool image and return exactly the images
that fp32 scoring would choose: they re-score a frontier of the best candidates in fp32 and
widen it until the certificate holds (no image outside the frontier can beat the chosen ones
given the rounding error observed on the frontier, times a safety factor).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import numpy as np

# The observed bf16 error is multiplied by this before trusting the frontier boundary.
SAFETY_FACTOR = 4.0
MIN_FRONTIER = 512

ExactLogits = Callable[[np.ndarray], np.ndarray]


def _exact_smallest(
    approx_key: np.ndarray, k: int, exact_key: Callable[[np.ndarray], np.ndarray], frontier: int
) -> np.ndarray:
    """Ids of the ``k`` smallest exact keys (ties by id), certified against the approximate keys.

    Re-scores the ``frontier`` best approximate candidates exactly, then every image whose
    approximate key lies within ``SAFETY_FACTOR`` x the largest observed error of the k-th exact
    key, until no image outside the frontier could still beat it. ``approx_key`` ``(n,)`` holds
    ``inf`` for ineligible images.
    """
    eligible = int(np.isfinite(approx_key).sum())
    k = min(k, eligible)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    m = min(max(frontier, k), eligible)
    part = np.argpartition(approx_key, m - 1)[:m] if m < len(approx_key) else np.flatnonzero(np.isfinite(approx_key))
    exact = exact_key(part)
    while True:
        order = np.lexsort((part, exact))
        chosen, kth = part[order[:k]], exact[order[k - 1]]
        if len(part) >= eligible:
            return chosen.astype(np.int64)
        error = float(np.max(np.abs(exact - approx_key[part])))
        could_beat = np.flatnonzero(approx_key <= kth + SAFETY_FACTOR * error + 1e-6)
        missing = np.setdiff1d(could_beat, part, assume_unique=True)
        if len(missing) == 0:
            return chosen.astype(np.int64)
        part = np.concatenate([part, missing])
        exact = np.concatenate([exact, exact_key(missing)])


def _eligible_keys(key: np.ndarray, excluded: np.ndarray) -> np.ndarray:
    key = key.astype(np.float32, copy=True)
    if len(excluded):
        key[excluded] = np.inf
    return key


class SelectionStrategy(ABC):
    """Chooses the next batch to rate from pool logits."""

    name: str

    @abstractmethod
    def select(self, approx_logits: np.ndarray, k: int, exclude: np.ndarray, exact_logits: ExactLogits) -> np.ndarray:
        """Pick ``k`` image ids.

        Args:
            approx_logits: ``(n,)`` float32 approximate logits of every pool image.
            k: batch size.
            exclude: int ids never to pick (already rated or queued).
            exact_logits: maps ids ``(m,)`` to their exact fp32 logits ``(m,)``.

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

    def select(self, approx_logits, k, exclude, exact_logits):
        key = _eligible_keys(np.abs(approx_logits), np.asarray(exclude, dtype=np.int64))
        return _exact_smallest(
            key, k, lambda ids: np.abs(exact_logits(ids)), max(MIN_FRONTIER, self.frontier_factor * k)
        )


class MarginPositiveMining(SelectionStrategy):
    """Margin sampling plus positive mining (Mullapudi et al. 2021, the paper's comparison).

    Half of the batch are the highest-scoring unrated images (likely positives, to grow a rare
    concept's positive set), the other half the most uncertain among the rest.
    """

    name = "margin+positive"

    def __init__(self, positive_fraction: float = 0.5, frontier_factor: int = 5) -> None:
        self.positive_fraction = positive_fraction
        self.frontier_factor = frontier_factor

    def select(self, approx_logits, k, exclude, exact_logits):
        exclude = np.asarray(exclude, dtype=np.int64)
        k_pos = int(round(k * self.positive_fraction))
        frontier = max(MIN_FRONTIER, self.frontier_factor * k)
        positives = _exact_smallest(
            _eligible_keys(-approx_logits, exclude), k_pos, lambda ids: -exact_logits(ids), frontier
        )
        rest = np.concatenate([exclude, positives])
        uncertain = _exact_smallest(
            _eligible_keys(np.abs(approx_logits), rest), k - len(positives), lambda ids: np.abs(exact_logits(ids)), frontier
        )
        return np.concatenate([positives, uncertain]).astype(np.int64)


STRATEGIES: dict[str, type[SelectionStrategy]] = {
    MarginSelection.name: MarginSelection,
    MarginPositiveMining.name: MarginPositiveMining,
}


def strategy_by_name(name: str) -> SelectionStrategy:
    try:
        return STRATEGIES[name]()
    except KeyError:
        raise ValueError(f"unknown selection strategy {name!r}; choose one of {sorted(STRATEGIES)}") from None
