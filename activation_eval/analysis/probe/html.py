"""The report's probe section, from a ProbeResult.

Warnings first (read before the verdict), the verdict (verdict.py) with the best layer and the best
control of each side, what was done, the probe plot, the per-layer table (each interval headed by its
real level), the controls, and the side tables the result has: operating points, error detection
(selective_report.py: both orientations, PRR, AURC, with the risk-coverage plot), probe families and
CV seeds, positions (with their heatmap), transfer (with its heatmap), notes.

Public names:
    probe_html(result) -> str

Example:
    >>> from activation_eval.analysis.probe import probe_run
    >>> page = probe_html(probe_run("results/mc", layers=["layer_5", "layer_6"]))
    >>> page[:48], page.count("<img")
    ('<h2>Probe: does a layer predict a correct answer', 2)
"""
from ...schema.probe import ControlScore, OperatingPointRow, OperatingPoints, PositionTable, ProbeResult
from ...schema.transfer import TransferResult
from ..html import esc, figure_or_note, num, table
from ..text import level_label
from .plots import plot_position_auroc, plot_probe, plot_transfer
from .selective_report import error_detection_html
from .verdict import verdict

WARN_STYLE = "background:#fff3cd;border-left:5px solid #c0392b;padding:.4em .8em;margin:.6em 0"
OPERATING_POINTS = (("auprc", "AUPRC"), ("tpr_at_1pct_fpr", "TPR at 1% FPR"), ("fpr_at_95pct_tpr", "FPR at 95% TPR"),
                    ("brier", "Brier (lower is better)"), ("ece", "ECE (lower is better)"))


def probe_html(result: ProbeResult) -> str:
    """The probe section of the report."""
    question = "a correct answer" if result.target == "correct" else f"{result.target!r}"
    parts = [f"<h2>Probe: does a layer predict {esc(question)}?</h2>", _warnings(result), _verdict(result),
             _setup(result), figure_or_note("The probe plot", plot_probe, result, positions=False),
             "<h3>Per layer</h3>" + _layers(result), _controls(result)]
    if result.operating_points is not None and result.operating_points.rows:
        parts.append(_operating_points(result, result.operating_points))
    parts.append(error_detection_html(result))
    parts.append(_families_and_seeds(result))
    if result.positions is not None and result.positions.auroc:
        parts.append(_positions(result, result.positions))
    if result.transfer is not None and result.transfer.groups:
        parts.append(_transfer(result, result.transfer))
    if result.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(n)}</li>" for n in result.notes) + "</ul>")
    return "".join(parts)


def _adjusted(result: ProbeResult) -> str:
    """The label of the selectivity's adjusted interval, at its real level."""
    return f"{level_label(result.bootstrap.adjusted_level)} CI, Bonferroni over {result.layers_tested} layers"


def _warnings(result: ProbeResult) -> str:
    if not result.warnings:
        return ""
    return (f'<div class="warnings" style="{WARN_STYLE}"><b>Warnings: read before the verdict</b><ul>'
            + "".join(f"<li>{esc(w)}</li>" for w in result.warnings) + "</ul></div>")


def _side(result: ProbeResult, name: str | None) -> str:
    """"name (input side) (AUROC 0.610 [0.550, 0.670])", or "none"."""
    if name is None:
        return "none"
    c: ControlScore = result.controls[name]
    return f"{name} ({c.side} side{', raw score' if c.scoring == 'raw' else ''}) (AUROC {num(c.auroc, c.auroc_ci)})"


def _verdict(result: ProbeResult) -> str:
    """The verdict (verdict.py's sentence), the best layer, and the best control of each side."""
    best = [("best control (the verdict's baseline)", result.best_control),
            ("best input-side control", result.best_input_control),
            ("best output-side control", result.best_output_control)]
    return (f'<p class="verdict"><b>verdict</b>: {esc(verdict(result).sentence)} '
            f"[selectivity interval: {esc(_adjusted(result))}]</p>"
            f"<p><b>best layer</b>: {esc(result.best_layer)}</p>"
            + "<p>" + " &nbsp;|&nbsp; ".join(f"<b>{esc(label)}</b>: {esc(_side(result, name))}" for label, name in best)
            + "</p>")


