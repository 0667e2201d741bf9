"""Activation record files: save, load safely, and read one layer across a whole run.

Public names:
    FORMATS                              (".pkl", ".safetensors"): format = file extension
    save_activations(record, path)       atomic, compact write of one record; returns the path
    load_activations(path, layers=None)  read one record back, optionally only some layers;
                                         never runs code from the file
    load_run_layer(run_dir, layer, positions="last_prompt")
                                         one vector per captured question -> (matrix, rows)
    read_results(run_dir)                rows of run_dir/results.jsonl (skips a torn last line)
    iter_record_files(directory)         sorted record files of a folder or run folder
    record_path(directory, question_id, fmt="pkl")
                                         a filesystem-safe record file path for a question id
    remove_stale_temp_files(directory)   delete temp files left by killed writers; -> count
    write_text_atomic(path, text)        atomic UTF-8 text write (results.jsonl rewrites)
    write_json_atomic(path, obj)         atomic JSON write (summary.json, config)
    StorageError(OSError)                a write failed (the previous file is left unchanged)
    CorruptFileError(ValueError)         a file is empty, truncated, garbled or not a record
    UnsafeFileError(ValueError)          a pickle references what a record never contains
                                         (the three errors are defined in record_errors.py)

Example:
    >>> path = record_path("run/activations", "geo-001", "safetensors")
    >>> save_activations(record, path)
    'run/activations/geo-001.safetensors'
    >>> rec = load_activations(path, layers=["layer_3"])      # reads that tensor (and ids)
    >>> X, rows = load_run_layer("run", "layer_3")            # X: float32 [n_questions, hidden]
    >>> y = [row["correct"] for row in rows]

Formats:
    .pkl          a standard protocol-5 pickle of the record dict. Tensors of numpy dtypes
                  are pickled as torch.from_numpy(<numpy array>), so their bytes go from memory
                  to the file without a copy; bfloat16 keeps torch's own pickling. A plain
                  `pickle.load` reads it back as torch tensors where torch is installed. Our
                  reader is the allow-list unpickler of safe_pickle.py (it also reads files
                  of the older all-torch pickling); it never calls torch.load(weights_only=False).
    .safetensors  tensors under "activations.<name>", "input_ids", "output_ids" (any top-level
                  tensor field under its own name); every other field as JSON in the header
                  metadata, so one layer can be read without reading the others. Datetimes
                  become ISO-8601 strings. Laid out byte for byte as safetensors' save_file
                  lays it out (but for its metadata key order, which it picks at random) and
                  written straight from the tensors' memory.
"""
import datetime
import errno
import hashlib
import json
import logging
import math
import os
import pickle
import re
import secrets
from collections.abc import Mapping

import numpy as np
import torch
from safetensors import safe_open

from record_errors import (CorruptFileError, StorageError, UnsafeFileError,  # noqa: F401
                           corrupt, format_hint)
from safe_pickle import safe_load

FORMATS = (".pkl", ".safetensors")

log = logging.getLogger(__name__)

_TEMP_NAME = re.compile(r"^\..+\.[0-9a-f]{8}\.tmp$")  # ".<final name>.<8 hex>.tmp"
_SAFETENSORS_FORMAT = "activation-record"              # header metadata "format" value
_MAX_SAFETENSORS_HEADER = 100_000_000                  # the safetensors library's own limit
_RESULTS = "results.jsonl"
# dtypes whose tensors torch itself can pickle and unpickle again (others hit a torch bug)
_PICKLE_DTYPES = {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64,
                  torch.complex128, torch.int64, torch.int32, torch.int16, torch.int8,
                  torch.uint8, torch.bool}
# ... of which these have a numpy dtype: pickled as torch.from_numpy(array) (see _RecordPickler)
_NUMPY_PICKLE_DTYPES = _PICKLE_DTYPES - {torch.bfloat16}
# safetensors dtype names, in the order safetensors' writer sorts tensors (then by name); the
# same table reads them back. float4 (packed, shape rule differs) is left out.
_ST_DTYPES = {"U64": torch.uint64, "I64": torch.int64, "F64": torch.float64,
              "C64": torch.complex64, "F32": torch.float32, "U32": torch.uint32,
              "I32": torch.int32, "BF16": torch.bfloat16, "F16": torch.float16,
              "U16": torch.uint16, "I16": torch.int16, "F8_E5M2FNUZ": torch.float8_e5m2fnuz,
              "F8_E4M3FNUZ": torch.float8_e4m3fnuz, "F8_E8M0": torch.float8_e8m0fnu,
              "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2, "I8": torch.int8,
              "U8": torch.uint8, "BOOL": torch.bool}
