"""Batched greedy generation, optionally under ActivationCapture, returning one record per prompt.

Public names:
    GenerationSettings        max_new_tokens / chat template / extra generate() kwargs
    encode_prompts(tokenizer, prompts, use_chat_template) -> BatchEncoding (left-padded)
    prompt_lengths(tokenizer, prompts, use_chat_template) -> [int]
    generate_records(model, tokenizer, prompts, settings, capture=None) -> [record, ...]
    CaptureSettings           layers / positions / activation dtype (None capture = plain generation)

Example:
    >>> records = generate_records(model, tok, ["2+2=?", "Capital of France?"],
    ...                            GenerationSettings(max_new_tokens=16), CaptureSettings(layers=[0, -1]))
    >>> records[1]["response"], records[1]["activations"]["layer_0"].shape

A record is the dict described in ACTIVATION_CAPTURE_README.md: the seed's keys (prompt, response,
model, timestamp, input_ids, output_ids, activations) plus layer names, kept positions, dtype, a
model summary, the generation settings and library versions.
"""
import contextlib
import dataclasses
import datetime
import platform

import torch
import transformers

from capture import ActivationCapture, find_decoder_layers
from models import uses_chat_template

TOOL_VERSION = "0.1.0"
DTYPE_NAMES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclasses.dataclass
class GenerationSettings:
    max_new_tokens: int = 32            # tokens generated per answer (greedy unless do_sample given)
    use_chat_template: object = "auto"  # auto/on/off or True/False/None
    generate_kwargs: dict = dataclasses.field(default_factory=dict)  # passed to model.generate

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.generate_kwargs.get("num_beams", 1) != 1:
            raise ValueError("beam search (num_beams > 1) is not supported: beams reorder rows between steps")


@dataclasses.dataclass
class CaptureSettings:
    layers: object = None        # None: embeddings + every decoder layer; names, ints, module paths
    positions: object = "all"    # all / prompt / generated / last_prompt / list of ints
    dtype: object = None         # activation dtype; None: the model's dtype

    def torch_dtype(self):
        if self.dtype is None or isinstance(self.dtype, torch.dtype):
            return self.dtype
        if self.dtype not in DTYPE_NAMES:
            raise ValueError(f"unknown activation dtype {self.dtype!r}; use one of {', '.join(DTYPE_NAMES)}")
        return DTYPE_NAMES[self.dtype]


def encode_prompts(tokenizer, prompts, use_chat_template="auto"):
    """Tokenize prompts as one left-padded batch, through the chat template when it applies."""
    if uses_chat_template(tokenizer, use_chat_template):
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                               add_generation_prompt=True) for p in prompts]
        return tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    return tokenizer(list(prompts), padding=True, return_tensors="pt")


def prompt_lengths(tokenizer, prompts, use_chat_template="auto"):
    """Token count of each prompt as encode_prompts feeds it (no padding, no tensors)."""
    if uses_chat_template(tokenizer, use_chat_template):
        return [len(tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=True,
                                                  add_generation_prompt=True, return_dict=False)) for p in prompts]
    return [len(ids) for ids in tokenizer(list(prompts))["input_ids"]]


def _eos_ids(model, tokenizer):
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _generated_length(tokens, eos_ids):
    """Tokens this row generated, up to and including its first EOS."""
    for i, tok in enumerate(tokens.tolist()):
        if tok in eos_ids:
            return i + 1
    return len(tokens)


def model_summary(model):
    config = model.config
    return {"class": type(model).__name__, "model_type": getattr(config, "model_type", None),
            "num_layers": len(find_decoder_layers(model)[1]),
            "hidden_size": getattr(config, "hidden_size", None) or getattr(config, "n_embd", None),
            "dtype": str(next(model.parameters()).dtype).replace("torch.", "")}


def versions():
    return {"activation_capture": TOOL_VERSION, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def model_name(model):
    return getattr(model, "name_or_path_for_records", None) or getattr(model, "name_or_path", None) or type(model).__name__


@torch.no_grad()
def generate_records(model, tokenizer, prompts, settings=None, capture=None):
    """Generate answers for a batch of prompts; with `capture`, each record holds its activations."""
    settings = settings or GenerationSettings()
    batch = encode_prompts(tokenizer, prompts, settings.use_chat_template)
    device = model.get_input_embeddings().weight.device
    input_ids = batch["input_ids"].to(device)                  # (B, P_pad)
    attention_mask = batch["attention_mask"].to(device)
    kwargs = {"do_sample": False, "pad_token_id": tokenizer.pad_token_id, **settings.generate_kwargs,
              "max_new_tokens": settings.max_new_tokens}
    cap = None
    if capture is not None:
        cap = ActivationCapture(model, capture.layers, capture.positions, capture.torch_dtype())
    with cap if cap is not None else contextlib.nullcontext():
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
    return _build_records(model, tokenizer, prompts, batch, output.cpu(), settings, kwargs, cap)


def _build_records(model, tokenizer, prompts, batch, output, settings, kwargs, cap):
    width = batch["input_ids"].shape[1]
    eos_ids = _eos_ids(model, tokenizer)
    timestamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    shared = {"model": model_name(model), "model_info": model_summary(model), "versions": versions(),
              "generation": {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))}}
    shared["generation"]["chat_template"] = uses_chat_template(tokenizer, settings.use_chat_template)
    pads = [int((batch["attention_mask"][row] == 0).sum()) for row in range(len(prompts))]
    gen_lens = [_generated_length(output[row, width:], eos_ids) for row in range(len(prompts))]
    # layer by layer for the whole batch: the activations are held about once, not twice
    captured = cap.batch_activations(pads, [width - pad for pad in pads], gen_lens, width) if cap is not None else None
    records = []
    for row, prompt in enumerate(prompts):
        pad, gen_len = pads[row], gen_lens[row]
        output_ids = output[row, width:width + gen_len].clone()
        record = {"prompt": prompt, "response": tokenizer.decode(output_ids, skip_special_tokens=True).strip(),
                  "model": shared["model"], "timestamp": timestamp,
                  "input_ids": batch["input_ids"][row, pad:].clone(), "output_ids": output_ids, **shared,
                  "num_prompt_tokens": width - pad, "num_generated_tokens": gen_len}
        if cap is not None:
            acts, kept = captured[row]
            record.update(activations=acts, layer_names=list(cap.names), positions=cap.positions,
                          positions_kept=kept, dtype=str(cap.dtype).replace("torch.", ""))
        records.append(record)
    if cap is not None:
        cap.release()
    return records
