"""Model providers for Agile Deliberation: the built-in offline one and Gemini."""

from agile_modeling.deliberation.providers.base import (
    Ambiguity,
    Candidate,
    Decision,
    Feedback,
    ModelProvider,
    PoolImage,
    ProviderStats,
    Query,
)
from agile_modeling.deliberation.providers.offline import EmbeddingProvider

__all__ = [
    "Ambiguity",
    "Candidate",
    "Decision",
    "EmbeddingProvider",
    "Feedback",
    "ModelProvider",
    "PoolImage",
    "ProviderStats",
    "Query",
]
