"""Benchmark file readers: every source format -> raw row dicts with where each came from. The
rows are normalized by rows.py; benchmark.py puts the two together. No torch needed.

Public names:
    read_records(name, skip_rows=0, subset=None, split=None, *, limits=None, wanted=None)
                 -> ([(where, record dict)], field names, from_table: whether cells are text that may
                 hold lists (CSV / TSV)); limits: benchmark_limits (rows, bytes per cell and in all,
                 JSON depth) checked while reading; wanted(field names) -> the fields to keep
    HF_PREFIX    "hf:", the prefix of a Hugging Face dataset name
    FILE_KINDS   {file extension: kind} of the files read by extension

Example:
    >>> from activation_eval.eval.benchmark import DEFAULT_BENCHMARK    # activation_eval/data/benchmark.jsonl
    >>> records, fields, from_table = read_records(DEFAULT_BENCHMARK)
    >>> records[0][0], fields[:2], from_table
    ('line 1', ['id', 'question'], False)

Sources: .jsonl/.ndjson (one object a line), .json (a list of objects, or an object holding that
list under one key such as "questions" or "data"), .csv/.tsv (a header row, after `skip_rows`
preamble lines), .parquet, a folder written by datasets' save_to_disk, and "hf:NAME"
(datasets.load_dataset(NAME, subset, split=split): the hub, or offline its local cache). A source
with several splits needs `split`. Every failure is a BenchmarkError naming the file and place.
Text files are read whole (at most total_bytes), JSONL split at "\n" only; parquet and Arrow
through benchmark_arrow.py (by record batches, validated and measured before conversion).
"""
import csv
import io
import json
import os
import stat

from .benchmark_arrow import read_loaded_dataset, read_parquet, read_saved_dataset
from .benchmark_limits import DEPTH_HARD_MAX, Budget, json_depth_at, value_size
from .errors import BenchmarkError

__all__ = ["read_records", "HF_PREFIX", "FILE_KINDS"]

HF_PREFIX = "hf:"
FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
          ".parquet": "parquet"}
_LIST_KEYS = ("questions", "data", "rows", "items", "examples", "records")  # JSON object wrappers


def read_records(name, skip_rows=0, subset=None, split=None, *, limits=None, wanted=None):
    """([(where, record dict)], field names, whether cells are text that may hold lists).

    limits: a benchmark_limits.BenchmarkLimits (or its text, None: the defaults), checked while the
    file is read; wanted(field names) -> the fields to keep in each record (None: all; the others are
    neither kept nor measured)."""
    budget = Budget(name, limits)
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
        return read_loaded_dataset(_load_hf(name, subset, split), name, split, budget, wanted) + (False,)
    if is_dataset_folder:
        return read_saved_dataset(name, split, budget, wanted) + (False,)
    if kind == "parquet":
        return read_parquet(name, budget, wanted) + (False,)
    text = _read_text(name, budget)
    if kind == "jsonl":
        return _parse_jsonl(text, name, budget, wanted) + (False,)
    if kind == "json":
        return _parse_json(text, name, budget, wanted) + (False,)
    return _parse_table(text, name, "\t" if kind == "tsv" else ",", skip_rows, budget, wanted) + (True,)


def _file_kind(name):
    if not os.path.exists(name):
        raise BenchmarkError(f"{name}: benchmark file not found; check the path (a Hugging Face dataset "
                             f"is written hf:NAME)")
    if os.path.isdir(name):
        raise BenchmarkError(f"{name}: is a directory; pass the benchmark file inside it, or a folder "
                             "written by datasets' save_to_disk")
    ext = os.path.splitext(name)[1].lower()
    if ext not in FILE_KINDS:
        raise BenchmarkError(f"{name}: unsupported benchmark file type {ext or '(no extension)'!r}; "
                             f"use one of {', '.join(FILE_KINDS)}, a datasets folder or hf:NAME")
    return FILE_KINDS[ext]


