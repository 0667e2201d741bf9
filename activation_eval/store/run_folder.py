"""The run folder: every file name in it, and the one reader of results.jsonl.

Public names:
    RESULTS_FILE, SUMMARY_FILE, CONFIG_FILE, ACTIVATIONS_DIR, SHARDS_DIR, LOCK_FILE  the names, in ONE place
    RECORD_FORMATS                           (".pkl", ".safetensors"): record format = extension
    UNITS_DIR, SHARD_FIELDS                  the shard store: folder of unit shards, the row fields
                                             ("activation_shard", "activation_row") naming a record
    unit_shard_path(directory, shard_key)    <directory>/units/<shard key>.safetensors
    is_run_folder(path)                      does it hold results.jsonl?
    results_path(run_dir), config_path(run_dir), summary_path(run_dir), lock_path(run_dir)
    read_run_config(run_dir), read_summary(run_dir)   run_config.json / summary.json as a dict (the
                                             one reader of each: regular file, size-capped, an object)
    shard_files(run_dir)                     the shard files present, sorted
    shard_row_id(row)                        the id a shard's index gives a row's record ("<id>@s<k>" for samples)
    record_path(directory, question_id, fmt, sample=None)  a filesystem-safe record file path for a
                                             question id (and sample index: "<id>@s<k>")
    check_record_names(directory, ids, fmt)  ValueError if two ids would share a record file
    record_file_problem(path)                None, or why a record file is missing or incomplete (cheap)
    hashable_key(row)                        schema.row_key(row) as a dict key (a list or object id: its JSON text)
    iter_record_files(directory)             sorted record files of a folder or run folder
    read_results(run_dir)                    rows of results.jsonl: every valid row, torn lines dropped
    scan_results(path)                       (rows, dropped line numbers) of any results file
    open_own_file(path, flags), own_folder(run_dir, name)   a run's own file / folder, never through a link
    jsonl(rows), warn_dropped(path, dropped, action), hashable(key)   helpers the run writer shares
Writing (appending, repairing, merging results.jsonl and its parts) is store/run_writer.py's alone.

A results row is identified by schema.row_key(row): its `id` (the benchmark question's id) or, for rows
with a `sample` (the answer's index with --num_samples > 1), the pair (id, sample).

Example:
    >>> rows = read_results("runs/r1")                 # a finished run of 6 questions
    >>> len(rows), rows[0]["id"], rows[0]["activation_file"]
    (6, 'geo-001', 'activations/geo-001.pkl')
    >>> accuracy = sum(bool(r["correct"]) for r in rows) / len(rows)
    >>> record_path("runs/r1/activations", "geo/001 (b)", "safetensors")
    'runs/r1/activations/geo_001__b_-cca2507873a08ab831222441ab33d535.safetensors'

Layout of a run folder:
    run_config.json   the settings (checked on --resume)
    results.jsonl     one graded row per question, appended (flushed, fsynced) as each question ends,
                      rewritten in benchmark order when the run completes
    shards/           several processes: results.rank<R>.jsonl per process, appended like
                      results.jsonl; merged into it (and removed) at the end or at a --resume
    activations/      one record file per question (written before its results row), or with
                      --activation_store shards: activations/units/<shard key>.safetensors, one
                      per group of units of questions (written before their rows; the key is
                      the unit key of a one-unit shard: run/shard_buffer.py)
    summary.json      counts, accuracy overall and per category, errors, wall time, questions per second
    .run.lock         exists while a run holds the folder (run/lock.py); holds that run's pid

One results.jsonl policy, shared by every reader: each line that is a JSON object is a row; a line
that is not (a writer killed mid-line, a torn write) is dropped and its line number is logged.
Valid rows after a bad line are kept.
"""
import errno
import glob
import hashlib
import json
import logging
import os
import re
import stat

from .. import schema
from .bounded_json import loads, loads_lines
from .errors import CorruptFileError, StorageError
from .files import read_regular_bytes
from .safetensors_file import checked_header

log = logging.getLogger(__name__)

