"""The shard store's writer side: finished units' records grouped into shards of a target size.

Public names:
    ShardBuffer(config)            collects (result, record) per unit; .add(...), .full(), .flush() -> rows
    shard_name(unit_keys)          the shard's name: the unit key, or a digest of several
    remove_unreferenced_shards(run_dir, activations_dir, rows) -> int    this run's shards no row names
                                   (a crash's leftovers); nothing else is ever deleted
    SHARD_MAX_SECONDS              the longest a finished unit waits for its shard (10 minutes)

Example:
    >>> from activation_eval.run.config import RunConfig
    >>> from activation_eval.store.run_reader import RunReader
    >>> config = RunConfig(output_dir="runs/r1", activation_store="shards", shard_size_mb=0)    # a shard per unit
    >>> buffer = ShardBuffer(config)
    >>> for row, record in RunReader("runs/r1").records():      # answers of one unit (here: runs/r1's)
    ...     buffer.add(dict(row), record, row["unit"])
    >>> if buffer.full():
    ...     rows = buffer.flush()                                  # written: the shard, then these rows
    >>> rows[1]["activation_shard"], rows[1]["activation_row"]
    ('activations/units/2c6a23ab66aa.safetensors', 1)

Why shards of several units: reading one layer across a run costs an open, a header parse and a
disk round trip per shard, so at --positions last_prompt (71 KB per question with the default
model) shards of one unit (64 questions at --batch_size 8) read at 6% of a single file's speed.
Units finish into the buffer; once it holds --shard_size_mb of activations (or its oldest unit has
waited SHARD_MAX_SECONDS) they are written as one shard, atomically with one fsync, and only then
are their rows returned for results.jsonl. A crash loses the buffered units; --resume answers them
again whole, as it would any unit without its rows. A unit is never split over two shards.

Names: a shard of one unit is named by the unit key (as before); a shard of several by a digest of
their keys, so a shard written again after a crash replaces an unreferenced file of the same units
or gets a name of its own: never the name of a shard that rows still name (such a shard holds a
unit with all its rows, which is not answered again).
"""
import hashlib
import logging
import os
import re
import stat
import time

from .. import schema
from ..store import run_folder
from ..store.errors import CorruptFileError
from ..store.shards import read_shard_index, write_shard
from .save_dir import owns, record_dir

log = logging.getLogger(__name__)

SHARD_MAX_SECONDS = 600


class ShardBuffer:
    def __init__(self, config):
        self.config = config
        self.target_bytes = int(config.shard_size_mb * 2**20)
        self._units, self._bytes, self._since = {}, 0, None     # {unit key: [(result, record)]}

    def __bool__(self):
        return bool(self._units)

    def add(self, result, record, key):
        """One answered question of unit `key` (its record may be None: no activations)."""
        result[schema.UNIT] = key
        self._units.setdefault(key, []).append((result, record))
        self._bytes += _activation_bytes(record)
        if self._since is None:
            self._since = time.monotonic()

    def full(self):
        """Should the finished units be written now (called between units)?"""
        return bool(self._units) and (self._bytes >= self.target_bytes
                                      or time.monotonic() - self._since >= SHARD_MAX_SECONDS)

    def flush(self):
        """Write the buffered records as one shard (complete, fsynced); returns every buffered row,
        each with a record naming the shard and its row in it. Empties the buffer."""
        entries = [entry for unit in self._units.values() for entry in unit]
        saved = [(result, record) for result, record in entries if record is not None and "activations" in record]
        if saved:
            path = run_folder.unit_shard_path(record_dir(self.config), shard_name(list(self._units)))
            write_shard(path, [result["id"] for result, _ in saved], [record for _, record in saved])
            for row, (result, _) in enumerate(saved):
                result[schema.ACTIVATION_SHARD] = os.path.relpath(path, self.config.output_dir)
                result[schema.ACTIVATION_ROW] = row
        self._units, self._bytes, self._since = {}, 0, None
        return [result for result, _ in entries]


def shard_name(unit_keys):
    """The unit key of a one-unit shard; for several units the first 16 hex digits of the SHA-256
    of their keys in order (units are disjoint across processes, so names never clash)."""
    if len(unit_keys) == 1:
        return unit_keys[0]
    return hashlib.sha256(" ".join(unit_keys).encode()).hexdigest()[:16]


def _activation_bytes(record):
    if record is None or "activations" not in record:
        return 0
    return sum(t.numel() * t.element_size() for t in record["activations"].values())


_SHARD_FILE = re.compile(r"[0-9a-f]{12}\.safetensors|[0-9a-f]{16}\.safetensors")    # batch_key / shard_name


def remove_unreferenced_shards(run_dir, activations_dir, rows):
    """Remove this run's shards that no results row names: shards written just before a crash,
    whose units were answered again into other shards. Returns the number removed.

    Deletes only what is surely the run's own, judged on resolved paths: the activations folder
    must be the run's (inside the run folder, or an external save dir whose owner file names this
    run: save_dir.owns) and units/ in it a real folder, not a link; a shard must be a regular file
    there (not a link) with a unit-key name (12 or 16 hex digits, as this tool names them), named by
    no row (compared after resolving), and its index must list only questions of `rows` (the run's
    own rows). Anything else, e.g. another run's shards in a shared scratch folder, another tool's
    *.safetensors, or a shard that cannot be read, is left alone."""
    run_dir, activations_dir = os.fspath(run_dir), os.fspath(activations_dir)
    units = os.path.join(activations_dir, run_folder.UNITS_DIR)
    if not owns(run_dir, activations_dir) or os.path.islink(units) or not os.path.isdir(units):
        return 0
    units_real = os.path.join(os.path.realpath(activations_dir), run_folder.UNITS_DIR)
    shard_key = run_folder.SHARD_FIELDS[0]
    named = {os.path.realpath(os.path.join(run_dir, row[shard_key])) for row in rows
             if isinstance(row.get(shard_key), str)}
    ids = {str(row.get("id")) for row in rows}
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
