"""The ``agile`` command line: the composition root that wires the engine (and later the service)."""