RESULTS_FILE, SUMMARY_FILE, CONFIG_FILE = "results.jsonl", "summary.json", "run_config.json"
ACTIVATIONS_DIR, SHARDS_DIR = "activations", "shards"
LOCK_FILE = ".run.lock"
RECORD_FORMATS = (".pkl", ".safetensors")
UNITS_DIR = "units"                 # in the activations folder: never a record file's name (no subfolders)
SHARD_FIELDS = (schema.ACTIVATION_SHARD, schema.ACTIVATION_ROW)
_SHARD_GLOB = "results.rank*.jsonl"
_MAX_HEADER = 100_000_000                       # safetensors' own header size limit
MAX_JSON_FILE_BYTES = 16 * 2**20                 # run_config.json, summary.json: far more than they hold
MAX_RESULTS_BYTES = 64 * 2**30                   # results.jsonl (read whole): a bound, not a budget
_HASH_HEX = 32                                   # 128 bits of sha256 in a changed id's file name
_HASH_SUFFIX = re.compile(r"-[0-9a-f]{10,}$")    # looks like a hash suffix (also the older 10-digit one)


def is_run_folder(path):
    """Does it hold results.jsonl (of any kind: reading one that is not a regular file says so)?"""
    return os.path.lexists(os.path.join(os.fspath(path), RESULTS_FILE))


def results_path(run_dir):
    return os.path.join(os.fspath(run_dir), RESULTS_FILE)


def config_path(run_dir):
    return os.path.join(os.fspath(run_dir), CONFIG_FILE)


def summary_path(run_dir):
    return os.path.join(os.fspath(run_dir), SUMMARY_FILE)


def lock_path(run_dir):
    return os.path.join(os.fspath(run_dir), LOCK_FILE)


def read_run_config(run_dir):
    """The settings of the run (run_config.json) as a dict.

    >>> read_run_config("runs/r1")["capture_activations"]
    True

    FileNotFoundError if it is missing; CorruptFileError (a ValueError) naming it if it is not a
    regular file, larger than MAX_JSON_FILE_BYTES, or not a JSON object."""
    return _read_json_object(config_path(run_dir), "the run's settings")


def read_summary(run_dir):
    """summary.json of the run as a dict (errors as read_run_config)."""
    return _read_json_object(summary_path(run_dir), "the run's summary")


def _read_json_object(path, what):
    data = read_regular_bytes(path, MAX_JSON_FILE_BYTES, what=what)
    try:
        value = loads(data)              # bounded: nesting, values; UTF-8 only
    except ValueError as exc:            # UnicodeDecodeError and JSONLimitError are ones too
        raise CorruptFileError(f"cannot read {what} (not JSON: {str(exc)[:200]}): {path}") from None
    if not isinstance(value, dict):
        raise CorruptFileError(f"cannot read {what} (a JSON {type(value).__name__}, not an object): {path}")
    return value


def shard_files(run_dir):
    folder = own_folder(run_dir, SHARDS_DIR)
    return sorted(glob.glob(os.path.join(glob.escape(folder), _SHARD_GLOB)))


def shard_row_id(row):
    """The id a shard's index gives a row's record: the question id, and "@s<k>" for an answer sample
    (Inspect epochs), so that the samples of one question share a shard under distinct ids.

    >>> shard_row_id({"id": "q1"}), shard_row_id({"id": "q1", "sample": 2})
    ('q1', 'q1@s2')
    """
    sample = row.get(schema.SAMPLE)
    return str(row.get(schema.ID)) if sample is None else f"{row.get(schema.ID)}@s{sample}"


