"""The interface the loop, the pool scorer, the model artifacts and the ML backend need of a concept
classifier, so that another model can replace the paper's MLP.

A classifier is a binary model on frozen embeddings, scikit-learn style: ``fit`` on rated
embeddings (plus random pool embeddings taken as negatives), ``decision_function`` gives logits
``(n,)``, ``predict_proba`` the probability of the concept ``(n,)`` (one column: the negative
class is ``1 - p``; :meth:`ConceptClassifier.predict_proba_2d` gives scikit-learn's ``(n, 2)``).
``state``/``from_state`` round-trip it through a model version's ``weights.pt``; ``params`` is what
``model.json`` records about how it was made.

Optional capability, used by :class:`agile_modeling.scoring.PoolScorer` when present: a classifier
that is a ReLU network returns its layers from :meth:`ConceptClassifier.linear_layers`; the scorer
then sweeps the pool on the machine's fastest arithmetic with a proven error bound. Without it the
scorer calls ``decision_function`` (exact, slower).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from numpy.typing import NDArray

from agile_modeling.errors import AgileError, NotEnoughLabelsError

Self = TypeVar("Self", bound="ConceptClassifier")


class ClassifierInputError(AgileError, ValueError):
    """Inputs of the wrong shape or values for this classifier (e.g. embeddings of another encoder)."""


class ConceptClassifier(ABC):
    """A binary concept classifier on ``(n, dim)`` embeddings (see the module docstring)."""

    #: the name a model version's ``model.json`` records (``agile_modeling.classifier.CLASSIFIERS``)
    kind: ClassVar[str]
    #: embedding dimension it was fitted on (None before ``fit``)
    dim: int | None = None

    @abstractmethod
    def fit(
        self: Self,
        x: NDArray[np.floating[Any]],
        y: NDArray[np.integer[Any]],
        random_negatives: NDArray[np.floating[Any]] | None = None,
        progress: Callable[[int, float], None] | None = None,
    ) -> Self:
        """Train from scratch on ``x`` ``(n, d)`` with labels ``y`` ``(n,)`` in {0, 1}, and
        ``random_negatives`` ``(m, d)`` pool embeddings taken as negative. ``progress(step, loss)``
        is called as training goes, where the model has steps. Returns ``self``."""

    @abstractmethod
    def decision_function(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Logits ``(n,)`` float32 of embeddings ``x`` ``(n, dim)``."""

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """Everything :meth:`from_state` needs (tensors and plain values: ``torch.save``-able)."""

    @classmethod
    @abstractmethod
    def from_state(cls: type[Self], state: dict[str, Any]) -> Self:
        """The fitted classifier :meth:`state` described."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """How it was made (hyperparameters, seed): recorded in ``model.json``, JSON-serialisable."""

    # --- provided --------------------------------------------------------------------------------
    def linear_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
        """``[(weight (out, in), bias (out,)), ...]`` input first, ReLU between, when the model is such
        a network (the fast pool sweep); None otherwise (the default)."""
        return None

    def predict_proba(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """Probability that each image ``(n, dim)`` shows the concept: ``(n,)`` float32."""
        return (1.0 / (1.0 + np.exp(-self.decision_function(x).astype(np.float64)))).astype(np.float32)

    def predict_proba_2d(self, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """scikit-learn's layout: ``(n, 2)`` float32, columns P(negative), P(positive)."""
        p = self.predict_proba(x)
        return np.stack([1.0 - p, p], axis=1)

    def predict(self, x: NDArray[np.floating[Any]], threshold: float = 0.5) -> NDArray[np.int64]:
        """``(n,)`` int64: 1 where the probability reaches ``threshold``."""
        return (self.predict_proba(x) >= threshold).astype(np.int64)

    def check_embeddings(self, x: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
        """``x`` as an array ``(n, dim)`` (not copied: a memory-mapped pool stays on disk);
        :class:`ClassifierInputError` saying what is wrong otherwise."""
        if self.dim is None:
            raise ClassifierInputError(f"this {self.kind} classifier is not trained yet: call fit() or load a version")
        arr = np.asarray(x)
        if arr.ndim != 2:
            raise ClassifierInputError(f"expected a 2-D array of embeddings (n, {self.dim}); got shape {arr.shape}")
        if arr.shape[1] != self.dim:
            raise ClassifierInputError(
                f"expected embeddings of shape (n, {self.dim}); got {arr.shape}: the images were embedded by "
                f"another encoder than the one this model was trained on"
            )
        return arr


def check_training_data(
    x: NDArray[np.floating[Any]], y: NDArray[np.integer[Any]], random_negatives: NDArray[np.floating[Any]] | None
) -> tuple[NDArray[np.float32], NDArray[np.int64], NDArray[np.float32]]:
    """``(x float32 (n, d), y int64 (n,), random negatives float32 (m, d))`` checked for ``fit``:
    shapes agree, labels are 0/1, there is a positive and something to contrast it with."""
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != 2 or y.shape != (len(x),):
        raise ClassifierInputError(f"x must be (n, d) and y (n,); got {x.shape} and {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ClassifierInputError("labels must be 0 (negative) or 1 (positive)")
    labels = y.astype(np.int64)
    rnd = (
        np.zeros((0, x.shape[1]), np.float32)
        if random_negatives is None
        else np.asarray(random_negatives, dtype=np.float32)
    )
    if len(rnd) and (rnd.ndim != 2 or rnd.shape[1] != x.shape[1]):
        raise ClassifierInputError(f"random negatives must be (m, {x.shape[1]}); got {rnd.shape}")
    if not (labels == 1).any():
        raise NotEnoughLabelsError("no positive label yet: rate at least one image as positive")
    if not (labels == 0).any() and not len(rnd):
        raise NotEnoughLabelsError("no negative label and no random negatives: nothing to contrast with")
    return x, labels, rnd
