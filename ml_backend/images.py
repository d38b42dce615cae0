"""Find the embedding of a task's image: a pool image by id or URL, or a new one embedded on the fly.

Only ``http(s)://`` images from allowed origins (see :mod:`sync.safe_fetch`) and ``data:`` images
are read for a task, never a local path: a crafted task must not make the backend read files of this
machine or reach into its network. Only URLs under this backend's own image base URL (plain or
signed) are taken for pool images by id; ``.../images/5`` on any other host is just a web image.

An image is embedded on the fly only when the workspace's encoder makes the pool's embedding space
(a precomputed pool, such as the demo's OpenAI CLIP embeddings, is not the default LAION model's):
otherwise the task gets no prediction and the reason says which encoder to configure.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol
from urllib.parse import parse_qsl

import numpy as np
from PIL import Image, UnidentifiedImageError

from agile_modeling.encoders import OpenClipEncoder
from agile_modeling.errors import AgileError, ImageReadError
from agile_modeling.workspace import Workspace
from sync.safe_fetch import FetchPolicy, fetch_image_bytes

log = logging.getLogger("agile.backend")

#: workspace.json key declaring that the configured ``open_clip`` model made the pool's embeddings
POOL_ENCODER_KEY = "open_clip_makes_pool"
#: open_clip settings known to reproduce a precomputed pool's encoder
KNOWN_POOL_ENCODERS = {
    "openai-clip-ViT-B-32 (shared precomputed embeddings)": {"model": "ViT-B-32", "pretrained": "openai"}
}


class EncoderMismatchError(AgileError):
    """On-the-fly embedding would use another embedding space than the pool's."""


def decode_limited(what: str, data: bytes, max_pixels: int) -> Image.Image:
    """Decode ``data`` to RGB, refusing more than ``max_pixels`` from the header, before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            width, height = im.size  # from the header: nothing decoded yet
            if width * height > max_pixels:
                raise ImageReadError(
                    f"{what} is {width}x{height} pixels, more than the limit of {max_pixels} (AGILE_MAX_IMAGE_PIXELS)"
                )
            im.draft("RGB", (1024, 1024))  # JPEG: decode at a reduced scale (the encoder needs ~224 px)
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{what} is not a readable image ({type(exc).__name__}: {exc})") from None


def fetch_task_image(url: str, policy: FetchPolicy) -> Image.Image:
    """Decode a task's image from a web or data URL; anything else is refused."""
    if not isinstance(url, str) or not url:
        raise ImageReadError("the task has no image URL")
    if url.startswith("data:"):
        try:
            header, payload = url.split(",", 1)
            data = base64.b64decode(payload, validate=True) if ";base64" in header else payload.encode()
        except (ValueError, binascii.Error):
            raise ImageReadError("the task's data: URL is not valid base64") from None
        if len(data) > policy.max_bytes:
            raise ImageReadError(f"the task's image is larger than {policy.max_bytes} bytes")
        return decode_limited("the data: URL", data, policy.max_pixels)
    if url.startswith(("http://", "https://")):
        return decode_limited(url[:100], fetch_image_bytes(url, policy), policy.max_pixels)
    raise ImageReadError(f"{url[:100]!r} is neither an http(s) nor a data: URL, nor an image of the pool")


UNPAIRED_SURROGATE = "the image URL is not valid text (it holds an unpaired UTF-16 surrogate)"


def task_image_url(task: dict, image_field: str) -> str | None:
    """The task's image URL as text that can be stored, hashed and sent: "" when there is none (not a
    string), None when it cannot be encoded (JSON's ``"\\ud800"`` decodes to an unpaired surrogate)."""
    url = task["data"].get(image_field)
    if not isinstance(url, str):
        return ""
    try:
        url.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return url


def our_image_id(url: str, base: str | None) -> int | None:
    """The pool id in ``<base>/<id>`` or its signed form ``<base>/<id>?exp=...&sig=...``, else None."""
    if not base or not url.startswith(base + "/"):
        return None
    rest, _, query = url[len(base) + 1 :].partition("?")
    if not (rest.isascii() and rest.isdigit() and len(rest) <= 18):
        return None
    if query and {k for k, _ in parse_qsl(query, keep_blank_values=True)} - {"exp", "sig"}:
        return None
    return int(rest)


