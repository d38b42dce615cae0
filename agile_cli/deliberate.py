"""agile deliberate: Agile Deliberation from the command line, or through Label Studio when
LABEL_STUDIO_URL is set (scoping and borderline batches become projects there)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from agile_modeling.errors import AgileError

if TYPE_CHECKING:
    from agile_modeling.deliberation import Deliberation
    from agile_modeling.deliberation.history import DeliberationRound, ScopingItem
    from agile_modeling.workspace import Workspace
    from sync.deliberation import DeliberationSync

HELP = """steps:
  agile deliberate new "healthy food" --description "what I would call healthy"   # scoping proposal
  agile deliberate decide "healthy food" --keep 0 2 --flip 1 --discard 3          # or decide in Label Studio
  agile deliberate start "healthy food"        # d0 and the first borderline batch
  agile deliberate label "healthy food" 123 in --comment "a light drizzle is fine"
  agile deliberate next "healthy food"         # refine from the batch's labels, show the next batch
  agile deliberate show "healthy food" --history
  agile deliberate study                       # the simulated study (offline provider)
providers: --provider offline (built in: image-text embeddings only, no key, no network) or
  --provider gemini (GEMINI_API_KEY; AGILE_GEMINI_MODEL, AGILE_GEMINI_DECOMPOSE_MODEL, GEMINI_BASE_URL)."""


def _ws(args: argparse.Namespace) -> Workspace:
    from agile_modeling.workspace import Workspace

    return Workspace(args.settings.workspace)


def _deliberation(args: argparse.Namespace, ws: Workspace | None = None) -> Deliberation:
    """The concept's deliberation with the provider of ``--provider`` (or ``AGILE_PROVIDER``)."""
    gemini = args.settings.gemini() if args.provider == "gemini" else None
    return (ws or _ws(args)).deliberation(args.name, args.provider, gemini=gemini)


def _label_studio(args: argparse.Namespace) -> DeliberationSync | None:
    if not args.settings.label_studio_url or getattr(args, "no_publish", False):
        return None
    from sync.deliberation import DeliberationSync
    from sync.rounds import ConceptSync

    return DeliberationSync(ConceptSync(args.settings), args.provider)


def _print_scoping(items: Iterable[ScopingItem]) -> None:
    for it in items:
        side = "IN " if it.side == "in" else "OUT"
        decided = f"  [{it.decision}]" if it.decision else ""
        print(f"  #{it.position:<3} {side} {it.unit} / {it.name}  images {list(it.image_ids)}{decided}")


def _print_round(ws: Workspace, batch: DeliberationRound) -> None:
    print(f"borderline round {batch.round} (definition v{batch.definition_version}): {batch.explanation}")
    for it, uri in zip(batch.items, ws.store().uris([it.image_id for it in batch.items])):
        verdict = "IN " if it.decision else "OUT"
        print(f"  {it.image_id}\t{verdict} {uri}\n\t  why: {it.rationale}\n\t  ambiguity: {it.summary}")


def cmd_new(args: argparse.Namespace) -> int:
    from agile_modeling.concepts import Concept

    ws = _ws(args)
    if args.text_vocabulary:
        ws.set_config(text_vocabulary=str(Path(args.text_vocabulary).resolve()))
    ws.store()  # a clear error when there is no pool yet
    if args.name not in [n for n in ws.sessions.names()]:
        ws.sessions.create(Concept(args.name, description=args.description or ""))
    ls = _label_studio(args)
    if ls:
        report = ls.publish_scoping(args.name, args.description or "")
        print(
            f"scoping project {report.project_id}: {ls.client.url}/projects/{report.project_id}/data "
            f"({report.pushed} candidates pushed); decide there, then `agile deliberate start {args.name!r}`"
        )
    items = _deliberation(args, ws).scope(args.description or "")
    print(f"scoping proposal for {args.name!r} ({len(items)} candidate sub-concepts, provider {args.provider}):")
    _print_scoping(items)
    return 0


def cmd_decide(args: argparse.Namespace) -> int:
    delib = _deliberation(args)
    decisions = {
        **{p: "keep" for p in args.keep},
        **{p: "flip" for p in args.flip},
        **{p: "discard" for p in args.discard},
    }
    delib.decide_scoping(decisions)
    _print_scoping(delib.history.scoping())
    return 0


def cmd_start(args: argparse.Namespace) -> int:
    ws = _ws(args)
    ls = _label_studio(args)
    if ls:
        print(ls.start(args.name).summary())
    delib = _deliberation(args, ws)
    version = delib.finish_scoping()
    print(version.definition.render())
    if not ls:
        _print_round(ws, delib.next_batch())
    return 0


def cmd_label(args: argparse.Namespace) -> int:
    delib = _deliberation(args)
    new = delib.record(args.image_id, 1 if args.label == "in" else 0, args.comment or "")
    left = delib.pending()
    print(f"{'recorded' if new else 'already recorded'}; {len(left)} images of this batch left: {left}")
    return 0


