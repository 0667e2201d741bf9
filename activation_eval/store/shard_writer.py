"""Writing activation shards: the records of many questions in one .safetensors file, each layer
contiguous (the format is described in shards.py, which reads them back).

Public names:
    write_shard(path, ids, records)   one atomic write (one fsync) of the records; -> path
    SHARD_FORMAT                      the header's metadata "format" value
    FORMAT_VERSION                    the format version written ("2")

Example:
    >>> from activation_eval.store.run_reader import load_activations
    >>> rec1, rec2 = (load_activations("runs/r1", q) for q in ("geo-001", "geo-002"))
    >>> os.makedirs("acts/units")
    >>> write_shard("acts/units/3f2a9c.safetensors", ["geo-001", "geo-002"], [rec1, rec2])
    'acts/units/3f2a9c.safetensors'
"""
import json
import os
from collections.abc import Mapping

import numpy as np
import torch

from .atomic import atomic_write, json_default, write_pieces
from .safetensors_file import DTYPE_NAMES, header_bytes

__all__ = ["write_shard", "SHARD_FORMAT", "FORMAT_VERSION"]

SHARD_FORMAT = "activation-shard"
FORMAT_VERSION = "2"


def write_shard(path, ids, records):
    """Write the `records` of questions `ids` (same order) to the shard at `path`; returns path.

    >>> write_shard("3f2a9c.safetensors", ["q1", "q2"], [record, record])    # records of the same layers
    '3f2a9c.safetensors'

    All records must hold the same layers (same order, dtype and trailing shape) and the same
    tensor fields; a record's layers must share their row count (its kept positions). Everything is
    checked before the file is opened. Each layer is joined with one torch.cat across the records
    (per-tensor Python work is what limits a writer of small records) only when its turn to be
    written comes, so one joined layer at a time sits in memory beside the records; the file is
    written atomically, with one fsync (StorageError on I/O failure).
    """
    ids = [str(i) for i in ids]
    if len(ids) != len(records) or not ids:
        raise ValueError(f"a shard needs one id per record and at least one record "
                         f"({len(ids)} ids, {len(records)} records)")
    if len(set(ids)) != len(ids):
        raise ValueError("question ids of one shard must be distinct")
    layers, tensor_fields = _common_layout(records)
    counts = None
    blocks = []             # (name, dtype, shape, tensor or parts to join) in file order
    for name in layers:
        parts = [r["activations"][name] for r in records]
        blocks.append(_joined_later(f"act.{name}", parts, f"layer {name!r}"))
        rows = [t.shape[0] for t in parts]
        if counts is None:
            counts = rows
        elif rows != counts:
            qid = next(q for q, a, b in zip(ids, rows, counts) if a != b)
            raise ValueError(f"question {qid!r}: its layers keep different numbers of positions; a shard "
                             f"needs one per question")
    counts = counts or [0] * len(records)
    for name in tensor_fields:
        parts = [r[name] for r in records]
        blocks.append(_joined_later(f"field.{name}", parts, f"field {name!r}"))
        blocks.append(_ready(f"offsets.{name}", _offsets([t.shape[0] for t in parts])))
    texts = _records_json_texts(records, ids)
    index = [_ready("index.row_offsets", _offsets(counts)),
             _ready("index.positions", torch.tensor(
                 [p for r, c in zip(records, counts) for p in _positions(r, c)], dtype=torch.int64)),
             _ready("index.num_prompt_tokens", torch.tensor([_num_prompt(r) for r in records], dtype=torch.int64)),
             _ready("index.record_offsets", _offsets([len(t) for t in texts]))]
    blocks = index + blocks + [_ready("records", torch.frombuffer(bytearray(b"".join(texts)), dtype=torch.uint8))]
    metadata = {"format": SHARD_FORMAT, "format_version": FORMAT_VERSION, "ids": json.dumps(ids),
                "layer_order": json.dumps(layers), "tensor_fields": json.dumps(tensor_fields)}
    head = header_bytes([block[:3] for block in blocks], metadata)
    atomic_write(os.fspath(path), lambda tmp: write_pieces(tmp, _pieces(head, blocks)))
    return os.fspath(path)


