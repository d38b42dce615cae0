"""What the backend refuses to start with: secrets missing on an address other machines can reach.

A backend bound to a non-loopback address (``0.0.0.0:9090`` in docker compose) is reachable by
anyone on the network, so it needs ``AGILE_WEBHOOK_SECRET`` (webhooks) and ``BASIC_AUTH_USER`` /
``BASIC_AUTH_PASS`` (every other route but the ``/health`` and ``/`` probes, ``/metrics`` included;
images need their signature). The unsigned image mode (``AGILE_IMAGES_UNSIGNED=1``) serves every pool image to anyone
who asks, so it is accepted only on loopback. Checked by ``agile backend`` before gunicorn starts
and by gunicorn itself (``ml_backend/gunicorn_conf.py``, which ``backend_command`` passes).
"""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

from agile_modeling.errors import AgileError

if TYPE_CHECKING:
    from sync.settings import Settings


class UnsafeBindError(AgileError):
    """The backend would be reachable from other machines without its secrets."""


def host_of(bind: str | tuple) -> str | None:
    """The host of a gunicorn bind (``host:port``, ``[v6]:port``, ``unix:path``, or a parsed tuple); None for a unix socket."""
    if isinstance(bind, tuple):
        return str(bind[0])
    if bind.startswith(("unix:", "fd://")) or "/" in bind.split(":", 1)[0]:
        return None
    if bind.startswith("["):
        return bind[1:].split("]", 1)[0]
    if bind.count(":") > 1:  # a bare IPv6 address
        return bind
    return bind.rsplit(":", 1)[0] if ":" in bind else bind


def is_loopback(host: str | None) -> bool:
    """Only this machine can reach ``host`` (a unix socket, None, counts as local)."""
    if host is None:
        return True
    if host in ("", "0.0.0.0", "::", "*"):
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None)
        except OSError:
            return False
        return bool(infos) and all(ipaddress.ip_address(str(i[4][0]).split("%")[0]).is_loopback for i in infos)


def check_bind(settings: Settings, bind: str | tuple) -> None:
    """Raise :class:`UnsafeBindError` naming the variables to set if ``bind`` is exposed without them."""
    host = host_of(bind)
    if is_loopback(host):
        return
    where = bind if isinstance(bind, str) else f"{bind[0]}:{bind[1]}"
    missing = [
        name
        for name, value in (
            ("AGILE_WEBHOOK_SECRET", settings.webhook_secret),
            ("BASIC_AUTH_USER", settings.basic_auth_user),
            ("BASIC_AUTH_PASS", settings.basic_auth_pass),
        )
        if not value
    ]
    if missing:
        raise UnsafeBindError(
            f"refusing to start the ML backend on {where}, an address other machines can reach, without "
            f"{', '.join(missing)}: set {'them' if len(missing) > 1 else 'it'} (`agile concept publish` tells Label "
            "Studio to send them), or bind to 127.0.0.1"
        )
    if settings.images_unsigned:
        raise UnsafeBindError(
            f"refusing to start the ML backend on {where} with AGILE_IMAGES_UNSIGNED=1: unsigned image URLs are for a "
            "backend bound to loopback (127.0.0.1) only; unset it (image URLs are then signed)"
        )
