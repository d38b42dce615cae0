"""An index built on its first search, so that steps that never search never pay for it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.index.base import NeighbourIndex


class LazyIndex(NeighbourIndex):
    """Wraps a factory; the real index is built once, on the first :meth:`search`.

    A retrain-and-select round never searches, but building the exact index copies the whole
    pool to bf16 (about a second per million images): the worker should not pay that per round.
    """

    def __init__(self, build: Callable[[], NeighbourIndex], size: int) -> None:
        self._build = build
        self._size = size
        self._index: NeighbourIndex | None = None

    def __len__(self) -> int:
        return self._size

    def search(self, queries: NDArray[np.floating[Any]], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        if self._index is None:
            self._index = self._build()
        return self._index.search(queries, k)
