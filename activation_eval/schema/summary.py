"""summary.json: what a run scored, with the same keys whichever producer wrote it.

main.py, the lm-eval backend and the Inspect provider all hand their final results rows to
`build_summary`; the metric that decides each row's `correct` is named per category, and the
overall accuracy pools only categories that share one metric (else it is null and `metric` says
"mixed"). Every accuracy carries its standard error, 95% Wilson interval (clustered by question
when a question has several answers: activation_eval/accuracy.py) and, where known, its chance
baseline.

Public names:
    FORMAT_VERSION, Summary, CategoryStats, AccuracyStats, LoglikStats    the contract
    PRODUCERS               ("main", "lm-eval", "inspect")
    build_summary(rows, *, producer, model, benchmark, output_dir, metric=None, chance=None, ...) -> Summary
    metric_of(producer) -> (row -> metric name)   what decides a row's `correct`, per producer
    format_summary(summary, results_file=None) -> str   the aligned table the CLIs print (and where the rows are)
    MIXED                   the overall `metric` when categories are scored by different metrics
    NEGATED_NOTE, NOT_JUDGEABLE_NOTE   how the grader_notes that the summary counts apart begin (eval/grading.py)

Example (6 results rows of one category, 4 correct):
    >>> rows = [{"id": f"q{i}", "category": "geo", "correct": i < 4} for i in range(6)]
    >>> s = build_summary(rows, producer="main", model="tiny", benchmark="bench.jsonl", output_dir="results/demo",
    ...                   chance={row["id"]: 0.0 for row in rows}, elapsed=12.0, answered_now=6)
    >>> s["correct"], s["metric"], [round(x, 3) for x in s["accuracy_ci95"]], s["per_category"]["geo"]["answers"]
    (4, 'accuracy', [0.3, 0.903], 6)
    >>> print(format_summary(s, results_file="results/demo/results.jsonl"))
    model      tiny
    benchmark  bench.jsonl
    accuracy   66.7% ± 19.2% (SE), 95% CI 30.0%-90.3%, chance 0.0%  (4/6 correct)
    <BLANKLINE>
    category                  n  correct  accuracy     SE        95% CI  chance
    geo                       6        4     66.7%  19.2%   30.0%-90.3%    0.0%
    <BLANKLINE>
    wall time  12.0 s for 6 questions (0.50 questions/s)
    results    results/demo/results.jsonl
"""
from collections.abc import Callable, Iterable, Mapping
from typing import Annotated, Any, Literal, NotRequired, TypedDict, cast

from ..accuracy import SMALL_N_NOTE, accuracy_stats
from .interventions import describe_interventions

FORMAT_VERSION = 4      # 4: interventions (steered / ablated runs say so); 3: negated and not_judgeable counted
#                         (2: one builder for every producer, metric named;
#                         1: main.py's, lm-eval's, Inspect's own)
NEGATED_NOTE = "negated"                          # the gold appears only inside a negation: graded incorrect
NOT_JUDGEABLE_NOTE = "not judgeable by matching"  # a sentence gold (a false premise): left ungraded
PRODUCERS = ("main", "lm-eval", "inspect")
Producer = Literal["main", "lm-eval", "inspect"]
MIXED = "mixed"
_UNCATEGORIZED = "uncategorized"


class AccuracyStats(TypedDict):
    """An accuracy with its uncertainty (activation_eval/accuracy.py's accuracy_stats)."""
    n: Annotated[int, "graded answers"]
    correct: Annotated[int, "correct answers"]
    accuracy: Annotated[float | None, "correct / n (null when n is 0)"]
    stderr: Annotated[float | None, "standard error (over the effective n when clustered)"]
    ci95: Annotated[list[float] | None, "95% Wilson interval [low, high]"]
    chance: Annotated[float | None, "mean chance accuracy of the same questions (null when unknown)"]
    small_n: Annotated[bool, "fewer than 5 questions: the interval's coverage is only approximate"]
    questions: NotRequired[Annotated[int, "distinct questions, when some have several answers"]]
    effective_n: NotRequired[Annotated[float, "n / design effect, when clustered by question"]]


