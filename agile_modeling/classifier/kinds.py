"""The concept classifiers a model version can hold, by the name its ``model.json`` records."""

from __future__ import annotations

from agile_modeling.classifier.base import ConceptClassifier
from agile_modeling.classifier.logistic import LogisticRegressionClassifier
from agile_modeling.classifier.mlp import MLPClassifier
from agile_modeling.classifier.recipe import TrainingRecipe
from agile_modeling.errors import AgileError

#: every implementation of :class:`ConceptClassifier`, by its ``kind``; the MLP is the paper's
CLASSIFIERS: dict[str, type[ConceptClassifier]] = {
    cls.kind: cls for cls in (MLPClassifier, LogisticRegressionClassifier)
}


class UnknownClassifierError(AgileError, ValueError):
    """A classifier kind this version of the program does not have."""


def classifier_class(kind: str) -> type[ConceptClassifier]:
    try:
        return CLASSIFIERS[kind]
    except KeyError:
        raise UnknownClassifierError(
            f"unknown classifier {kind!r}: choose one of {', '.join(CLASSIFIERS)} "
            "(a model saved by a newer version of agile-modeling?)"
        ) from None


def make_classifier(kind: str, recipe: TrainingRecipe) -> ConceptClassifier:
    """An untrained classifier of ``kind`` with ``recipe`` (its seed and class balance)."""
    return classifier_class(kind)(recipe)  # type: ignore[call-arg]  # every kind takes the recipe first
