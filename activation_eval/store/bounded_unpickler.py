"""The pure-Python unpickler with limits, and the reader of the legacy torch.save payloads that
tensor pickles embed (what safe_pickle's record unpickler builds on).

Public names:
    MAX_OPS                  pickle opcodes per file: bounds the Python objects a file can create
    BoundedUnpickler(file, size_limit, ops)   no globals, calls, BUILDs, persistent ids or extension
                             codes; tuples and frozensets at most MAX_DEPTH deep when built; items added
                             only to plain containers, dict keys and set members only of the types
                             checks.check_keys allows (no crafted hash collisions: work stays linear);
                             no allocation of a size read from the file
    count_ops(cls) -> cls    class decorator: every opcode counts against MAX_OPS
    read_storage_payload(b, ops) -> Storage   the one storage of a legacy torch.save payload, every
                             count checked against the bytes present

Example:
    >>> @count_ops
    ... class Plain(BoundedUnpickler):
    ...     dispatch: ClassVar[dict[int, Callable[[Any], Any]]] = dict(BoundedUnpickler.dispatch)
    >>> Plain(io.BytesIO(pickle.dumps([1, (2, 3)])), 100, [0]).load()
    [1, (2, 3)]
"""
import io
import pickle
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, ClassVar

import torch

from .checks import MAX_DEPTH, MAX_INT, LimitExceeded, check_keys, short_repr
from .pickle_globals import STORAGE_TYPES, Refused, Storage

__all__ = ["MAX_OPS", "BoundedUnpickler", "count_ops", "read_storage_payload"]

MAX_OPS = 1_000_000          # pickle opcodes per file: bounds the Python objects it can create
_CONTAINER_TYPES = {dict, OrderedDict, list, tuple, set, frozenset}


class BoundedUnpickler(pickle._Unpickler):
    """The pure-Python unpickler with limits: at most MAX_OPS opcodes (see count_ops), no
    allocation of a size read from the file, tuples and frozensets (the objects hashed while
    unpickling) at most MAX_DEPTH deep when built, items added only to plain containers, and
    no globals, calls, BUILDs, persistent ids or extension codes (subclasses allow some)."""

    # the opcode table of pickle's pure-Python unpickler, whose handlers take the unpickler itself
    dispatch: ClassVar[dict[int, Callable[[Any], Any]]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, file, size_limit, ops):
        super().__init__(file)
        self.size_limit = size_limit            # no object can be larger than the input
        self.ops = ops                          # [opcodes run so far], shared with sub-pickles
        self.depths = {}                        # id -> (container, depth) where depth > 1

    def find_class(self, module, name):
        raise Refused(f"{module}.{name}")

    def persistent_load(self, pid):
        raise ValueError("unexpected persistent id in a record pickle")

    def _refuse_opcode(self):
        raise Refused("a pickle opcode this file has no use for (INST, OBJ, EXT, REDUCE, "
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
            raise LimitExceeded(f"nesting deeper than {MAX_DEPTH}")
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
        check_keys(items, "frozenset member")
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
        check_keys((key,))
        self._grown(target, (key, value))
        target[key] = value
    dispatch[pickle.SETITEM[0]] = load_setitem

    def load_setitems(self):
        items = self.pop_mark()
        target = self._target(dict)
        if len(items) % 2:
            raise ValueError("SETITEMS with an odd number of items")
        check_keys(items[::2])
        self._grown(target, items)
        for i in range(0, len(items), 2):
            target[items[i]] = items[i + 1]
    dispatch[pickle.SETITEMS[0]] = load_setitems

    def load_additems(self):
        items = self.pop_mark()
        target = self._target(set)
        check_keys(items, "set member")
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


def count_ops(cls):
    """Wrap every opcode of `cls` so that a file runs at most MAX_OPS of them (all the
    objects a pickle can create take an opcode each)."""
    def counted(op):
        def run(self):
            self.ops[0] += 1
            if self.ops[0] > MAX_OPS:
                raise LimitExceeded(f"more than {MAX_OPS} pickle opcodes")
            op(self)
        return run
    cls.dispatch = {code: counted(op) for code, op in cls.dispatch.items()}
    return cls


class _StorageType:
    """Stands for a storage class inside a payload pickle (never called)."""

    def __init__(self, dtype):
        self.dtype = dtype


@count_ops
class _PayloadUnpickler(BoundedUnpickler):
    """Reads the small pickles of a legacy torch.save payload: only storage classes (as inert
    tokens) and storage references, which it records."""

    dispatch = dict(BoundedUnpickler.dispatch)

    def __init__(self, file, size_limit, ops):
        super().__init__(file, size_limit, ops)
        self.storages = []

    def find_class(self, module, name):
        if (module, name) not in STORAGE_TYPES:
            raise Refused(f"{module}.{name} (inside an embedded tensor payload)")
        return _StorageType(STORAGE_TYPES[(module, name)])

    def persistent_load(self, pid):
        if not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage"
                and (len(pid) == 5 or pid[5] is None)                 # no view metadata
                and isinstance(pid[1], _StorageType) and type(pid[2]) is str
                and type(pid[4]) is int and 0 <= pid[4] < MAX_INT):
            raise ValueError(f"malformed storage reference {short_repr(pid)}")
        self.storages.append((pid[2], pid[1].dtype, pid[4]))
        return None


def read_storage_payload(b, ops):
    """The Storage of a legacy torch.save payload of one storage: magic number, protocol,
    sys info, the storage reference, the storage keys, then its element count (int64) and
    its raw bytes; every count checked against the bytes present."""
    if not isinstance(b, (bytes, bytearray)):
        raise ValueError("storage payload is not bytes")
    if bytes(b[:4]) == b"PK\x03\x04":
        raise Refused("torch.storage._load_from_bytes with a torch.save zip archive "
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
    return Storage(data, dtype)

