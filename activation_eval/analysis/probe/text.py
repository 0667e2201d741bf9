"""The probe result as the command line prints it (--probe without --json).

Warnings first, then what was done (target, position, folds, intervals), the controls and per-layer
tables, the side tables the result has (operating points, the other family and CV seeds, positions,
transfer), the test run's tables, and the verdict last (verdict.py).

Public names:
    probe_text(result) -> str

Example:
    >>> from activation_eval.analysis.probe import probe_run
    >>> print(probe_text(probe_run("results/mc", layers=["layer_5"])).splitlines()[-1][:48])
    verdict:    no evidence beyond the controls: no
"""
from ...schema.probe import ControlScore, OperatingPoints, PositionTable, ProbeResult, SeedSpread, TestRunResult
from ...schema.transfer import TransferResult
from ..text import format_table, level_label, with_ci
from .selective_report import overlap_paragraph, selective_paragraphs
from .verdict import side_name, verdict

FAMILY_NAMES = {"mass_mean": "mass-mean probe (difference of class means)", "logistic": "standardized logistic regression",
                "mlp": "MLP probe (SAPLMA)"}


def probe_text(result: ProbeResult) -> str:
    """The --probe text output of `result`."""
    out = ([_warnings(result)] if result.warnings else []) + ["\n".join(_head(result)), _tables(result, result)]
    out += _extras(result)
    t = result.test_run
    if t is not None:
        counts = ", ".join(f"{k}: {v}" for k, v in t.class_counts.items())
        out += [f"transfer:   trained on all of {result.run_dir}, scored on {t.run_dir} ({counts}; {t.n} questions)",
                overlap_paragraph(t), _tables(t, result), "transfer verdict:    " + verdict(t).sentence]
    out.append("verdict:    " + verdict(result).sentence)
    return "\n\n".join(out)


def _warnings(result: ProbeResult) -> str:
    return "WARNINGS:\n" + "\n".join(f"  ! {w}" for w in result.warnings)


def _head(result: ProbeResult) -> list[str]:
    counts = ", ".join(f"{k}: {v}" for k, v in result.class_counts.items())
    b, c, cv = result.bootstrap, result.clusters, result.cv
    head = [f"run:        {result.run_dir}",
            f"target:     {result.target} ({counts}; {result.n} questions); AUROC {result.auroc_kind}"
            + (f"; {c.rows} rows in {c.n_clusters} clusters by {c.by}" if c is not None else ""),
            f"probe:      {FAMILY_NAMES[result.family]} on {result.position} activations"
            + (f" ({result.position_note})" if result.position_note else "")
            + f"; {cv.folds}-fold {cv.method}, seed {cv.seed}; out-of-fold AUROC: {cv.oof_scoring} (every CV seed)",
            f"intervals:  {level_label(b.level)} percentile bootstrap over questions ({b.resamples} "
            f"resamples, paired across probe and controls); selectivity = AUROC - best control's AUROC, interval "
            f"{b.adjustment} ({level_label(b.adjusted_level)}), best control taken as the {b.best_control}"]
    if result.raw_controls:
        head.append(f"baselines:  single scores scored raw, as the field does (AUROC of the score itself, oriented by "
                    f"definition, never fitted): {', '.join(result.raw_controls)}")
    if result.answer_controls:
        head.append(f"answer:     the probe reads the answer's tokens, so it must beat their identity: "
                    f"{', '.join(result.answer_controls)} (input side)")
    head += [f"note:       {n}" for n in result.notes]
    head += [f"left out:   control {k}: {v}" for k, v in result.dropped_controls.items()]
    return head


def _tables(part: ProbeResult | TestRunResult, result: ProbeResult) -> str:
    """The controls table and the per-layer table of one probe evaluation (the run, or the test run)."""
    plain, adjusted = level_label(result.bootstrap.level), level_label(result.bootstrap.adjusted_level)
    marks = {part.best_control: "best", part.best_input_control: "best input",
             part.best_output_control: "best output"}
    controls = format_table(["control", "side", "scoring", f"AUROC [{plain} CI]", f"accuracy [{plain} CI]"],
                            [[c + (f" ({marks[c]})" if c in marks else ""), v.side, _scoring(c, v),
                              with_ci(v.auroc, v.auroc_ci), with_ci(v.accuracy, v.accuracy_ci)]
                             for c, v in part.controls.items()])
    perm = any(v.permutation_auroc is not None for v in part.layers.values())
    hl = any(v.hl_control_auroc is not None for v in part.layers.values())
    gain = any(v.embedding_gain is not None for v in part.layers.values())
    rows = [[n + (" <- verdict" if n == part.verdict else ""), with_ci(v.auroc, v.auroc_ci),
             with_ci(v.accuracy, v.accuracy_ci), with_ci(v.selectivity, v.selectivity_ci, "{:+.3f}"),
             with_ci(v.selectivity, v.selectivity_ci_unadjusted, "{:+.3f}")]
            + ([with_ci(v.embedding_gain, v.embedding_gain_ci, "{:+.3f}")] if gain else [])
            + ([with_ci(v.hl_control_auroc, v.hl_control_auroc_ci), with_ci(v.hl_selectivity, None, "{:+.3f}")]
               if hl else [])
            + ([with_ci(v.permutation_auroc, v.permutation_auroc_ci)] if perm else [])
            for n, v in part.layers.items()]
    table = format_table(["layer", f"AUROC [{plain} CI]", f"accuracy [{plain} CI]",
                          f"selectivity [{adjusted} CI, adjusted]", f"selectivity [{plain} CI]"]
                         + ([f"gain over answer_embedding [{plain} CI]"] if gain else [])
                         + ([f"H&L control task [{plain} CI]", "H&L selectivity"] if hl else [])
                         + ([f"permutation test [{plain} CI]"] if perm else []), rows)
    key = (f"selectivity = AUROC - best control's ({side_name(part, part.best_control)}: "
           f"{part.controls[part.best_control].auroc:.3f}); the {adjusted} interval is Bonferroni-adjusted over "
           f"{len(part.layers)} layers (the verdict's), the {plain} one unadjusted"
           + ("; gain over answer_embedding = AUROC - the embedding layer's at the same position (paired)"
              if gain else "")
           + ("; H&L control task = the probe on a fixed random label per input type (category x answer; Hewitt & "
              "Liang), H&L selectivity = AUROC - control task" if hl else "")
           + ("; permutation test = the probe on labels shuffled within category" if perm else ""))
    return controls + "\n\n" + key + "\n" + table


