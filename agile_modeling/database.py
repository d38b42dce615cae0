"""The one connection policy of every SQLite file agile-modeling keeps (pool table, sessions,
Label Studio links, provider cache).

Several processes (CLI, ML backend under gunicorn threads, Celery workers) and several threads
of each use the same files at once, so every wrapper opens them the same way:

- **one connection per thread** (and per process: a connection inherited through ``fork`` is
  never used by the child). A sqlite3 connection shared by threads mixes their transactions:
  thread B's statement lands inside thread A's ``BEGIN IMMEDIATE``, or B's ``BEGIN`` fails with
  "cannot start a transaction within a transaction";
- **WAL** journal and ``synchronous=FULL``: readers never block the writer, a commit is durable;
- **one busy timeout** (:data:`BUSY_TIMEOUT_S`): SQLite waits that long for another writer;
- a lock that outlasts it is **retried** a bounded number of times (:data:`LOCK_ATTEMPTS`, with
  backoff), then raised as :class:`DatabaseBusyError`, which names the file and what to do,
  instead of a bare ``sqlite3.OperationalError: database is locked`` crashing the caller.

Autocommit connections: every statement outside :meth:`Database.transaction` is its own
committed transaction; a transaction starts with ``BEGIN IMMEDIATE`` (the write lock up front,
so it never has to upgrade a read lock, the case where SQLite gives up at once).
"""

from __future__ import annotations

import itertools
import os
import random
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeAlias, TypeVar

from agile_modeling.errors import AgileError

#: how long SQLite itself waits for another connection's write lock, per attempt
BUSY_TIMEOUT_S = 10.0
#: attempts of a statement (or ``BEGIN IMMEDIATE``) whose lock wait ran out, before giving up
LOCK_ATTEMPTS = 3

_T = TypeVar("_T")
#: what ``execute`` binds to a statement's placeholders: a sequence (``?``) or a mapping (``:name``)
Parameters: TypeAlias = Sequence[Any] | Mapping[str, Any]
_memory_names = itertools.count()


class DatabaseBusyError(AgileError):
    """Another connection held a SQLite file's write lock for longer than the policy waits."""


