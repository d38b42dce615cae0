"""Logistic regression on frozen embeddings: the simplest concept classifier, and a baseline.

It is the second implementation of :class:`~agile_modeling.classifier.base.ConceptClassifier`
(the proof that the loop, the scorer, the artifacts and the backend do not depend on the MLP):
scikit-learn's ``LogisticRegression`` (L-BFGS) fitted with the same balance of positives, rated
negatives and random pool negatives as the MLP's epochs (``TrainingRecipe``'s fractions), given
as sample weights. As a one-layer network it offers ``linear_layers``, so pool selection with it is
as fast and as exact as with the MLP.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression

from agile_modeling.classifier.base import ConceptClassifier, check_training_data
from agile_modeling.classifier.recipe import DEFAULT_RECIPE, TrainingRecipe

#: inverse L2 strength (scikit-learn's ``C``) on unit-norm embeddings; 1.0 is scikit-learn's default
DEFAULT_C = 1.0


class LogisticRegressionClassifier(ConceptClassifier):
    """Binary logistic regression; ``recipe`` gives the class balance and the seed, ``c`` the
    inverse regularisation strength."""

    kind = "logistic"

    def __init__(self, recipe: TrainingRecipe = DEFAULT_RECIPE, c: float = DEFAULT_C) -> None:
        if not c > 0:
            raise ValueError(f"c must be positive; got {c}")
        self.recipe = recipe
        self.c = float(c)
        self.dim: int | None = None
        self.weight: NDArray[np.float32] | None = None  # (dim,) float32
        self.bias: float = 0.0

    def fit(
        self,
        x: NDArray[np.floating[Any]],
        y: NDArray[np.integer[Any]],
        random_negatives: NDArray[np.floating[Any]] | None = None,
        progress: Callable[[int, float], None] | None = None,
    ) -> LogisticRegressionClassifier:
        """Fit on ``x`` ``(n, d)``, ``y`` ``(n,)`` and ``random_negatives`` ``(m, d)`` (negatives)."""
        x, y, rnd = check_training_data(x, y, random_negatives)
        features = np.concatenate([x, rnd])
        target = np.concatenate([y, np.zeros(len(rnd), np.int64)])
        model = LogisticRegression(C=self.c, max_iter=2000, random_state=self.recipe.seed)
        model.fit(features, target, sample_weight=self._weights(y, len(rnd)))
        self.dim = x.shape[1]
        self.weight = model.coef_[0].astype(np.float32)
        self.bias = float(model.intercept_[0])
        if progress:
            progress(0, float(model.n_iter_[0]))
        return self

    def _weights(self, y: NDArray[np.int64], n_random: int) -> NDArray[np.float64]:
        """Per-row weights ``(n + n_random,)``: positives, rated negatives and random negatives hold the
        recipe's shares of the total (a missing kind's share goes to the other negatives), each kind's
        rows equally; scaled to a mean of 1 so ``C`` means what it means in scikit-learn."""
        rec = self.recipe
        n_pos, n_neg = int((y == 1).sum()), int((y == 0).sum())
        neg_share = rec.negative_fraction if n_neg else 0.0
        rand_share = 1.0 - rec.positive_fraction - neg_share if n_random else 0.0
        if not n_random:
            neg_share = 1.0 - rec.positive_fraction
        w = np.where(y == 1, rec.positive_fraction / max(n_pos, 1), neg_share / max(n_neg, 1))
        weights = np.concatenate([w, np.full(n_random, rand_share / max(n_random, 1))])
        scaled: NDArray[np.float64] = weights * (len(weights) / weights.sum())  # numpy's stubs: Any
        return scaled

    def decision_function(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        x = self.check_embeddings(x)
        assert self.weight is not None  # check_embeddings raised if not fitted
        return (np.asarray(x, dtype=np.float32) @ self.weight + np.float32(self.bias)).astype(np.float32)

    def linear_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """One layer: weight ``(1, dim)``, bias ``(1,)``."""
        if self.weight is None:
            raise RuntimeError("this classifier is not trained yet: call fit() or load()")
        return [(torch.from_numpy(self.weight[None, :].copy()), torch.tensor([self.bias], dtype=torch.float32))]

    def params(self) -> dict[str, Any]:
        rec = self.recipe  # only what this model uses of the recipe: its class balance and seed
        return {
            "c": self.c,
            "positive_fraction": rec.positive_fraction,
            "negative_fraction": rec.negative_fraction,
            "seed": rec.seed,
        }

    def state(self) -> dict[str, Any]:
        if self.weight is None:
            raise RuntimeError("this classifier is not trained yet: call fit() first")
        return {
            "dim": self.dim,
            "c": self.c,
            "recipe": self.recipe.as_dict(),
            "weight": torch.from_numpy(self.weight.copy()),
            "bias": self.bias,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> LogisticRegressionClassifier:
        recipe = state["recipe"]
        clf = cls(TrainingRecipe(**{**recipe, "hidden": tuple(recipe["hidden"])}), c=float(state["c"]))
        clf.dim = int(state["dim"])
        clf.weight = state["weight"].numpy().astype(np.float32)
        clf.bias = float(state["bias"])
        return clf
