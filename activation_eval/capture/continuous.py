"""Continuous batching for greedy (or per-prompt sampled) decoding: a finished answer leaves the
batch at once and a waiting prompt takes its slot, so no decode step is spent on rows that already
emitted EOS.

Public names:
    unsupported_reason(model, generate_kwargs) -> None, or why model.generate must be used instead
    decode(model, prompts, width, max_new_tokens, stop_ids, pad_id, capture=None, cut=len, refill_at=None, pick=None,
           confidence=True) -> iterator of Finished, in the order answers finish
    Finished      (index, tokens, captured, logprobs, entropies): one finished answer
    token_logprobs(logits, tokens) -> (B,) float32   log p(token) under the raw distribution
    entropy(logits) -> (B,) float32                  entropy (nats) of the raw distribution
    token_confidence(logits, tokens) -> ((B,), (B,))  both, from one log_softmax

Example:
    >>> ids = [tok("2+2=")["input_ids"], tok("Capital of France?")["input_ids"]]
    >>> for i, tokens, _, logprobs, entropies in decode(model, ids, width=8, max_new_tokens=16,
    ...                                                stop_ids={tok.eos_token_id}, pad_id=0):
    ...     print(i, len(tokens), len(logprobs), all(lp <= 0 for lp in logprobs), min(entropies) > 0)   # no EOS
    0 16 16 True True
    1 16 16 True True

How: `model.generate` keeps every row of a batch until the longest answer ends (on the built-in
benchmark, half of the decode slots of a batch of 8 went to rows that had finished). Here the
KV cache is a transformers DynamicCache whose rows are selected and merged between forwards:
new prompts are prefilled as their own left-padded batch, their cache is left-padded to the
running cache's length and stacked under it; the 2-D attention mask hides every padded slot and
each row gets explicit position ids, so a row computes what it would compute alone. The start
that every prompt shares (a chat template's system prompt) is forwarded once per call and its
cache copied to each new row. Tokens are
the argmax of the last logits, as greedy `generate` picks them (no logits processors: see
unsupported_reason), or whatever `pick(logits, prompt indices)` chooses (sampling.Sampler draws
each prompt's tokens from its own seeded stream, so they do not depend on the batch). The work
depends only on the prompts and their order, so a run is reproducible bit for bit.

Confidence (confidence=True): from the same logits that choose each token, the log-probability of
the chosen token and the entropy of the whole next-token distribution it was chosen from (one
log_softmax gives both), both under the model's RAW distribution (softmax of the logits at temperature 1, before any sampling
warper such as temperature, top-k or top-p), in float32. They reach the host with the step's tokens
in the step's one device-to-host copy (the float32 bits travel as integers beside the token ids).
"""
import inspect
from collections import deque
from typing import NamedTuple

import torch
from transformers import DynamicCache, GenerationConfig
from transformers.cache_utils import DynamicLayer

# generate() arguments the loop implements; anything else goes to model.generate
SUPPORTED_KWARGS = {"do_sample", "eos_token_id", "pad_token_id", "max_new_tokens"}
# generation_config fields that add a logits processor or a stopping rule to greedy generate()
PROCESSOR_FIELDS = ("repetition_penalty", "encoder_repetition_penalty", "no_repeat_ngram_size",
                    "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens",
                    "forced_bos_token_id", "forced_eos_token_id", "suppress_tokens", "begin_suppress_tokens",
                    "sequence_bias", "exponential_decay_length_penalty", "renormalize_logits",
                    "guidance_scale", "watermarking_config", "stop_strings", "max_time",
                    "remove_invalid_values", "num_beams")


def unsupported_reason(model, generate_kwargs):
    """None if `decode` gives what greedy model.generate(**generate_kwargs) gives; else the reason."""
    extra = sorted(set(generate_kwargs) - SUPPORTED_KWARGS)
    if extra:
        return f"generate() arguments {extra}"
    if generate_kwargs.get("do_sample"):
        return "sampling (do_sample=True)"
    config = getattr(model, "generation_config", None) or GenerationConfig()
    defaults = GenerationConfig()
    changed = [f for f in PROCESSOR_FIELDS if getattr(config, f, None) != getattr(defaults, f, None)]
    if changed:
        return f"the model's generation_config sets {changed}"
    if getattr(model.config, "is_encoder_decoder", False):
        return "an encoder-decoder model"
    params = inspect.signature(model.forward).parameters
    if _cache_argument(model) is None or "position_ids" not in params:
        return f"{type(model).__name__}.forward takes no `cache` (or `past_key_values`) / `position_ids`"
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception as e:                               # a config the cache cannot read
        return f"DynamicCache cannot be built for this model ({e})"
    if any(type(layer) is not DynamicLayer for layer in layers):
        return "the model uses sliding-window or other non-standard cache layers"
    return None


