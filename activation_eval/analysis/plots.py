"""Plots of activation analyses: each function writes one PNG and returns its path.

Headless: figures are `matplotlib.figure.Figure` objects saved directly (the Agg canvas); pyplot
and the global backend are never touched, and matplotlib (and scikit-learn for PCA) is imported
inside the functions, so importing this module does not import them. The analysis CLI
(--plot, --probe) calls them; analyze_activations.py re-exports them.

Public names:
    plot_layer_norms(layer_stats, path, title=...)   mean per-position L2 norm by layer, +- 1 std
    plot_histograms(record, path, bins=60)           per-layer histograms of activation values
    plot_position_heatmap(record, path, tokenizer=None)
                                                     layers x positions heatmap of L2 norms
    plot_compare(comparison, path)                   cosine and L2 distance by layer (compare_records)
    plot_pca(run_dir, path, layer=None)              2-D PCA of a run's last-prompt-token activations,
                                                     coloured by correct / incorrect
    plot_probe(probe_result, path)                   probe AUROC by layer with 95% bands, the controls,
                                                     selectivity with its adjusted band, the verdict
    default_layer(names) -> str                      the middle decoder layer (PCA default)
    MAX_LABELLED_POSITIONS                           heatmap: token labels up to this many positions

Example:
    >>> from activation_eval.analysis import plots, probe, stats
    >>> res = stats.analyze_file("results/run1/activations/q0001.safetensors")
    >>> plots.plot_layer_norms(res["layers"], "plots/q0001_norms.png")
    'plots/q0001_norms.png'
    >>> plots.plot_probe(probe.probe_run("results/run1"), "plots/probe_run1.png")
    'plots/probe_run1.png'
"""
import math
import os

import numpy as np

from .arrays import as_2d, correct_labels, record_meta, run_layers
from .dataset import load_run_layer

MAX_LABELLED_POSITIONS = 48  # heatmap: token labels on the axis up to this many positions


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


def plot_layer_norms(layer_stats, path, title="Per-position L2 norm by layer"):
    """Line: mean per-position L2 norm per layer, band = +- one std over positions."""
    names = [n for n in layer_stats if layer_stats[n].get("position_norm_mean") is not None]
    mean = np.array([layer_stats[n]["position_norm_mean"] for n in names])
    std = np.array([layer_stats[n]["position_norm_std"] for n in names])
    fig, ax = _layer_figure(names)
    ax.plot(range(len(names)), mean, marker="o", label="mean over positions")
    ax.fill_between(range(len(names)), mean - std, mean + std, alpha=0.25, label="+- 1 std")
    _layer_axis(ax, names)
    ax.set_ylabel("L2 norm of a position's activation")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_histograms(record, path, bins=60):
    """Grid of per-layer histograms of activation values (log count axis)."""
    acts = record["activations"]
    n = len(acts)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.2 * cols, 2.4 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (name, t) in zip(axes, acts.items()):
        a = as_2d(t).ravel()
        ax.hist(a, bins=bins, color="tab:blue", log=True)
        ax.set_title(f"{name}  (mean {a.mean():.3g}, std {a.std():.3g})", fontsize=9)
        ax.set_xlabel("activation value", fontsize=8)
        ax.set_ylabel("count (log)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Activation value histograms per layer - {record.get('model') or 'record'}")
    return _save(fig, path)


def _token_labels(tokens, positions, tokenizer=None):
    ids = [tokens[p] if p < len(tokens) else None for p in positions]
    if tokenizer is not None:
        # decode one token at a time: readable text ("Paris", "\\n") rather than BPE pieces ("ĠParis", "Ċ")
        strs = [repr(tokenizer.decode([i]))[1:-1] if i is not None else "" for i in ids]
        return [f"{p}: {s}" if i is not None else str(p) for p, i, s in zip(positions, ids, strs)]
    return [f"{p}: {i}" if i is not None else str(p) for p, i in zip(positions, ids)]


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


def plot_compare(comparison, path):
    """Cosine similarity (left) and L2 distance (right) by layer for each comparison kind."""
    names = list(comparison["layers"])
    fig = _figure(min(16, max(10, 0.5 * len(names) + 4)), 4.8)
    ax_cos, ax_dist = fig.subplots(1, 2)
    labels = {"last_prompt_token": "last prompt token", "prompt_mean": "mean over prompt",
              "common_prefix": "common prefix (mean per position)"}
    for key, label in labels.items():
        vals = [comparison["layers"][n][key] for n in names]
        if all(v is None for v in vals):
            continue
        for ax, field in ((ax_cos, "cosine"), (ax_dist, "l2_distance")):
            ax.plot(range(len(names)), [np.nan if v is None or v[field] is None else v[field] for v in vals],
                    marker="o", label=label)
    for ax, ylabel in ((ax_cos, "cosine similarity"), (ax_dist, "L2 distance")):
        _layer_axis(ax, names)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_cos.set_title("Cosine similarity A vs B by layer")
    ax_dist.set_title("L2 distance A vs B by layer")
    return _save(fig, path)


