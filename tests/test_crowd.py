"""Majority vote with ties, missing votes and repeated annotators; agreement; crowd instructions."""

from agile_modeling.concepts import Concept
from agile_modeling.crowd import DECIDED, TIE, TOO_FEW, Vote, crowd_instructions, majority_vote, rater_agreement


def test_three_raters_decide_by_majority():
    votes = [Vote(1, "a", 1), Vote(1, "b", 1), Vote(1, "c", 0), Vote(2, "a", 0), Vote(2, "b", 0), Vote(2, "c", 0)]
    result = majority_vote(votes)
    assert (result[1].value, result[1].status, result[1].positives, result[1].negatives) == (1, DECIDED, 2, 1)
    assert (result[2].value, result[2].status) == (0, DECIDED)


def test_a_rater_voting_twice_counts_once_with_their_latest_vote():
    votes = [
        Vote(1, "a", 1, time=1),
        Vote(1, "a", 0, time=5),
        Vote(1, "a", 1, time=3),
        Vote(1, "b", 0),
        Vote(1, "c", 1),
    ]
    result = majority_vote(votes)[1]
    assert (result.positives, result.negatives, result.value) == (1, 2, 0)  # a's latest (time 5) is negative


def test_ties_and_missing_votes_are_reported_not_guessed():
    votes = [
        Vote(1, "a", 1),
        Vote(1, "b", 0),  # two raters only
        Vote(2, "a", 1),
        Vote(2, "b", 0),
        Vote(2, "c", 1),
        Vote(2, "d", 0),  # four raters, a tie
        Vote(3, "a", 1),
        Vote(3, "a", 1),
        Vote(3, "a", 1),
    ]  # one rater, three times
    result = majority_vote(votes)
    assert (result[1].status, result[1].value) == (TOO_FEW, None)
    assert (result[2].status, result[2].value, result[2].votes) == (TIE, None, 4)
    assert (result[3].status, result[3].votes) == (TOO_FEW, 1)
    assert majority_vote(votes, min_votes=1)[3].value == 1


def test_agreement_with_the_majority_and_with_the_user():
    votes = [
        Vote(i, r, v)
        for i, (a, b, c) in enumerate([(1, 1, 0), (0, 0, 0), (1, 1, 1), (0, 1, 1)])
        for r, v in (("a", a), ("b", b), ("c", c))
    ]
    result = majority_vote(votes)
    agreement = {r.rater: r for r in rater_agreement(votes, result, user_labels={0: 1, 1: 1})}
    assert agreement["a"].with_majority == 3 / 4 and agreement["b"].with_majority == 1.0
    assert agreement["c"].with_majority == 3 / 4 and agreement["c"].votes == 4
    assert agreement["a"].with_user == 0.5 and agreement["a"].user_overlap == 2


def test_instructions_carry_the_description_notes_and_examples_escaped():
    concept = Concept("gourmet tuna", ("seared tuna",), ("canned tuna",), "tuna dishes <fancy> restaurants serve")
    html = crowd_instructions(
        concept,
        notes=["sear marks matter"],
        positive_examples=["http://x/1.jpg"],
        negative_examples=['http://x/2.jpg"onerror="alert(1)'],
    )
    assert "gourmet tuna" in html and "&lt;fancy&gt;" in html and "sear marks matter" in html
    assert "canned tuna" in html and 'src="http://x/1.jpg"' in html and 'onerror="alert' not in html
