"""The concept classifier: a small MLP on frozen image embeddings, scikit-learn style."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from agile_modeling import compute as compute_mod
from agile_modeling.classifier.base import ConceptClassifier, check_training_data
from agile_modeling.classifier.recipe import DEFAULT_RECIPE, TrainingRecipe


def build_mlp(
    dim: int, hidden: tuple[int, ...], dropout: float, generator: torch.Generator | None = None
) -> nn.Sequential:
    """``dim -> hidden[0] -> ... -> 1`` with ReLU and dropout after every hidden layer, initialised as
    ``nn.Linear`` does but from ``generator`` (default: a fresh one), never torch's global RNG: the
    same draws ``torch.manual_seed(s)`` then ``nn.Linear`` would make, without touching the caller's."""
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    layers: list[nn.Module] = []
    width = dim
    for h in hidden:
        layers += [nn.Linear(width, h, device="meta"), nn.ReLU(), nn.Dropout(dropout)]
        width = h
    layers.append(nn.Linear(width, 1, device="meta"))
    model = nn.Sequential(*layers).to_empty(device="cpu")
    with torch.no_grad():
        for layer in model:
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.bias.uniform_(-bound, bound, generator=generator)
    return model


def balanced_epoch_plan(
    n_pos: int, n_neg: int, n_random: int, recipe: TrainingRecipe, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.int64]]:
    """Indices drawn for every epoch: ``(pos, neg, rand)``, each ``(epochs, count)``.

    Positives fill ``positive_fraction`` of an epoch, labeled negatives ``negative_fraction``
    and random pool negatives the rest (labeled negatives' share goes to random ones when the
    user has rated none, and vice versa). With ``recipe.one_pass_over_random_negatives`` (the
    paper's recipe) and random negatives, every epoch holds each random negative once, in its own
    order, and is as large as makes them the random share: ``epoch_size`` is not used.
    """
    e = recipe.epochs
    if recipe.one_pass_over_random_negatives and n_random:
        share = 1.0 - recipe.positive_fraction - (recipe.negative_fraction if n_neg else 0.0)
        size = int(round(n_random / share)) if share > 0 else n_random
        pos = int(round(size * recipe.positive_fraction))
        neg = size - pos - n_random if n_neg else 0
        return (
            rng.integers(0, n_pos, size=(e, pos)),
            rng.integers(0, max(n_neg, 1), size=(e, max(neg, 0))),
            np.stack([rng.permutation(n_random) for _ in range(e)]),
        )
    size = recipe.epoch_size
    pos = int(round(size * recipe.positive_fraction))
    neg = int(round(size * recipe.negative_fraction)) if n_neg else 0
    rand = size - pos - neg if n_random else 0
    if not n_random:
        neg = size - pos
    return (
        rng.integers(0, n_pos, size=(e, pos)),
        rng.integers(0, max(n_neg, 1), size=(e, neg)),
        rng.integers(0, max(n_random, 1), size=(e, rand)),
    )


def dropout_masks(rng: np.random.Generator, rows: int, widths: tuple[int, ...], p: float) -> list[torch.Tensor]:
    """Inverted-dropout masks for one batch: per hidden layer a ``(rows, width)`` float32 tensor of
    0 and ``1 / keep``, each unit dropped with probability ``p`` (quantised to 1/65536: exact for
    the recipe's 0.5), drawn from ``rng`` as 16 random bits per unit.

    Why not ``nn.Dropout``: torch draws a Bernoulli variate per unit through its global generator,
    0.6 s of a 2.9 s fit of 600 labels on an AVX2 CPU; random bytes from numpy cost 0.02 s, and the
    masks come from the fit's own seeded generator instead of torch's global one.
    """
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout must lie in [0, 1); got {p}")
    threshold = round(p * 65536)
    bits = np.frombuffer(rng.bytes(2 * rows * sum(widths)), dtype=np.uint16).reshape(rows, sum(widths))
    mask = torch.from_numpy((bits >= threshold).astype(np.float32))
    mask *= 65536 / (65536 - threshold)
    return list(torch.split(mask, list(widths), dim=1))


