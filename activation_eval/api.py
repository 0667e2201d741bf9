"""The notebook API: prompts in, answers (and every layer's activations) out. utils.py re-exports it.

Public names:
    load_model(model_name_or_path=None, **opts) -> (model, tokenizer)     loaded once, cached
    generate_inference(prompt, model=None, ...) -> str
    generate_inference_with_activations(prompt, model=None, save_path=None, layers_to_capture=None, ...)
        -> (response, activation_data)
    answer_benchmark_question(question, model=None, ...) -> str
    answer_benchmark_question_with_activations(question, model=None, save_activations=True,
        activation_save_dir="activations", ...) -> (response, activation_data)
    answer_and_grade_benchmark_question(question, model=None, ..., capture_activations=False) -> dict
    load_activations(path, layers=None) -> record dict (never runs code from the file)
    save_activations(record, path)
    steer(direction, layer, alpha, positions="all", source=""), ablate(direction, layer, ...), Intervention
                    edits made while answering (capture/intervene.py): every function above takes
                    interventions=[steer(...), ablate(...)], and its record (and result) carries them
    save_direction(path, vector, source=""), load_direction(path) -> (vector, metadata)   direction files

Example (`model`, `tok`: a tiny random 3-layer llama; with model=None the default model's hidden
size is 576 and its last layer layer_29):
    >>> from activation_eval import generate_inference_with_activations, load_activations
    >>> response, acts = generate_inference_with_activations("What is the capital of France?", model, tokenizer=tok)
    >>> P, N = len(acts["input_ids"]), len(acts["output_ids"])
    >>> acts["activations"]["layer_2"].shape == (P + N - 1, 64)      # (positions, hidden)
    True

Steering (`u`: a direction of the model's hidden size; alpha in the residual's own units):
    >>> u = [1.0] + [0.0] * 63
    >>> _, steered = generate_inference_with_activations("2 + 2 =", model, tokenizer=tok, max_new_tokens=4,
    ...                                                  interventions=[steer(u, "layer_1", alpha=8.0)])
    >>> steered["interventions"][0]["layer"], steered["interventions"][0]["alpha"]
    ('layer_1', 8.0)

`model` is everywhere a hub id or local path (loaded once and cached), an already loaded
transformers model together with `tokenizer=`, or None for the offline default model
(SmolLM2-135M-Instruct). Decoding is greedy unless generate kwargs say otherwise.
"""
import os

from .capture.generation import CaptureSettings, GenerationSettings, generate_records
from .capture.intervene import Intervention, ablate, steer
from .eval.answering import answer_rows
from .eval.benchmark import normalize_row, stable_id
from .eval.gold import has_gold
from .models import DEFAULT_MODEL, load_model
from .schema.record import stamp
from .store import records
from .store.directions import load_direction, save_direction
from .store.records import save_activations
from .store.run_folder import record_path
from .store.run_reader import load_activations

__all__ = ["load_model", "generate_inference", "generate_inference_with_activations",
           "answer_benchmark_question", "answer_benchmark_question_with_activations",
           "answer_and_grade_benchmark_question", "load_activations", "save_activations", "DEFAULT_MODEL",
           "steer", "ablate", "Intervention", "save_direction", "load_direction"]

DEFAULT_MAX_NEW_TOKENS = 32


def _model_and_tokenizer(model, tokenizer):
    if model is None or isinstance(model, (str, os.PathLike)):
        loaded, loaded_tok = load_model(os.fspath(model) if model is not None else None)
        return loaded, tokenizer or loaded_tok
    if tokenizer is None:
        raise ValueError("pass tokenizer= together with an already loaded model "
                         "(or pass the model's name or path and it is loaded with its tokenizer)")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def _settings(max_new_tokens, use_chat_template, generate_kwargs, interventions=()):
    template = "auto" if use_chat_template is None else use_chat_template
    return GenerationSettings(max_new_tokens=max_new_tokens, use_chat_template=template,
                              generate_kwargs=dict(generate_kwargs), interventions=tuple(interventions or ()))


def _as_row(question):
    """A normalized benchmark row from a row dict (as load_benchmark reads it: the same gold conventions,
    and the stable id when it has none), or an ungraded row from a bare question string."""
    if isinstance(question, str):
        if not question.strip():
            raise ValueError("the question is empty; pass a question string or a benchmark row dict")
        text = question.strip()
        return {"id": stable_id(text), "question": text, "answer": [], "choices": None, "category": None,
                "grader": None}
    if not isinstance(question, dict) or "question" not in question:
        raise ValueError(f"question must be a string or a benchmark row dict with a 'question' key, got {question!r}")
    if "grader" in question and isinstance(question.get("answer"), list):
        return question                        # already normalized (a row from load_benchmark)
    if not has_gold(question):
        return dict(_as_row(question["question"]), **{k: question[k] for k in ("id", "category") if question.get(k)})
    return normalize_row(question)


def generate_inference(prompt, model=None, *, tokenizer=None, max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
                       use_chat_template=None, interventions=(), **generate_kwargs):
    """The model's answer to one prompt (greedy by default).

    >>> generate_inference("What is the capital of France?")        # the default model  # doctest: +SKIP
    'The capital of France is Paris.'
    >>> type(generate_inference("What is the capital of France?", model, tokenizer=tok, max_new_tokens=4))
    <class 'str'>
    """
    model, tokenizer = _model_and_tokenizer(model, tokenizer)
    settings = _settings(max_new_tokens, use_chat_template, generate_kwargs, interventions)
    return generate_records(model, tokenizer, [prompt], settings)[0]["response"]


