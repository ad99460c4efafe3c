"""Figures (matplotlib, Agg): Section 3's Figure 1 (perturbed decodings) and Figures 2/3 (t-SNE of
the latent space with prior samples), training curves, and reproduced-vs-paper plots.

Every function writes one PNG atomically and returns its path; inputs are plain arrays or trained
models, so the figures can be redrawn from saved outputs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from arelbo.core.runtime import atomic_path

PRIOR_COLOUR = "#ff69b4"  # the paper's pink prior samples


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out: Path, dpi: int = 120) -> Path:
    out = Path(out)
    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format="png")
    _pyplot().close(fig)
    return out


def figure1(panels: Sequence[dict], out: Path, *, caption: str = "") -> Path:
    """Figure 1: one panel per (σx², encoding, s²), each row an image: the original (red frame), its
    reconstruction μθ(μφ(x)) (blue frame), then decodings of μφ(x) + ε, ε ~ N(0, s²I).

    `panels`: dicts with `title` and `rows`, a uint8 array n_images × (2 + n_perturbations) × H × W.
    Panels are laid out with one row of panels per σx² (panels with the same `row` key)."""
    plt = _pyplot()
    rows = list(dict.fromkeys(p["row"] for p in panels))
    cols = max(sum(p["row"] == r for p in panels) for r in rows)
    n_img, n_col = panels[0]["rows"].shape[:2]
    fig, axes = plt.subplots(
        len(rows), cols, figsize=(cols * n_col * 0.42 + 0.3, len(rows) * n_img * 0.46 + 0.6), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    placed = {r: 0 for r in rows}
    for p in panels:
        r = rows.index(p["row"])
        ax = axes[r, placed[p["row"]]]
        placed[p["row"]] += 1
        grid = p["rows"]
        h, w = grid.shape[2:]
        canvas = np.ones((n_img * (h + 2), n_col * (w + 2), 3), dtype=np.float32)
        for i in range(n_img):
            for j in range(n_col):
                y, x = i * (h + 2) + 1, j * (w + 2) + 1
                canvas[y : y + h, x : x + w] = grid[i, j, ..., None] / 255.0
                frame = {0: (0.85, 0.1, 0.1), 1: (0.1, 0.3, 0.9)}.get(j)
                if frame is not None:
                    canvas[y - 1, x - 1 : x + w + 1] = canvas[y + h, x - 1 : x + w + 1] = frame
                    canvas[y - 1 : y + h + 1, x - 1] = canvas[y - 1 : y + h + 1, x + w] = frame
        ax.imshow(canvas, interpolation="nearest")
        ax.set_title(p["title"], fontsize=8)
    if caption:
        fig.suptitle(caption, fontsize=8)
    return _save(fig, out)


def tsne_embedding(latents: np.ndarray, prior: np.ndarray, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Joint 2-D t-SNE (scikit-learn, seeded) of encoder means and prior samples."""
    from sklearn.manifold import TSNE

    points = np.concatenate([latents, prior]).astype(np.float64)
    perplexity = float(min(30.0, max(5.0, (len(points) - 1) / 3.0)))
    emb = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(points)
    return emb[: len(latents)], emb[len(latents) :]


def tsne_figure(panels: Sequence[dict], out: Path, *, caption: str = "") -> Path:
    """Figures 2/3: one t-SNE panel per grid point. `panels`: dicts with `title`, `latents` (N×d_z
    encoder means), `labels` (N digits), `prior` (M×d_z samples of N(0, I)) and `seed`."""
    from matplotlib.colors import ListedColormap

    plt = _pyplot()
    # tab10 with its pink (digit 6) swapped for black: pink is the prior's colour, as in the paper
    colours = list(plt.get_cmap("tab10").colors)
    colours[6] = (0.0, 0.0, 0.0)
    digit_cmap = ListedColormap(colours)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.4), squeeze=False)
    for ax, p in zip(axes[0], panels):
        emb, emb_prior = tsne_embedding(p["latents"], p["prior"], seed=p["seed"])
        sc = ax.scatter(emb[:, 0], emb[:, 1], c=p["labels"], cmap=digit_cmap, s=3, vmin=-0.5, vmax=9.5)
        ax.scatter(emb_prior[:, 0], emb_prior[:, 1], c=PRIOR_COLOUR, s=8, marker="x", lw=0.6, label="prior p(z)")
        ax.set_title(p["title"], fontsize=9)
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(sc, ax=axes[0].tolist(), ticks=range(10), shrink=0.8, label="digit")
    axes[0, 0].legend(loc="lower left", fontsize=7, markerscale=3)
    if caption:
        fig.suptitle(caption, fontsize=8)
    return _save(fig, out)


def training_curves(logs: dict[str, object], out: Path, *, metric: str = "loss", caption: str = "") -> Path:
    """One panel per run: training (solid) and validation (dashed) `metric` per epoch. `logs`:
    label -> DataFrame of a train_log.csv."""
    plt = _pyplot()
    n = max(len(logs), 1)
    cols = min(4, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.3 * cols, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (label, df) in zip(axes.flat, logs.items()):
        ax.axis("on")
        for split, style in (("train", "-"), ("val", "--")):
            column = f"{split}_{metric}"
            if column in df:
                ax.plot(
                    df["epoch"],
                    df[column],
                    style,
                    marker="." if len(df) < 10 else None,
                    color="C0" if split == "train" else "C1",
                    label=split,
                )
        ax.set_title(label, fontsize=7)
        ax.set_xlabel("epoch", fontsize=7)
        ax.tick_params(labelsize=6)
    axes.flat[0].legend(fontsize=6)
    if caption:
        fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    return _save(fig, out)


def paper_comparison(vs_paper, out: Path, *, caption: str = "") -> Path:
    """Reproduced vs paper value, one panel per metric (per dataset/encoding group), one point per
    table row, with the identity line. `vs_paper`: a table's comparison DataFrame (columns
    metric, paper, reproduced, and the row keys)."""
    plt = _pyplot()
    df = vs_paper.dropna(subset=["paper", "reproduced"])
    group_cols = [c for c in ("dataset", "encoding") if c in df and df[c].nunique() > 1]
    keys = list(df.groupby(group_cols + ["metric"], sort=False).groups) if len(df) else []
    n = max(len(keys), 1)
    cols = min(4, n)
    fig, axes = plt.subplots(
        (n + cols - 1) // cols, cols, figsize=(3.4 * cols, 3.2 * ((n + cols - 1) // cols)), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, key in zip(axes.flat, keys):
        key = key if isinstance(key, tuple) else (key,)
        part = df
        for col, value in zip(group_cols + ["metric"], key):
            part = part[part[col] == value]
        ax.axis("on")
        x, y = part["paper"].to_numpy(float), part["reproduced"].to_numpy(float)
        ax.scatter(x, y, s=14)
        lo, hi = np.nanmin(np.r_[x, y]), np.nanmax(np.r_[x, y])
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        if lo > 0 and hi / lo > 100:
            ax.set_xscale("log"), ax.set_yscale("log")
        ax.set_title(" / ".join(str(k) for k in key), fontsize=8)
        ax.set_xlabel("paper", fontsize=7), ax.set_ylabel("reproduced", fontsize=7)
        ax.tick_params(labelsize=6)
    if not keys:
        axes.flat[0].text(0.5, 0.5, "no cell has both a paper and a reproduced value", ha="center")
    if caption:
        fig.suptitle(caption, fontsize=8)
    fig.tight_layout()
    return _save(fig, out)
