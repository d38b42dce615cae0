"""Versioned model artifacts: weights + parameters + metrics, each version written atomically.

Layout::

    <root>/v0001/weights.pt   torch state of the classifier (``ConceptClassifier.state``)
    <root>/v0001/model.json   name, number, created, sha256 of weights, classifier kind and params,
                              recipe, metrics, extra info (no ``kind``: an MLP, as saved before kinds)

A version is assembled in a hidden temporary folder (``.tmp-<host>-<pid>-<ns>``), fsynced, then
renamed into place: a crash leaves either no new version or a complete one, and earlier versions
are never touched.

A crashed save leaves its temporary folder behind. Opening a registry removes such orphans, but
only when it can prove no save is in progress: every save holds a shared ``flock`` on
``<root>/.writers.lock`` from creating its folder to renaming it, and the cleaner takes that lock
exclusively without waiting. If it cannot, some writer is alive and nothing is removed (the ML
backend opens a registry on every ``/setup``, while a worker may be saving in another process).
The kernel drops a dead process's lock, so a crashed writer never keeps its orphan forever.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import socket
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from agile_modeling.classifier.base import ConceptClassifier
from agile_modeling.classifier.kinds import classifier_class
from agile_modeling.errors import SessionError
from agile_modeling.file_lock import file_lock
from agile_modeling.store.embedding_store import fsync_dir

_VERSION_DIR = re.compile(r"^v(\d{4,})$")
_WRITERS_LOCK = ".writers.lock"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelVersion:
    """One saved model: ``name`` is stable (``<prefix>-v<number>``) and names a real artifact."""

    name: str
    number: int
    path: Path
    info: dict[str, Any]  # model.json as decoded

    @property
    def metrics(self) -> dict[str, Any]:
        metrics: dict[str, Any] = self.info.get("metrics", {})
        return metrics

    @property
    def kind(self) -> str:
        """The classifier's kind (``agile_modeling.classifier.kinds.CLASSIFIERS``)."""
        return str(self.info.get("kind", "mlp"))

    def load(self) -> ConceptClassifier:
        state = torch.load(self.path / "weights.pt", map_location="cpu", weights_only=True)
        return classifier_class(self.kind).from_state(state)


class ModelRegistry:
    """The model versions of one concept."""

    def __init__(self, root: str | Path, prefix: str) -> None:
        self.root = Path(root)
        self.prefix = prefix
        self.root.mkdir(parents=True, exist_ok=True)
        self.remove_orphans()

    def _writers_lock(self, exclusive: bool) -> AbstractContextManager[bool]:
        """Shared (a save; waits) or exclusive (the cleaner; never waits) lock on the registry's
        lock file. Yields whether it is held."""
        return file_lock(self.root / _WRITERS_LOCK, shared=not exclusive, blocking=not exclusive)

    def remove_orphans(self) -> list[Path]:
        """Remove the temporary folders of crashed saves, if no save is running now (see the module
        docstring); returns what was removed."""
        leftovers = list(self.root.glob(".tmp-*"))
        if not leftovers:
            return []
        with self._writers_lock(exclusive=True) as alone:
            if not alone:  # a save is in progress in some process: its folder is not an orphan
                return []
            leftovers = list(self.root.glob(".tmp-*"))
            for leftover in leftovers:
                log.warning("removing %s: left by an interrupted model save", leftover)
                shutil.rmtree(leftover, ignore_errors=True)
        return leftovers

    def _numbers(self) -> list[int]:
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _VERSION_DIR.match(p.name)))

    def save(self, classifier: ConceptClassifier, metrics: dict[str, Any] | None = None, **info: Any) -> ModelVersion:
        """Write a new version and return it. Extra keyword ``info`` is stored in ``model.json``."""
        with self._writers_lock(exclusive=False):
            return self._save(classifier, metrics, info)

    def _save(
        self, classifier: ConceptClassifier, metrics: dict[str, Any] | None, info: dict[str, Any]
    ) -> ModelVersion:
        tmp = self.root / f".tmp-{socket.gethostname()}-{os.getpid()}-{time.monotonic_ns()}"
        tmp.mkdir()
        weights = tmp / "weights.pt"
        torch.save(classifier.state(), weights)
        digest = hashlib.sha256(weights.read_bytes()).hexdigest()
        while True:
            number = (self._numbers() or [0])[-1] + 1
            record = {
                "name": f"{self.prefix}-v{number}",
                "number": number,
                "created": time.time(),
                "weights_sha256": digest,
                "kind": classifier.kind,
                "recipe": classifier.params(),
                "metrics": metrics or {},
                **info,
            }
            (tmp / "model.json").write_text(json.dumps(record, indent=2, default=float))
            for f in tmp.iterdir():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
            try:
                os.rename(tmp, self.root / f"v{number:04d}")
                break
            except OSError:  # another process took this number first: take the next
                if not (self.root / f"v{number:04d}").exists():
                    raise
        fsync_dir(self.root)
        return self.get(record["name"])

    def versions(self) -> list[ModelVersion]:
        return [self._read(n) for n in self._numbers()]

    def latest(self) -> ModelVersion | None:
        numbers = self._numbers()
        return self._read(numbers[-1]) if numbers else None

    def get(self, name: str) -> ModelVersion:
        match = re.fullmatch(re.escape(self.prefix) + r"-v(\d+)", name)
        if not match or not (self.root / f"v{int(match.group(1)):04d}").is_dir():
            raise SessionError(f"no model version {name!r} in {self.root}")
        return self._read(int(match.group(1)))

    def _read(self, number: int) -> ModelVersion:
        path = self.root / f"v{number:04d}"
        info = json.loads((path / "model.json").read_text())
        return ModelVersion(name=info["name"], number=number, path=path, info=info)
