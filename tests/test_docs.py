"""The documentation: every relative link resolves, the README stays a quickstart, and figures the
docs quote from benchmarks/results/ match the results files (a rerun that changes a figure, or an
edit of the figure in a doc, fails here until both agree)."""

import json
import re
import statistics
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
if (ROOT / "benchmarks" / "README.md").exists():
    DOCS.append(ROOT / "benchmarks" / "README.md")

#: ``[text](target)`` and ``![alt](target)``; the target ends at whitespace or ")" (a title after
#: a space is allowed and ignored)
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)


def relative_links(path: Path) -> list[str]:
    """Link targets in a markdown file, outside fenced code blocks, without web and mail links."""
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    targets = [m.group(1) for m in LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^(https?:|mailto:)", t)]


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text(encoding="utf-8"))
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def broken_links(path: Path) -> list[str]:
    """Targets whose file does not exist, or whose ``#anchor`` names no heading of a markdown file."""
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        linked = path.parent / file_part.split("?", 1)[0] if file_part else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    return broken


def test_the_docs_exist_and_link_to_each_other():
    names = {p.relative_to(ROOT).as_posix() for p in DOCS}
    assert {
        "README.md",
        "docs/architecture.md",
        "docs/papers.md",
        "docs/deployment.md",
        "docs/benchmarks.md",
        "docs/studies.md",
        "docs/cli.md",
    } <= names
    readme_links = set(relative_links(ROOT / "README.md"))
    for doc in (
        "docs/architecture.md",
        "docs/papers.md",
        "docs/deployment.md",
        "docs/benchmarks.md",
        "docs/studies.md",
        "docs/configuration.md",
        "docs/label-studio-instructions.png",
        "docs/label-studio-stream.png",
        "docs/label-studio-projects.md",
        "docs/label-studio-connect.png",
        "docs/label-studio-rate-adopted.png",
        "docs/label-studio-apply.png",
    ):
        assert doc in readme_links, f"README.md does not link to {doc}"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves(doc):
    """``docs/configuration.md`` is generated from the settings object (``agile config --markdown``);
    its links are checked like every other doc's."""
    assert broken_links(doc) == []


def test_the_link_checker_sees_a_broken_link_and_ignores_web_links_and_code(tmp_path):
    doc = tmp_path / "doc.md"
    (tmp_path / "there.md").write_text("# A part (`of it`)\n")
    doc.write_text(
        "[ok](there.md#a-part-of-it) ![img](missing.png) [web](https://example.com/x) [mail](mailto:a@b)\n"
        "[anchor](#top) [here](#doc)\n# Doc\n```\n[in code](nowhere.md)\n```\n[gone](sub/gone.md) [no such part](there.md#b)\n"
    )
    assert broken_links(doc) == ["missing.png", "#top", "sub/gone.md", "there.md#b"]


def test_the_readme_is_a_quickstart():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) < 200, f"README.md has {len(lines)} lines: move detail into docs/"


# --- figures quoted from benchmarks/results/ -------------------------------------------------------
def load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text(encoding="utf-8"))


def squeeze(text: str) -> str:
    """Runs of whitespace as one space, so that rewrapping a paragraph changes nothing."""
    return " ".join(text.split())


def doc_text(name: str) -> str:
    return squeeze((ROOT / name).read_text(encoding="utf-8"))


def peer_row(rows: list[dict], task: str, n: int, method: str) -> dict:
    (row,) = [r for r in rows if r["task"] == task and r["n"] == n and r["method"] == method]
    return row


def stream_waits() -> tuple[dict, dict]:
    return load("label_studio_stream_paper.json"), load("label_studio_stream.json")


def figure_label_studio_stream_table() -> tuple[str, str]:
    paper, prefetch = stream_waits()
    assert paper["prefetch"] == 0.0 and prefetch["prefetch"] == 0.5
    return "docs/benchmarks.md", (
        f"served by the stream, median / p90 | {paper['boundary_wait_median_s']:.2f} s / "
        f"{paper['boundary_wait_p90_s']:.2f} s | {prefetch['boundary_wait_median_s']:.2f} s / "
        f"{prefetch['boundary_wait_p90_s']:.2f} s |"
    )


def figure_label_studio_stream_readme() -> tuple[str, str]:
    paper, prefetch = stream_waits()
    return "README.md", (
        f"served {prefetch['boundary_wait_median_s']:.2f} s after the last rating of a batch, "
        f"against {paper['boundary_wait_median_s']:.2f} s with the paper's rounds"
    )


def figure_pool_scale_1m() -> tuple[str, str]:
    (row,) = [r for r in load("pool.json")["rows"] if r["pool"] == 1_000_000]
    return "docs/benchmarks.md", (
        f"| 1M | {row['select_s']:.2f} s (target 0.6 s) | {row['train_s']:.2f} s (target 5 s) | "
        f"{row['round_s']:.2f} s | {row['knn_query_ms']:.1f} ms (target 50 ms) |"
    )