def _cache_argument(model):
    """The name forward() takes the KV cache by: `cache` (transformers >= 5.2x) or `past_key_values`."""
    params = inspect.signature(model.forward).parameters
    return next((name for name in ("cache", "past_key_values") if name in params), None)


class Finished(NamedTuple):
    """One finished answer, as decode yields it."""
    index: int                    # into decode's prompts
    tokens: list                  # the generated token ids the record keeps (cut)
    captured: object              # (acts, kept) from capture.finish, or None without a capture
    logprobs: list                # log p(token) of each kept token, raw distribution (None: confidence=False)
    entropies: list               # entropy (nats) of each kept token's raw distribution (None: confidence=False)


class _Row:
    __slots__ = ("index", "slot", "prompt_len", "tokens", "done", "logprobs", "entropies")

    def __init__(self, index, slot, prompt_len):
        self.index, self.slot, self.prompt_len, self.tokens, self.done = index, slot, prompt_len, [], False
        self.logprobs, self.entropies = [], []


@torch.no_grad()
def decode(model, prompts, width, max_new_tokens, stop_ids, pad_id, capture=None, cut=len, refill_at=None,
           pick=None, confidence=True, steer=None):
    """Greedy-decode every prompt (a list of token-id lists) with at most `width` rows at a time.

    Yields a Finished (index into prompts, the generated token ids the record keeps, (acts, kept)
    from capture.finish or None, each kept token's log-probability and its distribution's entropy) as
    each answer ends; the last two are None with confidence=False (they are computed from the
    logits that pick the tokens, under the raw distribution: see the module docstring).
    `capture` is a capture.RowCapture with the same width, entered by the caller; `cut(tokens)` is
    how many of the generated tokens (up to and including the stopping one) the record keeps, e.g.
    up to its first EOS (the log-probabilities and entropies are cut alike). A slot is refilled once
    `refill_at` slots are free (default: a quarter of the width), which batches prefills and cache merges.
    `pick(logits (B, vocab), prompt indices) -> tokens (B,)` replaces the argmax (e.g. sampling.Sampler.pick).
    `steer` (an entered intervene.Interventions) is told before each forward whether it reads prompt
    or generated tokens.
    """
    pick = pick or _argmax
    device = model.get_input_embeddings().weight.device
    refill_at = refill_at or max(1, width // 4)
    stop_ids = set(stop_ids)
    forward = _forward_fn(model)
    prefix = _shared_prefix(prompts)
    if steer is not None:
        steer.prompt()
    prefix_kv = _prefix_forward(model, forward, prefix, device, capture) if prefix else None
    queue, free = deque(range(len(prompts))), list(range(width - 1, -1, -1))
    rows, cache, mask = [], None, None                   # rows in the cache; their cache; mask (B, T)
    tokens = positions = None                            # (B, 1) next inputs, on the device
    while queue or rows:
        new, new_cache, new_mask = [], None, None
        if queue and (len(free) >= refill_at or all(r.done for r in rows)):
            if steer is not None:
                steer.prompt()
            new = [_Row(i, free.pop(), len(prompts[i])) for i in
                   [queue.popleft() for _ in range(min(len(free), len(queue)))]]
            new_cache, new_mask, first = _prefill(model, forward, [prompts[r.index][len(prefix):] for r in new],
                                                  prefix_kv, pad_id, device, capture, new, pick, confidence)
            for row, (token, logprob, entropy_) in zip(new, first):
                _add_token(row, token, logprob, entropy_, stop_ids, max_new_tokens)
            yield from _finished(new, capture, cut, free)
        if new or any(r.done for r in rows):            # one cache copy for leaving and joining rows
            cache, mask = _merge(cache, mask, rows, new_cache, new_mask, new)
            rows = [r for r in rows + new if not r.done]
            if not rows:
                continue
            # the next inputs stay on the device between merges: no host-to-device copy per step
            tokens = torch.tensor([[r.tokens[-1]] for r in rows], device=device)                   # (B, 1)
            positions = torch.tensor([[r.prompt_len + len(r.tokens) - 1] for r in rows], device=device)
        mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)                  # (B, T+1)
        if steer is not None:
            steer.generated()
        if capture is not None:
            capture.route_step([r.slot for r in rows], [len(r.tokens) - 1 for r in rows], device)
        logits = forward(tokens, mask, positions, cache)[:, 0]                                  # (B, vocab)
        tokens = pick(logits, [r.index for r in rows])                                          # (B,)
        extras = token_confidence(logits, tokens) if confidence else ()
        for row, (token, logprob, entropy_) in zip(rows, _to_host(tokens, *extras, columns=3)):   # one device sync
            _add_token(row, token, logprob, entropy_, stop_ids, max_new_tokens)
        tokens, positions = tokens[:, None], positions + 1                                      # (B, 1)
        yield from _finished(rows, capture, cut, free, confidence)


