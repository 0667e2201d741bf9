"""The logit lens plot: the gold first token's rank and probability by layer, correct vs incorrect.

Public names:
    plot_logit_lens(result, path) -> path    where it reads and the caveats in the title; gold-token median rank
                                             (log axis) and mean probability by layer,
                                             correct vs incorrect (pooled groups), 95% bootstrap bands, chance
                                             dashed, final_norm apart; below, the difference incorrect - correct
                                             within the strata with its band, the pooled one beside, layers
                                             whose pooled sign is reversed circled in red

Example:
    >>> from activation_eval.analysis.lens import logit_lens_run
    >>> plot_logit_lens(logit_lens_run("results/mc", layers=["layer_5", "layer_20"], progress=False), "plots/lens.png")
    'plots/lens.png'
"""
import os
import textwrap
from typing import Any

import numpy as np

from ...schema.lens import GroupCurve, LensResult
from ...schema.names import FINAL_NORM
from ...schema.stratify import Difference
from .. import plot_base
from ..stratify import strata_line


def _plain_log_ticks(ax: Any) -> None:
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


def _estimates(cells: list[Difference], part: str) -> tuple[list[float], list[list[float]]]:
    """(values, intervals) of the differences' `part` ("stratified" / "pooled"), nan where undefined."""
    nan = float("nan")
    estimates = [c.stratified if part == "stratified" else c.pooled for c in cells]
    vals = [nan if e.value is None else e.value for e in estimates]
    ci = [[nan if v is None else v for v in e.ci] for e in estimates]
    return vals, ci


def _lens_differences(ax: Any, cells: list[Difference], xs: list[int], n_body: int, ylabel: str) -> None:
    """The correct-vs-incorrect panel of one lens quantity (`cells`: its difference per layer): the
    stratified difference by layer with its band, the pooled one beside (dashed), 0 marked, layers with a
    reversed pooled sign circled."""
    first = cells[0]
    by, level = first.by or "stratum", f"{first.level * 100:g}%"
    one = first.strata_used + len(first.strata_skipped) <= 1
    if not one and first.strata_used:
        vals, ci = _estimates(cells, "stratified")
        k = first.strata_used
        plot_base.band_by_layer(ax, xs, n_body, vals, ci, "tab:purple",
                       f"within {by} ({k} {'stratum' if k == 1 else 'strata'}, weighted), {level} band")
    vals, ci = _estimates(cells, "pooled")
    ax.set_title(textwrap.fill(f"correct vs incorrect: {strata_line(first)}", 64), fontsize=9)
    if all(np.isnan(vals)):
        ax.set_yticks([])
        ax.set_ylabel(ylabel, fontsize=9)
        return
    label = (f"not stratified: one stratum, {level} band" if one
             else f"pooled (ignores {by}), {level} band" + ("" if first.strata_used else
                                                            f"; no {by} has both classes"))
    plot_base.band_by_layer(ax, xs, n_body, vals, ci, "0.35", label, linestyle="--")
    flipped = [i for i, c in enumerate(cells) if c.sign_reversal]
    if flipped:
        ax.plot([xs[i] for i in flipped], [vals[i] for i in flipped], linestyle="none", marker="o", markersize=11,
                markerfacecolor="none", markeredgecolor="red", markeredgewidth=1.5,
                label="pooled sign opposite to the stratified one")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel(ylabel, fontsize=9)


@plot_base.plain_text
def plot_logit_lens(result: LensResult, path: str | os.PathLike[str]) -> str:
    """Logit lens curves (lens.logit_lens_run): the gold first token's median rank (log axis, lower
    is better) and mean probability by layer, correct vs incorrect questions (pooled groups), 95%
    bootstrap bands, chance level dashed; final_norm (the model's own output) drawn apart. Below
    each (when the result has "stratified"): the difference incorrect - correct by layer within
    the strata (category) with its band, the pooled difference beside, layers whose pooled sign is
    reversed circled in red."""
    names = result.layer_names
    body, has_final = plot_base.split_final(names)
    order = body + ([FINAL_NORM] if has_final else [])
    xs = list(range(len(body))) + ([len(body)] if has_final else [])
    compared = bool(result.stratified)
    fig = plot_base.new_figure(min(16, max(10, 0.5 * len(names) + 4)), 8.8 if compared else 5.0)
    axes = fig.subplots(2 if compared else 1, 2, sharex="col", squeeze=False)
    ax_rank, ax_prob = axes[0]
    colors = {"correct": "tab:green", "incorrect": "tab:red", "all": "tab:blue"}
    curves = {name: {"correct": g.correct, "incorrect": g.incorrect, "all": g.all} for name, g in result.layers.items()}
    groups = [g for g in ("correct", "incorrect") if curves[names[0]][g].n] or ["all"]
    for group in groups:
        by_layer = [curves[name][group] for name in order]
        label = f"{group} (n={by_layer[0].n})"
        _group_band(ax_rank, xs, len(body), by_layer, lambda c: (c.median_rank, c.median_rank_ci), colors[group], label)
        _group_band(ax_prob, xs, len(body), by_layer, lambda c: (c.mean_prob, c.mean_prob_ci), colors[group], label)
    ax_rank.axhline(result.chance_rank, color="gray", linestyle="--",
                    label=f"chance (uniform guess: {result.chance_rank:.0f})")
    ax_prob.axhline(result.chance_prob_per_token, color="gray", linestyle="--",
                    label=f"chance (1 / vocab = {result.chance_prob_per_token:.1e})")
    ax_rank.set_yscale("log")
    ax_rank.invert_yaxis()
    ax_rank.set_ylabel("median rank of the gold first token (log; top = 1)")
    ax_prob.set_ylabel("mean probability of the gold first token")
    ax_prob.set_ylim(bottom=0)
    by = result.stratified_by
    if compared:
        ax_rank.set_title(f"groups pooled over {by}", fontsize=9)
        ax_prob.set_title(f"groups pooled over {by}", fontsize=9)
        _lens_differences(axes[1][0], [result.stratified[name].log_rank for name in order], xs, len(body),
                          "mean ln(rank) difference, incorrect - correct\n(> 0: gold ranked lower when wrong)")
        _lens_differences(axes[1][1], [result.stratified[name].prob for name in order], xs, len(body),
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
    where = "the answer (the position that emits its first token)" if result.reading == "answer" else \
        "the last prompt token"
    left_out = (f"; {result.skipped_no_answer_span} left out without an answer span"
                if result.reading == "answer" and result.skipped_no_answer_span else "")
    caveats = "".join("\n" + textwrap.shorten(f"caveat: {c}", 150) for c in result.caveats)
    fig.suptitle(f"Logit lens at {where} - {os.path.basename(os.path.normpath(result.run_dir))} "
                 f"({result.questions_used} questions{left_out}; bands: 95% bootstrap){caveats}", fontsize=10)
    return plot_base.save_png(fig, path)


def _group_band(ax: Any, xs: list[int], n_body: int, curves: list[GroupCurve], figure: Any, color: str,
                label: str) -> None:
    """One group's curve of one figure ((value, interval) = figure(curve)) by layer, with its band."""
    pairs = [figure(c) for c in curves]
    vals = [np.nan if v is None else v for v, _ in pairs]
    ci = [[np.nan if x is None else x for x in band] for _, band in pairs]
    plot_base.band_by_layer(ax, xs, n_body, vals, ci, color, label)