def figure_exact_search_1m() -> tuple[str, str]:
    rows = load("peers_avx2.json")["rows"]
    task = "exact k=100 search, 1 query"
    auto = peer_row(rows, task, 1_000_000, "project ExactIndex auto (fp32)")["best_s"]
    fp32 = peer_row(rows, task, 1_000_000, "project ExactIndex fp32")["best_s"]
    faiss = peer_row(rows, task, 1_000_000, "faiss IndexFlatIP")["best_s"]
    return "docs/benchmarks.md", (
        f"| exact k=100 search, 1 query | {auto:.2f} s ({fp32:.2f} forced fp32), from the "
        f"float16 memory map | {faiss:.2f} s faiss `IndexFlatIP`"
    )


def _speed_row(peers: str, auto: str, selection_method: str, embedding: str, note: str = "") -> tuple[str, str]:
    rows = load(peers)["rows"]
    margin = [r for r in rows if r["task"] == "margin selection" and r["n"] == 1_000_000]
    fastest_peer = min(r["best_s"] for r in margin if r["backend_used"] == "fp32 (peer)")
    search = "exact k=100 search, 1 query"
    ours = peer_row(rows, search, 1_000_000, f"project ExactIndex auto ({auto})")["best_s"]
    faiss = peer_row(rows, search, 1_000_000, "faiss IndexFlatIP")["best_s"]
    embed = load(embedding)
    (pipeline,) = [r for r in embed["pipeline"] if r["case"].startswith("auto") and r["decode_threads"] == 2]
    peer = embed["peers"]["plain_open_clip_dataloader_fp32_images_per_s"]
    selection = peer_row(rows, "margin selection", 1_000_000, selection_method)["best_s"]
    return (
        f"{selection:.2f} s; fastest peer {fastest_peer:.2f} s",
        f"{ours:.2f} s; faiss {faiss:.2f} s | {pipeline['images_per_s']:.1f} images/s{note}; DataLoader loop {peer:.1f} |",
    )


def figure_speed_readme_avx2() -> tuple[str, str]:
    auto = "project auto (chosen fp32, torch)"
    # measured before int8 ran in ONNX Runtime
    selection, rest = _speed_row("peers_avx2.json", "fp32", auto, "embedding_avx2.json", " (torch int8)")
    return "README.md", f"| AMD EPYC, AVX2 only (MLP 3x128) | {selection} | {rest}"


def figure_speed_readme_avx512() -> tuple[str, str]:
    auto = "project auto (chosen fp32, torch)"
    selection, rest = _speed_row("peers_avx512bf16_1x128.json", "fp32", auto, "embedding_avx512bf16.json")
    rows = load("peers_avx512bf16_1x128.json")["rows"]
    ten = peer_row(rows, "margin selection", 10_000_000, auto)["best_s"]
    return "README.md", f"| Xeon, AVX512_BF16, no AMX (1x128) | {selection}; 10M: {ten:.2f} s | {rest}"


def figure_training_seconds() -> tuple[str, str]:
    return _training_row("training_avx2.json")


def figure_training_seconds_avx512() -> tuple[str, str]:
    return _training_row("training_avx512bf16.json")


def _training_row(results: str) -> tuple[str, str]:
    rows = load(results)["rows"]
    order = ["cats", "real stop signs", "small dog breeds", "fluffy dogs"]
    best = {r["concept"]: r["best_s"] for r in rows if r["method"] == "project MLP, 1 training thread(s) (default)"}
    auc = {r["concept"]: r["test_auc_pr"] for r in rows if r["method"] == "project MLP, 1 training thread(s) (default)"}
    return "docs/benchmarks.md", (
        "| the project's recipe, 1 thread (default) | "
        + " / ".join(f"{best[c]:.2f}" for c in order)
        + " | "
        + " / ".join(f"{auc[c]:.3f}" for c in order)
        + " |"
    )


def figure_embedding_images_per_s() -> tuple[str, str]:
    data = load("embedding.json")
    (auto,) = [p for p in data["pipeline"] if p["case"] == "auto (native bf16 here)" and p["decode_threads"] == 2]
    assert auto["precision"] == "cpu/bf16"
    return "docs/benchmarks.md", f"| `agile pool add`, auto = bf16 | {auto['images_per_s']:.1f} |"


def figure_embedding_avx512_without_amx() -> tuple[str, str]:
    data = load("embedding_avx512bf16.json")
    two, one = (
        next(p for p in data["pipeline"] if p["case"].startswith("auto") and p["decode_threads"] == threads)
        for threads in (2, 1)
    )
    assert two["precision"] == one["precision"] == "cpu/int8"  # the probe's choice on that CPU, not bf16
    model = {row["variant"]: row["images_per_s"] for row in data["model"]}
    return "docs/benchmarks.md", (
        f"| model alone fp32 / bf16 weights / torch int8 / ONNX Runtime int8 | {model['fp32']:.1f} / "
        f"{model['bf16 weights']:.1f} / {model['int8 dynamic Linear']:.1f} / {model['int8 ONNX Runtime']:.1f} | "
        f"cosine to fp32 >= 0.99994 / 0.99981 / 0.99974 on 200 real photos |\n"
        f"| `agile pool add`, auto = int8 (ONNX Runtime), 2 / 1 decode threads | {two['images_per_s']:.1f} / "
        f"{one['images_per_s']:.1f} | 1.75x the peer; {two['fraction_of_model_bound']:.0%} / "
        f"{one['fraction_of_model_bound']:.0%} of the model-bound rate"
    )


