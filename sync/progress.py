"""What the person rating sees of the loop: round, ratings so far, the newest model and its estimate.

After every sync the rating project's description and instructions say where the loop stands
(round, how much of it is rated, positives found, the newest version and its cross-validated
quality estimate), and ``<workspace>/reports/<concept>/progress.png`` plots the estimate of every
version. ``agile concept status`` prints the same.
"""

from __future__ import annotations

import html
import logging
from pathlib import Path

from agile_modeling.quality import plot_progress
from agile_modeling.session import Session

log = logging.getLogger(__name__)

HOW_TO_RATE = (
    "Press 1 for Positive, 2 for Negative, then Submit (Ctrl+Enter). Skip when you cannot tell: "
    "the image is recorded as unsure and never asked again. The next batch appears in this queue by itself."
)


def progress_lines(session: Session) -> list[str]:
    """Sentences on the loop's state, newest first: round, rated, positives, newest version's estimate."""
    rounds = session.rounds()
    labels = session.labels()
    lines = []
    if rounds:
        current = rounds[-1]
        open_images = len(current.batch) - current.withdrawn
        lines.append(f"Round {current.round}: {current.labeled} of {open_images} rated.")
    lines.append(f"{len(labels)} ratings so far, {sum(labels.values())} positive.")
    models = session.models()
    if models:
        newest = models[-1]
        estimate = newest["metrics"].get("cv_auc_pr")
        if estimate is not None:
            lines.append(
                f"Newest model {newest['name']} (round {newest['round']}): estimated AUC-PR {estimate:.2f} "
                f"({newest['metrics']['cv_folds']}-fold cross-validation on your {newest['metrics']['cv_labels']} "
                f"ratings, {newest['metrics']['cv_positives']} positive)."
            )
        else:
            lines.append(
                f"Newest model {newest['name']} (round {newest['round']}, {newest['num_labels']} ratings): "
                "no estimate yet (too few positive or negative ratings)."
            )
    return lines


def progress_plot(session: Session, reports: Path) -> Path | None:
    """Write ``reports/<concept>/progress.png`` (estimate per version); its path, or None before any estimate."""
    return plot_progress(
        session.models(), reports / session.slug / "progress.png", f"{session.concept.name}: quality per model version"
    )


def project_texts(session: Session, concept_text: str) -> dict[str, str]:
    """The rating project's ``description`` and ``expert_instruction`` for the loop's current state."""
    state = " ".join(progress_lines(session))
    name, text = html.escape(session.concept.name), html.escape(concept_text)  # the user's words, shown as HTML
    return {
        "description": f"agile-modeling concept: {concept_text}. {state}",
        "expert_instruction": f"<p><b>Is this {name}?</b> {text}</p><p>{html.escape(state)}</p><p>{HOW_TO_RATE}</p>",
    }
