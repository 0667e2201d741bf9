"""Plots of a probe result (a ProbeResult, schema/probe.py): each function writes one PNG and returns its path.

Public names:
    plot_probe(probe_result, path, positions=True)   probe AUROC by layer with 95% bands, the H&L control task
                                                     and the permutation test, the controls by side (input
                                                     dashed, answer-token dash-dot, output solid; raw scores
                                                     marked "raw"), selectivity with its adjusted and
                                                     unadjusted bands at their real levels and the gain over
                                                     the answer's embedding, the verdict (verdict.py) and the
                                                     out-of-fold scoring in the title; AUROC by layer x
                                                     position below when the result has it
    plot_position_auroc(probe_result, path)          layers x token positions heatmap of probe AUROC,
                                                     annotated, colours centred at chance (0.5)
    plot_transfer(probe_result, path)                trained-on x tested-on group heatmap of probe AUROC with
                                                     intervals, the diagonal (out-of-fold within) boxed

Example:
    >>> from activation_eval.analysis.probe import probe_run
    >>> plot_probe(probe_run("results/mc"), "plots/probe_mc.png")
    'plots/probe_mc.png'
"""
import os
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ...schema.estimates import Interval
from ...schema.probe import LayerScore, PositionTable, ProbeResult
from .. import plot_base
from ..text import level_label
from .verdict import verdict as verdict_of

# controls by side: the question alone (dashed, cool colours), the model's own output (solid, warm colours)
INPUT_STYLES = [(":", "0.45"), ("--", "C4"), ("-.", "C9"), ((0, (6, 2)), "#1f3b73")]
OUTPUT_STYLES = [("-", "#d62728"), ("-", "#ff7f0e"), ("-", "#e377c2"), ("-", "#8c564b"), ("-", "#bcbd22"),
                 ("-", "#9e0142"), ("-", "#f46d43")]
ANSWER_STYLES = [((0, (5, 1, 1, 1)), "#2ca02c"), ((0, (2, 1)), "#17becf")]


def _ci_text(ci: Interval | None, fmt: str = "{:.2f}") -> str:
    return f"[{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci and ci[0] is not None and ci[1] is not None \
        else "[no interval]"


def _values(layers: Mapping[str, LayerScore], value: Any) -> np.ndarray:
    """value(layer) of every layer as floats, nan for None."""
    return np.array([np.nan if value(v) is None else value(v) for v in layers.values()], dtype=float)


def _bands(layers: Mapping[str, LayerScore], band: Any) -> np.ndarray:
    """band(layer) (an interval) of every layer as a (layers, 2) float array, nan where undefined."""
    return np.array([[np.nan if x is None else x for x in (band(v) or (None, None))] for v in layers.values()],
                    dtype=float)


@plot_base.plain_text
def plot_probe(result: ProbeResult, path: str | os.PathLike[str], positions: bool = True) -> str:
    """Probe AUROC by layer with its 95% band, the control task (labels shuffled within category)
    per layer, every control as a horizontal line (input side dashed, output side solid, in a
    legend of their own), and the selectivity below with its Bonferroni-adjusted band (its real
    level written on it) and the unadjusted one; the verdict layer is marked. With a test run,
    the transfer AUROC is drawn too; with result.positions (and `positions`), a third panel
    shows the AUROC of every layer x token position. `result` is probe_run's (or probe_features')."""
    names = list(result.layers)
    x = np.arange(len(names))
    pos = _position_grid(result.positions, names) if positions else None
    width = min(15, max(10, 0.3 * len(names) + 6))
    heights = [3, 2] + ([0.32 * len(pos[0]) + 0.6] if pos else [])
    fig = plot_base.new_figure(width, 7.5 + (heights[-1] + 0.4 if pos else 0))
    axes = fig.subplots(len(heights), 1, sharex=True, height_ratios=heights)
    top, bottom = axes[0], axes[1]
    _probe_curve(top, x, result.layers, "C0", "probe AUROC (out-of-fold)")
    transfer = result.test_run
    if transfer is not None:
        _probe_curve(top, x, transfer.layers, "C3", f"transfer AUROC on {transfer.run_name or 'test run'}")
    _control_task_curves(top, x, result.layers)
    _control_lines(top, result)
    top.set_ylim(0, 1.02)
    top.set_ylabel(f"AUROC ({result.auroc_kind})")
    top.grid(alpha=0.3)
    top.set_title(_wrap(_probe_title(result), int((width - 4.5) * 12)), fontsize=10)   # the legends take ~4.5 in
    _selectivity_panel(bottom, x, result)
    marks = [(result.verdict, "C1", "-", "verdict")]
    if transfer is not None and transfer.verdict in result.layers:
        marks.append((transfer.verdict, "C3", "--", "transfer verdict"))
    for layer, color, style, label in marks:
        for ax in (top, bottom):
            if layer in result.layers:
                ax.axvline(names.index(layer), color=color, linestyle=style, linewidth=1.5,
                           label=f"{label}: {layer}" if ax is bottom else None)
    bottom.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=7)
    if pos and result.positions is not None:
        _position_panel(axes[2], *pos, result, result.positions)
    plot_base.layer_axis(axes[-1], names)
    return plot_base.save_png(fig, path)


