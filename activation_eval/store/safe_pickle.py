"""Safe unpickling of activation record pickles: an allow-list unpickler that never runs code.

Public names:
    safe_load(source)    unpickle a .pkl record file (a path or a binary file object) -> object;
                         only the globals records hold (tensors, numpy, datetimes, containers)
                         are resolved, anything else raises UnsafeFileError and runs nothing
    UnsafeFileError      (from errors.py; also records.UnsafeFileError)
    CorruptFileError     (from errors.py; also records.CorruptFileError)

Example:
    >>> obj = safe_load("run/activations/geo-001.pkl")
    >>> obj["activations"]["layer_3"].shape
    torch.Size([7, 64])
    >>> with open("received.pkl", "rb") as f:
    ...     safe_load(f)                     # a pickle that calls os.system:
    UnsafeFileError: refusing to load pickle: it references posix.system, ...: received.pkl

How it stays safe: pickle's find_class resolves only the (module, name) pairs in _GLOBALS, each
one a checked stand-in for what torch/numpy emit (tensor storages are bounds-checked, embedded
legacy torch.save payloads are checked and read with torch.load(weights_only=True); numpy's
protocol-5 arrays and torch.from_numpy, as records.py writes tensors, accept only numeric
dtypes and a buffer of exactly the declared size); BUILD (setting an object's state) is allowed
only on numpy arrays and fresh numpy dtypes; sizes declared in the file are checked against the
bytes present before anything is allocated. records.load_activations checks afterwards that the
object is a record (a dict with an "activations" dict).
"""
import datetime
import io
import math
import os
import pickle
import warnings
from collections import OrderedDict

import numpy as np
import torch

from .errors import CorruptFileError, UnsafeFileError, corrupt, format_hint  # noqa: F401
# ----------------------------------------------------------------------------- allow-list

class _Refused(Exception):
    """Internal: a pickle asked for a global outside the allow-list (or an unsafe payload)."""


_NDARRAY = object()   # stands for numpy.ndarray: passed to _reconstruct, never called
_TENSOR = object()    # stands for torch.Tensor: passed to _rebuild_from_type_v2, never called
_NP_RECONSTRUCT = np.zeros(1).__reduce_ex__(2)[0]       # numpy(._core).multiarray._reconstruct
_NP_SCALAR = np.float32(0).__reduce__()[0]               # numpy(._core).multiarray.scalar
_TORCH_DTYPES = {n: v for n, v in vars(torch).items() if isinstance(v, torch.dtype)}


def _ints(values, what):
    if not isinstance(values, (tuple, list, torch.Size)) or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"bad tensor {what}: {values!r}")
    return tuple(values)


def _checked_storage(storage, storage_offset, size, stride, itemsize):
    """(size, stride) after checking the view fits the storage: Tensor.set_ would otherwise
    silently grow the storage to whatever a file claims."""
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a storage")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if (not isinstance(storage_offset, int) or storage_offset < 0 or len(size) != len(stride)
            or min(size + stride, default=0) < 0):
        raise ValueError(f"bad tensor layout: offset {storage_offset!r}, size {size}, "
                         f"stride {stride}")
    if 0 not in size:
        end = storage_offset + 1 + sum((n - 1) * s for n, s in zip(size, stride))
        have = storage.nbytes() if isinstance(storage, torch.UntypedStorage) else \
            storage._untyped_storage.nbytes()
        if end * itemsize > have:
            raise ValueError(f"tensor of size {size} needs {end * itemsize} bytes but its "
                             f"storage holds {have}")
    return size, stride


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2 minus backward hooks (callables) and fake modes."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a typed storage")
    size, stride = _checked_storage(storage, storage_offset, size, stride,
                                    storage.dtype.itemsize)
    t = torch._utils._rebuild_tensor(storage, storage_offset, size, stride)
    return _finish_tensor(t, requires_grad, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    """torch._utils._rebuild_tensor_v3 (dtypes without a typed storage) minus hooks."""
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"bad tensor dtype {dtype!r}")
    size, stride = _checked_storage(storage, storage_offset, size, stride, dtype.itemsize)
    if isinstance(storage, torch.storage.TypedStorage):
        storage = storage._untyped_storage
    t = torch.empty((0,), dtype=dtype).set_(storage, storage_offset, size, stride)
    return _finish_tensor(t, requires_grad, metadata)


