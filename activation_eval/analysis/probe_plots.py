"""Plots of a probe result (probe.probe_run's dict): each function writes one PNG and returns its path.

Public names (re-exported by plots.py):
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

Example:
    >>> from activation_eval.analysis import probe
    >>> plot_probe(probe.probe_run("results/mc"), "plots/probe_mc.png")
    'plots/probe_mc.png'
"""
import textwrap

import numpy as np

from . import plot_base

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


@plot_base.plain_text
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
    fig = plot_base.new_figure(width, 7.5 + (heights[-1] + 0.4 if pos else 0))
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
    plot_base.layer_axis(axes[-1], names)
    return plot_base.save_png(fig, path)


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


@plot_base.plain_text
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
    fig = plot_base.new_figure(max(6.5, 1.5 * len(positions) + 3.5), max(4, 0.26 * len(names) + 2.2))
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
    return plot_base.save_png(fig, path)


@plot_base.plain_text
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
    fig = plot_base.new_figure(side + 1.2, side)
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
    return plot_base.save_png(fig, path)


def _probe_curve(ax, x, layers, color, label):
    """One AUROC-by-layer line with its 95% bootstrap band."""
    auroc = np.array([np.nan if v.get("auroc") is None else v["auroc"] for v in layers.values()], dtype=float)
    ci = np.array([v.get("auroc_ci") or [np.nan, np.nan] for v in layers.values()], dtype=float)
    ax.fill_between(x, ci[:, 0], ci[:, 1], color=color, alpha=0.2)
    ax.plot(x, auroc, marker="o", markersize=3, color=color, label=f"{label}, 95% band")
