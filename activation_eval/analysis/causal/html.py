"""The report's causal section, from a CausalResult.

The verdict first (its one sentence), what was done, the figure (plots.py), the conditions table (every
figure paired against the baseline's answers, with each condition's run folder), the random band and the
monotonicity, notes.

Public names:
    causal_html(result) -> str

Example:
    >>> from activation_eval.analysis.causal.effects import Answers
    >>> from activation_eval.analysis.causal.result import ConditionRun, causal_result, steer_name
    >>> base = Answers(correct=np.array([0, 1, 0, 1]), texts=list("BABA"), gold_logprob=np.array([-2., -.1, -2., -.1]))
    >>> up = Answers(correct=np.ones(4, int), texts=list("AAAA"), gold_logprob=np.array([-.1, -.05, -.1, -.05]))
    >>> r = causal_result(run="runs/<x>", layer="layer_1", position="last_prompt", direction_method="mass_mean",
    ...                   direction_source="runs/x", cross_fitting="2 folds", folds=2, test_alpha_sd=4.0,
    ...                   baseline=base, conditions=[ConditionRun(steer_name(4), "steer", 4.0, 1.2, up)])
    >>> page = causal_html(r)
    >>> page[:50], page.count("<img"), "runs/&lt;x&gt;" in page
    ("<h2>Causal check: does steering along layer_1's di", 1, True)
"""
import numpy as np  # noqa: F401  (used in the example)

from ...schema.causal import CAUSAL, CausalCondition, CausalResult
from ..html import esc, figure_or_note, num, table
from ..text import level_label
from .plots import plot_causal

VERDICT_STYLE = {True: "background:#e8f5e9;border-left:5px solid #2e7d32;padding:.4em .8em;margin:.6em 0",
                 False: "background:#f4f4f4;border-left:5px solid #777;padding:.4em .8em;margin:.6em 0"}


def _alpha(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3g}"


def _row(c: CausalCondition) -> list[str]:
    return [c.name, c.kind, _alpha(c.alpha_sd), _alpha(c.alpha), str(c.n), num(c.accuracy, c.accuracy_ci),
            num(c.accuracy_change, c.accuracy_change_ci, "{:+.3f}"),
            num(c.gold_logprob_change, c.gold_logprob_change_ci, "{:+.3f}"),
            num(c.changed_share, c.changed_share_ci), c.run_dir or "-"]


def _setup(r: CausalResult) -> str:
    effect = ("antisymmetric: per question, half the difference between the effects at +alpha and -alpha "
              "(the damage any perturbation of that norm does cancels)" if r.antisymmetric else "at +alpha alone")
    items = [f"run: {r.run}; layer {r.layer}, position {r.position}",
             f"direction: {r.direction_method}, from {r.direction_source}; {r.cross_fitting}",
             f"effect: {r.effect_measure}, {effect}; intervals {level_label(r.level)}, paired bootstrap over questions",
             f"test alpha: +/-{r.test_alpha_sd:g} spreads of the residual along the direction"]
    return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"


def _band(r: CausalResult) -> str:
    if r.random_p95 is None:
        band = "no random direction ran"
    else:
        band = (f"95th percentile of |effect| over {len(r.random_names)} random directions {r.random_p95:.3f}; "
                f"best {r.best_random}: {r.best_random_effect:+.3f}")
    flip = "reverses" if r.sign_flip_reverses else "does not reverse"
    rho = ("not measured" if r.monotonic_rho is None
           else f"Spearman rho {num(r.monotonic_rho, r.monotonic_ci)} over {r.n_alphas} alphas (0 included)")
    items = [f"the direction: {num(r.effect, r.effect_ci, '{:+.3f}')}",
             f"random band: {band}",
             f"sign flip: {_alpha(r.test_effect)} at +{r.test_alpha_sd:g} sd, {_alpha(r.sign_flip_effect)} at "
             f"-{r.test_alpha_sd:g} sd: it {flip}",
             f"monotonicity in alpha: {rho}"]
    return "<ul>" + "".join(f"<li>{esc(item)}</li>" for item in items) + "</ul>"


def causal_html(result: CausalResult) -> str:
    """The causal section of the report."""
    headers = ["condition", "kind", "alpha (sd)", "alpha", "n", "accuracy", "accuracy change",
               "gold log-prob change", "changed answers", "run folder"]
    parts = [f"<h2>Causal check: does steering along {esc(result.layer)}'s direction change the answers?</h2>",
             f'<p style="{VERDICT_STYLE[result.verdict == CAUSAL]}"><b>{esc(result.verdict_text)}</b></p>',
             _setup(result), figure_or_note("The causal plot", plot_causal, result),
             "<h3>Conditions (paired against the baseline's answers)</h3>",
             table(headers, [_row(c) for c in result.conditions]), "<h3>The verdict's figures</h3>", _band(result)]
    if result.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in result.notes) + "</ul>")
    return "".join(parts)
