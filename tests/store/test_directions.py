"""Direction files (store/directions.py): round trip, interop with the safetensors library and numpy,
and hostile or unusable files refused with one line naming the file."""
import json
import os

import numpy as np
import pytest
import safetensors.torch
import torch

from activation_eval.store.directions import load_direction, save_direction
from activation_eval.store.errors import CorruptFileError


def _one_line(exc, path):
    message = str(exc.value)
    assert "\n" not in message and message.endswith(str(path)), message
    return message


def test_round_trip_is_exact_and_readable_by_safetensors(tmp_path):
    vector = torch.randn(64, dtype=torch.float64)
    path = save_direction(tmp_path / "d.safetensors", vector, source="probe layer_3", layer="layer_3", fold=2)
    loaded, meta = load_direction(path)
    assert loaded.dtype == torch.float32 and torch.equal(loaded, vector.float())
    assert meta == {"source": "probe layer_3", "layer": "layer_3", "fold": "2"}
    theirs = safetensors.torch.load_file(path)                 # the library reads the same file
    assert list(theirs) == ["direction"] and torch.equal(theirs["direction"], vector.float())
    assert [n for n in os.listdir(tmp_path)] == ["d.safetensors"]   # no temp file left


def test_file_written_by_the_library_and_npy_are_read(tmp_path):
    vector = torch.randn(32)
    safetensors.torch.save_file({"direction": vector.half()}, tmp_path / "h.safetensors", metadata={"source": "x"})
    loaded, meta = load_direction(tmp_path / "h.safetensors")
    assert torch.equal(loaded, vector.half().float()) and meta == {"source": "x"}
    np.save(tmp_path / "v.npy", vector.double().numpy())
    loaded, meta = load_direction(tmp_path / "v.npy")
    assert torch.equal(loaded, vector.double().float()) and meta == {}


@pytest.mark.parametrize("tensors, why", [
    ({"direction": torch.randn(4), "other": torch.randn(4)}, "one tensor named 'direction'"),
    ({"weights": torch.randn(4)}, "one tensor named 'direction'"),
    ({"direction": torch.randn(2, 4)}, "shape (2, 4)"),
    ({"direction": torch.arange(4, dtype=torch.int32)}, "I32, not a float"),
    ({"direction": torch.tensor([1.0, float("nan"), 0.0])}, "NaN or infinity"),
    ({"direction": torch.tensor([1.0, float("inf")])}, "NaN or infinity"),
    ({"direction": torch.zeros(8)}, "all zeros"),
    ({"direction": torch.zeros(0)}, "0 numbers"),
])
def test_unusable_safetensors_files_are_refused_in_one_line(tmp_path, tensors, why):
    path = tmp_path / "bad.safetensors"
    safetensors.torch.save_file(tensors, path)
    with pytest.raises(CorruptFileError) as exc:
        load_direction(path)
    assert why in _one_line(exc, path)


def _raw(path, header, data=b""):
    text = json.dumps(header).encode()
    path.write_bytes(len(text).to_bytes(8, "little") + text + data)
    return path


@pytest.mark.parametrize("make", [
    lambda p: p.write_bytes(b""),                                              # empty
    lambda p: p.write_bytes((10**12).to_bytes(8, "little") + b"{}"),          # header longer than the file
    lambda p: p.write_bytes(b"\x80\x04\x95" + b"\x00" * 40),                   # a pickle named .safetensors
    lambda p: _raw(p, {"direction": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}}, b"\x00" * 8),  # cut
    lambda p: _raw(p, {"direction": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 4 * 10**9]}}),   # huge
    lambda p: _raw(p, {"direction": {"dtype": "XX", "shape": [2], "data_offsets": [0, 8]}}, b"\x00" * 8),
    lambda p: _raw(p, {"direction": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}, "__metadata__": [1]},
                   b"\x00" * 8),
])
def test_hostile_safetensors_files_are_refused_before_reading_data(tmp_path, make):
    path = tmp_path / "hostile.safetensors"
    make(path)
    with pytest.raises(CorruptFileError) as exc:
        load_direction(path)
    assert _one_line(exc, path).startswith("not a usable direction file (")


def test_hostile_npy_files_are_refused(tmp_path):
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)   # needs pickle to read
    ints = tmp_path / "ints.npy"
    np.save(ints, np.arange(4))
    matrix = tmp_path / "m.npy"
    np.save(matrix, np.ones((2, 3)))
    cut = tmp_path / "cut.npy"
    np.save(cut, np.ones(100))
    cut.write_bytes(cut.read_bytes()[:-40])
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy at all")
    for path, why in [(pickled, "not a float"), (ints, "not a float"), (matrix, "shape (2, 3)"), (cut, "truncated"),
                      (junk, "not a .npy file")]:
        with pytest.raises(CorruptFileError) as exc:
            load_direction(path)
        assert why in _one_line(exc, path), path


def test_missing_file_and_bad_vectors_to_save(tmp_path):
    with pytest.raises(FileNotFoundError, match="no direction file"):
        load_direction(tmp_path / "nope.safetensors")
    with pytest.raises(CorruptFileError, match="all zeros"):
        save_direction(tmp_path / "z.safetensors", torch.zeros(4))
    assert not os.listdir(tmp_path)


@pytest.mark.slow                  # fuzzing: 300 seeded mutants, ~3 s
def test_mutated_direction_files_load_a_checked_vector_or_are_refused_in_one_line(tmp_path):
    """A seeded byte-level fuzz of both formats (flips, truncations, insertions, header edits): every
    mutant either loads as a finite, non-zero 1-D float32 vector or raises CorruptFileError naming the file;
    nothing else escapes."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    good = save_direction(tmp_path / "d.safetensors", torch.randn(64, generator=torch.Generator().manual_seed(0)))
    np.save(tmp_path / "d.npy", np.random.default_rng(0).normal(size=64).astype(np.float32))
    seeds = [open(good, "rb").read(), open(tmp_path / "d.npy", "rb").read()]
    target = tmp_path / "mutant"

    @settings(max_examples=300, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(st.sampled_from([0, 1]), st.lists(st.tuples(st.sampled_from("fti"), st.integers(0, 1 << 20),
                                                       st.binary(min_size=1, max_size=8)), min_size=1, max_size=4))
    def mutant_loads_or_is_refused(which, edits):
        data = bytearray(seeds[which])
        for kind, where, blob in edits:
            at = where % (len(data) + 1)
            if kind == "f" and data:
                data[at % len(data)] ^= blob[0] or 1
            elif kind == "t":
                del data[at:]
            else:
                data[at:at] = blob
        path = f"{target}{'.safetensors' if which == 0 else '.npy'}"
        with open(path, "wb") as f:
            f.write(bytes(data))
        try:
            vector, _ = load_direction(path)
        except CorruptFileError as exc:
            assert "\n" not in str(exc) and path in str(exc)
            return
        vector = torch.as_tensor(vector)
        assert vector.dim() == 1 and vector.dtype == torch.float32 and bool(torch.isfinite(vector).all())
        assert float(vector.norm()) > 0

    mutant_loads_or_is_refused()
