"""Activation shards: the records of many questions in one file, each layer contiguous.

Public names:
    read_shard_index(path) -> ShardIndex   the checked header: ids, layers, fields, row offsets
    load_shard_record(path, row, layers=None) -> record     the same dict the file store returns
    iter_shard_records(path, rows=None, layers=None) -> (row, record), ...   one open, one header parse
    read_shard_layer(path, layer) -> ShardLayer   one layer of every record: ONE read of its bytes
    read_shard_layers(paths, layer, workers=8) -> [ShardLayer]   the same for many shards, concurrently
    SHARD_FORMAT                           the header's metadata "format" value

Shards are written by shard_writer.write_shard(path, ids, records) (one atomic write, one fsync).

Example:
    >>> from activation_eval.store.run_reader import load_activations
    >>> from activation_eval.store.shard_writer import write_shard
    >>> rec1, rec2 = (load_activations("runs/r1", q) for q in ("geo-001", "geo-002"))
    >>> os.makedirs("acts/units")
    >>> write_shard("acts/units/3f2a9c.safetensors", ["geo-001", "geo-002"], [rec1, rec2])
    'acts/units/3f2a9c.safetensors'
    >>> load_shard_record("acts/units/3f2a9c.safetensors", 1)["activations"]["layer_3"].shape
    torch.Size([43, 64])
    >>> layer = read_shard_layer("acts/units/3f2a9c.safetensors", "layer_3")
    >>> layer.rows(1).shape                  # question geo-002's (positions, hidden) tensor
    torch.Size([43, 64])

Format: a standard .safetensors file (safetensors.safe_open reads it; no pickle anywhere), laid
out for reading one layer across all its questions with one read:
    index.row_offsets     int64 [n + 1]   question i's activation rows are [o[i], o[i+1])
    index.positions       int64 [rows]    absolute token index of each activation row
    index.num_prompt_tokens int64 [n]     (-1 when a record has none): what reduce= needs
    act.<layer>           [rows, ...]     every question's rows of that layer, back to back
    field.<name>          [total, ...]    a top-level tensor field (input_ids, output_ids), back
    offsets.<name>        int64 [n + 1]   to back, and its per-question offsets
    index.record_offsets  int64 [n + 1]   question i's JSON is bytes [r[i], r[i+1]) of `records`
    records               uint8 [bytes]   UTF-8 JSON objects back to back: per question its
                                          non-tensor fields and key order
The small index tensors come right after the header (the first read of a file gets them too);
the record JSON comes last, so reading a layer never parses it, and reading one question parses
only its own JSON. Format version 1 (before 2026-12-02) had no index.record_offsets and one JSON
array in `records`; it is still read. The header metadata holds the format, the question ids
(JSON), the layer order and the tensor fields. Variable position counts
per question are what the offsets are for. Every header entry, offset table and count is
checked before anything is allocated: a hostile or torn file gives CorruptFileError naming it.
"""
import dataclasses
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from .bounded_json import loads, loads_each
from .checks import check_offsets, check_structure
from .errors import corrupt
from .files import open_regular
from .safetensors_file import read_header

# a module global, so that a test can watch which byte ranges a read takes
from .safetensors_file import read_tensor as _read_tensor
from .shard_writer import SHARD_FORMAT

_VERSIONS = ("1", "2")       # what the reader knows: 1 has one JSON array of every record's fields


# ----------------------------------------------------------------------------- reading

@dataclasses.dataclass
class ShardIndex:
    path: str
    ids: list               # question ids, in row order
    layers: list            # layer names, in record order
    tensor_fields: list     # top-level tensor fields (input_ids, output_ids, ...)
    entries: dict           # the header's tensor entries (checked)
    data_start: int         # file offset of the tensor data
    row_offsets: np.ndarray    # int64 [n + 1]
    positions: np.ndarray      # int64 [rows]
    num_prompt_tokens: np.ndarray   # int64 [n]
    record_offsets: np.ndarray | None = None   # int64 [n + 1] into `records` (None: format 1, one JSON array)

    def row(self, question_id):
        try:
            return self.ids.index(str(question_id))
        except ValueError:
            raise KeyError(f"question {question_id!r} is not in shard {self.path}") from None


