"""P(True) (eval/p_true.py) against an independent reference: Kadavath et al.'s prompt written out
by hand, scored by plain unbatched forwards (tests/helpers.py p_true_reference)."""
import pytest

from activation_eval import schema
from activation_eval.capture.generation import GenerationSettings
from activation_eval.eval.p_true import add_p_true, p_true_from_logprobs, p_true_prompt, p_true_scores
from helpers import make_tokenizer, p_true_reference, tiny_model

ROWS = [{"id": "q1", "question": "What is the capital of France?", "answer": ["Paris"]},
        {"id": "q2", "question": "two plus two", "answer": ["4"]},
        {"id": "q3", "question": "Which is a colour?", "choices": ["the quick brown fox", "Rome", "red"], "answer": ["C"]},
        {"id": "q4", "question": "Hello", "answer": ["world"]}]
RESPONSES = ["The capital of France is Paris.", "five", "C", ""]
QUESTIONS = [r["question"] for r in ROWS]
QUESTIONS[2] = "Which is a colour?\nA. the quick brown fox\nB. Rome\nC. red"      # choices shown, lettered


def test_the_prompt_is_kadavath_et_al_s():
    assert p_true_prompt(ROWS[0], "Paris") == ("Question: What is the capital of France?\nProposed Answer: Paris\n"
                                              "Is the proposed answer:\n (A) True\n (B) False\nThe proposed answer is:")


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
@pytest.mark.parametrize("batch_size", [1, 3])
def test_p_true_matches_plain_forwards(tokenizer, model_type, batch_size):
    model, tok = tiny_model(model_type, tokenizer)
    got = p_true_scores(model, tok, ROWS, RESPONSES, batch_size=batch_size)
    want = [p_true_reference(model, tok, q, r) for q, r in zip(QUESTIONS, RESPONSES)]
    assert got == pytest.approx(want, abs=1e-5)
    assert all(0 <= p <= 1 for p in got) and len({round(p, 6) for p in got}) > 1


@pytest.mark.parametrize("system_prompt", [None, "Be brief."])
def test_a_chat_template_model_is_asked_through_its_template(tokenizer, system_prompt):
    chat = make_tokenizer(chat_template=True)
    model, _ = tiny_model("llama", tokenizer)
    settings = GenerationSettings(system_prompt=system_prompt)
    got = p_true_scores(model, chat, ROWS, RESPONSES, settings, batch_size=2)
    want = [p_true_reference(model, chat, q, r, chat=True, system_prompt=system_prompt)
            for q, r in zip(QUESTIONS, RESPONSES)]
    assert got == pytest.approx(want, abs=1e-5)
    # the template off: the same model asked in plain text
    plain = p_true_scores(model, chat, ROWS, RESPONSES, GenerationSettings(use_chat_template="off",
                                                                           system_prompt=system_prompt))
    assert plain == pytest.approx([p_true_reference(model, chat, q, r, system_prompt=system_prompt)
                                   for q, r in zip(QUESTIONS, RESPONSES)], abs=1e-5)


def test_add_p_true_sets_answered_rows_only(llama):
    model, tok = llama
    results = [{"id": r["id"], "response": resp} for r, resp in zip(ROWS, RESPONSES)]
    results[1] = {"id": "q2", "response": None, "error": "prompt has 999 tokens"}
    samples = [dict(ROWS[0], sample=1)]                                  # --num_samples: (id, sample) rows
    results.append({"id": "q1", "sample": 1, "response": "Rome"})
    add_p_true(model, tok, ROWS + samples, results, batch_size=2)
    assert schema.P_TRUE not in results[1]
    for i in (0, 2, 3):
        assert results[i][schema.P_TRUE] == pytest.approx(p_true_reference(model, tok, QUESTIONS[i], RESPONSES[i]),
                                                          abs=1e-5)
    assert results[4][schema.P_TRUE] == pytest.approx(p_true_reference(model, tok, QUESTIONS[0], "Rome"), abs=1e-5)


def test_p_true_from_log_probabilities_is_stable():
    assert p_true_from_logprobs(-2.0, -2.0) == 0.5
    assert p_true_from_logprobs(-1000.0, -1001.0) == pytest.approx(0.7310585786)     # exp() of either underflows
    assert p_true_from_logprobs(0.0, -2000.0) == 1.0 and p_true_from_logprobs(-2000.0, 0.0) == 0.0
