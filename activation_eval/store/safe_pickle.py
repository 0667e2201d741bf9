"""Safe unpickling of activation record pickles: an allow-list unpickler that never runs code
and never hands bytes from the file to numpy or torch internals.

Public names:
    safe_load(source)    unpickle a .pkl record file (a path or a binary file object) -> object;
                         only the globals records hold (tensors, numpy, datetimes, containers)
                         are resolved, each to a checking shim; anything else raises
                         UnsafeFileError and runs nothing
    open_regular(path)   (from files.py, re-exported) open a file for reading only if it is a
                         regular file (never blocks on a FIFO) -> (unbuffered binary file, size)
    check_shape(shape)   a tensor shape as a tuple of ints, or ValueError (at most MAX_DIMS
                         dimensions, non-zero ones multiplying to at most MAX_EXTENT)
    check_structure(obj, nbytes, path)   the limits every loaded record obeys: nesting at most
                         MAX_DEPTH, at most MAX_NODES objects counting shared ones at every use,
                         at most DECODED_RATIO * nbytes + DECODED_SLACK bytes of data
    MAX_DEPTH, MAX_OPS, MAX_NODES, DECODED_RATIO, DECODED_SLACK, MAX_DIMS, MAX_EXTENT
                         the limits
    UnsafeFileError      (from errors.py; also records.UnsafeFileError)
    CorruptFileError     (from errors.py; also records.CorruptFileError)

Example:
    >>> obj = safe_load("run/activations/geo-001.pkl")
    >>> obj["activations"]["layer_3"].shape
    torch.Size([7, 64])
    >>> with open("received.pkl", "rb") as f:
    ...     safe_load(f)                     # a pickle that calls os.system:
    UnsafeFileError: refusing to load pickle: it references posix.system, ...: received.pkl

How it stays safe (README "Safety"): pickle's find_class resolves only the (module, name) pairs
in _GLOBALS, each one a shim of this module that checks its arguments and builds its result with
public APIs from bytes actually present in the file: np.frombuffer / Tensor.view / reshape /
permute over one contiguous buffer, numeric dtypes only (no object, void, structured, sub-array,
string or datetime dtype), no stride 0 or overlapping layouts, every size checked against the
bytes present before anything is allocated. Nothing from the file reaches ndarray.__setstate__,
dtype.__setstate__, torch.load or Tensor.set_: numpy's pickled dtype state is only compared
with the dtype's own, and an array's BUILD state is read by our shim, once. BUILD, APPEND,
SETITEM and ADDITEMS act only on the containers they are for. Nesting depth is checked while
unpickling, as containers are built and filled: exactly for tuples and frozensets, the only
objects hashed on the way (a deep tuple used as a dict key would overflow the C stack in its
hash); the opcode count is capped; and the loaded object as a whole is checked by
check_structure. records.load_activations checks afterwards that the object is a record.
"""
import datetime
import io
import math
import os
import pickle
import re
import reprlib
import stat
import warnings
from collections import OrderedDict

import numpy as np
import torch

from .errors import CorruptFileError, UnsafeFileError, corrupt, format_hint  # noqa: F401
from .files import open_regular, read_exactly  # noqa: F401  (open_regular: re-exported, moved to files.py)

MAX_DEPTH = 100              # nesting of containers (a record needs about 5)
MAX_OPS = 1_000_000          # pickle opcodes per file: bounds the Python objects it can create
MAX_NODES = 1_000_000        # objects of the loaded record, a shared one counted at every use
DECODED_RATIO = 4            # tensors, arrays, strings: at most this many times the file size ...
DECODED_SLACK = 1 << 20      # ... plus this many bytes
MAX_DIMS = 16                # dimensions of a tensor or array
MAX_EXTENT = 1 << 48         # product of a shape's non-zero dimensions (a (0, 2**63) is refused)
_CONTAINERS = (dict, list, tuple, set, frozenset)
_CONTAINER_TYPES = {dict, OrderedDict, list, tuple, set, frozenset}

