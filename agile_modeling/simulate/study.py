"""The simulated study of the paper (sections 4-5, figures 3, 4, 7, 8, 11), over the concept suite.

Per concept: zero-shot CLIP; the user's loop with batches of 50, 100 and 200; margin against
margin + positive mining and against the passive baselines (the phrase seed then random batches,
and random from the first image); who rates (User-100, Crowd-100, Crowd-500, User-100 + Crowd-500); an
oracle (the same MLP trained on every pool label) as the ceiling; and the stratified evaluation
estimate of the final user model against its exact metrics on the test rows. Results are written
after every concept to ``study.json``, and a run resumes from it.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from numpy.typing import NDArray

from agile_modeling import plots
from agile_modeling.classifier import RECIPES, MLPClassifier, recipe_for_round
from agile_modeling.classifier.artifacts import ModelRegistry
from agile_modeling.errors import AgileError
from agile_modeling.evaluation import NUM_STRATA, PER_STRATUM, build_evaluation_set, url_hashes
from agile_modeling.metrics import binary_metrics
from agile_modeling.quality import pool_probabilities
from agile_modeling.session import SessionStore
from agile_modeling.simulate.runner import SessionResult, SimulationContext, simulate_session
from agile_modeling.simulate.suite import SimulatedConcept


class Condition(NamedTuple):
    """One way of running the loop in the study."""

    rater: str  # who rates every batch: "user" or "crowd"
    batch: int  # images per batch, the seed batch included
    strategy: str  # the selection strategy of the rounds
    then_crowd: int = 0  # > 0: a last round of that many images rated by the crowd
    seed_batch: str = "phrases"  # "random": the seed batch is a uniform draw, not the phrases' neighbours


CONDITIONS = {
    "user-50": Condition("user", 50, "margin"),
    "user-100": Condition("user", 100, "margin", 500),  # its last round is the User-100 + Crowd-500 step
    "user-200": Condition("user", 200, "margin"),
    "user-100-positive-mining": Condition("user", 100, "margin+positive"),
    "crowd-100": Condition("crowd", 100, "margin"),
    "crowd-500": Condition("crowd", 500, "margin"),
    # the baselines active learning is measured against: the phrase seed then random batches, and random
    # from the first image (passive learning)
    "user-100-seed-random": Condition("user", 100, "random"),
    "user-100-random": Condition("user", 100, "random", seed_batch="random"),
}


@dataclass(frozen=True)
class StudyConfig:
    rounds: int = 5
    seed: int = 0
    crowd_error_rate: float = 0.1
    conditions: tuple[str, ...] = tuple(CONDITIONS)
    #: a name of ``RECIPES``: how every model of every condition, and the oracle, is trained
    recipe: str = "default"


class StudyError(AgileError):
    """The study cannot run as asked (a pool too small for its conditions, another run's folder)."""


def images_rated(config: StudyConfig) -> int:
    """The most pool images one condition of ``config`` has rated (seed + rounds + a crowd step)."""
    return max(c.batch * (config.rounds + 1) + c.then_crowd for c in CONDITIONS.values())


def _curve(result: SessionResult) -> list[dict[str, float]]:
    return [
        {"round": r.round, "ratings": r.num_labels, **{k: r.metrics[k] for k in ("auc_pr", "auc_roc", "f1")}}
        for r in result.rounds
    ]


def oracle_metrics(
    spec: SimulatedConcept, ctx: SimulationContext, seed: int = 0, recipe: str = "default"
) -> dict[str, float]:
    """The rounds' MLP with the same recipe (``RECIPES[recipe]``), trained on the user's label of every pool image
    (no random negatives: every pool image is labeled; the paper's recipe then has epochs of ``epoch_size``)."""
    y = spec.ground_truth(ctx.data.pool).astype(np.int64)
    base = RECIPES[recipe].with_(seed=seed)
    clf = MLPClassifier(recipe_for_round(1, base)).fit(ctx.data.pool.x.astype(np.float32), y)
    test_truth = spec.ground_truth(ctx.data.test)
    return binary_metrics(test_truth, clf.predict_proba(ctx.data.test.x.astype(np.float32)), 0.5).as_dict()


def stratified_estimate(
    spec: SimulatedConcept,
    ctx: SimulationContext,
    workdir: Path,
    slug: str,
    hashes: NDArray[np.uint64],
    rounds: int,
) -> dict[str, Any]:
    """The paper's evaluation protocol for the user's final model, against its exact test metrics.

    Every version of the session picks its stratified sample from the pool (training images
    excluded); the user's ground truth rates the merged set; the final model is scored on it.
    """
    registry = ModelRegistry(workdir / "models" / slug, slug)
    versions = [v for v in registry.versions() if int(v.info.get("round", 0)) <= rounds]
    session = SessionStore(workdir / "sessions.sqlite").open(spec.name)
    used = np.array(sorted(set(session.queued_ids())), dtype=np.int64)
    merged = build_evaluation_set(pool_probabilities(versions, ctx.pool), hashes, used)
    ids = np.array(merged.ids, dtype=np.int64)
    truth = spec.ground_truth(ctx.data.pool)[ids]
    final = versions[-1]
    estimate = binary_metrics(truth, final.load().predict_proba(ctx.data.pool.x[ids].astype(np.float32)), 0.5).as_dict()
    return {
        "model": final.name,
        "images": int(len(ids)),
        "positives": int(truth.sum()),
        "estimate": estimate,
        "exact": final.metrics,
    }


def run_concept(
    spec: SimulatedConcept,
    ctx: SimulationContext,
    config: StudyConfig,
    hashes: NDArray[np.uint64],
    log: Callable[[str], None] = print,
    done: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The concept's results under every condition of ``config``; those already in ``done`` (its saved
    results: a study extended by a condition) are kept, not run again."""
    out: dict[str, Any] = done or {"title": spec.title, "difficulty": spec.difficulty, "runs": {}}
    for name in config.conditions:
        if name in out["runs"]:
            continue
        condition = CONDITIONS[name]
        then_crowd = condition.then_crowd
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = simulate_session(
                spec,
                ctx,
                tmp,
                rounds=config.rounds,
                batch_size=condition.batch,
                strategy=condition.strategy,
                seed=config.seed,
                rater=condition.rater,
                crowd_error_rate=config.crowd_error_rate,
                then_crowd_batch=then_crowd,
                seed_batch=condition.seed_batch,
                recipe=RECIPES[config.recipe],
            )
            out["zero_shot"] = result.zero_shot
            curve = _curve(result)
            if then_crowd:
                out["runs"]["user-100+crowd-500"] = curve
                curve = curve[:-1]
                out["stratified"] = stratified_estimate(
                    spec, ctx, Path(tmp), spec.concept().slug, hashes, config.rounds
                )
            out["runs"][name] = curve
        log(
            f"  {name}: AUC-PR {curve[0]['auc_pr']:.3f} -> {curve[-1]['auc_pr']:.3f} at {curve[-1]['ratings']} "
            f"ratings ({time.perf_counter() - t0:.0f} s)"
        )
    if "oracle" not in out:
        out["oracle"] = oracle_metrics(spec, ctx, config.seed, config.recipe)
    log(f"  oracle AUC-PR {out['oracle']['auc_pr']:.3f}; zero-shot {out['zero_shot']['auc_pr']:.3f}")
    return out


def run_study(
    suite: Sequence[SimulatedConcept],
    ctx: SimulationContext,
    out_dir: str | Path,
    config: StudyConfig = StudyConfig(),
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every concept of ``suite`` (resuming from ``out_dir/study.json``: a study made with fewer
    conditions and otherwise the same configuration is extended by the missing ones)."""
    if config.recipe not in RECIPES:
        raise StudyError(f"no recipe named {config.recipe!r}: one of {', '.join(RECIPES)}")
    needed = images_rated(config) + NUM_STRATA * PER_STRATUM  # and an evaluation set beside them
    if len(ctx.pool) < needed:
        raise StudyError(
            f"the study's largest condition rates {images_rated(config)} pool images and its evaluation set "
            f"{NUM_STRATA * PER_STRATUM} more; this pool has {len(ctx.pool)}: give a larger pool, fewer --rounds "
            "(each round of Crowd-500 rates 500), or run `agile simulate` for the loop alone"
        )
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "study.json"
    wanted = json.loads(json.dumps(asdict(config)))
    saved = json.loads(path.read_text()) if path.exists() else {"config": wanted, "concepts": []}
    saved["config"].setdefault("recipe", "default")  # a study saved before recipes had names used the default
    if {**saved["config"], "conditions": None} != {**wanted, "conditions": None}:
        raise StudyError(f"{path} was made with another configuration ({saved['config']}); use another --out")
    saved["config"]["conditions"] = [
        c for c in CONDITIONS if c in {*saved["config"]["conditions"], *wanted["conditions"]}
    ]
    done = {c["title"]: c for c in saved["concepts"]}
    hashes = url_hashes([f"shared://{d}/{i}" for i, d in enumerate(ctx.data.pool.dataset)])
    for n, spec in enumerate(suite, 1):
        if spec.title in done and set(config.conditions) <= set(done[spec.title]["runs"]):
            continue
        log(f"[{n}/{len(suite)}] {spec.title} ({spec.difficulty})")
        if spec.title in done:
            run_concept(spec, ctx, config, hashes, log, done=done[spec.title])
        else:
            saved["concepts"].append(run_concept(spec, ctx, config, hashes, log))
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved, indent=1))
        tmp.replace(path)
    titles = [s.title for s in suite]
    return [c for c in saved["concepts"] if c["title"] in titles]


