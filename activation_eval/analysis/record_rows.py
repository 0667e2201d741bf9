"""Which rows of one record each reduction reads, and the vectors it makes of them (dataset.py's core).

A record's row at position p is the activation computed with token p as the input. The answer
reductions read the question's answer_positions (its results row's; dataset.py's docstring).

Public names (the package's, for dataset.py and shard_rows.py):
    record_vectors(record, row, layers, reduces, path) -> {reduce: ({layer: float32 [hidden]}, source)} or None
    pick_rows(reduce, kept, record, row, path) -> ([row index, ...], source) or None
    layer_rows(record, layer, path) -> (tensor (positions, hidden), kept positions)
    answer_span(row, record, where) -> [token position, ...]
    num_prompt(record, path) -> int
    reduced(t, rows, mean) -> float32 [hidden]
    ANSWER_SPAN, FALLBACK      where an answer reduction's rows came from

Example:
    >>> import torch
    >>> record = {"activations": {"layer_0": torch.arange(12.0).reshape(4, 3)}, "num_prompt_tokens": 3}
    >>> kept = [0, 1, 2, 3]                                  # the absolute positions of its rows
    >>> pick_rows("last_prompt", kept, record, {}, "r.pkl"), pick_rows("answer_first", kept, record,
    ...                                                             {"answer_positions": [3]}, "r.pkl")
    (([2], None), ([3], 'answer_span'))
"""
import numpy as np
import torch

from ..schema import ANSWER_POSITIONS, ID
from ..schema.names import ANSWER_REDUCTIONS, MEAN_REDUCTIONS
from ..store.errors import CorruptFileError

ANSWER_SPAN, FALLBACK = "answer_span", "fallback"        # where an answer reduction's rows came from


def record_vectors(record, row, layers, reduces, path):
    """{reduce: ({layer: float32 [hidden]}, source)} of one record, or None when an answer
    reduction has neither an answer row nor the first generated token's."""
    tensors = {}
    kept = None
    for name in layers:
        tensors[name], layer_kept = layer_rows(record, name, path)
        if kept is not None and len(layer_kept) != len(kept):
            raise CorruptFileError(f"layers {layers[0]!r} and {name!r} keep different numbers of positions: {path}")
        kept = layer_kept
    picks = {reduce: pick_rows(reduce, kept, record, row, path) for reduce in reduces}   # every one raises as it would alone
    if any(pick is None for pick in picks.values()):
        return None
    # copies: a view would keep the record's whole layer tensor alive until np.stack
    return {reduce: ({name: reduced(t, rows, reduce in MEAN_REDUCTIONS) for name, t in tensors.items()}, source)
            for reduce, (rows, source) in picks.items()}


def reduced(t, rows, mean):
    if mean:
        return t[rows].float().mean(dim=0).numpy()
    return t[rows[0]].float().numpy().copy()


def pick_rows(reduce, kept, record, row, path):
    """([row index, ...], source) of one record for `reduce` (source: ANSWER_SPAN or FALLBACK
    for an answer reduction, else None); None when an answer reduction has no row; ValueError
    when another reduction's position is not kept."""
    if reduce == "last":
        if not kept:
            raise ValueError(f"record keeps no positions: {path}")
        return [len(kept) - 1], None
    if reduce in ANSWER_REDUCTIONS:
        first_row = {}
        for i, p in enumerate(kept):
            first_row.setdefault(p, i)
        span = answer_span(row, record, path)
        if reduce == "answer_first":
            rows = [first_row[span[0]]] if span and span[0] in first_row else []
        else:
            rows = [first_row[p] for p in sorted(set(span)) if p in first_row]
            rows = rows[-1:] if reduce == "answer_last" else rows
        if rows:
            return rows, ANSWER_SPAN
        fallback = first_row.get(num_prompt(record, path))
        return None if fallback is None else ([fallback], FALLBACK)
    n_prompt = num_prompt(record, path)
    if reduce == "mean_prompt":
        rows = [i for i, p in enumerate(kept) if p < n_prompt]
        if not rows:
            raise ValueError(f"record keeps no prompt positions (kept: {short_list(kept)}): {path}")
        return rows, None
    target = n_prompt - 1 if reduce == "last_prompt" else reduce
    if target not in kept:
        raise ValueError(f"record has no row for token position {target} "
                         f"(reduce={reduce!r}; kept: {short_list(kept)}): {path}")
    return [kept.index(target)], None


def answer_span(row, record, where):
    """The question's answer_positions: the results row's (the record's when the row lacks them;
    shard runs: the row's only), [] when neither has them."""
    span = row.get(ANSWER_POSITIONS)
    if span is None and record is not None:
        span = record.get(ANSWER_POSITIONS)
    if span is None:
        return []
    if not isinstance(span, (list, tuple)) or not all(
            isinstance(p, (int, np.integer)) and not isinstance(p, bool) for p in span):
        raise CorruptFileError(f"results row {row.get(ID)!r} has {ANSWER_POSITIONS} {str(span)[:60]}, not a list of "
                               f"token positions: {where}")
    return [int(p) for p in span]


def num_prompt(record, path):
    """The record's number of prompt tokens (num_prompt_tokens, else the length of input_ids)."""
    if "num_prompt_tokens" in record:
        n_prompt = record["num_prompt_tokens"]
        if type(n_prompt) is not int:           # e.g. "5" in a stranger's record
            raise CorruptFileError(f"the record's num_prompt_tokens is {str(n_prompt)[:40]!r}, not an integer: {path}")
        return n_prompt
    if "input_ids" in record:                   # seed records: [P] or [1, P]
        return int(np.shape(record["input_ids"])[-1])
    raise ValueError(f"record has neither num_prompt_tokens nor input_ids: {path}")


def layer_rows(record, layer, path):
    """(the layer's (positions, hidden) tensor, the absolute positions of its rows)."""
    t = torch.as_tensor(record["activations"][layer])   # seed pickles may hold numpy arrays
    if t.dim() == 3 and t.shape[0] == 1:        # seed records may keep a batch dimension
        t = t[0]
    if t.dim() != 2:
        raise ValueError(f"activation {layer!r} has shape {tuple(t.shape)}, expected "
                         f"(n_positions, hidden): {path}")
    kept = [int(p) for p in (record.get("positions_kept") or range(t.shape[0]))]
    if len(kept) != t.shape[0]:
        raise CorruptFileError(f"positions_kept lists {len(kept)} positions but {layer!r} has "
                               f"{t.shape[0]} rows: {path}")
    return t, kept


def short_list(values, n=8):
    return str(values) if len(values) <= n else f"[{values[0]}, ..., {values[-1]}] ({len(values)})"
