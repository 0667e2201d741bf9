"""The generic checks every reader of a stranger's file applies before it allocates or builds
anything: sizes, shapes, dtypes, dense layouts, offset tables, nesting depth and decoded size.
Used by the unpickler (safe_pickle.py, pickle_globals.py), the .safetensors reader
(safetensors_file.py) and the shard reader (shards.py).

Public names:
    MAX_DEPTH, MAX_NODES, DECODED_RATIO, DECODED_SLACK, MAX_DIMS, MAX_EXTENT, MAX_INT, MAX_KEY_INT   the limits
    LimitExceeded             internal: a file exceeds a size or nesting limit (the reader says which file)
    short_repr(value) -> str  a bounded repr for messages about hostile values
    check_ints(values, what) -> tuple       at most MAX_DIMS plain ints (no bools) of magnitude below
                                            MAX_INT, checked before any arithmetic, else ValueError
    check_keys(keys, what)                  dict keys and set members only of the types a record uses
                                            (str, bytes, bool, None, ints below MAX_KEY_INT): no crafted
                                            hash collisions (k * (2**61 - 1) all hash alike)
    check_shape(shape) -> tuple             non-negative ints whose non-zero ones multiply to <= MAX_EXTENT
    check_numeric_dtype(np_dtype) -> dtype  a plain native numeric numpy dtype, else ValueError
    check_torch_dtype(dtype) -> dtype       a numeric torch dtype (dtypes.TORCH_DTYPES), else ValueError
    check_bools(raw_uint8, what)            bool bytes must be 0 or 1
    dense_axis_order(size, stride) -> [axis, ...]   the axes from outermost to innermost of a dense
                                            layout (a permutation of a contiguous one), else ValueError
    check_offsets(offsets, n, what, path)   n + 1 non-decreasing offsets from 0, else CorruptFileError
    check_structure(obj, nbytes, path)      the limits every loaded record obeys: nesting at most
                                            MAX_DEPTH, at most MAX_NODES objects counting shared ones
                                            at every use, at most DECODED_RATIO * nbytes + DECODED_SLACK
                                            bytes of data

Example:
    >>> check_shape([3, 0, 2 ** 40])                 # zero-size dims count as 1 in the extent
    (3, 0, 1099511627776)
    >>> dense_axis_order((2, 3), (1, 2))             # a transposed (Fortran-order) layout
    [1, 0]
    >>> check_offsets(np.array([0, 2, 5]), 2, "index.row_offsets", "a.safetensors")
"""
import datetime
import math
import reprlib

import numpy as np
import torch

from ..dtypes import TORCH_DTYPES
from .errors import corrupt

__all__ = ["MAX_DEPTH", "MAX_NODES", "DECODED_RATIO", "DECODED_SLACK", "MAX_DIMS", "MAX_EXTENT", "MAX_INT",
           "MAX_KEY_INT", "LimitExceeded", "short_repr", "check_ints", "check_keys", "check_shape", "check_numeric_dtype",
           "check_torch_dtype", "check_bools", "dense_axis_order", "check_offsets", "check_structure"]

MAX_DEPTH = 100              # nesting of containers (a record needs about 5)
MAX_NODES = 1_000_000        # objects of the loaded record, a shared one counted at every use
DECODED_RATIO = 4            # tensors, arrays, strings: at most this many times the file size ...
DECODED_SLACK = 1 << 20      # ... plus this many bytes
MAX_DIMS = 16                # dimensions of a tensor or array
MAX_EXTENT = 1 << 48         # product of a shape's non-zero dimensions (a (0, 2**63) is refused)
MAX_INT = 1 << 63            # |shape, stride, offset, count| below this: checked before any arithmetic
                             # (16 ints of a million digits each took 313 s to multiply out)
MAX_KEY_INT = (1 << 61) - 2  # int dict keys / set members: Python hashes ints modulo 2**61 - 1, so
                             # distinct ints below it never collide (k * (2**61 - 1) all hash to 0:
                             # 146k such keys took 627 s to insert)
_CONTAINERS = (dict, list, tuple, set, frozenset)


class LimitExceeded(Exception):
    """Internal: a file exceeds a size or nesting limit (the reader names the file)."""