def _wrap(text: str, chars: int) -> str:
    """Each line of `text` wrapped at `chars` characters: a title wider than its axes is cut off."""
    return "\n".join(textwrap.fill(line, max(40, chars)) for line in text.split("\n"))


def _probe_title(result: ProbeResult) -> str:
    """What was probed, where, on how many questions, the level of the bands, and the verdict."""
    run = result.run_name or "run"
    family = {"mass_mean": "mass-mean probe", "logistic": "logistic probe"}[result.family]
    where = f" at {result.position}" if result.position is not None else ""
    c = result.clusters
    n = f"n={result.n}" + (f" rows in {c.n_clusters} {c.by} clusters" if c is not None else "")
    title = (f"{family.capitalize()} of '{result.target}'{where} by layer - {run} ({n}, {result.cv.folds}-fold CV, "
             f"{level_label(result.bootstrap.level)} bootstrap bands; out-of-fold AUROC: {result.cv.oof_scoring})"
             f"\nverdict: {verdict_of(result).headline}")
    warnings = result.warnings
    if warnings:
        title += f"\n{len(warnings)} warning(s): {warnings[0]}" + (" (more in the report)" if len(warnings) > 1 else "")
    return title


def _control_task_curves(ax: Any, x: np.ndarray, layers: Mapping[str, LayerScore]) -> None:
    """Hewitt & Liang's control task (a fixed random label per input type) and the permutation test (labels
    shuffled within category) per layer, each with its band."""
    for value, band, color, style, label in (
            (lambda v: v.hl_control_auroc, lambda v: v.hl_control_auroc_ci, "0.3", "-",
             "H&L control task: a fixed random label per input type, 95% band"),
            (lambda v: v.permutation_auroc, lambda v: v.permutation_auroc_ci, "0.55", ":",
             "permutation test: labels shuffled within category, 95% band")):
        if all(value(v) is None for v in layers.values()):
            continue
        auroc, ci = _values(layers, value), _bands(layers, band)
        ax.fill_between(x, ci[:, 0], ci[:, 1], color=color, alpha=0.12)
        ax.plot(x, auroc, marker=".", markersize=3, color=color, linestyle=style, linewidth=1, label=label)


def _control_group(name: str, side: str, answer: Sequence[str]) -> str:
    return "answer" if name in answer else side


def _control_lines(ax: Any, result: ProbeResult) -> None:
    """Every control as a horizontal line; input-side (the question alone) dashed in cool colours, answer-token
    (the answer's own tokens) dash-dot in greens, output-side (the model's own output) solid in warm colours;
    raw scores marked "raw"; one legend outside the axes, a heading per group."""
    from matplotlib.lines import Line2D
    pools: dict[str, list[tuple[Any, str]]] = {"input": INPUT_STYLES, "answer": ANSWER_STYLES, "output": OUTPUT_STYLES}
    handles: dict[str, list[Any]] = {g: [] for g in pools}
    for name, ctrl in result.controls.items():
        group = _control_group(name, ctrl.side, result.answer_controls)
        pool = pools[group]
        style, color = pool[len(handles[group]) % len(pool)]
        mark = " (best)" if name == result.best_control else ""
        raw = " raw" if ctrl.scoring == "raw" else ""
        line = ax.axhline(ctrl.auroc, color=color, linestyle=style, linewidth=2.2 if mark else 1.2,
                          label=f"{name}{mark}{raw} {ctrl.auroc:.2f} {_ci_text(ctrl.auroc_ci)}")
        handles[group].append(line)
        lo, hi = ctrl.auroc_ci
        if mark and lo is not None and hi is not None:
            ax.axhspan(lo, hi, color=color, alpha=0.08)
    drawn = [h for group in handles.values() for h in group]
    curves = [(h, lab) for h, lab in zip(*ax.get_legend_handles_labels()) if h not in drawn]
    heading = Line2D([], [], linestyle="none")
    rows = list(curves)
    for group, what in (("input", "input-side controls (question only; dashed), AUROC [95% CI]"),
                        ("answer", "answer-token controls (the answer's identity; dash-dot), AUROC [95% CI]"),
                        ("output", "output-side controls (model's output; solid; raw: never fitted), AUROC [95% CI]")):
        if handles[group]:
            rows += [(heading, what)] + [(h, h.get_label()) for h in handles[group]]
    ax.legend([h for h, _ in rows], [lab for _, lab in rows], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=7)