class LoglikStats(TypedDict):
    """--mc_scoring loglikelihood's further verdicts over the scored questions."""
    scored_questions: Annotated[int, "questions scored by log-likelihood"]
    chance_accuracy: Annotated[float, "mean of 1 / number of choices"]
    norm: Annotated[AccuracyStats, "acc_norm: log-likelihood per character of the choice (lm-eval's)"]
    bytes: Annotated[AccuracyStats | None, "acc_bytes: log-likelihood per UTF-8 byte of the choice"]


class CategoryStats(TypedDict):
    """One category's (lm-eval and Inspect: one task's) accuracy and counts."""
    metric: Annotated[str, "what decides `correct` here (main.py: accuracy by its graders; lm-eval: the "
                           "task's metric, e.g. acc or exact_match; Inspect: the first scorer)"]
    questions: Annotated[int, "distinct questions in the category (samples of one question count once)"]
    answers: Annotated[int, "results rows in the category (answers: one per question and sample), graded or not"]
    errors: Annotated[int, "rows not answered (an error), left out of the accuracy"]
    n: Annotated[int, "graded answers"]
    correct: Annotated[int, "correct answers"]
    accuracy: Annotated[float | None, "correct / n"]
    stderr: Annotated[float | None, "standard error"]
    ci95: Annotated[list[float] | None, "95% Wilson interval"]
    chance: Annotated[float | None, "mean chance accuracy (null when unknown)"]
    small_n: Annotated[bool, "fewer than 5 questions"]
    norm: Annotated[AccuracyStats | None, "log-likelihood scoring: acc_norm"]
    bytes: Annotated[AccuracyStats | None, "log-likelihood scoring: acc_bytes"]


class Summary(TypedDict):
    """summary.json. Every producer writes every key (null where it does not apply)."""
    format_version: Annotated[int, "this contract's version"]
    producer: Annotated[Producer, "who wrote the run: main (main.py), lm-eval, inspect"]
    model: Annotated[str, "the model's name or path"]
    benchmark: Annotated[str, "the benchmark file (main.py) or the tasks (harnesses)"]
    output_dir: Annotated[str, "the run folder"]
    metric: Annotated[str, "the metric every category shares, or \"mixed\" (then the overall figures are null)"]
    questions: Annotated[int, "distinct questions (samples of one question count once)"]
    answers: Annotated[int, "results rows: one per question and sample"]
    graded: Annotated[int, "rows with a verdict"]
    ungraded: Annotated[int, "answered rows without a verdict (no gold answer, a score that is not 0/1)"]
    errors: Annotated[int, "rows not answered"]
    correct: Annotated[int | None, "correct answers (null when metrics are mixed)"]
    accuracy: Annotated[float | None, "correct / graded (null when metrics are mixed or nothing is graded)"]
    accuracy_stderr: Annotated[float | None, "its standard error"]
    accuracy_ci95: Annotated[list[float] | None, "its 95% Wilson interval"]
    chance: Annotated[float | None, "mean chance accuracy of the graded questions (null when unknown)"]
    num_samples: Annotated[int, "answers per question (--num_samples, Inspect epochs); intervals cluster them"]
    per_category: Annotated[dict[str, CategoryStats], "by category (main.py) or task (harnesses)"]
    contradictory: Annotated[int, "answers whose letter and text name different choices"]
    negated: Annotated[int, "answers that name the gold only inside a negation (\"not Canberra\"), graded incorrect"]
    not_judgeable: Annotated[int, "answered rows left ungraded: their gold is a sentence that matching cannot judge "
                                  "(a false premise); counted in ungraded too"]
    log_likelihood: Annotated[LoglikStats | None, "--mc_scoring loglikelihood: acc_norm and acc_bytes"]
    skipped_rows: Annotated[int, "benchmark rows the grader cannot use, not asked"]
    skipped_ids: Annotated[list[Any], "their ids"]
    answered_this_run: Annotated[int, "answers made by this invocation (less after --resume)"]
    wall_time_s: Annotated[float, "seconds the answering took"]
    questions_per_second: Annotated[float | None, "answered_this_run / wall_time_s"]
    processes: Annotated[int, "processes that answered"]
    capture_activations: Annotated[bool, "were activations captured"]
    activation_store: Annotated[str | None, "files | shards (null without capture)"]
    activation_dir: Annotated[str | None, "where the records are (null without capture)"]
    details: Annotated[dict[str, Any], "the producer's own figures: main.py's decoding settings, lm-eval's "
                                       "results per task, Inspect's metrics per task"]
    interventions: NotRequired[Annotated[list[dict[str, Any]], "the edits made while answering (schema/"
                                         "interventions.py's entries); [] for a plain run (absent before version 4)"]]