@dataclasses.dataclass
class ShardLayer:
    index: ShardIndex
    name: str
    tensor: torch.Tensor    # [rows, ...]: every question's rows of the layer, back to back

    def rows(self, i):
        """Question i's rows of the layer (a view)."""
        o = self.index.row_offsets
        return self.tensor[int(o[i]):int(o[i + 1])]


def read_shard_index(path, f=None):
    """The checked header and index tensors of the shard at `path` (`f`: the file, open).

    One read of the file's head gets the header and, right after it, the index tensors. Each
    tensor entry is checked fully when it is read (dtype, shape, byte range); the byte ranges of
    all entries must tile the data exactly, as safetensors requires (a torn file fails here).
    """
    path = os.fspath(path)
    if f is None:
        f, _ = open_regular(path)
        with f:
            return read_shard_index(path, f)
    entries, meta, data_start, head = read_header(f, path, os.fstat(f.fileno()).st_size)
    try:
        if meta.get("format") != SHARD_FORMAT:
            raise ValueError("no activation-shard metadata (a per-question record or another tool's file?)")
        version = meta.get("format_version")
        if version not in _VERSIONS:
            raise ValueError(f"shard format version {version!r}, this reader knows {', '.join(_VERSIONS)}")
        index_keys = _INDEX + (("index.record_offsets",) if version != "1" else ())
        ids, layers, fields = (loads(meta[k]) for k in ("ids", "layer_order", "tensor_fields"))
        if not (_strings(ids) and _strings(layers) and _strings(fields)) or len(set(ids)) != len(ids):
            raise ValueError("malformed ids, layer_order or tensor_fields in the metadata")
        names = (list(index_keys) + ["records"] + [f"act.{n}" for n in layers]
                 + [f"{p}.{n}" for n in fields for p in ("field", "offsets")])
        missing = [n for n in names if n not in entries]
        if missing:
            raise ValueError(f"tensors {missing[:5]} listed in the metadata are missing")
        if entries["records"]["dtype"] != "U8" or len(entries["records"]["shape"]) != 1:
            raise ValueError("the records tensor is not 1-D uint8 (JSON bytes)")
    except Exception as e:
        raise corrupt(path, e) from None
    n = len(ids)
    # the index tensors lie right after the header: one read gets the rest of them (cold, each
    # read is a disk round trip). Their byte ranges lie inside the file (read_header checked).
    index_end = data_start + max(entries[key]["data_offsets"][1] for key in index_keys)
    if index_end > len(head):
        head += f.read(index_end - len(head))
    row_offsets, positions, num_prompt, *record_offsets = (
        _read_index(f, head, key, entries[key], data_start, path) for key in index_keys)
    check_offsets(row_offsets, n, "index.row_offsets", path)
    record_offsets = record_offsets[0] if record_offsets else None
    if record_offsets is not None:
        check_offsets(record_offsets, n, "index.record_offsets", path)
        if record_offsets[-1] != entries["records"]["shape"][0]:
            raise corrupt(path, f"index.record_offsets ends at {record_offsets[-1]}, records holds "
                                f"{entries['records']['shape'][0]} bytes")
    rows = int(row_offsets[-1])
    if num_prompt.shape != (n,) or positions.shape != (rows,):
        raise corrupt(path, "index tensors do not match the number of questions and rows")
    try:
        bad = [name for name in layers if entries[f"act.{name}"]["shape"][:1] != [rows]]
    except Exception as e:
        raise corrupt(path, e) from None
    if bad:
        raise corrupt(path, f"layer {bad[0]!r} has other than the index's {rows} rows")
    return ShardIndex(path, ids, layers, fields, entries, data_start, row_offsets, positions, num_prompt,
                      record_offsets)


_INDEX = ("index.row_offsets", "index.positions", "index.num_prompt_tokens")


def _strings(value):
    return isinstance(value, list) and set(map(type, value)) <= {str}