# --- summaries -------------------------------------------------------------------------------------
def mean_se(values: Sequence[float]) -> tuple[float, float]:
    v = np.array([x for x in values if not math.isnan(x)], dtype=np.float64)
    if not len(v):
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0


def _at(curve: list[dict[str, float]], ratings: int, metric: str = "auc_pr") -> float:
    hit = [p[metric] for p in curve if p["ratings"] == ratings]
    return hit[0] if hit else float("nan")


GROUPS = ("hard", "easy", "all")


def _group(results: list[dict[str, Any]], group: str) -> list[dict[str, Any]]:
    return results if group == "all" else [r for r in results if r["difficulty"] == group]


def summary_table(results: list[dict[str, Any]], metric: str = "auc_pr") -> str:
    """Markdown: mean ± standard error per group for every condition at its rating counts."""
    rows = [
        "| condition | " + " | ".join(f"{g} (n={len(_group(results, g))})" for g in GROUPS) + " |",
        "|---|" + "---|" * len(GROUPS),
    ]

    def line(label: str, values_of: Callable[[dict[str, Any]], float]) -> None:
        cells = []
        for g in GROUPS:
            values = [values_of(r) for r in _group(results, g)]
            m, se = mean_se(values)
            counted = sum(not math.isnan(v) for v in values)
            cells.append(
                "-" if math.isnan(m) else f"{m:.3f} ± {se:.3f}" + (f" ({counted})" if counted < len(values) else "")
            )
        rows.append(f"| {label} | " + " | ".join(cells) + " |")

    def at_ratings(run: str, n: int, r: dict[str, Any]) -> float:
        return _at(r["runs"][run], n, metric)

    def after_last_round(run: str, r: dict[str, Any]) -> float:
        value: float = r["runs"][run][-1][metric]
        return value

    line("zero-shot CLIP", lambda r: r["zero_shot"][metric])
    for ratings in (100, 200, 300, 600):
        line(f"User-100, {ratings} ratings", partial(at_ratings, "user-100", ratings))
    line("User-100 + Crowd-500, 1100 ratings", lambda r: r["runs"]["user-100+crowd-500"][-1][metric])
    for name, ratings in (("crowd-100", 600), ("crowd-500", 500), ("crowd-500", 3000)):
        line(f"{name.capitalize()}, {ratings} ratings", partial(at_ratings, name, ratings))
    for name in ("user-50", "user-200"):
        line(f"{name.capitalize()}, after 5 rounds", partial(after_last_round, name))
    line(
        "User-100 with positive mining, 600 ratings", lambda r: _at(r["runs"]["user-100-positive-mining"], 600, metric)
    )
    for name, label in (("user-100-seed-random", "seed + random"), ("user-100-random", "random")):
        for ratings in (300, 600):
            line(f"User-100, {label}, {ratings} ratings", partial(at_ratings, name, ratings))
    line("oracle (every pool label)", lambda r: r["oracle"][metric])
    line("stratified estimate of User-100 at 600", lambda r: r["stratified"]["estimate"][metric])
    line("exact (test rows) of the same model", lambda r: r["stratified"]["exact"][metric])
    return "\n".join(rows)