def make_optimiser(params: Iterable[torch.Tensor], recipe: TrainingRecipe) -> torch.optim.Optimizer:
    """Adam with the recipe's rate and weight decay, fused where torch has a fused CPU kernel
    (one call per step instead of a loop over the parameters: 0.45 s -> about 0.1 s of a fit)."""
    try:
        return torch.optim.Adam(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # an older torch without the fused CPU kernel
        return torch.optim.Adam(params, lr=recipe.learning_rate, weight_decay=recipe.weight_decay, foreach=True)


class MLPClassifier(ConceptClassifier):
    """Binary concept classifier trained with the paper's recipe.

    ``fit`` takes the labeled embeddings and, separately, random pool embeddings that are
    assumed negative (they prevent over-triggering on a pool where the concept is rare).
    Deterministic for a fixed ``recipe.seed`` on one machine.
    """

    kind = "mlp"

    def __init__(self, recipe: TrainingRecipe = DEFAULT_RECIPE) -> None:
        self.recipe = recipe
        self.model: nn.Sequential | None = None
        self.dim: int | None = None
        self.history: list[float] = []

    # --- training ----------------------------------------------------------------------------
    def fit(
        self,
        x: NDArray[np.floating[Any]],
        y: NDArray[np.integer[Any]],
        random_negatives: NDArray[np.floating[Any]] | None = None,
        progress: Callable[[int, float], None] | None = None,
    ) -> MLPClassifier:
        """Train from scratch.

        Args:
            x: ``(n, d)`` embeddings of the rated images.
            y: ``(n,)`` labels in {0, 1}.
            random_negatives: ``(m, d)`` random pool embeddings labeled negative (may be empty).
            progress: called as ``progress(epoch, mean_loss)`` after every epoch.
        """
        x, y, rnd = check_training_data(x, y, random_negatives)
        with compute_mod.torch_threads(compute_mod.training_threads()):
            return self._fit(x, y, rnd, progress)

    def _fit(
        self,
        x: NDArray[np.float32],
        y: NDArray[np.int64],
        rnd: NDArray[np.float32],
        progress: Callable[[int, float], None] | None,
    ) -> MLPClassifier:
        rec = self.recipe
        rng = np.random.default_rng(rec.seed)
        self.dim = x.shape[1]
        self.model = build_mlp(self.dim, rec.hidden, rec.dropout, torch.Generator().manual_seed(rec.seed))
        optimiser = make_optimiser(self.model.parameters(), rec)
        loss_fn = nn.BCEWithLogitsLoss()
        linears = [m for m in self.model if isinstance(m, nn.Linear)]
        widths = tuple(m.out_features for m in linears[:-1])

        def forward(batch_x: torch.Tensor) -> torch.Tensor:
            """The network in training mode: ReLU then dropout (``dropout_masks``) per hidden layer."""
            a = batch_x
            for layer, mask in zip(linears[:-1], dropout_masks(rng, len(batch_x), widths, rec.dropout)):
                a = torch.relu(layer(a)) * mask
            logits: torch.Tensor = linears[-1](a)  # nn.Module.__call__ is typed as returning Any
            return logits

        pos_x, neg_x = x[y == 1], x[y == 0]
        # one table of every training row (positives, labeled negatives, random negatives): an epoch
        # is a list of rows in it, gathered batch by batch (an epoch of the paper's recipe over 500k
        # random negatives is 2M rows, 4 GB if copied whole)
        rows = torch.from_numpy(np.concatenate([pos_x, neg_x, rnd]))
        pos_i, neg_i, rnd_i = balanced_epoch_plan(len(pos_x), len(neg_x), len(rnd), rec, rng)
        self.model.train()
        self.history = []
        for epoch in range(rec.epochs):
            plan = torch.from_numpy(
                np.concatenate([pos_i[epoch], len(pos_x) + neg_i[epoch], len(pos_x) + len(neg_x) + rnd_i[epoch]])
            )  # empty plans give empty parts
            ey = torch.cat([torch.ones(pos_i.shape[1]), torch.zeros(len(plan) - pos_i.shape[1])])
            order = torch.from_numpy(rng.permutation(len(plan)))
            total = 0.0
            for start in range(0, len(plan), rec.batch_size):
                batch = order[start : start + rec.batch_size]
                optimiser.zero_grad(set_to_none=True)
                loss = loss_fn(forward(rows[plan[batch]]).squeeze(1), ey[batch])
                loss.backward()
                optimiser.step()
                total += loss.item() * len(batch)
            self.history.append(total / len(plan))
            if progress:
                progress(epoch, self.history[-1])
        self.model.eval()
        return self

    # --- inference ---------------------------------------------------------------------------
    def _require_fitted(self) -> nn.Sequential:
        if self.model is None:
            raise RuntimeError("this classifier is not trained yet: call fit() or load()")
        return self.model

    @torch.inference_mode()
    def decision_function(self, x: NDArray[np.floating[Any]], chunk_rows: int = 1 << 16) -> NDArray[np.float32]:
        """Logits ``(n,)`` float32, in fp32 arithmetic through the faster fp32 BLAS of this
        machine (:func:`agile_modeling.compute.current`; the model's own weights, no bf16: these are
        the logits ``/predict`` answers with). Pool-wide scoring goes through ``scoring.PoolScorer``."""
        model = self._require_fitted()
        x = self.check_embeddings(x)
        out = np.empty(len(x), dtype=np.float32)
        if compute_mod.current().blas == compute_mod.NUMPY:
            layers = [(w.T.contiguous().numpy(), b.numpy()) for w, b in self.linear_layers()]
            for start in range(0, len(x), chunk_rows):
                a = np.asarray(x[start : start + chunk_rows], dtype=np.float32)
                for i, (w, b) in enumerate(layers):
                    a = a @ w
                    a += b
                    if i < len(layers) - 1:
                        np.maximum(a, 0.0, out=a)
                out[start : start + len(a)] = a[:, 0]
            return out
        for start in range(0, len(x), chunk_rows):
            block = torch.from_numpy(np.asarray(x[start : start + chunk_rows], dtype=np.float32))
            out[start : start + len(block)] = model(block).squeeze(1).numpy()
        return out

    def linear_layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``[(weight (out, in), bias (out,)), ...]`` of every layer, input first (ReLU between)."""
        return [(m.weight.detach(), m.bias.detach()) for m in self._require_fitted() if isinstance(m, nn.Linear)]

    # --- persistence -------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return self.recipe.as_dict()

    def state(self) -> dict[str, Any]:
        return {"dim": self.dim, "recipe": self.recipe.as_dict(), "weights": self._require_fitted().state_dict()}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> MLPClassifier:
        recipe = state["recipe"]
        clf = cls(TrainingRecipe(**{**recipe, "hidden": tuple(recipe["hidden"])}))
        clf.dim = int(state["dim"])
        clf.model = build_mlp(clf.dim, clf.recipe.hidden, clf.recipe.dropout)
        clf.model.load_state_dict(state["weights"])
        clf.model.eval()
        return clf
