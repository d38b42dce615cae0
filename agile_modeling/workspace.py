"""A workspace folder: the embedding store, the sessions database and the model versions.

Layout::

    <root>/workspace.json     which encoder made the pool (and embeds new text and images)
    <root>/pool/              the embedding store
    <root>/sessions.sqlite    every concept's rounds, labels and model versions
    <root>/models/<concept>/  versioned classifiers
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from agile_modeling.classifier import ModelRegistry
from agile_modeling.concepts import slugify
from agile_modeling.encoders import OpenClipEncoder, OpenClipSpec, TextEncoder, VocabularyTextEncoder
from agile_modeling.errors import ProviderError, StoreError
from agile_modeling.index import LazyIndex, NeighbourIndex, build_index
from agile_modeling.loop import AgileLoop, LoopConfig
from agile_modeling.session import SessionStore
from agile_modeling.store import EmbeddingStore
from agile_modeling.store.image_source import read_bytes

if TYPE_CHECKING:  # the deliberation is imported on first use: most commands never need it
    from agile_modeling.deliberation import Deliberation, DeliberationConfig
    from agile_modeling.deliberation.providers.base import ModelProvider
    from agile_modeling.deliberation.providers.gemini import GeminiSettings

DEFAULT_WORKSPACE = "agile-workspace"
#: pool images the offline deliberation provider looks at to judge scoping candidates
GROUNDING_SAMPLE = 50_000


class Workspace:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root else Path(DEFAULT_WORKSPACE)
        self.root.mkdir(parents=True, exist_ok=True)
        self._index: LazyIndex | None = None  # see index(); the store is one per workspace object

    # --- configuration ---------------------------------------------------------------------
    @property
    def _config_path(self) -> Path:
        return self.root / "workspace.json"

    def config(self) -> dict[str, Any]:
        return json.loads(self._config_path.read_text()) if self._config_path.exists() else {}

    def set_config(self, **values: Any) -> None:
        tmp = self._config_path.with_suffix(".tmp")
        tmp.write_text(json.dumps({**self.config(), **values}, indent=2))
        os.replace(tmp, self._config_path)

    def encoder_spec(self) -> OpenClipSpec:
        saved = self.config().get("open_clip")
        return OpenClipSpec(**saved) if saved else OpenClipSpec()

    def image_encoder(self, spec: OpenClipSpec | None = None) -> OpenClipEncoder:
        """The workspace's encoder; a different ``spec`` than the pool's is refused.

        A new spec is recorded only once its weights have loaded, so a failed download leaves
        the workspace free to try another model.
        """
        current = self.config().get("open_clip")
        if spec is None:
            spec = self.encoder_spec()
        elif current and OpenClipSpec(**current) != spec:
            raise StoreError(
                f"this workspace's pool was embedded with {current}; embedding with {asdict(spec)} would mix "
                "two embedding spaces. Use another --workspace."
            )
        encoder = OpenClipEncoder(spec)
        if not current:
            _ = encoder.dim  # loads the weights, or raises EncoderUnavailableError
            self.set_config(open_clip=asdict(spec))
        return encoder

    def text_encoder(self) -> TextEncoder:
        """A phrase table if the workspace names one (offline), else the open_clip text tower."""
        vocab = self.config().get("text_vocabulary")
        return VocabularyTextEncoder.from_npz(vocab) if vocab else self.image_encoder()

    # --- parts -------------------------------------------------------------------------------
    def store(self, dim: int | None = None, encoder_name: str | None = None) -> EmbeddingStore:
        """The pool's embedding store (created if ``dim`` is given); opened once per workspace object."""
        if getattr(self, "_store", None) is None:
            if dim is not None:
                self._store = EmbeddingStore.create(self.root / "pool", dim, encoder_name or "unknown")
            else:
                self._store = EmbeddingStore(self.root / "pool")
        elif dim is not None and self._store.dim != dim:
            raise StoreError(f"store at {self.root / 'pool'} holds {self._store.dim}-d embeddings, not {dim}-d")
        return self._store

    @cached_property
    def sessions(self) -> SessionStore:
        return SessionStore(self.root / "sessions.sqlite")

    def registry(self, concept_name: str) -> ModelRegistry:
        slug = slugify(concept_name)
        return ModelRegistry(self.root / "models" / slug, slug)

    def index(self, store: EmbeddingStore) -> NeighbourIndex:
        """The pool's neighbour index, built on its first search and kept by this workspace object
        while the pool holds as many images (it only grows): a worker's rounds of an exploring
        strategy search it every round, and above 2M images building it (IVF) takes minutes."""
        view = store.vectors()
        if self._index is None or len(self._index) != len(view):
            self._index = LazyIndex(lambda: build_index(view), len(view))
        return self._index

    # --- Agile Deliberation ------------------------------------------------------------------
    def provider(self, name: str = "offline", gemini: GeminiSettings | None = None) -> ModelProvider:
        """The deliberation's model provider, made once per workspace object.

        ``offline``: the built-in embedding provider (needs the workspace's phrase vocabulary);
        ``gemini``: Gemini via google-genai with ``gemini``'s key and models (the composition root
        builds them from its settings), caching calls in sessions.sqlite.
        """
        from agile_modeling.deliberation.providers.cache import CallCache
        from agile_modeling.deliberation.providers.gemini import GeminiProvider
        from agile_modeling.deliberation.providers.offline import EmbeddingProvider

        cache: dict[str, ModelProvider] = self.__dict__.setdefault("_providers", {})
        if name not in cache:
            if name == "offline":
                text = self.text_encoder()
                if not isinstance(text, VocabularyTextEncoder):
                    raise ProviderError(
                        "the offline deliberation provider reads and writes only the phrases of a vocabulary: set one "
                        "with `agile concept new ... --text-vocabulary FILE.npz`, or use --provider gemini"
                    )
                pool = self.store().vectors()
                rng = np.random.default_rng(0)
                ids = np.sort(rng.choice(len(pool), min(len(pool), GROUNDING_SAMPLE), replace=False))
                cache[name] = EmbeddingProvider(text, grounding=pool.take(ids).astype(np.float32))
            elif name == "gemini":
                if gemini is None:
                    raise ProviderError(
                        "the Gemini provider needs GEMINI_API_KEY (or GOOGLE_API_KEY); without a key, "
                        "use the built-in offline provider (--provider offline)"
                    )
                cache[name] = GeminiProvider(gemini, CallCache(self.root / "sessions.sqlite"))
            else:
                raise ProviderError(f"unknown provider {name!r}: choose offline or gemini")
        return cache[name]

    def image_bytes(self, image_id: int) -> bytes:
        """The bytes of a pool image, read from where it was added (what a VLM provider is sent);
        :class:`ImageReadError` for images known only by their embeddings."""
        return read_bytes(self.store().uris([int(image_id)])[0])

    def deliberation(
        self,
        concept_name: str,
        provider: str = "offline",
        config: DeliberationConfig | None = None,
        gemini: GeminiSettings | None = None,
    ) -> Deliberation:
        """The Agile Deliberation of a concept (its session must exist); ``provider`` as :meth:`provider`."""
        from agile_modeling.deliberation import Deliberation, DeliberationConfig

        store = self.store()
        return Deliberation(
            self.sessions.open(concept_name),
            store.vectors(),
            self.index(store),
            self.text_encoder(),
            self.provider(provider, gemini),
            config or DeliberationConfig(),
            image_bytes=self.image_bytes,
        )

    def loop(self, concept_name: str, config: LoopConfig | None = None) -> AgileLoop:
        store = self.store()
        return AgileLoop(
            self.sessions.open(concept_name),
            store.vectors(),
            self.index(store),
            self.text_encoder(),
            self.registry(concept_name),
            config or LoopConfig(),
        )
