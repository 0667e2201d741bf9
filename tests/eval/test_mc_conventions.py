"""--mc_scoring loglikelihood follows lm-evaluation-harness's conventions (issue 22 item 3).

Two styles (--mc_style): mmlu (choices listed, " A", " B", ... scored after "Answer:") and cloze
(choices not listed, " " + each choice's text scored). The reference is lm-eval 0.4.13 itself: its
`hf` backend runs a local YAML multiple_choice task over the same rows with our prompt text as
doc_to_text and our targets as doc_to_choice, on the same tiny model in fp32; every per-choice
log-likelihood agrees within 1e-4 and acc / acc_norm / acc_bytes agree per document.
"""
import json
import os

import pytest

from activation_eval.capture.generation import GenerationSettings
from activation_eval.eval.multiple_choice import continuations, iter_choice_scores, pick, refusal, targets
from activation_eval.eval.prompts import PromptSettings, format_question, with_prompts
from activation_eval.eval.rows import normalize_row
from activation_eval.run.config import RunConfig, RunError
from activation_eval.run.plan import refused_rows, select_rows
from helpers import read_rows, run_main

RAW = [
    {"id": "mammal", "question": "Which is a mammal?", "choices": ["Eagle", "Whale", "Trout", "Lizard"], "answer": 1},
    {"id": "capital", "question": "What is the capital of France?", "choices": ["Paris", "Rome", "Oslo"],
     "answer": "A", "category": "geo"},
    {"id": "fox", "question": "Which is quick?", "choices": ["the lazy dog", "a quick brown fox"], "answer": "B"},
    {"id": "accents", "question": "Which word has accents?", "choices": ["café crème", "plain", "naïve ünïcödé"],
     "answer": "C"},
    {"id": "lettered", "question": "two plus two", "choices": ["A) 3", "B) 4", "C) 22"], "answer": "B) 4"},
    {"id": "numbers", "question": "Pick a number", "choices": ["0", "42", "100", "seven"], "answer": ["42"]},
]
ROWS = [normalize_row(r) for r in RAW]
OFF = GenerationSettings(use_chat_template="off")      # lm-eval's hf backend applies no chat template by default


# ----------------------------------------------------------------------------- prompts and targets

def test_mmlu_style_lists_the_choices_and_scores_the_letters():
    row = ROWS[0]
    assert format_question(row, style="mmlu") == "Which is a mammal?\nA. Eagle\nB. Whale\nC. Trout\nD. Lizard\nAnswer:"
    assert targets(row, "mmlu") == ["A", "B", "C", "D"]
    assert continuations(row, style="mmlu") == [" A", " B", " C", " D"]


def test_cloze_style_does_not_list_the_choices_and_scores_their_texts():
    row = ROWS[0]
    assert format_question(row, style="cloze") == "Question: Which is a mammal?\nAnswer:"
    assert continuations(row, style="cloze") == [" Eagle", " Whale", " Trout", " Lizard"]
    assert continuations(ROWS[4], style="cloze") == [" 3", " 4", " 22"]       # the letters the file carried are not scored


def test_fewshot_examples_show_the_styles_target():
    pool = [ROWS[1], ROWS[2]]
    mmlu = with_prompts([ROWS[0]], PromptSettings(num_fewshot=2, style="mmlu"), pool)[0]["prompt"]
    cloze = with_prompts([ROWS[0]], PromptSettings(num_fewshot=2, style="cloze"), pool)[0]["prompt"]
    assert "C. Oslo\nAnswer: A\n\n" in mmlu and mmlu.endswith("D. Lizard\nAnswer:")
    assert "Question: What is the capital of France?\nAnswer: Paris\n\n" in cloze
    assert "Answer: a quick brown fox\n\n" in cloze and cloze.endswith("Question: Which is a mammal?\nAnswer:")


