"""Log-likelihood of continuations given a prompt: batched, padded forwards, optionally under capture.

Public names:
    encode_pair(tokenizer, context, continuation, add_special_tokens=True) -> (context ids, continuation ids)
    iter_scored_records(model, tokenizer, prompts, continuations, settings=None, capture=None, batch_size=None)
        -> (index, record), ... one record per prompt, with every continuation's log-probability
    PromptCapture       ActivationCapture that keeps one row per prompt of a scoring forward

Example:
    >>> for i, rec in iter_scored_records(model, tok, ["Capital of France?"], [[" Paris", " Rome"]]):
    ...     print(i, rec["choice_logprobs"])    # [sum of log p(token) over " Paris", ... over " Rome"]
    0 [-26.2, -25.6]

How (lm-evaluation-harness's loglikelihood requests): trailing whitespace of the context (the
prompt as the model reads it, chat template applied) moves to the front of the continuation;
context + continuation is tokenised as one string and split after the context's own token count,
so the continuation's tokens are those the model would see in running text. The model reads
(context ids + continuation ids)[:-1]; the log-probability of a continuation is the sum, over its
tokens, of log_softmax(logits) at the position before each token. All continuations of
`batch_size` prompts go through one left-padded forward (explicit position ids, attention mask,
logits only for the last max-continuation-length positions).

Records: the generation record's keys (ACTIVATION_CAPTURE_README.md) with input_ids = the context
ids, output_ids empty (nothing is generated), response "", and: continuations, continuation_ids,
choice_logprobs (sums), choice_token_logprobs, choice_num_tokens. Activations cover the prompt
only: positions "all" and "prompt" keep 0 .. P-1, "last_prompt" and "answer" P-1 (nothing is
generated: the answer positions are the last prompt token alone), ints index 0 .. P-1; the
prompt's positions are the same in every continuation's row (causal attention), and are taken
from the first one.
"""
import contextlib
import inspect

import torch

from ..models import uses_chat_template
from .generation import GenerationSettings, _record, model_name, model_summary, model_texts, versions
from .hooks import ActivationCapture
from .intervene import Interventions


def encode_pair(tokenizer, context, continuation, add_special_tokens=True):
    """(context ids, continuation ids) as lm-eval splits them (see the module docstring).

    >>> encode_pair(tok, "Question: 2+2?\\nAnswer:", " 4")
    ([53, 292, 88, ..., 263, 30], [277])
    """
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    whole = tokenizer(context + continuation, add_special_tokens=add_special_tokens)["input_ids"]
    context_ids = tokenizer(context, add_special_tokens=add_special_tokens)["input_ids"]
    continuation_ids = whole[len(context_ids):]
    if not continuation_ids:
        raise ValueError(f"continuation {continuation!r} has no tokens of its own after the context")
    if not context_ids:
        raise ValueError("the prompt has no tokens: a continuation needs a context to be scored against")
    return list(context_ids), list(continuation_ids)


class PromptCapture(ActivationCapture):
    """Capture over one scoring forward, keeping only `rows` of the batch (one per prompt) at every
    column; batch_activations(pads, prompt_lens, [0] * n, width) then picks each prompt's positions."""

    def __init__(self, model, layers, positions, dtype, rows):
        super().__init__(model, layers, positions, dtype)
        if self.positions == "generated":
            raise ValueError("positions 'generated': scoring generates nothing; use prompt, last_prompt, "
                             "answer (= last_prompt), all or ints")
        self._rows = rows                                   # LongTensor of batch rows to keep
        self._rows_on = {}

    def _store(self, name, hidden):
        rows = self._rows_on.setdefault(hidden.device, self._rows.to(hidden.device))
        self._steps[name].append(hidden.detach().index_select(0, rows))     # (prompts, T, H)

    def _offset(self, prompt_width):
        return 0                                           # every column is kept


