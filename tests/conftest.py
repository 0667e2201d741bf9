"""Shared test fixtures: tiny random-weight models built from configs and a tokenizer made here.

Nothing is downloaded: the tokenizer is a byte-level BPE trained in-process on a few sentences,
and every model is `AutoModelForCausalLM.from_config` with hidden size 64 and 3 layers.
"""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub

CORPUS = [
    "What is the capital of France? The capital of France is Paris.",
    "Question: what is two plus two? Answer: four. 2 + 2 = 4.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "A B C D choices: the answer is (B). Numbers 0 1 2 3 4 5 6 7 8 9 10 42 100.",
    "Hello world, models generate tokens one at a time with a cache of keys and values.",
]
CHAT_TEMPLATE = ("{% for m in messages %}<|user|>{{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}<|assistant|>{% endif %}")


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


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    return make_tokenizer(chat_template=True)


@pytest.fixture(scope="session")
def llama(tokenizer):
    return tiny_model("llama", tokenizer)
