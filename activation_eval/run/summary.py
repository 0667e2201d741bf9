"""What a run reports: summary.json's contents and the table the CLI prints.

Public names:
    make_summary(config, results, elapsed, answered_now, processes=1, rows=(), skipped=()) -> dict
    format_summary(summary) -> str       the aligned table the CLI prints

Example (results rows as a run writes them; `rows` are their benchmark rows, 6 geography questions):
    >>> from activation_eval.run.config import RunConfig
    >>> results = [{"id": row["id"], "category": row["category"], "correct": i < 4} for i, row in enumerate(rows)]
    >>> summary = make_summary(RunConfig(output_dir="results/demo"), results, elapsed=12.0,
    ...                        answered_now=len(results), rows=rows)
    >>> summary["correct"], summary["accuracy_ci95"]
    (4, [0.300, 0.903])
    >>> print(format_summary(summary))
    model      SmolLM2-135M-Instruct
    benchmark  .../activation_eval/data/benchmark.jsonl
    accuracy   66.7% ± 19.2% (SE), 95% CI 30.0%-90.3%, chance 0.0%  (4/6 correct)
    <BLANKLINE>
    category                  n  correct  accuracy     SE        95% CI  chance
    geography                 6        4     66.7%  19.2%   30.0%-90.3%    0.0%
    <BLANKLINE>
    wall time  12.0 s for 6 questions (0.50 questions/s)
    results    results/demo/results.jsonl

Every accuracy comes with its standard error, its 95% Wilson interval (activation_eval/accuracy.py:
clustered by question when a run has several samples per question) and its chance baseline; so do
acc_norm and acc_bytes of --mc_scoring loglikelihood, overall and per category ("norm", "bytes").
A category of fewer than accuracy.SMALL_N questions has "small_n": true and a * in the table.
Answers graded contradictory (their letter and text name different choices; the row's grader_note)
are counted under "contradictory".
"""
from ..accuracy import SMALL_N_NOTE
from ..eval.scores import accuracy_stats, chance_accuracy
from ..store import run_folder
from .config import benchmark_label


def make_summary(config, results, elapsed, answered_now, processes=1, rows=(), skipped=()):
    """summary.json: accuracy with its standard error, 95% Wilson interval (accuracy.py) and chance baseline, overall
    and per category (over graded rows: a row whose `correct` is None is counted as ungraded; a row with
    an `error`, e.g. a prompt longer than the model's context, was not answered and is counted under
    "errors"), the benchmark rows skipped as unusable, and the run's speed."""
    chance = {row["id"]: chance_accuracy(row) for row in rows}
    answered = [r for r in results if not r.get("error")]
    graded = [r for r in answered if r.get("correct") is not None]
    by_category, errors = {}, {}
    for row in graded:
        by_category.setdefault(row.get("category") or "uncategorized", []).append(row)
    for row in results:
        if row.get("error"):
            name = row.get("category") or "uncategorized"
            errors[name] = errors.get(name, 0) + 1
            by_category.setdefault(name, [])
    overall = _stats(graded, chance)
    return {"model": config.model, "benchmark": benchmark_label(config.benchmark), "output_dir": config.output_dir,
            "questions": len(results), "graded": overall["n"], "ungraded": len(answered) - overall["n"],
            "errors": sum(errors.values()),
            "correct": overall["correct"], "accuracy": overall["accuracy"] if graded else 0.0,
            "accuracy_stderr": overall["stderr"], "accuracy_ci95": overall["ci95"], "chance": overall["chance"],
            "per_category": {name: {**_stats(group, chance), "errors": errors.get(name, 0), **_scored_stats(group)}
                             for name, group in sorted(by_category.items())},
            "contradictory": sum(1 for r in graded if r.get("grader_note")),
            "skipped_rows": len(skipped), "skipped_ids": [s["id"] or s["where"] for s in skipped],
            "answered_this_run": answered_now, "wall_time_s": round(elapsed, 3),
            "questions_per_second": round(answered_now / elapsed, 3) if elapsed > 0 and answered_now else None,
            "processes": processes, "batch_size": config.batch_size, "max_new_tokens": config.max_new_tokens,
            "capture_activations": config.capture_activations,
            "activation_dir": config.activation_save_dir if config.capture_activations else None,
            **_decoding_summary(config, results)}


# --mc_scoring loglikelihood's further verdicts: {name in the summary: the row's key}
SCORED = {"norm": "correct_norm", "bytes": "correct_bytes"}


def _decoding_summary(config, results):
    """How answers were produced; with --mc_scoring loglikelihood also acc_norm and acc_bytes, each with
    its standard error and 95% Wilson interval over questions, and the chance baseline (mean of
    1 / number of choices)."""
    out = {"mc_scoring": config.mc_scoring, "mc_style": getattr(config, "mc_style", None),
           "temperature": config.temperature, "num_samples": config.num_samples}
    scored = [r for r in results if isinstance(r.get("correct_norm"), bool)]
    if scored:
        out.update(scored_questions=len(scored),
                   chance_accuracy=sum(1 / len(r["choice_logprobs"]) for r in scored) / len(scored))
        for name, stats in _scored_stats(scored).items():
            out.update({f"correct_{name}": stats["correct"], f"accuracy_{name}": stats["accuracy"],
                        f"accuracy_{name}_stderr": stats["stderr"], f"accuracy_{name}_ci95": stats["ci95"]})
        out["accuracy_norm_se"] = out["accuracy_norm_stderr"]        # its name before 2026-12
    return out


