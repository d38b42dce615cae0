"""WSGI entry point: ``gunicorn --config python:ml_backend.gunicorn_conf ml_backend.wsgi:app``
(what ``agile backend`` runs: the config refuses an exposed bind without secrets). Under any other
server, a backend without secrets answers only requests from this machine (``create_app``)."""

import os

from agile_modeling import compute
from ml_backend.app import create_app

compute.configure(os.environ.get("AGILE_COMPUTE"), os.environ.get("AGILE_TORCH_THREADS"))
app = create_app()
