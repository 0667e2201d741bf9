"""The issue's tracebacks, each now one line or a quiet end: a device this machine lacks, a bare
question in the notebook API, a row dict without an id, and a closed stdout (`| head`) in both CLIs."""
import os
import subprocess
import sys

import pytest

from activation_eval.eval.benchmark import stable_id
from activation_eval.models import available_devices
from helpers import REPO_ROOT, run_main

ROOT = REPO_ROOT


@pytest.mark.parametrize("device", ["cuda", "cuda:1", "mps", "cuda:99"])
def test_missing_device_is_one_line_naming_what_is_available(tiny_dir, tmp_path, capsys, device):
    if device in available_devices() or (device == "cuda" and "cuda:0" in available_devices()):
        pytest.skip(f"this machine has {device}")
    out = tmp_path / "o"
    assert run_main("--model", tiny_dir, "--device", device, "--limit", 2, "--output_dir", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0]
    assert err[0] == (f"error: --device {device} is not available on this machine (available: "
                      f"{', '.join(available_devices())}); pass --device auto or one of those")
    assert not out.exists()


def test_api_bare_question_is_answered_ungraded(tiny_dir, tmp_path):
    import utils
    model, tok = utils.load_model(tiny_dir)
    question = "What is the capital of Peru?"
    result = utils.answer_and_grade_benchmark_question(question, model, tokenizer=tok, max_new_tokens=4,
                                                       capture_activations=True, activation_save_dir=tmp_path)
    assert result["correct"] is None and result["extracted"] is None and result["grader"] is None
    assert result["id"] == stable_id(question) and result["prompt"].startswith(question)
    assert os.path.basename(result["activation_file"]).startswith(stable_id(question))
    assert isinstance(utils.answer_benchmark_question(question, model, tokenizer=tok, max_new_tokens=4), str)


def test_api_row_without_id_gets_the_stable_id_and_the_conventions(tiny_dir, tmp_path):
    import utils
    model, tok = utils.load_model(tiny_dir)
    row = {"question": "What is 1 + 1?", "choices": ["1", "2", "3", "4"], "answer": 1}     # MMLU-shaped
    result = utils.answer_and_grade_benchmark_question(row, model, tokenizer=tok, max_new_tokens=4,
                                                       capture_activations=True, activation_save_dir=tmp_path)
    assert result["id"] == stable_id("What is 1 + 1?", ["1", "2", "3", "4"]) and result["answer"] == ["B"]
    assert result["grader"] == "choice:index" and isinstance(result["correct"], bool)
    assert os.path.isfile(result["activation_file"])
    with pytest.raises(ValueError, match="neither a letter A-D"):
        utils.answer_and_grade_benchmark_question(dict(row, answer="Z"), model, tokenizer=tok)


def _closed_stdout(args):
    """Run a command whose stdout reader has already gone (what `| head` does); returns (code, stderr)."""
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=dict(os.environ, HF_HUB_OFFLINE="1"))
    proc.stdout.close()
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.decode()


@pytest.mark.slow
def test_closed_pipe_ends_quietly_in_both_clis(tiny_dir, tmp_path):
    out = tmp_path / "run"
    code, err = _closed_stdout(["main.py", "--model", tiny_dir, "--limit", "2", "--max_new_tokens", "3", "--quiet",
                                "--output_dir", str(out), "--capture_activations", "--layers", "0"])
    assert code == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    assert (out / "summary.json").is_file()                                 # the run itself is complete
    record = next((out / "activations").iterdir())
    code, err = _closed_stdout(["analyze_activations.py", "--file", str(record)])
    assert code == 0 and "Traceback" not in err and "BrokenPipe" not in err, err
    code, err = _closed_stdout(["analyze_activations.py", "--file", str(record), "--json"])
    assert code == 0 and err == "", err
