"""Benchmark files and formats -> normalized rows (no torch needed).

Public names:
    BenchmarkError      ValueError for any bad benchmark input; the message names the file, row
                        and field, and says how to fix it.
    DEFAULT_BENCHMARK   path (str) of the built-in benchmark, activation_eval/data/benchmark.jsonl.
    Benchmark           (rows, skipped): what read_benchmark returns.
    read_benchmark      read any supported source -> Benchmark; rows the grader cannot use are
                        skipped with a warning naming them (strict=True: an error).
    load_benchmark      read_benchmark(...).rows.
    BenchmarkLimits, DEFAULT_LIMITS, parse_limits   (benchmark_limits.py) what a reader may materialise:
                        rows, bytes per cell and in all, JSON depth (--benchmark_limits).
Re-exported for older imports: normalize_row, stable_id (rows.py: row normalisation), HF_PREFIX
(benchmark_files.py: the file readers), format_question (prompts.py), grader_name (gold.py), grade,
grade_text, grade_choice, grade_choice_all, grade_number, GRADERS (grading.py).

Example:
    >>> from activation_eval.eval.benchmark import load_benchmark, format_question, grade
    >>> rows = load_benchmark()                          # the built-in benchmark
    >>> prompt = format_question(rows[0])                # feed to the model
    >>> grade("The capital of France is Paris.", {"question": "Capital of France?", "answer": "Paris"})
    {'extracted': 'Paris', 'correct': True, 'grader': 'text'}

Sources: .jsonl/.ndjson (one object a line), .json (a list of objects, or an object holding that
list under one key such as "questions" or "data"), .csv/.tsv (a header row, after `skip_rows`
preamble lines; answer and choices cells may be a JSON list or "|"-separated), .parquet, a folder
written by datasets' save_to_disk, and "hf:NAME" (datasets.load_dataset(NAME, subset, split=split):
the hub, or offline its local cache). A source with several splits needs `split`.

answer_field may name several columns, as a comma list ("answer_0,answer_1") or a glob
("answer_*"): their non-empty cells are accepted aliases. Choices may be a list or ARC's
{"label": [...], "text": [...]}. What the gold answer means is decided by gold.resolve_gold
(see there: integer = 0-based index, letters, labels, lists, GSM8K "#### N"). A file without an answer
column but with Hugging Face TruthfulQA's mc1_targets (or mc2_targets) is read as multiple choice from
it (rows.py; --answer_field mc2_targets picks mc2); a false_premise column is carried into the rows.

A normalized row is
    {"id": str, "question": str, "answer": [str, ...] (accepted answers; letters for choices),
     "choices": [str, ...] or None, "category": str or None, "grader": str (e.g. "choice:index")}
"""
import collections
import logging
import os

from .benchmark_files import read_records
from .benchmark_limits import DEFAULT_LIMITS, BenchmarkLimits, parse_limits
from .errors import BenchmarkError
from .gold import grader_name
from .grading import GRADERS, grade, grade_choice, grade_choice_all, grade_number, grade_text
from .prompts import format_question
from .rows import (
    FALSE_PREMISE,
    answer_columns_of,
    check_field_names,
    check_fields_present,
    check_unique_ids,
    normalize_row,
    skipped_id,
    stable_id,
)

SKIPS_LOGGED = 10          # skipped rows warned about one by one; the rest are counted in one line
REASON_CHARS = 300         # a skip reason quotes the cell: cut, with the bytes left out counted


def _short(reason):
    return reason if len(reason) <= REASON_CHARS else f"{reason[:REASON_CHARS]}... ({len(reason):,} characters)"

__all__ = [
    "BenchmarkError", "DEFAULT_BENCHMARK", "Benchmark", "read_benchmark", "load_benchmark", "BenchmarkLimits",
    "DEFAULT_LIMITS", "parse_limits", "normalize_row",
    "stable_id", "format_question", "grader_name", "grade_text", "grade_choice", "grade_choice_all",
    "grade_number", "grade", "GRADERS",
]

log = logging.getLogger(__name__)

DEFAULT_BENCHMARK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                                 "benchmark.jsonl")


Benchmark = collections.namedtuple("Benchmark", "rows skipped")
Benchmark.__doc__ = """rows: normalized rows in source order; skipped: [{"id", "where", "reason"}] of unusable rows."""


# ----------------------------------------------------------------------------- loading

TARGETS_FIELDS = ("mc1_targets", "mc2_targets")     # Hugging Face TruthfulQA's multiple_choice columns


