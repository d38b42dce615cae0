"""Configuration of the Label Studio side, from the environment (the ML backend world's names).

=========================  ==========================================================================
``LABEL_STUDIO_URL``       where the Label Studio server is (``http://127.0.0.1:8080``)
``LABEL_STUDIO_API_KEY``   its API token (legacy token or personal access token)
``AGILE_WORKSPACE``        the workspace folder (pool, sessions, models); ``MODEL_DIR`` is an alias
``AGILE_BACKEND_URL``      where Label Studio reaches our ML backend (``http://127.0.0.1:9090``)
``AGILE_IMAGE_URL``        base URL the browser loads local pool images from (default: backend/images)
``BASIC_AUTH_USER/PASS``   credentials the ML backend demands (and Label Studio is told to send)
``AGILE_WEBHOOK_SECRET``   shared secret Label Studio sends with webhooks (header X-Agile-Secret)
``CELERY_BROKER_URL``      ``redis://...`` to run workers distributed; default a local folder broker
``AGILE_LABEL_CONFIG``     ``rating`` (default) or ``rating-note`` (adds a free-text note)
``AGILE_IMAGE_SIGNING_KEY`` key of the signed image URLs (default: derived from the API key, see
                           :mod:`sync.image_signing`); ``AGILE_IMAGE_URL_DAYS`` their lifetime (30)
``AGILE_IMAGES_UNSIGNED``  ``1``: plain ``/images/<id>`` URLs (development, backend on loopback only)
``AGILE_LABEL_STUDIO_ORIGIN`` the origin the browser opens Label Studio at, allowed by CORS on
                           ``/images`` (default: the origin of ``LABEL_STUDIO_URL``)
``AGILE_MAX_IMAGE_PIXELS`` decoded-size limit of a task image (default 40 megapixels)
``AGILE_PREFETCH``         select the next batch when this fraction of a batch is still to rate, so the
                           rater's queue never runs dry (default 0.5; 0: when it is all rated, the paper)
``AGILE_PREFILL_PREDICTIONS`` ``1``: tasks open with the model's choice pre-selected (default: not;
                           the rater sees only the image, as in the paper; scores are in the Data Manager)
=========================  ==========================================================================
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from agile_modeling.errors import ConfigurationError
from agile_modeling.workspace import DEFAULT_WORKSPACE


def _env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def _fraction(name: str, default: float) -> float:
    value = _env(name)
    try:
        fraction = float(value) if value is not None else default
    except ValueError:
        fraction = -1.0
    if not 0.0 <= fraction < 1.0:
        raise ConfigurationError(f"{name}={value!r}: expected a fraction in [0, 1), e.g. 0.5")
    return fraction


@dataclass(frozen=True)
class Settings:
    label_studio_url: str | None = None
    label_studio_api_key: str | None = field(default=None, repr=False)
    workspace: Path = Path(DEFAULT_WORKSPACE)
    backend_url: str | None = None
    image_url: str | None = None
    basic_auth_user: str | None = None
    basic_auth_pass: str | None = field(default=None, repr=False)
    webhook_secret: str | None = field(default=None, repr=False)
    broker_url: str | None = None
    label_config: str = "rating"
    sharded_scoring: bool = False  # score the pool shard by shard on the Celery workers
    image_hosts: str | None = None  # extra hosts task images may come from ("*": any public host)
    max_image_bytes: int | None = None
    fetch_timeout: float | None = None
    image_signing_key: str | None = field(default=None, repr=False)
    image_url_days: float | None = None
    images_unsigned: bool = False  # development only: plain image URLs, refused off loopback
    label_studio_origin: str | None = None  # as the browser sees Label Studio (CORS of /images)
    max_image_pixels: int | None = None
    prefill_predictions: bool = False  # open tasks with the model's guess selected (anchors the rater)
    prefetch: float = 0.5  # next batch when this fraction of a batch is left to rate (LoopConfig.prefetch)

    @classmethod
    def from_env(cls, **overrides) -> "Settings":
        """Settings from the environment; keyword arguments win over it."""
        values = dict(
            label_studio_url=(_env("LABEL_STUDIO_URL") or "").rstrip("/") or None,
            label_studio_api_key=_env("LABEL_STUDIO_API_KEY"),
            workspace=Path(_env("AGILE_WORKSPACE") or _env("MODEL_DIR") or DEFAULT_WORKSPACE),
            backend_url=(_env("AGILE_BACKEND_URL") or "").rstrip("/") or None,
            image_url=(_env("AGILE_IMAGE_URL") or "").rstrip("/") or None,
            basic_auth_user=_env("BASIC_AUTH_USER"),
            basic_auth_pass=_env("BASIC_AUTH_PASS"),
            webhook_secret=_env("AGILE_WEBHOOK_SECRET"),
            broker_url=_env("CELERY_BROKER_URL"),
            label_config=_env("AGILE_LABEL_CONFIG", "rating"),
            sharded_scoring=(_env("AGILE_SHARDED_SCORING") or "").lower() in ("1", "true", "yes"),
            image_hosts=_env("AGILE_IMAGE_HOSTS"),
            max_image_bytes=int(_env("AGILE_MAX_IMAGE_BYTES")) if _env("AGILE_MAX_IMAGE_BYTES") else None,
            fetch_timeout=float(_env("AGILE_FETCH_TIMEOUT")) if _env("AGILE_FETCH_TIMEOUT") else None,
            image_signing_key=_env("AGILE_IMAGE_SIGNING_KEY"),
            image_url_days=float(_env("AGILE_IMAGE_URL_DAYS")) if _env("AGILE_IMAGE_URL_DAYS") else None,
            images_unsigned=(_env("AGILE_IMAGES_UNSIGNED") or "").lower() in ("1", "true", "yes"),
            label_studio_origin=(_env("AGILE_LABEL_STUDIO_ORIGIN") or "").rstrip("/") or None,
            max_image_pixels=int(_env("AGILE_MAX_IMAGE_PIXELS")) if _env("AGILE_MAX_IMAGE_PIXELS") else None,
            prefill_predictions=(_env("AGILE_PREFILL_PREDICTIONS") or "").lower() in ("1", "true", "yes"),
            prefetch=_fraction("AGILE_PREFETCH", 0.5),
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values["workspace"], str):
            values["workspace"] = Path(values["workspace"])
        return cls(**values)

    def with_(self, **changes) -> "Settings":
        return replace(self, **changes)

    @property
    def images_base_url(self) -> str | None:
        """Base URL of local pool images as the browser sees them, or None if nothing serves them."""
        if self.image_url:
            return self.image_url
        return f"{self.backend_url}/images" if self.backend_url else None

    @property
    def browser_origin(self) -> str | None:
        """``scheme://host[:port]`` of Label Studio as the browser opens it (CORS of our images)."""
        from urllib.parse import urlsplit

        url = self.label_studio_origin or self.label_studio_url
        parts = urlsplit(url) if url else None
        return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts and parts.scheme and parts.netloc else None
