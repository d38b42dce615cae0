"""Validation of what Label Studio sends the backend: every malformed field becomes a 400 with a reason
(a 422 for the extra params a user typed into the Connect dialog)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import BadRequest, UnprocessableEntity

from agile_modeling.concepts import slugify

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


# --- the Connect dialog's "extra params" (sent with every /setup) ---------------------------------
MAX_CONCEPT_CHARS = 100
MAX_PHRASE_CHARS = 200
MAX_PHRASES = 50
EXTRA_PARAM_KEYS = ("concept", "positive", "negative", "positive_choice", "negative_choice", "model_version")
EXTRA_PARAMS_EXAMPLE = '{"concept": "gourmet tuna", "positive": ["tuna steak"], "negative": ["canned tuna"]}'


@dataclass(frozen=True)
class Adoption:
    """What the Connect dialog asked for a project no concept is linked to: adopt it as ``concept``."""

    concept: str
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    positive_choice: str | None = None  # the project's choice that means positive (default "Positive")
    negative_choice: str | None = None


def extra_params(value: Any) -> dict:
    """The ``extra_params`` of a ``/setup``: Label Studio 1.23.2 sends what was saved, as it was saved
    (``null``, a JSON object, or a string when the client sent a string), so a string is parsed as JSON.
    Unknown keys and wrong types are a 422 naming them."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (ValueError, RecursionError):
            raise UnprocessableEntity(
                f"the extra params are not a JSON object: write them as JSON, e.g. {EXTRA_PARAMS_EXAMPLE}"
            ) from None
    if not isinstance(value, dict):
        raise UnprocessableEntity(f"the extra params must be a JSON object such as {EXTRA_PARAMS_EXAMPLE}")
    unknown = sorted(str(k)[:40] for k in value if k not in EXTRA_PARAM_KEYS)
    if unknown:
        raise UnprocessableEntity(
            f"unknown extra param(s) {', '.join(map(repr, unknown))}: this backend takes {', '.join(EXTRA_PARAM_KEYS)}"
        )
    if "model_version" in value:
        model_version(value["model_version"])  # a type check now; whether it exists is the predictor's
    return value


def model_version(value: Any) -> str | None:
    """A pinned model version name (``"<concept>-v3"``), or None for the newest."""
    if value in (None, ""):
        return None
    if not isinstance(value, str) or len(value) > 200:
        raise UnprocessableEntity('"model_version" must be the name of a model version, such as "gourmet-tuna-v3"')
    return value


def _phrases(params: dict, key: str) -> tuple[str, ...]:
    value = params.get(key)
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or len(items) > MAX_PHRASES:
        raise UnprocessableEntity(f'extra param "{key}" must be a text or a list of at most {MAX_PHRASES} texts')
    phrases = []
    for n, item in enumerate(items):
        text = item.strip() if isinstance(item, str) else None
        if not text or len(text) > MAX_PHRASE_CHARS:
            raise UnprocessableEntity(
                f'extra param "{key}" item #{n} must be a non-empty text of at most {MAX_PHRASE_CHARS} characters'
            )
        phrases.append(text)
    return tuple(phrases)


def adoption(params: dict) -> Adoption | None:
    """The adoption the extra params ask for (None when they name no concept); a 422 saying what is wrong."""
    if params.get("concept") is None:
        return None
    concept = params["concept"].strip() if isinstance(params["concept"], str) else None
    if not concept or len(concept) > MAX_CONCEPT_CHARS:
        raise UnprocessableEntity(
            f'extra param "concept" must be a non-empty name of at most {MAX_CONCEPT_CHARS} characters'
        )
    try:
        slugify(concept)  # what the worker names it by: refused here, not later in the worker's log
    except ValueError as exc:
        raise UnprocessableEntity(f'extra param "concept": {exc}') from None
    choices = {}
    for key in ("positive_choice", "negative_choice"):
        value = params.get(key)
        if value is not None and (not isinstance(value, str) or not value.strip() or len(value) > MAX_PHRASE_CHARS):
            raise UnprocessableEntity(f'extra param "{key}" must be the value of one of the project\'s <Choice> tags')
        choices[key] = value.strip() if isinstance(value, str) else None
    return Adoption(concept, _phrases(params, "positive"), _phrases(params, "negative"), **choices)
