"""open_clip image and text encoder, loaded once per process."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from agile_modeling.encoders.base import ImageEncoder, TextEncoder, l2_normalise
from agile_modeling.errors import EncoderUnavailableError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "laion2b_s34b_b79k"


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


@functools.lru_cache(maxsize=4)
def _load(spec: OpenClipSpec):
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
        with torch.random.fork_rng(devices=[]):
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

    def __init__(self, spec: OpenClipSpec = OpenClipSpec(), batch_size: int = 64) -> None:
        self.spec = spec
        self.batch_size = batch_size

    @property
    def _parts(self):
        return _load(self.spec)

    @property
    def name(self) -> str:
        return f"open_clip:{self.spec.model}:{self.spec.pretrained or 'random'}"

    @property
    def dim(self) -> int:
        return int(self._parts[0].visual.output_dim)

    @torch.inference_mode()
    def encode_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        model, preprocess, _ = self._parts
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = torch.stack([preprocess(im.convert("RGB")) for im in images[start : start + self.batch_size]])
            out.append(model.encode_image(batch.to(self.spec.device)).float().cpu().numpy())
        if not out:
            return np.zeros((0, self.dim), dtype=np.float32)
        return l2_normalise(np.concatenate(out))

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        model, _, tokenizer = self._parts
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        tokens = tokenizer(list(texts)).to(self.spec.device)
        return l2_normalise(model.encode_text(tokens).float().cpu().numpy())
