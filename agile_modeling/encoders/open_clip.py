"""open_clip image and text encoder, loaded once per process.

The image tower runs in one of several *precisions*, chosen by device and, on a CPU, by measured
speed (:mod:`agile_modeling.encoders.precision`), all in the same embedding space as the fp32 model
(cosine >= 0.999, checked at load on a calibration batch; a variant that fails the check falls back
to fp32): ``bf16`` weights, ``int8`` dynamic quantization of the matrix products (in ONNX Runtime,
:mod:`agile_modeling.encoders.onnx_int8`, or torch's fbgemm without it), ``fp16`` autocast on a GPU
(``cuda``, ``mps``), and ``fp32``, the reference.

Measured figures: ``benchmarks/results/embedding.md``. The text tower always runs in fp32.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from PIL import Image

from agile_modeling.encoders import onnx_int8
from agile_modeling.encoders.base import ImageEncoder, TextEncoder, l2_normalise
from agile_modeling.encoders.precision import DeviceUnavailableError, choose_precision, torch_int8
from agile_modeling.errors import EncoderUnavailableError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"

#: ``(model, preprocess, tokenizer)`` of one loaded open_clip model. open_clip ships no type
#: information, so the model (an ``open_clip.CLIP`` module, with ``visual`` and ``encode_text``) is Any.
ClipParts = tuple[Any, Callable[[Image.Image], torch.Tensor], Callable[[list[str]], torch.Tensor]]
#: an image tower: preprocessed pixels ``(b, 3, h, w)`` -> embeddings ``(b, dim)`` (a torch module or
#: an ONNX Runtime session behind the same call)
Tower = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class OpenClipSpec:
    """Which open_clip model to load.

    Attributes:
        model: an open_clip architecture name (``open_clip.list_models()``).
        pretrained: a pretrained tag (downloaded from the model hub on first use), a path to a local
            checkpoint file, or ``None`` for random weights (tests only: the scores mean nothing).
        device: torch device string.
    """

    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    device: str = "cpu"


RANDOM_WEIGHTS_SEED = 0

DEVICES = ("auto", "cpu", "cuda", "mps")
#: a faster variant must embed the calibration batch within this cosine of the fp32 tower
MIN_VARIANT_COSINE = 0.999


def _has_cuda() -> bool:
    return torch.cuda.is_available()


def _has_mps() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(requested: str | None, has_cuda: bool | None = None, has_mps: bool | None = None) -> str:
    """``auto`` -> ``cuda`` if present, else ``mps`` if present, else ``cpu``; an explicit device must exist.

    ``has_cuda`` / ``has_mps``: booleans overriding the detection (tests).
    """
    requested = (requested or "auto").strip().lower()
    cuda = _has_cuda() if has_cuda is None else has_cuda
    mps = _has_mps() if has_mps is None else has_mps
    base = requested.split(":", 1)[0]
    if base not in DEVICES:
        raise DeviceUnavailableError(f"unknown device {requested!r}: use one of {', '.join(DEVICES)}")
    if base == "auto":
        return "cuda" if cuda else "mps" if mps else "cpu"
    if base == "cpu":
        return "cpu"  # one CPU device: "cpu:0" is the same, and the code compares with "cpu"
    if base == "cuda" and not cuda:
        raise DeviceUnavailableError(
            f"device {requested!r} was asked for, but torch sees no CUDA GPU on this machine "
            f"(torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); use --device cpu or auto"
        )
    if base == "mps" and not mps:
        raise DeviceUnavailableError(
            f"device {requested!r} was asked for, but Apple's MPS backend is not available "
            "here; use --device cpu or auto"
        )
    return requested


@functools.lru_cache(maxsize=4)
def _load(spec: OpenClipSpec) -> ClipParts:
    import open_clip

    if spec.model not in open_clip.list_models():
        raise EncoderUnavailableError(
            f"open_clip has no model named {spec.model!r}; see open_clip.list_models() for the names."
        )
    pretrained = spec.pretrained
    if pretrained and (os.sep in pretrained or pretrained.endswith((".pt", ".bin", ".safetensors"))):
        if not Path(pretrained).is_file():
            raise EncoderUnavailableError(f"checkpoint file {pretrained!r} does not exist")
    try:
        # Random weights (no pretrained tag) are seeded: every process must build the same model, or
        # a pool embedded by one process and images scored by another would live in different spaces.
        # Outside inference mode even when the first use is inside it (encode_preprocessed,
        # encode_texts): parameters made there are inference tensors, which the ONNX export's tracer
        # cannot use.
        with torch.random.fork_rng(devices=[]), torch.inference_mode(False):
            torch.manual_seed(RANDOM_WEIGHTS_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(
                spec.model, pretrained=pretrained, device=spec.device
            )
    except EncoderUnavailableError:
        raise
    except Exception as exc:  # hub errors come as many types (OSError, RuntimeError, HTTP errors)
        raise EncoderUnavailableError(
            f"could not load open_clip {spec.model} weights {pretrained!r}: {exc}. "
            "Without network access, pass a local checkpoint file (--checkpoint PATH) or import "
            "precomputed embeddings instead (agile pool import-embeddings DIR)."
        ) from exc
    model.eval()
    tokenizer = open_clip.get_tokenizer(spec.model)
    log.info("loaded open_clip %s (%s)", spec.model, pretrained or "random weights")
    return model, preprocess, tokenizer


class OpenClipEncoder(ImageEncoder, TextEncoder):
    """Image and text towers of one open_clip model.

    The model is loaded on first use and shared by every encoder built with the same spec in
    this process, so a web worker or a Celery worker pays the load once.
    """

    def __init__(
        self,
        spec: OpenClipSpec = OpenClipSpec(),
        batch_size: int = 64,
        device: str | None = None,
        precision: str = "fp32",
        cpu_rates: Mapping[str, float] | None = None,
    ) -> None:
        """``device``: where the image tower runs (default ``spec.device``; ``auto`` picks a GPU if there
        is one); ``precision``: ``fp32`` (the reference, the default), ``auto`` (chosen by capability,
        see :func:`choose_precision`), ``bf16``, ``int8`` or ``fp16`` (GPU). Neither changes the
        embedding space nor :attr:`name`. ``cpu_rates`` overrides the CPU's measured speeds (tests)."""
        self.spec = spec
        self.batch_size = batch_size
        self.device = resolve_device(device or spec.device)
        self.precision, self.precision_reason = choose_precision(precision, self.device, cpu_rates)

    def with_runtime(
        self, device: str | None = None, precision: str | None = None, batch_size: int | None = None
    ) -> OpenClipEncoder:
        """The same model (same :attr:`name` and space) on another device or precision."""
        return OpenClipEncoder(
            self.spec, batch_size or self.batch_size, device or self.device, precision or self.precision
        )

    @property
    def _parts(self) -> ClipParts:
        return _loaded(self.spec)

    @property
    def name(self) -> str:
        return f"open_clip:{self.spec.model}:{self.spec.pretrained or 'random'}"

    @property
    def dim(self) -> int:
        return int(self._parts[0].visual.output_dim)

    @property
    def runtime(self) -> str:
        """``device/precision`` as used, e.g. ``cpu/bf16`` (after the load-time check)."""
        return f"{self.device}/{_locked_tower(self.spec, self.device, self.precision)[1]}"

    @property
    def decode_size(self) -> int:
        """Images larger than this on both sides may be decoded at a reduced JPEG scale (draft): the
        tower sees ``image_size`` pixels, so twice that keeps the resize's antialiasing intact."""
        size = self._parts[0].visual.image_size
        return 2 * int(size[0] if isinstance(size, (tuple, list)) else size)

    def preprocess_image(self, image: Image.Image) -> torch.Tensor:
        """The CPU part of embedding one RGB image (resize, crop, normalise): runs in decode workers."""
        return self._parts[1](image.convert("RGB"))

    @torch.inference_mode()
    def encode_preprocessed(self, batch: Sequence[torch.Tensor] | torch.Tensor) -> NDArray[np.float32]:
        """Embed images already passed through :meth:`preprocess_image`, ``batch_size`` at a time."""
        tower, precision = _locked_tower(self.spec, self.device, self.precision)
        if not len(batch):
            return np.zeros((0, self.dim), dtype=np.float32)
        out: list[NDArray[np.float32]] = []
        for start in range(0, len(batch), self.batch_size):
            part = batch[start : start + self.batch_size]
            x = part if isinstance(part, torch.Tensor) else torch.stack(list(part))
            out.append(_run_tower(tower, precision, x, self.device))
        return l2_normalise(np.concatenate(out))

    def encode_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        return self.encode_preprocessed([self.preprocess_image(im) for im in images])

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        model, _, tokenizer = self._parts
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = tokenizer(list(texts)).to(self.spec.device)
        return l2_normalise(model.encode_text(tokens).float().cpu().numpy())


def _run_tower(
    tower: Callable[[torch.Tensor], torch.Tensor], precision: str, x: torch.Tensor, device: str
) -> NDArray[np.float32]:
    if device.startswith("cuda"):
        x = x.pin_memory().to(device, non_blocking=True)
    elif device != "cpu":
        x = x.to(device)
    if precision == "bf16" and device == "cpu":
        return tower(x.to(torch.bfloat16)).float().numpy()
    if precision in ("fp16", "bf16"):
        with torch.autocast(device.split(":")[0], dtype=torch.float16 if precision == "fp16" else torch.bfloat16):
            return tower(x).float().cpu().numpy()
    return tower(x).float().cpu().numpy()


def _calibration_batch(size: int, n: int = 4) -> torch.Tensor:
    """Fixed smooth, photo-like test inputs (gradients, blobs and noise), normalised like CLIP's."""
    g = torch.Generator().manual_seed(1)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    imgs = []
    for i in range(n):
        c = torch.rand(3, 3, generator=g)
        base = c[:, :1, None] * xx + c[:, 1:2, None] * yy + c[:, 2:, None] * torch.sin(3 * (i + 1) * xx * yy)
        imgs.append(base + 0.2 * torch.randn(3, size, size, generator=g))
    return torch.stack(imgs)


