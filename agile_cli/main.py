"""agile: build an image classifier for a subjective concept, with its owner in the loop.

Every subcommand explains itself with --help. State lives in a workspace folder
(--workspace, or $AGILE_WORKSPACE, default ./agile-workspace); `agile config` shows every setting.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shlex
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from agile_modeling.errors import AgileError

if TYPE_CHECKING:
    from agile_modeling.classifier import ModelVersion
    from agile_modeling.encoders import OpenClipSpec
    from agile_modeling.session import Session
    from agile_modeling.store import EmbeddingStore
    from agile_modeling.workspace import Workspace
    from sync.rounds import ConceptSync

#: the selection strategies a command may name: agile_modeling.selection.STRATEGIES (spelled out so that
#: `agile --help` does not import torch; a test keeps them equal)
STRATEGY_NAMES = ["margin", "margin+coverage", "margin+positive", "random"]
DEFAULT_STRATEGY = "margin+coverage"  # agile_modeling.selection.DEFAULT_STRATEGY (as above)
#: classifier kinds: agile_modeling.classifier.CLASSIFIERS (as above)
CLASSIFIER_KINDS = ["mlp", "logistic"]
#: seed batches of a simulated session: agile_modeling.simulate.runner.SEED_BATCHES (as above)
SEED_BATCHES = ["phrases", "random"]
#: training recipes of simulate and study: agile_modeling.classifier.RECIPES (as above)
RECIPE_NAMES = ["default", "paper"]
RECIPE_HELP = (
    "the MLP's training recipe: default (the project's, chosen on the tuning concepts: docs/benchmarks.md) or "
    "paper (appendix C: lr 1e-4, 10 epochs, each one pass over min(500k, unlabeled pool) random negatives that "
    "are a quarter of it; much slower)"
)
#: label sources `concept label` records: session.USER, quality.EVALUATION, sync.crowd.CROWD (as above)
LABEL_SOURCES = ["user", "evaluation", "crowd"]

EPILOG = """examples:
  agile simulate                                   # the paper's protocol on the shared real embeddings
  agile pool add ~/photos                          # embed a folder of images into the pool
  agile pool import-embeddings laion-shard/        # or use precomputed clip-retrieval embeddings
  agile concept new "gourmet tuna" --positive "seared tuna" "tuna sushi" --negative "canned tuna"
  agile concept label "gourmet tuna" ratings.csv   # record ratings (image,label)
  agile concept train "gourmet tuna"               # retrain, then pick the next batch by margin
  agile concept status "gourmet tuna"
  agile up                                         # Label Studio + ML backend + worker, with a demo concept
  agile concept publish "gourmet tuna"             # rate it in Label Studio; batches arrive on their own
  agile concept score "gourmet tuna" new-photos/ --output scores.csv
  agile concept evaluate "gourmet tuna"            # a stratified evaluation set to rate in Label Studio
  agile report "gourmet tuna"                      # quality per model version: table + PNG
  agile deliberate new "healthy food"              # Agile Deliberation: decide what a vague concept means
