"""Choose the MLP's learning rate and epoch size by measurement, on the tuning concepts only.

Runs the simulated session (seed of 100 + 5 rounds of 100, ``--strategy``: the loop's default unless
given; the 2026-12-03 grid for 3x128 ran with ``margin``) over one split of the concept
suite (``benchmarks/tuning_concepts.json``, ``concept_split.py``) for every row of a grid of
(learning rate, epoch size) plus named recipes (default: the paper's, ``PAPER_RECIPE``), and records
for every row the test AUC-PR of every concept after 100 ... 600 ratings, their means (all, hard,
easy) and the median training time of the 3x128 model on 600 labels.

The choice (``--split tuning`` only), a rule fixed before the grid was run on these concepts:
the row with the highest mean test AUC-PR over the tuning concepts after 300 and 600 ratings (the
mean of those two means) wins; rows within 0.002 of it are ties, and of the tied rows the one with
the shortest median training time on 600 labels wins. The recipe a split other than ``tuning``
measures is reported, never chosen from.

    .venv/bin/python benchmarks/bench_recipe.py                      # the grid on the tuning concepts
    .venv/bin/python benchmarks/bench_recipe.py --split reported --learning-rates --epoch-sizes \\
        --recipes default paper --name recipe_reported                 # the chosen and the paper's, reported

A run may be split over processes: each writes its rows as it goes, and ``--reuse FILE ...`` takes
rows (same split, seeds and concepts) from earlier results instead of running them again.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concept_split import SPLITS, split_suite  # noqa: E402
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_modeling.classifier import DEFAULT_RECIPE, RECIPES, TrainingRecipe  # noqa: E402
from agile_modeling.selection import DEFAULT_STRATEGY, STRATEGIES  # noqa: E402
from agile_modeling.simulate import SimulationContext, load_shared_data, load_suite, simulate_session  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
#: Rows whose score is within this of the best are ties, broken by training time.
TIE = 0.002


def row_key(row: dict[str, Any]) -> str:
    return str(row["recipe"])


def score(row: dict[str, Any]) -> float:
    """The rule's figure: the mean of the mean test AUC-PR after 300 and after 600 ratings."""
    m = row["mean_auc_pr"]
    return float((m[2] + m[-1]) / 2)


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The docstring's rule: best score; within ``TIE`` of it, the fastest to train."""
    best = max(score(r) for r in rows)
    tied = [r for r in rows if score(r) >= best - TIE]
    return min(tied, key=lambda r: r["train_seconds_600"])


def summarise(
    name: str,
    recipe: TrainingRecipe,
    suite: list[Any],
    per_concept: dict[str, list[list[float]]],
    train_s: dict[str, list[float]],
) -> dict[str, Any]:
    """A row from every concept's curves (one per seed) and training times of the 3x128 model on 600 labels."""

    def mean_over(specs: list[Any]) -> list[float]:
        curves = [c for s in specs for c in per_concept[s.title]]
        return np.mean(curves, axis=0).tolist() if curves else []

    return {
        "recipe": name,
        "learning_rate": recipe.learning_rate,
        "epoch_size": "one pass over the random negatives"
        if recipe.one_pass_over_random_negatives
        else recipe.epoch_size,
        "settings": json.loads(json.dumps(recipe.as_dict())),
        "mean_auc_pr": mean_over(suite),
        "hard_auc_pr": mean_over([s for s in suite if s.difficulty == "hard"]),
        "easy_auc_pr": mean_over([s for s in suite if s.difficulty != "hard"]),
        "per_concept_auc_pr": {s.title: np.mean(per_concept[s.title], axis=0).tolist() for s in suite},
        "per_concept_curves": {s.title: per_concept[s.title] for s in suite},
        "per_concept_train_seconds_600": {s.title: train_s[s.title] for s in suite},
        "train_seconds_600": float(np.median([t for s in suite for t in train_s[s.title]])),
    }


def run_row(
    name: str,
    recipe: TrainingRecipe,
    suite: list[Any],
    seeds: list[int],
    ctx: SimulationContext,
    partial: Path | None = None,
    env: dict[str, Any] | None = None,
    strategy: str = DEFAULT_STRATEGY,
) -> dict[str, Any]:
    """One row: every concept of ``suite`` and seed; each concept's curve is also written to
    ``partial`` as it comes (a row stopped half way keeps what it measured; ``--reuse`` reads it)."""
    per_concept: dict[str, list[list[float]]] = {}
    train_s: dict[str, list[float]] = {}
    t0 = time.perf_counter()
    for spec in suite:
        for seed in seeds:
            with tempfile.TemporaryDirectory() as d:
                res = simulate_session(spec, ctx, d, recipe=recipe, seed=seed, strategy=strategy)
            per_concept.setdefault(spec.title, []).append([r.metrics["auc_pr"] for r in res.rounds])
            train_s.setdefault(spec.title, []).append(res.rounds[-1].train_seconds)
            print(f"  {name} {spec.title} seed {seed}: {per_concept[spec.title][-1][-1]:.3f}", flush=True)
            if partial:
                done = {
                    "recipe": name,
                    "settings": recipe.as_dict(),
                    "seeds": seeds,
                    "environment": env,
                    "auc_pr": per_concept,
                    "train_seconds": train_s,
                }
                partial.write_text(json.dumps(done, indent=2))
    row = summarise(name, recipe, suite, per_concept, train_s)
    row["wall_seconds"] = time.perf_counter() - t0
    return row