class EmbeddingCache:
    """A thread-safe LRU of on-the-fly embeddings, keyed by the SHA-256 of the image URL (a ``data:``
    URL may be megabytes: it is never kept) and bounded by the bytes it holds."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._items: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(url: str) -> bytes:
        return hashlib.sha256(url.encode("utf-8", "surrogatepass")).digest()

    def get(self, url: str) -> np.ndarray | None:
        key = self.key(url)
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, url: str, vector: np.ndarray) -> None:
        key, size = self.key(url), vector.nbytes + 32
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.bytes -= old.nbytes + 32
            self._items[key] = vector
            self.bytes += size
            while self.bytes > self.max_bytes and self._items:
                _, dropped = self._items.popitem(last=False)
                self.bytes -= dropped.nbytes + 32

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, url: str) -> bool:
        with self._lock:
            return self.key(url) in self._items


class TaskImageReader(Protocol):
    """Reads a task's image where Label Studio keeps it (:class:`sync.label_studio_images.LabelStudioImages`)."""

    def pool_uri(self, value: str) -> str: ...

    def read(self, uri: str) -> bytes: ...


class TaskEmbeddings:
    """Embeddings for tasks' images, with an in-process cache of images embedded on the fly.

    Args:
        workspace: the pool and its encoder.
        policy: which web images may be fetched (default: none; data: URLs and pool images only).
        images_base_url: this backend's own image base URL (as in the tasks), whose ids are pool ids.
        cache_bytes: memory the on-the-fly embeddings may hold.
    """

    def __init__(
        self,
        workspace: Workspace,
        policy: FetchPolicy | None = None,
        images_base_url: str | None = None,
        cache_bytes: int = 64 * 1024 * 1024,
        device: str = "cpu",
        precision: str = "auto",
        fetch_workers: int = 8,
    ) -> None:
        self.workspace = workspace
        self.policy = policy or FetchPolicy()
        self.images_base_url = images_base_url.rstrip("/") if images_base_url else None
        self.cache = EmbeddingCache(cache_bytes)
        self._encoder: OpenClipEncoder | None = None
        self._lock = threading.Lock()
        self.device, self.precision, self.fetch_workers = device, precision, max(1, fetch_workers)

    def pool_ids(
        self, tasks: Sequence[dict], image_field: str, known: Mapping[int, int] | None = None
    ) -> list[int | None]:
        """The pool id of each task's image: ``known[task id]`` (an adopted project's tasks, mapped by
        the sync), ``agile_image_id``, our image URL, or a pool URI."""
        store = self.workspace.store()
        n = len(store)
        ids: list[int | None] = []
        urls = []
        for task in tasks:
            data = task["data"]
            task_id = task.get("id")
            image_id = known.get(task_id) if known and type(task_id) is int else None
            if image_id is None:
                image_id = data.get("agile_image_id")
            url = task_image_url(task, image_field) or ""
            if not (isinstance(image_id, int) and not isinstance(image_id, bool)) and url:
                image_id = our_image_id(url, self.images_base_url)
            ids.append(image_id if isinstance(image_id, int) and 0 <= image_id < n else None)
            urls.append(url)
        unknown = [u for u, i in zip(urls, ids) if i is None and u]
        by_uri = store.ids_of_uris(unknown) if unknown else {}
        return [i if i is not None else by_uri.get(u) for i, u in zip(ids, urls)]

    def embed(
        self,
        tasks: Sequence[dict],
        image_field: str,
        task_pool_ids: Mapping[int, int] | None = None,
        reader: TaskImageReader | None = None,
    ) -> tuple[np.ndarray, int, dict[int, str]]:
        """``((len(tasks), d) float32, number embedded on the fly, {task index: why it has no embedding})``.

        ``task_pool_ids`` maps task ids to pool ids the caller knows (see :meth:`pool_ids`). ``reader`` reads
        images that are not in the pool where Label Studio keeps them (an adopted project's new tasks); without
        it only web and data: URLs are read. A task whose image cannot be read or embedded keeps a zero row and
        its reason: the caller answers every other task.
        """
        ids = self.pool_ids(tasks, image_field, task_pool_ids)
        view = self.workspace.store().vectors()
        out = np.zeros((len(tasks), view.shape[1]), dtype=np.float32)
        known = [n for n, i in enumerate(ids) if i is not None]
        if known:
            out[known] = view.take([i for i in ids if i is not None]).astype(np.float32)
        errors: dict[int, str] = {}
        misses: dict[str, list[int]] = {}  # url -> task indices, each distinct image fetched once
        for n, image_id in enumerate(ids):
            if image_id is not None:
                continue
            url = task_image_url(tasks[n], image_field)
            if url is None:
                errors[n] = UNPAIRED_SURROGATE
                continue
            cached = self.cache.get(url) if url else None
            if cached is None:
                misses.setdefault(url, []).append(n)
            else:
                out[n] = cached
        if not misses:
            return out, 0, errors
        try:
            encoder = self.encoder()  # refused before any download if it is the wrong space
        except AgileError as exc:  # wrong or unavailable encoder
            for indices in misses.values():
                errors.update(dict.fromkeys(indices, str(exc)))
            return out, 0, errors
        urls = list(misses)
        # fetched and decoded concurrently (bounded), then embedded in one batch
        with ThreadPoolExecutor(min(self.fetch_workers, len(urls))) as pool:
            fetched = list(pool.map(lambda url: self._fetch(url, reader), urls))
        good = [(u, im) for u, im in zip(urls, fetched) if not isinstance(im, str)]
        for u, im in zip(urls, fetched):
            if isinstance(im, str):
                errors.update(dict.fromkeys(misses[u], im))
        if good:
            try:
                vectors = encoder.encode_images([im for _, im in good]).astype(np.float32)
            except AgileError as exc:
                for u, _ in good:
                    errors.update(dict.fromkeys(misses[u], str(exc)))
                return out, 0, errors
            for n, (u, _) in enumerate(good):
                self.cache.put(u, vectors[n])
                out[misses[u]] = vectors[n]
        return out, len(good), errors

    def _fetch(self, url: str, reader: TaskImageReader | None = None) -> Image.Image | str:
        """The decoded image, or the reason it cannot be read (a string)."""
        try:
            if reader is not None:
                return decode_limited(url[:100], reader.read(reader.pool_uri(url)), self.policy.max_pixels)
            return fetch_task_image(url, self.policy)
        except AgileError as exc:
            return str(exc)

    def encoder(self) -> OpenClipEncoder:
        """The encoder of images that are not in the pool, if it makes the pool's embedding space."""
        with self._lock:
            if self._encoder is None:
                pool = self.workspace.store().encoder_name
                config = self.workspace.config()
                spec = self.workspace.encoder_spec()
                ours = OpenClipEncoder(spec).name  # its name needs no weights
                if pool not in (ours, "unknown") and config.get(POOL_ENCODER_KEY) != pool:
                    raise EncoderMismatchError(self._mismatch(pool, ours, config))
                # the pool's model in the precision this CPU runs fastest (same embedding space)
                self._encoder = self.workspace.image_encoder().with_runtime(
                    device=self.device, precision=self.precision
                )
            return self._encoder

    def _mismatch(self, pool: str, ours: str, config: dict) -> str:
        example = KNOWN_POOL_ENCODERS.get(pool, {"model": "<open_clip model>", "pretrained": "<its pretrained tag>"})
        setting = json.dumps({"open_clip": {**example, "device": "cpu"}, POOL_ENCODER_KEY: pool})
        return (
            f"this image is not in the pool, and the pool's embeddings were made by {pool!r} while this backend "
            f"would embed it with {ours} ({'workspace.json' if config.get('open_clip') else 'the default'}), "
            f"another embedding space, so it gets no prediction. Add the image to the pool first, or configure the "
            f"open_clip model that made the pool in {self.workspace.root / 'workspace.json'}: {setting}"
        )
