"""Fetching a task's image from the web, safely: a task is data anyone with project access can
write, so its URL must not make the backend read this machine's files or reach into its network.

- schemes: ``http`` and ``https`` only (``data:`` URLs are decoded without any fetch);
- origins: only those allowed, matched on scheme + host + port: by default Label Studio's and our
  own image route's; ``AGILE_IMAGE_HOSTS`` adds comma-separated entries, each ``scheme://host:port``
  (exactly that origin), ``host:port`` (that port, http or https) or ``host`` (its default ports
  80 and 443 only), or ``*`` for any public host. So with Label Studio on ``127.0.0.1:8080``,
  ``http://127.0.0.1:6379/`` stays refused. Redirects are followed by hand (at most 3), each hop
  checked the same way;
- addresses: the name is resolved once; unless its origin is listed, every address it resolves to
  must be public (not loopback, private, link-local, reserved or multicast). The connection is then
  made to the address that was checked (the name is kept for the Host header, TLS SNI and
  certificate checks), so a name that resolves differently a moment later (DNS rebinding) cannot
  move the request onto the internal network;
- time: at most ``CONNECT_S`` to connect, ``HEADERS_S`` until the response headers are in, and
  ``AGILE_FETCH_TIMEOUT`` seconds for the whole download, enforced on every socket read;
- size: at most ``AGILE_MAX_IMAGE_BYTES`` read (the decoded-pixel limit is in :mod:`ml_backend.images`).

Written over httpcore (the connection layer of httpx, one of its dependencies) because pinning the
connection to a checked address needs a custom network backend, which httpx's public API does not
expose; everything else (HTTP/1.1, TLS, SNI, certificate checks) is httpcore's.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin

import httpcore
import httpx

from agile_modeling.errors import ImageReadError
from sync.settings import Settings

MAX_REDIRECTS = 3
CONNECT_S = 3.0
HEADERS_S = 5.0
DEFAULT_PORTS = {"http": 80, "https": 443}
_HTTP_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ConnectionNotAvailable,
    ssl.SSLError,
    OSError,
)


def _origins(entry: str) -> set[tuple[str, str, int]]:
    """The (scheme, host, port) origins one allow-list entry or configured URL stands for."""
    entry = entry.strip()
    if "://" in entry:
        url = httpx.URL(entry)
        if url.scheme not in DEFAULT_PORTS or not url.host:
            raise ValueError(f"{entry!r} is not an http(s) origin")
        return {(url.scheme, url.host.lower(), url.port or DEFAULT_PORTS[url.scheme])}
    url = httpx.URL("http://" + entry)
    if url.port is not None:
        return {(scheme, url.host.lower(), url.port) for scheme in DEFAULT_PORTS}
    return {(scheme, url.host.lower(), port) for scheme, port in DEFAULT_PORTS.items()}


@dataclass(frozen=True)
class FetchPolicy:
    allowed: frozenset[tuple[str, str, int]] = field(default_factory=frozenset)  # (scheme, host, port)
    any_public: bool = False  # "*": any host whose every address is public, any port
    max_bytes: int = 20 * 1024 * 1024
    timeout_s: float = 10.0
    max_pixels: int = 40_000_000

    @classmethod
    def from_settings(cls, settings: Settings) -> FetchPolicy:
        """The policy of a process's settings: Label Studio's and our image route's origins, plus
        ``AGILE_IMAGE_HOSTS``, with its size, time and pixel limits."""
        return cls.from_urls(
            settings.label_studio_url,
            settings.images_base_url,
            extra=settings.image_hosts,
            max_bytes=settings.max_image_bytes,
            timeout_s=settings.fetch_timeout,
            max_pixels=settings.max_image_pixels,
        )

    @classmethod
    def from_urls(
        cls,
        *urls: str | None,
        extra: str | None = None,
        max_bytes: int | None = None,
        timeout_s: float | None = None,
        max_pixels: int | None = None,
    ) -> FetchPolicy:
        """The origins of ``urls`` plus the comma-separated ``extra`` entries (see the module doc)."""
        allowed: set[tuple[str, str, int]] = set()
        for url in urls:
            if url:
                allowed |= _origins(url if "://" in url else "http://" + url)
        entries = [e.strip() for e in (extra or "").split(",") if e.strip()]
        for entry in entries:
            if entry != "*":
                try:
                    allowed |= _origins(entry)
                except (ValueError, httpx.InvalidURL) as exc:
                    raise ValueError(
                        f"AGILE_IMAGE_HOSTS: {entry!r} is not a host, host:port or scheme://host:port ({exc})"
                    ) from None
        return cls(
            frozenset(allowed),
            "*" in entries,
            max_bytes or cls.max_bytes,
            timeout_s or cls.timeout_s,
            max_pixels or cls.max_pixels,
        )


@dataclass(frozen=True)
class Target:
    """A checked URL: where to connect (``address``) and what to ask for."""

    scheme: str
    host: str  # as written (IDNA-encoded), for Host, SNI and the certificate
    port: int
    address: str  # the IP address that was checked
    target: bytes  # path and query


def _resolve(host: str, port: int) -> list[str]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise ImageReadError(f"cannot resolve the image host {host!r} ({exc})") from None
    return [str(info[4][0]) for info in infos]


def _is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str, policy: FetchPolicy) -> Target:
    """The checked :class:`Target` of ``url``, or :class:`ImageReadError` saying why it may not be fetched."""
    try:
        parsed = httpx.URL(url)
        port = parsed.port
        host = parsed.raw_host.decode("ascii").lower()
        target = parsed.raw_path
    except (httpx.InvalidURL, ValueError, UnicodeError, TypeError) as exc:
        raise ImageReadError(f"the image URL {url[:100]!r} is not a valid URL ({exc})") from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise ImageReadError(f"image URLs must be http(s), not {parsed.scheme or 'a bare path'!r}")
    if not host:
        raise ImageReadError(f"the image URL {url[:100]!r} has no host")
    port = port or DEFAULT_PORTS[parsed.scheme]
    listed = (parsed.scheme, host, port) in policy.allowed
    if not listed and not policy.any_public:
        raise ImageReadError(
            f"image origin {parsed.scheme}://{host}:{port} is not allowed; add it to "
            "AGILE_IMAGE_HOSTS (comma-separated scheme://host:port) if tasks may load images from it"
        )
    addresses = _resolve(host, port)
    if not listed and not all(_is_public(a) for a in addresses):
        raise ImageReadError(
            f"image host {host!r} is an internal address; list its origin in AGILE_IMAGE_HOSTS explicitly to allow it"
        )
    return Target(parsed.scheme, host, port, addresses[0].split("%")[0], target)


class _DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every read and write ends by ``clock.deadline``."""

    def __init__(self, inner: httpcore.NetworkStream, clock: _Clock) -> None:
        self.inner, self.clock = inner, clock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self.inner.read(max_bytes, self.clock.left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.inner.write(buffer, self.clock.left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self.inner.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        return _DeadlineStream(
            self.inner.start_tls(ssl_context, server_hostname, self.clock.left(timeout, httpcore.ConnectTimeout)),
            self.clock,
        )

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _Clock:
    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def left(self, timeout: float | None, error: type[httpcore.TimeoutException]) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error("time limit reached")
        return left if timeout is None else min(timeout, left)


class _PinnedBackend(httpcore.NetworkBackend):
    """Connects to the checked address of the one origin it was made for, nothing else."""

    def __init__(self, target: Target, clock: _Clock) -> None:
        self.target, self.clock = target, clock
        self.inner = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        if (host, port) != (self.target.host, self.target.port):  # never: the pool only knows this origin
            raise httpcore.ConnectError(f"refusing to connect to {host}:{port}")
        stream = self.inner.connect_tcp(
            self.target.address, port, self.clock.left(timeout, httpcore.ConnectTimeout), local_address, socket_options
        )
        return _DeadlineStream(stream, self.clock)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are never used for task images")


@functools.lru_cache(maxsize=1)
def _ssl_context() -> ssl.SSLContext:
    """httpx's default verifying context (certifi's CA bundle), built once."""
    return httpx.create_ssl_context(trust_env=False)


def _host_header(target: Target) -> str:
    host = f"[{target.host}]" if ":" in target.host else target.host
    return host if target.port == DEFAULT_PORTS[target.scheme] else f"{host}:{target.port}"


def _too_large(url: str, policy: FetchPolicy) -> ImageReadError:
    return ImageReadError(f"the image at {url[:100]} is larger than {policy.max_bytes} bytes")


def _get(url: str, target: Target, policy: FetchPolicy, deadline: float) -> tuple[bytes | None, str | None]:
    """One hop: ``(body, None)``, or ``(None, location)`` for a redirect."""
    clock = _Clock(min(deadline, time.monotonic() + min(HEADERS_S, policy.timeout_s)))  # headers first
    timeouts = {
        "connect": min(CONNECT_S, policy.timeout_s),
        "read": policy.timeout_s,
        "write": policy.timeout_s,
        "pool": policy.timeout_s,
    }
    with httpcore.ConnectionPool(
        ssl_context=_ssl_context(), network_backend=_PinnedBackend(target, clock), max_connections=1
    ) as pool:
        request = httpcore.Request(
            "GET",
            httpcore.URL(scheme=target.scheme, host=target.host, port=target.port, target=target.target),
            headers=[
                (b"Host", _host_header(target).encode("ascii")),
                (b"Accept", b"image/*"),
                (b"User-Agent", b"agile-modeling-backend"),
            ],
            extensions={"timeout": timeouts},
        )
        with pool.stream(request.method, request.url, headers=request.headers, extensions=request.extensions) as resp:
            clock.deadline = deadline  # headers are in: the rest of the total time for the body
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in resp.headers}
            if resp.status in (301, 302, 303, 307, 308) and "location" in headers:
                return None, headers["location"]
            if resp.status != 200:
                raise ImageReadError(f"{url[:100]} answered HTTP {resp.status}")
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > policy.max_bytes:
                raise _too_large(url, policy)
            data = bytearray()
            for piece in resp.iter_stream():
                data += piece
                if len(data) > policy.max_bytes:
                    raise _too_large(url, policy)
            return bytes(data), None


def fetch_image_bytes(url: str, policy: FetchPolicy) -> bytes:
    """The bytes behind ``url``, within the policy's origins, addresses, size and time."""
    deadline = time.monotonic() + policy.timeout_s
    for _ in range(MAX_REDIRECTS + 1):
        target = check_url(url, policy)
        try:
            body, location = _get(url, target, policy, deadline)
        except httpcore.TimeoutException:
            raise ImageReadError(
                f"the image at {url[:100]} took longer than the time limit "
                f"({CONNECT_S:g} s to connect, {HEADERS_S:g} s to the headers, "
                f"{policy.timeout_s:g} s in all)"
            ) from None
        except _HTTP_ERRORS as exc:
            raise ImageReadError(f"cannot fetch {url[:100]} ({exc.__class__.__name__})") from None
        if body is not None:
            return body
        try:
            url = urljoin(url, location)
        except ValueError as exc:  # e.g. "http://[::1": urljoin refuses it
            raise ImageReadError(f"the image at {url[:100]} redirects to an invalid URL ({exc})") from None
    raise ImageReadError(f"more than {MAX_REDIRECTS} redirects fetching the image")