# ----------------------------------------------------------------------------- allow-list

class _Refused(Exception):
    """Internal: a pickle asked for a global outside the allow-list (or an unsafe payload)."""


class _TooBig(Exception):
    """Internal: a pickle exceeds a size or nesting limit."""


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 60, 60
_NDARRAY = object()   # stands for numpy.ndarray: passed to _np_reconstruct, never called
_TENSOR = object()    # stands for torch.Tensor: passed to _rebuild_from_type_v2, never called
# numeric torch dtypes (no quantized ones); bool bytes are checked to be 0 or 1
_TORCH_DTYPES = {name: getattr(torch, name) for name in (
    "bool", "uint8", "int8", "int16", "int32", "int64", "uint16", "uint32", "uint64", "float16",
    "bfloat16", "float32", "float64", "complex64", "complex128", "float8_e4m3fn", "float8_e5m2",
    "float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu") if hasattr(torch, name)}
_NP_DTYPE_NAME = re.compile(r"[biufc][0-9]{1,2}")      # how numpy pickles numeric dtypes: "f4"


def _ints(values, what):
    if not isinstance(values, (tuple, list, torch.Size)) or len(values) > MAX_DIMS or not all(
            isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"bad {what}: {_repr.repr(values)}")
    return tuple(values)


def check_shape(values):
    """The shape `values` as a tuple, or ValueError: it must be at most MAX_DIMS non-negative
    ints whose non-zero ones multiply to at most MAX_EXTENT (so no (2**63, 2**63, 0) reaches
    numpy, torch or the analysis)."""
    shape = _ints(values, "shape")
    if min(shape, default=0) < 0 or math.prod(max(n, 1) for n in shape) > MAX_EXTENT:
        raise ValueError(f"bad shape {_repr.repr(values)}")
    return shape


def _numeric(dtype):
    """`dtype` if it is a plain numeric numpy dtype (bool, int, uint, float, complex) in native
    byte order: never an object, void, structured, sub-array, string or datetime dtype."""
    if not (isinstance(dtype, np.dtype) and dtype.kind in "biufc" and dtype.fields is None
            and dtype.subdtype is None and not dtype.hasobject and dtype.isnative
            and dtype.itemsize > 0):
        raise ValueError(f"unexpected array dtype {_repr.repr(dtype)}")
    return dtype


def _check_bools(raw_uint8, what):
    """bool data must be 0 or 1 bytes (other values are undefined behaviour in torch)."""
    if raw_uint8.size and raw_uint8.max() > 1:
        raise ValueError(f"{what} holds bool bytes other than 0 and 1")


def _array(buf, dtype, shape, order="C", axis_order=None):
    """The numpy array of `shape` read from `buf` (bytes or bytearray holding exactly its
    bytes), in C, F or permuted (order "K" + axis_order) layout: np.frombuffer + reshape."""
    if not isinstance(buf, (bytes, bytearray)):
        raise ValueError(f"array buffer is a {type(buf).__name__}, not bytes")
    shape, dtype = check_shape(shape), _numeric(dtype)
    if math.prod(shape) * dtype.itemsize != len(buf):
        raise ValueError(f"array of shape {shape} and dtype {dtype} does not fit its "
                         f"{len(buf)}-byte buffer")
    if dtype.kind == "b":
        _check_bools(np.frombuffer(buf, np.uint8), "array")
    array = np.frombuffer(buf, dtype=dtype)
    if order in ("C", "F") and axis_order is None:
        return array.reshape(shape, order=order)
    if order == "K" and sorted(_ints(axis_order, "axis order")) == list(range(len(shape))):
        return array.reshape(shape).transpose(axis_order)      # numpy 2's strided layouts
    raise ValueError(f"bad array order {_repr.repr(order)} / {_repr.repr(axis_order)}")


# --- numpy