"""


def _workspace(args: argparse.Namespace) -> Workspace:
    from agile_modeling.workspace import Workspace

    return Workspace(args.settings.workspace)


def _encoder_spec(args: argparse.Namespace) -> OpenClipSpec:
    from agile_modeling.encoders import OpenClipSpec

    pretrained = args.checkpoint or (None if args.pretrained == "none" else args.pretrained)
    return OpenClipSpec(model=args.model, pretrained=pretrained)


# --- pool ----------------------------------------------------------------------------------------
def cmd_pool_add(args: argparse.Namespace) -> int:
    from agile_modeling.store import list_image_files

    ws = _workspace(args)
    uris: list[str] = []
    for source in args.sources:
        path = Path(source)
        if path.is_dir():
            uris += list_image_files(path)
        elif path.is_file() and path.suffix.lower() in (".txt", ".lst", ".csv"):
            uris += [
                line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")
            ]
        else:
            uris.append(source)
    encoder = ws.image_encoder(_encoder_spec(args)).with_runtime(
        device=args.device, precision=args.precision, batch_size=args.batch_size
    )
    store = ws.store(encoder.dim, encoder.name)
    if not args.quiet and not args.distributed:
        print(f"image model {encoder.spec.model}, {encoder.precision_reason}", file=sys.stderr)
    if args.distributed:
        from sync.celery_app import app_for
        from sync.sharded import fan_out_embedding

        totals = fan_out_embedding(
            ws.root.resolve(), uris, app_for(args.settings), chunk=args.chunk, progress=not args.quiet
        )
        print(
            f"added {totals['added']} images, {totals['already_present']} already in the store, "
            f"{len(totals['skipped'])} skipped (on the Celery workers)"
        )
        for uri, reason in totals["skipped"]:
            print(f"  skipped {uri}: {reason}", file=sys.stderr)
        return 0
    report = store.add_images(
        uris, encoder, progress=not args.quiet, workers=args.workers, fetch_workers=args.fetch_workers
    )
    print(report.summary() + f" (on {encoder.runtime})")
    for uri, reason in report.skipped:
        print(f"  skipped {uri}: {reason}", file=sys.stderr)
    return 0


def cmd_pool_import(args: argparse.Namespace) -> int:
    import numpy as np

    from agile_modeling.store import import_clip_retrieval
    from agile_modeling.store.clip_retrieval import pair_files

    ws = _workspace(args)
    first = np.load(pair_files(args.folder)[0][0], mmap_mode="r")
    store = ws.store(int(first.shape[1]), args.encoder_name)
    if args.text_vocabulary:
        ws.set_config(text_vocabulary=str(Path(args.text_vocabulary).resolve()))
    report = import_clip_retrieval(store, args.folder, progress=not args.quiet)
    print(report.summary())
    return 0


def cmd_pool_info(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    store = ws.store()
    view = store.vectors()
    print(
        json.dumps(
            {
                "workspace": str(ws.root),
                "images": len(store),
                "dim": store.dim,
                "encoder": store.encoder_name,
                "shards": len(view.shards),
            },
            indent=2,
        )
    )
    return 0


# --- concepts ------------------------------------------------------------------------------------
def cmd_concept_new(args: argparse.Namespace) -> int:
    from agile_modeling.concepts import Concept
    from agile_modeling.loop import LoopConfig

    ws = _workspace(args)
    if args.text_vocabulary:
        ws.set_config(text_vocabulary=str(Path(args.text_vocabulary).resolve()))
    if args.from_project is not None:
        return _adopt_project(args)
    store = ws.store()  # fail before anything is written: no pool yet,
    examples = _pool_ids(store, args.example)  # an example image that is not in the pool,
    concept = Concept(args.name, tuple(args.positive), tuple(args.negative), args.description or "", tuple(examples))
    ws.text_encoder().encode_texts(list(concept.phrases))  # or a phrase that cannot be embedded
    ws.sessions.create(concept)
    batch = ws.loop(args.name, LoopConfig(seed_size=args.size, seed=args.seed)).start()
    print(f"concept {concept.name!r}: seed batch of {len(batch)} images to rate (round 0)")
    if args.settings.label_studio_url and not args.no_publish:
        sync = _concept_sync(args)
        report = sync.publish(
            args.name, seed_size=args.size, batch_size=args.batch_size, strategy=args.strategy, seed=args.seed
        )
        print(
            f"published to Label Studio as project {report.project_id}: "
            f"{sync.client.url}/projects/{report.project_id}/data ({report.pushed} tasks pushed)"
        )
    else:
        _print_batch(ws, batch)
        if args.strategy != DEFAULT_STRATEGY or args.batch_size != 100:
            print(
                "note: --strategy and --batch-size set the Label Studio rounds; without Label Studio pass them to "
                f"`agile concept train` (e.g. agile concept train {shlex.quote(args.name)} --strategy {args.strategy} "
                f"--batch-size {args.batch_size})",
                file=sys.stderr,
            )
    return 0


def _adopt_project(args: argparse.Namespace) -> int:
    from sync.adoption import adopt_project

    if not args.settings.label_studio_url:
        raise AgileError("--from-project needs Label Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    sync = _concept_sync(args)
    report = adopt_project(
        sync,
        args.name,
        args.from_project,
        positive=args.positive,
        negative=args.negative,
        description=args.description or "",
        positive_choice=args.positive_choice,
        negative_choice=args.negative_choice,
        seed_size=args.size,
        batch_size=args.batch_size,
        strategy=args.strategy,
        seed=args.seed,
        progress=True,
    )
    print(report.summary())
    if report.rating_project_id is not None:
        print(f"rate in: {sync.client.url}/projects/{report.rating_project_id}/data")
    return 0


def cmd_concept_apply(args: argparse.Namespace) -> int:
    from sync.write_back import apply_predictions

    if not args.settings.label_studio_url:
        raise AgileError("`concept apply` writes into Label Studio: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
    report = apply_predictions(_concept_sync(args), args.name, args.version, chunk=args.chunk, progress=not args.quiet)
    print(report.summary())
    return 0


def _whole_number(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number in [low, high], else a usage error saying so."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {text!r}")
        return value

    return parse


def _pool_ids(store: EmbeddingStore, images: list[str]) -> list[int]:
    """Pool ids of images given by id or URI; unknown ones are an error naming them."""
    by_uri = store.ids_of_uris([i for i in images if not i.isdigit()])
    ids = [int(i) if i.isdigit() else by_uri.get(i) for i in images]
    missing = [i for i, j in zip(images, ids) if j is None or j >= len(store)]
    if missing:
        raise AgileError(f"not in the pool: {missing}; add them first with `agile pool add`")
    return [j for j in ids if j is not None]  # all of them: a None was missing


def _print_batch(ws: Workspace, ids: Sequence[int]) -> None:
    for image_id, uri in zip(ids, ws.store().uris(ids)):
        print(f"{image_id}\t{uri}")


def _read_ratings(path: str, store: EmbeddingStore) -> list[tuple[int, int]]:
    """``[(image id, 0|1), ...]`` from a CSV of 'image,label' rows, every row checked before any is
    stored (a bad row is an error naming its line; nothing is recorded)."""
    values = {"1": 1, "positive": 1, "yes": 1, "true": 1, "0": 0, "negative": 0, "no": 0, "false": 0}
    ratings = []
    with open(path, newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), 1):
            if not row or row[0].startswith("#") or row[0] in ("image", "id", "uri"):
                continue
            if len(row) < 2 or row[1].strip().lower() not in values:
                raise AgileError(f"{path}:{lineno}: expected 'image,label' with label positive/negative or 1/0")
            image = row[0].strip()
            image_id = int(image) if image.isdigit() else store.ids_of_uris([image]).get(image)
            if image_id is None or not 0 <= image_id < len(store):
                raise AgileError(
                    f"{path}:{lineno}: {image!r} is not in the pool (ids 0-{len(store) - 1}, or a path or URL "
                    "added with `agile pool add`)"
                )
            ratings.append((image_id, values[row[1].strip().lower()]))
    return ratings


def cmd_concept_label(args: argparse.Namespace) -> int:
    from agile_modeling.session import EVALUATION, USER

    ws = _workspace(args)
    session = ws.sessions.open(args.name)
    ratings = _read_ratings(args.csv, ws.store())
    # an evaluation image is held out: it must never also be a training rating, either way round
    other = {EVALUATION: set(session.labels(USER)), USER: set(session.labels(EVALUATION))}.get(args.source, set())
    clash = sorted({i for i, _ in ratings} & other)
    if clash:
        held = "training ratings" if args.source == EVALUATION else "held-out evaluation ratings"
        raise AgileError(
            f"{len(clash)} image(s) of {args.csv} are already {held} of {args.name!r} (ids {clash[:10]}): an "
            "evaluation image must never be trained on; remove those rows. Nothing was stored."
        )
    stored = sum(session.record_label(i, v, rater=args.rater, source=args.source) for i, v in ratings)
    if args.source == EVALUATION:
        print(f"stored {stored} evaluation labels: they train nothing; `agile report {args.name}` scores on them")
        return 0
    if args.source == "crowd":
        print(f"stored {stored} crowd labels (kept apart from the owner's ratings)")
        return 0
    print(f"stored {stored} labels; {len(session.pending())} images of round {session.current_round()} still to rate")
    return 0


def cmd_concept_train(args: argparse.Namespace) -> int:
    from agile_modeling.loop import LoopConfig

    ws = _workspace(args)
    sources = tuple(args.labels.split("+"))
    loop = ws.loop(
        args.name,
        LoopConfig(
            batch_size=args.batch_size, strategy=args.strategy, label_source=sources if len(sources) > 1 else sources[0]
        ),
    )
    version, classifier = loop.train()
    print(f"trained {version.name} on {version.info['num_labels']} labels ({version.info['num_positive']} positive)")
    batch = loop.next_batch(classifier)
    print(f"next batch (round {loop.session.current_round()}, {args.strategy}): {len(batch)} images")
    _print_batch(ws, batch)
    return 0


def cmd_concept_status(args: argparse.Namespace) -> int:
    ws = _workspace(args)
    session = ws.sessions.open(args.name)
    concept = session.concept
    print(f"concept: {concept.name}  positives: {list(concept.positives)}  negatives: {list(concept.negatives)}")
    labels = session.labels()
    print(f"labels: {len(labels)} ({sum(labels.values())} positive)")
    for r in session.rounds():
        withdrawn = f", {r.withdrawn} withdrawn" if r.withdrawn else ""
        print(
            f"round {r.round} ({r.strategy}): {r.labeled}/{len(r.batch)} rated{withdrawn}, model {r.model_version or '-'}"
        )
    for m in session.models():
        print(f"model {m['name']}: {m['num_labels']} labels, {_quality_of(m['metrics'])}")
    from sync.progress import progress_plot
    from sync.state import RATING, SOURCE, SyncState

    plot = progress_plot(session, ws.root / "reports")
    if plot:
        print(f"quality per model version: {plot}")
    _warn_if_the_worker_is_down(ws, session)

    url = args.settings.label_studio_url or "<LABEL_STUDIO_URL>"
    state = SyncState(ws.root / "label_studio.sqlite")
    for link in state.links_of(session.slug):
        if link.purpose == SOURCE:
            skipped = state.skipped_source_tasks(link.project_id)
            print(
                f"adopted Label Studio project {link.project_id}: {url}/projects/{link.project_id}/data "
                f"({len(state.source_tasks(link.project_id))} tasks in the pool, {len(skipped)} unreadable)"
            )
            for task_id, why in sorted(skipped.items())[:10]:
                print(f"  task {task_id}: {why}")
        elif link.purpose == RATING:
            print(
                f"Label Studio project {link.project_id}: {url}/projects/{link.project_id}/data "
                f"(batches of {link.round_settings.batch_size}, {link.round_settings.strategy})"
            )
        else:
            print(f"Label Studio {link.purpose} project {link.project_id}: {url}/projects/{link.project_id}/data")
        if link.last_error:
            print(f"the worker's last sync of the {link.purpose} project {link.project_id} failed: {link.last_error}")
    return 0


def _warn_if_the_worker_is_down(ws: Workspace, session: Session) -> None:
    """Say so when the worker of this workspace's `agile up` stack is not running, with how many
    ratings made in Label Studio are waiting to be recorded."""
    from agile_cli.services import dead_services

    if "worker" not in dead_services(ws.root):
        return
    waiting = ""
    from agile_cli.services import read_stack

    stack = read_stack(ws.root / "stack.json") or {}
    from sync.client import LabelStudioClient
    from sync.rounds import IMAGE_ID, latest_annotation
    from sync.state import SyncState

    link = SyncState(ws.root / "label_studio.sqlite").for_concept(session.slug)
    if link is not None:
        try:
            client = LabelStudioClient(stack.get("label_studio_url"), stack.get("api_key"), timeout=10)
            known = set(session.labels()) | set(session.withdrawn_images())
            count = sum(
                1
                for t in client.iter_tasks(link.project_id)
                if latest_annotation(t) is not None and t.data.get(IMAGE_ID) not in known
            )
            waiting = (
                f" {count} rating{'s' if count != 1 else ''} in Label Studio {'are' if count != 1 else 'is'} waiting;"
            )
        except AgileError:
            waiting = " (Label Studio did not answer either);"
    print(
        f"warning: the worker of this workspace's stack is not running:{waiting} ratings are not recorded and no new "
        "batch comes. Run `make up` (or `agile up`): it starts again what stopped.",
        file=sys.stderr,
    )


def _quality_of(metrics: dict) -> str:
    """A model version's quality in words: its cross-validated estimate, other metrics as recorded."""
    if not metrics:
        return "no quality estimate (too few positive or negative ratings, or not computed yet)"
    rest = {k: v for k, v in metrics.items() if not k.startswith("cv_")}
    words = []
    if "cv_auc_pr" in metrics:
        words.append(
            f"estimated AUC-PR {metrics['cv_auc_pr']:.3f} ({metrics['cv_folds']}-fold cross-validation on "
            f"{metrics['cv_labels']} ratings, {metrics['cv_positives']} positive)"
        )
    if rest:
        words.append("metrics " + json.dumps(rest))
    return "; ".join(words)


