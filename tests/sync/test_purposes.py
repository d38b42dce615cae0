"""The registry of project purposes and the per-project isolation of the periodic sync (no server:
the failures here happen before any request; tests/sync/test_beat.py drives the real worker)."""

import time

import pytest

from agile_modeling.session import EVALUATION
from sync.celery_app import make_celery
from sync.crowd import CROWD
from sync.deliberation import DELIBERATION, SCOPING
from sync.purposes import HANDLERS, CrowdHandler, FailedSync, UnknownPurposeError, handler_for, sync_all, sync_project
from sync.rounds import ConceptSync
from sync.settings import Settings
from sync.state import RATING, SOURCE, ProjectLink, RoundSettings


@pytest.fixture
def concepts(tmp_path):
    settings = Settings(label_studio_url="http://127.0.0.1:9", label_studio_api_key="unused", workspace=tmp_path)
    return ConceptSync(settings)


def test_every_purpose_has_its_own_handler_and_an_unknown_one_is_an_error():
    assert set(HANDLERS) == {RATING, CROWD, EVALUATION, SCOPING, DELIBERATION, SOURCE}
    assert len({type(h) for h in HANDLERS.values()}) == 6
    assert isinstance(handler_for(CROWD), CrowdHandler)
    with pytest.raises(UnknownPurposeError, match="'mystery'"):
        handler_for("mystery")


def test_sync_all_records_each_failure_and_goes_on(concepts):
    concepts.state.link(ProjectLink("a", "mystery", 1))
    concepts.state.link(ProjectLink("b", RATING, 2, RoundSettings("rating", 20, 10, "margin", 0)))  # no pool: fails too
    reports = sync_all(concepts)
    assert [type(r) for r in reports] == [FailedSync, FailedSync] and [r.project_id for r in reports] == [1, 2]
    assert "no sync handler for projects of purpose 'mystery'" in concepts.state.for_project(1).last_error
    assert "no embedding store" in concepts.state.for_project(2).last_error
    with pytest.raises(UnknownPurposeError):  # the webhook path goes through the same registry
        sync_project(concepts, 1)


def test_a_project_synced_within_the_period_is_skipped(concepts):
    concepts.state.link(ProjectLink("a", "mystery", 1))
    concepts.state.mark_synced(1, time.time())
    assert sync_all(concepts, skip_synced_within=60) == []
    assert concepts.state.for_project(1).last_error is None
    assert len(sync_all(concepts, skip_synced_within=0)) == 1


def test_the_beat_task_expires_after_one_period(tmp_path):
    app = make_celery(Settings(workspace=tmp_path, sync_seconds=7.0))
    entry = app.conf.beat_schedule["sync-all-concepts"]
    assert entry["options"]["expires"] == 7.0 == entry["schedule"]
