"""The .safetensors container, as the safetensors library lays it out and checks it: dtypes,
the header (written and read back), every entry checked before a byte of data is read.

Public names:
    DTYPES, DTYPE_NAMES, DTYPE_RANK    {name: torch dtype}, its inverse, safetensors' sort order
    HEAD_READ                          bytes of a file's first read (its header and what follows)
    header_bytes(layout, metadata)     the 8-byte length + padded JSON header of [(name, dtype, shape)]
    check_head(f, path, nbytes, size=None) -> (head bytes, header length, file size)
    read_header(f, path, size) -> (entries, metadata, data start, head bytes)   all checked, tiling too
    checked_header(text) -> (entries, metadata)    the JSON header's checks alone: UTF-8 only, at most
                                       MAX_TENSORS entries, nesting at most 100 (bounded_json)
    check_entry(key, entry)            one tensor entry's checks (dtype, shape, byte span)
    read_tensor(f, key, entry, data_start, path) -> tensor   a checked entry's bytes, one read

Example:
    >>> path = "results/run1/activations/geo-001.safetensors"
    >>> with open(path, "rb", buffering=0) as f:
    ...     entries, meta, start, _ = read_header(f, path, os.fstat(f.fileno()).st_size)
    ...     t = read_tensor(f, "activations.layer_3", entries["activations.layer_3"], start, path)
    >>> entries["activations.layer_3"], t.shape
    ({'dtype': 'F32', 'shape': [41, 64], 'data_offsets': [..., ...]}, torch.Size([41, 64]))
    >>> json.loads(meta["record"])["prompt"][:30]          # the other fields: JSON in the metadata
    'What is the capital of France?'

Used by records.py (one record per file) and shards.py (many records per file): both are plain
safetensors files that safetensors.safe_open reads. A file from a stranger is checked here before
anything is allocated from its numbers; a failure is CorruptFileError naming the file.
"""
import json
import math
import os

import numpy as np
import torch

from ..dtypes import SAFETENSORS_CODES, SAFETENSORS_DTYPES
from .bounded_json import loads
from .checks import MAX_DIMS, check_bools, check_shape
from .errors import corrupt, format_hint

MAX_HEADER = 100_000_000                  # the safetensors library's own limit
MAX_TENSORS = 16_384                      # tensor entries in one header (a record or shard of a
                                          # 200-layer model needs about 210): parsing costs ~2 KB each
_HEADER_VALUES = MAX_TENSORS * (MAX_DIMS + 8) + 1024   # JSON values of a header that has at most that
# safetensors dtype codes in safetensors' sort order, and their inverse: the one table (activation_eval/dtypes.py)
DTYPES = SAFETENSORS_DTYPES
DTYPE_NAMES = SAFETENSORS_CODES
DTYPE_RANK = {dtype: rank for rank, dtype in enumerate(DTYPES.values())}
HEAD_READ = 65536          # first read of a .safetensors file: its header and the ids after it


def header_bytes(layout, metadata):
    """The head of a safetensors file holding the tensors `layout` = [(name, dtype, shape)] back to
    back in that order: the header's length (8 bytes, little-endian) and its compact JSON (metadata
    first, then the entries in file order), padded with spaces to a multiple of 8 bytes."""
    header, offset = {"__metadata__": metadata}, 0
    for name, dtype, shape in layout:
        end = offset + math.prod(shape) * dtype.itemsize
        header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def check_head(f, path, nbytes, size=None):
    """(the first `nbytes` of the .safetensors file open as `f`, its header length, its size):
    the header length checked against the file size before anything is allocated."""
    if size is None:
        size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise corrupt(path, "empty file")
    head = f.read(min(size, nbytes))
    if size < 8:
        raise corrupt(path, f"only {size} bytes, shorter than a safetensors header")
    n = int.from_bytes(head[:8], "little")
    if n > min(size - 8, MAX_HEADER):
        raise corrupt(path, f"not a safetensors file: header length {n} does not fit the "
                            f"{size}-byte file" + format_hint(head[:16]))
    if head[8:9] != b"{":
        raise corrupt(path, "not a safetensors file: the header is not JSON"
                      + format_hint(head[:16]))
    return head, n, size


