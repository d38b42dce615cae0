"""Which precision an image tower runs in: by device, and on a CPU by measured speed.

Why measured and not read off the CPU flags: native bf16 is not always fast bf16. On a Sapphire
Rapids with AMX, ViT-B-32 with bf16 weights ran 5.6x fp32; on a Xeon with AVX512_BF16 but no AMX
(2-vCPU Emerald Rapids guest, 2026-12-04) it ran 17 images/s against 31 for fp32 and 48 for dynamic
int8, because oneDNN's AVX512_BF16 matrix products (110 GFLOP/s) were slower there than its fp32
ones (150-265). So the flags only say which variants are *candidates*; a short probe picks among
them (:func:`measured_rates`, once per process, about 0.3 s):

- ``fp32``: always a candidate, the reference;
- ``bf16``: where bf16 is native (AVX512_BF16, AMX, ARM BF16; emulated bf16 runs at 1-3 images/s);
- ``int8``: dynamic int8 quantization of the matrix products (ONNX Runtime where installed, else
  torch's fbgemm; ``onnx_int8``), where the CPU has int8 dot products (VNNI, AMX-INT8, ARM dot
  product) or AVX2 (torch's int8 on an AMD EPYC with AVX2 only: ViT-B-32 14.5 images/s against 10.1
  for fp32, ``benchmarks/results/embedding_avx2.md``).

The probe times a transformer's dominant product (a Linear of 768 -> 3,072 over 1,024 tokens, the
MLP of a ViT-B block) in each candidate's arithmetic, through torch (ONNX Runtime's int8 product runs
at the same speed; its tower is faster still by fusing the rest, which the probe does not credit). A variant is chosen
over fp32 only if it is :data:`MIN_SPEEDUP` times faster. Every variant keeps the embedding space:
the tower checks it against fp32 at load (``open_clip._image_tower``).
"""

from __future__ import annotations

import functools
import logging
import time
import warnings
from collections.abc import Callable, Mapping

import torch

from agile_modeling.errors import AgileError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "int8", "fp16")
INT8_DOT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8", "i8mm", "asimddp"})
#: CPUs where fbgemm's int8 kernels are candidates: int8 dot products, or AVX2's vpmaddubsw
INT8_FAST_FLAGS = INT8_DOT_FLAGS | {"avx2"}
#: a variant must be this much faster than fp32 on the probe to be chosen: the probe times the
#: Linear layers only, and the rest of the tower (attention, norms) gains less
MIN_SPEEDUP = 1.2
PROBE_SHAPE = (1024, 768, 3072)  # tokens, in, out: the MLP of a ViT-B block
PROBE_ROUNDS = 3


class DeviceUnavailableError(AgileError):
    """The device or precision asked for does not exist on this machine."""


def cpu_candidates(native_bf16: bool, int8_fast: bool) -> tuple[str, ...]:
    """The CPU precisions worth measuring, fp32 first."""
    return ("fp32",) + (("bf16",) if native_bf16 else ()) + (("int8",) if int8_fast else ())


def detected_candidates() -> tuple[str, ...]:
    """:func:`cpu_candidates` for this machine's CPU flags."""
    from agile_modeling.compute import CpuInfo

    cpu = CpuInfo.read()
    return cpu_candidates(cpu.native_bf16(), bool(cpu.flags & INT8_FAST_FLAGS))


