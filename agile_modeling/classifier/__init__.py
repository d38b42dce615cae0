"""The concept classifier: its interface, the paper's MLP, logistic regression, the training recipe
and versioned artifacts."""

from agile_modeling.classifier.artifacts import ModelRegistry, ModelVersion
from agile_modeling.classifier.base import ClassifierInputError, ConceptClassifier
from agile_modeling.classifier.kinds import CLASSIFIERS, UnknownClassifierError, make_classifier
from agile_modeling.classifier.logistic import LogisticRegressionClassifier
from agile_modeling.classifier.mlp import MLPClassifier, build_mlp
from agile_modeling.classifier.recipe import (
    DEFAULT_RECIPE,
    PAPER_RECIPE,
    RECIPES,
    SEED_RECIPE,
    TrainingRecipe,
    recipe_for_round,
)

__all__ = [
    "CLASSIFIERS",
    "ClassifierInputError",
    "ConceptClassifier",
    "LogisticRegressionClassifier",
    "MLPClassifier",
    "ModelRegistry",
    "ModelVersion",
    "TrainingRecipe",
    "UnknownClassifierError",
    "DEFAULT_RECIPE",
    "PAPER_RECIPE",
    "RECIPES",
    "SEED_RECIPE",
    "build_mlp",
    "make_classifier",
    "recipe_for_round",
]
