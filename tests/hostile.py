"""Valid and hostile activation record files, shared by test_hostile_files.py, test_fuzz.py
and the fuzzer (fuzz_records.py): the seeds it mutates are the files made here.

Each hostile file reproduces one attack class from issue 12, as bytes a stranger could send.
Hand-made pickles are written with the small opcode helpers below (`op`), the others with
pickle itself and objects whose __reduce__ names the real numpy / torch functions (`Reduce`).

Public names:
    Reduce(func, *args), ReduceWithState(func, args, state)   pickle as func(*args) [+ BUILD]
    op                     pickle opcode helpers: op.glob, op.str, op.bytes, op.int, ...
    record(seed=0)         a small but complete capture record (tensors of several dtypes)
    valid_files(folder)    {name: path} of records every loader version wrote (ours, plain
                           pickle protocol 2 and 5, numpy arrays, .safetensors)
    shard_files(folder)    {name: path} of valid shards, format 1 and 2 (named .shard)
    write_format_1_shard(path, ids, records)   a shard as format 1 wrote it (safetensors' writer)
    attacks()              {name: (extension, bytes)} of the hostile files (computed once)
    write_attacks(folder)  {name: path} of every hostile file
    same_hash_keys(n, kind="dict")   a pickle of n int keys k * (2**61 - 1), which all hash alike
                           (kind "dict", "set" or "frozenset"): inserting them is quadratic (issue 20)
    huge_shape(nbytes, nints=16)     a pickle of numpy _frombuffer with a shape of `nints` random
                           ints of `nbytes` bytes each: multiplying them out is superlinear (issue 20)
    many_entries(n)        a .safetensors head whose header lists n zero-size tensors (issue 20)
    write_run(folder, store="files", n=8, hidden=8)   a valid run folder (results.jsonl, run_config.json,
                           summary.json, n records in either store) made without a model

Example:
    >>> paths = write_attacks(tmp_path)
    >>> load_activations(paths["object dtype scalar"])      # CorruptFileError, names the file
"""
import functools
import json
import os
import pickle
import struct
from collections import OrderedDict

import numpy as np
import torch

from activation_eval.store.records import save_activations


