"""Concepts for simulations: what the user types, and which labeled rows they count as positive."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agile_modeling.concepts import Concept
from agile_modeling.simulate.data import LabeledSplit

SUITE_FILE = "concepts.json"

#: ``{dataset: [class name or index, ...] or "all"}``: which labeled rows count as positive
TruthSpec = dict[str, list[str | int] | str]


@dataclass(frozen=True)
class SimulatedConcept:
    """A concept with ground truth.

    Attributes:
        title: how people call it ("small dog breeds").
        name: the phrase the user types first (must be in the text vocabulary).
        positives, negatives: further phrases.
        truth: ``{dataset: [class name or index, ...] or "all"}``: the rows the user counts positive.
        difficulty: "easy" or "hard" (a subjective subset the phrase cannot separate).
    """

    title: str
    name: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    truth: TruthSpec
    difficulty: str = "easy"
    crowd: TruthSpec | None = None  # what the crowd's literal reading counts positive (default: ``truth``)

    def concept(self) -> Concept:
        return Concept(self.name, self.positives, self.negatives, description=self.title)

    def ground_truth(self, split: LabeledSplit) -> NDArray[np.bool_]:
        """``(n,)`` bool: which rows of ``split`` the user calls positive."""
        return _rows_of(self.truth, split)

    def crowd_truth(self, split: LabeledSplit) -> NDArray[np.bool_]:
        """``(n,)`` bool: which rows a crowd reading the title literally calls positive."""
        return _rows_of(self.crowd if self.crowd is not None else self.truth, split)


def _rows_of(spec: TruthSpec, split: LabeledSplit) -> NDArray[np.bool_]:
    """``(n,)`` bool: the rows of ``split`` in the classes ``{dataset: [class, ...] or "all"}``."""
    out = np.zeros(len(split), dtype=bool)
    for dataset, classes in spec.items():
        rows = split.dataset == dataset
        if classes == "all":
            out |= rows
            continue
        names = split.classnames.get(dataset, [])
        wanted = {c if isinstance(c, int) else names.index(c) for c in classes}
        out |= rows & np.isin(split.label, list(wanted))
    return out


def load_suite(path: str | Path | None = None, demo: bool = False) -> list[SimulatedConcept]:
    """The concept suite (the packaged ``concepts.json`` unless ``path`` is given); with ``demo``,
    only the concepts the file's ``demo`` list names (all of them if it has none)."""
    text = (
        Path(path).read_text() if path else resources.files("agile_modeling.simulate").joinpath(SUITE_FILE).read_text()
    )
    data = json.loads(text)
    suite = [
        SimulatedConcept(
            title=c["title"],
            name=c["name"],
            positives=tuple(c.get("positives", ())),
            negatives=tuple(c.get("negatives", ())),
            truth=c["truth"],
            difficulty=c.get("difficulty", "easy"),
            crowd=c.get("crowd"),
        )
        for c in data["concepts"]
    ]
    if demo and data.get("demo"):
        suite = [s for s in suite if s.title in set(data["demo"])]
    return suite
