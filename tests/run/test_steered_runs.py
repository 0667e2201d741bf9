"""A steered run through main.py is a normal run folder that says so (issue 28): run_config.json, every
row, every record and summary.json carry the interventions; alpha 0 answers bit for bit as a plain run;
--resume refuses to mix interventions; bad input is one line and writes nothing."""
import json
import os

import numpy as np
import pytest
import torch

from activation_eval.capture.intervene import steer
from activation_eval.run.config import RunConfig, RunError
from activation_eval.store.directions import save_direction
from activation_eval.store.run_folder import CONFIG_FILE, SUMMARY_FILE
from activation_eval.store.run_reader import load_activations
from helpers import read_rows, run_main

HIDDEN = 64           # the tiny llama's hidden size (helpers.tiny_config)


def base(model, out, *extra, limit=3):
    return ["--model", model, "--limit", limit, "--batch_size", 2, "--max_new_tokens", 4, "--output_dir", out,
            "--capture_activations", "--layers", "embeddings,1,2", *extra]


def _json(folder, name):
    with open(os.path.join(folder, name)) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def direction(tmp_path_factory):
    vector = torch.randn(HIDDEN, generator=torch.Generator().manual_seed(3))
    return save_direction(tmp_path_factory.mktemp("dirs") / "u.safetensors", vector, source="test"), vector


