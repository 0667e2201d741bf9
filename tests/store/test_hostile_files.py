"""Hostile record files (issue 12): every attack class is refused with one error naming the file,
the attacks are real (plain pickle crashes or expands on them), loading stays small, only
regular files are opened, a --directory scan skips bad files and goes on, valid files of every
earlier format still load."""
import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import analyze_activations as aa
from activation_eval.store.errors import CorruptFileError, UnsafeFileError
from activation_eval.store.records import save_activations
from activation_eval.store.run_reader import load_activations
from activation_eval.store.safe_pickle import safe_load
from helpers import REPO_ROOT
from hostile import attacks, record, valid_files, write_attacks

ROOT = REPO_ROOT
TESTS = os.path.join(ROOT, "tests")

# the reason each refusal must give (the attack class, in the words of the message)
REASONS = {
    "object dtype scalar": "numpy dtype 'O8'",
    "object dtype array": "numpy dtype 'O8'",
    "altered numeric dtype state": "dtype state other than float64's own",
    "array rebuilt after from_numpy": r"state of a ndarray \(pickle BUILD\)",
    "second BUILD of a placeholder": "second BUILD",
    "deep tuple dict key": "nesting deeper than 100",
    "deep tuple set member": "nesting deeper than 100",
    "deep tuple frozenset member": "nesting deeper than 100",
    "deep list": "nesting deeper than 100",
    "list containing itself": "contains itself",
    "void scalar of 2 GB": "numpy dtype 'V2000000000'",
    "void array of 10**12 elements": "numpy dtype 'V0'",
    "void frombuffer of 10**12 elements": "numpy dtype 'V0'",
    "stride-0 tensor": r"stride \(0, 0\) is not dense",
    "overlapping strides": r"stride \(1, 1\) is not dense",
    "huge zero-size shape": "bad shape",
    "shared nested lists": "more than 1000000 objects",
    "one tensor under many names": "decodes to more than",
    "bool bytes other than 0 and 1": "bool bytes other than 0 and 1",
    "activation that is not a tensor": "'x' is a str, not a tensor",
    "shape 2**63 x 2**63 x 0": r"bad shape \[9223372036854775808",
    "key_order a string": "'key_order' is not a JSON list",
    "layer_order an object": "'layer_order' is not a JSON list",
    "record a list": "'record' is not a JSON object",
    "tensor_fields not JSON": "JSONDecodeError",
    "record nested 500 deep": "nesting deeper than 100",
    "overlapping tensors": "overlapping or gapped",
    "extra entry field": "bad header entry",
}


@pytest.fixture(scope="module")
def hostile_paths(tmp_path_factory):
    return write_attacks(tmp_path_factory.mktemp("hostile"))


def test_every_attack_has_a_reason():
    assert set(REASONS) == set(attacks())


@pytest.mark.parametrize("name", sorted(REASONS))
def test_attack_is_refused_with_one_error_naming_the_file(hostile_paths, name):
    path = hostile_paths[name]
    for layers in (None, ["layer_0"]):
        with pytest.raises((CorruptFileError, UnsafeFileError), match=REASONS[name]) as info:
            load_activations(path, layers=layers)
        assert str(info.value).endswith(path) and "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["object dtype scalar", "object dtype array",
                                  "deep tuple dict key", "deep tuple set member"])
def test_attacks_crash_plain_pickle(hostile_paths, name):
    """Control: the same bytes kill a process that uses plain pickle (SIGSEGV), so the refusals
    above are what keeps an analysis alive."""
    code = ("import pickle, sys; x = pickle.loads(open(sys.argv[1], 'rb').read()); "
            "print(repr(x)[:20])")
    done = subprocess.run([sys.executable, "-c", code, hostile_paths[name]], capture_output=True,
                          timeout=120)
    assert done.returncode < 0, (done.returncode, done.stderr[-300:])


def test_amplification_attacks_are_live_under_plain_pickle(hostile_paths):
    """Control: plain pickle turns a 483-byte file into a virtual 10**6 x 576 tensor (2.3 GB
    once an analysis materialises it) and a few hundred bytes into a 10**12-leaf list."""
    data = open(hostile_paths["stride-0 tensor"], "rb").read()
    assert len(data) < 1000
    assert pickle.loads(data)["activations"]["x"].shape == (10 ** 6, 576)
    shared = pickle.loads(open(hostile_paths["shared nested lists"], "rb").read())["input_ids"]
    depth, width = 0, 1
    while isinstance(shared, list):
        depth, width, shared = depth + 1, width * len(shared), shared[0]
    assert width == 10 ** 12


