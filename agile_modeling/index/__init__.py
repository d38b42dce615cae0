"""Nearest-neighbour search over the pool: exact up to about 2M images, faiss IVF above."""

from agile_modeling.index.base import NeighbourIndex
from agile_modeling.index.exact import ExactIndex
from agile_modeling.index.ivf import IVFIndex
from agile_modeling.index.lazy import LazyIndex
from agile_modeling.store.embedding_store import PoolView

EXACT_LIMIT = 2_000_000


def build_index(view: PoolView, exact_limit: int = EXACT_LIMIT) -> NeighbourIndex:
    """The exact index for pools up to ``exact_limit`` images, IVF-SQfp16 above."""
    return ExactIndex(view) if len(view) <= exact_limit else IVFIndex(view)


__all__ = ["NeighbourIndex", "ExactIndex", "IVFIndex", "LazyIndex", "build_index", "EXACT_LIMIT"]
