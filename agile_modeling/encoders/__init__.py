"""Encoders: images and texts into one embedding space (open_clip, or a precomputed phrase table)."""

from agile_modeling.encoders.base import ImageEncoder, TextEncoder, l2_normalise
from agile_modeling.encoders.open_clip import OpenClipEncoder, OpenClipSpec
from agile_modeling.encoders.vocabulary import VocabularyTextEncoder, normalise_phrase

__all__ = [
    "ImageEncoder",
    "TextEncoder",
    "OpenClipEncoder",
    "OpenClipSpec",
    "VocabularyTextEncoder",
    "l2_normalise",
    "normalise_phrase",
]
