"""Run folder faults (issue 12): the lock, an edited benchmark on --resume, deleted or damaged record
files, record-name collisions, prompts longer than the model's context, stale temp files."""
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from activation_eval.analysis.dataset import load_run_layer
from activation_eval.run import runner
from activation_eval.store import run_folder
from activation_eval.store.errors import RunFolderError
from activation_eval.store.lock import RunLock
from activation_eval.store.records import save_activations
from activation_eval.store.run_reader import load_activations
from helpers import REPO_ROOT, make_tokenizer, read_rows, run_main, tiny_model

ROOT = REPO_ROOT
TORCHRUN = [os.path.join(os.path.dirname(sys.executable), "torchrun")]
if not os.path.isfile(TORCHRUN[0]):
    TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
QUESTIONS = [("geo 1", "What is the capital of France?", "Paris"), ("geo 2", "What is the capital of Japan?", "Tokyo"),
             ("math 1", "What is two plus two?", "4"), ("math 2", "What is 10 plus 32?", "42"),
             ("geo 3", "What is the capital of Italy?", "Rome"), ("math 3", "What is 7 times 6?", "42")]


def write_bench(path, questions=QUESTIONS):
    path.write_text("".join(json.dumps({"id": i, "question": q, "answer": a}) + "\n" for i, q, a in questions))
    return path


def args(model, bench, out, *extra, limit=6, capture=True):
    return ["--model", model, "--benchmark", bench, "--limit", limit, "--batch_size", 2, "--max_new_tokens", 5,
            "--output_dir", out, *(["--capture_activations", "--layers", "embeddings,0,-1"] if capture else []), *extra]


def last_error(capsys):
    err = capsys.readouterr().err.strip().splitlines()
    return err[-1] if err else ""


# ----------------------------------------------------------------------------- the lock

