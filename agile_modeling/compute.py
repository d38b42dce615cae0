"""Which arithmetic the numeric core runs on this machine: chosen by measured capability, once per process.

Why: a bf16 matrix product is 5-20x faster than fp32 on CPUs with native bf16 (AVX512_BF16, AMX,
ARM BF16) and about 80x SLOWER where bf16 is emulated (AVX2-only CPUs: 1 GFLOP/s against 78 for
fp32, measured on an AMD EPYC Zen 3). So the choice is made by capability, not assumed:

1. detect native bf16 from the CPU flags (``/proc/cpuinfo``; ``avx512_bf16`` / ``amx_bf16`` on
   x86, ``bf16`` in ARM's Features);
2. time a short probe of one sweep step (4096 rows through 512-128-128-128-1, the best call of three interleaved rounds, about 0.1-0.2 s in all) for each candidate: fp32 through
   torch (MKL / oneDNN) and through numpy's BLAS, and bf16 through torch only where bf16 is native;
3. use bf16 only where it beats the fastest fp32 by :data:`BF16_MIN_SPEEDUP` (its scores then need
   a wider exact frontier, see ``scoring``), otherwise fp32 through the faster BLAS.
   Native is not enough: on a Xeon with AVX512_BF16 but no AMX, oneDNN's bf16 products ran at 0.6x
   fp32 (148 against 220-266 GFLOP/s, 2026-12-04), and the probe keeps fp32 there.

The pool sweep may still run fp32 on a bf16 machine: ``scoring.PoolScorer`` sweeps in fp32 a model
whose proven bf16 bound is too wide for a small exact frontier (large-gain models). Split precision
(bf16x3, as in oneDNN's fp32 math mode and JAX's HIGHEST precision) would keep bf16 units busy with an
fp32-grade bound, but torch has no bf16 x bf16 -> fp32 GEMM on CPU and the split's extra passes cost
more than the fp32 product here (measured: 25 ms against 8.9 ms per 8,192 rows; ``docs/exactness.md``).

The mode (``auto``, ``bf16``, ``fp32``) is a parameter: the composition roots (CLI, worker, ML
backend) read ``AGILE_COMPUTE`` and call :func:`configure`; the core never reads the environment.
Whatever the mode, results are exact (see ``docs/exactness.md``): the backend changes speed only.

Training threads are chosen here too (:func:`training_threads`): torch's default (one thread per
core) oversubscribes a busy 2-core machine (a fit took 20-26 s with 2 threads under load and 3-7 s
with 1), so training uses one thread unless told otherwise (``AGILE_TORCH_THREADS``).
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

AUTO, BF16, FP32 = "auto", "bf16", "fp32"
MODES = (AUTO, BF16, FP32)
TORCH, NUMPY = "torch", "numpy"
#: bf16 must beat the fastest fp32 GEMM by this factor to be chosen (it costs a second conversion
#: per chunk and a wider frontier to re-score).
BF16_MIN_SPEEDUP = 1.5
PROBE_SHAPE = (4096, 512, 128)
PROBE_ROUNDS = 3
PROBE_RETRY_ROUNDS = 3  # more rounds, only where native bf16 measured slower than it should
X86_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})
ARM_BF16_FLAGS = frozenset({"bf16", "svebf16"})


@dataclass(frozen=True)
class CpuInfo:
    """What the detector looks at (fakeable in tests)."""

    model: str
    flags: frozenset[str]
    machine: str
    torch_capability: str

    @classmethod
    def read(cls, cpuinfo: str | None = None, machine: str | None = None) -> CpuInfo:
        """This machine's CPU, from ``/proc/cpuinfo`` (or the text given)."""
        if cpuinfo is None:
            try:
                cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
            except OSError:
                cpuinfo = ""
        model, flags = platform.processor() or "unknown", set[str]()
        for line in cpuinfo.splitlines():
            key, _, value = line.partition(":")
            key = key.strip().lower()
            if key in ("model name", "cpu model", "hardware") and model in ("unknown", "", "x86_64", "aarch64"):
                model = value.strip()
            elif key in ("flags", "features") and not flags:
                flags = set(value.split())
        try:
            capability = torch.backends.cpu.get_cpu_capability()
        except Exception:  # noqa: BLE001 - older torch
            capability = "unknown"
        return cls(model, frozenset(flags), machine or platform.machine(), capability)

    def native_bf16(self) -> bool:
        """True where the CPU has bf16 arithmetic instructions (not emulation)."""
        arch = self.machine.lower()
        if arch in ("aarch64", "arm64"):
            return bool(self.flags & ARM_BF16_FLAGS)
        return bool(self.flags & X86_BF16_FLAGS)


