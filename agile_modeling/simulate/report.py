"""Simulation results as files a person reads: a JSON record, a markdown table and a PNG plot."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from agile_modeling import plots
from agile_modeling.simulate.runner import SessionResult


def results_table(results: list[SessionResult], metric: str = "auc_pr") -> str:
    """Markdown: one row per concept, zero-shot then the model after every round, plus the mean."""
    n_rounds = max(len(r.rounds) for r in results)
    labels = [results[0].rounds[i].num_labels if i < len(results[0].rounds) else "" for i in range(n_rounds)]
    head = "| concept | kind | zero-shot | " + " | ".join(f"{n} ratings" for n in labels) + " |"
    rule = "|" + "---|" * (3 + n_rounds)
    rows = [head, rule]
    for res in results:
        cells = [f"{rr.metrics[metric]:.3f}" for rr in res.rounds]
        rows.append(f"| {res.title} | {res.difficulty} | {res.zero_shot[metric]:.3f} | " + " | ".join(cells) + " |")
    if len(results) > 1:
        mean_zs = np.nanmean([r.zero_shot[metric] for r in results])
        means = [
            np.nanmean([r.rounds[i].metrics[metric] for r in results if i < len(r.rounds)]) for i in range(n_rounds)
        ]
        rows.append(f"| **mean** | | {mean_zs:.3f} | " + " | ".join(f"**{m:.3f}**" for m in means) + " |")
    return "\n".join(rows)


def plot_results(results: list[SessionResult], path: str | Path, metric: str = "auc_pr") -> Path:
    """One panel per concept: ``metric`` against number of ratings, zero-shot as a dashed line."""
    cols = min(3, len(results))
    rows = math.ceil(len(results) / cols)
    fig, axes = plots.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows))
    for ax, res in zip(axes.flat, results):
        xs = [rr.num_labels for rr in res.rounds]
        ax.plot(xs, [rr.metrics[metric] for rr in res.rounds], "o-", color="tab:blue", label="agile model")
        ax.axhline(res.zero_shot[metric], color="tab:gray", ls="--", label="zero-shot CLIP")
        ax.set_title(f"{res.title} ({res.difficulty})", fontsize=10)
        ax.set_xlabel("images rated")
        ax.set_ylabel(metric.replace("_", "-").upper())
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(results) :]:
        ax.set_visible(False)
    axes.flat[0].legend(loc="lower right", fontsize=8)
    return plots.save(fig, path)


def write_report(results: list[SessionResult], out_dir: str | Path, config: dict[str, Any]) -> dict[str, Path]:
    """Write ``results.json``, ``results.md`` and ``auc_pr.png`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(
        json.dumps({"config": config, "sessions": [asdict(r) for r in results]}, indent=2, default=float)
    )
    table = results_table(results)
    (out / "results.md").write_text(f"AUC-PR on the test rows per round (config: {json.dumps(config)})\n\n{table}\n")
    return {
        "json": out / "results.json",
        "table": out / "results.md",
        "plot": plot_results(results, out / "auc_pr.png"),
    }
