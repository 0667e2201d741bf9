"""The probe result: from which layer on do activations predict a results field (by default whether
the answer was correct) better than every control?

analysis/probe/ builds it (probe_run, probe_features); the --json output of
`analyze_activations.py --probe` is this result, its fields as keys, plus "format_version" (and
"plots", the files the command wrote). Every AUROC is a float in [0, 1]; intervals are [low, high].

Public names:
    ProbeResult         the whole result
    ProbeScores         layers and controls scored on one set of questions, and the verdict
                        (analysis.probe.evaluate_scores; the part a ProbeResult and a TestRunResult share)
    LayerScore          one layer's probe: AUROC, accuracy, selectivity over the best control
    ControlScore        one control: AUROC and accuracy, input or output side
    CvSetup, BootstrapSetup, Clusters   how the figures were computed
    AurocEstimate       an AUROC with its interval (probe families)
    SeedSpread          the AUROC under other cross-validation seeds
    OperatingPoints, OperatingPointRow, Metric   the detector's figures (binary targets)
    PositionTable       AUROC by layer x token position
    TestRunResult       trained on the run, scored on another run's questions (--test_run)
    ErrorDetection, SelectiveRow   error detection as the field scores it: operating points with
                        "incorrect" and with "correct" as the positive class, PRR, AURC, the
                        risk-coverage curve and selective accuracy (binary targets)
    Side                "input" | "output"
    ControlScoring      "raw" | "fitted"
    OOF_PAIRS_WITHIN_FOLDS   the cv.oof_scoring value
    upgrade_probe_json(data) -> data     a saved --json probe result of format 1 in today's keys, its transfer
                                         result (of its own format) too (read it then with
                                         analysis.jsonio.from_json(ProbeResult, ...))
    FORMAT_VERSION, CONTRACTS

Example:
    >>> c = ControlScore(auroc=0.61, auroc_ci=(0.55, 0.67), accuracy=0.6, accuracy_ci=(0.54, 0.66), side="input",
    ...                  scoring="fitted", orientation=None)
    >>> c.side, c.auroc_ci[0]
    ('input', 0.55)
"""
from dataclasses import dataclass
from typing import Annotated, ClassVar, Literal, TypeAlias

from .estimates import Interval
from .transfer import Overlap, TransferResult, upgrade_transfer_json

FORMAT_VERSION = 2       # 2 (issue 27): raw single scores, pairs within folds, answer-token controls,
                         # permutation test vs Hewitt & Liang's control task, error_detection,
                         # test_run.overlap and test_run.notes

Side: TypeAlias = Literal["input", "output"]
ControlScoring: TypeAlias = Literal["raw", "fitted"]
OOF_PAIRS_WITHIN_FOLDS = "pairs within folds"


@dataclass(frozen=True, kw_only=True)
class LayerScore:
    """One layer's probe, scored on the pooled out-of-fold predictions (test run: on its questions)."""
    auroc: Annotated[float, "AUROC (binary, or one-vs-rest macro for more than two classes)"]
    auroc_ci: Annotated[Interval, "its percentile bootstrap interval over questions (bootstrap.level)"]
    accuracy: Annotated[float, "accuracy of the predicted classes"]
    accuracy_ci: Annotated[Interval, "its interval (bootstrap.level)"]
    selectivity: Annotated[float, "AUROC - the best control's AUROC"]
    selectivity_ci: Annotated[Interval, "its paired interval at bootstrap.adjusted_level (Bonferroni over the layers): "
                                        "the verdict's"]
    selectivity_ci_unadjusted: Annotated[Interval, "the same at bootstrap.level, unadjusted"]
    # issue 27 (verdict): the permutation test (today's shuffle, renamed), Hewitt & Liang's control task as defined,
    # and the gain over the answer's own embedding
    permutation_auroc: Annotated[float | None, "permutation test: the probe on labels shuffled within category "
                                               "(called the control task before format 2); None for a test run"]
    permutation_auroc_ci: Annotated[Interval | None, "its interval (level 0.95)"]
    permutation_selectivity: Annotated[float | None, "AUROC - permutation_auroc (no interval)"]
    hl_control_auroc: Annotated[float | None, "Hewitt & Liang's control task: the probe on a fixed random label per "
                                              "input type (category x normalised extracted answer); None: not run"]
    hl_control_auroc_ci: Annotated[Interval | None, "its interval (level 0.95)"]
    hl_selectivity: Annotated[float | None, "AUROC - hl_control_auroc (no interval; before format 2: AUROC - "
                                            "the shuffle's AUROC)"]
    embedding_gain: Annotated[float | None, "AUROC - the answer_embedding control's AUROC (the embedding layer at "
                                            "the same position); None without that control"]
    embedding_gain_ci: Annotated[Interval | None, "its paired interval (bootstrap.level, unadjusted)"]


