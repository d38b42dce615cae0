"""Simulated users over the shared labeled CLIP embeddings: the paper's protocol, offline."""

from agile_modeling.simulate.data import SharedData, find_data_dir, load_shared_data
from agile_modeling.simulate.runner import RoundResult, SessionResult, SimulationContext, simulate_session
from agile_modeling.simulate.suite import SimulatedConcept, load_suite
from agile_modeling.simulate.users import SimulatedUser

__all__ = [
    "RoundResult",
    "SessionResult",
    "SharedData",
    "SimulatedConcept",
    "SimulatedUser",
    "SimulationContext",
    "find_data_dir",
    "load_shared_data",
    "load_suite",
    "simulate_session",
]