def _setup(result: ProbeResult) -> str:
    """One line each: the questions, the position read and the probe family, the folds, the intervals."""
    counts = ", ".join(f"{k}: {v}" for k, v in result.class_counts.items())
    c, cv, b = result.clusters, result.cv, result.bootstrap
    family_wise = level_label(1 - result.layers_tested * (1 - b.adjusted_level))
    lines = [f"{result.n} questions ({counts})"
             + (f"; clustered: {c.rows} rows in {c.n_clusters} clusters by {c.by} (resampled as clusters)"
                if c is not None else ""),
             f"probe family {result.family} at position {result.position}"
             + (f": {result.position_note}" if result.position_note else ""),
             f"{cv.folds}-fold {cv.method}, seed {cv.seed}; AUROC pairs: {cv.auroc_pairs}; out-of-fold "
             f"scoring: {cv.oof_scoring} (layers, fitted controls, every CV seed: no fold's offset ranks folds "
             f"against each other)",
             f"intervals: {level_label(b.level)} percentile bootstrap over questions ({b.resamples} resamples, paired "
             f"across probe and controls); the selectivity's: {_adjusted(result)} (all {result.layers_tested} "
             f"together: {family_wise})"]
    if result.raw_controls:
        lines.append(f"single scores scored raw, as the field does (the AUROC of the score itself, oriented by "
                     f"definition, never fitted): {', '.join(result.raw_controls)}")
    if result.answer_controls:
        lines.append(f"the probe reads the answer's tokens: a layer must beat their identity too "
                     f"({', '.join(result.answer_controls)}, input side)")
    return "".join(f'<p class="setup">{esc(line)}</p>' for line in lines)


def _layers(result: ProbeResult) -> str:
    """The per-layer table, each interval headed by its real level."""
    plain = level_label(result.bootstrap.level)
    layers = result.layers.values()
    gain = any(v.embedding_gain is not None for v in layers)
    hl = any(v.hl_control_auroc is not None for v in layers)
    perm = any(v.permutation_auroc is not None for v in layers)
    headers = (["layer", f"auroc [{plain} CI]", f"accuracy [{plain} CI]",
                f"selectivity vs {result.best_control} [{_adjusted(result)}]", f"selectivity [{plain} CI, unadjusted]"]
               + ([f"gain over answer_embedding (the embedding layer at the same position) [{plain} CI, paired]"]
                  if gain else [])
               + ([f"H&L control task AUROC [{plain} CI] (a fixed random label per input type)",
                   "H&L selectivity = AUROC - control task (no interval)"] if hl else [])
               + ([f"permutation test AUROC [{plain} CI] (labels shuffled within category)"] if perm else []))
    rows = [[name + (" <- verdict" if name == result.verdict else ""), num(v.auroc, v.auroc_ci),
             num(v.accuracy, v.accuracy_ci), num(v.selectivity, v.selectivity_ci, "{:+.3f}"),
             num(v.selectivity, v.selectivity_ci_unadjusted, "{:+.3f}")]
            + ([num(v.embedding_gain, v.embedding_gain_ci, "{:+.3f}")] if gain else [])
            + ([num(v.hl_control_auroc, v.hl_control_auroc_ci), num(v.hl_selectivity, None, "{:+.3f}")] if hl else [])
            + ([num(v.permutation_auroc, v.permutation_auroc_ci)] if perm else [])
            for name, v in result.layers.items()]
    return table(headers, rows, "probe")


def _controls(result: ProbeResult) -> str:
    """The controls table: side, scoring, AUROC and accuracy with intervals, the best ones marked; the left-out ones."""
    plain = level_label(result.bootstrap.level)
    marks = {result.best_input_control: "best input-side", result.best_output_control: "best output-side"}
    rows = []
    for name, c in result.controls.items():
        best = [m for m in ("best" if name == result.best_control else None, marks.get(name)) if m]
        rows.append([name + (f" ({', '.join(best)})" if best else ""), c.side, _scoring(name, c, result),
                     num(c.auroc, c.auroc_ci), num(c.accuracy, c.accuracy_ci)])
    headers = ["control", "side (input: the question or the answer's tokens; output: the model's output)",
               "scoring (raw: the score itself; fitted: out-of-fold)", f"AUROC [{plain} CI]", f"accuracy [{plain} CI]"]
    dropped = result.dropped_controls
    return ("<h3>Controls</h3>" + table(headers, rows, "probe")
            + (f'<p class="setup">left out: {esc("; ".join(f"{k} ({v})" for k, v in dropped.items()))}</p>'
               if dropped else ""))


