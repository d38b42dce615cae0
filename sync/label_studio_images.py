"""A Label Studio task's image bytes, wherever Label Studio keeps them, read with the project's
credentials (as HumanSignal's ML backends do with ``get_local_path``).

Where an image value points, and how it is read (checked against label-studio 1.23.2):

- ``/data/upload/<pid>/<file>`` (files uploaded to Label Studio) and ``/data/local-files/?d=<path>``
  (a local-files storage; ``d`` is relative to Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``): a GET
  through the server with the API key. A legacy token is sent as ``Authorization: Token <key>``; a
  personal access token (a JWT refresh token) is exchanged at ``POST /api/token/refresh/`` for an
  access token sent as ``Bearer`` (exchanged again when it expires or is refused).
  Where Label Studio's folders are mounted on this machine too (:class:`LabelStudioFolders`: settings
  ``LOCAL_FILES_DOCUMENT_ROOT`` and ``LABEL_STUDIO_BASE_DATA_DIR``, Label Studio's own names), the file is
  read from the disk instead, as ``get_local_path`` does: no HTTP round trip, and no work for a server that
  may share the machine's cores with the embedding. Only files the server would serve for the project
  are read so, and only while the API key lists the project's local-files storages
  (``/api/storages/localfiles``, asked again every minute): its uploads, and local files inside one of
  those storages. Anything else, or a file not there, is read through the server.
- ``s3://``, ``gs://``, ``azure-blob://`` (a cloud storage of the project): with ``cloud="presign"``
  (the default) through Label Studio's resolve endpoint ``GET /projects/<pid>/presign/?fileuri=<uri
  in URL-safe base64>`` (no ``/api`` prefix). When the storage presigns, it answers ``303`` to a
  presigned URL of the storage; otherwise it reads the object itself and answers the bytes. The task
  API hands such values out already resolved, as ``/tasks/<tid>/resolve/?fileuri=...``:
  :meth:`LabelStudioImages.pool_uri` turns them back into the cloud URI. With ``cloud="direct"`` the
  object is read with fsspec (s3fs, gcsfs, adlfs: ``pip install 'agile-modeling[cloud]'``) and the
  credentials of this environment (s3fs reads ``AWS_ACCESS_KEY_ID``, ``AWS_ENDPOINT_URL``, ...) or
  ``storage_options``.
- other ``http(s)`` URLs: :func:`sync.safe_fetch.fetch_image_bytes` under the safe-fetch policy
  (allowed origins, public addresses, size and time); Label Studio's own origin is always allowed,
  but the API key goes only to the paths above. ``data:`` URLs are decoded.

The presigned URL a resolve answer redirects to comes from Label Studio (the storage settings a
project administrator made), never from task data: Label Studio only resolves URIs of a bucket one of
the project's storages is configured for. So its origin is trusted (a MinIO on the local network
included) without ``AGILE_IMAGE_HOSTS``; it gets no API key (the signature is its credential), and
the size and time limits of the policy still apply, as they do to every read here.

Every failure is an :class:`ImageReadError` naming the URI, why, and what to fix; nothing is retried
(the caller decides).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import posixpath
import re
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_to_bytes, urlsplit

import httpx

from agile_modeling.errors import ImageReadError
from sync.safe_fetch import CONNECT_S, MAX_REDIRECTS, FetchPolicy, fetch_image_bytes
from sync.settings import Settings

CLOUD_SCHEMES = ("s3", "gs", "gcs", "azure-blob", "azure")
CLOUD_MODES = ("presign", "direct")
_FSSPEC_PROTOCOL = {"s3": "s3", "gs": "gs", "gcs": "gs", "azure-blob": "az", "azure": "az"}
_FSSPEC_PACKAGE = {"s3": "s3fs", "gs": "gcsfs", "az": "adlfs"}
_RESOLVE_PATH = re.compile(r"^/(?:tasks|projects)/\d+/(?:resolve|presign)/?$")
_AUTH_PATHS = ("/data/upload/", "/data/local-files/")
_STORAGE_SETTINGS = "Settings > Cloud Storage"
STORAGES_TTL_S = 60.0  # how long a project's list of local-files storages is trusted
STORAGES_RETRY_S = 10.0  # how soon a list that could not be had is asked again
log = logging.getLogger(__name__)


def _scheme(uri: str) -> str:
    return uri.split("://", 1)[0].lower() if "://" in uri else ""


def _jwt_claims(token: str) -> dict | None:
    """The claims of a JWT (unverified), or None if ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, binascii.Error):
        return None
    return claims if isinstance(claims, dict) else None


