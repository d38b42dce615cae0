"""How good each model version of a concept is, measured on the user's evaluation ratings.

The evaluation images come from :mod:`agile_modeling.evaluation` (stratified by score, merged over
model versions) and their ratings never train a model. Every model version and zero-shot CLIP are
scored on the same rated images; quality is reported against the number of training ratings and
against the minutes the user spent rating (the labeling tool's lead time), as a table and a plot.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling import plots
from agile_modeling.classifier import ModelRegistry, ModelVersion
from agile_modeling.metrics import binary_metrics
from agile_modeling.scoring import pool_scorer
from agile_modeling.session import USER, WITHDRAWN, Session
from agile_modeling.store.embedding_store import PoolView
from agile_modeling.zero_shot import CLIP_ZERO_SHOT_THRESHOLD, zero_shot_scores


@dataclass(frozen=True)
class VersionQuality:
    """One model version on the evaluation ratings."""

    name: str
    round: int
    num_labels: int
    user_minutes: float | None  # rating time up to this version's round, None if the tool gave none
    evaluated: int
    metrics: dict[str, float]  # binary_metrics' (empty without evaluation ratings)


def pool_probabilities(versions: Sequence[ModelVersion], pool: PoolView) -> dict[str, NDArray[np.float32]]:
    """``{version name: (n,) float32 probability of every pool image}`` (bf16 pool scoring)."""
    out = {}
    for version in versions:
        logits = pool_scorer(version.load()).approximate_logits(pool)
        out[version.name] = (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).astype(np.float32)
    return out


def user_minutes_by_round(session: Session) -> dict[int, float | None]:
    """``{round: minutes the user spent rating rounds 0..round}`` from the labels' lead times."""
    per_round: dict[int, float] = {}
    any_time = False
    for label in session.label_history():
        if label.source != USER or label.value == WITHDRAWN or label.round is None:
            continue
        if label.lead_time is not None:
            any_time = True
            per_round[label.round] = per_round.get(label.round, 0.0) + label.lead_time / 60.0
    rounds = [r.round for r in session.rounds()]
    total, out = 0.0, {}
    for r in rounds:
        total += per_round.get(r, 0.0)
        out[r] = total if any_time else None
    return out


def version_quality(
    session: Session, registry: ModelRegistry, pool: PoolView, evaluation: Mapping[int, int]
) -> list[VersionQuality]:
    """Every model version of the concept, scored on the evaluation ratings ``{image_id: 0|1}``."""
    ids = np.array(sorted(evaluation), dtype=np.int64)
    y = np.array([evaluation[i] for i in ids.tolist()], dtype=np.int64)
    x = pool.take(ids).astype(np.float32) if len(ids) else np.zeros((0, pool.shape[1]), np.float32)
    minutes = user_minutes_by_round(session)
    out = []
    for version in registry.versions():
        probs = version.load().predict_proba(x) if len(ids) else np.zeros(0)
        metrics = binary_metrics(y, probs, 0.5).as_dict() if len(ids) else {}
        r = int(version.info.get("round", -1))
        out.append(
            VersionQuality(version.name, r, int(version.info.get("num_labels", 0)), minutes.get(r), len(ids), metrics)
        )
    return out


def zero_shot_quality(pool: PoolView, text: NDArray[np.float32], evaluation: Mapping[int, int]) -> dict[str, float]:
    """Zero-shot CLIP (cosine with the concept's name, F1 at 0.28) on the same evaluation ratings."""
    ids = np.array(sorted(evaluation), dtype=np.int64)
    if not len(ids):
        return {}
    y = np.array([evaluation[i] for i in ids.tolist()], dtype=np.int64)
    return binary_metrics(y, zero_shot_scores(pool.take(ids), text), CLIP_ZERO_SHOT_THRESHOLD).as_dict()


#: fewer rated positives (or negatives) than this and AUC-PR, F1 and recall mean little: one image
#: more or less moves them by several points
MIN_EVALUATION_CLASS = 10