CONTRACTS = (Summary, CategoryStats, AccuracyStats, LoglikStats)


def metric_of(producer: str) -> Callable[[Mapping[str, Any]], str]:
    """The name of what decided a row's `correct`: main.py's graders give accuracy; lm-eval's rows name
    their task's metric (acc, exact_match, ...); Inspect's their first scorer (grader "inspect:<scorer>")."""
    if producer == "lm-eval":
        return lambda row: str(row.get("metric") or "lm-eval")
    if producer == "inspect":
        return lambda row: str(row.get("grader") or "inspect").removeprefix("inspect:")
    return lambda row: "accuracy"


def build_summary(rows: list[dict[str, Any]], *, producer: Producer, model: str, benchmark: str, output_dir: str,
                  metric: Callable[[Mapping[str, Any]], str] | None = None, chance: Mapping[Any, float] | None = None,
                  skipped: Iterable[Any] = (), elapsed: float = 0.0, answered_now: int | None = None,
                  processes: int = 1, capture_activations: bool = False, activation_store: str | None = None,
                  activation_dir: str | None = None, details: Mapping[str, Any] | None = None,
                  interventions: Iterable[Mapping[str, Any]] = ()) -> Summary:
    """The summary of a run's final results rows (see the module docstring).

    metric(row): the name of what decided the row's `correct` (default: metric_of(producer)); chance:
    {question id: chance accuracy}
    (a category's chance is known when every graded row's is); skipped: ids of benchmark rows not asked;
    interventions: the entries of the edits the run answered under (schema/interventions.py)."""
    chance = chance or {}
    metric = metric or metric_of(producer)
    answered = [r for r in rows if not r.get("error")]
    graded = [r for r in answered if r.get("correct") is not None]
    several = any(r.get("sample") is not None for r in rows)
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("category") or _UNCATEGORIZED), []).append(row)
    per = {name: _category(group, metric, chance, several) for name, group in sorted(groups.items())}
    metrics = {stats["metric"] for stats in per.values()}
    shared = metrics.pop() if len(metrics) == 1 else (MIXED if metrics else "accuracy")
    overall = _stats(graded, chance, several) if shared != MIXED else None
    skipped = list(skipped)
    answered_now = len(rows) if answered_now is None else answered_now
    return {"format_version": FORMAT_VERSION, "producer": producer, "model": str(model), "benchmark": str(benchmark),
            "output_dir": str(output_dir), "metric": shared, "questions": _distinct(rows), "answers": len(rows),
            "graded": len(graded),
            "ungraded": len(answered) - len(graded), "errors": len(rows) - len(answered),
            "correct": overall["correct"] if overall else None,
            "accuracy": overall["accuracy"] if overall else None,
            "accuracy_stderr": overall["stderr"] if overall else None,
            "accuracy_ci95": overall["ci95"] if overall else None,
            "chance": overall["chance"] if overall else None,
            "num_samples": max([int(r["sample"]) + 1 for r in rows if isinstance(r.get("sample"), int)] or [1]),
            "per_category": per, "contradictory": sum(1 for r in graded if _note(r) and not _note(r).startswith(
                NEGATED_NOTE)), "negated": sum(1 for r in graded if _note(r).startswith(NEGATED_NOTE)),
            "not_judgeable": sum(1 for r in answered if r.get("correct") is None
                                 and _note(r).startswith(NOT_JUDGEABLE_NOTE)),
            "log_likelihood": _loglik(rows), "skipped_rows": len(skipped), "skipped_ids": skipped,
            "answered_this_run": answered_now, "wall_time_s": round(float(elapsed), 3),
            "questions_per_second": round(answered_now / elapsed, 3) if elapsed > 0 and answered_now else None,
            "processes": int(processes), "capture_activations": bool(capture_activations),
            "activation_store": activation_store if capture_activations else None,
            "activation_dir": activation_dir if capture_activations else None, "details": dict(details or {}),
            "interventions": [dict(e) for e in interventions]}


