"""The notebook API (the design card's utils.py): a prompt in, the response and its activations out.

    >>> from utils import generate_inference_with_activations, load_activations
    >>> response, data = generate_inference_with_activations("What is the capital of France?")
    >>> data["activations"]["layer_10"].shape            # (positions, 576)

A thin entry point: everything lives in activation_eval.api (also `from activation_eval import ...`
from any directory once the package is installed with `make setup`).
"""
from activation_eval.api import (  # noqa: F401
    DEFAULT_MODEL,
    Intervention,
    __all__,
    ablate,
    answer_and_grade_benchmark_question,
    answer_benchmark_question,
    answer_benchmark_question_with_activations,
    generate_inference,
    generate_inference_with_activations,
    load_activations,
    load_direction,
    load_model,
    save_activations,
    save_direction,
    steer,
)
