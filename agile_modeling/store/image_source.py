"""Reading images by path or URL: bytes, content hash, decoded RGB image, with clear failures."""

from __future__ import annotations

import hashlib
import io
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from agile_modeling.errors import ImageReadError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
MAX_IMAGE_BYTES = 50 * 1024 * 1024
FETCH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class LoadedImage:
    """One image read from its URI: the decoded RGB pixels and the SHA-256 of its bytes."""

    uri: str
    content_hash: str
    image: Image.Image


def list_image_files(folder: str | Path) -> list[str]:
    """Every image file under ``folder`` (recursively, by suffix), sorted, as absolute paths."""
    root = Path(folder)
    if not root.is_dir():
        raise ImageReadError(f"{str(folder)!r} is not a folder")
    return sorted(str(p.resolve()) for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def read_bytes(uri: str) -> bytes:
    """The raw bytes behind a local path, ``file://`` or ``http(s)://`` URI (size and time limited)."""
    data: bytes
    if uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(uri, timeout=FETCH_TIMEOUT_S) as resp:  # noqa: S310 (scheme checked)
                data = resp.read(MAX_IMAGE_BYTES + 1)
        except OSError as exc:
            raise ImageReadError(f"cannot fetch {uri}: {exc}") from exc
    else:
        path = Path(uri[len("file://") :] if uri.startswith("file://") else uri)
        try:
            if path.stat().st_size > MAX_IMAGE_BYTES:
                raise ImageReadError(f"{uri} is larger than {MAX_IMAGE_BYTES} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise ImageReadError(f"cannot read {uri}: {exc.strerror or exc}") from exc
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageReadError(f"{uri} is larger than {MAX_IMAGE_BYTES} bytes")
    return data


def content_hash(data: bytes) -> str:
    """SHA-256 hex digest of ``data``: the identity of an image in the store."""
    return hashlib.sha256(data).hexdigest()


def decode_image(uri: str, data: bytes, draft_size: int | None = None) -> Image.Image:
    """Fully decode ``data`` into an RGB image, or raise :class:`ImageReadError` saying why.

    ``draft_size``: a JPEG larger than this on both sides is decoded at the largest reduced scale
    (1/2, 1/4, 1/8) that keeps both sides >= ``draft_size`` (several times faster for big photos;
    an encoder that sees 224 pixels asks for 448, so its resize is unchanged in effect).
    """
    try:
        with Image.open(io.BytesIO(data)) as im:
            if draft_size and im.format == "JPEG" and min(im.size) >= 2 * draft_size:
                im.draft("RGB", (draft_size, draft_size))
            im.load()
            return im.convert("RGB")
    except UnidentifiedImageError:  # PIL's message names its in-memory file object, of no use to a person
        raise ImageReadError(f"{uri} is not a readable image (not a format PIL knows)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{uri} is not a readable image ({type(exc).__name__}: {exc})") from exc


def load_image(uri: str) -> LoadedImage:
    """Read, hash and decode one image."""
    data = read_bytes(uri)
    return LoadedImage(uri=uri, content_hash=content_hash(data), image=decode_image(uri, data))
