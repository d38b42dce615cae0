"""The simulated Agile Deliberation study over the shared Caltech-101 embeddings, offline provider.

Each simulated user holds a private definition (a set of Caltech-101 classes) behind a vague
concept name. They decide scoping candidates by looking at the representative images, label
borderline batches from their ground truth and, when they disagree with the definition, comment
with the word for what they meant. Measured on every Caltech-101 test row (F1, precision,
recall), against the paper's two automated baselines (zero-shot on the concept name; automatic
decomposition with no user, as Modeling Collaborator), plain agile modeling with the same number
of labels, and the combined classifier.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.classifier import ModelRegistry
from agile_modeling.concepts import Concept
from agile_modeling.deliberation.combined import CombinedClassifier
from agile_modeling.deliberation.definition import Definition, UnitConcept
from agile_modeling.deliberation.history import SOURCE, ScopingItem
from agile_modeling.deliberation.loop import Deliberation, DeliberationConfig
from agile_modeling.deliberation.providers.offline import EmbeddingProvider
from agile_modeling.encoders.vocabulary import VocabularyTextEncoder
from agile_modeling.errors import NotEnoughLabelsError
from agile_modeling.index import ExactIndex, NeighbourIndex
from agile_modeling.loop import AgileLoop, LoopConfig
from agile_modeling.metrics import binary_metrics
from agile_modeling.plots import save, subplots
from agile_modeling.session import SessionStore
from agile_modeling.simulate.data import find_data_dir
from agile_modeling.store.embedding_store import PoolView

SUITE_FILE = "deliberation_concepts.json"
DATASET = "caltech101"


@dataclass(frozen=True)
class PrivateDefinition:
    """A simulated user: the vague ``name`` they type, and ``{class: word}`` for what they count in
    scope (``inside``) and the near misses they would name (``outside``)."""

    title: str
    name: str
    inside: dict[str, str]
    outside: dict[str, str]


def load_deliberation_suite(path: str | Path | None = None) -> list[PrivateDefinition]:
    text = (
        Path(path).read_text() if path else resources.files("agile_modeling.simulate").joinpath(SUITE_FILE).read_text()
    )
    return [
        PrivateDefinition(c["title"], c["name"], dict(c["in"]), dict(c["out"])) for c in json.loads(text)["concepts"]
    ]


@dataclass(frozen=True)
class CaltechData:
    """Pool = val + few-shot rows, test = test rows of Caltech-101; labels are class indices."""

    pool: PoolView
    pool_x: NDArray[np.float32]
    pool_y: NDArray[np.int64]
    test_x: NDArray[np.float32]
    test_y: NDArray[np.int64]
    classnames: list[str]
    vocabulary: VocabularyTextEncoder

    @classmethod
    def load(cls, root: str | Path | None = None) -> CaltechData:
        root = find_data_dir(root)
        data = np.load(root / f"{DATASET}.npz")
        keys = sorted(k[:-2] for k in data.files if k.endswith("_x") and k != "test_x")
        x = np.concatenate([data[f"{k}_x"] for k in keys]).astype(np.float16)
        y = np.concatenate([data[f"{k}_y"] for k in keys]).astype(np.int64)
        return cls(
            PoolView([x], x.shape[1]),
            x.astype(np.float32),
            y,
            data["test_x"].astype(np.float32),
            data["test_y"].astype(np.int64),
            [str(c) for c in data["classnames"]],
            VocabularyTextEncoder.from_npz(root / "text_vocabulary.npz"),
        )

    def truth(self, spec: PrivateDefinition, labels: NDArray[np.int64]) -> NDArray[np.bool_]:
        wanted = [self.classnames.index(c) for c in spec.inside]
        return np.isin(labels, wanted)


#: what a simulated user's comment says when they disagree: the word for the image's class (which the
#: offline provider can add to the definition), or only the verdict (what the comment channel adds
#: beyond the labels is then nothing a phrase table can read)
COMMENT_STYLES = ("phrase", "verdict")


class SimulatedDeliberator:
    """Answers from the private definition. Comments only when disagreeing with the definition
    (the labeling config requires a reason then): naming the word for the image's class
    (``comments="phrase"``), or giving the verdict alone (``"verdict"``)."""

    def __init__(self, spec: PrivateDefinition, data: CaltechData, comments: str = "phrase") -> None:
        if comments not in COMMENT_STYLES:
            raise ValueError(f"comments must be one of {', '.join(COMMENT_STYLES)}, not {comments!r}")
        self.spec = spec
        self.data = data
        self.comments = comments
        self.truth = data.truth(spec, data.pool_y)
        self.related = np.isin(data.pool_y, [data.classnames.index(c) for c in {**spec.inside, **spec.outside}])

    def label(self, image_id: int) -> int:
        return int(self.truth[image_id])

    def comment(self, image_id: int, shown: int) -> str:
        if self.label(image_id) == shown:
            return ""
        if self.comments == "verdict":
            return f"I count this as {'in' if self.label(image_id) else 'out of'} scope"
        cls = self.data.classnames[self.data.pool_y[image_id]]
        word = self.spec.inside.get(cls) or self.spec.outside.get(cls) or cls.replace("_", " ")
        return f"this is a {word}, which I count as {'in' if self.label(image_id) else 'out of'} scope"

    def scoping_decision(self, item: ScopingItem) -> str:
        """Keep, flip or discard a candidate by what its representative images show: mostly the
        user's concept -> in; mostly near misses -> out; neither -> discard."""
        ids = np.asarray(item.image_ids, dtype=np.int64)
        if not len(ids):
            return "discard"
        inside = self.truth[ids].mean()
        near_miss = (self.related[ids] & ~self.truth[ids]).mean()
        if inside >= 0.5:
            wanted = "in"
        elif near_miss >= 0.5:
            wanted = "out"
        else:
            return "discard"
        return "keep" if wanted == item.side else "flip"


