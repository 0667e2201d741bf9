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
    plot_probe(probe_result, path, positions=True)   probe AUROC by layer with 95% bands, the control task,
                                                     the controls by side (input dashed, output solid),
                                                     selectivity with its adjusted and unadjusted bands at
                                                     their real levels, the verdict; AUROC by layer x
                                                     position below when the result has it
    plot_position_auroc(probe_result, path)          layers x token positions heatmap of probe AUROC,
                                                     annotated, colours centred at chance (0.5)
    plot_transfer(probe_result, path)                trained-on x tested-on group heatmap of probe AUROC with
                                                     intervals, the diagonal (out-of-fold within) boxed
    level_label(level) -> str                        an interval's level as written: 0.9984 -> "99.84%"
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
import functools
import math
import os
import textwrap

import numpy as np

from .arrays import as_2d, record_meta, run_layers
from .dataset import load_run_layer, resolve_reduce

MAX_LABELLED_POSITIONS = 48  # heatmap: token labels on the axis up to this many positions


def _plain_text(plot):
    """`plot` run with every text drawn as plain text: matplotlib's mathtext and TeX off
    (text.parse_math, text.usetex), so that a category, layer, model or run name holding "$"
    is drawn as it is (`$\\foo{$` made savefig raise; "$5 and $6" was typeset as math). Text
    objects read the setting when they are made: every title, label, legend and tick of the
    figure is made inside this context, up to savefig."""
    @functools.wraps(plot)
    def run(*args, **kwargs):
        import matplotlib
        with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
            return plot(*args, **kwargs)
    return run


def _figure(w, h):
    """A headless Agg figure (no pyplot, no global backend switch)."""
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h), layout="constrained")


def _save(fig, path):
    """Write `fig` as a PNG to `path` (creating its folder); returns the path."""
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    return os.fspath(path)


def _layer_figure(names):
    """(figure, axes) for one line of values by layer, widened for many layers."""
    fig = _figure(min(13, max(6, 0.3 * len(names) + 3)), 4.8)
    return fig, fig.subplots()


def _layer_axis(ax, names):
    """Label the x axis of `ax` with the layer names (rotated when there are many)."""
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                       fontsize=8 if len(names) > 20 else 9)
    ax.set_xlabel("layer")


def _split_final(names):
    """(every name but final_norm, whether final_norm is among them): final_norm is drawn apart."""
    return [n for n in names if n != "final_norm"], "final_norm" in names


def _plot_by_layer(ax, names, values, **style):
    """A line over the layers, with final_norm (if present, last) a separate unjoined point."""
    body, has_final = _split_final(names)
    vals = np.asarray(values, dtype=float)
    line, = ax.plot(range(len(body)), vals[: len(body)], marker="o", **style)
    if has_final:
        ax.plot([len(body)], [vals[names.index("final_norm")]], marker="s", linestyle="none",
                color=line.get_color())
    return body + (["final_norm"] if has_final else [])


def _wants_log(low, high):
    """A log axis helps when the positive values span more than a factor of 20."""
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    return bool(low.size) and np.all(low > 0) and high.max() / low.min() > 20


@_plain_text
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
        i, x = names.index("final_norm"), len(body)
        ax.axvline(x - 0.5, color="gray", linestyle=":", linewidth=1)
        ax.errorbar([x], [q["median"][i]], yerr=[[q["median"][i] - q["q25"][i]], [q["q75"][i] - q["median"][i]]],
                    marker="s", color="tab:orange", capsize=4, linestyle="none",
                    label="final_norm (after the final norm; median, IQR)")
    _layer_axis(ax, body + (["final_norm"] if has_final else []))
    if _wants_log(q["q25"], q["q75"]):
        ax.set_yscale("log")
        ax.set_ylabel("L2 norm of a position's activation (log scale)")
    else:
        ax.set_ylim(bottom=0)
        ax.set_ylabel("L2 norm of a position's activation")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _save(fig, path)