def _finish_tensor(t, requires_grad, metadata):
    """What both tensor rebuilds do last: restore the metadata dict and requires_grad."""
    if metadata:
        torch._utils.set_tensor_metadata(t, metadata)
    t.requires_grad = bool(requires_grad)
    return t


def _rebuild_from_type_v2(func, new_type, args, state):
    """Tensors that carried Python attributes: rebuild the plain tensor, drop the attributes."""
    if new_type is not _TENSOR or func not in (_rebuild_tensor_v2, _rebuild_tensor_v3):
        raise _Refused("torch._tensor._rebuild_from_type_v2 with a non-tensor type")
    return func(*args)


def _load_from_bytes(b):
    """torch.storage._load_from_bytes without code execution: checks the embedded legacy
    torch.save payload (allow-listed globals, declared sizes vs. bytes present), then loads it
    with torch.load(weights_only=True) onto the CPU."""
    if not isinstance(b, (bytes, bytearray)):
        raise ValueError("storage payload is not bytes")
    if bytes(b[:4]) == b"PK\x03\x04":
        raise _Refused("torch.storage._load_from_bytes with a torch.save zip archive "
                       "(tensor pickles embed only the legacy format)")
    _check_storage_payload(b)
    storage = torch.load(io.BytesIO(b), weights_only=True, map_location="cpu")
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise ValueError(f"storage payload holds a {type(storage).__name__}, not a storage")
    return storage


class _BoundedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler, minus its one allocation of a size read from the file."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, size_limit):
        super().__init__(file)
        self.size_limit = size_limit            # no object can be larger than the input

    def load_bytearray8(self):
        """BYTEARRAY8 allocates its declared size before reading: check it first."""
        size = int.from_bytes(self.read(8), "little")
        if size > self.size_limit:
            raise EOFError
        data = bytearray(size)
        self.readinto(data)
        self.append(data)

    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


class _StorageType:
    """Stands for a storage class inside a payload pickle (never called)."""

    def __init__(self, itemsize):
        self.itemsize = itemsize


def _storage_types():
    """{(module, name): itemsize} of the storage classes legacy payloads reference."""
    types = {("torch", "UntypedStorage"): 1, ("torch.storage", "UntypedStorage"): 1}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # TypedStorage deprecation noise
        for name, obj in vars(torch).items():
            if (isinstance(obj, type) and issubclass(obj, torch.storage._LegacyStorage)
                    and obj is not torch.storage._LegacyStorage):
                types[("torch", name)] = obj.dtype.itemsize
    return types


_STORAGE_TYPES = _storage_types()


class _PayloadUnpickler(_BoundedUnpickler):
    """Reads the small pickles of a legacy torch.save payload: only storage classes (as inert
    tokens) and storage references, whose declared sizes it records."""

    def __init__(self, file, size_limit):
        super().__init__(file, size_limit)
        self.nbytes = {}

    def find_class(self, module, name):
        if (module, name) not in _STORAGE_TYPES:
            raise _Refused(f"{module}.{name} (inside an embedded tensor payload)")
        return _StorageType(_STORAGE_TYPES[(module, name)])

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageType) and isinstance(pid[4], int) and pid[4] >= 0):
            raise ValueError(f"malformed storage reference {pid!r:.200}")
        self.nbytes[str(pid[2])] = pid[4] * pid[1].itemsize
        return None


def _check_storage_payload(b):
    """Legacy torch.save layout: magic, protocol, sys info, object (with storage references),
    storage keys, then per storage an int64 count and its raw bytes."""
    f = io.BytesIO(b)
    if _PayloadUnpickler(f, len(b)).load() != torch.serialization.MAGIC_NUMBER:
        raise ValueError("embedded tensor payload has no torch magic number")
    _PayloadUnpickler(f, len(b)).load()                 # protocol version
    _PayloadUnpickler(f, len(b)).load()                 # sys info
    main = _PayloadUnpickler(f, len(b))
    main.load()                                         # the storage, by reference
    keys = _PayloadUnpickler(f, len(b)).load()
    declared = sum(main.nbytes.values()) + 8 * len(main.nbytes)
    present = len(b) - f.tell()
    if not isinstance(keys, list) or declared > present:
        raise ValueError(f"embedded tensor declares {declared} bytes of data but holds {present}")


