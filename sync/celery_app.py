"""The Celery application of the sync worker.

Embedded default: a broker that is a folder in the workspace (kombu's filesystem transport), so
nothing needs installing and the ML backend and the worker on this machine share it. Set
``CELERY_BROKER_URL=redis://host:6379/0`` and the same code runs with workers anywhere.

A beat schedule syncs every published concept every ``AGILE_SYNC_SECONDS`` (default 15): Label
Studio sends webhooks once, with a 1 s timeout and no retry, so some are lost.

Importing this module creates no file or folder: the broker's folders (its queue, processed and
``control`` folders, all under ``<workspace>/broker``) are made when a connection is made
(:class:`FolderTransport`), the results folder when the result backend is first used
(:class:`FolderResultBackend`), and the beat's schedule folder when the beat starts
(:class:`WorkspaceScheduler`). Left to kombu, the ``control`` folder would land in whatever
directory the worker was started from.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic
from typing import Any

from celery import Celery
from celery.backends.filesystem import FilesystemBackend
from celery.beat import PersistentScheduler
from celery.signals import worker_process_init
from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

from sync.process import configure_process
from sync.settings import Settings

log = logging.getLogger(__name__)

VISIBILITY_TIMEOUT_S = 600


def broker_options(settings: Settings) -> tuple[str, dict]:
    """``(broker URL, transport options)``: the configured broker, else a folder in the workspace
    (named here, made by :class:`FolderTransport` when a connection is made)."""
    if settings.broker_url:
        # a task unacknowledged this long (its worker was killed) is delivered again: kombu's default
        # of an hour would hold a killed round's work that long; our tasks take seconds to minutes
        return settings.broker_url, {"visibility_timeout": VISIBILITY_TIMEOUT_S}
    folder = (settings.workspace / "broker").resolve()
    return "filesystem://", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "control_folder": str(folder / "control"),  # kombu's default is ./control, wherever the worker starts
        "store_processed": False,
        "polling_interval": 0.1,
    }


class FolderChannel(filesystem.Channel):
    """kombu's filesystem channel with messages that appear whole and are claimed once.

    kombu creates a message file, then locks and writes it, while a consumer moves and reads it
    without a lock: a worker could read an empty file and die of a ``JSONDecodeError`` (reproduced
    with three processes sending to one worker), and without ``store_processed`` the claim moves
    the file to the system's temp folder, which is a copy, not an atomic rename, when it is on
    another file system. Here a message is written under a name no consumer looks at and renamed
    into the queue, and a consumer claims it by renaming it into the processed folder beside the
    queue (same file system: exactly one consumer wins). The rest is kombu's.
    """

    # kombu's filesystem Channel names the parameter `payload`, its AbstractChannel `message`: no
    # signature matches both, so the override is ignored for mypy; kombu passes it positionally
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> None:  # type: ignore[override]
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        partial = os.path.join(self.processed_folder, f"incoming-{name}")
        try:
            with open(partial, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(partial, os.path.join(self.data_folder_out, name))
        except OSError as exc:
            raise ChannelError(f"cannot add message {name!r} to the broker folder {self.data_folder_out}") from exc

    # `timeout` as in kombu's AbstractChannel (kombu's filesystem Channel leaves it out; neither uses it)
    def _get(self, queue: Any, timeout: Any = None) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(self.processed_folder, f"claimed-{os.getpid()}-{name}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except OSError:  # another consumer claimed it first
                continue
            try:
                with open(claimed, "rb") as fh:
                    payload = fh.read()
            finally:
                if not self.store_processed:
                    os.remove(claimed)
            try:
                return loads(bytes_to_str(payload))
            except ValueError:
                log.error("dropped an unreadable broker message %s (%d bytes)", name, len(payload))
        raise Empty()


class FolderTransport(filesystem.Transport):
    """kombu's filesystem transport that makes its folders when a connection is made (kombu
    expects them to exist, and makes ``control`` only without its parents), with
    :class:`FolderChannel`'s whole messages."""

    Channel = FolderChannel
    FOLDERS = ("data_folder_in", "data_folder_out", "processed_folder", "control_folder")

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        options = client.transport_options or {}
        for key in self.FOLDERS:
            if options.get(key):
                Path(options[key]).mkdir(parents=True, exist_ok=True)


