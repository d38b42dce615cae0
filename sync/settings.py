"""Every setting of the product in one object, read from the environment once, at the composition
root (the CLI's ``main``, the worker's Celery app, the backend's WSGI module), and passed down.

The names follow the Label Studio ML backend's habits (``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``,
``BASIC_AUTH_USER``, ``MODEL_DIR``); ours start with ``AGILE_``. The core engine (``agile_modeling``)
reads no environment: it gets values from here. ``docs/configuration.md`` is generated from the
fields below (``agile config --markdown``) and a test keeps the two equal.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from agile_modeling.errors import ConfigurationError
from agile_modeling.workspace import DEFAULT_WORKSPACE

if TYPE_CHECKING:
    from agile_modeling.deliberation.providers.gemini import GeminiSettings

Parser = Callable[[str], Any]


# --- how a variable's text becomes a value (each raises ValueError saying what it expected) ------
def _text(value: str) -> str:
    return value


def _url(value: str) -> str:
    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        ok = False
    if not ok:
        raise ValueError("expected an http(s) URL, e.g. http://127.0.0.1:8080")
    return value.rstrip("/")


def _absolute_path(value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ValueError("expected an absolute path, e.g. /label-studio/data")
    return path


def _flag(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected 1 or 0 (also true/false, yes/no)")


def _whole_in(expected: str, accept: Callable[[int], bool]) -> Parser:
    """A parser of whole numbers that ``accept`` takes; otherwise "expected <expected>"."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            number = None
        if number is None or not accept(number):
            raise ValueError(f"expected {expected}")
        return number

    return parse


def _number_in(expected: str, accept: Callable[[float], bool]) -> Parser:
    """A parser of finite numbers that ``accept`` takes; otherwise "expected <expected>"."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not math.isfinite(number) or not accept(number):
            raise ValueError(f"expected {expected}")
        return number

    return parse


_positive_int = _whole_in("a positive whole number", lambda n: n > 0)
_threads = _whole_in("a whole number of threads (0: the default)", lambda n: n >= 0)
_seconds = _number_in("a positive number of seconds", lambda n: n > 0)
_period = _number_in("seconds between 1 and 86400", lambda n: 1 <= n <= 86400)
_days = _number_in("a positive number of days", lambda n: n > 0)
_fraction = _number_in("a fraction in [0, 1), e.g. 0.5", lambda n: 0 <= n < 1)


def _device(value: str) -> str:
    lowered = value.strip().lower()
    if lowered in ("auto", "cpu", "cuda", "mps") or re.fullmatch(r"cuda:\d+", lowered):
        return lowered
    raise ValueError("expected auto, cpu, cuda, cuda:N or mps")


def redact_url(value: str) -> str:
    """``value`` with the password of a ``scheme://user:password@host`` URL replaced by ``***``."""
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return value
    if not password:
        return value
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


class _Choice:
    """One of a closed set of words (the reference lists them)."""

    def __init__(self, *options: str) -> None:
        self.options = options

    def __call__(self, value: str) -> str:
        lowered = value.strip().lower()
        if lowered not in self.options:
            raise ValueError(f"expected one of {', '.join(self.options)}")
        return lowered


def _log_level(value: str) -> str:
    """A logging level name, in capitals: Label Studio reads the same variable and Python's logging
    knows only the capitalised names."""
    level = value.strip().upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ValueError("expected one of DEBUG, INFO, WARNING, ERROR")
    return level


SERVICES = "Label Studio and the services"
SECURITY = "Security of the ML backend and its images"
COMPUTE = "Compute"
DELIBERATION = "Agile Deliberation"
DEVELOPMENT = "Development and tests"


def setting(
    env: str | tuple[str, ...],
    help: str,
    default: Any = None,
    parse: Parser = _text,
    secret: bool = False,
    section: str = SERVICES,
) -> Any:
    """A field of :class:`Settings` read from the environment variable(s) ``env`` (first set wins)."""
    names = (env,) if isinstance(env, str) else env
    return field(
        default=default,
        repr=not secret,
        metadata={"env": names, "help": help, "parse": parse, "secret": secret, "section": section},
    )


