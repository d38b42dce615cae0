"""Find the embedding of a task's image: a pool image by id or URL, or a new one embedded on the fly.

Only ``http(s)://`` images from allowed hosts (see :mod:`ml_backend.fetch`) and ``data:`` images are
read for a task, never a local path: a crafted task must not make the backend read files of this
machine or reach into its network.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np

from agile_modeling.errors import ImageReadError
from agile_modeling.store.image_source import decode_image
from agile_modeling.workspace import Workspace
from ml_backend.fetch import FetchPolicy, fetch_image_bytes

_OUR_IMAGE = re.compile(r"/images/(\d+)$")


def fetch_task_image(url: str, policy: FetchPolicy):
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
        return decode_image("data: URL", data)
    if url.startswith(("http://", "https://")):
        return decode_image(url, fetch_image_bytes(url, policy))
    raise ImageReadError(f"{url[:100]!r} is neither an http(s) nor a data: URL, nor an image of the pool")


class TaskEmbeddings:
    """Embeddings for tasks' images, with an in-process cache of images embedded on the fly.

    Args:
        workspace: the pool and its encoder.
        policy: which web images may be fetched (default: none; data: URLs and pool images only).
        cache_size: how many on-the-fly embeddings to keep.
    """

    def __init__(self, workspace: Workspace, policy: FetchPolicy | None = None, cache_size: int = 10_000) -> None:
        self.workspace = workspace
        self.policy = policy or FetchPolicy(frozenset())
        self.cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self.cache_size = cache_size
        self._encoder = None

    def pool_ids(self, tasks: Sequence[dict], image_field: str) -> list[int | None]:
        """The pool id of each task's image: ``agile_image_id``, our image URL, or a pool URI."""
        store = self.workspace.store()
        n = len(store)
        ids: list[int | None] = []
        urls = []
        for task in tasks:
            data = task["data"]
            image_id = data.get("agile_image_id")
            url = data.get(image_field)
            if not (isinstance(image_id, int) and not isinstance(image_id, bool)) and isinstance(url, str):
                match = _OUR_IMAGE.search(url)
                image_id = int(match.group(1)) if match else None
            ids.append(image_id if isinstance(image_id, int) and 0 <= image_id < n else None)
            urls.append(url if isinstance(url, str) else "")
        unknown = [u for u, i in zip(urls, ids) if i is None and u]
        by_uri = store.ids_of_uris(unknown) if unknown else {}
        return [i if i is not None else by_uri.get(u) for i, u in zip(ids, urls)]

    def embed(self, tasks: Sequence[dict], image_field: str) -> tuple[np.ndarray, int]:
        """``((len(tasks), d) float32, number embedded on the fly)``.

        Raises:
            ImageReadError: naming the tasks whose images could not be read.
        """
        ids = self.pool_ids(tasks, image_field)
        view = self.workspace.store().vectors()
        out = np.zeros((len(tasks), view.shape[1]), dtype=np.float32)
        known = [n for n, i in enumerate(ids) if i is not None]
        if known:
            out[known] = view.take([ids[n] for n in known]).astype(np.float32)
        fresh, errors = 0, []
        for n, image_id in enumerate(ids):
            if image_id is not None:
                continue
            url = tasks[n]["data"].get(image_field)
            key = url if isinstance(url, str) else ""
            if key not in self.cache:
                try:
                    image = fetch_task_image(key, self.policy)
                except ImageReadError as exc:
                    errors.append(f"task {tasks[n].get('id', n)}: {exc}")
                    continue
                self.cache[key] = self.encoder().encode_images([image])[0].astype(np.float32)
                fresh += 1
                if len(self.cache) > self.cache_size:
                    self.cache.popitem(last=False)
            out[n] = self.cache[key]
        if errors:
            raise ImageReadError("cannot read the image of " + "; ".join(errors[:5]) + (" ..." if len(errors) > 5 else ""))
        return out, fresh

    def encoder(self):
        if self._encoder is None:
            self._encoder = self.workspace.image_encoder()
        return self._encoder
