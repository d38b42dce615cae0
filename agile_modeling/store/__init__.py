"""The embedding store: the pool of images as memory-mapped float16 shards plus an id/URI table."""

from agile_modeling.store.clip_retrieval import import_clip_retrieval
from agile_modeling.store.embedding_store import AddReport, EmbeddingStore, PoolView
from agile_modeling.store.image_source import list_image_files, load_image

__all__ = ["AddReport", "EmbeddingStore", "PoolView", "import_clip_retrieval", "list_image_files", "load_image"]