def _safe_codecs_encode(obj, encoding="utf-8"):
    """_codecs.encode as protocol-2 pickles use it for bytes: latin-1 text only."""
    if not isinstance(obj, str) or encoding != "latin1":
        raise ValueError(f"unexpected _codecs.encode({type(obj).__name__}, {encoding!r})")
    return obj.encode("latin1")


def _safe_bytes(*args):
    """bytes()/bytearray() as pickles use them: never bytes(n), which allocates n bytes."""
    if args and not isinstance(args[0], (bytes, bytearray)):
        raise ValueError(f"unexpected bytes({type(args[0]).__name__})")
    return bytes(*args[:1])


def _safe_bytearray(*args):
    return bytearray(_safe_bytes(*args))


def _np_reconstruct(subtype, shape, dtype):
    """numpy's _reconstruct for plain arrays; numpy pickles always start from an empty array."""
    if subtype is not _NDARRAY:
        raise _Refused("numpy _reconstruct of a non-ndarray type")
    if math.prod(_ints(shape, "shape")) != 0:
        raise ValueError(f"numpy _reconstruct with non-empty shape {shape!r}")
    return _NP_RECONSTRUCT(np.ndarray, shape, dtype)


def _numeric(dtype):
    """`dtype` if it is a plain numeric numpy dtype (bool, int, uint, float, complex): never an
    object, structured, sub-array, string or datetime dtype."""
    if not (isinstance(dtype, np.dtype) and dtype.kind in "biufc" and dtype.fields is None
            and dtype.subdtype is None and not dtype.hasobject):
        raise ValueError(f"unexpected array dtype {dtype!r:.100}")
    return dtype


def _np_frombuffer(buf, dtype, shape, order, axis_order=None):
    """numpy's _frombuffer (protocol-5 array pickles), only for an in-band buffer of a numeric
    dtype that holds exactly shape's elements, in C, F or axis_order ("K") layout."""
    if not isinstance(buf, (bytes, bytearray)):
        raise ValueError(f"array buffer is a {type(buf).__name__}, not bytes")
    shape, itemsize = _ints(shape, "shape"), _numeric(dtype).itemsize
    if min(shape, default=0) < 0 or math.prod(shape) * itemsize != len(buf):
        raise ValueError(f"array of shape {shape} and dtype {dtype} does not fit its "
                         f"{len(buf)}-byte buffer")
    array = np.frombuffer(buf, dtype=dtype)
    if order in ("C", "F") and axis_order is None:
        return array.reshape(shape, order=order)
    if order == "K" and sorted(_ints(axis_order, "axis order")) == list(range(len(shape))):
        return array.reshape(shape).transpose(axis_order)      # numpy 2's strided layouts
    raise ValueError(f"bad array order {order!r:.20} / {axis_order!r:.100}")


def _from_numpy(array):
    """torch.from_numpy (storage's pickler writes tensors as torch.from_numpy(<array>)) for a
    plain numpy array of a numeric dtype; a read-only array (a bytes buffer) is copied first,
    so the tensor is always writable."""
    if type(array) is not np.ndarray:
        raise ValueError(f"torch.from_numpy of a {type(array).__name__}")
    _numeric(array.dtype)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def _np_dtype(obj, align=False, copy=False):
    """numpy.dtype, always a fresh copy: pickle's BUILD then sets only this copy's state,
    never that of numpy's shared built-in dtypes."""
    return np.dtype(obj, bool(align), True)


