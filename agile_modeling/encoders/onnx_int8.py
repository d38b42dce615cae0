"""An image tower as dynamic int8 in ONNX Runtime: the CPU ``int8`` precision where onnxruntime is installed.

Why ONNX Runtime and not only torch's ``quantize_dynamic``: both quantize the matrix products'
weights to int8 and the activations per call, and their products run at the same speed (a
1,024 x 768 @ 768 x 3,072 int8 product: 223 against 215 per second), but ONNX Runtime also fuses
the rest of the transformer (attention, layer norms, GELU): ViT-B-32 ran 44-53 images/s against
34-38 for torch's int8 and 20-27 for torch's fp32, interleaved, on a 2-vCPU Xeon with AVX512-VNNI
(2026-12-04; ``benchmarks/results/embedding_avx512bf16.md``). The embedding space is kept: the
tower is checked against fp32 at load like every variant (``open_clip._image_tower``).

The tower is exported (torch's TorchScript-based ONNX exporter, opset 17, any batch size) and
quantized into a temporary folder when first needed, about 7-13 s on 2 cores and about 1.2 GB more
memory at its peak (ViT-B-32), once per process; the session keeps the model in memory and the
files are removed (those of a process killed mid-export by the next export). Nothing is cached on
disk, so nothing can go stale or be planted by another user.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)

OPSET = 17
#: temporary folders are named ``agile-onnx-<pid>-<random>``, so that a later process can remove those
#: of a process that was killed mid-export (336 MB for ViT-B-32) and never cleaned up
FOLDER_PREFIX = "agile-onnx-"


def available() -> bool:
    """True where onnxruntime and onnx (its quantizer's dependency) import. Any failure counts as
    absent (a protobuf version clash raises TypeError, a broken shared library OSError): torch's
    int8 is then used, and the reason logged."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except Exception as exc:  # noqa: BLE001 - see the docstring
        if not isinstance(exc, ImportError):
            log.warning("onnxruntime is installed but does not load (%s): int8 runs in torch", exc)
        return False
    return True


def remove_folders_of_dead_processes(root: Path | None = None) -> list[Path]:
    """Remove this prefix's temporary folders whose process no longer exists; returns them."""
    root = Path(root or tempfile.gettempdir())
    removed = []
    for folder in root.glob(f"{FOLDER_PREFIX}*-*"):
        pid = folder.name.removeprefix(FOLDER_PREFIX).split("-", 1)[0]
        if folder.is_symlink() or not folder.is_dir() or not pid.isdigit() or _alive(int(pid)):
            continue  # a link or a file under our prefix is not ours: left alone
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive, and not ours to clean
        return True
    return True


class _QuantizerAdvice(logging.Filter):
    """onnxruntime's quantizer logs to the root logger: advice on every call ("Please consider to run
    pre-processing before quantization") and hundreds of INFO lines per tower ("Ignore MatMul due to
    non constant B"), about the tool, not for our users. Only records logged on the root logger
    itself pass this filter (our modules log on their own loggers)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING and "pre-processing before quantization" not in record.getMessage()


class OnnxInt8Tower:
    """A callable ``(b, 3, h, w) float32 tensor -> (b, dim) float32 tensor``, like the torch tower it
    was made from, running as dynamic int8 in ONNX Runtime on ``threads`` threads."""

    def __init__(self, tower: torch.nn.Module, image_size: int, threads: int | None = None) -> None:
        import onnxruntime
        from onnxruntime.quantization import QuantType, quantize_dynamic

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        # spinning worker threads would take the cores the decode threads need between batches
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        remove_folders_of_dead_processes()
        advice = _QuantizerAdvice()
        with tempfile.TemporaryDirectory(prefix=f"{FOLDER_PREFIX}{os.getpid()}-") as folder:
            fp32_path, int8_path = Path(folder) / "tower.onnx", Path(folder) / "tower.int8.onnx"
            # Built outside inference mode (the first build usually happens inside it, in
            # encode_preprocessed): the tracer cannot use inference tensors. With gradients off,
            # nn.MultiheadAttention would take its fused fast path (aten::_native_multi_head_attention),
            # which the exporter cannot write.
            with warnings.catch_warnings(), torch.inference_mode(False), torch.enable_grad():
                warnings.simplefilter("ignore")  # the exporter's tracer warnings about Python control flow
                example = torch.zeros(1, 3, image_size, image_size)
                torch.onnx.export(
                    tower,
                    (example,),
                    str(fp32_path),
                    input_names=["pixels"],
                    output_names=["embedding"],
                    dynamic_axes={"pixels": {0: "batch"}, "embedding": {0: "batch"}},
                    opset_version=OPSET,
                    dynamo=False,
                )
            logging.getLogger().addFilter(advice)
            try:
                quantize_dynamic(str(fp32_path), str(int8_path), weight_type=QuantType.QInt8)
            finally:
                logging.getLogger().removeFilter(advice)
            self._session: Any = onnxruntime.InferenceSession(
                str(int8_path), options, providers=["CPUExecutionProvider"]
            )
        log.info("image tower exported to ONNX Runtime as dynamic int8 (%d threads)", options.intra_op_num_threads)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        batch = np.ascontiguousarray(pixels.detach().float().numpy())
        return torch.from_numpy(self._session.run(None, {"pixels": batch})[0])