class FolderResultBackend(FilesystemBackend):
    """Celery's ``file://`` result backend that makes its folder when first used, not at import,
    and writes each result whole (a temp file renamed into place): Celery's own writes in place, so
    ``chord_unlock`` polling a shard's result could read it half-written."""

    def set(self, key: bytes, value: bytes | str) -> None:
        target = self._filename(key)
        partial = target + b".partial-" + uuid.uuid4().hex.encode()
        with self.open(partial, "wb") as fh:
            fh.write(value if isinstance(value, bytes) else str_to_bytes(value))
        os.replace(partial, target)

    def __init__(self, url: str | None = None, *args: Any, **kwargs: Any) -> None:
        Path(self._find_path(url)).mkdir(parents=True, exist_ok=True)
        super().__init__(url, *args, **kwargs)


class WorkspaceScheduler(PersistentScheduler):
    """The beat's persistent scheduler; makes the folder of its schedule file when the beat starts."""

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()


def result_backend(settings: Settings) -> str:
    """Where shard tasks leave their results: the Redis broker itself, else a folder in the workspace."""
    if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    folder = (settings.workspace / "results").resolve()
    return f"{FolderResultBackend.__module__}:{FolderResultBackend.__name__}+file://{folder}"  # made on first use


class AgileCelery(Celery):
    """The Celery app with the settings it was made from (its tasks build their sync from them)."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__("agile", **kwargs)
        self.settings = settings


def make_celery(settings: Settings) -> AgileCelery:
    """The app of ``settings``: their broker (a workspace folder by default), results and beat period."""
    broker, options = broker_options(settings)
    app = AgileCelery(settings, broker=broker, backend=result_backend(settings), include=["sync.tasks"])
    period = settings.sync_seconds
    app.conf.update(
        result_expires=3600,
        broker_transport_options=options,
        broker_transport=f"{__name__}:{FolderTransport.__name__}" if broker.startswith("filesystem:") else None,
        beat_scheduler=f"{__name__}:{WorkspaceScheduler.__name__}",
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
        beat_schedule={
            "sync-all-concepts": {
                "task": "agile.sync_all",
                "schedule": period,
                # a run still queued when the next is due is dropped, not piled up
                "options": {"expires": period},
            }
        },
        beat_schedule_filename=str((settings.workspace / "celerybeat-schedule").resolve()),
    )
    return app


@worker_process_init.connect
def _one_thread_per_child(**_: Any) -> None:
    """A prefork child is one unit of the pool's parallelism: it computes with one thread
    (``AGILE_TORCH_THREADS`` to change). Left at torch's default (all cores) every child spins up
    a thread per core and N children fight over the same cores: 4-7x slower here."""
    from billiard.process import current_process

    settings = worker_app().settings
    configure_process(settings)
    if current_process().name == "MainProcess":  # the solo pool: one process, all cores
        return
    import torch

    torch.set_num_threads(settings.torch_threads or 1)


_worker_app: list[AgileCelery] = []


def worker_app() -> AgileCelery:
    """The worker's composition root (``celery -A sync.celery_app worker``): the app of the settings
    read once from the environment, made on first use (importing this module reads nothing)."""
    if not _worker_app:
        settings = Settings.from_env()
        configure_process(settings)
        _worker_app.append(make_celery(settings))
    return _worker_app[0]


_apps: dict[Settings, AgileCelery] = {}


def app_for(settings: Settings) -> AgileCelery:
    """The app that sends work through the broker of ``settings``: the worker's own when these are its
    settings (a task launching more tasks), else one made once per settings (a CLI command's, whose
    --workspace may differ from the environment's)."""
    if _worker_app and _worker_app[0].settings == settings:
        return _worker_app[0]
    if settings not in _apps:
        _apps[settings] = make_celery(settings)
    return _apps[settings]


def __getattr__(name: str) -> Any:
    """``sync.celery_app.app`` is :func:`worker_app` (what ``celery -A`` and the tasks' decorators use)."""
    if name == "app":
        return worker_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
