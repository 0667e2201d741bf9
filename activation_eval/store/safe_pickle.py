"""Safe unpickling of activation record pickles: an allow-list unpickler that never runs code
and never hands bytes from the file to numpy or torch internals.

Public names:
    safe_load(source)    unpickle a .pkl record file (a path or a binary file object) -> object;
                         only the globals records hold (tensors, numpy, datetimes, containers)
                         are resolved, each to a checking shim; anything else raises
                         UnsafeFileError and runs nothing
The checks and limits it applies live in checks.py and bounded_unpickler.py, its errors
(UnsafeFileError, CorruptFileError) in errors.py.

Example:
    >>> obj = safe_load("runs/r1/activations/geo-001.pkl")
    >>> obj["activations"]["layer_3"].shape
    torch.Size([41, 64])
    >>> class Exploit:                       # a pickle that calls os.system when loaded
    ...     def __reduce__(self):
    ...         return os.system, ("echo pwned",)
    >>> _ = open("received.pkl", "wb").write(pickle.dumps(Exploit()))
    >>> with open("received.pkl", "rb") as f:
    ...     safe_load(f)
    Traceback (most recent call last):
    activation_eval.store.errors.UnsafeFileError: refusing to load pickle: it references posix.system, ...: received.pkl

How it stays safe (README "Safety"): pickle's find_class resolves only the (module, name) pairs
in GLOBALS (pickle_globals.py), each one a shim that checks its arguments and builds its result with
public APIs from bytes actually present in the file: np.frombuffer / Tensor.view / reshape /
permute over one contiguous buffer, numeric dtypes only (no object, void, structured, sub-array,
string or datetime dtype), no stride 0 or overlapping layouts, every size checked against the
bytes present before anything is allocated. Nothing from the file reaches ndarray.__setstate__,
dtype.__setstate__, torch.load or Tensor.set_: numpy's pickled dtype state is only compared
with the dtype's own, and an array's BUILD state is read by our shim, once. BUILD, APPEND,
SETITEM and ADDITEMS act only on the containers they are for. Nesting depth is checked while
unpickling, as containers are built and filled: exactly for tuples and frozensets, the only
objects hashed on the way (a deep tuple used as a dict key would overflow the C stack in its
hash: bounded_unpickler.py); the opcode count is capped; and the loaded object as a whole is checked by
check_structure. records.load_activations checks afterwards that the object is a record.
"""
import io
import os
import pickle
import stat
from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np

from ..dtypes import TORCH_DTYPES
from .bounded_unpickler import BoundedUnpickler, count_ops, read_storage_payload
from .checks import (
    LimitExceeded,
    check_structure,
)
from .errors import UnsafeFileError, corrupt, format_hint
from .files import open_regular, read_exactly
from .pickle_globals import GLOBALS, LOAD_FROM_BYTES, PendingArray, Refused, TorchVersion

_GLOBALS = GLOBALS           # the allow-list under its older name (tests read it)

# ----------------------------------------------------------------------------- the record unpickler

class _Memo(dict):
    """The unpickler's memo; remembers under which keys each PendingArray is stored, so that
    its BUILD can replace it there."""

    def __setitem__(self, key, value):
        if type(value) is PendingArray:
            value.memo_keys.append(key)
        super().__setitem__(key, value)


_CALLABLES = {id(f) for f in GLOBALS.values() if callable(f)}


@count_ops
class _RecordUnpickler(BoundedUnpickler):
    """Unpickler that resolves only GLOBALS and torch dtypes; anything else is refused.

    It is the pure-Python unpickler so that every opcode that could hand file data to an
    object's own code is ours: REDUCE calls only our shims, NEWOBJ only builds a TorchVersion,
    BUILD only completes a numpy array placeholder (once) or confirms a numpy dtype's state.
    Records hold few objects and tensor bytes are read in bulk, so the speed difference from
    the C unpickler is small."""

    dispatch: ClassVar[dict[int, Callable[[Any], Any]]] = dict(BoundedUnpickler.dispatch)

    def __init__(self, file, size_limit):
        super().__init__(file, size_limit, [0])
        self.memo = _Memo()
        self.load_from_bytes = self._load_from_bytes     # one object, for load_reduce's check

    def find_class(self, module, name):
        if module == "__builtin__":                    # protocol 2 spelling
            module = "builtins"
        if (module, name) == LOAD_FROM_BYTES:
            return self.load_from_bytes
        if (module, name) in GLOBALS:
            return GLOBALS[(module, name)]
        if module == "torch" and name in TORCH_DTYPES:
            return TORCH_DTYPES[name]
        raise Refused(f"{module}.{name}")

    def _load_from_bytes(self, b):
        """torch.storage._load_from_bytes: the payload read by read_storage_payload."""
        return read_storage_payload(b, self.ops)

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
        if cls is not TorchVersion or type(args) is not tuple:
            raise Refused("NEWOBJ of anything but torch's TorchVersion")
        self.append(cls(*args))
    dispatch[pickle.NEWOBJ[0]] = load_newobj

    def load_build(self):
        state = self.stack.pop()
        target = self.stack[-1]
        if type(target) is PendingArray:
            array = target.build(state)
            self.stack[-1] = array
            for key in target.memo_keys:
                if self.memo.get(key) is target:
                    dict.__setitem__(self.memo, key, array)
        elif isinstance(target, np.dtype):
            if type(state) is not tuple or state != target.__reduce__()[2]:  # e.g. cleared flags
                raise Refused(f"a numpy dtype state other than {target}'s own")
        else:
            raise Refused(f"setting the state of a {type(target).__name__} (pickle BUILD)")
    dispatch[pickle.BUILD[0]] = load_build


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

    >>> rec = safe_load("runs/r1/activations/geo-002.pkl")
    >>> rec["grading"]["id"], len(rec["activations"])
    ('geo-002', 31)

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
    except Refused as e:
        raise UnsafeFileError(f"refusing to load pickle: it references {e}, which activation "
                              f"records never contain (loading it could run code): {path}"
                              ) from None
    except LimitExceeded as e:
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
