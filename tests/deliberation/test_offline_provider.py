"""The built-in provider on the real shared CLIP embeddings (Caltech-101 rows)."""

import numpy as np
import pytest

from agile_modeling.deliberation.definition import Definition, SubConcept, UnitConcept
from agile_modeling.deliberation.providers.base import Feedback, PoolImage
from agile_modeling.deliberation.providers.offline import EmbeddingProvider
from agile_modeling.errors import DefinitionError


@pytest.fixture(scope="module")
def provider(caltech):
    return EmbeddingProvider(caltech.vocabulary, grounding=caltech.pool_x)


def rows_of(caltech, name, n=5):
    return np.flatnonzero(caltech.pool_y == caltech.classnames.index(name))[:n]


def images(caltech, ids):
    return [PoolImage(int(i), caltech.pool_x[i]) for i in ids]


BIRDS = Definition("bird", (UnitConcept("bird", (SubConcept("flamingo"),), (SubConcept("pigeon"),)),))


def test_the_definition_classifier_follows_its_sub_concepts(caltech, provider):
    flamingos, pigeons = rows_of(caltech, "flamingo"), rows_of(caltech, "pigeon")
    decisions = provider.classify(BIRDS, images(caltech, [*flamingos, *pigeons]))
    assert [d.in_scope for d in decisions] == [True] * 5 + [False] * 5
    assert "closest in-scope 'flamingo'" in decisions[0].rationale and "'pigeon'" in decisions[0].rationale
    assert all(0 <= d.score <= 1 for d in decisions) and decisions[0].score > 0.5 > decisions[-1].score
    # moving pigeon across the boundary changes the verdict on pigeons
    flipped = BIRDS.with_sub_concept("bird", "in", SubConcept("pigeon"))
    assert all(d.in_scope for d in provider.classify(flipped, images(caltech, pigeons)))
    # and the vectorised scores agree with classify
    scores = provider.scores(BIRDS, caltech.pool_x[[*flamingos, *pigeons]])
    assert ((scores > 0.5) == np.array([d.in_scope for d in decisions])).all()


def test_or_takes_the_best_unit_and_takes_the_worst(caltech, provider):
    units = (UnitConcept("flamingo"), UnitConcept("pigeon"))
    both = caltech.pool_x[[*rows_of(caltech, "flamingo"), *rows_of(caltech, "pigeon")]]
    either = provider.scores(Definition("x", units, "or"), both)
    all_of = provider.scores(Definition("x", units, "and"), both)
    assert (either > 0.5).all() and (all_of < 0.5).all()


def test_decompose_proposes_vocabulary_sub_concepts_grounded_in_the_pool(provider):
    d = provider.decompose("bird")
    assert [u.name for u in d.units] == ["bird"]
    names = [s.name for _, _, s in d.sub_concepts()]
    assert len(names) == provider.candidates_per_unit and all(provider.knows(n) for n in names)
    assert d.unit("bird").side_of("pigeon") == "in"  # pool pigeons are zero-shot birds
    two = provider.decompose("dog and cat")
    assert two.combine == "and" and [u.name for u in two.units] == ["dog", "cat"]
    with pytest.raises(DefinitionError, match="does not know"):
        provider.decompose("paid to play")
    with pytest.raises(DefinitionError, match="mixes 'and' and 'or'"):
        provider.decompose("dog and cat or bird")


def test_unknown_phrases_in_a_definition_are_a_clear_error(caltech, provider):
    d = Definition("x", (UnitConcept("bird", (SubConcept("majestic waders"),)),))
    with pytest.raises(DefinitionError, match="cannot read sub-concepts \\['majestic waders'\\]"):
        provider.classify(d, images(caltech, [0]))


def test_borderline_queries_pair_in_and_out_of_scope_phrases(provider):
    queries = provider.borderline_queries(BIRDS, 4)
    # one in-scope phrase x (the out-of-scope one + its 2 nearest unmentioned phrases): at most 3 pairs
    assert len(queries) == 3 and all(q.text.startswith("flamingo or ") for q in queries)
    assert "flamingo or pigeon" in [q.text for q in queries]
    assert all(np.isclose(np.linalg.norm(q.vector), 1) for q in queries)
    assert len(provider.borderline_queries(BIRDS, 2)) == 2


def test_ambiguities_and_explanation(caltech, provider):
    amb = provider.summarise_ambiguities(BIRDS, images(caltech, rows_of(caltech, "ibis")))
    assert all("looks like both" in a.summary for a in amb)
    assert all(np.isclose(np.linalg.norm(a.vector), 1) for a in amb)
    assert "in scope" in provider.explain_batch(BIRDS, amb)


def test_phrases_named_in_comments(provider):
    assert provider.phrases_in("No: it's a Pigeon, not a flamingo!") == ["pigeon", "flamingo"]
    assert (
        provider.phrases_in("ice cream cone melting") == ["ice cream cone"]
        or "ice cream" in provider.phrases_in("ice cream cone melting")[0]
    )
    assert provider.phrases_in("") == []


def test_refinements_act_on_the_feedback(caltech, provider):
    pigeon = int(rows_of(caltech, "pigeon", 1)[0])
    [decision] = provider.classify(BIRDS, images(caltech, [pigeon]))
    assert not decision.in_scope
    fb = Feedback(pigeon, 1, 0, "city pigeons are birds I want")
    candidates = provider.propose_refinements(BIRDS, [fb], {pigeon: images(caltech, [pigeon])[0]}, n=5)
    assert 2 <= len(candidates) <= 5
    assert len({repr(c.definition.as_dict()["units"]) for c in candidates}) == len(candidates)  # distinct
    first, second = candidates[0].definition, candidates[1].definition
    assert first.unit("bird").side_of("pigeon") == "in" and candidates[0].change.startswith(
        "moved 'pigeon' to in scope"
    )
    assert second.unit("bird").side_of("pigeon") is None  # the culprit removed
    assert any("pigeons are birds" in note for note in first.edge_cases)
    assert provider.scores(first, caltech.pool_x[[pigeon]])[0] > 0.5  # the candidate now gets the image right
