"""Import precomputed embeddings laid out by clip-retrieval (``img_emb/*.npy`` + ``metadata/*.parquet``).

Lets a pool of LAION-style embedding shards be used without re-embedding a single image. Files
pair by their numeric suffix (``img_emb_0.npy`` with ``metadata_0.parquet``). Imported rows have
no image bytes at hand, so their content hash is the SHA-256 of the URL: importing the same
shard twice is a no-op.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from agile_modeling.encoders.base import l2_normalise
from agile_modeling.errors import StoreError
from agile_modeling.store.embedding_store import AddReport, EmbeddingStore


def _suffix(path: Path) -> str:
    match = re.search(r"(\d+)$", path.stem)
    return match.group(1) if match else path.stem


def pair_files(folder: str | Path) -> list[tuple[Path, Path]]:
    """``(img_emb file, metadata file)`` pairs of a clip-retrieval output folder, in order."""
    root = Path(folder)
    embs = sorted((root / "img_emb").glob("*.npy"))
    metas = {_suffix(p): p for p in (root / "metadata").glob("*.parquet")}
    if not embs:
        raise StoreError(f"{root} has no img_emb/*.npy files (expected the clip-retrieval layout)")
    pairs = []
    for emb in embs:
        meta = metas.get(_suffix(emb))
        if meta is None:
            raise StoreError(f"{emb.name} has no matching metadata/*{_suffix(emb)}.parquet in {root}")
        pairs.append((emb, meta))
    return pairs


def url_hash(url: str) -> str:
    return "url:" + hashlib.sha256(url.encode()).hexdigest()


def import_clip_retrieval(
    store: EmbeddingStore, folder: str | Path, rows_per_shard: int = 1_000_000, progress: bool = True
) -> AddReport:
    """Append every embedding of a clip-retrieval output folder to ``store``."""
    report = AddReport()
    for emb_path, meta_path in tqdm(pair_files(folder), desc="importing shards", disable=not progress or None):
        emb = np.load(emb_path, mmap_mode="r")
        table = pq.read_table(meta_path)
        if "url" not in table.column_names:
            raise StoreError(f"{meta_path} has no 'url' column (columns: {table.column_names})")
        if table.num_rows != len(emb) or emb.ndim != 2 or emb.shape[1] != store.dim:
            raise StoreError(
                f"{emb_path.name} holds {emb.shape} but {meta_path.name} has {table.num_rows} rows "
                f"and the store is {store.dim}-d"
            )
        urls = table.column("url").to_pylist()
        captions = table.column("caption").to_pylist() if "caption" in table.column_names else None
        for start in range(0, len(emb), rows_per_shard):
            stop = start + rows_per_shard
            block_urls = urls[start:stop]
            hashes = [url_hash(u) for u in block_urls]
            ids = store.append(
                l2_normalise(np.asarray(emb[start:stop], dtype=np.float32)),
                block_urls,
                hashes,
                captions[start:stop] if captions is not None else None,
            )
            report.added_ids += ids
            report.already_present += len(block_urls) - len(ids)
    return report