def _np_dtype(obj, align=False, copy=False):
    """numpy.dtype("f4", False, True) as numpy pickles numeric dtypes; its BUILD state is only
    compared with the dtype's own (see _RecordUnpickler.load_build), never applied."""
    if not (isinstance(obj, str) and _NP_DTYPE_NAME.fullmatch(obj)):
        raise ValueError(f"unexpected numpy dtype {_repr.repr(obj)}")
    return _numeric(np.dtype(obj))


class _PendingArray:
    """What numpy's _reconstruct gives: an array whose shape, dtype and bytes come with the
    following BUILD. The BUILD (once) makes the real array, which replaces this placeholder on
    the stack and in the memo; a placeholder left anywhere else fails check_structure."""

    def __init__(self):
        self.memo_keys, self.built = [], False

    def build(self, state):
        if self.built:
            raise _Refused("a second BUILD of one numpy array")
        self.built = True
        if isinstance(state, tuple) and len(state) == 5 and state[0] == 1:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4 and isinstance(state[2], bool)):
            raise ValueError(f"bad numpy array state {_repr.repr(state)}")
        shape, dtype, fortran, raw = state
        if isinstance(raw, bytes):
            raw = bytearray(raw)            # a writable copy, as numpy's own unpickling gives
        return _array(raw, dtype, shape, "F" if fortran else "C")


def _np_reconstruct(subtype, shape, dtype_code):
    """numpy's _reconstruct(ndarray, (0,), b"b"): always the first step of an array pickle."""
    if subtype is not _NDARRAY:
        raise _Refused("numpy _reconstruct of a non-ndarray type")
    if _ints(shape, "shape") != (0,) or dtype_code not in (b"b", "b"):
        raise ValueError(f"numpy _reconstruct({_repr.repr(shape)}, {_repr.repr(dtype_code)})")
    return _PendingArray()


def _np_frombuffer(buf, dtype, shape, order, axis_order=None):
    """numpy's _frombuffer (protocol-5 array pickles): an in-band buffer of a numeric dtype
    holding exactly shape's elements."""
    return _array(buf, dtype, shape, order, axis_order)


def _np_scalar(dtype, data=None):
    """numpy's scalar(dtype, bytes): a numeric dtype and exactly its itemsize of bytes."""
    dtype = _numeric(dtype)
    if not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise ValueError(f"numpy scalar of dtype {dtype} needs {dtype.itemsize} bytes")
    return _array(data, dtype, (1,))[0]


# --- torch

class _Storage:
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
                    and obj.dtype in _TORCH_DTYPES.values()):
                types[("torch", name)] = obj.dtype
    return types


_STORAGE_TYPES = _storage_types()


def _dense_tensor(storage, dtype, offset, size, stride):
    """The tensor (size, stride) at `offset` of `storage`, built as a slice + reshape + permute
    of its bytes: only dense layouts (a permutation of a contiguous one; no stride 0, no
    overlap), inside the storage."""
    if not isinstance(storage, _Storage):
        raise ValueError(f"tensor storage is a {type(storage).__name__}, not a storage")
    if dtype not in _TORCH_DTYPES.values():
        raise ValueError(f"bad tensor dtype {_repr.repr(dtype)}")
    size, stride = check_shape(size), _ints(stride, "stride")
    if not isinstance(offset, int) or offset < 0 or len(size) != len(stride):
        raise ValueError(f"bad tensor layout: offset {_repr.repr(offset)}, size {size}, "
                         f"stride {stride}")
    if storage.data.numel() % dtype.itemsize:
        raise ValueError(f"storage of {storage.data.numel()} bytes holds no whole {dtype}")
    flat = storage.data.view(dtype)
    numel = math.prod(size)
    if numel == 0:
        return torch.empty(size, dtype=dtype)
    order = sorted(range(len(size)), key=lambda i: -stride[i] if size[i] > 1 else 0)
    expected = 1
    for i in reversed(order):
        if size[i] > 1 and stride[i] != expected:
            raise ValueError(f"tensor layout size {size} stride {stride} is not dense")
        expected *= size[i]
    if offset + numel > flat.numel():
        raise ValueError(f"tensor of size {size} at offset {offset} needs "
                         f"{(offset + numel) * dtype.itemsize} bytes but its storage holds "
                         f"{storage.data.numel()}")
    t = flat[offset:offset + numel].reshape([size[i] for i in order])
    if dtype == torch.bool:
        _check_bools(t.view(torch.uint8).numpy(), "tensor")
    return t.permute([order.index(i) for i in range(len(size))])


