"""Labeled embeddings as a pool and a test set for simulations: the shared real CLIP embeddings, or a
folder of anyone's in the same format.

The format (docs/studies.md, "Your own labeled embeddings"): a folder holding

- one ``<dataset>.npz`` per labeled dataset with ``<split>_x`` ``(n, d)`` embeddings (float16 or
  float32, L2-normalised) and ``<split>_y`` ``(n,)`` integer class indices for each split; the
  ``test`` split is the test set (a dataset may have none: its rows are pool only), every other split
  (``val``, ``fewshot16``, ...) joins the pool
  (unlabeled to the system, labeled to the simulated user); optional ``classnames`` ``(classes,)``
  so that concepts can name classes;
- ``text_vocabulary.npz``: the phrase table concepts' phrases come from (``<table>_emb`` ``(p, d)`` and
  ``<table>_names`` ``(p,)``, see :class:`VocabularyTextEncoder`).

Files without ``*_x`` arrays (the demo's ``cifar10_500.npz``) are not datasets and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.encoders.vocabulary import VocabularyTextEncoder
from agile_modeling.errors import DatasetFormatError, DatasetNotFoundError

VOCABULARY_FILE = "text_vocabulary.npz"
#: the shared folder's datasets in the order their rows have always had in the pool (pool ids, and
#: so every recorded simulation, depend on it); any other dataset follows, sorted by file name
DATASETS = ("caltech101", "oxford_pets", "oxford_flowers", "dtd", "fgvc_aircraft", "ucf101", "imagenet", "food101")


def find_data_dir(explicit: str | Path | None = None) -> Path:
    """The ``clip-vit-b32`` folder: ``explicit`` (the command's ``--data`` or ``AGILE_SHARED_DATA``, passed
    down by the composition root), or ``../shared/data/clip-vit-b32`` from the current folder or from
    this checkout."""
    if explicit:  # a folder the user named is that folder or an error, never a fallback
        if Path(explicit).is_dir():
            return Path(explicit)
        candidates = [Path(explicit).resolve()]
    else:
        here = Path(__file__).resolve().parents[2]
        defaults = [Path.cwd().parent / "shared/data/clip-vit-b32", here.parent / "shared/data/clip-vit-b32"]
        candidates = list(dict.fromkeys(c.resolve() for c in defaults))  # each place once in the message
        for c in candidates:
            if (c / VOCABULARY_FILE).is_file():
                return c
    raise DatasetNotFoundError(
        "the labeled embeddings were not found (looked in: "
        + ", ".join(str(c) for c in candidates)
        + "). Give the folder with --data (or AGILE_SHARED_DATA): <dataset>.npz files and text_vocabulary.npz, "
        "as docs/studies.md describes."
    )


@dataclass(frozen=True)
class LabeledSplit:
    """Rows of one split: embeddings ``x`` ``(n, d)`` float16, and per row its dataset and class."""

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


def _dataset_files(root: Path) -> list[Path]:
    """The dataset files of ``root``: every ``.npz`` but the vocabulary, known datasets first."""
    files = {p.stem: p for p in sorted(root.glob("*.npz")) if p.name != VOCABULARY_FILE}
    order = [n for n in DATASETS if n in files] + sorted(n for n in files if n not in DATASETS)
    return [files[n] for n in order]


def _read_dataset(path: Path, dim: int | None) -> tuple[list[_Part], list[_Part], list[str] | None]:
    """``(pool parts, test parts, class names)`` of one dataset file, checked against the format."""
    name = path.stem
    with np.load(path) as data:
        splits = sorted(k[:-2] for k in data.files if k.endswith("_x"))
        if not splits:
            return [], [], None
        classnames = [str(c) for c in data["classnames"]] if "classnames" in data.files else None
        pool: list[_Part] = []
        test: list[_Part] = []
        for split in splits:
            if f"{split}_y" not in data.files:
                raise DatasetFormatError(f"{path.name}: {split}_x has no labels {split}_y")
            x, y = data[f"{split}_x"], data[f"{split}_y"]
            if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
                raise DatasetFormatError(
                    f"{path.name}: {split}_x has {len(x)} rows but {split}_y {len(y)} (expected x (n, d) and y (n,))"
                )
            if dim is not None and x.shape[1] != dim:
                raise DatasetFormatError(
                    f"{path.name}: {split}_x is {x.shape[1]}-dimensional, the other datasets {dim}-dimensional: every "
                    "embedding must come from the same encoder"
                )
            if not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
                raise DatasetFormatError(f"{path.name}: {split}_y must hold class indices 0, 1, ... (integers)")
            if classnames is not None and len(y) and y.max() >= len(classnames):
                raise DatasetFormatError(
                    f"{path.name}: {split}_y has class index {int(y.max())} but names only {len(classnames)} classes"
                )
            (test if split == "test" else pool).append((name, x, y))
            dim = int(x.shape[1])
    return pool, test, classnames


def load_shared_data(root: str | Path | None = None) -> SharedData:
    """Load every dataset of the folder (the shared one: about 40k pool rows, 19k test rows).

    Raises :class:`DatasetNotFoundError` (no such folder) or :class:`DatasetFormatError` saying what
    in the folder does not follow the format (module docstring)."""
    root = find_data_dir(root)
    pool: list[_Part] = []
    test: list[_Part] = []
    classnames: dict[str, list[str]] = {}
    for path in _dataset_files(root):
        dim = int(pool[0][1].shape[1]) if pool else (int(test[0][1].shape[1]) if test else None)
        parts_pool, parts_test, names = _read_dataset(path, dim)
        pool += parts_pool
        test += parts_test
        if names is not None:
            classnames[path.stem] = names
    if not pool and not test:
        raise DatasetFormatError(
            f"{root} holds no dataset file (<dataset>.npz with test_x, test_y and other <split>_x, <split>_y arrays)"
        )
    if not test:
        raise DatasetFormatError(f"{root}: no dataset has a test split (test_x, test_y): nothing could be measured")
    if not (root / VOCABULARY_FILE).is_file():
        raise DatasetFormatError(
            f"{root / VOCABULARY_FILE} is missing: the phrase table concepts' phrases come from "
            "(<table>_emb and <table>_names arrays, in the datasets' embedding space)"
        )
    if not pool:
        raise DatasetFormatError(f"{root}: every row is in a test split; the pool (val, fewshot... splits) is empty")
    return SharedData(
        _split(pool, classnames),
        _split(test, classnames),
        VocabularyTextEncoder.from_npz(root / VOCABULARY_FILE),
        root,
    )