def _scored_stats(results):
    """{"norm": accuracy_stats of correct_norm, "bytes": ... of correct_bytes} over the rows that have them."""
    out = {}
    for name, key in SCORED.items():
        rows = [r for r in results if isinstance(r.get(key), bool)]
        if rows:
            out[name] = accuracy_stats([r[key] for r in rows], questions=[r["id"] for r in rows])
    return out


def _stats(results, chance):
    """accuracy_stats of graded results rows; chance: the mean baseline of those rows (None if unknown)."""
    known = [chance[r["id"]] for r in results if r["id"] in chance]
    baseline = sum(known) / len(known) if known and len(known) == len(results) else None
    # several answers of one question (--num_samples) are clustered: SE and CI use the effective n
    return accuracy_stats([r["correct"] for r in results], chance=baseline, questions=[r["id"] for r in results])


def _pct(value):
    return "-" if value is None else f"{value:.1%}"


def _interval(ci):
    return "-" if ci is None else f"{ci[0]:.1%}-{ci[1]:.1%}"


def format_summary(summary):
    """An aligned, human-readable table of a summary: every accuracy with its SE, 95% CI and chance."""
    graded = summary.get("graded", summary["questions"])
    lines = [f"model      {summary['model']}", f"benchmark  {summary['benchmark']}",
             f"accuracy   {summary['accuracy']:.1%} ± {_pct(summary.get('accuracy_stderr'))} (SE), 95% CI "
             f"{_interval(summary.get('accuracy_ci95'))}, chance {_pct(summary.get('chance'))}  "
             f"({summary['correct']}/{graded} correct)"]
    what = {"norm": "log-likelihood per character of the choice, lm-eval's acc_norm",
            "bytes": "log-likelihood per UTF-8 byte of the choice, lm-eval's acc_bytes"}
    for name in ("norm", "bytes"):
        if f"accuracy_{name}" in summary:
            lines.append(f"acc_{name:<6} {summary[f'accuracy_{name}']:.1%} ± {_pct(summary.get(f'accuracy_{name}_stderr'))}"
                         f" (SE), 95% CI {_interval(summary.get(f'accuracy_{name}_ci95'))}, chance "
                         f"{summary['chance_accuracy']:.1%}  ({summary[f'correct_{name}']}/{summary['scored_questions']}"
                         f" correct by {what[name]})")
    if summary.get("num_samples", 1) > 1:
        lines.append(f"samples    {summary['num_samples']} per question (temperature {summary['temperature']:g}); "
                     f"accuracy counts every sample; SE and CI are clustered by question (Wilson over the "
                     f"effective number of answers, n / design effect)")
    norm = any("norm" in stats for stats in summary["per_category"].values())
    lines += ["", f"{'category':<20} {'n':>6} {'correct':>8} {'accuracy':>9} {'SE':>6} {'95% CI':>13} {'chance':>7}"
              + (f" {'acc_norm':>9} {'95% CI':>13}" if norm else "") + (f" {'errors':>7}" if summary.get("errors") else "")]
    for name, stats in summary["per_category"].items():
        n = f"{stats['n']}{'*' if stats.get('small_n') else ''}"
        lines.append(f"{name:<20} {n:>6} {stats['correct']:>8} {_pct(stats['accuracy']):>9} "
                     f"{_pct(stats.get('stderr')):>6} {_interval(stats.get('ci95')):>13} {_pct(stats.get('chance')):>7}"
                     + (f" {_pct(stats.get('norm', {}).get('accuracy')):>9} {_interval(stats.get('norm', {}).get('ci95')):>13}"
                        if norm else "")
                     + (f" {stats.get('errors', 0):>7}" if summary.get("errors") else ""))
    if any(stats.get("small_n") for stats in summary["per_category"].values()):
        lines.append(SMALL_N_NOTE)
    if summary.get("contradictory"):
        lines.append(f"contradictory {summary['contradictory']} answer(s) whose letter and text name different "
                     f"choices, graded incorrect (see the rows' grader_note)")
    if summary.get("errors"):
        lines.append(f"errors     {summary['errors']} of {summary['questions']} questions not answered, left out of "
                     f"accuracy (see the rows' error field)")
    if summary.get("ungraded"):
        lines.append(f"ungraded   {summary['ungraded']} question(s) without a verdict (not in the accuracy)")
    if summary.get("skipped_rows"):
        ids = summary.get("skipped_ids", [])
        shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
        lines.append(f"skipped    {summary['skipped_rows']} benchmark row(s) the grader cannot use ({shown}); "
                     "see the warnings, or --strict to stop on them")
    qps = summary["questions_per_second"]
    lines += ["", f"wall time  {summary['wall_time_s']:.1f} s for {summary['answered_this_run']} questions"
              + (f" ({qps:.2f} questions/s)" if qps else "")]
    lines.append(f"results    {run_folder.results_path(summary['output_dir'])}")
    return "\n".join(lines)
