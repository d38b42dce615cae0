"""WSGI entry point: ``gunicorn --config python:ml_backend.gunicorn_conf ml_backend.wsgi:app``
(what ``agile backend`` runs: the config refuses an exposed bind without secrets). Under any other
server, a backend without secrets answers only requests from this machine (``create_app``)."""

import logging

from ml_backend.app import create_app
from sync.process import configure_process
from sync.settings import Settings

SETTINGS = Settings.from_env()  # the backend's composition root: every setting, read once
configure_process(SETTINGS)
# our own loggers at LOG_LEVEL (once-per-process facts: the model loaded, the image tower's precision);
# other libraries' (httpx logs every request at INFO) at WARNING
logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
for _name in ("agile_modeling", "agile", "ml_backend", "sync"):
    logging.getLogger(_name).setLevel(SETTINGS.log_level)
app = create_app(SETTINGS)
