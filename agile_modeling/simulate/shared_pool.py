"""Put the shared real embeddings into a workspace's pool, so the service runs on real data offline.

- :func:`import_shared_pool`: the simulation's pool (every val and few-shot row, in the order
  :func:`load_shared_data` gives them), so that a workspace and ``agile simulate`` see the same
  image ids and a session driven through Label Studio can be compared with the simulation.
- :func:`import_cifar_demo`: the 500 CIFAR-10 test images that come with their real pixels, written
  as PNG files, so the images of a demo are visible in Label Studio.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image

from agile_modeling.simulate.data import SharedData, find_data_dir
from agile_modeling.store.embedding_store import EmbeddingStore

SHARED_ENCODER = "openai-clip-ViT-B-32 (shared precomputed embeddings)"
DEMO_IMAGE_SIZE = 160  # CIFAR images are 32x32; enlarged so a person can judge them in the UI


def import_shared_pool(store: EmbeddingStore, data: SharedData) -> int:
    """Append every pool row (``shared://<dataset>/<row>`` URIs); returns how many were new."""
    pool = data.pool
    uris = [f"shared://{d}/{i}" for i, d in enumerate(pool.dataset)]
    captions = [pool.class_name(i) for i in range(len(pool))]
    return len(store.append(pool.x, uris, [f"shared-pool:{i}" for i in range(len(pool))], captions))


def import_cifar_demo(store: EmbeddingStore, image_dir: str | Path, data_dir: str | Path | None = None) -> int:
    """Write the 500 CIFAR-10 images as PNGs under ``image_dir`` and append their real embeddings.

    Returns how many images were new to the store (0 when run again).
    """
    cifar = np.load(find_data_dir(data_dir) / "cifar10_500.npz")
    image_dir = Path(image_dir).resolve()
    image_dir.mkdir(parents=True, exist_ok=True)
    names = [str(c) for c in cifar["classnames"]]
    uris, hashes, captions = [], [], []
    for i, (pixels, label) in enumerate(zip(cifar["images"], cifar["labels"])):
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize((DEMO_IMAGE_SIZE, DEMO_IMAGE_SIZE), Image.Resampling.BICUBIC).save(
            buffer, format="PNG"
        )
        path = image_dir / f"cifar10-{i:03d}-{names[int(label)]}.png"
        if not path.exists():
            path.write_bytes(buffer.getvalue())
        uris.append(str(path))
        hashes.append(hashlib.sha256(path.read_bytes()).hexdigest())
        captions.append(names[int(label)])
    return len(store.append(cifar["embeddings"].astype(np.float16), uris, hashes, captions))
