"""Which project belongs to which concept; the last sync's error."""

import pytest

from sync.state import RATING, ProjectLink, SyncState, UnknownProjectError


def test_a_concept_keeps_its_first_project_and_errors_clear_on_success(tmp_path):
    state = SyncState(tmp_path / "ls.sqlite")
    first = state.link(ProjectLink("tuna", RATING, 3, "rating", 100, 100, "margin", 0))
    again = state.link(ProjectLink("tuna", RATING, 9, "rating", 50, 50, "margin", 1))  # a racing second publish
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
