"""`analyze_activations.py --causal RUN`: does the probe's direction change the answers?

Public names:
    causal_run(run_dir, layer=None, method="mass_mean", alphas=DEFAULT_ALPHAS, n_random=DEFAULT_RANDOM, folds=5,
               seed=0, limit=None, shuffle=False, out_dir=None, direction=None, positions="all", layers=None,
               progress=False) -> CausalResult
    choose_layer(run_dir, layer=None, layers=None) -> (layer, position, why)
    DEFAULT_ALPHAS       (-1, -0.5, 0.5, 1): steering strengths in spreads of the residual along the direction
    DEFAULT_RANDOM       20 random directions, each run at both signs
    DEFAULT_OUT          "causal": where the condition folders go (<out>/<run>_<layer>_<method>_<key>/<condition>/...;
                         key: 8 hex digits of the grid, K, folds, seed, positions, direction and questions), and
                         the result (causal.json there, which --report shows)

Example:
    >>> choose_layer("results/run1", layer="layer_3")[:2]       # the layer as given, at the probe's position
    ('layer_3', 'answer_first')
    >>> result = causal_run("results/run1", alphas=(-4, 4), n_random=4, folds=2, limit=40)   # doctest: +SKIP
    >>> result.verdict, [c.name for c in result.conditions][:3]                              # doctest: +SKIP
    ('no causal evidence at this layer', ['baseline', 'alpha=-4', 'alpha=+4'])
    (dozens of re-runs: tests/analysis/test_causal_cli.py runs the whole chain on planted models)

The chain: (1) the layer is the probe's verdict layer, else its best layer, read at the probe's
position (probe_run; or --causal_layer); (2) the direction is the mass-mean difference (correct minus
incorrect) or the logistic probe's weights at that layer and position, cross-fitted: each fold's
questions are steered by the direction fitted on the other folds, so no question is steered by a
direction fitted on it (a direction from another run or a file is used as it is); (3) RUN's questions
are answered again with RUN's model, prompts and decoding (causal_runs.py): unsteered (the baseline),
steered at each alpha of the grid (alpha_sd spreads of the residual's projection on the direction,
measured on the fold's training questions), with the direction ablated, and steered by n_random
random directions of the test alpha's norm (half drawn from the residual's covariance, half
isotropic); (4) result.py turns the answers into paired effects against the baseline and the verdict
(verdict.py): "causal" only beyond the random directions' 95th percentile of |effect|, with the
paired interval excluding 0, and reversed by the sign flip.
"""
import json
import os

import numpy as np

from ..analysis.causal.directions import logistic_direction, mass_mean
from ..analysis.causal.effects import Answers
from ..analysis.causal.plan import causal_plan, merge_answers
from ..analysis.causal.result import ConditionRun, causal_result
from ..analysis.causal.saved import RESULT_FILE
from ..analysis.dataset import load_run_layer, resolve_reduce
from ..analysis.jsonio import to_json
from ..capture.intervene import ablate, steer
from ..store.atomic import write_text_atomic
from ..store.directions import load_direction
from ..store.run_folder import is_run_folder
from .causal_runs import Condition, Part, rerun_settings, run_condition

__all__ = ["causal_run", "choose_layer", "DEFAULT_ALPHAS", "DEFAULT_OUT"]

DEFAULT_ALPHAS = (-1.0, -0.5, 0.5, 1.0)   # 1 spread ~ the mass-mean difference's norm (CAA, Marks & Tegmark's scale)
DAMAGE_SHARE = 0.9                        # random directions changing this share of answers (median): a note
DEFAULT_RANDOM = 20            # random directions (each at both signs): a direction no better than them passes the
                               # band with probability <= 1 / (K + 1), within 5% from K = 19
DEFAULT_OUT = "causal"


def choose_layer(run_dir, layer=None, layers=None):
    """(layer, position, why): the probe's verdict layer, else its best layer, at the probe's position;
    or `layer` as given at the position the probe would read (resolve_reduce "auto")."""
    if layer is not None:
        position, note = resolve_reduce(run_dir, "auto")
        return layer, position, f"--causal_layer {layer}; position {note}"
    from ..analysis.probe import probe_run
    probe = probe_run(run_dir, layers=layers)
    if probe.verdict in probe.layers:
        return probe.verdict, probe.reduce, f"the probe's verdict layer, at {probe.reduce}"
    return probe.best_layer, probe.reduce, (f"the probe's best layer (its verdict: {probe.verdict}), "
                                            f"at {probe.reduce}")


