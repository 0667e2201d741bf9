"""The allow-list of the record unpickler: each (module, name) a record pickle may reference,
mapped to a shim that checks its arguments and builds its result with public APIs from bytes
actually present in the file (see safe_pickle.py for how the unpickler uses them).

Public names:
    GLOBALS            {(module, name): shim} every global a record pickle may reference
    LOAD_FROM_BYTES    ("torch.storage", "_load_from_bytes"): resolved by the unpickler itself
    STORAGE_TYPES      {(module, name): torch dtype or None} storage classes a tensor payload names
    Storage            a storage read from a legacy torch.save payload (bytes + dtype), never in a record
    PendingArray       numpy's _reconstruct placeholder, completed by exactly one BUILD
    TorchVersion       the NEWOBJ-built torch version string
    NDARRAY, TENSOR    tokens standing for numpy.ndarray and torch.Tensor (never called)
    Refused            internal: a global or payload outside the allow-list

Example:
    >>> rebuild = GLOBALS[("torch._utils", "_rebuild_tensor_v2")]
    >>> GLOBALS[("numpy", "dtype")]("f4")
    dtype('float32')
"""
import datetime
import math
import re
import warnings
from collections import OrderedDict

import numpy as np
import torch

from ..dtypes import TORCH_DTYPES
from .checks import (
    MAX_INT,
    check_bools,
    check_ints,
    check_keys,
    check_numeric_dtype,
    check_shape,
    check_torch_dtype,
    dense_axis_order,
    short_repr,
)

__all__ = ["GLOBALS", "LOAD_FROM_BYTES", "STORAGE_TYPES", "Storage", "PendingArray", "TorchVersion", "NDARRAY",
           "TENSOR", "Refused"]


class Refused(Exception):
    """Internal: a pickle asked for a global outside the allow-list (or an unsafe payload)."""



NDARRAY = object()   # stands for numpy.ndarray: passed to _np_reconstruct, never called
TENSOR = object()    # stands for torch.Tensor: passed to _rebuild_from_type_v2, never called
_NP_DTYPE_NAME = re.compile(r"[biufc][0-9]{1,2}")      # how numpy pickles numeric dtypes: "f4"


def _array(buf, dtype, shape, order="C", axis_order=None):
    """The numpy array of `shape` read from `buf` (bytes or bytearray holding exactly its
    bytes), in C, F or permuted (order "K" + axis_order) layout: np.frombuffer + reshape."""
    if not isinstance(buf, (bytes, bytearray)):
        raise ValueError(f"array buffer is a {type(buf).__name__}, not bytes")
    shape, dtype = check_shape(shape), check_numeric_dtype(dtype)
    if math.prod(shape) * dtype.itemsize != len(buf):
        raise ValueError(f"array of shape {shape} and dtype {dtype} does not fit its "
                         f"{len(buf)}-byte buffer")
    if dtype.kind == "b":
        check_bools(np.frombuffer(buf, np.uint8), "array")
    array = np.frombuffer(buf, dtype=dtype)
    if order in ("C", "F") and axis_order is None:
        return array.reshape(shape, order=order)
    if order == "K" and sorted(check_ints(axis_order, "axis order")) == list(range(len(shape))):
        return array.reshape(shape).transpose(axis_order)      # numpy 2's strided layouts
    raise ValueError(f"bad array order {short_repr(order)} / {short_repr(axis_order)}")


# --- numpy

def _np_dtype(obj, align=False, copy=False):
    """numpy.dtype("f4", False, True) as numpy pickles numeric dtypes; its BUILD state is only
    compared with the dtype's own (see _RecordUnpickler.load_build), never applied."""
    if not (isinstance(obj, str) and _NP_DTYPE_NAME.fullmatch(obj)):
        raise ValueError(f"unexpected numpy dtype {short_repr(obj)}")
    return check_numeric_dtype(np.dtype(obj))


class PendingArray:
    """What numpy's _reconstruct gives: an array whose shape, dtype and bytes come with the
    following BUILD. The BUILD (once) makes the real array, which replaces this placeholder on
    the stack and in the memo; a placeholder left anywhere else fails check_structure."""

    def __init__(self):
        self.memo_keys, self.built = [], False

    def build(self, state):
        if self.built:
            raise Refused("a second BUILD of one numpy array")
        self.built = True
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[2], bool)):
            raise ValueError(f"bad numpy array state {short_repr(state)}")
        shape, dtype, fortran, raw = state
        if isinstance(raw, bytes):
            raw = bytearray(raw)            # a writable copy, as numpy's own unpickling gives
        return _array(raw, dtype, shape, "F" if fortran else "C")


def _np_reconstruct(subtype, shape, dtype_code):
    """numpy's _reconstruct(ndarray, (0,), b"b"): always the first step of an array pickle."""
    if subtype is not NDARRAY:
        raise Refused("numpy _reconstruct of a non-ndarray type")
    if check_ints(shape, "shape") != (0,) or dtype_code not in (b"b", "b"):
        raise ValueError(f"numpy _reconstruct({short_repr(shape)}, {short_repr(dtype_code)})")
    return PendingArray()


