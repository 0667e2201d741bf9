"""Tests for store/ (records, atomic writes, run_folder) and analysis/dataset: formats, compact +
atomic writes, safe loading, corrupt files, runs."""
import datetime
import errno
import io
import json
import logging
import os
import pickle
import random
import re
import subprocess
import warnings
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch

from activation_eval.analysis.dataset import load_run_layer
from activation_eval.store import atomic, run_files, run_folder, run_writer, safe_pickle, safetensors_file
from activation_eval.store import records as storage
from activation_eval.store.atomic import remove_stale_temp_files
from activation_eval.store.errors import CorruptFileError, StorageError, UnsafeFileError
from activation_eval.store.records import save_activations
from activation_eval.store.run_folder import iter_record_files, read_results, record_path
from activation_eval.store.run_reader import load_activations

FMTS = ["pkl", "safetensors"]
LAYERS = ["embeddings", "layer_0", "layer_1", "model.layers.1.mlp", "final_norm"]
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float32, torch.float16]


def make_record(seed=0, n_prompt=5, n_generated=3, hidden=16, positions_kept=None):
    """A full capture record; row i of each activation is position positions_kept[i]."""
    g = torch.Generator().manual_seed(seed)
    kept = list(range(n_prompt + n_generated - 1)) if positions_kept is None else positions_kept
    acts = {name: torch.randn(len(kept), hidden, generator=g).to(dt)
            for name, dt in zip(LAYERS, DTYPES)}
    return {
        "prompt": f"Question {seed}?", "response": "Answer ü", "model": "tiny/random",
        "timestamp": "2025-01-02T03:04:05+00:00",
        "input_ids": torch.randint(0, 100, (n_prompt,), generator=g),
        "output_ids": torch.randint(0, 100, (n_generated,), generator=g),
        "activations": acts, "layer_names": list(acts), "positions": "all",
        "positions_kept": kept, "num_prompt_tokens": n_prompt,
        "num_generated_tokens": n_generated, "dtype": "float32",
        "model_info": {"n_layers": 2, "hidden": hidden, "arch": ["X"]},
        "generation": {"max_new_tokens": 3, "do_sample": False, "temperature": None},
        "versions": {"torch": torch.__version__},
        "grading": {"id": f"q{seed}", "category": "geo", "answer": "A", "extracted": "A",
                    "correct": True, "grader": "exact"},
    }


def assert_same_record(got, want):
    assert list(got) == list(want)                               # field order kept
    assert list(got["activations"]) == list(want["activations"])  # layer order kept
    for name, t in want["activations"].items():
        assert got["activations"][name].dtype == t.dtype
        assert torch.equal(got["activations"][name], t)
    for key in ("input_ids", "output_ids"):
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key])
    for key, value in want.items():
        if not isinstance(value, torch.Tensor) and key != "activations":
            assert got[key] == value, key


def tensor_bytes(record):
    tensors = list(record["activations"].values()) + [record["input_ids"], record["output_ids"]]
    return sum(t.numel() * t.element_size() for t in tensors)


def files_in(folder):
    return sorted(os.listdir(folder))


