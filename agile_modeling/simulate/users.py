"""Simulated raters that answer from ground truth."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray


class SimulatedUser:
    """The concept's owner: answers from the ground truth, flipping a fraction ``error_rate`` at random.

    Args:
        truth: ``(n,)`` bool, the user's answer for every pool image.
        error_rate: probability of a wrong answer per rating.
        seed: seeds the errors.
    """

    def __init__(self, truth: NDArray[np.bool_], error_rate: float = 0.0, seed: int = 0) -> None:
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
        ratings: list[int] = answers.astype(int).tolist()
        return ratings


class SimulatedCrowd:
    """Several crowd raters who apply the crowd's reading of the concept, each with their own noise;
    their majority is the crowd's label (the paper's 3 raters per image).

    Args:
        truth: ``(n,)`` bool, the crowd's literal reading of the concept for every pool image.
        raters: how many rate each image (odd, so that a binary majority always exists).
        error_rate: each rater's probability of a wrong answer, independently.
        seed: seeds the raters.
    """

    def __init__(self, truth: NDArray[np.bool_], raters: int = 3, error_rate: float = 0.1, seed: int = 0) -> None:
        if raters < 1 or raters % 2 == 0:
            raise ValueError("a crowd of an odd number of raters always has a majority")
        self.members = [SimulatedUser(truth, error_rate, seed=seed * 1000 + k) for k in range(raters)]

    def votes(self, image_ids: Sequence[int]) -> NDArray[np.int_]:
        """``(raters, len(image_ids))`` the individual answers."""
        return np.array([m.rate(image_ids) for m in self.members], dtype=int).reshape(len(self.members), -1)

    def rate(self, image_ids: Sequence[int]) -> list[int]:
        """The majority answer of the raters for each image, in order."""
        votes = self.votes(image_ids)
        majority: list[int] = (votes.sum(axis=0) * 2 > len(self.members)).astype(int).tolist()
        return majority
