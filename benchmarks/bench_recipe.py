"""Choose the MLP's learning rate and epoch size by measurement on the shared real embeddings.

Runs the simulated session (seed of 100 + 5 margin rounds of 100) over the concept suite for a
grid of (learning rate, epoch size) and records the mean test AUC-PR after 100, 300 and 600
ratings and the training time of the 3x128 model on 600 labels.

    .venv/bin/python benchmarks/bench_recipe.py                      # the grid, seed 0
    .venv/bin/python benchmarks/bench_recipe.py --learning-rates 3e-4 1e-3 --epoch-sizes 2048 8192 \
        --seeds 1 2 3 --name recipe_finalists                          # the finalists, 3 more seeds
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_modeling.classifier import DEFAULT_RECIPE  # noqa: E402
from agile_modeling.simulate import SimulationContext, load_shared_data, load_suite, simulate_session  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--learning-rates", type=float, nargs="+", default=[1e-4, 3e-4, 1e-3, 3e-3])
    parser.add_argument("--epoch-sizes", type=int, nargs="+", default=[2048, 8192, 32768])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--name", default="recipe", help="results go to benchmarks/results/NAME.{json,md}")
    args = parser.parse_args()
    env = describe_environment()
    ctx = SimulationContext.build(load_shared_data())
    suite = load_suite(demo=True)  # the six concepts its recorded results cover
    rows = []
    for lr in args.learning_rates:
        for size in args.epoch_sizes:
            recipe = DEFAULT_RECIPE.with_(learning_rate=lr, epoch_size=size)
            curves, train_s = [], []
            for spec in suite:
                for seed in args.seeds:
                    with tempfile.TemporaryDirectory() as d:
                        res = simulate_session(spec, ctx, d, recipe=recipe, seed=seed)
                    curves.append([r.metrics["auc_pr"] for r in res.rounds])
                    train_s.append(res.rounds[-1].train_seconds)
            mean = np.mean(curves, axis=0)
            hard = np.mean(
                [c for c, s in zip(curves, [s for s in suite for _ in args.seeds]) if s.difficulty == "hard"], axis=0
            )
            row = {
                "learning_rate": lr,
                "epoch_size": size,
                "mean_auc_pr": mean.tolist(),
                "hard_auc_pr": hard.tolist(),
                "train_seconds_600": float(np.median(train_s)),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2))
    lines = [
        "# MLP recipe: learning rate and epoch size, measured",
        "",
        environment_markdown(env),
        f"Concepts: {len(suite)} of the packaged suite, seeds {args.seeds}; 10 epochs, batch 256, Adam, "
        "dropout 0.5, weight decay 1e-4; seed model 1x16, then 3x128. Test AUC-PR (mean over concepts; "
        "hard concepts in brackets) after 100 / 300 / 600 ratings; median training time of the 3x128 model on 600 labels.",
        "",
        "| lr | epoch size | 100 | 300 | 600 | train s (600 labels) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        m, h = r["mean_auc_pr"], r["hard_auc_pr"]
        lines.append(
            f"| {r['learning_rate']:g} | {r['epoch_size']} | {m[0]:.3f} ({h[0]:.3f}) | {m[2]:.3f} ({h[2]:.3f}) | "
            f"{m[-1]:.3f} ({h[-1]:.3f}) | {r['train_seconds_600']:.2f} |"
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
