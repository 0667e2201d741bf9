"""Helpers shared by the tests (imported as `from helpers import ...`; no test module imports another).

Tiny random-weight models built from configs and a tokenizer made here: nothing is downloaded. The
tokenizer is a byte-level BPE trained in-process on a few sentences, and every model is
`AutoModelForCausalLM.from_config` with hidden size 64 and 3 layers. `reference` is the independent
check of captured activations: transformers' own output_hidden_states.

Public names: make_tokenizer, tiny_config, tiny_model, hook_counts, rel_err, reference, p_true_reference,
run_main, read_rows, needs, CORPUS, CHAT_TEMPLATE, planted_model (tiny llamas where a direction is known to decide
the answer, to only correlate with it, or where none does: the causal check's test models, issue 28).

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


# ----------------------------------------------------------------------------- planted models (issue 28)
# Tiny llamas edited so that what steering a direction does is known. Every RMSNorm is made the identity (eps 1e12
# swamps the mean square in float32, the weight 1e6 cancels its rsqrt): the residual stream is read linearly, so a
# coordinate zeroed in every later read-in weight is read by nothing, exactly. Axes of the hidden state:
PLANT_BIAS, PLANT_STOP, PLANT_V, PLANT_SIG = 0, 1, 2, 3     # 1 on every token, 10 on the answers A / B, the
                                                            # correlate axis v, each token's signal (+1 / -1 / 0)
PLANT_GAIN = 2.0            # layer 0 (or the last layer) writes GAIN * mean signal of the prompt along its target
PLANT_LOGIT = 3.0           # logit(A) - logit(B) = 2 * PLANT_LOGIT * (h . u) + PLANT_TIE at the final state
PLANT_TIE = 0.0371          # an offset no mean signal of a prompt (a fraction k / T) can cancel exactly


@needs("model")
def planted_model(kind="causal", tokenizer=None, seed=0, layer=1, neutral=("Answer", "Question", "answer", "question")):
    """A tiny llama (hidden 64, 3 layers) whose first answer token is "A" when its prompt's mean token signal
    (a fixed random +1 / -1 per token made of letters, `info["signal"]`; 0 for the tokens of the words in
    `neutral`, for punctuation, digits and the special tokens, so a prompt template's own words do not tilt every
    answer) is >= 0,
    else "B", then EOS.

    kind="causal": layer 0 writes GAIN * mean signal along a random unit direction u (in coordinates 4..63);
        later layers write nothing, and lm_head's rows of A and B are +/- LOGIT * u (+ 10 on the bias axis): the
        direction in `layer`'s output that decides the answer. Steering +u at `layer` turns answers into A.
    kind="correlate": layer 0 writes the same mean signal along the axis v = e_2 instead, which nothing after
        layer 0 reads (column 2 zeroed in every later q/k/v/gate/up projection and in lm_head); the last layer
        computes the answer itself from the signal axis of all positions and writes it along u. At the last prompt
        token `layer`'s output varies along v (it predicts the answer), but steering along v changes no logit.
    kind="null": tiny_model's random llama, where no direction decides anything systematically.
    Both planted kinds also write prompt-dependent noise (a second attention head, in coordinates 4..63
    orthogonal to u), so the residual's covariance is not the planted direction alone.
    Returns (model, tokenizer, info): info = {"u", "v" (unit torch vectors), "signal" (per token id), "A", "B"
    (token ids), "layer"}.
    """
    tokenizer = tokenizer or make_tokenizer()
    if kind == "null":
        model, _ = tiny_model("llama", tokenizer, seed=seed)
        return model, tokenizer, {"u": None, "v": None, "signal": None, "A": tokenizer.convert_tokens_to_ids("A"),
                                  "B": tokenizer.convert_tokens_to_ids("B"), "layer": f"layer_{layer}"}
    if kind not in ("causal", "correlate"):
        raise ValueError(f"planted model kind must be causal, correlate or null, got {kind!r}")
    model, _ = tiny_model("llama", tokenizer, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1000)
    hidden, n_layers = model.config.hidden_size, model.config.num_hidden_layers
    if not 0 <= layer < n_layers - 1:
        raise ValueError(f"the planted layer must come before the last layer (which reads the signal in the "
                         f"correlate model): 0 <= layer < {n_layers - 1}, got {layer}")
    a_id, b_id = tokenizer.convert_tokens_to_ids(["A", "B"])
    u = torch.zeros(hidden)
    u[4:] = torch.randn(hidden - 4, generator=gen)
    u /= u.norm()
    v = torch.zeros(hidden)
    v[PLANT_V] = 1.0
    signal = torch.randint(0, 2, (len(tokenizer),), generator=gen).float() * 2 - 1
    signal[[*tokenizer.all_special_ids, a_id, b_id]] = 0.0
    for token, token_id in tokenizer.get_vocab().items():
        if not tokenizer.convert_tokens_to_string([token]).strip().isalpha():
            signal[token_id] = 0.0
    for text in neutral:
        for spaced in (text, " " + text):
            signal[tokenizer(spaced, add_special_tokens=False)["input_ids"]] = 0.0
    model.config.rms_norm_eps = 1e12
    inner = model.model
    with torch.no_grad():
        for module in model.modules():
            if type(module).__name__.endswith("RMSNorm"):
                module.variance_epsilon = 1e12
                module.weight.fill_(1e6)
        E = inner.embed_tokens.weight
        E.zero_()
        E[:, 4:] = torch.randn(len(tokenizer), hidden - 4, generator=gen) * 0.3
        E -= torch.outer(E @ u, u)
        E[:, PLANT_BIAS] = 1.0
        E[:, PLANT_SIG] = signal
        E[[a_id, b_id], PLANT_STOP] = 10.0
        for block in inner.layers:
            for proj in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.o_proj, block.mlp.down_proj):
                proj.weight.zero_()           # uniform attention, no writes ...
        _plant_head(inner.layers[0].self_attn, read=PLANT_SIG, write=u if kind == "causal" else v)
        _plant_noise(inner.layers[0].self_attn, u, gen)
        if kind == "correlate":
            _plant_head(inner.layers[-1].self_attn, read=PLANT_SIG, write=u)
            for block in inner.layers[layer + 1:]:
                for proj in (block.self_attn.q_proj, block.self_attn.k_proj, block.self_attn.v_proj,
                             block.mlp.gate_proj, block.mlp.up_proj):
                    proj.weight[:, PLANT_V] = 0.0
        head = model.lm_head.weight
        head.zero_()
        head[:, PLANT_BIAS] = -10.0
        head[a_id] = PLANT_LOGIT * u
        head[b_id] = -PLANT_LOGIT * u
        head[[a_id, b_id], PLANT_BIAS] = 10.0
        head[b_id, PLANT_BIAS] = 10.0 - PLANT_TIE     # no prompt ties A and B (float noise would pick one)
        head[tokenizer.eos_token_id, PLANT_STOP] = 10.0
        head[:, PLANT_V] = 0.0
    model.config.tie_word_embeddings = False
    return model, tokenizer, {"u": u, "v": v, "signal": signal, "A": a_id, "B": b_id, "layer": f"layer_{layer}"}


def _plant_head(attn, read, write):
    """Attention head 0 (query and key weights zero: uniform over the positions so far) reads coordinate `read`
    and writes GAIN times its mean along `write`."""
    attn.v_proj.weight[0].zero_()
    attn.v_proj.weight[0, read] = 1.0
    attn.o_proj.weight[:, 0] = PLANT_GAIN * write


def _plant_noise(attn, u, gen, scale=4.0):
    """Head 2 (the second key-value group) writes 16 random prompt-dependent means into coordinates 4..63,
    orthogonal to u (the covariance of the residual gets more than the planted axis)."""
    head_dim = attn.head_dim
    hidden = attn.o_proj.weight.shape[0]
    reads = torch.zeros(head_dim, hidden)
    reads[:, 4:] = torch.randn(head_dim, hidden - 4, generator=gen) / (hidden - 4) ** 0.5
    writes = torch.zeros(hidden, head_dim)
    writes[4:] = torch.randn(hidden - 4, head_dim, generator=gen) * scale / head_dim ** 0.5
    writes -= torch.outer(u, u @ writes)
    attn.v_proj.weight[head_dim:2 * head_dim] = reads
    attn.o_proj.weight[:, 2 * head_dim:3 * head_dim] = writes
