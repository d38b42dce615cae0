"""The embedding store: append-only float16 shards read through memory maps, plus an image table.

Layout of a store folder::

    images.sqlite        images(id, uri, content_hash UNIQUE, caption, shard), shards(...), meta(...)
    shards/00000.npy     (rows, d) float16, rows L2-normalised; image ``id`` = global row number

Appending writes the shard file completely (temporary name, fsync, rename) before one SQLite
transaction registers it and its images. A crash at any point leaves either the old store or the
new one: an unregistered shard file is an orphan and is removed on the next open, and re-running
the same add skips every image whose content hash is already registered.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from tqdm import tqdm

from agile_modeling.database import Database
from agile_modeling.encoders.base import ImageEncoder
from agile_modeling.errors import StoreError
from agile_modeling.file_lock import file_lock
from agile_modeling.store.pipeline import DEFAULT_FETCH_WORKERS, Decoded, Reader, Skipped, decoded_images

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shards (
    shard INTEGER PRIMARY KEY, file TEXT NOT NULL, first_id INTEGER NOT NULL, rows INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS images (
    id INTEGER PRIMARY KEY, uri TEXT NOT NULL, content_hash TEXT NOT NULL UNIQUE,
    caption TEXT, shard INTEGER NOT NULL REFERENCES shards(shard));
CREATE INDEX IF NOT EXISTS images_uri ON images(uri);
"""


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PoolView:
    """Read-only view of all shards as one ``(n, d)`` float16 matrix, without loading it.

    Rows are memory-mapped; ``iter_chunks`` streams them in order and ``take`` gathers rows.
    """

    def __init__(self, shards: Sequence[NDArray[np.float16]], dim: int) -> None:
        self.shards = list(shards)
        self.dim = dim
        self.offsets = np.cumsum([0] + [len(s) for s in self.shards]).astype(np.int64)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self), self.dim)

    def iter_chunks(self, rows: int) -> Iterator[tuple[int, NDArray[np.float16]]]:
        """Yield ``(first_id, block)`` with ``block`` ``(m <= rows, d)`` float16, in id order."""
        for base, shard in zip(self.offsets[:-1], self.shards):
            for start in range(0, len(shard), rows):
                yield int(base + start), shard[start : start + rows]

    def take(self, ids: Sequence[int] | NDArray[np.integer[Any]]) -> NDArray[np.float16]:
        """Rows ``ids`` as a new ``(len(ids), d)`` float16 array, in the order given."""
        ids = np.asarray(ids, dtype=np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= len(self)):
            raise IndexError(f"image ids must lie in [0, {len(self)})")
        out = np.empty((len(ids), self.dim), dtype=np.float16)
        which = np.searchsorted(self.offsets, ids, side="right") - 1
        for s in np.unique(which):
            mask = which == s
            local = ids[mask] - self.offsets[s]
            order = np.argsort(local)  # sorted reads are kinder to the page cache
            rows = self.shards[s][local[order]]
            out[np.flatnonzero(mask)[order]] = rows
        return out


@dataclass
class AddReport:
    """What an add did: ids of new images, how many were already there, what was skipped and why."""

    added_ids: list[int] = field(default_factory=list)
    already_present: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (uri, reason)
    ids: dict[str, int] = field(default_factory=dict)  # the pool id of every URI read (added or already present)

    def summary(self) -> str:
        return (
            f"added {len(self.added_ids)} images, {self.already_present} already in the store, "
            f"{len(self.skipped)} skipped"
        )