def _argmax(logits, indices):
    return logits.argmax(-1)


def token_logprobs(logits, tokens):
    """log p(tokens[i]) under softmax(logits[i]) (the raw distribution: temperature 1, no warpers),
    in float32: logits (B, vocab), tokens (B,) -> (B,)."""
    return logits.float().log_softmax(-1).gather(-1, tokens[:, None])[:, 0]


def entropy(logits):
    """Entropy in nats of softmax(logits[i]) (the raw distribution), in float32: (B, vocab) -> (B,).
    Tokens of probability 0 (logit -inf) add nothing."""
    return _entropy_of(logits.float().log_softmax(-1))


def _entropy_of(logp):
    """-sum p log p over the last axis; 0 * -inf (a token of probability 0) counts 0. In place on one
    temporary and nansum: 2.4x faster than exp * logp -> nan_to_num -> sum on the CPU, same bits."""
    terms = logp.exp()
    terms.mul_(logp)
    return -terms.nansum(-1)


def token_confidence(logits, tokens):
    """(token_logprobs(logits, tokens), entropy(logits)) from one float32 log_softmax: (B, vocab), (B,)
    -> ((B,), (B,))."""
    logp = logits.float().log_softmax(-1)
    return logp.gather(-1, tokens[:, None])[:, 0], _entropy_of(logp)


def _to_host(tokens, *floats, columns):
    """Rows of (token, float, ...) on the host, `columns` wide (None where a float is not given), in
    ONE device-to-host copy: each float32's bits travel as an integer beside the token ids."""
    parts = [tokens.long()] + [f.float().contiguous().view(torch.int32).long() for f in floats]
    host = torch.stack(parts, 1).cpu()                                                   # (B, 1 + len(floats))
    out = [host[:, 0].tolist()] + [host[:, k].to(torch.int32).view(torch.float32).tolist()
                                   for k in range(1, host.shape[1])]
    out += [[None] * host.shape[0]] * (columns - len(out))
    return list(zip(*out))


def _add_token(row, token, logprob, entropy_, stop_ids, max_new_tokens):
    row.tokens.append(token)
    row.logprobs.append(logprob)
    row.entropies.append(entropy_)
    row.done = token in stop_ids or len(row.tokens) >= max_new_tokens


def _finished(rows, capture, cut, free, confidence=True):
    for row in rows:
        if row.done:
            n = cut(row.tokens)
            acts = capture.finish(row.index, row.slot, row.prompt_len, n) if capture is not None else None
            free.append(row.slot)
            yield Finished(row.index, row.tokens[:n], acts, row.logprobs[:n] if confidence else None,
                           row.entropies[:n] if confidence else None)


def _shared_prefix(prompts):
    """The token ids every prompt starts with (a chat template's system prompt), leaving each prompt
    at least one token of its own; empty for a single prompt."""
    if len(prompts) < 2:
        return []
    first, n = prompts[0], min(len(p) for p in prompts) - 1
    for p in prompts[1:]:
        while n and p[:n] != first[:n]:
            n -= 1
    return list(first[:n])


