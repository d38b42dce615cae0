"""The concept classifier: the paper's MLP, its training recipe and versioned artifacts."""

from agile_modeling.classifier.artifacts import ModelRegistry, ModelVersion
from agile_modeling.classifier.mlp import MLPClassifier, build_mlp
from agile_modeling.classifier.recipe import DEFAULT_RECIPE, SEED_RECIPE, TrainingRecipe, recipe_for_round

__all__ = [
    "MLPClassifier",
    "ModelRegistry",
    "ModelVersion",
    "TrainingRecipe",
    "DEFAULT_RECIPE",
    "SEED_RECIPE",
    "build_mlp",
    "recipe_for_round",
]
