"""Gemini through Google's ``google-genai`` client: the papers' models (Gemini 2.5 Pro for
decomposition, Flash for everything else), prompted for structured JSON answers.

Configured by ``GEMINI_API_KEY`` (or ``GOOGLE_API_KEY``), ``AGILE_GEMINI_MODEL``,
``AGILE_GEMINI_DECOMPOSE_MODEL``, ``AGILE_GEMINI_EMBEDDING_MODEL`` and, for a proxy or a test
endpoint, ``GEMINI_BASE_URL``. HTTP failures that are worth repeating (408, 429, 5xx) are retried
with exponential backoff by the client itself (``HttpRetryOptions``); every answer is cached per
session (:mod:`.cache`); calls, cache hits, tokens, seconds and an estimated cost are counted in
``stats``. Refused and malformed answers raise :class:`~agile_modeling.errors.ProviderError` with
the reason, never the key.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from numpy.typing import NDArray

from agile_modeling.deliberation.definition import Definition
from agile_modeling.deliberation.edits import Edit
from agile_modeling.deliberation.providers.base import (
    Ambiguity,
    Candidate,
    Decision,
    Feedback,
    ModelProvider,
    PoolImage,
    Query,
)
from agile_modeling.deliberation.providers.cache import CallCache, call_key
from agile_modeling.errors import DefinitionError, ProviderError

if TYPE_CHECKING:  # google-genai is imported when a provider is made: most commands never need it
    from google.genai import types as genai_types

#: appendix B.1: the classifier rates 1-5 and "we convert the ratings into binary labels by thresholding at 3"
RATING_THRESHOLD = 3

_SUB = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "description": {"type": "string"}},
    "required": ["name"],
}
DEFINITION_SCHEMA = {
    "type": "object",
    "properties": {
        "concept": {"type": "string"},
        "combine": {"type": "string", "enum": ["and", "or"]},
        "units": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string"},
                    "in_scope": {"type": "array", "items": _SUB},
                    "out_of_scope": {"type": "array", "items": _SUB},
                },
                "required": ["name", "in_scope", "out_of_scope"],
            },
        },
        "edge_cases": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["concept", "combine", "units"],
}


def _object(**fields: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": fields, "required": list(fields)}


@dataclass(frozen=True)
class GeminiSettings:
    api_key: str
    model: str = "gemini-2.5-flash"
    decompose_model: str = "gemini-2.5-pro"
    embedding_model: str = "gemini-embedding-001"
    base_url: str | None = None
    attempts: int = 4  # HTTP attempts per call (1 + 3 retries)
    initial_delay: float = 1.0  # seconds before the first retry, doubling after
    timeout_ms: int = 60_000
    #: list prices (USD per million tokens) used for the cost estimate; override to match your contract
    input_usd_per_mtok: float = 0.30
    output_usd_per_mtok: float = 2.50

    @classmethod
    def with_key(cls, api_key: str | None, **options: Any) -> GeminiSettings:
        """Settings with ``api_key`` (from the composition root's settings); :class:`ProviderError` that
        says what to set when there is none. ``options`` that are None keep the defaults."""
        if not api_key:
            raise ProviderError(
                "the Gemini provider needs GEMINI_API_KEY (or GOOGLE_API_KEY); without a key, use "
                "the built-in offline provider (--provider offline)"
            )
        return cls(api_key=api_key, **{k: v for k, v in options.items() if v is not None})

    def __repr__(self) -> str:  # never print the key
        return f"GeminiSettings(model={self.model!r}, decompose_model={self.decompose_model!r}, base_url={self.base_url!r})"


class GeminiProvider(ModelProvider):
    name = "gemini"

    def __init__(self, settings: GeminiSettings, cache: CallCache | None = None) -> None:
        super().__init__()
        from google import genai
        from google.genai import types

        self.settings = settings
        self.cache = cache or CallCache()
        self._types = types
        self._errors = genai.errors
        retry = types.HttpRetryOptions(
            attempts=settings.attempts,
            initial_delay=settings.initial_delay,
            http_status_codes=[408, 429, 500, 502, 503, 504],
        )
        self.client = genai.Client(
            api_key=settings.api_key,
            http_options=types.HttpOptions(
                base_url=settings.base_url, timeout=settings.timeout_ms, retry_options=retry
            ),
        )

    # --- the one call ---------------------------------------------------------------------------
    def _ask(
        self,
        task: str,
        prompt: str,
        schema: dict[str, Any],
        images: Sequence[PoolImage] = (),
        model: str | None = None,
    ) -> dict[str, Any]:
        """One structured-JSON generation, cached by (model, task, prompt, image bytes)."""
        model = model or self.settings.model
        blobs = [self._bytes_of(im) for im in images]
        key = call_key(model, task, prompt, blobs)
        self.stats.count(task)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.cached += 1
            stored: dict[str, Any] = json.loads(cached)  # an answer that passed the checks below
            return stored
        t = self._types
        parts = [t.Part.from_bytes(data=b, mime_type=im.mime_type) for b, im in zip(blobs, images)]
        config = t.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=schema, temperature=0.0
        )
        t0 = time.perf_counter()
        try:
            response = self.client.models.generate_content(model=model, contents=[*parts, prompt], config=config)
        except self._errors.APIError as e:
            self.stats.failures += 1
            raise ProviderError(
                f"Gemini {task} call failed after {self.settings.attempts} attempts: HTTP {e.code} "
                f"{e.status or ''} {e.message or ''}".strip()
            ) from None
        finally:
            self.stats.seconds += time.perf_counter() - t0
        self.stats.calls += 1
        self._count_usage(response)
        text = self._answer_text(task, response)
        try:
            answer: dict[str, Any] = json.loads(text)  # a JSON object: checked below
        except json.JSONDecodeError:
            self.stats.failures += 1
            raise ProviderError(
                f"Gemini answered {task} with malformed JSON ({text[:120]!r}); nothing was recorded, "
                "try again or use the offline provider"
            ) from None
        missing = [k for k in schema.get("required", []) if not isinstance(answer, dict) or k not in answer]
        if missing:
            self.stats.failures += 1
            raise ProviderError(f"Gemini's {task} answer lacks {missing}; nothing was recorded")
        self.cache.put(key, model, task, text)
        return answer

    def _answer_text(self, task: str, response: genai_types.GenerateContentResponse) -> str:
        feedback = getattr(response, "prompt_feedback", None)
        if feedback is not None and feedback.block_reason:
            self.stats.failures += 1
            raise ProviderError(
                f"Gemini refused the {task} prompt ({feedback.block_reason}); rephrase the concept "
                "or its definition, or use the offline provider for this step"
            )
        if not response.candidates:
            self.stats.failures += 1
            raise ProviderError(f"Gemini returned no answer for {task}")
        reason = response.candidates[0].finish_reason
        name = getattr(reason, "value", reason)
        if name not in (None, "STOP", "FINISH_REASON_UNSPECIFIED"):
            self.stats.failures += 1
            raise ProviderError(f"Gemini stopped its {task} answer early ({name}); nothing was recorded")
        return response.text or ""

    def _count_usage(self, response: genai_types.GenerateContentResponse) -> None:
        usage = getattr(response, "usage_metadata", None)
        if usage is None:
            return
        i, o = usage.prompt_token_count or 0, usage.candidates_token_count or 0
        self.stats.input_tokens += i
        self.stats.output_tokens += o
        self.stats.cost_usd += (i * self.settings.input_usd_per_mtok + o * self.settings.output_usd_per_mtok) / 1e6

    @staticmethod
    def _bytes_of(image: PoolImage) -> bytes:
        if image.load_bytes is None:
            raise ProviderError(
                f"image {image.id} has no readable pixels; the Gemini provider needs the image files "
                "(pool images added from files or URLs), not embeddings only"
            )
        return image.load_bytes()

    def embed_texts(self, texts: Sequence[str]) -> NDArray[np.float32]:
        """``(n, d')`` L2-normalised Gemini text embeddings (cached per text)."""
        out: list[NDArray[np.float32] | None] = []
        todo = []
        for i, text in enumerate(texts):
            hit = self.cache.get(call_key(self.settings.embedding_model, "embed", text))
            out.append(np.array(json.loads(hit), dtype=np.float32) if hit else None)
            if hit:
                self.stats.cached += 1
            else:
                todo.append(i)
        if todo:
            t0 = time.perf_counter()
            try:
                contents: list[genai_types.ContentUnion] = [texts[i] for i in todo]
                result = self.client.models.embed_content(model=self.settings.embedding_model, contents=contents)
            except self._errors.APIError as e:
                self.stats.failures += 1
                raise ProviderError(f"Gemini embedding failed: HTTP {e.code} {e.message or ''}".strip()) from None
            finally:
                self.stats.seconds += time.perf_counter() - t0
            self.stats.calls += 1
            if not result.embeddings or len(result.embeddings) != len(todo):
                raise ProviderError(f"Gemini returned {len(result.embeddings or [])} embeddings for {len(todo)} texts")
            for i, emb in zip(todo, result.embeddings):
                vec = np.asarray(emb.values, dtype=np.float32)
                self.cache.put(
                    call_key(self.settings.embedding_model, "embed", texts[i]),
                    self.settings.embedding_model,
                    "embed",
                    json.dumps(vec.tolist()),
                )
                out[i] = vec
        # cast: every None of ``out`` (a text not cached) was replaced by its fetched embedding above
        x = np.stack(cast(list[NDArray[np.float32]], out))
        unit: NDArray[np.float32] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)  # stubs: Any
        return unit

    # --- the steps ------------------------------------------------------------------------------
    def decompose(self, concept: str, description: str = "") -> Definition:
        prompt = (
            f"A user wants an image classifier for the subjective concept {concept!r}"
            + (f" ({description})" if description else "")
            + ". Decompose it into at most 3 unit concepts "
            "combined by 'and' or 'or'. For each unit, brainstorm 4-8 visual sub-concepts likely in scope and "
            "4-8 related ones likely out of scope, each with a one-sentence description. Answer as JSON."
        )
        answer = self._ask("decompose", prompt, DEFINITION_SCHEMA, model=self.settings.decompose_model)
        return self._definition(answer, concept)

    def classify(self, definition: Definition, images: Sequence[PoolImage]) -> list[Decision]:
        schema = _object(rationale={"type": "string"}, rating={"type": "integer", "minimum": 1, "maximum": 5})
        out = []
        for im in images:
            prompt = (
                f"{definition.render()}\n\nThink step by step about whether the image is in scope of this "
                "definition, then rate it from 1 (clearly out of scope) to 5 (clearly in scope). Answer as JSON."
            )
            a = self._ask("classify", prompt, schema, [im])
            rating = int(a["rating"])
            if not 1 <= rating <= 5:
                raise ProviderError(f"Gemini rated image {im.id} {rating}, outside 1-5")
            out.append(Decision(im.id, rating >= RATING_THRESHOLD, (rating - 1) / 4, str(a["rationale"])))
        return out

    def borderline_queries(self, definition: Definition, n: int = 6) -> list[Query]:
        prompt = (
            f"{definition.render()}\n\nWrite {n} diverse short image-search queries for images that are "
            "borderline for this definition: each should combine something in scope with something out of "
            "scope, or probe an unclear boundary. Answer as JSON."
        )
        a = self._ask("borderline_queries", prompt, _object(queries={"type": "array", "items": {"type": "string"}}))
        return [Query(str(q)) for q in a["queries"][:n]]

    def summarise_ambiguities(self, definition: Definition, images: Sequence[PoolImage]) -> list[Ambiguity]:
        schema = _object(summary={"type": "string"})
        summaries = [
            str(
                self._ask(
                    "ambiguity",
                    f"{definition.render()}\n\nIn one sentence, what makes this image "
                    "ambiguous for the definition? Answer as JSON.",
                    schema,
                    [im],
                )["summary"]
            )
            for im in images
        ]
        vectors = self.embed_texts(summaries) if summaries else np.zeros((0, 1), np.float32)
        return [Ambiguity(im.id, s, v) for im, s, v in zip(images, summaries, vectors)]

    def explain_batch(self, definition: Definition, ambiguities: Sequence[Ambiguity]) -> str:
        listing = "\n".join(f"- {a.summary}" for a in ambiguities)
        a = self._ask(
            "explain_batch",
            f"{definition.render()}\n\nThese images share one ambiguity:\n{listing}\n\n"
            "Explain that ambiguity to the user in one or two sentences, as a question they should decide. "
            "Answer as JSON.",
            _object(explanation={"type": "string"}),
        )
        return str(a["explanation"])

    def articulate(self, definition: Definition, feedback: Feedback, image: PoolImage) -> str:
        said = "in scope" if feedback.label else "out of scope"
        was = "in scope" if feedback.decision else "out of scope"
        a = self._ask(
            "articulate",
            f"{definition.render()}\n\nThe definition's classifier said this image is {was}; "
            f"the user labeled it {said} and commented: {feedback.comment!r}. Rewrite the user's reason as "
            "one explicit, general rationale a classifier could follow. Answer as JSON.",
            _object(rationale={"type": "string"}),
            [image],
        )
        return str(a["rationale"])

    def propose_refinements(
        self, definition: Definition, feedback: Sequence[Feedback], images: dict[int, PoolImage], n: int = 5
    ) -> list[Candidate]:
        notes = "\n".join(
            f"- image {f.image_id}: definition said {'in' if f.decision else 'out'}, user said "
            f"{'in' if f.label else 'out'}; rationale: {f.rationale or f.comment or '(none)'}"
            for f in feedback
        )
        schema = _object(
            candidates={"type": "array", "items": _object(change={"type": "string"}, definition=DEFINITION_SCHEMA)}
        )
        a = self._ask(
            "refine",
            f"Current definition as JSON:\n{json.dumps(definition.as_dict())}\n\nUser feedback on "
            f"borderline images:\n{notes}\n\nWrite {n} different revisions of the definition that reflect "
            "this feedback (e.g. move a sub-concept across the boundary, add or tighten a sub-concept, add an "
            "edge-case note). Keep at most 3 unit concepts. Say in 'change' what each revision changes. "
            "Answer as JSON.",
            schema,
        )
        out = []
        for c in a["candidates"][:n]:
            d = self._definition(c["definition"], definition.concept)
            out.append(
                Candidate(d, (Edit("replace", definition=d.as_dict()),), str(c.get("change", "revised by Gemini")))
            )
        return out

    @staticmethod
    def _definition(answer: dict[str, Any], concept: str) -> Definition:
        try:
            return Definition.from_dict({**answer, "concept": concept})
        except DefinitionError as e:
            raise ProviderError(f"Gemini's definition does not fit the structure: {e}") from None