@pytest.mark.slow
def test_a_second_run_into_a_locked_folder_is_refused_and_the_first_completes(tiny_dir, tmp_path):
    bench, out = write_bench(tmp_path / "b.jsonl"), tmp_path / "run"
    cmd = [sys.executable, "main.py", *map(str, args(tiny_dir, bench, out)), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120            # until the first run holds the lock and has written its settings
        while not (os.path.isfile(run_folder.lock_path(out)) and os.path.isfile(run_folder.config_path(out))):
            assert first.poll() is None and time.time() < deadline, first.communicate()[1]
            time.sleep(0.05)
        first.send_signal(signal.SIGSTOP)       # hold it there while the second run tries
        try:
            second = subprocess.run(cmd + ["--resume"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
        finally:
            first.send_signal(signal.SIGCONT)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert lines[-1] == (f"error: output folder {out} is in use by main.py (pid {first.pid}): wait for it "
                             f"to finish, or choose another --output_dir"), second.stderr
        assert "Traceback" not in second.stderr
        _, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err
    rows = read_rows(out)
    assert sorted(r["id"] for r in rows) == sorted(q[0] for q in QUESTIONS)     # each question once
    assert len(os.listdir(out / "activations")) == len(QUESTIONS)
    assert not os.path.exists(run_folder.lock_path(out))                         # released at the end
    assert run_main(*args(tiny_dir, bench, out), "--resume") == 0                 # and free again


@pytest.mark.slow
def test_a_multi_process_run_into_a_locked_folder_is_refused_once(tiny_dir, tmp_path):
    bench, out = write_bench(tmp_path / "b.jsonl"), tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env["OMP_NUM_THREADS"] = "1"
    with RunLock(out):                          # this test process holds the folder
        done = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", "main.py",
                               *map(str, args(tiny_dir, bench, out)), "--quiet"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert os.listdir(out) == [run_folder.LOCK_FILE]          # the refused run wrote nothing
    assert done.returncode != 0
    refusals = [line for line in done.stderr.splitlines() if "is in use by another run" in line]
    assert refusals == [f"error: output folder {out} is in use by another run (pid {os.getpid()}): wait for it "
                        f"to finish, or choose another --output_dir"], done.stderr
    assert not os.path.exists(out)              # the folder this lock created, empty again, is gone


def test_a_lock_left_by_a_killed_run_is_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / run_folder.LOCK_FILE).write_text("999999\n")       # what SIGKILL leaves: the file, no lock
    with RunLock(out) as lock:
        assert (out / run_folder.LOCK_FILE).read_text().splitlines()[0] == f"{os.getpid()}"
        with pytest.raises(RunFolderError, match=f"in use by another run \\(pid {os.getpid()}\\)"):
            RunLock(out).acquire()               # a second open file description: flock excludes it too
    assert lock._fd is None and os.listdir(out) == [] and out.is_dir()      # a folder it did not create stays


# ----------------------------------------------------------------------------- an edited benchmark

@pytest.fixture
def answered(tiny_dir, tmp_path):
    """A finished 4-question run (no capture) on a benchmark file of 6 questions."""
    bench, out = write_bench(tmp_path / "b.jsonl"), tmp_path / "run"
    assert run_main(*args(tiny_dir, bench, out, limit=4, capture=False)) == 0
    return bench, out


def edit(bench, index, question):
    lines = bench.read_text().splitlines(keepends=True)
    row = json.loads(lines[index])
    row["question"] = question
    lines[index] = json.dumps(row) + "\n"
    bench.write_text("".join(lines))


def test_resume_after_an_asked_question_was_edited_is_refused(tiny_dir, answered, capsys):
    bench, out = answered
    config, results = (out / "run_config.json").read_text(), (out / "results.jsonl").read_text()
    stored = json.loads(config)
    assert stored["benchmark_sha256"] == hashlib.sha256(bench.read_bytes()).hexdigest()
    assert stored["questions_asked"] == 4
    edit(bench, 2, "What is two plus three?")
    assert run_main(*args(tiny_dir, bench, out, "--resume", limit=4, capture=False)) == 2
    line = last_error(capsys)
    assert line.startswith(f"error: --resume: the questions in {bench} changed since this run started")
    assert "question 'math 1': its question changed" in line and "Traceback" not in line
    assert (out / "run_config.json").read_text() == config and (out / "results.jsonl").read_text() == results


def test_resume_after_an_edit_beyond_the_asked_rows_continues(tiny_dir, answered, caplog):
    bench, out = answered
    edit(bench, 5, "What is 7 times 7?")                     # row 6: not among the 4 asked
    with caplog.at_level(logging.WARNING):
        assert run_main(*args(tiny_dir, bench, out, "--resume", limit=4, capture=False)) == 0
    assert "changed since this run started, but the 4 question(s) this run asked are unchanged" in caplog.text
    stored = json.loads((out / "run_config.json").read_text())
    assert stored["benchmark_sha256"] == hashlib.sha256(bench.read_bytes()).hexdigest()   # the edit is accepted
    assert len(read_rows(out)) == 4


def test_resume_of_an_edited_file_with_a_smaller_limit_is_refused(tiny_dir, answered, capsys):
    bench, out = answered
    edit(bench, 5, "What is 7 times 7?")
    assert run_main(*args(tiny_dir, bench, out, "--resume", limit=3, capture=False)) == 2
    assert "asks fewer questions (3) than it did (4)" in last_error(capsys)


def test_resume_of_a_run_without_a_benchmark_hash_warns_and_stores_one(tiny_dir, answered, caplog):
    bench, out = answered
    stored = json.loads((out / "run_config.json").read_text())
    old = {k: v for k, v in stored.items() if k not in ("benchmark_sha256", "questions_sha256", "questions_asked")}
    (out / "run_config.json").write_text(json.dumps(old))               # as an earlier version wrote it
    with caplog.at_level(logging.WARNING):
        assert run_main(*args(tiny_dir, bench, out, "--resume", limit=6, capture=False)) == 0
    assert "has no benchmark hash (written by an earlier version)" in caplog.text
    now = json.loads((out / "run_config.json").read_text())
    assert now["questions_asked"] == 6 and now["benchmark_sha256"] == stored["benchmark_sha256"]
    assert len(read_rows(out)) == 6


# ----------------------------------------------------------------------------- damaged record files

def snapshot(out):
    return {row["id"]: load_activations(out / row["activation_file"])["activations"] for row in read_rows(out)}


def test_missing_or_damaged_records_are_answered_again_on_resume(tiny_dir, tmp_path, caplog):
    bench, out = write_bench(tmp_path / "b.jsonl"), tmp_path / "run"
    assert run_main(*args(tiny_dir, bench, out)) == 0
    reference, rows = snapshot(out), read_rows(out)
    os.remove(out / rows[1]["activation_file"])                          # deleted
    damaged = out / rows[4]["activation_file"]
    damaged.write_bytes(damaged.read_bytes()[:-100])                     # truncated
    (out / "summary.json").unlink()
    with caplog.at_level(logging.WARNING):
        assert run_main(*args(tiny_dir, bench, out), "--resume") == 0
    assert "2 question(s) answered again: their record files were missing or unreadable" in caplog.text
    assert "'geo 2' (missing)" in caplog.text and "'geo 3' (not a complete pickle)" in caplog.text
    again = snapshot(out)
    assert again.keys() == reference.keys()
    for qid, layers in reference.items():                                # the same numbers, bit for bit
        for name, tensor in layers.items():
            assert torch.equal(tensor, again[qid][name]), (qid, name)
    assert [r["id"] for r in read_rows(out)] == [r["id"] for r in rows]
    summary = json.loads((out / "summary.json").read_text())
    # only the units (of --batch_size 2) that hold the two damaged records are answered again
    units = {rows[1]["unit"], rows[4]["unit"]}
    assert summary["questions"] == 6 and summary["answered_this_run"] == sum(r["unit"] in units for r in rows) < 6


@pytest.mark.parametrize("fmt", ["pkl", "safetensors"])
def test_record_file_problem_reads_only_headers_and_catches_damage(tmp_path, fmt):
    record = {"prompt": "p", "response": "r", "input_ids": torch.arange(5), "output_ids": torch.arange(3),
              "activations": {"layer_0": torch.randn(7, 16)}}
    path = save_activations(record, str(tmp_path / f"r.{fmt}"))
    assert run_folder.record_file_problem(path) is None
    data = open(path, "rb").read()
    cases = {"missing": None, "empty": b"", "cut": data[:-1], "half": data[: len(data) // 2], "padded": data + b"\0"}
    for name, content in cases.items():
        damaged = tmp_path / f"{name}.{fmt}"
        if content is not None:
            damaged.write_bytes(content)
        problem = run_folder.record_file_problem(str(damaged))
        assert problem, name
        with pytest.raises((ValueError, OSError)):                      # the full loader agrees
            load_activations(str(damaged))
    assert run_folder.record_file_problem(str(tmp_path)) == "not a regular file"


# ----------------------------------------------------------------------------- record names

def test_ids_colliding_in_a_40_bit_name_hash_get_distinct_files():
    a, b = "q #/?% ?*", "q #%//&%/"                                      # found by a 5 s birthday search
    assert hashlib.sha256(a.encode()).hexdigest()[:10] == hashlib.sha256(b.encode()).hexdigest()[:10]
    assert run_folder.record_path("acts", a) != run_folder.record_path("acts", b)
    run_folder.check_record_names("acts", [a, b])
    suffix = os.path.basename(run_folder.record_path("acts", a))[:-4].rsplit("-", 1)[1]
    assert suffix == hashlib.sha256(a.encode()).hexdigest()[:32]       # 128 bits
    old_style = "q________-" + hashlib.sha256(a.encode()).hexdigest()[:10]   # an id equal to an older file name
    assert run_folder.record_path("acts", old_style) != os.path.join("acts", old_style + ".pkl")


def test_ids_that_share_a_file_ignoring_case_are_refused(tiny_dir, tmp_path, capsys):
    bench, out = write_bench(tmp_path / "b.jsonl", [("Q1", "What is two plus two?", "4"),
                                                    ("q1", "What is 10 plus 32?", "42")]), tmp_path / "run"
    assert run_main(*args(tiny_dir, bench, out, limit=2)) == 2
    assert last_error(capsys) == (f"error: question ids 'Q1' and 'q1' map to the same record file 'q1.pkl' (ignoring "
                                  f"case) in {out / 'activations'}: make the ids differ in more than letter case")
    assert not out.exists()


def test_records_with_older_names_are_still_found_on_resume_and_by_analysis(tiny_dir, tmp_path, caplog):
    bench, out = write_bench(tmp_path / "b.jsonl"), tmp_path / "run"
    assert run_main(*args(tiny_dir, bench, out)) == 0
    rows = read_rows(out)
    for row in rows:                          # rename every record as the 10-digit version named it
        qid = row["id"]
        old = f"activations/{qid.replace(' ', '_')}-{hashlib.sha256(qid.encode()).hexdigest()[:10]}.pkl"
        os.replace(out / row["activation_file"], out / old)
        row["activation_file"] = old
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    before = {name: (out / "activations" / name).stat().st_mtime_ns for name in os.listdir(out / "activations")}
    with caplog.at_level(logging.WARNING):
        assert run_main(*args(tiny_dir, bench, out), "--resume") == 0
    assert "answered again" not in caplog.text
    assert {n: (out / "activations" / n).stat().st_mtime_ns for n in os.listdir(out / "activations")} == before
    X, used = load_run_layer(out, "layer_0")
    assert X.shape[0] == 6 and [r["activation_file"] for r in used] == [r["activation_file"] for r in rows]


# ----------------------------------------------------------------------------- prompts too long

def chat_token_count(tokenizer, question):
    """Independent count: the tokenizer's own chat-template tokenization of the prompt as main.py words it."""
    prompt = f"{question}\nAnswer with a short answer only."
    ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=True, add_generation_prompt=True)
    return len(ids["input_ids"] if hasattr(ids, "keys") else ids)


def test_a_question_longer_than_the_context_gets_an_error_row_and_the_run_goes_on(tiny_dir, tmp_path, capsys):
    from transformers import AutoTokenizer
    huge = ("What is the answer? " * 5000).strip()                         # 100 KB
    questions = QUESTIONS[:2] + [("huge", huge, "Paris")] + QUESTIONS[2:4]
    bench, out = write_bench(tmp_path / "b.jsonl", questions), tmp_path / "run"
    start = time.perf_counter()
    assert run_main(*args(tiny_dir, bench, out, limit=5)) == 0
    took = time.perf_counter() - start
    printed = capsys.readouterr().out
    n = chat_token_count(AutoTokenizer.from_pretrained(tiny_dir), huge)
    rows = {r["id"]: r for r in read_rows(out)}
    assert list(rows) == [q[0] for q in questions]                         # benchmark order, every question
    bad = rows["huge"]
    assert bad["error"] == f"prompt has {n} tokens, the model's context is 256"
    assert bad["response"] is None and bad["correct"] is None and "activation_file" not in bad
    assert bad["num_prompt_tokens"] == n and bad["num_generated_tokens"] == 0
    assert all("error" not in r and r["activation_file"] for i, r in rows.items() if i != "huge")
    summary = json.loads((out / "summary.json").read_text())
    correct = sum(r["correct"] is True for r in rows.values())
    assert (summary["questions"], summary["errors"], summary["correct"]) == (5, 1, correct)
    assert summary["accuracy"] == pytest.approx(correct / 4)                # the error row is not graded
    assert "errors     1 of 5 questions not answered" in printed and f"({correct}/4 correct)" in printed
    assert took < 60, took
    X, used = load_run_layer(out, "layer_0")                               # analysis skips the error row
    assert X.shape[0] == 4 and "huge" not in [r["id"] for r in used]
    assert run_main(*args(tiny_dir, bench, out, "--resume", limit=5)) == 0  # nothing left to answer
    assert json.loads((out / "summary.json").read_text())["answered_this_run"] == 0


def question_of_length(tokenizer, target):
    """A question whose chat prompt has exactly `target` tokens."""
    for words in range(200):
        for dots in range(12):
            question = "seven " * words + "." * dots
            if chat_token_count(tokenizer, question) == target:
                return question
    raise AssertionError(f"no question of {target} tokens")


def test_the_context_limit_is_exact_for_learned_positions(tmp_path):
    """gpt2 looks its positions up in a 256-row table: 256 prompt tokens (answered with one new token,
    which is never fed back) fit, 257 would index past the table and are refused up front."""
    tokenizer = make_tokenizer(chat_template=True)
    model, _ = tiny_model("gpt2", tokenizer)
    folder = tmp_path / "gpt2"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert model.config.n_positions == 256
    with pytest.raises(IndexError):                                        # what the check prevents
        model(torch.ones(1, 257, dtype=torch.long))
    fits, over = question_of_length(tokenizer, 256), question_of_length(tokenizer, 257)
    bench = write_bench(tmp_path / "b.jsonl", [("fits", fits, "x"), ("over", over, "x")])
    out = tmp_path / "run"
    assert run_main("--model", folder, "--benchmark", bench, "--max_new_tokens", 1, "--output_dir", out,
                    "--capture_activations", "--layers", "0") == 0
    rows = {r["id"]: r for r in read_rows(out)}
    assert "error" not in rows["fits"] and rows["fits"]["num_prompt_tokens"] == 256
    assert load_activations(out / rows["fits"]["activation_file"])["activations"]["layer_0"].shape[0] == 256
    assert rows["over"]["error"] == "prompt has 257 tokens, the model's context is 256"


def test_prompt_errors_leave_room_for_the_answer():
    rows = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    errors = runner.prompt_errors(rows, [250, 251, 300], context=256, max_new_tokens=7)   # 250 + 7 - 1 = 256 fits
    assert list(errors) == ["b", "c"]
    assert errors["b"] == (251, "prompt has 251 tokens, the model's context is 256: no room for --max_new_tokens 7 "
                                "(that needs 257 positions)")
    assert errors["c"] == (300, "prompt has 300 tokens, the model's context is 256")
    assert runner.prompt_errors(rows, [10**6] * 3, context=None, max_new_tokens=7) == {}


# ----------------------------------------------------------------------------- stale temp files

def test_stale_results_temp_files_are_removed_on_resume(tiny_dir, tmp_path):
    bench, out = write_bench(tmp_path / "b.jsonl"), tmp_path / "run"
    assert run_main(*args(tiny_dir, bench, out, limit=2, capture=False)) == 0
    stale = [out / ".results.jsonl.0a1b2c3d.tmp", out / ".summary.json.deadbeef.tmp"]   # rewrites cut short
    for path in stale:
        path.write_text('{"id": "half')
    assert run_main(*args(tiny_dir, bench, out, "--resume", limit=2, capture=False)) == 0
    assert not any(path.exists() for path in stale)
    assert sorted(os.listdir(out)) == ["results.jsonl", "run_config.json", "summary.json"]