def evaluation_warning(evaluation: Mapping[int, int], per_stratum: int) -> str | None:
    """A plain sentence when the evaluation ratings ``{image_id: 0|1}`` are too one-sided to measure
    a model (fewer than :data:`MIN_EVALUATION_CLASS` positives or negatives), saying what to do;
    None when they are enough."""
    positives = sum(1 for v in evaluation.values() if v)
    negatives = len(evaluation) - positives
    if positives >= MIN_EVALUATION_CLASS and negatives >= MIN_EVALUATION_CLASS:
        return None
    scarce = "positive" if positives < MIN_EVALUATION_CLASS else "negative"
    count = positives if scarce == "positive" else negatives
    return (
        f"the evaluation set has only {count} {scarce} rating{'s' if count != 1 else ''} (at least "
        f"{MIN_EVALUATION_CLASS} are needed for AUC-PR, F1 and recall to mean anything): these figures are not a "
        f"measurement. Most {scarce} images may already be training labels. Widen the strata "
        f"(`agile concept evaluate NAME --per-stratum {per_stratum * 2}`), or rate another round and publish the "
        "evaluation set again (each new model version adds its own sample), then rate the new tasks."
    )


METRICS = ("auc_pr", "auc_roc", "f1", "precision", "recall", "accuracy")


def quality_table(rows: Sequence[VersionQuality], zero_shot: Mapping[str, float]) -> str:
    """Markdown: zero-shot, then one row per model version."""
    head = (
        "| model | round | training ratings | user minutes | " + " | ".join(m.replace("_", "-") for m in METRICS) + " |"
    )
    lines = [head, "|" + "---|" * (4 + len(METRICS))]

    def cells(metrics: Mapping[str, float]) -> str:
        return " | ".join(f"{metrics[m]:.3f}" if m in metrics and not math.isnan(metrics[m]) else "-" for m in METRICS)

    lines.append(f"| zero-shot CLIP | - | 0 | 0 | {cells(zero_shot)} |")
    for row in rows:
        minutes = f"{row.user_minutes:.1f}" if row.user_minutes is not None else "-"
        lines.append(f"| {row.name} | {row.round} | {row.num_labels} | {minutes} | {cells(row.metrics)} |")
    return "\n".join(lines)


def plot_quality(
    rows: Sequence[VersionQuality], zero_shot: Mapping[str, float], path: str | Path, title: str, metric: str = "auc_pr"
) -> Path:
    """AUC-PR (or ``metric``) per model version against ratings and against user minutes; zero-shot dashed."""
    with_minutes = [r for r in rows if r.user_minutes is not None]
    panels: list[tuple[str, list[float | None], Sequence[VersionQuality]]] = [
        ("training ratings", [r.num_labels for r in rows], rows)
    ]
    if with_minutes:
        panels.append(("user minutes rating", [r.user_minutes for r in with_minutes], with_minutes))
    fig, axes = plots.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6))
    for ax, (xlabel, xs, subset) in zip(axes.flat, panels):
        ax.plot(xs, [r.metrics.get(metric, np.nan) for r in subset], "o-", color="tab:blue", label="agile model")
        for x, r in zip(xs, subset):
            ax.annotate(
                r.name.rsplit("-", 1)[-1],
                (x, r.metrics.get(metric, np.nan)),
                textcoords="offset points",
                xytext=(0, 6),
                ha="center",
                fontsize=7,
            )
        if metric in zero_shot:
            ax.axhline(zero_shot[metric], color="tab:gray", ls="--", label="zero-shot CLIP")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(metric.replace("_", "-").upper() + " on the evaluation set")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(loc="lower right", fontsize=8)
    fig.suptitle(title, fontsize=10)
    return plots.save(fig, path)


def plot_progress(models: Sequence[Mapping[str, Any]], path: str | Path, title: str) -> Path | None:
    """The cross-validated AUC-PR estimate of every model version against its training ratings
    (``models``: :meth:`Session.models` rows), each point marked with its positives. None when no
    version has an estimate yet."""
    rows = [m for m in models if "cv_auc_pr" in m["metrics"]]
    if not rows:
        return None
    fig, axes = plots.subplots(1, 1, figsize=(5.6, 3.6))
    ax = axes.flat[0]
    xs, ys = [m["num_labels"] for m in rows], [m["metrics"]["cv_auc_pr"] for m in rows]
    ax.plot(xs, ys, "o-", color="tab:blue")
    for x, y, m in zip(xs, ys, rows):
        ax.annotate(
            f"{m['name'].rsplit('-', 1)[-1]}\n{m['metrics']['cv_positives']} pos",
            (x, y),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=7,
        )
    ax.set_xlabel("your ratings")
    ax.set_ylabel("estimated AUC-PR (cross-validated)")
    ax.set_ylim(0, 1.1)
    ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    return plots.save(fig, path)