def _stats(rows: list[dict[str, Any]], chance: Mapping[Any, float], several: bool, key: str = "correct") -> AccuracyStats:
    """accuracy_stats of the rows' `key` verdicts; chance: their mean baseline when every row's is known."""
    known = [chance[r["id"]] for r in rows if _hashable(r.get("id")) and r["id"] in chance]
    baseline = sum(known) / len(known) if known and len(known) == len(rows) else None
    questions = [str(r.get("id")) for r in rows] if several else None
    return cast(AccuracyStats, accuracy_stats([r[key] for r in rows], chance=baseline if key == "correct" else None,
                                              questions=questions))


def _category(rows: list[dict[str, Any]], metric: Callable[[Mapping[str, Any]], str], chance: Mapping[Any, float],
              several: bool) -> CategoryStats:
    graded = [r for r in rows if not r.get("error") and r.get("correct") is not None]
    names = {metric(r) for r in rows if not r.get("error")} or {metric(rows[0])}
    stats = _stats(graded, chance, several)
    norm = [r for r in rows if isinstance(r.get("correct_norm"), bool)]
    byte = [r for r in rows if isinstance(r.get("correct_bytes"), bool)]
    return {"metric": names.pop() if len(names) == 1 else MIXED, "questions": _distinct(rows), "answers": len(rows),
            "errors": sum(1 for r in rows if r.get("error")), "n": stats["n"], "correct": stats["correct"],
            "accuracy": stats["accuracy"], "stderr": stats["stderr"], "ci95": stats["ci95"], "chance": stats["chance"],
            "small_n": stats["small_n"], "norm": _stats(norm, chance, several, "correct_norm") if norm else None,
            "bytes": _stats(byte, chance, several, "correct_bytes") if byte else None}


def _loglik(rows: list[dict[str, Any]]) -> LoglikStats | None:
    scored = [r for r in rows if isinstance(r.get("correct_norm"), bool)]
    if not scored:
        return None
    several = any(r.get("sample") is not None for r in scored)
    byte = [r for r in scored if isinstance(r.get("correct_bytes"), bool)]
    return {"scored_questions": len(scored),
            "chance_accuracy": sum(1 / max(1, len(r.get("choice_logprobs") or [0])) for r in scored) / len(scored),
            "norm": _stats(scored, {}, several, "correct_norm"),
            "bytes": _stats(byte, {}, several, "correct_bytes") if byte else None}


def _note(row: Mapping[str, Any]) -> str:
    return str(row.get("grader_note") or "")


def _distinct(rows: list[dict[str, Any]]) -> int:
    return len({str(r.get("id")) for r in rows})


def _hashable(value: Any) -> bool:
    try:
        hash(value)
    except TypeError:
        return False
    return True


# ----------------------------------------------------------------------------- the printed table

def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _interval(ci: list[float] | None) -> str:
    return "-" if ci is None else f"{ci[0]:.1%}-{ci[1]:.1%}"


_LOGLIK_WHAT = {"norm": "log-likelihood per character of the choice, lm-eval's acc_norm",
                "bytes": "log-likelihood per UTF-8 byte of the choice, lm-eval's acc_bytes"}


def format_summary(summary: Summary, results_file: str | None = None) -> str:
    """An aligned, human-readable table of a summary: every accuracy with its SE, 95% CI and chance;
    `results_file` (the run's results.jsonl) is named last when given."""
    lines = [f"model      {summary['model']}", f"benchmark  {summary['benchmark']}", _overall_line(summary)]
    if summary.get("interventions"):
        lines.insert(2, f"steered    {describe_interventions(summary.get('interventions') or [])}")
    loglik = summary["log_likelihood"]
    for name in ("norm", "bytes"):
        stats = loglik[name] if loglik else None
        if loglik and stats:
            lines.append(f"acc_{name:<6} {_pct(stats['accuracy'])} ± {_pct(stats['stderr'])} (SE), 95% CI "
                         f"{_interval(stats['ci95'])}, chance {loglik['chance_accuracy']:.1%}  ({stats['correct']}/"
                         f"{loglik['scored_questions']} correct by {_LOGLIK_WHAT[name]})")
    if summary["num_samples"] > 1:
        temperature = summary["details"].get("temperature")
        lines.append(f"samples    {summary['num_samples']} per question"
                     + (f" (temperature {temperature:g})" if isinstance(temperature, (int, float)) else "")
                     + "; accuracy counts every sample; SE and CI are clustered by question (Wilson over the "
                       "effective number of answers, n / design effect)")
    lines += ["", *_category_lines(summary)]
    lines += _notes(summary)
    qps = summary["questions_per_second"]
    lines += ["", f"wall time  {summary['wall_time_s']:.1f} s for {summary['answered_this_run']} questions"
              + (f" ({qps:.2f} questions/s)" if qps else "")]
    if results_file:
        lines.append(f"results    {results_file}")
    return "\n".join(lines)


