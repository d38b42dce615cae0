"""The Caltech-101 rows of the shared real embeddings, loaded once for the deliberation tests."""

import pytest

from agile_modeling.errors import DatasetNotFoundError


@pytest.fixture(scope="session")
def caltech():
    """Pool (val + few-shot rows) and test rows of Caltech-101; tests skip with the reason if absent."""
    from agile_modeling.simulate.deliberation_study import CaltechData

    try:
        return CaltechData.load()
    except DatasetNotFoundError as e:
        pytest.skip(f"shared real embeddings unavailable: {e}")
