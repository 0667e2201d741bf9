"""Interrupted runs: SIGKILL at random moments, injected disk-full errors, torn lines, --resume."""
import errno
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from activation_eval.store import run_reader
from helpers import REPO_ROOT, read_rows, run_main

ROOT = REPO_ROOT


def common_args(model, out, batch_size=2, new_tokens=6):
    return ["--model", model, "--limit", "12", "--batch_size", str(batch_size), "--max_new_tokens", str(new_tokens),
            "--capture_activations", "--layers", "embeddings,0,-1", "--output_dir", str(out)]


def snapshot(folder):
    """Results rows and every record's tensors, for exact comparison between runs."""
    rows = read_rows(folder)
    records = {}
    for row in rows:
        rec = run_reader.load_activations(os.path.join(folder, row["activation_file"]))
        records[row["id"]] = {k: v for k, v in rec["activations"].items()}
    return rows, records


def assert_same_run(a, b):
    rows_a, recs_a = snapshot(a)
    rows_b, recs_b = snapshot(b)
    assert rows_a == rows_b
    assert len({r["id"] for r in rows_b}) == len(rows_b)                 # no duplicates
    for qid in recs_a:
        for name in recs_a[qid]:
            assert torch.equal(recs_a[qid][name], recs_b[qid][name])
    leftovers = [n for n in os.listdir(os.path.join(b, "activations")) if n.startswith(".")]
    assert leftovers == []                                               # no stray temp files
    assert len(os.listdir(os.path.join(b, "activations"))) == len(rows_b)


@pytest.fixture(scope="module")
def uninterrupted(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert run_main(*common_args(tiny_dir, out)) == 0
    return out


@pytest.fixture(scope="module")
def uninterrupted_b1(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref1") / "run"
    assert run_main(*common_args(tiny_dir, out, batch_size=1, new_tokens=40)) == 0
    return out


def lines(path):
    try:
        with open(path) as f:
            return sum(1 for _ in f)
    except OSError:
        return 0


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_same_run(tiny_dir, uninterrupted_b1, tmp_path):
    out = tmp_path / "run"
    rng = random.Random(1234)
    # one question per step and long answers: a run lasts long enough to be killed several times
    args = common_args(tiny_dir, out, batch_size=1, new_tokens=40)
    cmd = [sys.executable, os.path.join(ROOT, "main.py"), *args, "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # same thread count as the reference run
    kills, finished = 0, False
    for attempt in range(12):
        if kills == 3:                          # the last resume runs to the end: in this process (a start fewer)
            break
        args = cmd + (["--resume"] if attempt else [])
        proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        # wait until the run is producing rows, then kill it a random moment later
        start_lines = lines(out / "results.jsonl")
        deadline = time.time() + 60
        while proc.poll() is None and lines(out / "results.jsonl") == start_lines and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is None and kills < 3:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=120)
        if proc.returncode == 0:
            finished = True
            break
        assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()
    if not finished:
        assert run_main(*common_args(tiny_dir, out, batch_size=1, new_tokens=40), "--resume") == 0
    assert kills >= 2
    assert_same_run(uninterrupted_b1, out)


def test_disk_full_stops_cleanly_and_resume_completes(tiny_dir, uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real_replace = os.replace
    calls = {"n": 0}

    def failing_replace(src, dst):
        calls["n"] += 1
        if calls["n"] == 7:                      # the 7th record file hits a full disk
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    assert run_main(*common_args(tiny_dir, out)) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]          # above it only the progress bar
    assert "No space left on device" in last and last.startswith("error: ") and "Traceback" not in err
    monkeypatch.setattr(os, "replace", real_replace)
    written = read_rows(out)
    assert 0 < len(written) < 12
    for row in written:                          # what was written before the failure is intact
        run_reader.load_activations(out / row["activation_file"])
    assert run_main(*common_args(tiny_dir, out), "--resume") == 0
    assert_same_run(uninterrupted, out)


def test_torn_last_line_is_repaired_on_resume(tiny_dir, uninterrupted, tmp_path):
    out = tmp_path / "run"
    args = common_args(tiny_dir, out)
    args[args.index("--limit") + 1] = "5"
    assert run_main(*args) == 0
    with open(out / "results.jsonl", "a") as f:
        f.write('{"id": "half-writ')             # a write cut off by a crash
    assert run_main(*common_args(tiny_dir, out), "--resume") == 0
    assert_same_run(uninterrupted, out)


@pytest.mark.parametrize("change, message", [
    (["--layers", "embeddings,0"], "layers"),
    (["--max_new_tokens", "7"], "max_new_tokens"),
    (["--activation_format", "safetensors"], "activation_format"),
])
def test_resume_with_other_settings_is_refused(tiny_dir, uninterrupted, tmp_path, capsys, change, message):
    out = tmp_path / "run"
    args = common_args(tiny_dir, out)
    args[args.index("--limit") + 1] = "2"
    assert run_main(*args) == 0
    before = (out / "results.jsonl").read_text()
    flag = change[0]
    if flag in args:
        i = args.index(flag)
        args[i:i + 2] = change
    else:
        args += change
    assert run_main(*args, "--resume") == 2
    err = capsys.readouterr().err
    assert "--resume" in err and message in err
    assert (out / "results.jsonl").read_text() == before
