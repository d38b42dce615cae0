"""An index built on its first search, so that steps that never search never pay for it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

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

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        if self._index is None:
            self._index = self._build()
        return self._index.search(queries, k)
