"""The one SQLite connection policy (agile_modeling.database), through the wrappers that use it:
threads and processes writing at once, a lock held too long turning into a named error."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

import agile_modeling.database as database
from agile_modeling.concepts import Concept
from agile_modeling.database import Database, DatabaseBusyError
from agile_modeling.session import SessionStore
from sync.state import RATING, ProjectLink, RoundSettings, SyncState

REPO = Path(__file__).resolve().parents[1]


def run_threads(n: int, target) -> list[BaseException]:
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def body(t: int) -> None:
        start.wait()
        try:
            target(t)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(t,)) for t in range(n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    return errors


def test_threads_sharing_one_session_store_each_get_their_own_transactions(tmp_path):
    """gunicorn's threads share one SessionStore: one connection shared by them mixed their
    BEGIN IMMEDIATE transactions ("cannot start a transaction within a transaction")."""
    store = SessionStore(tmp_path / "sessions.sqlite")
    session = store.create(Concept("dog"))
    session.start_round(0, "seed", list(range(10)))

    def write(t: int) -> None:
        for i in range(40):
            session.record_model(f"m-{t}-{i}", 0, i)  # a BEGIN IMMEDIATE ... COMMIT transaction
            session.record_label(t * 1000 + i, i % 2, rater=f"r{t}")

    errors = run_threads(8, write)
    assert errors == []
    assert len(session.models()) == 8 * 40 and len(session.labels()) == 8 * 40
    store.close()


def test_threads_sharing_one_sync_state_all_write(tmp_path):
    state = SyncState(tmp_path / "label_studio.sqlite")

    def write(t: int) -> None:
        for i in range(30):
            state.link(ProjectLink(f"c{t}-{i}", RATING, t * 100 + i, RoundSettings("rating", 4, 2, "margin", 0)))
            state.mark_synced(t * 100 + i, time.time())

    assert run_threads(6, write) == []
    assert len(state.all()) == 6 * 30


WRITER = textwrap.dedent("""
    import sys
    from agile_modeling.session import SessionStore
    path, worker, go = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    import os, time
    session = SessionStore(path).open("dog")
    while not os.path.exists(go):
        time.sleep(0.01)
    for i in range(100):
        session.record_label(worker * 1000 + i, i % 2, rater=f"w{worker}")
        session.record_model(f"w{worker}-m{i}", 0, i)
    print("DONE", flush=True)
""")


def test_processes_writing_one_sessions_file_at_once_lose_nothing(tmp_path):
    path = tmp_path / "sessions.sqlite"
    SessionStore(path).create(Concept("dog")).start_round(0, "seed", [0])
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), str(w), str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        for w in range(4)
    ]
    time.sleep(1.0)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-2000:] for _, err in outs]
    session = SessionStore(path).open("dog")
    assert len(session.labels()) == 400 and len(session.models()) == 400


HOLDER = textwrap.dedent("""
    import sqlite3, sys, time
    db = sqlite3.connect(sys.argv[1], isolation_level=None)
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO labels (concept, image_id, value, rater, source, created) VALUES ('dog', 999, 1, 'x', 'x', 0)")
    print("LOCKED", flush=True)
    time.sleep(float(sys.argv[2]))
    db.execute("COMMIT")
""")


def hold_write_lock(path: Path, seconds: float) -> subprocess.Popen:
    """Another process holding the file's write lock for ``seconds`` (a long transaction)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), str(seconds)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "LOCKED"
    return proc


def test_a_lock_held_longer_than_the_policy_waits_is_a_named_error_not_a_crash(tmp_path, monkeypatch):
    monkeypatch.setattr(database, "BUSY_TIMEOUT_S", 0.2)
    monkeypatch.setattr(database, "LOCK_ATTEMPTS", 2)
    path = tmp_path / "sessions.sqlite"
    session = SessionStore(path).create(Concept("dog"))
    holder = hold_write_lock(path, 30)
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseBusyError, match="sessions.sqlite"):
            session.record_label(1, 1)
        with pytest.raises(DatabaseBusyError):
            session.record_model("m", 0, 1)  # BEGIN IMMEDIATE
        assert time.monotonic() - started < 10  # bounded: two attempts of 0.2 s each, plus backoff
    finally:
        holder.kill()
        holder.wait()
    session.record_label(1, 1)  # the lock is gone: the same call works
    assert session.labels() == {1: 1}


def test_a_lock_released_within_the_retries_is_waited_for(tmp_path, monkeypatch):
    monkeypatch.setattr(database, "BUSY_TIMEOUT_S", 0.3)
    monkeypatch.setattr(database, "LOCK_ATTEMPTS", 8)
    path = tmp_path / "sessions.sqlite"
    session = SessionStore(path).create(Concept("dog"))
    holder = hold_write_lock(path, 1.0)
    try:
        session.record_label(1, 0)  # outlasts one busy timeout, not the retries
    finally:
        holder.wait(30)
    assert session.labels()[1] == 0


def test_a_transaction_rolls_back_on_error_and_nested_ones_join_the_outer(tmp_path):
    db = Database(tmp_path / "t.sqlite", "CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    with pytest.raises(ZeroDivisionError):
        with db.transaction():
            db.execute("INSERT INTO t VALUES (1)")
            raise ZeroDivisionError("the block fails")
    with db.transaction():
        db.execute("INSERT INTO t VALUES (2)")
        with db.transaction():
            db.execute("INSERT INTO t VALUES (3)")
    assert [r[0] for r in db.execute("SELECT x FROM t ORDER BY x")] == [2, 3]
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        db.execute("SELECT 1")


def test_an_in_memory_database_is_one_database_for_all_threads():
    db = Database(None, "CREATE TABLE IF NOT EXISTS t (x INTEGER)")
    assert run_threads(4, lambda t: db.execute("INSERT INTO t VALUES (?)", (t,))) == []
    assert sorted(r[0] for r in db.execute("SELECT x FROM t")) == [0, 1, 2, 3]
    db.close()