class Reduce:
    """Pickles as func(*args): how a malicious file smuggles a call into pickle.load."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def storage_payload(obj, zip_format):
    """Bytes for torch.storage._load_from_bytes whose inner pickle holds `obj`."""
    buf = io.BytesIO()
    torch.save(obj, buf, _use_new_zipfile_serialization=zip_format)
    return buf.getvalue()


# ----------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("fmt", FMTS)
def test_round_trip(tmp_path, fmt):
    rec = make_record()
    path = save_activations(rec, tmp_path / f"q.{fmt}")
    assert path == str(tmp_path / f"q.{fmt}")
    assert_same_record(load_activations(path), rec)
    assert files_in(tmp_path) == [f"q.{fmt}"]


def test_plain_pickle_load_reads_pkl(tmp_path):
    rec = make_record()
    save_activations(rec, tmp_path / "q.pkl")
    with open(tmp_path / "q.pkl", "rb") as f:
        assert_same_record(pickle.load(f), rec)


def test_seed_record_with_datetime(tmp_path):
    stamp = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.UTC)
    seed = {"prompt": "p", "response": "r", "model": "m", "timestamp": stamp,
            "input_ids": torch.arange(4), "output_ids": torch.arange(2),
            "activations": {"layer_0": torch.randn(5, 8)}}
    with open(tmp_path / "seed.pkl", "wb") as f:               # as the seed wrote it
        pickle.dump(seed, f)
    assert load_activations(tmp_path / "seed.pkl")["timestamp"] == stamp
    save_activations(seed, tmp_path / "seed.safetensors")
    assert load_activations(tmp_path / "seed.safetensors")["timestamp"] == stamp.isoformat()


def test_pickle_of_gpu_tensor_loads_on_cpu(tmp_path):
    """Seed files pickled CUDA tensors: their storage payload names the device 'cuda:0'."""
    t = torch.arange(6.0).reshape(2, 3)
    payload = storage_payload(t._typed_storage(), zip_format=False)
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"
    assert payload.count(cpu) == 1
    tensor = Reduce(torch._utils._rebuild_tensor_v2,
                    Reduce(torch.storage._load_from_bytes, payload.replace(cpu, cuda)),
                    0, (2, 3), (3, 1), False, OrderedDict())
    (tmp_path / "gpu.pkl").write_bytes(pickle.dumps({"activations": {"layer_0": tensor}}))
    got = load_activations(tmp_path / "gpu.pkl")["activations"]["layer_0"]
    assert got.device.type == "cpu" and torch.equal(got, t)


def test_torch_save_file_gets_a_hint(tmp_path):
    torch.save(make_record(), tmp_path / "q.pkl")
    with pytest.raises(CorruptFileError, match="torch.save zip archive.*q.pkl$"):
        load_activations(tmp_path / "q.pkl")


def test_numpy_values_in_pickle_load(tmp_path):
    rec = make_record()
    rec["extra"] = {"arr": np.arange(6, dtype=np.float16).reshape(2, 3), "x": np.float32(1.5),
                    "s": {1, 2}, "b": b"\x00\x01", "od": OrderedDict(a=1)}
    save_activations(rec, tmp_path / "q.pkl")
    extra = load_activations(tmp_path / "q.pkl")["extra"]
    np.testing.assert_array_equal(extra["arr"], rec["extra"]["arr"])
    assert extra["arr"].dtype == np.float16 and extra["x"] == np.float32(1.5)
    assert extra["s"] == {1, 2} and extra["b"] == b"\x00\x01" and extra["od"] == {"a": 1}


@pytest.mark.parametrize("fmt", FMTS)
def test_empty_and_shared_tensors(tmp_path, fmt):
    rec = make_record()
    same = torch.randn(3, 16)
    rec["activations"] = {"layer_0": torch.zeros(0, 16), "layer_1": torch.zeros(0, 16),
                          "a": same, "b": same}                  # one tensor under two names
    save_activations(rec, tmp_path / f"q.{fmt}")
    got = load_activations(tmp_path / f"q.{fmt}")["activations"]
    assert got["layer_0"].shape == (0, 16) and torch.equal(got["b"], same)


def test_save_does_not_modify_caller_record(tmp_path):
    rec = make_record()
    buf = torch.randn(20, 16, requires_grad=True)
    rec["activations"]["layer_0"] = buf[2:9]
    before = dict(rec["activations"])
    save_activations(rec, tmp_path / "q.pkl")
    assert rec["activations"] == before and rec["activations"]["layer_0"]._base is buf
    got = load_activations(tmp_path / "q.pkl")["activations"]["layer_0"]
    assert not got.requires_grad and torch.equal(got, buf[2:9].detach())


def test_unpicklable_dtype_refused_for_pkl(tmp_path):
    rec = make_record()
    rec["activations"]["layer_0"] = torch.zeros(3, 4, dtype=torch.uint16)
    with pytest.raises(ValueError, match="safetensors"):
        save_activations(rec, tmp_path / "q.pkl")
    assert files_in(tmp_path) == []
    save_activations(rec, tmp_path / "q.safetensors")
    got = load_activations(tmp_path / "q.safetensors")["activations"]["layer_0"]
    assert got.dtype == torch.uint16


def test_non_json_field_refused_for_safetensors(tmp_path):
    rec = make_record()
    rec["generation"] = {"stopper": object()}
    with pytest.raises(TypeError, match="'generation'"):
        save_activations(rec, tmp_path / "q.safetensors")
    assert files_in(tmp_path) == []


@pytest.mark.parametrize("bad", ["q.pt", "q.json", "q", "q.pkl.bak"])
def test_unsupported_extension(tmp_path, bad):
    path = str(tmp_path / bad)
    with pytest.raises(ValueError, match=r"\.pkl, \.safetensors: " + re.escape(path) + "$"):
        save_activations(make_record(), path)
    open(path, "wb").close()
    with pytest.raises(ValueError, match="supported"):
        load_activations(path)


# ----------------------------------------------------------------------------- format details

def awkward(dtype, rows=4, cols=8):
    """A tensor of `dtype` from random bits: NaN payloads, -0.0, infinities, subnormals."""
    g = torch.Generator().manual_seed(3)
    raw = torch.randint(0, 256, (rows * cols * dtype.itemsize,), dtype=torch.uint8, generator=g)
    if dtype == torch.bool:
        return (raw[:rows * cols] % 2 == 1).reshape(rows, cols)
    return raw.view(dtype).reshape(rows, cols)


def same_bits(a, b):
    return (a.dtype == b.dtype and a.shape == b.shape
            and torch.equal(a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8)))


def dtype_record(dtype):
    rec = make_record()
    rec["activations"] = {"x": awkward(dtype), "scalar": awkward(dtype, 1, 1)[0, 0],
                          "empty": awkward(dtype)[:0], "view": awkward(dtype).t()[2:5]}
    return rec


def assert_owned_and_writable(t):
    """`t` owns exactly its bytes (no view of a larger buffer) and can be written."""
    assert t.untyped_storage().nbytes() == t.numel() * t.element_size()
    t.zero_()


@pytest.mark.parametrize("dtype", sorted(storage._PICKLE_DTYPES, key=str))
def test_pkl_round_trip_is_bit_exact(tmp_path, dtype):
    rec = dtype_record(dtype)
    path = save_activations(rec, tmp_path / "q.pkl")
    with warnings.catch_warnings():
        warnings.simplefilter("error")           # e.g. torch.from_numpy of read-only memory
        got = load_activations(path)["activations"]
    with open(path, "rb") as f:
        plain = pickle.load(f)["activations"]
    for name, want in rec["activations"].items():
        assert same_bits(got[name], want) and same_bits(plain[name], want), name
        assert type(got[name]) is torch.Tensor and type(plain[name]) is torch.Tensor
        assert_owned_and_writable(got[name])
    data = Path(path).read_bytes()                  # bfloat16 alone keeps torch's pickling
    assert (b"_rebuild_tensor_v2" in data) == (dtype == torch.bfloat16) and b"from_numpy" in data


@pytest.mark.parametrize("dtype", sorted(safetensors_file.DTYPES.values(), key=str))
def test_safetensors_round_trip_is_bit_exact(tmp_path, dtype):
    rec = dtype_record(dtype)
    path = save_activations(rec, tmp_path / "q.safetensors")
    full = load_activations(path)["activations"]
    for name, want in rec["activations"].items():
        one = load_activations(path, layers=[name])["activations"][name]
        assert same_bits(full[name], want) and same_bits(one, want), name
        assert_owned_and_writable(one)
    full["x"].zero_()                                # a private mapping: the file is unchanged
    assert same_bits(load_activations(path)["activations"]["x"], rec["activations"]["x"])


def test_old_pkl_files_still_load(tmp_path):
    """Files written before storage's own pickler: every tensor pickled by torch."""
    rec = make_record()
    with open(tmp_path / "old.pkl", "wb") as f:
        pickle.dump(storage._prepare_record(rec), f, protocol=pickle.HIGHEST_PROTOCOL)
    data = (tmp_path / "old.pkl").read_bytes()
    assert b"_rebuild_tensor_v2" in data and b"from_numpy" not in data
    got = load_activations(tmp_path / "old.pkl")
    assert_same_record(got, rec)
    for t in got["activations"].values():
        assert_owned_and_writable(t)


def test_safetensors_written_by_save_file_still_load(tmp_path):
    """Files written before storage's own writer, by safetensors.torch.save_file."""
    from safetensors.torch import save_file
    rec = make_record()
    tensors, metadata = storage._safetensors_payload(storage._prepare_record(rec))
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=metadata)
    assert_same_record(load_activations(tmp_path / "old.safetensors"), rec)
    got = load_activations(tmp_path / "old.safetensors", layers=["layer_1"])
    assert torch.equal(got["activations"]["layer_1"], rec["activations"]["layer_1"])


