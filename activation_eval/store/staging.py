"""Scratch space for tensors of requests still in flight, so that a producer holds none in memory.

The lm-eval backend captures each request's activations as lm-eval answers it, but a document's
record (all its requests, in request order) and its verdict are known only when every request is
answered. Its tensors wait here, on disk, in the run folder's scratch folder (the run writer removes
it at finish, and at the start of a run that continues an interrupted one).

Public names:
    STAGING_DIR                ".staging": the scratch folder inside a run folder
    Staging(folder)            .put({key: {name: tensor}}) writes one file (a shard);
                               .get(key) -> {name: tensor}; .drop(key); .remove(); len()

Example:
    >>> import torch
    >>> area = Staging("runs/s1/.staging/rank0")
    >>> area.put({"req-0": {"layer_0": torch.ones(2, 4)}, "req-1": {"layer_0": torch.zeros(1, 4)}})
    >>> area.get("req-1")["layer_0"].shape, len(area)
    (torch.Size([1, 4]), 2)
    >>> area.remove()

Each put() is one shard file (store/shards.py's format, written by write_shard); get() reads back
only that key's byte ranges. Files are removed once every key in them was dropped.
"""
import os
import shutil

from .shard_writer import write_shard
from .shards import load_shard_record

STAGING_DIR = ".staging"


class Staging:
    def __init__(self, folder):
        self.folder = os.fspath(folder)
        self._where = {}            # key -> (path, row)
        self._left = {}             # path -> keys not dropped yet
        self._count = 0

    def __len__(self):
        return len(self._where)

    def put(self, tensors_by_key):
        """Write {key: {name: tensor}} as one file (keys are strings, new to this area)."""
        if not tensors_by_key:
            return
        os.makedirs(self.folder, exist_ok=True)
        path = os.path.join(self.folder, f"{self._count:08d}.safetensors")
        self._count += 1
        keys = list(tensors_by_key)
        write_shard(path, keys, [{"activations": tensors_by_key[k]} for k in keys])
        for row, key in enumerate(keys):
            self._where[key] = (path, row)
        self._left[path] = set(keys)

    def get(self, key):
        path, row = self._where[key]
        return load_shard_record(path, row)["activations"]

    def drop(self, key):
        """Forget `key`; its file goes once every key of it is dropped."""
        path, _ = self._where.pop(key)
        left = self._left[path]
        left.discard(key)
        if not left:
            del self._left[path]
            os.remove(path)

    def remove(self):
        self._where, self._left = {}, {}
        if os.path.isdir(self.folder) and not os.path.islink(self.folder):
            shutil.rmtree(self.folder, ignore_errors=True)
