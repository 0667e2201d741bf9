"""The CausalResult from every condition's answers: paired effects (effects.py), the random band and the
verdict (verdict.py), the monotonicity over the alpha grid.

Public names:
    ConditionRun(name, kind, alpha_sd, alpha, answers, run_dir=None)   one condition's answers and where
    steer_name(alpha_sd) -> str        "alpha=+4", "alpha=-0.5": the name of a steering condition
    random_name(name, alpha) -> str    "random_cov_3+", "random_cov_3-": a random direction at one sign
    causal_result(run=, layer=, position=, direction_method=, direction_source=, cross_fitting=, folds=,
                  test_alpha_sd=, baseline=, conditions=, level=0.95, n_resamples=2000, seed=0,
                  clusters=None, baseline_dir=None, notes=()) -> CausalResult

The test condition is the steer condition at +test_alpha_sd, its sign flip the one at -test_alpha_sd.
The effect the verdict reads is the gold log-likelihood change where every condition scored it, else
the accuracy change (with a note). Where every random direction ran at both signs (random_name(name, +a)
and random_name(name, -a)), every effect the verdict compares is antisymmetric: per question, half the
difference between the effects at +alpha and -alpha. Any large perturbation lowers the gold
log-likelihood, whatever its direction (and that loss is unbounded while the gain is at most the distance to
0), so one-sided random effects are mostly damage; the antisymmetric part cancels it and is symmetric about
0 for a random direction (u and -u are equally likely). With one sign only, the effects at +alpha are
compared, with a note.

Example:
    >>> rng = np.random.default_rng(0)
    >>> lp = rng.normal(-1, 0.3, 40); base = Answers(correct=(lp > -1).astype(int), texts=["x"] * 40, gold_logprob=lp)
    >>> def shifted(d): return Answers(correct=(lp + d > -1).astype(int), texts=["x"] * 40, gold_logprob=lp + d)
    >>> runs = [ConditionRun(steer_name(a), "steer", a, a / 2, shifted(a / 4 + rng.normal(0, 0.01, 40)))
    ...         for a in (-4, -2, 2, 4)]
    >>> runs += [ConditionRun(random_name(f"random_iso_{i}", a), "random", None, a, shifted(rng.normal(0, 0.05, 40)))
    ...          for i in range(20) for a in (2.0, -2.0)]
    >>> r = causal_result(run="runs/x", layer="layer_1", position="last_prompt", direction_method="mass_mean",
    ...                   direction_source="runs/x", cross_fitting="5 folds", folds=5, test_alpha_sd=4.0,
    ...                   baseline=base, conditions=runs)
    >>> r.verdict, r.antisymmetric, r.monotonic_rho, [c.name for c in r.conditions][:3]
    ('causal', True, 1.0, ['baseline', 'alpha=-4', 'alpha=-2'])
"""
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...schema.causal import CausalCondition, CausalResult, ConditionKind, DirectionMethod
from ...schema.estimates import Interval
from ..intervals import bootstrap_ci
from .effects import Answers, condition, monotonicity, per_question_effect
from .verdict import judge

_ORDER = {"baseline": 0, "steer": 1, "ablate": 2, "random": 3}


@dataclass(frozen=True)
class ConditionRun:
    """One condition's answers (in the baseline's question order) and the run folder they came from."""
    name: str
    kind: ConditionKind
    alpha_sd: float | None
    alpha: float | None
    answers: Answers
    run_dir: str | None = None


def steer_name(alpha_sd: float) -> str:
    """The name of the steering condition at alpha_sd spreads: "alpha=+4", "alpha=-0.5"."""
    return f"alpha={alpha_sd:+g}"


def random_name(name: str, alpha: float) -> str:
    """The condition name of random direction `name` steered at alpha's sign: "random_cov_3+", "random_cov_3-"."""
    return f"{name}{'+' if alpha >= 0 else '-'}"


def _random_groups(randoms: Sequence[ConditionRun]) -> dict[str, dict[str, ConditionRun]]:
    """The random conditions by direction: {"random_cov_3": {"+": run, "-": run}} (a name without a sign suffix
    counts as "+")."""
    groups: dict[str, dict[str, ConditionRun]] = {}
    for c in randoms:
        base, sign = (c.name[:-1], c.name[-1]) if c.name[-1:] in "+-" else (c.name, "+")
        groups.setdefault(base, {})[sign] = c
    return groups


def _find(conditions: Sequence[ConditionRun], alpha_sd: float) -> ConditionRun | None:
    return next((c for c in conditions if c.kind == "steer" and c.alpha_sd is not None
                 and np.isclose(c.alpha_sd, alpha_sd)), None)


def _measure(baseline: Answers, conditions: Sequence[ConditionRun], notes: list[str]) -> str:
    if baseline.gold_logprob is not None and all(c.answers.gold_logprob is not None for c in conditions):
        return "gold_logprob_change"
    notes.append("the gold answer's log-likelihood was not scored in every condition: effects are accuracy changes")
    return "accuracy_change"


def _effect_mean(baseline: Answers, run: ConditionRun | None, measure: str) -> float | None:
    return None if run is None else float(per_question_effect(baseline, run.answers, measure).mean())