def _finish_tensor(t, requires_grad, backward_hooks, metadata):
    """What both tensor rebuilds do last. Backward hooks (callables) are dropped; metadata
    (conj/neg bits) is refused: records never hold such views."""
    if metadata:
        raise ValueError(f"tensor metadata {_repr.repr(metadata)} is not supported")
    if not isinstance(backward_hooks, (dict, type(None))) or not isinstance(requires_grad, bool):
        raise ValueError("bad tensor arguments")
    if requires_grad:
        t.requires_grad_()
    return t


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                       metadata=None):
    """torch._utils._rebuild_tensor_v2 of a typed storage, as _dense_tensor builds it."""
    dtype = storage.dtype if isinstance(storage, _Storage) else None
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
    if new_type is not _TENSOR or func not in (_rebuild_tensor_v2, _rebuild_tensor_v3):
        raise _Refused("torch._tensor._rebuild_from_type_v2 with a non-tensor type")
    if not isinstance(args, tuple):
        raise ValueError("bad _rebuild_from_type_v2 arguments")
    return func(*args)


def _from_numpy(array):
    """torch.from_numpy (records.py writes tensors as torch.from_numpy(<array>)) of an array
    one of our shims built; a read-only array (a bytes buffer) is copied first, so the tensor
    is always writable."""
    if type(array) is not np.ndarray:
        raise ValueError(f"torch.from_numpy of a {type(array).__name__}")
    _numeric(array.dtype)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array)


def _torch_size(dims=()):
    return torch.Size(_ints(dims, "torch.Size"))


class _TorchVersion:
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
    return set(_items(args, "set"))


def _safe_frozenset(*args):
    return frozenset(_items(args, "frozenset"))


def _safe_ordered_dict(*args):
    pairs = _items(args, "OrderedDict")
    if not all(type(p) in (list, tuple) and len(p) == 2 for p in pairs):
        raise ValueError("unexpected OrderedDict() items")
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

