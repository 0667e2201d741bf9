"""Several processes (torchrun, gloo on CPU): same rows and records as one process, a dying process,
resume across world sizes, shard merging, --device_map auto, --max_memory parsing."""
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from activation_eval.run import distributed, plan, runner
from activation_eval.run.config import RunConfig, RunError
from activation_eval.store import run_files, run_reader
from activation_eval.store.run_writer import RunWriter
from helpers import REPO_ROOT, read_rows, run_main

ROOT = REPO_ROOT
TORCHRUN = [os.path.join(os.path.dirname(sys.executable), "torchrun")]   # the command users type
if not os.path.isfile(TORCHRUN[0]):
    TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]             # what that script runs
TIMING = ("wall_time_s", "questions_per_second", "processes", "answered_this_run", "output_dir", "activation_dir")


LIMIT = 40      # units of --batch_size 2 questions: 20 of them, shared by both processes


def args_for(model, out, limit=LIMIT):
    return ["--model", model, "--limit", str(limit), "--batch_size", "2", "--max_new_tokens", "6",
            "--capture_activations", "--layers", "embeddings,0,-1", "--output_dir", str(out)]


def launch(args, processes=1, extra_env=None, timeout=120):
    """main.py as its own process(es): python for one, torchrun for several (gloo on CPU)."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", distributed.CRASH_ENV)}
    env.update({"OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(extra_env or {})})
    if processes == 1:
        cmd = [sys.executable, "main.py"]
    else:
        cmd = [*TORCHRUN, "--standalone", "--nproc_per_node", str(processes), "main.py"]
    return run_group(cmd + [*map(str, args), "--quiet"], env, timeout)


def run_group(cmd, env, timeout, cwd=ROOT):
    """subprocess.run, but a timeout kills the whole process group: torchrun's workers are not left behind."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def records(folder):
    """{id: record} of a run, with the fields that differ between runs (timestamps) dropped."""
    out = {}
    for row in read_rows(folder):
        rec = run_reader.load_activations(os.path.join(folder, row["activation_file"]))
        rec.pop("timestamp")
        out[row["id"]] = rec
    return out


def assert_same_run(reference, other):
    rows = read_rows(other)
    assert rows == read_rows(reference)                              # benchmark order, every field
    ref_recs, recs = records(reference), records(other)
    assert ref_recs.keys() == recs.keys()
    for qid, ref in ref_recs.items():
        rec = recs[qid]
        assert rec.keys() == ref.keys()
        for key, value in ref.items():
            if key == "activations":
                assert value.keys() == rec[key].keys()
                for name, tensor in value.items():
                    assert torch.equal(tensor, rec[key][name]), (qid, name)
            elif isinstance(value, torch.Tensor):
                assert torch.equal(value, rec[key]), (qid, key)
            else:
                assert value == rec[key], (qid, key)
    ref_summary, summary = ({k: v for k, v in json.loads((folder / "summary.json").read_text()).items()
                             if k not in TIMING} for folder in (reference, other))
    assert summary == ref_summary                                    # counts, accuracy, per category
    assert not (other / "shards").exists()
    assert not [n for n in os.listdir(other / "activations") if n.startswith(".")]   # no temp files


@pytest.fixture(scope="module")
def one_process(tiny_dir, tmp_path_factory):
    """The reference: one process, started like the torchrun ones (own process, one thread)."""
    out = tmp_path_factory.mktemp("one") / "run"
    done = launch(args_for(tiny_dir, out))
    assert done.returncode == 0, done.stderr
    return out


# ----------------------------------------------------------------------------- torchrun end to end

@pytest.mark.slow
def test_two_processes_give_the_same_rows_and_records_as_one(tiny_dir, one_process, tmp_path):
    out = tmp_path / "run"
    done = launch(args_for(tiny_dir, out), processes=2)
    assert done.returncode == 0, done.stderr
    assert_same_run(one_process, out)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and summary["answered_this_run"] == LIMIT and summary["questions"] == LIMIT
    assert [line.startswith("accuracy ") for line in done.stdout.splitlines()].count(True) == 1   # printed once
    assert "Loading weights" not in done.stderr and "%|" not in done.stderr   # --quiet: no process shows bars


@pytest.mark.slow
def test_a_dying_process_stops_the_others_clearly_and_resume_completes(tiny_dir, one_process, tmp_path):
    out = tmp_path / "run"
    crashed = launch(args_for(tiny_dir, out), processes=2, extra_env={distributed.CRASH_ENV: "1:1"})
    assert crashed.returncode != 0
    survivor = [line for line in crashed.stderr.splitlines() if line.startswith("error: process 0 of 2: ")]
    assert len(survivor) == 1 and "--resume" in survivor[0], crashed.stderr
    assert "[rank0]: Traceback" not in crashed.stderr
    shard = out / "shards" / "results.rank1.jsonl"
    assert len(shard.read_text().splitlines()) == 2        # process 1's one unit (--batch_size 2) is kept
    for row in map(json.loads, shard.read_text().splitlines()):
        run_reader.load_activations(out / row["activation_file"])       # with its complete records
    assert not (out / "summary.json").exists()
    resumed = launch([*args_for(tiny_dir, out), "--resume"], processes=2)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(one_process, out)
    assert json.loads((out / "summary.json").read_text())["answered_this_run"] < LIMIT


