"""Activation record files (one per question): save atomically and compactly, load safely.

Public names:
    FORMATS                              (".pkl", ".safetensors"): format = file extension
    save_activations(record, path)       atomic, compact write of one record; returns the path
    load_record_file(path, layers=None)  read one record file back, optionally only some layers;
                                         never runs code from the file (a run folder's records:
                                         run_reader.load_activations(run_dir, question_id))
Its errors (StorageError on a failed write, CorruptFileError and UnsafeFileError on a bad file)
are errors.py's.

Example:
    >>> from activation_eval.store.run_folder import record_path
    >>> path = record_path("acts", "geo-001", "safetensors")     # the one owner of record names
    >>> save_activations(record, path)                           # a record of the tiny 3-layer llama
    'acts/geo-001.safetensors'
    >>> rec = load_record_file(path, layers=["layer_2"])      # reads that tensor (and ids)
    >>> list(rec["activations"]), rec["prompt"]
    (['layer_2'], 'What is the capital of France?')

Formats:
    .pkl          a standard protocol-5 pickle of the record dict. Tensors of numpy dtypes
                  are pickled as torch.from_numpy(<numpy array>), so their bytes go from memory
                  to the file without a copy; bfloat16 keeps torch's own pickling. A plain
                  `pickle.load` reads it back as torch tensors where torch is installed. Our
                  reader is the allow-list unpickler of store/safe_pickle.py (it also reads files
                  of the older all-torch pickling); it never calls torch.load, and builds every
                  tensor and array itself from bytes present in the file.
    .safetensors  tensors under "activations.<name>", "input_ids", "output_ids" (any top-level
                  tensor field under its own name); every other field as JSON in the header
                  metadata, so one layer can be read without reading the others. Datetimes
                  become ISO-8601 strings. Laid out byte for byte as safetensors' save_file
                  lays it out (but for its metadata key order, which it picks at random) and
                  written straight from the tensors' memory.
"""
import json
import os
import pickle
from collections.abc import Mapping

import torch

from .atomic import atomic_write, json_default, write_pieces
from .bounded_json import loads
from .errors import corrupt
from .files import open_regular
from .run_folder import RECORD_FORMATS as FORMATS
from .run_folder import RESULTS_FILE
from .safe_pickle import check_structure, safe_load
from .safetensors_file import DTYPE_NAMES, DTYPE_RANK, header_bytes, read_header

# a module global, so that a test can watch which tensors a load reads
from .safetensors_file import read_tensor as _read_tensor

_SAFETENSORS_FORMAT = "activation-record"              # header metadata "format" value
# dtypes whose tensors torch itself can pickle and unpickle again (others hit a torch bug)
_PICKLE_DTYPES = {torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.complex64,
                  torch.complex128, torch.int64, torch.int32, torch.int16, torch.int8,
                  torch.uint8, torch.bool}
# ... of which these have a numpy dtype: pickled as torch.from_numpy(array) (see _RecordPickler)
_NUMPY_PICKLE_DTYPES = _PICKLE_DTYPES - {torch.bfloat16}


# ----------------------------------------------------------------------------- saving

def _extension(path):
    """The format of `path` from its extension, or ValueError naming the file."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"unsupported activation file extension {ext or '(none)'!r}; "
                         f"supported: {', '.join(FORMATS)}: {path}")
    return ext


def save_activations(record, path):
    """Write `record` to `path` (.pkl or .safetensors, by extension) atomically; returns path.

    >>> t = torch.randn(5, 64)
    >>> save_activations({"prompt": "2+2=", "response": "4", "activations": {"layer_0": t}}, "q1.pkl")
    'q1.pkl'

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
        atomic_write(path, lambda tmp_path: _write_pickle(record, tmp_path))
    else:
        header, tensors = _safetensors_layout(*_safetensors_payload(record))
        atomic_write(path, lambda tmp_path: _write_safetensors(header, tensors, tmp_path))
    return path

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
    write_pieces(tmp_path, pieces)

def _safetensors_layout(tensors, metadata):
    """(file head, tensors in file order), laid out exactly as safetensors.torch.save_file does:
    tensors sorted by dtype (in DTYPES order) then name and packed back to back (header_bytes)."""
    for name, t in tensors.items():
        if t.dtype not in DTYPE_NAMES:
            raise ValueError(f"tensor {name!r} has dtype {t.dtype}, which .safetensors cannot "
                             f"hold; save as .pkl")
    order = sorted(tensors, key=lambda name: (DTYPE_RANK[tensors[name].dtype], name))
    head = header_bytes([(name, tensors[name].dtype, tensors[name].shape) for name in order], metadata)
    return head, [tensors[name] for name in order]

def _write_safetensors(head, tensors, tmp_path):
    """Write the file from the tensors' own memory (safetensors' writer copies everything
    through a 1 MiB buffer, into a second temp file of its own)."""
    write_pieces(tmp_path, [head] + [t.reshape(-1).view(torch.uint8).numpy() for t in tensors])

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
        record_json = json.dumps(fields, default=json_default)
    except (TypeError, ValueError):
        for key, value in fields.items():           # name the field that cannot be stored
            try:
                json.dumps(value, default=json_default)
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

