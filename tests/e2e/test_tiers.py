"""The test tiers of tests/conftest.py: what a test uses gives its tier, and a test that does more than its
tier allows fails loudly (so the tiers cannot rot)."""
import os
import types

import pytest

from helpers import TESTS_DIR, make_tokenizer, needs, tiny_model


@pytest.fixture(scope="module")
def tiers(request):
    """tests/conftest.py as pytest loaded it (its tier reader and guard)."""
    path = os.path.join(TESTS_DIR, "conftest.py")
    (plugin,) = [p for p in request.config.pluginmanager.get_plugins() if getattr(p, "__file__", None) == path]
    return plugin


# functions the tier reader reads (never called): tests/ code like any test's
def pure():
    return sorted([3, 1, 2])


def builds_a_model():
    return tiny_model("llama")


def calls_a_helper_that_builds_a_model():
    return builds_a_model()


def starts_a_process():
    import subprocess
    return subprocess.run(["true"])


@needs("slow")
def announced_slow():
    return None


def calls_an_announced_helper():
    return announced_slow()


def loads_a_saved_model(path):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(path)


FUNCTIONS = {f.__name__: f for f in (pure, make_tokenizer, builds_a_model, calls_a_helper_that_builds_a_model,
                                     loads_a_saved_model, starts_a_process, announced_slow, calls_an_announced_helper)}


@pytest.mark.parametrize("name, tier", [
    ("pure", "unit"), ("make_tokenizer", "unit"), ("builds_a_model", "model"),
    ("calls_a_helper_that_builds_a_model", "model"), ("loads_a_saved_model", "model"), ("starts_a_process", "slow"),
    ("announced_slow", "slow"), ("calls_an_announced_helper", "slow")])
def test_the_code_a_test_reaches_gives_its_tier(tiers, name, tier):
    """(by name: a function passed as a parameter counts as called by the test)"""
    assert tiers._Reader().tier(FUNCTIONS[name]) == tier


def test_every_collected_test_has_exactly_one_tier(request):
    for item in request.session.items:
        assert len([m for m in item.iter_markers() if m.name in ("unit", "model", "slow")]) == 1, item.nodeid


def test_fixtures_helpers_and_folders_give_the_tier(request, tiers):
    assert request.node.get_closest_marker("unit")                  # this test reaches nothing heavy
    builds = globals()["test_a_unit_test_that_builds_a_model_fails"]   # (by name: naming it would reach it)
    assert tiers._Reader().tier(builds) == "model"                  # it calls tiny_model
    for item in request.session.items:            # those selected: the llama fixture, tests/analysis/
        if "llama" in item.fixturenames or item.nodeid.startswith("tests/analysis/"):
            assert tiers.tier_of(item) in ("model", "slow"), item.nodeid


def fake_item(tier, tiers):
    item = types.SimpleNamespace(nodeid=f"tests/fake.py::a_{tier}_test", stash=pytest.Stash())
    item.stash[tiers.TIER_KEY] = tier
    return item


def test_a_unit_test_that_builds_a_model_fails(tiers):
    item = fake_item("unit", tiers)
    with tiers._Guard(item), pytest.raises(tiers.TierError, match="in the unit tier but builds a model"):
        tiny_model("llama")
    assert "a_unit_test is in the unit tier but builds a model (LlamaForCausalLM)" in item.stash[tiers.BROKEN_KEY][0]
    tiny_model("gpt2")                                       # outside the guard: allowed again


@pytest.mark.parametrize("tier", ["unit", "model"])
def test_a_unit_or_model_test_that_starts_a_process_fails(tiers, tier):
    """os.system is no name the reader knows: the guard (an audit hook) still refuses the process, even where the
    code under test catches the error."""
    item = fake_item(tier, tiers)
    with tiers._Guard(item):
        try:
            os.system("true")
        except Exception:                   # noqa: S110 (what careless code under test might do)
            pass
    assert item.stash[tiers.BROKEN_KEY] == [
        f"{item.nodeid} is in the {tier} tier but starts a process (os.system). {tiers.ADVICE_PROCESS} "
        f"(tests/conftest.py explains the tiers)"]


def test_a_model_test_may_build_tiny_models_but_not_the_real_one(tiers):
    from transformers import AutoConfig, AutoModelForCausalLM
    item = fake_item("model", tiers)
    with tiers._Guard(item):
        tiny_model("llama")
        config = AutoConfig.for_model("llama", vocab_size=32, hidden_size=576, intermediate_size=64, num_hidden_layers=1,
                                      num_attention_heads=4, num_key_value_heads=1)
        with pytest.raises(tiers.TierError, match="larger than a tiny one.*hidden size 576"):
            AutoModelForCausalLM.from_config(config)
