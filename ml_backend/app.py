"""The Label Studio ML backend HTTP protocol, on Flask.

Routes: ``GET /health``, ``POST /setup``, ``POST /predict``, ``GET /versions``, ``POST /webhook``,
``GET /metrics`` (Prometheus), ``GET /images/<id>?exp=...&sig=...`` (local pool images, for the browser, by the
signed URLs the sync puts into tasks: see :mod:`sync.image_signing`). Run it as ``agile backend``
(gunicorn with ``ml_backend/gunicorn_conf.py``, which refuses an exposed address without secrets).

Every error is JSON ``{"error": reason}`` with a 4xx status when the request is at fault, and the
reason is also the status line's reason phrase (``422 <reason>``): Label Studio 1.23.2 shows a
failed ``/setup`` as ``"422 Client Error: <reason phrase> for url: ..."`` and never reads the body.
Nothing returns a traceback.

``/setup`` of a project no concept is linked to asks for the Connect dialog's extra params
``{"concept": ..., "positive": [...], "negative": [...]}`` and, given them, hands the worker an
adoption of the project (``enqueue("adopt", ...)``): Label Studio calls ``/setup`` again and again
(on every listing of its ML backends and before every batch of predictions), so one request per
project and params is enqueued per :data:`ADOPTION_REPEAT_S` in this process; the adoption is
idempotent, a repeat is only wasted work.

``/predict`` answers 200 with one result per task, in order: an empty one for a task whose image
cannot be read (Label Studio stores nothing for it and asks again later, where a non-200 would
drop the whole batch); the reasons are logged and listed under ``"errors"``, which Label Studio ignores.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import mimetypes
import threading
import time
import unicodedata
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, jsonify, request, send_file
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from werkzeug.exceptions import BadRequest, Forbidden, HTTPException, NotFound, Unauthorized, UnprocessableEntity

from agile_modeling.database import DatabaseBusyError
from agile_modeling.errors import AgileError, EncoderUnavailableError, ImageReadError, StoreError
from agile_modeling.workspace import Workspace
from label_config import LabelConfigError
from ml_backend import requests as parse
from ml_backend.predictor import Predictor, UnknownModelVersionError
from sync.image_signing import NO_KEY, ImageSignatureError, ImageSigner
from sync.label_studio_images import LabelStudioImages
from sync.rounds import WEBHOOK_SECRET_HEADER
from sync.safe_fetch import FetchPolicy
from sync.settings import Settings
from sync.state import SOURCE, UnknownProjectError

if TYPE_CHECKING:
    from celery import Celery

log = logging.getLogger("agile.backend")

ANNOTATION_EVENTS = {"ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED"}
TRAIN_EVENTS = {"START_TRAINING"}
# an adopted project's new tasks get embedded; our own projects' task imports are ours: nothing to do
TASK_EVENTS = {"TASKS_CREATED"}
# Label Studio sends webhooks without basic auth: /webhook is checked by a shared secret header instead;
# the browser loads images without it: /images is checked by the URL's signature instead.
# /metrics is not open: with basic auth set, a scraper sends it too.
OPEN_ROUTES = {"health", "index", "images", "webhook"}


def _same(given: str | None, expected: str) -> bool:
    """Constant-time equality of two strings; as bytes, since compare_digest raises TypeError on non-ASCII str."""
    return hmac.compare_digest(
        (given or "").encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass")
    )


def _is_loopback(address: str | None) -> bool:
    try:
        return address is not None and ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agile_backend_requests", "Requests by route and status", ["route", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "agile_backend_request_seconds",
            "Request latency by route",
            ["route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10),
        )
        self.tasks = Counter("agile_backend_predicted_tasks", "Tasks answered by /predict", registry=self.registry)
        self.embedded = Counter(
            "agile_backend_images_embedded", "Task images embedded on the fly", registry=self.registry
        )
        self.unreadable = Counter(
            "agile_backend_unreadable_images",
            "Tasks answered without a prediction: image unreadable or not embeddable",
            registry=self.registry,
        )
        self.events = Counter(
            "agile_backend_webhook_events",
            "Webhook events by action and outcome",
            ["action", "outcome"],
            registry=self.registry,
        )


class BrokerUnavailableError(AgileError):
    """The Celery broker did not take the webhook's work (a 503: Label Studio's next event, or the
    periodic sync, catches up)."""


def celery_enqueue(celery: Callable[[], Celery]) -> Callable[..., None]:
    """``enqueue(kind, **kwargs)`` handing webhook work to the sync worker through the app ``celery()``
    makes on the first webhook (Celery is not imported until work arrives)."""
    apps: list[Celery] = []

    def enqueue(kind: str, **kwargs: Any) -> None:
        from kombu.exceptions import OperationalError

        if not apps:
            apps.append(celery())
        app = apps[0]
        try:
            if kind == "sync":
                # ignore_result: nothing here reads it (a redis result backend would subscribe per webhook)
                app.send_task(
                    "agile.sync_project",
                    args=(kwargs["project_id"], kwargs["requested_at"], kwargs.get("event")),
                    ignore_result=True,
                )
            elif kind == "retrain":
                app.send_task("agile.retrain", args=(kwargs["concept"],), ignore_result=True)
            elif kind == "adopt":
                app.send_task(
                    "agile.adopt_project",
                    kwargs={k: kwargs.get(k) for k in ADOPTION_KWARGS},
                    ignore_result=True,
                )
        except OperationalError as exc:
            raise BrokerUnavailableError(
                f"the worker's message broker is unreachable ({exc.__class__.__name__}: "
                f"{str(exc)[:200]}); check CELERY_BROKER_URL and that the broker runs. "
                "The periodic sync will pick up this event"
            ) from None

    return enqueue


#: what the worker's agile.adopt_project takes
ADOPTION_KWARGS = ("project_id", "concept", "positive", "negative", "positive_choice", "negative_choice")

#: seconds during which the same adoption (project, params) is not enqueued again
ADOPTION_REPEAT_S = 600.0


class RecentRequests:
    """Which adoptions this process enqueued lately (thread-safe), so that Label Studio's repeated
    ``/setup`` calls enqueue one per ``repeat_s``."""

    def __init__(self, repeat_s: float = ADOPTION_REPEAT_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.repeat_s, self.clock = repeat_s, clock
        self._sent: dict[tuple, float] = {}
        self._lock = threading.Lock()

    def due(self, key: tuple) -> bool:
        """Whether ``key`` was not sent within ``repeat_s`` (expired entries are dropped)."""
        now = self.clock()
        with self._lock:
            for old in [k for k, t in self._sent.items() if now - t >= self.repeat_s]:
                del self._sent[old]
            return key not in self._sent

    def sent(self, key: tuple) -> None:
        with self._lock:
            self._sent[key] = self.clock()


def _reason_phrase(message: str, limit: int = 400) -> str:
    """``message`` as an HTTP reason phrase: one line of printable ASCII (accents dropped), bounded."""
    text = unicodedata.normalize("NFKD", message).encode("ascii", "ignore").decode("ascii")
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return (text[: limit - 3] + "...") if len(text) > limit else text


def _fail(message: str, code: int) -> Response:
    """The JSON error ``{"error": message}``, with ``message`` as the status line's reason phrase too
    (returned as it is: a ``(response, code)`` pair would put back the standard phrase)."""
    response = jsonify(error=message)
    response.status = f"{code} {_reason_phrase(message) or 'Error'}"
    return response


def _celery_of(settings: Settings) -> Celery:
    from sync.celery_app import make_celery

    return make_celery(settings)


def _source_pool_ids(predictor: Predictor, project_id: int, tasks: list[dict]) -> dict[int, int]:
    """Label Studio task id -> pool image id for the tasks of an adopted ("source") project, whose
    images the sync put into the pool; {} for any other project."""
    task_ids = [t["id"] for t in tasks if type(t.get("id")) is int]
    if not task_ids or predictor.link(project_id).purpose != SOURCE:
        return {}
    return predictor.state.source_image_ids(project_id, task_ids)


def _source_reader(settings: Settings) -> Callable[[int], LabelStudioImages] | None:
    """Reads an adopted project's images with this backend's Label Studio credentials (None without them)."""
    if not (settings.label_studio_url and settings.label_studio_api_key):
        return None
    return lambda project_id: LabelStudioImages.for_project(settings, project_id)


def create_app(settings: Settings, enqueue: Callable[..., None] | None = None) -> Flask:
    """The backend for ``settings`` (built by the composition root, ``ml_backend.wsgi``).

    ``enqueue(kind, **kwargs)`` hands webhook work to the worker; the default sends Celery tasks
    through the broker of ``settings``.
    """
    app = Flask("agile_modeling_backend")
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024 * 1024
    workspace = Workspace(settings.workspace)
    predictor = Predictor(
        workspace,
        FetchPolicy.from_settings(settings),
        images_base_url=settings.images_base_url,
        source_reader=_source_reader(settings),
    )
    signer = ImageSigner.from_settings(settings)
    cors_origin = settings.browser_origin
    metrics = _Metrics()
    enqueue = enqueue or celery_enqueue(lambda: _celery_of(settings))
    adoptions = RecentRequests()
    app.extensions["agile"] = {
        "predictor": predictor,
        "metrics": metrics,
        "settings": settings,
        "adoptions": adoptions,
    }

    has_secrets = bool(settings.webhook_secret and settings.basic_auth_user and settings.basic_auth_pass)

    @app.before_request
    def _authenticate() -> None:
        request.environ["agile.start"] = time.perf_counter()
        if not has_secrets and request.endpoint != "health" and not _is_loopback(request.remote_addr):
            # the start-up check (ml_backend/exposure.py) sees only binds it is told about (agile backend,
            # gunicorn with our config); any other server exposing an unguarded backend is refused here
            raise Forbidden(
                "this ML backend has no secrets configured, so it answers only requests from this "
                "machine: set AGILE_WEBHOOK_SECRET, BASIC_AUTH_USER and BASIC_AUTH_PASS"
            )
        if not (settings.basic_auth_user and settings.basic_auth_pass) or request.endpoint in OPEN_ROUTES:
            return None
        try:
            auth = request.authorization
        except ValueError:  # werkzeug's base64 decoding of a header with non-ASCII bytes: no credentials
            auth = None
        ok = (
            auth is not None
            and auth.type == "basic"
            and _same(auth.username, settings.basic_auth_user) & _same(auth.password, settings.basic_auth_pass)
        )
        if not ok:
            raise Unauthorized("this ML backend requires basic auth (BASIC_AUTH_USER / BASIC_AUTH_PASS)")
        return None

    @app.after_request
    def _count(response: Response) -> Response:
        route = request.endpoint or "unknown"
        metrics.requests.labels(route, str(response.status_code)).inc()
        start = request.environ.get("agile.start")
        if start is not None:
            metrics.latency.labels(route).observe(time.perf_counter() - start)
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Basic realm="agile-modeling"'
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        # Flask hands an error handler only HTTP exceptions with a code (a code-less one is returned as it is)
        return _fail(str(exc.description), exc.code or 500)

    @app.errorhandler(UnknownProjectError)
    def _unknown_project(exc: UnknownProjectError) -> Response:
        return _fail(str(exc), 404)

    @app.errorhandler(LabelConfigError)
    @app.errorhandler(ImageReadError)
    @app.errorhandler(UnknownModelVersionError)
    def _bad_input(exc: LabelConfigError | ImageReadError | UnknownModelVersionError) -> Response:
        return _fail(str(exc), 422)

    @app.errorhandler(EncoderUnavailableError)
    @app.errorhandler(StoreError)
    @app.errorhandler(DatabaseBusyError)  # another process holds the write lock: try again
    @app.errorhandler(BrokerUnavailableError)
    def _unavailable(
        exc: EncoderUnavailableError | StoreError | DatabaseBusyError | BrokerUnavailableError,
    ) -> Response:
        return _fail(str(exc), 503)

    @app.errorhandler(AgileError)
    def _agile_error(exc: AgileError) -> Response:
        return _fail(str(exc), 409)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unexpected error on %s", request.path)
        return _fail(f"internal error ({type(exc).__name__}); see the backend's log", 500)

    @app.get("/")
    def index() -> Response:
        return jsonify(status="UP", model_class="agile-modeling MLP on image-text embeddings")

    @app.get("/health")
    def health() -> Response:
        return jsonify(status="UP", model_class="agile-modeling MLP on image-text embeddings")

    def _adopt(project_id: int, adoption: parse.Adoption) -> Response:
        """Hand the worker the adoption of an unlinked project, once per ADOPTION_REPEAT_S."""
        key = (project_id, adoption)
        if adoptions.due(key):
            enqueue(
                "adopt",
                project_id=project_id,
                concept=adoption.concept,
                positive=list(adoption.positive),
                negative=list(adoption.negative),
                positive_choice=adoption.positive_choice,
                negative_choice=adoption.negative_choice,
            )
            adoptions.sent(key)  # only once the broker took it: a failed enqueue is retried by the next /setup
            log.info("/setup project %s: adoption as %r requested", project_id, adoption.concept)
        return jsonify(model_version=None, status="adoption requested", concept=adoption.concept)

    @app.post("/setup")
    def setup() -> Response:
        body = parse.json_body(request)
        project_id = parse.project_id(body.get("project"))
        params = parse.extra_params(body.get("extra_params"))
        try:
            predictor.link(project_id)
        except UnknownProjectError:
            adoption = parse.adoption(params)
            if adoption is None:
                raise UnprocessableEntity(
                    f"Label Studio project {project_id} belongs to no concept of this backend's workspace. "
                    f"Either adopt it from the command line (agile concept new NAME --from-project {project_id} "
                    "--positive ...), or name its concept in this connection's extra params, e.g. "
                    f"{parse.EXTRA_PARAMS_EXAMPLE}"
                ) from None
            return _adopt(project_id, adoption)
        # a linked project: concept/positive/negative (left from its adoption) change nothing
        if body.get("schema") not in (None, ""):
            predictor.schema(body.get("schema"), project_id)
        pinned = parse.model_version(body.get("model_version") or params.get("model_version"))
        version = predictor.model_version(project_id, pinned)  # a 422 naming the versions if unknown
        predictor.pin(project_id, pinned)
        return jsonify(model_version=version)

    @app.post("/predict")
    def predict() -> Response:
        body = parse.json_body(request)
        tasks = parse.tasks(body)
        project_id = parse.project_id(body.get("project"))
        schema = predictor.schema(body.get("label_config"), project_id)
        params = body["params"] if isinstance(body.get("params"), dict) else {}
        pinned = parse.model_version(body.get("model_version") or params.get("model_version"))
        # the one place an adopted project's tasks get their pool images (SyncState.source_image_ids)
        pool_ids = _source_pool_ids(predictor, project_id, tasks)
        results, fresh, errors = predictor.predict(project_id, tasks, schema, pinned, pool_ids)
        metrics.tasks.inc(len(tasks))
        metrics.embedded.inc(fresh)
        metrics.unreadable.inc(len(errors))
        reasons = [{"task": tasks[n].get("id", n), "error": why} for n, why in sorted(errors.items())]
        for reason in reasons:
            log.warning("/predict project %s: no prediction for task %.40r: %s", project_id, *reason.values())
        version = next((r[0]["model_version"] for r in results if r), None)
        if reasons:
            return jsonify(results=results, model_version=version, errors=reasons)
        return jsonify(results=results, model_version=version)

    @app.get("/versions")
    def versions() -> Response:
        """The model versions, newest first: of the project's concept with ``?project=<id>[.<ts>]``;
        Label Studio 1.23.2 sends no project (a bare GET), so without one, those of every concept
        linked to a project of this workspace, newest first."""
        given = request.args.get("project")
        if given is not None:
            concept = predictor.link(parse.project_id(given)).concept
            return jsonify(versions=predictor.versions(concept), concept=concept)
        concepts = sorted({link.concept for link in predictor.state.all()})
        found = [v for c in concepts for v in predictor.workspace.registry(c).versions()]
        found.sort(key=lambda v: (float(v.info.get("created") or 0), v.number), reverse=True)
        return jsonify(versions=[v.name for v in found])

    @app.post("/webhook")
    def webhook() -> Response | tuple[Response, int]:
        if settings.webhook_secret and not _same(request.headers.get(WEBHOOK_SECRET_HEADER), settings.webhook_secret):
            raise Unauthorized(
                f"webhook refused: the {WEBHOOK_SECRET_HEADER} header is missing or wrong "
                "(it must equal AGILE_WEBHOOK_SECRET; `agile concept publish` sets it in Label Studio)"
            )
        body = parse.json_body(request)
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest('"action" must be a Label Studio event name such as "ANNOTATION_CREATED"')
        if action not in ANNOTATION_EVENTS | TRAIN_EVENTS | TASK_EVENTS:
            metrics.events.labels(action[:40], "ignored").inc()
            return jsonify(status="ignored", action=action)
        project_id = parse.project_id(body.get("project"))
        link = predictor.link(project_id)
        # an adopted project is read for its tasks only (its annotations were imported once, at adoption)
        if action not in TRAIN_EVENTS and (action in TASK_EVENTS) != (link.purpose == SOURCE):
            metrics.events.labels(action, "ignored").inc()
            return jsonify(status="ignored", action=action, project=project_id)
        if action in TRAIN_EVENTS:
            enqueue("retrain", concept=link.concept)
        else:
            enqueue("sync", project_id=project_id, requested_at=time.time(), event=parse.annotation_event(body))
        metrics.events.labels(action, "queued").inc()
        return jsonify(status="queued", action=action, project=project_id), 202

    @app.get("/metrics")
    def metrics_route() -> Response:
        return Response(generate_latest(metrics.registry), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/images/<int:image_id>")
    def images(image_id: int) -> Response:
        """A local pool image (only files registered in the pool: no path comes from the request), for a
        URL signed by the sync; unsigned only in the loopback development mode."""
        if settings.images_unsigned:
            if not _is_loopback(request.remote_addr):
                raise Forbidden("AGILE_IMAGES_UNSIGNED serves images to this machine only")
        elif signer is None:
            raise Forbidden(f"this backend cannot check image URLs: {NO_KEY}")
        else:
            try:
                signer.verify(image_id, request.args.get("exp"), request.args.get("sig"))
            except ImageSignatureError as exc:
                raise Forbidden(str(exc)) from None
        store = workspace.store()
        if image_id >= len(store):
            raise NotFound(f"no image {image_id} in the pool")
        uri = store.uris([image_id])[0]
        path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        if not path.is_file():
            raise NotFound(f"image {image_id} ({uri[:80]}) is not a local file this backend can serve")
        response = send_file(
            path, mimetype=mimetypes.guess_type(path.name)[0] or "application/octet-stream", max_age=3600
        )
        if cors_origin:  # Label Studio's image tag may fetch with CORS: its origin only, never "*"
            response.headers["Access-Control-Allow-Origin"] = cors_origin
            response.headers["Vary"] = "Origin"
        return response

    return app
