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

Example:
    >>> from activation_eval import generate_inference_with_activations, load_activations
    >>> response, record = generate_inference_with_activations("What is the capital of France?")
    >>> record["activations"]["layer_10"].shape        # (positions, 576)

Packages, in the direction data flows (each imports only those before it, and store imports
nothing of the project):
    models.py    loading models, the offline default model
    capture/     hooks (ActivationCapture), continuous decoding, generation -> records
    eval/        benchmark files, prompts, graders, answering rows
    store/       record codecs, the safe unpickler, errors, atomic writes, run_folder
    run/         the run loop, resume, multi-process, the eval CLI
    analysis/    arrays, datasets (reduce=), stats, probes, plots, the analysis CLI
"""
from .analysis.dataset import load_run_layer
from .api import (DEFAULT_MODEL, answer_and_grade_benchmark_question, answer_benchmark_question,
                  answer_benchmark_question_with_activations, generate_inference,
                  generate_inference_with_activations, load_activations, load_model, save_activations)

__all__ = ["generate_inference_with_activations", "generate_inference", "answer_benchmark_question",
           "answer_benchmark_question_with_activations", "answer_and_grade_benchmark_question",
           "load_activations", "save_activations", "load_model", "load_run_layer", "DEFAULT_MODEL"]
from .capture.generation import TOOL_VERSION as __version__  # noqa: E402
