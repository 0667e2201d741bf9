"""Shared pytest fixtures (the helpers themselves live in helpers.py)."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach a hub (set before transformers loads)

from helpers import make_tokenizer, tiny_model  # noqa: E402


@pytest.fixture(scope="session")
def tokenizer():
    return make_tokenizer()


@pytest.fixture(scope="session")
def chat_tokenizer():
    return make_tokenizer(chat_template=True)


@pytest.fixture(scope="session")
def llama(tokenizer):
    return tiny_model("llama", tokenizer)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """A tiny llama with a chat template, saved as an ordinary model folder."""
    folder = tmp_path_factory.mktemp("tiny-llama")
    tok = make_tokenizer(chat_template=True)
    model, _ = tiny_model("llama", tok)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)