MEMORY_SCRIPT = """
import json, sys
from fuzz_harness import peak_rss_mb
from activation_eval.store.run_reader import load_activations
before = peak_rss_mb() * 1024
errors = {}
for path in sys.argv[1:]:
    try:
        load_activations(path)
        errors[path] = None
    except ValueError as e:
        errors[path] = type(e).__name__
print(json.dumps({"before_kb": before, "peak_kb": peak_rss_mb() * 1024,
                  "errors": errors}))
"""


def test_loading_every_hostile_file_stays_small(hostile_paths):
    """Peak RSS (VmHWM: its own, not pytest's at fork) of one process loading every hostile
    file: far under 1 GB, no ulimit."""
    done = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, *hostile_paths.values()],
                          capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, TESTS])})
    assert done.returncode == 0, done.stderr[-2000:]
    res = json.loads(done.stdout)
    assert all(res["errors"].values()), res["errors"]          # every file refused
    assert res["peak_kb"] < 1024 * 1024                          # under 1 GB in all
    assert res["peak_kb"] - res["before_kb"] < 200 * 1024        # loading added < 200 MB


# ----------------------------------------------------------------------------- regular files

def test_only_regular_files_are_opened(tmp_path, capsys):
    good = save_activations(record(), tmp_path / "good.pkl")
    os.symlink("/dev/zero", tmp_path / "zero.pkl")
    os.symlink("/dev/zero", tmp_path / "zero.safetensors")
    os.mkdir(tmp_path / "folder.pkl")
    os.symlink(good, tmp_path / "link.pkl")
    for name, kind in [("zero.pkl", "a device"), ("zero.safetensors", "a device"),
                       ("folder.pkl", "a folder")]:
        with pytest.raises(CorruptFileError, match=f"{kind}: only regular files are read.*{name}$"):
            load_activations(tmp_path / name)
    assert torch.equal(load_activations(tmp_path / "link.pkl")["activations"]["layer_0"],
                       record()["activations"]["layer_0"])      # a link to a file is fine
    with open("/dev/zero", "rb") as f, pytest.raises(CorruptFileError, match="regular"):
        safe_load(f)
    assert aa.main(["--file", str(tmp_path / "zero.pkl")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "zero.pkl" in err


@pytest.mark.parametrize("ext", ["pkl", "safetensors"])
def test_a_fifo_does_not_hang(tmp_path, ext):
    """An ordinary open() of a FIFO waits for a writer forever: the CLI must answer at once."""
    fifo = tmp_path / f"pipe.{ext}"
    os.mkfifo(fifo)
    done = subprocess.run([sys.executable, "analyze_activations.py", "--file", str(fifo)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": ROOT})
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1
    assert "a FIFO" in done.stderr and str(fifo) in done.stderr


# ----------------------------------------------------------------------------- directory scans

def test_directory_scan_skips_hostile_files_and_goes_on(tmp_path, hostile_paths, capsys):
    goods = [record(seed=i) for i in range(3)]
    for i, rec in enumerate(goods):
        save_activations(rec, tmp_path / f"good{i}.{'pkl' if i % 2 else 'safetensors'}")
    bad = ["object dtype array", "deep tuple dict key", "void scalar of 2 GB",
           "shape 2**63 x 2**63 x 0", "key_order a string", "stride-0 tensor"]
    for name in bad:
        os.symlink(hostile_paths[name], tmp_path / os.path.basename(hostile_paths[name]))
    os.symlink("/dev/zero", tmp_path / "zero.pkl")    # not files: the folder listing (run_folder)
    os.mkfifo(tmp_path / "pipe.pkl")                  # passes over them, nothing hangs
    assert aa.main(["--directory", str(tmp_path), "--json", "--no_progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["files_found"] == 3 + len(bad) and res["files_read"] == 3
    assert res["skipped"] == len(bad) == len(res["errors"])
    assert {e["file"] for e in res["errors"]} == {os.path.basename(hostile_paths[n]) for n in bad}
    for e in res["errors"]:
        assert e["error"].endswith(e["file"])                   # each error names its file
    # the aggregates are those of the good files alone (numpy on the records themselves)
    a = np.concatenate([r["activations"]["layer_1"].double().numpy() for r in goods])
    assert res["layers"]["layer_1"]["mean"] == pytest.approx(a.mean())
    assert res["layers"]["layer_1"]["files"] == 3
    assert aa.main(["--directory", str(tmp_path), "--no_progress"]) == 0
    out = capsys.readouterr().out
    assert f"3 read of {3 + len(bad)} found, {len(bad)} skipped" in out
    assert "skipped object_dtype_array.pkl: corrupt or unreadable" in out


def test_a_file_failing_half_way_adds_nothing(tmp_path, capsys):
    """A record whose second layer cannot be analysed (rows of shape (3, 0): no hidden axis to
    reshape to) must not leave its first layer in the aggregates, nor end the scan."""
    good = record(seed=1)
    save_activations(good, tmp_path / "good.pkl")
    odd = record(seed=2)
    odd["activations"] = {"embeddings": odd["activations"]["embeddings"],
                          "layer_0": torch.zeros(6, 3, 0)}
    save_activations(odd, tmp_path / "odd.pkl")
    assert aa.main(["--directory", str(tmp_path), "--json", "--no_progress"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["files_read"] == 1 and res["skipped"] == 1 and res["errors"][0]["file"] == "odd.pkl"
    emb = good["activations"]["embeddings"].double().numpy()
    assert res["layers"]["embeddings"]["files"] == 1
    assert res["layers"]["embeddings"]["mean"] == pytest.approx(emb.mean())


# ----------------------------------------------------------------------------- safetensors metadata

def _with_metadata(path, out, **meta):
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    for key, value in meta.items():
        if value is None:
            del header["__metadata__"][key]
        else:
            header["__metadata__"][key] = value
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    out.write_bytes(len(text).to_bytes(8, "little") + text + data[8 + n:])
    return out


@pytest.mark.parametrize("field", ["record", "key_order", "tensor_fields", "layer_order"])
@pytest.mark.parametrize("bad", [None, "[", '"activations"', "7", "null", '{"a": 1}', "[1, 2]"])
def test_every_wrong_metadata_type_is_refused(tmp_path, field, bad):
    good = save_activations(record(), tmp_path / "good.safetensors")
    if field == "record" and bad == '{"a": 1}':
        bad = "[]"                                 # an object is right for "record"
    path = _with_metadata(good, tmp_path / "bad.safetensors", **{field: bad})
    for layers in (None, ["layer_0"]):
        with pytest.raises(CorruptFileError, match=r"bad\.safetensors$"):
            load_activations(path, layers=layers)


def test_key_order_must_list_exactly_the_records_fields(tmp_path):
    good = save_activations(record(), tmp_path / "good.safetensors")
    order = list(record())
    for bad in (order[:-1], order + ["extra"], [k for k in order if k != "activations"]):
        path = _with_metadata(good, tmp_path / "bad.safetensors", key_order=json.dumps(bad))
        with pytest.raises(CorruptFileError, match="key_order does not list exactly"):
            load_activations(path)


# ----------------------------------------------------------------------------- still loads

def test_valid_files_of_every_earlier_format_still_load(tmp_path):
    want = record()
    for name, path in valid_files(tmp_path).items():
        got = load_activations(path)
        for layer, t in want["activations"].items():
            assert got["activations"][layer].dtype == t.dtype, (name, layer)
            assert torch.equal(got["activations"][layer], t), (name, layer)
        assert torch.equal(got["input_ids"], want["input_ids"]), name
    extra = load_activations(tmp_path / "numpy_p2.pkl")["extra"]
    base = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_array_equal(extra["k"], base.transpose(1, 0, 2))
    np.testing.assert_array_equal(extra["c"], np.arange(6.0)[::2])
    assert extra["s"] == np.int16(3) and extra["s"].dtype == np.int16
    assert extra["k"].flags.writeable


def test_plain_pickles_of_dense_views_load_and_strided_views_are_refused(tmp_path):
    """torch pickles a view with its whole storage, offset and strides: dense views (offset,
    permuted axes, 0-d, empty) are rebuilt from the storage bytes; a view with gaps is not a
    layout records hold and is refused with a clear reason."""
    big = torch.arange(60.0).reshape(6, 10)
    views = {"offset": big[2:], "transposed": big.t(), "row": big[3], "scalar": big[1, 2],
             "empty": big[:0], "bool": big > 30, "permuted": big.reshape(2, 3, 10).permute(2, 0, 1)}
    path = tmp_path / "views.pkl"
    path.write_bytes(pickle.dumps({"activations": views}, protocol=2))
    got = load_activations(path)["activations"]
    for name, view in views.items():
        assert got[name].shape == view.shape and torch.equal(got[name], view), name
    path.write_bytes(pickle.dumps({"activations": {"gaps": big[:, ::2]}}, protocol=2))
    with pytest.raises(CorruptFileError, match="is not dense.*views.pkl$"):
        load_activations(path)


@pytest.mark.parametrize("name", ["object dtype scalar", "deep tuple dict key",
                                  "shape 2**63 x 2**63 x 0"])
def test_cli_prints_one_line_for_hostile_files(hostile_paths, name, capsys):
    assert aa.main(["--file", hostile_paths[name]]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and err.count("\n") == 1
    assert err.rstrip().endswith(hostile_paths[name])
