"""The built-in provider: every Agile Deliberation step with image-text embeddings only.

No key, no network. Written by hand because no library does this: it stands in for the papers'
LLM/VLM with the geometry of one CLIP space.

- f_d(x): per unit, the image's best cosine to an in-scope phrase (the unit's own name included
  when known) minus the larger of its best cosine to an out-of-scope phrase and a floor; units
  combine by min ("and") or max ("or"); in scope when positive. Confidence is the sigmoid of CLIP's
  logit scale (100) times that margin. The rationale names the closest phrases.
- Decomposition: units from "a and b" / "a or b"; candidate sub-concepts are the vocabulary's
  nearest phrases; a candidate is proposed in scope when its typical pool images are zero-shot
  images of the unit.
- Borderline queries: the midpoints of the closest (in-scope, out-of-scope) phrase pairs.
- Ambiguity: the closest in-scope and out-of-scope phrases of an image; embedded as the
  similarity-weighted mix of phrase embeddings.
- Refinement: edits from the phrases named in comments (add, move across the boundary), removal of
  the sub-concept that caused a wrong decision, and rewording it into a nearby phrase.

Limits: it only knows the vocabulary's phrases (free-text descriptions and edge-case notes are kept
for people but do not change its decisions), and it sees images only as embeddings.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from collections.abc import Set as AbstractSet
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.deliberation.definition import Definition, SubConcept, UnitConcept
from agile_modeling.deliberation.edits import Edit, apply_edits, describe_edits
from agile_modeling.deliberation.providers.base import (
    Ambiguity,
    Candidate,
    Decision,
    Feedback,
    ModelProvider,
    PoolImage,
    Query,
)
from agile_modeling.encoders.vocabulary import VocabularyTextEncoder, normalise_phrase
from agile_modeling.errors import DefinitionError

#: CLIP's learned logit scale: turns a cosine margin into a confidence
LOGIT_SCALE = 100.0
#: below this cosine an image is not taken to show a phrase at all (CLIP ViT-B/32, "a {name}" prompts)
DEFAULT_FLOOR = 0.25
_SPLIT = re.compile(r"\s+(and|or)\s+")


def _sigmoid(x: NDArray[np.floating[Any]]) -> NDArray[np.floating[Any]]:
    y: NDArray[np.floating[Any]] = 1.0 / (1.0 + np.exp(-np.clip(x, -50, 50)))  # numpy's stubs: Any
    return y


class EmbeddingProvider(ModelProvider):
    """Args:
    vocabulary: the phrases the provider can read and write, with their embeddings.
    grounding: ``(n, d)`` pool embeddings (or a sample) used to judge which side a candidate
        sub-concept belongs on; None proposes every candidate in scope.
    floor: see :data:`DEFAULT_FLOOR`.
    candidates_per_unit: how many sub-concepts scoping proposes per unit.
    """

    name = "offline"

    def __init__(
        self,
        vocabulary: VocabularyTextEncoder,
        grounding: NDArray[np.floating[Any]] | None = None,
        floor: float = DEFAULT_FLOOR,
        candidates_per_unit: int = 10,
    ) -> None:
        super().__init__()
        self.vocabulary = vocabulary
        self.phrases = vocabulary.phrases
        self.table = vocabulary.encode_texts(self.phrases)  # (V, d)
        self.grounding = None if grounding is None else np.asarray(grounding, dtype=np.float32)
        self.floor = float(floor)
        self.candidates_per_unit = candidates_per_unit

    # --- phrases ---------------------------------------------------------------------------------
    def knows(self, phrase: str) -> bool:
        return phrase in self.vocabulary

    def vector(self, phrase: str) -> NDArray[np.float32]:
        row: NDArray[np.float32] = self.vocabulary.encode_texts([phrase])[0]
        return row

    def nearest_phrases(
        self, vector: NDArray[np.floating[Any]], k: int, exclude: AbstractSet[str] = frozenset()
    ) -> list[str]:
        """The ``k`` vocabulary phrases closest to ``vector`` ``(d,)``, skipping ``exclude``."""
        order = np.argsort(-(self.table @ vector), kind="stable")
        out = []
        for i in order:
            if self.phrases[i] not in exclude:
                out.append(self.phrases[i])
                if len(out) == k:
                    break
        return out

    def phrases_in(self, text: str) -> list[str]:
        """Vocabulary phrases named in free text, longest first, without overlaps ("a pug, not a beagle" -> pug, beagle)."""
        words = normalise_phrase(re.sub(r"[^\w\s-]", " ", text)).split()
        found: list[tuple[int, str]] = []
        used: set[int] = set()
        for n in (4, 3, 2, 1):
            for i in range(len(words) - n + 1):
                span = set(range(i, i + n))
                phrase = " ".join(words[i : i + n])
                if span & used or phrase not in self.vocabulary:
                    continue
                found.append((i, phrase))
                used |= span
        return [p for _, p in sorted(found)]

    def _require_known(self, definition: Definition) -> None:
        unknown = [s.name for _, _, s in definition.sub_concepts() if not self.knows(s.name)]
        if unknown:
            raise DefinitionError(
                f"the offline provider cannot read sub-concepts {unknown}: it knows only the {len(self.phrases)} "
                "vocabulary phrases (`agile vocabulary`). Rename them to vocabulary phrases, or use the Gemini "
                "provider (GEMINI_API_KEY) for free text."
            )

    # --- the definition classifier -------------------------------------------------------------
    def _unit_phrases(self, unit: UnitConcept) -> tuple[list[str], list[str]]:
        """The unit's in-scope and out-of-scope phrases. The unit's own name stands for it only while
        nothing is listed in scope: once sub-concepts say what counts, the umbrella word would let
        every look-alike back in."""
        pos = [s.name for s in unit.in_scope]
        if not pos and self.knows(unit.name):
            pos = [unit.name]
        return pos, [s.name for s in unit.out_of_scope]

    def unit_margins(
        self, definition: Definition, x: NDArray[np.floating[Any]]
    ) -> tuple[NDArray[np.float32], list[dict[str, Any]]]:
        """``(n, units)`` margins of images ``x`` ``(n, d)`` and, per unit, the phrase arrays used
        (``{"pos", "neg"}``: the phrases, ``{"pos_sim", "neg_sim"}``: ``(n, phrases)`` cosines or None)."""
        self._require_known(definition)
        x = np.asarray(x, dtype=np.float32)
        margins: list[NDArray[np.float32]] = []
        parts: list[dict[str, Any]] = []
        for unit in definition.units:
            pos, neg = self._unit_phrases(unit)
            if not pos:
                margins.append(np.full(len(x), -1.0, dtype=np.float32))
                parts.append({"pos": [], "neg": neg, "pos_sim": None, "neg_sim": None})
                continue
            pos_sim = x @ self.vocabulary.encode_texts(pos).T
            neg_sim = x @ self.vocabulary.encode_texts(neg).T if neg else np.zeros((len(x), 0), np.float32)
            best_neg = np.maximum(neg_sim.max(axis=1), self.floor) if neg else np.full(len(x), self.floor, np.float32)
            margins.append(pos_sim.max(axis=1) - best_neg)
            parts.append({"pos": pos, "neg": neg, "pos_sim": pos_sim, "neg_sim": neg_sim})
        return np.stack(margins, axis=1), parts

    def margins(self, definition: Definition, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """``(n,)`` the definition's margin for images ``x`` ``(n, d)``: positive means in scope."""
        m, _ = self.unit_margins(definition, x)
        combined: NDArray[np.float32] = m.min(axis=1) if definition.combine == "and" else m.max(axis=1)
        return combined

    def scores(self, definition: Definition, x: NDArray[np.floating[Any]]) -> NDArray[np.float32]:
        """``(n,)`` confidence in [0, 1] that each image is in scope (0.5 at the boundary)."""
        return _sigmoid(LOGIT_SCALE * self.margins(definition, x)).astype(np.float32)

    def classify(self, definition: Definition, images: Sequence[PoolImage]) -> list[Decision]:
        self.stats.count("classify")
        if not images:
            return []
        x = np.stack([im.embedding for im in images]).astype(np.float32)
        m, parts = self.unit_margins(definition, x)
        total = m.min(axis=1) if definition.combine == "and" else m.max(axis=1)
        out = []
        for row, im in enumerate(images):
            reasons = []
            for unit, part in zip(definition.units, parts):
                if part["pos_sim"] is None:
                    reasons.append(f"{unit.name!r} has nothing in scope")
                    continue
                p = int(part["pos_sim"][row].argmax())
                text = f"closest in-scope {part['pos'][p]!r} ({part['pos_sim'][row, p]:.3f})"
                if part["neg"]:
                    q = int(part["neg_sim"][row].argmax())
                    text += f", closest out-of-scope {part['neg'][q]!r} ({part['neg_sim'][row, q]:.3f})"
                reasons.append(f"{unit.name}: {text}")
            verdict = "in scope" if total[row] > 0 else "out of scope"
            out.append(
                Decision(
                    im.id,
                    bool(total[row] > 0),
                    float(_sigmoid(LOGIT_SCALE * total[row])),
                    f"{verdict}; " + "; ".join(reasons),
                )
            )
        return out

    # --- stage 1 -------------------------------------------------------------------------------
    def decompose(self, concept: str, description: str = "") -> Definition:
        self.stats.count("decompose")
        text = normalise_phrase(concept)
        pieces = _SPLIT.split(text)
        names, combine = pieces[0::2], (pieces[1] if len(pieces) > 1 else "and")
        if len(set(pieces[1::2])) > 1:
            raise DefinitionError(f"{concept!r} mixes 'and' and 'or'; say it with one of them")
        unknown = [n for n in names if not self.knows(n)]
        if unknown:
            raise DefinitionError(
                f"the offline provider does not know {unknown}; name each unit concept with a "
                "vocabulary phrase (`agile vocabulary --near WORD`), or use the Gemini provider"
            )
        units = []
        taken = set(names)
        for name in names[:3]:
            candidates = self.nearest_phrases(self.vector(name), self.candidates_per_unit, exclude=taken)
            taken |= set(candidates)
            inside: list[SubConcept] = []
            outside: list[SubConcept] = []
            for c in candidates:
                (inside if self._typically_shows(c, name) else outside).append(SubConcept(c))
            units.append(UnitConcept(name, tuple(inside), tuple(outside)))
        return Definition(concept, tuple(units), combine)

    def _typically_shows(self, candidate: str, unit: str, k: int = 10) -> bool:
        """Are the pool images most like ``candidate`` zero-shot images of ``unit``?"""
        if self.grounding is None or not len(self.grounding):
            return True
        sims = self.grounding @ self.vector(candidate)
        top = np.argpartition(-sims, min(k, len(sims) - 1))[:k]
        return bool((self.grounding[top] @ self.vector(unit)).mean() >= self.floor)

    # --- stage 2 -------------------------------------------------------------------------------
    def _outside_phrases(self, definition: Definition, per_phrase: int = 2) -> list[str]:
        """Vocabulary phrases near the in-scope ones that the definition does not mention."""
        named = {normalise_phrase(s.name) for _, _, s in definition.sub_concepts()} | {
            normalise_phrase(u.name) for u in definition.units
        }
        out: list[str] = []
        for unit in definition.units:
            for p in self._unit_phrases(unit)[0]:
                for q in self.nearest_phrases(self.vector(p), per_phrase, exclude=named | set(out)):
                    out.append(q)
        return out

    def borderline_queries(self, definition: Definition, n: int = 6) -> list[Query]:
        self.stats.count("borderline_queries")
        self._require_known(definition)
        pairs: list[tuple[float, str, str]] = []
        outside = self._outside_phrases(definition)
        for unit in definition.units:
            pos, neg = self._unit_phrases(unit)
            for p in pos:
                for q in neg + outside:
                    if normalise_phrase(p) != normalise_phrase(q):
                        pairs.append((float(self.vector(p) @ self.vector(q)), p, q))
        pairs.sort(key=lambda t: -t[0])
        queries, seen = [], set()
        for _, p, q in pairs:
            if (p, q) in seen:
                continue
            seen.add((p, q))
            v = self.vector(p) + self.vector(q)
            queries.append(Query(f"{p} or {q}", v / np.linalg.norm(v)))
            if len(queries) == n:
                break
        return queries

    def _closest_pair(
        self, definition: Definition, x: NDArray[np.float32]
    ) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
        """Per image of ``x`` ``(n, d)``: its closest in-scope and closest other (out-of-scope or unmentioned) phrase."""
        pos = sorted({p for u in definition.units for p in self._unit_phrases(u)[0]})
        neg = sorted(
            {q for u in definition.units for q in self._unit_phrases(u)[1]} | set(self._outside_phrases(definition))
        )
        if not pos or not neg:
            raise DefinitionError(
                f"the definition of {definition.concept!r} has nothing in scope: add an in-scope sub-concept"
            )
        ps = x @ self.vocabulary.encode_texts(pos).T
        ns = x @ self.vocabulary.encode_texts(neg).T
        ip, iq = ps.argmax(axis=1), ns.argmax(axis=1)
        return (
            [(pos[i], float(ps[r, i])) for r, i in enumerate(ip)],
            [(neg[i], float(ns[r, i])) for r, i in enumerate(iq)],
        )

    def summarise_ambiguities(self, definition: Definition, images: Sequence[PoolImage]) -> list[Ambiguity]:
        self.stats.count("summarise_ambiguities")
        self._require_known(definition)
        if not images:
            return []
        x = np.stack([im.embedding for im in images]).astype(np.float32)
        closest_in, closest_out = self._closest_pair(definition, x)
        named = sorted({p for p, _ in closest_in} | {q for q, _ in closest_out})
        e = self.vocabulary.encode_texts(named)
        weights = np.exp(LOGIT_SCALE * (x @ e.T - (x @ e.T).max(axis=1, keepdims=True)))
        mix = weights @ e
        mix /= np.linalg.norm(mix, axis=1, keepdims=True)
        out = []
        for row, im in enumerate(images):
            (p, sp), (q, sq) = closest_in[row], closest_out[row]
            lean = p if sp >= sq else q
            out.append(
                Ambiguity(
                    im.id,
                    f"looks like both {p!r} (in scope, {sp:.3f}) and {q!r} "
                    f"(not in scope, {sq:.3f}); closer to {lean!r}",
                    mix[row],
                )
            )
        return out

    def explain_batch(self, definition: Definition, ambiguities: Sequence[Ambiguity]) -> str:
        self.stats.count("explain_batch")
        pairs = Counter(
            re.findall(r"both '([^']+)' .*? and '([^']+)'", a.summary)[0]
            for a in ambiguities
            if re.search(r"both '([^']+)' .*? and '([^']+)'", a.summary)
        )
        if not pairs:
            return "These images are close to the boundary of the current definition."
        (p, q), count = pairs.most_common(1)[0]
        return (
            f"{count} of these {len(ambiguities)} images look like both {p!r} (in scope) and {q!r} (not in scope). "
            f"Does {q!r} belong in the concept, and where does {p!r} end?"
        )

    # --- refinement ----------------------------------------------------------------------------
    def articulate(self, definition: Definition, feedback: Feedback, image: PoolImage) -> str:
        self.stats.count("articulate")
        said = "in scope" if feedback.label else "out of scope"
        was = "in scope" if feedback.decision else "out of scope"
        named = self.phrases_in(feedback.comment) if feedback.comment else []
        why = f" because it shows {', '.join(repr(p) for p in named)}" if named else ""
        base = f"The user rates this image {said}{why}"
        base += f", although the definition said {was}." if feedback.disagrees else ", as the definition did."
        return base + (f' Their words: "{feedback.comment.strip()}"' if feedback.comment.strip() else "")

    def _target_unit(self, definition: Definition, x: NDArray[np.float32]) -> UnitConcept:
        m, _ = self.unit_margins(definition, x[None])
        # the unit that decided: the weakest for "and", the strongest for "or"
        return definition.units[int(m[0].argmin() if definition.combine == "and" else m[0].argmax())]

    def _culprit(self, unit: UnitConcept, x: NDArray[np.float32], side: str) -> str | None:
        """The sub-concept on ``side`` of ``unit`` closest to image ``x`` (what pulled the decision)."""
        subs = [s.name for s in (unit.in_scope if side == "in" else unit.out_of_scope)]
        if not subs:
            return None
        return subs[int((self.vocabulary.encode_texts(subs) @ x).argmax())]

    def _edits_for(self, definition: Definition, f: Feedback, x: NDArray[np.float32]) -> dict[str, list[Edit]]:
        unit = self._target_unit(definition, x)
        side = "in" if f.label else "out"
        named = [p for p in self.phrases_in(f.comment) if normalise_phrase(p) != normalise_phrase(unit.name)]
        if not named and f.disagrees:
            named = self.nearest_phrases(x, 1, exclude={normalise_phrase(unit.name)})
        edits: dict[str, list[Edit]] = {"name": [], "remove": [], "reword": []}
        edits["name"] = [Edit("add", unit=unit.name, side=side, name=p) for p in named if unit.side_of(p) != side]
        if f.disagrees:
            culprit = self._culprit(unit, x, "out" if f.label else "in")
            if culprit:
                edits["remove"].append(Edit("remove", unit=unit.name, name=culprit))
                mentioned = {normalise_phrase(s.name) for _, _, s in definition.sub_concepts()} | {
                    normalise_phrase(unit.name)
                }
                near = [
                    q
                    for q in self.nearest_phrases(self.vector(culprit), 8, exclude=mentioned | {culprit})
                    if float(self.vector(q) @ x) < float(self.vector(culprit) @ x)
                ]
                edits["reword"].append(Edit("remove", unit=unit.name, name=culprit))
                if near:
                    edits["reword"].append(Edit("add", unit=unit.name, side="out" if f.label else "in", name=near[0]))
        return edits

    def propose_refinements(
        self, definition: Definition, feedback: Sequence[Feedback], images: dict[int, PoolImage], n: int = 5
    ) -> list[Candidate]:
        self.stats.count("propose_refinements")
        per_item = [
            (f, self._edits_for(definition, f, np.asarray(images[f.image_id].embedding, np.float32)))
            for f in feedback
            if f.disagrees or f.comment.strip()
        ]
        notes = [
            Edit("note", text=f.rationale or self.articulate(definition, f, images[f.image_id]))
            for f in feedback
            if f.comment.strip()
        ]
        kinds = {k: [e for _, ed in per_item for e in ed[k]] for k in ("name", "remove", "reword")}
        plans = [
            kinds["name"],
            kinds["remove"],
            kinds["name"] + kinds["remove"],
            [e for f, ed in per_item for e in (ed["name"] if f.comment.strip() else ed["remove"])],
            kinds["reword"] + kinds["name"],
        ]
        plans += [[e] for k in ("name", "remove", "reword") for e in kinds[k]]  # fallbacks: single edits
        out, seen = [], set()
        for plan in plans:
            candidate = self._candidate(definition, plan + notes)
            if candidate is None:
                continue
            key = repr(sorted(candidate.definition.as_dict()["units"], key=lambda u: u["name"]))
            if key in seen:
                continue
            seen.add(key)
            out.append(candidate)
            if len(out) == n:
                break
        return out

    @staticmethod
    def _candidate(definition: Definition, plan: list[Edit]) -> Candidate | None:
        """Apply the plan, skipping edits that no longer fit (an edit already made by another)."""
        applied, d = [], definition
        for e in plan:
            try:
                nxt = e.apply(d)
            except DefinitionError:
                continue
            if nxt != d:
                applied.append(e)
                d = nxt
        if not applied:
            return None
        assert apply_edits(definition, applied) == d
        return Candidate(d, tuple(applied), describe_edits(definition, applied))