def causal_run(run_dir, layer=None, method="mass_mean", alphas=DEFAULT_ALPHAS, n_random=DEFAULT_RANDOM, folds=5,
               seed=0, limit=None, shuffle=False, out_dir=None, direction=None, positions="all", layers=None,
               progress=False):
    """The causal check of RUN (see the module docstring). `direction`: None (cross-fitted from RUN),
    a run folder (fitted there with `method`), or a direction file (store/directions.py)."""
    run_dir = os.fspath(run_dir).rstrip("/") or "/"
    alphas = _checked_alphas(alphas)
    settings = rerun_settings(run_dir)                      # refuses folders it cannot answer again first
    layer, position, why = choose_layer(run_dir, layer, layers)
    X, rows = load_run_layer(run_dir, layer, reduce=position)
    X, rows, notes = _graded(X, rows, limit, shuffle, seed)
    y = np.array([bool(r["correct"]) for r in rows], dtype=int)
    ids = [str(r["id"]) for r in rows]
    name = os.path.basename(run_dir)
    vector, source = _outside_direction(direction, method, layer, position, X.shape[1], seed)
    plan = causal_plan(X, y, alphas, max(alphas), folds, method, n_random, seed, direction=vector,
                       source=source or f"{name}: {method} at {layer}, {position}")
    key = _plan_key(alphas, n_random, folds, seed, positions, source, [r["id"] for r in rows])
    out = os.path.join(out_dir or DEFAULT_OUT, f"{name}_{layer}_{method}_{key}")
    baseline = run_condition(Condition("baseline", (Part(tuple(ids), (), os.path.join(out, "baseline")),)),
                             settings, progress)
    answered = {}
    for planned in plan.conditions:
        parts = _parts(planned, ids, layer, positions, os.path.join(out, planned.name))
        answered[planned.name] = (parts, run_condition(Condition(planned.name, parts), settings, progress))
    kept = [i for i in range(len(ids)) if _graded_everywhere(ids[i], [baseline] + [a for _, a in answered.values()])]
    if len(kept) < len(ids):
        notes.append(f"{len(ids) - len(kept)} question(s) left out: not graded under every condition "
                     f"(an error row, e.g. a prompt too long)")
    runs = [ConditionRun(c.name, c.kind, c.alpha_sd, c.alpha,
                         _subset(merge_answers(c, [_answers(answered[c.name][1], p.ids) for p in answered[c.name][0]]),
                                 kept), os.path.join(out, c.name))
            for c in plan.conditions]
    notes += _damage_notes(runs, _answers(baseline, [ids[i] for i in kept]))
    same = sum(baseline[ids[i]].get("response") == rows[i].get("response") for i in kept)
    notes.append(f"the baseline re-run reproduced {same} of RUN's {len(kept)} answers word for word "
                 f"(float rounding can differ between batch layouts and machines)")
    result = causal_result(run=run_dir, layer=layer, position=str(position), direction_method=method,
                           direction_source=source or f"{name}: {method} at {layer}, {position} (cross-fitted)",
                           cross_fitting=plan.cross_fitting, folds=plan.folds, test_alpha_sd=max(alphas),
                           baseline=_answers(baseline, [ids[i] for i in kept]), conditions=runs, seed=seed,
                           baseline_dir=os.path.join(out, "baseline"), notes=[f"layer: {why}"] + notes)
    # for --report and the audit: beside the condition folders, not in a run folder (those are the run writer's)
    write_text_atomic(os.path.join(out, RESULT_FILE), json.dumps(to_json(result), indent=2) + "\n")
    return result