def _scoring(name: str, c: ControlScore, result: ProbeResult) -> str:
    if c.scoring == "raw":
        return "raw" + (f", {'higher' if c.orientation > 0 else 'lower'} = correct" if c.orientation else "")
    return "fitted" + (", answer token" if name in result.answer_controls else "")


def _operating_points(result: ProbeResult, ops: OperatingPoints) -> str:
    level = level_label(ops.level)
    headers = ["scores of"] + [f"{label} [{level} CI]" + (f" (chance = prevalence {ops.prevalence:.3f})"
                                                          if key == "auprc" else "") for key, label in OPERATING_POINTS]

    def label(name: str) -> str:
        if name.startswith("control:"):
            control = name[len("control:"):]
            return f"control: {control} ({result.controls[control].side} side)"
        return name + (" (best layer)" if name == result.best_layer else "")

    def cells(row: OperatingPointRow) -> list[str]:
        return [num(m.value, m.ci) for m in (row.auprc, row.tpr_at_1pct_fpr, row.fpr_at_95pct_tpr, row.brier, row.ece)]
    rows = [[label(name)] + cells(row) for name, row in ops.rows.items()]
    return ("<h3>Operating points</h3><p>The out-of-fold probabilities read as a detector "
            f"(positive class: {esc(ops.positive)}); FPR = false-positive rate, TPR = true-positive rate.</p>"
            + table(headers, rows, "probe"))


def _families_and_seeds(result: ProbeResult) -> str:
    plain = level_label(result.bootstrap.level)
    families = {k: v for k, v in result.families.items() if v}
    seeds = result.seeds
    headers = (["layer"] + [f"{k.replace('_', '-')} AUROC [{plain} CI]" for k in families]
               + [f"AUROC over CV seeds {', '.join(map(str, seeds.seeds))}: min - max (spread of the fold split)"])
    rows = [[name] + [num(f[name].auroc, f[name].auroc_ci) if name in f else "-" for f in families.values()]
            + [f"{seeds.range[name][0]:.3f} - {seeds.range[name][1]:.3f}" if name in seeds.range else "-"]
            for name in result.layers]
    return ("<h3>Probe families and cross-validation seeds</h3>"
            "<details><summary>logistic vs mass-mean probe, and the AUROC's range over fold seeds, per layer</summary>"
            + table(headers, rows, "probe") + "</details>")


def _positions(result: ProbeResult, grid: PositionTable) -> str:
    level = level_label(grid.level)
    headers = ["layer"] + [f"{p}{' (main sweep)' if p == result.position else ''} AUROC [{level} CI]"
                           for p in grid.positions]
    rows = [[name] + [num(vals[p], grid.auroc_ci[name][p]) for p in grid.positions] for name, vals in grid.auroc.items()]
    return (f"<h3>By token position</h3><p>The probe at every layer and position, on the {grid.n} questions "
            f"that have every position (chance 0.5).</p>"
            + figure_or_note("The position heatmap", plot_position_auroc, result)
            + "<details><summary>table</summary>" + table(headers, rows, "probe") + "</details>")


def _transfer(result: ProbeResult, t: TransferResult) -> str:
    level = level_label(t.level)

    def cell(i: int, j: int) -> str:
        value = t.auroc[i][j]
        return num(value, t.auroc_ci[i][j]) + (" (out-of-fold within)" if i == j and value is not None else "")
    rows = [[f"{g} (n={t.n[g]})"] + [cell(i, j) for j in range(len(t.groups))] for i, g in enumerate(t.groups)]
    return (f"<h3>Transfer across {esc(t.by)} values</h3><p>At {esc(str(t.layer))}: trained on the "
            f"row's group, tested on the column's; the diagonal is out-of-fold within the group. AUROC [{level} CI]; "
            "chance 0.5.</p>" + figure_or_note("The transfer heatmap", plot_transfer, result)
            + '<div style="overflow-x:auto">'      # many groups: the matrix scrolls instead of leaving the page
            + table([f"trained on \\ tested on ({t.by})"] + list(t.groups), rows, "probe") + "</div>"
            + "".join(f"<p>Note: {esc(n)}</p>" for n in t.notes))
