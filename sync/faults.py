"""Fault injection for reliability tests: ``AGILE_FAULT_POINT=<name>[:<n>]`` makes the process kill
itself (SIGKILL, no cleanup, like a power cut or the OOM killer) the ``n``-th time (default the
first) it passes the named point. Unset in normal use; the check is one dictionary lookup.

Points: ``training`` (after an epoch of a retraining), ``push`` (after a chunk of a batch was
imported into Label Studio), ``after-train`` (model saved, next batch not yet selected).
"""

from __future__ import annotations

import os
import signal

_passes: dict[str, int] = {}


def fault_point(name: str) -> None:
    spec = os.environ.get("AGILE_FAULT_POINT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _passes[name] = _passes.get(name, 0) + 1
    if _passes[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)