def targets_field(answer_field, available):
    """The answer column to read: `answer_field`, or mc1_targets (else mc2_targets) when it is the default
    "answer" and the file has no such column but has a targets column (TruthfulQA's multiple_choice)."""
    if answer_field != "answer" or answer_field in available:
        return answer_field
    return next((f for f in TARGETS_FIELDS if f in available), answer_field)


def load_benchmark(path=None, **options):
    """Read a benchmark into normalized rows, in source order (options: see read_benchmark).

    Example:
        >>> rows = load_benchmark()       # or load_benchmark("qa.csv", question_field="prompt")
        >>> rows[0]["id"], rows[0]["question"], rows[0]["answer"], rows[0]["choices"]
        ('geo-001', 'What is the capital of France?', ['Paris'], None)
    """
    return read_benchmark(path, **options).rows


def read_benchmark(path=None, *, question_field="question", answer_field="answer", choices_field="choices",
                   id_field="id", category_field="category", skip_rows=0, subset=None, split=None, strict=False,
                   limits=None):
    """Read a benchmark -> Benchmark(rows, skipped). Raises BenchmarkError for a bad source.

    Example:
        >>> import tempfile
        >>> path = os.path.join(tempfile.mkdtemp(), "freshqa.csv")
        >>> lines = ["FreshQA, as downloaded", "(a second preamble line)", "id,question,answer_0,answer_1",
        ...          "q1,Who wrote Hamlet?,Shakespeare,William Shakespeare", "q2,Capital of Peru?,,"]
        >>> _ = open(path, "w").write("\\n".join(lines) + "\\n")
        >>> bench = read_benchmark(path, skip_rows=2, answer_field="answer_*")
        >>> len(bench.rows), bench.rows[0]["answer"], bench.skipped[0]["id"], bench.skipped[0]["where"]   # q2: a warning
        (1, ['Shakespeare', 'William Shakespeare'], 'q2', 'line 5')

    A row the grader cannot use (no question, no usable answer, bad choices, a gold letter beyond
    the choices ...) is skipped with a warning naming its id and place; strict=True raises instead.
    Rows without an id get stable_id(question). limits: a BenchmarkLimits or its text
    ("rows=N,cell_bytes=N,total_bytes=N,depth=N"; None: the defaults), checked while the file is
    read; only the fields named above are kept and measured.
    """
    name = os.fspath(DEFAULT_BENCHMARK if path is None else path)
    fields = check_field_names(question=question_field, answer=answer_field, choices=choices_field,
                                id=id_field, category=category_field)
    if isinstance(skip_rows, bool) or not isinstance(skip_rows, int) or skip_rows < 0:
        raise BenchmarkError(f"--skip_rows must be a whole number >= 0, got {skip_rows!r}")
    limits = parse_limits(limits)

    def wanted(available):                    # the columns the rows are built from
        if not available:
            return []
        fields.update(answer=targets_field(fields["answer"], available))
        check_fields_present(fields, available, name)
        answers = answer_columns_of(fields["answer"], available, name)
        extra = [FALSE_PREMISE] if FALSE_PREMISE in available else []
        return [fields[role] for role in ("question", "choices", "id", "category")] + answers + extra
    records, available, from_table = read_records(name, skip_rows, subset, split, limits=limits, wanted=wanted)
    if not records:
        raise BenchmarkError(f"{name}: no rows found; add at least one question")
    fields.update(answer=targets_field(fields["answer"], available))
    check_fields_present(fields, available, name)
    answer_columns = answer_columns_of(fields["answer"], available, name)
    rows, wheres, skipped = [], [], []
    for where, record in records:
        try:
            rows.append(normalize_row(record, fields, answer_columns, from_table))
            wheres.append(where)
        except BenchmarkError as e:
            row_id = skipped_id(record, fields)
            if strict:
                raise BenchmarkError(f"{name}: {where}: {e}{f' (row id {row_id})' if row_id else ''}") from None
            skipped.append({"id": row_id, "where": where, "reason": str(e)})
    for s in skipped[:SKIPS_LOGGED]:
        log.warning("%s: skipping %s%s: %s (--strict makes this an error)", name, s["where"],
                    f" (row id {s['id']})" if s["id"] else "", _short(s["reason"]))
    if len(skipped) > SKIPS_LOGGED:
        log.warning("%s: skipping %s more rows (%s rows in all; --strict makes this an error)", name,
                    f"{len(skipped) - SKIPS_LOGGED:,}", f"{len(skipped):,}")
    if not rows:
        raise BenchmarkError(f"{name}: no usable rows: all {len(skipped):,} were skipped; the first, "
                             f"{skipped[0]['where']}: {_short(skipped[0]['reason'])}")
    check_unique_ids(rows, wheres, name, fields["id"])
    return Benchmark(rows, skipped)


