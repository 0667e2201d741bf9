"""One owner per concept (issue 19, item 5): the final-norm lookup, the dtype tables, choice letters, "does this
row have a gold answer" and the accuracy interval each have one definition that the others use. Checked by
behaviour (capture and the lens find the same norm; the CLI offers the table's dtypes; the summary and the report
give the same interval) and by each table's text appearing in one module only, never by naming which module or
how long it is: modules may move, split or merge freely (issue 26)."""
import ast
import os

import pytest
import torch
from scipy import stats

from activation_eval import architecture, dtypes
from activation_eval.accuracy import accuracy_stats, wilson_interval
from helpers import REPO_ROOT, make_tokenizer, tiny_model

ROOT = REPO_ROOT
TINY_TYPES = ("llama", "qwen2", "gemma", "gpt2", "gpt_neox")


def opt_model():
    """A tiny OPT: its decoder keeps the layers AND the final norm (model.decoder.final_layer_norm),
    one level below the base model, where the lens's own name list used not to look."""
    from transformers import AutoConfig, AutoModelForCausalLM
    torch.manual_seed(0)
    config = AutoConfig.for_model("opt", vocab_size=300, hidden_size=64, ffn_dim=128, num_hidden_layers=2,
                                  num_attention_heads=4, word_embed_proj_dim=64, max_position_embeddings=128)
    return AutoModelForCausalLM.from_config(config).eval()


@pytest.fixture(scope="module")
def models():
    tok = make_tokenizer()
    built = {t: tiny_model(t, tok)[0] for t in TINY_TYPES}
    built["opt"] = opt_model()
    return built


# ----------------------------------------------------------------------------- final norm

@pytest.mark.parametrize("model_type", TINY_TYPES + ("opt",))
def test_capture_and_lens_find_the_same_final_norm(models, model_type):
    from activation_eval.analysis.lens import projection
    from activation_eval.capture import layers
    model = models[model_type]
    path, module = architecture.find_final_norm(model)
    assert module is not None and module is architecture.final_norm_module(model)
    assert projection.final_norm_module is architecture.final_norm_module        # the lens projects through it
    assert module is model.get_submodule(path)
    assert "final_norm" in layers.layer_names(model)


@pytest.mark.parametrize("model_type", TINY_TYPES + ("opt",))
def test_the_lens_through_the_found_norm_is_the_models_own_next_token_distribution(models, model_type):
    """Independent reference: the model's own logits. The last decoder layer's raw output, projected
    by the lens (final norm + unembedding), must give them; on OPT the lens raised before."""
    from activation_eval.analysis import lens
    from activation_eval.capture import hooks
    model = models[model_type]
    ids = torch.tensor([[5, 17, 42, 9, 77]])
    n_layers = len(architecture.find_decoder_layers(model)[1])
    last = f"layer_{n_layers - 1}"
    with torch.no_grad(), hooks.ActivationCapture(model, layers=[last, "final_norm"]) as cap:
        logits = model(ids).logits[0, -1]
    (acts, _), = cap.batch_activations([0], [5], [1], 5)
    hidden = torch.stack([acts[last][-1], acts["final_norm"][-1]])
    projected = lens.project(model, hidden, [last, "final_norm"])
    torch.testing.assert_close(projected[0], logits.float(), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(projected[1], logits.float(), rtol=1e-4, atol=1e-4)


def test_a_model_without_a_final_norm_gets_one_clear_error():
    from activation_eval.analysis.lens import projection

    class Block(torch.nn.Module):
        def forward(self, x):
            return x
    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList([Block(), Block()])
    assert architecture.find_final_norm(model) == (None, None)
    with pytest.raises(ValueError, match="cannot find the final norm of Module"):
        projection.final_norm_module(model)


# ----------------------------------------------------------------------------- dtype names

def test_dtype_names_come_from_one_table():
    """The leaf's tables agree with the libraries', and the CLI, the unpickler and the capture settings use them."""
    from safetensors import torch as st_torch

    from activation_eval.capture.generation import CaptureSettings
    from activation_eval.run.cli import build_parser
    from activation_eval.store import safe_pickle
    for code, dtype in st_torch._TYPES.items():                    # the safetensors library's own table
        assert dtypes.SAFETENSORS_DTYPES[code] == dtype, code
    assert set(dtypes.SAFETENSORS_DTYPES.values()) <= set(dtypes.TORCH_DTYPES.values())
    for name, dtype in dtypes.TORCH_DTYPES.items():
        assert getattr(torch, name) is dtype
        assert safe_pickle._RecordUnpickler.find_class(None, "torch", name) is dtype   # pickles name dtypes so
    options = {a.dest: a.choices for a in build_parser()._actions}
    assert list(options["dtype"]) == ["auto", *dtypes.FLOAT_DTYPES]
    assert list(options["activation_dtype"]) == list(dtypes.FLOAT_DTYPES)
    assert CaptureSettings(dtype="bfloat16").torch_dtype() is torch.bfloat16
    with pytest.raises(ValueError, match="unknown activation dtype 'fp8'; use one of float32, bfloat16, float16"):
        CaptureSettings(dtype="fp8").torch_dtype()


def literal_strings(path):
    return [n.value for n in ast.walk(ast.parse(open(path).read())) if isinstance(n, ast.Constant)
            and isinstance(n.value, str)]


def package_files():
    for folder, _, files in os.walk(os.path.join(ROOT, "activation_eval")):
        for name in files:
            if name.endswith(".py"):
                yield os.path.join(folder, name)


# text that only its owner spells: the choice letters, the dtype tables (two of their names), the final-norm names
ONE_OWNER = ("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "F8_E4M3FNUZ", "float8_e4m3fnuz", "final_layernorm")


@pytest.mark.parametrize("text", ONE_OWNER)
def test_each_table_is_written_in_one_module(text):
    holders = [os.path.relpath(p, os.path.join(ROOT, "activation_eval")) for p in package_files()
               if any(text in s for s in literal_strings(p))]
    assert len(holders) == 1, (text, holders)


@pytest.mark.parametrize("answer, expected", [(0, True), (1, True), ("B", True), (["Paris"], True), (0.5, True),
                                              (None, False), ("", False), ("   ", False), ([], False),
                                              ([""], False), ([None, " "], False)])
def test_has_gold(answer, expected):
    from activation_eval.eval import gold
    assert gold.has_gold({"question": "?", "answer": answer, "choices": ["x", "y"]}) is expected


def test_a_gold_index_0_is_graded_by_log_likelihood_scoring_too():
    """answer 0 is choice A (Hugging Face convention): multiple_choice used `not row.get("answer")` and
    left such a row ungraded while generation graded it."""
    from activation_eval.eval import multiple_choice, prompts
    row = {"id": "q", "question": "?", "answer": 0, "choices": ["Paris", "Rome"]}
    verdict = multiple_choice._grade("A", row)
    assert verdict["correct"] is True and verdict["grader"] == "choice:index"
    assert multiple_choice._grade("B", row)["correct"] is False
    assert multiple_choice._grade("A", dict(row, answer=[]))["correct"] is None
    assert prompts.format_question(row).endswith("Answer with the letter of the correct choice.")


def test_a_bare_question_with_blank_answer_is_answered_ungraded():
    from activation_eval.api import _as_row
    row = _as_row({"question": "What is 2 + 2?", "answer": "  "})
    assert row["answer"] == [] and row["grader"] is None


# ----------------------------------------------------------------------------- the accuracy interval

@pytest.mark.parametrize("k, n", [(0, 12), (12, 12), (3, 12), (64, 122), (1, 1), (499, 1000)])
def test_wilson_against_scipy(k, n):
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = wilson_interval(k, n)
    assert low == pytest.approx(ref.low, abs=1e-12) and high == pytest.approx(ref.high, abs=1e-12)
    assert high > low


def test_zero_of_twelve_never_prints_a_zero_width_interval(tmp_path):
    from activation_eval.run.config import RunConfig
    from activation_eval.run.summary import make_summary
    from activation_eval.schema.summary import format_summary
    results = [{"id": f"q{i}", "category": "x", "correct": False} for i in range(12)]
    summary = make_summary(RunConfig(output_dir=str(tmp_path / "o")), results, 1.0, 12)
    low, high = summary["accuracy_ci95"]
    assert low == 0.0 and high == pytest.approx(stats.binomtest(0, 12).proportion_ci(method="wilson").high)
    text = format_summary(summary)
    assert "0.0%-0.0%" not in text and "0.0%-24.2%" in text


def test_identical_samples_per_question_are_as_wide_as_the_questions():
    per_question = [True, False, False, True, False, False, False, True, False, False]
    for samples in (2, 3, 7):
        flags = [c for c in per_question for _ in range(samples)]
        ids = [i for i in range(10) for _ in range(samples)]
        s = accuracy_stats(flags, questions=ids)
        assert s["effective_n"] == pytest.approx(10)
        assert s["ci95"] == pytest.approx(list(wilson_interval(3, 10)), abs=1e-12)
    all_wrong = accuracy_stats([False] * 12, questions=[i // 3 for i in range(12)])     # 4 questions x 3
    assert all_wrong["ci95"] == pytest.approx(list(wilson_interval(0, 4)), abs=1e-12)
    assert all_wrong["ci95"][1] > 0


def test_independent_looking_samples_are_not_narrower_than_independent_answers():
    # each question half right: no between-question variance (deff would be 0); kept at deff = 1
    flags = [True, False] * 20
    s = accuracy_stats(flags, questions=[i // 2 for i in range(40)])
    assert s["effective_n"] == 40 and s["ci95"] == pytest.approx(list(wilson_interval(20, 40)))


def test_summary_and_report_give_the_same_interval_for_one_run(tmp_path):
    """The summary's clustered bootstrap and the report's plain Wilson gave two 95% intervals for one run."""
    from activation_eval.analysis import report
    from activation_eval.run.config import RunConfig
    from activation_eval.run.summary import make_summary
    results = [{"id": f"q{i}", "sample": k, "category": "c" if i % 2 else "d", "correct": (i * 7 + k) % 5 < 2}
               for i in range(15) for k in range(3)]
    summary = make_summary(RunConfig(output_dir=str(tmp_path / "o"), temperature=0.7, num_samples=3), results, 1.0, 45)
    shown = report.run_summary(str(tmp_path / "o"), results, {})      # no summary.json: built from the rows
    assert shown["accuracy_ci95"] == summary["accuracy_ci95"] and shown["questions"] == 15
    for name, cell in shown["per_category"].items():
        assert cell["ci95"] == summary["per_category"][name]["ci95"]
    single = results[::3]
    summary1 = make_summary(RunConfig(output_dir=str(tmp_path / "p")), single, 1.0, 15)
    assert report.run_summary(str(tmp_path / "p"), single, {})["accuracy_ci95"] == summary1["accuracy_ci95"]


def test_the_interval_method_is_named():
    from activation_eval import accuracy
    assert "Wilson" in accuracy.INTERVAL_METHOD


def test_shape_and_layout_checks():
    from activation_eval.store import checks
    assert checks.check_shape([3, 0, 2 ** 40]) == (3, 0, 2 ** 40)
    for bad in ([-1], [2 ** 30, 2 ** 30], [1] * 17, [True], "12"):
        with pytest.raises(ValueError):
            checks.check_shape(bad)
    t = torch.arange(6).reshape(2, 3)
    for view in (t, t.t(), t.reshape(3, 2), torch.arange(24).reshape(2, 3, 4).permute(2, 0, 1)):
        order = checks.dense_axis_order(tuple(view.shape), view.stride())
        assert sorted(view.stride(), reverse=True) == [view.stride()[i] for i in order]
    for size, stride in (((2, 3), (0, 1)), ((2, 3), (2, 1)), ((2, 3), (3, 2))):      # broadcast, overlap, gap
        with pytest.raises(ValueError, match="not dense"):
            checks.dense_axis_order(size, stride)
