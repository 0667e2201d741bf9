"""The model the lens projects through: the run's when it is local, else the one passed; never a download.

Public names:
    is_local_model(name) -> bool      the offline default model, an existing model folder or .gguf file
    ModelNotLocalError                the run's model is a hub id: pass --model PATH
    load_run_model(run_dir, model=None) -> (model, tokenizer)

Example:
    >>> is_local_model("models/tiny-llama"), is_local_model("org/not-here")
    (True, False)
"""
import os
from typing import Any

from ...models import DEFAULT_MODEL, load_model
from ...store.run_folder import config_path, read_run_config


class ModelNotLocalError(ValueError):
    """The run's model is not on this machine as a local folder / .gguf file: the analysis never
    downloads; the message says how to pass one (--model PATH)."""


def is_local_model(name: str | os.PathLike[str]) -> bool:
    """True for a model the analysis may load without any network call: the offline default model,
    an existing model folder, or an existing .gguf file."""
    name = os.fspath(name)
    return name == DEFAULT_MODEL or os.path.isdir(name) or (name.endswith(".gguf") and os.path.isfile(name))


def load_run_model(run_dir: str, model: str | os.PathLike[str] | None = None) -> tuple[Any, Any]:
    """(model, tokenizer) for the lens: `model` (a path or name given with --model) if given, else the
    run's model from run_config.json when it is local (is_local_model); never a download."""
    path = config_path(run_dir)
    try:
        config = read_run_config(run_dir)
    except (OSError, ValueError) as exc:
        if model is None:
            raise ValueError(f"cannot read the run's settings {path}: {exc}; the logit lens needs the "
                             f"run's model name from it (or pass --model PATH)") from exc
        config = {}
    if not isinstance(config, dict):
        config = {}
    dtype = config.get("dtype") if config.get("dtype") in ("float32", "bfloat16", "float16") else "auto"
    if model is not None:
        return load_model(os.fspath(model), dtype=dtype)
    name = config.get("model")
    if not name or not isinstance(name, str):
        raise ModelNotLocalError(f"{path} names no model; the logit lens needs the run's model: pass --model PATH "
                                 f"(a local model folder or .gguf file)")
    if not is_local_model(name):
        raise ModelNotLocalError(
            f"the run's model {name!r} (from {path}) is not a local model folder or .gguf file on this machine, "
            f"and the analysis never downloads: pass --model PATH, that model saved locally (a folder "
            f"written by save_pretrained or downloaded from the hub, or a .gguf file)")
    return load_model(name, dtype=dtype)
