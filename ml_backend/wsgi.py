"""WSGI entry point: ``gunicorn ml_backend.wsgi:app``."""

from ml_backend.app import create_app

app = create_app()
