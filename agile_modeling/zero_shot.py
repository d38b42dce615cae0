"""The zero-effort baseline: cosine similarity between each image and the concept's text."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from agile_modeling import compute as compute_mod

# LAION-5B's human inspection (Schuhmann et al.), used by the paper's appendix G for CLIP.
CLIP_ZERO_SHOT_THRESHOLD = 0.28


@torch.inference_mode()
def zero_shot_scores(
    images: NDArray[np.floating[Any]],
    text: NDArray[np.floating[Any]],
    chunk_rows: int = 1 << 14,
    compute: compute_mod.Compute | None = None,
) -> NDArray[np.float32]:
    """Cosine similarity of every image ``(n, d)`` with the text vector ``(d,)``: ``(n,)`` float32.

    Vectors are expected L2-normalised (as the store keeps them), so the dot product is the cosine.
    Always fp32 arithmetic (scores feed metrics, not a re-scored frontier): rows are converted
    chunk by chunk into one reused fp32 buffer (torch ``copy_``, 5-10x faster than numpy's
    ``astype``) and multiplied by the faster fp32 BLAS of :func:`agile_modeling.compute.current`.
    A matrix-vector product is memory-bound, so bf16 would not help even where it is native.
    """
    compute = compute or compute_mod.current()
    text = np.ascontiguousarray(np.asarray(text, dtype=np.float32))
    out = np.empty(len(images), dtype=np.float32)
    if len(images) == 0:
        return out
    buffer = torch.empty((min(chunk_rows, len(images)), len(text)), dtype=torch.float32)
    text_t = torch.from_numpy(text)
    for start in range(0, len(images), chunk_rows):
        block = np.asarray(images[start : start + chunk_rows])
        x = buffer[: len(block)]
        x.copy_(torch.from_numpy(np.ascontiguousarray(block)))
        if compute.blas == compute_mod.NUMPY:
            np.matmul(x.numpy(), text, out=out[start : start + len(block)])
        else:
            torch.mv(x, text_t, out=torch.from_numpy(out[start : start + len(block)]))
    return out
