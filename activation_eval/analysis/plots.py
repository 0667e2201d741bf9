"""Plots of records and of the statistics modes: each function writes one PNG and returns its path.

Headless: figures are `matplotlib.figure.Figure` objects saved directly (the Agg canvas); pyplot
and the global backend are never touched; every text is plain text (no mathtext, no TeX: names
from a run are drawn as they are), and matplotlib is imported inside the functions, so importing
this module does not import it. The other plots live with what they draw: the run-folder PCA in
pca.py, the probe's in probe/plots.py, the logit lens's in lens/plots.py.

Public names:
    plot_layer_norms(layer_stats, path, title=...)   median per-position L2 norm by layer, IQR band,
                                                     log axis when it helps, final_norm apart
                                                     (layer_stats: FileResult.layers or DirectoryResult.layers)
    plot_histograms(record, path, bins=60, title=None)
                                                     per-layer histograms over the 1st-99th percentile,
                                                     clipped counts on each panel
    plot_position_heatmap(record, path, tokenizer=None)
                                                     layers x positions heatmap of L2 norms
    plot_compare(comparison, path)                   cosine and L2 distance by layer (a CompareResult),
                                                     naming A and B
    default_layer(names) -> str                      the middle decoder layer (PCA default)
    MAX_LABELLED_POSITIONS                           heatmap: token labels up to this many positions

Example:
    >>> from activation_eval.analysis import stats
    >>> res = stats.analyze_file("results/run1/activations/geo-001.safetensors")
    >>> plot_layer_norms(res.layers, "plots/geo-001_norms.png")
    'plots/geo-001_norms.png'
    >>> default_layer(["embeddings", "layer_0", "layer_1", "layer_2", "final_norm"])
    'layer_1'
"""
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from ..schema.names import FINAL_NORM, decoder_index
from ..schema.stats import CompareResult, Similarity
from . import plot_base
from .arrays import as_2d, record_meta


class NormQuartiles(Protocol):
    """What plot_layer_norms reads of a layer's statistics (TensorStats, DirectoryLayer)."""
    @property
    def position_norm_q25(self) -> float | None: ...
    @property
    def position_norm_median(self) -> float | None: ...
    @property
    def position_norm_q75(self) -> float | None: ...


MAX_LABELLED_POSITIONS = 48  # heatmap: token labels on the axis up to this many positions


def _layer_figure(names: Sequence[str]) -> tuple[Any, Any]:
    """(figure, axes) for one line of values by layer, widened for many layers."""
    fig = plot_base.new_figure(min(13, max(6, 0.3 * len(names) + 3)), 4.8)
    return fig, fig.subplots()


def _plot_by_layer(ax: Any, names: list[str], values: Sequence[float], **style: Any) -> list[str]:
    """A line over the layers, with final_norm (if present, last) a separate unjoined point."""
    body, has_final = plot_base.split_final(names)
    vals = np.asarray(values, dtype=float)
    line, = ax.plot(range(len(body)), vals[: len(body)], marker="o", **style)
    if has_final:
        ax.plot([len(body)], [vals[names.index(FINAL_NORM)]], marker="s", linestyle="none",
                color=line.get_color())
    return body + ([FINAL_NORM] if has_final else [])


