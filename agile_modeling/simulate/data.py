"""The shared real CLIP embeddings as a labeled pool and test set for simulations.

Pool = ``val`` + ``fewshotK`` rows of every dataset (unlabeled to the system, labeled to the
simulated user); test = ``test`` rows. Phrases come from ``text_vocabulary.npz``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.encoders.vocabulary import VocabularyTextEncoder
from agile_modeling.errors import DatasetNotFoundError

DATASETS = ("caltech101", "oxford_pets", "oxford_flowers", "dtd", "fgvc_aircraft", "ucf101", "imagenet", "food101")


def find_data_dir(explicit: str | Path | None = None) -> Path:
    """The ``clip-vit-b32`` folder: ``explicit`` (the command's ``--data`` or ``AGILE_SHARED_DATA``, passed
    down by the composition root), or ``../shared/data/clip-vit-b32`` from the current folder or from
    this checkout."""
    candidates = [Path(explicit)] if explicit else []
    here = Path(__file__).resolve().parents[2]
    candidates += [Path.cwd().parent / "shared/data/clip-vit-b32", here.parent / "shared/data/clip-vit-b32"]
    candidates = list(dict.fromkeys(c.resolve() for c in candidates))  # each place once in the message
    for c in candidates:
        if (c / "text_vocabulary.npz").is_file():
            return c
    raise DatasetNotFoundError(
        "the shared CLIP embeddings were not found (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "). Set AGILE_SHARED_DATA (or --data) to the folder holding caltech101.npz ... text_vocabulary.npz."
    )


@dataclass(frozen=True)
class LabeledSplit:
    """Rows of one split: embeddings ``x`` ``(n, 512)`` float16, and per row its dataset and class."""

    x: NDArray[np.float16]
    dataset: NDArray[np.str_]  # (n,)
    label: NDArray[np.int64]  # (n,) class index within its dataset
    classnames: dict[str, list[str]]

    def __len__(self) -> int:
        return len(self.x)

    def class_name(self, i: int) -> str:
        names = self.classnames.get(str(self.dataset[i]))
        return names[self.label[i]] if names else f"{self.dataset[i]}:{self.label[i]}"


@dataclass(frozen=True)
class SharedData:
    pool: LabeledSplit
    test: LabeledSplit
    vocabulary: VocabularyTextEncoder
    root: Path


#: one split of one dataset: its name, embeddings ``(n, d)`` and class indices ``(n,)``
_Part = tuple[str, NDArray[np.floating[Any]], NDArray[np.integer[Any]]]


def _split(parts: list[_Part], classnames: dict[str, list[str]]) -> LabeledSplit:
    return LabeledSplit(
        x=np.concatenate([p[1] for p in parts]).astype(np.float16),
        dataset=np.concatenate([np.full(len(p[1]), p[0]) for p in parts]),
        label=np.concatenate([p[2] for p in parts]).astype(np.int64),
        classnames=classnames,
    )


def load_shared_data(root: str | Path | None = None) -> SharedData:
    """Load every dataset of the shared folder (about 40k pool rows, 19k test rows)."""
    root = find_data_dir(root)
    pool: list[_Part] = []
    test: list[_Part] = []
    classnames: dict[str, list[str]] = {}
    for name in DATASETS:
        data = np.load(root / f"{name}.npz")
        if "classnames" in data.files:
            classnames[name] = [str(c) for c in data["classnames"]]
        keys = sorted(k[:-2] for k in data.files if k.endswith("_x"))
        for key in keys:
            target = test if key == "test" else pool
            target.append((name, data[f"{key}_x"], data[f"{key}_y"]))
    return SharedData(
        _split(pool, classnames),
        _split(test, classnames),
        VocabularyTextEncoder.from_npz(root / "text_vocabulary.npz"),
        root,
    )
