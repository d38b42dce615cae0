"""What a queue that never runs dry costs in quality: the next batch selected early (``prefetch``).

The Label Studio loop selects each next batch when half a batch is still to rate
(``AGILE_PREFETCH=0.5``), so the rater never waits for training and selection; the paper selects it
when the batch is fully rated (``prefetch`` 0). Early selection means every model but the last is
trained on half a batch fewer ratings, and each selection misses those ratings.

This runs the paper's simulated-user protocol (seed of 100, 5 rounds of 100 by margin, the same
recipe) for every concept of the shared suite, with prefetch 0 and 0.5, for each seed, and reports
test AUC-PR of the final model (600 ratings, trained on all of them in both settings) per concept,
plus the mean curve against ratings. Every concept and seed is reported; nothing is tuned here.

    .venv/bin/python benchmarks/bench_prefetch.py [--seeds 0 1] [--prefetch 0 0.5] [--concepts ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from environment import describe_environment, environment_markdown  # noqa: E402

from agile_modeling.simulate import SimulationContext, load_shared_data, load_suite, simulate_session  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--prefetch", type=float, nargs="+", default=[0.0, 0.5])
    parser.add_argument("--concepts", nargs="*", help="suite titles (default: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "prefetch"))
    args = parser.parse_args()

    env = describe_environment()
    data = load_shared_data()
    ctx = SimulationContext.build(data)
    suite = [s for s in load_suite() if not args.concepts or s.title in args.concepts]
    started = time.time()
    variants = {f"prefetch {p}": {"prefetch": p} for p in args.prefetch}
    rows = run_variants(suite, ctx, args.seeds, variants, args.rounds, args.batch_size)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": " ".join(["benchmarks/bench_prefetch.py", *sys.argv[1:]]),
        "environment": env,
        "minutes": (time.time() - started) / 60,
        "rows": rows,
    }
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    out.with_suffix(".md").write_text(markdown(record, args))
    print(out.with_suffix(".md").read_text())
    return 0


def run_variants(
    suite: list, ctx: SimulationContext, seeds: list[int], variants: dict[str, dict], rounds: int, batch_size: int
) -> list[dict]:
    """One simulated session per concept x seed x variant (``simulate_session`` keyword arguments),
    variants interleaved so that all see the same machine state. Rows carry the variant's label and
    keywords, the curve ``[(ratings, test AUC-PR), ...]``, the final AUC-PR and training seconds."""
    rows = []
    for spec in suite:
        for seed in seeds:
            for label, kwargs in variants.items():
                with tempfile.TemporaryDirectory() as tmp:
                    res = simulate_session(spec, ctx, tmp, rounds=rounds, batch_size=batch_size, seed=seed, **kwargs)
                curve = [(r.num_labels, r.metrics["auc_pr"]) for r in res.rounds]
                rows.append(
                    {
                        "concept": spec.title,
                        "difficulty": spec.difficulty,
                        "seed": seed,
                        "variant": label,
                        **{k: v.as_dict() if hasattr(v, "as_dict") else v for k, v in kwargs.items()},
                        "curve": curve,
                        "final_auc_pr": curve[-1][1],
                        "train_seconds": [r.train_seconds for r in res.rounds],
                    }
                )
                print(
                    f"{spec.title:45s} seed {seed} {label}: final AUC-PR {curve[-1][1]:.3f}  "
                    f"curve {[f'{n}:{a:.3f}' for n, a in curve]}",
                    flush=True,
                )
    return rows


def markdown(record: dict, args) -> str:
    rows = record["rows"]
    settings = sorted({r["prefetch"] for r in rows})
    lines = [
        "# The next batch selected early (prefetch): quality cost",
        "",
        f"Command: `{record['command']}` ({record['minutes']:.0f} min)",
        "",
        environment_markdown(record["environment"]),
        "",
        f"Protocol: seed of {args.batch_size}, {args.rounds} rounds of {args.batch_size} by margin, simulated user "
        "from the ground truth, test AUC-PR on the shared test split. prefetch 0 = the paper (select when the batch "
        "is rated); 0.5 = the Label Studio loop's default (select when half a batch is left).",
        "",
        "## Mean test AUC-PR of the final model (all ratings)",
        "",
        "| concepts | " + " | ".join(f"prefetch {p}" for p in settings) + " | difference |",
        "|---|" + "---|" * (len(settings) + 1),
    ]
    for group in ("all", "easy", "hard"):
        sel = [r for r in rows if group == "all" or r["difficulty"] == group]
        means = [np.mean([r["final_auc_pr"] for r in sel if r["prefetch"] == p]) for p in settings]
        lines.append(
            f"| {group} ({len(sel) // len(settings)} sessions) | "
            + " | ".join(f"{m:.3f}" for m in means)
            + f" | {means[-1] - means[0]:+.3f} |"
        )
    lines += ["", "## Mean curve (test AUC-PR of each trained model, by ratings it was trained on)", ""]
    for p in settings:
        sel = [r for r in rows if r["prefetch"] == p]
        points = np.array([r["curve"] for r in sel])  # (sessions, models, 2)
        lines.append(f"- prefetch {p}: " + ", ".join(f"{n:.0f} ratings {a:.3f}" for n, a in points.mean(axis=0)))
    lines += [
        "",
        "## Every session: final test AUC-PR",
        "",
        "| concept | difficulty | seed | " + " | ".join(f"prefetch {p}" for p in settings) + " |",
        "|---|---|---|" + "---|" * len(settings),
    ]
    keyed = {(r["concept"], r["seed"], r["prefetch"]): r for r in rows}
    for concept, difficulty, seed in sorted({(r["concept"], r["difficulty"], r["seed"]) for r in rows}):
        lines.append(
            f"| {concept} | {difficulty} | {seed} | "
            + " | ".join(f"{keyed[(concept, seed, p)]['final_auc_pr']:.3f}" for p in settings)
            + " |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