def read_header(f, path, size):
    """(tensor entries {key: {"dtype", "shape", "data_offsets"}}, metadata, data start, the bytes
    read so far: at least the header) of the
    .safetensors file open as `f` (`size` bytes), from one read of its head. The header length
    is checked against the file size before it is read; every entry is checked (known dtype,
    shape, offsets that fit its bytes) and together they must tile the data exactly, from its
    start to the file's end (as safetensors checks: a truncated file fails here)."""
    head, n, _ = check_head(f, path, HEAD_READ, size)
    if len(head) < 8 + n:
        head += f.read(8 + n - len(head))
    try:
        entries, meta = checked_header(head[8:8 + n])
    except (ValueError, TypeError) as e:
        raise corrupt(path, e) from None
    end = 0
    for key, entry in sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"]):
        start = entry["data_offsets"][0]
        if start != end:
            raise corrupt(path, f"tensor {key!r} starts at byte {start} of the data, not at "
                                f"{end} (overlapping or gapped tensors)")
        end = entry["data_offsets"][1]
    if end != size - 8 - n:
        raise corrupt(path, f"the header places {end} bytes of tensor data, the file holds "
                            f"{size - 8 - n} (truncated?)")
    return entries, meta, 8 + n, head


def checked_header(text):
    """(tensor entries, metadata) of a safetensors header's JSON `text`; ValueError unless it is a
    UTF-8 JSON object (json.loads would take UTF-16 and UTF-32 too) of at most MAX_TENSORS
    entries, its metadata a {str: str} object and every entry one check_entry accepts. The
    number of values is bounded before the parse (bounded_json), so a header of a million entries
    is refused in time and memory proportional to its bytes, before a dict is made."""
    try:
        entries = loads(text, max_values=_HEADER_VALUES)
    except UnicodeDecodeError:
        raise ValueError("the header is not UTF-8 JSON") from None
    if not isinstance(entries, dict):
        raise ValueError("the header is not a JSON object")
    if len(entries) > MAX_TENSORS + 1:
        raise ValueError(f"the header lists {len(entries) - 1} tensors, more than {MAX_TENSORS}")
    meta = entries.pop("__metadata__", None) or {}
    if not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise ValueError("header metadata is not a {str: str} object")
    for key, entry in entries.items():      # dtype, shape and byte span, before any is read
        check_entry(key, entry)
    return entries, meta


def check_entry(key, entry):
    """ValueError unless `entry` is a tensor entry safetensors would accept: a known dtype, a
    shape that checks.check_shape accepts, and int offsets whose span holds exactly its bytes."""
    if not (isinstance(entry, dict) and set(entry) == {"dtype", "shape", "data_offsets"}
            and entry["dtype"] in DTYPES and isinstance(entry["shape"], list)):
        raise ValueError(f"tensor {key!r:.100}: bad header entry {entry!r:.200}")
    shape, offsets = check_shape(entry["shape"]), entry["data_offsets"]
    if not (isinstance(offsets, list) and len(offsets) == 2
            and all(type(o) is int for o in offsets) and 0 <= offsets[0] <= offsets[1]
            and math.prod(shape) * DTYPES[entry["dtype"]].itemsize
            == offsets[1] - offsets[0]):
        raise ValueError(f"tensor {key!r:.100}: bad header entry {entry!r:.200}")


def read_tensor(f, key, entry, data_start, path):
    """Tensor `key` of the .safetensors file open as `f`: its byte range (checked by
    read_header) read into a new tensor; a bool tensor's bytes must be 0 or 1 (checks.check_bools:
    the one check of both stores, records and shards)."""
    dtype, shape = DTYPES[entry["dtype"]], entry["shape"]
    start, end = entry["data_offsets"]
    if end == start:
        return torch.empty(shape, dtype=dtype)
    buf = np.empty(end - start, np.uint8)
    f.seek(data_start + start)
    if f.readinto(buf) != end - start:
        raise corrupt(path, f"tensor {key!r} is cut short")
    if dtype == torch.bool:
        try:
            check_bools(buf, f"tensor {key!r:.100}")
        except ValueError as e:
            raise corrupt(path, e) from None
    return torch.frombuffer(buf, dtype=dtype).reshape(shape)
