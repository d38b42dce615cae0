"""Predictions for Label Studio tasks from a concept's current model version.

The model and the pool are loaded once per process; a new version is picked up when the worker
saves one (a directory listing per request, no reload otherwise).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np

from agile_modeling.classifier import ConceptClassifier, ModelVersion
from agile_modeling.workspace import Workspace
from label_config import RatingSchema, load_config, parse_rating_config
from ml_backend.fetch import FetchPolicy
from ml_backend.images import TaskEmbeddings
from sync.state import ProjectLink, SyncState


@dataclass(frozen=True)
class Prediction:
    probability: float
    model_version: str


class Predictor:
    """Answers ``/setup`` and ``/predict`` for every project of one workspace."""

    def __init__(
        self, workspace: Workspace, policy: FetchPolicy | None = None, images_base_url: str | None = None
    ) -> None:
        self.workspace = workspace
        self.state = SyncState(workspace.root / "label_studio.sqlite")
        self.embeddings = TaskEmbeddings(workspace, policy, images_base_url)
        self._models: dict[str, tuple[ModelVersion, ConceptClassifier]] = {}
        self._lock = threading.Lock()
        self.model_loads = 0

    def link(self, project_id: int) -> ProjectLink:
        return self.state.for_project(project_id)  # UnknownProjectError names what to do

    def current_model(self, concept: str) -> tuple[ModelVersion, ConceptClassifier] | None:
        """The concept's newest model version, loaded once."""
        latest = self.workspace.registry(concept).latest()
        if latest is None:
            return None
        with self._lock:
            cached = self._models.get(concept)
            if cached is None or cached[0].name != latest.name:
                cached = (latest, latest.load())
                self._models[concept] = cached
                self.model_loads += 1
            return cached

    def model_version(self, project_id: int) -> str | None:
        model = self.current_model(self.link(project_id).concept)
        return model[0].name if model else None

    def schema(self, label_config: str | None, project_id: int) -> RatingSchema:
        """The schema of the config Label Studio sent (or of the one the project was published with)."""
        if isinstance(label_config, str) and label_config.strip():
            return parse_rating_config(label_config)
        return parse_rating_config(load_config(self.link(project_id).label_config))

    def predict(
        self, project_id: int, tasks: list[dict], schema: RatingSchema
    ) -> tuple[list[list[dict]], int, dict[int, str]]:
        """One list of predictions per task (empty before the first model, and for a task whose image
        cannot be read), the number of images embedded on the fly, and why each empty one is empty."""
        model = self.current_model(self.link(project_id).concept)
        if model is None:
            return [[] for _ in tasks], 0, {}
        version, classifier = model
        x, fresh, errors = self.embeddings.embed(tasks, schema.image_field)
        probs = classifier.predict_proba(x) if len(tasks) else np.zeros(0)
        return (
            [
                []
                if n in errors
                else [{"result": schema.prediction(float(p)), "score": float(p), "model_version": version.name}]
                for n, p in enumerate(probs)
            ],
            fresh,
            errors,
        )
