"""The answer span's confidence figures (issue 27 item 7): each generated token's entropy, and the lowest
log-probability, the mean and the highest entropy over the extracted answer's tokens, against an
independent reference: ONE plain forward of prompt + generated tokens in float64, log_softmax for
the log-probabilities and torch's Categorical for the entropies, on both decoding paths."""
import re

import pytest
import torch

from activation_eval import schema
from activation_eval.capture.confidence import OUTPUT_ENTROPIES, OUTPUT_LOGPROBS, confidence_fields
from activation_eval.capture.generation import CaptureSettings, GenerationSettings, generate_records
from activation_eval.eval.answering import answer_rows

TOL = 1e-5
QUESTIONS = ["What is the capital of France?", "two plus two", "The quick brown fox jumps over the lazy dog",
             "Hello", "A B C D choices", "Numbers 0 1 2 3", "keys and values", "fox", "Question: what is",
             "models generate tokens", "near the river bank", "Answer: four", "one at a time", "2 + 2 = 4",
             "Hello world, models", "the lazy dog"]
SPAN_FIELDS = (schema.ANSWER_LOGPROB_MIN, schema.ANSWER_ENTROPY_MEAN, schema.ANSWER_ENTROPY_MAX)
MAX_NEW = 10


def reference(model, record):
    """(log p of each output token, entropy of each one's distribution) from one float64 forward."""
    prompt, output = record["input_ids"], record["output_ids"]
    with torch.no_grad():
        logits = model(torch.cat([prompt, output])[None]).logits[0].double()
    at = torch.arange(len(prompt) - 1, len(prompt) - 1 + len(output))
    logprobs = torch.log_softmax(logits[at], -1).gather(-1, output[:, None])[:, 0]
    return logprobs, torch.distributions.Categorical(logits=logits[at]).entropy()


@pytest.fixture(scope="module")
def rows(llama):
    """Questions whose gold answer is one word from the middle of the tiny model's own answer: the
    text grader extracts that word, so the answer span is a strict part of the generated tokens."""
    model, tok = llama
    records = generate_records(model, tok, QUESTIONS, GenerationSettings(max_new_tokens=MAX_NEW))
    out = []
    for i, (question, record) in enumerate(zip(QUESTIONS, records)):
        words = [w for w in re.findall(r"[A-Za-z0-9]{2,}", record["response"]) if w.lower() not in ("the", "an")]
        out.append({"id": f"q{i}", "question": question, "category": "c",
                    "answer": words[len(words) // 2] if words else "zzqx"})
    return out


@pytest.mark.parametrize("continuous_batching", [True, False])
def test_span_figures_match_one_plain_forward(llama, rows, continuous_batching):
    model, tok = llama
    settings = GenerationSettings(max_new_tokens=MAX_NEW, continuous_batching=continuous_batching)
    answered = answer_rows(model, tok, rows, settings, CaptureSettings(layers=[0], positions="generated"),
                           batch_size=3)
    strict = 0
    for result, record in answered:
        assert record["generation"]["decoding"] == ("continuous" if continuous_batching else "generate")
        logprobs, entropies = reference(model, record)
        assert len(record[OUTPUT_ENTROPIES]) == len(record["output_ids"])
        assert torch.allclose(torch.tensor(record[OUTPUT_LOGPROBS], dtype=torch.float64), logprobs, atol=TOL, rtol=0)
        assert torch.allclose(torch.tensor(record[OUTPUT_ENTROPIES], dtype=torch.float64), entropies, atol=TOL, rtol=0)
        assert result[schema.FIRST_TOKEN_ENTROPY] == pytest.approx(entropies[0].item(), abs=TOL)
        n_prompt = result["num_prompt_tokens"]
        span = [p - n_prompt for p in result["answer_positions"]] or list(range(len(logprobs)))
        strict += 0 < len(result["answer_positions"]) < len(logprobs)
        assert result[schema.ANSWER_LOGPROB_MIN] == pytest.approx(logprobs[span].min().item(), abs=TOL)
        assert result[schema.ANSWER_ENTROPY_MEAN] == pytest.approx(entropies[span].mean().item(), abs=TOL)
        assert result[schema.ANSWER_ENTROPY_MAX] == pytest.approx(entropies[span].max().item(), abs=TOL)
        assert [result[k] for k in schema.CONFIDENCE_FIELDS] == [record[k] for k in schema.CONFIDENCE_FIELDS]
    assert strict >= 3, "the answer span must be a strict part of the answer in several rows"


def test_span_figures_do_not_depend_on_capture(llama, rows):
    """Without capture the row has no answer_positions, but its figures still read the answer span."""
    model, tok = llama
    settings = GenerationSettings(max_new_tokens=MAX_NEW)
    plain = answer_rows(model, tok, rows, settings, batch_size=3)
    captured = answer_rows(model, tok, rows, settings, CaptureSettings(layers=[0], positions="generated"), batch_size=3)
    differs = 0
    for (a, _), (b, record) in zip(plain, captured):
        assert "answer_positions" not in a and "answer_positions" in b
        assert all(a[k] == pytest.approx(b[k], abs=1e-6) for k in schema.CONFIDENCE_FIELDS)
        every = confidence_fields(record[OUTPUT_LOGPROBS], record[OUTPUT_ENTROPIES])     # no span: every token
        differs += any(every[k] != pytest.approx(b[k], abs=1e-6) for k in SPAN_FIELDS)
    assert differs >= 1, "the span figures must differ from the every-token figures somewhere"


def test_span_figures_by_hand():
    f = confidence_fields([-0.25, -3.0, -0.5, -1.0], [0.5, 2.0, 1.5, 0.0], span=[2, 3])
    assert (f[schema.ANSWER_LOGPROB_MIN], f[schema.ANSWER_ENTROPY_MEAN], f[schema.ANSWER_ENTROPY_MAX]) == (-1.0, 0.75, 1.5)
    assert (f[schema.ANSWER_LOGPROB_MEAN], f[schema.ANSWER_LOGPROB_SUM], f[schema.FIRST_TOKEN_ENTROPY]) == \
        (-1.1875, -4.75, 0.5)
    every = confidence_fields([-0.25, -3.0], [0.5, 2.0], span=[])
    assert (every[schema.ANSWER_LOGPROB_MIN], every[schema.ANSWER_ENTROPY_MAX]) == (-3.0, 2.0)
    with pytest.raises(ValueError, match="2 log-probabilities but 1 entropies"):
        confidence_fields([-0.25, -3.0], [0.5])
