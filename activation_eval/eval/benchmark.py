"""Benchmark files and formats -> normalized rows (no torch needed).

Public names:
    BenchmarkError      ValueError for any bad benchmark input; the message names the file, row
                        and field, and says how to fix it.
    DEFAULT_BENCHMARK   path (str) of the built-in benchmark, activation_eval/data/benchmark.jsonl.
    Benchmark           (rows, skipped): what read_benchmark returns.
    read_benchmark      read any supported source -> Benchmark; rows the grader cannot use are
                        skipped with a warning naming them (strict=True: an error).
    load_benchmark      read_benchmark(...).rows.
    normalize_row       one raw row dict -> a normalized row (raises BenchmarkError).
    stable_id           the id a row without one gets: "q-" + sha1(question)[:10].
Re-exported for older imports: format_question (prompts.py), grader_name, grade, grade_text,
grade_choice, grade_choice_all, grade_number, GRADERS (grading.py).

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
{"label": [...], "text": [...]}. What the gold answer means is decided by grading.resolve_gold
(see there: integer = 0-based index, letters, labels, lists, GSM8K "#### N").

A normalized row is
    {"id": str, "question": str, "answer": [str, ...] (accepted answers; letters for choices),
     "choices": [str, ...] or None, "category": str or None, "grader": str (e.g. "choice:index")}
"""
import collections
import csv
import fnmatch
import hashlib
import io
import json
import logging
import os

from .errors import BenchmarkError
from .grading import (
    GRADERS,
    LETTERS,
    GoldError,
    _scalar,
    grade,
    grade_choice,
    grade_choice_all,
    grade_number,
    grade_text,
    grader_name,
    resolve_gold,
)
from .prompts import format_question

__all__ = [
    "BenchmarkError", "DEFAULT_BENCHMARK", "Benchmark", "read_benchmark", "load_benchmark", "normalize_row",
    "stable_id", "format_question", "grader_name", "grade_text", "grade_choice", "grade_choice_all",
    "grade_number", "grade", "GRADERS",
]

log = logging.getLogger(__name__)

DEFAULT_BENCHMARK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                                 "benchmark.jsonl")

HF_PREFIX = "hf:"
_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
          ".parquet": "parquet"}
_LIST_KEYS = ("questions", "data", "rows", "items", "examples", "records")  # JSON object wrappers
_DEFAULT_FIELDS = {"question": "question", "answer": "answer", "choices": "choices",
                   "id": "id", "category": "category"}

Benchmark = collections.namedtuple("Benchmark", "rows skipped")
Benchmark.__doc__ = """rows: normalized rows in source order; skipped: [{"id", "where", "reason"}] of unusable rows."""


# ----------------------------------------------------------------------------- loading

def load_benchmark(path=None, **options):
    """Read a benchmark into normalized rows, in source order (options: see read_benchmark).

    Example:
        >>> rows = load_benchmark()       # or load_benchmark("qa.csv", question_field="prompt")
        >>> rows[0]["id"], rows[0]["question"], rows[0]["answer"], rows[0]["choices"]
        ('geo-001', 'What is the capital of France?', ['Paris'], None)
    """
    return read_benchmark(path, **options).rows


def read_benchmark(path=None, *, question_field="question", answer_field="answer", choices_field="choices",
                   id_field="id", category_field="category", skip_rows=0, subset=None, split=None, strict=False):
    """Read a benchmark -> Benchmark(rows, skipped). Raises BenchmarkError for a bad source.

    Example:
        >>> bench = read_benchmark("freshqa.csv", skip_rows=2, answer_field="answer_*")  # doctest: +SKIP
        >>> len(bench.rows), bench.skipped[:1]                                         # doctest: +SKIP

    A row the grader cannot use (no question, no usable answer, bad choices, a gold letter beyond
    the choices ...) is skipped with a warning naming its id and place; strict=True raises instead.
    Rows without an id get stable_id(question).
    """
    name = os.fspath(DEFAULT_BENCHMARK if path is None else path)
    fields = _check_field_names(question=question_field, answer=answer_field, choices=choices_field,
                                id=id_field, category=category_field)
    if isinstance(skip_rows, bool) or not isinstance(skip_rows, int) or skip_rows < 0:
        raise BenchmarkError(f"--skip_rows must be a whole number >= 0, got {skip_rows!r}")
    records, available, from_table = _read_records(name, skip_rows, subset, split)
    if not records:
        raise BenchmarkError(f"{name}: no rows found; add at least one question")
    _check_fields_present(fields, available, name)
    answer_columns = _answer_columns(fields["answer"], available, name)
    rows, wheres, skipped = [], [], []
    for where, record in records:
        try:
            rows.append(normalize_row(record, fields, answer_columns, from_table))
            wheres.append(where)
        except BenchmarkError as e:
            row_id = _skipped_id(record, fields)
            if strict:
                raise BenchmarkError(f"{name}: {where}: {e}{f' (row id {row_id})' if row_id else ''}") from None
            skipped.append({"id": row_id, "where": where, "reason": str(e)})
    for s in skipped:
        log.warning("%s: skipping %s%s: %s (--strict makes this an error)", name, s["where"],
                    f" (row id {s['id']})" if s["id"] else "", s["reason"])
    if not rows:
        raise BenchmarkError(f"{name}: no usable rows: all {len(skipped)} were skipped; the first, "
                             f"{skipped[0]['where']}: {skipped[0]['reason']}")
    _check_unique_ids(rows, wheres, name, fields["id"])
    return Benchmark(rows, skipped)


