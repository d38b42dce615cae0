"""Text-to-image expansion: the first batch the user rates (paper section 3.2)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.index.base import NeighbourIndex

NEIGHBOURS_PER_QUERY = 100
SEED_BATCH_SIZE = 100


def expand_queries(
    index: NeighbourIndex, queries: NDArray[np.floating[Any]], per_query: int = NEIGHBOURS_PER_QUERY
) -> NDArray[np.int64]:
    """Union of the ``per_query`` nearest pool images of every query ``(q, d)``: sorted unique ids."""
    if len(queries) == 0:
        return np.zeros(0, dtype=np.int64)
    _, ids = index.search(queries, per_query)
    union: NDArray[np.int64] = np.unique(ids[ids >= 0])  # numpy's stubs type np.unique as Any
    return union


def seed_batch(
    index: NeighbourIndex,
    queries: NDArray[np.floating[Any]],
    size: int = SEED_BATCH_SIZE,
    per_query: int = NEIGHBOURS_PER_QUERY,
    exclude: Iterable[int] = (),
    seed: int = 0,
) -> NDArray[np.int64]:
    """``size`` images drawn at random (seeded) from the union of every query's neighbours.

    Args:
        index: search over the pool.
        queries: ``(q, d)`` unit vectors of the positive and negative phrases (and example images).
        exclude: ids never to return (already rated).

    Returns:
        ``(min(size, |union|),)`` int64 image ids, in draw order.
    """
    union = np.setdiff1d(expand_queries(index, queries, per_query), np.fromiter(exclude, dtype=np.int64))
    rng = np.random.default_rng(seed)
    return rng.choice(union, size=min(size, len(union)), replace=False).astype(np.int64)
