"""The Celery application of the sync worker.

Embedded default: a broker that is a folder in the workspace (kombu's filesystem transport), so
nothing needs installing and the ML backend and the worker on this machine share it. Set
``CELERY_BROKER_URL=redis://host:6379/0`` and the same code runs with workers anywhere.

A beat schedule syncs every published concept every ``AGILE_SYNC_SECONDS`` (default 15): Label
Studio sends webhooks once, with a 1 s timeout and no retry, so some are lost.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

from sync.settings import Settings

SYNC_SECONDS = float(os.environ.get("AGILE_SYNC_SECONDS", "15"))


def broker_options(settings: Settings) -> tuple[str, dict]:
    """``(broker URL, transport options)``: the configured broker, else a folder in the workspace."""
    if settings.broker_url:
        return settings.broker_url, {}
    folder = (settings.workspace / "broker").resolve()
    for sub in ("queue", "processed"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    return "filesystem://", {
        "data_folder_in": str(folder / "queue"),
        "data_folder_out": str(folder / "queue"),
        "processed_folder": str(folder / "processed"),
        "store_processed": False,
        "polling_interval": 0.1,
    }


def result_backend(settings: Settings) -> str:
    """Where shard tasks leave their results: the Redis broker itself, else a folder in the workspace."""
    if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    folder = (settings.workspace / "results").resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"file://{folder}"


def make_celery(settings: Settings | None = None) -> Celery:
    settings = settings or Settings.from_env()
    broker, options = broker_options(settings)
    app = Celery("agile", broker=broker, backend=result_backend(settings), include=["sync.tasks"])
    app.conf.update(
        result_expires=3600,
        broker_transport_options=options,
        broker_connection_retry_on_startup=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_prefetch_multiplier=1,
        beat_schedule={"sync-all-concepts": {"task": "agile.sync_all", "schedule": SYNC_SECONDS,
                                            # a run still queued when the next is due is dropped, not piled up
                                            "options": {"expires": SYNC_SECONDS}}},
        beat_schedule_filename=str((settings.workspace / "celerybeat-schedule").resolve()),
    )
    return app


@worker_process_init.connect
def _one_thread_per_child(**_) -> None:
    """A prefork child is one unit of the pool's parallelism: it computes with one thread
    (``AGILE_TORCH_THREADS`` to change). Left at torch's default (all cores) every child spins up
    a thread per core and N children fight over the same cores: 4-7x slower here."""
    from billiard.process import current_process

    if current_process().name == "MainProcess":  # the solo pool: one process, all cores
        return
    import torch

    torch.set_num_threads(int(os.environ.get("AGILE_TORCH_THREADS", "1")))


app = make_celery()
