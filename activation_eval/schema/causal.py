"""The causal check's result: does steering or ablating along a layer's direction change the answers
beyond what random directions of the same norm do, and does the sign flip reverse it?

analysis/causal/ builds it (result.causal_result); the --json output of
`analyze_activations.py --causal RUN` is this result, its fields as keys, plus "format_version".
Every effect is paired: a condition's answers against the unsteered (baseline) answers to the same
questions. The verdict reads the gold answer's teacher-forced log-likelihood change (more sensitive
than accuracy) at the test alpha.

Public names:
    CausalResult        the whole result: the conditions, the random band, the verdict
    CausalCondition     one re-run of the questions (baseline, a steering alpha, ablation, a random direction)
    ConditionKind       "baseline" | "steer" | "ablate" | "random"
    DirectionMethod     "mass_mean" | "logistic"
    CAUSAL, NO_CAUSAL_EVIDENCE   the two verdicts
    FORMAT_VERSION, CONTRACTS

Example:
    >>> c = CausalCondition(name="alpha=+4", kind="steer", alpha_sd=4.0, alpha=2.6, n=40, accuracy=0.7,
    ...                     accuracy_ci=(0.55, 0.82), accuracy_change=0.2, accuracy_change_ci=(0.1, 0.3),
    ...                     gold_logprob_change=0.9, gold_logprob_change_ci=(0.6, 1.2), changed_share=0.25,
    ...                     changed_share_ci=(0.14, 0.4), run_dir="causal/alpha=+4")
    >>> c.kind, c.gold_logprob_change_ci[0]
    ('steer', 0.6)
"""
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, TypeAlias

from .estimates import Interval

FORMAT_VERSION = 1

ConditionKind: TypeAlias = Literal["baseline", "steer", "ablate", "random"]
DirectionMethod: TypeAlias = Literal["mass_mean", "logistic"]
CAUSAL = "causal"
NO_CAUSAL_EVIDENCE = "no causal evidence at this layer"
Verdict: TypeAlias = Literal["causal", "no causal evidence at this layer"]


@dataclass(frozen=True, kw_only=True)
class CausalCondition:
    """One condition: the run's questions answered again under one intervention (or none: the baseline),
    compared question by question with the baseline answers."""
    name: Annotated[str, "e.g. \"baseline\", \"alpha=+4\", \"alpha=-4\" (the sign flip at the test alpha), "
                         "\"ablate\", \"random_cov_3\", \"random_iso_0\""]
    kind: Annotated[ConditionKind, "baseline (no intervention), steer (alpha times the unit direction added), "
                                   "ablate (the direction projected out), random (a random unit direction added "
                                   "with the test alpha's norm, at either sign)"]
    alpha_sd: Annotated[float | None, "alpha in units of the residual's spread along the direction (the std of the "
                                      "run's activations projected on it); None for ablate"]
    alpha: Annotated[float | None, "the added vector's norm with its sign, in the residual's own units (the mean "
                                   "over folds where each fold's direction has its own spread); None for ablate"]
    n: Annotated[int, "questions answered under this condition (paired with the baseline)"]
    accuracy: Annotated[float, "share of these questions answered correctly"]
    accuracy_ci: Annotated[Interval, "its Wilson interval (level)"]
    accuracy_change: Annotated[float, "accuracy - the baseline's accuracy on the same questions"]
    accuracy_change_ci: Annotated[Interval, "its paired percentile bootstrap interval over questions (level)"]
    gold_logprob_change: Annotated[float | None, "mean over questions of the change in the gold answer's "
                                                 "teacher-forced log-likelihood (nats); None: not scored"]
    gold_logprob_change_ci: Annotated[Interval, "its paired percentile bootstrap interval over questions (level)"]
    changed_share: Annotated[float, "share of questions whose answer text differs from the baseline's"]
    changed_share_ci: Annotated[Interval, "its Wilson interval (level)"]
    run_dir: Annotated[str | None, "the run folder of this condition's answers (kept for resume and audit)"]


