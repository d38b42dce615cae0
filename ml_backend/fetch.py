"""Fetching a task's image from the web, safely: a task is data anyone with project access can
write, so its URL must not make the backend read this machine's files or reach into its network.

- schemes: ``http`` and ``https`` only (``data:`` URLs are decoded without any fetch);
- hosts: only those allowed (``AGILE_IMAGE_HOSTS``: comma-separated names, ``*`` for any); by
  default the hosts of Label Studio and of our own image route. Redirects are followed by hand
  (at most 3), each hop checked the same way;
- addresses: a name that resolves to a loopback, private, link-local or reserved address is refused
  unless that exact host is listed (so ``*`` never opens the internal network);
- size and time: at most ``AGILE_MAX_IMAGE_BYTES`` read, the whole download within
  ``AGILE_FETCH_TIMEOUT`` seconds.

Written over httpx (streaming, no automatic redirects) because the policy is ours; the limit left
open: a name that resolves differently between our check and httpx's connect (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import socket
import time
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from agile_modeling.errors import ImageReadError

MAX_REDIRECTS = 3


@dataclass(frozen=True)
class FetchPolicy:
    allowed_hosts: frozenset[str]  # lower-case host names; "*" allows any public host
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0

    @classmethod
    def from_urls(cls, *urls: str | None, extra: str | None = None, max_bytes: int | None = None,
                  timeout_s: float | None = None) -> "FetchPolicy":
        """The hosts of ``urls`` plus the comma-separated ``extra`` names."""
        hosts = {urlsplit(u).hostname.lower() for u in urls if u and urlsplit(u).hostname}
        hosts |= {h.strip().lower() for h in (extra or "").split(",") if h.strip()}
        return cls(frozenset(hosts), max_bytes or cls.max_bytes, timeout_s or cls.timeout_s)


def _is_internal(host: str) -> bool:
    """Does ``host`` resolve to any address that is not a public one?"""
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise ImageReadError(f"cannot resolve the image host {host!r} ({exc})") from None
    for info in infos:
        ip = ipaddress.ip_address(info[4][0].split("%")[0])
        if not ip.is_global or ip.is_multicast:
            return True
    return False


def check_url(url: str, policy: FetchPolicy) -> None:
    """Raise :class:`ImageReadError` unless ``url`` may be fetched under ``policy``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https"):
        raise ImageReadError(f"image URLs must be http(s), not {parts.scheme or 'a bare path'!r}")
    host = (parts.hostname or "").lower()
    if not host:
        raise ImageReadError(f"the image URL {url[:100]!r} has no host")
    listed = host in policy.allowed_hosts
    if not listed and "*" not in policy.allowed_hosts:
        raise ImageReadError(f"image host {host!r} is not allowed; add it to AGILE_IMAGE_HOSTS (comma-separated) "
                             "if tasks may load images from it")
    if not listed and _is_internal(host):
        raise ImageReadError(f"image host {host!r} is an internal address; list it in AGILE_IMAGE_HOSTS explicitly "
                             "to allow it")


def fetch_image_bytes(url: str, policy: FetchPolicy) -> bytes:
    """The bytes behind ``url``, within the policy's hosts, size and time."""
    deadline = time.monotonic() + policy.timeout_s
    with httpx.Client(follow_redirects=False, timeout=policy.timeout_s, trust_env=False) as client:
        for _ in range(MAX_REDIRECTS + 1):
            check_url(url, policy)
            try:
                with client.stream("GET", url) as resp:
                    if resp.is_redirect:
                        url = urljoin(url, resp.headers.get("location", ""))
                        continue
                    if resp.status_code != 200:
                        raise ImageReadError(f"{url[:100]} answered HTTP {resp.status_code}")
                    declared = resp.headers.get("content-length")
                    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
                        raise ImageReadError(f"the image at {url[:100]} is larger than {policy.max_bytes} bytes")
                    data = bytearray()
                    for piece in resp.iter_bytes():
                        data += piece
                        if len(data) > policy.max_bytes:
                            raise ImageReadError(f"the image at {url[:100]} is larger than {policy.max_bytes} bytes")
                        if time.monotonic() > deadline:
                            raise ImageReadError(f"the image at {url[:100]} took longer than {policy.timeout_s:g} s")
                    return bytes(data)
            except httpx.HTTPError as exc:
                raise ImageReadError(f"cannot fetch {url[:100]} ({exc.__class__.__name__})") from None
    raise ImageReadError(f"more than {MAX_REDIRECTS} redirects fetching the image")