_ST_NAMES = {dtype: name for name, dtype in _ST_DTYPES.items()}
_ST_RANK = {dtype: rank for rank, dtype in enumerate(_ST_DTYPES.values())}
_IOV_MAX = 1024             # buffers per writev call (IOV_MAX on Linux and macOS)
_HEAD_READ = 65536          # first read of a .safetensors file: its header and the ids after it


# ----------------------------------------------------------------------------- file names

def _extension(path):
    """The format of `path` from its extension, or ValueError naming the file."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"unsupported activation file extension {ext or '(none)'!r}; "
                         f"supported: {', '.join(FORMATS)}: {path}")
    return ext


def record_path(directory, question_id, fmt="pkl"):
    """Path of the record file for `question_id` in `directory`.

    >>> record_path("acts", "geo/001 (b)", "safetensors")
    'acts/geo_001__b_-cca2507873.safetensors'

    Keeps [A-Za-z0-9._-] and replaces anything else with "_"; when anything was changed (or the
    name would look like a hash-suffixed one) a short hash of the id is appended, so distinct
    ids never share a file. Note: ids that differ only in case share a file on case-insensitive
    file systems (macOS, Windows).
    """
    ext = "." + str(fmt).lstrip(".")
    if ext not in FORMATS:
        raise ValueError(f"unsupported record format {fmt!r}; use 'pkl' or 'safetensors'")
    qid = str(question_id)
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", qid)[:120]
    if safe.startswith("."):
        safe = "_" + safe[1:]                       # no hidden files, no "." / ".."
    if safe != qid or not safe or re.search(r"-[0-9a-f]{10}$", safe):
        safe = f"{safe}-{hashlib.sha256(qid.encode('utf-8')).hexdigest()[:10]}"
    return os.path.join(os.fspath(directory), safe + ext)


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
    if os.path.isfile(os.path.join(directory, _RESULTS)):
        sub = os.path.join(directory, "activations")
        if not os.path.isdir(sub):
            files = [os.path.join(directory, row["activation_file"])
                     for row in read_results(directory) if row.get("activation_file")]
            return sorted(p for p in files if os.path.isfile(p))
        directory = sub
    return sorted(os.path.join(directory, name) for name in os.listdir(directory)
                  if not name.startswith(".")
                  and os.path.splitext(name)[1].lower() in FORMATS
                  and os.path.isfile(os.path.join(directory, name)))


def remove_stale_temp_files(directory):
    """Delete temp files (".<name>.<8 hex>.tmp") that killed writers left in `directory`.

    >>> remove_stale_temp_files("runs/r1/activations")
    2

    Call it when no writer is using the folder (e.g. at the start of a run). A missing folder
    holds nothing: returns 0.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        return 0
    removed = 0
    for name in os.listdir(directory):
        full = os.path.join(directory, name)
        if _TEMP_NAME.match(name) and os.path.isfile(full):
            try:
                os.unlink(full)
                removed += 1
            except FileNotFoundError:
                pass                                # another cleaner got it first
    return removed


# ----------------------------------------------------------------------------- saving

def save_activations(record, path):
    """Write `record` to `path` (.pkl or .safetensors, by extension) atomically; returns path.

    >>> save_activations({"prompt": "2+2=", "activations": {"layer_0": t}, ...}, "acts/q1.pkl")
    'acts/q1.pkl'

    Tensors are detached, moved to the CPU and copied when they are views of larger buffers,
    so the file holds only their own bytes. The file appears complete or not at all: data goes
    to a temp file in the same folder, is fsynced and renamed over `path`. Raises StorageError
    on I/O failure (the previous file at `path`, if any, is unchanged), TypeError/ValueError
    for a record that this format cannot hold.
    """
    path = os.fspath(path)
    ext = _extension(path)
    record = _prepare_record(record)
    if ext == ".pkl":
        _check_picklable_dtypes(record)
        _atomic_write(path, lambda tmp_path: _write_pickle(record, tmp_path))
    else:
        header, tensors = _safetensors_layout(*_safetensors_payload(record))
        _atomic_write(path, lambda tmp_path: _write_safetensors(header, tensors, tmp_path))
    return path


