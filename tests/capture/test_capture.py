"""Activation capture against an independent reference: one teacher-forced forward pass with
transformers' output_hidden_states=True over prompt + generated tokens (minus the last one)."""
import pytest
import torch

from activation_eval.architecture import ArchitectureError as CaptureError
from activation_eval.architecture import find_final_norm
from activation_eval.capture.generation import CaptureSettings, GenerationSettings, encode_prompts, generate_records
from activation_eval.capture.hooks import ActivationCapture
from activation_eval.capture.layers import layer_names, resolve_layers
from activation_eval.capture.positions import kept_positions
from helpers import hook_counts, make_tokenizer, reference, rel_err, tiny_model

PROMPTS = ["What is the capital of France?", "two plus two",
           "The quick brown fox jumps over the lazy dog near the river", "Hello",
           "A B C D choices", "Numbers 0 1 2 3", "keys and values with a cache", "fox"]
ALL = ["embeddings", 0, 1, 2, "final_norm"]
MODEL_TYPES = ["llama", "qwen2", "gemma", "gpt2", "gpt_neox"]


def run(model, tok, prompts, layers=ALL, positions="all", max_new_tokens=8, batch_size=None, **kw):
    return generate_records(model, tok, prompts, GenerationSettings(max_new_tokens=max_new_tokens, **kw),
                            CaptureSettings(layers=layers, positions=positions), batch_size=batch_size)


BOTH = pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "generate"])


@pytest.fixture(scope="module", params=MODEL_TYPES)
def any_model(request, tokenizer):
    return tiny_model(request.param, tokenizer)


@BOTH
def test_every_layer_and_position_equals_output_hidden_states(any_model, continuous):
    model, tok = any_model
    records = run(model, tok, PROMPTS[:4], continuous_batching=continuous)
    assert {rec["generation"]["decoding"] for rec in records} == {"continuous" if continuous else "generate"}
    for rec in records:
        ref = reference(model, rec)
        n_cover = len(rec["input_ids"]) + len(rec["output_ids"]) - 1
        assert rec["positions_kept"] == list(range(n_cover))
        for name, tensor in rec["activations"].items():
            assert tensor.shape == ref[name].shape, name
            assert rel_err(tensor, ref[name]) < 1e-5, name
    # the raw last layer really differs from the final-normed state: the distinction is tested
    last = records[0]["activations"]["layer_2"]
    assert rel_err(last, records[0]["activations"]["final_norm"]) > 1e-2


def test_capture_does_not_change_generated_tokens(any_model):
    model, tok = any_model
    batch = encode_prompts(tok, PROMPTS)
    with torch.no_grad():
        plain = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    with ActivationCapture(model, layers=None):
        with torch.no_grad():
            captured = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
    assert torch.equal(plain, captured)
    records = run(model, tok, PROMPTS)
    width = batch["input_ids"].shape[1]
    for row, rec in enumerate(records):
        assert rec["output_ids"].tolist() == plain[row, width:width + len(rec["output_ids"])].tolist()


@pytest.mark.parametrize("batch_size", [None, 3], ids=["all-at-once", "refilled"])
def test_batch_of_8_equals_one_at_a_time(any_model, batch_size):
    model, tok = any_model
    batched = run(model, tok, PROMPTS, batch_size=batch_size)
    for prompt, rec in zip(PROMPTS, batched):
        alone = run(model, tok, [prompt], continuous_batching=False)[0]
        assert torch.equal(alone["input_ids"], rec["input_ids"])
        assert torch.equal(alone["output_ids"], rec["output_ids"])
        assert alone["response"] == rec["response"]
        for name in alone["activations"]:
            assert alone["activations"][name].shape == rec["activations"][name].shape
            assert rel_err(rec["activations"][name], alone["activations"][name]) < 1e-4, name


@BOTH
def test_row_that_hits_eos_early_is_cut_at_its_eos(tokenizer, continuous):
    model, tok = tiny_model("llama", tokenizer)
    free = run(model, tok, PROMPTS[:4], max_new_tokens=10)
    # make the token that row 1 generates third the EOS token: row 1 must stop there
    eos = int(free[1]["output_ids"][2])
    model.generation_config.eos_token_id = eos
    try:
        records = run(model, tok, PROMPTS[:4], max_new_tokens=10, continuous_batching=continuous)
        alone = run(model, tok, [PROMPTS[1]], max_new_tokens=10, continuous_batching=False)[0]
    finally:
        model.generation_config.eos_token_id = tok.eos_token_id
    rec = records[1]
    first_eos = rec["output_ids"].tolist().index(eos)
    assert len(rec["output_ids"]) == first_eos + 1 <= 3
    assert torch.equal(rec["output_ids"], alone["output_ids"])
    assert rec["positions_kept"] == list(range(len(rec["input_ids"]) + first_eos))
    ref = reference(model, rec)
    for name, tensor in rec["activations"].items():
        assert rel_err(tensor, ref[name]) < 1e-5
    assert any(len(r["output_ids"]) > len(rec["output_ids"]) for r in records)  # others kept going


