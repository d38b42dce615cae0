"""The nearest-neighbour interface: inner-product search over the pool's unit vectors."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np
from numpy.typing import NDArray


class NeighbourIndex(ABC):
    """k-nearest-neighbour search by inner product (= cosine, the vectors being unit length)."""

    @abstractmethod
    def __len__(self) -> int:
        """Number of indexed pool images."""

    @abstractmethod
    def search(self, queries: NDArray[np.floating[Any]], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """The ``k`` most similar pool images of every query.

        Args:
            queries: ``(q, d)`` unit vectors.
            k: neighbours per query (fewer if the pool is smaller).

        Returns:
            ``(scores, ids)``, both ``(q, min(k, n))``, best first; ``scores`` float32 cosine
            similarities, ``ids`` int64 image ids.
        """
