"""The default broker (a folder in the workspace) under concurrent producers and consumers: every
message arrives whole and is handled once, and no worker dies of a half-written message."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from queue import Empty

import pytest

from agile_cli.services import stop_pid, worker_command
from sync.celery_app import FolderChannel, make_celery
from sync.settings import Settings
from tests.sync.test_side_effects import REPO, clean_env

SENDERS, PER_SENDER = 4, 500
SEND = """
import sys
from sync.celery_app import make_celery
from sync.settings import Settings
from pathlib import Path
app = make_celery(Settings(workspace=Path(sys.argv[1])))
for n in range(int(sys.argv[2])):
    app.send_task("agile.sync_project", args=(990000 + n,))
"""


def test_a_message_is_never_visible_half_written_and_is_claimed_once(tmp_path):
    """The channel writes a message under a name no consumer reads, then renames it into the queue;
    two consumers of one queue never get the same message."""
    app = make_celery(Settings(workspace=tmp_path))
    with app.connection_for_write() as conn:
        producer, consumer = conn.default_channel, conn.channel()
        assert isinstance(producer, FolderChannel)
        for n in range(20):
            producer._put("q", {"n": n})
        queue = tmp_path / "broker" / "queue"
        assert len(list(queue.glob("*.q.msg"))) == 20 and not list((tmp_path / "broker" / "processed").iterdir())
        got = [producer._get("q")["n"] if n % 2 else consumer._get("q")["n"] for n in range(20)]
        assert sorted(got) == list(range(20))
        (queue / "1_bad.q.msg").write_bytes(b"")  # a corrupt file (from an older kombu) is dropped, not fatal
        with pytest.raises(Empty):
            producer._get("q")
        consumer.close()


@pytest.mark.slow
def test_three_producers_and_a_worker_with_beat_on_the_folder_broker(tmp_path):
    ws = tmp_path / "ws"
    env = clean_env(AGILE_WORKSPACE=str(ws), AGILE_SYNC_SECONDS="1")
    log = tmp_path / "worker.log"
    with open(log, "ab") as out:
        worker = subprocess.Popen(
            worker_command(beat=True),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=tmp_path,
            start_new_session=True,
        )
    try:
        senders = [
            subprocess.Popen([sys.executable, "-c", SEND, str(ws), str(PER_SENDER)], env=env, cwd=REPO)
            for _ in range(SENDERS)
        ]
        for s in senders:
            assert s.wait(timeout=300) == 0
        queue = ws / "broker" / "queue"
        deadline = time.monotonic() + 240
        while list(queue.glob("*.msg")) and time.monotonic() < deadline:
            assert worker.poll() is None, "the worker died: " + log.read_text()[-3000:]
            time.sleep(0.5)
        assert worker.poll() is None, "the worker died: " + log.read_text()[-3000:]
        assert not list(queue.glob("*.msg")), "the worker did not drain the queue in time"
        text = log.read_text()
        handled = len(set(re.findall(r"Task agile\.sync_project\[([0-9a-f-]+)\] received", text)))
        received = len(re.findall(r"Task agile\.sync_project\[[0-9a-f-]+\] received", text))
        assert received == handled, f"{received - handled} messages were delivered twice"
        assert handled == SENDERS * PER_SENDER, f"{handled} of {SENDERS * PER_SENDER} messages were handled (once each)"
        assert "Unrecoverable error" not in text and "JSONDecodeError" not in text
        assert "agile.sync_all" in text  # the beat kept running alongside
    finally:
        stop_pid(worker.pid)


def test_results_are_written_whole_and_a_killed_tasks_message_returns_within_minutes(tmp_path):
    app = make_celery(Settings(workspace=tmp_path))
    backend = app.backend
    backend.set(b"celery-task-meta-x", b'{"status": "SUCCESS"}')
    assert backend.get(b"celery-task-meta-x") == b'{"status": "SUCCESS"}'
    assert sorted(p.name for p in (tmp_path / "results").iterdir() if not p.name.startswith(".fs-backend")) == [
        "celery-task-meta-x"
    ]  # no partial file left behind
    redis_app = make_celery(Settings(workspace=tmp_path, broker_url="redis://127.0.0.1:1/0"))
    assert redis_app.conf.broker_transport_options["visibility_timeout"] <= 600
