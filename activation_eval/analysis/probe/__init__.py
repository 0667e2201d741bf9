"""Linear probes with controls: from which layer on do activations predict a field of the results
(by default whether the answer was correct) better than the question's category, length, words and
the model's own confidence in its answer?

Per layer, a probe (models.py: standardized logistic regression by default, or mass-mean) on one
vector per question gives out-of-fold class probabilities under cross-validation: StratifiedKFold on
the joint key target x category (folds keep the category proportions), StratifiedGroupKFold on the
question when a run has several samples per question (a question's samples never straddle a split),
or with groups="category" GroupKFold (whole categories held out). The vector is taken at the exact
answer by default (reduce="auto": the first token of the extracted answer when generated positions
were captured, else the last prompt token; `position` says which), following Orgad et al. 2024.

The controls of controls.py: input side (majority, category, length, bag_of_words, fitted on the
same folds; at the answer also answer_embedding, the embedding layer at the same position, and
answer_tokens, the extracted answer's words: the answer's own token identity) and output side (every
single confidence score the rows carry, scored raw as the field does: the AUROC of the score itself,
oriented by schema.SCORE_ORIENTATION, never fitted, for the target "correct"; and all of them together,
fitted). A control that reads the target itself (--target category: the category control) is dropped,
with a note. AUROC (primary; binary, or one-vs-rest macro for more than two classes) and accuracy of
the out-of-fold predictions come with 95% percentile bootstrap intervals over questions (a question's
samples drawn together). AUROC compares only pairs of questions held out by the same fold
(cv.oof_scoring "pairs within folds"): pooled over folds, each fold model's own offset would rank
folds against each other (a constant feature would not score 0.5).

Selectivity of a layer = its AUROC - the best control's AUROC, over both sides. Its interval is a
paired bootstrap (probe and controls on the same resampled questions; the best control is the
maximum over the controls within each resample, so choosing the best control is part of the
uncertainty), Bonferroni-adjusted over the L layers tested: the percentile interval
[alpha/(2L), 1 - alpha/(2L)], alpha = 0.05, so all L intervals hold together with probability >= 95%
(`bootstrap.adjusted_level`, e.g. 99.84% for 31 layers). The verdict names the first layer (in
record order) whose adjusted interval lies above 0, else NO_EVIDENCE; `best_control` says which
control it had to beat (in words: "no evidence beyond the answer-token control" when that is it).
With every layer pure noise it names a layer at most ~alpha/2 of the time.
The intervals count the uncertainty of the test questions, not of refitting the probes.

Beside the verdict (tables at 95%, 2000 resamples): the gain of each layer over answer_embedding,
Hewitt & Liang's (2019) control task (a fixed random label per input type: hl_selectivity = AUROC -
control-task AUROC), the permutation test (labels shuffled within category), both probe families,
the AUROC under other CV seeds, operating points of the best layer and of every control (AUPRC,
TPR at 1% FPR, FPR at 95% TPR, Brier score, calibration error; operating_points.py),
the layer x position AUROC table (last prompt token, first / mean / last answer token) when
generated positions were captured, and the transfer matrix across groups (transfer.py).

Modules:
    run               probe_run(run_dir, ...), probe_features(features, rows, ...) -> ProbeResult (schema/probe.py)
    build             the one builder of a ProbeResult from a sweep
    sweep             labels, folds and controls fixed once (Setup); per-layer out-of-fold probabilities (Sweep)
    scores            evaluate_scores(y, layer_proba, control_proba, n_boot, seed, ...) -> ProbeScores; the
                      bootstrap, selectivity and verdict; default_resamples, NO_EVIDENCE, ALPHA
    verdict           the verdict in words: the one rendering text, report and plot title use
    text, html, plots the command line's output, the report's section, the probe's plots
    controls, folds, models, bootstrap, operating_points, transfer
                      control classifiers, cross-validation folds, probe families (logistic, mass-mean,
                      SAPLMA's MLP), the weighted bootstrap, detector operating points, the transfer matrix
    selective, error_detection, selective_report
                      PRR, AURC, risk-coverage and selective accuracy; both orientations (incorrect first)
                      -> ErrorDetection; their text, report section and risk-coverage plot
    overlap           train and test kept apart: questions shared by id or prompt hash left out
                      (--keep_overlap: kept, in-sample), controls on the fields both runs carry

The package's front holds the names a script needs: probe_run, probe_features, evaluate_scores,
default_resamples, NO_EVIDENCE, ALPHA. The --json output of `analyze_activations.py --probe` is the
ProbeResult (docs/formats.md lists every field).

Example:
    >>> from activation_eval.analysis.probe import probe_run
    >>> res = probe_run("results/mc")         # 12 questions of a random model: no evidence
    >>> res.n, res.class_counts, res.layers_tested        # which ones it got right: the weights' luck
    (12, {'False': ..., 'True': ...}, 31)
    >>> res.cv.folds == min(5, *res.class_counts.values())       # n_splits, at most the smaller class
    True
    >>> layer = res.layers["layer_12"]; lo, hi = layer.auroc_ci
    >>> 0 <= lo <= hi <= 1 and 0 <= layer.auroc <= 1
    True
    >>> res.verdict
    'no evidence beyond the controls'
"""
from typing import Any

__all__ = ["probe_run", "probe_features", "evaluate_scores", "default_resamples", "NO_EVIDENCE", "ALPHA"]


def __getattr__(name: str) -> Any:
    """The front's names, imported when first used: a worker process that fits layers (parallel.py) imports
    only the fitting modules, not the run readers (and torch behind them)."""
    if name in ("probe_run", "probe_features"):
        from . import run
        return getattr(run, name)
    if name in __all__:
        from . import scores
        return getattr(scores, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