def write_with(tmp_path, tensors, metadata):
    """(our writer's bytes, safetensors.torch.save_file's bytes) for the same tensors."""
    from safetensors.torch import save_file
    head, ordered = storage._safetensors_layout(tensors, metadata)
    storage._write_safetensors(head, ordered, tmp_path / "ours.safetensors")
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata=metadata)
    return tuple((tmp_path / f"{who}.safetensors").read_bytes() for who in ("ours", "theirs"))


def test_safetensors_writer_matches_save_file_byte_for_byte(tmp_path):
    from safetensors import safe_open
    tensors = {f"t_{str(dt)[6:]}": awkward(dt) for dt in safetensors_file.DTYPES.values()}
    tensors.update({"b": awkward(torch.float32), "a": awkward(torch.float32)[:2].clone(),
                    "é \"q\" \\ \n\t\x01\u2028": torch.arange(3), "scalar": torch.tensor(2.5),
                    "empty": torch.zeros(0, 4, dtype=torch.float16), "z": torch.ones(1, 0, 2)})
    meta = {"k": "é \"v\" \\ \n\t\x00\x1f\x7f\u2028/"}
    ours, theirs = write_with(tmp_path, tensors, meta)
    assert ours == theirs
    with safe_open(str(tmp_path / "ours.safetensors"), framework="pt") as f:
        assert f.metadata() == meta
        for name, t in tensors.items():
            assert same_bits(f.get_tensor(name), t), name
    for n in range(1, 9):                                   # every header padding length
        ours, theirs = write_with(tmp_path, {"x" * n: torch.arange(n, dtype=torch.int8)},
                                  {"m": "v" * n})
        assert ours == theirs, n


def test_safetensors_record_matches_save_file(tmp_path):
    """A whole record: save_file orders the metadata keys at random, so the headers are
    compared parsed (tensor entries in order); everything else byte for byte."""
    from safetensors.torch import save_file
    rec = make_record()
    path = save_activations(rec, tmp_path / "ours.safetensors")
    tensors, metadata = storage._safetensors_payload(storage._prepare_record(rec))
    save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata=metadata)
    ours, theirs = Path(path).read_bytes(), (tmp_path / "theirs.safetensors").read_bytes()
    n = int.from_bytes(ours[:8], "little")
    assert len(ours) == len(theirs) and ours[:8] == theirs[:8] and ours[8 + n:] == theirs[8 + n:]
    parse = lambda b: json.loads(b[8:8 + n], object_pairs_hook=list)  # noqa: E731
    (meta_ours, *entries_ours), (meta_theirs, *entries_theirs) = parse(ours), parse(theirs)
    assert entries_ours == entries_theirs
    assert meta_ours[0] == meta_theirs[0] == "__metadata__"
    assert dict(meta_ours[1]) == dict(meta_theirs[1])


def test_safetensors_refuses_dtypes_it_cannot_hold(tmp_path):
    rec = make_record()
    rec["activations"]["layer_0"] = torch.zeros(2, 2, dtype=torch.complex128)
    with pytest.raises(ValueError, match="'activations.layer_0'.*complex128.*save as .pkl"):
        save_activations(rec, tmp_path / "q.safetensors")
    assert files_in(tmp_path) == []
    rec["activations"]["layer_0"] = torch.zeros(2)
    rec["__metadata__"] = torch.zeros(1)                    # would replace the header metadata
    with pytest.raises(ValueError, match="__metadata__"):
        save_activations(rec, tmp_path / "q.safetensors")


def test_pickler_hands_tensor_memory_to_the_file(tmp_path):
    """No copy: the big buffer the pickler writes is the tensor's own memory."""
    t = torch.randn(256, 256)
    pieces = storage._Pieces()
    storage._RecordPickler(pieces, protocol=5).dump({"activations": {"x": t}})
    big = [memoryview(p) for p in pieces if memoryview(p).nbytes == t.nbytes]
    assert len(big) == 1 and np.frombuffer(big[0], np.uint8).ctypes.data == t.data_ptr()


@pytest.mark.parametrize("fmt", FMTS)
def test_short_writes_and_no_writev(tmp_path, monkeypatch, fmt):
    """The writer finishes files whatever each write call manages, with or without writev."""
    rec = make_record(hidden=4096)
    want = Path(save_activations(rec, tmp_path / f"a.{fmt}")).read_bytes()
    real_write, calls = os.write, []

    def short_writev(fd, views):
        calls.append(len(views))
        return real_write(fd, bytes(views[0][:1000]))
    monkeypatch.setattr(os, "writev", short_writev)
    assert Path(save_activations(rec, tmp_path / f"b.{fmt}")).read_bytes() == want
    assert len(calls) > len(want) // 1000
    monkeypatch.delattr(os, "writev")
    assert Path(save_activations(rec, tmp_path / f"c.{fmt}")).read_bytes() == want


# ----------------------------------------------------------------------------- partial loads

@pytest.mark.parametrize("fmt", FMTS)
def test_partial_layers(tmp_path, fmt):
    rec = make_record()
    path = save_activations(rec, tmp_path / f"q.{fmt}")
    got = load_activations(path, layers=["final_norm", "model.layers.1.mlp"])
    assert list(got["activations"]) == ["model.layers.1.mlp", "final_norm"]    # file order
    assert torch.equal(got["activations"]["final_norm"], rec["activations"]["final_norm"])
    assert list(load_activations(path, layers="layer_1")["activations"]) == ["layer_1"]
    assert got["prompt"] == rec["prompt"] and torch.equal(got["input_ids"], rec["input_ids"])
    with pytest.raises(ValueError,
                       match=r"unknown layer name\(s\) \['layer_9'\]; available: .*'final_norm'"):
        load_activations(path, layers=["layer_9"])


@pytest.fixture
def tensor_reads(monkeypatch):
    """Records the keys of the tensors a .safetensors load reads (each from its byte range)."""
    reads = []
    real_read = storage._read_tensor

    def read(f, key, *args):
        reads.append(key)
        return real_read(f, key, *args)
    monkeypatch.setattr(storage, "_read_tensor", read)
    return reads


def test_safetensors_reads_only_requested_layer(tmp_path, tensor_reads):
    path = save_activations(make_record(), tmp_path / "q.safetensors")
    load_activations(path, layers=["layer_1"])
    assert [k for k in tensor_reads if k.startswith("activations.")] == ["activations.layer_1"]