def _read_index(f, head, key, entry, data_start, path):
    """An int64 1-D index tensor as a numpy array, from the head bytes when it lies inside them
    (the byte range is known to lie in the file: read_header)."""
    shape = entry.get("shape") if isinstance(entry, dict) else None
    start, end = entry["data_offsets"] if shape else (0, 0)
    if not (entry.get("dtype") == "I64" and isinstance(shape, list) and len(shape) == 1
            and type(shape[0]) is int and shape[0] * 8 == end - start):
        raise corrupt(path, f"tensor {key!r}: expected a 1-D int64 tensor, got {entry!r:.200}")
    if data_start + end <= len(head):
        return np.frombuffer(head, dtype="<i8", count=shape[0], offset=data_start + start)
    return _read_tensor(f, key, entry, data_start, path).numpy()


def read_shard_layer(path, layer):
    """One layer of every question of the shard: its index and the [rows, ...] tensor (one read).

    >>> from activation_eval.store.shard_writer import write_shard
    >>> write_shard("3f2a9c.safetensors", ["q1", "q2"], [record, record])
    '3f2a9c.safetensors'
    >>> layer = read_shard_layer("3f2a9c.safetensors", "layer_2")
    >>> layer.rows(0).shape                  # (positions kept for the first question, hidden)
    torch.Size([15, 64])
    """
    path = os.fspath(path)
    f, _ = open_regular(path)
    with f:
        if hasattr(os, "posix_fadvise"):        # read what is asked for, not the layers around it
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
        index = read_shard_index(path, f)
        _check_layers(index, [layer])
        key = f"act.{layer}"
        return ShardLayer(index, layer, _read_tensor(f, key, index.entries[key], index.data_start, path))


def read_shard_layers(paths, layer, workers=8):
    """read_shard_layer of every shard in `paths`, in order, up to `workers` reads at a time.

    >>> from activation_eval.store.shard_writer import write_shard
    >>> paths = [write_shard(name, ["q1"], [record]) for name in ("a.safetensors", "b.safetensors")]
    >>> layers = read_shard_layers(paths, "layer_2")
    >>> [layer.rows(0).shape for layer in layers]
    [torch.Size([15, 64]), torch.Size([15, 64])]

    A cold read of one shard waits on the disk beyond its bytes (~3 ms here: the header, then
    the layer's one request, with no read-ahead running ahead); concurrent reads overlap those
    waits. One layer across 100k questions in 28 shards, cold: 0.243 s one by one, 0.182 s with 8.
    """
    paths = [os.fspath(p) for p in paths]
    if workers <= 1 or len(paths) < 2:
        return [read_shard_layer(p, layer) for p in paths]
    with ThreadPoolExecutor(min(workers, len(paths))) as pool:
        return list(pool.map(lambda p: read_shard_layer(p, layer), paths))


def _check_layers(index, layers):
    unknown = [n for n in layers if n not in index.layers]
    if unknown:
        raise ValueError(f"unknown layer name(s) {unknown}; available: {index.layers}: {index.path}")


