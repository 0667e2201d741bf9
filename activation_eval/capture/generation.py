"""Batched generation (greedy, or seeded sampling), optionally under ActivationCapture, returning one
record per prompt.

Public names:
    GenerationSettings        max_new_tokens / chat template / extra generate() kwargs / continuous batching /
                              system prompt / temperature, top_p, top_k, seed (sampling; temperature 0 = greedy) /
                              confidence (each record's token log-probabilities and entropies, and their figures)
    confidence_fields(logprobs, entropies, span=None) -> a record's confidence figures (capture/confidence.py)
    model_texts(tokenizer, prompts, use_chat_template, system_prompt=None) -> (texts, add special tokens?)
                              a prompt is a string, or a conversation: [{"role": ..., "content": ...}, ...]
    encode_prompts(tokenizer, prompts, use_chat_template, system_prompt=None) -> BatchEncoding (left-padded)
    prompt_lengths(tokenizer, prompts, use_chat_template, system_prompt=None) -> [int]
    generate_records(model, tokenizer, prompts, settings, capture=None, batch_size=None, keys=None) -> [record, ...]
    iter_records(model, tokenizer, prompts, settings, capture=None, batch_size=None, keys=None) -> (index, record), ...
    decoding_mode(model, tokenizer, settings) -> ("continuous" | "generate", why not continuous)
    step_confidence(logits, new_tokens) -> (log-probabilities (B, N), entropies (B, N)) from generate's raw logits
    CaptureSettings           layers / positions / activation dtype (None capture = plain generation)
    OUTPUT_LOGPROBS           "output_logprobs": the record key of each kept token's log-probability
    OUTPUT_ENTROPIES          "output_entropies": the record key of each kept token's distribution's entropy

Example:
    >>> records = generate_records(model, tok, ["2+2=?", "Capital of France?"],
    ...                            GenerationSettings(max_new_tokens=16), CaptureSettings(layers=[0, -1]))
    >>> records[1]["prompt"], list(records[1]["activations"]), records[1]["activations"]["layer_0"].shape
    ('Capital of France?', ['layer_0', 'layer_2'], torch.Size([24, 64]))

Two decoding paths give the same tokens and records: decoding without logits processors runs
continuous.decode (finished answers leave the batch, waiting prompts take their slots); anything
else (other generate() arguments such as do_sample, unusual caches) runs model.generate on
left-padded batches of `batch_size` prompts under ActivationCapture. Sampling set in the settings
(temperature > 0) runs on either path with one random stream per prompt (sampling.Sampler),
seeded from (seed, keys[i]); keys default to the prompts' indices.

A record is the dict described in ACTIVATION_CAPTURE_README.md: the seed's keys (prompt, response,
model, timestamp, input_ids, output_ids, activations) plus layer names, kept positions, dtype, a
model summary, the generation settings and library versions.

Output confidence (settings.confidence, on by default): every record also holds output_logprobs,
log p(token | everything before it) of each token it keeps in output_ids (up to and including the
first EOS), output_entropies, the entropy (nats) of the distribution each was drawn from,
answer_logprob_sum / answer_logprob_mean, their sum / mean, first_token_entropy, and
answer_logprob_min / answer_entropy_mean / answer_entropy_max over every kept token (the answer span
is applied once the answer is graded: eval/answering.py, capture/confidence.py). All come from the
logits of the forward passes that generated the answer (no extra forward), under the model's RAW
distribution (softmax at temperature 1, before any sampling warper or logits processor), in
float32; both decoding paths give the same figures.
"""
import contextlib
import dataclasses
import datetime
import platform

import jinja2
import torch
import transformers

import activation_eval

from ..dtypes import FLOAT_DTYPES, float_dtype
from ..models import uses_chat_template
from . import continuous
from .confidence import OUTPUT_ENTROPIES, OUTPUT_LOGPROBS, confidence_fields
from .hooks import ActivationCapture, find_decoder_layers
from .intervene import Interventions
from .row_capture import RowCapture
from .sampling import Sampler