@dataclass(frozen=True, kw_only=True)
class CausalResult:
    """The causal check of one layer's direction: steering at a grid of signed alphas, ablation, random
    directions as the null, the sign flip, and the verdict."""
    format_version: ClassVar[int] = FORMAT_VERSION
    run: Annotated[str, "the run folder whose questions were answered again"]
    layer: Annotated[str, "the layer whose output was edited, e.g. layer_3"]
    position: Annotated[str, "where the direction was fitted: the probe's position (e.g. answer, last_prompt)"]
    direction_method: Annotated[DirectionMethod, "mass_mean (mean of correct minus mean of incorrect) or logistic "
                                                 "(the standardized logistic probe's weights in the original space)"]
    direction_source: Annotated[str, "where the direction came from: this run's activations, another run, a file"]
    cross_fitting: Annotated[str, "how no question is steered by a direction fitted on it, e.g. \"5 folds: each "
                                  "question steered by the direction fitted on the other folds\" or \"direction "
                                  "from RUN2\""]
    folds: Annotated[int, "cross-fitting folds (0: the direction came from elsewhere)"]
    test_alpha_sd: Annotated[float, "the alpha (in spreads) whose effect the verdict reads; its sign flip is the "
                                    "condition at -test_alpha_sd"]
    effect_measure: Annotated[str, "what an effect is: \"gold_logprob_change\" (or \"accuracy_change\" where the "
                                   "gold answer was not scored)"]
    antisymmetric: Annotated[bool, "the verdict's effects are half the difference between the effects at +alpha and "
                                   "-alpha (the damage any perturbation of that norm does cancels; every random "
                                   "direction ran at both signs); False: the effects at +alpha alone"]
    conditions: Annotated[list[CausalCondition], "every condition, the baseline first, then the alphas in order, "
                                                 "ablation, the random directions (\"random_cov_3+\", "
                                                 "\"random_cov_3-\": the two signs)"]
    effect: Annotated[float | None, "the direction's effect the verdict reads (antisymmetric: (effect at +test alpha "
                                    "- effect at -test alpha) / 2 per question, averaged)"]
    effect_ci: Annotated[Interval, "its paired interval (level): the verdict needs it to exclude 0"]
    test_effect: Annotated[float | None, "the effect at +test_alpha_sd"]
    sign_flip_effect: Annotated[float | None, "the effect at -test_alpha_sd"]
    sign_flip_reverses: Annotated[bool, "test_effect and sign_flip_effect are non-zero and of opposite signs"]
    random_names: Annotated[list[str], "the random directions (random_cov_i: drawn from the residual's covariance, "
                                       "random_iso_i: isotropic)"]
    random_effects: Annotated[list[float], "each random direction's effect, defined as the direction's (antisymmetric "
                                           "or not), at the test alpha's norm; in the order of random_names"]
    random_p95: Annotated[float | None, "95th percentile of |effect| over the random directions (numpy's \"higher\": "
                                        "an observed value, the largest below 20 directions); None: none ran"]
    best_random: Annotated[str | None, "the random direction with the largest |effect|"]
    best_random_effect: Annotated[float | None, "its effect"]
    monotonic_rho: Annotated[float | None, "Spearman rho of the effect against alpha over the alpha grid (0 "
                                           "included as the baseline); None: fewer than 3 alphas"]
    monotonic_ci: Annotated[Interval, "its percentile bootstrap interval over questions (level)"]
    n_alphas: Annotated[int, "alphas in the grid, 0 included"]
    verdict: Annotated[Verdict, "\"causal\" only when |effect| > random_p95, effect_ci excludes 0 and the sign flip "
                                "reverses; else \"no causal evidence at this layer\""]
    verdict_text: Annotated[str, "one sentence: the effect with its interval, the random band and the best random "
                                 "direction, and what failed"]
    notes: Annotated[list[str], "what the reader must know (too few questions, no random directions, ...)"]
    level: Annotated[float, "the intervals' level, e.g. 0.95"]
    n_resamples: Annotated[int, "bootstrap resamples of every interval"] = 2000
    seed: Annotated[int, "the seed of the folds, the random directions and the bootstrap"] = 0


CONTRACTS = (CausalResult, CausalCondition)
VOCABULARIES = {"verdicts": (CAUSAL, NO_CAUSAL_EVIDENCE)}
