"""The causal result as the command line prints it (--causal without --json).

What was done (layer, position, direction, cross-fitting, effect measure), the conditions table (every figure
paired against the baseline's answers to the same questions), the random band, the monotonicity in alpha,
the notes, and the verdict last (its sentence from verdict.py, stored in the result).

Public names:
    causal_text(result) -> str

Example:
    >>> from activation_eval.analysis.causal.effects import Answers
    >>> from activation_eval.analysis.causal.result import ConditionRun, causal_result, steer_name
    >>> base = Answers(correct=np.array([0, 1, 0, 1]), texts=list("BABA"), gold_logprob=np.array([-2., -.1, -2., -.1]))
    >>> up = Answers(correct=np.ones(4, int), texts=list("AAAA"), gold_logprob=np.array([-.1, -.05, -.1, -.05]))
    >>> r = causal_result(run="runs/x", layer="layer_1", position="last_prompt", direction_method="mass_mean",
    ...                   direction_source="runs/x", cross_fitting="2 folds", folds=2, test_alpha_sd=4.0,
    ...                   baseline=base, conditions=[ConditionRun(steer_name(4), "steer", 4.0, 1.2, up)])
    >>> print(causal_text(r).splitlines()[0])
    causal check of layer_1 (last_prompt) in runs/x: mass_mean direction, 2 folds
    >>> causal_text(r).splitlines()[-1].startswith("verdict:    no causal evidence at this layer: ")
    True
"""
import numpy as np  # noqa: F401  (used in the example)

from ...schema.causal import CausalCondition, CausalResult
from ..text import format_table, level_label, with_ci


def _alpha(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3g}"


def _row(c: CausalCondition) -> list[str]:
    return [c.name, c.kind, _alpha(c.alpha_sd), _alpha(c.alpha), str(c.n), with_ci(c.accuracy, c.accuracy_ci),
            with_ci(c.accuracy_change, c.accuracy_change_ci, "{:+.3f}"),
            with_ci(c.gold_logprob_change, c.gold_logprob_change_ci, "{:+.3f}"),
            with_ci(c.changed_share, c.changed_share_ci)]


def _head(r: CausalResult) -> list[str]:
    effect = ("antisymmetric: half the difference between +alpha and -alpha per question" if r.antisymmetric
              else "at +alpha")
    return [f"causal check of {r.layer} ({r.position}) in {r.run}: {r.direction_method} direction, {r.cross_fitting}",
            f"direction:  {r.direction_source}",
            f"effect:     {r.effect_measure} ({effect}); intervals {level_label(r.level)}, paired over questions",
            f"test alpha: +/-{r.test_alpha_sd:g} sd of the residual along the direction"]


def _band(r: CausalResult) -> list[str]:
    if r.random_p95 is None:
        return ["random band: no random direction ran"]
    n_cov = sum(name.startswith("random_cov") for name in r.random_names)
    return [f"random band: 95th percentile of |effect| {r.random_p95:.3f} over {len(r.random_names)} random "
            f"directions ({n_cov} from the residual's covariance, {len(r.random_names) - n_cov} isotropic); "
            f"best {r.best_random}: {r.best_random_effect:+.3f}",
            f"direction:  effect {with_ci(r.effect, r.effect_ci, '{:+.3f}')}; at +{r.test_alpha_sd:g} sd "
            f"{_alpha(r.test_effect)}, at -{r.test_alpha_sd:g} sd {_alpha(r.sign_flip_effect)} "
            f"(the sign flip {'reverses' if r.sign_flip_reverses else 'does not reverse'} it)"]


def _monotonic(r: CausalResult) -> str:
    if r.monotonic_rho is None:
        return f"monotonicity: not measured ({r.n_alphas} alphas with 0; 3 needed)"
    return (f"monotonicity: Spearman rho of the effect against alpha {with_ci(r.monotonic_rho, r.monotonic_ci)} "
            f"over {r.n_alphas} alphas (0 included)")


def causal_text(result: CausalResult) -> str:
    """The --causal text output of `result`."""
    headers = ["condition", "kind", "alpha_sd", "alpha", "n", "accuracy", "accuracy change", "gold logprob change",
               "changed answers"]
    table = format_table(headers, [_row(c) for c in result.conditions])
    notes = [f"note: {note}" for note in result.notes]
    parts = ["\n".join(_head(result)), table, "\n".join(_band(result) + [_monotonic(result)])]
    if notes:
        parts.append("\n".join(notes))
    parts.append(f"verdict:    {result.verdict_text}")
    return "\n\n".join(parts)