def generate_inference_with_activations(prompt, model=None, save_path=None, layers_to_capture=None, *,
                                        tokenizer=None, positions="all", activation_dtype=None,
                                        max_new_tokens=DEFAULT_MAX_NEW_TOKENS, use_chat_template=None,
                                        interventions=(), **generate_kwargs):
    """Generate an answer while capturing every requested layer; returns (response, record).

    >>> response, data = generate_inference_with_activations("2 + 2 =", model, tokenizer=tok, max_new_tokens=4,
    ...                                                      layers_to_capture=[0, -1, "final_norm"])
    >>> list(data["activations"]), data["activations"]["layer_0"].shape, data["positions_kept"][:3]
    (['layer_0', 'layer_2', 'final_norm'], torch.Size([..., 64]), [0, 1, 2])

    save_path: write the record at once (.pkl or .safetensors, by extension).
    layers_to_capture: None (embeddings + every decoder layer), names, ints or module paths.
    positions: "all", "prompt", "generated", "last_prompt", "answer" (the last prompt token and the
        generated tokens) or a list of absolute token indices.
    """
    model, tokenizer = _model_and_tokenizer(model, tokenizer)
    settings = _settings(max_new_tokens, use_chat_template, generate_kwargs, interventions)
    capture = CaptureSettings(layers=layers_to_capture, positions=positions, dtype=activation_dtype)
    record = generate_records(model, tokenizer, [prompt], settings, capture)[0]
    if save_path is not None:
        records.save_activations(record, save_path)
    return record["response"], record


def answer_benchmark_question(question, model=None, *, tokenizer=None, max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
                              use_chat_template=None, interventions=(), **generate_kwargs):
    """The model's answer to a benchmark row (or a question string), prompted as in main.py."""
    return answer_and_grade_benchmark_question(question, model, tokenizer=tokenizer, max_new_tokens=max_new_tokens,
                                               use_chat_template=use_chat_template, interventions=interventions,
                                               **generate_kwargs)["response"]


def answer_benchmark_question_with_activations(question, model=None, save_activations=True,
                                               activation_save_dir="activations", layers_to_capture=None, *,
                                               tokenizer=None, positions="all", activation_dtype=None,
                                               activation_format="pkl", max_new_tokens=DEFAULT_MAX_NEW_TOKENS,
                                               use_chat_template=None, interventions=(), **generate_kwargs):
    """(response, record) for a benchmark row; saved under activation_save_dir/<id>.<format>."""
    result = answer_and_grade_benchmark_question(
        question, model, tokenizer=tokenizer, capture_activations=True, save_activations=save_activations,
        activation_save_dir=activation_save_dir, layers_to_capture=layers_to_capture, positions=positions,
        activation_dtype=activation_dtype, activation_format=activation_format, max_new_tokens=max_new_tokens,
        use_chat_template=use_chat_template, return_record=True, interventions=interventions, **generate_kwargs)
    return result["response"], result.pop("record")


def answer_and_grade_benchmark_question(question, model=None, *, tokenizer=None, capture_activations=False,
                                        activation_save_dir="activations", layers_to_capture=None,
                                        positions="all", activation_dtype=None, activation_format="pkl",
                                        save_activations=True, return_record=False,
                                        max_new_tokens=DEFAULT_MAX_NEW_TOKENS, use_chat_template=None,
                                        interventions=(), **generate_kwargs):
    """Answer and grade one benchmark row: {id, question, prompt, response, answer, extracted, correct, grader, ...}.

    >>> answer_and_grade_benchmark_question({"id": "q1", "question": "What is 2 + 3?", "answer": "5"}, model,
    ...                                     tokenizer=tok, max_new_tokens=4)["correct"]    # a random model
    False
    >>> answer_and_grade_benchmark_question("What is the capital of Peru?", model, tokenizer=tok,
    ...                                     max_new_tokens=4)["correct"] is None           # ungraded
    True

    A row dict is read like a benchmark file's row (an integer answer with choices is a 0-based index,
    ...; see eval/grading.py) and gets the stable id of its question when it has no "id". A bare
    question string is answered but not graded (correct, extracted and grader are None).

    With capture_activations=True the record is saved as activation_save_dir/<id>.<activation_format>
    and the result names it in "activation_file".
    """
    row = _as_row(question)
    model, tokenizer = _model_and_tokenizer(model, tokenizer)
    settings = _settings(max_new_tokens, use_chat_template, generate_kwargs, interventions)
    capture = CaptureSettings(layers_to_capture, positions, activation_dtype) if capture_activations else None
    result, record = answer_rows(model, tokenizer, [row], settings, capture)[0]
    stamp(record, result)                       # the record says which question it answers, and the verdict
    if capture_activations and save_activations:
        path = record_path(activation_save_dir, row["id"], activation_format)
        records.save_activations(record, path)  # the argument save_activations is a bool here
        result["activation_file"] = path
    if return_record:
        result["record"] = record
    return result
