"""The two-stage greedy choice of a refined definition (appendix C)."""

import pytest

from agile_modeling.deliberation.definition import Definition, UnitConcept
from agile_modeling.deliberation.providers.base import Candidate
from agile_modeling.deliberation.refinement import choose_candidate


def candidates(n):
    return [Candidate(Definition(f"c{i}", (UnitConcept("u"),)), (), f"candidate {i}") for i in range(n)]


def test_shortlist_by_batch_f1_then_best_on_all_labels():
    batch = {1: 1, 2: 1, 3: 0}
    everything = {**batch, 4: 1, 5: 0, 6: 1}
    decisions = {  # what each candidate decides for images 1-6
        0: {1: 1, 2: 1, 3: 0, 4: 0, 5: 1, 6: 0},  # perfect on the batch, poor overall
        1: {1: 1, 2: 0, 3: 0, 4: 1, 5: 0, 6: 1},  # good on the batch, best overall
        2: {1: 1, 2: 1, 3: 1, 4: 0, 5: 1, 6: 1},  # good on the batch, fair overall
        3: {1: 0, 2: 0, 3: 0, 4: 1, 5: 0, 6: 1},  # F1 0 on the batch: not shortlisted despite being good overall
        4: {1: 0, 2: 1, 3: 1, 4: 1, 5: 1, 6: 1},
    }
    cs = candidates(5)
    decide = lambda c, ids: {i: decisions[cs.index(c)][i] for i in ids}  # noqa: E731
    chosen, scored = choose_candidate(cs, decide, batch, everything)
    assert [s.shortlisted for s in scored] == [True, True, True, False, False]
    assert scored[0].f1_batch == 1.0 and scored[1].f1_batch == pytest.approx(2 / 3)
    assert chosen == 1 and scored[1].f1_all == pytest.approx(6 / 7) and scored[2].f1_all == pytest.approx(2 / 3)
    assert scored[3].f1_all != scored[3].f1_all  # NaN: never scored on all labels


def test_ties_on_an_all_negative_batch_are_broken_by_accuracy():
    batch = {1: 0, 2: 0}
    cs = candidates(4)
    decisions = [{1: 1, 2: 1}, {1: 1, 2: 1}, {1: 0, 2: 1}, {1: 0, 2: 0}]
    decide = lambda c, ids: {i: decisions[cs.index(c)][i] for i in ids}  # noqa: E731
    chosen, scored = choose_candidate(cs, decide, batch, batch, shortlist=2)
    assert [s.shortlisted for s in scored] == [False, False, True, True] and chosen == 3


def test_no_candidates_is_an_error():
    with pytest.raises(ValueError):
        choose_candidate([], lambda c, ids: {}, {}, {})