def record_path(directory, question_id, fmt="pkl", sample=None):
    """Path of the record file for `question_id` (and answer `sample`, if not None) in `directory`.

    >>> record_path("acts", "geo/001 (b)", "safetensors")
    'acts/geo_001__b_-cca2507873a08ab831222441ab33d535.safetensors'

    Keeps [A-Za-z0-9._-] and replaces anything else with "_"; when anything was changed (or the
    name would look like a hash-suffixed one) 128 bits of the id's sha256 are appended, so distinct
    ids never share a file (a 40-bit suffix, used before, collides after ~1e6 ids). Files written
    with the older names are still read: readers follow each results row's activation_file, never
    this function. Note: ids that differ only in case share a file on case-insensitive file
    systems (macOS, Windows); the runner refuses such a run (see check_record_names). A sample
    index k adds "@s<k>": "@" never occurs in the sanitised id, so (id, sample) pairs never share
    a file with each other or with a bare id.
    """
    ext = "." + str(fmt).lstrip(".")
    if ext not in RECORD_FORMATS:
        raise ValueError(f"unsupported record format {fmt!r}; use 'pkl' or 'safetensors'")
    qid = str(question_id)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", qid)[:120]
    if safe.startswith("."):
        safe = "_" + safe[1:]                       # no hidden files, no "." / ".."
    if safe != qid or not safe or _HASH_SUFFIX.search(safe):
        safe = f"{safe}-{hashlib.sha256(qid.encode('utf-8')).hexdigest()[:_HASH_HEX]}"
    if sample is not None:
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise ValueError(f"sample must be an integer >= 0, got {sample!r}")
        safe = f"{safe}@s{sample}"
    return os.path.join(os.fspath(directory), safe + ext)


def check_record_names(directory, question_ids, fmt="pkl"):
    """Raise ValueError if two of `question_ids` map to the same record file, also ignoring case
    (they would overwrite each other's record on a case-insensitive file system)."""
    seen = {}
    for qid in question_ids:
        name = os.path.basename(record_path(directory, qid, fmt))
        other = seen.setdefault(name.casefold(), qid)
        if other != qid:
            raise ValueError(f"question ids {other!r} and {qid!r} map to the same record file {name!r}"
                             f"{' (ignoring case)' if name != os.path.basename(record_path(directory, other, fmt)) else ''}"
                             f" in {directory}: make the ids differ in more than letter case")


def record_file_problem(path):
    """None if the record file at `path` looks complete, else why not ("missing", "empty", ...).

    A cheap check for --resume, reading only a file's first and last bytes (a .pkl) or its header
    (a .safetensors), never its tensors: a regular, non-empty file; a pickle starts with the
    protocol opcode and ends with STOP; a safetensors header is a JSON object whose tensors end
    exactly at the end of the file. It catches deleted, emptied, truncated and overwritten files;
    a file garbled in its middle passes (loading it later names it).
    """
    try:
        info = os.stat(path)
    except OSError:
        return "missing"
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if info.st_size == 0:
        return "empty"
    try:
        with open(path, "rb") as f:
            if path.lower().endswith(".safetensors"):
                return _safetensors_problem(f, info.st_size)
            head = f.read(2)
            f.seek(-1, os.SEEK_END)
            tail = f.read(1)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if len(head) < 2 or head[0] != 0x80 or not 2 <= head[1] <= 5 or tail != b".":
        return "not a complete pickle"
    return None


def _safetensors_problem(f, size):
    n = int.from_bytes(f.read(8).ljust(8, b"\xff"), "little")
    if n > min(size - 8, _MAX_HEADER):
        return "truncated safetensors header"
    try:
        entries, _ = checked_header(f.read(n))
        end = 8 + n + max((entry["data_offsets"][1] for entry in entries.values()), default=0)
    except (ValueError, TypeError):
        return "garbled safetensors header"
    if end != size:
        return f"truncated or padded: its tensors end at byte {end}, the file has {size}"
    return None


def unit_shard_path(directory, shard_key):
    """Path of the shard `shard_key` (hex: a unit's runner.batch_key, or shard_buffer.shard_name
    of several units).

    >>> unit_shard_path("runs/r1/activations", "3f2a9c01b2d4")
    'runs/r1/activations/units/3f2a9c01b2d4.safetensors'

    Units are disjoint, so processes answering different units never write the same shard.
    """
    key = str(shard_key)
    if not re.fullmatch(r"[0-9a-f]{6,64}", key):
        raise ValueError(f"a unit key is hex digits, got {key!r}")
    return os.path.join(os.fspath(directory), UNITS_DIR, key + ".safetensors")


