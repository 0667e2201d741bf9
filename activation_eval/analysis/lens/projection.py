"""The lens's arithmetic: hidden states through the final norm and unembedding, and the gold tokens.

Public names:
    project(model, hidden, layer_names) -> logits         final norm (not for final_norm) + unembedding
    gold_first_tokens(tokenizer, row) -> [token id, ...]  the candidate first tokens of the gold answer
    ranks(logits, candidates) -> (layers,) tensor         best rank (1 = top) of any candidate per row

Gold tokens: a question's candidate first tokens are the first token of every accepted answer
(multiple choice: of its letter), tokenised both as-is ("Paris") and with a leading space
(" Paris"), because a word continuing a prompt may be either piece depending on what precedes it;
a variant whose first token is only whitespace is dropped.

Example:
    >>> import torch
    >>> logits = project(model, torch.zeros(2, model.config.hidden_size), ["layer_2", "final_norm"])
    >>> tuple(logits.shape) == (2, model.config.vocab_size)
    True
    >>> ranks(torch.tensor([[0.1, 0.9, 0.5]]), [2]).tolist()         # the candidate is second
    [2]
"""
import re
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ...architecture import final_norm_module
from ...schema.names import FINAL_NORM

_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])[.)]\s*(.+?)\s*$")


@torch.no_grad()
def project(model: Any, hidden: Any, layer_names: Sequence[str]) -> torch.Tensor:
    """Logits (n, vocab) float32 of hidden (n, hidden_size): rows named final_norm skip the norm
    (they are normed already); Gemma-2 style final logit soft-capping applied."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (lm_head) to project through")
    param = next(head.parameters())
    h = torch.as_tensor(hidden).to(device=param.device, dtype=param.dtype)
    needs_norm = torch.tensor([name != FINAL_NORM for name in layer_names], device=h.device)
    if bool(needs_norm.any()):
        normed = final_norm_module(model)(h[needs_norm])
        h = h.clone()
        h[needs_norm] = normed
    logits = head(h)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float().cpu()


def _accepted(row: Mapping[str, Any]) -> list[str]:
    answer = row.get("answer")
    answers = answer if isinstance(answer, (list, tuple)) else [answer]
    return [str(a).strip() for a in answers if a is not None and str(a).strip()]


def _choice_letters(row: Mapping[str, Any], answers: list[str]) -> list[str]:
    """Multiple choice: each accepted answer as its letter (a letter, or a choice's text in the prompt)."""
    listed: dict[str, str] = {}
    for line in str(row.get("prompt") or "").splitlines():
        m = _CHOICE_LINE.match(line)
        if m:
            listed.setdefault(m.group(2).lower(), m.group(1))
    out = []
    for a in answers:
        if len(a) == 1 and a.isalpha():
            out.append(a.upper())
        elif a.lower() in listed:
            out.append(listed[a.lower()])
    return out


def gold_first_tokens(tokenizer: Any, row: Mapping[str, Any]) -> list[int]:
    """Candidate first-token ids of the results row's gold answer (see the module docstring); [] if none."""
    answers = _accepted(row)
    if str(row.get("grader") or "").startswith("choice"):     # choice:index, choice:any, choice_all too
        answers = _choice_letters(row, answers)
    ids: list[int] = []
    for answer in answers:
        for text in (answer, " " + answer):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if enc and tokenizer.decode(enc[:1]).strip() and enc[0] not in ids:
                ids.append(int(enc[0]))
    return ids


def ranks(logits: torch.Tensor, candidates: Sequence[int]) -> torch.Tensor:
    """Per row of logits (layers, vocab): the best rank (1 = top) of any candidate token id."""
    cand = logits[:, list(candidates)]                                  # (layers, k)
    return (logits[:, None, :] > cand[:, :, None]).sum(-1).min(-1).values + 1
