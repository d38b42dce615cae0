"""Which concepts of the suite tuning may look at, and which are reported (``tuning_concepts.json``).

A choice of method is made on the tuning concepts and reported on the others, so that no figure
the README shows was chosen by looking at it.
"""

from __future__ import annotations

import json
from pathlib import Path

from agile_modeling.simulate.suite import SimulatedConcept

SPLIT_FILE = Path(__file__).resolve().parent / "tuning_concepts.json"
SPLITS = ("all", "tuning", "reported")


def tuning_titles() -> frozenset[str]:
    """Titles of the concepts tuning may use."""
    return frozenset(json.loads(SPLIT_FILE.read_text())["tuning"])


def split_suite(suite: list[SimulatedConcept], split: str) -> list[SimulatedConcept]:
    """``suite`` restricted to ``split``: ``all``, ``tuning`` or ``reported`` (every concept not in tuning)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, not {split!r}")
    tuning = tuning_titles()
    missing = tuning - {s.title for s in suite}
    if missing and split != "all":
        raise ValueError(f"{SPLIT_FILE.name} names concepts the suite lacks: {sorted(missing)}")
    if split == "all":
        return list(suite)
    return [s for s in suite if (s.title in tuning) == (split == "tuning")]