def iter_record_files(directory):
    """Sorted paths of the record files (.pkl/.safetensors) in `directory`.

    >>> iter_record_files("runs/r1")          # a run folder: its activations/ subfolder
    ['runs/r1/activations/geo-001.pkl', ...]

    For a run folder (it holds results.jsonl) the records are in its activations/ subfolder,
    or, without one, wherever the rows' activation_file fields point. Temp and hidden files
    are ignored.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise NotADirectoryError(f"not a directory: {directory}")
    if os.path.isfile(os.path.join(directory, RESULTS_FILE)):
        sub = os.path.join(directory, ACTIVATIONS_DIR)
        if not os.path.isdir(sub):
            files = [os.path.join(directory, row["activation_file"]) for row in read_results(directory)
                     if row.get("activation_file") and isinstance(row["activation_file"], str)]   # a stranger's 5: skipped
            return sorted(p for p in files if os.path.isfile(p))
        directory = sub
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if not name.startswith(".")
                  and os.path.splitext(name)[1].lower() in RECORD_FORMATS
                  and os.path.isfile(os.path.join(directory, name)))



# ----------------------------------------------------------------------------- results.jsonl

def scan_results(path):
    """(rows, dropped) of a results file: every line that is a JSON object, in file order, and the
    1-based numbers of the non-empty lines that are not (torn or garbled). A missing file: ([], []);
    one that is not a regular file (a FIFO, /dev/zero) or over MAX_RESULTS_BYTES: CorruptFileError."""
    if not os.path.lexists(path):
        return [], []
    data = read_regular_bytes(path, MAX_RESULTS_BYTES, what="results file")   # never a FIFO or a device
    values, bad = loads_lines(data)     # bounded JSON, lines split on "\n" only, each line alone
    for number, reason in bad[:20]:
        log.debug("%s: line %d: %s", path, number, reason)
    rows = [value for _, value in values if type(value) is dict]
    if len(rows) == len(values) and not bad:
        return rows, []
    dropped = sorted([number for number, _ in bad] + [number for number, value in values if type(value) is not dict])
    return rows, dropped


def warn_dropped(path, dropped, action):
    if dropped:
        shown = ", ".join(map(str, dropped[:20])) + (", ..." if len(dropped) > 20 else "")
        log.warning("%s: %s %d torn or unreadable line(s) (line %s); every valid row is kept",
                    path, action, len(dropped), shown)


def read_results(run_dir):
    """The rows (dicts) of run_dir/results.jsonl, in file order; torn lines are dropped (logged).

    >>> rows = read_results("runs/r1")
    """
    path = results_path(run_dir)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"no {RESULTS_FILE} in run folder: {path}")
    rows, dropped = scan_results(path)
    warn_dropped(path, dropped, "ignoring")
    return rows


def open_own_file(path, flags):
    """A binary file of the run opened for writing without following a symlink (the run writes only
    its own files: a results.jsonl that links elsewhere would have its target written)."""
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0), 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _symlink_error(f"{path} is a symbolic link; a run writes only its own files: "
                                 f"replace it with the file itself") from None
        raise
    return os.fdopen(fd, "rb+" if flags & os.O_RDWR else "ab")


def _symlink_error(message):
    err = StorageError(message)
    err.errno = errno.ELOOP
    return err


def own_folder(run_dir, name):
    """<run_dir>/<name>, refused when it is a symlink (the run's files stay in the run)."""
    folder = os.path.join(os.fspath(run_dir), name)
    if os.path.islink(folder):
        raise _symlink_error(f"{folder} is a symbolic link; a run keeps its {name}/ inside its own "
                             f"folder: remove the link")
    return folder


def hashable_key(row):
    """row_key(row), or its JSON text when a hostile row's id is a list or an object (unhashable)."""
    return hashable(schema.row_key(row))


def hashable(key):
    try:
        hash(key)
        return key
    except TypeError:
        return json.dumps(key, sort_keys=True, default=str)


def jsonl(rows):
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