DTYPE_NAMES = FLOAT_DTYPES            # --activation_dtype names (activation_eval/dtypes.py)
__all__ = ["GenerationSettings", "CaptureSettings", "confidence_fields", "model_texts", "encode_prompts",
           "encode_each", "prompt_lengths", "generate_records", "iter_records", "decoding_mode", "OUTPUT_LOGPROBS",
           "OUTPUT_ENTROPIES", "DTYPE_NAMES", "model_summary", "versions", "model_name", "step_confidence"]


@dataclasses.dataclass
class GenerationSettings:
    max_new_tokens: int = 32            # tokens generated per answer (greedy unless do_sample given)
    use_chat_template: object = "auto"  # auto/on/off or True/False/None
    generate_kwargs: dict = dataclasses.field(default_factory=dict)  # passed to model.generate
    continuous_batching: bool = True    # refill finished rows at once (False: model.generate batches)
    system_prompt: str = None           # the chat template's system message; without a template, prepended
    temperature: float = 0.0            # 0: greedy; > 0: sample (each prompt its own seeded stream)
    top_p: float = 1.0                  # nucleus sampling mass (1.0: off); needs temperature > 0
    top_k: int = 0                      # keep the k most likely tokens (0: off); needs temperature > 0
    seed: int = 0                       # with the prompt's key, seeds its random stream
    confidence: bool = True             # token log-probabilities, entropies and their figures in each record
    interventions: tuple = ()           # capture/intervene.py edits made while answering (steer / ablate)

    def __post_init__(self):
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        if self.generate_kwargs.get("num_beams", 1) != 1:
            raise ValueError("beam search (num_beams > 1) is not supported: beams reorder rows between steps")
        _check_sampling(self)
        self.interventions = tuple(self.interventions or ())

    @property
    def sampling(self):
        """True when tokens are sampled through the settings (temperature > 0)."""
        return self.temperature > 0


_SAMPLING_KWARGS = ("do_sample", "temperature", "top_p", "top_k")


def _check_sampling(settings):
    if isinstance(settings.temperature, bool) or not isinstance(settings.temperature, (int, float)) \
            or not 0 <= settings.temperature < float("inf"):
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {settings.temperature!r}")
    if isinstance(settings.top_p, bool) or not isinstance(settings.top_p, (int, float)) or not 0 < settings.top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {settings.top_p!r}")
    if isinstance(settings.top_k, bool) or not isinstance(settings.top_k, int) or settings.top_k < 0:
        raise ValueError(f"top_k must be an integer >= 0 (0 = off), got {settings.top_k!r}")
    if isinstance(settings.seed, bool) or not isinstance(settings.seed, int):
        raise ValueError(f"seed must be an integer, got {settings.seed!r}")
    if not settings.sampling and (settings.top_p != 1 or settings.top_k != 0):
        raise ValueError("top_p / top_k only apply when sampling: set temperature > 0 as well")
    if settings.sampling and any(k in settings.generate_kwargs for k in _SAMPLING_KWARGS):
        raise ValueError(f"sampling is set twice: pass temperature/top_p/top_k either as settings or as "
                         f"generate() arguments {list(_SAMPLING_KWARGS)}, not both")


@dataclasses.dataclass
class CaptureSettings:
    layers: object = None        # None: embeddings + every decoder layer; names, ints, module paths
    positions: object = "all"    # all / prompt / generated / last_prompt / answer / list of ints
    dtype: object = None         # activation dtype; None: the model's dtype

    def torch_dtype(self):
        if self.dtype is None or isinstance(self.dtype, torch.dtype):
            return self.dtype
        return float_dtype(self.dtype, "activation dtype")


def model_texts(tokenizer, prompts, use_chat_template="auto", system_prompt=None):
    """(texts as the model reads them, whether the tokenizer adds its special tokens).

    A system prompt is the chat template's system message; a template that refuses the system role
    (e.g. Gemma's) gets it at the start of the user message, and without a template it is
    prepended to the prompt, followed by a blank line. A conversation (a list of role/content
    messages, e.g. from an Inspect task) goes through the template whole; without a template its
    contents are joined by blank lines.
    """
    if not uses_chat_template(tokenizer, use_chat_template):
        texts = [p if isinstance(p, str) else "\n\n".join(m["content"] for m in p) for p in prompts]
        return [f"{system_prompt}\n\n{p}" if system_prompt else p for p in texts], True
    return [_chat_text(tokenizer, p, system_prompt) for p in prompts], False


def _chat_text(tokenizer, prompt, system_prompt):
    user = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if not system_prompt:
        return tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    try:
        return tokenizer.apply_chat_template([{"role": "system", "content": system_prompt}] + user,
                                             tokenize=False, add_generation_prompt=True)
    except jinja2.TemplateError:
        merged = [{**user[0], "content": f"{system_prompt}\n\n{user[0]['content']}"}] + user[1:]
        return tokenizer.apply_chat_template(merged, tokenize=False, add_generation_prompt=True)


def encode_prompts(tokenizer, prompts, use_chat_template="auto", system_prompt=None):
    """Tokenize prompts as one left-padded batch, through the chat template when it applies."""
    texts, special = model_texts(tokenizer, prompts, use_chat_template, system_prompt)
    return tokenizer(texts, add_special_tokens=special, padding=True, return_tensors="pt")


def encode_each(tokenizer, prompts, use_chat_template="auto", system_prompt=None):
    """Token ids of each prompt as encode_prompts feeds it, without padding: [[int, ...], ...]."""
    texts, special = model_texts(tokenizer, prompts, use_chat_template, system_prompt)
    return tokenizer(texts, add_special_tokens=special)["input_ids"]


def prompt_lengths(tokenizer, prompts, use_chat_template="auto", system_prompt=None):
    """Token count of each prompt as encode_prompts feeds it (no padding, no tensors)."""
    return [len(ids) for ids in encode_each(tokenizer, prompts, use_chat_template, system_prompt)]


def _eos_ids(model, tokenizer):
    ids = model.generation_config.eos_token_id
    ids = set(ids if isinstance(ids, (list, tuple)) else [ids] if ids is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return ids


def _generated_length(tokens, eos_ids):
    """Tokens this row generated, up to and including its first EOS."""
    for i, tok in enumerate(tokens.tolist() if torch.is_tensor(tokens) else tokens):
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
    return {"activation_capture": activation_eval.__version__, "torch": torch.__version__,
            "transformers": transformers.__version__, "python": platform.python_version()}


def model_name(model):
    return getattr(model, "name_or_path_for_records", None) or getattr(model, "name_or_path", None) or type(model).__name__


def _generate_kwargs(tokenizer, settings):
    return {"do_sample": False, "pad_token_id": tokenizer.pad_token_id, **settings.generate_kwargs,
            "max_new_tokens": settings.max_new_tokens}


def decoding_mode(model, tokenizer, settings):
    """("continuous", None) when continuous.decode applies, else ("generate", why not)."""
    if not settings.continuous_batching:
        return "generate", "continuous_batching=False"
    why = continuous.unsupported_reason(model, _generate_kwargs(tokenizer, settings))
    return ("generate", why) if why else ("continuous", None)


def generate_records(model, tokenizer, prompts, settings=None, capture=None, batch_size=None, keys=None):
    """Generate answers for prompts; with `capture`, each record holds its activations.

    At most `batch_size` prompts (default: all) are decoded together. Records come back in the
    order of `prompts`; iter_records gives them as they are finished. When sampling, `keys` (one
    string per prompt, default its index) with settings.seed seed each prompt's random stream.
    """
    records = [None] * len(prompts)
    for index, record in iter_records(model, tokenizer, prompts, settings, capture, batch_size, keys):
        records[index] = record
    return records


@torch.no_grad()
def iter_records(model, tokenizer, prompts, settings=None, capture=None, batch_size=None, keys=None):
    """Yield (index into prompts, record) as each answer is finished (see generate_records)."""
    settings = settings or GenerationSettings()
    prompts = list(prompts)
    batch_size = batch_size or max(len(prompts), 1)
    kwargs = _generate_kwargs(tokenizer, settings)
    mode = decoding_mode(model, tokenizer, settings)[0]
    steer = Interventions(model, settings.interventions)
    shared = _shared_fields(model, tokenizer, settings, kwargs, mode, steer.entries)
    sampler = _sampler(settings, prompts, keys)
    with steer:
        if mode == "continuous":
            yield from _continuous_records(model, tokenizer, prompts, settings, capture, batch_size, kwargs, shared,
                                           sampler, steer)
            return
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start:start + batch_size]
            if sampler is not None:
                kwargs = {**kwargs, "logits_processor": sampler.logits_processor(range(start, start + len(chunk)))}
            steer.begin()
            for row, record in enumerate(_generate_batch(model, tokenizer, chunk, settings, capture, kwargs, shared)):
                yield start + row, record


