"""Figures written as PNG files without a display (matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from numpy.typing import NDArray

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def subplots(rows: int, cols: int, figsize: tuple[float, float]) -> tuple[Figure, NDArray[Any]]:
    """``(fig, axes)`` with ``axes`` always a 2-d array, on the file-only backend.

    ``axes`` is an object array of matplotlib ``Axes``: numpy's types cannot say what an object
    array holds (``NDArray[np.object_]`` would type every element as ``np.object_``), so its dtype is Any.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=figsize, squeeze=False)


def save(fig: Figure, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write ``path`` (creating its folder) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
