"""One interface for the language and vision-language models Agile Deliberation prompts
(section 3.2): decomposition, the definition classifier f_d, borderline queries, ambiguity
summaries, feedback articulation and refinement candidates.

Backends: :class:`~agile_modeling.deliberation.providers.offline.EmbeddingProvider` (built in, no
key, no network: image-text embeddings only) and
:class:`~agile_modeling.deliberation.providers.gemini.GeminiProvider` (the papers' choice).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from agile_modeling.deliberation.definition import Definition
from agile_modeling.deliberation.edits import Edit


@dataclass(frozen=True, eq=False)
class PoolImage:
    """A pool image as providers see it: its embedding ``(d,)`` and, for VLMs, a way to read its bytes."""

    id: int
    embedding: NDArray[np.floating[Any]]
    load_bytes: Callable[[], bytes] | None = None
    mime_type: str = "image/jpeg"


@dataclass(frozen=True)
class Decision:
    """f_d(x): the definition's verdict on one image, its confidence in [0, 1] and why."""

    image_id: int
    in_scope: bool
    score: float
    rationale: str


@dataclass(frozen=True, eq=False)
class Query:
    """A text query for retrieval; ``vector`` ``(d,)`` when the provider embeds it itself."""

    text: str
    vector: NDArray[np.float32] | None = None


@dataclass(frozen=True, eq=False)
class Ambiguity:
    """a(x): one sentence on why an image is borderline, and its text embedding ``(d',)``."""

    image_id: int
    summary: str
    vector: NDArray[np.float32]


@dataclass(frozen=True)
class Feedback:
    """A user's label on a borderline image, against what the definition said."""

    image_id: int
    label: int  # 1 in scope, 0 out of scope
    decision: int  # what the definition decided when the image was shown
    comment: str = ""
    rationale: str = ""  # the comment articulated as an explicit rationale

    @property
    def disagrees(self) -> bool:
        return self.label != self.decision


@dataclass(frozen=True)
class Candidate:
    """A refinement candidate: the definition, the edits from the current one and a summary."""

    definition: Definition
    edits: tuple[Edit, ...]
    change: str


@dataclass
class ProviderStats:
    """Counters of model calls (the offline provider counts its calls as free and instant)."""

    calls: int = 0
    cached: int = 0
    failures: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0
    cost_usd: float = 0.0
    by_task: dict[str, int] = field(default_factory=dict)

    def count(self, task: str) -> None:
        self.by_task[task] = self.by_task.get(task, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class ModelProvider(ABC):
    """What Agile Deliberation asks of its models. Every method is deterministic for a fixed provider
    configuration (LLM providers cache their answers per session)."""

    name: str = "provider"

    def __init__(self) -> None:
        self.stats = ProviderStats()

    @abstractmethod
    def decompose(self, concept: str, description: str = "") -> Definition:
        """Stage 1: unit concepts (at most 3) and candidate sub-concepts on their proposed sides."""

    @abstractmethod
    def classify(self, definition: Definition, images: Sequence[PoolImage]) -> list[Decision]:
        """f_d(x) for every image, in order."""

    @abstractmethod
    def borderline_queries(self, definition: Definition, n: int = 6) -> list[Query]:
        """Queries for images that are semantically ambiguous under ``definition``."""

    @abstractmethod
    def summarise_ambiguities(self, definition: Definition, images: Sequence[PoolImage]) -> list[Ambiguity]:
        """a(x) and its embedding for every image, in order."""

    @abstractmethod
    def explain_batch(self, definition: Definition, ambiguities: Sequence[Ambiguity]) -> str:
        """A short account of the one ambiguity a borderline batch explores."""

    @abstractmethod
    def articulate(self, definition: Definition, feedback: Feedback, image: PoolImage) -> str:
        """A brief user comment turned into an explicit rationale r_user(x)."""

    @abstractmethod
    def propose_refinements(
        self, definition: Definition, feedback: Sequence[Feedback], images: dict[int, PoolImage], n: int = 5
    ) -> list[Candidate]:
        """``n`` candidate definitions that reflect the feedback in different ways (eq. 10)."""
