"""Sync worker (Celery): pushes batches to Label Studio, pulls annotations, retrains.

Built on the core engine by the Label Studio loop issue; the engine never imports this package.
"""
