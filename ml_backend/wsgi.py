"""WSGI entry point: ``gunicorn ml_backend.wsgi:app``."""

import os

from agile_modeling import compute
from ml_backend.app import create_app

compute.configure(os.environ.get("AGILE_COMPUTE"), os.environ.get("AGILE_TORCH_THREADS"))
app = create_app()