def _sampler(settings, prompts, keys):
    """A Sampler with one stream per prompt when the settings sample, else None (greedy)."""
    if not settings.sampling:
        return None
    keys = [str(i) for i in range(len(prompts))] if keys is None else [str(k) for k in keys]
    if len(keys) != len(prompts):
        raise ValueError(f"keys: {len(keys)} given for {len(prompts)} prompts")
    return Sampler(settings.temperature, settings.top_k, settings.top_p, settings.seed, keys)


def _continuous_records(model, tokenizer, prompts, settings, capture, width, kwargs, shared, sampler=None,
                        steer=None):
    ids = encode_each(tokenizer, prompts, settings.use_chat_template, settings.system_prompt)
    eos_ids = _eos_ids(model, tokenizer)
    stop = kwargs.get("eos_token_id")
    stop_ids = set(stop if isinstance(stop, (list, tuple)) else [stop]) if stop is not None else eos_ids
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    width = min(width, max(len(prompts), 1))
    cap = None
    if capture is not None:
        cap = RowCapture(model, capture.layers, capture.positions, capture.torch_dtype(),
                         width=width, max_steps=settings.max_new_tokens - 1)
    with cap if cap is not None else contextlib.nullcontext():
        for done in continuous.decode(model, ids, width, settings.max_new_tokens, stop_ids, pad_id, cap,
                                      cut=lambda toks: _generated_length(toks, eos_ids),
                                      pick=sampler.pick if sampler else None, confidence=settings.confidence,
                                      steer=steer):
            confidence = confidence_fields(done.logprobs, done.entropies) if settings.confidence else None
            yield done.index, _record(tokenizer, prompts[done.index], torch.tensor(ids[done.index]),
                                      torch.tensor(done.tokens), shared, cap, done.captured, confidence)


def _generate_batch(model, tokenizer, prompts, settings, capture, kwargs, shared):
    """One left-padded model.generate call (under ActivationCapture) -> records in prompt order."""
    batch = encode_prompts(tokenizer, prompts, settings.use_chat_template, settings.system_prompt)
    device = model.get_input_embeddings().weight.device
    input_ids = batch["input_ids"].to(device)                  # (B, P_pad)
    attention_mask = batch["attention_mask"].to(device)
    cap = None
    if capture is not None:
        cap = ActivationCapture(model, capture.layers, capture.positions, capture.torch_dtype())
    # output_logits: generate's raw per-step logits (before its logits processors), for the confidence figures
    extra = {"output_logits": True, "return_dict_in_generate": True} if settings.confidence else {}
    with cap if cap is not None else contextlib.nullcontext():
        output = model.generate(input_ids=input_ids, attention_mask=attention_mask, **{**kwargs, **extra})
    sequences = output.sequences if settings.confidence else output                      # (B, P_pad + N)
    steps = step_confidence(output.logits, sequences[:, input_ids.shape[1]:]) if settings.confidence else None
    return _batch_records(tokenizer, prompts, batch, sequences.cpu(), _eos_ids(model, tokenizer), shared, cap, steps)


