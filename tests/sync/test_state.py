"""Which project belongs to which concept; the last sync's error."""

import pytest

from sync.state import RATING, ProjectLink, RoundSettings, SyncState, UnknownProjectError


def test_a_concept_keeps_its_first_project_and_errors_clear_on_success(tmp_path):
    state = SyncState(tmp_path / "ls.sqlite")
    first = state.link(ProjectLink("tuna", RATING, 3, RoundSettings("rating", 100, 100, "margin", 0)))
    again = state.link(
        ProjectLink("tuna", RATING, 9, RoundSettings("rating", 50, 50, "margin", 1))
    )  # a racing second publish
    assert again == first and state.for_project(3).concept == "tuna"
    with pytest.raises(UnknownProjectError, match="project 9 belongs to no concept"):
        state.for_project(9)
    state.record_error(3, "no positive label yet: rate at least one image as positive")
    assert SyncState(tmp_path / "ls.sqlite").for_concept("tuna").last_error.startswith("no positive label")
    state.mark_synced(3, 123.0)
    link = state.for_concept("tuna")
    assert link.last_error is None and link.last_sync == 123.0
    state.mark_synced(3, 100.0)  # an older sync finishing late never moves the mark back
    assert state.for_concept("tuna").last_sync == 123.0


#: the projects table as workspaces before 2026-12-03 have it: every purpose's settings in its columns
OLD_SCHEMA = """
CREATE TABLE projects (
    concept TEXT NOT NULL, purpose TEXT NOT NULL, project_id INTEGER NOT NULL UNIQUE,
    label_config TEXT NOT NULL, seed_size INTEGER NOT NULL, batch_size INTEGER NOT NULL,
    strategy TEXT NOT NULL, seed INTEGER NOT NULL, created REAL NOT NULL, last_sync REAL NOT NULL DEFAULT 0,
    last_error TEXT, PRIMARY KEY (concept, purpose));
CREATE TABLE pushed_images (
    project_id INTEGER NOT NULL, image_id INTEGER NOT NULL, round INTEGER, recorded REAL NOT NULL,
    PRIMARY KEY (project_id, image_id));
INSERT INTO projects VALUES ('tuna', 'rating', 3, 'rating-note', 50, 20, 'margin+positive', 7, 1.0, 55.0, NULL);
INSERT INTO projects VALUES ('tuna', 'crowd', 4, 'rating', 0, 3, 'majority', 0, 2.0, 0, 'Label Studio is down');
INSERT INTO projects VALUES ('tuna', 'evaluation', 5, 'rating', 0, 0, 'stratified', 0, 3.0, 0, NULL);
INSERT INTO projects VALUES ('tuna', 'scoping', 6, 'scoping', 0, 0, 'scoping', 0, 4.0, 0, NULL);
INSERT INTO pushed_images VALUES (3, 42, 0, 1.0);
"""


def test_a_workspace_from_before_per_purpose_settings_is_migrated_once(tmp_path):
    import sqlite3

    path = tmp_path / "label_studio.sqlite"
    with sqlite3.connect(path) as conn:
        conn.executescript(OLD_SCHEMA)
    state = SyncState(path)
    rating, crowd, evaluation, scoping = state.links_of("tuna")
    assert rating == ProjectLink(
        "tuna", RATING, 3, RoundSettings("rating-note", 50, 20, "margin+positive", 7), last_sync=55.0
    )
    assert (crowd.purpose, crowd.annotators, crowd.rounds, crowd.last_error) == (
        "crowd",
        3,
        None,
        "Label Studio is down",
    )
    assert (evaluation.rounds, evaluation.annotators) == (None, None) and scoping.purpose == "scoping"
    assert state.pushed_images(3) == {42}
    columns = {r[1] for r in state.db.execute("PRAGMA table_info(projects)")}
    assert "batch_size" not in columns and "label_config" not in columns
    again = SyncState(path)  # a second open (the worker beside the backend) finds it done
    assert again.links_of("tuna") == [rating, crowd, evaluation, scoping]
    new = again.link(ProjectLink("cod", "crowd", 8, annotators=5))
    assert new.annotators == 5 and again.for_project(8) == new


def test_a_link_carries_exactly_its_purpose_settings():
    with pytest.raises(ValueError, match="needs round settings"):
        ProjectLink("tuna", RATING, 3)
    with pytest.raises(ValueError, match="needs number of annotators"):
        ProjectLink("tuna", "crowd", 4)
    with pytest.raises(ValueError, match="has no round settings"):
        ProjectLink("tuna", "evaluation", 5, RoundSettings("rating", 1, 1, "margin", 0))
    with pytest.raises(ValueError, match="has no rounds"):
        _ = ProjectLink("tuna", "evaluation", 5).round_settings


def test_every_purpose_names_its_labeling_interface():
    from agile_modeling.session import EVALUATION

    assert ProjectLink("t", RATING, 1, RoundSettings("rating-note", 1, 1, "margin", 0)).label_config == "rating-note"
    assert ProjectLink("t", "crowd", 2, annotators=3).label_config == "rating"
    assert ProjectLink("t", EVALUATION, 3).label_config == "rating"
    assert ProjectLink("t", "scoping", 4).label_config == "scoping"


def test_a_project_id_linked_to_another_concept_is_a_clear_error(tmp_path):
    from sync.state import ProjectConflictError

    state = SyncState(tmp_path / "ls.sqlite")
    state.link(ProjectLink("tuna", RATING, 3, RoundSettings("rating", 100, 100, "margin", 0)))
    with pytest.raises(ProjectConflictError, match="project 3 is already linked to the rating project of 'tuna'"):
        state.link(ProjectLink("cod", RATING, 3, RoundSettings("rating", 100, 100, "margin", 0)))