def _check_field_names(**fields):
    for role, field in fields.items():
        if not isinstance(field, str) or not field.strip():
            raise BenchmarkError(f"--{role}_field must be a non-empty column name, got {field!r}")
    return fields


def _read_records(name, skip_rows, subset, split):
    """([(where, record dict)], field names, whether cells are text that may hold lists)."""
    is_hf = name.startswith(HF_PREFIX)
    is_dataset_folder = os.path.isdir(name) and _is_saved_dataset(name)
    if subset is not None and not is_hf:
        raise BenchmarkError(f"--subset applies to hf:NAME benchmarks, not to {name}")
    if split is not None and not (is_hf or is_dataset_folder):
        raise BenchmarkError(f"--split applies to hf:NAME benchmarks and datasets folders, not to {name}")
    kind = None if is_hf or is_dataset_folder else _file_kind(name)
    if skip_rows and kind not in ("csv", "tsv"):
        raise BenchmarkError(f"--skip_rows applies to CSV and TSV files, not to {name}")
    if is_hf:
        return _from_dataset(_load_hf(name, subset, split), name, split) + (False,)
    if is_dataset_folder:
        return _from_dataset(_load_saved(name), name, split) + (False,)
    if kind == "parquet":
        return _read_parquet(name) + (False,)
    text = _read_text(name)
    if kind == "jsonl":
        return _parse_jsonl(text, name) + (False,)
    if kind == "json":
        return _parse_json(text, name) + (False,)
    return _parse_table(text, name, "\t" if kind == "tsv" else ",", skip_rows) + (True,)


def _file_kind(name):
    if not os.path.exists(name):
        raise BenchmarkError(f"{name}: benchmark file not found; check the path (a Hugging Face dataset "
                             f"is written hf:NAME)")
    if os.path.isdir(name):
        raise BenchmarkError(f"{name}: is a directory; pass the benchmark file inside it, or a folder "
                             "written by datasets' save_to_disk")
    ext = os.path.splitext(name)[1].lower()
    if ext not in _KINDS:
        raise BenchmarkError(f"{name}: unsupported benchmark file type {ext or '(no extension)'!r}; "
                             f"use one of {', '.join(_KINDS)}, a datasets folder or hf:NAME")
    return _KINDS[ext]


