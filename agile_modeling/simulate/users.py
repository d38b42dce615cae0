"""Simulated raters that answer from ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


class SimulatedUser:
    """The concept's owner: answers from the ground truth, flipping a fraction ``error_rate`` at random.

    Args:
        truth: ``(n,)`` bool, the user's answer for every pool image.
        error_rate: probability of a wrong answer per rating.
        seed: seeds the errors.
    """

    def __init__(self, truth: np.ndarray, error_rate: float = 0.0, seed: int = 0) -> None:
        if not 0 <= error_rate < 0.5:
            raise ValueError("error_rate must lie in [0, 0.5)")
        self.truth = np.asarray(truth, dtype=bool)
        self.error_rate = error_rate
        self.rng = np.random.default_rng(seed)

    def rate(self, image_ids: Sequence[int]) -> list[int]:
        """Ratings (1 positive, 0 negative) of ``image_ids``, in order."""
        answers = self.truth[np.asarray(image_ids, dtype=np.int64)].copy()
        flips = self.rng.random(len(answers)) < self.error_rate
        answers[flips] = ~answers[flips]
        return answers.astype(int).tolist()