def test_pick_normalises_by_characters_and_by_bytes_as_lm_eval():
    # lm-eval 0.4.13 process_results: acc_norm divides by len(choice) (characters), acc_bytes by UTF-8 bytes
    lls = [-5.0, -6.0, -4.0]
    texts = ["éé", "abc", "x"]                        # 2 chars / 4 bytes, 3 / 3, 1 / 1
    # acc: -4 (x); per char: -2.5, -2.0, -4.0 -> abc; per byte: -1.25, -2.0, -4.0 -> éé
    assert pick(lls, texts) == (2, 1, 0)
    assert pick([-3.0, -2.0], ["A", "B"]) == (1, 1, 1)


# ----------------------------------------------------------------------------- equal to lm-eval

YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: prompt
doc_to_choice: targets
doc_to_target: label
metric_list:
  - metric: acc
  - metric: acc_norm
  - metric: acc_bytes
"""


def _lm_eval_samples(tiny_dir, folder, docs_by_task):
    """lm-eval's hf backend on local tasks {name: [{"prompt", "targets", "label"}]} -> {name: {doc_id: sample}}."""
    import lm_eval
    from lm_eval.tasks import TaskManager
    for name, docs in docs_by_task.items():
        data = folder / f"{name}.jsonl"
        data.write_text("".join(json.dumps(d) + "\n" for d in docs))
        (folder / f"{name}.yaml").write_text(YAML.format(name=name, data=data))
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    # only these local tasks: indexing lm-eval's thousands of bundled task files took ~10 s of every run
    tasks = TaskManager(include_path=str(folder), include_defaults=False)
    out = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": tiny_dir, "dtype": "float32"},
                                  tasks=list(docs_by_task), task_manager=tasks,
                                  batch_size=4, device="cpu", bootstrap_iters=0, log_samples=True)
    return {name: {s["doc_id"]: s for s in samples} for name, samples in out["samples"].items()}, out["results"]


