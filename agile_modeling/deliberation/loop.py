"""One concept's Agile Deliberation: scoping, borderline batches, labels with reasons, refinement.

Every step reads and writes the session database first (:mod:`.history`), so repeating a step is a
no-op and a crash between steps loses nothing: the open batch is returned again until it is fully
labeled, and a refinement is recorded in one transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import numpy as np
from numpy.typing import NDArray

from agile_modeling.deliberation import borderline
from agile_modeling.deliberation.borderline import BorderlineConfig
from agile_modeling.deliberation.definition import Definition
from agile_modeling.deliberation.edits import Edit
from agile_modeling.deliberation.history import (
    SOURCE,
    BatchItem,
    DefinitionVersion,
    DeliberationHistory,
    DeliberationRound,
    ScopingItem,
)
from agile_modeling.deliberation.providers.base import Feedback, ModelProvider, PoolImage
from agile_modeling.deliberation.refinement import CANDIDATES, SHORTLIST, choose_candidate
from agile_modeling.deliberation.scoping import REPRESENTATIVES, definition_from_scoping, scoping_items
from agile_modeling.encoders.base import TextEncoder
from agile_modeling.errors import SessionError
from agile_modeling.index.base import NeighbourIndex
from agile_modeling.session import Session
from agile_modeling.store.embedding_store import PoolView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DeliberationConfig:
    borderline: BorderlineConfig = field(default_factory=BorderlineConfig)
    representatives: int = REPRESENTATIVES
    queries: int = 6
    candidates: int = CANDIDATES
    shortlist: int = SHORTLIST


class Deliberation:
    """Args:
    session: the concept's session (the definition history lives in the same database).
    pool: every pool embedding; index: search over it.
    text_encoder: embeds sub-concept names and text queries for retrieval.
    provider: the language / vision-language models.
    image_bytes: ``image_bytes(id) -> bytes`` for providers that look at pixels (None: embeddings only).
    """

    def __init__(
        self,
        session: Session,
        pool: PoolView,
        index: NeighbourIndex,
        text_encoder: TextEncoder,
        provider: ModelProvider,
        config: DeliberationConfig = DeliberationConfig(),
        image_bytes: Callable[[int], bytes] | None = None,
    ) -> None:
        self.session = session
        self.pool = pool
        self.index = index
        self.text_encoder = text_encoder
        self.provider = provider
        self.config = config
        self.image_bytes = image_bytes
        self.history = DeliberationHistory(session)

    # --- images ------------------------------------------------------------------------------
    def images(self, ids: Sequence[int]) -> list[PoolImage]:
        x = self.pool.take(list(ids)).astype(np.float32)
        loader = self.image_bytes
        return [PoolImage(int(i), x[k], partial(loader, int(i)) if loader else None) for k, i in enumerate(ids)]

    def definition(self) -> Definition:
        return self.history.require_current().definition

    def decide(self, definition: Definition, ids: Sequence[int]) -> dict[int, int]:
        """``{id: 0|1}``: the definition's classifier on pool images ``ids``."""
        return {d.image_id: int(d.in_scope) for d in self.provider.classify(definition, self.images(ids))}

    # --- stage 1 -------------------------------------------------------------------------------
    def scope(self, description: str = "") -> list[ScopingItem]:
        """The scoping proposal with representative images (made once; later calls return it with its decisions)."""
        if not self.history.scoping():
            proposal = self.provider.decompose(
                self.session.concept.name, description or self.session.concept.description
            )
            names = [s.name for _, _, s in proposal.sub_concepts()]
            vectors = self.text_encoder.encode_texts(names) if names else np.zeros((0, self.pool.dim), np.float32)
            self.history.save_scoping(
                proposal, scoping_items(proposal, vectors, self.index, self.config.representatives)
            )
        return self.history.scoping()

    def decide_scoping(self, decisions: dict[int, str]) -> None:
        """``{position: "keep" | "flip" | "discard"}`` for candidates of the scoping proposal."""
        for position, decision in decisions.items():
            self.history.decide_scoping(int(position), decision)

    def finish_scoping(self) -> DefinitionVersion:
        """Record d0 from the scoping decisions (undecided candidates are kept as proposed). Idempotent."""
        current = self.history.current()
        if current is not None:
            return current
        proposal = self.history.proposal()
        if proposal is None:
            raise SessionError(f"{self.session.slug} has no scoping proposal yet: run scoping first")
        items = self.history.scoping()
        d0 = definition_from_scoping(proposal, items)
        counts = {k: sum(1 for it in items if (it.decision or "keep") == k) for k in ("keep", "flip", "discard")}
        return self.history.append(
            d0,
            [Edit("replace", definition=d0.as_dict())],
            f"scoping: kept {counts['keep']}, flipped {counts['flip']}, discarded {counts['discard']} candidate sub-concepts",
            reason={
                "scoping": [{"name": it.name, "proposed": it.side, "decision": it.decision or "keep"} for it in items]
            },
            author="scoping",
        )

    # --- stage 2 -------------------------------------------------------------------------------
    def pending(self) -> list[int]:
        """Images of the open borderline batch the user has not labeled yet."""
        r = self.history.current_round()
        if r < 0:
            return []
        labeled = self.session.labels(SOURCE)
        return [it.image_id for it in self.history.round(r).items if it.image_id not in labeled]

    def next_batch(self) -> DeliberationRound:
        """The open batch if it still has unlabeled images, else a new borderline batch."""
        r = self.history.current_round()
        if r >= 0 and self.pending():
            return self.history.round(r)
        current = self.history.require_current()
        d, cfg = current.definition, self.config.borderline
        queries = self.provider.borderline_queries(d, self.config.queries)
        vectors = np.stack(
            [q.vector if q.vector is not None else self.text_encoder.encode_texts([q.text])[0] for q in queries]
        ).astype(np.float32)
        _, ids = self.index.search(vectors, cfg.per_query)
        retrieved: NDArray[np.int64] = ids[ids >= 0].reshape(-1)
        x = self.pool.take(retrieved).astype(np.float32)
        keep = borderline.remove_near_duplicates(retrieved, x, cfg.duplicate_cosine)
        retrieved, x = retrieved[keep], x[keep]
        shown = self.history.shown_ids()
        labels = self.session.labels(SOURCE)
        comments = self.comments()
        clusters = [c for c in borderline.sparse_clusters(x, cfg) if any(int(retrieved[i]) not in shown for i in c)]
        if clusters:
            shown_decisions = self.history.shown_decisions()
            stats = [
                borderline.cluster_stats([int(retrieved[i]) for i in c], labels, shown_decisions, comments)
                for c in clusters
            ]
            m = borderline.choose_cluster(stats, cfg)
            members = np.array(
                [int(retrieved[i]) for i in clusters[m] if int(retrieved[i]) not in shown], dtype=np.int64
            )
        else:
            m, members = None, np.array([int(i) for i in retrieved if int(i) not in shown], dtype=np.int64)
        if not len(members):
            raise SessionError("no unseen borderline image is left for this definition: edit it, or stop here")
        rng = np.random.default_rng(cfg.seed + 1000 * (r + 1))
        sample = rng.choice(members, size=min(cfg.sample, len(members)), replace=False)
        images = self.images(sample.tolist())
        ambiguities = self.provider.summarise_ambiguities(d, images)
        emb = np.stack([a.vector for a in ambiguities]).astype(np.float32)
        group, eps = borderline.adaptive_dbscan(
            emb, min(cfg.min_cluster, len(emb)), cfg.eps_min, cfg.eps_max, cfg.eps_step
        )
        if len(group) == 0:
            group = np.arange(len(emb))
        chosen = borderline.central_members(emb, group, cfg.batch_size)
        batch_amb = [ambiguities[i] for i in chosen]
        decisions = self.provider.classify(d, [images[i] for i in chosen])
        explanation = self.provider.explain_batch(d, batch_amb)
        items = [
            BatchItem(dec.image_id, int(dec.in_scope), dec.score, dec.rationale, a.summary)
            for dec, a in zip(decisions, batch_amb)
        ]
        log.info("borderline batch: cluster %s, DBSCAN eps %.2f, %d images", m, eps, len(items))
        return self.history.start_round(current.version, m, explanation, items)

    def record(
        self, image_id: int, label: int, comment: str = "", external_id: str | None = None, rater: str = "user"
    ) -> bool:
        """Store the user's label (1 in scope, 0 out) and comment on a shown image. Returns whether it was new."""
        if int(image_id) not in self.history.shown_ids():
            raise SessionError(f"image {image_id} was not shown in a borderline batch of {self.session.slug}")
        return self.session.record_label(
            int(image_id),
            int(label),
            rater=rater,
            source=SOURCE,
            round_index=self.history.round_of(int(image_id)),
            note=comment.strip() or None,
            external_id=external_id,
        )

    def comments(self) -> dict[int, str]:
        return {i: label.note or "" for i, label in self.session.latest_labels(SOURCE).items()}

    def feedback(self, round_index: int) -> list[Feedback]:
        """The labeled items of a borderline round, against the decisions that were shown."""
        labels, comments = self.session.labels(SOURCE), self.comments()
        return [
            Feedback(it.image_id, labels[it.image_id], it.decision, comments.get(it.image_id, ""))
            for it in self.history.round(round_index).items
            if it.image_id in labels
        ]

    # --- refinement ----------------------------------------------------------------------------
    def refine(self) -> DefinitionVersion:
        """Refine after the open batch is fully labeled: rationales, candidates, the two-stage choice.
        Idempotent: a round already refined returns the current version."""
        r = self.history.current_round()
        if r < 0:
            raise SessionError("no borderline batch yet: ask for one first")
        if self.pending():
            raise SessionError(f"round {r} still has {len(self.pending())} unlabeled images")
        current = self.history.require_current()
        if current.reason.get("round") == r:
            return current
        d = current.definition
        images = {im.id: im for im in self.images([it.image_id for it in self.history.round(r).items])}
        feedback = [
            Feedback(
                f.image_id,
                f.label,
                f.decision,
                f.comment,
                self.provider.articulate(d, f, images[f.image_id]) if (f.comment or f.disagrees) else "",
            )
            for f in self.feedback(r)
        ]
        candidates = self.provider.propose_refinements(d, feedback, images, self.config.candidates)
        reason = {"round": r, "feedback": [f.__dict__ for f in feedback]}
        if not candidates:
            return self.history.append(
                d, [], "no change: the batch agreed with the definition", reason=reason, author="refinement", scores={}
            )
        batch_labels = {f.image_id: f.label for f in feedback}
        all_labels = self.session.labels(SOURCE)
        chosen, scored = choose_candidate(
            candidates, lambda c, ids: self.decide(c.definition, ids), batch_labels, all_labels, self.config.shortlist
        )
        pick = scored[chosen]
        reason["candidates"] = [
            {"change": s.candidate.change, "f1_batch": s.f1_batch, "f1_all": s.f1_all, "shortlisted": s.shortlisted}
            for s in scored
        ]
        return self.history.append(
            pick.candidate.definition,
            list(pick.candidate.edits),
            pick.candidate.change,
            reason=reason,
            author="refinement",
            scores={"f1_batch": pick.f1_batch, "f1_all": pick.f1_all, "chosen": chosen},
        )

    def edit(self, definition: Definition, note: str = "") -> DefinitionVersion:
        """The user's own edit of the current definition (recorded as a whole-definition replacement)."""
        current = self.history.require_current()
        if definition == current.definition:
            return current
        change = "edited by hand" + (f": {note}" if note else "")
        return self.history.append(
            definition, [Edit("replace", definition=definition.as_dict())], change, reason={"note": note}, author="user"
        )
