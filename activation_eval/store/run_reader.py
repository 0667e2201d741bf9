"""The one reader of a run folder's rows and records, whichever store wrote them.

Every analysis mode (directory, probe, lens, report, PCA, export, compare) reads a run through
this module; no other module decides "file or shard".

Public names:
    RunReader(run_dir)             .rows, .located(), .records(layers), .record(id), .layer_names(),
                                   .has_records(), .store
    Location                       (kind "file" | "shard", path (resolved), row in the shard or None)
    RecordMismatchError            a row names a record that is not its own (CorruptFileError)
    read_run_rows(run_dir)         the rows: last row per key, upgraded to today's schema
    load_activations(path_or_run, layers=None, *, question_id=None)
                                   a record file, or a run folder's record of one question
    load_run_record(run_dir, question_id, layers=None, sample=None)
    iter_run_records(run_dir, layers=None) -> (row, record), ...

Example:
    >>> reader = RunReader("runs/r1")
    >>> for row, record in reader.records(layers=["layer_3"]):
    ...     print(row["id"], row["correct"], record["activations"]["layer_3"].shape)
    geo-001 False torch.Size([41, 64])
    geo-002 False torch.Size([43, 64])
    ...
    geo-006 False torch.Size([...])
    >>> reader.record("geo-001")["activations"]["layer_3"].shape
    torch.Size([41, 64])
    >>> rec = load_activations("runs/r1", "geo-001")
    >>> len(rec["activations"]), rec["layer_names"][:2]
    (31, ['embeddings', 'layer_0'])

The policy, in one place:
- rows: results.jsonl read by run_folder.read_results (torn lines dropped), each upgraded
  (schema.upgrade_row), and for a key written twice (a resumed unit) only the LAST row is kept,
  the merge's policy; the number dropped is logged.
- a record's location: "activation_shard" + "activation_row" (the shard store) or
  "activation_file" (the file store), joined to the run folder and resolved (symlinks followed);
  it must lie inside the run's resolved activations folder (so `activations/` may be a symlink
  to scratch space, but no row reaches a file elsewhere: not absolute, not `../`).
- each distinct location is read once: a second row naming a record another row owns is a
  RecordMismatchError, and so is a record whose question id (the record's "grading" entry, a
  shard's index) is not its row's.
"""
import functools
import logging
import os
from typing import NamedTuple

from .. import schema
from ..schema.record import record_identity
from . import run_folder
from .bounded_json import gc_paused
from .errors import CorruptFileError
from .records import load_record_file
from .shards import iter_shard_records, read_shard_index

log = logging.getLogger(__name__)
_CONFIG_MAX_BYTES = 16 * 2**20


class RecordMismatchError(CorruptFileError):
    """A results row names a record that belongs to another question, or that another row owns."""


class Location(NamedTuple):            # a tuple: 100k of them are made per read of a big run
    kind: str                  # "file" or "shard"
    path: str                  # resolved, inside the run's activations folder
    row: int | None = None     # the question's row in a shard

    def label(self, run_dir):
        rel = os.path.relpath(self.path, run_dir)
        return rel if self.row is None else f"{rel}#{self.row}"


def read_run_rows(run_dir):
    """The rows of a run's results.jsonl in file order: the last row of each key (schema.row_key),
    in today's schema. A key written twice (a resume killed mid-unit) keeps its last row."""
    rows = [schema.upgrade_row(row) for row in run_folder.read_results(run_dir)]
    last = {}
    for i, row in enumerate(rows):
        last[run_folder.hashable_key(row)] = i
    if len(last) == len(rows):
        return rows
    log.warning("%s: %d row(s) answer a question that a later row answers again (an interrupted "
                "--resume); only the last row of each is used", run_folder.results_path(run_dir), len(rows) - len(last))
    keep = set(last.values())
    return [row for i, row in enumerate(rows) if i in keep]


