"""Hostile files and unlucky runs, round 4 (issue 29, items 2-4, the store and analysis side): every size
a .safetensors record or shard and an Arrow stream declares is checked against the bytes the file holds
before anything is allocated from it (tracemalloc and pyarrow's memory pool are the references for what
was allocated); a write error names the file being written; two runs of different hidden sizes are one
line naming both runs and both shapes; the two-run fuzzer's verdicts (tests/fuzz_analysis.py) are right
on hand-made outcomes, and a short seeded run of it finds nothing."""
import glob
import json
import os
import struct
import subprocess
import sys
import tracemalloc

import pyarrow as pa
import pytest

import analyze_activations as aa
import fuzz_analysis
import hostile
from activation_eval.eval.benchmark import BenchmarkError, load_benchmark
from activation_eval.store import atomic
from activation_eval.store.errors import CorruptFileError
from activation_eval.store.records import load_record_file, save_activations
from activation_eval.store.shard_writer import write_shard
from activation_eval.store.shards import iter_shard_records
from helpers import REPO_ROOT


def _one_error_line(capsys, argv):
    code = aa.main([*map(str, argv), "--quiet"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err and err.count("\n") == 1 and err.startswith("error: "), err[-2000:]
    assert len(err) < 500
    return err


# ----------------------------------------------------------------------------- safetensors: declared sizes

def _rewrite(path, out, edit=None, length=None):
    """The .safetensors at `path` with its header JSON edited by edit(header) and/or its declared header
    length replaced (the data bytes kept)."""
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    if edit:
        edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    declared = len(text) if length is None else length
    out.write_bytes(declared.to_bytes(8, "little") + text + data[8 + n:])
    return str(out)


def _first_tensor(header):
    return header[next(k for k in header if k != "__metadata__")]


LIES = {
    "header length past the file": dict(length=2 ** 40),
    "header length of 2^63": dict(length=2 ** 63),
    "a shape bigger than its bytes": dict(edit=lambda h: _first_tensor(h).update(shape=[2 ** 20, 2 ** 20])),
    "a span past the file's end": dict(edit=lambda h: _first_tensor(h).update(
        data_offsets=[_first_tensor(h)["data_offsets"][0], _first_tensor(h)["data_offsets"][0] + 2 ** 40],
        shape=[2 ** 38], dtype="F32")),
    "a zero-size tensor of huge dims": dict(edit=lambda h: _first_tensor(h).update(
        shape=[0, 2 ** 62], data_offsets=[_first_tensor(h)["data_offsets"][0]] * 2)),
}


@pytest.mark.parametrize("lie", sorted(LIES))
@pytest.mark.parametrize("kind", ["record", "shard"])
def test_declared_safetensors_sizes_are_checked_before_allocation(tmp_path, lie, kind):
    if kind == "record":
        good = save_activations(hostile.record(), tmp_path / "good.safetensors")
        read = load_record_file
    else:
        good = write_shard(tmp_path / "units" / "abcdef.safetensors", ["q1"], [hostile.record()])
        read = lambda p: list(iter_shard_records(p))          # noqa: E731
    bad = _rewrite(good, tmp_path / f"bad-{kind}.safetensors", **LIES[lie])
    tracemalloc.start()
    try:
        with pytest.raises(CorruptFileError) as e:
            read(bad)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(e.value).endswith(bad) and str(e.value).count("\n") == 0 and len(str(e.value)) < 600
    assert peak < 4 << 20, f"{peak:,} bytes allocated before refusing"


# ----------------------------------------------------------------------------- Arrow IPC: declared sizes

def _arrow_folder_with_body_length(path, body_length):
    """A save_to_disk folder whose record batch message declares `body_length` bytes of body (the int64
    bodyLength of the Message flatbuffer, found as the true length's 8 bytes)."""
    import datasets
    folder = os.fspath(path)
    datasets.Dataset.from_dict({"question": ["What?"] * 4, "answer": ["x"] * 4}).save_to_disk(folder)
    arrow = glob.glob(os.path.join(folder, "*.arrow"))[0]
    data = bytearray(open(arrow, "rb").read())
    reader = pa.ipc.MessageReader.open_stream(pa.BufferReader(bytes(data)))
    reader.read_next_message()                                      # the schema
    batch = reader.read_next_message()
    true = struct.pack("<q", batch.body.size)
    at = data.find(true, 8 + data.find(b"\xff\xff\xff\xff", 8))     # after the second message's marker
    assert at > 0
    data[at:at + 8] = struct.pack("<q", body_length)
    open(arrow, "wb").write(data)
    return folder


@pytest.mark.parametrize("body_length", [2 ** 40, 2 ** 62])
def test_an_arrow_message_body_longer_than_the_file_is_refused(tmp_path, body_length):
    folder = _arrow_folder_with_body_length(tmp_path / "ds", body_length)
    before = pa.default_memory_pool().max_memory()
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(folder)
    assert str(e.value).startswith(f"{folder}: ") and str(e.value).count("\n") == 0 and len(str(e.value)) < 600
    assert pa.default_memory_pool().max_memory() - before < 1 << 20


# ----------------------------------------------------------------------------- messages through the CLI

@pytest.mark.slow
def test_a_report_that_cannot_be_written_names_the_html_file(tmp_path, capsys, monkeypatch):
    """Before: "could not write activation record". The folder is made read-only, or (as root, which
    ignores modes) the rename that publishes the file is refused as the kernel would refuse it."""
    run = hostile.write_run(tmp_path / "run", "files", n=16)
    out = tmp_path / "ro"
    out.mkdir()
    if os.geteuid() == 0:
        def deny(*a, **k):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(atomic.os, "replace", deny)
    else:
        out.chmod(0o555)
    err = _one_error_line(capsys, ["--report", run, "--output", out / "report.html"])
    assert "could not write report.html" in err and err.rstrip().endswith(str(out / "report.html"))
    assert "activation record" not in err


def test_hidden_sizes_that_differ_name_both_runs_and_both_shapes(tmp_path, capsys):
    small = hostile.write_run(tmp_path / "small-run", "files", n=16, hidden=8)
    wide = hostile.write_run(tmp_path / "wide-run", "shards", n=16, hidden=24)
    err = _one_error_line(capsys, ["--probe", small, "--test_run", wide, "--keep_overlap", "--cv_seeds", 1,
                                   "--bootstrap", 1000, "--output_dir", tmp_path / "plots"])
    assert "'small-run'" in err and "'wide-run'" in err and "(16, 8)" in err and "(16, 24)" in err
    assert "StandardScaler" not in err


# ----------------------------------------------------------------------------- the two-run fuzzer

class _FakeCli:
    def __init__(self, code=0, err="", exc=None):
        self.code, self.err, self.exc = code, err, exc

    def main(self, argv):
        sys.stderr.write(self.err)
        if self.exc:
            raise self.exc
        return self.code


@pytest.mark.parametrize("fake, verdict", [
    (_FakeCli(0, "a warning\n"), "ok"),
    (_FakeCli(2, "note: x\nerror: the run 'a' has no rows\n"), "refused"),
    (_FakeCli(2, "error: one\nerror: two\n"), "bug"),
    (_FakeCli(2, "error: " + "x" * 600 + "\n"), "bug"),
    (_FakeCli(1, "Traceback (most recent call last):\nValueError: x\n"), "bug"),
    (_FakeCli(0, "warning: " + "y" * 1200 + "\n"), "bug"),
    (_FakeCli(2, "error: x\nmore text after\n"), "bug"),
    (_FakeCli(exc=ValueError("raw")), "bug")])
def test_the_fuzzer_judges_each_outcome(fake, verdict):
    outcome = fuzz_analysis._run_mode(fake, [])
    assert (outcome[0] if isinstance(outcome, tuple) else outcome) == verdict


@pytest.mark.slow
def test_a_short_seeded_two_run_fuzz_finds_nothing(tmp_path):
    """Seed runs of main.py's writer (both stores; --producers main: the lm-eval and Inspect seed runs cost a
    minute of evaluations, the 5-minute runs in PERF.md keep them), every pair of them as is, then 6 mutated
    cases (seed 0)."""
    done = subprocess.run([sys.executable, os.path.join(REPO_ROOT, "tests", "fuzz_analysis.py"), "--cases", "6",
                           "--seconds", "600", "--seed", "0", "--out", str(tmp_path / "findings"),
                           "--seed_dir", str(tmp_path / "seeds"), "--producers", "main"],
                          capture_output=True, text=True, timeout=900,
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": REPO_ROOT, "OMP_NUM_THREADS": "1"})
    assert done.stdout.lstrip().startswith("{"), done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report["findings"] == [] and done.returncode == 0
    assert report["runs"] == ["main-files", "main-shards"]
    assert report["executions"] == 4 + 6 and report["outcomes"].get("ok", 0) > 0
    assert 0 < report["peak_rss_mb"] < 1024


def test_fuzzer_modes_cover_the_two_run_flags(tmp_path):
    run = hostile.write_run(tmp_path / "r", "files", n=4)
    modes = dict(fuzz_analysis._modes(run, run, str(tmp_path / "p")))
    assert "--test_run" in modes["test_run"] and "--transfer" in modes["transfer"]
    assert modes["compare"][:1] == ["--compare"] and all(os.path.isfile(f) for f in modes["compare"][1:3])