# ----------------------------------------------------------------------------- loading

def load_record_file(path, layers=None):
    """Read the record file at `path`; with `layers`, only those activations (in file order).

    >>> rec = load_record_file("results/run1/activations/geo-001.safetensors", layers=["layer_3"])
    >>> rec["activations"]["layer_3"].shape      # (n_positions, hidden)
    torch.Size([41, 64])

    A run folder's records (either store) are read with run_reader.load_activations(run_dir, id)
    (the public `load_activations`), which calls this for the file store.

    Only regular files are opened (a FIFO, a device or a symlink to one is refused, without
    blocking or reading). For .safetensors the header is read and every entry and metadata
    field checked first; then the tensors are read into memory of their own (never memory-mapped:
    a file truncated afterwards cannot crash the process); with `layers` only the requested
    tensors' bytes (and the ids') are read. Pickles are read whole (up to the file's size), with the allow-list unpickler of
    safe_pickle.py: a file that references anything else raises UnsafeFileError and runs
    nothing; one that is too deep or decodes to far more data than it holds is corrupt.
    Raises CorruptFileError for empty/truncated/garbled/non-regular files, ValueError for an
    unsupported extension or unknown layer names (the message lists the available ones).
    """
    path = os.fspath(path)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, RESULTS_FILE)):
        raise IsADirectoryError(f"{path} is a run folder, not a record file: load its records with "
                                f"load_activations(run_dir, question_id)")
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
    for name, t in record["activations"].items():
        if not isinstance(name, str) or not isinstance(t, torch.Tensor):
            raise corrupt(path, f"not an activation record: activation {str(name)[:100]!r} is "
                                f"a {type(t).__name__}, not a tensor")
    return record

def _load_safetensors(path, layers):
    """One open of the file (a regular file only) and one read of its header, every entry and
    every metadata field checked before anything else is read. Then each tensor wanted (every
    one, or the selected layers and the id tensors) is read from just its byte range into a new
    tensor of its own (for a few layers with read-ahead off, so that a cold read does not pull in
    the rest of the file). Nothing stays mapped: truncating the file afterwards harms nothing."""
    f, size = open_regular(path)
    with f:
        entries, meta, data_start, _ = read_header(f, path, size)
        try:
            fields, key_order, tensor_fields, layer_order = _record_layout(meta, entries)
        except (ValueError, TypeError) as e:
            raise corrupt(path, e) from None
        check_structure(fields, size, path)
        names = _select_layers(layer_order, layers, path)
        keys = tensor_fields + [f"activations.{n}" for n in names]
        if hasattr(os, "posix_fadvise"):
            # a whole record: read in order (read-ahead helps); some layers: just their byte ranges
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL if layers is None else os.POSIX_FADV_RANDOM)
        # each tensor read into memory of its own, in file order: never a mapping of the file, which
        # anyone truncating it afterwards would turn into a SIGBUS on first touch
        keys.sort(key=lambda k: entries[k]["data_offsets"][0])
        tensors = {k: _read_tensor(f, k, entries[k], data_start, path) for k in keys}
    # (bool tensors' bytes, like the header and the record JSON, were checked by the readers both
    # stores share: safetensors_file.read_tensor, checked_header, bounded_json, checks.check_structure)
    record = {}
    for key in key_order:
        if key == "activations":
            record[key] = {n: tensors[f"activations.{n}"] for n in names}
        elif key in tensors:
            record[key] = tensors[key]
        else:
            record[key] = fields[key]
    return record

def _json_field(meta, name, kind):
    """The metadata field `name`, a JSON text of a `kind` (dict, or list of unique strings)."""
    value = loads(meta[name]) if isinstance(meta.get(name), str) else None
    if kind is dict and isinstance(value, dict):
        return value
    if kind is list and isinstance(value, list) and all(isinstance(v, str) for v in value) \
            and len(set(value)) == len(value):
        return value
    raise ValueError(f"activation-record metadata {name!r} is not a JSON "
                     f"{'object' if kind is dict else 'list of distinct names'}")

def _record_layout(meta, entries):
    """(fields, key_order, tensor_fields, layer_order) from the header metadata of a record
    file whose tensors are `entries`; ValueError if it is not a valid record: every field of
    the wrong type, a key order that does not list exactly the record's keys, or a listed
    tensor that is missing, is refused (never a record silently missing its fields)."""
    if meta.get("format") != _SAFETENSORS_FORMAT:
        raise ValueError("no activation-record metadata (written by another tool?)")
    fields = _json_field(meta, "record", dict)
    key_order = _json_field(meta, "key_order", list)
    tensor_fields = _json_field(meta, "tensor_fields", list)
    layer_order = _json_field(meta, "layer_order", list)
    if set(key_order) != {"activations", *fields, *tensor_fields} or "activations" in fields \
            or set(fields) & set(tensor_fields):
        raise ValueError("the metadata's key_order does not list exactly the record's fields")
    missing = ({f"activations.{n}" for n in layer_order} | set(tensor_fields)) - set(entries)
    if missing:
        raise ValueError(f"tensors {sorted(missing)[:10]} listed in the header are missing")
    return fields, key_order, tensor_fields, layer_order
