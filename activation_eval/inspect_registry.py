"""Inspect AI's entry point into this package: registers the model provider "activation-eval".

Public names:
    activation_eval()    the @modelapi factory: returns harness.inspect_provider.ActivationEvalAPI

Example:
    $ inspect eval task.py --model activation-eval/path/to/model -M output_dir=runs/r1 -M layers=[0,-1]

Inspect loads every installed package's `inspect_ai` entry point (pyproject.toml) at the start of
any evaluation, with whatever model, so this module stays light: it imports Inspect's registry
decorator only. torch, transformers and the provider itself are imported when a model of this
provider is built.
"""
from inspect_ai.model import modelapi


@modelapi(name="activation-eval")
def activation_eval():
    from .harness.inspect_provider import ActivationEvalAPI
    return ActivationEvalAPI