def default_layer(names):
    """The middle decoder layer (layer_{L//2}) when names are layer_i, else the middle name."""
    decoder = [n for n in names if n.startswith("layer_") and n[6:].isdigit()]
    pool = decoder or list(names)
    return pool[len(pool) // 2]


def plot_pca(run_dir, path, layer=None):
    """2-D PCA of the last-prompt-token activations at `layer`, coloured by correct / incorrect."""
    from sklearn.decomposition import PCA
    layer = layer or default_layer(run_layers(run_dir))
    X, rows = load_run_layer(run_dir, layer)
    y = correct_labels(rows, run_dir).astype(bool)
    if len(y) < 2:
        raise ValueError(f"PCA needs at least 2 examples; {run_dir} has {len(y)}")
    pca = PCA(n_components=2)
    Z = pca.fit_transform(np.asarray(X, dtype=np.float64))
    fig = _figure(6.5, 5.5)
    ax = fig.subplots()
    for mask, color, label in ((y, "tab:green", "correct"), (~y, "tab:red", "incorrect")):
        ax.scatter(Z[mask, 0], Z[mask, 1], c=color, s=22, alpha=0.75, label=f"{label} ({int(mask.sum())})")
    ev = pca.explained_variance_ratio_ * 100
    ax.set_xlabel(f"PC 1 ({ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({ev[1]:.1f}% of variance)")
    ax.set_title(f"PCA of last-prompt-token activations at {layer}")
    ax.grid(alpha=0.3)
    ax.legend(title="graded answer")
    return _save(fig, path)


def plot_probe(result, path):
    """Probe AUROC by layer with its 95% band, every control as a line, and the selectivity with
    its Bonferroni-adjusted band below; the verdict layer is marked. With a test run, the transfer
    AUROC is drawn too. `result` is probe.probe_run's (or probe_features') dict."""
    names = list(result["layers"])
    x = np.arange(len(names))
    fig = _figure(min(13, max(7, 0.3 * len(names) + 4)), 7.5)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    _probe_curve(top, x, result["layers"], "C0", "probe AUROC (out-of-fold)")
    transfer = result.get("test_run")
    if transfer:
        _probe_curve(top, x, transfer["layers"], "C3",
                     f"transfer AUROC on {transfer.get('run_name') or 'test run'}")
    styles = dict(zip(result["controls"], [(":", "0.45"), ("--", "C4"), ("-.", "C5"), ((0, (6, 2)), "C8")]))
    for name, ctrl in result["controls"].items():
        best = name == result["best_control"]
        style, color = styles.get(name, ("--", "0.3"))
        top.axhline(ctrl["auroc"], color=color, linewidth=2.2 if best else 1.2, linestyle=style,
                    label=f"control: {name}{' (best)' if best else ''} {ctrl['auroc']:.2f} "
                          f"[{ctrl['auroc_ci'][0]:.2f}, {ctrl['auroc_ci'][1]:.2f}]")
        if best:
            top.axhspan(*ctrl["auroc_ci"], color=color, alpha=0.08)
    top.set_ylim(0, 1.02)
    top.set_ylabel(f"AUROC ({result['auroc_kind']})")
    top.grid(alpha=0.3)
    top.legend(loc="lower right", fontsize=7)
    kind = f"'{result['target']}'"
    run = result.get("run_name") or "run"
    top.set_title(f"Linear probe of {kind} by layer - {run} (n={result['n']}, "
                  f"{result['cv']['folds']}-fold CV, 95% bootstrap bands)", fontsize=10)

    sel = np.array([result["layers"][n]["selectivity"] for n in names])
    band = np.array([result["layers"][n]["selectivity_ci"] for n in names], dtype=float)
    adj = result["bootstrap"]["adjusted_level"] * 100
    bottom.fill_between(x, band[:, 0], band[:, 1], color="C2", alpha=0.25,
                        label=f"{adj:.2f}% interval (Bonferroni over {len(names)} layers)")
    bottom.plot(x, sel, marker="o", markersize=3, color="C2",
                label=f"selectivity = probe - best control ({result['best_control']})")
    bottom.axhline(0, color="k", linewidth=0.8)
    bottom.set_ylabel("selectivity (AUROC)")
    bottom.grid(alpha=0.3)
    verdict = result["verdict"]
    marks = [(verdict, "C1", "-", "verdict")]
    if transfer and transfer["verdict"] in result["layers"]:
        marks.append((transfer["verdict"], "C3", "--", "transfer verdict"))
    for layer, color, style, label in marks:
        for ax in (top, bottom):
            if layer in result["layers"]:
                ax.axvline(names.index(layer), color=color, linestyle=style, linewidth=1.5,
                           label=f"{label}: {layer}" if ax is bottom else None)
    if verdict not in result["layers"]:
        bottom.text(0.01, 0.95, f"verdict: {verdict}", transform=bottom.transAxes, va="top", fontsize=9,
                    bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
    bottom.legend(loc="lower right", fontsize=7)
    _layer_axis(bottom, names)
    return _save(fig, path)


def _probe_curve(ax, x, layers, color, label):
    """One AUROC-by-layer line with its 95% bootstrap band."""
    auroc = np.array([v["auroc"] for v in layers.values()])
    ci = np.array([v["auroc_ci"] for v in layers.values()], dtype=float)
    ax.fill_between(x, ci[:, 0], ci[:, 1], color=color, alpha=0.2)
    ax.plot(x, auroc, marker="o", markersize=3, color=color, label=f"{label}, 95% band")
