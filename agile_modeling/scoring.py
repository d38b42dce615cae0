"""Fast pool scoring: the MLP over every pool image in bf16 chunks, and exact fp32 re-scoring.

Why by hand instead of ``model(x)``: on these CPUs a bf16 matrix product runs several times
faster than fp32 (MKL) and fp16 compute is unusably slow; calling the module allocates new
tensors per chunk, which is 2-3x slower than reusing buffers. So each chunk of the float16
memory map is converted into a preallocated bf16 buffer (via fp32, see ``bf16``) and pushed
through ``addmm(out=)`` +
``relu_`` into preallocated activations. bf16 scores are approximate: selection re-scores its
frontier exactly with :func:`exact_logits` (see ``selection``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from tqdm import tqdm

from agile_modeling.bf16 import copy_fp16_to_bf16
from agile_modeling.classifier.mlp import MLPClassifier
from agile_modeling.store.embedding_store import PoolView

DEFAULT_CHUNK_ROWS = 1 << 13  # 8k rows: the activations stay in cache (fastest of 8k-64k here)


class PoolScorer:
    """Scores whole pools with one classifier, reusing its buffers between calls.

    Args:
        classifier: a fitted :class:`MLPClassifier`.
        chunk_rows: rows per chunk.
    """

    def __init__(self, classifier: MLPClassifier, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> None:
        self.classifier = classifier
        self.chunk_rows = chunk_rows
        layers = classifier.linear_layers()
        self._weights = [w.T.contiguous().to(torch.bfloat16) for w, _ in layers]  # (in, out)
        self._biases = [b.to(torch.bfloat16) for _, b in layers]
        dim = layers[0][0].shape[1]
        self._input = torch.empty((chunk_rows, dim), dtype=torch.bfloat16)
        self._staging = torch.empty((chunk_rows, dim), dtype=torch.float32)
        self._acts = [torch.empty((chunk_rows, w.shape[1]), dtype=torch.bfloat16) for w in self._weights]

    @torch.inference_mode()
    def approximate_logits(self, view: PoolView, progress: bool = False) -> np.ndarray:
        """bf16 logits of every pool image: ``(n,)`` float32, in id order."""
        out = np.empty(len(view), dtype=np.float32)
        out_t = torch.from_numpy(out)
        chunks = view.iter_chunks(self.chunk_rows)
        if progress:
            chunks = tqdm(chunks, total=-(-len(view) // self.chunk_rows), desc="scoring pool", unit="chunk")
        last = len(self._weights) - 1
        for start, block in chunks:
            m = len(block)
            x = copy_fp16_to_bf16(self._input, block, self._staging)
            for i, (w, b) in enumerate(zip(self._weights, self._biases)):
                y = self._acts[i][:m]
                torch.addmm(b, x, w, out=y)
                if i < last:
                    y.relu_()
                x = y
            out_t[start : start + m].copy_(x[:, 0])
        return out

    def exact_logits(self, view: PoolView, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """fp32 logits of pool images ``ids``: ``(len(ids),)`` float32."""
        return self.classifier.decision_function(view.take(ids))


def reference_logits(classifier: MLPClassifier, view: PoolView, chunk_rows: int = DEFAULT_CHUNK_ROWS) -> np.ndarray:
    """Plain fp32 logits of the whole pool (slow; the ground truth the fast path is tested against)."""
    out = np.empty(len(view), dtype=np.float32)
    for start, block in view.iter_chunks(chunk_rows):
        out[start : start + len(block)] = classifier.decision_function(block)
    return out
