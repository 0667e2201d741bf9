"""--p_true through the CLI's runner: every answered row carries P(True), equal to an independent
reference (tests/helpers.py p_true_reference); rows are written complete, so a crash while asking
leaves the unit to --resume; run_config.json records the setting."""
import json
import os

import pytest
from transformers import AutoModelForCausalLM, AutoTokenizer

from activation_eval import schema
from activation_eval.eval import p_true
from activation_eval.store.run_folder import CONFIG_FILE
from helpers import p_true_reference, read_rows, run_main


def args(model, out, *extra, limit=6):
    # model.generate batches of 2: three units of questions
    return ["--model", model, "--limit", limit, "--batch_size", 2, "--max_new_tokens", 4, "--no_continuous_batching",
            "--p_true", "--output_dir", out, *extra]


@pytest.fixture(scope="module")
def reference_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("p_true") / "run"
    assert run_main(*args(tiny_dir, out)) == 0
    return out


def test_rows_carry_p_true_of_an_independent_forward(tiny_dir, reference_run):
    rows = read_rows(reference_run)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)                 # with a chat template: the run applies it
    assert len(rows) == 6
    for row in rows:
        want = p_true_reference(model, tok, row["question"], row["response"], chat=True)
        assert row[schema.P_TRUE] == pytest.approx(want, abs=1e-5)
        assert all(k in row for k in schema.CONFIDENCE_FIELDS)
    with open(os.path.join(reference_run, CONFIG_FILE)) as f:
        assert json.load(f)["p_true"] is True


def test_a_crash_while_asking_leaves_the_unit_to_resume(tiny_dir, reference_run, tmp_path, monkeypatch):
    out = tmp_path / "run"
    real, calls = p_true.iter_scored_records, {"n": 0}

    def crash_on_the_second_unit(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("injected failure while asking P(True)")
        return real(*a, **k)
    monkeypatch.setattr(p_true, "iter_scored_records", crash_on_the_second_unit)
    assert run_main(*args(tiny_dir, out)) == 2
    written = read_rows(out)
    assert len(written) == 2 and all(schema.P_TRUE in r for r in written)     # the first unit, complete
    monkeypatch.setattr(p_true, "iter_scored_records", real)
    assert run_main(*args(tiny_dir, out), "--resume") == 0
    assert sorted(read_rows(out), key=lambda r: r["id"]) == sorted(read_rows(reference_run), key=lambda r: r["id"])
    # the stored setting is part of the run: resuming without it is refused
    assert run_main(*[a for a in args(tiny_dir, out) if a != "--p_true"], "--resume") == 2


def test_shard_store_rows_carry_p_true(tiny_dir, reference_run, tmp_path):
    out = tmp_path / "run"
    assert run_main(*args(tiny_dir, out, "--capture_activations", "--activation_store", "shards", "--layers", "0")) == 0
    rows, ref = read_rows(out), {r["id"]: r for r in read_rows(reference_run)}
    assert len(rows) == 6
    for row in rows:
        assert row["activation_shard"] and row[schema.P_TRUE] == ref[row["id"]][schema.P_TRUE]     # capture changes nothing


def test_without_the_flag_rows_have_no_p_true(tiny_dir, tmp_path):
    out = tmp_path / "run"
    assert run_main(*[a for a in args(tiny_dir, out, limit=2) if a != "--p_true"]) == 0
    rows = read_rows(out)
    assert rows and all(schema.P_TRUE not in r and schema.ANSWER_LOGPROB_SUM in r for r in rows)
    with open(os.path.join(out, CONFIG_FILE)) as f:
        assert json.load(f)["p_true"] is False
