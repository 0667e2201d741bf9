"""main.py end to end on tiny saved models (fast) and, once, on the real default model."""
import json

import pytest
import torch

import main
from activation_eval.capture.generation import GenerationSettings
from activation_eval.eval.answering import answer_rows
from activation_eval.eval.benchmark import load_benchmark
from activation_eval.store import run_reader
from helpers import read_rows, run_main


def test_run_writes_graded_rows_summary_and_records(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    code = run_main("--model", tiny_dir, "--limit", 10, "--batch_size", 4, "--max_new_tokens", 6,
                    "--output_dir", out, "--capture_activations", "--layers", "embeddings,0,-1,final_norm")
    assert code == 0
    rows = read_rows(out)
    bench = load_benchmark()[:10]
    assert [r["id"] for r in rows] == [b["id"] for b in bench]          # benchmark order
    summary = json.loads((out / "summary.json").read_text())
    assert summary["questions"] == 10 and summary["correct"] == sum(r["correct"] for r in rows)
    assert summary["accuracy"] == pytest.approx(summary["correct"] / 10)
    assert sum(c["n"] for c in summary["per_category"].values()) == 10
    for row in rows:
        rec = run_reader.load_activations(out / row["activation_file"])
        assert list(rec["activations"]) == ["embeddings", "layer_0", "layer_2", "final_norm"]
        assert rec["response"] == row["response"] and rec["grading"]["correct"] == row["correct"]
        n = len(rec["input_ids"]) + len(rec["output_ids"]) - 1
        assert rec["activations"]["layer_0"].shape == (n, 64)
    printed = capsys.readouterr().out
    assert "accuracy" in printed and "activations  10 files" in printed


def test_batch_8_gives_the_same_answers_as_batch_1(tiny_dir, tmp_path):
    for bs in (1, 8):
        assert run_main("--model", tiny_dir, "--limit", 12, "--batch_size", bs, "--max_new_tokens", 6,
                        "--output_dir", tmp_path / f"b{bs}") == 0

    def strip(rows):
        return [(r["id"], r["response"], r["correct"]) for r in rows]
    assert strip(read_rows(tmp_path / "b1")) == strip(read_rows(tmp_path / "b8"))


def test_no_continuous_batching_answers_with_model_generate_and_the_same_rows(tiny_dir, tmp_path):
    common = ["--model", tiny_dir, "--limit", 12, "--batch_size", 3, "--max_new_tokens", 6,
              "--capture_activations", "--layers", "0,-1"]
    assert run_main(*common, "--output_dir", tmp_path / "continuous") == 0
    assert run_main(*common, "--no_continuous_batching", "--output_dir", tmp_path / "generate") == 0

    def strip(rows):
        return [(r["id"], r["response"], r["correct"], r["num_generated_tokens"]) for r in rows]
    continuous, generate = read_rows(tmp_path / "continuous"), read_rows(tmp_path / "generate")
    assert strip(continuous) == strip(generate)
    # a unit is what decodes at once: 4 of 3 questions on both paths, the same questions in each
    assert {r["id"]: r["unit"] for r in continuous} == {r["id"]: r["unit"] for r in generate}
    assert len({r["unit"] for r in continuous}) == 4
    for a, b in zip(continuous, generate):
        rec_a = run_reader.load_activations(tmp_path / "continuous" / a["activation_file"])
        rec_b = run_reader.load_activations(tmp_path / "generate" / b["activation_file"])
        assert (rec_a["generation"]["decoding"], rec_b["generation"]["decoding"]) == ("continuous", "generate")
        for name, t in rec_b["activations"].items():
            assert (rec_a["activations"][name] - t).abs().max() <= 1e-5 * t.abs().max()


@pytest.mark.parametrize("args, message", [
    (["--model", "/nonexistent/model"], "model path not found"),
    (["--model", "no-such-org/no-such-model"], "could not load model 'no-such-org/no-such-model'"),
    (["--benchmark", "/nonexistent.jsonl"], "nonexistent.jsonl"),
    (["--limit", "0"], "--limit must be at least 1"),
    (["--batch_size", "0"], "--batch_size must be at least 1"),
    (["--question_field", "prompt_text"], "prompt_text"),
    (["--capture_activations", "--layers", "embeddings,99"], "out of range"),
    (["--capture_activations", "--layers", "attn"], "valid names"),
    (["--capture_activations", "--positions", "middle"], "positions"),
])
def test_bad_input_is_one_line_and_exit_code_2(tiny_dir, tmp_path, capsys, args, message):
    model = [] if "--model" in args else ["--model", tiny_dir]
    code = run_main(*model, "--limit", 2, "--output_dir", tmp_path / "o", *args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tiny_dir, tmp_path):
    with pytest.raises(ValueError, match="--limit must be at least 1"):
        main.main(["--model", tiny_dir, "--limit", "0", "--output_dir", str(tmp_path / "o"), "--debug"])


def test_bad_layers_write_nothing(tiny_dir, tmp_path):
    out = tmp_path / "o"
    assert run_main("--model", tiny_dir, "--output_dir", out, "--capture_activations", "--layers", "nope") == 2
    assert not out.exists()


def test_malformed_and_empty_benchmarks_are_refused(tiny_dir, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "question": "Q?", "answer": "x"}\n{not json\n')
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    for path in (bad, empty):
        assert run_main("--model", tiny_dir, "--benchmark", path, "--output_dir", tmp_path / path.stem) == 2
        assert str(path.name) in capsys.readouterr().err


def test_existing_output_folder_is_refused_without_resume(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    assert run_main("--model", tiny_dir, "--limit", 2, "--output_dir", out) == 2
    assert "--resume" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "precious"


def test_utils_api_matches_main_on_one_question(tiny_dir, tmp_path):
    import utils
    model, tok = utils.load_model(tiny_dir)
    row = load_benchmark()[0]
    result = utils.answer_and_grade_benchmark_question(row, model, tokenizer=tok, max_new_tokens=6,
                                                       capture_activations=True, activation_save_dir=tmp_path)
    for key in ("id", "question", "prompt", "response", "answer", "extracted", "correct", "grader"):
        assert key in result
    alone, _ = answer_rows(model, tok, [row], GenerationSettings(max_new_tokens=6))[0]
    assert alone["response"] == result["response"]
    rec = utils.load_activations(result["activation_file"])
    assert rec["response"] == result["response"]
    assert utils.load_model(tiny_dir)[0] is model                         # loaded once, cached
    response, data = utils.generate_inference_with_activations(
        row["question"], model, tokenizer=tok, save_path=tmp_path / "x.safetensors", layers_to_capture=[0],
        max_new_tokens=4)
    assert response == utils.generate_inference(row["question"], model, tokenizer=tok, max_new_tokens=4)
    assert torch.equal(utils.load_activations(tmp_path / "x.safetensors")["activations"]["layer_0"],
                       data["activations"]["layer_0"])