@torch.no_grad()
def iter_scored_records(model, tokenizer, prompts, continuations, settings=None, capture=None, batch_size=None):
    """Yield (index into prompts, record) with the log-probability of each of continuations[index].

    `settings` (GenerationSettings) gives the chat template; `capture` (CaptureSettings) the layers,
    positions and dtype; `batch_size` prompts (all their continuations) share a forward. settings.interventions apply,
    the context being the prompt and the continuation the generated tokens (intervene.py's positions).
    """
    settings = settings or GenerationSettings()
    if len(continuations) != len(prompts):
        raise ValueError(f"{len(continuations)} continuation lists for {len(prompts)} prompts")
    texts, special = model_texts(tokenizer, prompts, settings.use_chat_template, settings.system_prompt)
    pairs = [[encode_pair(tokenizer, text, c, special) for c in conts] for text, conts in zip(texts, continuations)]
    shared = {"model": model_name(model), "model_info": model_summary(model), "versions": versions(),
              "generation": {"decoding": "loglikelihood",
                             "chat_template": uses_chat_template(tokenizer, settings.use_chat_template)}}
    steer = Interventions(model, settings.interventions)
    if steer.entries:
        shared["interventions"] = [dict(entry) for entry in steer.entries]
    batch_size = batch_size or max(len(prompts), 1)
    with steer:
        for start in range(0, len(prompts), batch_size):
            chunk = list(range(start, min(start + batch_size, len(prompts))))
            yield from _score_chunk(model, tokenizer, chunk, prompts, continuations, pairs, capture, shared, steer)


def _score_chunk(model, tokenizer, chunk, prompts, continuations, pairs, capture, shared, steer):
    seqs, targets, first_row, context_lens = [], [], [], []
    for i in chunk:
        first_row.append(len(seqs))
        for context_ids, cont_ids in pairs[i]:
            seqs.append((context_ids + cont_ids)[:-1])
            targets.append(cont_ids)
            context_lens.append(len(context_ids))
    width = max(map(len, seqs))
    keep = max(map(len, targets))                          # the last `keep` columns predict every target
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, seq in enumerate(seqs):
        ids[r, width - len(seq):] = torch.tensor(seq, dtype=torch.long)
        mask[r, width - len(seq):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)         # as generate: pads at 0, then 0 .. L-1
    cap = None
    if capture is not None:
        cap = PromptCapture(model, capture.layers, capture.positions, capture.torch_dtype(),
                            torch.tensor(first_row, dtype=torch.long))
    device = model.get_input_embeddings().weight.device
    # interventions: each row's continuation tokens are its generated positions (after pads + context)
    steer.split([width - len(seq) + n for seq, n in zip(seqs, context_lens)])
    with cap if cap is not None else contextlib.nullcontext():
        logits = _forward(model, ids.to(device), mask.to(device), positions.to(device), keep)  # (R, keep, V)
    logprobs = torch.log_softmax(logits.double(), dim=-1).cpu()            # float64: sums of many tokens
    token_lps = [logprobs[r, keep - len(t):].gather(-1, torch.tensor(t)[:, None])[:, 0] for r, t in enumerate(targets)]
    pads = [width - len(seqs[r]) for r in first_row]
    prompt_lens = [len(pairs[i][0][0]) for i in chunk]
    captured = cap.batch_activations(pads, prompt_lens, [0] * len(chunk), width) if cap is not None else None
    if cap is not None:
        cap.release()
    for n, i in enumerate(chunk):
        rows = range(first_row[n], first_row[n] + len(pairs[i]))
        record = _record(tokenizer, prompts[i], torch.tensor(pairs[i][0][0]), torch.zeros(0, dtype=torch.long),
                         shared, cap, captured[n] if cap is not None else None)
        record.update(continuations=list(continuations[i]), continuation_ids=[pairs[i][c][1] for c in range(len(rows))],
                      choice_logprobs=[float(token_lps[r].sum()) for r in rows],
                      choice_token_logprobs=[token_lps[r].tolist() for r in rows],
                      choice_num_tokens=[len(targets[r]) for r in rows])
        yield i, record


def _forward(model, ids, mask, positions, keep):
    """Logits of the last `keep` positions (R, keep, vocab) of a left-padded batch."""
    params = inspect.signature(model.forward).parameters
    if "position_ids" not in params:
        raise ValueError(f"{type(model).__name__}.forward takes no position_ids: log-likelihood scoring of "
                         f"left-padded batches needs them; use --mc_scoring generate")
    extra = {"logits_to_keep": keep} if "logits_to_keep" in params else {}
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False, **extra).logits
    return logits[:, -keep:]
