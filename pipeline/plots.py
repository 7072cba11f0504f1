"""PNG plots of the lab's results (matplotlib, headless; no TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.io import atomic_path


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix(matrix: Sequence[Sequence[int]], title: str, path: str | Path) -> Path:
    """Counts of (true class, predicted class) as a heat map, written atomically as PNG."""
    plt = _pyplot()
    m = np.asarray(matrix)
    size = max(4.0, 0.45 * len(m) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    for (i, j), count in np.ndenumerate(m):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > m.max() / 2 else "black")
    ax.set(xlabel="predicted class", ylabel="true class", title=title,
           xticks=range(len(m)), yticks=range(len(m)))
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)
    return Path(path)