_GLOBALS = {
    # torch tensors (what pickle emits for every dense CPU/GPU tensor, checked with pickletools)
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,     # uint16/32/64, float8
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,  # tensor with attributes
    ("torch", "Tensor"): _TENSOR,
    ("torch._tensor", "Tensor"): _TENSOR,
    # ("torch.storage", "_load_from_bytes"): the unpickler's own _load_from_bytes (checked payload)
    ("torch", "Size"): _torch_size,
    ("torch", "from_numpy"): _from_numpy,                           # storage's own pickler
    ("torch.torch_version", "TorchVersion"): _TorchVersion,         # torch.__version__
    ("collections", "OrderedDict"): _safe_ordered_dict,             # tensors' backward_hooks
    # numpy arrays and scalars (numpy 1.x "numpy.core" and 2.x "numpy._core" names)
    ("numpy", "ndarray"): _NDARRAY,
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
_LOAD_FROM_BYTES = ("torch.storage", "_load_from_bytes")

# ----------------------------------------------------------------------------- unpicklers

class _BoundedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with limits: at most MAX_OPS opcodes (see _count_ops), no
    allocation of a size read from the file, tuples and frozensets (the objects hashed while
    unpickling) at most MAX_DEPTH deep when built, items added only to plain containers, and
    no globals, calls, BUILDs, persistent ids or extension codes (subclasses allow some)."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, size_limit, ops):
        super().__init__(file)
        self.size_limit = size_limit            # no object can be larger than the input
        self.ops = ops                          # [opcodes run so far], shared with sub-pickles
        self.depths = {}                        # id -> (container, depth) where depth > 1

    def find_class(self, module, name):
        raise _Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise ValueError("unexpected persistent id in a record pickle")

    def _refuse_opcode(self):
        raise _Refused("a pickle opcode this file has no use for (INST, OBJ, EXT, REDUCE, "
                       "BUILD or NEWOBJ)")

    for _op in (pickle.INST, pickle.OBJ, pickle.EXT1, pickle.EXT2, pickle.EXT4, pickle.REDUCE,
                pickle.BUILD, pickle.NEWOBJ, pickle.NEWOBJ_EX):
        dispatch[_op[0]] = _refuse_opcode
    del _op

    def _depth(self, items):
        """1 + the deepest container among `items`: exact for tuples and frozensets (built
        whole, and the only objects hashed here, whose hash recurses), a lower bound for the
        mutable ones (enough to stop a deep file early; check_structure is exact)."""
        deepest = 0
        for x in items:
            if type(x) in _CONTAINER_TYPES:
                deepest = max(deepest, self.depths[id(x)][1] if id(x) in self.depths else 1)
        if deepest + 1 > MAX_DEPTH:
            raise _TooBig(f"nesting deeper than {MAX_DEPTH}")
        return deepest + 1

    def _tracked(self, make, items):
        depth = self._depth(items)              # checked before frozenset() hashes the items
        obj = make(items)
        if depth > 1:
            self.depths[id(obj)] = (obj, depth)     # keeps obj alive, so its id stays its own
        return obj

    def _grown(self, container, items):
        """Note that `items` were added to `container` (APPEND, SETITEM, ADDITEMS)."""
        depth = self._depth(items)
        if depth > 1 and depth > self.depths.get(id(container), (None, 1))[1]:
            self.depths[id(container)] = (container, depth)

    def load_tuple(self):
        items = self.pop_mark()             # (before self.append: pop_mark rebinds it)
        self.append(self._tracked(tuple, items))
    dispatch[pickle.TUPLE[0]] = load_tuple

    def load_tuple1(self):
        self.stack[-1:] = [self._tracked(tuple, self.stack[-1:])]
    dispatch[pickle.TUPLE1[0]] = load_tuple1

    def load_tuple2(self):
        self.stack[-2:] = [self._tracked(tuple, self.stack[-2:])]
    dispatch[pickle.TUPLE2[0]] = load_tuple2

    def load_tuple3(self):
        self.stack[-3:] = [self._tracked(tuple, self.stack[-3:])]
    dispatch[pickle.TUPLE3[0]] = load_tuple3

    def load_frozenset(self):
        items = self.pop_mark()
        self.append(self._tracked(frozenset, items))
    dispatch[pickle.FROZENSET[0]] = load_frozenset

    def _target(self, kind):
        """stack[-1] if it is a plain `kind` (or an OrderedDict for dict): APPEND on a tensor
        or ADDITEMS (.add) on an array must not reach numpy or torch."""
        target = self.stack[-1]
        if type(target) is not kind and not (kind is dict and type(target) is OrderedDict):
            raise ValueError(f"pickle adds items to a {type(target).__name__}")
        return target

    def load_append(self):
        value = self.stack.pop()
        target = self._target(list)
        self._grown(target, (value,))
        target.append(value)
    dispatch[pickle.APPEND[0]] = load_append

    def load_appends(self):
        items = self.pop_mark()
        target = self._target(list)
        self._grown(target, items)
        target.extend(items)
    dispatch[pickle.APPENDS[0]] = load_appends

    def load_setitem(self):
        value = self.stack.pop()
        key = self.stack.pop()
        target = self._target(dict)
        self._grown(target, (key, value))
        target[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        target = self._target(dict)
        if len(items) % 2:
            raise ValueError("SETITEMS with an odd number of items")
        self._grown(target, items)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self):
        items = self.pop_mark()
        target = self._target(set)
        self._grown(target, items)
        target.update(items)
    dispatch[pickle.ADDITEMS[0]] = load_additems

    def load_bytearray8(self):
        """BYTEARRAY8 allocates its declared size before reading: check it first."""
        size = int.from_bytes(self.read(8), "little")
        if size > self.size_limit:
            raise EOFError
        data = bytearray(size)
        self.readinto(data)
        self.append(data)
    dispatch[pickle.BYTEARRAY8[0]] = load_bytearray8


def _count_ops(cls):
    """Wrap every opcode of `cls` so that a file runs at most MAX_OPS of them (all the
    objects a pickle can create take an opcode each)."""
    def counted(op):
        def run(self):
            self.ops[0] += 1
            if self.ops[0] > MAX_OPS:
                raise _TooBig(f"more than {MAX_OPS} pickle opcodes")
            op(self)
        return run
    cls.dispatch = {code: counted(op) for code, op in cls.dispatch.items()}
    return cls


class _StorageType:
    """Stands for a storage class inside a payload pickle (never called)."""

    def __init__(self, dtype):
        self.dtype = dtype


@_count_ops
class _PayloadUnpickler(_BoundedUnpickler):
    """Reads the small pickles of a legacy torch.save payload: only storage classes (as inert
    tokens) and storage references, which it records."""

    dispatch = dict(_BoundedUnpickler.dispatch)

    def __init__(self, file, size_limit, ops):
        super().__init__(file, size_limit, ops)
        self.storages = []

    def find_class(self, module, name):
        if (module, name) not in _STORAGE_TYPES:
            raise _Refused(f"{module}.{name} (inside an embedded tensor payload)")
        return _StorageType(_STORAGE_TYPES[(module, name)])

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage"
                and (len(pid) == 5 or pid[5] is None)                 # no view metadata
                and isinstance(pid[1], _StorageType) and type(pid[2]) is str
                and type(pid[4]) is int and pid[4] >= 0):
            raise ValueError(f"malformed storage reference {_repr.repr(pid)}")
        self.storages.append((pid[2], pid[1].dtype, pid[4]))
        return None


