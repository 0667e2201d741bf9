"""Benchmark file readers: every source format -> raw row dicts with where each came from. The
rows are normalized by rows.py; benchmark.py puts the two together. No torch needed.

Public names:
    read_records(name, skip_rows=0, subset=None, split=None) -> ([(where, record dict)], field names,
                 from_table: whether cells are text that may hold lists (CSV / TSV))
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
"""
import csv
import io
import json
import os

from .errors import BenchmarkError

__all__ = ["read_records", "HF_PREFIX", "FILE_KINDS"]

HF_PREFIX = "hf:"
FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv",
          ".parquet": "parquet"}
_LIST_KEYS = ("questions", "data", "rows", "items", "examples", "records")  # JSON object wrappers


def read_records(name, skip_rows=0, subset=None, split=None):
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
    if ext not in FILE_KINDS:
        raise BenchmarkError(f"{name}: unsupported benchmark file type {ext or '(no extension)'!r}; "
                             f"use one of {', '.join(FILE_KINDS)}, a datasets folder or hf:NAME")
    return FILE_KINDS[ext]


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

