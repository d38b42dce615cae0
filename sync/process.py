"""What every process of ours (a CLI command, a worker, the ML backend) sets up from its settings
before it works: the core's compute mode and training threads, and the fault point of the
reliability tests. Called once by each composition root."""

from __future__ import annotations

from agile_modeling import compute
from sync import faults
from sync.settings import Settings


def configure_process(settings: Settings) -> None:
    """Pass ``AGILE_COMPUTE`` and ``AGILE_TORCH_THREADS`` to the core and arm ``AGILE_FAULT_POINT``."""
    compute.configure(settings.compute, settings.torch_threads)
    faults.arm(settings.fault_point)
