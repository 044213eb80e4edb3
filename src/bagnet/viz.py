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
    """Row-normalised confusion matrix (rows: true class, columns: predicted), counts written in the cells.

    With more than 30 classes only the classes that occur (as truth or prediction) are drawn, and beyond 60 of
    those the figure keeps a fixed size without class names (ImageNet's 1000 classes: one pixel-sized cell each).
    """
    plt = _plt()
    matrix = np.asarray(matrix)
    n = len(categories)
    if matrix.shape != (n, n):
        raise ValueError(f"confusion matrix of shape {matrix.shape} does not fit {n} categories")
    if n > 30:
        used = np.flatnonzero(matrix.sum(0) + matrix.sum(1))
        matrix, categories, n = matrix[np.ix_(used, used)], [categories[i] for i in used], len(used)
    rows = matrix.sum(1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.45 * n + 2) if n <= 60 else 12.0
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    if n <= 60:
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
    return _finish(fig, ax, title)


def save_figure(fig, path) -> None:
    """Write a figure to ``path`` (PNG at 120 dpi, atomically: a reader never sees half a PNG) and free it."""
    from .plumbing import figure_png, write_bytes

    write_bytes(path, figure_png(fig))


def _finish(fig, ax, title: Optional[str], fontsize: Optional[float] = None):
    """Title (when given: on ``ax``, or over the whole figure when ``ax`` is None) and tight layout, the last step
    of every figure."""
    if title:
        (ax.set_title if ax is not None else fig.suptitle)(title, fontsize=fontsize)
    fig.tight_layout()
    return fig


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
    return _finish(fig, ax, title)


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
    return _finish(fig, ax, title, 10)


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
    return _finish(fig, None, title, 10)


# ---------------------------------------------------------------------------------------------------- evidence overlays
def robust_scale(values: np.ndarray, percentile: float = 99.0) -> float:
    """The ``percentile`` of |values| (a few extreme pixels do not wash out the rest); 1.0 for an all-zero map."""
    scale = float(np.percentile(np.abs(np.asarray(values, dtype=float)), percentile))
    return scale if scale > 0 else 1.0


def overlay_rgb(image: np.ndarray, heatmap: np.ndarray, scale: Optional[float] = None, background: str = "faded",
                percentile: float = 99.0) -> np.ndarray:
    """An RGB array (H, W, 3) in [0, 1]: the evidence ``heatmap`` (H, W) on a diverging scale centred at zero and
    clipped at ±``scale`` (default: its ``percentile`` of |value|), over the image shown faded (grey, light) or by
    its edges. Red supports the class, blue opposes it; the colour's opacity grows with |evidence|."""
    import matplotlib

    image = np.asarray(image, dtype=float)
    if image.max(initial=0) > 1.0:
        image = image / 255.0
    heatmap = np.asarray(heatmap, dtype=float)
    if image.shape[:2] != heatmap.shape:
        raise ValueError(f"image {image.shape[:2]} and heatmap {heatmap.shape} differ in size")
    scale = robust_scale(heatmap, percentile) if scale is None else float(scale)
    grey = image[..., :3] @ np.array([0.299, 0.587, 0.114])
    if background == "edges":
        gy, gx = np.gradient(grey)
        edges = np.hypot(gx, gy)
        base = 1.0 - 0.8 * np.clip(edges / (np.percentile(edges, 99) + 1e-12), 0, 1)
    elif background == "faded":
        base = 0.55 + 0.4 * grey
    else:
        raise ValueError(f"background must be 'faded' or 'edges', got {background!r}")
    normed = np.clip(heatmap / scale, -1, 1)
    colour = matplotlib.colormaps["bwr"]((normed + 1) / 2)[..., :3]
    alpha = np.abs(normed)[..., None]
    return np.clip((1 - alpha) * base[..., None] + alpha * colour, 0, 1)


def overlay_figure(image: np.ndarray, heatmap: np.ndarray, title: str = "", percentile: float = 99.0,
                   background: str = "faded", scale: Optional[float] = None):
    """The image beside its evidence overlay (:func:`overlay_rgb`) with a colour bar in evidence units, clipped at
    ``scale`` (default: the ``percentile`` of |evidence|, :func:`robust_scale`)."""
    import matplotlib

    plt = _plt()
    scale = robust_scale(heatmap, percentile) if scale is None else float(scale)
    h, w = np.asarray(heatmap).shape
    aspect = w / max(h, 1)
    fig, axes = plt.subplots(1, 2, figsize=(2 * 3.0 * min(max(aspect, 0.6), 1.8) + 0.9, 3.3),
                             gridspec_kw={"width_ratios": [1, 1]})
    image = np.asarray(image)
    axes[0].imshow(image)
    axes[0].set_title("image", fontsize=9)
    axes[1].imshow(overlay_rgb(image, heatmap, scale, background))
    axes[1].set_title(title or "evidence", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    mappable = matplotlib.cm.ScalarMappable(norm=matplotlib.colors.Normalize(-scale, scale), cmap="bwr")
    fig.colorbar(mappable, ax=axes[1], fraction=0.046, pad=0.03,
                 label=f"evidence (clipped at {percentile:g}th pct. |value|)")
    fig.tight_layout()
    return fig


def patch_gallery_figure(rows: Sequence[tuple[str, Sequence[np.ndarray], Sequence[str]]], title: str = ""):
    """A gallery: one row per ``(label, crops (q, q, 3), captions)``; crops shown enlarged without smoothing, side
    by side on a white strip (one axes per row: a figure of many patches draws in a fraction of the time)."""
    plt = _plt()
    cols = max((len(r[1]) for r in rows), default=1) or 1
    side = max((max(np.asarray(c).shape[:2]) for r in rows for c in r[1]), default=1)
    gap = max(1, side // 8)
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.25 * cols + 1.2, 1.45 * len(rows) + 0.4), squeeze=False)
    for r, (label, crops, captions) in enumerate(rows):
        strip = np.full((side, cols * (side + gap) - gap, 3), 255, np.uint8)
        ax = axes[r, 0]
        for c, crop in enumerate(crops):
            crop = np.asarray(crop)
            if crop.dtype != np.uint8:  # floats in [0, 1] (or already 0-255)
                crop = np.clip(crop * 255 + 0.5 if crop.max(initial=0) <= 1 else crop, 0, 255).astype(np.uint8)
            if crop.ndim == 2:
                crop = np.repeat(crop[..., None], 3, axis=2)
            h, w = crop.shape[:2]
            strip[:h, c * (side + gap):c * (side + gap) + w] = crop[..., :3]
            ax.text(c * (side + gap) + side / 2, -0.02 * side, captions[c], ha="center", va="bottom", fontsize=6)
        ax.imshow(strip, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        ax.set_ylabel(label, fontsize=7)
    return _finish(fig, None, title, 9)


def figure_png(fig, dpi: int = 100) -> bytes:
    """A figure as PNG bytes for embedding in HTML (100 dpi: pages stay small), freeing it."""
    from .plumbing import figure_png as png

    return png(fig, dpi=dpi)