def _metrics(truth: NDArray[np.bool_], scores: NDArray[np.floating[Any]]) -> dict[str, float]:
    m = binary_metrics(truth, scores, 0.5)
    return {"f1": m.f1, "precision": m.precision, "recall": m.recall}


def run_deliberation(
    spec: PrivateDefinition,
    data: CaltechData,
    workdir: str | Path,
    rounds: int = 6,
    seed: int = 0,
    on_round: Callable[[dict[str, Any]], None] | None = None,
    comments: str = "phrase",
) -> dict[str, Any]:
    """One simulated user: baselines, scoping, then ``rounds`` borderline batches and refinements.

    Returns ``{"title", "baselines": {...}, "rounds": [{round, labels, definition: metrics,
    agile: metrics, combined: metrics, combined_mode, change}, ...]}``; round 0 is d0 after scoping.
    """
    workdir = Path(workdir)
    index = ExactIndex(data.pool)
    provider = EmbeddingProvider(data.vocabulary, grounding=data.pool_x)
    test_truth = data.truth(spec, data.test_y)
    user = SimulatedDeliberator(spec, data, comments)
    zero = Definition(spec.name, (UnitConcept(spec.name),))
    auto = provider.decompose(spec.name)
    out: dict[str, Any] = {
        "title": spec.title,
        "name": spec.name,
        "test_positives": int(test_truth.sum()),
        "baselines": {
            "zero_shot": _metrics(test_truth, provider.scores(zero, data.test_x)),
            "modeling_collaborator": _metrics(test_truth, provider.scores(auto, data.test_x)),
        },
        "rounds": [],
    }

    sessions = SessionStore(workdir / "sessions.sqlite")
    session = sessions.create(Concept(spec.name, description=spec.title))
    config = DeliberationConfig()
    config = DeliberationConfig(borderline=type(config.borderline)(seed=seed))
    delib = Deliberation(session, data.pool, index, data.vocabulary, provider, config)
    items = delib.scope()
    delib.decide_scoping({it.position: user.scoping_decision(it) for it in items})
    version = delib.finish_scoping()

    def record(r: int, change: str) -> None:
        d = delib.definition()
        labels = session.labels(SOURCE)
        row: dict[str, Any] = {
            "round": r,
            "labels": len(labels),
            "definition": _metrics(test_truth, provider.scores(d, data.test_x)),
            "change": change,
            "definition_text": d.render(),
        }
        if labels:
            ids = np.array(sorted(labels), dtype=np.int64)
            y = np.array([labels[i] for i in ids])
            negatives = data.pool_x[np.random.default_rng(seed).choice(len(data.pool_x), 2000, replace=False)]
            combined = CombinedClassifier(lambda x: provider.scores(d, x)).fit(data.pool_x[ids], y, negatives)
            row["combined"] = _metrics(test_truth, combined.predict_proba(data.test_x))
            row["combined_mode"] = combined.mode
            row["agile"] = _agile_same_labels(spec, data, index, workdir / f"agile-{r}", len(labels), user, seed)
        out["rounds"].append(row)
        if on_round:
            on_round(row)

    record(0, version.change)
    for r in range(1, rounds + 1):
        batch = delib.next_batch()
        for it in batch.items:
            delib.record(it.image_id, user.label(it.image_id), user.comment(it.image_id, it.decision))
        version = delib.refine()
        record(r, version.change)
    out["provider_calls"] = provider.stats.as_dict()
    sessions.close()
    return out


def _agile_same_labels(
    spec: PrivateDefinition,
    data: CaltechData,
    index: NeighbourIndex,
    workdir: Path,
    n: int,
    user: SimulatedDeliberator,
    seed: int,
) -> Mapping[str, float | str]:
    """Plain agile modeling with ``n`` labels: a text-expansion seed of n/2, one margin round of the rest."""
    sessions = SessionStore(workdir / "sessions.sqlite")
    session = sessions.create(Concept(spec.name))
    seed_size = max(n // 2, 1)
    loop = AgileLoop(
        session,
        data.pool,
        index,
        data.vocabulary,
        ModelRegistry(workdir / "models", "agile"),
        LoopConfig(seed_size=seed_size, batch_size=max(n - seed_size, 1), seed=seed),
    )
    batch = loop.start()
    session.record_labels((i, user.label(i)) for i in batch)
    try:
        _, clf = loop.train()
        batch = loop.next_batch(clf)
        session.record_labels((i, user.label(i)) for i in batch)
        _, clf = loop.train()
        scores = clf.predict_proba(data.test_x)
    except NotEnoughLabelsError as e:  # no positive among the n images agile modeling chose: F1 0, said why
        sessions.close()
        return {"f1": 0.0, "precision": 0.0, "recall": 0.0, "note": str(e)}
    sessions.close()
    return _metrics(data.truth(spec, data.test_y), scores)


def _mean(rows: list[dict[str, Any] | None], key: str) -> float:
    vals = [r[key] for r in rows if r is not None and key in r]
    return float(np.mean(vals)) if vals else float("nan")


def summary_table(results: list[dict[str, Any]]) -> str:
    """Markdown: mean F1 / precision / recall over the simulated users, the automated baselines
    first, then every round of Agile Deliberation beside the MLP and the combined classifier
    trained on the same labels (and how often each mode of the combined classifier won)."""
    lines = ["| condition | labels | F1 | precision | recall |", "|---|---|---|---|---|"]
    for key, name in (
        ("zero_shot", "Zero-shot (concept name)"),
        ("modeling_collaborator", "Modeling Collaborator (automatic decomposition, no user)"),
    ):
        rows = [r["baselines"][key] for r in results]
        lines.append(
            f"| {name} | 0 | {_mean(rows, 'f1'):.3f} | {_mean(rows, 'precision'):.3f} | {_mean(rows, 'recall'):.3f} |"
        )
    rounds = min(len(r["rounds"]) for r in results)
    for k in range(rounds):
        rows = [r["rounds"][k] for r in results]
        d = [row["definition"] for row in rows]
        n = np.mean([row["labels"] for row in rows])
        name = "Agile Deliberation, d0 after scoping" if k == 0 else f"Agile Deliberation, round {k}"
        lines.append(
            f"| {name} | {n:.1f} | {_mean(d, 'f1'):.3f} | {_mean(d, 'precision'):.3f} | {_mean(d, 'recall'):.3f} |"
        )
    last = [r["rounds"][rounds - 1] for r in results]
    n = np.mean([row["labels"] for row in last])
    for key, name in (
        ("agile", "Agile modeling MLP on the same number of labels"),
        ("combined", "Combined classifier on the deliberation's labels"),
    ):
        rows = [row.get(key) for row in last]
        lines.append(
            f"| {name} | {n:.1f} | {_mean(rows, 'f1'):.3f} | {_mean(rows, 'precision'):.3f} | {_mean(rows, 'recall'):.3f} |"
        )
    return "\n".join(lines)


def models_by_round_table(results: list[dict[str, Any]]) -> str:
    """Markdown: per round, mean F1 of the definition, the MLP and the combined classifier, and
    which mode the combined classifier chose (count of users)."""
    lines = [
        "| round | labels | definition F1 | agile MLP F1 (same number of labels) | combined F1 | combined chose |",
        "|---|---|---|---|---|---|",
    ]
    rounds = min(len(r["rounds"]) for r in results)
    for k in range(1, rounds):
        rows = [r["rounds"][k] for r in results]
        modes: dict[str, int] = {}
        for row in rows:
            modes[row.get("combined_mode", "-")] = modes.get(row.get("combined_mode", "-"), 0) + 1
        chose = ", ".join(f"{m} x{c}" for m, c in sorted(modes.items()))
        lines.append(
            f"| {k} | {np.mean([row['labels'] for row in rows]):.1f} | {_mean([r['definition'] for r in rows], 'f1'):.3f} | "
            f"{_mean([r.get('agile') for r in rows], 'f1'):.3f} | {_mean([r.get('combined') for r in rows], 'f1'):.3f} | {chose} |"
        )
    return "\n".join(lines)


def per_user_table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| concept (typed) | zero-shot F1 | auto F1 | d0 F1 | final F1 | agile MLP F1 | combined F1 (mode) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        first, last = r["rounds"][0], r["rounds"][-1]
        lines.append(
            f"| {r['title']} ({r['name']}) | {r['baselines']['zero_shot']['f1']:.3f} | "
            f"{r['baselines']['modeling_collaborator']['f1']:.3f} | {first['definition']['f1']:.3f} | "
            f"{last['definition']['f1']:.3f} | {last.get('agile', {}).get('f1', float('nan')):.3f} | "
            f"{last.get('combined', {}).get('f1', float('nan')):.3f} ({last.get('combined_mode', '-')}) |"
        )
    return "\n".join(lines)


def plot_deliberation(results: list[dict[str, Any]], path: str | Path) -> Path:
    """Mean F1 per round: the definition, the MLP on the same labels and the combined classifier,
    with the two automated baselines as lines."""
    fig, axes = subplots(1, 1, figsize=(7, 4.2))
    ax = axes[0, 0]
    rounds = min(len(r["rounds"]) for r in results)
    xs = list(range(rounds))
    for key, label in (
        ("definition", "Agile Deliberation (definition)"),
        ("combined", "combined classifier"),
        ("agile", "agile modeling MLP, same labels"),
    ):
        ys = [np.mean([r["rounds"][k].get(key, {"f1": np.nan})["f1"] for r in results]) for k in xs]
        ax.plot(xs, ys, marker="o", label=label)
    for key, label, style in (
        ("zero_shot", "zero-shot", ":"),
        ("modeling_collaborator", "Modeling Collaborator", "--"),
    ):
        ax.axhline(np.mean([r["baselines"][key]["f1"] for r in results]), linestyle=style, color="grey", label=label)
    ax.set_xlabel("round (0 = after scoping; 5 labels per round)")
    ax.set_ylabel(f"mean F1 over {len(results)} simulated users")
    ax.legend(fontsize=8)
    return save(fig, path)


def run_deliberation_study(
    out_dir: str | Path,
    rounds: int = 10,
    seed: int = 0,
    data_root: str | Path | None = None,
    progress: Callable[[str], None] = print,
    comments: str = "phrase",
) -> list[dict[str, Any]]:
    """Every simulated user of the suite; writes ``deliberation.json``, ``deliberation.md`` and ``deliberation.png``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = CaltechData.load(data_root)
    results: list[dict[str, Any]] = []
    for spec in load_deliberation_suite():
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="agile-deliberation-") as work:
            res = run_deliberation(spec, data, work, rounds=rounds, seed=seed, comments=comments)
        res["seconds"] = time.perf_counter() - t0
        results.append(res)
        last = res["rounds"][-1]
        progress(
            f"{spec.title}: zero-shot F1 {res['baselines']['zero_shot']['f1']:.3f}, final definition F1 "
            f"{last['definition']['f1']:.3f} after {last['labels']} labels ({res['seconds']:.0f} s)"
        )
    (out_dir / "deliberation.json").write_text(
        json.dumps({"rounds": rounds, "seed": seed, "comments": comments, "results": results}, indent=1)
    )
    write_report(results, out_dir, rounds, seed, comments)
    return results


def write_report(
    results: list[dict[str, Any]], out_dir: str | Path, rounds: int, seed: int, comments: str = "phrase"
) -> Path:
    """``deliberation.md`` (tables) and ``deliberation.png`` (F1 per round) in ``out_dir``."""
    out_dir = Path(out_dir)
    said = {
        "phrase": "a disagreeing user's comment names the word for the image's class (the offline provider can add it "
        "to the definition)",
        "verdict": "a disagreeing user's comment gives the verdict only, no phrase",
    }[comments]
    (out_dir / "deliberation.md").write_text(
        f"# Simulated Agile Deliberation (offline provider, seed {seed}, {rounds} rounds of up to 5 labels)\n\n"
        f"Mean over the simulated users; measured on every Caltech-101 test row. Comments: {said}.\n\n"
        + summary_table(results)
        + "\n\n## The definition and the MLP as labels accumulate\n\n"
        + models_by_round_table(results)
        + "\n\n## Per simulated user\n\n"
        + per_user_table(results)
        + "\n"
    )
    return plot_deliberation(results, out_dir / "deliberation.png")