@dataclass(frozen=True)
class Compute:
    """The chosen backend.

    ``dtype``: what the pool sweeps (scoring, the exact index) compute in, ``bf16`` or ``fp32``.
    ``blas``: who runs fp32 matrix products (``torch`` or ``numpy``), the faster one measured.
    """

    dtype: str
    blas: str
    mode: str
    reason: str
    native_bf16: bool
    probe_gflops: dict[str, float] = field(default_factory=dict)
    cpu_model: str = ""
    torch_capability: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _sweep_step(kind: str, shape: tuple[int, int, int]) -> Callable[[], object]:
    """One chunk of a pool sweep as ``scoring.PoolScorer`` runs it: ``(m, k)`` rows through layers
    ``k -> n -> n -> n -> 1`` (product, bias, ReLU) on preallocated buffers, in ``kind``'s arithmetic.

    Why the whole chain and not the first product alone: the BLAS that wins the product can lose the
    step (measured on an AMD EPYC, AVX2: numpy's product 98 GFLOP/s against torch's 75, yet a 1M
    sweep took 5.0 s through numpy and 3.5 s through torch).
    """
    m, k, n = shape
    widths = [k, n, n, n, 1]
    x = np.full((m, k), 0.03125, dtype=np.float32)  # values do not change the speed (no subnormals)
    weights = [np.full((a, b), 0.01 if b > 1 else -0.5, dtype=np.float32) for a, b in zip(widths, widths[1:])]
    biases = [np.full(b, 0.01, dtype=np.float32) for b in widths[1:]]
    last = len(weights) - 1
    if kind == "fp32-numpy":
        acts = [np.empty((m, b), np.float32) for b in widths[1:]]

        def run_numpy() -> None:
            a = x
            for i, (w, b, y) in enumerate(zip(weights, biases, acts)):
                np.matmul(a, w, out=y)
                y += b
                if i < last:
                    np.maximum(y, 0.0, out=y)
                a = y

        return run_numpy
    dtype = torch.bfloat16 if kind == BF16 else torch.float32
    tx = torch.from_numpy(x).to(dtype)
    tw = [torch.from_numpy(w).to(dtype) for w in weights]
    tb = [torch.from_numpy(b).to(dtype) for b in biases]
    tacts = [torch.empty((m, b), dtype=dtype) for b in widths[1:]]

    def run_torch() -> None:
        with torch.inference_mode():
            a = tx
            for i, (w, b, y) in enumerate(zip(tw, tb, tacts)):
                torch.addmm(b, a, w, out=y)
                if i < last:
                    y.relu_()
                a = y

    return run_torch


def probe_gflops(
    kind: str, shape: tuple[int, int, int] = PROBE_SHAPE, min_calls: int = 4, budget_s: float = 0.02
) -> float:
    """GFLOP/s of one sweep step (:func:`_sweep_step`): ``kind`` in ``bf16``, ``fp32-torch``, ``fp32-numpy``.

    The best call of at least ``min_calls`` (and up to ``budget_s`` seconds, at most 40 calls).
    The best, not the median: on a shared 2-core machine a call whose second thread is preempted
    takes a scheduler quantum (measured: bf16 calls alternating between 50 and 1,800 GFLOP/s),
    which says nothing about the kernel.
    """
    m, k, n = shape
    run = _sweep_step(kind, shape)
    flops = 2.0 * m * (k * n + 2 * n * n + n)
    run()  # first call: kernel selection / JIT
    best, calls, began = float("inf"), 0, time.perf_counter()
    while calls < min_calls or (time.perf_counter() - began < budget_s and calls < 40):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
        calls += 1
    return flops / max(best, 1e-9) / 1e9


def parse_mode(value: str | None) -> str:
    """``AGILE_COMPUTE``'s value checked: ``auto`` (also for empty/None), ``bf16`` or ``fp32``."""
    mode = (value or AUTO).strip().lower()
    if mode not in MODES:
        raise ValueError(f"AGILE_COMPUTE must be one of {', '.join(MODES)}; got {value!r}")
    return mode


