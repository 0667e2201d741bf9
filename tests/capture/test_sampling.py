"""Seeded sampling: the same seed gives the same answers whatever the batching or decoding path;
the distribution is the softmax of the warped logits (checked against a hand-computed one)."""
import pytest
import torch

from activation_eval.capture.generation import GenerationSettings, generate_records
from activation_eval.capture.sampling import Sampler

PROMPTS = ["What is the capital of France?", "two plus two", "The quick brown fox", "Hello",
           "A B C D choices", "Numbers 0 1 2 3"]


def answers(model, tok, prompts=PROMPTS, batch_size=None, keys=None, **settings):
    settings = GenerationSettings(max_new_tokens=8, **settings)
    return [r["output_ids"].tolist() for r in generate_records(model, tok, prompts, settings, batch_size=batch_size,
                                                                 keys=keys)]


def test_same_seed_same_answers_across_batch_sizes_and_decoding_paths(llama):
    model, tok = llama
    first = answers(model, tok, temperature=1.0, seed=7)
    assert first == answers(model, tok, temperature=1.0, seed=7)
    assert first == answers(model, tok, temperature=1.0, seed=7, batch_size=1)
    assert first == answers(model, tok, temperature=1.0, seed=7, batch_size=4, continuous_batching=False)
    # a prompt's answer depends on its key, not on which prompts share its batch
    alone = answers(model, tok, [PROMPTS[3]], keys=["3"], temperature=1.0, seed=7)
    assert alone == [first[3]]


def test_different_seeds_give_different_samples_and_greedy_is_unchanged(llama):
    model, tok = llama
    runs = [answers(model, tok, temperature=1.0, seed=s) for s in range(3)]
    assert runs[0] != runs[1] and runs[1] != runs[2]
    greedy = answers(model, tok)
    batch = tok(PROMPTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    width = batch["input_ids"].shape[1]
    assert greedy == [plain[i, width:width + len(g)].tolist() for i, g in enumerate(greedy)]
    assert greedy not in runs
    # top_k=1 leaves only the most likely token: sampling equals greedy decoding
    assert answers(model, tok, temperature=1.0, top_k=1, seed=3) == greedy


def test_pick_follows_the_warped_softmax():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0, 0.0]])
    n = 20000
    # n draws of the one prompt's stream in one call (n rows that all name prompt 0): the same uniforms, in
    # the same order, as n calls of one row each, without n passes through the warpers
    many, same = logits.expand(n, -1), [0] * n
    sampler = Sampler(temperature=0.5, top_k=0, top_p=1.0, seed=0, keys=["q"])
    counts = torch.bincount(sampler.pick(many, same), minlength=5).double() / n
    expected = torch.softmax(logits[0].double() / 0.5, -1)
    assert torch.allclose(counts, expected, atol=0.015)
    # top_k=2: only the two most likely tokens, renormalised
    sampler = Sampler(temperature=1.0, top_k=2, top_p=1.0, seed=0, keys=["q"])
    counts = torch.bincount(sampler.pick(many, same), minlength=5).double() / n
    two = torch.softmax(torch.tensor([2.0, 1.0], dtype=torch.float64), -1)
    assert torch.allclose(counts[:2], two, atol=0.015) and counts[2:].sum() == 0
    # top_p=0.5: the smallest set of tokens with mass >= 0.5 is token 0 alone (p = 0.53 at T=1)
    sampler = Sampler(temperature=1.0, top_k=0, top_p=0.5, seed=0, keys=["q"])
    assert set(sampler.pick(logits.expand(200, -1), [0] * 200).tolist()) == {0}
    # one call of n rows draws what n calls of one row draw
    batched = Sampler(temperature=0.5, top_k=0, top_p=1.0, seed=1, keys=["q"]).pick(logits.expand(50, -1), [0] * 50)
    single = Sampler(temperature=0.5, top_k=0, top_p=1.0, seed=1, keys=["q"])
    assert batched.tolist() == [int(single.pick(logits, [0])) for _ in range(50)]


@pytest.mark.parametrize("bad, message", [
    (dict(temperature=-1.0), "temperature"), (dict(top_p=0.0, temperature=1.0), "top_p"),
    (dict(top_k=-2, temperature=1.0), "top_k"), (dict(top_p=0.9), "temperature > 0"),
    (dict(temperature=1.0, generate_kwargs={"do_sample": True}), "not both"),
])
def test_bad_sampling_settings_are_clear_errors(bad, message):
    with pytest.raises(ValueError, match=message):
        GenerationSettings(**bad)