@pytest.fixture(scope="module")
def plain_run(tiny_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("plain") / "run"
    assert run_main(*base(tiny_dir, out)) == 0
    return out


def test_steered_folder_says_so_everywhere(tiny_dir, direction, plain_run, tmp_path):
    path, vector = direction
    out = tmp_path / "steered"
    assert run_main(*base(tiny_dir, out, "--steer", path, "--steer_layer", "-2", "--steer_alpha", 40)) == 0
    want = {"kind": "add", "layer": "layer_1", "positions": "all", "alpha": 40.0,
            "direction_sha256": steer(vector, "layer_1", 40.0).entry()["direction_sha256"],
            "direction_source": os.path.abspath(path), "hidden_size": HIDDEN}
    assert _json(out, CONFIG_FILE)["interventions"] == [want]
    assert _json(out, SUMMARY_FILE)["interventions"] == [want]
    assert _json(plain_run, CONFIG_FILE)["interventions"] == [] and _json(plain_run, SUMMARY_FILE)["interventions"] == []
    rows, plain_rows = read_rows(out), read_rows(plain_run)
    assert [r["interventions"] for r in rows] == [[want]] * 3
    assert not any("interventions" in r for r in plain_rows)
    for row, plain in zip(rows, plain_rows):
        record = load_activations(str(out), question_id=row["id"])
        assert record["interventions"] == [want]
        before = load_activations(str(plain_run), question_id=row["id"])
        # the edit is made before capture: the prompt's layer_1 output is the plain one plus 40 u
        n = min(record["activations"]["layer_1"].shape[0], before["activations"]["layer_1"].shape[0],
                record["num_prompt_tokens"])
        u = vector / vector.norm()
        got = record["activations"]["layer_1"][:n].float()
        assert torch.allclose(got, before["activations"]["layer_1"][:n].float() + 40 * u, atol=1e-4)
        assert torch.equal(record["activations"]["embeddings"][:n], before["activations"]["embeddings"][:n])
        assert row["answer_logprob_sum"] != plain["answer_logprob_sum"]


def test_alpha_zero_is_the_plain_run_bit_for_bit(tiny_dir, direction, plain_run, tmp_path):
    out = tmp_path / "zero"
    assert run_main(*base(tiny_dir, out, "--steer", direction[0], "--steer_layer", "layer_1", "--steer_alpha", 0)) == 0
    rows, plain_rows = read_rows(out), read_rows(plain_run)
    assert all(r.pop("interventions")[0]["alpha"] == 0.0 for r in rows)     # it says so, and changes nothing
    assert rows == plain_rows
    for row in rows:
        a, b = (load_activations(str(f), question_id=row["id"]) for f in (out, plain_run))
        assert torch.equal(a["output_ids"], b["output_ids"]) and set(a["activations"]) == set(b["activations"])
        assert all(torch.equal(a["activations"][k], b["activations"][k]) for k in a["activations"])


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_resume_refuses_other_interventions(tiny_dir, direction, tmp_path, capsys):
    path = direction[0]
    out = tmp_path / "r"
    steered = ("--steer", path, "--steer_layer", "1", "--steer_alpha", 4)
    assert run_main(*base(tiny_dir, out, *steered, limit=2)) == 0
    capsys.readouterr()
    for other in [("--steer", path, "--steer_layer", "1", "--steer_alpha", 5), (),
                  ("--steer", path, "--steer_layer", "2", "--steer_alpha", 4),
                  (*steered, "--intervention_positions", "prompt"), ("--ablate", path, "--ablate_layer", "1")]:
        assert run_main(*base(tiny_dir, out, *other, "--resume", limit=3)) == 2
        err = _one_line_error(capsys)
        assert "other interventions" in err and "stored add layer_1 alpha 4.0 at all" in err, err
    assert len(read_rows(out)) == 2                                   # nothing was answered by a refused resume
    elsewhere = tmp_path / "copy.npy"                         # the same direction from another file and format
    np.save(elsewhere, direction[1].numpy())
    assert run_main(*base(tiny_dir, out, "--steer", elsewhere, "--steer_layer", "layer_1",
                          "--steer_alpha", 4, "--resume", limit=3)) == 0
    assert len(read_rows(out)) == 3


def test_plain_resume_refuses_steering_and_old_folders_read_as_plain(tiny_dir, direction, tmp_path, capsys):
    out = tmp_path / "p"
    assert run_main(*base(tiny_dir, out, limit=1)) == 0
    stored = _json(out, CONFIG_FILE)
    del stored["interventions"]                                       # a folder written before interventions
    with open(os.path.join(out, CONFIG_FILE), "w") as f:
        json.dump(stored, f)
    capsys.readouterr()
    assert run_main(*base(tiny_dir, out, "--steer", direction[0], "--steer_layer", "1", "--steer_alpha", 1,
                          "--resume", limit=2)) == 2
    assert "stored none, now add layer_1 alpha 1.0" in _one_line_error(capsys)
    assert run_main(*base(tiny_dir, out, "--resume", limit=2)) == 0
    assert len(read_rows(out)) == 2


@pytest.mark.parametrize("extra, words", [
    (("--steer", "DIR", "--steer_alpha", 2), "add --steer_layer"),
    (("--steer", "DIR", "--steer_layer", 1), "add --steer_alpha"),
    (("--steer_layer", 1, "--steer_alpha", 2), "add --steer"),
    (("--steer", "MISSING", "--steer_layer", 1, "--steer_alpha", 2), "no such file"),
    (("--ablate", "DIR"), "--ablate_layer"),
    (("--intervention_positions", "prompt"), "needs --steer or --ablate"),
    (("--steer", "DIR", "--steer_layer", 1, "--steer_alpha", "nan"), "finite"),
    (("--steer", "BAD", "--steer_layer", 1, "--steer_alpha", 2), "all zeros"),
])
def test_bad_flags_are_one_line_before_anything_is_written(tiny_dir, direction, tmp_path, capsys, extra, words):
    bad = save_direction(tmp_path / "ok.safetensors", torch.ones(4))
    with open(bad, "r+b") as f:                                       # zero its numbers: an unusable file
        f.seek(-16, 2)
        f.write(b"\0" * 16)
    names = {"DIR": direction[0], "MISSING": str(tmp_path / "nope.safetensors"), "BAD": bad}
    out = tmp_path / "out"
    assert run_main(*base(tiny_dir, out, *[names.get(a, a) if isinstance(a, str) else a for a in extra])) == 2
    assert words in _one_line_error(capsys)
    assert not out.exists()


@pytest.mark.parametrize("extra, words", [
    (("--steer_layer", 7), "layer"),                                   # the tiny llama has 3 layers
    (("--steer_layer", "model.nope"), "model.nope"),
])
def test_layer_and_size_checks_need_the_model_and_leave_no_run(tiny_dir, direction, tmp_path, capsys, extra, words):
    out = tmp_path / "out"
    assert run_main(*base(tiny_dir, out, "--steer", direction[0], "--steer_alpha", 1, *extra)) == 2
    assert words in _one_line_error(capsys)
    assert not os.path.exists(os.path.join(out, CONFIG_FILE)) and not os.path.exists(os.path.join(out, "results.jsonl"))


def test_direction_of_another_size_is_refused(tiny_dir, tmp_path, capsys):
    wide = save_direction(tmp_path / "wide.safetensors", torch.randn(HIDDEN + 1))
    out = tmp_path / "out"
    assert run_main(*base(tiny_dir, out, "--ablate", wide, "--ablate_layer", "1")) == 2
    assert f"{HIDDEN + 1} numbers but the model's hidden size is {HIDDEN}" in _one_line_error(capsys)
    assert not os.path.exists(os.path.join(out, CONFIG_FILE))


def test_programmatic_interventions_and_their_exclusions(tmp_path, direction):
    item = steer(torch.ones(HIDDEN), "layer_1", 2.0, source="causal: fold 0 mass_mean")
    config = RunConfig(output_dir=str(tmp_path / "a"), interventions=[item])
    assert config.applied_interventions() == (item,)
    assert config.generation_settings().interventions == (item,)
    assert config.resume_view()["interventions"][0]["direction_source"] == "causal: fold 0 mass_mean"
    with pytest.raises(RunError, match="not both"):
        RunConfig(output_dir=str(tmp_path / "b"), interventions=[item], ablate=direction[0], ablate_layer="1")
    with pytest.raises(RunError, match="Intervention objects"):
        RunConfig(output_dir=str(tmp_path / "c"), interventions=[torch.ones(HIDDEN)])
    both = RunConfig(output_dir=str(tmp_path / "d"), steer=direction[0], steer_layer="1", steer_alpha=1.0,
                     ablate=direction[0], ablate_layer="1")
    assert [i.kind for i in both.applied_interventions()] == ["ablate", "add"]      # ablation first
    assert RunConfig(output_dir=str(tmp_path / "e")).resume_view()["interventions"] == []


def test_gold_logprob_rows_follow_the_intervention(tiny_dir, direction, tmp_path):
    runs = {}
    for name, extra in [("plain", ()), ("zero", ("--steer", direction[0], "--steer_layer", 1, "--steer_alpha", 0)),
                        ("steered", ("--steer", direction[0], "--steer_layer", 1, "--steer_alpha", 20,
                                     "--intervention_positions", "generated"))]:
        out = tmp_path / name
        assert run_main(*base(tiny_dir, out, "--gold_logprob", "--no_continuous_batching", *extra)) == 0
        runs[name] = read_rows(out)
        assert _json(out, CONFIG_FILE)["gold_logprob"] is True
    gold = {name: [r["gold_logprob_sum"] for r in rows] for name, rows in runs.items()}
    assert all(r["gold_num_tokens"] >= 1 and r["gold_logprob_mean"] < 0 for r in runs["plain"])
    assert gold["zero"] == gold["plain"]
    # steering only the generated positions: the answers' prompts are untouched, the gold's tokens are not
    assert all(a != b for a, b in zip(gold["steered"], gold["plain"]))


def test_gold_logprob_of_a_scored_multiple_choice_row_is_its_gold_letters_score(tiny_dir, direction, tmp_path):
    """--mc_scoring loglikelihood scores " A", " B", ... after the same prompt: the gold's figure is the gold
    letter's score, steered or not (the same forward under the same interventions)."""
    for name, extra in [("plain", ()), ("steered", ("--steer", direction[0], "--steer_layer", 1, "--steer_alpha", 9,
                                                    "--intervention_positions", "generated"))]:
        out = tmp_path / name
        assert run_main("--model", tiny_dir, "--limit", 4, "--mc_scoring", "loglikelihood", "--gold_logprob",
                        "--chat_template", "off", "--output_dir", out, *extra) == 0
        for row in read_rows(out):
            gold = "ABCDEFGHIJ".index(row["answer"][0])
            assert row["gold_num_tokens"] >= 1
            assert row["gold_logprob_sum"] == pytest.approx(row["choice_logprobs"][gold], abs=1e-6)