def is_lock_error(exc: BaseException) -> bool:
    """Whether ``exc`` is SQLite saying the file (or a table) is locked by another connection."""
    if not isinstance(exc, sqlite3.OperationalError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
    message = str(exc).lower()
    return "locked" in message or "busy" in message


class Database:
    """A SQLite file opened with the policy above; use it like a connection.

    ``execute``/``executemany``/``executescript`` run on the calling thread's own connection
    (opened on first use) and return what sqlite3 returns; :meth:`transaction` groups
    statements. ``schema`` (a script of ``CREATE ... IF NOT EXISTS``) is applied once, on open.
    ``path=None`` is a private in-memory database shared by this object's threads.
    """

    def __init__(
        self,
        path: str | Path | None,
        schema: str = "",
        *,
        busy_timeout_s: float | None = None,
        attempts: int | None = None,
    ) -> None:
        self.path = Path(path) if path is not None else None
        self.busy_timeout_s = float(BUSY_TIMEOUT_S if busy_timeout_s is None else busy_timeout_s)
        self.attempts = max(1, int(LOCK_ATTEMPTS if attempts is None else attempts))
        if self.path is None:  # a shared-cache table lock fails at once, without the busy timeout: retry more
            self.attempts = max(self.attempts, 30)
        if self.path is None:  # shared-cache memory database: every thread's connection sees the same tables
            self._target, self._uri = (
                f"file:agile-memory-{os.getpid()}-{next(_memory_names)}?mode=memory&cache=shared",
                True,
            )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._target, self._uri = str(self.path), False
        self._guard = threading.Lock()
        self._local = threading.local()
        self._pid = os.getpid()
        self._open: dict[int, tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = {}
        self._closed = False
        self._keeper = self._new_connection() if self.path is None else None  # keeps the memory database alive
        if schema:
            self.executescript(schema)

    def __repr__(self) -> str:
        return f"Database({str(self.path) if self.path else ':memory:'!r})"

    # --- connections -------------------------------------------------------------------------
    def _new_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self._target, uri=self._uri, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        try:
            if self.path is not None:
                self._with_retries(lambda: conn.execute("PRAGMA journal_mode=WAL"))
            conn.execute("PRAGMA synchronous=FULL")
        except BaseException:
            conn.close()
            raise
        return conn

    def connection(self) -> sqlite3.Connection:
        """The calling thread's connection, opened on first use (again after a ``fork``)."""
        if self._closed:
            raise sqlite3.ProgrammingError(f"{self!r} is closed")
        if os.getpid() != self._pid:  # a forked child: the parent's connections are not ours to use
            with self._guard:
                if os.getpid() != self._pid:
                    self._pid, self._open, self._local = os.getpid(), {}, threading.local()
                    if self._keeper is not None:  # an in-memory database does not cross a fork: a new one
                        self._keeper = self._new_connection()
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._new_connection()
            self._local.conn = conn
            thread = threading.current_thread()
            with self._guard:
                for ident, (ref, old) in list(self._open.items()):  # connections of threads that ended
                    if (alive := ref()) is None or not alive.is_alive():
                        old.close()
                        del self._open[ident]
                self._open[id(conn)] = (weakref.ref(thread), conn)
        return conn

    def close(self) -> None:
        """Close every thread's connection (the object cannot be used afterwards)."""
        with self._guard:
            self._closed = True
            for _, conn in self._open.values():
                conn.close()
            self._open.clear()
            if self._keeper is not None:
                self._keeper.close()
                self._keeper = None

    # --- statements ----------------------------------------------------------------------------
    def _with_retries(self, fn: Callable[[], _T]) -> _T:
        """``fn()``, again after a lock error (SQLite has already waited the busy timeout), at most
        :attr:`attempts` times; then :class:`DatabaseBusyError`. A statement that failed on a lock had
        no effect, so running it again is safe, inside a transaction too."""
        for attempt in range(1, self.attempts + 1):
            try:
                return fn()
            except sqlite3.OperationalError as exc:
                if not is_lock_error(exc):
                    raise
                if attempt == self.attempts:
                    raise DatabaseBusyError(
                        f"{self.path or 'the in-memory database'} stayed locked by another connection for "
                        f"{attempt} x {self.busy_timeout_s:g} s ({exc}); another process is holding its write lock "
                        "(a long transaction, or a stuck process): retry later, or stop that process"
                    ) from exc
                time.sleep(min(1.0, 0.05 * 2**attempt) * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def execute(self, sql: str, parameters: Parameters = ()) -> sqlite3.Cursor:
        conn = self.connection()
        return self._with_retries(lambda: conn.execute(sql, parameters))

    def executemany(self, sql: str, rows: Iterable[Parameters]) -> sqlite3.Cursor:
        conn = self.connection()
        rows = list(rows)  # a retry must see the rows again
        return self._with_retries(lambda: conn.executemany(sql, rows))

    def executescript(self, script: str) -> sqlite3.Cursor:
        conn = self.connection()
        return self._with_retries(lambda: conn.executescript(script))

    # --- transactions --------------------------------------------------------------------------
    def _depth(self) -> int:
        return getattr(self._local, "depth", 0)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on this thread's connection (``ROLLBACK`` if the block
        raises). A transaction opened inside another one of the same thread joins it."""
        conn = self.connection()
        if self._depth():
            self._local.depth += 1
            try:
                yield self
            finally:
                self._local.depth -= 1
            return
        self._with_retries(lambda: conn.execute("BEGIN IMMEDIATE"))
        self._local.depth = 1
        try:
            yield self
        except BaseException:
            self._local.depth = 0
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        self._local.depth = 0
        try:
            self._with_retries(lambda: conn.execute("COMMIT"))
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
