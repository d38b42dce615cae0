"""The few Label Studio API calls the worker makes, through the official SDK (label-studio-sdk 2.x).

Every call that fails for a reason a person can fix (server down, wrong token, unknown project)
raises :class:`LabelStudioError` with that reason instead of an SDK or HTTP traceback.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from label_studio_sdk import LabelStudio
from label_studio_sdk.core.api_error import ApiError

from agile_modeling.errors import AgileError, ConfigurationError

log = logging.getLogger(__name__)

PAGE_SIZE = 1000
# what iter_tasks reads of a task, its annotations and predictions: Label Studio 1.23.2 applies the names of
# `include` to the nested annotations and predictions too (with only "id", an annotation is {"id": 1})
TASK_FIELDS = (
    "id,data,annotations,predictions,result,completed_by,created_at,updated_at,lead_time,was_cancelled,model_version"
)
DELETE_TIMEOUT_S = 900  # deleting a model version's predictions on a large project


class LabelStudioError(AgileError):
    """Label Studio could not be reached, refused our token, or rejected a request."""


@dataclass(frozen=True)
class Annotation:
    """One annotation as the server holds it."""

    id: int
    task: int
    result: list
    completed_by: int | None
    updated_at: str
    lead_time: float | None = None
    was_cancelled: bool = False


@dataclass(frozen=True)
class TaskRecord:
    """One task: its data and every annotation on it."""

    id: int
    data: dict
    annotations: tuple[Annotation, ...] = field(default_factory=tuple)
    prediction_version: str | None = None  # model version of the task's newest prediction


def _field(obj: Any, name: str, default: Any = None) -> Any:
    return obj.get(name, default) if isinstance(obj, dict) else getattr(obj, name, default)


def annotation_from_payload(raw: Any, task_id: int) -> Annotation:
    """An :class:`Annotation` from the API's or a webhook's annotation object (dict or SDK model)."""
    completed_by = _field(raw, "completed_by")
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("id")
    updated = _field(raw, "updated_at") or _field(raw, "created_at") or ""
    return Annotation(
        id=int(_field(raw, "id")),
        task=task_id,
        result=list(_field(raw, "result") or []),
        completed_by=completed_by,
        updated_at=str(updated),
        lead_time=_field(raw, "lead_time"),
        was_cancelled=bool(_field(raw, "was_cancelled", False)),
    )


class LabelStudioClient:
    """A connection to one Label Studio server."""

    def __init__(self, url: str | None, api_key: str | None, timeout: float = 30.0) -> None:
        if not url or not api_key:  # a setting to fix, not an outage to wait out: never retried
            raise ConfigurationError(
                "Label Studio is not configured: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
                "(or run `agile up`, which starts a local server and sets both)"
            )
        self.url = url.rstrip("/")
        try:
            self.sdk = LabelStudio(base_url=self.url, api_key=api_key, timeout=timeout)
        except ApiError as exc:  # the SDK checks a personal access token's expiry itself
            raise LabelStudioError(
                f"Label Studio at {self.url} cannot be used with this LABEL_STUDIO_API_KEY: "
                f"{str(exc.body)[:200]}; create a new access token in Label Studio (Account & Settings)"
            ) from None

    def _call(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, an SDK call (its answer, an SDK model, as it is), with errors a person can fix
        as :class:`LabelStudioError`."""
        try:
            return fn(*args, **kwargs)
        except ApiError as exc:
            if exc.status_code in (401, 403):
                raise LabelStudioError(
                    f"Label Studio at {self.url} refused the API key while trying to {what}: check LABEL_STUDIO_API_KEY"
                ) from None
            if exc.status_code == 404:
                raise LabelStudioError(
                    f"Label Studio at {self.url} has no such object ({what}); was the project deleted?"
                ) from None
            raise LabelStudioError(
                f"Label Studio at {self.url} rejected the request to {what}: "
                f"HTTP {exc.status_code} {str(exc.body)[:1000]}"
            ) from None
        except httpx.HTTPError as exc:
            raise LabelStudioError(
                f"cannot reach Label Studio at {self.url} to {what} ({exc.__class__.__name__}: "
                f"{exc}); is the server running?"
            ) from None

    # --- projects ----------------------------------------------------------------------------
    def create_project(self, title: str, label_config: str, description: str = "", **settings: Any) -> int:
        project = self._call(
            "create a project",
            self.sdk.projects.create,
            title=title,
            label_config=label_config,
            description=description,
            **settings,
        )
        return int(project.id)

    def update_project(self, project_id: int, **settings: Any) -> None:
        self._call(f"update project {project_id}", self.sdk.projects.update, id=project_id, **settings)

    def create_user(self, username: str, email: str) -> int:
        user = self._call(f"create the user {username}", self.sdk.users.create, username=username, email=email)
        return int(user.id)

    def project_label_config(self, project_id: int) -> str:
        project = self._call(f"read project {project_id}", self.sdk.projects.get, id=project_id)
        return project.label_config or ""

    def project_title(self, project_id: int) -> str:
        project = self._call(f"read project {project_id}", self.sdk.projects.get, id=project_id)
        return str(project.title or f"project {project_id}")

    def find_ml_backend(self, project_id: int, url: str) -> int | None:
        backends = self._call("list ML backends", self.sdk.ml.list, project=project_id)
        for backend in backends or []:
            if _field(backend, "url", "").rstrip("/") == url.rstrip("/"):
                return int(_field(backend, "id"))
        return None

    def connect_ml_backend(
        self, project_id: int, url: str, title: str, basic_auth: tuple[str, str] | None = None
    ) -> int:
        """Register our backend for a project (once); Label Studio then also sends it every webhook."""
        existing = self.find_ml_backend(project_id, url)
        if existing is not None:
            return existing
        auth = (
            dict(auth_method="BASIC_AUTH", basic_auth_user=basic_auth[0], basic_auth_pass=basic_auth[1])
            if basic_auth
            else {}
        )
        backend = self._call(
            "connect the ML backend",
            self.sdk.ml.create,
            project=project_id,
            url=url,
            title=title,
            is_interactive=False,
            **auth,
        )
        return int(backend.id)

    def remove_other_backends(self, project_id: int, url: str, title: str) -> list[str]:
        """Delete the project's ML backends named ``title`` at another URL than ``url`` (ours, from
        before a restart on other ports), with their webhooks; the URLs removed."""
        keep = url.rstrip("/")
        removed = []
        for backend in self._call("list ML backends", self.sdk.ml.list, project=project_id) or []:
            other = (_field(backend, "url") or "").rstrip("/")
            if _field(backend, "title") == title and other != keep:
                self._call(f"remove the stale ML backend {other}", self.sdk.ml.delete, id=int(_field(backend, "id")))
                removed.append(other)
        if removed:
            stale = {f"{other}/webhook" for other in removed}
            for hook in self._call("list webhooks", self.sdk.webhooks.list, project=str(project_id)) or []:
                if (_field(hook, "url") or "").rstrip("/") in stale:
                    self._call("remove a stale webhook", self.sdk.webhooks.delete, id=int(_field(hook, "id")))
        return removed

    def set_webhook_headers(self, project_id: int, url: str, headers: dict[str, str]) -> bool:
        """Add headers (our shared secret) to the project's webhook to ``url``; whether one was found.

        Label Studio creates the ML backend's webhook itself (``ml.create``) without custom headers.
        """
        hooks = self._call("list webhooks", self.sdk.webhooks.list, project=str(project_id))
        for hook in hooks or []:
            if _field(hook, "url", "").rstrip("/") == url.rstrip("/") and _field(hook, "project") == project_id:
                if (_field(hook, "headers") or {}) != headers:
                    self._call(
                        "set the webhook's headers",
                        self.sdk.webhooks.update,
                        id=int(_field(hook, "id")),
                        headers=headers,
                    )
                return True
        return False

    # --- tasks -------------------------------------------------------------------------------
    def _task_pages(self, project_id: int, include: str) -> Iterator[list[Any]]:
        """The project's tasks, a page at a time, with the fields named in ``include`` only (Label Studio
        then skips the Data Manager's per-task columns: counts, comments, results; 50,000 tasks list in
        about 40 s instead of about 250 s)."""
        # Page by page here rather than with the SDK's pager: the pager asks for the page after the
        # last, which Label Studio answers with an "Invalid page" traceback in its log on every sync.
        page = 1
        while True:
            pager = self._call(
                f"list the tasks of project {project_id}",
                self.sdk.tasks.list,
                project=project_id,
                fields="all",
                include=include,
                page=page,
                page_size=PAGE_SIZE,
            )
            items = list(pager.items or [])
            yield items
            total = _field(pager.response, "total")
            if len(items) < PAGE_SIZE or (isinstance(total, int) and page * PAGE_SIZE >= total):
                return
            page += 1

    def iter_tasks(self, project_id: int) -> Iterator[TaskRecord]:
        """Every task of a project with its annotations (all pages)."""
        for items in self._task_pages(project_id, TASK_FIELDS):
            for task in items:
                task_id = int(_field(task, "id"))
                annotations = tuple(annotation_from_payload(a, task_id) for a in (_field(task, "annotations") or []))
                predictions = _field(task, "predictions") or []
                newest = max(predictions, key=lambda p: _field(p, "id") or 0) if predictions else None
                yield TaskRecord(
                    id=task_id,
                    data=dict(_field(task, "data") or {}),
                    annotations=annotations,
                    prediction_version=_field(newest, "model_version") if newest else None,
                )

    def task_ids(self, project_id: int) -> set[int]:
        """The ids of every task of the project (a quick listing)."""
        return {int(_field(task, "id")) for items in self._task_pages(project_id, "id") for task in items}

    def import_tasks(self, project_id: int, tasks: Sequence[dict]) -> list[int]:
        """Create ``tasks`` (each may carry inline ``predictions``); their ids, in order.

        Label Studio 1.23 on SQLite sometimes creates the tasks of an import but none of their
        inline predictions, and still answers 201 (``prediction_count`` 0): 4 of 60 imports of 10
        tasks did so while other imports and task listings ran at the same time (the situation of
        two concepts' rounds on two workers). Such tasks would reach the rater without the model's
        guess, and nothing predicts them again. So the count is checked, and predictions the server
        dropped are attached again with ``import_predictions``.
        """
        if not tasks:
            return []
        response = self._call(
            f"import {len(tasks)} tasks",
            self.sdk.projects.import_tasks,
            id=project_id,
            request=list(tasks),
            return_task_ids=True,
        )
        task_ids = [int(t) for t in (response.task_ids or [])]
        sent = [{**p, "task": tid} for tid, task in zip(task_ids, tasks) for p in task.get("predictions") or []]
        created = getattr(response, "prediction_count", None)  # Community edition's answer (an extra field)
        # all or none: the server returns before storing any prediction when one fails
        if sent and created == 0 and len(task_ids) == len(tasks):
            log.warning(
                "Label Studio created none of the %d predictions imported with %d tasks into project %d: "
                "attaching them again",
                len(sent),
                len(task_ids),
                project_id,
            )
            self.import_predictions(project_id, sent)
        return task_ids

    def import_predictions(self, project_id: int, predictions: Sequence[dict]) -> None:
        if predictions:
            self._call(
                f"import {len(predictions)} predictions",
                self.sdk.projects.import_predictions,
                id=project_id,
                request=list(predictions),
            )

    def prediction_versions(self, task_id: int) -> list[str]:
        """The model version of each prediction the task has (one entry per prediction)."""
        found = self._call(f"list the predictions of task {task_id}", self.sdk.predictions.list, task=int(task_id))
        return [str(_field(p, "model_version")) for p in found or []]

    def delete_model_version(self, project_id: int, model_version: str) -> int:
        """Delete every prediction of ``model_version`` in the project; how many were deleted.

        The SDK has no call for Label Studio's ``DELETE /api/projects/<id>/model-versions/``: it is sent
        through the SDK's own authenticated HTTP client.
        """

        def delete() -> Any:
            response = self.sdk._client_wrapper.httpx_client.request(
                f"api/projects/{int(project_id)}/model-versions/",
                method="DELETE",
                json={"model_version": model_version},
                # slow on a large project: Label Studio deletes them and recounts the tasks in one request
                request_options={"timeout_in_seconds": DELETE_TIMEOUT_S},
            )
            if response.status_code >= 400:
                raise ApiError(status_code=response.status_code, body=response.text)
            return response.json()

        answer = self._call(f"delete the predictions of {model_version} in project {project_id}", delete)
        return int(_field(answer, "count", 0) or 0)

    def create_annotation(self, task_id: int, result: list, lead_time: float | None = None, **extra: Any) -> int:
        annotation = self._call(
            f"annotate task {task_id}",
            self.sdk.annotations.create,
            id=task_id,
            result=result,
            lead_time=lead_time,
            **extra,
        )
        return int(annotation.id)