def _read_text(name):
    try:
        with open(name, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise BenchmarkError(f"{name}: not UTF-8 text ({e}); save the file as UTF-8") from e
    except OSError as e:
        raise BenchmarkError(f"{name}: cannot read the file ({e.strerror or e})") from e
    if not text.strip():
        raise BenchmarkError(f"{name}: the file is empty; add at least one question")
    return text


def _parse_jsonl(text, name):
    records, available = [], {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{name}: {where}: malformed JSON ({e.msg} at column {e.colno}); "
                                 "each line must be one JSON object") from e
        _require_object(record, where, name)
        records.append((where, record))
        available.update(dict.fromkeys(record))
    return records, list(available)


def _parse_json(text, name):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"{name}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                             "for one object a line, name the file .jsonl") from e
    if isinstance(data, dict):
        data = _unwrap_list(data, name)
    if not isinstance(data, list):
        raise BenchmarkError(f"{name}: expected a list of question objects, got {type(data).__name__}")
    return _from_dicts(data, name, "item")


def _from_dicts(data, name, label):
    records, available = [], {}
    for index, record in enumerate(data, start=1):
        where = f"{label} {index}"
        _require_object(record, where, name)
        records.append((where, record))
        available.update(dict.fromkeys(record))
    return records, list(available)


def _unwrap_list(data, name):
    lists = [key for key, value in data.items() if isinstance(value, list)]
    for key in _LIST_KEYS:
        if key in lists:
            return data[key]
    if len(lists) == 1:
        return data[lists[0]]
    found = ", ".join(map(repr, data)) or "none"
    raise BenchmarkError(f"{name}: a JSON object must hold the question list under one key such as "
                         f"'questions' or 'data' (keys found: {found})")


def _require_object(record, where, name):
    if not isinstance(record, dict):
        raise BenchmarkError(f"{name}: {where}: expected a JSON object like "
                             f'{{"question": ..., "answer": ...}}, got {type(record).__name__}')


def _parse_table(text, name, delimiter, skip_rows):
    """CSV / TSV after skip_rows preamble lines; `where` keeps the file's own line numbers."""
    lines = text.splitlines(keepends=True)
    if skip_rows >= len(lines):
        raise BenchmarkError(f"{name}: --skip_rows {skip_rows} skips the whole file ({len(lines)} lines)")
    reader = csv.DictReader(io.StringIO("".join(lines[skip_rows:])), delimiter=delimiter)
    try:
        available = [f for f in (reader.fieldnames or []) if f]
        records = [(f"line {reader.line_num + skip_rows}", record) for record in reader]
    except csv.Error as e:
        raise BenchmarkError(f"{name}: line {reader.line_num + skip_rows}: malformed table ({e})") from e
    return records, available


def _read_parquet(name):
    import pyarrow.parquet as pq
    try:
        data = pq.read_table(name).to_pylist()
    except Exception as e:  # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError, ...: one line for all
        raise BenchmarkError(f"{name}: cannot read as parquet ({_first_line(e)})") from e
    return _from_dicts(data, name, "row")


def _is_saved_dataset(folder):
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("dataset_dict.json", "state.json"))


def _load_saved(name):
    import datasets
    try:
        return datasets.load_from_disk(name)
    except Exception as e:  # noqa: BLE001 - datasets raises many types for a broken folder
        raise BenchmarkError(f"{name}: cannot read the datasets folder ({_first_line(e)})") from e


def _load_hf(name, subset, split):
    import datasets
    dataset = name[len(HF_PREFIX):]
    if not dataset:
        raise BenchmarkError("hf: needs a dataset name, e.g. hf:cais/mmlu with --subset all --split test")
    try:
        return datasets.load_dataset(dataset, subset, split=split)
    except Exception as e:  # noqa: BLE001 - hub, cache and builder errors have many types
        raise BenchmarkError(
            f"{name}: cannot load the dataset ({_first_line(e)}); check the name, --subset and --split. "
            "Offline, datasets reads only its local cache: load it once where the hub is reachable "
            "(or save_to_disk a copy and pass that folder)") from e


def _from_dataset(data, name, split):
    """Rows of a datasets Dataset, or of one split of a DatasetDict."""
    if isinstance(data, dict):                                  # a DatasetDict: one dataset per split
        splits = list(data.keys())
        if split is None:
            if len(splits) != 1:
                raise BenchmarkError(f"{name} has the splits {', '.join(splits)}; pass --split NAME")
            split = splits[0]
        if split not in data:
            raise BenchmarkError(f"{name} has no split {split!r}; its splits: {', '.join(splits)}")
        data = data[split]
    return _from_dicts(data.to_list(), name, "row")


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _check_fields_present(fields, available, name):
    for role, field in fields.items():
        required = role in ("question", "answer")
        if role == "answer" or field in available or (not required and field == _DEFAULT_FIELDS[role]):
            continue                                     # answer columns: _answer_columns
        found = ", ".join(map(repr, available)) or "none"
        raise BenchmarkError(f"{name}: no {role} field {field!r} in the file (fields found: {found}); "
                             f"pass --{role}_field NAME to name the {role} field")


def _answer_columns(spec, available, name):
    """The answer columns: one name, a comma list, or globs ("answer_*"), in the file's column order."""
    columns = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        matched = fnmatch.filter(available, part) if any(c in part for c in "*?[") else \
            [part] if part in available else []
        if not matched:
            found = ", ".join(map(repr, available)) or "none"
            raise BenchmarkError(f"{name}: no answer field {part!r} in the file (fields found: {found}); pass "
                                 "--answer_field NAME (several: a comma list, or a glob such as 'answer_*')")
        columns += [c for c in matched if c not in columns]
    if not columns:
        raise BenchmarkError(f"--answer_field must name at least one column, got {spec!r}")
    return columns


# ----------------------------------------------------------------------------- rows

