"""main.py with sampling (--temperature, --num_samples, --seed), --limit fractions, --shuffle and
--mc_scoring loglikelihood, end to end on a tiny saved model."""
import json
import math
import os

import pytest

from activation_eval.eval.benchmark import load_benchmark
from activation_eval.run.config import RunConfig, RunError
from activation_eval.run.runner import select_rows
from activation_eval.store import run_files, run_reader
from activation_eval.store.run_writer import RunWriter
from helpers import read_rows, run_main

SAMPLED = ["--limit", 4, "--max_new_tokens", 5, "--temperature", 1.0, "--num_samples", 2,
           "--capture_activations", "--layers", "0", "--positions", "last_prompt"]


def answers(rows):
    return [(r["id"], r["sample"], r["response"], r["correct"]) for r in rows]


@pytest.mark.slow
def test_sampled_runs_repeat_exactly_across_batch_sizes_and_resume(tiny_dir, tmp_path):
    assert run_main("--model", tiny_dir, *SAMPLED, "--seed", 5, "--batch_size", 2, "--output_dir", tmp_path / "a") == 0
    assert run_main("--model", tiny_dir, *SAMPLED, "--seed", 5, "--batch_size", 3, "--output_dir", tmp_path / "b") == 0
    rows = read_rows(tmp_path / "a")
    ids = [r["id"] for r in load_benchmark()[:4]]
    assert [(r["id"], r["sample"]) for r in rows] == [(i, k) for i in ids for k in (0, 1)]
    assert answers(rows) == answers(read_rows(tmp_path / "b"))
    # every (id, sample) has its own record file, holding that sample's answer
    files = {r["activation_file"] for r in rows}
    assert len(files) == 8 and len(os.listdir(tmp_path / "a" / "activations")) == 8
    for row in rows:
        rec = run_reader.load_activations(tmp_path / "a" / row["activation_file"])
        assert rec["response"] == row["response"] and rec["sample"] == row["sample"]
        assert rec["generation"]["do_sample"] is True and rec["generation"]["seed"] == 5
    # the two samples of a question differ somewhere (temperature 1.0 on a random model)
    assert any(rows[i]["response"] != rows[i + 1]["response"] for i in range(0, 8, 2))
    # another seed, other samples
    assert run_main("--model", tiny_dir, *SAMPLED, "--seed", 6, "--output_dir", tmp_path / "c") == 0
    assert answers(read_rows(tmp_path / "c")) != answers(rows)
    # an interrupted run (its last rows lost) resumes to the same rows
    path = tmp_path / "a" / "results.jsonl"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]))
    assert run_main("--model", tiny_dir, *SAMPLED, "--seed", 5, "--batch_size", 2, "--output_dir", tmp_path / "a",
                    "--resume") == 0
    assert read_rows(tmp_path / "a") == rows
    # a resume with another seed would mix samples of two settings: refused
    assert run_main("--model", tiny_dir, *SAMPLED, "--seed", 9, "--output_dir", tmp_path / "a", "--resume") == 2


def test_limit_fraction_and_shuffle_pick_a_seeded_subset_in_benchmark_order():
    rows = load_benchmark()
    assert len(select_rows(rows, RunConfig(limit="0.1"))) == math.ceil(0.1 * len(rows))
    first = select_rows(rows, RunConfig(limit=20))
    assert first == rows[:20] and len({r["category"] for r in first}) == 1      # the complaint
    subset = select_rows(rows, RunConfig(limit=20, shuffle=True, seed=3))
    assert len(subset) == 20 and len({r["id"] for r in subset}) == 20
    assert len({r["category"] for r in subset}) >= 3
    order = [r["id"] for r in rows]
    assert [r["id"] for r in subset] == sorted((r["id"] for r in subset), key=order.index)
    assert subset == select_rows(rows, RunConfig(limit=20, shuffle=True, seed=3))
    assert subset != select_rows(rows, RunConfig(limit=20, shuffle=True, seed=4))


def test_question_ids_keep_those_questions_in_benchmark_order_and_refuse_unknown_ones():
    rows = load_benchmark()
    wanted = [rows[7]["id"], rows[2]["id"], rows[40]["id"]]
    assert [r["id"] for r in select_rows(rows, RunConfig(question_ids=wanted))] == [rows[i]["id"] for i in (2, 7, 40)]
    assert RunConfig(question_ids=wanted).resume_view()["question_ids"] == wanted      # JSON's list, for --resume
    with pytest.raises(RunError, match="1 question id.*'nope'"):
        select_rows(rows, RunConfig(question_ids=[rows[0]["id"], "nope"]))


