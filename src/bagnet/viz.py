"""Figures from arrays (matplotlib, no display needed): pure functions that return a Figure."""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_figure(matrix: np.ndarray, categories: Sequence[str], title: Optional[str] = None):
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts written in the cells."""
    plt = _plt()
    matrix = np.asarray(matrix)
    n = len(categories)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not fit {n} categories")
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), labels=list(categories), rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels=list(categories), fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=7,
                            color="white" if norm[i, j] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def save_figure(fig, path) -> None:
    """Write a figure to ``path`` (PNG at 120 dpi) and free it."""
    plt = _plt()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def line_figure(series: dict, xlabel: str, ylabel: str, title: Optional[str] = None, log_x: bool = False):
    """One line per entry ``name: (xs, ys)``."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=name)
    if log_x:
        ax.set_xscale("log", base=2)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def image_row_figure(images: Sequence[np.ndarray], titles: Sequence[str]):
    """Images (H, W, 3) in [0, 1] side by side with a title each."""
    plt = _plt()
    fig, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.6), squeeze=False)
    for ax, image, title in zip(axes[0], images, titles):
        ax.imshow(np.clip(image, 0, 1))
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    return fig


def matrices_figure(matrices: dict, names: Sequence[str], title: Optional[str] = None, vmin: float = -1.0,
                    vmax: float = 1.0):
    """Square matrices side by side (diverging colours from vmin to vmax), values written in the cells."""
    plt = _plt()
    n = len(names)
    size = max(3.0, 0.5 * n + 1.5)
    fig, axes = plt.subplots(1, len(matrices), figsize=(size * len(matrices) + 1, size + 1.2), squeeze=False,
                             layout="constrained")
    for ax, (label, matrix) in zip(axes[0], matrices.items()):
        matrix = np.asarray(matrix, dtype=float)
        im = ax.imshow(matrix, cmap="RdBu_r", vmin=vmin, vmax=vmax)
        ax.set_xticks(range(n), labels=list(names), rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(n), labels=list(names), fontsize=8)
        ax.set_title(label, fontsize=9)
        for i in range(n):
            for j in range(n):
                if np.isfinite(matrix[i, j]):
                    ax.text(j, i, f"{matrix[i, j]:.2f}", ha="center", va="center", fontsize=7)
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    if title:
        fig.suptitle(title)
    return fig


def grouped_bars_figure(groups: dict, names: Sequence[str], ylabel: str = "", title: Optional[str] = None):
    """Bars grouped by ``names``: one colour per entry of ``groups`` (``label: values per name``; None = no bar)."""
    plt = _plt()
    n, k = len(names), len(groups)
    width = 0.8 / max(k, 1)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * n + 2), 4))
    for j, (label, values) in enumerate(groups.items()):
        xs = [i + (j - (k - 1) / 2) * width for i in range(n)]
        heights = [float("nan") if v is None else v for v in values]
        ax.bar(xs, heights, width=width, label=label)
    ax.set_xticks(range(n), labels=list(names), rotation=30, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def attribution_grid_figure(images: np.ndarray, maps: dict, signed: Sequence[str] = (),
                            row_titles: Optional[Sequence[str]] = None, title: Optional[str] = None,
                            percentile: float = 99.0):
    """One row per image: the image, then each method's map (N, H, W).

    The same colour rule for every map: scaled by its own ``percentile`` of |value| (robust to a few extreme
    pixels); signed maps on a diverging scale centred at zero (red supports the target, blue opposes it),
    non-negative maps (saliency, Grad-CAM) on a sequential scale from zero.
    """
    plt = _plt()
    images = np.asarray(images)
    n = images.shape[0]
    cols = 1 + len(maps)
    fig, axes = plt.subplots(n, cols, figsize=(1.9 * cols, 1.9 * n + 0.4), squeeze=False)
    for i in range(n):
        axes[i, 0].imshow(np.clip(images[i], 0, 1))
        if row_titles is not None:
            axes[i, 0].set_ylabel(row_titles[i], fontsize=7)
        for j, (method, values) in enumerate(maps.items(), start=1):
            m = np.asarray(values[i], dtype=float)
            scale = float(np.percentile(np.abs(m), percentile)) or 1.0
            if method in signed:
                axes[i, j].imshow(m, cmap="bwr", vmin=-scale, vmax=scale)
            else:
                axes[i, j].imshow(m, cmap="magma", vmin=0, vmax=scale)
            if i == 0:
                axes[i, j].set_title(method.replace("_", " "), fontsize=8)
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig
