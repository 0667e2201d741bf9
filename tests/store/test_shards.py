"""The shard store (--activation_store shards): same records and rows as the file store, crash
safety and --resume, load_run_layer on both stores, hostile shard files refused."""
import errno
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

import hostile
from activation_eval import load_run_layer
from activation_eval.analysis import cli as analysis_cli
from activation_eval.run.distributed import CRASH_ENV
from activation_eval.schema import CONFIDENCE_FIELDS
from activation_eval.store import run_reader, run_writer, shard_writer, shards
from activation_eval.store.errors import CorruptFileError
from activation_eval.store.run_files import shard_name
from activation_eval.store.run_writer import RunWriter
from helpers import REPO_ROOT, read_rows, run_main

ROOT = REPO_ROOT
STORE_FIELDS = ("activation_file", "activation_shard", "activation_row")


def args(model, out, store, limit=12, shard_mb=None):
    # batch 1 with continuous batching and --unit_batches 8: units of 8 questions, so 12 questions make
    # 2 units; by default both go into one shard, with shard_mb=0 each into its own
    return ["--model", model, "--limit", str(limit), "--batch_size", "1", "--unit_batches", "8", "--max_new_tokens", "6",
            "--capture_activations", "--layers", "embeddings,0,-1,final_norm", "--output_dir", str(out),
            "--activation_store", store] + ([] if shard_mb is None else ["--shard_size_mb", str(shard_mb)])


def unit_shards(rows):
    """The shard names of a run written with one unit per shard: its rows' unit keys."""
    return sorted(f"{key}.safetensors" for key in {row["unit"] for row in rows})


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("stores")
    for store in ("files", "shards"):
        assert run_main(*args(tiny_dir, base / store, store)) == 0
    return base / "files", base / "shards"


def strip(rows, also=()):
    return [{k: v for k, v in row.items() if k not in STORE_FIELDS + tuple(also)} for row in rows]


def assert_same_record(a, b, runs_apart=True):
    """Equal records; two runs differ only in their timestamps (runs_apart=False: in nothing)."""
    assert list(a) == list(b)
    for key in a:
        if key == "timestamp" and runs_apart:
            assert isinstance(a[key], str) and isinstance(b[key], str)
        elif key == "activations":
            assert list(a[key]) == list(b[key])
            for name in a[key]:
                assert a[key][name].dtype == b[key][name].dtype and torch.equal(a[key][name], b[key][name])
        elif isinstance(a[key], torch.Tensor):
            assert torch.equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


def test_shard_store_gives_the_same_rows_and_records_as_the_file_store(runs):
    files, sharded = runs
    rows_f, rows_s = read_rows(files), read_rows(sharded)
    assert strip(rows_f) == strip(rows_s)
    units = sorted(os.listdir(sharded / "activations" / "units"))
    keys = list(dict.fromkeys(r["unit"] for r in sorted(rows_s, key=lambda r: r["activation_row"])))
    assert len(keys) == 2 and sorted(os.listdir(sharded / "activations")) == ["units"]
    # both units in one shard (far below --shard_size_mb), named by the digest of their keys
    name = shard_name([{"unit": k} for k in keys])
    assert units == [f"{name}.safetensors"] and len(units[0]) == len("0123456789abcdef.safetensors")
    assert {r["activation_shard"] for r in rows_s} == {f"activations/units/{units[0]}"}
    assert sorted(r["activation_row"] for r in rows_s) == list(range(12))
    lengths = set()
    for row in rows_f:
        from_file = run_reader.load_activations(files / row["activation_file"])     # the file store's reader
        assert_same_record(run_reader.load_activations(files, row["id"]), from_file, runs_apart=False)
        assert_same_record(run_reader.load_activations(sharded, row["id"]), from_file)
        lengths.add(from_file["activations"]["layer_0"].shape[0])
        part = run_reader.load_activations(sharded, question_id=row["id"], layers=["layer_0"])
        assert list(part["activations"]) == ["layer_0"]
        assert torch.equal(part["activations"]["layer_0"], from_file["activations"]["layer_0"])
    assert len(lengths) > 3                       # variable position counts per question
    with pytest.raises(KeyError, match="no-such-id"):
        run_reader.load_activations(sharded, "no-such-id")