def _f(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.3f}"


def per_concept_table(results: list[dict[str, Any]], metric: str = "auc_pr") -> str:
    head = (
        "| concept | kind | zero-shot | User-100 at 100 / 300 / 600 | User-50 / User-200 after 5 rounds | "
        "positive mining at 600 | seed + random / random at 600 | Crowd-100 at 600 | Crowd-500 at 3000 | "
        "User+Crowd | oracle | stratified estimate (positives of images) / exact |"
    )
    rows = [head, "|" + "---|" * 12]
    for r in results:
        u = r["runs"]["user-100"]
        rows.append(
            f"| {r['title']} | {r['difficulty']} | {_f(r['zero_shot'][metric])} | "
            f"{_f(_at(u, 100, metric))} / {_f(_at(u, 300, metric))} / {_f(_at(u, 600, metric))} | "
            f"{_f(r['runs']['user-50'][-1][metric])} / {_f(r['runs']['user-200'][-1][metric])} | "
            f"{_f(_at(r['runs']['user-100-positive-mining'], 600, metric))} | "
            f"{_f(_at(r['runs']['user-100-seed-random'], 600, metric))} / "
            f"{_f(_at(r['runs']['user-100-random'], 600, metric))} | "
            f"{_f(_at(r['runs']['crowd-100'], 600, metric))} | {_f(_at(r['runs']['crowd-500'], 3000, metric))} | "
            f"{_f(r['runs']['user-100+crowd-500'][-1][metric])} | {_f(r['oracle'][metric])} | "
            f"{_f(r['stratified']['estimate'][metric])} ({r['stratified']['positives']}+ of {r['stratified']['images']}) / "
            f"{_f(r['stratified']['exact'][metric])} |"
        )
    return "\n".join(rows)


