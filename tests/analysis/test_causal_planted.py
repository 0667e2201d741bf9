"""The causal check on tiny llamas where the answer is known (tests/helpers.planted_model): steering the planted
direction decides the answer, steering the planted correlate changes no logit, and the whole statistical chain
(cross-fitted direction, random directions of matched norm, paired effects, verdict) says which is which."""
import numpy as np
import pytest
import torch

from activation_eval.analysis.causal import Answers, ConditionRun, causal_plan, causal_result, merge_answers, spread
from activation_eval.capture.intervene import Interventions, ablate, steer
from helpers import make_tokenizer, planted_model

N_QUESTIONS = 160


def _prompts(tokenizer, n, seed=0):
    rng = np.random.default_rng(seed)
    words = sorted(t for t in tokenizer.get_vocab() if tokenizer.convert_tokens_to_string([t]).strip().isalpha())
    return ["Question: " + tokenizer.convert_tokens_to_string(list(rng.choice(words, 8))) + " Answer:"
            for _ in range(n)]


@torch.no_grad()
def _answer(model, tokenizer, info, prompts, interventions=(), gold=None):
    """First answer token (greedy), correct = it is the gold token (by default "A"), the gold token's
    log-probability, and info["layer"]'s output at the last prompt token, with the interventions on."""
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with Interventions(model, list(interventions)):
        out = model(**batch, output_hidden_states=True)
    logprobs = torch.log_softmax(out.logits[:, -1].double(), -1)
    first = logprobs.argmax(-1)
    gold = torch.full((len(prompts),), info["A"]) if gold is None else torch.as_tensor(gold)
    layer = int(info["layer"].split("_")[1])
    answers = Answers(correct=(first == gold).int().numpy(), texts=tokenizer.convert_ids_to_tokens(first),
                      gold_logprob=logprobs[torch.arange(len(prompts)), gold].numpy())
    return answers, out.hidden_states[layer + 1][:, -1].numpy().astype(np.float64), out.logits


def _causal_check(model, tokenizer, info, prompts, alphas_sd=(-4, -2, 2, 4), test_alpha_sd=4, k_random=20, seed=0,
                  gold=None):
    """The check as --causal runs it, in-process: causal_plan's conditions (cross-fitted mass-mean directions at
    the last prompt token of info["layer"], each fold's questions steered by the direction of the other folds),
    each edit answered with its intervention, merged back into question order."""
    layer = info["layer"]
    base, X, _ = _answer(model, tokenizer, info, prompts, gold=gold)
    plan = causal_plan(X, base.correct, alphas_sd, test_alpha_sd, n_folds=5, k_random=k_random, seed=seed)

    def answer(edit):
        edit_ = steer(edit.direction, layer, edit.alpha) if edit.alpha is not None else ablate(edit.direction, layer)
        return _answer(model, tokenizer, info, [prompts[i] for i in edit.rows], [edit_],
                       None if gold is None else [gold[i] for i in edit.rows])[0]

    conditions = [ConditionRun(c.name, c.kind, c.alpha_sd, c.alpha, merge_answers(c, [answer(e) for e in c.edits]))
                  for c in plan.conditions]
    result = causal_result(run="planted", layer=layer, position="last_prompt", direction_method="mass_mean",
                           direction_source="planted", cross_fitting=plan.cross_fitting, folds=plan.folds,
                           test_alpha_sd=float(test_alpha_sd), baseline=base, conditions=conditions, seed=seed)
    return result, X, base, plan.directions


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def test_planted_direction_decides_the_answer(tok):
    model, tok, info = planted_model("causal", tok)
    prompts = _prompts(tok, 40)
    base, X, _ = _answer(model, tok, info, prompts)
    assert 0.2 < np.mean(base.correct) < 0.8                          # the prompt decides, both answers occur
    width = spread(X, info["u"].numpy())
    up, _, _ = _answer(model, tok, info, prompts, [steer(info["u"], info["layer"], 4 * width)])
    down, _, _ = _answer(model, tok, info, prompts, [steer(info["u"], info["layer"], -4 * width)])
    assert set(up.texts) == {"A"} and set(down.texts) == {"B"}
    assert np.all(up.gold_logprob > base.gold_logprob) and np.all(down.gold_logprob < base.gold_logprob)