def _wants_log(low: np.ndarray, high: np.ndarray) -> bool:
    """A log axis helps when the positive values span more than a factor of 20."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return bool(low.size) and bool(np.all(low > 0)) and bool(high.max() / low.min() > 20)


@plot_base.plain_text
def plot_layer_norms(layer_stats: Mapping[str, NormQuartiles], path: str | os.PathLike[str],
                     title: str = "Per-position L2 norm by layer") -> str:
    """Median per-position L2 norm per layer with its interquartile band (never below 0).

    Uses the quartiles of tensor_stats / analyze_directory; the y axis is logarithmic when the
    band spans more than a factor of 20; final_norm (a different quantity: the normed state) is a
    separate point right of a dotted line, not joined to the last layer.
    """
    names = [n for n, s in layer_stats.items() if s.position_norm_median is not None]
    if not names:
        raise ValueError("no layer has per-position norm quartiles to plot")
    q = {"q25": np.array([layer_stats[n].position_norm_q25 for n in names], dtype=float),
         "median": np.array([layer_stats[n].position_norm_median for n in names], dtype=float),
         "q75": np.array([layer_stats[n].position_norm_q75 for n in names], dtype=float)}
    body, has_final = plot_base.split_final(names)
    xs = np.arange(len(body))
    fig, ax = _layer_figure(names)
    ax.plot(xs, q["median"][: len(body)], marker="o", color="tab:blue", label="median over positions")
    ax.fill_between(xs, q["q25"][: len(body)], q["q75"][: len(body)], color="tab:blue", alpha=0.25,
                    label="interquartile range (25th-75th percentile)")
    if has_final:
        i, x = names.index(FINAL_NORM), len(body)
        ax.axvline(x - 0.5, color="gray", linestyle=":", linewidth=1)
        ax.errorbar([x], [q["median"][i]], yerr=[[q["median"][i] - q["q25"][i]], [q["q75"][i] - q["median"][i]]],
                    marker="s", color="tab:orange", capsize=4, linestyle="none",
                    label="final_norm (after the final norm; median, IQR)")
    plot_base.layer_axis(ax, body + ([FINAL_NORM] if has_final else []))
    if _wants_log(q["q25"], q["q75"]):
        ax.set_yscale("log")
        ax.set_ylabel("L2 norm of a position's activation (log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("L2 norm of a position's activation")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return plot_base.save_png(fig, path)


@plot_base.plain_text
def plot_histograms(record: dict[str, Any], path: str | os.PathLike[str], bins: int = 60,
                    title: str | None = None) -> str:
    """Grid of per-layer histograms of activation values over each layer's 1st-99th percentile.

    Values outside that range are not drawn; each panel states how many were clipped, so one
    extreme position (an attention sink) cannot stretch the axis and flatten every histogram.
    """
    acts = record["activations"]
    n = len(acts)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = plot_base.new_figure(3.2 * cols, 2.5 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (name, t) in zip(axes, acts.items()):
        a = as_2d(t).ravel()
        lo, hi = np.percentile(a, [1, 99]) if a.size else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        inside = (a >= lo) & (a <= hi)
        ax.hist(a[inside], bins=bins, range=(lo, hi), color="tab:blue", log=True)
        ax.set_title(f"{name}  (median {np.median(a):.3g}, IQR {np.subtract(*np.percentile(a, [75, 25])):.3g})",
                     fontsize=8)
        clipped = int(a.size - inside.sum())
        ax.set_xlabel(f"activation value; {clipped} of {a.size} outside the\n1st-99th pct (min {a.min():.3g}, "
                      f"max {a.max():.3g}), not drawn", fontsize=7)
        ax.set_ylabel("count (log)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title or f"Activation value histograms per layer - {record.get('model') or 'record'}")
    return plot_base.save_png(fig, path)


def _token_labels(tokens: list[int], positions: list[int], tokenizer: Any = None) -> list[str]:
    ids = [tokens[p] if p < len(tokens) else None for p in positions]
    if tokenizer is not None:
        # decode one token at a time: readable text ("Paris", "\\n") rather than BPE pieces ("ĠParis", "Ċ")
        strs = [repr(tokenizer.decode([i]))[1:-1] if i is not None else "" for i in ids]
        return [f"{p}: {s}" if i is not None else str(p) for p, i, s in zip(positions, ids, strs)]
    return [f"{p}: {i}" if i is not None else str(p) for p, i in zip(positions, ids)]


@plot_base.plain_text
def plot_position_heatmap(record: dict[str, Any], path: str | os.PathLike[str], tokenizer: Any = None) -> str:
    """Heatmap of per-position L2 norms: layers (rows) x kept positions (columns), log colour scale.

    Axis labels are "position: token id" (or "position: token" with a `tokenizer`) when there are at
    most 48 positions; a dashed line marks where generated tokens start.
    """
    from matplotlib.colors import LogNorm
    m = record_meta(record)
    names = m["layer_names"]
    norms = np.stack([np.linalg.norm(as_2d(record["activations"][n]), axis=1) for n in names])
    pos = m["positions"]
    fig = plot_base.new_figure(min(14, max(7, 0.28 * len(pos) + 3)), max(4.5, 0.3 * len(names) + 2.5))
    ax = fig.subplots()
    positive = norms.size and norms.min() > 0
    im = ax.imshow(norms, aspect="auto", cmap="viridis", interpolation="nearest",
                   norm=LogNorm() if positive else None)
    fig.colorbar(im, ax=ax, label="L2 norm" + (" (log scale)" if positive else ""))
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8 if len(names) > 20 else 9)
    ax.set_ylabel("layer")
    if len(pos) <= MAX_LABELLED_POSITIONS:
        ax.set_xticks(range(len(pos)))
        ax.set_xticklabels(_token_labels(m["tokens"], pos, tokenizer), rotation=90, fontsize=7)
        ax.set_xlabel("position: " + ("token" if tokenizer is not None else "token id"))
    else:
        ticks = ax.get_xticks()
        ticks = [t for t in ticks if 0 <= t < len(pos)]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(pos[int(t)]) for t in ticks])
        ax.set_xlabel("token position")
    gen = [i for i, p in enumerate(pos) if p >= m["num_prompt_tokens"]]
    if gen:
        ax.axvline(gen[0] - 0.5, color="white", linestyle="--", linewidth=1.5)
    ax.set_title("Per-position activation L2 norm by layer"
                 + ("\n(white dashed line: generated tokens start)" if gen else ""))
    return plot_base.save_png(fig, path)


@plot_base.plain_text
def plot_compare(comparison: CompareResult, path: str | os.PathLike[str]) -> str:
    """Cosine similarity (left) and L2 distance (right) by layer for each comparison kind; the
    title names both files (A and B)."""
    names = list(comparison.layers)
    fig = plot_base.new_figure(min(16, max(10, 0.5 * len(names) + 4)), 5.0)
    ax_cos, ax_dist = fig.subplots(1, 2)
    alignments = (("last prompt token", lambda c: c.last_prompt_token), ("mean over prompt", lambda c: c.prompt_mean),
                  ("common prefix (mean per position)", lambda c: c.common_prefix))
    body, has_final = plot_base.split_final(names)
    order = body + ([FINAL_NORM] if has_final else [])
    for label, alignment in alignments:
        vals: list[Similarity | None] = [alignment(comparison.layers[n]) for n in order]
        if all(v is None for v in vals):
            continue
        _plot_by_layer(ax_cos, order, [np.nan if v is None or v.cosine is None else v.cosine for v in vals],
                       label=label)
        _plot_by_layer(ax_dist, order, [np.nan if v is None else v.l2_distance for v in vals], label=label)
    for ax, ylabel in ((ax_cos, "cosine similarity"), (ax_dist, "L2 distance")):
        plot_base.layer_axis(ax, order)
        if has_final:
            ax.axvline(len(body) - 0.5, color="gray", linestyle=":", linewidth=1)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_dist.set_ylim(bottom=0)
    ax_cos.set_title("Cosine similarity A vs B by layer")
    ax_dist.set_title("L2 distance A vs B by layer")
    files = comparison.files
    if files:
        fig.suptitle(f"A = {os.path.basename(files[0])}   vs   B = {os.path.basename(files[1])}"
                     + ("   (final_norm drawn apart: the normed state)" if has_final else ""), fontsize=10)
    return plot_base.save_png(fig, path)


def default_layer(names: Sequence[str]) -> str:
    """The middle decoder layer (layer_{L//2}) when names are layer_i, else the middle name."""
    decoder = [n for n in names if decoder_index(n) is not None]
    pool = decoder or list(names)
    return pool[len(pool) // 2]