def test_one_layer_reads_equal_full_reads(tmp_path):
    rec = make_record(n_prompt=9, n_generated=4)
    path = save_activations(rec, tmp_path / "q.safetensors")
    full = load_activations(path)
    for name in LAYERS:
        one = load_activations(path, layers=[name])
        assert list(one) == list(full) and list(one["activations"]) == [name]
        assert same_bits(one["activations"][name], full["activations"][name])
        for key, value in full.items():
            if key != "activations":
                assert same_bits(one[key], value) if isinstance(value, torch.Tensor) \
                    else one[key] == value, key


def test_bad_tensor_entries_in_partial_reads(tmp_path):
    """Header entries are checked before a partial read allocates or reads anything."""
    st = Path(save_activations(make_record(), tmp_path / "good.safetensors")).read_bytes()
    n = int.from_bytes(st[:8], "little")
    header = json.loads(st[8:8 + n])
    entry = header["activations.layer_0"]
    start, end = entry["data_offsets"]
    for name, change in [("huge", {"shape": [10 ** 12, 10 ** 6]}),
                         ("negative", {"shape": [-1, -16]}),
                         ("float_shape", {"shape": [7.0, 16]}),
                         ("shape_str", {"shape": "716"}),
                         ("dtype", {"dtype": "F128"}),
                         ("offsets", {"data_offsets": [start - 8, end - 8]}),
                         ("float_offsets", {"data_offsets": [float(start), float(end)]}),
                         ("swapped", {"data_offsets": [end, start]})]:
        text = json.dumps({**header, "activations.layer_0": {**entry, **change}}).encode()
        text += b" " * (-len(text) % 8)
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(len(text).to_bytes(8, "little") + text + st[8 + n:])
        with pytest.raises(CorruptFileError, match=f"{name}.safetensors$"):
            load_activations(path, layers=["layer_0"])


# ----------------------------------------------------------------------------- compact files

@pytest.mark.parametrize("fmt", FMTS)
def test_views_are_saved_compactly(tmp_path, fmt):
    big = torch.randn(512, 1024)                              # 2 MiB buffer
    rec = make_record()
    rec["activations"] = {f"layer_{i}": big[i * 8:(i + 1) * 8] for i in range(8)}   # row views
    rec["activations"]["transposed"] = big[:64, :64].t()      # non-contiguous view
    naive = len(pickle.dumps(rec["activations"]))
    path = save_activations(rec, tmp_path / f"q.{fmt}")
    size = os.path.getsize(path)
    assert size <= 1.05 * tensor_bytes(rec) + 16384, (size, tensor_bytes(rec))
    assert naive > 8 * size                                   # what the copy avoids
    assert_same_record(load_activations(path), rec)


@pytest.mark.parametrize("fmt", FMTS)
def test_plain_record_is_compact(tmp_path, fmt):
    rec = make_record(hidden=2048)
    path = save_activations(rec, tmp_path / f"q.{fmt}")
    assert os.path.getsize(path) <= 1.05 * tensor_bytes(rec) + 16384


# ----------------------------------------------------------------------------- atomic writes

def fail_with(exc):
    def boom(*args, **kwargs):
        raise exc
    return boom


@pytest.mark.parametrize("fmt", FMTS)
@pytest.mark.parametrize("target,exc", [
    ("fsync", OSError(errno.ENOSPC, "No space left on device")),
    ("replace", PermissionError(errno.EACCES, "Permission denied")),
])
def test_failed_write_keeps_old_file(tmp_path, monkeypatch, fmt, target, exc):
    path = str(tmp_path / f"q.{fmt}")
    old = make_record(seed=1)
    save_activations(old, path)
    old_bytes = Path(path).read_bytes()
    monkeypatch.setattr(os, target, fail_with(exc))
    with pytest.raises(StorageError) as info:
        save_activations(make_record(seed=2), path)
    monkeypatch.undo()
    err = info.value
    assert isinstance(err, OSError) and err.errno == exc.errno
    assert str(err).endswith(": " + path) and exc.strerror in str(err)
    assert err.__cause__ is exc
    assert files_in(tmp_path) == [f"q.{fmt}"]                 # no temp file left
    assert Path(path).read_bytes() == old_bytes
    assert_same_record(load_activations(path), old)


def test_failed_write_of_new_file_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "fsync", fail_with(OSError(errno.EIO, "I/O error")))
    with pytest.raises(StorageError, match="I/O error"):
        save_activations(make_record(), tmp_path / "sub" / "q.pkl")
    assert files_in(tmp_path / "sub") == []


def test_non_io_error_during_write_cleans_up(tmp_path):
    rec = make_record()
    rec["generation"] = {"callback": lambda: None}            # cannot be pickled
    save_activations(make_record(seed=1), tmp_path / "q.pkl")
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_activations(rec, tmp_path / "q.pkl")
    assert files_in(tmp_path) == ["q.pkl"]
    assert load_activations(tmp_path / "q.pkl")["prompt"] == make_record(seed=1)["prompt"]


@pytest.mark.parametrize("fmt", FMTS)
def test_write_goes_through_temp_file_in_same_folder(tmp_path, monkeypatch, fmt):
    renames, fsyncs = [], []
    real_replace, real_fsync = os.replace, os.fsync
    monkeypatch.setattr(os, "replace", lambda a, b: (renames.append((a, b)), real_replace(a, b))[1])
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    path = save_activations(make_record(), tmp_path / f"q.{fmt}")
    (src, dst), = renames
    assert dst == path and os.path.dirname(src) == str(tmp_path)
    name = os.path.basename(src)
    assert name.startswith(".") and ".tmp" in name and atomic._TEMP_NAME.match(name)
    assert len(fsyncs) == 2                                   # the file, then the folder


