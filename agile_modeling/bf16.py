"""float16 -> bfloat16 conversion through a float32 staging buffer.

Why: on these CPUs torch's direct fp16 -> bf16 ``copy_`` runs element by element (about 2.4 s
per 10M x 512 rows), while fp16 -> fp32 and fp32 -> bf16 are both vectorised: the two steps
together take about 0.5 s for the same rows (measured, see benchmarks/results/pool.md).
"""

from __future__ import annotations

import numpy as np
import torch


def copy_fp16_to_bf16(dst: torch.Tensor, src: np.ndarray, staging: torch.Tensor) -> torch.Tensor:
    """Write ``src`` ``(m, d)`` float16 into ``dst[:m]`` as bfloat16; returns ``dst[:m]``.

    ``staging`` is a float32 buffer with at least ``m`` rows, reused across calls.
    """
    m = len(src)
    stage = staging[:m]
    stage.copy_(torch.from_numpy(np.asarray(src)))
    out = dst[:m]
    out.copy_(stage)
    return out