@pytest.fixture(scope="module")
def scored(tiny_dir):
    """Our scores of ROWS in both styles, from the saved tiny model (no chat template: lm-eval's default)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype="float32").eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    out = {}
    for style in ("mmlu", "cloze"):
        rows = with_prompts(ROWS, PromptSettings(style=style))
        out[style] = [result for result, _ in iter_choice_scores(model, tok, rows, OFF, batch_size=4, style=style)]
    return out


@pytest.mark.slow
def test_scores_equal_lm_evals_hf_backend_per_choice_and_per_document(tiny_dir, scored, tmp_path):
    docs = {}
    for style, results in scored.items():
        docs[f"ours_{style}"] = [{"prompt": r["prompt"], "targets": targets(row, style),
                                  "label": "ABCDEFGH".index(row["answer"][0])} for r, row in zip(results, ROWS)]
    samples, metrics = _lm_eval_samples(tiny_dir, tmp_path, docs)
    for style, results in scored.items():
        task = samples[f"ours_{style}"]
        assert sorted(task) == list(range(len(ROWS)))
        for doc_id, result in enumerate(results):
            s = task[doc_id]
            theirs = [resp[0][0] for resp in s["resps"]]
            assert [a[1] for a in s["arguments"]] == continuations(ROWS[doc_id], style=style)   # same continuations
            assert result["choice_logprobs"] == pytest.approx(theirs, abs=1e-4), (style, result["id"])
            assert (result["correct"], result["correct_norm"], result["correct_bytes"]) == \
                (s["acc"] == 1.0, s["acc_norm"] == 1.0, s["acc_bytes"] == 1.0), (style, result["id"])
        n = len(results)
        got = metrics[f"ours_{style}"]
        assert got["acc,none"] == pytest.approx(sum(r["correct"] for r in results) / n)
        assert got["acc_norm,none"] == pytest.approx(sum(r["correct_norm"] for r in results) / n)
        assert got["acc_bytes,none"] == pytest.approx(sum(r["correct_bytes"] for r in results) / n)


def test_rows_carry_both_predictions_and_the_mmlu_letters(scored):
    for result in scored["mmlu"]:
        assert result["style"] == "mmlu" and result["prompt"].endswith("\nAnswer:")
        assert result["extracted"] == result["extracted_norm"] == result["extracted_bytes"]   # one letter each
        assert result["response"] in ROWS[[r["id"] for r in ROWS].index(result["id"])]["choices"]
    for result in scored["cloze"]:
        assert {"extracted_norm", "correct_norm", "extracted_bytes", "correct_bytes"} <= set(result)
        assert "A. " not in result["prompt"]


# ----------------------------------------------------------------------------- several accepted letters

MULTI = {"id": "multi", "question": "Which are even?", "choices": ["2", "3", "4"], "answer": ["A", "C"]}


def test_multi_answer_rows_are_refused_by_name(llama):
    model, tok = llama
    row = normalize_row(MULTI)
    assert "row 'multi' accepts several choices (A, C)" in refusal(row)
    with pytest.raises(ValueError, match="row 'multi' accepts several choices"):
        list(iter_choice_scores(model, tok, ROWS[:2] + [row]))
    config = RunConfig(mc_scoring="loglikelihood", output_dir="unused")
    assert [r["id"] for r in select_rows(ROWS + [row], config, warn=False)] == [r["id"] for r in ROWS]
    assert refused_rows(ROWS + [row], config) == [{"id": "multi", "where": "row multi", "reason": refusal(row)}]
    with pytest.raises(RunError, match="--strict: row 'multi' accepts several choices"):
        select_rows(ROWS + [row], RunConfig(mc_scoring="loglikelihood", output_dir="unused", strict=True))


# ----------------------------------------------------------------------------- the flag

def test_mc_style_defaults_and_checks():
    assert RunConfig(mc_scoring="loglikelihood", output_dir="o").mc_style == "mmlu"
    assert RunConfig(mc_scoring="loglikelihood", output_dir="o",
                     prompt_template="Question: {question}\nAnswer:").mc_style == "cloze"
    assert RunConfig(mc_scoring="loglikelihood", output_dir="o", prompt_template="{question}\n{choices}\nAnswer:",
                     mc_style="cloze").mc_style == "cloze"
    assert RunConfig(output_dir="o").mc_style is None                        # generation: no style
    with pytest.raises(RunError, match="has no {choices}, so the prompt never shows them"):
        RunConfig(mc_scoring="loglikelihood", output_dir="o", prompt_template="Q: {question}\nA:", mc_style="mmlu")
    with pytest.raises(RunError, match="--mc_style cloze chooses what --mc_scoring loglikelihood scores"):
        RunConfig(output_dir="o", mc_style="cloze")
    with pytest.raises(RunError, match="--mc_style must be one of mmlu, cloze"):
        RunConfig(mc_scoring="loglikelihood", output_dir="o", mc_style="hellaswag")


def test_run_scores_mmlu_style_reports_acc_norm_with_intervals_and_refuses_multi_answer_rows(tiny_dir, tmp_path,
                                                                                          capsys, caplog):
    bench = tmp_path / "mc.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in RAW + [MULTI]))
    out = tmp_path / "run"
    args = ["--model", tiny_dir, "--benchmark", bench, "--mc_scoring", "loglikelihood", "--chat_template", "off",
            "--batch_size", 3]
    assert run_main(*args, "--output_dir", out) == 0
    assert "skipping row 'multi' accepts several choices (A, C)" in caplog.text
    rows = read_rows(out)
    assert [r["id"] for r in rows] == [r["id"] for r in RAW]
    assert all(r["style"] == "mmlu" and r["prompt"].endswith("Answer:") for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    norm = summary["log_likelihood"]["norm"]
    assert summary["details"]["mc_style"] == "mmlu" and summary["skipped_ids"] == ["multi"]
    low, high = norm["ci95"]
    assert low < norm["accuracy"] < high or norm["accuracy"] in (low, high)
    assert high - low > 0.2                                        # 6 questions: never a collapsed interval
    printed = capsys.readouterr().out
    assert "acc_norm   " in printed and "acc_bytes  " in printed and "95% CI" in printed.split("acc_norm")[1]
    # an older run scored by log-likelihood (no mc_style stored) is not resumed under the new conventions
    config = json.loads((out / "run_config.json").read_text())
    del config["mc_style"]
    (out / "run_config.json").write_text(json.dumps(config))
    assert run_main(*args, "--output_dir", out, "--resume") == 2