def _overall_line(summary: Summary) -> str:
    if summary["metric"] == MIXED:
        return ("accuracy   - (the categories are scored by different metrics: "
                + ", ".join(sorted({s["metric"] for s in summary["per_category"].values()})) + "; see each category)")
    metric = "" if summary["metric"] == "accuracy" else f" by {summary['metric']}"
    accuracy = summary["accuracy"]
    return (f"accuracy   {_pct(accuracy) if accuracy is not None else '-'} ± {_pct(summary['accuracy_stderr'])} (SE), "
            f"95% CI {_interval(summary['accuracy_ci95'])}, chance {_pct(summary['chance'])}  "
            f"({summary['correct']}/{summary['graded']} correct{metric})")


def _category_lines(summary: Summary) -> list[str]:
    per = summary["per_category"]
    norm = any(s["norm"] for s in per.values())
    metric = any(s["metric"] != "accuracy" for s in per.values())
    errors = bool(summary["errors"])
    lines = [f"{'category':<20} {'n':>6} {'correct':>8} {'accuracy':>9} {'SE':>6} {'95% CI':>13} {'chance':>7}"
             + (f" {'acc_norm':>9} {'95% CI':>13}" if norm else "") + (f" {'errors':>7}" if errors else "")
             + ("  metric" if metric else "")]
    for name, s in per.items():
        n = f"{s['n']}{'*' if s['small_n'] else ''}"
        lines.append(f"{name:<20} {n:>6} {s['correct']:>8} {_pct(s['accuracy']):>9} {_pct(s['stderr']):>6} "
                     f"{_interval(s['ci95']):>13} {_pct(s['chance']):>7}"
                     + (f" {_pct(s['norm']['accuracy'] if s['norm'] else None):>9} "
                        f"{_interval(s['norm']['ci95'] if s['norm'] else None):>13}" if norm else "")
                     + (f" {s['errors']:>7}" if errors else "") + (f"  {s['metric']}" if metric else ""))
    if any(s["small_n"] for s in per.values()):
        lines.append(SMALL_N_NOTE)
    return lines


def _notes(summary: Summary) -> list[str]:
    lines = []
    if summary["contradictory"]:
        lines.append(f"contradictory {summary['contradictory']} answer(s) whose letter and text name different "
                     f"choices, graded incorrect (see the rows' grader_note)")
    if summary["negated"]:
        lines.append(f"negated    {summary['negated']} answer(s) naming the gold only after a negation (\"not X\"), "
                     f"graded incorrect (see the rows' grader_note)")
    if summary["not_judgeable"]:
        lines.append(f"not judged {summary['not_judgeable']} question(s) whose gold is a sentence (a false premise) "
                     f"that matching cannot judge, left ungraded (see the rows' grader_note)")
    if summary["errors"]:
        lines.append(f"errors     {summary['errors']} of {summary['answers']} questions not answered, left out of "
                     f"accuracy (see the rows' error field)")
    if summary["ungraded"]:
        lines.append(f"ungraded   {summary['ungraded']} question(s) without a verdict (not in the accuracy)")
    if summary["skipped_rows"]:
        ids = summary["skipped_ids"]
        shown = ", ".join(map(str, ids[:5])) + (", ..." if len(ids) > 5 else "")
        lines.append(f"skipped    {summary['skipped_rows']} benchmark row(s) the grader cannot use ({shown}); "
                     "see the warnings, or --strict to stop on them")
    return lines