def plot_study(results: list[dict[str, Any]], path: str | Path, metric: str = "auc_pr") -> Path:
    """Three rows (who rates; batch sizes; margin vs positive mining) x three groups (hard, easy, all)."""
    rows = [
        (
            "who rates",
            [
                ("user-100", "User-100"),
                ("crowd-100", "Crowd-100"),
                ("crowd-500", "Crowd-500"),
                ("user-100+crowd-500", "User-100 + Crowd-500"),
            ],
        ),
        ("batch size", [("user-50", "50"), ("user-100", "100"), ("user-200", "200")]),
        (
            "selection",
            [
                ("user-100", "margin"),
                ("user-100-positive-mining", "margin + positive mining"),
                ("user-100-seed-random", "seed + random"),
                ("user-100-random", "random"),
            ],
        ),
    ]
    fig, axes = plots.subplots(len(rows), len(GROUPS), figsize=(13, 10))
    for i, (row_title, series) in enumerate(rows):
        for j, group in enumerate(GROUPS):
            ax = axes[i][j]
            members = _group(results, group)
            if not members:
                ax.set_visible(False)
                continue
            for key, label in series:
                xs = [p["ratings"] for p in members[0]["runs"][key]]
                steps = range(len(xs))
                if key == "user-100+crowd-500":  # the same as User-100 up to its last, crowd-rated round
                    steps = range(len(xs) - 2, len(xs))
                stats = [mean_se([r["runs"][key][k][metric] for r in members]) for k in steps]
                ax.errorbar(
                    [xs[k] for k in steps],
                    [m for m, _ in stats],
                    yerr=[s for _, s in stats],
                    marker="o",
                    ms=3,
                    capsize=2,
                    label=label,
                    ls="--" if key == "user-100+crowd-500" else "-",
                )
            ax.axhline(mean_se([r["zero_shot"][metric] for r in members])[0], color="gray", ls="--", label="zero-shot")
            ax.axhline(mean_se([r["oracle"][metric] for r in members])[0], color="black", ls=":", label="oracle")
            ax.set_xscale("log")
            ax.set_title(f"{row_title}: {group} concepts (n={len(members)})", fontsize=9)
            ax.set_xlabel("images rated")
            ax.set_ylabel(metric.replace("_", "-").upper())
            ax.grid(alpha=0.3)
            if j == 0:
                ax.legend(fontsize=7, loc="lower right")
    return plots.save(fig, path, dpi=100)
