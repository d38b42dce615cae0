"""Quality of a scorer against ground truth: AUC-PR, AUC-ROC, F1, precision, recall, accuracy."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)


@dataclass(frozen=True)
class BinaryMetrics:
    """Threshold-free (AUC-PR as average precision, AUC-ROC) and thresholded metrics."""

    auc_pr: float
    auc_roc: float
    f1: float
    precision: float
    recall: float
    accuracy: float
    threshold: float
    positives: int
    n: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def binary_metrics(
    y_true: NDArray[np.bool_] | NDArray[np.integer[Any]], scores: NDArray[np.floating[Any]], threshold: float
) -> BinaryMetrics:
    """Metrics of ``scores`` ``(n,)`` against labels ``y_true`` ``(n,)`` in {0, 1}.

    ``threshold`` turns scores into decisions for F1, precision, recall and accuracy (0.5 for a
    probability, 0.28 for zero-shot CLIP cosine). AUCs are NaN when only one class is present.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=np.float64)
    if y_true.shape != scores.shape or y_true.ndim != 1:
        raise ValueError(f"labels {y_true.shape} and scores {scores.shape} must be equal 1-d shapes")
    pred = (scores >= threshold).astype(int)
    both = 0 < y_true.sum() < len(y_true)
    return BinaryMetrics(
        auc_pr=float(average_precision_score(y_true, scores)) if both else float("nan"),
        auc_roc=float(roc_auc_score(y_true, scores)) if both else float("nan"),
        f1=float(f1_score(y_true, pred, zero_division=0)),
        precision=float(precision_score(y_true, pred, zero_division=0)),
        recall=float(recall_score(y_true, pred, zero_division=0)),
        accuracy=float(accuracy_score(y_true, pred)),
        threshold=float(threshold),
        positives=int(y_true.sum()),
        n=int(len(y_true)),
    )
