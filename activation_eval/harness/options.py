"""The arguments both harness producers take (lm-eval's model_args, Inspect's -M), parsed in one place.

Imports neither lm-eval nor Inspect, so that each producer loads only its own harness.

Public names:
    RUN_ARGS                the run-folder arguments every producer takes (and their defaults)
    INSPECT_MODEL_ARGS      every -M argument of the Inspect provider: RUN_ARGS and its model's own
    RunOptions              the parsed run-folder arguments (a frozen dataclass); .interventions: the
                            steer= / ablate= edits (store/directions.intervention_specs, the one parser)
    parse_run_options(args, producer) -> RunOptions    checks every value, names the bad one
    split_list(value)       "0;-1" / "0,-1" / [0, -1] -> a list (or one item)
    stop_length(tokenizer, tokens, stop) -> int    tokens up to and including the first stop sequence
    HarnessArgumentError    a bad argument (a ValueError; Inspect shows its message without a traceback)

Example:
    >>> options = parse_run_options({"output_dir": "runs/h", "layers": "0;-1", "positions": "last_prompt"}, "lm-eval")
    >>> options.layers, options.positions, options.store, options.resume
    (['0', '-1'], 'last_prompt', 'files', False)
    >>> parse_run_options({"output_dir": "runs/h", "activation_store": "tape"}, "inspect")
    Traceback (most recent call last):
    activation_eval.harness.options.HarnessArgumentError: activation_store must be one of files, shards, got 'tape'
"""
import dataclasses
from typing import Any

from ..capture.intervene import Intervention
from ..schema.names import Positions, parse_positions
from ..store.directions import STEERING_ARGS, intervention_specs
from ..store.errors import RunFolderError

STORES = ("files", "shards")
FORMATS = ("pkl", "safetensors")
RUN_ARGS = {"output_dir": None, "layers": None, "positions": None, "activation_store": "files",
            "activation_dtype": None, "activation_format": "pkl", "capture_activations": True, "resume": False,
            "confidence": True, **STEERING_ARGS}
INSPECT_MODEL_ARGS = (*RUN_ARGS, "dtype", "device", "batch_size", "model_path", "use_chat_template", "continuous_batching")


class HarnessArgumentError(RunFolderError):
    """A harness argument that cannot be used; the message names it and its allowed values."""


@dataclasses.dataclass(frozen=True)
class RunOptions:
    output_dir: str
    layers: Any                      # as given: names, ints, module paths (resolved against the model later)
    positions: Positions | None      # None: the producer's default
    store: str
    dtype: str | None
    record_format: str
    capture: bool
    resume: bool
    confidence: bool = True          # generated answers' token log-probabilities and entropies (their figures)
    interventions: tuple = ()        # capture/intervene.py edits (steer=, ablate=, ...): checked against the model later

    def settings(self):
        """What run_config.json stores (and a resumed run must repeat)."""
        return {"layers": self.layers, "positions": self.positions, "activation_store": self.store,
                "activation_dtype": self.dtype, "activation_format": self.record_format,
                "capture_activations": self.capture, "confidence": self.confidence}


def parse_run_options(args, producer):
    """RunOptions from a producer's arguments (unknown keys are the producer's own business)."""
    values = {**RUN_ARGS, **{k: v for k, v in args.items() if k in RUN_ARGS}}
    out = values["output_dir"]
    if not isinstance(out, str) or not out.strip():
        where = "-M output_dir=FOLDER" if producer == "inspect" else "output_dir=FOLDER in model_args"
        raise HarnessArgumentError(f"activation-eval needs {where}: the run folder it writes (rows, records, summary)")
    for name, allowed in (("activation_store", STORES), ("activation_format", FORMATS)):
        if values[name] not in allowed:
            raise HarnessArgumentError(f"{name} must be one of {', '.join(allowed)}, got {values[name]!r}")
    for name in ("capture_activations", "resume", "confidence"):
        values[name] = _boolean(name, values[name])
    if values["intervention_positions"] not in ("all", "prompt", "generated"):
        raise HarnessArgumentError(f"intervention_positions must be one of all, prompt, generated, got "
                                   f"{values['intervention_positions']!r}")
    try:
        specs = intervention_specs(values, spell=lambda name: f"{name}=")
    except ValueError as exc:
        raise HarnessArgumentError(str(exc)) from None
    return RunOptions(output_dir=out, layers=split_list(values["layers"]), positions=_positions(values["positions"]),
                      store=values["activation_store"], dtype=values["activation_dtype"],
                      record_format=values["activation_format"], capture=values["capture_activations"],
                      resume=values["resume"], confidence=values["confidence"],
                      interventions=tuple(Intervention(**spec) for spec in specs))


def _boolean(name, value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise HarnessArgumentError(f"{name} must be true or false, got {value!r}")


def split_list(value):
    """A layers / positions value: lists stay, strings are split on , ; : or spaces (lm-eval's
    --model_args splits on commas: write layers=[0,-1] or layers=0;-1)."""
    if isinstance(value, str):
        items = [p for p in value.replace(";", ",").replace(":", ",").replace(" ", ",").split(",") if p]
        return items if len(items) > 1 else (items[0] if items else None)
    if isinstance(value, tuple):
        return list(value)
    return value


def _positions(value):
    value = split_list(value)
    if value is None:
        return None
    if isinstance(value, list):
        try:
            value = [int(p) for p in value]
        except ValueError:
            raise HarnessArgumentError(f"positions: a list of token indices, got {value!r}") from None
    try:
        return parse_positions(value)
    except ValueError as exc:
        raise HarnessArgumentError(f"positions: {exc}") from None


def stop_length(tokenizer, tokens, stop):
    """Tokens of a generated row up to and including the one that completes its first stop
    sequence (lm-eval's MultiTokenEOSCriteria: decoded text of the last few tokens, special tokens
    kept, so the EOS string counts); all tokens when none occurs."""
    stop = [s for s in (stop or []) if s]
    if not stop:
        return len(tokens)
    window = max(len(tokenizer.encode(s, add_special_tokens=False)) for s in stop) + 2
    for n in range(1, len(tokens) + 1):
        text = tokenizer.decode(tokens[max(0, n - window):n], skip_special_tokens=False)
        if any(s in text for s in stop):
            return n
    return len(tokens)