def _concept_sync(args: argparse.Namespace) -> ConceptSync:
    from sync.sharded import concept_sync

    return concept_sync(args.settings)


def cmd_concept_publish(args: argparse.Namespace) -> int:
    report = _concept_sync(args).publish(
        args.name, seed_size=args.size, batch_size=args.batch_size, strategy=args.strategy, seed=args.seed
    )
    sync = _concept_sync(args)
    print(
        f"published {args.name!r} as project {report.project_id}: {sync.client.url}/projects/{report.project_id}/data"
    )
    print(report.summary())
    return 0


def cmd_concept_sync(args: argparse.Namespace) -> int:
    from agile_modeling.concepts import slugify
    from sync.purposes import sync_link
    from sync.state import SOURCE

    sync = _concept_sync(args)
    print(sync.sync(args.name).summary())
    source = sync.state.for_concept(slugify(args.name), SOURCE)
    if source is not None:  # the adopted project: embed the tasks imported since the last look
        print(sync_link(sync, source).summary())
    return 0


def cmd_concept_retrain(args: argparse.Namespace) -> int:
    print(_concept_sync(args).retrain(args.name).summary())
    return 0


def _model_version(ws: Workspace, name: str, version: str | None) -> ModelVersion:
    ws.sessions.open(name)  # a clear error for an unknown concept
    registry = ws.registry(name)
    chosen = registry.get(version) if version else registry.latest()
    if chosen is None:
        raise AgileError(f"concept {name!r} has no trained model yet: rate its seed batch, then train")
    return chosen


