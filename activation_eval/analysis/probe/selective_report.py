"""Error detection and the train/test split as a researcher reads them: the text paragraphs, the
report's section and the risk-coverage plot (result.error_detection, test_run.overlap, transfer.shared).

The error-detection tables list "incorrect" as the positive class first (hallucination detection:
AUPRC against the error rate), then "correct"; then PRR, AURC and selective accuracy at 80% / 90%
coverage per scorer (the best layer and every control), each with its interval, beside their
baselines (random AURC = the error rate, PRR 0; the oracle's AURC, PRR 1). The risk-coverage plot
draws every scorer's curve with the random and the oracle ones.

Public names:
    selective_paragraphs(result) -> [str]    the --probe text's paragraphs: error detection, transfer overlap
    selection_caveat(result) -> str         why the best layer's figures lean optimistic (chosen on these questions)
    overlap_paragraph(test_run) -> str         the --test_run paragraph: questions shared / left out, notes
    error_detection_html(result) -> str      the report's section ("" without error detection)
    plot_risk_coverage(result, path) -> str  the plot, saved as a PNG

Example:
    >>> from activation_eval.analysis.probe import probe_run
    >>> res = probe_run("results/mc", layers=["layer_5"])
    >>> print(selective_paragraphs(res)[0].splitlines()[0])
    error detection, positive class "incorrect" (hallucination detection; out-of-fold; chance AUPRC = error rate 0.750)
    >>> error_detection_html(res).startswith("<h3>Error detection")
    True
"""
import math
import os

import numpy as np

from ...schema.probe import ErrorDetection, Metric, OperatingPoints, ProbeResult, TestRunResult
from ...schema.transfer import TransferResult
from .. import plot_base
from ..html import esc, figure_or_note, table
from ..text import format_table, level_label, with_ci
from .overlap import overlap_line

__all__ = ["selective_paragraphs", "overlap_paragraph", "error_detection_html", "plot_risk_coverage"]

POINTS = (("auprc", "AUPRC"), ("tpr_at_1pct_fpr", "TPR@1%FPR"), ("fpr_at_95pct_tpr", "FPR@95%TPR"),
          ("brier", "Brier"), ("ece", "ECE"))
SELECTIVE = (("prr", "PRR"), ("aurc", "AURC"), ("selective_accuracy_80", "accuracy@80% coverage"),
             ("selective_accuracy_90", "accuracy@90% coverage"))


def _ci(m: Metric) -> str:
    return with_ci(m.value, m.ci)


def _orientation_table(name: str, ops: OperatingPoints) -> tuple[list[str], list[list[str]]]:
    lv = level_label(ops.level)
    heads = ["scores of"] + [f"{label} [{lv} CI]" for _, label in POINTS]
    rows = [[s] + [_ci(getattr(r, k)) for k, _ in POINTS] for s, r in ops.rows.items()]
    return heads, rows


def _selective_table(ed: ErrorDetection) -> tuple[list[str], list[list[str]]]:
    lv = level_label(ed.level)
    heads = ["scores of"] + [f"{label} [{lv} CI]" for _, label in SELECTIVE]
    rows = [[s] + [_ci(getattr(r, k)) for k, _ in SELECTIVE] for s, r in ed.selective.items()]
    return heads, rows


def _baselines(ed: ErrorDetection) -> str:
    n_correct = round(ed.n * (1 - ed.error_rate))
    oracle = [min(1.0, n_correct / max(1, math.ceil(c * ed.n - 1e-9))) for c in (0.8, 0.9)]
    return (f"baselines: random order AURC = error rate {ed.error_rate:.3f}, PRR 0, accuracy@coverage "
            f"{1 - ed.error_rate:.3f}; oracle (every correct answer first) AURC {_fmt(ed.oracle_aurc)}, PRR 1, "
            f"accuracy@80% {oracle[0]:.3f}, @90% {oracle[1]:.3f}")


def _fmt(v: float | None) -> str:
    return "-" if v is None or not math.isfinite(v) else f"{v:.3f}"


def selective_paragraphs(result: ProbeResult) -> list[str]:
    """The --probe text's paragraphs on error detection and on the transfer matrix's shared rows."""
    out = []
    ed = result.error_detection
    if ed is not None and ed.selective:
        negative = next(iter(ed.orientations))
        for name, ops in ed.orientations.items():
            what = "hallucination detection" if name == negative else "the other orientation"
            chance = "error rate" if name == negative else "share of the positive class"
            out.append(f'error detection, positive class "{name}" ({what}; out-of-fold; chance AUPRC = {chance} '
                       f"{ops.prevalence:.3f})\n" + format_table(*_orientation_table(name, ops)))
        out.append("selective answering: keep the most confident questions (PRR: 1 oracle, 0 random; AURC: "
                   "lower is better)\n" + format_table(*_selective_table(ed)) + "\n" + _baselines(ed)
                   + "".join(f"\nnote: {n}" for n in ed.notes) + f"\nnote: {selection_caveat(result)}")
    if result.transfer is not None:
        line = _transfer_overlap(result.transfer)
        if line:
            out.append(line)
    return out


