"""Structured definitions, edits and the append-only, replayable history."""

import sqlite3

import pytest

from agile_modeling.concepts import Concept
from agile_modeling.deliberation.definition import Definition, SubConcept, UnitConcept
from agile_modeling.deliberation.edits import Edit, apply_edits, describe_edits
from agile_modeling.deliberation.history import BatchItem, DeliberationHistory, ScopingItem
from agile_modeling.errors import DefinitionError, SessionError
from agile_modeling.session import SessionStore

HEALTHY = Definition(
    "healthy food",
    (
        UnitConcept("food", (SubConcept("salad", "fresh greens"), SubConcept("fruit")), (SubConcept("fried food"),)),
        UnitConcept("dish", (SubConcept("plated meal"),), ()),
    ),
    "and",
    ("a light drizzle of dressing is fine",),
)


def test_render_reads_like_the_papers_example():
    text = HEALTHY.render()
    assert text.startswith("Concept: healthy food\nAn image is in scope when it shows 'food' AND 'dish'.")
    assert (
        "Unit 1: food\n  In scope:\n    - salad: fresh greens\n    - fruit\n  Out of scope:\n    - fried food" in text
    )
    assert "Unit 2: dish" in text and "  Out of scope:\n    (none)" in text
    assert text.endswith("Edge cases:\n  - a light drizzle of dressing is fine")


def test_round_trip_and_validation():
    assert Definition.from_dict(HEALTHY.as_dict()) == HEALTHY
    with pytest.raises(DefinitionError, match="1 to 3 unit concepts"):
        Definition("x", tuple(UnitConcept(f"u{i}") for i in range(4)))
    with pytest.raises(DefinitionError, match="'and' or 'or'"):
        Definition("x", (UnitConcept("u"),), "xor")
    with pytest.raises(DefinitionError, match="both in and out"):
        UnitConcept("u", (SubConcept("a"),), (SubConcept("A"),))
    with pytest.raises(DefinitionError, match="malformed definition"):
        Definition.from_dict({"concept": "x", "units": [{"in_scope": []}]})
    with pytest.raises(DefinitionError, match="JSON object"):
        Definition.from_dict(["x"])


def test_edits_add_move_remove_note():
    moved = Edit("add", unit="food", side="in", name="fried food").apply(HEALTHY)
    assert moved.unit("food").side_of("fried food") == "in" and not moved.unit("food").out_of_scope
    assert Edit("add", unit="food", side="in", name="salad").apply(HEALTHY) == HEALTHY  # already there: no change
    edits = [
        Edit("add", unit="food", side="out", name="creamy salad"),
        Edit("remove", unit="food", name="fruit"),
        Edit("note", text="smoothies count"),
    ]
    after = apply_edits(HEALTHY, edits)
    assert [s.name for s in after.unit("food").in_scope] == ["salad"] and after.edge_cases[-1] == "smoothies count"
    assert describe_edits(HEALTHY, edits) == (
        "added 'creamy salad' out of scope of 'food'; removed 'fruit' from 'food'; noted edge case: smoothies count"
    )
    assert describe_edits(HEALTHY, [Edit("add", unit="food", side="in", name="fried food")]).startswith("moved")
    with pytest.raises(DefinitionError, match="no unit concept 'drink'"):
        Edit("remove", unit="drink", name="x").apply(HEALTHY)
    with pytest.raises(DefinitionError, match="unknown edit"):
        Edit("delete")


@pytest.fixture
def history(tmp_path):
    store = SessionStore(tmp_path / "sessions.sqlite")
    return DeliberationHistory(store.create(Concept("healthy food")))


def test_history_is_append_only_and_replayable(history, tmp_path):
    with pytest.raises(DefinitionError, match="one 'replace' edit"):
        history.append(HEALTHY, [Edit("note", text="x")], "first")
    v0 = history.append(HEALTHY, [Edit("replace", definition=HEALTHY.as_dict())], "scoping", author="scoping")
    edits = [Edit("add", unit="food", side="out", name="creamy salad")]
    d1 = apply_edits(HEALTHY, edits)
    with pytest.raises(DefinitionError, match="do not produce"):
        history.append(HEALTHY, edits, "wrong")
    v1 = history.append(d1, edits, "creamy salads out", reason={"round": 0, "feedback": [{"image_id": 7}]})
    assert (v0.version, v1.version, v1.parent) == (0, 1, 0)
    assert history.replay() == [HEALTHY, d1]
    assert history.version(1).reason["feedback"] == [{"image_id": 7}]
    # the database itself refuses to rewrite or delete history
    db = sqlite3.connect(tmp_path / "sessions.sqlite")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("UPDATE definitions SET change = 'x'")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        db.execute("DELETE FROM definitions")
    # reopened from disk, the same history
    again = DeliberationHistory(SessionStore(tmp_path / "sessions.sqlite").open("healthy food"))
    assert [v.definition for v in again.versions()] == [HEALTHY, d1]


def test_a_tampered_history_does_not_replay(history, tmp_path):
    history.append(HEALTHY, [Edit("replace", definition=HEALTHY.as_dict())], "scoping")
    edits = [Edit("remove", unit="food", name="fruit")]
    history.append(apply_edits(HEALTHY, edits), edits, "fruit out")
    db = history.db
    db.execute("DROP TRIGGER definitions_append_only")
    db.execute("UPDATE definitions SET edits = '[]' WHERE version = 1")
    with pytest.raises(DefinitionError, match="does not follow from its edits"):
        history.replay()


def test_scoping_and_rounds_persist(history):
    proposal = HEALTHY
    history.save_scoping(proposal, [ScopingItem(0, "food", "in", "salad", "", (1, 2), None)])
    history.save_scoping(proposal, [ScopingItem(0, "food", "out", "other", "", (3,), None)])  # kept: the first
    history.decide_scoping(0, "flip")
    assert history.scoping()[0].name == "salad" and history.scoping()[0].decision == "flip"
    assert history.proposal() == proposal
    with pytest.raises(DefinitionError):
        history.decide_scoping(0, "maybe")
    with pytest.raises(SessionError, match="no scoping candidate #5"):
        history.decide_scoping(5, "keep")
    history.append(HEALTHY, [Edit("replace", definition=HEALTHY.as_dict())], "scoping")
    r = history.start_round(
        0, 3, "dressing?", [BatchItem(11, 1, 0.8, "salad", "creamy"), BatchItem(12, 0, 0.2, "x", "y")]
    )
    assert r.round == 0 and [i.image_id for i in history.round(0).items] == [11, 12]
    assert history.shown_decisions() == {11: 1, 12: 0}