def _plan_key(alphas, n_random, folds, seed, positions, source, ids):
    """8 hex digits naming what the condition folders depend on besides run, layer and method: another grid,
    K, fold count, seed, positions, direction or question subset gets folders of its own (a resumed folder
    must hold the same interventions: run/resume.py refuses otherwise)."""
    import hashlib
    text = json.dumps([list(alphas), n_random, folds, seed, positions, source, list(ids)])
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _damage_notes(runs, baseline):
    """A note when the random directions change nearly every answer: the test alpha then breaks the model
    along any direction, and the check measures damage more than a direction's use."""
    randoms = [r for r in runs if r.kind == "random"]
    if not randoms:
        return []
    shares = [float(np.mean([a != b for a, b in zip(r.answers.texts, baseline.texts)])) for r in randoms]
    accuracy = [float(np.mean(r.answers.correct)) for r in randoms]
    if np.median(shares) < DAMAGE_SHARE:
        return []
    return [f"random directions of the test alpha's norm change {np.median(shares):.0%} of the answers (median; "
            f"accuracy {np.median(accuracy):.1%} against the baseline's {np.mean(baseline.correct):.1%}): at this "
            f"norm any direction breaks the model, and the check measures damage more than use; try smaller "
            f"--causal_alphas"]


def _checked_alphas(alphas):
    values = sorted({float(a) for a in alphas})
    if not values or max(values) <= 0 or any(not np.isfinite(a) or a == 0 for a in values):
        raise ValueError(f"--causal_alphas must be non-zero finite numbers with at least one positive (the test "
                         f"alpha, whose sign flip is its negative), got {list(alphas)}")
    return values


def _graded(X, rows, limit, shuffle, seed):
    """The graded questions (correct True/False), then --limit N of them (the first, or --shuffle: a seeded draw)."""
    keep = [i for i, r in enumerate(rows) if isinstance(r.get("correct"), bool)]
    notes = []
    if len(keep) < len(rows):
        notes.append(f"{len(rows) - len(keep)} question(s) without a grade left out")
    if limit is not None and limit < len(keep):
        keep = sorted(np.random.default_rng(seed).choice(keep, limit, replace=False)) if shuffle else keep[:limit]
        notes.append(f"{limit} questions ({'a seeded random subset' if shuffle else 'the first ones'}, --limit)")
    return X[keep], [rows[i] for i in keep], notes


def _outside_direction(direction, method, layer, position, hidden, seed):
    """(vector, source) of a direction from another run (fitted there with `method`) or a file; (None, "")
    without one (then cross-fitted on RUN's questions)."""
    if direction is None:
        return None, ""
    if is_run_folder(direction):
        Xo, rows = load_run_layer(direction, layer, reduce=position)
        graded = [i for i, r in enumerate(rows) if isinstance(r.get("correct"), bool)]
        yo = np.array([bool(rows[i]["correct"]) for i in graded], dtype=int)
        vector = mass_mean(Xo[graded], yo) if method == "mass_mean" else logistic_direction(Xo[graded], yo, seed)
        source = f"run {direction}: {method} at {layer}, {position}"
    else:
        vector, _ = load_direction(direction)
        source = f"file {direction}"
    vector = np.asarray(vector, dtype=np.float64)
    if vector.shape != (hidden,):
        raise ValueError(f"the direction from {direction} has {vector.size} numbers; {layer} of RUN has {hidden}")
    return vector, source


def _parts(planned, ids, layer, positions, folder):
    """One run-folder part per edit: its questions under steer (alpha) or ablate (alpha None)."""
    parts = []
    for k, edit in enumerate(planned.edits):
        where = os.path.join(folder, f"fold_{k}") if len(planned.edits) > 1 else folder
        made = (steer(edit.direction, layer, edit.alpha, positions, edit.source) if edit.alpha is not None
                else ablate(edit.direction, layer, positions, edit.source))
        parts.append(Part(tuple(ids[i] for i in edit.rows), (made,), where))
    return parts


def _graded_everywhere(qid, conditions):
    return all(isinstance(c.get(qid, {}).get("correct"), bool) for c in conditions)


def _subset(answers, kept):
    return Answers(correct=np.asarray(answers.correct)[kept], texts=[answers.texts[i] for i in kept],
                   gold_logprob=None if answers.gold_logprob is None else np.asarray(answers.gold_logprob)[kept])


def _answers(by_id, ids):
    """One Answers of the rows of `ids` (graded or not: a missing grade counts 0, such questions are left
    out afterwards by _graded_everywhere)."""
    rows = [by_id.get(i, {}) for i in ids]
    gold = [r.get("gold_logprob_mean") for r in rows]
    return Answers(correct=np.array([r.get("correct") is True for r in rows], dtype=int),
                   texts=[str(r.get("response", "")) for r in rows],
                   gold_logprob=None if any(g is None for g in gold) else np.array(gold, dtype=float))
