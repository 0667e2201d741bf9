"""Log-likelihood multiple choice against an independent reference: each choice's log-probability
from a plain unbatched forward (logits -> log_softmax -> gather), prompt activations from
transformers' output_hidden_states. The cloze style (each choice's text scored after an ARC-style
prompt) gives continuations of several tokens; tests/eval/test_mc_conventions.py covers the styles."""
import pytest
import torch

from activation_eval.capture.generation import CaptureSettings, GenerationSettings
from activation_eval.eval.benchmark import format_question
from activation_eval.eval.multiple_choice import iter_choice_scores
from helpers import reference, rel_err, tiny_model

ROWS = [
    {"id": "a", "question": "What is the capital of France?", "choices": ["Paris", "Rome", "the quick brown fox"],
     "answer": ["A"], "category": "geo"},
    {"id": "b", "question": "two plus two", "choices": ["4", "five", "10 42"], "answer": ["B"], "category": None},
    {"id": "c", "question": "Hello", "choices": ["world", "keys and values"], "answer": ["world"], "category": None},
    {"id": "d", "question": "A B C D choices: the answer is", "choices": ["(B)", "(A)", "a cache", "0"],
     "answer": ["D"], "category": None},
]


def reference_logprobs(model, tok, row):
    """Per choice: sum of log p(continuation token) with context and continuation tokenised as lm-eval does."""
    context = format_question(row, style="cloze")
    context_ids = tok(context)["input_ids"]
    sums = []
    for choice in row["choices"]:
        whole = tok(context + " " + choice)["input_ids"]
        cont = whole[len(context_ids):]
        ids = torch.tensor([context_ids + cont])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].double(), -1)
        sums.append(sum(logprobs[len(context_ids) - 1 + j, t].item() for j, t in enumerate(cont)))
    return sums


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def model(request, tokenizer):
    return tiny_model(request.param, tokenizer)


@pytest.mark.parametrize("positions", ["all", "last_prompt", "answer", [0, -1]])
def test_choice_logprobs_and_prompt_activations_equal_an_unbatched_reference(model, positions):
    model, tok = model
    capture = CaptureSettings(layers=["embeddings", 0, -1, "final_norm"], positions=positions)
    scored = list(iter_choice_scores(model, tok, ROWS, GenerationSettings(), capture, batch_size=3,
                                     style="cloze"))
    assert sorted(r["id"] for r, _ in scored) == [row["id"] for row in ROWS]
    for result, record in scored:
        row = next(r for r in ROWS if r["id"] == result["id"])
        ref = reference_logprobs(model, tok, row)
        assert result["choice_logprobs"] == pytest.approx(ref, abs=1e-5)
        best = max(range(len(ref)), key=lambda i: (ref[i], -i))
        best_norm = max(range(len(ref)), key=lambda i: (ref[i] / len(row["choices"][i]), -i))
        assert result["extracted"] == "ABCD"[best] and result["extracted_norm"] == "ABCD"[best_norm]
        gold = {row["answer"][0]} if len(row["answer"][0]) == 1 else {"ABCD"[row["choices"].index(row["answer"][0])]}
        assert result["correct"] == ("ABCD"[best] in gold)
        assert result["correct_norm"] == ("ABCD"[best_norm] in gold)
        assert result["response"] == row["choices"][best] and result["num_generated_tokens"] == 0
        # the record: prompt ids as fed, nothing generated, prompt activations as output_hidden_states
        assert record["input_ids"].tolist() == tok(format_question(row, style="cloze"))["input_ids"]
        assert record["output_ids"].numel() == 0 and record["choice_logprobs"] == result["choice_logprobs"]
        P = len(record["input_ids"])
        expected = {"all": list(range(P)), "last_prompt": [P - 1], "answer": [P - 1]}[positions] if isinstance(positions, str) \
            else [0, P - 1]
        assert record["positions_kept"] == expected
        hidden = reference(model, record)
        for name, tensor in record["activations"].items():
            assert tensor.shape == (len(expected), hidden[name].shape[-1])
            assert rel_err(tensor, hidden[name][expected]) < 1e-5, name


def test_batching_does_not_change_the_scores(llama):
    model, tok = llama
    one = {r["id"]: r["choice_logprobs"] for r, _ in iter_choice_scores(model, tok, ROWS, batch_size=1, style="cloze")}
    all_ = {r["id"]: r["choice_logprobs"] for r, _ in iter_choice_scores(model, tok, ROWS, style="cloze")}
    for qid in one:
        assert one[qid] == pytest.approx(all_[qid], abs=1e-5)


def test_chat_template_drops_the_delimiter_and_scores_after_the_template(chat_tokenizer):
    model, tok = tiny_model("llama", chat_tokenizer)
    (result, record), = iter_choice_scores(model, tok, ROWS[:1], GenerationSettings(use_chat_template="on"),
                                             style="cloze")
    assert record["continuations"] == ROWS[0]["choices"]              # lm-eval: no delimiter under a chat template
    context = tok.apply_chat_template([{"role": "user", "content": format_question(ROWS[0], style="cloze")}], tokenize=False,
                                      add_generation_prompt=True)
    context_ids = tok(context, add_special_tokens=False)["input_ids"]
    assert record["input_ids"].tolist() == context_ids
    for choice, lp in zip(ROWS[0]["choices"], result["choice_logprobs"]):
        cont = tok(context + choice, add_special_tokens=False)["input_ids"][len(context_ids):]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([context_ids + cont])).logits[0].double(), -1)
        assert lp == pytest.approx(sum(logprobs[len(context_ids) - 1 + j, t].item() for j, t in enumerate(cont)),
                                   abs=1e-5)