def test_write_text_and_json_atomic(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    assert atomic.write_json_atomic(path, {"acc": 0.5, "name": "é"}) == str(path)
    assert json.loads(path.read_text(encoding="utf-8")) == {"acc": 0.5, "name": "é"}
    atomic.write_text_atomic(tmp_path / "results.jsonl", '{"id": 1}\n')
    monkeypatch.setattr(os, "replace", fail_with(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(StorageError, match="summary.json$"):
        atomic.write_json_atomic(path, {"acc": 1.0})
    monkeypatch.undo()
    assert json.loads(path.read_text(encoding="utf-8"))["acc"] == 0.5
    assert files_in(tmp_path) == ["results.jsonl", "summary.json"]


def test_remove_stale_temp_files(tmp_path):
    stale = [".q1.pkl.0123abcd.tmp", ".q2.safetensors.deadbeef.tmp"]
    keep = ["q1.pkl", ".hidden", "notes.tmp", ".x.tmp", "q3.safetensors"]
    for name in stale + keep:
        (tmp_path / name).write_bytes(b"x")
    assert iter_record_files(tmp_path) == [str(tmp_path / n) for n in ("q1.pkl", "q3.safetensors")]
    assert remove_stale_temp_files(tmp_path) == 2
    assert files_in(tmp_path) == sorted(keep)
    assert remove_stale_temp_files(tmp_path) == 0
    assert remove_stale_temp_files(tmp_path / "missing") == 0


# ----------------------------------------------------------------------------- unsafe pickles

def malicious_pickles(marker):
    touch = f"touch {marker}"
    py_touch = f"open({str(marker)!r}, 'w').close()"
    evil = Reduce(os.system, touch)
    wrap = lambda payload: {"prompt": "x", "activations": {"layer_0": payload}}  # noqa: E731
    return {
        "os.system": evil,
        "builtins.eval": Reduce(eval, py_touch),
        "builtins.exec": Reduce(exec, py_touch),
        "subprocess.Popen": Reduce(subprocess.Popen, ["touch", str(marker)]),
        "builtins.getattr": Reduce(getattr, Reduce(__import__, "os"), "system"),
        "nested os.system": {"prompt": "x", "activations": {"layer_0": torch.zeros(2)},
                             "generation": {"a": [{"b": (1, 2, {"c": [evil]})}]}},
        "zip storage payload": wrap(Reduce(torch.storage._load_from_bytes,
                                           storage_payload({"x": evil}, zip_format=True))),
        "legacy storage payload": wrap(Reduce(torch.storage._load_from_bytes,
                                              storage_payload(evil, zip_format=False))),
    }


CASES = list(malicious_pickles("m"))


@pytest.mark.parametrize("case", CASES)
def test_malicious_pickle_refused_without_side_effect(tmp_path, case):
    marker = tmp_path / "PWNED"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps(malicious_pickles(marker)[case], protocol=4))
    with pytest.raises(UnsafeFileError) as info:
        load_activations(path)
    assert str(info.value).endswith(str(path))
    expected = {"os.system": "system", "nested os.system": "system", "builtins.eval": "eval",
                "builtins.exec": "exec", "subprocess.Popen": "Popen",
                "builtins.getattr": "getattr", "zip storage payload": "zip",
                "legacy storage payload": "system"}[case]
    assert expected in str(info.value)
    assert not marker.exists()


@pytest.mark.parametrize("case", ["os.system", "zip storage payload", "legacy storage payload"])
def test_malicious_pickles_are_live(tmp_path, case):
    """Control: plain pickle.loads does run these payloads, so the refusal above is real."""
    marker = tmp_path / "PWNED"
    data = pickle.dumps(malicious_pickles(marker)[case], protocol=4)
    try:
        pickle.loads(data)
    except Exception:
        pass                                  # the side effect happens before any error
    assert marker.exists()


class ReduceWithState(Reduce):
    """Pickles as func(*args) followed by BUILD(state): sets the new object's state."""

    def __init__(self, func, args, state):
        self.func, self.args, self.state = func, args, state

    def __reduce__(self):
        return self.func, self.args, self.state


def test_build_on_tensor_or_function_refused(tmp_path):
    payload = storage_payload(torch.arange(6.0)._typed_storage(), zip_format=False)
    grow = ReduceWithState(torch._utils._rebuild_tensor_v2,
                           (Reduce(torch.storage._load_from_bytes, payload), 0, (6,), (1,),
                            False, OrderedDict()),
                           (Reduce(torch.storage._load_from_bytes, payload), 0, (10 ** 9,), (1,)))
    (tmp_path / "a.pkl").write_bytes(pickle.dumps({"activations": {"l": grow}}))
    with pytest.raises(UnsafeFileError, match=r"state of a Tensor \(pickle BUILD\).*a\.pkl$"):
        load_activations(tmp_path / "a.pkl")
    # rewrite an allowed function's defaults: (None, {"__defaults__": (1,)}) BUILD
    rebuild = safe_pickle._GLOBALS[("torch._utils", "_rebuild_tensor_v2")]
    before = rebuild.__defaults__
    (tmp_path / "b.pkl").write_bytes(
        b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nN}X\x0c\x00\x00\x00__defaults__"
        b"K\x01\x85s\x86b.")
    with pytest.raises(UnsafeFileError, match="BUILD"):
        load_activations(tmp_path / "b.pkl")
    assert rebuild.__defaults__ == before


def test_oversized_declarations_refused_fast(tmp_path):
    # bytes(10**12) would allocate a terabyte
    (tmp_path / "a.pkl").write_bytes(
        b"\x80\x02c__builtin__\nbytes\n\x8a\x06" + (10 ** 12).to_bytes(6, "little") + b"\x85R.")
    with pytest.raises(CorruptFileError, match="a.pkl$"):
        load_activations(tmp_path / "a.pkl")
    for opcode in (b"\x8e", b"\x96", b"\x8d"):           # BINBYTES8, BYTEARRAY8, BINUNICODE8
        (tmp_path / "a.pkl").write_bytes(b"\x80\x05" + opcode + (10 ** 12).to_bytes(8, "little"))
        with pytest.raises(CorruptFileError, match="truncated.*a.pkl$"):
            load_activations(tmp_path / "a.pkl")
    # a tensor payload claiming 2**31 floats while holding 6
    payload = storage_payload(torch.arange(6.0)._typed_storage(), zip_format=False)
    assert b"K\x06Nt" in payload
    forged = payload.replace(b"K\x06Nt", b"J\xff\xff\xff\x7fNt")
    tensor = Reduce(torch._utils._rebuild_tensor_v2,
                    Reduce(torch.storage._load_from_bytes, forged), 0, (6,), (1,), False,
                    OrderedDict())
    (tmp_path / "b.pkl").write_bytes(pickle.dumps({"activations": {"l": tensor}}))
    with pytest.raises(CorruptFileError, match=r"declares \d+ bytes.*b\.pkl$"):
        load_activations(tmp_path / "b.pkl")
    # out-of-bounds view of a real storage
    oob = Reduce(torch._utils._rebuild_tensor_v2, Reduce(torch.storage._load_from_bytes, payload),
                 0, (1000,), (1,), False, OrderedDict())
    empty = storage_payload(torch.zeros(0)._typed_storage(), zip_format=False)
    for size, stride, data in [((1000,), (1,), payload), ((3, 4), (4, 1), payload),
                               ((10 ** 6,), (1,), empty), ((2,), (-1,), payload)]:
        oob = Reduce(torch._utils._rebuild_tensor_v2, Reduce(torch.storage._load_from_bytes, data),
                     0, size, stride, False, OrderedDict())    # Tensor.set_ would grow storage
        (tmp_path / "c.pkl").write_bytes(pickle.dumps({"activations": {"l": oob}}))
        with pytest.raises(CorruptFileError, match="c.pkl$"):
            load_activations(tmp_path / "c.pkl")


def numpy_frombuffer():
    return np.zeros(1).__reduce_ex__(5)[0]                   # numpy(._core).numeric._frombuffer


def bad_new_globals():
    """Pickled calls of the globals storage's pickler uses, with arguments it never writes."""
    frombuffer = numpy_frombuffer()
    f4 = np.dtype("f4")
    from_numpy = lambda arg: Reduce(torch.from_numpy, arg)  # noqa: E731
    return {
        "object array": from_numpy(np.array([1, "a"], dtype=object)),
        "string array": from_numpy(np.array(["abc"])),
        "datetime array": from_numpy(np.array(["2020-01-01"], dtype="datetime64[D]")),
        "structured array": from_numpy(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])),
        "list": from_numpy([1.0, 2.0]),
        "bytes": from_numpy(b"\x00" * 8),
        "object dtype": Reduce(frombuffer, bytearray(16), np.dtype(object), (2,), "C"),
        "void dtype": Reduce(frombuffer, bytearray(16), np.dtype("V8"), (2,), "C"),
        "shape too big": Reduce(frombuffer, bytearray(8), f4, (10 ** 12,), "C"),
        "shape too small": Reduce(frombuffer, bytearray(16), f4, (2,), "C"),
        "negative shape": Reduce(frombuffer, bytearray(8), f4, (-1, -2), "C"),
        "float shape": Reduce(frombuffer, bytearray(8), f4, (2.0,), "C"),
        "bad order": Reduce(frombuffer, bytearray(8), f4, (2,), "X"),
        "K without axes": Reduce(frombuffer, bytearray(8), f4, (2,), "K"),
        "bad axes": Reduce(frombuffer, bytearray(16), f4, (2, 2), "K", (0, 0)),
        "buffer not bytes": Reduce(frombuffer, "abcdefgh", f4, (2,), "C"),
        "from_numpy of frombuffer object": from_numpy(
            Reduce(frombuffer, bytearray(16), np.dtype(object), (2,), "C")),
    }