def as_results(saved: dict[str, Any]) -> dict[str, Any]:
    """A results file as it is, or a ``.partial.json`` (one row stopped half way) as results of its concepts."""
    if "auc_pr" not in saved:
        return saved
    row = {
        "recipe": saved["recipe"],
        "settings": json.loads(json.dumps(saved["settings"])),
        "per_concept_curves": saved["auc_pr"],
        "per_concept_train_seconds_600": saved["train_seconds"],
    }
    env = saved.get("environment") or {"command": "(not recorded)", "date": "?", "load_average_1m_5m": "?"}
    return {"environment": env, "seeds": saved.get("seeds", [0]), "concepts": list(saved["auc_pr"]), "rows": [row]}


def covered(name: str, recipe: TrainingRecipe, seeds: list[int], files: list[dict[str, Any]]) -> set[str]:
    """Concepts earlier results hold for the row ``name`` (same settings and seeds)."""
    settings = json.loads(json.dumps(recipe.as_dict()))
    out: set[str] = set()
    for saved in map(as_results, files):
        if saved.get("seeds") == seeds:
            for row in saved["rows"]:
                if row["recipe"] == name and row["settings"] == settings:
                    out |= set(row.get("per_concept_curves", row.get("per_concept_auc_pr", {})))
    return out


def reused_row(
    name: str, recipe: TrainingRecipe, suite: list[Any], seeds: list[int], files: list[dict[str, Any]]
) -> dict[str, Any] | None:
    """The row ``name`` from earlier results (same settings and seeds): a whole row over these concepts,
    or one put together from runs over parts of them; None when they do not cover every concept."""
    settings = json.loads(json.dumps(recipe.as_dict()))
    titles = [s.title for s in suite]
    per_concept: dict[str, list[list[float]]] = {}
    train_s: dict[str, list[float]] = {}
    files = [as_results(f) for f in files]
    for saved in files:
        if saved.get("seeds") != seeds:
            continue
        for row in saved["rows"]:
            if row["recipe"] != name or row["settings"] != settings:
                continue
            if saved.get("concepts") == titles and "per_concept_curves" not in row:
                return dict(row)  # a whole row of an older run
            for title, curves in row.get("per_concept_curves", {}).items():
                per_concept[title] = curves
                train_s[title] = row["per_concept_train_seconds_600"][title]
    if not set(titles) <= set(per_concept):
        return None
    row = summarise(name, recipe, suite, per_concept, train_s)
    row["parts_from"] = [saved["environment"] for saved in files if saved.get("seeds") == seeds]
    return row


