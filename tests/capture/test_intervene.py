"""Interventions (capture/intervene.py) against a hand-made reference: the same edit written into a
wrapper module that replaces the layer in a plain transformers forward, with no hooks at all.

- alpha 0 and an empty list are the plain run, bit for bit (tokens, activations, log-probabilities);
- the hook's edit equals the wrapper's (logits and every hidden state) on five architectures, for
  add and ablate, at the embeddings, a middle layer and the final norm;
- positions prompt / generated / all: the tokens generated on both decoding paths equal the argmax
  of one teacher-forced forward in which the wrapper edits exactly those columns;
- log-likelihood scoring edits the continuation as the generated tokens.
"""
import pytest
import torch

from activation_eval.capture.generation import CaptureSettings, GenerationSettings, generate_records
from activation_eval.capture.intervene import Interventions, ablate, direction_sha256, steer
from activation_eval.capture.layers import find_decoder_layers, find_final_norm
from activation_eval.capture.loglik import iter_scored_records
from helpers import hook_counts, rel_err, tiny_model

PROMPTS = ["What is the capital of France?", "2 + 2 =", "Hello world, models generate tokens",
           "The quick brown fox", "A B C D choices: the answer is"]
BOTH = pytest.mark.parametrize("continuous", [True, False], ids=["continuous", "generate"])


def direction(hidden=64, seed=1):
    return torch.randn(hidden, generator=torch.Generator().manual_seed(seed))


def hand_edit(kind, u, alpha):
    """The edit written out: float32 arithmetic, cast back to the layer's dtype."""
    u = u / u.norm()

    def edit(h):
        x = h.float()
        out = x + alpha * u if kind == "add" else x - (x @ u)[..., None] * u
        return out.to(h.dtype)
    return edit


class Wrapped(torch.nn.Module):
    """A module that runs `inner` and edits its output (post) or its input hidden states (pre); columns:
    None = every position, else a (B, T) bool mask of the positions edited."""

    def __init__(self, inner, edit, pre=False, columns=None):
        super().__init__()
        self.inner, self.edit, self.pre, self.columns = inner, edit, pre, columns

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["inner"], name)

    def _apply_edit(self, h):
        edited = self.edit(h)
        return edited if self.columns is None else torch.where(self.columns[..., None], edited, h)

    def forward(self, *args, **kwargs):
        if self.pre:
            if args:
                args = (self._apply_edit(args[0]),) + args[1:]
            else:
                kwargs["hidden_states"] = self._apply_edit(kwargs["hidden_states"])
            return self.inner(*args, **kwargs)
        out = self.inner(*args, **kwargs)
        if isinstance(out, torch.Tensor):
            return self._apply_edit(out)
        return (self._apply_edit(out[0]),) + tuple(out[1:])


class wrapped_layer:
    """Context manager: replace the module behind a layer name by a Wrapped one, put it back on exit."""

    def __init__(self, model, name, edit, columns=None):
        self.model, self.name, self.edit, self.columns = model, name, edit, columns

    def __enter__(self):
        _, layers = find_decoder_layers(self.model)
        if self.name == "final_norm":
            path, module = find_final_norm(self.model)
            parent_path, _, attr = path.rpartition(".")
            self.restore = (self.model.get_submodule(parent_path), attr, module)
            setattr(self.restore[0], attr, Wrapped(module, self.edit, columns=self.columns))
        else:
            index = 0 if self.name == "embeddings" else int(self.name.split("_")[1])
            self.restore = (layers, index, layers[index])
            layers[index] = Wrapped(layers[index], self.edit, pre=self.name == "embeddings", columns=self.columns)
        return self

    def __exit__(self, *exc):
        owner, key, module = self.restore
        if isinstance(key, int):
            owner[key] = module
        else:
            setattr(owner, key, module)


def forward(model, ids):
    with torch.no_grad():
        out = model(ids, output_hidden_states=True)
    return out.logits, out.hidden_states