class RunReader:
    """A run folder's rows and records. Rows are read once per reader (make a new reader to see
    rows appended later). require_results=False: a folder that has no results.jsonl yet (a run
    starting) is accepted, for locate()."""

    def __init__(self, run_dir, require_results=True):
        self.run_dir = os.fspath(run_dir)
        if require_results and not (os.path.isdir(self.run_dir) and run_folder.is_run_folder(self.run_dir)):
            raise FileNotFoundError(f"not a run folder (no {run_folder.RESULTS_FILE}): {self.run_dir}")
        self.root = os.path.realpath(os.path.join(self.run_dir, _activations_dir(self.run_dir)))

    @functools.cached_property
    def rows(self):
        return read_run_rows(self.run_dir)

    def locate(self, row):
        """The Location of `row`'s record, or None when it has none; CorruptFileError when the row
        names it badly (outside the activations folder, a non-integer shard row), FileNotFoundError
        when it does not exist."""
        shard, file = row.get(schema.ACTIVATION_SHARD), row.get(schema.ACTIVATION_FILE)
        if not shard and not file:
            return None
        rel = shard or file
        where = f"results row {row.get(schema.ID)!r}"
        if not isinstance(rel, str):
            raise CorruptFileError(f"{where} names its record with {rel!r}, not a path: {self._results}")
        index = row.get(schema.ACTIVATION_ROW) if shard else None
        if shard and (type(index) is not int or index < 0):
            raise CorruptFileError(f"{where} names shard {rel!r} without an integer {schema.ACTIVATION_ROW!r} "
                                   f">= 0 (got {index!r}): {self._results}")
        path, problem = self._resolved(rel)
        if problem == "not a path":
            raise CorruptFileError(f"{where} names its record with {rel!r}, not a path: {self._results}")
        if problem == "outside":
            raise CorruptFileError(f"{where} names {rel!r}, which is outside the run's activations folder "
                                   f"{self.root}: records are only read from there: {self._results}")
        if problem == "not regular":         # a FIFO, a device, a folder: it exists, and is refused
            raise CorruptFileError(f"{where} names {rel!r}, which is not a regular file: {path}")
        if problem == "missing":
            raise FileNotFoundError(f"{where} names {rel!r}, which does not exist: {path}")
        return Location("shard" if shard else "file", path, index)

    def _resolved(self, rel):
        """(resolved path, None | "not a path" | "outside" | "not regular" | "missing") of a row's record path, looked
        up once per distinct spelling (100k rows of a shard run name a few dozen shards)."""
        cache = self.__dict__.setdefault("_paths", {})
        if rel not in cache and not _file_name(rel):
            cache[rel] = (None, "not a path")
        if rel not in cache:
            path = os.path.realpath(os.path.join(self.run_dir, rel))
            if os.path.commonpath([self.root, path]) != self.root or path == self.root:
                problem = "outside"
            elif os.path.isfile(path):
                problem = None
            else:
                problem = "not regular" if os.path.exists(path) else "missing"
            cache[rel] = (path, problem)
        return cache[rel]

    @property
    def _results(self):
        return run_folder.results_path(self.run_dir)

    @gc_paused
    def located(self, errors="raise"):
        """[(row, Location)] of the rows with a record, each Location once. errors="raise": the
        first bad row raises; "collect": -> (pairs, [(row, exception)]) instead."""
        pairs, bad, owner = [], [], {}
        for row in self.rows:
            try:
                location = self.locate(row)
                if location is None:
                    continue
                first = owner.setdefault(location, row)
                if first is not row:
                    raise RecordMismatchError(
                        f"results rows {first.get(schema.ID)!r} and {row.get(schema.ID)!r} name the same record "
                        f"{location.label(self.run_dir)!r}; a record belongs to one question: {self._results}")
            except (OSError, ValueError) as exc:
                if errors == "raise":
                    raise
                bad.append((row, exc))
                continue
            pairs.append((row, location))
        return (pairs, bad) if errors == "collect" else pairs

    def has_records(self):
        return any(row.get(schema.ACTIVATION_FILE) or row.get(schema.ACTIVATION_SHARD) for row in self.rows)

    @property
    def store(self):
        """"files", "shards", "mixed" or None (no row names a record)."""
        kinds = {"shards" if row.get(schema.ACTIVATION_SHARD) else "files" for row in self.rows
                 if row.get(schema.ACTIVATION_FILE) or row.get(schema.ACTIVATION_SHARD)}
        return None if not kinds else kinds.pop() if len(kinds) == 1 else "mixed"

    def records(self, layers=None, errors="raise", pairs=None):
        """(row, record) of every row with a record: files in results order, then each shard
        opened once (one shard's records in memory at a time). errors="yield": a record that
        cannot be read (or is not its row's) gives (row, exception) instead of stopping.
        `pairs`: the (row, Location) pairs to read (default: located())."""
        if pairs is None:
            if errors == "yield":
                pairs, bad = self.located(errors="collect")
                yield from bad
            else:
                pairs = self.located()
        by_shard = {}
        for row, location in pairs:
            if location.kind == "shard":
                by_shard.setdefault(location.path, []).append((location.row, row))
                continue
            try:
                record = load_record_file(location.path, layers)
                _check_identity(record, row, location.path)
            except (OSError, ValueError) as exc:
                if errors != "yield":
                    raise
                yield row, exc
                continue
            yield row, record
        for path, wanted in by_shard.items():
            yield from self._shard_records(path, wanted, layers, errors)

    def _shard_records(self, path, wanted, layers, errors):
        """(row, record) of the shard's `wanted` [(index, row)]; a row naming a row the shard lacks
        or holds for another question is a RecordMismatchError: raised, or with errors="yield"
        given for that row alone (the shard's other rows are read)."""
        rows = dict(wanted)
        done = set()
        try:
            ids = read_shard_index(path).ids
            for index, row in wanted:
                if index >= len(ids) or ids[index] != run_folder.shard_row_id(row):
                    found = ids[index] if index < len(ids) else "no such row"
                    exc = RecordMismatchError(f"results row {row.get(schema.ID)!r} names row {index} of the shard, "
                                              f"which holds {found!r}: {path}")
                    if errors != "yield":
                        raise exc
                    rows.pop(index, None)
                    done.add(index)
                    yield row, exc
            for index, record in iter_shard_records(path, sorted(rows), layers):
                done.add(index)
                try:
                    _check_identity(record, rows[index], path)
                except RecordMismatchError as exc:
                    if errors != "yield":
                        raise
                    record = exc
                yield rows[index], record
        except (OSError, ValueError) as exc:
            if errors != "yield":
                raise
            for index, row in wanted:
                if index not in done:
                    yield row, exc

    def record(self, question_id, layers=None, sample=None):
        """The record of question `question_id` (and `sample`), from either store."""
        key = str(question_id)
        matches = [row for row in self.rows if str(row.get(schema.ID)) == key
                   and (sample is None or row.get(schema.SAMPLE) == sample)]
        if not matches:
            raise KeyError(f"no results row for question {question_id!r} in {self._results}")
        row = matches[0]
        location = self.locate(row)
        if location is None:
            raise ValueError(f"question {question_id!r} has no saved activations in {self.run_dir} "
                             f"(run without --capture_activations?)")
        return next(self.records(layers, pairs=[(row, location)]))[1]

    def layer_names(self):
        """Layer names (record order) of the run, from its first record (either store)."""
        for _, location in self.located():
            if location.kind == "shard":
                return list(read_shard_index(location.path).layers)
            return list(load_record_file(location.path)["activations"])
        raise ValueError(f"no results row of {self.run_dir} names saved activations "
                         f"(run main.py with --capture_activations)")