@pytest.mark.parametrize("case", list(bad_new_globals()))
def test_new_globals_with_bad_arguments_refused(tmp_path, case):
    path = tmp_path / "bad.pkl"
    with open(path, "wb") as f:                  # storage's pickler: the global torch.from_numpy
        storage._RecordPickler(f, protocol=5).dump({"activations": {"x": bad_new_globals()[case]}})
    data = path.read_bytes()
    assert b"getattr" not in data and (b"from_numpy" in data or b"_frombuffer" in data)
    with pytest.raises(CorruptFileError, match=r"bad\.pkl$"):
        load_activations(path)


def test_from_numpy_of_read_only_buffer_gives_writable_tensor(tmp_path):
    values = np.arange(4, dtype=np.float32)
    # a bytes buffer (numpy's own pickles use a bytearray) gives a read-only array
    arr = Reduce(numpy_frombuffer(), values.tobytes(), values.dtype, (2, 2), "F")
    with open(tmp_path / "q.pkl", "wb") as f:
        storage._RecordPickler(f, protocol=5).dump(
            {"activations": {"x": Reduce(torch.from_numpy, arr)}})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got = load_activations(tmp_path / "q.pkl")["activations"]["x"]
    assert torch.equal(got, torch.tensor([[0.0, 2.0], [1.0, 3.0]]))
    got.zero_()


def test_protocol5_numpy_layouts_load(tmp_path):
    """numpy 2 pickles strided (permuted) arrays as order "K" with an axis order; nested
    tensors that are views pickle through numpy too."""
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    big = np.arange(2 * 300 * 40, dtype=np.float64).reshape(2, 300, 40)   # >= 64 KiB: unframed
    arrays = {"c": base, "f": np.asfortranarray(base), "k": base.transpose(1, 0, 2),
              "big f": np.asfortranarray(big), "big k": big.transpose(1, 0, 2)}
    t = torch.randn(300, 200)
    rec = {"activations": {"x": torch.zeros(1)}, "extra": arrays, "tensors": [t.t(), t[:, ::2]]}
    path = save_activations(rec, tmp_path / "q.pkl")
    got = load_activations(path)
    for name, want in arrays.items():
        np.testing.assert_array_equal(got["extra"][name], want)
    assert torch.equal(got["tensors"][0], t.t()) and torch.equal(got["tensors"][1], t[:, ::2])


# ----------------------------------------------------------------------------- corrupt files