def test_planted_correlate_predicts_but_changes_no_logit(tok):
    model, tok, info = planted_model("correlate", tok)
    prompts = _prompts(tok, 40)
    base, X, logits = _answer(model, tok, info, prompts)
    # the correlate separates the answers at the layer ...
    along_v = X @ info["v"].numpy()
    assert along_v[base.correct == 1].min() >= along_v[base.correct == 0].max()
    # ... but steering along it, by far more than its spread, changes no logit
    for alpha in (-50.0, 50.0):
        steered = _answer(model, tok, info, prompts, [steer(info["v"], info["layer"], alpha)])[2]
        assert torch.allclose(steered, logits, rtol=0, atol=1e-5)
    ablated = _answer(model, tok, info, prompts, [ablate(info["v"], info["layer"])])[2]
    assert torch.allclose(ablated, logits, rtol=0, atol=1e-5)
    # the model is not dead: the direction it does read (u, written by the last layer) moves the answers
    moved = _answer(model, tok, info, prompts, [steer(info["u"], "layer_2", 5.0)])[0]
    assert set(moved.texts) == {"A"}


def test_causal_check_finds_the_planted_direction(tok):
    model, tok, info = planted_model("causal", tok)
    result, X, base, directions = _causal_check(model, tok, info, _prompts(tok, N_QUESTIONS))
    assert min(directions @ info["u"].numpy()) > 0.6                 # the cross-fitted directions found u
    assert result.verdict == "causal" and result.antisymmetric and result.sign_flip_reverses
    assert result.effect > result.random_p95 and result.effect_ci[0] > 0
    assert result.test_effect > 0 > result.sign_flip_effect
    assert result.monotonic_rho == 1.0
    by_name = {c.name: c for c in result.conditions}
    assert by_name["alpha=+4"].accuracy == 1.0 and by_name["alpha=-4"].accuracy == 0.0
    assert len(result.random_effects) == 20 and result.verdict_text.startswith("causal: ")


def test_causal_check_says_no_evidence_for_the_planted_correlate(tok):
    model, tok, info = planted_model("correlate", tok)
    result, X, base, directions = _causal_check(model, tok, info, _prompts(tok, N_QUESTIONS))
    assert min(directions @ info["v"].numpy()) > 0.6                 # the probe's direction is the correlate ...
    assert result.verdict == "no causal evidence at this layer"      # ... which nothing downstream reads
    assert abs(result.effect) < 1e-5 and result.random_p95 > 0.5
    assert all(c.changed_share == 0 for c in result.conditions if c.kind in ("steer", "ablate"))
    assert f"best {result.best_random}: " in result.verdict_text


def test_planted_models_generate_the_answer_then_stop_and_survive_a_save(tok, tmp_path):
    """The run loop answers by generating and loads models from folders: the planted answer is "A" or "B" then
    EOS, steering works on model.generate, and a saved and reloaded planted model gives the same logits."""
    from transformers import AutoModelForCausalLM
    model, tok, info = planted_model("causal", tok)
    prompts = _prompts(tok, 6)
    base = _answer(model, tok, info, prompts)[0]
    for prompt, first in zip(prompts, base.texts):
        ids = tok(prompt, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            plain = model.generate(ids, max_new_tokens=5, do_sample=False)[0, ids.shape[1]:].tolist()
            with Interventions(model, [steer(info["u"], info["layer"], 3.0)]):
                steered = model.generate(ids, max_new_tokens=5, do_sample=False)[0, ids.shape[1]:].tolist()
        assert plain == [tok.convert_tokens_to_ids(first), tok.eos_token_id]
        assert steered == [info["A"], tok.eos_token_id]
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    batch = tok(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


@pytest.mark.slow
def test_causal_check_null_calibration_on_random_models(tok):
    """Random tiny llamas, each question's gold token a coin flip between the model's own two likeliest first
    tokens: correctness carries nothing about the model's internals, so no direction fitted on it is used.
    "causal" comes out rarely (the band alone allows 1 / 21 per seed)."""
    verdicts = []
    for seed in range(12):
        model, tok, info = planted_model("null", tok, seed=seed)
        prompts = _prompts(tok, 60, seed=seed)
        with torch.no_grad():
            logits = model(**tok(prompts, return_tensors="pt", padding=True)).logits[:, -1]
        top2 = logits.topk(2).indices
        coin = torch.as_tensor(np.random.default_rng(seed).integers(0, 2, len(prompts)))
        gold = top2[torch.arange(len(prompts)), coin]
        result = _causal_check(model, tok, info, prompts, alphas_sd=(-4, 4), k_random=20, seed=seed, gold=gold)[0]
        verdicts.append(result.verdict)
    assert verdicts.count("causal") <= 1, verdicts
