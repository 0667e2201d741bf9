"""What every plot of the analysis shares: plain text, a headless figure, saving, the layer axis.

Public names:
    plain_text(plot)            decorator: the plot runs with mathtext and TeX off (names drawn as written)
    new_figure(w, h)            a headless Agg figure (no pyplot), constrained layout
    save_png(fig, path) -> path the PNG written (its folder made)
    layer_axis(ax, names)       x axis labelled with the layer names
    split_final(names) -> (body, has_final)    every name but final_norm, and whether it is there
                                (final_norm, the normed state, is drawn apart from the layers' line)
    band_by_layer(ax, xs, n_body, values, ci, color, label, **style)
                                a line with its interval band over the layers; final_norm an errorbar apart

Example:
    >>> fig = new_figure(4, 3); ax = fig.subplots(); layer_axis(ax, ["layer_0", "layer_1"])
    >>> ax.get_xlabel(), save_png(fig, "plots/empty.png")
    ('layer', 'plots/empty.png')
"""
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from ..schema.names import FINAL_NORM

F = TypeVar("F", bound=Callable[..., Any])


def plain_text(plot: F) -> F:
    """`plot` run with every text drawn as plain text: matplotlib's mathtext and TeX off
    (text.parse_math, text.usetex), so that a category, layer, model or run name holding "$"
    is drawn as it is (`$\\foo{$` made savefig raise; "$5 and $6" was typeset as math). Text
    objects read the setting when they are made: every title, label, legend and tick of the
    figure is made inside this context, up to savefig."""
    @functools.wraps(plot)
    def run(*args: Any, **kwargs: Any) -> Any:
        import matplotlib
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return plot(*args, **kwargs)
    return run  # type: ignore[return-value]


def new_figure(w: float, h: float) -> Any:
    """A headless Agg figure (no pyplot, no global backend switch)."""
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h), layout="constrained")


def save_png(fig: Any, path: str | os.PathLike[str]) -> str:
    """Write `fig` as a PNG to `path` (creating its folder); returns the path."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    return os.fspath(path)


def layer_axis(ax: Any, names: Sequence[str]) -> None:
    """Label the x axis of `ax` with the layer names (rotated when there are many)."""
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                       fontsize=8 if len(names) > 20 else 9)
    ax.set_xlabel("layer")


def split_final(names: Sequence[str]) -> tuple[list[str], bool]:
    """(every name but final_norm, whether final_norm is among them): final_norm is drawn apart."""
    return [n for n in names if n != FINAL_NORM], FINAL_NORM in names


def band_by_layer(ax: Any, xs: Sequence[float], n_body: int, values: Sequence[float], ci: Sequence[Sequence[float]],
                  color: str, label: str, **style: Any) -> None:
    """A line with its interval band over the layers; a final_norm (beyond n_body) an errorbar point apart."""
    vals, band = np.asarray(values, dtype=float), np.asarray(ci, dtype=float).reshape(len(values), 2)
    ax.plot(xs[:n_body], vals[:n_body], marker="o", markersize=4, color=color, label=label, **style)
    ax.fill_between(xs[:n_body], band[:n_body, 0], band[:n_body, 1], color=color, alpha=0.2)
    if len(xs) > n_body:
        ax.errorbar([xs[-1]], [vals[-1]], yerr=[[vals[-1] - band[-1, 0]], [band[-1, 1] - vals[-1]]],
                    marker="s", color=color, capsize=4, linestyle="none")
