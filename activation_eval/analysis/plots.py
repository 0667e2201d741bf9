"""Plots of activation analyses: each function writes one PNG and returns its path.

Headless: figures are `matplotlib.figure.Figure` objects saved directly (the Agg canvas); pyplot
and the global backend are never touched; every text is plain text (no mathtext, no TeX: names
from a run are drawn as they are), and matplotlib (and scikit-learn for PCA) is imported
inside the functions, so importing this module does not import them. The analysis CLI
(--plot, --probe) calls them; analyze_activations.py re-exports them.

Public names:
    plot_layer_norms(layer_stats, path, title=...)   median per-position L2 norm by layer, IQR band,
                                                     log axis when it helps, final_norm apart
    plot_histograms(record, path, bins=60, title=None)
                                                     per-layer histograms over the 1st-99th percentile,
                                                     clipped counts on each panel
    plot_position_heatmap(record, path, tokenizer=None)
                                                     layers x positions heatmap of L2 norms
    plot_compare(comparison, path)                   cosine and L2 distance by layer, naming A and B
    plot_pca(run_dir, path, layer=None, color_by="correct", reduce="last_prompt", progress=False,
             stratify_by="category")                 2-D PCA of a run's activations, coloured by a
                                                     results field, marker by category; coloured by
                                                     correct, a caption with the PC 1 / PC 2 mean
                                                     difference within category, pooled beside
    plot_logit_lens(lens_result, path)               gold-token rank / probability by layer, correct vs
                                                     incorrect, bootstrap bands, chance level; below, the
                                                     difference within category beside the pooled one
    plot_probe, plot_position_auroc, plot_transfer, level_label
                                                     the probe's plots, re-exported from probe_plots.py
    default_layer(names) -> str                      the middle decoder layer (PCA default)
    MAX_LABELLED_POSITIONS                           heatmap: token labels up to this many positions

Example:
    >>> from activation_eval.analysis import plots, probe, stats
    >>> res = stats.analyze_file("results/run1/activations/geo-001.safetensors")
    >>> plots.plot_layer_norms(res["layers"], "plots/geo-001_norms.png")
    'plots/geo-001_norms.png'
    >>> plots.plot_probe(probe.probe_run("results/mc"), "plots/probe_mc.png")
    'plots/probe_mc.png'
    >>> plots.level_label(1 - 0.05 / 31)           # the Bonferroni level of 31 layers, as labels show it
    '99.84%'
"""
import math
import os
import textwrap

import numpy as np

from ..schema.names import FINAL_NORM, decoder_index
from . import plot_base
from .arrays import as_2d, record_meta, run_layers
from .dataset import load_run_layer, resolve_reduce
from .probe_plots import level_label, plot_position_auroc, plot_probe, plot_transfer  # noqa: F401  (re-exported)

MAX_LABELLED_POSITIONS = 48  # heatmap: token labels on the axis up to this many positions


def _layer_figure(names):
    """(figure, axes) for one line of values by layer, widened for many layers."""
    fig = plot_base.new_figure(min(13, max(6, 0.3 * len(names) + 3)), 4.8)
    return fig, fig.subplots()


def _split_final(names):
    """(every name but final_norm, whether final_norm is among them): final_norm is drawn apart."""
    return [n for n in names if n != FINAL_NORM], FINAL_NORM in names


def _plot_by_layer(ax, names, values, **style):
    """A line over the layers, with final_norm (if present, last) a separate unjoined point."""
    body, has_final = _split_final(names)
    vals = np.asarray(values, dtype=float)
    line, = ax.plot(range(len(body)), vals[: len(body)], marker="o", **style)
    if has_final:
        ax.plot([len(body)], [vals[names.index(FINAL_NORM)]], marker="s", linestyle="none",
                color=line.get_color())
    return body + ([FINAL_NORM] if has_final else [])


