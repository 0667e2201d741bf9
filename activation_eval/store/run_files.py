"""The run writer's file work: results.jsonl and its parts, shard names, and removing orphan shards.

Only store/run_writer.py calls these (the one writer of a run folder); tests call them to check the
policies alone.

Public names:
    append_results(path, rows)     rows appended to results.jsonl or a part, fsynced, never through a link
    repair_results(path) -> rows   a results file rewritten without its torn lines (only if it has any)
    merge_results(run_dir, order=()) -> rows   results.jsonl and every part folded into results.jsonl
    shard_name(rows)               a shard's name: its unit key, or a digest of its units' (rows') keys
    remove_unreferenced_shards(run_dir, activations_dir, rows) -> int   this run's shards no row names

Example:
    >>> os.makedirs("runs/p1/shards")
    >>> append_results("runs/p1/results.jsonl", [{"id": "q1", "v": 1}, {"id": "q2", "v": 1}])
    >>> append_results("runs/p1/shards/results.rank1.jsonl", [{"id": "q1", "v": 2}])      # a newer part
    >>> [(row["id"], row["v"]) for row in merge_results("runs/p1", order=["q2", "q1"])]
    [('q2', 1), ('q1', 2)]
    >>> shard_name([{"id": "q1", "unit": "3f2a9c01b2d4"}, {"id": "q2", "unit": "3f2a9c01b2d4"}])
    '3f2a9c01b2d4'

A results file is appended to (flushed, fsynced) and read whole; a torn last line (a writer killed
mid-line) is dropped, and logged, by the one reader (run_folder.scan_results): repair_results
rewrites the file without it before appending again. Parts (shards/results.rank<R>.jsonl) are the
rows of the several processes of one run; merging keeps the latest row of each key.
"""
import hashlib
import logging
import os
import re
import stat

from .. import schema
from . import run_folder
from .atomic import encode_text, write_text_atomic
from .errors import CorruptFileError
from .save_dir import owns
from .shards import read_shard_index

log = logging.getLogger(__name__)
_SHARD_FILE = re.compile(r"[0-9a-f]{12}\.safetensors|[0-9a-f]{16}\.safetensors")


def shard_name(rows):
    """A shard's name: the unit key of a one-unit shard (main.py's rows carry their unit); else the first
    16 hex digits of the SHA-256 of its units' keys, or of its rows' keys, in order."""
    units = list(dict.fromkeys(row.get(schema.UNIT) for row in rows))
    if all(isinstance(u, str) for u in units):
        if len(units) == 1:
            return units[0]
        text = " ".join(units)
    else:
        text = "\x1f".join(f"{row.get(schema.ID)}\x1e{row.get(schema.SAMPLE)}" for row in rows)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def append_results(path, rows):
    """Append rows to a results file (or a part) and make them durable before anything else happens;
    never through a symlink."""
    with run_folder.open_own_file(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT) as f:
        f.write(encode_text(run_folder.jsonl(rows)))       # a lone surrogate in a row: its JSON escape
        f.flush()
        os.fsync(f.fileno())


def repair_results(path):
    """Rewrite a results file without its torn lines (atomically; only if it has any) so that appending
    after it is safe; returns its rows."""
    rows, dropped = run_folder.scan_results(path)
    if dropped:
        run_folder.warn_dropped(path, dropped, "dropped")
        write_json_lines(path, rows)
    elif os.path.exists(path):
        _end_with_newline(path)
    return rows


def write_json_lines(path, rows):
    write_text_atomic(path, run_folder.jsonl(rows))


def _end_with_newline(path):
    """A file whose last line is complete but lacks its newline gets one (appends start a new line)."""
    with run_folder.open_own_file(path, os.O_RDWR) as f:
        f.seek(0, os.SEEK_END)
        if f.tell():
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())


def merge_results(run_dir, order=()):
    """Fold results.jsonl and every part (shards/results.rank<R>.jsonl) into results.jsonl (atomically),
    rows of the ids in `order` first in that order (the samples of an id by sample index), then the rest;
    a row key written twice keeps its latest row (parts are newer than results.jsonl). Removes the parts
    and an empty shards/ folder."""
    path = run_folder.results_path(run_dir)
    parts = run_folder.shard_files(run_dir)
    stored = {}
    for source in [path] + parts:
        rows, dropped = run_folder.scan_results(source)
        run_folder.warn_dropped(source, dropped, "dropped")
        for row in rows:
            key = run_folder.hashable_key(row)
            stored.pop(key, None)
            stored[key] = row
    by_id = {}
    for row in stored.values():
        by_id.setdefault(run_folder.hashable(row.get(schema.ID)), []).append(row)
    ordered = []
    for qid in list(dict.fromkeys(order)) + list(by_id):
        ordered += sorted(by_id.pop(qid, []), key=lambda r: _sample_order(r.get(schema.SAMPLE)))
    write_json_lines(path, ordered)
    for part in parts:
        os.remove(part)
    try:
        os.rmdir(os.path.join(os.fspath(run_dir), run_folder.SHARDS_DIR))   # also when no process had work left
    except OSError:
        pass                                                               # absent, or something else lives there
    return ordered


def _sample_order(sample):
    return (0, sample) if isinstance(sample, int) else (1, str(sample))


def remove_unreferenced_shards(run_dir, activations_dir, rows):
    """Remove this run's shards that no results row names: shards written just before a crash,
    whose rows were written again into other shards. Returns the number removed.

    Deletes only what is surely the run's own, judged on resolved paths: the activations folder
    must be the run's (inside the run folder, or an external save dir whose owner file names this
    run: save_dir.owns) and units/ in it a real folder, not a link; a shard must be a regular file
    there (not a link) with a name this tool gives (12 or 16 hex digits), named by no row (compared
    after resolving), and its index must list only question ids of `rows`. Anything else, e.g.
    another run's shards in a shared scratch folder, another tool's *.safetensors, or a shard that
    cannot be read, is left alone."""
    run_dir, activations_dir = os.fspath(run_dir), os.fspath(activations_dir)
    units = os.path.join(activations_dir, run_folder.UNITS_DIR)
    if not owns(run_dir, activations_dir) or os.path.islink(units) or not os.path.isdir(units):
        return 0
    units_real = os.path.join(os.path.realpath(activations_dir), run_folder.UNITS_DIR)
    named = {os.path.realpath(os.path.join(run_dir, row[schema.ACTIVATION_SHARD])) for row in rows
             if isinstance(row.get(schema.ACTIVATION_SHARD), str)}
    ids = {run_folder.shard_row_id(row) for row in rows}
    removed = kept = 0
    for name in sorted(os.listdir(units)):
        path = os.path.join(units, name)
        if not _SHARD_FILE.fullmatch(name) or os.path.realpath(path) in named:
            continue
        try:
            if not stat.S_ISREG(os.lstat(path).st_mode) or os.path.realpath(path) != os.path.join(units_real, name):
                continue
            if not set(read_shard_index(path).ids) <= ids:
                kept += 1
                continue
        except (OSError, CorruptFileError):
            kept += 1
            continue
        os.remove(path)
        removed += 1
    if removed:
        log.info("removed %d shard(s) that no results row names (written before an interruption; their "
                 "questions were answered again)", removed)
    if kept:
        log.warning("left %d unreferenced shard file(s) in %s: not readable as this run's shards (another "
                    "run's or tool's files?)", kept, units)
    return removed