@dataclass(frozen=True, kw_only=True)
class ControlScore:
    """One control classifier: what the probe must beat before a layer is said to know."""
    auroc: Annotated[float, "AUROC: of the raw score (scoring raw), or of the out-of-fold predictions as "
                            "cv.oof_scoring says (majority: exactly 0.5)"]
    auroc_ci: Annotated[Interval, "its interval (bootstrap.level)"]
    accuracy: Annotated[float | None, "accuracy of its predicted classes (None: a raw score has no threshold)"]
    accuracy_ci: Annotated[Interval, "its interval (bootstrap.level)"]
    side: Annotated[Side, "input: reads the question (category, length, words) or the answer's own tokens; output: "
                          "the model's own confidence in its answer"]
    scoring: Annotated[ControlScoring, "raw: the score itself, oriented by definition, never fitted; fitted: a "
                                       "classifier's out-of-fold predictions"]
    orientation: Annotated[int | None, "raw scores: +1 higher = more likely correct, -1 less likely (schema "
                                       "SCORE_ORIENTATION); None when fitted"]


@dataclass(frozen=True, kw_only=True)
class CvSetup:
    """The cross-validation that gave the out-of-fold predictions."""
    method: Annotated[str, "the fold maker, e.g. StratifiedKFold on target x category"]
    folds: Annotated[int, "folds (at most the smaller class's size)"]
    seed: Annotated[int, "seed of the fold shuffling"]
    groups: Annotated[str | None, "--probe_groups: the results field whose values are held out whole"]
    strata: Annotated[str | None, "--probe_strata: the results field (e.g. the task) within whose values folds are "
                                  "stratified and every AUROC compares pairs; None: pooled"]
    auroc_pairs: Annotated[str, "which (positive, negative) pairs AUROC compares: pooled, or within each fold"]
    oof_scoring: Annotated[str, "how out-of-fold scores become an AUROC (layers and fitted controls, every CV seed): "
                                "\"pairs within folds\" (a pair is compared only when one fold held out both, "
                                "so no fold's offset ranks folds against each other)"]
    seeds: Annotated[list[int], "the CV seeds of the seed table (the first is `seed`)"]


@dataclass(frozen=True, kw_only=True)
class BootstrapSetup:
    """How the intervals were computed."""
    resamples: Annotated[int, "bootstrap resamples of the main tables"]
    seed: Annotated[int, "seed of the resampling"]
    level: Annotated[float, "level of the plain intervals (0.95)"]
    unit: Annotated[str, "what is resampled: questions (a question's samples together)"]
    adjustment: Annotated[str, "the multiple-comparison adjustment of selectivity_ci"]
    adjusted_level: Annotated[float, "level of selectivity_ci: 1 - alpha / layers"]
    best_control: Annotated[str, "how the best control enters a resample (the maximum within each, paired)"]


@dataclass(frozen=True, kw_only=True)
class Clusters:
    """Several rows per question (--num_samples > 1): folds and resampling keep a question's rows together."""
    by: Annotated[str, "the results field that names the question (id)"]
    n_clusters: Annotated[int, "questions"]
    rows: Annotated[int, "rows (samples)"]


@dataclass(frozen=True, kw_only=True)
class AurocEstimate:
    """An AUROC with its interval (level 0.95)."""
    auroc: Annotated[float, "AUROC"]
    auroc_ci: Annotated[Interval, "its percentile bootstrap interval"]


