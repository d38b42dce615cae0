"""agile-modeling core engine.

Pure computation and its own storage: encoders, the embedding store, nearest-neighbour search,
concepts, seeding, the MLP classifier, exact pool scoring, active-learning selection, metrics,
session state and simulated users. This package never imports Label Studio, Flask or Celery;
the ``ml_backend`` and ``sync`` layers build on it.
"""

__version__ = "0.1.0"
