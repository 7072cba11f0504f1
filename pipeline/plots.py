"""PNG plots of the lab's results (matplotlib, headless; no TensorFlow)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pipeline.io import atomic_path


def pyplot():  # type: ignore[no-untyped-def]
    """matplotlib's pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    return plt


def save(fig: object, path: str | Path) -> Path:
    """Write a figure as PNG atomically and close it (a figure left open keeps its memory)."""
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)  # type: ignore[attr-defined]
    pyplot().close(fig)
    return Path(path)


def confusion_matrix(matrix: Sequence[Sequence[int]], title: str, path: str | Path) -> Path:
    """Counts of (true class, predicted class) as a heat map, written atomically as PNG."""
    plt = pyplot()
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
    return save(fig, path)


def pareto_front(points: dict[str, tuple[float, float]]) -> list[str]:
    """Names of the points no other point beats: lower x (cost) and higher y (accuracy).

    Args:
        points: `{name: (cost, accuracy)}`.

    Returns:
        The non-dominated names, by increasing cost.
    """
    front = [n for n, (x, y) in points.items()
             if not any((x2 <= x and y2 >= y) and (x2 < x or y2 > y)
                        for m, (x2, y2) in points.items() if m != n)]
    return sorted(front, key=lambda n: points[n])


def tradeoff(points: dict[str, tuple[float, float]], xlabel: str, title: str,
             path: str | Path, log_x: bool = False,
             intervals: dict[str, tuple[tuple[float, float], tuple[float, float]]] | None = None
             ) -> Path:
    """Accuracy against a cost (size, latency), every variant labelled, the Pareto front
    drawn and ringed.

    Args:
        intervals: Per variant, `((x_low, x_high), (y_low, y_high))`: 95% intervals drawn as
            error bars.
    """
    plt = pyplot()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    front = pareto_front(points)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    # Variants often tie on accuracy: stagger the labels of points at the same height.
    seen_heights: dict[float, int] = {}
    for name, (x, y) in sorted(points.items(), key=lambda kv: kv[1]):
        on_front = name in front
        if intervals and name in intervals:
            (xl, xh), (yl, yh) = intervals[name]
            ax.errorbar(x, y, xerr=[[max(0.0, x - xl)], [max(0.0, xh - x)]],
                        yerr=[[max(0.0, y - yl)], [max(0.0, yh - y)]], fmt="none",
                        ecolor="0.6", elinewidth=0.8, capsize=2, zorder=2)
        ax.scatter(x, y, s=60 if on_front else 30, zorder=3,
                   color="tab:red" if on_front else "tab:blue")
        k = seen_heights.get(round(y, 6), 0)
        seen_heights[round(y, 6)] = k + 1
        offset = (6 + 10 * (k // 2)) * (1 if k % 2 == 0 else -1) - (4 if k % 2 else 0)
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(5, offset), fontsize=8,
                    arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.5} if k else None)
    ax.plot([points[n][0] for n in front], [points[n][1] for n in front], "--",
            color="tab:red", label="Pareto front", zorder=2)
    if log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=xlabel, ylabel="test accuracy", title=title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    return save(fig, path)


def bars(values: dict[str, float], ylabel: str, title: str, path: str | Path) -> Path:
    """One bar per variant."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.bar(list(values), list(values.values()), color="tab:blue")
    ax.set(ylabel=ylabel, title=title)
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def grouped_bars(groups: dict[str, dict[str, float]], ylabel: str, title: str,
                 path: str | Path) -> Path:
    """One group of bars per key of `groups` (an op type), one bar per series in it (the
    reference and a variant), side by side."""
    plt = pyplot()
    series = list(dict.fromkeys(k for g in groups.values() for k in g))
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / max(len(series), 1)
    for i, name in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
        ax.bar(xs, [g.get(name, 0.0) for g in groups.values()], width, label=name)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.tick_params(axis="x", rotation=30)
    for label in ax.get_xticklabels():
        label.set_horizontalalignment("right")
    ax.set_yscale("log")  # a 20x slower op type beside a 1.2x one: both readable
    ax.set(ylabel=f"{ylabel} (log scale)", title=title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save(fig, path)


def training_curves(histories: dict[str, dict[str, list[float]]], path: str | Path) -> Path:
    """Loss and accuracy per epoch (training and validation) of each Keras model; each model
    continues where the previous one stopped (QAT fine-tunes the trained float model)."""
    plt = pyplot()
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    start = 0
    for model, history in histories.items():
        n = len(history.get("loss", []))
        for key, style in (("", "-"), ("val_", "--")):
            epochs = range(start + 1, start + len(history.get(f"{key}loss", [])) + 1)
            if len(epochs):
                loss_ax.plot(epochs, history[f"{key}loss"], style, marker="o", markersize=3,
                             label=f"{model} {'validation' if key else 'training'}")
                acc_ax.plot(epochs, history[f"{key}accuracy"], style, marker="o",
                            markersize=3, label=f"{model} {'validation' if key else 'training'}")
        start += n
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def curves(panels: dict[str, dict[str, list[tuple[float, float, float, float]]]],
           lines: dict[str, float], xlabel: str, ylabel: str, path: str | Path,
           zoom: tuple[float, float] | None = None) -> Path:
    """One column per key of `panels` (a variant), one line per series in it (a selection)
    through its points `(x, y, low, high)` on a log x axis, with a band from `low` to
    `high`; `lines`: level lines drawn on every panel (`{label: y}`). With `zoom` (y from,
    to), a second row shows that range of the same curves."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plt = pyplot()
    cols, rows = max(len(panels), 1), 2 if zoom else 1
    fig, axes = plt.subplots(rows, cols, figsize=(5.5 * cols, 3.6 * rows), squeeze=False)
    for c, (title, series) in enumerate(panels.items()):
        for r in range(rows):
            ax = axes[r][c]
            for name, points in series.items():
                if not points:  # every point of that series failed: nothing to draw
                    continue
                pts = sorted(points)
                xs = [p[0] for p in pts]
                line, = ax.plot(xs, [p[1] for p in pts], marker="o", markersize=3, label=name)
                ax.fill_between(xs, [p[2] for p in pts], [p[3] for p in pts],
                                color=line.get_color(), alpha=0.15)
            for i, (label, y) in enumerate(lines.items()):
                ax.axhline(y, color="black", linestyle=("-", "--", ":")[i % 3],
                           linewidth=0.8, label=label)
            if any(points for points in series.values()):
                ax.set_xscale("log")
            ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            if r == 1 and zoom:
                ax.set_ylim(*zoom)
            ax.set(xlabel=xlabel if r == rows - 1 else "",
                   title=title if r == 0 else f"{title} (close up)")
            ax.grid(alpha=0.3)
        axes[0][c].set_ylabel(ylabel)
        if rows > 1:
            axes[1][c].set_ylabel(ylabel)
    axes[0][-1].legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save(fig, path)
