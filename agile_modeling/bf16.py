"""Low-precision conversion, and the proven rounding bound of one computed layer ``a -> W a + b``.

Conversion: on these CPUs torch's direct fp16 -> bf16 ``copy_`` runs element by element (about
2.4 s per 10M x 512 rows), while fp16 -> fp32 and fp32 -> bf16 are both vectorised: the two steps
together take about 0.5 s for the same rows (measured, see benchmarks/results/pool.md).

The bound (full derivation in ``docs/exactness.md``). Rounding model: IEEE round-to-nearest, unit
roundoff ``u = 2**-p`` (bf16 ``2**-8``, fp32 ``2**-24``, fp64 ``2**-53``); a rounded value is
``fl(v) = v (1 + d)``, ``|d| <= u``, up to an absolute ``TINY`` where hardware flushes subnormals.
Sums of ``n`` terms accumulated in precision ``u_acc``, in ANY order, satisfy
``|fl(sum) - sum| <= gamma_n * sum |terms|`` with ``gamma_n = n u_acc / (1 - n u_acc)``
(Higham, Accuracy and Stability of Numerical Algorithms, 3.1); products of two bf16 numbers are
exact in fp32, products of fp32 numbers are covered by the same gamma.

One unit ``i`` of a layer: true ``z_i = w_i . a + b_i``; computed ``zh_i = round_out(fl(wh_i . ah + bh_i))``
with ``ah`` the computed input, ``wh_i``/``bh_i`` the weights rounded to the compute dtype. Then

    z_i - zh_i = w_i.(a - ah) + (w_i - wh_i).ah + (b_i - bh_i) + [wh_i.ah + bh_i - fl(...)] + [fl(...) - zh_i]

and each bracket is bounded without looking at the row (Cauchy-Schwarz, ``||a|| <= A``):

    |w_i.(a - ah)|          <= sum_j |w_ij| e_j        (e_j: bound on |a_j - ah_j|; first layer ||w_i|| u_in ||x||)
    |(w_i - wh_i).ah|       <= ||w_i - wh_i|| (A + E)  (E = ||e||_2, the weights' rounding measured exactly)
    |b_i - bh_i|            measured exactly
    accumulation            <= gamma_{n+1} (||wh_i|| (A + E) + |bh_i|) + (n + 2) TINY
    output rounding         <= (2 u_out + u_out^2) (||w_i|| A + |b_i| + the four terms above) + 2 TINY
                               (two roundings: ``addmm`` may round the product and then the sum with the bias)

For unit-norm bf16 inputs and weights the first two reduce to the familiar ``(2u + u^2) ||x|| ||w||``.
ReLU is 1-Lipschitz, so ``|relu(z) - relu(zh)| <= |z - zh|``: the next layer's ``e`` is this layer's
bound, and ``||relu(z)|| <= min(||W||_2 A + ||b||, ||(||w_i|| A + |b_i|)_i||)`` bounds its input norm.
The same terms also bound the error VECTOR's 2-norm through operator norms,
``||W (a - ah)|| <= ||W||_2 E`` and ``||(W - Wh) ah|| <= ||W - Wh||_2 (A + E)``; the smaller of the
two bounds is carried at every layer (the per-unit one alone grows by ``||w_i||_1``, ~5x, per layer).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from numpy.typing import NDArray

U_BF16 = 2.0**-8
U_FP32 = 2.0**-24
U_FP64 = 2.0**-53
TINY_FP32 = 2.0**-126  # smallest normal fp32 (= bf16): what flush-to-zero can lose per operation
TINY_FP64 = 2.0**-1022
#: fp64 norms and sums used to evaluate the bound are themselves rounded; this relative slack
#: (far above their error, about 1e-13) keeps the bound an upper bound.
SLACK = 1.0 + 1e-9
#: Rows of a pool are L2-normalised before float16 storage (the store's contract); fp16 rounding
#: moves each element by at most 2**-11 relatively (plus 2**-25 absolutely for subnormals), so
#: ``||x|| <= 1 + 2**-11 + sqrt(d) 2**-25`` for d <= 4096: 1 + 2**-9 covers it.
UNIT_ROW_NORM = 1.0 + 2.0**-9


def gamma(n: int, u: float) -> float:
    """``n u / (1 - n u)``: the relative error bound of an ``n``-term sum or dot product."""
    if n * u >= 1:
        raise ValueError(f"gamma_{n} undefined for u={u}")
    return n * u / (1 - n * u)


@dataclass(frozen=True)
class Precision:
    """How a sweep computes one layer.

    ``u_in``: rounding of the first layer's input (fp16 -> bf16: 2**-8; fp16 -> fp32/fp64 is exact).
    ``weights``: the torch dtype weights are rounded to (the rounding is measured, not assumed).
    ``u_acc``/``tiny``: accumulation precision. ``u_out``: rounding of each layer's output (bf16
    activations 2**-8; fp32/fp64 outputs are the accumulator itself: 0).
    """

    name: str
    u_in: float
    weights: torch.dtype
    u_acc: float
    u_out: float
    tiny: float


BF16_PRECISION = Precision("bf16", U_BF16, torch.bfloat16, U_FP32, U_BF16, TINY_FP32)
FP32_PRECISION = Precision("fp32", 0.0, torch.float32, U_FP32, 0.0, TINY_FP32)
FP64_PRECISION = Precision("fp64", 0.0, torch.float64, U_FP64, 0.0, TINY_FP64)
PRECISIONS = {p.name: p for p in (BF16_PRECISION, FP32_PRECISION, FP64_PRECISION)}


def rounded(t: torch.Tensor, dtype: torch.dtype) -> NDArray[np.float64]:
    """``t`` rounded to ``dtype`` (as the sweep stores it), returned exactly as float64."""
    return t.detach().to(dtype).to(torch.float64).numpy()


def spectral_norm(w: NDArray[np.float64]) -> float:
    """Upper bound on ``||w||_2``: the largest eigenvalue of the small Gram matrix (fp64, slack added);
    5-30x cheaper than an SVD of the layer."""
    gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    top = float(np.linalg.eigvalsh(gram)[-1]) if gram.size else 0.0
    return float(np.sqrt(max(top, 0.0) * SLACK + 1e-300)) * SLACK


def layers_error_bound(
    layers: list[tuple[torch.Tensor, torch.Tensor]],
    precision: Precision,
    row_norm: float = UNIT_ROW_NORM,
    relu: bool = True,
) -> NDArray[np.float64]:
    """Bound on ``|computed - exact|`` of every output unit of ``layers`` (ReLU between), for any
    input row with ``||x|| <= row_norm``: ``(out,)`` float64.

    ``layers``: ``[(W (out, in), b (out,)), ...]`` as the model holds them (fp32); the exact
    reference is the same network in real arithmetic on the float16 row. Two valid bounds are
    carried through the layers and the smaller used at each step: per unit (``|W| e``) and on
    the 2-norm of the error vector (``||W||_2 E``: the operator norm of trained layers is about
    1, so this one grows additively instead of by ``||w_i||_1`` per layer).
    """
    big_a = float(row_norm)  # bound on ||a||_2 of the true activations
    e_vec: NDArray[np.float64] | None = None  # per-unit bound on |a_j - ah_j|
    e_norm = precision.u_in * big_a  # bound on ||a - ah||_2
    u_out = 2 * precision.u_out + precision.u_out**2  # addmm may round twice (product, then + bias)
    tiny_out = 2 * precision.tiny if precision.u_out else 0.0
    err = np.zeros(0)
    for index, (w_t, b_t) in enumerate(layers):
        w = w_t.detach().to(torch.float64).numpy()
        b = b_t.detach().to(torch.float64).numpy()
        wh, bh = rounded(w_t, precision.weights), rounded(b_t, precision.weights)
        out, n = w.shape
        g = gamma(n + 1, precision.u_acc)
        w_norm = np.linalg.norm(w, axis=1) * SLACK
        wh_norm = np.linalg.norm(wh, axis=1) * SLACK
        dw_norm = np.linalg.norm(w - wh, axis=1) * SLACK
        db = np.abs(b - bh)
        op, dw_op = spectral_norm(w), spectral_norm(w - wh)
        a_hat = big_a + e_norm
        # per unit
        propagated = w_norm * e_norm
        if e_vec is not None:
            propagated = np.minimum(propagated, (np.abs(w) @ e_vec) * SLACK)
        acc = g * (wh_norm * a_hat + np.abs(bh)) * SLACK + (n + 2) * precision.tiny
        pre = propagated + dw_norm * a_hat + db + acc
        z_unit = w_norm * big_a + np.abs(b)
        err = (pre + u_out * (z_unit + pre) + tiny_out) * SLACK
        # on the 2-norm of the vector
        z_norm = min(op * big_a + float(np.linalg.norm(b)), float(np.linalg.norm(z_unit))) * SLACK
        pre_norm = (
            min(
                float(np.linalg.norm(pre)),
                op * e_norm + dw_op * a_hat + float(np.linalg.norm(db)) + float(np.linalg.norm(acc)),
            )
            * SLACK
        )
        err_norm = (pre_norm + u_out * (z_norm + pre_norm) + np.sqrt(out) * tiny_out) * SLACK
        if index < len(layers) - 1 and relu:  # ReLU is 1-Lipschitz per element
            big_a = z_norm
            e_vec, e_norm = err, min(float(np.linalg.norm(err)) * SLACK, err_norm)
    return err


def dot_error_bound(dim: int, query_norm: float, precision: Precision, row_norm: float = UNIT_ROW_NORM) -> float:
    """Bound on ``|computed x.q - exact x.q|`` for any row ``||x|| <= row_norm`` and a query of
    norm ``query_norm`` (rounded to ``precision``), as one layer of one unit without bias."""
    big_a, n = float(row_norm), dim
    q_round = U_BF16 if precision.weights == torch.bfloat16 else 0.0
    e_in = precision.u_in * big_a
    a_hat = big_a + e_in
    qh = query_norm * (1 + q_round)
    pre = (
        query_norm * e_in
        + query_norm * q_round * a_hat
        + gamma(n, precision.u_acc) * qh * a_hat
        + (n + 1) * precision.tiny
    )
    return float((pre + precision.u_out * (query_norm * big_a + pre) + precision.tiny) * SLACK)


def copy_fp16_to_bf16(dst: torch.Tensor, src: NDArray[np.float16], staging: torch.Tensor) -> torch.Tensor:
    """Write ``src`` ``(m, d)`` float16 into ``dst[:m]`` as bfloat16; returns ``dst[:m]``.

    ``staging`` is a float32 buffer with at least ``m`` rows, reused across calls.
    """
    m = len(src)
    stage = staging[:m]
    stage.copy_(torch.from_numpy(np.asarray(src)))
    out = dst[:m]
    out.copy_(stage)
    return out


def copy_fp16_to_fp32(dst: torch.Tensor, src: NDArray[np.float16]) -> torch.Tensor:
    """Write ``src`` ``(m, d)`` float16 into ``dst[:m]`` as float32 (exact); returns ``dst[:m]``."""
    out = dst[: len(src)]
    out.copy_(torch.from_numpy(np.asarray(src)))
    return out