def figure_prefetch_quality() -> tuple[str, str]:
    rows = load("prefetch.json")["rows"]
    means = {p: statistics.mean(r["final_auc_pr"] for r in rows if r["prefetch"] == p) for p in (0.0, 0.5)}
    sessions = sum(1 for r in rows if r["prefetch"] == 0.0)
    return "docs/benchmarks.md", f"| all ({sessions} sessions) | {means[0.0]:.3f} | {means[0.5]:.3f} |"


def figure_prefetch_quality_readme() -> tuple[str, str]:
    rows = load("prefetch.json")["rows"]
    means = {f"{statistics.mean(r['final_auc_pr'] for r in rows if r['prefetch'] == p):.3f}" for p in (0.0, 0.5)}
    assert len(means) == 1, f"the README says 'either way' but the means differ: {means}"
    return "README.md", f"600 ratings is {means.pop()} either way"


def recipe_row(r: dict) -> str:
    m, h = r["mean_auc_pr"], r["hard_auc_pr"]
    epoch = f"{r['epoch_size']:,}" if isinstance(r["epoch_size"], int) else "paper: one pass over the random negatives"
    return (
        f"| {r['learning_rate']:g} | {epoch} | {m[0]:.3f} / {m[2]:.3f} / {m[-1]:.3f} | "
        f"{h[0]:.3f} / {h[2]:.3f} / {h[-1]:.3f} | {(m[2] + m[-1]) / 2:.4f} | {r['train_seconds_600']:.1f} s |"
    )


def figure_recipe_grid_readme() -> tuple[str, str]:
    """Every row of the recipe grid on the tuning concepts, in the README."""
    return "README.md", " ".join(recipe_row(r) for r in load("recipe_tuning.json")["rows"])


def figure_default_against_the_oracle_readme() -> tuple[str, str]:
    data = load("default.json")
    oracle = {(o["concept"], o["seed"]): o["auc_pr"] for o in data["oracle"]}

    def gap(variant: str, hard: bool) -> float:
        rows = [r for r in data["rows"] if r["variant"] == variant and (not hard or r["difficulty"] == "hard")]
        at_300 = statistics.mean(dict(r["curve"])[300] for r in rows)
        return statistics.mean(oracle[(r["concept"], r["seed"])] for r in rows) - at_300

    default, paper = "default: margin+coverage, 1x128", "paper: margin, 3x128"
    return "README.md", (
        f"it is {gap(default, False):.3f} below the oracle after 300 ratings (hard concepts {gap(default, True):.3f}; "
        f"the paper's margin and 3x128: {gap(paper, False):.3f} and {gap(paper, True):.3f})"
    )


FIGURES = [
    figure_default_against_the_oracle_readme,
    figure_label_studio_stream_table,
    figure_label_studio_stream_readme,
    figure_pool_scale_1m,
    figure_exact_search_1m,
    figure_training_seconds,
    figure_embedding_avx512_without_amx,
    figure_training_seconds_avx512,
    figure_embedding_images_per_s,
    figure_prefetch_quality,
    figure_prefetch_quality_readme,
    figure_recipe_grid_readme,
    figure_speed_readme_avx2,
    figure_speed_readme_avx512,
]


@pytest.mark.parametrize("figure", FIGURES, ids=lambda f: f.__name__.removeprefix("figure_"))
def test_quoted_figures_match_the_results_files(figure):
    doc, expected = figure()
    assert squeeze(expected) in doc_text(doc), f"{doc} should say {expected!r} (read off benchmarks/results/)"


def _perturbed(value, key=None):
    """Every measured float of a results file times 1.5 (the prefetch setting that labels a run kept)."""
    if isinstance(value, dict):
        return {k: _perturbed(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [_perturbed(v, key) for v in value]
    if isinstance(value, float) and key != "prefetch":
        return value * 1.5
    return value


@pytest.mark.parametrize("figure", FIGURES, ids=lambda f: f.__name__.removeprefix("figure_"))
def test_a_changed_results_file_is_caught(figure, monkeypatch):
    real_load = load
    monkeypatch.setitem(globals(), "load", lambda name: _perturbed(real_load(name)))
    try:
        doc, expected = figure()
    except AssertionError:  # the figure's own check saw the change (the README's "either way")
        return
    assert squeeze(expected) not in doc_text(doc)


def test_the_recipe_choice_is_the_rule_applied_to_the_tuning_results():
    """recipe_tuning.json covers exactly the tuning concepts and names the row bench_recipe.py's rule picks."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_recipe import choose
    from concept_split import tuning_titles

    results = load("recipe_tuning.json")
    assert results["split"] == "tuning" and set(results["concepts"]) == tuning_titles()
    assert results["chosen"] == choose(results["rows"])["recipe"]
    assert "paper" in {r["recipe"] for r in results["rows"]}
