"""Agile Deliberation (Wang et al., 2025): a structured definition refined with the user over
borderline images; the definition is itself a classifier."""

from agile_modeling.deliberation.definition import Definition, SubConcept, UnitConcept
from agile_modeling.deliberation.edits import Edit
from agile_modeling.deliberation.history import SOURCE, DeliberationHistory
from agile_modeling.deliberation.loop import Deliberation, DeliberationConfig

__all__ = [
    "Definition",
    "Deliberation",
    "DeliberationConfig",
    "DeliberationHistory",
    "Edit",
    "SOURCE",
    "SubConcept",
    "UnitConcept",
]