def is_cloud_uri(uri: str) -> bool:
    """Whether ``uri`` names an object of a cloud storage (``s3://``, ``gs://``, ``azure-blob://`` ...)."""
    return _scheme(uri) in CLOUD_SCHEMES


def resolve_url(label_studio_url: str, project_id: int, uri: str) -> str:
    """Label Studio's URL that resolves a cloud ``uri`` of the project's storages (a redirect to a presigned
    URL, or the bytes): what a signed-in browser loads too, so a companion project can show the image."""
    fileuri = base64.urlsafe_b64encode(uri.encode()).decode()
    return f"{label_studio_url.rstrip('/')}/projects/{int(project_id)}/presign/?fileuri={fileuri}"


def _inside(root: Path, relative: str) -> Path | None:
    """``root/relative`` with symbolic links resolved, or None if that leaves ``root`` (``..``, a link out) or
    cannot name a file here (a NUL byte, a name too long, a link loop, a folder this process may not search)."""
    try:
        base = root.resolve()
        # ".." as text first, as Label Studio does (posixpath.normpath), then the links
        candidate = (base / posixpath.normpath("/" + relative).lstrip("/")).resolve()
    except (OSError, ValueError, RuntimeError):  # RuntimeError: a link loop (Python 3.11)
        return None
    return candidate if candidate.is_relative_to(base) and candidate != base else None


def _within(path: Path, folder: Path) -> bool:
    return path == folder or path.is_relative_to(folder)


