"""Read, hash, decode and preprocess images in parallel, in input order, for the embedding model.

On a CPU the model is the cost (ViT-B-32: about 20 images/s in fp32 on 2 cores, while one core decodes
a 500x375 JPEG and preprocesses it at about 500/s), so decoding runs in a small thread pool beside
the model and the model never waits: PIL's decoder and resize and torch's normalisation release the
GIL, and threads need no pickling of tensors between processes (see ``benchmarks/results/embedding.md``
for the thread pool against a torch DataLoader with worker processes on 2 cores).

Remote images (``http(s)://``) are fetched by a separate pool of I/O threads with bounded
parallelism (``fetch_workers``), then decoded by the decode pool. At most ``window`` images are in
flight, so memory stays bounded whatever the length of the list.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from PIL import Image

from agile_modeling.errors import ImageReadError
from agile_modeling.store.image_source import content_hash, decode_image, read_bytes

DEFAULT_FETCH_WORKERS = 16

_A = TypeVar("_A")
_B = TypeVar("_B")
#: what a caller makes of each decoded RGB image in the worker (e.g. an encoder's preprocessing)
Prepare = Callable[[Image.Image], Any]
#: the bytes behind a URI; raises ImageReadError (default: read_bytes, local paths and http(s))
Reader = Callable[[str], bytes]


@dataclass(frozen=True)
class Decoded:
    """One image ready for the model: ``item`` is what ``prepare`` made of it (the RGB image if none)."""

    uri: str
    content_hash: str
    item: Any


@dataclass(frozen=True)
class Skipped:
    """An image that could not be read or decoded, and why."""

    uri: str
    reason: str


def default_decode_workers() -> int:
    """Decode threads: one per core up to 4 (the model's own threads use the cores too; on 2 cores
    2 decode threads keep a 100+ images/s model fed, see the benchmark)."""
    return max(1, min(4, os.cpu_count() or 1))


def _is_remote(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def _decode(uri: str, data: bytes, prepare: Prepare | None, draft_size: int | None) -> Decoded:
    digest = content_hash(data)
    image = decode_image(uri, data, draft_size)
    if prepare is not None:
        try:
            item = prepare(image)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ImageReadError(f"{uri} could not be preprocessed ({type(exc).__name__}: {exc})") from exc
    else:
        item = image
    return Decoded(uri, digest, item)


def _read_decode(uri: str, prepare: Prepare | None, draft_size: int | None, read: Reader = read_bytes) -> Decoded:
    return _decode(uri, read(uri), prepare, draft_size)


def _then(first: Future[_A], pool: ThreadPoolExecutor, fn: Callable[[_A], _B]) -> Future[_B]:
    """A future of ``fn(first.result())`` run on ``pool`` once ``first`` is done (no thread waits)."""
    out: Future[_B] = Future()

    def relay(inner: Future[_B]) -> None:
        exc = inner.exception()
        out.set_exception(exc) if exc is not None else out.set_result(inner.result())

    def start(done: Future[_A]) -> None:
        exc = done.exception()
        if exc is not None:
            out.set_exception(exc)
            return
        try:
            pool.submit(fn, done.result()).add_done_callback(relay)
        except RuntimeError as err:  # the pool is shutting down (the consumer stopped early)
            out.set_exception(err)

    first.add_done_callback(start)
    return out


def decoded_images(
    uris: Iterable[str],
    prepare: Prepare | None = None,
    workers: int | None = None,
    fetch_workers: int = DEFAULT_FETCH_WORKERS,
    window: int | None = None,
    draft_size: int | None = None,
    read: Reader | None = None,
) -> Iterator[Decoded | Skipped]:
    """One :class:`Decoded` or :class:`Skipped` per URI, in the order given.

    Args:
        prepare: applied to each decoded RGB image in the worker (e.g. the encoder's preprocessing).
        workers: decode threads (default :func:`default_decode_workers`); ``0`` decodes in this thread.
        fetch_workers: concurrent downloads of ``http(s)`` images at most.
        window: images in flight at most (default ``64 * max(workers, 1)`` and at least the fetch pool's size).
        draft_size: see :func:`agile_modeling.store.image_source.decode_image`.
        read: reads a URI's bytes (default :func:`read_bytes`); a caller's reader (e.g. one that
            fetches through a server with credentials) is treated as remote: it runs in the fetch pool.
    """
    uri: str | None  # None once ``uris`` is exhausted
    workers = default_decode_workers() if workers is None else int(workers)
    if workers <= 0:
        for uri in uris:
            try:
                yield _read_decode(uri, prepare, draft_size, read or read_bytes)
            except ImageReadError as exc:
                yield Skipped(uri, str(exc))
        return
    window = window or max(64 * workers, 2 * fetch_workers)
    decode_pool = ThreadPoolExecutor(workers, thread_name_prefix="agile-decode")
    fetch_pool: ThreadPoolExecutor | None = None
    in_flight: deque[tuple[str, Future[Decoded]]] = deque()
    it = iter(uris)
    try:
        while True:
            while len(in_flight) < window:
                uri = next(it, None)
                if uri is None:
                    break
                if read is not None or _is_remote(uri):
                    if fetch_pool is None:
                        fetch_pool = ThreadPoolExecutor(max(1, fetch_workers), thread_name_prefix="agile-fetch")
                    fut = _then(
                        fetch_pool.submit(read or read_bytes, uri),
                        decode_pool,
                        partial(_decode, uri, prepare=prepare, draft_size=draft_size),
                    )
                else:
                    fut = decode_pool.submit(_read_decode, uri, prepare, draft_size)
                in_flight.append((uri, fut))
            if not in_flight:
                return
            uri, fut = in_flight.popleft()
            try:
                yield fut.result()
            except ImageReadError as exc:
                yield Skipped(uri, str(exc))
    finally:
        for _, fut in in_flight:
            fut.cancel()
        decode_pool.shutdown(wait=True, cancel_futures=True)
        if fetch_pool is not None:
            fetch_pool.shutdown(wait=True, cancel_futures=True)