_GLOBALS = {
    # torch tensors (what pickle emits for every dense CPU/GPU tensor, checked with pickletools)
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,     # uint16/32/64, float8
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,  # tensor with attributes
    ("torch", "Tensor"): _TENSOR,
    ("torch._tensor", "Tensor"): _TENSOR,
    ("torch.storage", "_load_from_bytes"): _load_from_bytes,       # replaced: weights_only load
    ("torch", "Size"): torch.Size,
    ("torch", "from_numpy"): _from_numpy,                           # storage's own pickler
    ("torch.torch_version", "TorchVersion"): torch.torch_version.TorchVersion,  # torch.__version__
    ("collections", "OrderedDict"): OrderedDict,                    # tensors' backward_hooks
    # numpy arrays and scalars (numpy 1.x "numpy.core" and 2.x "numpy._core" names)
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _NP_SCALAR,
    ("numpy._core.multiarray", "scalar"): _NP_SCALAR,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,         # protocol 5 arrays
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    # datetimes (seed records' timestamp)
    ("datetime", "datetime"): datetime.datetime,
    ("datetime", "date"): datetime.date,
    ("datetime", "time"): datetime.time,
    ("datetime", "timedelta"): datetime.timedelta,
    ("datetime", "timezone"): datetime.timezone,
    # plain containers as protocol 2 writes them
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "complex"): complex,
    ("builtins", "bytes"): _safe_bytes,
    ("builtins", "bytearray"): _safe_bytearray,
    ("_codecs", "encode"): _safe_codecs_encode,
}


class _RecordUnpickler(_BoundedUnpickler):
    """Unpickler that resolves only _GLOBALS and torch dtypes; anything else is refused.

    It is the pure-Python unpickler so that BUILD (set an object's state) can be limited to
    numpy arrays and fresh numpy dtypes: on a tensor, Tensor.__setstate__ would call set_()
    (growing the storage to any size), on an allowed function it would rewrite its defaults
    for the whole process. Records hold few objects and tensor bytes are read in bulk, so the
    speed difference from the C unpickler is small."""

    dispatch = dict(_BoundedUnpickler.dispatch)

    def load_build(self):
        state = self.stack.pop()
        if not (type(self.stack[-1]) is np.ndarray or isinstance(self.stack[-1], np.dtype)):
            raise _Refused(f"setting the state of a {type(self.stack[-1]).__name__} "
                           f"(pickle BUILD)")
        self.stack[-1].__setstate__(state)

    dispatch[pickle.BUILD[0]] = load_build

    def find_class(self, module, name):
        if module == "__builtin__":                    # protocol 2 spelling
            module = "builtins"
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise ValueError("unexpected persistent id in a record pickle")


# ----------------------------------------------------------------------------- loading

def safe_load(source):
    """Unpickle the record pickle at `source` (a path or a binary file object) -> the object.

    >>> rec = safe_load("acts/q1.pkl")

    Raises UnsafeFileError when the pickle references anything outside the allow-list (nothing
    from the file has run), CorruptFileError for an empty, non-pickle, truncated, garbled or
    over-long file; both messages end with the file's path (a file object's name).
    """
    if hasattr(source, "read"):
        data, path = source.read(), getattr(source, "name", "<stream>")
    else:
        path = os.fspath(source)
        with open(path, "rb") as f:
            data = f.read()
    if not data:
        raise corrupt(path, "empty file")
    if data[0] != 0x80 or len(data) < 2 or not 2 <= data[1] <= pickle.HIGHEST_PROTOCOL:
        raise corrupt(path, "not a pickle (protocol 2+) file" + format_hint(data[:16]))
    stream = io.BytesIO(data)
    try:
        obj = _RecordUnpickler(stream, len(data)).load()
    except _Refused as e:
        raise UnsafeFileError(f"refusing to load pickle: it references {e}, which activation "
                              f"records never contain (loading it could run code): {path}"
                              ) from None
    except RecursionError:
        raise corrupt(path, "nesting too deep") from None
    except EOFError:
        raise corrupt(path, "truncated: the file ends before the pickle does") from None
    except Exception as e:                    # any failure to parse untrusted bytes = corrupt
        raise corrupt(path, e) from None
    if stream.tell() != len(data):
        raise corrupt(path, f"{len(data) - stream.tell()} unexpected bytes after the pickle")
    return obj