def iter_shard_records(path, rows=None, layers=None):
    """(row, record) for the given rows (default: all) of the shard, with only `layers` if given.

    >>> from activation_eval.store.shard_writer import write_shard
    >>> write_shard("3f2a9c.safetensors", ["q1", "q2"], [record, record])
    '3f2a9c.safetensors'
    >>> for row, rec in iter_shard_records("3f2a9c.safetensors", layers=["layer_2"]):
    ...     print(row, rec["prompt"], list(rec["activations"]))
    0 What is the capital of France? ['layer_2']
    1 What is the capital of France? ['layer_2']

    One open and one header parse; each requested layer and tensor field is read once for all rows.
    """
    path = os.fspath(path)
    f, _ = open_regular(path)
    with f:
        index = read_shard_index(path, f)
        names = index.layers if layers is None else [n for n in index.layers if n in set(layers)]
        if layers is not None:
            _check_layers(index, layers)
        n = len(index.ids)
        rows = range(n) if rows is None else list(rows)
        for i in rows:
            if not (type(i) is int and 0 <= i < n):
                raise IndexError(f"row {i!r} is not in shard {path} ({n} questions)")
        if not rows:
            return
        first, last = min(rows), max(rows) + 1
        if last - first < n and hasattr(os, "posix_fadvise"):     # a few rows of a big shard: no read-ahead
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)

        def read(key, lo=None, hi=None):
            return _read_rows(f, key, index.entries[key], index.data_start, path, lo, hi)
        parts = _record_parts(index, rows, first, last, read)
        o = index.row_offsets
        acts = {name: read(f"act.{name}", o[first], o[last]) for name in names}     # only the rows' span
        fields = {}
        for name in index.tensor_fields:
            offsets = read(f"offsets.{name}").numpy()
            check_offsets(offsets, n, f"offsets.{name}", path)
            if offsets[-1] != index.entries[f"field.{name}"]["shape"][0]:
                raise corrupt(path, f"offsets.{name} ends at {offsets[-1]}, field.{name} has "
                                    f"{index.entries[f'field.{name}']['shape'][0]} rows")
            fields[name] = (read(f"field.{name}", offsets[first], offsets[last]), offsets - offsets[first])
    o = o - o[first]
    for i in rows:
        record, part = {}, parts[i]
        for key in part["key_order"]:
            if key == "activations":
                # clones: a record owns its tensors, as a per-question file's record does
                record[key] = {name: acts[name][o[i]:o[i + 1]].clone() for name in names}
            elif key in fields:
                tensor, offsets = fields[key]
                record[key] = tensor[offsets[i]:offsets[i + 1]].clone()
            elif key in part["fields"]:
                record[key] = part["fields"][key]
        yield i, record


def _read_rows(f, key, entry, data_start, path, lo=None, hi=None):
    """Tensor `key` of the shard open as `f`, or only its rows [lo, hi) along the first dimension
    (one read of their bytes). `entry` is checked (read_shard_index); lo <= hi lie within it
    (offsets checked against the index)."""
    if lo is None:
        return _read_tensor(f, key, entry, data_start, path)
    shape, (start, end) = entry["shape"], entry["data_offsets"]
    lo, hi = int(lo), int(hi)
    if not (shape and 0 <= lo <= hi <= shape[0]):
        raise corrupt(path, f"rows {lo}..{hi} of tensor {key!r} (shape {shape}) are not in it")
    row = (end - start) // shape[0] if shape[0] else 0
    part = dict(entry, shape=[hi - lo, *shape[1:]], data_offsets=[start + lo * row, start + hi * row])
    return _read_tensor(f, key, part, data_start, path)


def _record_parts(index, rows, first, last, read):
    """{row: {"fields": ..., "key_order": [...]}} of the given rows (first..last-1 spans them):
    in format 2 only their bytes of `records` are read and only their JSON is parsed. Each
    record's fields pass the checks a per-question file's do (bounded_json, checks.check_structure)."""
    path, o = index.path, index.record_offsets
    try:
        if o is None:                                   # format 1: one JSON array of every record
            blob = read("records").numpy().tobytes()
            parts = loads(blob, max_values=None)
            if not (isinstance(parts, list) and len(parts) == len(index.ids)):
                raise ValueError(f"expected a list of {len(index.ids)} record entries")
            parts = {i: parts[i] for i in rows}
            sizes = dict.fromkeys(parts, len(blob))
        else:
            blob = read("records", o[first], o[last]).numpy().tobytes()
            base = int(o[first])
            wanted = sorted(set(rows))
            texts = [blob[o[i] - base:o[i + 1] - base] for i in wanted]
            parts = dict(zip(wanted, loads_each(texts)))       # each text alone: none spills into the next
            sizes = dict(zip(wanted, map(len, texts)))
        for part in parts.values():
            if not (isinstance(part, dict) and isinstance(part.get("fields"), dict)
                    and _strings(part.get("key_order")) and "activations" in part["key_order"]):
                raise ValueError("expected record entries with fields and key_order")
    except Exception as e:
        raise corrupt(path, f"records: {type(e).__name__}: {str(e)[:300]}") from None
    for i, part in parts.items():
        check_structure(part["fields"], sizes[i], path)
    return parts


def load_shard_record(path, row, layers=None):
    """The record in row `row` of the shard (only `layers` if given): the same dict the file store
    gives for that question."""
    return next(iter_shard_records(path, [row], layers))[1]