def _transfer_overlap(t: TransferResult) -> str | None:
    cells = [(g, h, t.shared[i][j]) for i, g in enumerate(t.groups) for j, h in enumerate(t.groups)
             if t.shared and t.shared[i][j]]
    if not cells:
        return None
    how = ("kept (--keep_overlap): those cells are partly IN-SAMPLE" if t.in_sample
           else "left out of those cells (train and test kept apart)")
    return (f"transfer: tested rows that the training {t.by} shares (same id or prompt hash), {how}: "
            + "; ".join(f"{g} -> {h}: {k}" for g, h, k in cells))


def selection_caveat(result: ProbeResult) -> str:
    """Why the best layer's figures lean optimistic: it was picked on the questions it is scored on."""
    if result.layers_tested < 2:
        return "one layer probed: no choice among layers to allow for."
    return (f"{result.best_layer} is the best of {result.layers_tested} layers on these same questions, so its "
            f"figures lean optimistic (picked after the fact); the controls' do not, and the verdict's adjusted "
            f"selectivity interval is the comparison that allows for the choice.")


def overlap_paragraph(test_run: TestRunResult) -> str:
    """The --test_run paragraph: what the two runs share and what was left out."""
    o = test_run.overlap
    if o.in_sample:
        head = f"IN-SAMPLE: {overlap_line(o)}, kept (--keep_overlap): the transfer figures below are partly in-sample"
    elif o.dropped:
        head = f"overlap:    {overlap_line(o)}, left out: the test run is scored on its other {test_run.n}"
    else:
        head = f"overlap:    none (none of the test run's {o.n_test} questions shares an id or a prompt with the training run)"
    notes = [n for n in test_run.notes if not n.startswith(f"{o.shared} of {o.n_test} questions shared")]
    return head + "".join(f"\nnote:       {n}" for n in notes)


def error_detection_html(result: ProbeResult) -> str:
    """The report's error-detection section: both orientations, the selective figures, the plot."""
    ed = result.error_detection
    if ed is None or not ed.selective:
        return ""
    parts = ["<h3>Error detection and selective answering</h3>",
             f"<p>The out-of-fold probabilities of {esc(result.best_layer)} (the best layer) and of every control "
             "read as a detector of wrong answers (positive class first: incorrect, as hallucination detection "
             "frames it) and as confidence for answering only the most confident questions. "
             f"{esc(selection_caveat(result))}</p>"]
    negative = next(iter(ed.orientations))
    for name, ops in ed.orientations.items():
        heads, rows = _orientation_table(name, ops)
        parts.append(f"<p><b>positive class: {esc(name)}</b> (prevalence {ops.prevalence:.3f} = chance AUPRC"
                     + ("; the error-detection framing" if name == negative else "") + ")</p>"
                     + table(heads, rows, "probe"))
    heads, rows = _selective_table(ed)
    parts.append("<p><b>selective answering</b>: PRR = (random AURC - AURC) / (random AURC - oracle AURC); "
                 f"AURC = mean risk over coverages (lower is better). {esc(_baselines(ed))}.</p>"
                 + table(heads, rows, "probe"))
    parts.append(figure_or_note("The risk-coverage plot", plot_risk_coverage, result))
    if ed.notes:
        parts.append("<ul>" + "".join(f"<li>{esc(n)}</li>" for n in ed.notes) + "</ul>")
    return "".join(parts)


def _oracle_risk(ed: ErrorDetection) -> np.ndarray:
    n = ed.n
    n_correct = round(n * (1 - ed.error_rate))
    k = np.maximum(1, np.ceil(np.asarray(ed.coverage) * n - 1e-9))
    return np.maximum(0.0, k - n_correct) / k


@plot_base.plain_text
def plot_risk_coverage(result: ProbeResult, path: str | os.PathLike[str]) -> str:
    """The risk-coverage curves (share of incorrect answers among the most confident, by coverage) of the
    best layer and every control, with the random order's (the error rate) and the oracle's."""
    ed = result.error_detection
    if ed is None or not ed.selective:
        raise ValueError("the probe result has no error detection (binary targets only)")
    fig = plot_base.new_figure(8.0, 6.0 + 0.18 * len(ed.selective))
    ax = fig.subplots()
    x = np.asarray(ed.coverage)
    lv = level_label(ed.level)
    for name, row in ed.selective.items():
        best = not name.startswith("control:")
        risk = np.array([np.nan if r is None else r for r in row.risk], dtype=float)
        label = (f"{name}{' (best layer)' if best else ''}: AURC {with_ci(row.aurc.value, row.aurc.ci)}, "
                 f"PRR {with_ci(row.prr.value, row.prr.ci)}")
        ax.plot(x, risk, marker="o" if best else None, markersize=3, linewidth=2.2 if best else 1.1,
                linestyle="-" if best else "--", label=label, **({"color": "black"} if best else {}))
    ax.axhline(ed.error_rate, color="grey", linestyle=":", label=f"random order: risk = error rate {ed.error_rate:.3f}")
    ax.plot(x, _oracle_risk(ed), color="grey", linestyle="-.", label=f"oracle (every correct answer first): AURC "
                                                                      f"{_fmt(ed.oracle_aurc)}")
    ax.set_xlabel("coverage (share of questions answered, most confident first)")
    ax.set_ylabel("risk (share of the answered that are incorrect)")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), title=f"[{lv} bootstrap intervals]",
              title_fontsize=7)
    ax.set_title(f"Risk-coverage of '{result.target}' - {result.run_name or 'run'} ({ed.n} questions); lower is "
                 f"better", fontsize=10)
    return plot_base.save_png(fig, path)