def choose(mode: str = AUTO, cpu: CpuInfo | None = None, probe: Callable[[str], float] = probe_gflops) -> Compute:
    """Decide the backend for ``mode`` (not cached; see :func:`current`)."""
    mode = parse_mode(mode)
    cpu = cpu or CpuInfo.read()
    native = cpu.native_bf16()
    kinds = ["fp32-torch", "fp32-numpy"] + ([BF16] if native and mode == AUTO else [])
    rates = dict.fromkeys(kinds, 0.0)
    for _ in range(PROBE_ROUNDS):  # interleaved rounds: a burst of load hits every kind alike
        for kind in kinds:
            rates[kind] = max(rates[kind], probe(kind))
    # On a loaded machine a whole round can be preempted (measured 2026-12-02: bf16 probed at 46
    # GFLOP/s at start-up, 864 a minute later): where native bf16 loses, look again before deciding.
    extra = 0
    while (
        BF16 in rates
        and rates[BF16] < BF16_MIN_SPEEDUP * max(rates["fp32-torch"], rates["fp32-numpy"])
        and extra < PROBE_RETRY_ROUNDS
    ):
        extra += 1
        for kind in kinds:
            rates[kind] = max(rates[kind], probe(kind))
    blas = NUMPY if rates["fp32-numpy"] > rates["fp32-torch"] else TORCH
    best_fp32 = max(rates["fp32-torch"], rates["fp32-numpy"])
    if mode == FP32:
        dtype, reason = FP32, "forced (AGILE_COMPUTE=fp32)"
    elif mode == BF16:
        dtype, reason = BF16, "forced (AGILE_COMPUTE=bf16)" + ("" if native else "; this CPU has no native bf16: slow")
    elif not native:
        dtype, reason = FP32, "no native bf16 on this CPU (bf16 would be emulated)"
    else:
        if rates[BF16] >= BF16_MIN_SPEEDUP * best_fp32:
            dtype, reason = BF16, f"native bf16 measured {rates[BF16] / best_fp32:.1f}x the fastest fp32"
        else:
            dtype, reason = FP32, f"native bf16 but only {rates[BF16] / best_fp32:.1f}x fp32 here"
    return Compute(
        dtype, blas, mode, reason, native, {k: round(v, 1) for k, v in rates.items()}, cpu.model, cpu.torch_capability
    )


_lock = threading.Lock()
_mode = AUTO
_threads: int | None = None
_cache: dict[str, Compute] = {}


def configure(mode: str | None = None, training_threads: int | str | None = None) -> None:
    """Set the process's compute mode and training threads (called by the composition roots).

    ``mode`` None keeps the current one. Each mode's choice is made once and cached.
    ``training_threads`` None keeps the current setting; 0 or "" means the default.
    """
    global _mode, _threads
    with _lock:
        if mode is not None:
            _mode = parse_mode(mode)
        if training_threads is not None:
            value = int(training_threads) if str(training_threads).strip() else 0
            if value < 0:
                raise ValueError(f"AGILE_TORCH_THREADS must be a positive integer; got {training_threads!r}")
            _threads = value or None


def current() -> Compute:
    """The process's backend: chosen on first use, then cached."""
    with _lock:
        if _mode not in _cache:
            _cache[_mode] = choose(_mode)
        return _cache[_mode]


@contextmanager
def forced(mode: str) -> Iterator[Compute]:
    """Run a block under ``mode`` (tests and benchmarks), restoring the previous choice after."""
    global _mode
    with _lock:
        saved = _mode
    configure(mode)
    try:
        yield current()
    finally:
        with _lock:
            _mode = saved


#: Training threads unless configured. One, deliberately: training a 3x128 MLP is hundreds of
#: small products (256 x 512 @ 512 x 128) where a second thread gained 18% on an idle 2-core
#: machine (1.41 s against 1.71 s for 600 labels) but cost 4-7x when the other core was busy;
#: and a fixed count keeps a fit reproducible (the sum order of a product depends on the threads).
DEFAULT_TRAINING_THREADS = 1


def training_threads() -> int:
    """Threads :meth:`MLPClassifier.fit` trains with: the configured number
    (``AGILE_TORCH_THREADS`` at the composition root), else :data:`DEFAULT_TRAINING_THREADS`."""
    return _threads or DEFAULT_TRAINING_THREADS


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block."""
    before = torch.get_num_threads()
    if n != before:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