def normalize_row(record, fields=None, answer_columns=None, from_table=False):
    """A normalized row (see the module docstring) from one raw row dict; raises BenchmarkError.

    Example:
        >>> row = normalize_row({"question": "1 + 1 = ?", "choices": ["1", "2", "3", "4"], "answer": 1})
        >>> row["answer"], row["grader"], row["id"]
        (['B'], 'choice:index', 'q-8f2e733e7e')
    """
    fields = {**_DEFAULT_FIELDS, **(fields or {})}
    if not isinstance(record, dict):
        raise BenchmarkError(f"a row must be a dict like {{'question': ..., 'answer': ...}}, got {record!r}")
    question = _scalar(record.get(fields["question"]))
    if question is None:
        raise BenchmarkError(f"field {fields['question']!r} must be text, got {type(record[fields['question']]).__name__}")
    if not question:
        raise BenchmarkError(f"empty question (field {fields['question']!r}); every row needs a question")
    choices, labels = _choice_list(record.get(fields["choices"]), from_table, fields["choices"])
    columns = answer_columns or [fields["answer"]]
    values = [_cell(record.get(c), from_table, c) for c in columns]
    answer = values[0] if len(values) == 1 else [v for value in values for v in _as_list(value)]
    try:
        answers, grader = resolve_gold(answer, choices, labels)
    except GoldError as e:
        raise GoldError(f"{e} (field {', '.join(map(repr, columns))})") from None
    row_id = _scalar(record.get(fields["id"]))
    if row_id is None:
        raise BenchmarkError(f"field {fields['id']!r} must be text or a number")
    category = _scalar(record.get(fields["category"]))
    if category is None:
        raise BenchmarkError(f"field {fields['category']!r} must be text")
    return {"id": row_id or stable_id(question), "question": question, "answer": answers,
            "choices": choices, "category": category or None, "grader": grader}


def _skipped_id(record, fields):
    """The id to name a skipped row by: its own, else the stable id of its question, else None."""
    if not isinstance(record, dict):
        return None
    row_id = _scalar(record.get(fields["id"]))
    question = _scalar(record.get(fields["question"]))
    return row_id or (stable_id(question) if question else None)


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _cell(value, from_table, field):
    """A table cell holding a list: a JSON list, or "|"-separated; other values unchanged."""
    if not (from_table and isinstance(value, str)):
        return value
    cell = value.strip()
    if cell.startswith("[") and cell.endswith("]"):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            raise BenchmarkError(f"field {field!r} looks like a JSON list but is not valid JSON: {cell!r}") from None
    return cell.split("|") if cell else []


def _choice_list(value, from_table, field):
    """(choice texts, ARC-style labels or None); (None, None) for a row without choices."""
    value = _cell(value, from_table, field)
    labels = None
    if isinstance(value, dict) and "text" in value:             # ARC: {"label": [...], "text": [...]}
        labels = value.get("label")
        value = value["text"]
        if not isinstance(labels, list) or not isinstance(value, list) or len(labels) != len(value):
            raise BenchmarkError(f"field {field!r}: 'label' and 'text' must be lists of the same length")
        labels = [_scalar(label) for label in labels]
        if any(not label for label in labels) or len(set(labels)) != len(labels):
            raise BenchmarkError(f"field {field!r}: labels must be distinct and non-empty, got {labels}")
    if value is None or value == "" or value == []:
        return None, None
    if not isinstance(value, list):
        raise BenchmarkError(f'field {field!r} must be a list of choices like ["Paris", "London"] '
                             f'(or {{"label": [...], "text": [...]}}), got {value!r}')
    choices = [_scalar(item) for item in value]
    if any(not c for c in choices):
        raise BenchmarkError(f"field {field!r} has an empty or non-text choice: {value!r}")
    if not 2 <= len(choices) <= len(LETTERS):
        raise BenchmarkError(f"field {field!r} must have 2 to {len(LETTERS)} choices, got {len(choices)}")
    return choices, labels


def stable_id(question):
    """The id of a row without one: "q-" + the first 10 hex digits of the sha1 of its question.

    Example:
        >>> stable_id("What is the capital of Peru?")
        'q-a37a7c2873'
    """
    return "q-" + hashlib.sha1(question.strip().encode("utf-8")).hexdigest()[:10]


def _check_unique_ids(rows, wheres, name, id_field):
    seen = {}
    for row, where in zip(rows, wheres):
        seen.setdefault(row["id"], []).append(where)
    duplicates = {key: places for key, places in seen.items() if len(places) > 1}
    if duplicates:
        listed = "; ".join(f"{key!r} at {', '.join(places)}" for key, places in duplicates.items())
        raise BenchmarkError(f"{name}: duplicate ids: {listed}; give each row a unique {id_field!r} "
                             "(rows without one get an id from the question text, so repeated "
                             "questions also collide)")
