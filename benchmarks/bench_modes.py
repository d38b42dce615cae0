"""Does a strategy reach every visual mode of a concept whose phrases reach only some?

For each concept of ``multimode_concepts.json`` (e.g. "spotted", typed as "dalmatian": leopards and
polka dots have no phrase), the paper's simulated session (seed of 100 from the phrases, 5 rounds
of 100) runs with each variant and seed, interleaved: the paper's and the default (``bench_default.py``),
margin+coverage alone (3x128, to see what coverage does by itself) and seed + random. Reported per mode: the positives the user
rated, and the final model's test recall at 0.5. A mode is *reached* when the final model
recognises at least half of its test images. Nothing is tuned here.

    .venv/bin/python benchmarks/bench_modes.py [--seeds 0 1 2]
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
from bench_default import VARIANTS
from environment import describe_environment, environment_markdown

from agile_modeling.classifier import DEFAULT_RECIPE, ModelRegistry
from agile_modeling.session import SessionStore
from agile_modeling.simulate import SimulationContext, load_shared_data, load_suite, simulate_session

HERE = Path(__file__).resolve().parent
REACHED = 0.5  # a mode is reached when the final model's test recall at 0.5 is at least this
MODE_VARIANTS = {
    **VARIANTS,
    "margin+coverage, 3x128": {"strategy": "margin+coverage", "recipe": DEFAULT_RECIPE.with_(hidden=(128, 128, 128))},
    "seed + random": {"strategy": "random", "recipe": DEFAULT_RECIPE.with_(hidden=(128, 128, 128))},
}


def run(spec, ctx: SimulationContext, variant: str, seed: int) -> dict:
    """One session; the curve, and per mode the rated positives and the final model's test recall."""
    with tempfile.TemporaryDirectory() as tmp:
        res = simulate_session(spec, ctx, tmp, seed=seed, **MODE_VARIANTS[variant])
        rated = np.array(sorted(SessionStore(Path(tmp) / "sessions.sqlite").open(spec.name).labels("user")))
        slug = spec.concept().slug
        latest = ModelRegistry(Path(tmp) / "models" / slug, slug).latest()
        assert latest is not None
        proba = latest.load().predict_proba(ctx.data.test.x.astype(np.float32))
    pool_modes, test_modes = spec.mode_truth(ctx.data.pool), spec.mode_truth(ctx.data.test)
    modes = {
        mode: {
            "pool": int(pool_modes[mode].sum()),
            "rated_positives": int(pool_modes[mode][rated].sum()),
            "test": int(test_modes[mode].sum()),
            "test_recall": float((proba[test_modes[mode]] >= 0.5).mean()),
        }
        for mode in spec.modes
    }
    return {
        "concept": spec.title,
        "variant": variant,
        "seed": seed,
        "curve": [(r.num_labels, r.metrics["auc_pr"]) for r in res.rounds],
        "modes": modes,
        "reached_all": all(m["test_recall"] >= REACHED for m in modes.values()),
    }


def markdown(record: dict) -> str:
    rows = record["rows"]
    lines = [
        "# Reaching every mode of a concept the phrases reach only partly",
        "",
        f"Command: `{record['command']}` ({record['minutes']:.0f} min)",
        "",
        environment_markdown(record["environment"]),
        "",
        "Protocol: seed of 100 from the phrases, 5 rounds of 100 by the variant's strategy, simulated user from the "
        f"ground truth. A mode is reached when the final model recognises at least {REACHED:.0%} of its test "
        "images (recall at 0.5). Concepts: `benchmarks/multimode_concepts.json`.",
        "",
        "| concept | variant | seed | AUC-PR at 100 / 300 / 600 | "
        + " | ".join(f"{m}: rated positives of pool, test recall" for m in rows[0]["modes"])
        + " | every mode reached |",
        "|---|---|---|---|" + "---|" * (len(rows[0]["modes"]) + 1),
    ]
    for r in rows:
        curve = dict(r["curve"])
        auc = " / ".join(f"{curve[n]:.3f}" for n in (100, 300, 600) if n in curve)
        modes = " | ".join(
            f"{m['rated_positives']} of {m['pool']}, {m['test_recall']:.2f}" for m in r["modes"].values()
        )
        lines.append(
            f"| {r['concept']} | {r['variant']} | {r['seed']} | {auc} | {modes} | {'yes' if r['reached_all'] else 'no'} |"
        )
    lines += ["", "## Summary", "", "| variant | sessions reaching every mode | mean AUC-PR at 600 |", "|---|---|---|"]
    for variant in dict.fromkeys(r["variant"] for r in rows):
        sel = [r for r in rows if r["variant"] == variant]
        final = np.mean([r["curve"][-1][1] for r in sel])
        lines.append(f"| {variant} | {sum(r['reached_all'] for r in sel)} of {len(sel)} | {final:.3f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(MODE_VARIANTS), choices=list(MODE_VARIANTS))
    parser.add_argument("--out", default=str(HERE / "results" / "modes"))
    args = parser.parse_args()
    env = describe_environment()
    ctx = SimulationContext.build(load_shared_data())
    started = time.time()
    rows = []
    for spec in load_suite(HERE / "multimode_concepts.json"):
        for seed in args.seeds:
            for variant in args.variants:
                rows.append(run(spec, ctx, variant, seed))
                print(json.dumps(rows[-1]), flush=True)
    record = {
        "command": " ".join(["benchmarks/bench_modes.py", *sys.argv[1:]]),
        "environment": env,
        "minutes": (time.time() - started) / 60,
        "rows": rows,
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    out.with_suffix(".md").write_text(markdown(record))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