@dataclass(frozen=True, kw_only=True)
class SeedSpread:
    """The probe's AUROC under other cross-validation splits: how much the fold split moves it."""
    seeds: Annotated[list[int], "the CV seeds"]
    auroc: Annotated[dict[str, list[float]], "per layer, the AUROC under each seed"]
    range: Annotated[dict[str, tuple[float, float]], "per layer, [min, max] over the seeds"]


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One operating-point figure with its interval."""
    value: Annotated[float | None, "the figure on all questions (None: undefined, e.g. a class is missing)"]
    ci: Annotated[Interval, "its bootstrap interval (OperatingPoints.level)"]
    interval: Annotated[Literal["percentile", "basic"], "percentile, or basic for the upward-biased ECE"]


@dataclass(frozen=True, kw_only=True)
class OperatingPointRow:
    """The out-of-fold probabilities of one scorer (the best layer, or a control) read as a detector."""
    auprc: Annotated[Metric, "average precision (chance: the prevalence of the positive class)"]
    tpr_at_1pct_fpr: Annotated[Metric, "highest true-positive rate at a false-positive rate <= 1%"]
    fpr_at_95pct_tpr: Annotated[Metric, "lowest false-positive rate at a true-positive rate >= 95%"]
    brier: Annotated[Metric, "Brier score (lower is better)"]
    ece: Annotated[Metric, "expected calibration error, 10 bins (lower is better)"]


@dataclass(frozen=True, kw_only=True)
class OperatingPoints:
    """Operating points of the best layer and of every control but majority (binary targets)."""
    level: Annotated[float, "the intervals' level"]
    prevalence: Annotated[float, "share of the positive class"]
    positive: Annotated[str, "the positive class (the second of `classes`)"]
    rows: Annotated[dict[str, OperatingPointRow], "by scorer: the best layer's name, or control:<name>"]


@dataclass(frozen=True, kw_only=True)
class PositionTable:
    """The probe at every layer and token position (runs that captured generated positions)."""
    positions: Annotated[list[str], "the positions (reductions): last_prompt, answer_first, answer_mean, answer_last"]
    n: Annotated[int, "questions that have every position"]
    level: Annotated[float, "the intervals' level"]
    auroc: Annotated[dict[str, dict[str, float]], "[layer][position] AUROC"]
    auroc_ci: Annotated[dict[str, dict[str, Interval]], "[layer][position] its interval"]


@dataclass(frozen=True, kw_only=True)
class ProbeScores:
    """Every layer's probe and every control scored on the same questions, and the verdict they give."""
    best_control: Annotated[str, "the control with the highest AUROC (either side): the verdict's baseline"]
    best_input_control: Annotated[str | None, "the best input-side control (None: none)"]
    best_output_control: Annotated[str | None, "the best output-side control (None: none)"]
    best_layer: Annotated[str, "the layer with the highest AUROC"]
    verdict: Annotated[str, "the first layer whose adjusted selectivity interval is above 0, else NO_EVIDENCE"]
    controls: Annotated[dict[str, ControlScore], "every control"]
    layers: Annotated[dict[str, LayerScore], "every layer"]


@dataclass(frozen=True, kw_only=True)
class TestRunResult:
    """--test_run: probes and controls trained on all of the run, scored on the test run's questions."""
    __test__: ClassVar[bool] = False        # not a pytest test class
    run_dir: Annotated[str | None, "the test run folder"]
    run_name: Annotated[str | None, "its folder name"]
    n: Annotated[int, "its questions (rows)"]
    class_counts: Annotated[dict[str, int], "its rows per class"]
    best_control: Annotated[str, "the control with the highest AUROC there"]
    best_input_control: Annotated[str | None, "the best input-side control (None: none)"]
    best_output_control: Annotated[str | None, "the best output-side control (None: none)"]
    best_layer: Annotated[str, "the layer with the highest AUROC there"]
    verdict: Annotated[str, "the first layer whose adjusted selectivity interval is above 0, else NO_EVIDENCE"]
    controls: Annotated[dict[str, ControlScore], "every control, scored there"]
    layers: Annotated[dict[str, LayerScore], "every layer, scored there (no control task)"]
    overlap: Annotated[Overlap, "the test run's questions shared with the training run (by id or prompt hash): "
                                "left out, or kept and labelled in-sample (--keep_overlap)"]
    notes: Annotated[list[str], "what differs between the runs: controls left out because only one run carries "
                                "their field"]


# ----------------------------------------------------------------------------- error detection (issue 27, item 6)