def _read_storage_payload(b, ops):
    """The _Storage of a legacy torch.save payload of one storage: magic number, protocol,
    sys info, the storage reference, the storage keys, then its element count (int64) and
    its raw bytes; every count checked against the bytes present."""
    if not isinstance(b, (bytes, bytearray)):
        raise ValueError("storage payload is not bytes")
    if bytes(b[:4]) == b"PK\x03\x04":
        raise _Refused("torch.storage._load_from_bytes with a torch.save zip archive "
                       "(tensor pickles embed only the legacy format)")
    f = io.BytesIO(b)
    load = lambda: _PayloadUnpickler(f, len(b), ops).load()     # noqa: E731
    if load() != torch.serialization.MAGIC_NUMBER or load() != 1001:
        raise ValueError("embedded tensor payload has no torch magic number")
    info = load()
    if not (type(info) is dict and info.get("little_endian") is True):
        raise ValueError("embedded tensor payload is not little-endian")
    main = _PayloadUnpickler(f, len(b), ops)
    if main.load() is not None or len(main.storages) != 1:
        raise ValueError("embedded tensor payload does not hold exactly one storage")
    key, dtype, count = main.storages[0]
    if load() != [key]:
        raise ValueError("embedded tensor payload's storage keys do not match")
    itemsize = 1 if dtype is None else dtype.itemsize
    if int.from_bytes(f.read(8), "little") != count or len(b) - f.tell() != count * itemsize:
        raise ValueError(f"embedded tensor declares {count * itemsize} bytes of data but holds "
                         f"{len(b) - f.tell()}")
    raw = bytearray(memoryview(b)[f.tell():])          # one copy: a writable buffer of ours
    data = torch.frombuffer(raw, dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
    return _Storage(data, dtype)


class _Memo(dict):
    """The unpickler's memo; remembers under which keys each _PendingArray is stored, so that
    its BUILD can replace it there."""

    def __setitem__(self, key, value):
        if type(value) is _PendingArray:
            value.memo_keys.append(key)
        super().__setitem__(key, value)


_CALLABLES = {id(f) for f in _GLOBALS.values() if callable(f)}


@_count_ops
class _RecordUnpickler(_BoundedUnpickler):
    """Unpickler that resolves only _GLOBALS and torch dtypes; anything else is refused.

    It is the pure-Python unpickler so that every opcode that could hand file data to an
    object's own code is ours: REDUCE calls only our shims, NEWOBJ only builds a TorchVersion,
    BUILD only completes a numpy array placeholder (once) or confirms a numpy dtype's state.
    Records hold few objects and tensor bytes are read in bulk, so the speed difference from
    the C unpickler is small."""

    dispatch = dict(_BoundedUnpickler.dispatch)

    def __init__(self, file, size_limit):
        super().__init__(file, size_limit, [0])
        self.memo = _Memo()
        self.load_from_bytes = self._load_from_bytes     # one object, for load_reduce's check

    def find_class(self, module, name):
        if module == "__builtin__":                    # protocol 2 spelling
            module = "builtins"
        if (module, name) == _LOAD_FROM_BYTES:
            return self.load_from_bytes
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and name in _TORCH_DTYPES:
            return _TORCH_DTYPES[name]
        raise _Refused(f"{module}.{name}")

    def _load_from_bytes(self, b):
        """torch.storage._load_from_bytes: the payload read by _read_storage_payload."""
        return _read_storage_payload(b, self.ops)

    def load_reduce(self):
        args = self.stack.pop()
        func = self.stack[-1]
        if not (id(func) in _CALLABLES or func is self.load_from_bytes) or type(args) is not tuple:
            raise ValueError(f"pickle calls a {type(func).__name__}")
        self.stack[-1] = func(*args)
    dispatch[pickle.REDUCE[0]] = load_reduce

    def load_newobj(self):
        args = self.stack.pop()
        cls = self.stack.pop()
        if cls is not _TorchVersion or type(args) is not tuple:
            raise _Refused("NEWOBJ of anything but torch's TorchVersion")
        self.append(cls(*args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is _PendingArray:
            array = target.build(state)
            self.stack[-1] = array
            for key in target.memo_keys:
                if self.memo.get(key) is target:
                    dict.__setitem__(self.memo, key, array)
        elif isinstance(target, np.dtype):
            if type(state) is not tuple or state != target.__reduce__()[2]:  # e.g. cleared flags
                raise _Refused(f"a numpy dtype state other than {target}'s own")
        else:
            raise _Refused(f"setting the state of a {type(target).__name__} (pickle BUILD)")
    dispatch[pickle.BUILD[0]] = load_build


# ----------------------------------------------------------------------------- structure

_LEAVES = (int, float, complex, bool, type(None), datetime.date, datetime.time,
           datetime.timedelta, datetime.tzinfo, torch.dtype, np.dtype, np.generic)


_SCALARS = {int, float, bool, type(None)}


def _leaf_bytes(x, path):
    """The data bytes of a leaf (string, bytes, tensor, array; 0 for numbers and the like)."""
    if isinstance(x, (str, bytes, bytearray)):
        return len(x)
    if isinstance(x, (torch.Tensor, np.ndarray)):
        return x.nbytes
    if isinstance(x, _LEAVES):
        return 0
    raise corrupt(path, f"a {type(x).__name__} where a record holds data "
                        f"(an incomplete array or a bare storage)")


def check_structure(obj, nbytes, path):
    """Raise CorruptFileError (naming `path`) unless `obj`, loaded from `nbytes` of file, nests
    at most MAX_DEPTH deep, holds at most MAX_NODES objects counting a shared one at every use,
    and at most DECODED_RATIO * nbytes + DECODED_SLACK bytes of tensors, arrays and strings
    counted the same way (so no analysis or JSON output expands a small file into a big one).

    Each container's (objects, depth, bytes) is computed once, from its children's, in an
    iterative post-order walk: the cost is that of the distinct objects, however much they
    are shared; a cycle is refused."""
    if not isinstance(obj, _CONTAINERS):
        _leaf_bytes(obj, path)
        return
    budget = DECODED_RATIO * nbytes + DECODED_SLACK
    done, open_ = {}, set()                 # id -> (objects, depth, bytes); ids being walked
    todo = [(obj, 1, None)]                 # (container, depth on this path, children on exit)
    while todo:
        x, level, children = todo.pop()
        if children is None:                # entering x
            if id(x) in done:
                continue
            if id(x) in open_:
                raise corrupt(path, "a container that contains itself")
            if level > MAX_DEPTH:
                raise corrupt(path, f"nesting deeper than {MAX_DEPTH}")
            open_.add(id(x))
            children = [v for kv in x.items() for v in kv] if isinstance(x, dict) else list(x)
            todo.append((x, level, children))
            todo.extend((c, level + 1, None) for c in children if isinstance(c, _CONTAINERS))
            continue
        open_.discard(id(x))
        nodes, depth, data = 1 + len(children), 1 + (len(children) > 0), 0
        for c in children:
            if type(c) in _SCALARS:         # the common case, kept fast
                continue
            if isinstance(c, _CONTAINERS):
                n, d, b = done[id(c)]
                nodes, depth, data = nodes + n - 1, max(depth, d + 1), data + b
            else:
                data += _leaf_bytes(c, path)
        if depth > MAX_DEPTH:
            raise corrupt(path, f"nesting deeper than {MAX_DEPTH}")
        if nodes > MAX_NODES:
            raise corrupt(path, f"more than {MAX_NODES} objects (counting shared ones at "
                                f"every use)")
        if data > budget:
            raise corrupt(path, f"it decodes to more than {budget} bytes of data from a "
                                f"{nbytes}-byte file (shared or repeated data)")
        done[id(x)] = (nodes, depth, data)


# ----------------------------------------------------------------------------- loading

def _read_source(source):
    """(bytes, path for messages) of a path or a binary file object, read with a bound: a
    path or a file object with a descriptor must be a regular file, read up to its size."""
    if not hasattr(source, "read"):
        path = os.fspath(source)
        f, size = open_regular(path)
        with f:
            return read_exactly(f, size), path
    path = getattr(source, "name", "<stream>")
    try:
        st = os.fstat(source.fileno())
    except (AttributeError, OSError, io.UnsupportedOperation):
        return source.read(), path                      # an in-memory stream
    if not stat.S_ISREG(st.st_mode):
        raise corrupt(path, "not a regular file: only regular files are read")
    return source.read(max(st.st_size - source.tell(), 0)), path


def safe_load(source):
    """Unpickle the record pickle at `source` (a path or a binary file object) -> the object.

    >>> rec = safe_load("acts/q1.pkl")

    Raises UnsafeFileError when the pickle references anything outside the allow-list (nothing
    from the file has run), CorruptFileError for an empty, non-pickle, truncated, garbled,
    over-long, too deep or too large file, or one that is not a regular file; both messages
    end with the file's path (a file object's name).
    """
    data, path = _read_source(source)
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
    except _TooBig as e:
        raise corrupt(path, str(e)) from None
    except RecursionError:
        raise corrupt(path, "nesting too deep") from None
    except EOFError:
        raise corrupt(path, "truncated: the file ends before the pickle does") from None
    except Exception as e:                    # any failure to parse untrusted bytes = corrupt
        raise corrupt(path, e) from None
    if stream.tell() != len(data):
        raise corrupt(path, f"{len(data) - stream.tell()} unexpected bytes after the pickle")
    check_structure(obj, len(data), path)
    return obj
