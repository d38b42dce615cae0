"""Signed, expiring URLs of local pool images, so the browser can load them without credentials.

Label Studio's image tag loads a task's image straight from the browser, which cannot send the
backend's basic auth. So the sync puts into each task ``<images base>/<id>?exp=<unix time>&sig=<hex>``,
where ``sig`` is HMAC-SHA256 over ``"<id>.<exp>"``; the backend's ``/images/<id>`` serves an image
only with a valid, unexpired signature (403 otherwise). Used by both the sync (signing) and the ML
backend (verifying), which must therefore read the same key.

The key, in this order:

1. ``AGILE_IMAGE_SIGNING_KEY`` (any string; set it to keep URLs valid when the other secrets change);
2. else derived from ``LABEL_STUDIO_API_KEY`` (HMAC with a fixed label): the one secret every
   process that pushes tasks must have, and the backend gets it too (``agile up``, compose);
3. else derived from ``AGILE_WEBHOOK_SECRET``;
4. else there is no key: the sync refuses to write local image URLs and the backend refuses to
   serve them (403 saying which variable to set), except in the explicit development mode
   ``AGILE_IMAGES_UNSIGNED=1``, which the backend accepts only when bound to loopback.

Expiry: tasks live for days or weeks, so URLs are valid for ``AGILE_IMAGE_URL_DAYS`` (default 30)
days, rounded up to a whole UTC day so the same image gets the same URL all day (browser caching).
A task pushed earlier than that shows a 403 image; re-pushing signs it afresh.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sync.settings import Settings

DEFAULT_DAYS = 30.0
DAY = 86_400
_DERIVE_LABEL = b"agile-modeling image URL signing v1"


class ImageSignatureError(Exception):
    """An image URL whose signature is missing, wrong or expired (the backend answers 403)."""


def signing_key(settings: Settings) -> bytes | None:
    """The HMAC key for ``settings``' image URLs, or None when no secret is configured."""
    explicit = getattr(settings, "image_signing_key", None)
    if explicit:
        return explicit.encode("utf-8", "surrogatepass")
    for secret in (settings.label_studio_api_key, settings.webhook_secret):
        if secret:
            return hmac.new(secret.encode("utf-8", "surrogatepass"), _DERIVE_LABEL, hashlib.sha256).digest()
    return None


NO_KEY = (
    "no image signing key: set AGILE_IMAGE_SIGNING_KEY (or LABEL_STUDIO_API_KEY, from which one is "
    "derived) to the same value for the ML backend and the sync worker"
)


@dataclass(frozen=True)
class ImageSigner:
    key: bytes
    ttl_s: float = DEFAULT_DAYS * DAY

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageSigner | None:
        key = signing_key(settings)
        days = getattr(settings, "image_url_days", None) or DEFAULT_DAYS
        return cls(key, days * DAY) if key else None

    def _sig(self, image_id: int, expires: int) -> str:
        return hmac.new(self.key, f"{int(image_id)}.{int(expires)}".encode(), hashlib.sha256).hexdigest()

    def query(self, image_id: int, now: float | None = None) -> str:
        """``exp=...&sig=...`` for ``image_id``, valid for at least the signer's TTL."""
        now = time.time() if now is None else now
        expires = int(math.ceil((now + self.ttl_s) / DAY) * DAY)
        return f"exp={expires}&sig={self._sig(image_id, expires)}"

    def url(self, base: str, image_id: int, now: float | None = None) -> str:
        return f"{base}/{int(image_id)}?{self.query(image_id, now)}"

    def verify(self, image_id: int, expires: str | None, sig: str | None, now: float | None = None) -> None:
        """Raise :class:`ImageSignatureError` unless ``sig`` signs ``image_id`` until ``expires`` > now."""
        if not expires or not sig:
            raise ImageSignatureError(
                "this image URL is not signed: pool images are served only by the signed "
                "URLs the sync puts into tasks (?exp=...&sig=...)"
            )
        if not (expires.isascii() and expires.isdigit() and len(expires) <= 12):
            raise ImageSignatureError("this image URL's expiry is not a unix time")
        if int(expires) <= (time.time() if now is None else now):
            raise ImageSignatureError(
                "this image URL has expired (signed image URLs are valid for "
                "AGILE_IMAGE_URL_DAYS days; a task pushed again gets a fresh one)"
            )
        # compare bytes: compare_digest raises TypeError on non-ASCII str
        if not hmac.compare_digest(sig.encode("utf-8", "surrogatepass"), self._sig(image_id, int(expires)).encode()):
            raise ImageSignatureError("this image URL's signature is wrong (signed with another key?)")