HELPERS = textwrap.dedent("""
    import json, sys
    from activation_eval.run import distributed
    procs = distributed.init()
    seen = {"rank": procs.rank, "world": procs.world}
    def attempt(name, fn):
        try:
            seen[name] = ["ok", fn()]
        except Exception as exc:
            seen[name] = [type(exc).__name__, str(exc)]
    attempt("on_main", lambda: procs.on_main(lambda: 41 + procs.rank, "answering"))
    attempt("on_main_error", lambda: procs.on_main(lambda: int("x"), "failing"))
    attempt("main_first", lambda: procs.main_first(lambda: procs.rank, "each in turn"))
    attempt("agree", lambda: procs.agree({"same": 1}, {"same": "{ranks}"}, "agreeing"))
    attempt("disagree", lambda: procs.agree({"same": 1, "rank": procs.rank}, {"same": "S {ranks}", "rank": "R {ranks}"},
                                            "disagreeing"))
    again = distributed.init()                  # a second run in the same process reuses the group
    attempt("again", lambda: again.on_main(lambda: "again", "once more"))
    json.dump(seen, open(f"{sys.argv[1]}/rank{procs.rank}.json", "w"))
""")


@pytest.mark.slow
def test_collectives_share_results_and_errors(tmp_path):
    script = tmp_path / "helpers.py"
    script.write_text(HELPERS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
    done = run_group([*TORCHRUN, "--standalone", "--nproc_per_node", "2", str(script), str(tmp_path)], env, 120)
    assert done.returncode == 0, done.stderr
    main_seen, other = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (main_seen["world"], other["world"], other["rank"]) == (2, 2, 1)
    assert main_seen["on_main"] == other["on_main"] == ["ok", 41]          # rank 0's value, everywhere
    assert main_seen["on_main_error"][0] == "ValueError" and other["on_main_error"][0] == "MainProcessError"
    assert main_seen["on_main_error"][1] == other["on_main_error"][1]       # the same message
    assert main_seen["main_first"] == ["ok", 0] and other["main_first"] == ["ok", 1]   # each its own result
    assert main_seen["agree"] == other["agree"] == ["ok", None]
    assert main_seen["again"] == other["again"] == ["ok", "again"]
    assert main_seen["disagree"] == ["ValueError", "R 1"] and other["disagree"] == ["MainProcessError", "R 1"]


def test_sigterm_from_the_launcher_becomes_a_clear_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    before = signal.getsignal(signal.SIGTERM)
    restore = distributed.install_stop_handler()
    try:
        with pytest.raises(distributed.DistributedError, match=r"^process 1 of 2: stopped by the launcher.*--resume$"):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)                       # the handler raises at the next bytecode
    finally:
        restore()
    assert signal.getsignal(signal.SIGTERM) == before
    monkeypatch.delenv("WORLD_SIZE")
    assert distributed.install_stop_handler()() is None and signal.getsignal(signal.SIGTERM) == before


# ----------------------------------------------------------------------------- in one process

def test_one_process_starts_no_process_group(tiny_dir, tmp_path):
    assert distributed.init().world == 1
    assert run_main(*args_for(tiny_dir, tmp_path / "run", limit=2)) == 0
    assert not torch.distributed.is_initialized()
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["processes"] == 1


@pytest.mark.slow
def test_resume_with_another_world_size_merges_the_shards(tiny_dir, one_process, tmp_path):
    """What a killed 2-process run leaves (shards, one with a torn line), resumed by one process."""
    out = tmp_path / "run"
    shutil.copytree(one_process, out)
    rows = (out / "results.jsonl").read_text().splitlines(keepends=True)
    (out / "summary.json").unlink()
    (out / "results.jsonl").write_text("".join(rows[:2]))
    (out / "shards").mkdir()
    (out / "shards" / "results.rank0.jsonl").write_text("".join(rows[2:5]) + rows[5][:30])   # torn
    (out / "shards" / "results.rank1.jsonl").write_text("".join(rows[6:8]))
    for row in map(json.loads, rows[8:]):
        os.remove(out / row["activation_file"])                      # never written
    threads = torch.get_num_threads()
    torch.set_num_threads(1)                   # like the reference run: the same floats, bit for bit
    try:
        assert run_main(*args_for(tiny_dir, out), "--resume") == 0
    finally:
        torch.set_num_threads(threads)
    assert_same_run(one_process, out)