def torch_int8(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``module`` with its Linear layers as torch's dynamic int8 (fbgemm): the int8 the
    probe measures, and the image tower's int8 where ONNX Runtime is not available."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notices; the kernels are current
        # torch leaves quantize_dynamic's parameters unannotated
        quantized: torch.nn.Module = torch.ao.quantization.quantize_dynamic(  # type: ignore[no-untyped-call]
            module, {torch.nn.Linear}, dtype=torch.qint8, inplace=False
        )
    return quantized.eval()


def _probe_step(kind: str, shape: tuple[int, int, int] = PROBE_SHAPE) -> Callable[[], object]:
    """One product of the probe shape in ``kind``'s arithmetic, as the tower variant runs it."""
    tokens, width, out = shape
    gen = torch.Generator().manual_seed(0)
    linear: torch.nn.Module = torch.nn.Linear(width, out)
    x = torch.randn(tokens, width, generator=gen)
    if kind == "bf16":
        linear, x = linear.to(torch.bfloat16), x.to(torch.bfloat16)
    elif kind == "int8":
        linear = torch_int8(torch.nn.Sequential(linear))
    elif kind != "fp32":
        raise ValueError(f"no CPU probe for precision {kind!r}")

    def step() -> object:
        with torch.inference_mode():
            return linear(x)

    return step


def _seconds(step: Callable[[], object]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


@functools.cache
def measured_rates(kinds: tuple[str, ...]) -> dict[str, float]:
    """``{kind: probe speed relative to fp32}`` for ``kinds`` (``fp32``, ``bf16``, ``int8``), measured
    once per process: the best call of :data:`PROBE_ROUNDS` interleaved rounds (a burst of load hits
    every kind alike; the best, not the median, since a preempted call says nothing about the kernel)."""
    steps = {}
    for kind in kinds:
        try:
            steps[kind] = _probe_step(kind)
            steps[kind]()  # first call: kernel selection, packing
        except Exception as exc:  # noqa: BLE001 - a kernel this build or CPU lacks: not a candidate
            if kind == "fp32":
                raise
            log.warning("the %s probe does not run here (%s): %s is not used", kind, exc, kind)
            steps.pop(kind, None)
    kinds = tuple(steps)
    best = dict.fromkeys(kinds, float("inf"))
    for _ in range(PROBE_ROUNDS):
        for kind, step in steps.items():
            best[kind] = min(best[kind], _seconds(step))
    fp32 = best.get("fp32", 1.0)
    relative = {kind: round(fp32 / max(seconds, 1e-9), 2) for kind, seconds in best.items()}
    log.info("image tower precision probe (speed relative to fp32): %s", relative)
    return relative


def choose_precision(
    requested: str | None, device: str, cpu_rates: Mapping[str, float] | None = None
) -> tuple[str, str]:
    """``(precision, why)`` of the image tower on ``device``.

    ``cpu_rates``: ``{precision: speed relative to fp32}`` of the CPU candidates (default: measured
    here once per process, :func:`measured_rates` over :func:`detected_candidates`); tests pass
    them to force each kind.
    """
    requested = str(requested or "auto").strip().lower()
    if requested not in PRECISIONS:
        raise DeviceUnavailableError(f"unknown precision {requested!r}: use one of {', '.join(PRECISIONS)}")
    device = str(device or "cpu").strip().lower()
    if not device.startswith("cpu"):
        if requested == "int8":
            raise DeviceUnavailableError("int8 (dynamic quantization) runs on the CPU only; use fp16 or fp32 on a GPU")
        if requested in ("auto", "fp16"):
            return "fp16", f"{device}: fp16 autocast"
        return requested, f"{device}: {requested} asked for"
    if requested == "fp16":
        raise DeviceUnavailableError("fp16 on the CPU is emulated (about 2 GFLOP/s): use auto, bf16, int8 or fp32")
    if requested != "auto":
        if requested == "bf16" and "bf16" not in (cpu_rates or detected_candidates()):
            log.warning("bf16 asked for on a CPU without native bf16: it is emulated and slower than fp32")
        return requested, f"cpu: {requested} asked for"
    rates = dict(cpu_rates) if cpu_rates is not None else measured_rates(detected_candidates())
    shown = ", ".join(f"{kind} {rate:.2f}" for kind, rate in rates.items())
    fp32 = rates.get("fp32", 1.0)
    best = max(rates, key=lambda kind: rates[kind])
    if best == "fp32" or rates[best] < MIN_SPEEDUP * fp32:
        return "fp32", f"cpu: no variant measured {MIN_SPEEDUP}x fp32 (speed relative to fp32: {shown})"
    return best, f"cpu: {best} measured fastest (speed relative to fp32: {shown})"