@pytest.mark.parametrize("reduce", ["last_prompt", "mean_prompt", "last", 3, "answer_first", "answer_mean", "answer_last",
                                    "auto"])
def test_load_run_layer_is_equal_on_both_stores(runs, reduce):
    X_f, rows_f = load_run_layer(runs[0], "layer_0", reduce=reduce)
    X_s, rows_s = load_run_layer(runs[1], "layer_0", reduce=reduce)
    assert X_f.shape == (12, 64) and np.array_equal(X_f, X_s)
    assert strip(rows_f) == strip(rows_s)
    # planted check against the record itself: last_prompt is row num_prompt_tokens - 1
    if reduce == "last_prompt":
        rec = run_reader.load_activations(runs[1], rows_s[5]["id"])
        assert np.array_equal(X_s[5], rec["activations"]["layer_0"][rec["num_prompt_tokens"] - 1].numpy())


def test_analyze_directory_reads_shards_like_files(runs, capsys):
    results = []
    for run in runs:
        assert analysis_cli.main(["--directory", str(run), "--json", "--no_progress"]) == 0
        results.append(json.loads(capsys.readouterr().out))
    files_res, shards_res = results
    assert files_res["files_read"] == shards_res["files_read"] == 12 and shards_res["errors"] == []
    for name, stats in files_res["layers"].items():
        for key, value in stats.items():
            # records come in another order (shard by shard): float sums differ in the last bits
            assert shards_res["layers"][name][key] == pytest.approx(value, rel=1e-9, abs=1e-5), (name, key)


def test_a_failure_between_a_shard_and_its_rows_leaves_no_row_and_resume_completes(
        tiny_dir, runs, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real_append = run_writer.append_results
    appended = []

    def append_then_fail(path, rows):
        if appended:            # the second unit's shard is complete, its rows never come
            raise OSError(errno.ENOSPC, "No space left on device")
        appended.append(len(rows))
        real_append(path, rows)

    monkeypatch.setattr(run_writer, "append_results", append_then_fail)
    assert run_main(*args(tiny_dir, out, "shards", shard_mb=0)) == 2
    monkeypatch.setattr(run_writer, "append_results", real_append)
    rows = read_rows(out)
    assert len(rows) == appended[0] == 8                        # one whole unit, nothing of the next
    units = out / "activations" / "units"
    assert len(os.listdir(units)) == 2                          # the next unit's shard: no row names it
    for row in rows:
        run_reader.load_activations(out, row["id"])
    # a writer killed mid-shard leaves a temp file; a torn shard never gets its final name
    (units / ".deadbeefdead.safetensors.0123abcd.tmp").write_bytes(b"\x10\x00" * 100)
    assert run_main(*args(tiny_dir, out, "shards", shard_mb=0), "--resume") == 0
    assert strip(read_rows(out)) == strip(read_rows(runs[1]))
    for row in read_rows(runs[1]):
        assert_same_record(run_reader.load_activations(out, row["id"]), run_reader.load_activations(runs[1], row["id"]))
    assert sorted(os.listdir(units)) == unit_shards(read_rows(out))     # the temp file is gone


@pytest.mark.slow
def test_a_failure_after_a_grouped_shard_loses_its_units_and_resume_removes_the_orphan(
        tiny_dir, runs, tmp_path, monkeypatch, caplog):
    out = tmp_path / "run"

    def fail(path, rows):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(run_writer, "append_results", fail)
    assert run_main(*args(tiny_dir, out, "shards")) == 2
    monkeypatch.undo()
    units = out / "activations" / "units"
    assert not (out / "results.jsonl").exists()                   # no row: both units were in the buffer
    assert os.listdir(units) == os.listdir(runs[1] / "activations" / "units")   # their complete shard, unnamed
    # resumed with one unit per shard (not a setting a resume must share): other names, the orphan goes
    caplog.set_level(logging.INFO, logger="activation_eval.store.run_files")
    assert run_main(*args(tiny_dir, out, "shards", shard_mb=0), "--resume") == 0
    rows = read_rows(out)
    assert sorted(os.listdir(units)) == unit_shards(rows) and len(unit_shards(rows)) == 2
    assert "removed 1 shard(s) that no results row names" in caplog.text
    assert strip(rows) == strip(read_rows(runs[1]))
    for row in rows:
        assert_same_record(run_reader.load_activations(out, row["id"]), run_reader.load_activations(runs[1], row["id"]))


@pytest.mark.slow
def test_sigkill_mid_run_leaves_no_row_pointing_into_a_missing_shard(tiny_dir, runs, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), *args(tiny_dir, out, "shards", shard_mb=0), "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    results, deadline = out / "results.jsonl", time.time() + 120
    while proc.poll() is None and not (results.exists() and results.stat().st_size) and time.time() < deadline:
        time.sleep(0.01)                                        # until the first unit's rows are in
    time.sleep(random.Random(7).uniform(0.0, 1.0))             # somewhere in the second unit
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=120)
    for row in read_rows(out):                                  # every row's shard is whole
        run_reader.load_activations(out, row["id"])
    # the resume in this process (what the killed process left is the test; a second start cost 10-20 s)
    assert run_main(*args(tiny_dir, out, "shards", shard_mb=0), "--resume") == 0
    assert strip(read_rows(out)) == strip(read_rows(runs[1]))


@pytest.mark.slow
def test_two_processes_write_their_own_shards_and_merge_rows_like_one(tiny_dir, runs, tmp_path):
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK")}
    env.update(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "main.py",
           *args(tiny_dir, out, "shards"), "--quiet"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not (out / "shards").exists()                        # the rows' rank files were merged
    rows, reference = read_rows(out), read_rows(runs[1])
    # same units, answers, grades; the output confidence equal up to the last float bits (one thread here)
    assert strip(rows, CONFIDENCE_FIELDS) == strip(reference, CONFIDENCE_FIELDS)
    for row, ref in zip(rows, reference):
        assert [row[k] for k in CONFIDENCE_FIELDS] == pytest.approx([ref[k] for k in CONFIDENCE_FIELDS], rel=1e-4, abs=1e-5)
    # each process had one unit to answer: one shard each, named by its unit
    assert sorted(os.listdir(out / "activations" / "units")) == unit_shards(rows)
    for row in reference:                                       # (one thread here: last float bits may differ)
        a, b = run_reader.load_activations(out, row["id"]), run_reader.load_activations(runs[1], row["id"])
        for name, t in b["activations"].items():
            assert (a["activations"][name] - t).abs().max() <= 1e-5 * t.abs().max()


def test_resume_says_how_many_are_answered_and_how_many_units_are_redone(runs, tmp_path, caplog):
    out = tmp_path / "run"
    shutil.copytree(runs[0], out)
    rows = read_rows(out)
    # drop one row: its unit is answered again, whole
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:-1]))
    unit = sum(r["unit"] == rows[-1]["unit"] for r in rows)
    caplog.set_level(logging.INFO, logger="activation_eval.run.runner")
    model = json.loads((out / "run_config.json").read_text())["model"]
    assert run_main(*args(model, out, "files"), "--resume") == 0
    assert (f"resuming: 11 of 12 questions already answered; 1 unit(s) of questions ({unit} questions) will "
            f"be answered now, {unit - 1} of them again") in caplog.text
    assert strip(read_rows(out)) == strip(rows)


# ----------------------------------------------------------------------------- hostile files

def small_shard(tmp_path):
    recs = [{"prompt": f"p{i}", "input_ids": torch.arange(2 + i),
             "activations": {"layer_0": torch.full((1 + i, 4), float(i))}, "positions_kept": list(range(1 + i)),
             "num_prompt_tokens": 2 + i} for i in range(3)]
    return shard_writer.write_shard(tmp_path / "units" / "abcdef.safetensors", ["a", "b", "c"], recs), recs


def rewrite_header(path, edit):
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    edit(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    open(path, "wb").write(len(text).to_bytes(8, "little") + text + data[8 + n:])


def test_a_small_shard_round_trips_with_variable_positions(tmp_path):
    path, recs = small_shard(tmp_path)
    for row, rec in shards.iter_shard_records(path):
        assert_same_record(rec, recs[row], runs_apart=False)
    layer = shards.read_shard_layer(path, "layer_0")
    assert [layer.rows(i).shape[0] for i in range(3)] == [1, 2, 3]
    assert torch.equal(layer.rows(2), recs[2]["activations"]["layer_0"])


def test_one_record_of_a_big_shard_reads_only_its_rows(tmp_path, monkeypatch):
    g = torch.Generator().manual_seed(5)
    recs = [{"input_ids": torch.arange(2 + i % 3), "prompt": f"p{i}", "activations": {
        name: torch.randn(1 + i % 4, 32, generator=g) for name in ("embeddings", "layer_0")}} for i in range(200)]
    path = shard_writer.write_shard(tmp_path / "units" / "abcdef.safetensors", [f"q{i}" for i in range(200)], recs)
    spans = []
    real = shards._read_tensor
    monkeypatch.setattr(shards, "_read_tensor", lambda f, key, entry, *a: (
        spans.append((key, entry["data_offsets"][1] - entry["data_offsets"][0])), real(f, key, entry, *a))[1])
    for rows in ([0], [137], [199], [150, 3, 77]):
        spans.clear()
        got = dict(shards.iter_shard_records(path, rows, layers=["layer_0"]))
        assert sorted(got) == sorted(rows)
        for i in rows:                                           # against the records written
            assert torch.equal(got[i]["activations"]["layer_0"], recs[i]["activations"]["layer_0"])
            assert torch.equal(got[i]["input_ids"], recs[i]["input_ids"]) and got[i]["prompt"] == f"p{i}"
            assert list(got[i]["activations"]) == ["layer_0"]
        read = dict(spans)
        if len(rows) == 1:                                       # one question's rows: its bytes only
            assert read["act.layer_0"] == recs[rows[0]]["activations"]["layer_0"].numel() * 4
            assert read["field.input_ids"] == recs[rows[0]]["input_ids"].numel() * 8
        assert "act.embeddings" not in read


def test_a_shard_is_a_safetensors_file_that_safetensors_reads(tmp_path):
    """The streamed writer's bytes, read by the safetensors library (an independent reader)."""
    from safetensors import safe_open
    recs = [{"input_ids": torch.arange(3 + i), "activations": {
        "embeddings": torch.randn(2 + i, 8, dtype=torch.bfloat16), "layer_0": torch.randn(2 + i, 8)}}
        for i in range(4)]
    path = shard_writer.write_shard(tmp_path / "units" / "abcdef.safetensors", list("abcd"), recs)
    with safe_open(path, framework="pt") as f:
        assert torch.equal(f.get_tensor("act.embeddings"), torch.cat([r["activations"]["embeddings"] for r in recs]))
        assert torch.equal(f.get_tensor("act.layer_0"), torch.cat([r["activations"]["layer_0"] for r in recs]))
        assert torch.equal(f.get_tensor("field.input_ids"), torch.cat([r["input_ids"] for r in recs]))
        assert f.get_tensor("index.row_offsets").tolist() == [0, 2, 5, 9, 14]
        assert json.loads(f.metadata()["ids"]) == list("abcd")


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["activations"].update(layer_0=torch.zeros(2, 4, dtype=torch.float64)), "one dtype"),
    (lambda h: h["activations"].update(layer_0=torch.zeros(2, 5)), "one shape but the first dimension"),
    (lambda h: h["activations"].update(layer_0=torch.tensor(1.0)), "one shape but the first dimension"),
    (lambda h: h["activations"].update(layer_0=[[0.0] * 4] * 2), "torch tensors"),
    (lambda h: h["activations"].update(layer_1=torch.zeros(2, 4)), "same layers"),
    (lambda h: h["activations"].update(layer_0=torch.zeros(1, 4), embeddings=torch.zeros(2, 4)), "different numbers"),
    (lambda h: h.update(prompt=object()), "cannot be stored as JSON"),
])
def test_a_shard_of_mismatched_records_is_refused_and_leaves_no_file(tmp_path, edit, message):
    recs = [{"prompt": "p", "activations": {"embeddings": torch.zeros(2, 4), "layer_0": torch.ones(2, 4)}}
            for _ in range(3)]
    edit(recs[1])
    with pytest.raises((ValueError, TypeError), match=message):
        shard_writer.write_shard(tmp_path / "units" / "abcdef.safetensors", ["a", "b", "c"], recs)
    assert not (tmp_path / "units").exists() or os.listdir(tmp_path / "units") == []