@dataclass(frozen=True, repr=False)
class Settings:
    """The product's configuration. Build it with :meth:`from_env` at a composition root; change a
    copy with :meth:`with_` (a command-line flag wins over the environment)."""

    # --- Label Studio and the services ---------------------------------------------------------
    label_studio_url: str | None = setting(
        "LABEL_STUDIO_URL",
        "where the Label Studio server is, e.g. `http://127.0.0.1:8080`; unset: nothing is published",
        parse=_url,
    )
    label_studio_api_key: str | None = setting(
        "LABEL_STUDIO_API_KEY", "its API token (legacy token or personal access token)", secret=True
    )
    local_files_root: Path | None = setting(
        "LOCAL_FILES_DOCUMENT_ROOT",
        "Label Studio's local-files document root, where it is mounted on this machine at the same path (as "
        "Label Studio's own variable): images of a project's local-files storages are read from the disk, not "
        "through the server",
        parse=_absolute_path,
    )
    label_studio_data_dir: Path | None = setting(
        "LABEL_STUDIO_BASE_DATA_DIR",
        "Label Studio's data folder, where it is mounted on this machine (as Label Studio's own variable; its "
        "default is `~/.local/share/label-studio`): a project's uploads are read from its `media/upload`, not "
        "through the server",
        parse=_absolute_path,
    )
    workspace: Path = setting(
        ("AGILE_WORKSPACE", "MODEL_DIR"),
        "the workspace folder (pool, sessions, models); `MODEL_DIR` is an alias",
        default=Path(DEFAULT_WORKSPACE),
        parse=Path,
    )
    backend_url: str | None = setting(
        "AGILE_BACKEND_URL", "where Label Studio reaches our ML backend, e.g. `http://127.0.0.1:9090`", parse=_url
    )
    image_url: str | None = setting(
        "AGILE_IMAGE_URL",
        "base URL the browser loads local pool images from (default: the backend's `/images`)",
        parse=_url,
    )
    broker_url: str | None = setting(
        "CELERY_BROKER_URL",
        "`redis://...` to run workers distributed; unset: a folder broker in the workspace (one machine)",
    )
    sync_seconds: float = setting(
        "AGILE_SYNC_SECONDS",
        "period of the beat's reconciliation of every published project (webhooks make it faster)",
        default=15.0,
        parse=_period,
    )
    label_config: str = setting(
        "AGILE_LABEL_CONFIG",
        "the rating project's labeling interface: `rating` or `rating-note` (adds a free-text note)",
        default="rating",
        parse=_Choice("rating", "rating-note"),
    )
    prefetch: float = setting(
        "AGILE_PREFETCH",
        "select the next batch when this fraction of a batch is still to "
        "rate, so the rater's queue never runs dry (0: when all is rated, the paper)",
        default=0.5,
        parse=_fraction,
    )
    apply_each_round: bool = setting(
        "AGILE_APPLY_EACH_ROUND",
        "`1`: each new model of an adopted project's concept is written onto every task of that project, as "
        "`agile concept apply` does (the worker, after each round)",
        default=False,
        parse=_flag,
    )
    prefill_predictions: bool = setting(
        "AGILE_PREFILL_PREDICTIONS",
        "`1`: tasks open with the model's choice "
        "pre-selected (default: the rater sees only the image, as in the paper)",
        default=False,
        parse=_flag,
    )
    sharded_scoring: bool = setting(
        "AGILE_SHARDED_SCORING",
        "`1`: score the pool shard by shard on the Celery workers (scale-out)",
        default=False,
        parse=_flag,
    )
    shard_rows: int = setting(
        "AGILE_SHARD_ROWS", "pool rows per shard task of a sharded selection", default=250_000, parse=_positive_int
    )
    selection_timeout: float = setting(
        "AGILE_SELECTION_TIMEOUT",
        "seconds after which a sharded selection that never finished is launched again",
        default=300.0,
        parse=_seconds,
    )
    log_level: str = setting(
        "LOG_LEVEL",
        "what the ML backend logs of its own work: `INFO` (the default: model loads, the image tower's "
        "precision and why), `DEBUG`, `WARNING` or `ERROR`; other libraries log warnings and errors only "
        "(Label Studio reads the same variable, in capitals)",
        default="INFO",
        parse=_log_level,
    )
    # --- security of the backend and its images --------------------------------------------------
    basic_auth_user: str | None = setting(
        "BASIC_AUTH_USER", "user name the ML backend demands (Label Studio is told to send it)", section=SECURITY
    )
    basic_auth_pass: str | None = setting("BASIC_AUTH_PASS", "its password", secret=True, section=SECURITY)
    webhook_secret: str | None = setting(
        "AGILE_WEBHOOK_SECRET",
        "shared secret Label Studio sends with webhooks (header `X-Agile-Secret`)",
        secret=True,
        section=SECURITY,
    )
    image_signing_key: str | None = setting(
        "AGILE_IMAGE_SIGNING_KEY",
        "key of the signed image URLs (default: derived from the API key)",
        secret=True,
        section=SECURITY,
    )
    image_url_days: float | None = setting(
        "AGILE_IMAGE_URL_DAYS", "lifetime of a signed image URL in days (default 30)", parse=_days, section=SECURITY
    )
    images_unsigned: bool = setting(
        "AGILE_IMAGES_UNSIGNED",
        "`1`: plain `/images/<id>` URLs (development; refused off loopback)",
        default=False,
        parse=_flag,
        section=SECURITY,
    )
    label_studio_origin: str | None = setting(
        "AGILE_LABEL_STUDIO_ORIGIN",
        "the origin the browser opens Label "
        "Studio at, allowed by CORS on `/images` (default: that of "
        "`LABEL_STUDIO_URL`)",
        parse=_url,
        section=SECURITY,
    )
    image_hosts: str | None = setting(
        "AGILE_IMAGE_HOSTS",
        "extra hosts task images may be fetched from, comma separated (`*`: any public host)",
        section=SECURITY,
    )
    max_image_bytes: int | None = setting(
        "AGILE_MAX_IMAGE_BYTES", "largest task image fetched, in bytes", parse=_positive_int, section=SECURITY
    )
    max_image_pixels: int | None = setting(
        "AGILE_MAX_IMAGE_PIXELS",
        "decoded-size limit of a task image (default 40 megapixels)",
        parse=_positive_int,
        section=SECURITY,
    )
    fetch_timeout: float | None = setting(
        "AGILE_FETCH_TIMEOUT", "seconds to fetch one task image", parse=_seconds, section=SECURITY
    )
    cloud_images: str = setting(
        "AGILE_CLOUD_IMAGES",
        "how task images in cloud storage (`s3://`, `gs://`, `azure-blob://`) are read: `presign` (through "
        "Label Studio, with the project's storage credentials) or `direct` (fsspec with this environment's cloud "
        "credentials, e.g. `AWS_ACCESS_KEY_ID` / `AWS_ENDPOINT_URL` read by s3fs; `pip install "
        "'agile-modeling[cloud]'`)",
        default="presign",
        parse=_Choice("presign", "direct"),
        section=SECURITY,
    )
    # --- compute --------------------------------------------------------------------------------
    compute: str = setting(
        "AGILE_COMPUTE",
        "arithmetic of pool scoring, selection and search: `auto` (measured per machine), `bf16` or `fp32`",
        default="auto",
        parse=_Choice("auto", "bf16", "fp32"),
        section=COMPUTE,
    )
    torch_threads: int = setting(
        "AGILE_TORCH_THREADS",
        "threads of a training and of each worker child (0: the default, one)",
        default=0,
        parse=_threads,
        section=COMPUTE,
    )
    device: str = setting(
        "AGILE_DEVICE",
        "where `agile pool add` runs the image model: `auto`, `cpu`, `cuda[:N]` or `mps`",
        default="auto",
        parse=_device,
        section=COMPUTE,
    )
    # --- Agile Deliberation ---------------------------------------------------------------------
    provider: str = setting(
        "AGILE_PROVIDER",
        "the deliberation's model provider: `offline` (built in, no key) or `gemini`",
        default="offline",
        parse=_Choice("offline", "gemini"),
        section=DELIBERATION,
    )
    gemini_api_key: str | None = setting(
        ("GEMINI_API_KEY", "GOOGLE_API_KEY"), "key of the Gemini API", secret=True, section=DELIBERATION
    )
    gemini_model: str = setting(
        "AGILE_GEMINI_MODEL",
        "Gemini model of the classifier and the other steps",
        default="gemini-2.5-flash",
        section=DELIBERATION,
    )
    gemini_decompose_model: str = setting(
        "AGILE_GEMINI_DECOMPOSE_MODEL",
        "Gemini model of the decomposition",
        default="gemini-2.5-pro",
        section=DELIBERATION,
    )
    gemini_embedding_model: str = setting(
        "AGILE_GEMINI_EMBEDDING_MODEL",
        "Gemini text-embedding model",
        default="gemini-embedding-001",
        section=DELIBERATION,
    )
    gemini_base_url: str | None = setting(
        "GEMINI_BASE_URL", "another endpoint of the Gemini API (a proxy)", parse=_url, section=DELIBERATION
    )
    # --- development and tests ------------------------------------------------------------------
    shared_data: Path | None = setting(
        "AGILE_SHARED_DATA",
        "folder of the shared CLIP embeddings of the simulations (default: `../shared/data/clip-vit-b32`)",
        parse=Path,
        section=DEVELOPMENT,
    )
    label_studio_venv: Path = setting(
        "AGILE_LABEL_STUDIO_VENV",
        "virtual environment of the Label Studio that `agile up` and the tests start",
        default=Path(".venv-label-studio"),
        parse=Path,
        section=DEVELOPMENT,
    )
    fault_point: str | None = setting(
        "AGILE_FAULT_POINT",
        "reliability tests only: `<point>[:<n>]` kills the "
        "process the n-th time it passes the point (see `sync/faults.py`)",
        section=DEVELOPMENT,
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Settings from ``environ`` (default ``os.environ``); keyword arguments that are not None win.

        Raises :class:`ConfigurationError` naming the variable, its value and what was expected."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = next((env[name] for name in f.metadata["env"] if env.get(name, "").strip()), None)
            if raw is None:
                continue
            try:
                values[f.name] = f.metadata["parse"](raw.strip())
            except ValueError as exc:
                shown = "(hidden)" if f.metadata["secret"] else repr(redact_url(raw))
                name = next(n for n in f.metadata["env"] if env.get(n, "").strip())
                raise ConfigurationError(f"{name}={shown}: {exc}") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        if isinstance(values.get("workspace"), str):
            values["workspace"] = Path(values["workspace"])
        return cls(**values)

    def with_(self, **changes: Any) -> Settings:
        """A copy with ``changes`` (None values keep the current one: an unset flag changes nothing)."""
        changes = {k: (Path(v) if k == "workspace" else v) for k, v in changes.items() if v is not None}
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
        url = self.label_studio_origin or self.label_studio_url
        parts = urlsplit(url) if url else None
        return (
            f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}" if parts and parts.scheme and parts.netloc else None
        )

    def gemini(self) -> GeminiSettings:  # imported here: google-genai is an optional dependency's user
        """The Gemini provider's settings; :class:`ProviderError` saying what to set when there is no key."""
        from agile_modeling.deliberation.providers.gemini import GeminiSettings

        return GeminiSettings.with_key(
            self.gemini_api_key,
            model=self.gemini_model,
            decompose_model=self.gemini_decompose_model,
            embedding_model=self.gemini_embedding_model,
            base_url=self.gemini_base_url,
        )

    def as_env(self) -> dict[str, str]:
        """The environment variables that give a child process (the backend, a worker) these settings:
        every setting that differs from its default, the workspace always (as an absolute path)."""
        env = {"AGILE_WORKSPACE": str(Path(self.workspace).resolve())}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or value == f.default or f.name == "workspace":
                continue
            env[f.metadata["env"][0]] = ("1" if value else "0") if isinstance(value, bool) else str(value)
        return env

    def described(self) -> list[tuple[str, str]]:
        """``(variable, value)`` of every setting as in effect, secrets shown only as set or not."""
        rows = []
        for f in fields(self):
            value = getattr(self, f.name)
            shown = (
                ("(set)" if value else "(not set)")
                if f.metadata["secret"]
                else ("(not set)" if value is None else redact_url(str(value)))
            )
            rows.append((f.metadata["env"][0], shown))
        return rows

    def __repr__(self) -> str:
        """Every setting but the secrets, URLs without their passwords."""
        shown = ", ".join(
            f"{f.name}={redact_url(v) if isinstance(v := getattr(self, f.name), str) else v!r}"
            for f in fields(self)
            if not f.metadata["secret"]
        )
        return f"Settings({shown})"


def configuration_markdown() -> str:
    """The configuration reference (``docs/configuration.md``), generated from :class:`Settings`."""
    lines = [
        "# Configuration",
        "",
        "Generated from `sync/settings.py` by `agile config --markdown > docs/configuration.md` (a test keeps "
        "them equal).",
        "",
        "Every setting is an environment variable, read once when a command, the worker or the backend "
        "starts; a command-line flag wins over it. `agile config` prints the values in effect (secrets only "
        "as set or not set). A bad value stops the program with a message naming the variable.",
        "",
    ]
    section = None
    for f in fields(Settings):
        if f.metadata["section"] != section:
            section = f.metadata["section"]
            lines += ["", f"## {section}", "", "| Variable | Default | Meaning |", "|---|---|---|"]
        names = " or ".join(f"`{n}`" for n in f.metadata["env"])
        default = "" if f.default is None else f"`{int(f.default) if isinstance(f.default, bool) else f.default}`"
        if isinstance(f.metadata["parse"], _Choice):
            default += f" (one of {', '.join(f.metadata['parse'].options)})"
        lines.append(f"| {names} | {default} | {f.metadata['help']} |")
    return "\n".join(lines).replace("\n\n\n", "\n\n") + "\n"