@_plain_text
def plot_histograms(record, path, bins=60, title=None):
    """Grid of per-layer histograms of activation values over each layer's 1st-99th percentile.

    Values outside that range are not drawn; each panel states how many were clipped, so one
    extreme position (an attention sink) cannot stretch the axis and flatten every histogram.
    """
    acts = record["activations"]
    n = len(acts)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.2 * cols, 2.5 * rows + 0.6)
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
    return _save(fig, path)


def _token_labels(tokens, positions, tokenizer=None):
    ids = [tokens[p] if p < len(tokens) else None for p in positions]
    if tokenizer is not None:
        # decode one token at a time: readable text ("Paris", "\\n") rather than BPE pieces ("ĠParis", "Ċ")
        strs = [repr(tokenizer.decode([i]))[1:-1] if i is not None else "" for i in ids]
        return [f"{p}: {s}" if i is not None else str(p) for p, i, s in zip(positions, ids, strs)]
    return [f"{p}: {i}" if i is not None else str(p) for p, i in zip(positions, ids)]


@_plain_text
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
    fig = _figure(min(14, max(7, 0.28 * len(pos) + 3)), max(4.5, 0.3 * len(names) + 2.5))
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
    return _save(fig, path)


@_plain_text
def plot_compare(comparison, path):
    """Cosine similarity (left) and L2 distance (right) by layer for each comparison kind; the
    title names both files (A and B)."""
    names = list(comparison["layers"])
    fig = _figure(min(16, max(10, 0.5 * len(names) + 4)), 5.0)
    ax_cos, ax_dist = fig.subplots(1, 2)
    labels = {"last_prompt_token": "last prompt token", "prompt_mean": "mean over prompt",
              "common_prefix": "common prefix (mean per position)"}
    body, has_final = _split_final(names)
    order = body + (["final_norm"] if has_final else [])
    for key, label in labels.items():
        vals = [comparison["layers"][n][key] for n in order]
        if all(v is None for v in vals):
            continue
        for ax, field in ((ax_cos, "cosine"), (ax_dist, "l2_distance")):
            _plot_by_layer(ax, order, [np.nan if v is None or v[field] is None else v[field] for v in vals],
                           label=label)
    for ax, ylabel in ((ax_cos, "cosine similarity"), (ax_dist, "L2 distance")):
        _layer_axis(ax, order)
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
    return _save(fig, path)


def default_layer(names):
    """The middle decoder layer (layer_{L//2}) when names are layer_i, else the middle name."""
    decoder = [n for n in names if n.startswith("layer_") and n[6:].isdigit()]
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


@_plain_text
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
    fig = _figure(7.5, 5.8)
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
    return _save(fig, path)


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


@_plain_text
def plot_logit_lens(result, path):
    """Logit lens curves (lens.logit_lens_run): the gold first token's median rank (log axis, lower
    is better) and mean probability by layer, correct vs incorrect questions (pooled groups), 95%
    bootstrap bands, chance level dashed; final_norm (the model's own output) drawn apart. Below
    each (when the result has "stratified"): the difference incorrect - correct by layer within
    the strata (category) with its band, the pooled difference beside, layers whose pooled sign is
    reversed circled in red."""
    names = result["layer_names"]
    body, has_final = _split_final(names)
    order = body + (["final_norm"] if has_final else [])
    xs = list(range(len(body))) + ([len(body)] if has_final else [])
    compared = bool(result.get("stratified"))
    fig = _figure(min(16, max(10, 0.5 * len(names) + 4)), 8.8 if compared else 5.0)
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
        _layer_axis(ax, order)
    _plain_log_ticks(ax_rank)
    fig.suptitle(f"Logit lens at the last prompt token - {os.path.basename(os.path.normpath(result['run_dir']))} "
                 f"({result['questions_used']} questions; bands: 95% bootstrap)", fontsize=10)
    return _save(fig, path)


# controls by side: the question alone (dashed, cool colours), the model's own output (solid, warm colours)
INPUT_STYLES = [(":", "0.45"), ("--", "C4"), ("-.", "C9"), ((0, (6, 2)), "#1f3b73")]
OUTPUT_STYLES = [("-", "#d62728"), ("-", "#ff7f0e"), ("-", "#e377c2"), ("-", "#8c564b"), ("-", "#bcbd22")]


