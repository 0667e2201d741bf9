"""A run folder's records, whichever store wrote them: per-question files or unit shards.

Public names:
    record_location(run_dir, row) -> ("file", path) | ("shard", path, row index) | None
    load_run_record(run_dir, question_id, layers=None) -> record
    iter_run_records(run_dir, layers=None) -> (results row, record), ...

Example:
    >>> rec = load_run_record("runs/r1", "geo-001", layers=["layer_3"])
    >>> for row, rec in iter_run_records("runs/r1", layers=["layer_3"]): ...

results.jsonl is the index: a row names its record with "activation_file" (the file store) or
"activation_shard" + "activation_row" (the shard store; see run_folder.SHARD_FIELDS). A row is
only written once what it names is complete, so a row never points into a missing record.
"""
import functools
import os

from . import run_folder
from .records import load_activations
from .shards import iter_shard_records


def record_location(run_dir, row, existing=None):
    """Where the record of results row `row` lives; None when it has none. A row that names a
    record that does not exist is a FileNotFoundError naming both. `existing`: a set of paths
    already found to exist (filled in here), so a shard is looked up once, not once per row."""
    shard_key, row_key = run_folder.SHARD_FIELDS
    if row.get(shard_key):
        location = ("shard", os.path.join(run_dir, row[shard_key]), row.get(row_key))
        if type(location[2]) is not int:
            raise ValueError(f"results row {row.get('id')!r} names shard {row[shard_key]!r} without an "
                             f"integer {row_key!r}: {run_folder.results_path(run_dir)}")
    elif row.get("activation_file"):
        location = ("file", os.path.join(run_dir, row["activation_file"]))
    else:
        return None
    if existing is None or location[1] not in existing:
        if not os.path.isfile(location[1]):
            raise FileNotFoundError(f"results row {row.get('id')!r} names {location[1]!r}, which does not exist")
        if existing is not None:
            existing.add(location[1])
    return location


def load_run_record(run_dir, question_id, layers=None):
    """The record of question `question_id` of the run (only `layers` if given), from either store.

    >>> load_run_record("runs/r1", "geo-001")["activations"]["layer_3"].shape
    """
    run_dir = os.fspath(run_dir)
    row = _rows_by_id(run_dir, *_stamp(run_dir)).get(str(question_id))
    if row is None:
        raise KeyError(f"no results row for question {question_id!r} in {run_folder.results_path(run_dir)}")
    location = record_location(run_dir, row)
    if location is None:
        raise ValueError(f"question {question_id!r} has no saved activations in {run_dir} "
                         f"(run without --capture_activations?)")
    if location[0] == "file":
        return load_activations(location[1], layers=layers)
    return next(iter_shard_records(location[1], [location[2]], layers))[1]


def _stamp(run_dir):
    st = os.stat(run_folder.results_path(run_dir))
    return st.st_mtime_ns, st.st_size


@functools.lru_cache(maxsize=4)
def _rows_by_id(run_dir, mtime_ns, size):
    """{id: row} of a run, cached while results.jsonl is unchanged (repeated notebook look-ups)."""
    return {str(row.get("id")): row for row in run_folder.read_results(run_dir)}


def iter_run_records(run_dir, layers=None):
    """(row, record) for every results row with a record: per-question files in results order,
    then the shards' records, each shard opened once (one shard's records in memory at a time).

    >>> for row, rec in iter_run_records("runs/r1", layers=["layer_3"]): ...
    """
    run_dir = os.fspath(run_dir)
    by_shard, existing = {}, set()
    for row in run_folder.read_results(run_dir):
        location = record_location(run_dir, row, existing)
        if location is None:
            continue
        if location[0] == "file":
            yield row, load_activations(location[1], layers=layers)
        else:
            by_shard.setdefault(location[1], {})[location[2]] = row
    for path, rows in by_shard.items():
        for index, record in iter_shard_records(path, sorted(rows), layers):
            yield rows[index], record