class EmbeddingStore:
    """Embeddings of a pool of images, keyed by a dense integer id (the global row number)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / "images.sqlite").exists():
            raise StoreError(f"no embedding store at {self.root} (create one with `agile pool add`)")
        self._db = self._connect()
        self.dim = int(self._meta("dim"))
        self.encoder_name = self._meta("encoder")
        self._view: PoolView | None = None
        self._remove_orphans()

    # --- creation and metadata -------------------------------------------------------------
    @classmethod
    def create(cls, root: str | Path, dim: int, encoder_name: str) -> EmbeddingStore:
        """Create an empty store (or open the existing one if it matches ``dim``)."""
        root = Path(root)
        if (root / "images.sqlite").exists():
            store = cls(root)
            if store.dim != dim:
                raise StoreError(f"store at {root} holds {store.dim}-d embeddings, not {dim}-d")
            return store
        (root / "shards").mkdir(parents=True, exist_ok=True)
        db = Database(root / "images.sqlite.tmp", _SCHEMA)
        db.executemany("INSERT INTO meta VALUES (?, ?)", [("dim", str(dim)), ("encoder", encoder_name)])
        db.close()  # the last connection checkpoints the WAL into the file
        os.replace(root / "images.sqlite.tmp", root / "images.sqlite")
        return cls(root)

    def _connect(self) -> Database:
        return Database(self.root / "images.sqlite", _SCHEMA)

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise StoreError(f"store at {self.root} has no {key!r} entry; it is damaged")
        value: str = row[0]  # the meta table's value column is TEXT NOT NULL
        return value

    def _write_lock(self, blocking: bool = True) -> AbstractContextManager[bool]:
        """Yields whether this process holds the store's write lock (one writer across processes)."""
        return file_lock(self.root / "write.lock", blocking=blocking)

    def _remove_orphans(self) -> None:
        with self._write_lock(blocking=False) as locked:
            if not locked:  # another process is appending: its new shard is not an orphan
                return
            registered = {r[0] for r in self._db.execute("SELECT file FROM shards")}
            for path in (self.root / "shards").iterdir():
                if path.name not in registered:
                    log.warning("removing %s: left by an interrupted add", path)
                    path.unlink()
        for (name,) in self._db.execute("SELECT file FROM shards"):
            if not (self.root / "shards" / name).exists():
                raise StoreError(f"shard file {name} of store {self.root} is missing")

    # --- reading -----------------------------------------------------------------------------
    def __len__(self) -> int:
        """The number of images, read from the last registered shard (ids are dense and each shard
        holds ids ``first_id .. first_id + rows - 1``): one B-tree lookup, where ``COUNT(*)`` walks
        every row (30-43 ms at 1-2M images, on every request of the backend). Read from the file
        each time, so appends by other processes count at once."""
        row = self._db.execute("SELECT first_id + rows FROM shards ORDER BY shard DESC LIMIT 1").fetchone()
        return int(row[0]) if row else 0

    def vectors(self) -> PoolView:
        """All embeddings as a memory-mapped :class:`PoolView` (re-opened after appends, also by other processes)."""
        files = [r[0] for r in self._db.execute("SELECT file FROM shards ORDER BY shard")]
        if self._view is None or len(self._view.shards) != len(files):
            shards = [np.load(self.root / "shards" / f, mmap_mode="c") for f in files]
            self._view = PoolView(shards, self.dim)
        return self._view

    def shard_files(self) -> list[tuple[Path, int, int]]:
        """``(path, first id, rows)`` of every shard, in id order: what a worker needs to score its part."""
        out, offset = [], 0
        for (name,) in self._db.execute("SELECT file FROM shards ORDER BY shard"):
            path = self.root / "shards" / name
            rows = int(np.load(path, mmap_mode="r").shape[0])
            out.append((path, offset, rows))
            offset += rows
        return out

    def uris(self, ids: Sequence[int]) -> list[str]:
        """The URI of every id, in order."""
        found = dict(self._query_in("SELECT id, uri FROM images WHERE id IN ({})", [int(i) for i in ids]))
        missing = [i for i in ids if int(i) not in found]
        if missing:
            raise StoreError(f"unknown image ids {missing[:5]}")
        return [found[int(i)] for i in ids]

    def ids_of_uris(self, uris: Sequence[str]) -> dict[str, int]:
        """``{uri: id}`` for the URIs the store holds (others are absent from the result)."""
        return dict(self._query_in("SELECT uri, id FROM images WHERE uri IN ({})", list(uris)))

    def ids_of_hashes(self, hashes: Sequence[str]) -> dict[str, int]:
        """``{content hash: id}`` for the hashes the store holds."""
        return dict(self._query_in("SELECT content_hash, id FROM images WHERE content_hash IN ({})", list(hashes)))

    def known_hashes(self, hashes: Sequence[str]) -> set[str]:
        return {
            r[0] for r in self._query_in("SELECT content_hash FROM images WHERE content_hash IN ({})", list(hashes))
        }

    def _query_in(self, sql: str, values: Sequence[int | str]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = []
        for start in range(0, len(values), 900):  # SQLite's bound-parameter limit
            part = values[start : start + 900]
            rows += self._db.execute(sql.format(",".join("?" * len(part))), part).fetchall()
        return rows

    # --- writing -----------------------------------------------------------------------------
    def append(
        self,
        embeddings: NDArray[np.floating[Any]],
        uris: Sequence[str],
        hashes: Sequence[str],
        captions: Sequence[str | None] | None = None,
    ) -> list[int]:
        """Append rows whose content hash is new; returns their ids (duplicates are skipped).

        Args:
            embeddings: ``(n, d)`` L2-normalised vectors (any float dtype; stored as float16).
            uris, hashes, captions: ``n`` entries each.
        """
        embeddings = np.asarray(embeddings)
        n = len(uris)
        if embeddings.shape != (n, self.dim) or len(hashes) != n:
            raise StoreError(f"expected {n} rows of dimension {self.dim}, got embeddings {embeddings.shape}")
        captions = list(captions) if captions is not None else [None] * n
        with self._write_lock():  # which hashes are new is decided under the lock: two adders never both add one
            known = self.known_hashes(list(hashes))
            keep, seen = [], set()
            for i, h in enumerate(hashes):
                if h not in known and h not in seen:
                    keep.append(i)
                    seen.add(h)
            if not keep:
                return []
            rows = embeddings[keep].astype(np.float16)
            shard = int(self._db.execute("SELECT COALESCE(MAX(shard) + 1, 0) FROM shards").fetchone()[0])
            first_id = int(self._db.execute("SELECT COALESCE(MAX(id) + 1, 0) FROM images").fetchone()[0])
            name = f"{shard:05d}.npy"
            tmp = self.root / "shards" / (name + ".tmp")
            with open(tmp, "wb") as fh:
                np.save(fh, rows)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.root / "shards" / name)
            fsync_dir(self.root / "shards")
            ids = list(range(first_id, first_id + len(keep)))
            with self._db.transaction():
                self._db.execute("INSERT INTO shards VALUES (?, ?, ?, ?)", (shard, name, first_id, len(keep)))
                self._db.executemany(
                    "INSERT INTO images VALUES (?, ?, ?, ?, ?)",
                    [(ids[j], uris[i], hashes[i], captions[i], shard) for j, i in enumerate(keep)],
                )
        self._view = None
        return ids

    def add_images(
        self,
        uris: Sequence[str],
        encoder: ImageEncoder,
        commit_every: int = 1024,
        progress: bool = True,
        workers: int | None = None,
        fetch_workers: int = DEFAULT_FETCH_WORKERS,
        batch_size: int | None = None,
        read: Reader | None = None,
    ) -> AddReport:
        """Embed and append images by path or URL.

        Images are read, hashed, decoded and preprocessed in parallel (``workers`` threads; remote
        images fetched by at most ``fetch_workers`` at once, see :mod:`agile_modeling.store.pipeline`)
        while the model embeds them in batches of ``batch_size`` (default: the encoder's), in input
        order: the ids and embeddings are those of a sequential add. Unreadable or corrupt images are
        skipped and listed in the report, never fatal. Work is committed every ``commit_every`` new
        images, so an interrupted add loses at most that much and the same call resumes where it stopped.
        ``read`` reads a URI's bytes (default: local paths and http(s) URLs); ``report.ids`` maps every
        URI read to its pool id, also when the same image was already there under another URI.
        """
        if encoder.dim != self.dim:
            raise StoreError(f"encoder makes {encoder.dim}-d vectors but the store holds {self.dim}-d")
        if self.encoder_name not in (encoder.name, "unknown"):
            raise StoreError(
                f"this pool was embedded by {self.encoder_name}; adding images embedded by {encoder.name} "
                "would mix two embedding spaces. Use another --workspace for these images."
            )
        # encoders that split preprocessing from the model (OpenClipEncoder) preprocess in the workers
        prepare = getattr(encoder, "preprocess_image", None)
        encode = getattr(encoder, "encode_preprocessed", None) if prepare is not None else None
        if encode is None:
            prepare, encode = None, encoder.encode_images
        batch = max(1, min(int(batch_size or getattr(encoder, "batch_size", 64) or 64), commit_every))
        report = AddReport()
        seen: set[str] = set()
        hash_of: dict[str, str] = {}  # uri -> content hash, for report.ids
        to_embed: list[Decoded] = []  # not yet embedded
        # (Decoded items, their vectors), not yet committed
        embedded: list[tuple[list[Decoded], NDArray[np.float32]]] = []
        runtime = getattr(encoder, "runtime", None) if progress else None
        bar = tqdm(
            total=len(uris),
            desc="embedding images",
            unit="img",
            disable=not progress or None,
            postfix={"on": runtime} if runtime else None,
        )

        def embed() -> None:
            if not to_embed:
                return
            known = self.known_hashes([d.content_hash for d in to_embed])
            fresh = [d for d in to_embed if d.content_hash not in known]
            report.already_present += len(to_embed) - len(fresh)
            if fresh:
                embedded.append((fresh, encode([d.item for d in fresh])))
            bar.update(len(to_embed))
            to_embed.clear()

        def commit() -> None:
            if embedded:
                items = [d for part, _ in embedded for d in part]
                vecs = np.concatenate([v for _, v in embedded])
                ids = self.append(vecs, [d.uri for d in items], [d.content_hash for d in items])
                report.added_ids += ids
                report.already_present += len(items) - len(ids)  # added meanwhile by another process
                embedded.clear()

        draft = getattr(encoder, "decode_size", None) if prepare is not None else None
        try:
            for got in decoded_images(uris, prepare, workers, fetch_workers, draft_size=draft, read=read):
                if isinstance(got, Skipped):
                    report.skipped.append((got.uri, got.reason))
                    log.warning("skipped: %s", got.reason)
                    bar.update(1)
                    continue
                hash_of[got.uri] = got.content_hash
                if got.content_hash in seen:
                    report.already_present += 1
                    bar.update(1)
                    continue
                seen.add(got.content_hash)
                to_embed.append(got)
                if len(to_embed) >= batch:
                    embed()
                    if sum(len(part) for part, _ in embedded) >= commit_every:
                        commit()
            embed()
            commit()
        finally:
            bar.close()
        by_hash = self.ids_of_hashes(list(set(hash_of.values())))
        report.ids = {uri: by_hash[h] for uri, h in hash_of.items() if h in by_hash}
        return report

    def close(self) -> None:
        self._db.close()