def corrupt_files(folder):
    """{name: path} of broken files, each expected to raise CorruptFileError."""
    rec = make_record()
    good_pkl = save_activations(rec, folder / "good.pkl")
    good_st = save_activations(rec, folder / "good.safetensors")
    pkl, st = Path(good_pkl).read_bytes(), Path(good_st).read_bytes()
    rng = random.Random(1234)
    junk = bytes(rng.getrandbits(8) for _ in range(4096))
    header_len = int.from_bytes(st[:8], "little")
    files = {
        "empty.pkl": b"", "empty.safetensors": b"",
        "half.pkl": pkl[:len(pkl) // 2], "head.pkl": pkl[:10], "minus1.pkl": pkl[:-1],
        "half.safetensors": st[:len(st) // 2], "four.safetensors": st[:4],
        "nodata.safetensors": st[:8 + header_len],
        "random.pkl": b"\x00" + junk, "random.safetensors": junk,
        "pickle_named.safetensors": pkl, "safetensors_named.pkl": st,
        "bogus_len.safetensors": (2 ** 60).to_bytes(8, "little") + st[8:],
        "bad_json.safetensors": (20).to_bytes(8, "little") + b"{not json at all!!!}" + b"0" * 64,
        "not_dict.pkl": pickle.dumps([1, 2, 3]),
        "no_activations.pkl": pickle.dumps({"prompt": "x"}),
        "trailing.pkl": pkl + b"garbage",
    }
    from safetensors.torch import save_file
    save_file({"x": torch.zeros(2)}, str(folder / "foreign.safetensors"))
    out = {"foreign.safetensors": folder / "foreign.safetensors"}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        out[name] = folder / name
    return out


def test_corrupt_files_raise_one_clear_error(tmp_path):
    for name, path in corrupt_files(tmp_path).items():
        with pytest.raises(CorruptFileError) as info:
            load_activations(path)
        assert str(info.value).endswith(str(path)), name
        assert "Traceback" not in str(info.value)
    with pytest.raises(CorruptFileError, match="looks like a pickle: name it .pkl"):
        load_activations(tmp_path / "pickle_named.safetensors")
    with pytest.raises(CorruptFileError, match="looks like safetensors"):
        load_activations(tmp_path / "safetensors_named.pkl")
    with pytest.raises(FileNotFoundError):
        load_activations(tmp_path / "missing.pkl")


def test_fuzzed_pickles_never_crash(tmp_path):
    """Random bytes behind a valid pickle header: always one of our two errors."""
    pkl = Path(save_activations(make_record(), tmp_path / "good.pkl")).read_bytes()
    rng = random.Random(7)
    path = tmp_path / "fuzz.pkl"
    for i in range(300):
        if i % 2:
            data = bytearray(pkl)
            for _ in range(rng.randint(1, 8)):
                data[rng.randrange(2, len(data))] = rng.getrandbits(8)
        else:
            data = b"\x80\x04" + bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
        path.write_bytes(bytes(data))
        try:
            load_activations(path)
        except (CorruptFileError, UnsafeFileError) as e:
            assert str(e).endswith(str(path))


# ----------------------------------------------------------------------------- names and folders

def test_record_path():
    assert record_path("acts", "geo-001.v2_x", "pkl") == os.path.join("acts", "geo-001.v2_x.pkl")
    assert record_path("acts", 17, ".safetensors") == os.path.join("acts", "17.safetensors")
    ids = ["a b", "a_b", "a/b", "a\\b", "..", ".", "", ".hidden", "é", "x" * 300]
    names = [os.path.basename(record_path("acts", i, "pkl")) for i in ids]
    assert len(set(names)) == len(ids)
    for name in names:
        assert name.endswith(".pkl") and not name.startswith(".") and len(name) < 200
        assert set(name) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    hashed = os.path.basename(record_path("acts", "a b", "pkl"))[:-4]    # "a_b-<hash>"
    assert record_path("acts", hashed, "pkl") != record_path("acts", "a b", "pkl")
    with pytest.raises(ValueError, match="'npz'"):
        record_path("acts", "q", "npz")


def write_run(run_dir, fmt_of=lambda i: FMTS[i % 2], n=4, torn=False):
    """A synthetic run folder; returns {id: record}. Question 2 has no activation file."""
    os.makedirs(run_dir / "activations")
    records, lines = {}, []
    for i in range(n):
        qid = f"geo-{i:03d}"
        row = {"id": qid, "correct": i % 3 == 0, "category": "geo"}
        if i != 2:
            rec = make_record(seed=i, n_prompt=4 + i)
            rec["grading"]["id"] = qid                  # a record is its row's (the run reader checks)
            path = record_path(run_dir / "activations", qid, fmt_of(i))
            save_activations(rec, path)
            row["activation_file"] = os.path.relpath(path, run_dir)
            records[qid] = rec
        lines.append(json.dumps(row) + "\n")
    text = "".join(lines) + ('{"id": "geo-999", "corr' if torn else "")
    (run_dir / "results.jsonl").write_text(text)
    (run_dir / "summary.json").write_text("{}")
    return records


def test_iter_record_files(tmp_path):
    run = tmp_path / "run"
    write_run(run)
    expected = sorted(str(run / "activations" / f) for f in os.listdir(run / "activations"))
    assert len(expected) == 3 and iter_record_files(run) == expected
    assert iter_record_files(run / "activations") == expected
    os.rename(run / "activations", run / "acts")              # only the activation_file fields
    rows = read_results(run)
    for row in rows:
        if "activation_file" in row:
            row["activation_file"] = row["activation_file"].replace("activations", "acts")
    (run / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert iter_record_files(run) == [p.replace("activations", "acts") for p in expected]
    with pytest.raises(NotADirectoryError):
        iter_record_files(tmp_path / "nope")


@pytest.mark.parametrize("positions", ["last_prompt", "mean_prompt", "last", 2])
def test_load_run_layer_values(tmp_path, positions):
    records = write_run(tmp_path / "run")
    X, rows = load_run_layer(tmp_path / "run", "layer_1", reduce=positions)
    assert [r["id"] for r in rows] == ["geo-000", "geo-001", "geo-003"]
    assert [r["correct"] for r in rows] == [True, False, True]
    assert X.dtype == np.float32 and X.shape == (3, 16)
    for x, row in zip(X, rows):
        rec = records[row["id"]]
        t = rec["activations"]["layer_1"].float()
        kept, n_prompt = rec["positions_kept"], rec["num_prompt_tokens"]
        want = {"last_prompt": lambda: t[kept.index(n_prompt - 1)],  # noqa: B023 (each called in this iteration)
                "mean_prompt": lambda: t[:n_prompt].mean(0),  # noqa: B023
                "last": lambda: t[-1],  # noqa: B023
                2: lambda: t[kept.index(2)]}[positions]()  # noqa: B023
        np.testing.assert_allclose(x, want.numpy(), rtol=1e-6)


def test_load_run_layer_with_kept_subsets(tmp_path):
    run = tmp_path / "run"
    os.makedirs(run / "activations")
    rec = make_record(n_prompt=6, positions_kept=[5, 6, 7])   # last prompt + generated rows
    rec["grading"]["id"] = "q"
    save_activations(rec, run / "activations" / "q.safetensors")
    seed = {"prompt": "p", "response": "r", "model": "m", "input_ids": torch.arange(3),
            "output_ids": torch.arange(2), "activations": {"layer_1": torch.randn(4, 16)}}
    save_activations(seed, run / "activations" / "seed.pkl")  # no positions_kept / num_prompt
    (run / "results.jsonl").write_text(
        json.dumps({"id": "q", "correct": True, "category": "c",
                    "activation_file": "activations/q.safetensors"}) + "\n"
        + json.dumps({"id": "s", "correct": False, "category": "c",
                      "activation_file": "activations/seed.pkl"}) + "\n")
    X, _ = load_run_layer(run, "layer_1")
    np.testing.assert_array_equal(X[0], rec["activations"]["layer_1"][0].float().numpy())
    np.testing.assert_array_equal(X[1], seed["activations"]["layer_1"][2].numpy())
    X, _ = load_run_layer(run, "layer_1", reduce="mean_prompt")
    np.testing.assert_allclose(X[1], seed["activations"]["layer_1"][:3].mean(0).numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"no row for token position 0 .*kept: \[5, 6, 7\]"):
        load_run_layer(run, "layer_1", reduce=0)


def test_load_run_layer_reads_only_that_layer(tmp_path, tensor_reads):
    write_run(tmp_path / "run", fmt_of=lambda i: "safetensors")
    load_run_layer(tmp_path / "run", "model.layers.1.mlp")
    acts = [k for k in tensor_reads if k.startswith("activations.")]
    assert acts == ["activations.model.layers.1.mlp"] * 3


def test_torn_last_line_is_skipped(tmp_path, caplog):
    write_run(tmp_path / "run", torn=True)
    with caplog.at_level(logging.WARNING, logger="activation_eval.store.run_folder"):
        rows = read_results(tmp_path / "run")
        X, used = load_run_layer(tmp_path / "run", "layer_0")
    assert [r["id"] for r in rows] == ["geo-000", "geo-001", "geo-002", "geo-003"]
    assert X.shape == (3, 16) and len(used) == 3
    assert "(line 5)" in caplog.text


def test_torn_middle_line_keeps_every_valid_row_after_it(tmp_path, caplog):
    write_run(tmp_path / "run")
    path = tmp_path / "run" / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    lines[1] = '{"id": "geo-001", "corr\n'
    path.write_text("".join(lines))
    with caplog.at_level(logging.WARNING, logger="activation_eval.store.run_folder"):
        rows = read_results(tmp_path / "run")
    assert [r["id"] for r in rows] == ["geo-000", "geo-002", "geo-003"]
    assert "1 torn or unreadable line(s) (line 2)" in caplog.text
    # the repairer (what --resume runs) follows the same policy and rewrites the file without it
    assert [r["id"] for r in run_files.repair_results(path)] == ["geo-000", "geo-002", "geo-003"]
    assert path.read_text().count("\n") == 3 and read_results(tmp_path / "run") == rows


def line_by_line(text):
    """An independent reading of a results file: each non-empty line parsed alone."""
    rows, dropped = [], []
    for number, line in enumerate(text.split(b"\n"), start=1):
        if line.strip():
            try:
                row = json.loads(line.decode("utf-8"))
            except ValueError:
                row = None
            (rows.append(row) if isinstance(row, dict) else dropped.append(number))
    return rows, dropped


@pytest.mark.parametrize("text", [
    b'{"id": "a"}\n{"id": "b"}\n', b'{"id": "a"}\n\n  \n{"id": "b"}',       # intact, blank lines
    b'{"id": "a"}, {"id": "b"}\n{"id": "c"}\n',            # two objects on one line: valid as one array
    b'{"id": "a", "x": [1\n2]}\n{"id": "c"}\n',            # one object over two lines: likewise
    b'{"id": "a"}\n[1, 2]\n7\n"s"\n{"id": "b"}\n',         # JSON that is not an object
    b'{"id": "a"}\n{"id": "\xff"}\n{"id": "b"}\n',         # not UTF-8
    b'{"id": "a"}\n{"id": "b", "co', b'', b'\n\n'])      # torn last line, empty files
def test_results_are_read_as_line_by_line_parsing_reads_them(tmp_path, text):
    path = tmp_path / "results.jsonl"
    path.write_bytes(text)
    assert run_folder.scan_results(path) == line_by_line(text)


def test_load_run_layer_errors(tmp_path):
    write_run(tmp_path / "run")
    with pytest.raises(ValueError, match="unknown layer name.*available: .*'layer_0'"):
        load_run_layer(tmp_path / "run", "layer_7")
    for bad in ("first", -1, 1.5, True, None):
        with pytest.raises(ValueError, match="reduce must be"):
            load_run_layer(tmp_path / "run", "layer_0", reduce=bad)
    os.remove(record_path(tmp_path / "run" / "activations", "geo-001", "safetensors"))
    with pytest.raises(FileNotFoundError, match="'geo-001'.*does not exist"):
        load_run_layer(tmp_path / "run", "layer_0")
    with pytest.raises(FileNotFoundError, match="results.jsonl"):
        load_run_layer(tmp_path / "elsewhere", "layer_0")


@pytest.mark.parametrize("module, names", [
    (storage, ("FORMATS", "save_activations", "load_record_file")),
    (run_folder, ("RESULTS_FILE", "read_results", "iter_record_files", "record_path", "scan_results")),
    (run_writer, ("RunWriter", "SHARD_BYTES", "WORDS")),
    (run_files, ("repair_results", "append_results", "merge_results", "shard_name", "remove_unreferenced_shards")),
    (atomic, ("atomic_write", "write_text_atomic", "write_json_atomic", "remove_stale_temp_files")),
])
def test_module_docstring_lists_public_names(module, names):
    for name in names:
        assert name in module.__doc__ and hasattr(module, name)


def test_safe_load_reads_a_path_or_a_file_object(tmp_path):
    rec = make_record()
    path = save_activations(rec, tmp_path / "q.pkl")
    assert_same_record(safe_pickle.safe_load(path), rec)
    with open(path, "rb") as f:
        assert_same_record(safe_pickle.safe_load(f), rec)
    with pytest.raises(UnsafeFileError, match=r"system.*<stream>$"):
        safe_pickle.safe_load(io.BytesIO(pickle.dumps(Reduce(os.system, "true"))))
    with pytest.raises(CorruptFileError, match=r"empty file\): <stream>$"):
        safe_pickle.safe_load(io.BytesIO(b""))


def test_split_modules_document_their_names():
    from activation_eval.store import errors as record_errors
    for module, names in ((safe_pickle, ("safe_load",)),
                          (record_errors, ("StorageError", "CorruptFileError", "UnsafeFileError", "RunFolderError",
                                           "corrupt", "format_hint")),
                          (safetensors_file, ("DTYPES", "DTYPE_NAMES", "HEAD_READ", "header_bytes", "check_head",
                                              "read_header", "checked_header", "check_entry", "read_tensor"))):
        for name in names:
            assert name in module.__doc__ and hasattr(module, name), (module.__name__, name)