def markdown(
    rows: list[dict[str, Any]], env: dict[str, Any], split: str, suite: list[Any], seeds: list[int], chosen: str | None
) -> str:
    titles = ", ".join(f"{s.title} ({s.difficulty})" for s in suite)
    lines = [
        f"# MLP recipe: learning rate and epoch size, measured on the {split} concepts",
        "",
        environment_markdown(env),
        f"Concepts ({split}, {len(suite)}; split in [tuning_concepts.json](../tuning_concepts.json)): {titles}. "
        f"Seeds {seeds}. Seed model 1x16, then 3x128; 10 epochs, batch 256, Adam, dropout 0.5, weight decay 1e-4; "
        "margin rounds of 100. Test AUC-PR, mean over concepts (hard concepts; easy concepts), after 100 / 300 / "
        "600 ratings; the rule's score (mean of the 300 and 600 figures); median training time of the 3x128 model "
        "on 600 labels. `paper`: lr 1e-4, every epoch one pass over all the random negatives "
        "(min(500k, unlabeled pool)), 4x their number of samples.",
        "",
        "| recipe | lr | epoch size | 100 | 300 | 600 | score | train s (600 labels) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, h, e = r["mean_auc_pr"], r["hard_auc_pr"], r["easy_auc_pr"]

        def cell(i: int, m: list[float] = m, h: list[float] = h, e: list[float] = e) -> str:
            return f"{m[i]:.3f} ({h[i]:.3f}; {e[i]:.3f})" if h and e else f"{m[i]:.3f}"

        mark = "**" if r["recipe"] == chosen else ""
        lines.append(
            f"| {mark}{r['recipe']}{mark} | {r['learning_rate']:g} | {r['epoch_size']} | {cell(0)} | {cell(2)} | "
            f"{cell(-1)} | {score(r):.4f} | {r['train_seconds_600']:.2f} |"
        )
    if chosen:
        lines += [
            "",
            f"Chosen by the rule (best score; rows within {TIE} of it tie, the fastest to train wins): **{chosen}**.",
        ]
    lines += [
        "",
        "## Per concept, AUC-PR after 600 ratings",
        "",
        "| concept | " + " | ".join(r["recipe"] for r in rows) + " |",
    ]
    lines.append("|---" * (len(rows) + 1) + "|")
    for s in suite:
        cells = [f"{r['per_concept_auc_pr'][s.title][-1]:.3f}" for r in rows]
        lines.append(f"| {s.title} ({s.difficulty}) | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--split", choices=SPLITS, default="tuning", help="concepts to run on (default tuning)")
    parser.add_argument("--demo", action="store_true", help="only the six demo concepts of the split")
    parser.add_argument("--learning-rates", type=float, nargs="*", default=[1e-4, 3e-4, 1e-3, 3e-3])
    parser.add_argument("--epoch-sizes", type=int, nargs="*", default=[2048, 8192])
    parser.add_argument(
        "--recipes", nargs="*", default=["paper"], choices=sorted(RECIPES), help="named recipes, rows of their own"
    )
    parser.add_argument("--concepts", nargs="*", help="only these concepts (titles) of the split: a part of a run")
    parser.add_argument(
        "--strategy", choices=sorted(STRATEGIES), default=DEFAULT_STRATEGY, help="selection after the seed"
    )
    parser.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=list(DEFAULT_RECIPE.hidden),
        help="hidden layers of the grid's model after the seed (default DEFAULT_RECIPE's; the 2026-12-03 grid: 128 128 128)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--reuse", nargs="*", default=[], help="results JSON files whose rows are taken, not rerun")
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="run nothing: the table of what --reuse files hold, over the concepts every row has",
    )
    parser.add_argument("--name", default="recipe_tuning", help="results go to benchmarks/results/NAME.{json,md}")
    args = parser.parse_args()
    env = describe_environment()
    ctx = SimulationContext.build(load_shared_data())
    suite = split_suite(load_suite(), args.split)
    if args.demo:
        demo = {s.title for s in load_suite(demo=True)}
        suite = [s for s in suite if s.title in demo]
    if args.concepts:
        suite = [s for s in suite if s.title in args.concepts]
    wanted: list[tuple[str, TrainingRecipe]] = [
        (f"lr {lr:g}, epoch {size}", DEFAULT_RECIPE.with_(hidden=tuple(args.hidden), learning_rate=lr, epoch_size=size))
        for lr in args.learning_rates
        for size in args.epoch_sizes
    ] + [(name, RECIPES[name]) for name in args.recipes]
    titles = [s.title for s in suite]
    files = [json.loads(Path(path).read_text()) for path in args.reuse]
    if args.no_run:  # only what earlier runs measured: the concepts every row has
        have = set(titles)
        for name, recipe in wanted:
            have &= covered(name, recipe, args.seeds, files)
        suite = [s for s in suite if s.title in have]
        titles = [s.title for s in suite]
    RESULTS.mkdir(exist_ok=True)
    rows: list[dict[str, Any]] = []
    for name, recipe in wanted:
        row = reused_row(name, recipe, suite, args.seeds, files)
        if row is None and args.no_run:
            print(f"{name}: not in the --reuse files for these concepts; left out", flush=True)
            continue
        if row is None:
            row = run_row(
                name, recipe, suite, args.seeds, ctx, RESULTS / f"{args.name}.partial.json", env, args.strategy
            )
            row["environment"] = env  # where and when this row was measured
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("recipe", "mean_auc_pr", "train_seconds_600")}), flush=True)
        result = {
            "environment": env,
            "split": args.split,
            "strategy": args.strategy,
            "concepts": titles,
            "seeds": args.seeds,
            "rows": rows,
        }
        (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    whole = len(suite) == len(split_suite(load_suite(), args.split))
    chosen = choose(rows)["recipe"] if args.split == "tuning" and whole and rows else None
    result = {"environment": env, "split": args.split, "concepts": titles, "seeds": args.seeds, "rows": rows}
    if chosen:
        result["chosen"] = chosen
        result["rule"] = f"highest mean of the 300- and 600-rating mean AUC-PR; within {TIE}: fastest training"
    (RESULTS / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    text = markdown(rows, env, args.split, suite, args.seeds, chosen)
    if args.reuse:
        text += "\nRows measured by other runs and taken from their results (their command, date and load):\n\n"
        for r in rows:
            for e in r.get("parts_from", [r.get("environment", env)]):
                text += f"- {r['recipe']}: `{e['command']}`, {e['date']}, load {e['load_average_1m_5m']}\n"
    (RESULTS / f"{args.name}.md").write_text(text)
    (RESULTS / f"{args.name}.partial.json").unlink(missing_ok=True)
    print(text)


if __name__ == "__main__":
    main()