def cmd_next(args: argparse.Namespace) -> int:
    ws = _ws(args)
    ls = _label_studio(args)
    if ls:
        print(ls.sync_deliberation(args.name).summary())
        return 0
    delib = _deliberation(args, ws)
    if delib.history.current_round() >= 0 and not delib.pending():
        version = delib.refine()
        print(f"definition v{version.version}: {version.change}\n{version.definition.render()}\n")
    _print_round(ws, delib.next_batch())
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from agile_modeling.deliberation import DeliberationHistory

    ws = _ws(args)
    history = DeliberationHistory(ws.sessions.open(args.name))
    current = history.require_current()
    print(current.definition.render())
    if args.history:
        print("\nhistory:")
        for v in history.versions():
            scores = (
                f" (F1 batch {v.scores['f1_batch']:.2f}, all {v.scores['f1_all']:.2f})" if "f1_all" in v.scores else ""
            )
            print(f"  v{v.version} [{v.author}]{scores}: {v.change}")
    if args.json:
        print(json.dumps(current.definition.as_dict(), indent=2))
    return 0


def cmd_edit(args: argparse.Namespace) -> int:
    from agile_modeling.deliberation import Definition

    try:
        data = json.loads(Path(args.file).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise AgileError(
            f"cannot read the definition from {args.file}: {e}; write it as `agile deliberate show "
            f"{args.name!r} --json` prints it"
        ) from None
    version = _deliberation(args).edit(Definition.from_dict(data), args.note or "")
    print(f"definition v{version.version}: {version.change}")
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    from agile_modeling.simulate.deliberation_study import run_deliberation_study

    print(f"simulated Agile Deliberation: {args.rounds} rounds of 5 labels per user; results go to {args.out}")
    run_deliberation_study(
        args.out,
        rounds=args.rounds,
        seed=args.seed,
        data_root=args.data or args.settings.shared_data,
        comments=args.comments,
    )
    print((Path(args.out) / "deliberation.md").read_text())
    return 0


def add_deliberate_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "deliberate",
        help="Agile Deliberation: decide what a vague concept means, with a structured "
        "definition refined over borderline images",
        description=__doc__,
        epilog=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    dsub = p.add_subparsers(dest="deliberate_command", metavar="STEP", required=True)

    def step(
        name: str, func: Callable[[argparse.Namespace], int], help: str, concept: bool = True
    ) -> argparse.ArgumentParser:
        s = dsub.add_parser(name, help=help, description=help)
        if concept:
            s.add_argument("name", help="the concept's name")
        s.add_argument(
            "--provider", choices=("offline", "gemini"), help="model provider (default: $AGILE_PROVIDER or offline)"
        )
        s.set_defaults(func=func)
        return s

    new = step(
        "new",
        cmd_new,
        "start a deliberation: the scoping proposal (unit concepts, candidate sub-concepts, "
        "representative images); published to Label Studio when LABEL_STUDIO_URL is set",
    )
    new.add_argument("--description", help="what the concept is about, in your words")
    new.add_argument("--text-vocabulary", help="npz phrase table for offline use")
    new.add_argument("--no-publish", action="store_true", help="do not publish to Label Studio")
    dec = step("decide", cmd_decide, "keep, flip or discard scoping candidates by their # number")
    for flag in ("keep", "flip", "discard"):
        dec.add_argument(f"--{flag}", nargs="*", type=int, default=[], metavar="N")
    start = step(
        "start",
        cmd_start,
        "record d0 from the scoping decisions (undecided ones are kept) and show the "
        "first borderline batch (in Label Studio when published)",
    )
    start.add_argument("--no-publish", action="store_true")
    lab = step("label", cmd_label, "label a borderline image in or out of scope, with an optional comment")
    lab.add_argument("image_id", type=int)
    lab.add_argument("label", choices=("in", "out"))
    lab.add_argument("--comment", help="why (say it whenever you disagree with the definition)")
    nxt = step(
        "next",
        cmd_next,
        "after a batch is labeled: refine the definition (5 candidates, best by F1) and show "
        "the next borderline batch; with Label Studio: sync the deliberation project",
    )
    nxt.add_argument("--no-publish", action="store_true")
    show = step("show", cmd_show, "print the current definition")
    show.add_argument("--history", action="store_true", help="every version: what changed and why")
    show.add_argument("--json", action="store_true", help="also print it as JSON (the format `edit` reads)")
    edit = step("edit", cmd_edit, "replace the definition by your own edit (a JSON file)")
    edit.add_argument("--file", required=True)
    edit.add_argument("--note", help="why you changed it")
    study = step(
        "study",
        cmd_study,
        "the simulated deliberation study over the shared embeddings (offline provider): "
        "F1/precision/recall per round against zero-shot, automatic decomposition and agile modeling",
        concept=False,
    )
    study.add_argument("--rounds", type=int, default=10)
    study.add_argument("--seed", type=int, default=0)
    study.add_argument("--data", help="folder of the shared embeddings")
    study.add_argument(
        "--comments",
        choices=["phrase", "verdict"],
        default="phrase",
        help="what a disagreeing simulated user writes: the word for the image's class (default) or the verdict only",
    )
    study.add_argument("--out", default="benchmarks/results/deliberation")
