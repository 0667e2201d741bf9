"""What to re-run for a causal check: every condition as a list of edits (these questions, this direction,
this alpha), and the answers of the edits put back in the run's question order.

Cross-fitted (the default): the directions of cross_fit, each fold's questions steered by the direction
fitted on the other folds, one edit per fold; alpha = alpha_sd * the residual's spread along that fold's
direction. From elsewhere (`direction=`: another run, a file): one edit over every question. The random
directions (random_directions, from the same activations) are added at both signs, with the norm of the
test alpha (the mean over folds), to every question.

Public names:
    Edit(rows, direction, alpha, source)          one re-run: rows (question indices) steered by the unit
                                                  direction with alpha (None: ablated)
    PlannedCondition(name, kind, alpha_sd, alpha, edits)
    Plan(conditions, fold, directions, folds, cross_fitting)
    causal_plan(X, y, alphas_sd=(-4, -2, 2, 4), test_alpha_sd=4.0, n_folds=5, method="mass_mean",
                k_random=20, seed=0, groups=None, direction=None, source="") -> Plan
    merge_answers(condition, answers) -> Answers  the answers of condition.edits (one Answers each, in the
                                                  order of its rows) in the run's question order
    DEFAULT_ALPHAS_SD

Example:
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20); X = rng.normal(size=(40, 8)); X[:, 2] += 2 * y
    >>> plan = causal_plan(X, y, k_random=2, n_folds=4)
    >>> [(c.name, len(c.edits)) for c in plan.conditions][:5]
    [('alpha=-4', 4), ('alpha=-2', 4), ('alpha=+2', 4), ('alpha=+4', 4), ('ablate', 4)]
    >>> [c.name for c in plan.conditions][5:]
    ['random_cov_0+', 'random_cov_0-', 'random_iso_0+', 'random_iso_0-']
    >>> plan.cross_fitting
    '4 folds: each question steered by the direction fitted on the other folds'
"""
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...schema.causal import ConditionKind
from .directions import cross_fit, random_directions, spread, unit
from .effects import Answers
from .result import random_name, steer_name

DEFAULT_ALPHAS_SD = (-4.0, -2.0, 2.0, 4.0)


@dataclass(frozen=True)
class Edit:
    """One re-run: the questions `rows` (indices into the run's questions) steered along the unit `direction`
    with `alpha` (the residual's own units), or with alpha None the direction ablated."""
    rows: np.ndarray
    direction: np.ndarray
    alpha: float | None
    source: str


@dataclass(frozen=True)
class PlannedCondition:
    """A condition and its edits (one per fold when cross-fitted); alpha is the mean over the edits."""
    name: str
    kind: ConditionKind
    alpha_sd: float | None
    alpha: float | None
    edits: list[Edit]


@dataclass(frozen=True)
class Plan:
    """Every condition to run, with the folds: fold[i] is question i's fold (0 everywhere for a direction from
    elsewhere), directions[f] the unit direction fold f is steered by."""
    conditions: list[PlannedCondition]
    fold: np.ndarray
    directions: np.ndarray
    folds: int
    cross_fitting: str


def _grid(alphas_sd: Sequence[float], test_alpha_sd: float) -> list[float]:
    if test_alpha_sd <= 0:
        raise ValueError(f"the test alpha must be positive (its sign flip is the negative one), got {test_alpha_sd}")
    grid = {float(a) for a in alphas_sd if a != 0} | {float(test_alpha_sd), -float(test_alpha_sd)}
    return sorted(grid)


def causal_plan(X: Any, y: Any, alphas_sd: Sequence[float] = DEFAULT_ALPHAS_SD, test_alpha_sd: float = 4.0,
                n_folds: int = 5, method: str = "mass_mean", k_random: int = 20, seed: int = 0,
                groups: Sequence[Any] | None = None, direction: Any = None, source: str = "") -> Plan:
    """The conditions of a causal check on the questions of X (one activation vector per question at the
    layer and position, y = 1 where correct): the alpha grid (the test alpha and its sign flip always in
    it), ablation, and k_random random directions at both signs of the test alpha's norm."""
    X = np.asarray(X, dtype=np.float64)
    n = X.shape[0]
    if direction is None:
        fold, directions = cross_fit(X, y, n_folds, method, seed, groups)
        text = f"{len(directions)} folds: each question steered by the direction fitted on the other folds"
        origin = [f"causal: fold {f} {method}" for f in range(len(directions))]
    else:
        fold, directions = np.zeros(n, dtype=int), unit(direction)[None]
        text = f"direction from {source or 'elsewhere'}: no question's own answer fitted it"
        origin = [source or "direction"]
    rows = [np.flatnonzero(fold == f) for f in range(len(directions))]
    spreads = [spread(X, d) for d in directions]

    def steered(a: float) -> PlannedCondition:
        edits = [Edit(r, d, a * s, o) for r, d, s, o in zip(rows, directions, spreads, origin)]
        return PlannedCondition(steer_name(a), "steer", a, a * float(np.mean(spreads)), edits)

    conditions = [steered(a) for a in _grid(alphas_sd, test_alpha_sd)]
    conditions.append(PlannedCondition("ablate", "ablate", None, None,
                                       [Edit(r, d, None, o) for r, d, o in zip(rows, directions, origin)]))
    norm = test_alpha_sd * float(np.mean(spreads))
    everyone = np.arange(n)
    for name, r in zip(*random_directions(X, k_random, seed)):
        for alpha in (norm, -norm):
            conditions.append(PlannedCondition(random_name(name, alpha), "random", alpha / spread(X, r), alpha,
                                               [Edit(everyone, r, alpha, f"causal: {name}")]))
    return Plan(conditions=conditions, fold=fold, directions=directions, folds=0 if direction is not None else
                len(directions), cross_fitting=text)


def merge_answers(condition: PlannedCondition, answers: Sequence[Answers]) -> Answers:
    """The answers of the condition's edits (answers[k] answers edits[k].rows, in that order) in the run's
    question order."""
    if len(answers) != len(condition.edits):
        raise ValueError(f"{condition.name}: {len(answers)} answer sets for {len(condition.edits)} edits")
    order = np.concatenate([e.rows for e in condition.edits])
    if sorted(order.tolist()) != list(range(len(order))):
        raise ValueError(f"{condition.name}: the edits must cover every question exactly once")
    n = len(order)
    correct, texts = np.zeros(n, dtype=int), [""] * n
    have_lp = all(a.gold_logprob is not None for a in answers)
    logprob = np.zeros(n)
    for edit, part in zip(condition.edits, answers):
        if len(part.texts) != len(edit.rows):
            raise ValueError(f"{condition.name}: {len(part.texts)} answers for {len(edit.rows)} questions")
        correct[edit.rows] = np.asarray(part.correct)
        if have_lp:
            logprob[edit.rows] = np.asarray(part.gold_logprob, dtype=np.float64)
        for i, text in zip(edit.rows, part.texts):
            texts[i] = text
    return Answers(correct=correct, texts=texts, gold_logprob=logprob if have_lp else None)
