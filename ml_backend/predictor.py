"""Predictions for Label Studio tasks from a concept's model versions.

Models and the pool are loaded once per process; a new version is picked up when the worker saves
one (a directory listing per request, no reload otherwise). A project may pin a version (the
Connect dialog's extra param ``model_version``, or ``model_version`` in a ``/predict`` request);
otherwise the newest answers.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping

import numpy as np

from agile_modeling.classifier import ConceptClassifier, ModelVersion
from agile_modeling.errors import AgileError, SessionError
from agile_modeling.workspace import Workspace
from label_config import LabelConfigError, RatingSchema, load_config, parse_rating_config
from label_config.source import SourceSchema, parse_source_config
from ml_backend.images import TaskEmbeddings, TaskImageReader
from sync.safe_fetch import FetchPolicy
from sync.state import SOURCE, ProjectLink, SyncState

#: model versions kept loaded (the newest of each concept in use, and pinned ones)
LOADED_MODELS = 8


class UnknownModelVersionError(AgileError):
    """A pinned model version that the concept does not have (a 422 naming those it has)."""


class Predictor:
    """Answers ``/setup``, ``/predict`` and ``/versions`` for every project of one workspace."""

    def __init__(
        self,
        workspace: Workspace,
        policy: FetchPolicy | None = None,
        images_base_url: str | None = None,
        source_reader: Callable[[int], TaskImageReader] | None = None,
    ) -> None:
        """``source_reader(project id)`` reads an adopted project's images where Label Studio keeps them
        (for its tasks not in the pool yet); None: only web and data: URLs are read."""
        self.workspace = workspace
        self._source_reader = source_reader
        self._readers: dict[int, TaskImageReader] = {}
        self.state = SyncState(workspace.root / "label_studio.sqlite")
        self.embeddings = TaskEmbeddings(workspace, policy, images_base_url)
        self._models: OrderedDict[str, tuple[ModelVersion, ConceptClassifier]] = OrderedDict()  # by version name
        self._pins: dict[int, str] = {}  # project id -> version its latest /setup pinned
        self._lock = threading.Lock()
        self.model_loads = 0

    def source_images(self, project_id: int) -> TaskImageReader | None:
        """The reader of an adopted project's images (one per project, reused), if this backend has one."""
        if self._source_reader is None:
            return None
        with self._lock:
            if project_id not in self._readers:
                self._readers[project_id] = self._source_reader(project_id)
            return self._readers[project_id]

    def link(self, project_id: int) -> ProjectLink:
        return self.state.for_project(project_id)  # UnknownProjectError names what to do

    def versions(self, concept: str) -> list[str]:
        """The concept's model version names, newest first."""
        return [v.name for v in reversed(self.workspace.registry(concept).versions())]

    def _loaded(self, version: ModelVersion) -> tuple[ModelVersion, ConceptClassifier]:
        with self._lock:
            cached = self._models.get(version.name)
            if cached is None or cached[0].path != version.path:
                cached = (version, version.load())
                self.model_loads += 1
            self._models[version.name] = cached
            self._models.move_to_end(version.name)
            while len(self._models) > LOADED_MODELS:
                self._models.popitem(last=False)
            return cached

    def model(self, concept: str, pinned: str | None = None) -> tuple[ModelVersion, ConceptClassifier] | None:
        """The pinned version of the concept, or its newest (None before the first), loaded once.

        Raises:
            UnknownModelVersionError: ``pinned`` is none of the concept's versions (naming them).
        """
        registry = self.workspace.registry(concept)
        if pinned is None:
            latest = registry.latest()
            return self._loaded(latest) if latest is not None else None
        try:
            version = registry.get(pinned)
        except SessionError:
            names = self.versions(concept)
            raise UnknownModelVersionError(
                f"model version {pinned[:100]!r} is not one of {concept!r}: "
                + (f"choose one of {', '.join(names[:20])}" if names else "it has no model version yet")
                + " (or leave model_version out for the newest)"
            ) from None
        return self._loaded(version)

    def current_model(self, concept: str) -> tuple[ModelVersion, ConceptClassifier] | None:
        """The concept's newest model version, loaded once."""
        return self.model(concept)

    def pin(self, project_id: int, version: str | None) -> None:
        """Remember the version the project's latest ``/setup`` pinned (None: the newest). Label Studio
        sends the extra params with ``/setup`` only, and calls it before each batch of predictions; the
        pin lives in this process (``agile backend`` runs one)."""
        with self._lock:
            if version is None:
                self._pins.pop(project_id, None)
            else:
                self._pins[project_id] = version

    def pinned(self, project_id: int) -> str | None:
        with self._lock:
            return self._pins.get(project_id)

    def model_version(self, project_id: int, pinned: str | None = None) -> str | None:
        """The name of the version answering for the project: ``pinned`` (checked), else the newest."""
        model = self.model(self.link(project_id).concept, pinned)
        return model[0].name if model else None

    def schema(self, label_config: str | None, project_id: int) -> RatingSchema | SourceSchema:
        """The schema of the config Label Studio sent (or of the one the project was published with).

        An adopted project's config is the user's own: it is read for its image and, when it has one,
        the Choices it was adopted with (``agile concept new --positive-choice``), never required to
        be a rating config."""
        link = self.link(project_id)
        sent = label_config if isinstance(label_config, str) and label_config.strip() else None
        if link.purpose == SOURCE:
            if sent is None:
                raise LabelConfigError(f"Label Studio sent no label config for the adopted project {project_id}")
            return parse_source_config(sent, *self.state.source_choices(project_id))
        return parse_rating_config(sent if sent is not None else load_config(link.label_config))

    def predict(
        self,
        project_id: int,
        tasks: list[dict],
        schema: RatingSchema | SourceSchema,
        model_version: str | None = None,
        pool_ids: Mapping[int, int] | None = None,
    ) -> tuple[list[list[dict]], int, dict[int, str]]:
        """One list of predictions per task (empty before the first model, and for a task whose image
        cannot be read), the number of images embedded on the fly, and why each empty one is empty.

        Args:
            model_version: a pinned version (default: the project's pin, else the newest).
            pool_ids: Label Studio task id -> pool image id, for tasks known to show a pool image
                (an adopted project's tasks): their embedding is the pool's, their URL is not read.
        """
        model = self.model(self.link(project_id).concept, model_version or self.pinned(project_id))
        if model is None:
            return [[] for _ in tasks], 0, {}
        version, classifier = model
        reader = self.source_images(project_id) if self.link(project_id).purpose == SOURCE else None
        x, fresh, errors = self.embeddings.embed(tasks, schema.image_field, pool_ids, reader)
        probs = classifier.predict_proba(x) if len(tasks) else np.zeros(0)
        return (
            [[] if n in errors else [schema.prediction_record(float(p), version.name)] for n, p in enumerate(probs)],
            fresh,
            errors,
        )
