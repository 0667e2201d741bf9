"""A tour of activation capture on the offline default model (SmolLM2-135M-Instruct).

    python example_activation_capture.py

1. ask one question and capture every layer at every position;
2. show what the record holds (shapes, positions, the last-token norm per layer);
3. capture only a few layers at the last prompt token and save them to a file;
4. load the file back (safely) and check it matches.
"""
import os
import tempfile

from utils import generate_inference_with_activations, load_activations


def main():
    question = "What is the capital of France?"
    response, data = generate_inference_with_activations(question, max_new_tokens=16)
    acts = data["activations"]
    P, N = data["num_prompt_tokens"], data["num_generated_tokens"]
    print(f"question : {question}")
    print(f"response : {response}")
    print(f"tokens   : {P} prompt (chat template applied) + {N} generated")
    print(f"captured : {len(acts)} tensors, each (positions, hidden) = {tuple(acts['layer_0'].shape)} {data['dtype']}")
    print(f"           positions 0 .. {P + N - 2}: the last generated token is never fed back, so it has none")
    print()
    print("norm of the residual stream at the last prompt token (the state that predicts the answer):")
    last_prompt = P - 1
    for name, tensor in acts.items():
        if name == "embeddings" or name.endswith(("_0", "_9", "_19", "_29")):
            norm = tensor[last_prompt].float().norm().item()
            print(f"  {name:<11} {norm:9.2f}  {'#' * min(60, int(norm / 4))}")
    print()

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "france.safetensors")
        _, small = generate_inference_with_activations(
            question, layers_to_capture=["embeddings", 14, -1, "final_norm"], positions="last_prompt",
            save_path=path, max_new_tokens=16)
        back = load_activations(path, layers=["layer_14"])
        same = back["activations"]["layer_14"].equal(small["activations"]["layer_14"])
        print(f"saved {list(small['activations'])} at position {small['positions_kept']} "
              f"-> {os.path.getsize(path) / 1024:.1f} KiB; reloaded layer_14 matches: {same}")
        print(f"the same state as the full capture: {small['activations']['layer_14'][0].equal(acts['layer_14'][last_prompt])}")


if __name__ == "__main__":
    main()
