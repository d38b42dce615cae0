"""Figures written as PNG files without a display (matplotlib's Agg backend)."""

from __future__ import annotations

from pathlib import Path


def subplots(rows: int, cols: int, figsize: tuple[float, float]):
    """``(fig, axes)`` with ``axes`` always a 2-d array, on the file-only backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(rows, cols, figsize=figsize, squeeze=False)


def save(fig, path: str | Path, dpi: int = 110) -> Path:
    """Lay out, write ``path`` (creating its folder) and free the figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