def _wants_log(low, high):
    """A log axis helps when the positive values span more than a factor of 20."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return bool(low.size) and np.all(low > 0) and high.max() / low.min() > 20


@plot_base.plain_text
def plot_layer_norms(layer_stats, path, title="Per-position L2 norm by layer"):
    """Median per-position L2 norm per layer with its interquartile band (never below 0).

    Uses the quartiles of tensor_stats / analyze_directory; the y axis is logarithmic when the
    band spans more than a factor of 20; final_norm (a different quantity: the normed state) is a
    separate point right of a dotted line, not joined to the last layer.
    """
    names = [n for n in layer_stats if layer_stats[n].get("position_norm_median") is not None]
    if not names:
        raise ValueError("no layer has per-position norm quartiles to plot")
    q = {k: np.array([layer_stats[n][f"position_norm_{k}"] for n in names]) for k in ("q25", "median", "q75")}
    body, has_final = _split_final(names)
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
def plot_histograms(record, path, bins=60, title=None):
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


def _token_labels(tokens, positions, tokenizer=None):
    ids = [tokens[p] if p < len(tokens) else None for p in positions]
    if tokenizer is not None:
        # decode one token at a time: readable text ("Paris", "\\n") rather than BPE pieces ("ĠParis", "Ċ")
        strs = [repr(tokenizer.decode([i]))[1:-1] if i is not None else "" for i in ids]
        return [f"{p}: {s}" if i is not None else str(p) for p, i, s in zip(positions, ids, strs)]
    return [f"{p}: {i}" if i is not None else str(p) for p, i in zip(positions, ids)]


@plot_base.plain_text
def plot_position_heatmap(record, path, tokenizer=None):
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
def plot_compare(comparison, path):
    """Cosine similarity (left) and L2 distance (right) by layer for each comparison kind; the
    title names both files (A and B)."""
    names = list(comparison["layers"])
    fig = plot_base.new_figure(min(16, max(10, 0.5 * len(names) + 4)), 5.0)
    ax_cos, ax_dist = fig.subplots(1, 2)
    labels = {"last_prompt_token": "last prompt token", "prompt_mean": "mean over prompt",
              "common_prefix": "common prefix (mean per position)"}
    body, has_final = _split_final(names)
    order = body + ([FINAL_NORM] if has_final else [])
    for key, label in labels.items():
        vals = [comparison["layers"][n][key] for n in order]
        if all(v is None for v in vals):
            continue
        for ax, field in ((ax_cos, "cosine"), (ax_dist, "l2_distance")):
            _plot_by_layer(ax, order, [np.nan if v is None or v[field] is None else v[field] for v in vals],
                           label=label)
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
    files = comparison.get("files")
    if files:
        fig.suptitle(f"A = {os.path.basename(files[0])}   vs   B = {os.path.basename(files[1])}"
                     + ("   (final_norm drawn apart: the normed state)" if has_final else ""), fontsize=10)
    return plot_base.save_png(fig, path)


def default_layer(names):
    """The middle decoder layer (layer_{L//2}) when names are layer_i, else the middle name."""
    decoder = [n for n in names if decoder_index(n) is not None]
    pool = decoder or list(names)
    return pool[len(pool) // 2]


MARKERS = "osD^vP*Xph<>"   # PCA: one marker per category (cycled when there are more)
MAX_COLOR_LEVELS = 10      # PCA --color_by: more distinct values than this are drawn as numbers or refused


def _field_values(rows, field):
    """The rows' values of `field` as strings (None -> "none"); a field no row has is a ValueError."""
    if not any(field in r for r in rows):
        known = sorted({k for r in rows for k in r if not isinstance(r[k], (dict, list))})
        raise ValueError(f"no results row has a field {field!r}; --color_by takes one of: {', '.join(known)}")
    return [r.get(field) for r in rows]


def _pca_caption(Z, rows, stratify_by):
    """Coloured by correctness, the eye compares correct and incorrect points pooled over categories:
    a caption with the difference of the mean PC 1 and PC 2 coordinates (incorrect - correct) within
    `stratify_by` (stratify.stratified_difference), the pooled one beside; "" without both classes."""
    from .stratify import format_estimate, row_strata, strata_line, stratified_differences
    correct = [r.get("correct") for r in rows]
    if not ({True, False} <= {c for c in correct if isinstance(c, bool)}):
        return ""
    ids = [("row", i) if r.get("id") is None else r.get("id") for i, r in enumerate(rows)]
    res = stratified_differences({"PC 1": Z[:, 0], "PC 2": Z[:, 1]}, correct, row_strata(rows, stratify_by),
                                 clusters=ids, by=stratify_by)
    first = res["PC 1"]
    one = first["strata_used"] + len(first["strata_skipped"]) <= 1
    lines = [f"mean coordinate, incorrect - correct, {first['level'] * 100:g}% bootstrap interval; {strata_line(first)}"]
    for pc, r in res.items():
        if one:
            lines.append(f"{pc}: {format_estimate(r['pooled'])}")
        else:
            flip = f"  - signs disagree (Simpson's paradox): read the within-{stratify_by} figure"
            lines.append(f"{pc}: {format_estimate(r['stratified'])} within {stratify_by};  pooled "
                         f"{format_estimate(r['pooled'])}" + (flip if r["sign_reversal"] else ""))
    return "\n".join(lines)


@plot_base.plain_text
def plot_pca(run_dir, path, layer=None, color_by="correct", reduce="last_prompt", progress=False,
             stratify_by="category"):
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
        import matplotlib.cm
        import matplotlib.colors
        norm = matplotlib.colors.Normalize(min(colors), max(colors))
        for cat, marker in by_cat.items():
            m = np.array([c == cat for c in cats])
            ax.scatter(Z[m, 0], Z[m, 1], c=np.array(colors, dtype=float)[m], cmap="viridis", norm=norm,
                            marker=marker, s=26, alpha=0.8, edgecolors="none")
        fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis"), ax=ax, label=color_by)
        color_legend = None
    else:
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
                    ax.scatter(Z[m, 0], Z[m, 1], color=cmap[level], marker=marker, s=26, alpha=0.8,
                               edgecolors="none")
        from matplotlib.lines import Line2D
        names = {"True": "correct", "False": "incorrect"} if color_by == "correct" else {}
        color_legend = ax.legend(
            [Line2D([], [], color=cmap[v], marker="o", linestyle="none") for v in levels],
            [f"{names.get(v, v)} ({int((strs == v).sum())})" for v in levels],
            title=color_by, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
        ax.add_artist(color_legend)
    from matplotlib.lines import Line2D
    ax.legend([Line2D([], [], color="black", marker=mk, linestyle="none", markerfacecolor="none")
               for mk in by_cat.values()],
              [f"{c} ({cats.count(c)})" for c in by_cat], title=f"{marker_field} (marker)",
              loc="lower left", bbox_to_anchor=(1.01, 0.0), fontsize=8)
    ev = pca.explained_variance_ratio_ * 100
    ax.set_xlabel(f"PC 1 ({ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({ev[1]:.1f}% of variance)")
    where = {"last_prompt": "last-prompt-token"}.get(reduce, f"{reduce}")
    ax.set_title(f"PCA of {where} activations at {layer} (n={len(rows)})\n{os.path.basename(os.path.normpath(run_dir))}",
                 fontsize=10)
    ax.grid(alpha=0.3)
    caption = _pca_caption(Z, rows, stratify_by) if color_by == "correct" else ""
    if caption:
        fig.supxlabel(caption, fontsize=7.5, x=0.02, ha="left")
    return plot_base.save_png(fig, path)


def _band_by_layer(ax, xs, n_body, vals, ci, color, label, **style):
    """A line with its interval band over the layers; a final_norm (beyond n_body) an errorbar point apart."""
    vals, ci = np.asarray(vals, dtype=float), np.asarray(ci, dtype=float).reshape(len(vals), 2)
    ax.plot(xs[:n_body], vals[:n_body], marker="o", markersize=4, color=color, label=label, **style)
    ax.fill_between(xs[:n_body], ci[:n_body, 0], ci[:n_body, 1], color=color, alpha=0.2)
    if len(xs) > n_body:
        ax.errorbar([xs[-1]], [vals[-1]], yerr=[[vals[-1] - ci[-1, 0]], [ci[-1, 1] - vals[-1]]],
                    marker="s", color=color, capsize=4, linestyle="none")


def _plain_log_ticks(ax):
    """Plain numbers (1, 10, 100) on the log y axis of `ax`: its default labels are mathtext, which
    _plain_text turns off, so they would be drawn as "$\\mathdefault{10^{2}}$". Spanning less than
    two decades, the 2s and 5s (20, 50, 200) are labelled too. Call it when everything is drawn."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    def plain(v, _):
        return f"{v:,.0f}" if v >= 1 else f"{v:g}"
    low, high = sorted(ax.get_ylim())
    ax.yaxis.set_major_formatter(FuncFormatter(plain))
    if low > 0 and high / low < 100:
        ax.yaxis.set_minor_formatter(FuncFormatter(
            lambda v, _: plain(v, _) if round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""))
    else:
        ax.yaxis.set_minor_formatter(NullFormatter())


def _estimates(cells, part):
    """(values, intervals) of stratify.stratified_difference results' `part` ("stratified" / "pooled")."""
    nan = float("nan")
    vals = [nan if c[part]["value"] is None else c[part]["value"] for c in cells]
    ci = [[nan if v is None else v for v in c[part]["ci"]] for c in cells]
    return vals, ci


def _lens_differences(ax, result, order, xs, n_body, key, ylabel):
    """The correct-vs-incorrect panel of one lens quantity: the stratified difference by layer with its
    band, the pooled one beside (dashed), 0 marked, layers with a reversed pooled sign circled."""
    from .stratify import strata_line
    cells = [result["stratified"][name][key] for name in order]
    first = cells[0]
    by, level = first["by"] or "stratum", f"{first['level'] * 100:g}%"
    one = first["strata_used"] + len(first["strata_skipped"]) <= 1
    if not one and first["strata_used"]:
        vals, ci = _estimates(cells, "stratified")
        k = first["strata_used"]
        _band_by_layer(ax, xs, n_body, vals, ci, "tab:purple",
                       f"within {by} ({k} {'stratum' if k == 1 else 'strata'}, weighted), {level} band")
    vals, ci = _estimates(cells, "pooled")
    ax.set_title(textwrap.fill(f"correct vs incorrect: {strata_line(first)}", 64), fontsize=9)
    if all(np.isnan(vals)):
        ax.set_yticks([])
        ax.set_ylabel(ylabel, fontsize=9)
        return
    label = (f"not stratified: one stratum, {level} band" if one
             else f"pooled (ignores {by}), {level} band" + ("" if first["strata_used"] else
                                                            f"; no {by} has both classes"))
    _band_by_layer(ax, xs, n_body, vals, ci, "0.35", label, linestyle="--")
    flipped = [i for i, c in enumerate(cells) if c["sign_reversal"]]
    if flipped:
        ax.plot([xs[i] for i in flipped], [vals[i] for i in flipped], linestyle="none", marker="o", markersize=11,
                markerfacecolor="none", markeredgecolor="red", markeredgewidth=1.5,
                label="pooled sign opposite to the stratified one")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel, fontsize=9)


@plot_base.plain_text
def plot_logit_lens(result, path):
    """Logit lens curves (lens.logit_lens_run): the gold first token's median rank (log axis, lower
    is better) and mean probability by layer, correct vs incorrect questions (pooled groups), 95%
    bootstrap bands, chance level dashed; final_norm (the model's own output) drawn apart. Below
    each (when the result has "stratified"): the difference incorrect - correct by layer within
    the strata (category) with its band, the pooled difference beside, layers whose pooled sign is
    reversed circled in red."""
    names = result["layer_names"]
    body, has_final = _split_final(names)
    order = body + ([FINAL_NORM] if has_final else [])
    xs = list(range(len(body))) + ([len(body)] if has_final else [])
    compared = bool(result.get("stratified"))
    fig = plot_base.new_figure(min(16, max(10, 0.5 * len(names) + 4)), 8.8 if compared else 5.0)
    axes = fig.subplots(2 if compared else 1, 2, sharex="col", squeeze=False)
    ax_rank, ax_prob = axes[0]
    colors = {"correct": "tab:green", "incorrect": "tab:red", "all": "tab:blue"}
    groups = [g for g in ("correct", "incorrect") if result["layers"][names[0]][g]["n"]] or ["all"]
    for group in groups:
        n = result["layers"][names[0]][group]["n"]
        for ax, key in ((ax_rank, "median_rank"), (ax_prob, "mean_prob")):
            vals = [result["layers"][name][group][key] for name in order]
            ci = [[np.nan if v is None else v for v in result["layers"][name][group][key + "_ci"]] for name in order]
            _band_by_layer(ax, xs, len(body), [np.nan if v is None else v for v in vals], ci, colors[group],
                           f"{group} (n={n})")
    ax_rank.axhline(result["chance_rank"], color="gray", linestyle="--",
                    label=f"chance (uniform guess: {result['chance_rank']:.0f})")
    ax_prob.axhline(result["chance_prob_per_token"], color="gray", linestyle="--",
                    label=f"chance (1 / vocab = {result['chance_prob_per_token']:.1e})")
    ax_rank.set_yscale("log")
    ax_rank.invert_yaxis()
    ax_rank.set_ylabel("median rank of the gold first token (log; top = 1)")
    ax_prob.set_ylabel("mean probability of the gold first token")
    ax_prob.set_ylim(bottom=0)
    by = result.get("stratified_by") or "category"
    if compared:
        ax_rank.set_title(f"groups pooled over {by}", fontsize=9)
        ax_prob.set_title(f"groups pooled over {by}", fontsize=9)
        _lens_differences(axes[1][0], result, order, xs, len(body), "log_rank",
                          "mean ln(rank) difference, incorrect - correct\n(> 0: gold ranked lower when wrong)")
        _lens_differences(axes[1][1], result, order, xs, len(body), "prob",
                          "mean probability difference, incorrect - correct\n(< 0: gold less likely when wrong)")
    for ax in axes.ravel():
        if has_final:
            ax.axvline(len(body) - 0.5, color="gray", linestyle=":", linewidth=1)
        ax.grid(alpha=0.3, which="both")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    for ax in axes[-1]:
        plot_base.layer_axis(ax, order)
    _plain_log_ticks(ax_rank)
    fig.suptitle(f"Logit lens at the last prompt token - {os.path.basename(os.path.normpath(result['run_dir']))} "
                 f"({result['questions_used']} questions; bands: 95% bootstrap)", fontsize=10)
    return plot_base.save_png(fig, path)
