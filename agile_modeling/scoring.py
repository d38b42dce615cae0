"""Fast pool scoring: the MLP over every pool image on the chosen backend, with a proven error bound.

Why by hand instead of ``model(x)``: calling the module allocates new tensors per chunk, 2-3x
slower than reusing buffers. Each chunk of the float16 memory map is converted into a
preallocated buffer and pushed through ``addmm(out=)`` (or numpy ``matmul(out=)``) + ``relu_``
into preallocated activations, in the dtype :mod:`agile_modeling.compute` chose for this CPU:

- ``bf16`` (native bf16 CPUs): fp16 -> fp32 -> bf16 (see ``bf16``), bf16 weights and activations,
  fp32 accumulation;
- ``fp32`` (everywhere else): fp16 -> fp32 (exact), fp32 weights, through torch or numpy,
  whichever BLAS measured faster.

Exactness. The logits of a sweep are approximate; :class:`BoundedLogits` carries ``bound``, a
proven bound on ``|approximate - exact|`` valid for EVERY row of norm <= ``row_norm`` (the pool's
rows are unit vectors): it is computed once per model from the weights by propagating the
rounding of each layer through the ReLU network (``bf16.layers_error_bound``; derivation in
``docs/exactness.md``), and does not depend on the row. The exact logits are the same network
evaluated in float64 (:meth:`PoolScorer.exact_logits`, whose own tiny error bound is added).
Selection re-scores every image whose interval ``[approx - bound, approx + bound]`` reaches the
k-th chosen exact score, so it returns exactly what float64 scoring of the whole pool would.
For bf16 the bound is 0.04-0.3 on the logit of a moderately trained 3x128 model, and a model
whose bf16 bound exceeds :data:`BF16_MAX_BOUND` is swept in fp32 instead (bounds of 1e-4-1e-2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from agile_modeling import compute as compute_mod
from agile_modeling.bf16 import (
    FP64_PRECISION,
    PRECISIONS,
    UNIT_ROW_NORM,
    copy_fp16_to_bf16,
    copy_fp16_to_fp32,
    layers_error_bound,
)
from agile_modeling.classifier.base import ClassifierInputError, ConceptClassifier
from agile_modeling.store.embedding_store import PoolView

DEFAULT_CHUNK_ROWS = 1 << 13  # 8k rows: the activations stay in cache (fastest of 8k-64k here)
#: float64 re-scoring runs in blocks of exactly this many rows (zero-padded), so that a row's
#: exact logit is the same bits whichever rows it is scored with (one GEMM shape, one kernel).
EXACT_BLOCK_ROWS = 256
#: A model whose proven bf16 logit bound exceeds this is swept in fp32 instead (through the faster
#: BLAS): the bound is a worst case over every row and grows with the product of the layers'
#: operator norms (a model trained to large gains, ||W||_2 ~ 8 per hidden layer, gets ~25 on
#: logits of +-40), and a frontier of most of the pool costs more than an fp32 sweep.
BF16_MAX_BOUND = 0.25


class BoundedLogits(np.ndarray[tuple[int, ...], np.dtype[np.float32]]):
    """float32 approximate logits ``(n,)`` with ``bound``: ``|approx - exact| <= bound`` on every row.

    The bound survives slicing, copies, ``-x`` and ``abs(x)`` (for which it stays valid); any
    other arithmetic returns a plain array.
    """

    bound: float | None

    def __new__(cls, values: NDArray[np.float32], bound: float) -> BoundedLogits:
        obj = np.asarray(values).view(cls)
        obj.bound = float(bound)
        return obj

    def __array_finalize__(self, obj: NDArray[Any] | None) -> None:
        self.bound = getattr(obj, "bound", None)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        plain = [np.asarray(i) if isinstance(i, BoundedLogits) else i for i in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(np.asarray(o) if isinstance(o, BoundedLogits) else o for o in kwargs["out"])
            return getattr(ufunc, method)(*plain, **kwargs)
        result = getattr(ufunc, method)(*plain, **kwargs)
        if method == "__call__" and ufunc in (np.negative, np.absolute, np.positive) and isinstance(result, np.ndarray):
            assert self.bound is not None  # set by __new__ and kept by every slice or copy of one
            return BoundedLogits(result, self.bound)
        return result


def approximation_bound(values: NDArray[np.floating[Any]]) -> float | None:
    """The proven ``|approx - exact|`` bound ``values`` carries, None for a plain array."""
    return getattr(values, "bound", None)


def pool_scorer(classifier: ConceptClassifier) -> PoolScorer | DecisionScorer:
    """The fastest exact way to score a pool with ``classifier``: the bounded sweep of
    :class:`PoolScorer` when it is a ReLU network (``linear_layers``), else :class:`DecisionScorer`."""
    return PoolScorer(classifier) if classifier.linear_layers() is not None else DecisionScorer(classifier)


class DecisionScorer:
    """Scores a pool through ``classifier.decision_function`` (any classifier): its logits are taken
    as exact (bound 0), so selection needs no second pass."""

    def __init__(self, classifier: ConceptClassifier, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.classifier = classifier
        self.chunk_rows = chunk_rows
        self.error_bound = 0.0

    def approximate_logits(self, view: PoolView, progress: bool = False) -> BoundedLogits:
        """Logits ``(n,)`` float32 of every pool image, in id order (bound 0)."""
        out = np.empty(len(view), dtype=np.float32)
        for start, block in view.iter_chunks(self.chunk_rows):
            out[start : start + len(block)] = self.classifier.decision_function(block)
        return BoundedLogits(out, 0.0)

    def exact_rows(self, rows: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """Logits of rows ``(m, d)`` as float64 ``(m,)``."""
        return self.classifier.decision_function(np.asarray(rows)).astype(np.float64)

    def exact_logits(self, view: PoolView, ids: Sequence[int] | NDArray[np.integer[Any]]) -> NDArray[np.float64]:
        """Logits of pool images ``ids`` as float64 ``(len(ids),)``."""
        return self.exact_rows(view.take(ids))


class PoolScorer:
    """Scores whole pools with one classifier, reusing its buffers between calls.

    Args:
        classifier: a fitted classifier with ``linear_layers`` (a ReLU network: the MLP, logistic
            regression).
        chunk_rows: rows per chunk.
        compute: the backend (default: the process's, :func:`agile_modeling.compute.current`).
        row_norm: bound on the pool rows' L2 norm (unit vectors stored as float16).
    """

    def __init__(
        self,
        classifier: ConceptClassifier,
        chunk_rows: int = DEFAULT_CHUNK_ROWS,
        compute: compute_mod.Compute | None = None,
        row_norm: float = UNIT_ROW_NORM,
    ) -> None:
        self.classifier = classifier
        self.chunk_rows = chunk_rows
        self.compute = compute or compute_mod.current()
        layers = classifier.linear_layers()
        if layers is None:
            raise TypeError(f"a {classifier.kind} classifier has no linear layers: score it with pool_scorer()")
        self._layers64 = [(w.T.to(torch.float64).contiguous().numpy(), b.to(torch.float64).numpy()) for w, b in layers]
        self.exact_bound = float(layers_error_bound(layers, FP64_PRECISION, row_norm)[0])
        self.dtype = self.compute.dtype
        if self.dtype == compute_mod.BF16 and self.compute.mode == compute_mod.AUTO:  # a forced bf16 stays bf16
            bf16_bound = float(layers_error_bound(layers, PRECISIONS[compute_mod.BF16], row_norm)[0])
            if bf16_bound > BF16_MAX_BOUND:  # the frontier would be much of the pool: fp32 is faster overall
                self.dtype = compute_mod.FP32
        self.precision = PRECISIONS[self.dtype]
        #: proven bound on |approximate - float64| logit, for any row of norm <= row_norm
        self.error_bound = float(layers_error_bound(layers, self.precision, row_norm)[0]) + self.exact_bound
        dim = layers[0][0].shape[1]
        self.dim = int(dim)
        self._numpy = self.dtype == compute_mod.FP32 and self.compute.blas == compute_mod.NUMPY
        tdtype = torch.bfloat16 if self.dtype == compute_mod.BF16 else torch.float32
        self._weights = [w.T.contiguous().to(tdtype) for w, _ in layers]  # (in, out)
        self._biases = [b.to(tdtype) for _, b in layers]
        self._staging = torch.empty((chunk_rows, dim), dtype=torch.float32)
        self._input = (
            torch.empty((chunk_rows, dim), dtype=torch.bfloat16) if tdtype == torch.bfloat16 else self._staging
        )
        self._acts = [torch.empty((chunk_rows, w.shape[1]), dtype=tdtype) for w in self._weights]
        if self._numpy:
            self._np_weights = [w.numpy() for w in self._weights]
            self._np_biases = [b.numpy() for b in self._biases]
            self._np_acts = [a.numpy() for a in self._acts]

    def _check_width(self, width: int) -> None:
        if width != self.dim:
            raise ClassifierInputError(
                f"the pool's embeddings are {width}-dimensional, the {self.classifier.kind} model's inputs "
                f"{self.dim}-dimensional: the model was trained on another encoder's embeddings"
            )

    @torch.inference_mode()
    def approximate_logits(self, view: PoolView, progress: bool = False) -> BoundedLogits:
        """Logits of every pool image on the chosen backend: ``(n,)`` float32, in id order, with
        ``.bound`` (proven, see the module docstring)."""
        self._check_width(view.dim)
        out = np.empty(len(view), dtype=np.float32)
        out_t = torch.from_numpy(out)
        chunks = view.iter_chunks(self.chunk_rows)
        if progress:
            chunks = tqdm(
                chunks, total=-(-len(view) // self.chunk_rows), desc=f"scoring pool ({self.dtype})", unit="chunk"
            )
        last = len(self._weights) - 1
        for start, block in chunks:
            m = len(block)
            if self._numpy:
                xn = copy_fp16_to_fp32(self._staging, block).numpy()
                for i, (wn, bn) in enumerate(zip(self._np_weights, self._np_biases)):
                    yn = self._np_acts[i][:m]
                    np.matmul(xn, wn, out=yn)
                    yn += bn
                    if i < last:
                        np.maximum(yn, 0.0, out=yn)
                    xn = yn
                out[start : start + m] = xn[:, 0]
                continue
            if self.dtype == compute_mod.BF16:
                x = copy_fp16_to_bf16(self._input, block, self._staging)
            else:
                x = copy_fp16_to_fp32(self._staging, block)
            for i, (w, b) in enumerate(zip(self._weights, self._biases)):
                y = self._acts[i][:m]
                torch.addmm(b, x, w, out=y)
                if i < last:
                    y.relu_()
                x = y
            out_t[start : start + m].copy_(x[:, 0])
        return BoundedLogits(out, self.error_bound)

    def exact_rows(self, rows: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
        """float64 logits of rows ``(m, d)`` (any float dtype), in fixed blocks (see EXACT_BLOCK_ROWS)."""
        rows = np.asarray(rows)
        self._check_width(rows.shape[1] if rows.ndim == 2 else -1)
        out = np.empty(len(rows), dtype=np.float64)
        block = np.zeros((EXACT_BLOCK_ROWS, rows.shape[1] if rows.ndim == 2 else 0), dtype=np.float64)
        last = len(self._layers64) - 1
        for start in range(0, len(rows), EXACT_BLOCK_ROWS):
            part = rows[start : start + EXACT_BLOCK_ROWS]
            m = len(part)
            block[:m] = part
            block[m:] = 0.0
            a = block
            for i, (w, b) in enumerate(self._layers64):
                a = a @ w
                a += b
                if i < last:
                    np.maximum(a, 0.0, out=a)
            out[start : start + m] = a[:m, 0]
        return out

    def exact_logits(self, view: PoolView, ids: Sequence[int] | NDArray[np.integer[Any]]) -> NDArray[np.float64]:
        """float64 logits of pool images ``ids``: ``(len(ids),)`` (the reference selection ranks by)."""
        return self.exact_rows(view.take(ids))


def reference_logits(
    classifier: ConceptClassifier, view: PoolView, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> NDArray[np.float32]:
    """Plain fp32 logits of the whole pool (``model(x)``, no tricks)."""
    out = np.empty(len(view), dtype=np.float32)
    for start, block in view.iter_chunks(chunk_rows):
        out[start : start + len(block)] = classifier.decision_function(block)
    return out


def exact_pool_logits(
    classifier: ConceptClassifier, view: PoolView, chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> NDArray[np.float64]:
    """float64 logits of the whole pool: the ground truth selection is exact against (slow)."""
    scorer: PoolScorer | DecisionScorer = (
        PoolScorer(classifier, chunk_rows=EXACT_BLOCK_ROWS, compute=_FP32_PLACEHOLDER)
        if classifier.linear_layers() is not None
        else DecisionScorer(classifier)
    )
    out = np.empty(len(view), dtype=np.float64)
    for start, block in view.iter_chunks(chunk_rows):
        out[start : start + len(block)] = scorer.exact_rows(block)
    return out


_FP32_PLACEHOLDER = compute_mod.Compute(compute_mod.FP32, compute_mod.TORCH, compute_mod.FP32, "reference", False)
