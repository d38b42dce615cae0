"""Selection split by pool shard and merged exactly, for workers that each read only their own shards.

Each shard reports its own best candidates with their exact float64 keys (kept float64 end to end:
``as_dict`` gives Python floats, which JSON carries as round-trip-exact doubles; an fp32 key would
merge two candidates closer than fp32 resolution as a tie broken by id, unlike the single process): for margin, its ``k`` smallest
``|logit|``; for margin + positive mining also its ``k_pos`` largest logits. The merge takes the
global best of the union, which is exactly the single-process selection (same keys, same ties by
id): the global k smallest margins lie among the union of each shard's k smallest, and after the
``k_pos`` global positives are removed every still-needed margin image was within its shard's k
best (at most ``k_pos`` of a shard's better images can have been taken as positives).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.classifier.base import ConceptClassifier
from agile_modeling.errors import AgileError
from agile_modeling.scoring import pool_scorer
from agile_modeling.selection import (
    MIN_FRONTIER,
    ExactLogits,
    MarginPositiveMining,
    MarginSelection,
    _eligible_keys,
    _exact_smallest,
)
from agile_modeling.store.embedding_store import PoolView

#: the strategies whose selection merges exactly from per-shard candidates
SHARDABLE = frozenset({MarginSelection.name, MarginPositiveMining.name})


def can_shard(strategy: str) -> bool:
    """Whether ``strategy``'s selection can be split by shard (others are selected in one process)."""
    return strategy in SHARDABLE


def positives_wanted(strategy: str, k: int) -> int:
    """How many of a batch of ``k`` a strategy mines as likely positives."""
    if strategy == "margin":
        return 0
    if strategy == MarginPositiveMining.name:
        return int(round(k * MarginPositiveMining().positive_fraction))
    raise UnsupportedStrategyError(
        f"sharded selection (AGILE_SHARDED_SCORING) supports 'margin' and 'margin+positive', not {strategy!r}: "
        "turn sharded scoring off for this concept's rounds, or choose one of those"
    )


class UnsupportedStrategyError(AgileError, ValueError):
    """A selection strategy the sharded (scale-out) selection cannot merge exactly."""


@dataclass(frozen=True)
class ShardCandidates:
    """One shard's best candidates, by global id, with their exact keys (smaller is better)."""

    margin_ids: NDArray[np.int64]  # (<= k,)
    margin_keys: NDArray[np.float64]  # (<= k,) exact |logit|
    positive_ids: NDArray[np.int64]  # (<= k_pos,)
    positive_keys: NDArray[np.float64]  # (<= k_pos,) exact -logit

    def as_dict(self) -> dict[str, list[int] | list[float]]:
        return {k: v.tolist() for k, v in self.__dict__.items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Sequence[float]]) -> ShardCandidates:
        return cls(
            np.asarray(d["margin_ids"], np.int64),
            np.asarray(d["margin_keys"], np.float64),
            np.asarray(d["positive_ids"], np.int64),
            np.asarray(d["positive_keys"], np.float64),
        )


def shard_candidates(
    classifier: ConceptClassifier,
    shard: NDArray[np.float16],
    offset: int,
    k: int,
    k_pos: int,
    exclude: Sequence[int] | NDArray[np.integer[Any]],
    frontier_factor: int = 5,
) -> ShardCandidates:
    """Score one shard ``(m, d)`` float16 whose first row is global id ``offset``; ``exclude`` holds global ids."""
    view = PoolView([shard], shard.shape[1])
    scorer = pool_scorer(classifier)
    approx = scorer.approximate_logits(view)
    exclude = np.asarray(exclude, dtype=np.int64)
    local = exclude[(exclude >= offset) & (exclude < offset + len(shard))] - offset
    frontier = max(MIN_FRONTIER, frontier_factor * k)
    exact: ExactLogits = lambda ids: scorer.exact_logits(view, ids)  # noqa: E731
    margin = _exact_smallest(_eligible_keys(np.abs(approx), local), k, lambda ids: np.abs(exact(ids)), frontier)
    positive = (
        _exact_smallest(_eligible_keys(-approx, local), k_pos, lambda ids: -exact(ids), frontier)
        if k_pos
        else np.zeros(0, np.int64)
    )
    return ShardCandidates(
        margin + offset,
        np.abs(exact(margin)).astype(np.float64),
        positive + offset,
        (-exact(positive)).astype(np.float64),
    )


def _smallest(ids: NDArray[np.int64], keys: NDArray[np.float64], k: int) -> NDArray[np.int64]:
    order = np.lexsort((ids, keys))  # by key, ties by id: the single-process rule
    best: NDArray[np.int64] = ids[order[:k]]  # numpy's stubs type fancy indexing as Any
    return best


def merge_candidates(parts: Sequence[ShardCandidates], k: int, k_pos: int) -> NDArray[np.int64]:
    """The batch: ``k_pos`` likely positives first, then the most uncertain of the rest (``(<= k,)`` int64)."""
    pos_ids = np.concatenate([p.positive_ids for p in parts]) if parts else np.zeros(0, np.int64)
    pos_keys = np.concatenate([p.positive_keys for p in parts]) if parts else np.zeros(0, np.float64)
    positives = _smallest(pos_ids, pos_keys, k_pos) if k_pos else np.zeros(0, np.int64)
    ids = np.concatenate([p.margin_ids for p in parts]) if parts else np.zeros(0, np.int64)
    keys = np.concatenate([p.margin_keys for p in parts]) if parts else np.zeros(0, np.float64)
    keep = ~np.isin(ids, positives)
    return np.concatenate([positives, _smallest(ids[keep], keys[keep], k - len(positives))]).astype(np.int64)