def causal_result(*, run: str, layer: str, position: str, direction_method: DirectionMethod, direction_source: str,
                  cross_fitting: str, folds: int, test_alpha_sd: float, baseline: Answers,
                  conditions: Sequence[ConditionRun], level: float = 0.95, n_resamples: int = 2000, seed: int = 0,
                  clusters: Sequence[Any] | None = None, baseline_dir: str | None = None,
                  notes: Sequence[str] = ()) -> CausalResult:
    """Every figure of the causal check from the baseline's and each condition's answers."""
    notes = list(notes)
    if test_alpha_sd <= 0:
        raise ValueError(f"the test alpha must be positive (its sign flip is the negative one), got {test_alpha_sd}")
    measure = _measure(baseline, conditions, notes)
    ordered = sorted(conditions, key=lambda c: (_ORDER[c.kind], c.alpha_sd if c.kind == "steer" else 0.0))

    def figures(c: ConditionRun) -> CausalCondition:
        return condition(c.name, c.kind, c.alpha_sd, c.alpha, baseline, c.answers, level, n_resamples, seed,
                         clusters, c.run_dir)

    base_condition = condition("baseline", "baseline", 0.0, 0.0, baseline, baseline, level, n_resamples, seed,
                               clusters, baseline_dir)
    rows = [base_condition] + [figures(c) for c in ordered]
    test, flip = _find(conditions, test_alpha_sd), _find(conditions, -test_alpha_sd)
    if test is None:
        notes.append(f"no steering condition at the test alpha {steer_name(test_alpha_sd)}: no verdict can be made")
    if flip is None:
        notes.append(f"no sign-flipped condition {steer_name(-test_alpha_sd)}: the reversal cannot be checked")
    groups = _random_groups([c for c in ordered if c.kind == "random"])
    antisymmetric = bool(groups) and all(set(g) == {"+", "-"} for g in groups.values())
    if groups and not antisymmetric:
        notes.append("random directions ran at one sign only: every effect compared is the one at +alpha, which "
                     "includes the damage any perturbation of that norm does")
    effect, effect_ci = _verdict_effect(baseline, test, flip, measure, antisymmetric, level, n_resamples, seed,
                                        clusters)
    random_effects = {name: _signed_effect(baseline, g, measure, antisymmetric) for name, g in groups.items()}
    test_effect, flip_effect = _effect_mean(baseline, test, measure), _effect_mean(baseline, flip, measure)
    j = judge(effect, effect_ci, test_effect, flip_effect, random_effects, test_alpha_sd, measure, antisymmetric)
    steers = [c for c in ordered if c.kind == "steer" and c.alpha_sd is not None]
    alphas = sorted({0.0, *(float(c.alpha_sd) for c in steers)})                              # type: ignore[arg-type]
    zero = np.zeros(len(baseline.texts))
    grid = [zero if a == 0.0 else per_question_effect(baseline, _find(steers, a).answers, measure)  # type: ignore[union-attr]
            for a in alphas]
    rho, rho_ci = monotonicity(alphas, grid, level, n_resamples, seed)
    return CausalResult(run=run, layer=layer, position=position, direction_method=direction_method,
                        direction_source=direction_source, cross_fitting=cross_fitting, folds=folds,
                        test_alpha_sd=float(test_alpha_sd), effect_measure=measure, antisymmetric=antisymmetric,
                        conditions=rows, effect=effect, effect_ci=effect_ci, test_effect=test_effect,
                        sign_flip_effect=flip_effect, sign_flip_reverses=j.sign_flip_reverses,
                        random_names=list(random_effects), random_effects=list(random_effects.values()),
                        random_p95=j.random_p95, best_random=j.best_random, best_random_effect=j.best_random_effect,
                        monotonic_rho=rho, monotonic_ci=rho_ci, n_alphas=len(alphas), verdict=j.verdict,  # type: ignore[arg-type]
                        verdict_text=j.text, notes=notes + j.notes, level=level, n_resamples=n_resamples,
                        seed=seed)


def _verdict_effect(baseline: Answers, test: ConditionRun | None, flip: ConditionRun | None, measure: str,
                    antisymmetric: bool, level: float, n_resamples: int, seed: int,
                    clusters: Sequence[Any] | None) -> tuple[float | None, Interval]:
    """The direction's effect the verdict reads and its paired bootstrap interval over questions."""
    if test is None or (antisymmetric and flip is None):
        return None, (None, None)
    per_question = per_question_effect(baseline, test.answers, measure)
    if antisymmetric:
        per_question = (per_question - per_question_effect(baseline, flip.answers, measure)) / 2  # type: ignore[union-attr]
    return float(per_question.mean()), bootstrap_ci(per_question, np.mean, n_resamples, level, seed, clusters)


def _signed_effect(baseline: Answers, group: dict[str, ConditionRun], measure: str, antisymmetric: bool) -> float:
    plus = per_question_effect(baseline, group["+" if "+" in group else "-"].answers, measure).mean()
    if not antisymmetric:
        return float(plus)
    return float((plus - per_question_effect(baseline, group["-"].answers, measure).mean()) / 2)