def write_text_atomic(path, text):
    """Write `text` (UTF-8) to `path` so that readers see the old or the new file, never half.

    >>> write_text_atomic("runs/r1/results.jsonl", "".join(json.dumps(r) + "\\n" for r in rows))

    Same temp-file + fsync + rename as save_activations; raises StorageError on I/O failure.
    """
    path = os.fspath(path)
    data = text.encode("utf-8")

    def write(tmp_path):
        with open(tmp_path, "wb") as f:
            f.write(data)
    _atomic_write(path, write)
    return path


def write_json_atomic(path, obj):
    """Write `obj` as indented JSON to `path` atomically (see write_text_atomic).

    >>> write_json_atomic("runs/r1/summary.json", {"accuracy": 0.75})
    """
    return write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False,
                                              default=_json_default) + "\n")


def _prepare_record(record):
    """A shallow copy of `record` whose tensors are detached CPU tensors owning their storage."""
    if not isinstance(record, Mapping):
        raise TypeError(f"a record must be a dict, got {type(record).__name__}")
    acts = record.get("activations")
    if not isinstance(acts, Mapping):
        raise TypeError("record['activations'] must be a dict {layer name: tensor}, "
                        f"got {type(acts).__name__}")
    seen = set()
    out = {}
    for key, value in record.items():
        if not isinstance(key, str):
            raise TypeError(f"record keys must be strings, got {key!r}")
        if key == "activations":
            out[key] = {}
            for name, t in acts.items():
                if not isinstance(name, str) or not isinstance(t, torch.Tensor):
                    raise TypeError(f"record['activations'] must map str -> torch.Tensor; "
                                    f"{name!r} -> {type(t).__name__}")
                out[key][name] = _owned(t, seen)
        else:
            out[key] = _owned(value, seen) if isinstance(value, torch.Tensor) else value
    return out


def _owned(t, seen):
    """`t` detached, on the CPU, dense, and owning exactly its own bytes (copied if needed).
    Each step runs only when needed: a record holds dozens of tensors and this is per save."""
    if t.requires_grad:
        t = t.detach()
    if type(t) is not torch.Tensor:
        t = t.as_subclass(torch.Tensor)
    if t.device.type != "cpu":
        t = t.cpu()
    if t.is_conj() or t.is_neg():
        t = t.resolve_conj().resolve_neg()
    storage = t.untyped_storage()
    owns = (t.storage_offset() == 0 and t.is_contiguous()
            and storage.nbytes() == t.numel() * t.element_size())
    if not owns or (t.numel() and storage.data_ptr() in seen):
        # pickling a view writes its whole storage; safetensors refuses shared storage
        t = t.clone(memory_format=torch.contiguous_format)
        storage = t.untyped_storage()
    seen.add(storage.data_ptr())
    return t


def _check_picklable_dtypes(record):
    tensors = list(record["activations"].items()) + [
        (k, v) for k, v in record.items() if isinstance(v, torch.Tensor)]
    for name, t in tensors:
        if t.dtype not in _PICKLE_DTYPES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which torch "
                             f"{torch.__version__} cannot unpickle again; save as .safetensors")


class _RecordPickler(pickle.Pickler):
    """Pickles a CPU tensor of a numpy dtype as torch.from_numpy(<numpy array>).

    With protocol 5 numpy hands pickle the array's own memory, which the C pickler writes
    straight to the file (buffers of 64 KiB and more bypass its frame buffer); torch's own
    reduction first copies every storage into an in-memory torch.save payload. A plain
    pickle.load still returns torch tensors. Other tensors (bfloat16, autograd, other devices,
    subclasses) keep torch's reduction."""

    def reducer_override(self, obj):
        if obj is torch.from_numpy:
            return "from_numpy"     # the global torch.from_numpy, not getattr(torch._C..., ...)
        if (type(obj) is torch.Tensor and obj.dtype in _NUMPY_PICKLE_DTYPES
                and obj.device.type == "cpu" and obj.layout == torch.strided
                and not obj.requires_grad and not obj.is_conj() and not obj.is_neg()):
            return torch.from_numpy, (obj.numpy(),)
        return NotImplemented


class _Pieces(list):
    """The pickler's "file" in _write_pickle: it keeps what the C pickler writes, which is fresh
    bytes for its frames and, for each buffer of 64 KiB or more, the object that holds it
    (bytes, bytearray, or the PickleBuffer of a tensor's numpy array): nothing is copied."""
    write = list.append