def _forward_fn(model):
    """forward(ids, mask, positions, cache) -> logits of the last position (B, 1, vocab), whatever
    the cache argument is called in this transformers version."""
    params = inspect.signature(model.forward).parameters
    cache_arg = _cache_argument(model)
    extra = {"logits_to_keep": 1} if "logits_to_keep" in params else {}

    def forward(ids, mask, positions, cache):
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                     **{cache_arg: cache}, **extra).logits[:, -1:]
    return forward


def _prefix_forward(model, forward, prefix, device, capture):
    """Forward the shared prefix once: its keys and values per layer, each (1, heads, L, head_dim)."""
    cache = DynamicCache(config=model.config)
    if capture is not None:
        capture.route_prefix()
    ids = torch.tensor([prefix], device=device)
    forward(ids, torch.ones_like(ids), torch.arange(len(prefix), device=device)[None], cache)
    return [(layer.keys, layer.values) for layer in cache.layers]


def _prefill(model, forward, prompts, prefix_kv, pad_id, device, capture, rows, pick=_argmax, confidence=True):
    """Forward new prompts (after the shared prefix, whose cache they start from) as one left-padded
    batch: (cache, mask, [(first token, its log-probability, the entropy) per prompt], the last two
    None without confidence). The mask is [prefix, pads, prompt]; positions skip the pads."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.tensor(p, dtype=torch.long)
        mask[i, width - len(p):] = 1
    start = prefix_kv[0][0].shape[2] if prefix_kv else 0
    positions = (start + mask.cumsum(-1) - 1).clamp(min=0)   # as generate: pads at 0, then start .. P-1
    mask = torch.cat([mask.new_ones((len(prompts), start)), mask], dim=1)
    ids, mask, positions = ids.to(device), mask.to(device), positions.to(device)
    cache = DynamicCache(config=model.config)
    for layer, (k, v) in zip(cache.layers, prefix_kv or []):
        layer.update(k.expand(len(prompts), -1, -1, -1), v.expand(len(prompts), -1, -1, -1))
    if capture is not None:
        capture.route_prefill([r.index for r in rows], [width - len(p) for p in prompts])
    logits = forward(ids, mask, positions, cache)[:, 0]                                         # (B, vocab)
    first = pick(logits, [r.index for r in rows])                                               # (B,)
    extras = token_confidence(logits, first) if confidence else ()
    return cache, mask, _to_host(first, *extras, columns=3)


def _merge(cache, mask, rows, new_cache, new_mask, new):
    """Keep the unfinished rows of the running cache and stack the unfinished new rows under them.

    Slots that every kept row masks (left columns of finished prompts) are dropped; the shorter
    part is left-padded with masked zeros. Returns (cache, mask).
    """
    keep = [i for i, r in enumerate(rows) if not r.done]
    keep_new = [i for i, r in enumerate(new) if not r.done]
    parts = []
    for c, m, idx in ((cache, mask, keep), (new_cache, new_mask, keep_new)):
        if c is None or not idx:
            continue
        index = torch.tensor(idx, device=m.device)
        m = m.index_select(0, index)
        start = int(m.any(0).to(torch.int8).argmax())   # first slot some kept row attends to
        kv = [(layer.keys.index_select(0, index.to(layer.keys.device))[:, :, start:],
               layer.values.index_select(0, index.to(layer.values.device))[:, :, start:]) for layer in c.layers]
        parts.append((c, m[:, start:], kv))
    if not parts:
        return None, None
    if len(parts) == 1:
        c, m, kv = parts[0]
    else:
        (c, m_old, kv_old), (_, m_new, kv_new) = parts
        length = max(m_old.shape[1], m_new.shape[1])
        m = torch.cat([_left_pad(m_old, length, 1), _left_pad(m_new, length, 1)])
        kv = [(torch.cat([_left_pad(ko, length, 2), _left_pad(kn, length, 2)]),
               torch.cat([_left_pad(vo, length, 2), _left_pad(vn, length, 2)]))
              for (ko, vo), (kn, vn) in zip(kv_old, kv_new)]
    for layer, (k, v) in zip(c.layers, kv):
        layer.keys, layer.values = k, v
    return c, m


def _left_pad(t, length, dim):
    """`t` zero-padded on the left of `dim` to `length`."""
    missing = length - t.shape[dim]
    if missing == 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)