class Reduce:
    """Pickles as func(*args): how a file smuggles a call into pickle.load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


class ReduceWithState(Reduce):
    """Pickles as func(*args) followed by BUILD(state)."""

    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return self.func, self.args, self.state


class op:
    """Pickle opcodes (protocol 2 unless noted) for hand-made files."""
    P2, P4 = b"\x80\x02", b"\x80\x04"
    NONE, TRUE, FALSE, MARK, STOP = b"N", b"\x88", b"\x89", b"(", b"."
    TUPLE, TUPLE1, TUPLE2, TUPLE3, EMPTY_TUPLE = b"t", b"\x85", b"\x86", b"\x87", b")"
    EMPTY_DICT, EMPTY_LIST, EMPTY_SET = b"}", b"]", b"\x8f"                 # set: protocol 4
    REDUCE, BUILD, SETITEM, APPEND, ADDITEMS, FROZENSET, POP, DUP = (
        b"R", b"b", b"s", b"a", b"\x90", b"\x91", b"0", b"2")

    @staticmethod
    def glob(module, name):
        return b"c" + module.encode() + b"\n" + name.encode() + b"\n"

    @staticmethod
    def str(text):
        data = text.encode()
        return b"X" + struct.pack("<I", len(data)) + data

    @staticmethod
    def bytes(data):
        return b"B" + struct.pack("<I", len(data)) + data

    @staticmethod
    def int(value):
        return b"J" + struct.pack("<i", value)

    @staticmethod
    def put(i):
        return b"q" + bytes([i])

    @staticmethod
    def get(i):
        return b"h" + bytes([i])

    @staticmethod
    def dtype(name, state):
        """numpy.dtype(name, False, True) then BUILD(state), as numpy pickles a dtype."""
        return (op.glob("numpy", "dtype") + op.str(name) + op.FALSE + op.TRUE + op.TUPLE3
                + op.REDUCE + op.MARK + b"".join(state) + op.TUPLE + op.BUILD)

    @staticmethod
    def record_around(value):
        """{"activations": {"x": <value>}} around the opcodes of one value."""
        return (op.P2 + op.EMPTY_DICT + op.str("activations") + op.EMPTY_DICT + op.str("x")
                + value + op.SETITEM + op.SETITEM + op.STOP)


NUMPY_STATE = [op.int(3), op.str("<"), op.NONE, op.NONE, op.NONE, op.int(-1), op.int(-1),
               op.int(0)]                                # np.dtype("f8").__reduce__()[2]
CLEARED = [op.int(3), op.str("|"), op.NONE, op.NONE, op.NONE, op.int(-1), op.int(-1),
           op.int(0)]                                    # an object dtype's flags cleared


def record(seed=0, n_prompt=4, n_generated=3, hidden=8):
    g = torch.Generator().manual_seed(seed)
    rows = n_prompt + n_generated - 1
    return {"prompt": f"q{seed}?", "response": "A", "model": "tiny/random",
            "timestamp": "2025-01-02T03:04:05+00:00",
            "input_ids": torch.randint(0, 100, (n_prompt,), generator=g),
            "output_ids": torch.randint(0, 100, (n_generated,), generator=g),
            "activations": {"embeddings": torch.randn(rows, hidden, generator=g),
                            "layer_0": torch.randn(rows, hidden, generator=g).half(),
                            "layer_1": torch.randn(rows, hidden, generator=g).bfloat16()},
            "positions_kept": list(range(rows)), "num_prompt_tokens": n_prompt,
            "num_generated_tokens": n_generated, "grading": {"correct": True, "answer": "A"}}


def valid_files(folder):
    """{name: path} of valid records in every format a loader version wrote."""
    os.makedirs(folder, exist_ok=True)
    rec = record()
    seed = {k: rec[k] for k in ("prompt", "response", "model", "input_ids", "output_ids",
                                "activations")}
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    paths = {"ours.pkl": save_activations(rec, os.path.join(folder, "ours.pkl")),
             "ours.safetensors": save_activations(rec, os.path.join(folder, "ours.safetensors"))}
    extras = {"numpy p2.pkl": (dict(rec, extra={"k": base.transpose(1, 0, 2), "s": np.int16(3),
                                                "c": np.arange(6.0)[::2]}), 2),
              "seed p2.pkl": (seed, 2), "seed p5.pkl": (seed, 5)}
    for name, (obj, protocol) in extras.items():
        paths[name] = os.path.join(folder, name.replace(" ", "_"))
        with open(paths[name], "wb") as f:
            pickle.dump(obj, f, protocol=protocol)
    return paths


def shard_files(folder):
    """{name: path} of valid shards (--activation_store shards) in every format version, named
    .shard so the fuzzer knows to read them with the shard readers."""
    from activation_eval.store.shard_writer import write_shard
    os.makedirs(folder, exist_ok=True)
    recs = [record(seed=i, n_prompt=3 + i, n_generated=2 + i % 2) for i in range(3)]
    ids = ["q-a", "q-b", "q-c"]
    return {"shard.shard": write_shard(os.path.join(folder, "shard.shard"), ids, recs),
            "shard v1.shard": write_format_1_shard(os.path.join(folder, "shard_v1.shard"), ids, recs)}


def write_format_1_shard(path, ids, records):
    """A shard as format version 1 laid it out (no index.record_offsets; every record's fields in
    one JSON array), written by the safetensors library itself."""
    from safetensors.torch import save_file
    layers = list(records[0]["activations"])
    fields = [k for k, v in records[0].items() if isinstance(v, torch.Tensor)]

    def offsets(counts):
        return torch.tensor(np.concatenate([[0], np.cumsum(counts)]), dtype=torch.int64)
    counts = [r["activations"][layers[0]].shape[0] for r in records]
    tensors = {"index.row_offsets": offsets(counts),
               "index.positions": torch.tensor([p for r in records for p in r["positions_kept"]]),
               "index.num_prompt_tokens": torch.tensor([r["num_prompt_tokens"] for r in records])}
    tensors.update({f"act.{n}": torch.cat([r["activations"][n] for r in records]) for n in layers})
    for name in fields:
        tensors[f"field.{name}"] = torch.cat([r[name] for r in records])
        tensors[f"offsets.{name}"] = offsets([len(r[name]) for r in records])
    parts = [{"fields": {k: v for k, v in r.items() if k != "activations" and k not in fields},
              "key_order": list(r)} for r in records]
    tensors["records"] = torch.frombuffer(bytearray(json.dumps(parts).encode()), dtype=torch.uint8)
    save_file(tensors, path, metadata={"format": "activation-shard", "format_version": "1",
                                       "ids": json.dumps(ids), "layer_order": json.dumps(layers),
                                       "tensor_fields": json.dumps(fields)})
    return path


def _deep_tuple(depth):
    return op.EMPTY_TUPLE + op.TUPLE1 * depth


def _np_reconstruct():
    return np.zeros(1).__reduce_ex__(2)[0]


def _np_scalar():
    return np.float32(0).__reduce__()[0]


def _attack_pickles():
    """{name: bytes} of the hostile pickles."""
    recon, scalar = _np_reconstruct(), _np_scalar()
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    recon_glob = op.glob(recon.__module__, "_reconstruct")
    recon_call = (recon_glob + op.glob("numpy", "ndarray") + op.int(0) + op.TUPLE1
                  + op.bytes(b"b") + op.TUPLE3 + op.REDUCE)
    array_state = lambda n: (op.MARK + op.int(1) + op.int(n) + op.TUPLE1 + op.dtype(  # noqa: E731
        "f8", NUMPY_STATE) + op.FALSE + op.bytes(b"\x00" * (8 * n)) + op.TUPLE)
    shared = [0]
    for _ in range(12):
        shared = [shared] * 10                  # 10**12 leaves, a few hundred bytes pickled
    one = torch.arange(4096.0)
    deep_list = op.EMPTY_LIST * 100_000 + op.APPEND * 99_999
    return {
        # memory corruption: an object dtype with its flags cleared by BUILD, then 8 raw bytes
        # used as a PyObject pointer (plain pickle segfaults: see the control test)
        "object dtype scalar": op.record_around(
            op.glob(scalar.__module__, "scalar") + op.dtype("O8", CLEARED)
            + op.bytes(b"A" * 8) + op.TUPLE2 + op.REDUCE),
        "object dtype array": op.record_around(
            recon_call + op.MARK + op.int(1) + op.int(1) + op.TUPLE1 + op.dtype("O8", CLEARED)
            + op.FALSE + op.bytes(b"A" * 8) + op.TUPLE + op.BUILD),
        "altered numeric dtype state": op.record_around(
            op.glob(scalar.__module__, "scalar") + op.dtype("f8", [
                op.int(3), op.str("<"), op.NONE, op.NONE, op.NONE, op.int(16), op.int(8),
                op.int(63)]) + op.bytes(b"A" * 8) + op.TUPLE2 + op.REDUCE),
        # use-after-free: BUILD again on the memoised array after torch.from_numpy shared it
        "array rebuilt after from_numpy": op.record_around(
            recon_call + op.put(0) + array_state(1) + op.BUILD + op.POP
            + op.glob("torch", "from_numpy") + op.get(0) + op.TUPLE1 + op.REDUCE
            + op.get(0) + array_state(4096) + op.BUILD + op.POP),
        "second BUILD of a placeholder": op.record_around(
            recon_call + op.DUP + array_state(1) + op.BUILD + op.POP + array_state(2)
            + op.BUILD),
        # C stack overflow: a 10**6-deep tuple hashed as a dict key / set member
        "deep tuple dict key": op.P2 + op.EMPTY_DICT + _deep_tuple(10 ** 6) + op.int(1)
        + op.SETITEM + op.STOP,
        "deep tuple set member": op.P4 + op.EMPTY_SET + op.MARK + _deep_tuple(10 ** 6)
        + op.ADDITEMS + op.STOP,
        "deep tuple frozenset member": op.P4 + op.MARK + _deep_tuple(10 ** 6) + op.FROZENSET
        + op.STOP,
        "deep list": op.record_around(deep_list),
        "list containing itself": op.record_around(op.EMPTY_LIST + op.put(0) + op.get(0)
                                                   + op.APPEND),
        # allocation amplification
        "void scalar of 2 GB": pickle.dumps(Reduce(scalar, np.dtype("V2000000000")), 2),
        "void array of 10**12 elements": pickle.dumps({"activations": {"x": ReduceWithState(
            recon, (np.ndarray, (0,), b"b"), (1, (10 ** 12,), np.dtype("V0"), False, b""))}}, 2),
        "void frombuffer of 10**12 elements": pickle.dumps({"activations": {"x": Reduce(
            frombuffer, bytearray(), np.dtype("V0"), (10 ** 12,), "C")}}, 5),
        "stride-0 tensor": pickle.dumps(
            {"activations": {"x": torch.zeros(1).expand(10 ** 6, 576)}}, 2),
        "overlapping strides": pickle.dumps(
            {"activations": {"x": torch.zeros(1000).as_strided((997, 4), (1, 1))}}, 2),
        "huge zero-size shape": pickle.dumps(
            {"activations": {"x": Reduce(torch._utils._rebuild_tensor_v2,
                                         torch.zeros(1)._typed_storage(), 0, (2 ** 40, 2 ** 40, 0),
                                         (2 ** 40, 1, 1), False, OrderedDict())}}, 2),
        "shared nested lists": pickle.dumps(
            {"activations": {"x": torch.zeros(2, 2)}, "input_ids": shared}, 2),
        "one tensor under many names": pickle.dumps(
            {"activations": {f"layer_{i}": one for i in range(2000)}}, 2),
        "bool bytes other than 0 and 1": pickle.dumps({"activations": {"x": Reduce(
            frombuffer, bytearray(b"\x00\x02"), np.dtype("?"), (2,), "C")}}, 5),
        "activation that is not a tensor": pickle.dumps({"activations": {"x": "abc"}}, 2),
    }


def _attack_safetensors():
    """{name: bytes} of the hostile .safetensors files (edits of a valid record's header)."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        good = open(save_activations(record(), os.path.join(tmp, "g.safetensors")), "rb").read()
    n = int.from_bytes(good[:8], "little")
    header, data = json.loads(good[8:8 + n]), good[8 + n:]

    def edit(change=None, meta=None):
        h = json.loads(json.dumps(header))
        if change:
            h["activations.layer_0"].update(change)
        if meta:
            h["__metadata__"].update(meta)
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        return len(text).to_bytes(8, "little") + text + data

    start = header["activations.layer_0"]["data_offsets"][0]
    deep = '{"a": ' * 500 + "1" + "}" * 500
    return {
        "shape 2**63 x 2**63 x 0": edit({"shape": [2 ** 63, 2 ** 63, 0],
                                         "data_offsets": [start, start]}),
        "key_order a string": edit(meta={"key_order": json.dumps("activations")}),
        "layer_order an object": edit(meta={"layer_order": json.dumps({"layer_0": 1})}),
        "record a list": edit(meta={"record": json.dumps([1, 2])}),
        "tensor_fields not JSON": edit(meta={"tensor_fields": "input_ids"}),
        "record nested 500 deep": edit(meta={"record": json.dumps(
            dict(json.loads(header["__metadata__"]["record"]), grading=json.loads(deep)))}),
        "overlapping tensors": edit({"data_offsets": [0, header["activations.layer_0"][
            "data_offsets"][1] - start]}),
        "extra entry field": edit({"offsets": 1}),
    }


def _long(value):
    """LONG1 / LONG4 of an int (two's complement, little-endian)."""
    data = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return (b"\x8a" + bytes([len(data)]) if len(data) < 256 else b"\x8b" + struct.pack("<I", len(data))) + data


def same_hash_keys(n, kind="dict"):
    """{k * (2**61 - 1): None} (or a set / frozenset of them) for k = 1..n, as a protocol-4 pickle."""
    keys = [_long(k * (2 ** 61 - 1)) for k in range(1, n + 1)]
    if kind == "dict":
        return op.P4 + op.EMPTY_DICT + op.MARK + b"".join(k + op.NONE for k in keys) + b"u" + op.STOP
    if kind == "set":
        return op.P4 + op.EMPTY_SET + op.MARK + b"".join(keys) + op.ADDITEMS + op.STOP
    return op.P4 + op.MARK + b"".join(keys) + op.FROZENSET + op.STOP


def huge_shape(nbytes, nints=16):
    """numpy _frombuffer(b"", float32, <nints huge ints>, "C") as a pickle: each int has `nbytes`
    random bytes (CPython multiplies powers of two fast: the ints must be random)."""
    import random
    rng = random.Random(0)
    ints = b"".join(_long(rng.getrandbits(8 * nbytes - 2) | 1 << (8 * nbytes - 3)) for _ in range(nints))
    return (op.P4 + op.glob("numpy.core.numeric", "_frombuffer") + op.MARK + op.bytes(b"")
            + op.glob("numpy", "dtype") + op.str("f4") + op.FALSE + op.TRUE + op.TUPLE3 + op.REDUCE
            + op.MARK + ints + op.TUPLE + op.str("C") + op.TUPLE + op.REDUCE + op.STOP)


def many_entries(n):
    """A .safetensors record file whose header lists n zero-size float32 tensors."""
    header = {"__metadata__": {"format": "activation-record"}}
    header.update({f"t{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(n)})
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text


def write_run(folder, store="files", n=8, hidden=8):
    """A valid run folder of n questions (hidden size `hidden`) (categories "cat0"/"cat1", every other one correct) whose
    records (layers embeddings, layer_0, layer_1) are in `store` ("files" or "shards": two shards);
    made without a model, in a second. -> folder."""
    from activation_eval import schema
    from activation_eval.store.run_folder import record_path
    from activation_eval.store.shard_writer import write_shard
    folder = os.fspath(folder)
    acts = os.path.join(folder, "activations")
    os.makedirs(os.path.join(acts, "units"), exist_ok=True)
    ids = [f"q{i}" for i in range(n)]
    recs = [dict(record(seed=i, hidden=hidden), grading={"id": q, "correct": i % 2 == 0}) for i, q in enumerate(ids)]
    rows = []
    for i, q in enumerate(ids):
        row = schema.answered_row({"id": q, "question": f"question {i}", "answer": "A", "category": f"cat{i % 2}"},
                                  f"Q{i}", "A", {"extracted": "A", "correct": i % 2 == 0, "grader": "exact"}, 4, 3)
        if store == "files":
            path = save_activations(recs[i], record_path(acts, q, "safetensors"))
            row[schema.ACTIVATION_FILE] = os.path.relpath(path, folder)
        rows.append(row)
    if store == "shards":
        for half, part in enumerate((range(0, n // 2), range(n // 2, n))):
            rel = f"activations/units/abcdef{half}.safetensors"
            write_shard(os.path.join(folder, rel), [ids[i] for i in part], [recs[i] for i in part])
            for r, i in enumerate(part):
                rows[i][schema.ACTIVATION_SHARD], rows[i][schema.ACTIVATION_ROW] = rel, r
    with open(os.path.join(folder, "results.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with open(os.path.join(folder, "run_config.json"), "w") as f:
        json.dump({"model": "tiny/random", "benchmark": "builtin"}, f)
    with open(os.path.join(folder, "summary.json"), "w") as f:
        json.dump({"total": n, "accuracy": 0.5, "wall_time_s": 1.0}, f)
    return folder


@functools.lru_cache(maxsize=1)
def attacks():
    """{name: (extension, bytes)} of every hostile file."""
    out = {name: ("pkl", data) for name, data in _attack_pickles().items()}
    out.update({name: ("safetensors", data) for name, data in _attack_safetensors().items()})
    return out


def write_attacks(folder):
    """{name: path} of every hostile file, named after the attack."""
    os.makedirs(folder, exist_ok=True)
    paths = {}
    for name, (ext, data) in attacks().items():
        paths[name] = os.path.join(folder, name.replace(" ", "_").replace("*", "") + "." + ext)
        with open(paths[name], "wb") as f:
            f.write(data)
    return paths
