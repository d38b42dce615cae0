"""The encoder interfaces: images and texts into one L2-normalised embedding space."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from PIL import Image


class TextEncoder(ABC):
    """Maps phrases into the shared image-text embedding space."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding dimension ``d``."""

    @abstractmethod
    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """Embed phrases.

        Returns:
            ``(len(texts), d)`` float32, every row L2-normalised.
        """


class ImageEncoder(ABC):
    """Maps decoded images into the shared image-text embedding space."""

    @property
    @abstractmethod
    def dim(self) -> int:
        """Embedding dimension ``d``."""

    @property
    @abstractmethod
    def name(self) -> str:
        """A stable identifier of the model (recorded with the embeddings it made)."""

    @abstractmethod
    def encode_images(self, images: Sequence[Image.Image]) -> NDArray[np.float32]:
        """Embed RGB images.

        Returns:
            ``(len(images), d)`` float32, every row L2-normalised.
        """


def l2_normalise(x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
    """Rows of ``x`` ``(n, d)`` scaled to unit length (zero rows stay zero), as float32."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    unit: NDArray[np.float32] = x / np.maximum(norms, 1e-12)  # numpy's stubs type this quotient as Any
    return unit