@pytest.mark.parametrize("args, message", [
    (["--limit", "abc"], "--limit must be"), (["--limit", "1.5"], "--limit must be"),
    (["--num_samples", "3"], "add --temperature"), (["--top_p", "0.9"], "temperature > 0"),
    (["--mc_scoring", "loglikelihood", "--positions", "generated"], "captures the prompt only"),
    (["--mc_scoring", "loglikelihood", "--temperature", "0.5"], "generates nothing"),
])
def test_bad_decoding_flags_are_one_line_errors(args, message, tmp_path, capsys):
    assert run_main(*args, "--output_dir", tmp_path / "run") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err
    assert not (tmp_path / "run").exists()


MC_ROWS = [
    {"id": "m1", "question": "What is the capital of France?", "choices": ["Paris", "Rome", "Oslo"], "answer": "A"},
    {"id": "t1", "question": "What is two plus two?", "answer": "4"},
    {"id": "m2", "question": "Which is a fox?", "choices": ["a dog", "a quick brown fox"], "answer": "B",
     "category": "animals"},
    {"id": "m3", "question": "Pick a number", "choices": ["0", "42", "100", "seven"], "answer": ["42"]},
]


def test_loglikelihood_run_scores_choice_rows_and_skips_the_others(tiny_dir, tmp_path, capsys, caplog):
    bench = tmp_path / "mc.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in MC_ROWS))
    out = tmp_path / "run"
    args = ["--model", tiny_dir, "--benchmark", bench, "--mc_scoring", "loglikelihood", "--batch_size", 2,
            "--capture_activations", "--layers", "embeddings,-1", "--positions", "last_prompt", "--output_dir", out]
    assert run_main(*args) == 0
    assert "skipping 1 row(s) without choices (t1)" in caplog.text
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["m1", "m2", "m3"]
    for row, source in zip(rows, [MC_ROWS[0], MC_ROWS[2], MC_ROWS[3]]):
        assert row["scoring"] == "loglikelihood" and len(row["choice_logprobs"]) == len(source["choices"])
        best = max(range(len(source["choices"])), key=lambda i: (row["choice_logprobs"][i], -i))
        assert row["extracted"] == "ABCD"[best] and row["response"] == source["choices"][best]
        assert isinstance(row["correct"], bool) and isinstance(row["correct_norm"], bool)
        rec = run_reader.load_activations(out / row["activation_file"])
        assert rec["choice_logprobs"] == row["choice_logprobs"] and rec["output_ids"].numel() == 0
        assert rec["positions_kept"] == [rec["num_prompt_tokens"] - 1]
        assert rec["activations"]["layer_2"].shape == (1, 64)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["log_likelihood"]["norm"]["correct"] == sum(r["correct_norm"] for r in rows)
    assert summary["log_likelihood"]["chance_accuracy"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 4) / 3)
    assert "acc_norm" in capsys.readouterr().out
    # resuming with generated answers would mix two kinds of rows: refused
    assert run_main(*args[:-2], "--mc_scoring", "generate", "--output_dir", out, "--resume") == 2


def test_rows_and_record_files_are_keyed_by_id_and_sample(tmp_path):
    from activation_eval.store import run_folder
    names = {os.path.basename(run_folder.record_path("acts", qid, "pkl", sample=k))
             for qid in ("q", "q@s1", "q_s1") for k in (None, 0, 1)}
    assert len(names) == 9 and "q@s1.pkl" in names and "q.pkl" in names
    with pytest.raises(ValueError, match="sample"):
        run_folder.record_path("acts", "q", "pkl", sample=-1)
    # merging: one row per (id, sample), the latest wins, samples of an id in order, ids in `order`
    (tmp_path / "results.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [{"id": "b", "v": 1}, {"id": "a", "sample": 1, "v": 1}]))
    part = RunWriter(tmp_path, "main", rank=0, world=2)                # process 0 of 2 writes its part
    for row in ({"id": "a", "sample": 1, "v": 2}, {"id": "a", "sample": 0, "v": 2}):
        part.add(row)
    part.flush()
    merged = run_files.merge_results(tmp_path, ["a", "b"])
    assert [(r["id"], r.get("sample"), r["v"]) for r in merged] == [("a", 0, 2), ("a", 1, 2), ("b", None, 1)]