@pytest.mark.parametrize("edit, message", [
    (lambda h: h["act.layer_0"].update(shape=[10 ** 12, 4]), "bad header entry"),
    (lambda h: h["act.layer_0"].update(shape="x"), "bad header entry"),
    (lambda h: h["act.layer_0"].update(data_offsets=[0, 2 ** 70]), "bad header entry"),
    (lambda h: h["act.layer_0"].update(data_offsets=[0, h["act.layer_0"]["data_offsets"][1]
                                                     - h["act.layer_0"]["data_offsets"][0]]), "overlapping or gapped"),
    (lambda h: h["__metadata__"].update(ids='["a", "a", "b"]'), "malformed ids"),
    (lambda h: h["__metadata__"].update(format="activation-record"), "no activation-shard metadata"),
    (lambda h: h["__metadata__"].update(layer_order='["layer_9"]'), "missing"),
    (lambda h: h["index.row_offsets"].update(dtype="F32"), "1-D int64|bad header entry"),
    (lambda h: h["index.positions"].update(shape=[10 ** 15]), "bad shape|bad header entry"),
    (lambda h: h.pop("records"), "the header places .* bytes of tensor data"),
    (lambda h: h["__metadata__"].pop("ids"), "KeyError"),
])
def test_hostile_shard_headers_are_refused_with_a_clear_error(tmp_path, edit, message):
    path, _ = small_shard(tmp_path)
    rewrite_header(path, edit)
    with pytest.raises(CorruptFileError, match=message) as info:
        list(shards.iter_shard_records(path))
    assert str(info.value).endswith(str(path))


def test_hostile_offsets_and_truncated_shards_are_refused(tmp_path):
    path, _ = small_shard(tmp_path)
    data = bytearray(open(path, "rb").read())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    start = 8 + n + header["index.row_offsets"]["data_offsets"][0]
    bad = bytearray(data)
    bad[start + 8:start + 16] = (10 ** 9).to_bytes(8, "little")        # offsets past the rows
    open(path, "wb").write(bad)
    with pytest.raises(CorruptFileError, match="row_offsets"):
        shards.read_shard_layer(path, "layer_0")
    open(path, "wb").write(data[:-5])                                   # torn tail
    with pytest.raises(CorruptFileError, match="truncated"):
        shards.read_shard_layer(path, "layer_0")


@pytest.mark.parametrize("offsets, message", [
    ([0, 10, 5, 30], "record_offsets is not 4 non-decreasing"),     # a record ending before it starts
    ([0, 10, 20, 10 ** 6], "record_offsets ends at 1000000"),        # past the records' bytes
    ([0, 0, 20, None], "records: "),                                  # a record with no JSON at all
    ([0, 7, 20, None], "records: "),                                  # slices that are not JSON objects
])
def test_hostile_record_offsets_are_refused(tmp_path, offsets, message):
    path, _ = small_shard(tmp_path)
    data = bytearray(open(path, "rb").read())
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    start = 8 + n + header["index.record_offsets"]["data_offsets"][0]
    offsets[-1] = offsets[-1] if offsets[-1] is not None else header["records"]["shape"][0]
    data[start:start + 32] = b"".join(o.to_bytes(8, "little") for o in offsets)
    open(path, "wb").write(data)
    with pytest.raises(CorruptFileError, match=message):
        shards.load_shard_record(path, 1)


def test_format_1_shards_are_still_read(tmp_path):
    """A shard as version 1 wrote it (every record's fields in one JSON array, no record offsets),
    written by the safetensors library itself."""
    _, recs = small_shard(tmp_path)
    path = hostile.write_format_1_shard(str(tmp_path / "v1.safetensors"), ["a", "b", "c"], recs)
    for row, rec in shards.iter_shard_records(path):
        assert_same_record(rec, recs[row], runs_apart=False)
    assert_same_record(shards.load_shard_record(path, 2), recs[2], runs_apart=False)
    assert torch.equal(shards.read_shard_layer(path, "layer_0").rows(1), recs[1]["activations"]["layer_0"])