def _read_text(name, budget):
    """The file's text: a regular file of at most total_bytes bytes (a FIFO would block, /dev/zero never end)."""
    try:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))     # a FIFO: no wait for a writer
        with open(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise BenchmarkError(f"{name}: not a regular file; pass a benchmark file")
            data = f.read(budget.limits.total_bytes + 1)
    except OSError as e:
        raise BenchmarkError(f"{name}: cannot read the file ({e.strerror or e})") from e
    if len(data) > budget.limits.total_bytes:
        budget.total(len(data), "the whole file")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise BenchmarkError(f"{name}: not UTF-8 text ({e}); save the file as UTF-8") from None
    del data
    if not text.strip():
        raise BenchmarkError(f"{name}: the file is empty; add at least one question")
    return text


def _json_value(text, name, where, budget):
    """json.loads(text), its nesting bounded: a RecursionError (json's C parser stops near Python's
    recursion limit) or a value nested deeper than the limit is one BenchmarkError at `where`
    (a line number for a whole .json file is found by json_depth_at); huge integers too."""
    depth = budget.limits.depth
    try:
        return json.loads(text)
    except RecursionError:
        pass
    except json.JSONDecodeError:
        raise
    except ValueError as e:                          # e.g. an integer of more than 4300 digits
        raise BenchmarkError(f"{name}: {where}: {_first_line(e)}") from None
    at = json_depth_at(text, depth)
    if where is None:
        where = f"line {text.count(chr(10), 0, at) + 1}" if at is not None else "the file"
    needed = DEPTH_HARD_MAX + 1 if at is None or json_depth_at(text, DEPTH_HARD_MAX) is not None else None
    raise BenchmarkError(f"{name}: {where}: JSON nested deeper than {min(depth, DEPTH_HARD_MAX)} levels (depth); a "
                         f"benchmark row needs a few; {budget.limits.hint('depth', needed)}")


class _TooDeep(BenchmarkError):
    def __init__(self, where, message):
        super().__init__(message)
        self.where = where


def _keep(record, wanted_fields, where, budget, json_depth=0):
    """The wanted fields of one row, each measured (bytes per cell, total, nesting)."""
    if wanted_fields is not None:
        record = {k: v for k, v in record.items() if k in wanted_fields}
    for field, value in record.items():
        size, depth = value_size(value, budget.limits.depth) if not isinstance(value, str) else \
            (len(value) if value.isascii() else len(value.encode("utf-8", "surrogatepass")), 0)
        if depth + json_depth > budget.limits.depth:
            needed = value_size(value, DEPTH_HARD_MAX)[1] + json_depth
            raise _TooDeep(where, f"{budget.name}: {where}: field {field!r} is nested deeper than "
                                 f"{budget.limits.depth} levels (depth); {budget.limits.hint('depth', needed)}")
        budget.cell(field, size, where)
    return record


def _wanted_fields(available, wanted):
    return None if wanted is None else set(wanted(list(available)))


def _parse_jsonl(text, name, budget, wanted):
    """One JSON object a line; lines end at \\n only (U+2028, U+0085 ... are text inside a JSON string)."""
    lines, available = [], {}
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip(" \t\r"):
            continue
        where = f"line {lineno}"
        budget.rows(1, where)
        try:
            record = _json_value(line, name, where, budget)
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{name}: {where}: malformed JSON ({e.msg} at column {e.colno}); "
                                 "each line must be one JSON object") from None
        _require_object(record, where, name)
        lines.append((where, record))
        available.update(dict.fromkeys(record))
    keep = _wanted_fields(available, wanted)
    return [(where, _keep(record, keep, where, budget, 1)) for where, record in lines], list(available)


def _parse_json(text, name, budget, wanted):
    try:
        data = _json_value(text, name, None, budget)
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"{name}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                             "for one object a line, name the file .jsonl") from None
    if isinstance(data, dict):
        data = _unwrap_list(data, name)
    if not isinstance(data, list):
        raise BenchmarkError(f"{name}: expected a list of question objects, got {type(data).__name__}")
    budget.rows(len(data), f"item {len(data)}")
    records, available = _from_dicts(data, name, "item")
    keep = _wanted_fields(available, wanted)
    try:
        return [(where, _keep(record, keep, where, budget, 2)) for where, record in records], available
    except _TooDeep as e:                                # name the line too
        at = json_depth_at(text, budget.limits.depth)
        line = f"line {text.count(chr(10), 0, at) + 1} ({e.where})" if at is not None else e.where
        raise BenchmarkError(str(e).replace(f"{name}: {e.where}:", f"{name}: {line}:", 1)) from None


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


def _parse_table(text, name, delimiter, skip_rows, budget, wanted):
    """CSV / TSV after skip_rows preamble lines; `where` keeps the file's own line numbers. A field is
    at most cell_bytes characters (csv.field_size_limit, restored after)."""
    lines = text.splitlines(keepends=True)
    if skip_rows >= len(lines):
        raise BenchmarkError(f"{name}: --skip_rows {skip_rows} skips the whole file ({len(lines)} lines)")
    reader = csv.DictReader(io.StringIO("".join(lines[skip_rows:])), delimiter=delimiter)
    del lines
    previous = csv.field_size_limit(min(budget.limits.cell_bytes, 2 ** 31 - 1))
    records = []
    try:
        available = [f for f in (reader.fieldnames or []) if f]
        keep = _wanted_fields(available, wanted)
        for record in reader:
            where = f"line {reader.line_num + skip_rows}"
            budget.rows(1, where)
            records.append((where, _keep(record, keep, where, budget)))
    except csv.Error as e:
        where = f"line {reader.line_num + skip_rows}"
        if "field larger than field limit" in str(e):               # raised inside the line being read
            budget.cell("(a field)", budget.limits.cell_bytes + 1, f"line {reader.line_num + skip_rows + 1}")
        raise BenchmarkError(f"{name}: {where}: malformed table ({e})") from None
    finally:
        csv.field_size_limit(previous)
    return records, available


def _is_saved_dataset(folder):
    return any(os.path.isfile(os.path.join(folder, f)) for f in ("dataset_dict.json", "state.json"))


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


def _first_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

