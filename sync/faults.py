"""Fault injection for reliability tests: ``AGILE_FAULT_POINT=<name>[:<n>]`` (armed by
:func:`sync.process.configure_process` from the settings) makes the process kill itself (SIGKILL,
no cleanup, like a power cut or the OOM killer) the ``n``-th time (default the first) it passes the
named point. Unarmed in normal use; the check is one comparison.

Points: ``training`` (after an epoch of a retraining), ``push`` (after a chunk of a batch was
imported into Label Studio), ``after-train`` (model saved, next batch not yet selected),
``predictions-imported`` (a write-back chunk taken by Label Studio, not yet recorded).
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}
_armed: str | None = None


def arm(spec: str | None) -> None:
    """Kill this process at ``spec`` (``<name>[:<n>]``); None disarms."""
    global _armed
    _armed = spec or None
    _passes.clear()


def fault_point(name: str) -> None:
    if _armed is None:
        return
    target, _, count = _armed.partition(":")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
