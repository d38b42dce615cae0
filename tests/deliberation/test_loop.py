"""One concept's deliberation over the real Caltech-101 embeddings, with a simulated user."""

import numpy as np
import pytest

from agile_modeling.concepts import Concept
from agile_modeling.deliberation import SOURCE, Deliberation
from agile_modeling.deliberation.combined import CombinedClassifier
from agile_modeling.deliberation.providers.offline import EmbeddingProvider
from agile_modeling.errors import SessionError
from agile_modeling.index import ExactIndex
from agile_modeling.session import SessionStore


@pytest.fixture
def setup(caltech, tmp_path):
    from agile_modeling.simulate.deliberation_study import SimulatedDeliberator, load_deliberation_suite

    spec = next(s for s in load_deliberation_suite() if s.title == "brass and wind instruments")
    store = SessionStore(tmp_path / "sessions.sqlite")
    session = store.create(Concept(spec.name))
    provider = EmbeddingProvider(caltech.vocabulary, grounding=caltech.pool_x)
    delib = Deliberation(session, caltech.pool, ExactIndex(caltech.pool), caltech.vocabulary, provider)
    return delib, SimulatedDeliberator(spec, caltech), tmp_path


def test_scoping_batches_and_refinement(setup, caltech):
    delib, user, tmp_path = setup
    items = delib.scope()
    assert items and delib.scope() == items  # proposed once
    delib.decide_scoping({it.position: user.scoping_decision(it) for it in items})
    v0 = delib.finish_scoping()
    assert delib.finish_scoping() == v0 and v0.author == "scoping"

    batch = delib.next_batch()
    assert 1 <= len(batch.items) <= 5 and batch.explanation
    assert delib.next_batch() == batch  # still open: the same batch
    first = batch.items[0]
    assert delib.record(first.image_id, user.label(first.image_id), "first", external_id="ls-1")
    with pytest.raises(SessionError, match="still has"):
        delib.refine()
    assert delib.next_batch().round == batch.round
    for it in batch.items[1:]:
        delib.record(it.image_id, user.label(it.image_id), user.comment(it.image_id, it.decision))
    assert not delib.record(first.image_id, user.label(first.image_id), "first", external_id="ls-1")  # redelivered
    with pytest.raises(SessionError, match="was not shown"):
        delib.record(10**6, 1)
    v1 = delib.refine()
    assert delib.refine() == v1  # idempotent per round
    assert v1.reason["round"] == batch.round and len(v1.reason["feedback"]) == len(batch.items)
    nxt = delib.next_batch()
    assert nxt.round == batch.round + 1 and not {i.image_id for i in nxt.items} & {i.image_id for i in batch.items}

    # a fresh process (new objects over the same file) resumes exactly
    again = Deliberation(
        SessionStore(tmp_path / "sessions.sqlite").open(delib.session.concept.name),
        delib.pool,
        delib.index,
        delib.text_encoder,
        delib.provider,
    )
    assert again.next_batch() == nxt and again.history.replay()[-1] == v1.definition
    assert set(again.session.labels(SOURCE)) == {i.image_id for i in batch.items}


def test_disagreements_in_a_batch_lead_to_a_definition_that_fixes_them(setup, caltech):
    delib, user, _ = setup
    delib.scope()
    delib.finish_scoping()  # everything kept as proposed
    fixed = 0
    for _ in range(3):
        batch = delib.next_batch()
        wrong = [it for it in batch.items if user.label(it.image_id) != it.decision]
        for it in batch.items:
            delib.record(it.image_id, user.label(it.image_id), user.comment(it.image_id, it.decision))
        version = delib.refine()
        if wrong:
            now = delib.decide(version.definition, [it.image_id for it in wrong])
            fixed += sum(now[it.image_id] == user.label(it.image_id) for it in wrong)
    assert fixed > 0


def test_combined_classifier_chooses_by_cross_validated_f1(caltech):
    rng = np.random.default_rng(0)
    sax = caltech.classnames.index("saxophone")
    pos = np.flatnonzero(caltech.pool_y == sax)[:15]
    neg = rng.choice(np.flatnonzero(caltech.pool_y != sax), 30, replace=False)
    ids = np.concatenate([pos, neg])
    y = np.r_[np.ones(len(pos)), np.zeros(len(neg))].astype(int)
    useless = lambda x: np.full(len(x), 0.9)  # noqa: E731  a definition that calls everything in scope
    combined = CombinedClassifier(useless).fit(caltech.pool_x[ids], y, caltech.pool_x[neg])
    assert set(combined.cv_f1) == {"definition", "mlp", "prior"}
    assert combined.mode == "mlp" and combined.cv_f1["mlp"] > combined.cv_f1["definition"]
    test = caltech.test_x[caltech.test_y == sax]
    assert (combined.predict_proba(test) > 0.5).mean() > 0.8
    perfect = lambda x: (x @ caltech.vocabulary.encode_texts(["saxophone"])[0] > 0.27).astype(float) * 0.98 + 0.01  # noqa: E731
    assert (
        CombinedClassifier(perfect).fit(caltech.pool_x[ids[:3]], y[:3]).mode == "definition"
    )  # too few to cross-validate