def _selectivity_panel(ax: Any, x: np.ndarray, result: ProbeResult) -> None:
    """Selectivity by layer: its Bonferroni-adjusted band at its real level, the unadjusted band inside."""
    layers = result.layers
    sel = _values(layers, lambda v: v.selectivity)
    adjusted = level_label(result.bootstrap.adjusted_level)
    for band, label, alpha in (
            (_bands(layers, lambda v: v.selectivity_ci),
             f"{adjusted} interval, Bonferroni over {len(layers)} layers (the verdict's)", 0.2),
            (_bands(layers, lambda v: v.selectivity_ci_unadjusted),
             f"{level_label(result.bootstrap.level)} interval, unadjusted", 0.3)):
        ax.fill_between(x, band[:, 0], band[:, 1], color="C2", alpha=alpha, label=label)
    best = result.best_control
    side = result.controls[best].side
    ax.plot(x, sel, marker="o", markersize=3, color="C2",
            label=f"selectivity = probe - best control ({best}, {side} side)")
    if any(v.embedding_gain is not None for v in layers.values()):
        gain, band = _values(layers, lambda v: v.embedding_gain), _bands(layers, lambda v: v.embedding_gain_ci)
        ax.fill_between(x, band[:, 0], band[:, 1], color="C4", alpha=0.12)
        ax.plot(x, gain, marker="s", markersize=3, color="C4", linewidth=1,
                label=f"gain over answer_embedding (same position), {level_label(result.bootstrap.level)} paired band")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_ylabel("selectivity (AUROC)")
    ax.grid(alpha=0.3)


def _position_grid(grid: PositionTable | None, names: Sequence[str]) -> tuple[list[str], np.ndarray] | None:
    """(positions, AUROC matrix [position, layer in `names`] with nan where absent), or None."""
    if grid is None or not grid.positions or not grid.auroc:
        return None
    positions = list(grid.positions)
    values = np.full((len(positions), len(names)), np.nan)
    for j, name in enumerate(names):
        if name in grid.auroc:
            for i, p in enumerate(positions):
                values[i, j] = grid.auroc[name][p]
    return (positions, values) if np.isfinite(values).any() else None


def _auroc_norm(values: np.ndarray) -> Any:
    """A colour scale centred at chance (0.5), symmetric, wide enough to show the largest departure."""
    from matplotlib.colors import Normalize
    finite = np.asarray(values, dtype=float)[np.isfinite(values)]
    half = max(0.1, float(np.abs(finite - 0.5).max()) if finite.size else 0.1)
    return Normalize(0.5 - half, 0.5 + half)


def _auroc_cmap() -> Any:
    """Blue below chance, white at 0.5, red above; a cell without a value light grey ("n/a")."""
    import matplotlib
    return matplotlib.colormaps["RdBu_r"].with_extremes(bad="0.88")


def _annotate(ax: Any, values: np.ndarray, norm: Any, fmt: str = "{:.2f}", fontsize: int = 7,
              extra: list[list[str]] | None = None) -> None:
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


def _position_panel(ax: Any, positions: list[str], values: np.ndarray, result: ProbeResult,
                    grid: PositionTable) -> None:
    """The probe result's AUROC by token position (rows) and layer (the shared x axis)."""
    norm = _auroc_norm(values)
    ax.imshow(values, aspect="auto", cmap=_auroc_cmap(), norm=norm, interpolation="nearest")
    _annotate(ax, values, norm, fontsize=6 if values.shape[1] > 16 else 7)
    main = result.position
    ax.set_yticks(range(len(positions)))
    ax.set_yticklabels([p + (" (main sweep)" if p == main else "") for p in positions], fontsize=8)
    ax.set_ylabel("position")
    chars = int(ax.get_figure().get_size_inches()[0] * 14) - 56     # the legends' width, as above the axes
    ax.set_title(_wrap(f"probe AUROC by token position (n={grid.n} questions that have every position; "
                       f"{level_label(grid.level)} intervals in the JSON / report); colour: white = 0.5 "
                       f"(chance), red above, blue below", chars), fontsize=9)


