"""The causal check's figure: the effect against alpha with the random directions beside it, and the verdict's
comparison (the direction's effect against the random band).

Left: each steering condition's effect (the result's effect measure, one-sided: the condition against the
baseline) against alpha in spreads, with its paired interval, the baseline at 0; ablation as a point at the
right edge; every random direction's effect at the test alpha's norm as grey points at +/- the test alpha.
Right: what the verdict compares: the direction's effect (antisymmetric where the result is) with its
interval, every random direction's effect, and the band of +/- their 95th percentile of |effect|.

Public names:
    plot_causal(result, path) -> path       the PNG written

Example:
    >>> from activation_eval.analysis.causal.effects import Answers
    >>> from activation_eval.analysis.causal.result import ConditionRun, causal_result, steer_name
    >>> base = Answers(correct=np.array([0, 1, 0, 1]), texts=list("BABA"), gold_logprob=np.array([-2., -.1, -2., -.1]))
    >>> up = Answers(correct=np.ones(4, int), texts=list("AAAA"), gold_logprob=np.array([-.1, -.05, -.1, -.05]))
    >>> r = causal_result(run="runs/x", layer="layer_1", position="last_prompt", direction_method="mass_mean",
    ...                   direction_source="runs/x", cross_fitting="2 folds", folds=2, test_alpha_sd=4.0,
    ...                   baseline=base, conditions=[ConditionRun(steer_name(4), "steer", 4.0, 1.2, up)])
    >>> plot_causal(r, "plots/causal.png")
    'plots/causal.png'
"""
import os
import textwrap
from typing import Any

import numpy as np

from ...schema.causal import CausalCondition, CausalResult
from .. import plot_base

_LABELS = {"gold_logprob_change": "change in the gold answer's log-likelihood (nats)",
           "accuracy_change": "change in accuracy"}


def _value(c: CausalCondition, measure: str) -> tuple[float | None, tuple[float | None, float | None]]:
    if measure == "gold_logprob_change":
        return c.gold_logprob_change, c.gold_logprob_change_ci
    return c.accuracy_change, c.accuracy_change_ci


def _errorbar(ax: Any, x: float, value: float | None, ci: tuple[float | None, float | None], **style: Any) -> None:
    if value is None:
        return
    lo, hi = (value if ci[0] is None else ci[0]), (value if ci[1] is None else ci[1])
    ax.errorbar([x], [value], yerr=[[value - lo], [hi - value]], capsize=3, linestyle="none", **style)


def _alpha_panel(ax: Any, r: CausalResult) -> None:
    steer = sorted((c for c in r.conditions if c.kind in ("steer", "baseline") and c.alpha_sd is not None),
                   key=lambda c: c.alpha_sd or 0.0)
    xs = [c.alpha_sd or 0.0 for c in steer]
    values = [_value(c, r.effect_measure) for c in steer]
    ys = [np.nan if v is None else v for v, _ in values]
    ax.plot(xs, ys, color="C0", marker="o", label="the direction (cross-fitted)")
    lows = [np.nan if ci[0] is None else ci[0] for _, ci in values]
    highs = [np.nan if ci[1] is None else ci[1] for _, ci in values]
    ax.fill_between(xs, lows, highs, color="C0", alpha=0.2)
    randoms = [c for c in r.conditions if c.kind == "random"]
    for i, c in enumerate(randoms):
        value, _ = _value(c, r.effect_measure)
        side = -1.0 if c.name.endswith("-") else 1.0
        if value is not None:
            ax.plot([side * r.test_alpha_sd], [value], "o", color="0.5", alpha=0.5, markersize=4,
                    label="random directions (same norm)" if i == 0 else None)
    width = max(abs(x) for x in xs) if xs else r.test_alpha_sd
    for c in r.conditions:
        if c.kind == "ablate":
            _errorbar(ax, width * 1.25, *_value(c, r.effect_measure), color="C3", marker="s", label="ablation")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xlabel("alpha (spreads of the residual along the direction)")
    ax.set_ylabel(_LABELS.get(r.effect_measure, r.effect_measure))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _verdict_panel(ax: Any, r: CausalResult) -> None:
    rng = np.random.default_rng(0)
    if r.random_effects:
        jitter = rng.uniform(-0.15, 0.15, len(r.random_effects))
        ax.plot(1 + jitter, r.random_effects, "o", color="0.5", alpha=0.6, markersize=4, label="random directions")
    if r.random_p95 is not None:
        ax.axhspan(-r.random_p95, r.random_p95, color="0.85", label="random band (95th pct of |effect|)")
    _errorbar(ax, 0, r.effect, r.effect_ci, color="C0" if r.verdict == "causal" else "C1", marker="D",
              label="the direction")
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_xticks([0, 1])
    ax.set_xticklabels(["direction", "random"])
    ax.set_xlim(-0.6, 1.6)
    ax.set_ylabel("antisymmetric effect: (+alpha - -alpha) / 2" if r.antisymmetric else "effect at +alpha")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=7, loc="best")


@plot_base.plain_text
def plot_causal(result: CausalResult, path: str | os.PathLike[str]) -> str:
    """The effect against alpha with the random directions, and the verdict's comparison, titled with the
    verdict sentence."""
    fig = plot_base.new_figure(12, 5.2)
    left, right = fig.subplots(1, 2, width_ratios=[2.2, 1])
    _alpha_panel(left, result)
    _verdict_panel(right, result)
    run = os.path.basename(os.path.normpath(result.run)) or result.run       # a long path would run off the figure
    head = (f"causal check of {result.layer} ({result.position}) - {run}, {result.direction_method} "
            f"direction, {result.cross_fitting}")
    fig.suptitle(textwrap.fill(head, 150) + "\n" + textwrap.fill(result.verdict_text, 150), fontsize=9)
    return plot_base.save_png(fig, path)
