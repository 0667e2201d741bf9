"""The shard store's writer side: finished units' records grouped into shards of a target size.

Public names:
    ShardBuffer(config)            collects (result, record) per unit; .add(...), .full(), .flush() -> rows
    shard_name(unit_keys)          the shard's name: the unit key, or a digest of several
    remove_unreferenced_shards(run_dir, save_dir, rows) -> int    shards no row names (a crash's leftovers)
    SHARD_MAX_SECONDS              the longest a finished unit waits for its shard (10 minutes)

Example:
    >>> buffer = ShardBuffer(config)
    >>> for result, record in answers_of_one_unit:
    ...     buffer.add(result, record, unit_key)
    >>> if buffer.full():
    ...     run_folder.append_results(results_path, buffer.flush())

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
import time

from .. import schema
from ..store import run_folder
from ..store.shards import write_shard

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
            path = run_folder.unit_shard_path(self.config.activation_save_dir, shard_name(list(self._units)))
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


def remove_unreferenced_shards(run_dir, save_dir, rows):
    """Remove the shards of `save_dir`/units that no results row names: shards written just
    before a crash, whose units were answered again into other shards. Only for the run's own
    activations folder (inside run_dir): a folder shared with other runs holds their shards too.
    Returns the number removed."""
    run_dir, save_dir = os.path.abspath(run_dir), os.path.abspath(save_dir)
    units = os.path.join(save_dir, run_folder.UNITS_DIR)
    if os.path.commonpath([run_dir, save_dir]) != run_dir or not os.path.isdir(units):
        return 0
    shard_key = run_folder.SHARD_FIELDS[0]
    named = {os.path.normpath(os.path.join(run_dir, row[shard_key])) for row in rows if row.get(shard_key)}
    removed = 0
    for name in os.listdir(units):
        path = os.path.join(units, name)
        if name.endswith(".safetensors") and os.path.normpath(path) not in named and os.path.isfile(path):
            os.remove(path)
            removed += 1
    if removed:
        log.info("removed %d shard(s) that no results row names (written before an interruption; their "
                 "questions were answered again)", removed)
    return removed