def test_hostile_shard_gives_one_error_line_in_the_analysis_cli(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs[1], run)
    shard = run / read_rows(run)[0]["activation_shard"]
    shard.write_bytes(b"\xff" * 64)
    assert analysis_cli.main(["--probe", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and str(shard) in err


# ----------------------------------------------------------------------------- --export_hf

@pytest.mark.parametrize("store", [0, 1])
def test_export_hf_loads_with_datasets_and_holds_the_run_values(runs, tmp_path, capsys, store):
    import datasets
    out = tmp_path / "export"
    code = analysis_cli.main(["--export_hf", str(runs[store]), str(out), "--layers", "layer_0,final_norm",
                              "--reduce", "mean_prompt"])
    assert code == 0 and "exported 12 questions" in capsys.readouterr().out
    ds = datasets.load_from_disk(str(out))
    assert ds.column_names == ["id", "correct", "category", "layer_0", "final_norm"] and len(ds) == 12
    rows = read_rows(runs[0])
    assert ds["id"] == [r["id"] for r in rows] and ds["correct"] == [r["correct"] for r in rows]
    assert ds["category"] == [r["category"] for r in rows]
    arrays = ds.with_format("numpy")
    for i, row in enumerate(rows):                   # against each record, reduced by hand
        rec = run_reader.load_activations(runs[0] / row["activation_file"])
        for name in ("layer_0", "final_norm"):
            expected = rec["activations"][name][: rec["num_prompt_tokens"]].mean(dim=0).numpy()
            np.testing.assert_allclose(arrays[name][i], expected, rtol=1e-6, atol=1e-7)
    # a second export into the same folder is refused; nothing is changed
    assert analysis_cli.main(["--export_hf", str(runs[store]), str(out)]) == 2
    assert "exists" in capsys.readouterr().err
    assert len(datasets.load_from_disk(str(out))) == 12


# ----------------------------------------------------------------------------- grouping units into shards

def buffered_record(rows_kept):
    return {"prompt": "p", "activations": {"layer_0": torch.zeros(rows_kept, 256)}, "positions_kept": list(range(rows_kept))}


def test_units_are_grouped_until_the_target_size_and_never_split(tmp_path, monkeypatch):
    # each question keeps 4 rows of 256 float32 = 4 KiB; a unit of 3 questions 12 KiB; target 20 KiB
    buffer, written = RunWriter(tmp_path, "main", store="shards", shard_bytes=20 * 1024), []
    for u, key in enumerate(["aaaaaa000001", "aaaaaa000002", "aaaaaa000003"]):
        for q in range(3):
            buffer.add({"id": f"u{u}q{q}", "unit": key}, buffered_record(4))
        if buffer.full():
            written.append(buffer.flush())
    assert not buffer.full()                              # 12 KiB held after the second flush point
    written.append(buffer.flush())
    assert [len(rows) for rows in written] == [6, 3]     # two units (24 KiB >= 20) then the last one
    first, last = written
    first_shard = shard_name([{"unit": "aaaaaa000001"}, {"unit": "aaaaaa000002"}])
    assert {r["activation_shard"] for r in first} == {f"activations/units/{first_shard}.safetensors"}
    assert {r["activation_shard"] for r in last} == {"activations/units/aaaaaa000003.safetensors"}
    assert [r["activation_row"] for r in first] == list(range(6)) and [r["unit"] for r in first][2:4] == \
        ["aaaaaa000001", "aaaaaa000002"]
    for rows in written:
        path = tmp_path / rows[0]["activation_shard"]
        assert shards.read_shard_index(path).ids == [r["id"] for r in rows]
    assert not buffer.pending() and buffer.flush() == []


def test_a_unit_waits_at_most_ten_minutes_for_its_shard(tmp_path, monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(run_writer.time, "monotonic", lambda: now[0])
    buffer = RunWriter(tmp_path, "main", store="shards")
    assert not buffer.full()                              # empty: nothing to write
    buffer.add({"id": "a", "unit": "bbbbbb000001"}, buffered_record(1))
    now[0] += run_writer.SHARD_MAX_SECONDS - 1
    assert not buffer.full()                              # 1 KiB, far below 256 MB, and not yet old
    now[0] += 1
    assert buffer.full()


def test_shard_size_mb_must_be_a_size(tmp_path):
    from activation_eval.run.config import RunConfig, RunError
    for bad in (-1, float("nan"), float("inf")):
        with pytest.raises(RunError, match="--shard_size_mb must be a number of MB >= 0"):
            RunConfig(output_dir=str(tmp_path), shard_size_mb=bad)


@pytest.mark.slow
def test_a_crash_between_units_of_one_shard_loses_only_unwritten_units(tiny_dir, runs, tmp_path):
    """A process that dies after its first unit, whose records wait in the buffer, leaves no row
    and no shard; --resume answers everything and gives the reference run."""
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), *args(tiny_dir, out, "shards"), "--quiet"]
    env = {**os.environ, CRASH_ENV: "0:1"}
    assert subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True).returncode == 3
    assert not (out / "results.jsonl").exists() and os.listdir(out / "activations") == []
    assert run_main(*args(tiny_dir, out, "shards"), "--resume") == 0     # in this process: the crashed one is the test
    assert strip(read_rows(out)) == strip(read_rows(runs[1]))
    assert os.listdir(out / "activations" / "units") == os.listdir(runs[1] / "activations" / "units")


