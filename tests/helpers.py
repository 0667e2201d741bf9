"""Helpers shared by the tests (imported as `from helpers import ...`; no test module imports another).

Tiny random-weight models built from configs and a tokenizer made here: nothing is downloaded. The
tokenizer is a byte-level BPE trained in-process on a few sentences, and every model is
`AutoModelForCausalLM.from_config` with hidden size 64 and 3 layers. `reference` is the independent
check of captured activations: transformers' own output_hidden_states.

Public names: make_tokenizer, tiny_config, tiny_model, hook_counts, rel_err, reference, p_true_reference,
run_main, read_rows, needs, CORPUS, CHAT_TEMPLATE.

A helper that builds a model or starts a process announces it with @needs("model") / @needs("slow"): every test
that calls it (directly, through a fixture or another helper) is put in that tier (tests/conftest.py).
"""
import json
import os

import torch

from activation_eval.run import cli
from activation_eval.store.run_folder import RESULTS_FILE

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))      # tests/ (the rooms are its subfolders)
REPO_ROOT = os.path.dirname(TESTS_DIR)

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Question: what is two plus two? Answer: four. 2 + 2 = 4.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A B C D choices: the answer is (B). Numbers 0 1 2 3 4 5 6 7 8 9 10 42 100.",
    "Hello world, models generate tokens one at a time with a cache of keys and values.",
]
CHAT_TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


def needs(tier):
    """Announce a helper's cost ("model": builds tiny models in-process; "slow": starts processes, the real
    default model): tests/conftest.py puts every test that reaches the helper in that tier."""
    def announce(function):
        function.test_tier = tier
        return function
    return announce


def make_tokenizer(chat_template=False):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast
    specials = ["<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.padding_side = "left"
    if chat_template:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def tiny_config(model_type, vocab_size):
    from transformers import AutoConfig
    common = dict(vocab_size=vocab_size, bos_token_id=1, eos_token_id=2, pad_token_id=0)
    per_type = {
        "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256),
        "qwen2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, max_position_embeddings=256),
        "gemma": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=1, head_dim=16, max_position_embeddings=256),
        "gpt2": dict(n_embd=64, n_layer=3, n_head=4, n_positions=256),
        "gpt_neox": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
                         max_position_embeddings=256),
    }[model_type]
    return AutoConfig.for_model(model_type, **common, **per_type)


@needs("model")
def tiny_model(model_type="llama", tokenizer=None, seed=0, dtype=torch.float32):
    from transformers import AutoModelForCausalLM
    tokenizer = tokenizer or make_tokenizer()
    torch.manual_seed(seed)
    config = tiny_config(model_type, len(tokenizer))
    model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    # a larger init spread makes the random model's greedy choices less tied and more varied
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.2)
    model.eval()
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model, tokenizer


def hook_counts(model):
    """Every module's hook dictionaries, to compare before/after a capture."""
    return {path: (len(m._forward_hooks), len(m._forward_pre_hooks), len(m._forward_hooks_with_kwargs))
            for path, m in model.named_modules()}


def rel_err(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


@needs("model")
def reference(model, record):
    """{name: (positions, hidden)} from plain forwards with output_hidden_states=True.

    transformers 5.x puts the final-normed state in hidden_states[-1]; with
    config.tie_last_hidden_states=False it keeps the raw last layer output there instead.
    """
    ids = torch.cat([record["input_ids"], record["output_ids"][:-1]])[None]
    n_layers = model.config.num_hidden_layers
    with torch.no_grad():
        model.config.tie_last_hidden_states = False
        try:
            raw = model(ids, output_hidden_states=True).hidden_states
        finally:
            del model.config.tie_last_hidden_states
        tied = model(ids, output_hidden_states=True).hidden_states
    ref = {"embeddings": raw[0][0], "final_norm": tied[-1][0]}
    ref.update({f"layer_{i}": raw[i + 1][0] for i in range(n_layers)})
    return ref


@needs("model")
def p_true_reference(model, tokenizer, question, response, chat=False, system_prompt=None):
    """P(True) of Kadavath et al. 2022 from plain unbatched forwards: the prompt written out here,
    " (A)" / " (B)" (no space after a chat template) split off as lm-eval splits a continuation,
    log p summed over each continuation's tokens, then pA / (pA + pB)."""
    prompt = (f"Question: {question}\nProposed Answer: {response}\nIs the proposed answer:\n (A) True\n (B) False\n"
              f"The proposed answer is:")
    if chat:
        messages = ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
            {"role": "user", "content": prompt}]
        context = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        context = f"{system_prompt}\n\n{prompt}" if system_prompt else prompt
    context_ids = tokenizer(context, add_special_tokens=not chat)["input_ids"]
    sums = []
    for target in ("(A)", "(B)") if chat else (" (A)", " (B)"):
        whole = tokenizer(context + target, add_special_tokens=not chat)["input_ids"]
        with torch.no_grad():
            logprobs = torch.log_softmax(model(torch.tensor([whole])).logits[0].double(), -1)
        sums.append(sum(logprobs[j - 1, whole[j]] for j in range(len(context_ids), len(whole))))
    return torch.softmax(torch.stack(sums), 0)[0].item()


@needs("model")
def run_main(*args):
    return cli.main([*map(str, args), "--quiet"])


def read_rows(folder):
    with open(os.path.join(folder, RESULTS_FILE)) as f:
        return [json.loads(line) for line in f]