@pytest.mark.parametrize("model_type", ["llama", "qwen2", "gemma", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("kind", ["add", "ablate"])
@pytest.mark.parametrize("layer", ["embeddings", "layer_1", "final_norm"])
def test_the_hook_edit_equals_the_same_edit_made_by_hand(tokenizer, model_type, kind, layer):
    model, tok = tiny_model(model_type, tokenizer)
    ids = tok(["What is the capital of France? The capital"], return_tensors="pt")["input_ids"]
    u, alpha = direction(), 3.0
    intervention = steer(u, layer, alpha) if kind == "add" else ablate(u, layer)
    plain_logits, _ = forward(model, ids)
    with Interventions(model, [intervention]):
        logits, hidden = forward(model, ids)
    with wrapped_layer(model, layer, hand_edit(kind, u, alpha)):
        ref_logits, ref_hidden = forward(model, ids)
    assert torch.equal(logits, ref_logits)
    # transformers records hidden states with its own hooks on the layer classes: inside the wrapper they see
    # the layer's output before the hand edit, so that one state is compared edited
    edit = hand_edit(kind, u, alpha)
    assert all(torch.equal(a, b) or torch.equal(a, edit(b)) for a, b in zip(hidden, ref_hidden))
    assert not torch.allclose(logits, plain_logits)          # the edit did something


@BOTH
def test_alpha_zero_and_no_interventions_are_the_plain_run_bit_for_bit(llama, continuous):
    model, tok = llama
    settings = dict(max_new_tokens=6, continuous_batching=continuous)
    capture = CaptureSettings(layers=None, positions="all")
    plain = generate_records(model, tok, PROMPTS, GenerationSettings(**settings), capture, batch_size=2)
    before = hook_counts(model)
    for interventions in [(), (steer(direction(), "layer_1", 0.0), steer(direction(seed=2), -1, 0.0))]:
        runs = generate_records(model, tok, PROMPTS, GenerationSettings(**settings, interventions=interventions),
                                capture, batch_size=2)
        for a, b in zip(plain, runs):
            assert torch.equal(a["output_ids"], b["output_ids"])
            assert a["output_logprobs"] == b["output_logprobs"]
            assert all(torch.equal(a["activations"][k], b["activations"][k]) for k in a["activations"])
        assert hook_counts(model) == before


def teacher_forced_tokens(model, name, kind, u, alpha, positions, prompt_ids, generated):
    """Greedy tokens and layer outputs from one forward of prompt + generated[:-1], with the wrapper
    editing the columns `positions` names (the prompt: 0 .. P-1; generated: P ..)."""
    ids = torch.tensor([list(prompt_ids) + list(generated[:-1])])
    columns = torch.arange(ids.shape[1])[None] >= len(prompt_ids)
    columns = {"all": None, "generated": columns, "prompt": ~columns}[positions]
    edit = hand_edit(kind, u, alpha)
    with wrapped_layer(model, name, edit, columns):
        logits, hidden = forward(model, ids)
    # transformers' own hooks saw the wrapped layer's output before the edit (see the first test)
    raw = hidden[int(name.split("_")[1]) + 1][0]
    edited = edit(raw) if columns is None else torch.where(columns[0][:, None], edit(raw), raw)
    return logits[0, len(prompt_ids) - 1:].argmax(-1), edited


@BOTH
@pytest.mark.parametrize("positions", ["all", "prompt", "generated"])
@pytest.mark.parametrize("kind", ["add", "ablate"])
def test_steered_answers_equal_a_teacher_forced_forward_edited_at_those_positions(llama, continuous, positions, kind):
    model, tok = llama
    u, alpha = direction(), 6.0
    intervention = steer(u, "layer_1", alpha, positions) if kind == "add" else ablate(u, "layer_1", positions)
    settings = GenerationSettings(max_new_tokens=8, continuous_batching=continuous, interventions=(intervention,))
    records = generate_records(model, tok, PROMPTS, settings, CaptureSettings(layers=["layer_1"]), batch_size=2)
    plain = generate_records(model, tok, PROMPTS, GenerationSettings(max_new_tokens=8), batch_size=2)
    assert any(not torch.equal(r["output_ids"], p["output_ids"]) for r, p in zip(records, plain)) or kind == "ablate"
    for record in records:
        assert record["interventions"] == [intervention.entry("layer_1")]
        tokens, edited = teacher_forced_tokens(model, "layer_1", kind, u, alpha, positions, record["input_ids"],
                                               record["output_ids"])
        assert tokens.tolist() == record["output_ids"].tolist()
        # the capture hook runs after the intervention: it records what layer 2 reads
        assert rel_err(record["activations"]["layer_1"], edited) < 1e-5          # the capture tests' bound


def test_ablation_leaves_no_component_along_the_direction(llama):
    model, tok = llama
    u = direction()
    settings = GenerationSettings(max_new_tokens=5, interventions=(ablate(u, "layer_0"),))
    records = generate_records(model, tok, PROMPTS[:2], settings, CaptureSettings(layers=["layer_0", "layer_1"]))
    unit = u / u.norm()
    for record in records:
        assert record["activations"]["layer_0"].matmul(unit).abs().max() < 1e-5
        assert record["activations"]["layer_1"].matmul(unit).abs().max() > 1e-2     # the next layer writes again


def test_interventions_at_one_layer_apply_in_the_order_given(llama):
    model, tok = llama
    ids = tok(["2 + 2 ="], return_tensors="pt")["input_ids"]
    u = direction()
    unit = u / u.norm()
    with Interventions(model, [steer(u, "layer_1", 5.0), ablate(u, "layer_1")]):
        add_then_ablate = forward(model, ids)[1][2]
    with Interventions(model, [ablate(u, "layer_1"), steer(u, "layer_1", 5.0)]):
        ablate_then_add = forward(model, ids)[1][2]
    assert add_then_ablate.matmul(unit).abs().max() < 1e-5
    torch.testing.assert_close(ablate_then_add.matmul(unit), torch.full(ids.shape, 5.0), atol=1e-5, rtol=0)


def test_scoring_edits_the_continuation_as_the_generated_tokens(llama):
    model, tok = llama
    u, alpha = direction(), 8.0
    prompts, conts = ["What is the capital of France?", "2 + 2 ="], [[" Paris", " Rome"], [" 4", " four"]]
    for positions in ("prompt", "generated", "all"):
        settings = GenerationSettings(interventions=(steer(u, "layer_1", alpha, positions),))
        scored = dict(iter_scored_records(model, tok, prompts, conts, settings, batch_size=2))
        for i, prompt in enumerate(prompts):
            ctx = tok(prompt)["input_ids"]
            for c, cont in enumerate(conts[i]):
                cont_ids = tok(prompt + cont)["input_ids"][len(ctx):]
                ids = torch.tensor([ctx + cont_ids[:-1]])
                columns = torch.arange(ids.shape[1])[None] >= len(ctx)
                columns = {"all": None, "generated": columns, "prompt": ~columns}[positions]
                with wrapped_layer(model, "layer_1", hand_edit("add", u, alpha), columns):
                    logits = forward(model, ids)[0][0].double().log_softmax(-1)
                expected = sum(float(logits[len(ctx) - 1 + k, t]) for k, t in enumerate(cont_ids))
                assert scored[i]["choice_logprobs"][c] == pytest.approx(expected, abs=1e-4)
                assert scored[i]["interventions"][0]["positions"] == positions


def test_bad_interventions_are_refused_with_one_clear_line(llama):
    model, _ = llama
    with pytest.raises(ValueError, match="hidden size is 64"):
        Interventions(model, [steer(torch.ones(32), "layer_1", 1.0)])
    with pytest.raises(ValueError, match="out of range"):
        Interventions(model, [steer(torch.ones(64), 7, 1.0)])
    for bad, match in [(torch.zeros(64), "all zeros"), (torch.full((64,), float("nan")), "finite"),
                       (torch.ones(2, 32), "one vector")]:
        with pytest.raises(ValueError, match=match):
            steer(bad, "layer_1", 1.0)
    with pytest.raises(ValueError, match="finite number"):
        steer(torch.ones(64), "layer_1", float("inf"))
    with pytest.raises(ValueError, match="positions must be one of"):
        steer(torch.ones(64), "layer_1", 1.0, positions="answer")
    with pytest.raises(TypeError, match="Intervention objects"):
        Interventions(model, [torch.ones(64)])


def test_hooks_are_removed_after_the_run_and_after_an_error(llama):
    model, tok = llama
    before = hook_counts(model)
    with pytest.raises(RuntimeError):
        with Interventions(model, [steer(direction(), "layer_1", 2.0), ablate(direction(), "embeddings")]):
            assert hook_counts(model) != before
            raise RuntimeError("stop")
    assert hook_counts(model) == before


def test_a_direction_is_named_by_its_unit_vector():
    u = direction()
    assert direction_sha256(u) == direction_sha256(2.0 * u) != direction_sha256(-u)     # 2u: the same unit vector
    entry = steer(u, "layer_2", 1.5, source="dirs/truth.safetensors").entry()
    assert entry == {"kind": "add", "layer": "layer_2", "positions": "all", "alpha": 1.5,
                     "direction_sha256": direction_sha256(u), "direction_source": "dirs/truth.safetensors",
                     "hidden_size": 64}
    assert ablate(u, 3).entry()["alpha"] is None
    for seed in range(20):        # the entry names the direction as direction_sha256 does (no second normalising)
        v = direction(seed=seed)
        assert steer(v, "layer_1", 1.0).entry()["direction_sha256"] == direction_sha256(v)
