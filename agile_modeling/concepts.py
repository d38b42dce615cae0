"""A concept as the user states it: a name, positive and negative phrases, optional example images."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agile_modeling.encoders.vocabulary import normalise_phrase


def slugify(name: str) -> str:
    """A file- and URL-safe identifier of a concept name: ``"Gourmet Tuna!"`` -> ``"gourmet-tuna"``."""
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    if not slug:
        raise ValueError(f"concept name {name!r} has no letters or digits")
    return slug


def _unique(phrases: list[str]) -> list[str]:
    seen, out = set(), []
    for p in phrases:
        key = normalise_phrase(p)
        if key and key not in seen:
            seen.add(key)
            out.append(p.strip())
    return out


@dataclass(frozen=True)
class Concept:
    """What the user wants a classifier for.

    Attributes:
        name: the concept's name; it is also a positive phrase (as in the paper).
        positives: phrases for the concept as a whole or its visual modes.
        negatives: related phrases that are NOT the concept (they mine hard negatives).
        description: free text shown to raters.
        example_ids: pool image ids the user offers as examples; their embeddings are extra queries.
    """

    name: str
    positives: tuple[str, ...] = ()
    negatives: tuple[str, ...] = ()
    description: str = ""
    example_ids: tuple[int, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.name.strip():
            raise ValueError("a concept needs a name")
        object.__setattr__(self, "positives", tuple(_unique([self.name, *self.positives])))
        object.__setattr__(self, "negatives", tuple(_unique(list(self.negatives))))

    @property
    def slug(self) -> str:
        return slugify(self.name)

    @property
    def phrases(self) -> tuple[str, ...]:
        """Every query phrase, positives first."""
        return self.positives + self.negatives