@dataclass(frozen=True, kw_only=True)
class SelectiveRow:
    """One scorer's probability that the answer is correct, used to answer selectively: keep the most
    confident questions, abstain on the rest (analysis/probe/selective.py has the definitions)."""
    prr: Annotated[Metric, "prediction rejection ratio: (random AURC - AURC) / (random AURC - oracle AURC); "
                           "1 oracle, 0 random"]
    aurc: Annotated[Metric, "area under the risk-coverage curve: the mean selective risk over coverages k/n "
                            "(lower is better; random: error_rate)"]
    selective_accuracy_80: Annotated[Metric, "accuracy on the most confident 80% of the questions"]
    selective_accuracy_90: Annotated[Metric, "accuracy on the most confident 90%"]
    risk: Annotated[list[float | None], "the risk-coverage curve: expected share of incorrect answers among the "
                                        "most confident, at each of ErrorDetection.coverage"]


@dataclass(frozen=True, kw_only=True)
class ErrorDetection:
    """The best layer and every control (but majority) read as detectors of wrong answers
    (hallucination detection) and as confidence for selective answering (binary targets)."""
    level: Annotated[float, "the intervals' level"]
    n: Annotated[int, "rows scored"]
    scores: Annotated[str, "what each scorer's confidence is (the out-of-fold probability of the second class)"]
    negative_class: Annotated[str, "the class read as an error (\"False\" for correct): its share is the error rate"]
    error_rate: Annotated[float, "share of that class: the AURC of a random order"]
    oracle_aurc: Annotated[float, "the AURC of the oracle order (every correct answer first)"]
    orientations: Annotated[dict[str, OperatingPoints], "operating points with each class as the positive one: "
                                                        "\"incorrect\" first (error detection), then \"correct\""]
    coverage: Annotated[list[float], "the coverages of the risk-coverage curves (0.05 ... 1.0)"]
    selective: Annotated[dict[str, SelectiveRow], "by scorer: the best layer's name, or control:<name>"]
    notes: Annotated[list[str], "read before the figures: too few errors, one class only"]


@dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """The probe of one run: per layer, a linear probe's out-of-fold AUROC against controls computed the
    same way, a verdict, and the side tables (families, seeds, operating points, positions, transfer)."""
    format_version: ClassVar[int] = FORMAT_VERSION
    run_dir: Annotated[str | None, "the run folder (None: probe_features on in-memory data)"]
    run_name: Annotated[str | None, "its folder name"]
    target: Annotated[str, "the results field predicted (default correct)"]
    classes: Annotated[list[str], "the target's classes, as strings, in label order"]
    class_counts: Annotated[dict[str, int], "rows per class"]
    n: Annotated[int, "rows probed"]
    reduce: Annotated[str | int | None, "the reduction that made one vector per question (auto made concrete; "
                                        "an int: a token index; None: in-memory data)"]
    position: Annotated[str | int | None, "the same: the token position read"]
    position_note: Annotated[str | None, "why that position (auto: what the run captured)"]
    family: Annotated[Literal["logistic", "mass_mean", "mlp"], "the probe family of the main sweep (mlp: SAPLMA's)"]
    auroc_kind: Annotated[Literal["binary", "one-vs-rest macro"], "how AUROC is computed for the classes"]
    layers_tested: Annotated[int, "layers probed (the Bonferroni count)"]
    cv: Annotated[CvSetup, "the cross-validation"]
    bootstrap: Annotated[BootstrapSetup, "the intervals"]
    clusters: Annotated[Clusters | None, "several rows per question: how they were grouped (None: one each)"]
    warnings: Annotated[list[str], "read before the verdict: few questions, a rare class, samples per question"]
    notes: Annotated[list[str], "what was done differently and why (controls left out, folds reduced)"]
    dropped_controls: Annotated[dict[str, str], "controls left out because they read the target itself: why"]
    answer_controls: Annotated[list[str], "the answer-token controls present (answer_embedding, answer_tokens): "
                                          "a probe at the answer must beat its own token identity"]
    raw_controls: Annotated[list[str], "the single scores scored raw (binary target 'correct'); other targets fit "
                                       "them (notes say so)"]
    best_control: Annotated[str, "the control with the highest AUROC (either side): the verdict's baseline"]
    best_input_control: Annotated[str | None, "the best input-side control (None: none)"]
    best_output_control: Annotated[str | None, "the best output-side control (None: the rows carry no confidence)"]
    best_layer: Annotated[str, "the layer with the highest probe AUROC"]
    verdict: Annotated[str, "the first layer (record order) whose adjusted selectivity interval lies above 0, else "
                            "\"no evidence beyond the controls\""]
    controls: Annotated[dict[str, ControlScore], "every control, input side then output side"]
    layers: Annotated[dict[str, LayerScore], "every layer probed, in record order"]
    families: Annotated[dict[str, dict[str, AurocEstimate]], "[family][layer]: both probe families (binary targets; "
                                                             "else the main one)"]
    seeds: Annotated[SeedSpread, "the AUROC under the other CV seeds"]
    operating_points: Annotated[OperatingPoints | None, "binary targets: the detector's figures (else None)"]
    error_detection: Annotated[ErrorDetection | None, "binary targets: both orientations, PRR, AURC, risk-coverage, "
                                                      "selective accuracy (else None)"]
    positions: Annotated[PositionTable | None, "AUROC by layer x position (None: the run kept no generated positions, "
                                               "or a test run)"]
    transfer: Annotated[TransferResult | None, "--transfer FIELD or --test_run: the best layer's transfer matrix"]
    test_run: Annotated[TestRunResult | None, "--test_run: the probes scored on that run's questions"]