def _check_identity(record, row, path):
    """RecordMismatchError when the record says it belongs to another question (or sample)."""
    identity = record_identity(record)
    if identity is None:
        return                          # records of earlier versions and the notebook API name none
    qid, sample = identity
    if qid != str(row.get(schema.ID)) or (sample is not None and sample != row.get(schema.SAMPLE)):
        shown = qid if sample is None else f"{qid} sample {sample}"
        raise RecordMismatchError(f"results row {row.get(schema.ID)!r} names a record of question {shown!r}: {path}")


def _file_name(text):
    """Can `text` name a file here? (a lone surrogate such as "\\ud800", valid in JSON, cannot:
    os functions would raise UnicodeEncodeError; a NUL cannot either)."""
    try:
        return b"\0" not in os.fsencode(text)
    except UnicodeEncodeError:
        return False


def _activations_dir(run_dir):
    """The run's activations folder, relative to the run: run_config.json's activation_save_dir
    when that is a folder inside the run, else "activations"."""
    try:
        config = run_folder.read_run_config(run_dir)
    except (OSError, ValueError):
        config = {}
    rel = config.get("activation_save_dir") if isinstance(config, dict) else None
    if isinstance(rel, str) and rel and _file_name(rel) and not os.path.isabs(rel) \
            and ".." not in rel.replace("\\", "/").split("/"):
        return rel
    return run_folder.ACTIVATIONS_DIR


def load_run_record(run_dir, question_id, layers=None, sample=None):
    """The record of question `question_id` of the run (only `layers` if given), from either store.

    >>> load_run_record("runs/r1", "geo-001")["activations"]["layer_3"].shape
    torch.Size([41, 64])
    """
    return RunReader(run_dir).record(question_id, layers, sample)


def iter_run_records(run_dir, layers=None):
    """(row, record) for every results row with a record (RunReader.records)."""
    return RunReader(run_dir).records(layers)


def load_activations(path, layers=None, *, question_id=None):
    """A record file (records.load_record_file), or a run folder's record of one question:

    >>> rec = load_activations("results/run1/activations/geo-001.safetensors", layers=["layer_3"])   # a file
    >>> rec = load_activations("runs/r1", "geo-001")          # a run folder and a question id
    >>> rec = load_activations("runs/r1", question_id="geo-001", layers=["layer_3"])
    """
    path = os.fspath(path)
    if not (os.path.isdir(path) and run_folder.is_run_folder(path)):
        if question_id is not None:
            raise TypeError(f"question_id= is for a run folder; {path} is not one (no {run_folder.RESULTS_FILE})")
        return load_record_file(path, layers)
    if question_id is None:
        question_id, layers = layers, None
    if question_id is None or isinstance(question_id, bool) or not isinstance(question_id, (str, int)):
        raise TypeError(f"{path} is a run folder: load_activations(run_dir, question_id) needs a question "
                        f"id, got {question_id!r}")
    return load_run_record(path, question_id, _layer_list(layers))


def _layer_list(layers):
    if layers is None or isinstance(layers, str):
        return layers if layers is None else [layers]
    return list(layers)
