"""The run-folder PCA plot (--directory RUN --plot; the report's PCA section).

One vector per question at a layer (`reduce` as in dataset.load_run_layer), projected on its first
two principal components; colour = a results field (default correct), marker = category (or
correctness when colouring by category). Coloured by correctness, a caption gives the difference
of the mean PC 1 / PC 2 coordinates, incorrect - correct, within the strata (stratify.py) with its
95% interval, the pooled one beside: the eye compares the colours pooled over categories.

Public names:
    plot_pca(run_dir, path, layer=None, color_by="correct", reduce="last_prompt", progress=False,
             stratify_by="category") -> path
    MARKERS, MAX_COLOR_LEVELS

Example:
    >>> plot_pca("runs/r1", "plots/r1_pca.png", "layer_5")
    'plots/r1_pca.png'
"""
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from . import plot_base
from .arrays import run_layers
from .dataset import load_run_layer, resolve_reduce
from .plots import default_layer
from .stratify import format_estimate, row_strata, strata_line, stratified_differences

MARKERS = "osD^vP*Xph<>"   # PCA: one marker per category (cycled when there are more)
MAX_COLOR_LEVELS = 10      # PCA --color_by: more distinct values than this are drawn as numbers or refused


def _field_values(rows: Sequence[Mapping[str, Any]], field: str) -> list[Any]:
    """The rows' values of `field` as strings (None -> "none"); a field no row has is a ValueError."""
    if not any(field in r for r in rows):
        known = sorted({k for r in rows for k in r if not isinstance(r[k], (dict, list))})
        raise ValueError(f"no results row has a field {field!r}; --color_by takes one of: {', '.join(known)}")
    return [r.get(field) for r in rows]


def _pca_caption(Z: np.ndarray, rows: Sequence[Mapping[str, Any]], stratify_by: str) -> str:
    """Coloured by correctness, the eye compares correct and incorrect points pooled over categories:
    a caption with the difference of the mean PC 1 and PC 2 coordinates (incorrect - correct) within
    `stratify_by` (stratify.stratified_difference), the pooled one beside; "" without both classes."""
    correct = [r.get("correct") for r in rows]
    if not ({True, False} <= {c for c in correct if isinstance(c, bool)}):
        return ""
    ids = [("row", i) if r.get("id") is None else r.get("id") for i, r in enumerate(rows)]
    res = stratified_differences({"PC 1": Z[:, 0], "PC 2": Z[:, 1]}, correct, row_strata(rows, stratify_by),
                                 clusters=ids, by=stratify_by)
    first = res["PC 1"]
    one = first.strata_used + len(first.strata_skipped) <= 1
    lines = [f"mean coordinate, incorrect - correct, {first.level * 100:g}% bootstrap interval; {strata_line(first)}"]
    for pc, r in res.items():
        if one:
            lines.append(f"{pc}: {format_estimate(r.pooled)}")
        else:
            flip = f"  - signs disagree (Simpson's paradox): read the within-{stratify_by} figure"
            lines.append(f"{pc}: {format_estimate(r.stratified)} within {stratify_by};  pooled "
                         f"{format_estimate(r.pooled)}" + (flip if r.sign_reversal else ""))
    return "\n".join(lines)


