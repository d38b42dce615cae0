"""The zero-effort baseline: cosine similarity between each image and the concept's text."""

from __future__ import annotations

import numpy as np

# LAION-5B's human inspection (Schuhmann et al.), used by the paper's appendix G for CLIP.
CLIP_ZERO_SHOT_THRESHOLD = 0.28


def zero_shot_scores(images: np.ndarray, text: np.ndarray, chunk_rows: int = 1 << 18) -> np.ndarray:
    """Cosine similarity of every image ``(n, d)`` with the text vector ``(d,)``: ``(n,)`` float32.

    Vectors are expected L2-normalised (as the store keeps them), so the dot product is the cosine.
    """
    text = np.asarray(text, dtype=np.float32)
    out = np.empty(len(images), dtype=np.float32)
    for start in range(0, len(images), chunk_rows):
        out[start : start + chunk_rows] = np.asarray(images[start : start + chunk_rows], dtype=np.float32) @ text
    return out
