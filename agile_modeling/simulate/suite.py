"""Concepts for simulations: what the user types, and which labeled rows they count as positive."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from agile_modeling.concepts import Concept
from agile_modeling.errors import AgileError
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
        modes: ``{mode name: truth spec}``: the concept's visual modes, which together make
            ``truth`` (e.g. dalmatians, leopards and polka dots of "spotted"), to measure whether a
            session reached each one; empty for most concepts.
    """

    title: str
    name: str
    positives: tuple[str, ...]
    negatives: tuple[str, ...]
    truth: TruthSpec
    difficulty: str = "easy"
    crowd: TruthSpec | None = None  # what the crowd's literal reading counts positive (default: ``truth``)
    examples: tuple[int, ...] = ()  # pool rows the user offers as example images (extra seed queries)
    modes: dict[str, TruthSpec] = field(default_factory=dict)

    def concept(self) -> Concept:
        return Concept(self.name, self.positives, self.negatives, description=self.title, example_ids=self.examples)

    def ground_truth(self, split: LabeledSplit) -> NDArray[np.bool_]:
        """``(n,)`` bool: which rows of ``split`` the user calls positive."""
        return _rows_of(self.truth, split)

    def mode_truth(self, split: LabeledSplit) -> dict[str, NDArray[np.bool_]]:
        """``{mode: (n,) bool}``: the rows of ``split`` in each mode; :class:`SuiteError` unless the
        modes are disjoint and together exactly the ground truth."""
        masks = {mode: _rows_of(spec, split) for mode, spec in self.modes.items()}
        if masks:
            stacked = np.stack(list(masks.values()))
            if (stacked.sum(axis=0) > 1).any() or not np.array_equal(stacked.any(axis=0), self.ground_truth(split)):
                raise SuiteError(f"{self.title!r}: its modes must be disjoint and together exactly its truth")
        return masks

    def crowd_truth(self, split: LabeledSplit) -> NDArray[np.bool_]:
        """``(n,)`` bool: which rows a crowd reading the title literally calls positive."""
        return _rows_of(self.crowd if self.crowd is not None else self.truth, split)


class SuiteError(AgileError):
    """A concept of the suite names a dataset or a class the labeled data does not have."""


def _rows_of(spec: TruthSpec, split: LabeledSplit) -> NDArray[np.bool_]:
    """``(n,)`` bool: the rows of ``split`` in the classes ``{dataset: [class, ...] or "all"}``;
    :class:`SuiteError` for a dataset or class that is not in the data (never silently no rows)."""
    out = np.zeros(len(split), dtype=bool)
    datasets = sorted({str(d) for d in np.unique(split.dataset)})
    for dataset, classes in spec.items():
        if dataset not in datasets:
            raise SuiteError(f"no dataset {dataset!r} in the data (it has: {', '.join(datasets)})")
        rows = split.dataset == dataset
        if classes == "all":
            out |= rows
            continue
        if not isinstance(classes, list):
            raise SuiteError(f'{dataset}: expected a list of classes (names or indices) or "all", not {classes!r}')
        out |= rows & np.isin(split.label, sorted(_class_indices(dataset, classes, split, rows)))
    return out


def _class_indices(dataset: str, classes: list[str | int], split: LabeledSplit, rows: NDArray[np.bool_]) -> set[int]:
    names = split.classnames.get(dataset, [])
    n_classes = len(names) or int(split.label[rows].max()) + 1
    wanted = set()
    for c in classes:
        if isinstance(c, int):
            if not 0 <= c < n_classes:
                raise SuiteError(f"class index {c} of {dataset}: it has {n_classes} classes (0-{n_classes - 1})")
            wanted.add(c)
        elif c in names:
            wanted.add(names.index(c))
        else:
            close = difflib.get_close_matches(str(c), names, n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else f" ({len(names)} names; see its classnames)"
            raise SuiteError(f"no class {c!r} in {dataset}{hint}")
    return wanted


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
            examples=tuple(int(i) for i in c.get("examples", ())),
            modes=dict(c.get("modes", {})),
        )
        for c in data["concepts"]
    ]
    if demo and data.get("demo"):
        suite = [s for s in suite if s.title in set(data["demo"])]
    return suite