def _common_layout(records):
    """(layer names, tensor field names) that every record shares, checked."""
    for r in records:
        if not isinstance(r, Mapping) or not isinstance(r.get("activations"), Mapping):
            raise TypeError(f"a record must be a dict with an 'activations' dict, got {type(r).__name__}")
    first = records[0]
    layers = list(first["activations"])
    fields = [k for k, v in first.items() if isinstance(v, torch.Tensor)]
    for r in records:
        if list(r["activations"]) != layers:
            raise ValueError(f"records of one shard must hold the same layers in the same order: "
                             f"{layers} vs {list(r['activations'])}")
        if [k for k, v in r.items() if isinstance(v, torch.Tensor)] != fields:
            raise ValueError("records of one shard must hold the same tensor fields")
    return layers, fields


def _ready(name, tensor):
    return name, tensor.dtype, list(tensor.shape), tensor


def _joined_later(name, parts, what):
    """A block of the records' tensors of one layer (or field) back to back, described now (dtype,
    shape: for the header) and joined only when written, so that one joined layer at a time is
    in memory next to the records. Refused now: non-tensors, several dtypes, one .safetensors
    cannot hold, or shapes that differ but in the first dimension."""
    dtypes = {t.dtype for t in parts} if all(isinstance(t, torch.Tensor) for t in parts) else {None}
    if len(dtypes) > 1 or not dtypes <= set(DTYPE_NAMES):
        raise ValueError(f"{what}: records of one shard need torch tensors of one dtype that "
                         f".safetensors holds; got {sorted(map(str, dtypes))}")
    trailing = {tuple(t.shape[1:]) if t.dim() else None for t in parts}
    if len(trailing) > 1 or None in trailing:
        raise ValueError(f"{what}: records of one shard need tensors of one shape but the first "
                         f"dimension (got {sorted(map(str, trailing))[:4]})")
    return name, parts[0].dtype, [sum(t.shape[0] for t in parts), *trailing.pop()], parts


def _pieces(head, blocks):
    """The file's bytes in order: the head, then each block (a list of parts is joined here, with
    one torch.cat: per-tensor Python work is what limits a writer of small records)."""
    yield head
    for name, _, shape, data in blocks:
        tensor = torch.cat(data) if isinstance(data, list) else data
        tensor = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous()
        if list(tensor.shape) != shape:         # what the header says (_joined_later): never otherwise
            raise AssertionError(f"{name}: joined shape {list(tensor.shape)}, header {shape}")
        if tensor.numel():
            yield tensor.reshape(-1).view(torch.uint8).numpy()
        del tensor


def _positions(record, count):
    kept = record.get("positions_kept")
    if isinstance(kept, (list, tuple)) and len(kept) == count and all(type(p) is int for p in kept):
        return kept
    return range(count)


def _num_prompt(record):
    n = record.get("num_prompt_tokens")
    if type(n) is int:
        return n
    ids = record.get("input_ids")
    return int(ids.shape[-1]) if isinstance(ids, torch.Tensor) and ids.dim() else -1


def _offsets(counts):
    return torch.tensor(np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]), dtype=torch.int64)


def _records_json_texts(records, ids):
    """Every record's non-tensor fields and key order as UTF-8 JSON, one text per record (what the
    file store keeps as JSON); a field that JSON cannot hold is a TypeError naming the question."""
    texts = []
    for r, qid in zip(records, ids):
        part = {"fields": {k: v for k, v in r.items() if k != "activations" and not isinstance(v, torch.Tensor)},
                "key_order": list(r)}
        try:
            texts.append(json.dumps(part, default=json_default).encode("utf-8"))
        except (TypeError, ValueError) as e:
            raise TypeError(f"question {qid!r}: a record field cannot be stored as JSON ({e})") from None
    return texts

