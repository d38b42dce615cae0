"""Validation of what Label Studio sends the backend: every malformed field becomes a 400 with a reason."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest

if TYPE_CHECKING:
    from werkzeug.wrappers import Request


def json_body(request: Request) -> dict:
    """The request's JSON object, or 400 saying what is wrong with it."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        raise BadRequest("the JSON body is nested too deeply") from None
    if body is None:
        raise BadRequest("the body must be a JSON object (Content-Type: application/json)")
    if not isinstance(body, dict):
        raise BadRequest(f"the body must be a JSON object, not a {type(body).__name__}")
    return body


MAX_PROJECT_ID = 2**63  # SQLite's INTEGER: a larger id is no project of ours (and would overflow the query)


def project_id(value: Any) -> int:
    """Label Studio names a project ``"<id>.<created timestamp>"`` (``/setup``, ``/predict``), an int
    or ``{"id": ...}`` (webhooks)."""
    if isinstance(value, dict):
        value = value.get("id")
    if isinstance(value, bool):
        value = None
    if isinstance(value, str):
        head = value.split(".", 1)[0]
        value = int(head) if head.isascii() and head.isdigit() and len(head) <= 18 else None
    if isinstance(value, int) and 0 <= value < MAX_PROJECT_ID:
        return value
    raise BadRequest('"project" must be a project id such as 12, "12.1700000000" or {"id": 12}')


def tasks(body: dict) -> list[dict]:
    """The ``tasks`` list of a ``/predict`` request: objects with an integer ``id`` and a ``data`` object."""
    items = body.get("tasks")
    if not isinstance(items, list):
        raise BadRequest('"tasks" must be a list of task objects')
    for n, task in enumerate(items):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            raise BadRequest(f'task #{n} must be an object with a "data" object')
    return items


ANNOTATION_FIELDS = ("id", "result", "completed_by", "updated_at", "created_at", "was_cancelled", "lead_time")


def annotation_event(body: dict) -> dict | None:
    """The part of an ``ANNOTATION_CREATED/UPDATED`` payload the worker can record at once, or None
    (then the worker reads the project instead). Only plain fields are passed on."""
    if body.get("action") not in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
        return None
    annotation, task = body.get("annotation"), body.get("task")
    if not isinstance(annotation, dict) or not isinstance(task, dict) or not isinstance(task.get("data"), dict):
        return None
    image_id, task_id = task["data"].get("agile_image_id"), task.get("id")
    if not (isinstance(image_id, int) and isinstance(task_id, int) and isinstance(annotation.get("id"), int)):
        return None
    completed_by = annotation.get("completed_by")
    if isinstance(completed_by, dict):
        completed_by = completed_by.get("id")
    plain = {k: annotation.get(k) for k in ANNOTATION_FIELDS}
    plain["completed_by"] = completed_by if isinstance(completed_by, int) else None
    return {"task_id": task_id, "image_id": image_id, "round": task["data"].get("agile_round"), "annotation": plain}
