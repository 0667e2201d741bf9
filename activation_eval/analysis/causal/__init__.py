"""The causal check of a probe's direction (issue 28): does steering or ablating along it change the
answers beyond what random directions of the same norm do, and does the sign flip reverse it?

The pure statistics; the re-runs themselves (capture/intervene.py under the run loop) produce the
answers these modules read.

Modules:
    directions   mass_mean, logistic_direction, unit, cross_fit, random_directions, spread
    effects      Answers, paired_change, changed_share, per_question_effect, condition, monotonicity
    verdict      judge -> Judgement (the verdict and its one sentence), random_band
    plan         causal_plan -> Plan (every condition as edits: rows, direction, alpha), merge_answers, Edit
    result       ConditionRun, steer_name, random_name, causal_result -> schema.causal.CausalResult
    text         causal_text(result) -> str (the command line's output)
    plots        plot_causal(result, path) -> path (effect against alpha, the random band)
    html         causal_html(result) -> str (the report's section)

Example:
    >>> from activation_eval.analysis.causal import judge
    >>> judge(0.02, (-0.01, 0.05), 0.01, -0.03, {"random_cov_0": 0.04}).verdict
    'no causal evidence at this layer'
"""
from .directions import cross_fit, logistic_direction, mass_mean, random_directions, spread, unit
from .effects import Answers, changed_share, condition, monotonicity, paired_change, per_question_effect
from .html import causal_html
from .plan import Edit, Plan, PlannedCondition, causal_plan, merge_answers
from .plots import plot_causal
from .result import ConditionRun, causal_result, random_name, steer_name
from .text import causal_text
from .verdict import Judgement, judge, random_band

__all__ = ["cross_fit", "logistic_direction", "mass_mean", "random_directions", "spread", "unit", "Answers",
           "changed_share", "condition", "monotonicity", "paired_change", "per_question_effect", "ConditionRun",
           "causal_result", "random_name", "steer_name", "causal_text", "plot_causal", "causal_html", "Judgement",
           "judge", "random_band", "Edit", "Plan", "PlannedCondition", "causal_plan", "merge_answers"]