def _write_pickle(record, tmp_path):
    pieces = _Pieces()
    _RecordPickler(pieces, protocol=5).dump(record)
    _write_file(tmp_path, pieces)


def _safetensors_layout(tensors, metadata):
    """(file head, tensors in file order), laid out exactly as safetensors.torch.save_file does:
    tensors sorted by dtype (in _ST_DTYPES order) then name and packed back to back; the head
    is the header length (8 bytes, little-endian) and the compact JSON header (metadata first,
    then the tensors in file order), padded with spaces to a multiple of 8 bytes."""
    for name, t in tensors.items():
        if t.dtype not in _ST_NAMES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which .safetensors cannot "
                             f"hold; save as .pkl")
    order = sorted(tensors, key=lambda name: (_ST_RANK[tensors[name].dtype], name))
    header, offset = {"__metadata__": metadata}, 0
    for name in order:
        t = tensors[name]
        end = offset + t.numel() * t.element_size()
        header[name] = {"dtype": _ST_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, end]}
        offset = end
    text = json.dumps(header, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text, [tensors[name] for name in order]


def _write_safetensors(head, tensors, tmp_path):
    """Write the file from the tensors' own memory (safetensors' writer copies everything
    through a 1 MiB buffer, into a second temp file of its own)."""
    _write_file(tmp_path, [head] + [t.reshape(-1).view(torch.uint8).numpy() for t in tensors])


def _write_file(path, pieces):
    """Write the byte-like `pieces` to `path` with as few writev calls as the OS allows: each
    write call costs ~20 us here (one per tensor: +0.6 ms, 20%, on a 5 MB record)."""
    views = [p.raw() if isinstance(p, pickle.PickleBuffer) else memoryview(p).cast("B")
             for p in pieces]                           # raw(): also Fortran-ordered buffers
    views = [view for view in views if len(view)]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        while views:
            if hasattr(os, "writev"):
                n = os.writev(fd, views[:_IOV_MAX])
            else:
                n = os.write(fd, views[0])
            while views and n >= len(views[0]):         # drop what was written
                n -= len(views.pop(0))
            if n:
                views[0] = views[0][n:]
    finally:
        os.close(fd)


def _json_default(value):
    if isinstance(value, (datetime.datetime, datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _safetensors_payload(record):
    """(tensors, metadata) for safetensors: tensors by key, other fields as header JSON."""
    tensors, fields, tensor_fields = {}, {}, []
    for name, t in record["activations"].items():
        tensors[f"activations.{name}"] = t
    for key, value in record.items():
        if key == "activations":
            continue
        if isinstance(value, torch.Tensor):
            if key in tensors or key == "__metadata__":
                raise ValueError(f"record field {key!r} clashes with an activation's tensor key "
                                 f"or the header's metadata")
            tensors[key] = value
            tensor_fields.append(key)
        else:
            fields[key] = value
    try:
        record_json = json.dumps(fields, default=_json_default)
    except (TypeError, ValueError):
        for key, value in fields.items():           # name the field that cannot be stored
            try:
                json.dumps(value, default=_json_default)
            except (TypeError, ValueError) as e:
                raise TypeError(f"record field {key!r} cannot be stored as JSON in a "
                                f".safetensors header ({e}); save as .pkl or convert it"
                                ) from None
        raise
    metadata = {
        "format": _SAFETENSORS_FORMAT,
        "format_version": "1",
        "record": record_json,
        "key_order": json.dumps(list(record)),
        "tensor_fields": json.dumps(tensor_fields),
        "layer_order": json.dumps(list(record["activations"])),
    }
    return tensors, metadata


def _atomic_write(path, write):
    """Run write(tmp_path) on a temp file next to `path`, fsync it, rename it to `path`."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp_path = os.path.join(folder, f".{os.path.basename(path)}.{secrets.token_hex(4)}.tmp")
    created = False
    try:
        os.makedirs(folder, exist_ok=True)
        os.close(os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # umask applies
        created = True
        write(tmp_path)
        _fsync_path(tmp_path)
        os.replace(tmp_path, path)
    except BaseException as e:
        if created:
            try:
                os.unlink(tmp_path)
            except OSError:
                pass
        if isinstance(e, OSError):
            raise _storage_error(e, "could not write activation record", path,
                                 "any previous file there is unchanged") from e
        raise
    try:
        _fsync_directory(folder)        # makes the rename itself survive a power loss
    except OSError as e:
        raise _storage_error(e, "wrote activation record but could not fsync its folder", path,
                             "it may not survive a crash") from e


def _storage_error(cause, what, path, consequence):
    err = StorageError(f"{what} ({type(cause).__name__}: {cause}); {consequence}: {path}")
    err.errno = getattr(cause, "errno", None) or errno.EIO
    return err


def _fsync_path(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_directory(folder):
    if os.name == "posix":          # directories cannot be opened for fsync on Windows
        _fsync_path(folder)


# ----------------------------------------------------------------------------- loading

def load_activations(path, layers=None):
    """Read the record at `path`; with `layers`, only those activations (in file order).

    >>> rec = load_activations("acts/q1.safetensors", layers=["layer_3"])
    >>> rec["activations"]["layer_3"].shape      # (n_positions, hidden)

    For .safetensors, a whole record is memory-mapped (pages are read when used); with `layers`
    only the requested tensors' bytes (and the ids') are read, into tensors of their own. Pickles
    are read whole, with an allow-list unpickler: a file that references anything else raises
    UnsafeFileError and runs nothing.
    Raises CorruptFileError for empty/truncated/garbled files, ValueError for an unsupported
    extension or unknown layer names (the message lists the available ones).
    """
    path = os.fspath(path)
    ext = _extension(path)
    layers = _parse_layers(layers)
    if ext == ".pkl":
        record = _load_pickle(path)
        names = _select_layers(list(record["activations"]), layers, path)
        if layers is not None:
            record["activations"] = {n: record["activations"][n] for n in names}
        return record
    return _load_safetensors(path, layers)


def _parse_layers(layers):
    """None, one name, or an iterable of names -> None or a list of str."""
    if layers is None:
        return None
    if isinstance(layers, str):
        return [layers]
    layers = list(layers)
    if not all(isinstance(n, str) for n in layers):
        raise TypeError(f"layers must be layer names (str), got {layers!r}")
    return layers


def _select_layers(available, layers, path):
    if layers is None:
        return available
    unknown = [n for n in layers if n not in available]
    if unknown:
        raise ValueError(f"unknown layer name(s) {unknown}; available: {available}: {path}")
    wanted = set(layers)
    return [n for n in available if n in wanted]


def _load_pickle(path):
    record = safe_load(path)
    if not isinstance(record, dict) or not isinstance(record.get("activations"), dict):
        found = type(record).__name__ if not isinstance(record, dict) else "a dict without one"
        raise corrupt(path, f"not an activation record: expected a dict with an 'activations' "
                            f"dict, found {found}")
    return record


def _load_safetensors(path, layers):
    """One open of the file. A whole record is mapped by safetensors (no copy: pages are read
    when used). Selected layers (and the id tensors) are read from just their byte ranges into
    new tensors after one parse of the header, with read-ahead off so that a cold read does not
    pull in the rest of the file."""
    with open(path, "rb", buffering=0) as f:
        if layers is None:
            _check_head(f, path, 16)
            try:
                with safe_open(path, framework="pt", device="cpu") as st:
                    fields, key_order, tensor_fields, names = _record_layout(st.metadata(),
                                                                             st.keys())
                    tensors = {k: st.get_tensor(k)
                               for k in tensor_fields + [f"activations.{n}" for n in names]}
            except Exception as e:
                raise corrupt(path, e) from None
        else:
            if hasattr(os, "posix_fadvise"):
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_RANDOM)
            entries, meta, data_start = _read_header(f, path)
            try:
                fields, key_order, tensor_fields, layer_order = _record_layout(meta, entries)
            except Exception as e:
                raise corrupt(path, e) from None
            names = _select_layers(layer_order, layers, path)
            tensors = {k: _read_tensor(f, k, entries[k], data_start, path)
                       for k in tensor_fields + [f"activations.{n}" for n in names]}
    record = {}
    for key in key_order:
        if key == "activations":
            record[key] = {n: tensors[f"activations.{n}"] for n in names}
        elif key in tensors:
            record[key] = tensors[key]
        elif key in fields:
            record[key] = fields[key]
    return record


def _check_head(f, path, nbytes):
    """(the first `nbytes` (>= 16) of the .safetensors file open as `f`, its header length,
    its size): the header length checked against the file size before anything is allocated."""
    size = os.fstat(f.fileno()).st_size
    if size == 0:
        raise corrupt(path, "empty file")
    head = f.read(nbytes)
    if size < 8:
        raise corrupt(path, f"only {size} bytes, shorter than a safetensors header")
    n = int.from_bytes(head[:8], "little")
    if n > min(size - 8, _MAX_SAFETENSORS_HEADER):
        raise corrupt(path, f"not a safetensors file: header length {n} does not fit the "
                            f"{size}-byte file" + format_hint(head[:16]))
    if head[8:9] != b"{":
        raise corrupt(path, "not a safetensors file: the header is not JSON"
                      + format_hint(head[:16]))
    return head, n, size


def _read_header(f, path):
    """(tensor entries {key: {"dtype", "shape", "data_offsets"}}, metadata, data start) of the
    .safetensors file open as `f`, from one read of its head; checks that the tensor data ends
    at the file's end (as safetensors does: a truncated file fails here)."""
    head, n, size = _check_head(f, path, _HEAD_READ)
    if len(head) < 8 + n:
        head += f.read(8 + n - len(head))
    try:
        entries = json.loads(head[8:8 + n])
        meta = entries.pop("__metadata__", None) or {}
        end = max((e["data_offsets"][1] for e in entries.values()), default=0)
    except Exception as e:
        raise corrupt(path, e) from None
    if end != size - 8 - n:
        raise corrupt(path, f"the header places {end!r} bytes of tensor data, the file holds "
                            f"{size - 8 - n} (truncated?)")
    return entries, meta, 8 + n


def _record_layout(meta, keys):
    """(fields, key_order, tensor_fields, layer_order) from the header metadata of a record
    file whose tensors are `keys`; ValueError (or another error) if it is not a valid record."""
    meta = meta or {}
    if meta.get("format") != _SAFETENSORS_FORMAT:
        raise ValueError("no activation-record metadata (written by another tool?)")
    fields = json.loads(meta["record"])
    key_order = json.loads(meta["key_order"])
    tensor_fields = json.loads(meta["tensor_fields"])
    layer_order = json.loads(meta["layer_order"])
    if not (isinstance(fields, dict) and isinstance(layer_order, list)
            and isinstance(tensor_fields, list) and "activations" in key_order):
        raise ValueError("malformed activation-record metadata")
    missing = ({f"activations.{n}" for n in layer_order} | set(tensor_fields)) - set(keys)
    if missing:
        raise ValueError(f"tensors {sorted(missing)} listed in the header are missing")
    return fields, key_order, tensor_fields, layer_order


def _read_tensor(f, key, entry, data_start, path):
    """Tensor `key` of the .safetensors file open as `f`: its byte range read into a new tensor
    (the entry is checked first, so no size from the file is allocated unchecked)."""
    try:
        dtype = _ST_DTYPES[entry["dtype"]]
        shape, (start, end) = entry["shape"], entry["data_offsets"]
        if not (isinstance(shape, list) and all(type(d) is int and d >= 0 for d in shape)
                and type(start) is int and type(end) is int and 0 <= start
                and math.prod(shape) * dtype.itemsize == end - start):
            raise ValueError(f"bad header entry {entry!r:.200}")
    except Exception as e:
        raise corrupt(path, f"tensor {key!r}: {type(e).__name__}: {str(e)[:300]}") from None
    if end == start:
        return torch.empty(shape, dtype=dtype)
    buf = np.empty(end - start, np.uint8)
    f.seek(data_start + start)
    if f.readinto(buf) != end - start:
        raise corrupt(path, f"tensor {key!r} is cut short")
    return torch.frombuffer(buf, dtype=dtype).reshape(shape)


# ----------------------------------------------------------------------------- runs

def read_results(run_dir):
    """The rows (dicts) of run_dir/results.jsonl, in file order.

    >>> rows = read_results("runs/r1")
    >>> sum(r["correct"] for r in rows) / len(rows)

    A torn last line (a writer killed mid-line: no final newline) is skipped with a warning;
    a bad line anywhere else raises CorruptFileError.
    """
    path = os.path.join(os.fspath(run_dir), _RESULTS)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {_RESULTS} in run folder: {path}")
    with open(path, "rb") as f:
        data = f.read()
    lines = data.split(b"\n")
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        torn = number == len(lines)          # the last piece has no newline after it
        try:
            row = json.loads(line.decode("utf-8"))
            if not isinstance(row, dict):
                raise ValueError(f"a JSON {type(row).__name__}, not an object")
        except ValueError as e:
            if torn:
                log.warning("ignoring torn last line %d of %s (%s)", number, path, e)
                continue
            raise CorruptFileError(f"line {number} of {_RESULTS} is not a JSON object "
                                   f"({e}): {path}") from None
        rows.append(row)
    return rows


_POSITION_MODES = ("last_prompt", "mean_prompt", "last")


def _parse_positions(positions):
    """"last_prompt" | "mean_prompt" | "last" | an int token index >= 0, checked once."""
    if isinstance(positions, str) and positions in _POSITION_MODES:
        return positions
    if isinstance(positions, (int, np.integer)) and not isinstance(positions, bool) \
            and positions >= 0:
        return int(positions)
    raise ValueError(f"positions must be one of {_POSITION_MODES} or a token index >= 0, "
                     f"got {positions!r}")


def load_run_layer(run_dir, layer, positions="last_prompt"):
    """One `layer` vector per captured question of a run -> (float32 [n, hidden], rows).

    >>> X, rows = load_run_layer("runs/r1", "layer_5", positions="mean_prompt")
    >>> y = np.array([r["correct"] for r in rows])

    positions: "last_prompt" (the last prompt token's row), "mean_prompt" (mean over kept
    prompt positions), "last" (last kept row), or an int absolute token index. Rows of
    results.jsonl without an activation_file are skipped; `rows` are the results rows used,
    in the matrix's order. Reads only `layer` from .safetensors files.
    """
    run_dir = os.fspath(run_dir)
    positions = _parse_positions(positions)
    vectors, used = [], []
    for row in read_results(run_dir):
        rel = row.get("activation_file")
        if not rel:
            continue
        path = os.path.join(run_dir, rel)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"results row {row.get('id')!r} names activation_file "
                                    f"{rel!r}, which does not exist: {path}")
        record = load_activations(path, layers=[layer])
        # a copy: a view would keep the record's whole layer tensor alive until np.stack
        vectors.append(_pick_vector(record, layer, positions, path).copy())
        used.append(row)
    if not vectors:
        raise ValueError(f"no row of {_RESULTS} has an activation_file: {run_dir}")
    widths = {v.shape[0] for v in vectors}
    if len(widths) > 1:
        raise ValueError(f"layer {layer!r} has different widths {sorted(widths)} across the "
                         f"run's records: {run_dir}")
    return np.stack(vectors).astype(np.float32, copy=False), used


def _pick_vector(record, layer, positions, path):
    """The float32 [hidden] vector of `layer` at `positions` in one record."""
    t = torch.as_tensor(record["activations"][layer])   # seed pickles may hold numpy arrays
    if t.dim() == 3 and t.shape[0] == 1:        # seed records may keep a batch dimension
        t = t[0]
    if t.dim() != 2:
        raise ValueError(f"activation {layer!r} has shape {tuple(t.shape)}, expected "
                         f"(n_positions, hidden): {path}")
    kept = list(record.get("positions_kept") or range(t.shape[0]))
    if len(kept) != t.shape[0]:
        raise CorruptFileError(f"positions_kept lists {len(kept)} positions but {layer!r} has "
                               f"{t.shape[0]} rows: {path}")
    if positions == "last":
        if not kept:
            raise ValueError(f"record keeps no positions: {path}")
        return t[-1].float().numpy()
    if "num_prompt_tokens" in record:
        n_prompt = record["num_prompt_tokens"]
    elif "input_ids" in record:                 # seed records: [P] or [1, P]
        n_prompt = int(np.shape(record["input_ids"])[-1])
    else:
        raise ValueError(f"record has neither num_prompt_tokens nor input_ids: {path}")
    if positions == "mean_prompt":
        rows = [i for i, p in enumerate(kept) if p < n_prompt]
        if not rows:
            raise ValueError(f"record keeps no prompt positions (kept: {_short(kept)}): {path}")
        return t[rows].float().mean(dim=0).numpy()
    target = n_prompt - 1 if positions == "last_prompt" else positions
    if target not in kept:
        raise ValueError(f"record has no row for token position {target} "
                         f"(positions={positions!r}; kept: {_short(kept)}): {path}")
    return t[kept.index(target)].float().numpy()


def _short(values, n=8):
    return str(values) if len(values) <= n else f"[{values[0]}, ..., {values[-1]}] ({len(values)})"