def _np_frombuffer(buf, dtype, shape, order, axis_order=None):
    """numpy's _frombuffer (protocol-5 array pickles): an in-band buffer of a numeric dtype
    holding exactly shape's elements."""
    return _array(buf, dtype, shape, order, axis_order)


def _np_scalar(dtype, data=None):
    """numpy's scalar(dtype, bytes): a numeric dtype and exactly its itemsize of bytes."""
    dtype = check_numeric_dtype(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise ValueError(f"numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes")
    return _array(data, dtype, (1,))[0]


# --- torch

class Storage:
    """A tensor storage read from an embedded legacy torch.save payload: its bytes (a uint8
    tensor over a bytearray of ours) and dtype (None: untyped). Never part of a record."""

    def __init__(self, data, dtype):
        self.data, self.dtype = data, dtype


def _storage_types():
    """{(module, name): torch dtype (None: untyped)} of the storage classes payloads name."""
    types = {("torch", "UntypedStorage"): None, ("torch.storage", "UntypedStorage"): None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # TypedStorage deprecation noise
        for name, obj in vars(torch).items():
            if (isinstance(obj, type) and issubclass(obj, torch.storage._LegacyStorage)
                    and obj is not torch.storage._LegacyStorage
                    and obj.dtype in TORCH_DTYPES.values()):
                types[("torch", name)] = obj.dtype
    return types


STORAGE_TYPES = _storage_types()


def _dense_tensor(storage, dtype, offset, size, stride):
    """The tensor (size, stride) at `offset` of `storage`, built as a slice + reshape + permute
    of its bytes: only dense layouts (a permutation of a contiguous one; no stride 0, no
    overlap), inside the storage."""
    if not isinstance(storage, Storage):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a storage")
    check_torch_dtype(dtype)
    size, stride = check_shape(size), check_ints(stride, "stride")
    if type(offset) is not int or not 0 <= offset < MAX_INT or len(size) != len(stride):
        raise ValueError(f"bad tensor layout: offset {short_repr(offset)}, size {size}, "
                         f"stride {stride}")
    if storage.data.numel() % dtype.itemsize:
        raise ValueError(f"storage of {storage.data.numel()} bytes holds no whole {dtype}")
    flat = storage.data.view(dtype)
    numel = math.prod(size)
    if numel == 0:
        return torch.empty(size, dtype=dtype)
    order = dense_axis_order(size, stride)
    if offset + numel > flat.numel():
        raise ValueError(f"tensor of size {size} at offset {offset} needs "
                         f"{(offset + numel) * dtype.itemsize} bytes but its storage holds "
                         f"{storage.data.numel()}")
    t = flat[offset:offset + numel].reshape([size[i] for i in order])
    if dtype == torch.bool:
        check_bools(t.view(torch.uint8).numpy(), "tensor")
    return t.permute([order.index(i) for i in range(len(size))])



def _finish_tensor(t, requires_grad, backward_hooks, metadata):
    """What both tensor rebuilds do last. Backward hooks (callables) are dropped; metadata
    (conj/neg bits) is refused: records never hold such views."""
    if metadata:
        raise ValueError(f"tensor metadata {short_repr(metadata)} is not supported")
    if not isinstance(backward_hooks, (dict, type(None))) or not isinstance(requires_grad, bool):
        raise ValueError("bad tensor arguments")
    if requires_grad:
        t.requires_grad_()
    return t


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2 of a typed storage, as _dense_tensor builds it."""
    dtype = storage.dtype if isinstance(storage, Storage) else None
    if dtype is None:
        raise ValueError("tensor of an untyped storage without a dtype")
    t = _dense_tensor(storage, dtype, storage_offset, size, stride)
    return _finish_tensor(t, requires_grad, backward_hooks, metadata)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       dtype, metadata=None):
    """torch._utils._rebuild_tensor_v3 (dtypes without a typed storage: uint16/32/64, float8)."""
    t = _dense_tensor(storage, dtype, storage_offset, size, stride)
    return _finish_tensor(t, requires_grad, backward_hooks, metadata)


def _rebuild_from_type_v2(func, new_type, args, state):
    """Tensors that carried Python attributes: rebuild the plain tensor, drop the attributes."""
    if new_type is not TENSOR or func not in (_rebuild_tensor_v2, _rebuild_tensor_v3):
        raise Refused("torch._tensor._rebuild_from_type_v2 with a non-tensor type")
    if not isinstance(args, tuple):
        raise ValueError("bad _rebuild_from_type_v2 arguments")
    return func(*args)


def _from_numpy(array):
    """torch.from_numpy (records.py writes tensors as torch.from_numpy(<array>)) of an array
    one of our shims built; a read-only array (a bytes buffer) is copied first, so the tensor
    is always writable."""
    if type(array) is not np.ndarray:
        raise ValueError(f"torch.from_numpy of a {type(array).__name__}")
    check_numeric_dtype(array.dtype)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def _torch_size(dims=()):
    return torch.Size(check_ints(dims, "torch.Size"))


class TorchVersion:
    """torch.torch_version.TorchVersion (torch.__version__, pickled with NEWOBJ): a string."""

    def __new__(cls, text):
        if type(text) is not str or len(text) > 100:
            raise ValueError("bad TorchVersion")
        return torch.torch_version.TorchVersion(text)


# --- Python built-ins as protocol 2 pickles them

def _safe_codecs_encode(obj, encoding="utf-8"):
    """_codecs.encode as protocol-2 pickles use it for bytes: latin-1 text only."""
    if not isinstance(obj, str) or encoding != "latin1":
        raise ValueError(f"unexpected _codecs.encode({type(obj).__name__}, {encoding!r:.20})")
    return obj.encode("latin1")


def _safe_bytes(*args):
    """bytes()/bytearray() as pickles use them: never bytes(n), which allocates n bytes."""
    if args and not isinstance(args[0], (bytes, bytearray)):
        raise ValueError(f"unexpected bytes({type(args[0]).__name__})")
    return bytes(*args[:1])


def _safe_bytearray(*args):
    return bytearray(_safe_bytes(*args))


def _items(args, what):
    """The one optional list/tuple argument of set/frozenset/OrderedDict (its members were
    built by the unpickler, so any tuple among them has a checked depth)."""
    if len(args) > 1 or (args and type(args[0]) not in (list, tuple)):
        raise ValueError(f"unexpected {what}() arguments")
    return args[0] if args else ()


def _safe_set(*args):
    items = _items(args, "set")
    check_keys(items, "set member")
    return set(items)


def _safe_frozenset(*args):
    items = _items(args, "frozenset")
    check_keys(items, "frozenset member")
    return frozenset(items)


def _safe_ordered_dict(*args):
    pairs = _items(args, "OrderedDict")
    if not all(type(p) in (list, tuple) and len(p) == 2 for p in pairs):
        raise ValueError("unexpected OrderedDict() items")
    check_keys([p[0] for p in pairs])
    return OrderedDict(pairs)


def _safe_complex(real=0.0, imag=0.0):
    if not all(type(v) in (int, float) for v in (real, imag)):
        raise ValueError("unexpected complex() arguments")
    return complex(real, imag)


def _checked_call(func, types):
    """`func` (a datetime type) called only with arguments of `types`; the datetime types
    themselves validate their pickled bytes."""
    def call(*args):
        if not all(type(a) in types for a in args) or len(args) > 8:
            raise ValueError(f"unexpected {func.__name__}() arguments")
        return func(*args)
    call.__name__ = func.__name__
    return call


_DT_TYPES = (bytes, str, int, datetime.timezone, datetime.timedelta, type(None))

GLOBALS = {
    # torch tensors (what pickle emits for every dense CPU/GPU tensor, checked with pickletools)
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,     # uint16/32/64, float8
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,  # tensor with attributes
    ("torch", "Tensor"): TENSOR,
    ("torch._tensor", "Tensor"): TENSOR,
    # ("torch.storage", "_load_from_bytes"): the unpickler's own _load_from_bytes (checked payload)
    ("torch", "Size"): _torch_size,
    ("torch", "from_numpy"): _from_numpy,                           # storage's own pickler
    ("torch.torch_version", "TorchVersion"): TorchVersion,         # torch.__version__
    ("collections", "OrderedDict"): _safe_ordered_dict,             # tensors' backward_hooks
    # numpy arrays and scalars (numpy 1.x "numpy.core" and 2.x "numpy._core" names)
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
    ("numpy.core.numeric", "_frombuffer"): _np_frombuffer,         # protocol 5 arrays
    ("numpy._core.numeric", "_frombuffer"): _np_frombuffer,
    # datetimes (seed records' timestamp)
    ("datetime", "datetime"): _checked_call(datetime.datetime, _DT_TYPES),
    ("datetime", "date"): _checked_call(datetime.date, _DT_TYPES),
    ("datetime", "time"): _checked_call(datetime.time, _DT_TYPES),
    ("datetime", "timedelta"): _checked_call(datetime.timedelta, (int,)),
    ("datetime", "timezone"): _checked_call(datetime.timezone, (datetime.timedelta, str)),
    # plain containers as protocol 2 writes them
    ("builtins", "set"): _safe_set,
    ("builtins", "frozenset"): _safe_frozenset,
    ("builtins", "complex"): _safe_complex,
    ("builtins", "bytes"): _safe_bytes,
    ("builtins", "bytearray"): _safe_bytearray,
    ("_codecs", "encode"): _safe_codecs_encode,
}
LOAD_FROM_BYTES = ("torch.storage", "_load_from_bytes")