def _scoring(name: str, c: ControlScore) -> str:
    """"raw (+1)" for a raw score with its orientation, "fitted" otherwise."""
    if c.scoring != "raw":
        return "fitted"
    return "raw" + (f" ({'higher' if c.orientation > 0 else 'lower'} = correct)" if c.orientation else "")


def _extras(result: ProbeResult) -> list[str]:
    """Operating points, probe families and CV seeds, positions and transfer: the tables the result has."""
    out = []
    if result.operating_points is not None and result.operating_points.rows:
        out.append(_operating_points(result.operating_points))
    seeds = _families_and_seeds(result, result.seeds)
    if seeds:
        out.append(seeds)
    if result.positions is not None and result.positions.auroc:
        out.append(_positions(result.positions, result.position))
    if result.transfer is not None and result.transfer.groups:
        out.append(_transfer(result.transfer))
    out += selective_paragraphs(result)
    return out


def _operating_points(ops: OperatingPoints) -> str:
    lv = level_label(ops.level)
    heads = [f"AUPRC [{lv} CI] (chance {ops.prevalence:.3f})", f"TPR@1%FPR [{lv} CI]", f"FPR@95%TPR [{lv} CI]",
             f"Brier [{lv} CI]", f"ECE [{lv} CI]"]
    rows = [[name] + [with_ci(m.value, m.ci) for m in (r.auprc, r.tpr_at_1pct_fpr, r.fpr_at_95pct_tpr, r.brier, r.ece)]
            for name, r in ops.rows.items()]
    return ("operating points (out-of-fold; chance AUPRC = prevalence of the positive class)\n"
            + format_table(["scores of"] + heads, rows))


def _families_and_seeds(result: ProbeResult, seeds: SeedSpread) -> str | None:
    """The other probe family's AUROC and the AUROC's range over CV seeds, per layer (None: neither)."""
    # the main sweep's family is the per-layer table above: only the other family is listed here
    families = {k: v for k, v in result.families.items() if v and k != result.family}
    ranges = seeds.range
    if not families and not ranges:
        return None
    plain = level_label(result.bootstrap.level)
    rows = [[n] + [with_ci(f[n].auroc, f[n].auroc_ci) if n in f else "-" for f in families.values()]
            + ([f"{ranges[n][0]:.3f} - {ranges[n][1]:.3f}" if n in ranges else "-"] if ranges else [])
            for n in result.layers]
    heads = (["layer"] + [f"{k} AUROC [{plain} CI]" for k in families]
             + ([f"AUROC min - max over seeds {', '.join(map(str, seeds.seeds))}"] if ranges else []))
    return (f"other probe family and cross-validation seeds (the {result.family} probe: above)\n"
            + format_table(heads, rows))


def _positions(grid: PositionTable, main: str | int | None) -> str:
    lv = level_label(grid.level)
    rows = [[n] + [with_ci(a[p], grid.auroc_ci[n][p]) for p in grid.positions] for n, a in grid.auroc.items()]
    return (f"AUROC by token position ({grid.n} questions that have every position; {lv} CI; chance 0.5)\n"
            + format_table(["layer"] + [p + (" (main)" if p == main else "") for p in grid.positions], rows))


def _transfer(t: TransferResult) -> str:
    lv = level_label(t.level)
    rows = [[f"{g} (n={t.n[g]})"] + [with_ci(a, t.auroc_ci[i][j]) + (" *" if i == j and a is not None else "")
                                      for j, a in enumerate(t.auroc[i])] for i, g in enumerate(t.groups)]
    return (f"transfer across {t.by} values at {t.layer}: AUROC [{lv} CI], row = trained on, column = tested on, "
            f"* = out-of-fold within the group; chance 0.5\n" + format_table(["trained on"] + list(t.groups), rows)
            + "".join(f"\ntransfer note: {n}" for n in t.notes))