@plot_base.plain_text
def plot_position_auroc(result: ProbeResult, path: str | os.PathLike[str]) -> str:
    """Heatmap of probe AUROC, layers (rows) x token positions (columns) from result.positions
    (probe.probe_run with positions): every cell annotated, a diverging colour scale centred at
    chance (0.5), the main sweep's position marked; the title gives n and where the intervals are."""
    grid = result.positions
    if grid is None or not grid.auroc:
        raise ValueError("the probe result has no per-position AUROC (result.positions)")
    names = [n for n in result.layers if n in grid.auroc] or list(grid.auroc)
    pos = _position_grid(grid, names)
    if pos is None:
        raise ValueError("the probe result's per-position AUROC holds no value")
    positions, values = pos
    values = values.T                                          # [layer, position]
    fig = plot_base.new_figure(max(6.5, 1.5 * len(positions) + 3.5), max(4, 0.26 * len(names) + 2.2))
    ax = fig.subplots()
    norm = _auroc_norm(values)
    im = ax.imshow(values, aspect="auto", cmap=_auroc_cmap(), norm=norm, interpolation="nearest")
    _annotate(ax, values, norm, fontsize=8 if len(names) <= 40 else 6)
    main = result.position
    ax.set_xticks(range(len(positions)))
    ax.set_xticklabels([p + ("\n(main sweep)" if p == main else "") for p in positions], fontsize=9)
    ax.set_xlabel("token position the probe reads")
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8 if len(names) <= 40 else 6)
    ax.set_ylabel("layer")
    fig.colorbar(im, ax=ax, label="AUROC (colour centred at 0.5 = chance)")
    ax.set_title(f"Probe AUROC of '{result.target}' by layer and position - "
                 f"{result.run_name or 'run'}\n(n={grid.n} questions that have every position; "
                 f"{level_label(grid.level)} bootstrap intervals in the JSON / report)", fontsize=10)
    return plot_base.save_png(fig, path)


@plot_base.plain_text
def plot_transfer(result: ProbeResult, path: str | os.PathLike[str]) -> str:
    """Heatmap of probe transfer between groups (result.transfer): rows = trained on, columns =
    tested on, each cell its AUROC and, in small text, its interval; the diagonal (boxed) is
    out-of-fold within the group; a diverging colour scale centred at chance (0.5)."""
    from matplotlib.patches import Rectangle
    t = result.transfer
    if t is None or not t.groups or not t.auroc:
        raise ValueError("the probe result has no transfer matrix (result.transfer)")
    groups = list(t.groups)
    values = np.array([[np.nan if v is None else v for v in row] for row in t.auroc], dtype=float)
    extra = [[_ci_text(ci) if ci else "" for ci in row] for row in t.auroc_ci]
    labels = [f"{g}\n(n={t.n[g]})" for g in groups]
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
    by = t.by
    ax.set_xlabel(f"tested on ({by})\nboxed diagonal: out-of-fold within the group; off the diagonal: trained on all of "
                  f"the row's group" + ("\nn/a (grey): no AUROC in the result" if np.isnan(values).any() else ""),
                  fontsize=8)
    ax.set_ylabel(f"trained on ({by})")
    fig.colorbar(im, ax=ax, label="AUROC (colour centred at 0.5 = chance)", shrink=0.8)
    ax.set_title(f"Probe transfer across {by} values at {t.layer} - {result.run_name or 'run'}\n"
                 f"AUROC of '{result.target}' with its {level_label(t.level)} bootstrap interval; "
                 f"chance 0.5", fontsize=10)
    return plot_base.save_png(fig, path)


def _probe_curve(ax: Any, x: np.ndarray, layers: Mapping[str, LayerScore], color: str, label: str) -> None:
    """One AUROC-by-layer line with its 95% bootstrap band."""
    auroc = _values(layers, lambda v: v.auroc)
    ci = _bands(layers, lambda v: v.auroc_ci)
    ax.fill_between(x, ci[:, 0], ci[:, 1], color=color, alpha=0.2)
    ax.plot(x, auroc, marker="o", markersize=3, color=color, label=f"{label}, 95% band")