CONTRACTS = (ProbeResult, ProbeScores, LayerScore, ControlScore, CvSetup, BootstrapSetup, Clusters, AurocEstimate, SeedSpread,
             OperatingPoints, OperatingPointRow, Metric, PositionTable, TestRunResult, ErrorDetection, SelectiveRow)


# format 1 -> 2 (issue 27): the shuffle within category was called the control task; it is the permutation test
_V1_LAYER_KEYS = {"control_task_auroc": "permutation_auroc", "control_task_auroc_ci": "permutation_auroc_ci",
                  "hl_selectivity": "permutation_selectivity"}
_V2_LAYER_NONE = ("hl_control_auroc", "hl_control_auroc_ci", "hl_selectivity", "embedding_gain", "embedding_gain_ci")


def upgrade_probe_json(data: dict) -> dict:
    """A probe result's JSON of any format in today's keys (a new dict; format 2 and later unchanged but for
    their transfer result, which carries its own format: schema.transfer.upgrade_transfer_json).
    Format 1 had no raw scores (every control fitted), pooled out-of-fold AUROC without groups, and named
    the permutation test the control task; the figures are kept, the new fields say so (None: not computed).

    >>> old = {"format_version": 1, "cv": {"auroc_pairs": "all out-of-fold predictions pooled"}, "test_run": None,
    ...        "layers": {"layer_0": {"control_task_auroc": 0.5, "control_task_auroc_ci": [0.4, 0.6], "hl_selectivity": 0.1}},
    ...        "controls": {"length": {"auroc": 0.55}}}
    >>> new = upgrade_probe_json(old)
    >>> new["layers"]["layer_0"]["permutation_auroc"], new["layers"]["layer_0"]["hl_selectivity"], new["cv"]["oof_scoring"]
    (0.5, None, 'all out-of-fold predictions pooled')
    >>> new["controls"]["length"]["scoring"], new["format_version"]
    ('fitted', 2)
    """
    if not isinstance(data, dict) or not isinstance(data.get("format_version"), int):
        return data
    transfer = upgrade_transfer_json(data.get("transfer"))          # it carries its own format version
    if transfer is not data.get("transfer"):
        data = dict(data, transfer=transfer)
    if data["format_version"] >= 2:
        return data
    out = dict(data, format_version=2, answer_controls=[], raw_controls=[], error_detection=None)
    if isinstance(out.get("test_run"), dict):
        out["test_run"] = dict(out["test_run"], overlap=None, notes=[])
    cv = dict(out.get("cv") or {})
    cv.setdefault("oof_scoring", cv.get("auroc_pairs", "all out-of-fold predictions pooled"))
    cv.setdefault("strata", None)
    out["cv"] = cv
    for part in (out, out.get("test_run")):
        if isinstance(part, dict):
            _upgrade_scores(part)
    return out


def _upgrade_scores(part: dict) -> None:
    """Format 1 -> 2 of the layers and controls of a ProbeResult or TestRunResult (in place)."""
    layers = {}
    for name, layer in (part.get("layers") or {}).items():
        new = {_V1_LAYER_KEYS.get(k, k): v for k, v in layer.items()}
        layers[name] = dict(new, **{k: None for k in _V2_LAYER_NONE})
    part["layers"] = layers
    part["controls"] = {name: dict(c, scoring="fitted", orientation=None)
                        for name, c in (part.get("controls") or {}).items()}
