"""activation_eval: evaluate causal LMs on question benchmarks and capture every layer's activations.

Public names (the notebook API, from api.py):
    generate_inference_with_activations(prompt, model=None, ...) -> (response, record)
    generate_inference(prompt, model=None, ...) -> str
    answer_benchmark_question(question, ...), answer_benchmark_question_with_activations(question, ...)
    answer_and_grade_benchmark_question(question, model=None, ...) -> graded result dict
    load_activations(path, layers=None) -> record dict (never runs code from the file)
    save_activations(record, path)
    load_model(model_name_or_path=None, **opts) -> (model, tokenizer)   loaded once, cached
    load_run_layer(run_dir, layer, reduce="last_prompt") -> (X [n, hidden], rows)
    steer(direction, layer, alpha, ...), ablate(direction, layer, ...), Intervention   edits made while
        answering: interventions=[...] in the functions above
    save_direction(path, vector, source=""), load_direction(path)   direction files (.safetensors, .npy)

Example (`model` here is a tiny random 3-layer llama with its tokenizer `tok`; without a model, the
offline default model SmolLM2-135M-Instruct is loaded and every shape below has hidden size 576):
    >>> from activation_eval import generate_inference_with_activations, load_activations
    >>> response, record = generate_inference_with_activations("What is the capital of France?", model,
    ...                                                         tokenizer=tok, max_new_tokens=4, save_path="q1.pkl")
    >>> record["activations"]["layer_2"].shape        # (positions, hidden): prompt + answer - 1 tokens
    torch.Size([..., 64])
    >>> load_activations("q1.pkl", layers=["layer_2"])["response"] == response
    True

Packages, in the direction data flows (each imports only those before it, and store imports
nothing of the project):
    models.py    loading models, the offline default model
    capture/     hooks (ActivationCapture), continuous decoding, generation -> records
    eval/        benchmark files, prompts, graders, answering rows
    store/       record codecs, the safe unpickler, errors, atomic writes, run_folder
    run/         the run loop, resume, multi-process, the eval CLI
    analysis/    arrays, datasets (reduce=), stats, probes, plots, the analysis CLI
"""
import importlib

# Public name -> the module that defines it. Nothing is imported until a name is first used, so
# `import activation_eval` stays cheap (no torch, transformers or numpy until they are needed).
_LAZY = {
    "generate_inference_with_activations": ".api", "generate_inference": ".api",
    "answer_benchmark_question": ".api", "answer_benchmark_question_with_activations": ".api",
    "answer_and_grade_benchmark_question": ".api", "load_activations": ".api", "save_activations": ".api",
    "load_model": ".api", "DEFAULT_MODEL": ".api", "load_run_layer": ".analysis.dataset",
    "steer": ".api", "ablate": ".api", "Intervention": ".api", "save_direction": ".api", "load_direction": ".api",
}
DISTRIBUTION = "activation-eval"  # the installed distribution's name (pyproject.toml's [project] name)

__all__ = ["generate_inference_with_activations", "generate_inference", "answer_benchmark_question",
           "answer_benchmark_question_with_activations", "answer_and_grade_benchmark_question",
           "load_activations", "save_activations", "load_model", "load_run_layer", "DEFAULT_MODEL",
           "steer", "ablate", "Intervention", "save_direction", "load_direction", "__version__"]


def _version():
    """pyproject.toml's version, read from the installed package's metadata (its one source)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a bare source tree that was never installed (`make setup` installs it)
        return "0+unknown"


def __getattr__(name):
    if name == "__version__":
        value = _version()
    elif name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # cached: __getattr__ runs once per name
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
