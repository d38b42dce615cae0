"""Advisory locks on files (``flock``), the one way processes sharing a workspace take turns.

The kernel drops a lock when its holder dies, so a crashed writer never leaves a lock behind; that
is what lets the store and the model registry tell a crashed write's leftovers from a live one.
(``flock`` is honoured by local file systems; see the README on network file systems.)
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | Path, *, shared: bool = False, blocking: bool = True) -> Iterator[bool]:
    """Hold a shared or exclusive lock on ``path`` (created if missing) for the ``with`` block.

    Yields whether the lock is held: always True when ``blocking`` (it waits), False when another
    process holds a conflicting lock and ``blocking`` is off.
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        try:
            fcntl.flock(fh, mode if blocking else mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
