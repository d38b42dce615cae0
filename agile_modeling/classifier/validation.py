"""A cheap, honest quality estimate of a model version from the user's own ratings.

Every version gets one at training time, so the person rating sees whether the model improves
without rating an evaluation set first: the version's recipe is trained again on ``k - 1`` folds
of the same ratings (with the same random negatives) and scores the held-out fold; AUC-PR is
computed over every rating's out-of-fold score.

It is an estimate, and biased low: after the seed batch the ratings are the images the model
found hardest (margin selection picks them near the boundary), so the estimate ranks versions
and shows the trend, while the stratified evaluation set (:mod:`agile_modeling.evaluation`)
measures. Folds are stratified, so every fold has positives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.classifier.kinds import make_classifier
from agile_modeling.classifier.recipe import TrainingRecipe
from agile_modeling.metrics import binary_metrics

MAX_FOLDS = 3
#: below this many positives (or negatives) there is no estimate: one rating would swing it
MIN_PER_CLASS = 4


@dataclass(frozen=True)
class QualityEstimate:
    """Out-of-fold quality of a recipe on a set of ratings.

    Attributes:
        cv_auc_pr: AUC-PR of the out-of-fold probabilities against the ratings.
        cv_positives, cv_labels: how many positive ratings (of how many) it rests on.
        cv_folds: the number of folds.
    """

    cv_auc_pr: float
    cv_positives: int
    cv_labels: int
    cv_folds: int

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)

    def summary(self) -> str:
        return (
            f"estimated AUC-PR {self.cv_auc_pr:.2f} ({self.cv_folds}-fold cross-validation on your "
            f"{self.cv_labels} ratings, {self.cv_positives} positive)"
        )


def stratified_folds(y: NDArray[np.integer[Any]], folds: int, seed: int) -> NDArray[np.int64]:
    """``(n,)`` fold index of each rating: each class is shuffled (local generator) and dealt round-robin."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for value in (0, 1):
        members = rng.permutation(np.flatnonzero(y == value))
        fold[members] = np.arange(len(members)) % folds
    return fold


def cross_validated_quality(
    recipe: TrainingRecipe,
    x: NDArray[np.floating[Any]],
    y: NDArray[np.integer[Any]],
    random_negatives: NDArray[np.floating[Any]] | None = None,
    kind: str = "mlp",
) -> QualityEstimate | None:
    """Out-of-fold AUC-PR of a ``kind`` classifier with ``recipe`` on the ratings ``x`` ``(n, d)``,
    ``y`` ``(n,)`` in {0, 1}.

    ``random_negatives`` ``(m, d)``: the unlabeled pool images the version was trained with as
    negatives (used for training in every fold, never scored). None when either class has fewer
    than :data:`MIN_PER_CLASS` ratings.
    """
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ValueError(f"x must be (n, d) and y (n,); got {x.shape} and {y.shape}")
    positives = int(y.sum())
    if min(positives, len(y) - positives) < MIN_PER_CLASS:
        return None
    folds = min(MAX_FOLDS, positives, len(y) - positives)
    fold = stratified_folds(y, folds, recipe.seed)
    out_of_fold = np.empty(len(y), dtype=np.float64)
    for k in range(folds):
        held = fold == k
        model = make_classifier(kind, recipe).fit(x[~held], y[~held], random_negatives)
        out_of_fold[held] = model.predict_proba(x[held])
    auc_pr = binary_metrics(y, out_of_fold, 0.5).auc_pr
    return QualityEstimate(float(auc_pr), positives, int(len(y)), folds)
