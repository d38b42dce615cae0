import numpy as np
import pytest

from agile_modeling.encoders import VocabularyTextEncoder, normalise_phrase
from agile_modeling.errors import UnknownPhraseError


def test_phrases_are_normalised_the_way_people_type_them():
    assert normalise_phrase("  Stop_Sign ") == normalise_phrase("stop-sign") == "stop sign"


def test_lookup_returns_unit_vectors_and_rejects_unknown_phrases():
    enc = VocabularyTextEncoder({"dog": np.array([3.0, 4.0]), "cat": np.array([0.0, 2.0])})
    np.testing.assert_allclose(enc.encode_texts(["Dog", "cat"]), [[0.6, 0.8], [0.0, 1.0]])
    with pytest.raises(UnknownPhraseError, match="gourmet tuna"):
        enc.encode_texts(["dog", "gourmet tuna"])


def test_the_shared_vocabulary_loads(shared_data):
    vocab = shared_data.vocabulary
    assert vocab.dim == 512 and len(vocab.phrases) > 1300  # LVIS + COCO + Objects365 names, overlaps merged
    assert "stop sign" in vocab and "dog" in vocab


def test_an_unknown_phrase_error_suggests_known_phrases():
    from agile_modeling.encoders.vocabulary import VocabularyTextEncoder
    from agile_modeling.errors import UnknownPhraseError

    encoder = VocabularyTextEncoder({"sushi": np.ones(4), "fish (food)": np.ones(4), "zebra": np.ones(4)})
    with pytest.raises(UnknownPhraseError, match=r"'sushi' for 'tuna sushi'; 'zebra' for 'zebraa'"):
        encoder.encode_texts(["tuna sushi", "zebraa"])
    with pytest.raises(UnknownPhraseError, match=r"'fish \(food\)' for 'raw fish'"):
        encoder.encode_texts(["raw fish"])