def cmd_concept_export(args: argparse.Namespace) -> int:
    import shutil

    ws = _workspace(args)
    version = _model_version(ws, args.name, args.version)
    out = Path(args.output)
    if out.exists() and any(out.iterdir()):
        raise AgileError(f"{out} exists and is not empty: choose another --output")
    shutil.copytree(version.path, out, dirs_exist_ok=True)
    store = ws.store()
    (out / "embedding.json").write_text(
        json.dumps(
            {"encoder": store.encoder_name, "dim": store.dim, "open_clip": ws.config().get("open_clip")}, indent=2
        )
    )
    print(f"exported {version.name} to {out} (weights.pt, model.json, embedding.json: the encoder its inputs need)")
    return 0


def cmd_concept_score(args: argparse.Namespace) -> int:
    from agile_modeling.store import list_image_files
    from agile_modeling.store.image_source import load_image

    ws = _workspace(args)
    version = _model_version(ws, args.name, args.version)
    classifier = version.load()
    encoder = ws.image_encoder().with_runtime(precision="auto")  # the same tower `agile pool add` uses
    paths = list_image_files(args.folder)
    out = open(args.output, "w", newline="") if args.output != "-" else sys.stdout
    writer = csv.writer(out)
    writer.writerow(["image", "score", "label", "model_version"])
    scored = skipped = 0
    for start in range(0, len(paths), 64):
        images, names = [], []
        for path in paths[start : start + 64]:
            try:
                images.append(load_image(path).image)
                names.append(path)
            except AgileError as exc:
                print(f"skipped {path}: {exc}", file=sys.stderr)
                skipped += 1
        if images:
            probs = classifier.predict_proba(encoder.encode_images(images))
            for path, p in zip(names, probs):
                writer.writerow([path, f"{p:.6f}", "positive" if p >= 0.5 else "negative", version.name])
            scored += len(names)
    if out is not sys.stdout:
        out.close()
    print(
        f"scored {scored} images with {version.name}"
        + (f", skipped {skipped}" if skipped else "")
        + (f" -> {args.output}" if args.output != "-" else ""),
        file=sys.stderr,
    )
    return 0


def cmd_concept_evaluate(args: argparse.Namespace) -> int:
    from sync.evaluation import publish_evaluation

    sync = _concept_sync(args)
    report = publish_evaluation(sync, args.name, per_stratum=args.per_stratum)
    print(
        f"evaluation set of {args.name!r}: {report.images} images from {', '.join(report.versions)} "
        f"({report.pushed} new) in project {report.project_id}: {sync.client.url}/projects/{report.project_id}/data"
    )
    print("rate them in Label Studio, then run `agile report` (these ratings never train a model)")
    if report.warning():
        print(f"warning: {report.warning()}", file=sys.stderr)
    return 0


def cmd_concept_crowd(args: argparse.Namespace) -> int:
    from sync.crowd import publish_crowd, pull_crowd

    sync = _concept_sync(args)
    project_id, pushed = publish_crowd(sync, args.name, annotators=args.annotators)
    print(
        f"crowd project {project_id}: {sync.client.url}/projects/{project_id}/data ({pushed} new tasks, "
        f"{args.annotators} annotators per task)"
    )
    print(pull_crowd(sync, args.name).summary())
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from agile_modeling.evaluation import PER_STRATUM
    from agile_modeling.quality import (
        evaluation_warning,
        plot_quality,
        quality_table,
        version_quality,
        zero_shot_quality,
    )
    from agile_modeling.session import EVALUATION

    ws = _workspace(args)
    session = ws.sessions.open(args.name)
    if args.settings.label_studio_url:
        from sync.evaluation import pull_evaluation

        pulled = pull_evaluation(_concept_sync(args), args.name)
        if pulled:
            print(f"recorded {pulled} new evaluation ratings from Label Studio")
    evaluation = session.labels(EVALUATION)
    if not evaluation:
        raise AgileError(
            f"concept {args.name!r} has no evaluation ratings yet: publish an evaluation set with "
            f"`agile concept evaluate {args.name!r}`, rate it in Label Studio, then run the report again"
        )
    pool = ws.store().vectors()
    rows = version_quality(session, ws.registry(args.name), pool, evaluation)
    text = ws.text_encoder().encode_texts([session.concept.name])[0]
    zero_shot = zero_shot_quality(pool, text, evaluation)
    out = Path(args.output or ws.root / "reports" / session.slug)
    out.mkdir(parents=True, exist_ok=True)
    table = quality_table(rows, zero_shot)
    positives = sum(evaluation.values())
    header = (
        f"# {session.concept.name}: quality on {len(evaluation)} evaluation ratings ({positives} positive)\n\n"
        "Stratified evaluation set (10 score strata x 20 lowest-SipHash images per model version, merged); "
        "F1 at 0.5 for the models, at cosine 0.28 for zero-shot CLIP.\n\n"
    )
    warning = evaluation_warning(evaluation, PER_STRATUM)
    if warning:
        header += f"**Warning**: {warning}\n\n"
    (out / "report.md").write_text(header + table + "\n")
    plot = plot_quality(
        rows,
        zero_shot,
        out / "quality.png",
        f"{session.concept.name} ({len(evaluation)} evaluation ratings"
        + (f", {positives} positive: too few to measure)" if warning else ")"),
    )
    print(header + table)
    if warning:
        print(f"\nwarning: {warning}", file=sys.stderr)
    print(f"\nwrote {out / 'report.md'} and the plot {plot}")
    return 0


