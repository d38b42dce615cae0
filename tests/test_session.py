import os
import signal
import subprocess
import sys
import textwrap

import pytest

from agile_modeling.concepts import Concept
from agile_modeling.errors import SessionError
from agile_modeling.session import SessionStore


@pytest.fixture
def session(tmp_path):
    return SessionStore(tmp_path / "s.sqlite").create(
        Concept("gourmet tuna", ("seared tuna",), ("canned tuna",), "fine fish")
    )


def test_concept_round_trips(session, tmp_path):
    again = SessionStore(tmp_path / "s.sqlite").open("Gourmet Tuna")
    assert again.concept == session.concept
    with pytest.raises(SessionError, match="exists already"):
        again.store.create(Concept("gourmet tuna"))
    with pytest.raises(SessionError, match="known: gourmet tuna"):
        again.store.open("healthy dish")


def test_rounds_are_recorded_once_and_in_order(session):
    session.start_round(0, "seed", [5, 3, 9])
    session.start_round(0, "seed", [1, 2, 3])  # a repeated call changes nothing
    assert session.batch(0) == [5, 3, 9] and session.current_round() == 0
    with pytest.raises(SessionError, match="next round"):
        session.start_round(2, "margin", [7])


def test_labels_keep_who_when_which_round_and_the_latest_wins(session):
    session.start_round(0, "seed", [5, 3, 9])
    assert session.record_label(5, 1, rater="ana", note="seared, gourmet")
    session.record_label(3, 0)
    session.record_label(5, 0, rater="ana")  # changed her mind
    assert session.labels() == {5: 0, 3: 0}
    assert session.pending() == [9]
    first = session.label_history()[0]
    assert (first.image_id, first.value, first.rater, first.source, first.round, first.note) == (
        5,
        1,
        "ana",
        "user",
        0,
        "seared, gourmet",
    )
    assert first.created > 0
    with pytest.raises(ValueError):
        session.record_label(9, 2)


def test_a_repeated_delivery_is_stored_once(session):
    session.start_round(0, "seed", [1])
    assert session.record_label(1, 1, external_id="annotation-17")
    assert not session.record_label(1, 1, external_id="annotation-17")
    assert len(session.label_history()) == 1


def test_models_are_recorded_against_their_round(session):
    session.start_round(0, "seed", [1, 2])
    session.record_model("gourmet-tuna-v1", 0, 2, {"auc_pr": 0.5})
    assert session.models()[0]["metrics"] == {"auc_pr": 0.5}
    assert session.rounds()[0].model_version == "gourmet-tuna-v1"


def test_a_killed_process_loses_no_recorded_label(tmp_path):
    db = tmp_path / "s.sqlite"
    store = SessionStore(db)
    store.create(Concept("dog")).start_round(0, "seed", list(range(100)))
    child = textwrap.dedent(f"""
        import os, signal, sys
        from agile_modeling.session import SessionStore
        s = SessionStore({str(db)!r}).open("dog")
        for i in range(60):
            s.record_label(i, i % 2)
            print(i, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)  # dies mid-round, no clean shutdown
    """)
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, cwd=os.getcwd())
    assert proc.returncode == -signal.SIGKILL
    assert proc.stdout.split()[-1] == "59"
    resumed = SessionStore(db).open("dog")
    assert resumed.labels() == {i: i % 2 for i in range(60)}
    assert resumed.pending() == list(range(60, 100))


def test_a_withdrawn_rating_leaves_the_labels_but_stays_in_the_history(tmp_path):
    from agile_modeling.concepts import Concept
    from agile_modeling.session import WITHDRAWN, SessionStore

    session = SessionStore(tmp_path / "s.sqlite").create(Concept("x"))
    session.start_round(0, "seed", [1, 2])
    session.record_label(1, 1, rater="label-studio-user:3", external_id="a")
    session.record_label(2, 0)
    assert session.withdraw_label(1, rater="label-studio-user:3", external_id="w1")
    assert not session.withdraw_label(1, rater="label-studio-user:3", external_id="w2")  # nothing left to withdraw
    assert session.labels() == {2: 0} and session.pending() == [1]
    assert [label.value for label in session.label_history()] == [1, 0, WITHDRAWN]
    session.record_label(1, 0, external_id="b")  # rated again later
    assert session.labels() == {1: 0, 2: 0}


def test_lead_time_is_kept_and_an_old_sessions_file_is_migrated(tmp_path):
    import sqlite3

    from agile_modeling.concepts import Concept
    from agile_modeling.session import SessionStore

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)  # the labels table as the first release wrote it, without lead_time
    old.execute(
        "CREATE TABLE labels (id INTEGER PRIMARY KEY, concept TEXT NOT NULL, image_id INTEGER NOT NULL, "
        "value INTEGER NOT NULL, rater TEXT NOT NULL, source TEXT NOT NULL, round INTEGER, created REAL NOT NULL, "
        "note TEXT, external_id TEXT, UNIQUE (concept, source, external_id))"
    )
    old.commit()
    old.close()
    session = SessionStore(path).create(Concept("x"))
    session.record_label(3, 1, lead_time=4.5)
    session.record_label(4, 0)
    assert [label.lead_time for label in session.label_history()] == [4.5, None]
