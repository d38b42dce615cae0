"""WSGI entry point: ``gunicorn --config python:ml_backend.gunicorn_conf ml_backend.wsgi:app``
(what ``agile backend`` runs: the config refuses an exposed bind without secrets). Under any other
server, a backend without secrets answers only requests from this machine (``create_app``)."""

from ml_backend.app import create_app
from sync.process import configure_process
from sync.settings import Settings

SETTINGS = Settings.from_env()  # the backend's composition root: every setting, read once
configure_process(SETTINGS)
app = create_app(SETTINGS)
