"""Selection strategies of the loop's rounds after the phrase seed: margin (the paper's), margin +
positive mining, and random (passive learning: the "seed + random" baseline).

The paper's simulated-user protocol for every concept of the shared suite with each strategy,
interleaved; reported: test AUC-PR of every model. Nothing is tuned here.

    .venv/bin/python benchmarks/bench_strategies.py [--seeds 0] [--strategies margin random]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_classifiers import markdown
from bench_prefetch import run_variants
from environment import describe_environment

from agile_modeling.selection import STRATEGIES
from agile_modeling.simulate import SimulationContext, load_shared_data, load_suite


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=list(STRATEGIES))
    parser.add_argument("--concepts", nargs="*", help="suite titles (default: all)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "strategies"))
    args = parser.parse_args()

    env = describe_environment()
    ctx = SimulationContext.build(load_shared_data())
    suite = [s for s in load_suite() if not args.concepts or s.title in args.concepts]
    started = time.time()
    variants = {name: {"strategy": name} for name in args.strategies}
    rows = run_variants(suite, ctx, args.seeds, variants, args.rounds, args.batch_size)
    record = {
        "command": " ".join(["benchmarks/bench_strategies.py", *sys.argv[1:]]),
        "environment": env,
        "minutes": (time.time() - started) / 60,
        "rows": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    title = "Selection after the phrase seed: margin, margin + positive mining, random (seed + random)"
    protocol = "each variant is the strategy of every round after the seed; the paper's MLP and recipe"
    out.with_suffix(".md").write_text(markdown(record, args, title, protocol))
    print(out.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