def level_label(level):
    """An interval's level as written next to it: 0.95 -> "95%", 1 - 0.05/31 -> "99.84%"; None -> "?%".

    >>> level_label(0.95), level_label(1 - 0.05 / 31), level_label(None)
    ('95%', '99.84%', '?%')
    """
    if level is None:
        return "?%"
    return f"{round(float(level) * 100, 2):.2f}".rstrip("0").rstrip(".") + "%"


def _control_side(ctrl):
    """"output" for a control computed from the model's own output, else "input" (older results)."""
    return "output" if isinstance(ctrl, dict) and ctrl.get("side") == "output" else "input"


def _ci_text(ci, fmt="{:.2f}"):
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci and ci[0] is not None else "[no interval]"


@_plain_text
def plot_probe(result, path, positions=True):
    """Probe AUROC by layer with its 95% band, the control task (labels shuffled within category)
    per layer, every control as a horizontal line (input side dashed, output side solid, in a
    legend of their own), and the selectivity below with its Bonferroni-adjusted band (its real
    level written on it) and the unadjusted one; the verdict layer is marked. With a test run,
    the transfer AUROC is drawn too; with result["positions"] (and `positions`), a third panel
    shows the AUROC of every layer x token position. `result` is probe.probe_run's (or
    probe_features') dict; keys added after issue 14 may be absent."""
    names = list(result["layers"])
    x = np.arange(len(names))
    pos = _position_grid(result, names) if positions else None
    width = min(15, max(9, 0.3 * len(names) + 6))
    heights = [3, 2] + ([0.32 * len(pos[0]) + 0.6] if pos else [])
    fig = _figure(width, 7.5 + (heights[-1] + 0.4 if pos else 0))
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights)
    top, bottom = axes[0], axes[1]
    _probe_curve(top, x, result["layers"], "C0", "probe AUROC (out-of-fold)")
    transfer = result.get("test_run")
    if transfer:
        _probe_curve(top, x, transfer["layers"], "C3", f"transfer AUROC on {transfer.get('run_name') or 'test run'}")
    _control_task_curve(top, x, result["layers"])
    _control_lines(top, result)
    top.set_ylim(0, 1.02)
    top.set_ylabel(f"AUROC ({result.get('auroc_kind') or 'binary'})")
    top.grid(alpha=0.3)
    top.set_title(_wrap(_probe_title(result), int((width - 4) * 13)), fontsize=10)   # the legends take ~4 in
    _selectivity_panel(bottom, x, result)
    verdict = result.get("verdict")
    marks = [(verdict, "C1", "-", "verdict")]
    if transfer and transfer.get("verdict") in result["layers"]:
        marks.append((transfer["verdict"], "C3", "--", "transfer verdict"))
    for layer, color, style, label in marks:
        for ax in (top, bottom):
            if layer in result["layers"]:
                ax.axvline(names.index(layer), color=color, linestyle=style, linewidth=1.5,
                           label=f"{label}: {layer}" if ax is bottom else None)
    if verdict not in result["layers"]:
        bottom.text(0.01, 0.95, f"verdict: {verdict}", transform=bottom.transAxes, va="top", fontsize=9,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    if pos:
        _position_panel(axes[2], *pos, result)
    _layer_axis(axes[-1], names)
    return _save(fig, path)


def _wrap(text, chars):
    """Each line of `text` wrapped at `chars` characters: a title wider than its axes is cut off."""
    return "\n".join(textwrap.fill(line, max(40, chars)) for line in text.split("\n"))


def _probe_title(result):
    """What was probed, where, on how many questions, and the level of the bands."""
    run = result.get("run_name") or "run"
    family = {"mass_mean": "mass-mean probe", "logistic": "logistic probe"}.get(result.get("family"), "linear probe")
    where = f" at {result['position']}" if result.get("position") else ""
    clusters = result.get("clusters")
    n = f"n={result.get('n', '?')}" + (f" rows in {clusters['n_clusters']} {clusters.get('by', 'id')} clusters"
                              if isinstance(clusters, dict) and clusters.get("n_clusters") else "")
    folds = (result.get("cv") or {}).get("folds")
    level = level_label((result.get("bootstrap") or {}).get("level", 0.95))
    title = (f"{family.capitalize()} of '{result.get('target', '?')}'{where} by layer - {run} ({n}"
             + (f", {folds}-fold CV" if folds else "") + f", {level} bootstrap bands)")
    warnings = result.get("warnings") or []
    if warnings:
        title += f"\n{len(warnings)} warning(s): {warnings[0]}" + (" (more in the report)" if len(warnings) > 1 else "")
    return title


def _control_task_curve(ax, x, layers):
    """Hewitt & Liang's control task per layer (the same probe on labels shuffled within category)."""
    vals = [v.get("control_task_auroc") for v in layers.values()]
    if all(v is None for v in vals):
        return
    auroc = np.array([np.nan if v is None else v for v in vals], dtype=float)
    ci = np.array([v.get("control_task_auroc_ci") or [np.nan, np.nan] for v in layers.values()], dtype=float)
    ax.fill_between(x, ci[:, 0], ci[:, 1], color="0.5", alpha=0.15)
    ax.plot(x, auroc, marker=".", markersize=3, color="0.4", linewidth=1,
            label="control task: labels shuffled within category (Hewitt & Liang), 95% band")


def _control_lines(ax, result):
    """Every control as a horizontal line; input-side (the question alone) dashed in cool colours,
    output-side (the model's own output) solid in warm colours; two legends outside the axes."""
    from matplotlib.lines import Line2D
    controls = result.get("controls") or {}
    best = result.get("best_control")
    handles = {"input": [], "output": []}
    for name, ctrl in controls.items():
        if not isinstance(ctrl, dict) or ctrl.get("auroc") is None:
            continue
        side = _control_side(ctrl)
        pool = OUTPUT_STYLES if side == "output" else INPUT_STYLES
        style, color = pool[len(handles[side]) % len(pool)]
        mark = " (best)" if name == best else ""
        line = ax.axhline(ctrl["auroc"], color=color, linestyle=style, linewidth=2.2 if mark else 1.2,
                          label=f"{name}{mark} {ctrl['auroc']:.2f} {_ci_text(ctrl.get('auroc_ci'))}")
        handles[side].append(line)
        if mark and ctrl.get("auroc_ci"):
            ax.axhspan(*ctrl["auroc_ci"], color=color, alpha=0.08)
    curves = ax.get_legend_handles_labels()
    curves = [(h, lab) for h, lab in zip(*curves) if h not in handles["input"] + handles["output"]]
    heading = Line2D([], [], linestyle="none")
    rows = list(curves)
    for side, what in (("input", "input-side controls (question only; dashed), AUROC [95% CI]"),
                       ("output", "output-side controls (model's own output; solid), AUROC [95% CI]")):
        if handles[side]:
            rows += [(heading, what)] + [(h, h.get_label()) for h in handles[side]]
    ax.legend([h for h, _ in rows], [lab for _, lab in rows], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=7)


def _selectivity_panel(ax, x, result):
    """Selectivity by layer: its Bonferroni-adjusted band at its real level, the unadjusted band inside."""
    layers = result["layers"]
    sel = np.array([np.nan if v.get("selectivity") is None else v["selectivity"] for v in layers.values()], dtype=float)
    boot = result.get("bootstrap") or {}
    adjusted = level_label(boot.get("adjusted_level"))
    for key, label, alpha in (
            ("selectivity_ci", f"{adjusted} interval, Bonferroni over {len(layers)} layers (the verdict's)", 0.2),
            ("selectivity_ci_unadjusted", f"{level_label(boot.get('level', 0.95))} interval, unadjusted", 0.3)):
        band = [v.get(key) for v in layers.values()]
        if any(b is not None for b in band):
            band = np.array([b or [np.nan, np.nan] for b in band], dtype=float)
            ax.fill_between(x, band[:, 0], band[:, 1], color="C2", alpha=alpha, label=label)
    best = result.get("best_control")
    side = _control_side((result.get("controls") or {}).get(best))
    ax.plot(x, sel, marker="o", markersize=3, color="C2",
            label=f"selectivity = probe - best control ({best}, {side} side)")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_ylabel("selectivity (AUROC)")
    ax.grid(alpha=0.3)


def _position_grid(result, names):
    """(positions, AUROC matrix [position, layer in `names`] with nan where absent), or None."""
    grid = result.get("positions")
    if not isinstance(grid, dict) or not grid.get("positions") or not grid.get("auroc"):
        return None
    positions = list(grid["positions"])
    values = np.full((len(positions), len(names)), np.nan)
    for j, name in enumerate(names):
        row = grid["auroc"].get(name) or {}
        for i, p in enumerate(positions):
            if row.get(p) is not None:
                values[i, j] = row[p]
    return (positions, values) if np.isfinite(values).any() else None


def _auroc_norm(values):
    """A colour scale centred at chance (0.5), symmetric, wide enough to show the largest departure."""
    from matplotlib.colors import Normalize
    finite = np.asarray(values, dtype=float)[np.isfinite(values)]
    half = max(0.1, float(np.abs(finite - 0.5).max()) if finite.size else 0.1)
    return Normalize(0.5 - half, 0.5 + half)


def _auroc_cmap():
    """Blue below chance, white at 0.5, red above; a cell without a value light grey ("n/a")."""
    import matplotlib
    return matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.88")


def _annotate(ax, values, norm, fmt="{:.2f}", fontsize=7, extra=None):
    """Write each cell's value (and extra[i][j] below it, smaller) in a colour readable on the cell."""
    for (i, j), v in np.ndenumerate(values):
        if not np.isfinite(v):
            ax.text(j, i, "n/a", ha="center", va="center", fontsize=fontsize, color="0.4")
            continue
        dark = abs(norm(v) - 0.5) > 0.33
        color = "white" if dark else "black"
        text = fmt.format(v)
        if extra is not None and extra[i][j]:
            ax.text(j, i - 0.12, text, ha="center", va="center", fontsize=fontsize + 2, color=color)
            ax.text(j, i + 0.2, extra[i][j], ha="center", va="center", fontsize=fontsize - 1, color=color)
        else:
            ax.text(j, i, text, ha="center", va="center", fontsize=fontsize, color=color)


def _position_panel(ax, positions, values, result):
    """The probe_result's AUROC by token position (rows) and layer (the shared x axis)."""
    norm = _auroc_norm(values)
    ax.imshow(values, aspect="auto", cmap=_auroc_cmap(), norm=norm, interpolation="nearest")
    _annotate(ax, values, norm, fontsize=6 if values.shape[1] > 16 else 7)
    main = result.get("position")
    ax.set_yticks(range(len(positions)))
    ax.set_yticklabels([p + (" (main sweep)" if p == main else "") for p in positions], fontsize=8)
    ax.set_ylabel("position")
    grid = result["positions"]
    chars = int(ax.get_figure().get_size_inches()[0] * 14) - 56     # the legends' width, as above the axes
    ax.set_title(_wrap(f"probe AUROC by token position (n={grid.get('n')} questions that have every position; "
                       f"{level_label(grid.get('level'))} intervals in the JSON / report); colour: white = 0.5 "
                       f"(chance), red above, blue below", chars), fontsize=9)


@_plain_text
def plot_position_auroc(result, path):
    """Heatmap of probe AUROC, layers (rows) x token positions (columns) from result["positions"]
    (probe.probe_run with positions): every cell annotated, a diverging colour scale centred at
    chance (0.5), the main sweep's position marked; the title gives n and where the intervals are."""
    grid = result.get("positions")
    if not isinstance(grid, dict) or not grid.get("auroc"):
        raise ValueError("the probe result has no per-position AUROC (result['positions'])")
    names = [n for n in result.get("layers") or grid["auroc"] if n in grid["auroc"]] or list(grid["auroc"])
    pos = _position_grid(result, names)
    if pos is None:
        raise ValueError("the probe result's per-position AUROC holds no value")
    positions, values = pos
    values = values.T                                          # [layer, position]
    fig = _figure(max(6.5, 1.5 * len(positions) + 3.5), max(4, 0.26 * len(names) + 2.2))
    ax = fig.subplots()
    norm = _auroc_norm(values)
    im = ax.imshow(values, aspect="auto", cmap=_auroc_cmap(), norm=norm, interpolation="nearest")
    _annotate(ax, values, norm, fontsize=8 if len(names) <= 40 else 6)
    main = result.get("position")
    ax.set_xticks(range(len(positions)))
    ax.set_xticklabels([p + ("\n(main sweep)" if p == main else "") for p in positions], fontsize=9)
    ax.set_xlabel("token position the probe reads")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8 if len(names) <= 40 else 6)
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="AUROC (colour centred at 0.5 = chance)")
    ax.set_title(f"Probe AUROC of '{result.get('target', '?')}' by layer and position - "
                 f"{result.get('run_name') or 'run'}\n(n={grid.get('n')} questions that have every position; "
                 f"{level_label(grid.get('level'))} bootstrap intervals in the JSON / report)", fontsize=10)
    return _save(fig, path)


