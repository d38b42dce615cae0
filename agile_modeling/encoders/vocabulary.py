"""A text encoder backed by a table of precomputed phrase embeddings.

Used where no text tower can be loaded (offline machines, the simulations over the shared CLIP
embeddings): phrases are looked up by name, normalised the way a user would type them.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.encoders.base import TextEncoder, l2_normalise
from agile_modeling.errors import UnknownPhraseError


def normalise_phrase(phrase: str) -> str:
    """``"Stop Sign"``, ``"stop_sign"`` and ``" stop-sign "`` all become ``"stop sign"``."""
    return " ".join(phrase.lower().replace("_", " ").replace("-", " ").split())


class VocabularyTextEncoder(TextEncoder):
    """Looks phrases up in a ``{phrase: vector}`` table; unknown phrases raise a clear error."""

    def __init__(self, table: Mapping[str, NDArray[np.floating[Any]]]) -> None:
        if not table:
            raise ValueError("a vocabulary encoder needs at least one phrase")
        self._table = {normalise_phrase(k): l2_normalise(np.asarray(v)[None])[0] for k, v in table.items()}
        self._dim = len(next(iter(self._table.values())))

    @classmethod
    def from_npz(cls, path: str | Path) -> VocabularyTextEncoder:
        """Load the ``text_vocabulary.npz`` layout: ``<set>_emb`` ``(n, d)`` beside ``<set>_names`` ``(n,)``."""
        data = np.load(path)
        table: dict[str, NDArray[np.float32]] = {}
        for key in data.files:
            if key.endswith("_emb"):
                names = data[key[: -len("_emb")] + "_names"]
                for name, vec in zip(names, data[key]):
                    table.setdefault(normalise_phrase(str(name)), vec.astype(np.float32))
        return cls(table)

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def phrases(self) -> list[str]:
        return sorted(self._table)

    def __contains__(self, phrase: str) -> bool:
        return normalise_phrase(phrase) in self._table

    def encode_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        missing = [t for t in texts if normalise_phrase(t) not in self._table]
        if missing:
            raise UnknownPhraseError(
                f"no embedding for {missing!r}: this offline text encoder knows {len(self._table)} "
                f"phrases (see `agile vocabulary --grep WORD`){self._suggestions(missing)}; pick from them, "
                "or configure an open_clip model with weights to embed free text."
            )
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.stack([self._table[normalise_phrase(t)] for t in texts]).astype(np.float32)

    def _suggestions(self, missing: Sequence[str]) -> str:
        """``", e.g. 'sushi', 'fish' for 'tuna sushi'"``: known phrases sharing a word with, or spelled
        close to, each unknown one."""
        parts = []
        for phrase in missing:
            words = set(normalise_phrase(phrase).split())
            near = [p for p in self.phrases if words & set(p.replace("(", " ").replace(")", " ").split())][:5]
            near = near or difflib.get_close_matches(normalise_phrase(phrase), self.phrases, n=3, cutoff=0.6)
            if near:
                parts.append(f"{', '.join(map(repr, near))} for {phrase!r}")
        return f", e.g. {'; '.join(parts)}" if parts else ""