@plot_base.plain_text
def plot_pca(run_dir: str | os.PathLike[str], path: str | os.PathLike[str], layer: str | None = None,
             color_by: str = "correct", reduce: str | int = "last_prompt", progress: bool = False,
             stratify_by: str = "category") -> str:
    """2-D PCA of a run's activations at `layer` (one vector per question, `reduce` as in
    load_run_layer): colour by the results rows' `color_by` field (default correct / incorrect;
    a numeric field with many values gets a colour scale), marker by category (by correctness when
    colouring by category), legends for both. Coloured by correct, a caption gives the difference
    of the mean PC 1 / PC 2 coordinates, incorrect - correct, within `stratify_by` (the results
    field whose values are the strata; default category) with its 95% interval, the pooled one beside.
    """
    from sklearn.decomposition import PCA
    layer = layer or default_layer(run_layers(run_dir))
    reduce = resolve_reduce(run_dir, reduce)[0]              # the title names the concrete position
    X, rows = load_run_layer(run_dir, layer, reduce=reduce, progress=progress)
    if len(rows) < 2:
        raise ValueError(f"PCA needs at least 2 examples; {run_dir} has {len(rows)}")
    colors = _field_values(rows, color_by)
    pca = PCA(n_components=2)
    Z = pca.fit_transform(np.asarray(X, dtype=np.float64))
    # markers show the category, or correctness when the colours already show the category
    marker_field = "correct" if color_by == "category" else "category"
    marker_names = {"True": "correct", "False": "incorrect"} if marker_field == "correct" else {}
    cats = [marker_names.get(str(r.get(marker_field)), str(r.get(marker_field) or "uncategorized")) for r in rows]
    by_cat = {c: MARKERS[i % len(MARKERS)] for i, c in enumerate(sorted(set(cats)))}
    fig = plot_base.new_figure(7.5, 5.8)
    ax = fig.subplots()
    numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in colors)
    levels = sorted({str(v) for v in colors}, key=lambda v: (v not in ("True", "False"), v))
    if numeric and len(levels) > MAX_COLOR_LEVELS:
        _scatter_scale(fig, ax, Z, colors, cats, by_cat, color_by)
    else:
        _scatter_levels(ax, Z, colors, levels, cats, by_cat, color_by)
    _marker_legend(ax, cats, by_cat, marker_field)
    ev = pca.explained_variance_ratio_ * 100
    ax.set_xlabel(f"PC 1 ({ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({ev[1]:.1f}% of variance)")
    where = "last-prompt-token" if reduce == "last_prompt" else str(reduce)
    ax.set_title(f"PCA of {where} activations at {layer} (n={len(rows)})\n{os.path.basename(os.path.normpath(run_dir))}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    caption = _pca_caption(Z, rows, stratify_by) if color_by == "correct" else ""
    if caption:
        fig.supxlabel(caption, fontsize=7.5, x=0.02, ha="left")
    return plot_base.save_png(fig, path)


def _scatter_scale(fig: Any, ax: Any, Z: np.ndarray, colors: list[Any], cats: list[str], by_cat: dict[str, str],
                   color_by: str) -> None:
    """A numeric field with many values: one colour scale (viridis) and its colour bar."""
    import matplotlib.cm
    import matplotlib.colors
    norm = matplotlib.colors.Normalize(min(colors), max(colors))
    for cat, marker in by_cat.items():
        m = np.array([c == cat for c in cats])
        ax.scatter(Z[m, 0], Z[m, 1], c=np.array(colors, dtype=float)[m], cmap="viridis", norm=norm,
                   marker=marker, s=26, alpha=0.8, edgecolors="none")
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label=color_by)


def _scatter_levels(ax: Any, Z: np.ndarray, colors: list[Any], levels: list[str], cats: list[str],
                    by_cat: dict[str, str], color_by: str) -> None:
    """A few distinct values: one colour each (correct green, incorrect red) and a legend with their counts."""
    from matplotlib.lines import Line2D
    if len(levels) > MAX_COLOR_LEVELS:
        raise ValueError(f"--color_by {color_by}: {len(levels)} distinct values; colour needs at most "
                         f"{MAX_COLOR_LEVELS} (or a numeric field)")
    palette = {"True": "tab:green", "False": "tab:red"}
    others = iter(["tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:gray",
                   "tab:olive", "tab:cyan", "gold", "black"])
    cmap = {v: palette.get(v) or next(others) for v in levels}
    strs = np.array([str(v) for v in colors])
    for cat, marker in by_cat.items():
        for level in levels:
            m = (strs == level) & np.array([c == cat for c in cats])
            if m.any():
                ax.scatter(Z[m, 0], Z[m, 1], color=cmap[level], marker=marker, s=26, alpha=0.8, edgecolors="none")
    names = {"True": "correct", "False": "incorrect"} if color_by == "correct" else {}
    legend = ax.legend([Line2D([], [], color=cmap[v], marker="o", linestyle="none") for v in levels],
                       [f"{names.get(v, v)} ({int((strs == v).sum())})" for v in levels],
                       title=color_by, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    ax.add_artist(legend)


def _marker_legend(ax: Any, cats: list[str], by_cat: dict[str, str], marker_field: str) -> None:
    from matplotlib.lines import Line2D
    ax.legend([Line2D([], [], color="black", marker=mk, linestyle="none", markerfacecolor="none")
               for mk in by_cat.values()],
              [f"{c} ({cats.count(c)})" for c in by_cat], title=f"{marker_field} (marker)",
              loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8)