def step_confidence(logits, new_tokens):
    """(log p of each generated token (B, N), the entropy of each one's distribution (B, N)) on the
    host, from generate's raw logits (one (B, vocab) tensor per step, output_logits=True), a step at a
    time (no (B, N, vocab) copy); new_tokens (B, N) are the generated ids."""
    pairs = [continuous.token_confidence(step, new_tokens[:, t]) for t, step in enumerate(logits)]
    return torch.stack([lp for lp, _ in pairs], 1).cpu(), torch.stack([h for _, h in pairs], 1).cpu()


def _batch_records(tokenizer, prompts, batch, output, eos_ids, shared, cap, steps=None):
    """Records from one generate call's output (B, P_pad + N) and its capture; releases the capture.
    `steps`: (log-probabilities (B, N), entropies (B, N)) of the generated tokens, or None."""
    width = batch["input_ids"].shape[1]
    pads = [int((batch["attention_mask"][row] == 0).sum()) for row in range(len(prompts))]
    gen_lens = [_generated_length(output[row, width:], eos_ids) for row in range(len(prompts))]
    confidence = [None] * len(prompts) if steps is None else [
        confidence_fields(steps[0][row, :gen_lens[row]].tolist(), steps[1][row, :gen_lens[row]].tolist())
        for row in range(len(prompts))]
    # layer by layer for the whole batch: the activations are held about once, not twice
    captured = cap.batch_activations(pads, [width - pad for pad in pads], gen_lens, width) if cap is not None else None
    records = [_record(tokenizer, prompt, batch["input_ids"][row, pads[row]:].clone(),
                       output[row, width:width + gen_lens[row]].clone(), shared, cap,
                       captured[row] if cap is not None else None, confidence[row])
               for row, prompt in enumerate(prompts)]
    if cap is not None:
        cap.release()
    return records


def _shared_fields(model, tokenizer, settings, kwargs, mode, interventions=()):
    """The fields every record of one call shares (`mode`: the decoding path that runs; `interventions`:
    the entries of the edits made while answering, kept only when there are some)."""
    shared = {"model": model_name(model), "model_info": model_summary(model), "versions": versions(),
              "generation": {k: v for k, v in kwargs.items() if isinstance(v, (int, float, str, bool, type(None)))}}
    shared["generation"]["chat_template"] = uses_chat_template(tokenizer, settings.use_chat_template)
    shared["generation"]["decoding"] = mode
    if settings.system_prompt:
        shared["generation"]["system_prompt"] = settings.system_prompt
    if settings.sampling:      # sampled by sampling.Sampler on either path, not by generate's own sampler
        shared["generation"].update(do_sample=True, temperature=settings.temperature, top_p=settings.top_p,
                                    top_k=settings.top_k, seed=settings.seed, sampler="per-prompt seeded streams")
    if interventions:
        shared["interventions"] = [dict(entry) for entry in interventions]
    return shared


def _record(tokenizer, prompt, input_ids, output_ids, shared, cap, captured, confidence=None):
    """One record: the seed's keys, token counts, shared fields, the confidence figures (a dict, or
    None) and (with a capture) activations."""
    timestamp = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    record = {"prompt": prompt, "response": tokenizer.decode(output_ids, skip_special_tokens=True).strip(),
              "model": shared["model"], "timestamp": timestamp, "input_ids": input_ids, "output_ids": output_ids,
              **shared, "num_prompt_tokens": len(input_ids), "num_generated_tokens": len(output_ids),
              **(confidence or {})}
    if cap is not None:
        acts, kept = captured
        record.update(activations=acts, layer_names=list(cap.names), positions=cap.positions,
                      positions_kept=kept, dtype=str(cap.dtype).replace("torch.", ""))
    return record
