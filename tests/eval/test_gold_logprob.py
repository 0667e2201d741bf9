"""--gold_logprob's scores (eval/gold_logprob.py) equal an independent reference: one plain transformers
forward of prompt + gold, log_softmax by hand, summed over the gold's tokens; with and without a chat
template, under a steering intervention (the reference edits the layer with its own hook)."""
import pytest
import torch

from activation_eval.capture.generation import GenerationSettings
from activation_eval.capture.intervene import steer
from activation_eval.eval.benchmark import load_benchmark
from activation_eval.eval.gold_logprob import add_gold_logprob, gold_logprobs, gold_text
from activation_eval.eval.prompts import prompt_of, with_prompts
from activation_eval.schema import GOLD_LOGPROB_MEAN, GOLD_LOGPROB_SUM, GOLD_NUM_TOKENS

CHOICE = {"id": "mc1", "question": "Largest planet?", "choices": ["Mars", "Jupiter", "Venus"], "answer": ["B"],
          "grader": "choice"}
TEXT = {"id": "t1", "question": "Capital of France?", "answer": ["Paris", "paris"], "grader": "text"}


def reference(model, tok, prompt, gold, chat=False, edit=None):
    """(sum of log p over gold's tokens, their number): context + continuation tokenised as one string and
    split after the context's tokens (lm-eval); `edit`: (layer module, vector) added to its output."""
    context = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                      add_generation_prompt=True) if chat else prompt
    continuation = gold if chat else " " + gold
    n_context = len(tok(context, add_special_tokens=not chat)["input_ids"])
    whole = tok(context + continuation, add_special_tokens=not chat)["input_ids"]
    handle = None
    if edit is not None:
        module, vector = edit
        handle = module.register_forward_hook(lambda m, a, out: (out[0] + vector,) + tuple(out[1:])
                                              if isinstance(out, tuple) else out + vector)
    try:
        with torch.no_grad():
            logits = model(torch.tensor([whole])).logits[0].double()
    finally:
        if handle is not None:
            handle.remove()
    logprobs = torch.log_softmax(logits, dim=-1)
    total = sum(float(logprobs[j - 1, whole[j]]) for j in range(n_context, len(whole)))
    return total, len(whole) - n_context


def test_gold_text_is_what_the_prompt_asks_for():
    assert gold_text(CHOICE) == "B"                              # the prompt lists lettered choices
    assert gold_text(CHOICE, "cloze") == "Jupiter"                # cloze: the choice's text
    assert gold_text(TEXT) == "Paris"                             # the first accepted answer
    assert gold_text({"id": "n", "question": "?", "answer": ["A", "C"], "choices": ["x", "y", "z"],
                      "grader": "choice_all"}) == "A, C"
    assert gold_text({"id": "b", "question": "?", "answer": None}) is None


@pytest.mark.parametrize("chat", [False, True])
def test_scores_equal_a_plain_forward(llama, tokenizer, chat_tokenizer, chat):
    model, tok = llama[0], (chat_tokenizer if chat else tokenizer)
    rows = with_prompts([CHOICE, TEXT, *load_benchmark()[:3]])
    got = gold_logprobs(model, tok, rows, GenerationSettings(), batch_size=2)
    for row, scores in zip(rows, got):
        want, n = reference(model, tok, prompt_of(row), gold_text(row), chat)
        assert scores[GOLD_NUM_TOKENS] == n
        assert scores[GOLD_LOGPROB_SUM] == pytest.approx(want, abs=1e-4)
        assert scores[GOLD_LOGPROB_MEAN] == pytest.approx(want / n, abs=1e-4)


def test_under_steering_the_scores_follow_the_edited_forward(llama, tokenizer):
    model, tok = llama[0], tokenizer
    u = torch.randn(64, generator=torch.Generator().manual_seed(0))
    u = u / u.norm()
    rows = with_prompts([TEXT, CHOICE])
    settings = GenerationSettings(interventions=(steer(u, "layer_1", 8.0),))
    steered = gold_logprobs(model, tok, rows, settings)
    plain = gold_logprobs(model, tok, rows, GenerationSettings())
    for row, s, p in zip(rows, steered, plain):
        want, _ = reference(model, tok, prompt_of(row), gold_text(row), edit=(model.model.layers[1], 8.0 * u))
        assert s[GOLD_LOGPROB_SUM] == pytest.approx(want, abs=1e-4)
        assert abs(s[GOLD_LOGPROB_SUM] - p[GOLD_LOGPROB_SUM]) > 1e-3


def test_results_get_the_figures_once_per_question(llama, tokenizer):
    model = llama[0]
    rows = with_prompts([TEXT, {**TEXT, "id": "bare", "answer": None}])
    results = [{"id": "t1", "sample": 0, "response": "x"}, {"id": "t1", "sample": 1, "response": "y"},
               {"id": "bare", "response": "z"}, {"id": "t1", "sample": 2, "response": None, "error": "too long"}]
    planned = [{**rows[0], "sample": 0}, {**rows[0], "sample": 1}, rows[1], {**rows[0], "sample": 2}]
    add_gold_logprob(model, tokenizer, planned, results)
    assert results[0][GOLD_LOGPROB_SUM] == results[1][GOLD_LOGPROB_SUM] < 0
    assert GOLD_LOGPROB_SUM not in results[2] and GOLD_LOGPROB_SUM not in results[3]