def read_regular_file(path: Path, root: Path, limit: int) -> bytes | None:
    """At most ``limit + 1`` bytes of ``path``, or None if it is not there, not readable, or (once opened)
    not inside ``root``: a link swapped in after ``path`` was resolved is caught where /proc tells the
    opened file's path (Linux; elsewhere only a link as the last component is refused, by O_NOFOLLOW).

    Raises ImageReadError for a FIFO, a device or a folder, which is opened without blocking and never
    handed to the server either (Label Studio would block a thread on a FIFO)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except IsADirectoryError:
        raise ImageReadError(f"{path.name} in Label Studio's folder is a folder, not an image file") from None
    except (OSError, ValueError):
        return None
    try:
        regular = stat.S_ISREG(os.fstat(fd).st_mode)
    except OSError:
        os.close(fd)
        return None
    if not regular:
        os.close(fd)
        raise ImageReadError(f"{path.name} in Label Studio's folder is not a regular file (a FIFO, a device?)")
    with os.fdopen(fd, "rb") as f:
        try:
            opened = Path(f"/proc/self/fd/{fd}")
            if opened.exists() and not _within(Path(os.readlink(opened)), root.resolve()):
                return None
            return f.read(limit + 1)
        except OSError:
            return None


@dataclass(frozen=True)
class LabelStudioFolders:
    """Label Studio's file folders, where they are mounted on this machine too, at the same paths Label
    Studio sees them (a backend beside Label Studio, or a volume mounted at the same path in docker compose).

    Only files Label Studio would serve for the project are read from them: uploads of the project
    (``media/upload/<pid>/``), and local files inside one of the project's local-files storages. Anything
    else goes to the server, which applies its own rules (``LOCAL_FILES_SERVING_ENABLED``, permissions).

    Attributes:
        local_files_root: Label Studio's ``LOCAL_FILES_DOCUMENT_ROOT``; ``?d=`` of a local-files URL is
            relative to it.
        data_dir: Label Studio's ``LABEL_STUDIO_BASE_DATA_DIR``; uploads are in its ``media/upload/<pid>/``.
    """

    local_files_root: Path | None = None
    data_dir: Path | None = None

    def __post_init__(self) -> None:
        for folder in (self.local_files_root, self.data_dir):
            if folder is not None and not Path(folder).is_absolute():
                raise ValueError(f"Label Studio's folders are absolute paths, not {str(folder)!r}")

    @classmethod
    def from_settings(cls, settings: Settings) -> LabelStudioFolders:
        return cls(settings.local_files_root, settings.label_studio_data_dir)

    def upload_of(self, project_id: int, path: str) -> tuple[Path, Path] | None:
        """``(file, its folder)`` of an upload path ``/data/upload/<project_id>/<name>`` of the project, or None."""
        prefix = f"/data/upload/{int(project_id)}/"
        if self.data_dir is None or not path.startswith(prefix):
            return None
        folder = self.data_dir / "media" / "upload" / str(int(project_id))
        found = _inside(folder, unquote(path.removeprefix(prefix)))  # posixpath.normpath there, as Django's
        return (found, folder) if found is not None else None

    def local_file_of(self, query: str, storages: Sequence[Path]) -> tuple[Path, Path] | None:
        """``(file, its folder)`` of a local-files URL's ``query`` (``d=<path>``) inside one of ``storages``
        (the project's local-files storage folders, resolved), or None."""
        if self.local_files_root is None:
            return None
        values = parse_qs(query, keep_blank_values=True).get("d")  # decoded once, the last wins: as Django
        found = _inside(self.local_files_root, values[-1]) if values and values[-1] else None
        if found is None:
            return None
        folder = next((f for f in storages if _within(found.parent, f)), None)
        return (found, folder) if folder is not None else None


class LabelStudioImages:
    """Reads the images of one Label Studio project's tasks (thread-safe).

    Args:
        label_studio_url: the server, e.g. ``http://127.0.0.1:8080``.
        api_key: a legacy API token or a personal access token.
        project_id: the project whose files are read (named in errors; resolves cloud URIs).
        policy: limits of every read, and the web origins plain URLs may come from (Label Studio's
            origin is added); default: Label Studio's origin only, default limits.
        cloud: ``presign`` (through Label Studio) or ``direct`` (fsspec, this environment's credentials).
        storage_options: keyword arguments of the fsspec file system of ``direct`` reads, e.g.
            ``{"endpoint_url": ..., "key": ..., "secret": ...}`` for s3fs.
        folders: Label Studio's folders mounted here, read from the disk (default: none).
    """

    def __init__(
        self,
        label_studio_url: str,
        api_key: str,
        project_id: int,
        policy: FetchPolicy | None = None,
        cloud: str = "presign",
        storage_options: dict | None = None,
        folders: LabelStudioFolders | None = None,
    ) -> None:
        if cloud not in CLOUD_MODES:
            raise ValueError(f"cloud must be one of {', '.join(CLOUD_MODES)}, not {cloud!r}")
        self.url = label_studio_url.rstrip("/")
        self.project_id = int(project_id)
        self.cloud = cloud
        self.storage_options = dict(storage_options or {})
        self.folders = folders or LabelStudioFolders()
        own = FetchPolicy.from_urls(self.url)
        self.policy = own if policy is None else replace(policy, allowed=policy.allowed | own.allowed)
        self._key = api_key
        self._jwt = _jwt_claims(api_key) is not None
        self._access: str | None = None
        self._lock = threading.Lock()
        self._filesystems: dict[str, Any] = {}
        self._storage_folders: list[Path] | None = None
        self._storages_until = 0.0  # monotonic time until which _storage_folders holds
        self._storages_lock = threading.Lock()
        timeout = httpx.Timeout(self.policy.timeout_s, connect=min(CONNECT_S, self.policy.timeout_s))
        self._ls = httpx.Client(timeout=timeout, follow_redirects=False, trust_env=False)
        self._storage = httpx.Client(
            timeout=timeout, follow_redirects=True, max_redirects=MAX_REDIRECTS, trust_env=False
        )

    @classmethod
    def for_project(cls, settings: Settings, project_id: int) -> LabelStudioImages:
        """The reader of a project's images with the Label Studio credentials, fetch policy, cloud mode
        and mounted folders of ``settings`` (which must name a Label Studio and its API key)."""
        if not (settings.label_studio_url and settings.label_studio_api_key):
            raise ValueError("reading a project's images needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        return cls(
            settings.label_studio_url,
            settings.label_studio_api_key,
            project_id,
            FetchPolicy.from_settings(settings),
            cloud=settings.cloud_images,
            folders=LabelStudioFolders.from_settings(settings),
        )

    def close(self) -> None:
        self._ls.close()
        self._storage.close()

    def __enter__(self) -> LabelStudioImages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the stable URI ------------------------------------------------------------------------
    def pool_uri(self, value: str) -> str:
        """The stable URI under which a task's image value is kept in the pool: a relative /data/... path made
        absolute on the Label Studio URL; cloud and web URIs as they are. Raises ImageReadError for a value that is
        no image reference (empty, not a string)."""
        if not isinstance(value, str) or not value.strip():
            raise ImageReadError(f"the task's image value {str(value)[:100]!r} is not an image reference")
        value = value.strip()
        if value.startswith("data:") or _scheme(value) in CLOUD_SCHEMES:
            return value
        absolute = self.url + value if value.startswith("/") else value
        if _scheme(absolute) not in ("http", "https"):
            raise ImageReadError(
                f"the task's image value {value[:100]!r} is no image reference "
                "(expected /data/..., http(s)://, data:, s3://, gs:// or azure-blob://)"
            )
        absolute = self._own_origin(absolute)
        cloud = self._resolved_cloud_uri(absolute)
        return cloud or absolute

    def _own_origin(self, url: str) -> str:
        """``url`` with Label Studio's origin spelt as in ``self.url`` when it names it in another case
        (``HTTP://LS:8080/...``: scheme and host are case-blind), so that it is read with the API key."""
        parts, own = urlsplit(url), urlsplit(self.url)
        if (parts.scheme.lower(), parts.netloc.lower()) != (own.scheme.lower(), own.netloc.lower()):
            return url
        return f"{own.scheme}://{own.netloc}{url[len(parts.scheme) + 3 + len(parts.netloc) :]}"

    def _resolved_cloud_uri(self, url: str) -> str | None:
        """The cloud URI inside a Label Studio resolve URL (``/tasks/<tid>/resolve/?fileuri=...``)."""
        if not url.startswith(self.url + "/"):
            return None
        parts = urlsplit(url[len(self.url) :])
        if not _RESOLVE_PATH.match(parts.path):
            return None
        fileuri = parse_qs(parts.query).get("fileuri", [""])[0]
        try:
            decoded = base64.urlsafe_b64decode(fileuri.encode()).decode()
        except (ValueError, binascii.Error):
            return None
        return decoded if _scheme(decoded) in CLOUD_SCHEMES else None

    # --- reading -------------------------------------------------------------------------------
    def read(self, uri: str) -> bytes:
        """The image bytes behind a pool_uri (thread-safe: called from a thread pool, reuse one httpx.Client)."""
        if not isinstance(uri, str) or not uri:
            raise ImageReadError(f"{str(uri)[:100]!r} is not an image URI")
        if uri.startswith("data:"):
            return self._data_url(uri)
        scheme = _scheme(uri)
        if scheme in CLOUD_SCHEMES:
            return self._direct(uri) if self.cloud == "direct" else self._presigned(uri)
        if uri.startswith("/"):
            uri = self.url + uri
        if uri.startswith(self.url + "/"):
            parts = urlsplit(uri)
            path = parts.path[len(urlsplit(self.url).path) :]
            if path.startswith(_AUTH_PATHS):
                data = self._from_disk(path, parts.query, uri)
                return data if data is not None else self._from_label_studio(uri, uri)
            if _RESOLVE_PATH.match(path):
                return self._from_label_studio(uri, uri)
        return fetch_image_bytes(uri, self.policy)

    def _data_url(self, uri: str) -> bytes:
        try:
            header, payload = uri.split(",", 1)
            data = base64.b64decode(payload, validate=True) if ";base64" in header else unquote_to_bytes(payload)
        except (ValueError, binascii.Error):
            raise ImageReadError("the task's data: URL is not valid (base64)") from None
        if len(data) > self.policy.max_bytes:
            raise ImageReadError(f"the task's data: image is larger than {self.policy.max_bytes} bytes")
        return data

    def _from_disk(self, path: str, query: str, uri: str) -> bytes | None:
        """The bytes of a Label Studio file path from its folder mounted here, or None (not mounted, not a
        file Label Studio would serve for this project, not there, not readable): then the server is asked."""
        if self.folders.data_dir is None and self.folders.local_files_root is None:
            return None
        storages = self._local_storages()  # None: the key did not open the project, so the server decides
        if storages is None:
            found = None
        elif path.startswith("/data/upload/"):
            found = self.folders.upload_of(self.project_id, path)
        else:
            found = self.folders.local_file_of(query, storages)
        data = read_regular_file(*found, self.policy.max_bytes) if found else None
        if data is not None and len(data) > self.policy.max_bytes:
            raise self._too_large(uri)
        return data

    def _local_storages(self) -> list[Path] | None:
        """The folders of the project's local-files import storages, as Label Studio lists them to this key
        (asked again after STORAGES_TTL_S; None while the key cannot list them, asked again after
        STORAGES_RETRY_S): files are read from the disk only while the key opens the project."""
        with self._storages_lock:
            now = time.monotonic()
            if self._storages_until > now:
                return self._storage_folders
            folders: list[Path] | None = None
            why = ""
            try:
                answer = self._ls.get(
                    f"{self.url}/api/storages/localfiles",
                    params={"project": self.project_id},
                    headers={"Authorization": self._authorization()},
                )
                listed = answer.json() if answer.status_code == 200 else None
                if isinstance(listed, list):
                    folders = [
                        Path(entry["path"]).resolve()
                        for entry in listed
                        if isinstance(entry, dict) and isinstance(entry.get("path"), str) and entry["path"]
                    ]
                else:
                    why = f"HTTP {answer.status_code}"
            except (httpx.HTTPError, ValueError, OSError, ImageReadError) as exc:
                why = exc.__class__.__name__
            if folders is None:
                log.warning(
                    "cannot list project %d's storages at %s (%s): its files are read through the server",
                    self.project_id,
                    self.url,
                    why,
                )
            self._storage_folders = folders
            self._storages_until = now + (STORAGES_TTL_S if folders is not None else STORAGES_RETRY_S)
            return folders

    # --- through Label Studio --------------------------------------------------------------------
    def _authorization(self, stale: str | None = None) -> str:
        if not self._jwt:
            return f"Token {self._key}"
        with self._lock:
            claims = _jwt_claims(self._access) if self._access else None
            fresh = claims is not None and float(claims.get("exp", 0)) > time.time() + 10
            if not fresh or self._access == stale:
                self._access = self._refresh()
            return f"Bearer {self._access}"

    def _refresh(self) -> str:
        try:
            answer = self._ls.post(f"{self.url}/api/token/refresh/", json={"refresh": self._key})
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        access = answer.json().get("access") if answer.status_code == 200 else None
        if not isinstance(access, str):
            raise ImageReadError(
                f"Label Studio at {self.url} refused to exchange the personal access token (HTTP "
                f"{answer.status_code}): the API key cannot read project {self.project_id}'s files: "
                "check LABEL_STUDIO_API_KEY (is the token revoked or expired?)"
            )
        return access

    def _unreachable(self, exc: Exception) -> ImageReadError:
        return ImageReadError(
            f"cannot reach Label Studio at {self.url} ({exc.__class__.__name__}: {exc}); is the server running?"
        )

    def _from_label_studio(self, url: str, uri: str) -> bytes:
        """GET ``url`` on Label Studio with the API key: its bytes, or those of the presigned URL it redirects to."""
        authorization = self._authorization()
        for attempt in range(2):
            try:
                with self._ls.stream("GET", url, headers={"Authorization": authorization}) as answer:
                    if answer.status_code == 401 and self._jwt and attempt == 0:
                        authorization = self._authorization(stale=authorization.removeprefix("Bearer "))
                        continue
                    if answer.status_code in (301, 302, 303, 307, 308) and "location" in answer.headers:
                        location = str(answer.url.join(answer.headers["location"]))
                        answer.close()
                        return self._from_storage(location, uri)
                    if answer.status_code == 200:
                        return self._body(answer, uri, time.monotonic() + self.policy.timeout_s)
                    answer.read()
                    raise self._label_studio_error(answer, uri)
            except httpx.TimeoutException:
                raise self._too_slow(uri) from None
            except httpx.HTTPError as exc:
                raise self._unreachable(exc) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _label_studio_error(self, answer: httpx.Response, uri: str) -> ImageReadError:
        status, path = answer.status_code, urlsplit(str(answer.url)).path
        if status in (401, 403):
            return ImageReadError(
                f"Label Studio answered HTTP {status} for {uri[:200]}: the API key cannot read project "
                f"{self.project_id}'s files: check LABEL_STUDIO_API_KEY"
            )
        if _RESOLVE_PATH.match(path[len(urlsplit(self.url).path) :]):
            detail = ""
            if status == 424:
                try:
                    body = answer.json()
                    detail = f": {body.get('error', '')}: {body.get('detail', '')}"
                except ValueError:
                    pass
                return ImageReadError(
                    f"Label Studio could not read {uri[:200]} from project {self.project_id}'s cloud storage "
                    f"(HTTP 424{detail}): the file may be gone from the bucket, or the storage's credentials are "
                    f"wrong: check the bucket and the credentials of project {self.project_id}'s source storage "
                    f"({_STORAGE_SETTINGS} in Label Studio)"
                )
            if status == 404:
                return ImageReadError(
                    f"Label Studio cannot resolve {uri[:200]} (HTTP 404): project {self.project_id} has no source "
                    "storage for this bucket, or the storage could not sign a URL for it (no credentials): add or "
                    f"fix the storage in project {self.project_id}'s {_STORAGE_SETTINGS} (bucket, credentials), "
                    "or set AGILE_CLOUD_IMAGES=direct to read it with this environment's credentials"
                )
        if status == 404 or (status == 500 and path.startswith("/data/upload/")):
            # 1.23.2 answers 500 for an upload path it has no record of, 404 for a record whose file is missing
            return ImageReadError(
                f"the file is gone from Label Studio: {uri[:200]} answered HTTP {status} "
                "(deleted, or its project's storage no longer contains it)"
            )
        return ImageReadError(f"Label Studio answered HTTP {status} for {uri[:200]}: {answer.text[:200]}")

    # --- the storage behind a presigned URL -------------------------------------------------------
    def _from_storage(self, location: str, uri: str) -> bytes:
        parts = urlsplit(location)
        shown = f"{parts.scheme}://{parts.netloc}{parts.path}"[:200]  # never the signature
        if parts.scheme not in ("http", "https"):
            raise ImageReadError(f"Label Studio resolved {uri[:200]} to a non-web URL {shown!r}")
        deadline = time.monotonic() + self.policy.timeout_s
        try:
            with self._storage.stream("GET", location) as answer:
                if answer.status_code == 200:
                    return self._body(answer, uri, deadline)
                body = answer.read()[:2000].decode("utf-8", "replace")
        except httpx.TimeoutException:
            raise self._too_slow(uri) from None
        except httpx.HTTPError as exc:
            raise ImageReadError(
                f"cannot reach the storage at {shown} that Label Studio's presigned URL of {uri[:200]} points to "
                f"({exc.__class__.__name__}): check the endpoint of project {self.project_id}'s cloud storage "
                f"({_STORAGE_SETTINGS}); it must be reachable from this machine too"
            ) from None
        code = re.search(r"<Code>([^<]{1,80})</Code>", body)
        why = f"HTTP {answer.status_code}" + (f" {code.group(1)}" if code else "")
        if answer.status_code == 404:
            return_error = f"the file is gone from the bucket: the storage answered {why} for {uri[:200]}"
        elif answer.status_code in (400, 401, 403):
            return_error = (
                f"the storage refused Label Studio's presigned URL of {uri[:200]} ({why}): check the credentials "
                f"of project {self.project_id}'s cloud storage ({_STORAGE_SETTINGS} in Label Studio), or the file "
                "is gone from the bucket"
            )
        else:
            return_error = (
                f"the storage answered {why} to Label Studio's presigned URL of {uri[:200]}: check project "
                f"{self.project_id}'s cloud storage ({_STORAGE_SETTINGS}: endpoint, credentials)"
            )
        raise ImageReadError(return_error)

    def _body(self, answer: httpx.Response, uri: str, deadline: float) -> bytes:
        declared = answer.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.policy.max_bytes:
            raise self._too_large(uri)
        data = bytearray()
        for piece in answer.iter_bytes():
            data += piece
            if len(data) > self.policy.max_bytes:
                raise self._too_large(uri)
            if time.monotonic() > deadline:
                raise self._too_slow(uri)
        return bytes(data)

    def _too_large(self, uri: str) -> ImageReadError:
        return ImageReadError(
            f"the image {uri[:200]} is larger than {self.policy.max_bytes} bytes (AGILE_MAX_IMAGE_BYTES)"
        )

    def _too_slow(self, uri: str) -> ImageReadError:
        return ImageReadError(
            f"reading the image {uri[:200]} took longer than {self.policy.timeout_s:g} s (AGILE_FETCH_TIMEOUT)"
        )

    def _presigned(self, uri: str) -> bytes:
        return self._from_label_studio(resolve_url(self.url, self.project_id, uri), uri)

    # --- directly, with fsspec ------------------------------------------------------------------
    def _filesystem(self, protocol: str) -> Any:
        with self._lock:
            if protocol not in self._filesystems:
                package = _FSSPEC_PACKAGE[protocol]
                try:
                    import fsspec

                    options = dict(self.storage_options)
                    if protocol == "s3":  # bounded: one try, the policy's time
                        config = dict(options.get("config_kwargs") or {})
                        config.setdefault("connect_timeout", min(CONNECT_S, self.policy.timeout_s))
                        config.setdefault("read_timeout", self.policy.timeout_s)
                        config.setdefault("retries", {"max_attempts": 1})
                        options["config_kwargs"] = config
                    fs = fsspec.filesystem(protocol, skip_instance_cache=True, **options)
                    if protocol == "s3":
                        fs.retries = 1  # s3fs's own retry loop (a class attribute, 5 by default)
                    self._filesystems[protocol] = fs
                except ImportError:
                    raise ImageReadError(
                        f"reading {protocol}:// images directly (AGILE_CLOUD_IMAGES=direct) needs fsspec and "
                        f"{package}: pip install 'agile-modeling[cloud]', or set AGILE_CLOUD_IMAGES=presign to read "
                        "them through Label Studio"
                    ) from None
                except Exception as exc:  # a third party's configuration error, of any type
                    raise ImageReadError(
                        f"cannot set up {package} to read {protocol}:// images ({exc.__class__.__name__}: {exc}); "
                        "check the storage options / cloud credentials of this environment"
                    ) from None
            return self._filesystems[protocol]

    def _direct(self, uri: str) -> bytes:
        scheme = _scheme(uri)
        protocol = _FSSPEC_PROTOCOL[scheme]
        path = uri.split("://", 1)[1]
        fs = self._filesystem(protocol)
        credentials = {
            "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_ENDPOINT_URL for an S3-compatible server)",
            "gs": "GOOGLE_APPLICATION_CREDENTIALS",
            "az": "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY",
        }[protocol]
        try:
            size = fs.size(path)
            if size is not None and size > self.policy.max_bytes:
                raise self._too_large(uri)
            with fs.open(path, "rb") as f:
                data = f.read(self.policy.max_bytes + 1)
        except ImageReadError:
            raise
        except FileNotFoundError:
            raise ImageReadError(f"the file is gone from the bucket: {uri[:200]} does not exist") from None
        except PermissionError as exc:
            raise ImageReadError(
                f"the cloud credentials of this environment cannot read {uri[:200]} ({exc}): check {credentials}, "
                "or set AGILE_CLOUD_IMAGES=presign to read it through Label Studio"
            ) from None
        except Exception as exc:  # s3fs, gcsfs, adlfs raise many types (botocore, aiohttp, OSError)
            raise ImageReadError(
                f"cannot read {uri[:200]} directly ({exc.__class__.__name__}: {str(exc)[:200]}): check {credentials}"
            ) from None
        if len(data) > self.policy.max_bytes:
            raise self._too_large(uri)
        return bytes(data)