@BOTH
@pytest.mark.parametrize("positions", ["prompt", "generated", "last_prompt", [0, 3, -1], "1,-2", [-1, 0, 3, 0]])
def test_position_modes_select_the_right_absolute_positions(llama, positions, continuous):
    model, tok = llama
    records = run(model, tok, PROMPTS[:3], positions=positions, continuous_batching=continuous)
    for rec in records:
        P, N = len(rec["input_ids"]), len(rec["output_ids"])
        modes = {"prompt": list(range(P)), "generated": list(range(P, P + N - 1)), "last_prompt": [P - 1]}
        expected = modes.get(positions) if isinstance(positions, str) else None
        if expected is None:
            wanted = [int(p) for p in positions.split(",")] if isinstance(positions, str) else positions
            expected = [p % (P + N - 1) for p in wanted]
        assert rec["positions_kept"] == expected
        ref = reference(model, rec)
        for name, tensor in rec["activations"].items():
            assert tensor.shape[0] == len(expected)
            assert rel_err(tensor, ref[name][expected]) < 1e-5


def test_out_of_range_position_is_a_clear_error(llama):
    model, tok = llama
    with pytest.raises(ValueError, match="out of range"):
        run(model, tok, ["Hello"], positions=[500])
    with pytest.raises(ValueError, match="positions"):
        run(model, tok, ["Hello"], positions="middle")
    assert kept_positions("generated", 5, 1) == []


def test_module_path_capture_equals_a_plain_hook_on_a_full_forward(llama):
    model, tok = llama
    path = "model.layers.1.mlp"
    rec = run(model, tok, ["What is the capital of France?"], layers=[path, "model.layers.0.self_attn"])[0]
    seen = {}
    handles = [model.get_submodule(p).register_forward_hook(
        lambda m, a, o, p=p: seen.__setitem__(p, o[0] if isinstance(o, tuple) else o))
        for p in (path, "model.layers.0.self_attn")]
    try:
        with torch.no_grad():
            model(torch.cat([rec["input_ids"], rec["output_ids"][:-1]])[None])
    finally:
        for h in handles:
            h.remove()
    for p in seen:
        assert rel_err(rec["activations"][p], seen[p][0]) < 1e-5


def test_tensors_are_detached_owned_contiguous_cpu_in_the_requested_dtype(llama):
    model, tok = llama
    rec = generate_records(model, tok, PROMPTS[:3], GenerationSettings(max_new_tokens=4),
                           CaptureSettings(layers=None, dtype="bfloat16"))[1]
    assert rec["dtype"] == "bfloat16"
    assert list(rec["activations"]) == ["embeddings", "layer_0", "layer_1", "layer_2"]
    for t in rec["activations"].values():
        assert t.dtype == torch.bfloat16 and t.device.type == "cpu" and not t.requires_grad
        assert t.is_contiguous() and t.untyped_storage().nbytes() == t.numel() * t.element_size()


def test_hooks_are_removed_after_an_exception_and_nested_use(llama):
    model, _ = llama
    before = hook_counts(model)
    with pytest.raises(RuntimeError, match="boom"):
        with ActivationCapture(model, layers=None):
            assert hook_counts(model) != before
            raise RuntimeError("boom")
    assert hook_counts(model) == before
    other = model.model.layers[0].register_forward_hook(lambda *a: None)  # someone else's hook
    with_other = hook_counts(model)
    with ActivationCapture(model, layers=[0]):
        with ActivationCapture(model, layers=[0, "final_norm"]) as inner:
            inner.remove()
            inner.remove()  # idempotent
        assert hook_counts(model) != with_other
    assert hook_counts(model) == with_other
    other.remove()
    assert hook_counts(model) == before


def test_bad_layer_names_fail_before_any_hook_is_registered(llama):
    model, _ = llama
    before = hook_counts(model)
    for bad, match in [("layer_7", "unknown layer 'layer_7'"), (3, "out of range"), (-4, "out of range"),
                       ("decoder", "valid names: embeddings, layer_0 .. layer_2, final_norm"), (1.5, "must be")]:
        with pytest.raises(ValueError, match=match):
            ActivationCapture(model, layers=["embeddings", bad])
    assert hook_counts(model) == before
    assert resolve_layers(model, "embeddings, 0,-1,final_norm") == ["embeddings", "layer_0", "layer_2", "final_norm"]
    assert resolve_layers(model, None) == ["embeddings", "layer_0", "layer_1", "layer_2"]
    assert layer_names(model)[-1] == "final_norm"


def test_model_without_layer_list_gets_a_clear_error_with_module_paths():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Linear(4, 4)
    with pytest.raises(CaptureError, match="Odd.*body"):
        ActivationCapture(Odd(), layers=None)


def test_final_norm_is_found_for_every_architecture(tokenizer):
    expected = {"llama": "model.norm", "qwen2": "model.norm", "gemma": "model.norm",
                "gpt2": "transformer.ln_f", "gpt_neox": "gpt_neox.final_layer_norm"}
    for model_type, path in expected.items():
        model, _ = tiny_model(model_type, tokenizer)
        assert find_final_norm(model)[0] == path


def test_chat_template_is_applied_to_input_ids(llama):
    model, _ = llama
    chat = make_tokenizer(chat_template=True)
    rec = run(model, chat, ["Hello"], layers=[0])[0]
    text = chat.decode(rec["input_ids"])
    assert text.startswith("<|user|>Hello") and text.endswith("<|assistant|>")
    assert len(rec["activations"]["layer_0"]) == len(rec["input_ids"]) + len(rec["output_ids"]) - 1