_repr = reprlib.Repr()
_repr.maxlevel, _repr.maxstring, _repr.maxother = 3, 60, 60


def short_repr(value):
    """repr(value) cut to a few levels and characters: safe to put a hostile value in a message
    (an int too long to print is shown by its size)."""
    try:
        return _repr.repr(value)
    except ValueError:                 # int too long for str() (sys.get_int_max_str_digits)
        return f"<a {type(value).__name__} holding an integer too long to print>"


def check_ints(values, what):
    """`values` as a tuple if it is at most MAX_DIMS plain ints (no bools), else ValueError naming `what`."""
    if not isinstance(values, (tuple, list, torch.Size)) or len(values) > MAX_DIMS or not all(
            isinstance(v, int) and not isinstance(v, bool) and -MAX_INT < v < MAX_INT for v in values):
        raise ValueError(f"bad {what} {short_repr(values)}")
    return tuple(values)


_KEY_TYPES = (str, bytes, bool, type(None))


def check_keys(keys, what="dict key"):
    """ValueError unless every one of `keys` (dict keys, set or frozenset members) is a str,
    bytes, bool, None or an int of magnitude at most MAX_KEY_INT: their hashes are keyed (str,
    bytes) or distinct, so no file can make inserting n keys cost n**2 (floats, big ints and
    tuples of ints can be crafted to collide; records never use them as keys)."""
    for key in keys:
        kind = type(key)
        if kind is int:
            if -MAX_KEY_INT <= key <= MAX_KEY_INT:
                continue
        elif kind in _KEY_TYPES:
            continue
        shown = "an int outside +-(2**61 - 2)" if kind is int else f"a {kind.__name__}"
        raise ValueError(f"a {what} that is {shown}: records use str, bytes, bool, None and small int keys")


def check_shape(values):
    """The shape `values` as a tuple, or ValueError: it must be at most MAX_DIMS non-negative
    ints whose non-zero ones multiply to at most MAX_EXTENT (so no (2**63, 2**63, 0) reaches
    numpy, torch or the analysis)."""
    shape = check_ints(values, "shape")
    if min(shape, default=0) < 0 or math.prod(max(n, 1) for n in shape) > MAX_EXTENT:
        raise ValueError(f"bad shape {short_repr(values)}")
    return shape



def check_numeric_dtype(dtype):
    """`dtype` if it is a plain numeric numpy dtype (bool, int, uint, float, complex) in native
    byte order: never an object, void, structured, sub-array, string or datetime dtype."""
    if not (isinstance(dtype, np.dtype) and dtype.kind in "biufc" and dtype.fields is None
            and dtype.subdtype is None and not dtype.hasobject and dtype.isnative
            and dtype.itemsize > 0):
        raise ValueError(f"unexpected array dtype {short_repr(dtype)}")
    return dtype


def check_bools(raw_uint8, what):
    """bool data must be 0 or 1 bytes (other values are undefined behaviour in torch)."""
    if raw_uint8.size and raw_uint8.max() > 1:
        raise ValueError(f"{what} holds bool bytes other than 0 and 1")



def check_torch_dtype(dtype):
    """`dtype` if it is a numeric torch dtype (dtypes.TORCH_DTYPES: no quantized ones), else ValueError."""
    if dtype not in TORCH_DTYPES.values():
        raise ValueError(f"bad tensor dtype {short_repr(dtype)}")
    return dtype


def dense_axis_order(size, stride):
    """The axes of a (size, stride) layout from outermost to innermost stride, if the layout is dense:
    a permutation of a contiguous one (no stride 0 on a dimension > 1, no overlap, no gap)."""
    order = sorted(range(len(size)), key=lambda i: -stride[i] if size[i] > 1 else 0)
    expected = 1
    for i in reversed(order):
        if size[i] > 1 and stride[i] != expected:
            raise ValueError(f"tensor layout size {size} stride {stride} is not dense")
        expected *= size[i]
    return order


def check_offsets(offsets, n, what, path):
    """CorruptFileError naming `path` unless `offsets` (a 1-D array) holds n + 1 non-decreasing
    offsets from 0 (the offset tables of a shard)."""
    if offsets.shape != (n + 1,) or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
        raise corrupt(path, f"{what} is not {n + 1} non-decreasing offsets from 0")


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

