"""Approximate k-NN for large pools: faiss IVF with fp16 scalar-quantised storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from agile_modeling.index.base import NeighbourIndex
from agile_modeling.store.embedding_store import PoolView


class IVFIndex(NeighbourIndex):
    """faiss ``IndexIVFScalarQuantizer`` (QT_fp16, inner product).

    Args:
        view: the pool.
        nlist: inverted lists; about ``4 * sqrt(n)`` is the usual choice.
        nprobe: lists visited per query (recall against speed).
        train_rows: rows sampled (seeded) to train the coarse quantiser.
    """

    def __init__(
        self,
        view: PoolView,
        nlist: int | None = None,
        nprobe: int = 16,
        train_rows: int | None = None,
        chunk_rows: int = 1 << 18,
        seed: int = 0,
    ) -> None:
        n, d = view.shape
        self.nlist = nlist or max(1, min(65536, int(4 * np.sqrt(n))))
        quantizer = faiss.IndexFlatIP(d)
        self.index = faiss.IndexIVFScalarQuantizer(
            quantizer, d, self.nlist, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT
        )
        rng = np.random.default_rng(seed)
        sample = np.sort(rng.choice(n, size=min(n, train_rows or 64 * self.nlist), replace=False))
        self.index.train(view.take(sample).astype(np.float32))
        for _, block in view.iter_chunks(chunk_rows):
            self.index.add(np.asarray(block, dtype=np.float32))
        self.index.nprobe = nprobe

    @classmethod
    def load(cls, path: str | Path, nprobe: int = 16) -> IVFIndex:
        self = cls.__new__(cls)
        # faiss's stub types read_index as returning the base Index; at run time SWIG downcasts it to the
        # class that was written (IndexIVFScalarQuantizer, by save)
        self.index = faiss.read_index(str(path))  # type: ignore[assignment]
        self.nlist = self.index.nlist
        self.index.nprobe = nprobe
        return self

    def save(self, path: str | Path) -> None:
        faiss.write_index(self.index, str(path))

    def __len__(self) -> int:
        return int(self.index.ntotal)

    def search(self, queries: NDArray[np.floating[Any]], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, len(self))
        scores, ids = self.index.search(queries, k)
        return scores.astype(np.float32), ids.astype(np.int64)