def test_many_shards_are_read_concurrently_in_order(tmp_path):
    g = torch.Generator().manual_seed(2)
    paths, expected = [], []
    for k in range(5):
        recs = [{"activations": {"layer_0": torch.randn(1 + i, 8, generator=g)}, "positions_kept": list(range(1 + i))}
                for i in range(3)]
        paths.append(shard_writer.write_shard(tmp_path / "units" / f"abcde{k}.safetensors", [f"{k}-{i}" for i in range(3)], recs))
        expected.append(torch.cat([r["activations"]["layer_0"] for r in recs]))
    got = shards.read_shard_layers(paths, "layer_0")
    assert [layer.index.path for layer in got] == paths
    assert all(torch.equal(layer.tensor, want) for layer, want in zip(got, expected))
    with open(paths[3], "r+b") as f:                   # one torn shard: its error, naming it
        f.truncate(os.path.getsize(paths[3]) - 3)
    with pytest.raises(CorruptFileError, match=f"{paths[3]}$"):
        shards.read_shard_layers(paths, "layer_0")


@pytest.mark.parametrize("reduce", ["last_prompt", "mean_prompt"])
def test_load_run_layer_over_several_shards_equals_the_file_store(tiny_dir, runs, tmp_path, reduce):
    out = tmp_path / "run"
    assert run_main(*args(tiny_dir, out, "shards", shard_mb=0)) == 0
    assert len(os.listdir(out / "activations" / "units")) == 2
    X_f, rows_f = load_run_layer(runs[0], "layer_0", reduce=reduce)
    X_s, rows_s = load_run_layer(out, "layer_0", reduce=reduce)
    assert np.array_equal(X_f, X_s) and strip(rows_f) == strip(rows_s)


def test_only_the_runs_own_activations_folder_is_cleaned_of_unnamed_shards(tmp_path):
    from activation_eval.store.run_files import remove_unreferenced_shards
    run, shared = tmp_path / "run", tmp_path / "shared_acts"
    a, b = "aaaaaaaaaaaa.safetensors", "bbbbbbbbbbbb.safetensors"      # unit-key names
    for folder in (run / "activations" / "units", shared / "units"):
        for name in (a, b):
            shard_writer.write_shard(folder / name, ["q"], [hostile.record()])
    rows = [{"id": "q", "activation_shard": f"activations/units/{a}", "activation_row": 0}]
    assert remove_unreferenced_shards(run, shared, rows) == 0            # another folder: maybe other runs'
    assert sorted(os.listdir(shared / "units")) == [a, b]
    assert remove_unreferenced_shards(run, run / "activations", rows) == 1
    assert os.listdir(run / "activations" / "units") == [a]


def test_without_capture_the_shard_store_writes_each_row_at_once(tiny_dir, tmp_path, monkeypatch):
    out, seen = tmp_path / "run", []
    real_append = run_writer.append_results
    monkeypatch.setattr(run_writer, "append_results", lambda path, rows: (seen.append(len(rows)), real_append(path, rows)))
    cli = [a for a in args(tiny_dir, out, "shards", limit=4) if a != "--capture_activations"]
    assert run_main(*cli) == 0
    assert seen == [1, 1, 1, 1] and len(read_rows(out)) == 4            # not held for a shard that never comes
    assert not (out / "activations").exists()