@_plain_text
def plot_transfer(result, path):
    """Heatmap of probe transfer between groups (result["transfer"]): rows = trained on, columns =
    tested on, each cell its AUROC and, in small text, its interval; the diagonal (boxed) is
    out-of-fold within the group; a diverging colour scale centred at chance (0.5)."""
    from matplotlib.patches import Rectangle
    t = result.get("transfer")
    if not isinstance(t, dict) or not t.get("groups") or not t.get("auroc"):
        raise ValueError("the probe result has no transfer matrix (result['transfer'])")
    groups = list(t["groups"])
    values = np.array([[np.nan if v is None else v for v in row] for row in t["auroc"]], dtype=float)
    cis = t.get("auroc_ci") or [[None] * len(groups) for _ in groups]
    extra = [[_ci_text(ci) if ci else "" for ci in row] for row in cis]
    counts = t.get("n") or {}
    labels = [f"{g}\n(n={counts[g]})" if g in counts else g for g in groups]
    side = max(5.5, 1.25 * len(groups) + 3)
    fig = _figure(side + 1.2, side)
    ax = fig.subplots()
    norm = _auroc_norm(values)
    im = ax.imshow(values, cmap=_auroc_cmap(), norm=norm, interpolation="nearest")
    _annotate(ax, values, norm, fontsize=9 if len(groups) <= 6 else 7, extra=extra)
    for i in range(len(groups)):
        ax.add_patch(Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", linewidth=2))
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(labels, rotation=30 if len(groups) > 4 else 0, ha="right" if len(groups) > 4 else "center",
                       fontsize=8)
    ax.set_yticks(range(len(groups)))
    ax.set_yticklabels(labels, fontsize=8)
    by = t.get("by") or "group"
    ax.set_xlabel(f"tested on ({by})\nboxed diagonal: out-of-fold within the group; off the diagonal: trained on all of "
                  f"the row's group" + ("\nn/a (grey): no AUROC in the result" if np.isnan(values).any() else ""),
                  fontsize=8)
    ax.set_ylabel(f"trained on ({by})")
    fig.colorbar(im, ax=ax, label="AUROC (colour centred at 0.5 = chance)", shrink=0.8)
    ax.set_title(f"Probe transfer across {by} values at {t.get('layer', '?')} - {result.get('run_name') or 'run'}\n"
                 f"AUROC of '{result.get('target', '?')}' with its {level_label(t.get('level'))} bootstrap interval; "
                 f"chance 0.5", fontsize=10)
    return _save(fig, path)


def _probe_curve(ax, x, layers, color, label):
    """One AUROC-by-layer line with its 95% bootstrap band."""
    auroc = np.array([np.nan if v.get("auroc") is None else v["auroc"] for v in layers.values()], dtype=float)
    ci = np.array([v.get("auroc_ci") or [np.nan, np.nan] for v in layers.values()], dtype=float)
    ax.fill_between(x, ci[:, 0], ci[:, 1], color=color, alpha=0.2)
    ax.plot(x, auroc, marker="o", markersize=3, color=color, label=f"{label}, 95% band")
