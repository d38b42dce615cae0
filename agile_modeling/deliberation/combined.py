"""Beyond the paper: the definition classifier f_d and the agile-modeling MLP are two models of the
same labels. :class:`CombinedClassifier` picks, by cross-validated F1 on those labels, between the
definition alone, the MLP alone, and the MLP with the definition as a prior (their logits added).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import f1_score
from sklearn.model_selection import StratifiedKFold

from agile_modeling.classifier import DEFAULT_RECIPE, MLPClassifier, TrainingRecipe

MODES = ("definition", "mlp", "prior")


def _logit(p: NDArray[np.floating[Any]]) -> NDArray[np.float64]:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-6, 1 - 1e-6)
    logit: NDArray[np.float64] = np.log(p / (1 - p))  # numpy's stubs type ufunc results as Any
    return logit


def _sigmoid(z: NDArray[np.float64]) -> NDArray[np.float64]:
    p: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))  # numpy's stubs: Any
    return p


@dataclass
class CombinedClassifier:
    """Args:
        definition_proba: ``f(x (n, d)) -> (n,)`` the definition's confidence that images are in scope.
        recipe: the MLP's training recipe.
        folds: cross-validation folds (fewer when a class has fewer labels).

    After :meth:`fit`, ``mode`` is the winner and ``cv_f1`` every mode's cross-validated F1.
    """

    definition_proba: Callable[[NDArray[np.float32]], NDArray[np.floating[Any]]]
    recipe: TrainingRecipe = DEFAULT_RECIPE
    folds: int = 5
    mode: str = "definition"
    cv_f1: dict[str, float] = field(default_factory=dict)
    mlp: MLPClassifier | None = None

    def _predict(self, mode: str, mlp: MLPClassifier | None, x: NDArray[np.float32]) -> NDArray[np.floating[Any]]:
        d = self.definition_proba(x)
        if mode == "definition" or mlp is None:
            return d
        m = mlp.predict_proba(x)
        return m if mode == "mlp" else _sigmoid(_logit(m) + _logit(d))

    def fit(
        self,
        x: NDArray[np.floating[Any]],
        y: NDArray[np.integer[Any]],
        random_negatives: NDArray[np.floating[Any]] | None = None,
    ) -> CombinedClassifier:
        """Cross-validate the three modes on labeled images ``x`` ``(n, d)``, ``y`` ``(n,)``, then refit the MLP on all."""
        x, y = np.asarray(x, np.float32), np.asarray(y).astype(int)
        k = min(self.folds, int(y.sum()), int((1 - y).sum()))
        if k < 2:  # too few of one class to hold any out: the definition is all we can trust
            self.mode, self.cv_f1, self.mlp = "definition", {}, None
            has_negatives = (y == 0).any() or (random_negatives is not None and len(random_negatives))
            if y.any() and has_negatives:
                self.mlp = MLPClassifier(self.recipe).fit(x, y, random_negatives)
            return self
        held = {m: np.zeros(len(y)) for m in MODES}
        for train, test in StratifiedKFold(k, shuffle=True, random_state=self.recipe.seed).split(x, y):
            mlp = MLPClassifier(self.recipe).fit(x[train], y[train], random_negatives)
            for m in MODES:
                held[m][test] = self._predict(m, mlp, x[test])
        self.cv_f1 = {m: float(f1_score(y, held[m] >= 0.5, zero_division=0)) for m in MODES}
        self.mode = max(MODES, key=lambda m: (self.cv_f1[m], -MODES.index(m)))
        self.mlp = MLPClassifier(self.recipe).fit(x, y, random_negatives)
        return self

    def predict_proba(self, x: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
        """``(n,)`` the chosen mode's confidence for images ``x`` ``(n, d)``."""
        return self._predict(self.mode, self.mlp, np.asarray(x, np.float32))

    def predict_proba_all(self, x: NDArray[np.floating[Any]]) -> dict[str, NDArray[np.floating[Any]]]:
        """Every mode's confidence (for reports comparing them)."""
        x = np.asarray(x, np.float32)
        return {m: self._predict(m, self.mlp, x) for m in MODES}