def _int8_tower(visual: torch.nn.Module, image_size: int) -> Tower:
    """Dynamic int8: through ONNX Runtime where it is installed (faster, see ``onnx_int8``), else
    torch's ``quantize_dynamic`` of the Linear layers (fbgemm); an export that fails falls back too."""
    if onnx_int8.available():
        try:
            return onnx_int8.OnnxInt8Tower(visual, image_size)
        except Exception as exc:  # noqa: BLE001 - any exporter or runtime failure: torch's int8 still works
            log.warning("could not run the image tower in ONNX Runtime (%s): using torch's dynamic int8", exc)
    return torch_int8(visual)


_TOWER_LOCK = threading.Lock()
_LOAD_LOCK = threading.Lock()


def _loaded(spec: OpenClipSpec) -> ClipParts:
    """:func:`_load`, one thread at a time: concurrent first requests would each load the model
    (measured: 4 requests, 4 loads, 4.07 GB peak against 2.61 GB for one)."""
    with _LOAD_LOCK:
        return _load(spec)


def _locked_tower(spec: OpenClipSpec, device: str, precision: str) -> tuple[Tower, str]:
    """:func:`_image_tower`, one thread at a time: concurrent first requests of a threaded server
    would otherwise each build (and export) the same tower."""
    with _TOWER_LOCK:
        return _image_tower(spec, device, precision)


@functools.lru_cache(maxsize=8)
def _image_tower(spec: OpenClipSpec, device: str, precision: str) -> tuple[Tower, str]:
    """``(tower, precision used)``: the image tower of ``spec`` prepared for ``device`` and ``precision``,
    built once per process. A variant whose embeddings of a calibration batch are not within
    :data:`MIN_VARIANT_COSINE` of the fp32 tower's is replaced by the fp32 tower (logged)."""
    visual = _loaded(spec)[0].visual
    if device == "cpu" and precision == "fp32":
        return visual, "fp32"
    if precision == "int8" and not hasattr(visual, "transformer"):
        # a convolutional tower (open_clip's ResNets): ONNX Runtime's quantizer rejects its convolutions
        # and torch's int8 breaks its attention pool, so int8 would only cost an export and warnings
        log.info("int8 applies to transformer image towers; this %s tower runs in fp32", spec.model)
        return visual, "fp32"
    size = visual.image_size
    size = int(size[0] if isinstance(size, (tuple, list)) else size)
    tower: Tower
    if precision == "int8":
        tower = _int8_tower(visual, size)
    elif precision == "bf16" and device == "cpu":
        tower = copy.deepcopy(visual).to(torch.bfloat16).eval()
    else:
        tower = copy.deepcopy(visual).to(device).eval()
    if device != "cpu":
        return tower, precision  # the check runs where a GPU is: see benchmarks/bench_embedding.py
    x = _calibration_batch(size)
    with torch.inference_mode():
        ref = l2_normalise(visual(x).float().numpy())
        try:
            got = l2_normalise(_run_tower(tower, precision, x, device))
        except Exception as exc:  # noqa: BLE001 - a variant some architecture breaks (RN50's attention pool
            # under torch's int8): the fp32 tower still embeds in the same space
            log.warning("the %s image tower does not run on this model (%s): using fp32", precision, exc)
            return visual, "fp32"
    worst = float((ref * got).sum(axis=1).min())
    if worst < MIN_VARIANT_COSINE:
        log.warning(
            "the %s image tower is not close enough to fp32 (cosine %.5f < %.3f): using fp32",
            precision,
            worst,
            MIN_VARIANT_COSINE,
        )
        return visual, "fp32"
    log.info("image tower on %s in %s (calibration cosine to fp32 >= %.5f)", device, precision, worst)
    return tower, precision
