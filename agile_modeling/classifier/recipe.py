"""The paper's training recipe (appendix C) as configuration."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any


@dataclass(frozen=True)
class TrainingRecipe:
    """How one concept classifier is trained.

    Fixed by the paper: binary cross-entropy, dropout 0.5, Adam with weight decay 1e-4, balanced
    epochs (labeled positives upsampled to ``positive_fraction`` of every epoch, labeled negatives
    ``negative_fraction``, random pool images labeled negative the rest), up to 500k random pool
    images as the source of random negatives.

    Chosen here by measurement (``benchmarks/bench_recipe.py``, results in
    ``benchmarks/results/recipe*.md``): ``learning_rate`` 1e-3 and ``epoch_size`` 8192 gave the best
    mean test AUC-PR after 300 and 600 ratings on the shared real embeddings, hard concepts too,
    training in under a second. The paper's lr 1e-4 with epochs of 2048 samples underfits
    (mean AUC-PR 0.943 after 600 ratings against 0.993).
    """

    hidden: tuple[int, ...] = (128, 128, 128)
    dropout: float = 0.5
    weight_decay: float = 1e-4
    learning_rate: float = 1e-3
    epochs: int = 10
    epoch_size: int = 8192
    batch_size: int = 256
    positive_fraction: float = 0.5
    negative_fraction: float = 0.25
    max_random_negatives: int = 500_000
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.positive_fraction + self.negative_fraction <= 1:
            raise ValueError("positive_fraction + negative_fraction must lie in (0, 1]")
        if self.epochs < 1 or self.epoch_size < 1 or self.batch_size < 1:
            raise ValueError("epochs, epoch_size and batch_size must be positive")

    def with_(self, **changes: Any) -> TrainingRecipe:
        return replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: Rounds after the first: 3 hidden layers of 128 (paper section 4.2).
DEFAULT_RECIPE = TrainingRecipe()
#: The first model, on the seed batch alone: 1 hidden layer of 16, to avoid overfitting 100 labels.
SEED_RECIPE = TrainingRecipe(hidden=(16,))


def recipe_for_round(round_index: int, base: TrainingRecipe = DEFAULT_RECIPE) -> TrainingRecipe:
    """The small MLP for the model trained on the seed batch (round 0), ``base`` after."""
    return base.with_(hidden=SEED_RECIPE.hidden) if round_index == 0 else base
