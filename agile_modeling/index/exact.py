"""Exact k-NN over pools up to a few million images: a sweep on the chosen backend, then float64 re-scoring.

The sweep computes every pool row's inner product with each query on the backend
:mod:`agile_modeling.compute` chose for this CPU:

- ``bf16`` (native bf16 CPUs): against a bf16 copy of the pool kept in memory (``2 n d`` bytes,
  built once); a bf16 product runs 5-20x faster than fp32 there;
- ``fp32`` (everywhere else): straight from the float16 memory map, chunk by chunk converted
  (exactly) into a cache-sized fp32 buffer, then the fastest fp32 BLAS; no extra copy of the pool.

Exactness by a proven bound: for a row ``||x|| <= row_norm`` and a query ``q``,
``|computed x.q - x.q| <= eps(||q||)`` (``bf16.dot_error_bound``: rounding of x and q to bf16,
fp32 accumulation, rounding of the output; derivation in ``docs/exactness.md``). Let ``t`` be the
k-th largest computed score: the true k-th best score is ``>= t - eps``, so every true top-k row
has a computed score ``>= t - 2 eps``. Those rows are re-scored in float64 from the stored float16
vectors and ranked (ties by id): the result is the exact top-k of the float16 pool.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from agile_modeling import compute as compute_mod
from agile_modeling.bf16 import (
    FP64_PRECISION,
    PRECISIONS,
    UNIT_ROW_NORM,
    copy_fp16_to_bf16,
    copy_fp16_to_fp32,
    dot_error_bound,
)
from agile_modeling.index.base import NeighbourIndex
from agile_modeling.store.embedding_store import PoolView

EXACT_BLOCK_ROWS = 256  # float64 re-scoring in fixed, zero-padded blocks: same bits for a row wherever it sits


def exact_scores(rows: NDArray[np.float16], queries: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    """float64 inner products ``(m, q)`` of float16 rows ``(m, d)`` with queries ``(q, d)``."""
    q64 = np.ascontiguousarray(np.asarray(queries, dtype=np.float64).T)
    out = np.empty((len(rows), q64.shape[1]), dtype=np.float64)
    block = np.zeros((EXACT_BLOCK_ROWS, q64.shape[0]), dtype=np.float64)
    for start in range(0, len(rows), EXACT_BLOCK_ROWS):
        part = rows[start : start + EXACT_BLOCK_ROWS]
        block[: len(part)] = part
        block[len(part) :] = 0.0
        out[start : start + len(part)] = (block @ q64)[: len(part)]
    return out


def _float32_at_most(x: float) -> float:
    """The largest float32 <= ``x``: for float32 scores, ``score >= it`` iff ``score >= x``."""
    y = np.float32(x)
    return float(y if float(y) <= x else np.nextafter(y, np.float32(-np.inf)))


class ExactIndex(NeighbourIndex):
    """Exact inner-product search (the exact top-k of the float16 pool, ties by id).

    Args:
        view: the pool.
        chunk_rows: rows per chunk of the sweep.
        compute: the backend (default: the process's).
        row_norm: bound on the rows' L2 norm (unit vectors in float16).
    """

    def __init__(
        self,
        view: PoolView,
        chunk_rows: int = 1 << 14,
        compute: compute_mod.Compute | None = None,
        row_norm: float = UNIT_ROW_NORM,
    ) -> None:
        self.view = view
        self.compute = compute or compute_mod.current()
        self.row_norm = row_norm
        self.precision = PRECISIONS[self.compute.dtype]
        # fp32: chunks of 2,048 rows keep each converted chunk in cache for its product (1M rows, one
        # query, AVX2 EPYC: 0.19 s against 0.32 s with 4,096 and 0.26 s with 512)
        self.chunk_rows = chunk_rows if self.compute.dtype == compute_mod.BF16 else min(chunk_rows, 1 << 11)
        self._bf16: torch.Tensor | None = None
        if self.compute.dtype == compute_mod.BF16:
            self._bf16 = torch.empty((len(view), view.dim), dtype=torch.bfloat16)
            staging = torch.empty((chunk_rows, view.dim), dtype=torch.float32)
            for start, block in view.iter_chunks(chunk_rows):
                copy_fp16_to_bf16(self._bf16[start:], block, staging)
        else:
            self._staging = torch.empty((self.chunk_rows, view.dim), dtype=torch.float32)

    def __len__(self) -> int:
        return len(self.view)

    def error_bound(self, query_norm: float) -> float:
        """Proven bound on ``|swept score - exact score|`` of any row for a query of this norm
        (plus the float64 re-scoring's own)."""
        return dot_error_bound(self.view.dim, query_norm, self.precision, self.row_norm) + dot_error_bound(
            self.view.dim, query_norm, FP64_PRECISION, self.row_norm
        )

    @torch.inference_mode()
    def _sweep(self, queries: NDArray[np.float32]) -> torch.Tensor:
        """Approximate scores ``(n, q)`` float32."""
        if self._bf16 is not None:
            return (self._bf16 @ torch.from_numpy(queries).to(torch.bfloat16).T).float()
        n, q = len(self.view), len(queries)
        out = torch.empty((n, q), dtype=torch.float32)
        qt = torch.from_numpy(np.ascontiguousarray(queries.T))
        # torch's product whichever BLAS the pool sweep uses: numpy's matmul into a thin (rows, q) slice
        # of ``out`` measured 10-40x slower (1M rows, AVX2 EPYC: 2.0-8.0 s against 0.19 s for one query)
        for start, block in self.view.iter_chunks(self.chunk_rows):
            x = copy_fp16_to_fp32(self._staging, block)
            torch.mm(x, qt, out=out[start : start + len(block)])
        return out

    def search(self, queries: NDArray[np.floating[Any]], k: int) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        queries = np.ascontiguousarray(np.atleast_2d(np.asarray(queries, dtype=np.float32)))
        k = min(k, len(self))
        if k == 0:
            empty = np.zeros((len(queries), 0))
            return empty.astype(np.float32), empty.astype(np.int64)
        approx = self._sweep(queries)
        kths = torch.topk(approx, k, dim=0).values[-1]  # (q,)
        scores = np.empty((len(queries), k), dtype=np.float32)
        ids = np.empty((len(queries), k), dtype=np.int64)
        for j, query in enumerate(queries):
            bound = self.error_bound(float(np.linalg.norm(query.astype(np.float64))))
            threshold = _float32_at_most(float(kths[j]) - 2 * bound)
            frontier = torch.nonzero(approx[:, j] >= threshold).squeeze(1).numpy()
            exact = exact_scores(self.view.take(frontier), query[None, :])[:, 0]
            best = np.lexsort((frontier, -exact))[:k]  # ties broken by id, deterministically
            scores[j], ids[j] = exact[best], frontier[best]
        return scores, ids
