"""gunicorn settings of the ML backend (``--config python:ml_backend.gunicorn_conf``): refuse to start
on an address other machines can reach without the secrets (:mod:`ml_backend.exposure`), and keep
query strings out of the access log (a signed image URL's ``sig`` is a credential for that image)."""

from __future__ import annotations

from typing import Any

# gunicorn's default logs the whole request line ("%(r)s"); the path without its query is enough
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss'
# gunicorn >= 25 opens a control socket at one fixed path per user ($XDG_RUNTIME_DIR or ~/.gunicorn):
# nothing here uses it, and two backends on one host would share it
control_socket_disable = True


def on_starting(server: Any) -> None:  # gunicorn's Arbiter (gunicorn has no type hints)
    from agile_modeling.errors import ConfigurationError
    from ml_backend.exposure import UnsafeBindError, check_bind
    from sync.settings import Settings

    try:
        settings = Settings.from_env()
    except ConfigurationError as exc:
        raise RuntimeError(str(exc)) from None  # one line from gunicorn, not a traceback
    for address in server.cfg.address:
        try:
            check_bind(settings, address)
        except UnsafeBindError as exc:
            raise RuntimeError(str(exc)) from None  # gunicorn prints "Error: <message>" and exits 1
