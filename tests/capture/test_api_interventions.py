"""The notebook API takes interventions=[steer(...), ablate(...)] in every function, and its records and
results say so; an empty list is the plain call."""
import torch

from activation_eval import (
    ablate,
    answer_and_grade_benchmark_question,
    generate_inference,
    generate_inference_with_activations,
    steer,
)


def test_notebook_functions_steer_and_say_so(llama, tokenizer):
    model = llama[0]
    u = torch.randn(64, generator=torch.Generator().manual_seed(1))
    edits = [steer(u, 1, 30.0, source="notebook"), ablate(u, "layer_0", positions="prompt")]
    kwargs = dict(tokenizer=tokenizer, max_new_tokens=5, layers_to_capture=["layer_0", "layer_1"])
    plain_text, plain = generate_inference_with_activations("Capital of France?", model, **kwargs)
    text, steered = generate_inference_with_activations("Capital of France?", model, interventions=edits, **kwargs)
    assert "interventions" not in plain
    assert [(e["kind"], e["layer"], e["positions"], e["direction_source"]) for e in steered["interventions"]] == [
        ("add", "layer_1", "all", "notebook"), ("ablate", "layer_0", "prompt", "")]
    # layer_0's prompt positions have no component along u; layer_1's output moved
    n = steered["num_prompt_tokens"]
    unit = u / u.norm()
    assert steered["activations"]["layer_0"][:n].float().matmul(unit).abs().max() < 1e-4
    assert not torch.equal(steered["activations"]["layer_1"][:n], plain["activations"]["layer_1"][:n])
    assert generate_inference("Capital of France?", model, tokenizer=tokenizer, max_new_tokens=5,
                              interventions=[]) == plain_text
    result = answer_and_grade_benchmark_question({"id": "q", "question": "2+2?", "answer": "4"}, model,
                                                 tokenizer=tokenizer, max_new_tokens=3, interventions=edits[:1])
    assert result["interventions"][0]["alpha"] == 30.0
    assert "interventions" not in answer_and_grade_benchmark_question(
        {"id": "q", "question": "2+2?", "answer": "4"}, model, tokenizer=tokenizer, max_new_tokens=3)