def test_merge_keeps_the_latest_row_and_benchmark_order(tmp_path):
    (tmp_path / "results.jsonl").write_text('{"id": "c", "v": 1}\n{"id": "z", "v": 1}\n')
    (tmp_path / "shards").mkdir()
    (tmp_path / "shards" / "results.rank0.jsonl").write_text('{"id": "c", "v": 2}\n{"id": "a", "v": 2}\n')
    (tmp_path / "shards" / "results.rank1.jsonl").write_text('{"id": "b", "v": 2}\n{"id": "d", "v"')
    merged = run_files.merge_results(tmp_path, list("abcd"))
    assert [(r["id"], r["v"]) for r in merged] == [("a", 2), ("b", 2), ("c", 2), ("z", 1)]
    assert read_rows(tmp_path) == merged and not (tmp_path / "shards").exists()


def test_a_lost_shard_is_an_error_not_a_short_summary(tmp_path):
    config = RunConfig(output_dir=str(tmp_path))
    bench = [{"id": "a"}, {"id": "b"}]
    batches = [[bench[0]], [bench[1]]]
    row = {"id": "a", "unit": plan.batch_key(batches[0]), "correct": True}
    (tmp_path / "results.jsonl").write_text(json.dumps(row) + "\n")
    with pytest.raises(RunError, match="1 question.*--resume"):
        runner._finish(config, RunWriter(tmp_path, "main"), bench, batches, elapsed=1.0, answered=2, processes=2)
    assert not (tmp_path / "summary.json").exists()


def test_unfinished_batches_are_answered_whole():
    a, b, c = {"id": "a"}, {"id": "b"}, {"id": "c"}
    units = [[a, b], [c]]
    ab, cc = plan.batch_key([a, b]), plan.batch_key([c])
    assert plan.unfinished(units, {"a": ab, "b": ab, "c": cc}) == []
    assert plan.unfinished(units, {"a": ab, "c": cc}) == [[a, b]]              # b missing: redo a too
    assert plan.unfinished(units, {"a": "other", "b": ab, "c": cc}) == [[a, b]]  # a from another batch
    assert distributed.share([0, 1, 2, 3, 4], 1, 2) == [1, 3]


@pytest.mark.slow
def test_device_map_auto_gives_the_same_run(tiny_dir, tmp_path):
    plain, mapped = tmp_path / "plain", tmp_path / "mapped"
    assert run_main(*args_for(tiny_dir, plain, limit=4)) == 0
    assert run_main(*args_for(tiny_dir, mapped, limit=4), "--device_map", "auto", "--max_memory", "cpu=4GiB") == 0
    assert read_rows(plain) == read_rows(mapped)
    for qid, rec in records(mapped).items():
        ref = records(plain)[qid]
        for name, tensor in rec["activations"].items():
            assert tensor.device.type == "cpu" and torch.equal(tensor, ref["activations"][name])


def test_max_memory_is_parsed_in_one_place():
    assert distributed.parse_max_memory("0=20GiB, 1=500MB,CPU=60GiB,disk=1000") == \
        {0: "20GiB", 1: "500MB", "cpu": "60GiB", "disk": 1000}
    for bad, message in [("0:20GiB", "DEVICE=SIZE"), ("gpu0=1GiB", "unknown device"), ("0=lots", "not a size"),
                         (",", "empty")]:
        with pytest.raises(ValueError, match=message):
            distributed.parse_max_memory(bad)
    # a dict max_memory is a valid load_model cache key (the model is loaded once, not twice)
    from activation_eval.models import LoadOptions
    assert repr(LoadOptions(device_map="auto", max_memory=distributed.parse_max_memory("0=1GiB"))) == \
        repr(LoadOptions(device_map="auto", max_memory=distributed.parse_max_memory("0=1GiB")))


def test_max_memory_is_split_between_processes_on_a_node():
    split = distributed.rank_max_memory
    assert split({0: "20GiB", 1: "10GiB", "cpu": "60GiB"}, 1, 2, 4) == {2: "20GiB", 3: "10GiB", "cpu": "60GiB"}
    assert split({0: "20GiB"}, 0, 1, 4) == {0: "20GiB"}                          # one process: as given
    own = split(None, 2, 4, 8, free_bytes=lambda i: 1000 + i)
    assert {k: v for k, v in own.items() if k != "cpu"} == {4: 1004, 5: 1005} and "cpu" in own
    with pytest.raises(ValueError, match="has 2 GPU"):
        split({2: "1GiB"}, 0, 2, 4)
    with pytest.raises(ValueError, match="at least one"):
        split(None, 0, 4, 2)


@pytest.mark.parametrize("args, message", [
    (["--max_memory", "0=1GiB"], "--max_memory needs --device_map"),
    (["--device_map", "auto", "--max_memory", "0=lots"], "not a size"),
    (["--dist_timeout", "0"], "--dist_timeout"),
])
def test_bad_scaling_flags_are_one_line_errors(tiny_dir, tmp_path, capsys, args, message):
    assert run_main("--model", tiny_dir, "--limit", 2, "--output_dir", tmp_path / "o", *args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