# --- simulate ------------------------------------------------------------------------------------
def cmd_simulate(args: argparse.Namespace) -> int:
    from agile_modeling.classifier import RECIPES
    from agile_modeling.simulate import SimulationContext, load_shared_data, load_suite, simulate_session
    from agile_modeling.simulate.report import results_table, write_report

    data = load_shared_data(args.data or args.settings.shared_data)
    suite = load_suite(args.suite, demo=not (args.all or args.concept))
    if args.concept:
        wanted = {c.lower() for c in args.concept}
        suite = [s for s in suite if s.title.lower() in wanted or s.name.lower() in wanted]
        if not suite:
            raise AgileError(
                f"no concept named {args.concept} in the suite; see {args.suite or 'the packaged concepts.json'}"
            )
    print(f"pool: {len(data.pool)} real CLIP ViT-B/32 embeddings, test: {len(data.test)} (from {data.root})")
    ctx = SimulationContext.build(data)
    base = RECIPES[args.recipe]
    recipe = base.with_(learning_rate=args.learning_rate or base.learning_rate)
    results = []
    for spec in suite:
        print(f"\n{spec.title} ({spec.difficulty}): phrases {list(spec.concept().phrases)}")
        with tempfile.TemporaryDirectory() as tmp:
            res = simulate_session(
                spec,
                ctx,
                args.keep or tmp,
                rounds=args.rounds,
                batch_size=args.batch_size,
                strategy=args.strategy,
                recipe=recipe,
                error_rate=args.error_rate,
                seed=args.seed,
                prefetch=args.prefetch,
                classifier=args.classifier,
                seed_batch=args.seed_batch,
                on_round=lambda rr: print(
                    f"  round {rr.round}: {rr.num_labels:4d} ratings ({rr.num_positive} positive)  "
                    f"AUC-PR {rr.metrics['auc_pr']:.3f}  train {rr.train_seconds:.1f}s  select {rr.select_seconds:.2f}s"
                ),
            )
        print(f"  zero-shot CLIP AUC-PR {res.zero_shot['auc_pr']:.3f}")
        results.append(res)
    config = {
        "rounds": args.rounds,
        "batch_size": args.batch_size,
        "strategy": args.strategy,
        "error_rate": args.error_rate,
        "seed": args.seed,
        "prefetch": args.prefetch,
        "classifier": args.classifier,
        "recipe_name": args.recipe,
        "recipe": recipe.as_dict(),
    }
    paths = write_report(results, args.out, config)
    print("\n" + results_table(results))
    print(f"\nwrote {paths['table']}, {paths['json']} and the plot {paths['plot']}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from agile_modeling.simulate import SimulationContext, load_shared_data, load_suite
    from agile_modeling.simulate.study import StudyConfig, per_concept_table, plot_study, run_study, summary_table

    data = load_shared_data(args.data or args.settings.shared_data)
    suite = load_suite(args.suite)
    if args.concept:
        wanted = {c.lower() for c in args.concept}
        suite = [s for s in suite if s.title.lower() in wanted or s.name.lower() in wanted]
    print(
        f"the simulated study: {len(suite)} concepts, pool {len(data.pool)}, test {len(data.test)}; "
        f"results go to {args.out} (a stopped run resumes)"
    )
    results = run_study(
        suite,
        SimulationContext.build(data),
        args.out,
        StudyConfig(rounds=args.rounds, seed=args.seed, recipe=args.recipe),
    )
    out = Path(args.out)
    text = (
        "# The simulated study\n\nMean ± standard error of test AUC-PR over concepts (hard / easy / all).\n\n"
        + summary_table(results)
        + "\n\n## Per concept (test AUC-PR)\n\n"
        + per_concept_table(results)
        + "\n"
    )
    (out / "study.md").write_text(text)
    plot = plot_study(results, out / "study.png")
    print(text)
    print(f"wrote {out / 'study.md'}, {out / 'study.json'} and {plot}")
    return 0


def cmd_vocabulary(args: argparse.Namespace) -> int:
    from agile_modeling.encoders import VocabularyTextEncoder
    from agile_modeling.simulate import find_data_dir

    path = args.file or find_data_dir(args.settings.shared_data) / "text_vocabulary.npz"
    phrases = VocabularyTextEncoder.from_npz(path).phrases
    for p in phrases:
        if not args.grep or args.grep.lower() in p:
            print(p)
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from sync.settings import configuration_markdown

    if args.markdown:
        print(configuration_markdown(), end="")
        return 0
    rows = args.settings.described()
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    return 0


# --- parser --------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="agile", description=__doc__, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--workspace", help="workspace folder (default: $AGILE_WORKSPACE or ./agile-workspace)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    pool = sub.add_parser(
        "pool", help="the pool of unlabeled images (embedded once)", description="Manage the image pool."
    )
    pool_sub = pool.add_subparsers(dest="pool_command", metavar="ACTION", required=True)
    add = pool_sub.add_parser(
        "add",
        help="embed images (folders, paths, URLs, or .txt lists of them) into the pool",
        description="Embed images once and append them to the pool. Corrupt or unreadable images are "
        "skipped and reported; re-running resumes (images already embedded are recognised by content hash).",
    )
    add.add_argument("sources", nargs="+", help="folder, image path or URL, or a .txt file with one per line")
    add.add_argument("--model", default="ViT-B-32", help="open_clip model name (default ViT-B-32)")
    add.add_argument(
        "--pretrained",
        default="laion2b_s34b_b79k",
        help="open_clip pretrained tag (downloaded on first use), or 'none' for random weights",
    )
    add.add_argument("--checkpoint", help="local checkpoint file instead of a download (offline machines)")
    add.add_argument(
        "--device",
        help="where the model runs: auto (a GPU if there is one, else the CPU), cpu, cuda[:N] or mps "
        "(default: $AGILE_DEVICE or auto); a device that is not there is an error",
    )
    add.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "fp32", "bf16", "int8", "fp16"],
        help="the image tower's arithmetic (same embedding space, cosine >= 0.999 to fp32): auto = fp16 "
        "autocast on a GPU; on a CPU the fastest of fp32, bf16 (where native) and int8 Linear layers, "
        "measured by a short probe",
    )
    add.add_argument("--batch-size", type=int, default=64, help="images per model call (default 64)")
    add.add_argument(
        "--workers",
        type=int,
        default=None,
        help="threads reading and decoding images beside the model (default: one per core, at most 4)",
    )
    add.add_argument("--fetch-workers", type=int, default=16, help="concurrent downloads of http(s) images at most")
    add.add_argument("--quiet", action="store_true", help="no progress bar")
    add.add_argument(
        "--distributed",
        action="store_true",
        help="embed on the Celery workers (CELERY_BROKER_URL), one task per --chunk images; run it again "
        "to resume after an interruption",
    )
    add.add_argument("--chunk", type=int, default=256, help="images per task with --distributed")
    add.set_defaults(func=cmd_pool_add)
    imp = pool_sub.add_parser(
        "import-embeddings",
        help="import precomputed clip-retrieval embeddings (img_emb/ + metadata/)",
        description="Append precomputed embeddings laid out by clip-retrieval (img_emb/*.npy and "
        "metadata/*.parquet with url and caption columns); no image is downloaded or embedded.",
    )
    imp.add_argument("folder")
    imp.add_argument("--encoder-name", default="precomputed", help="what made the embeddings (recorded)")
    imp.add_argument("--text-vocabulary", help="npz of phrase embeddings to use as the text encoder (offline)")
    imp.add_argument("--quiet", action="store_true")
    imp.set_defaults(func=cmd_pool_import)
    info = pool_sub.add_parser(
        "info",
        help="size and encoder of the pool",
        description="Print the workspace's pool as JSON: number of images, embedding dimension, the encoder "
        "that made them and the number of shard files.",
    )
    info.set_defaults(func=cmd_pool_info)

    concept = sub.add_parser("concept", help="create and train concept classifiers", description="Concept sessions.")
    csub = concept.add_subparsers(dest="concept_command", metavar="ACTION", required=True)
    new = csub.add_parser(
        "new",
        help="create a concept and pick its seed batch",
        description="Create a concept from its name and phrases. The 100 nearest pool images of every "
        "phrase are pooled and 100 are drawn at random: the seed batch to rate. When LABEL_STUDIO_URL is set, "
        "the concept is also published: a Label Studio project with the seed batch as tasks (see `concept publish`).",
    )
    new.add_argument("name", help="the concept's name (also used as a positive phrase)")
    new.add_argument("--positive", nargs="*", default=[], help="phrases for the concept or its visual modes")
    new.add_argument("--negative", nargs="*", default=[], help="related phrases that are NOT the concept")
    new.add_argument("--description", help="what raters are shown")
    new.add_argument(
        "--example",
        nargs="*",
        default=[],
        metavar="IMAGE",
        help="pool images (id or path/URL) that show the concept: extra queries for the seed batch",
    )
    new.add_argument("--size", type=int, default=100, help="seed batch size (default 100)")
    new.add_argument("--seed", type=int, default=0, help="random seed of the draw")
    new.add_argument("--text-vocabulary", help="npz of phrase embeddings to use offline instead of a text tower")
    new.add_argument("--batch-size", type=int, default=100, help="images per active-learning round in Label Studio")
    new.add_argument(
        "--strategy",
        choices=STRATEGY_NAMES,
        default=DEFAULT_STRATEGY,
        help=f"how the rounds after the seed pick images to rate in Label Studio (default {DEFAULT_STRATEGY}; "
        "margin is the paper's)",
    )
    new.add_argument(
        "--no-publish",
        action="store_true",
        help="do not create a Label Studio project even though LABEL_STUDIO_URL is set",
    )
    new.add_argument(
        "--from-project",
        type=int,
        metavar="ID",
        help="adopt your own Label Studio project: its images become the pool (embedded once), its existing "
        "annotations become ratings, and the rounds go to a companion rating project beside it",
    )
    new.add_argument(
        "--positive-choice", help="with --from-project: the project's choice that means positive (default Positive)"
    )
    new.add_argument(
        "--negative-choice", help="with --from-project: the project's choice that means negative (default Negative)"
    )
    new.set_defaults(func=cmd_concept_new)
    apply = csub.add_parser(
        "apply",
        help="write the classifier's predictions onto every task of the adopted project",
        description="Score every task of the project adopted with `concept new --from-project` with a model "
        "version (the newest by default) and import the predictions into Label Studio in chunks, model_version "
        "set: sort and filter the Data Manager by score, accept predictions. Resumable; the same version again "
        "writes nothing; a newer version replaces the older one's predictions.",
    )
    apply.add_argument("name")
    apply.add_argument("--version", help="the model version to write (default: the newest; see `concept status`)")
    apply.add_argument(
        "--chunk", type=_whole_number(1, 10_000), default=1000, help="predictions per request (default 1000)"
    )
    apply.add_argument("--quiet", action="store_true", help="no progress bar")
    apply.set_defaults(func=cmd_concept_apply)
    lab = csub.add_parser(
        "label",
        help="record ratings from a CSV (image id or URI, positive/negative)",
        description="Record the user's ratings from a CSV file of 'image,label' rows. Every row is checked "
        "first (nothing is stored if one is bad); re-running the same file stores the ratings again as newer ones "
        "(the latest counts).",
    )
    lab.add_argument("name")
    lab.add_argument("csv", help="CSV rows 'image,label'; label is positive/negative, yes/no or 1/0")
    lab.add_argument("--rater", default="user", help="who rated (default: user)")
    lab.add_argument(
        "--source",
        choices=LABEL_SOURCES,
        default="user",
        help="what the ratings are: user (the concept owner's: they train the model, the default), "
        "evaluation (a held-out set `agile report` scores every model version on) or crowd (other "
        "raters, kept apart as the crowd project's are)",
    )
    lab.set_defaults(func=cmd_concept_label)
    train = csub.add_parser(
        "train",
        help="retrain on all labels, then select the next batch",
        description="Train a new model version on every label so far (1x16 MLP on the seed batch, 1x128 "
        "after), then select the next batch over the whole pool.",
    )
    train.add_argument("name")
    train.add_argument("--batch-size", type=int, default=100)
    train.add_argument("--strategy", choices=STRATEGY_NAMES, default=DEFAULT_STRATEGY)
    train.add_argument(
        "--labels",
        choices=["user", "crowd", "user+crowd"],
        default="user",
        help="whose labels train it: the user's, the crowd's majority, or the user's then the crowd's",
    )
    train.set_defaults(func=cmd_concept_train)
    status = csub.add_parser(
        "status",
        help="rounds, labels and model versions of a concept",
        description="Show a concept's phrases, how many images are rated, every round with its batch and "
        "model version, and the metrics recorded with each model.",
    )
    status.add_argument("name")
    status.set_defaults(func=cmd_concept_status)
    pub = csub.add_parser(
        "publish",
        help="create the concept's Label Studio project and push its seed batch",
        description="Create a Label Studio project for an existing concept (label config from label_config/), "
        "connect the ML backend (AGILE_BACKEND_URL) and push the seed batch as tasks. Needs LABEL_STUDIO_URL and "
        "LABEL_STUDIO_API_KEY (`agile up` prints them). Running it again only pushes what is missing.",
    )
    pub.add_argument("name")
    pub.add_argument("--size", type=int, default=100, help="seed batch size (default 100)")
    pub.add_argument("--batch-size", type=int, default=100, help="images per active-learning round (default 100)")
    pub.add_argument("--strategy", choices=STRATEGY_NAMES, default=DEFAULT_STRATEGY)
    pub.add_argument("--seed", type=int, default=0)
    pub.set_defaults(func=cmd_concept_publish)
    syn = csub.add_parser(
        "sync",
        help="pull ratings from Label Studio now; retrain and push the next batch if the round is done",
        description="What the worker does on every webhook: record new annotations as labels, push missing tasks, "
        "and when every task of the round is rated, retrain and push the next batch with predictions.",
    )
    syn.add_argument("name")
    syn.set_defaults(func=cmd_concept_sync)
    ret = csub.add_parser(
        "retrain",
        help="train now on every rating so far and refresh the predictions of open tasks",
        description="Force a retrain in the middle of a round: a new model version from every label so far; open "
        "tasks in Label Studio get the new model's predictions. The round's batch is unchanged.",
    )
    ret.add_argument("name")
    ret.set_defaults(func=cmd_concept_retrain)
    exp = csub.add_parser(
        "export",
        help="copy a trained classifier (weights, recipe, metrics, encoder) to a folder",
        description="Export a model version (default: the latest) as weights.pt + model.json + embedding.json. "
        "Load it with agile_modeling.classifier.ModelVersion or torch.load.",
    )
    exp.add_argument("name")
    exp.add_argument("--output", required=True, help="folder to write (must be empty or new)")
    exp.add_argument("--version", help="a version name such as gourmet-tuna-v3 (default: latest)")
    exp.set_defaults(func=cmd_concept_export)
    score = csub.add_parser(
        "score",
        help="score a folder of new images with a trained classifier (CSV)",
        description="Embed every image of a folder with the workspace's encoder (not added to the pool) and write "
        "'image,score,label,model_version' rows. Unreadable images are skipped and reported.",
    )
    score.add_argument("name")
    score.add_argument("folder")
    score.add_argument("--output", default="-", help="CSV file (default: standard output)")
    score.add_argument("--version", help="model version (default: latest)")
    score.set_defaults(func=cmd_concept_score)
    ev = csub.add_parser(
        "evaluate",
        help="publish the concept's evaluation set to Label Studio",
        description="Score the pool with every model version, take the 20 images with the lowest SipHash of their "
        "URL in each of 10 score strata, merge over versions (training images excluded) and push them to the "
        "concept's evaluation project. Its ratings measure the models and never train one. Run it again after "
        "new versions: only new images are pushed.",
    )
    ev.add_argument("name")
    ev.add_argument("--per-stratum", type=int, default=20, help="images per score stratum and version (default 20)")
    ev.set_defaults(func=cmd_concept_evaluate)
    crowd = csub.add_parser(
        "crowd",
        help="publish the concept's batches to a crowd project and pull the majority vote",
        description="Create (once) a crowd project with the concept's batches so far and instructions built from its "
        "description, the user's notes and rated examples; pull the annotations, take each annotator's latest vote, "
        "record the majority as 'crowd' labels and report ties, tasks with too few votes and each annotator's "
        "agreement. Train on them with `agile concept train NAME --labels crowd` (or user+crowd).",
    )
    crowd.add_argument("name")
    crowd.add_argument("--annotators", type=int, default=3, help="annotators per task (default 3)")
    crowd.set_defaults(func=cmd_concept_crowd)

    sim = sub.add_parser(
        "simulate",
        help="run the paper's simulated-user protocol on the shared real embeddings",
        description="Simulated users rate batches from ground truth over the shared CLIP ViT-B/32 embeddings "
        "(pool: val + few-shot rows; test: test rows): a seed batch, then rounds of active learning. "
        "Prints per-round AUC-PR beside zero-shot CLIP and writes a table, JSON and a PNG plot.",
    )
    sim.add_argument(
        "--concept", nargs="*", help="concept titles or names from the suite (default: the six demo concepts)"
    )
    sim.add_argument("--all", action="store_true", help="every concept of the suite (37: 27 easy, 10 hard)")
    sim.add_argument("--suite", help="a concepts.json of your own (format: docs/studies.md)")
    sim.add_argument(
        "--data",
        help="folder of labeled embeddings: <dataset>.npz files and text_vocabulary.npz (default: $AGILE_SHARED_DATA "
        "or ../shared/data/clip-vit-b32; format: docs/studies.md)",
    )
    sim.add_argument("--rounds", type=int, default=5, help="active-learning rounds after the seed (default 5)")
    sim.add_argument("--batch-size", type=int, default=100, help="images per round (default 100)")
    sim.add_argument("--strategy", choices=STRATEGY_NAMES, default=DEFAULT_STRATEGY)
    sim.add_argument(
        "--seed-batch",
        choices=SEED_BATCHES,
        default="phrases",
        help="the seed batch: the phrases' neighbours (default, the paper) or a uniform random draw "
        "(with --strategy random: passive learning from the first image)",
    )
    sim.add_argument(
        "--classifier",
        choices=CLASSIFIER_KINDS,
        default="mlp",
        help="the model trained each round: the paper's mlp (default) or logistic regression (a baseline)",
    )
    sim.add_argument("--error-rate", type=float, default=0.0, help="simulated user's error rate")
    sim.add_argument(
        "--prefetch",
        type=float,
        default=0.0,
        help="select each next batch when this fraction of a batch is still to rate (0: the paper; "
        "the Label Studio loop's default is AGILE_PREFETCH=0.5)",
    )
    sim.add_argument("--recipe", choices=RECIPE_NAMES, default="default", help=RECIPE_HELP)
    sim.add_argument("--learning-rate", type=float, help="override the recipe's learning rate")
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--out", default="agile-workspace/simulation", help="where results and the plot go")
    sim.add_argument("--keep", help="keep the sessions and models in this folder")
    sim.set_defaults(func=cmd_simulate)

    study = sub.add_parser(
        "study",
        help="the paper's simulated study over the concept suite (tables and plots)",
        description="For every concept of the suite: zero-shot CLIP; the user's loop with batches of 50/100/200; "
        "margin vs margin + positive mining; User-100 vs Crowd-100 vs Crowd-500 vs User-100 + Crowd-500 (a simulated "
        "crowd of 3 raters applying the literal reading of the concept, majority vote); an oracle trained on every "
        "pool label; and the stratified evaluation estimate against exact test metrics. Fixed seeds; resumable.",
    )
    study.add_argument("--concept", nargs="*", help="concept titles or names (default: the whole suite)")
    study.add_argument("--suite", help="a concepts.json of your own (format: docs/studies.md)")
    study.add_argument("--data", help="folder of labeled embeddings (as agile simulate --data)")
    study.add_argument("--rounds", type=int, default=5)
    study.add_argument("--recipe", choices=RECIPE_NAMES, default="default", help=RECIPE_HELP)
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--out", default="benchmarks/results/study", help="folder for study.json/.md/.png")
    study.set_defaults(func=cmd_study)

    voc = sub.add_parser(
        "vocabulary",
        help="list the phrases the offline text encoder knows",
        description="List the phrases of an offline phrase table (default: the shared text_vocabulary.npz). "
        "Without a text tower, concept phrases must be chosen from this list.",
    )
    voc.add_argument("--grep", help="only phrases containing this")
    voc.add_argument("--file", help="an npz phrase table (default: the shared text_vocabulary.npz)")
    voc.set_defaults(func=cmd_vocabulary)

    conf = sub.add_parser(
        "config",
        help="print the settings in effect (from the environment), or the configuration reference",
        description="Print every setting with the value this shell's environment gives it (secrets only as set or "
        "not set). Every setting is an environment variable; docs/configuration.md describes them.",
    )
    conf.add_argument(
        "--markdown",
        action="store_true",
        help="print the configuration reference instead (what docs/configuration.md holds)",
    )
    conf.set_defaults(func=cmd_config)

    rep = sub.add_parser(
        "report",
        help="quality of every model version on the evaluation ratings (table + PNG)",
        description="Pull the evaluation project's ratings (when LABEL_STUDIO_URL is set), score every model version "
        "and zero-shot CLIP on them (AUC-PR, AUC-ROC, F1, precision, recall, accuracy), and write report.md and "
        "quality.png: quality against training ratings and against the minutes the user spent rating.",
    )
    rep.add_argument("name")
    rep.add_argument("--output", help="folder for report.md and quality.png (default: <workspace>/reports/<concept>)")
    rep.set_defaults(func=cmd_report)

    from agile_cli.deliberate import add_deliberate_commands
    from agile_cli.services import add_service_commands

    add_deliberate_commands(sub)
    add_service_commands(sub)
    return parser


#: command-line flags that win over a setting of the environment: flag -> Settings field
FLAG_SETTINGS = {"workspace": "workspace", "provider": "provider", "device": "device"}


def configure(args: argparse.Namespace) -> None:
    """The composition root: read every setting once (the environment, then the flags that win over it),
    hand the core its compute mode, and give the command ``args.settings`` (flags hold the values used)."""
    from sync.process import configure_process
    from sync.settings import Settings

    flags = {field: getattr(args, flag, None) for flag, field in FLAG_SETTINGS.items()}
    args.settings = Settings.from_env(**flags)
    for flag, field in FLAG_SETTINGS.items():
        if hasattr(args, flag):
            setattr(args, flag, getattr(args.settings, field))
    configure_process(args.settings)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        configure(args)
        return args.func(args)
    except AgileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: everything recorded so far is saved; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `agile vocabulary | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    raise SystemExit(main())
