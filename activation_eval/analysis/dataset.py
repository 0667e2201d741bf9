"""Datasets from a run: one vector per question for a layer, ready for probes and plots.

Public names:
    REDUCTIONS                                  ("last_prompt", "mean_prompt", "last", "answer_first",
                                                "answer_mean") or an int
    load_run_layer(run_dir, layer, reduce="last_prompt", progress=False) -> (float32 [n, hidden], rows)
    load_run_layers(run_dir, layers, reduce="last_prompt") -> ({layer: float32 [n, hidden]}, rows)
                                                the same for several layers, each file read once
    parse_reduce(reduce)                        the one check of a reduce= value

Example:
    >>> X, rows = load_run_layer("runs/r1", "layer_5", reduce="mean_prompt")
    >>> y = np.array([bool(r["correct"]) for r in rows])

`reduce` says how a record's (positions, hidden) tensor becomes one vector; it is not the capture
setting --positions (which tokens were saved), though it can only use positions that were saved.
The answer reductions use the question's "answer_positions" (the generated tokens that spell the
grader's extracted answer, recorded when generated positions are captured); questions without a
kept answer position are left out of the matrix (and of `rows`), with a logged count.
"""
import logging
import os
import sys

import numpy as np
import torch

from ..store.errors import CorruptFileError
from ..store.records import load_activations
from ..store.run_folder import RESULTS_FILE, read_results

log = logging.getLogger(__name__)
ANSWER_REDUCTIONS = ("answer_first", "answer_mean")


def load_run_layer(run_dir, layer, reduce="last_prompt", progress=False):
    """One `layer` vector per captured question of a run -> (float32 [n, hidden], rows).

    >>> X, rows = load_run_layer("runs/r1", "layer_5", reduce="mean_prompt")
    >>> y = np.array([r["correct"] for r in rows])

    reduce: "last_prompt" (the last prompt token's row), "mean_prompt" (mean over kept
    prompt positions), "last" (last kept row), "answer_first" (the row of the first token of the
    extracted answer in the response, i.e. where that token is the input), "answer_mean" (mean
    over the answer's kept token rows), or an int absolute token index. Rows of results.jsonl
    without an activation_file (or, for the answer reductions, without a kept answer position)
    are skipped; `rows` are the results rows used, in the matrix's order. Reads only `layer`
    from .safetensors files. `progress`: a progress bar on stderr over the record files.
    """
    matrices, used = load_run_layers(run_dir, [layer], reduce, progress)
    return matrices[layer], used


def load_run_layers(run_dir, layers, reduce="last_prompt", progress=False):
    """load_run_layer for several layers at once: each record file is read once (a pickle is
    always read whole, so one layer at a time would read it once per layer).

    >>> mats, rows = load_run_layers("runs/r1", ["layer_4", "layer_5"])
    >>> mats["layer_5"].shape          # (n_questions, hidden)
    """
    from tqdm import tqdm
    run_dir = os.fspath(run_dir)
    reduce = parse_reduce(reduce)
    layers = list(layers)
    vectors, used, no_answer = {name: [] for name in layers}, [], 0
    for row in tqdm(read_results(run_dir), desc=f"reading {', '.join(layers)[:40]}", unit="file",
                    file=sys.stderr, disable=not progress):
        rel = row.get("activation_file")
        if not rel:
            continue
        path = os.path.join(run_dir, rel)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"results row {row.get('id')!r} names activation_file "
                                    f"{rel!r}, which does not exist: {path}")
        record = load_activations(path, layers=layers)
        if reduce in ANSWER_REDUCTIONS:
            picked = {name: _answer_vector(record, row, name, reduce, path) for name in layers}
            if any(v is None for v in picked.values()):
                no_answer += 1
                continue
        else:
            # copies: a view would keep the record's whole layer tensor alive until np.stack
            picked = {name: _pick_vector(record, name, reduce, path).copy() for name in layers}
        for name, vector in picked.items():
            vectors[name].append(vector)
        used.append(row)
    if no_answer:
        log.warning("%s: %d question(s) have no kept answer position; reduce=%r leaves them out",
                    run_dir, no_answer, reduce)
    if not used and reduce in ANSWER_REDUCTIONS:
        raise ValueError(f"no question of {run_dir} has a kept answer position (reduce={reduce!r}): "
                         f"answer positions are recorded when generated tokens are captured "
                         f"(main.py --capture_activations --positions all or generated)")
    if not used:
        raise ValueError(f"no row of {RESULTS_FILE} has an activation_file: {run_dir}")
    out = {}
    for name, vs in vectors.items():
        widths = {v.shape[0] for v in vs}
        if len(widths) > 1:
            raise ValueError(f"layer {name!r} has different widths {sorted(widths)} across the "
                             f"run's records: {run_dir}")
        out[name] = np.stack(vs).astype(np.float32, copy=False)
    return out, used


REDUCTIONS = ("last_prompt", "mean_prompt", "last") + ANSWER_REDUCTIONS


def parse_reduce(reduce):
    """One of REDUCTIONS or an int token index >= 0, checked once."""
    if isinstance(reduce, str) and reduce in REDUCTIONS:
        return reduce
    if isinstance(reduce, (int, np.integer)) and not isinstance(reduce, bool) \
            and reduce >= 0:
        return int(reduce)
    raise ValueError(f"reduce must be one of {REDUCTIONS} or a token index >= 0, "
                     f"got {reduce!r}")


def _layer_rows(record, layer, path):
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


def _answer_vector(record, row, layer, reduce, path):
    """The answer-anchored float32 vector of one record, or None when no answer position is kept.

    The results row's answer_positions are used (the record's when the row lacks them). The last
    generated token has no activation (it is never fed back), so an answer ending there keeps
    one row fewer.
    """
    positions = row.get("answer_positions")
    if positions is None:
        positions = record.get("answer_positions")
    t, kept = _layer_rows(record, layer, path)
    index = {p: i for i, p in enumerate(kept)}
    positions = [int(p) for p in positions or []]
    if reduce == "answer_first":
        positions = positions[:1]               # the first answer token itself, or nothing
    rows = [index[p] for p in positions if p in index]
    if not rows:
        return None
    picked = t[rows]
    return picked.float().mean(dim=0).numpy().copy()


def _pick_vector(record, layer, reduce, path):
    """The float32 [hidden] vector of `layer` reduced by `reduce` in one record."""
    t, kept = _layer_rows(record, layer, path)
    if reduce == "last":
        if not kept:
            raise ValueError(f"record keeps no positions: {path}")
        return t[-1].float().numpy()
    if "num_prompt_tokens" in record:
        n_prompt = record["num_prompt_tokens"]
    elif "input_ids" in record:                 # seed records: [P] or [1, P]
        n_prompt = int(np.shape(record["input_ids"])[-1])
    else:
        raise ValueError(f"record has neither num_prompt_tokens nor input_ids: {path}")
    if reduce == "mean_prompt":
        rows = [i for i, p in enumerate(kept) if p < n_prompt]
        if not rows:
            raise ValueError(f"record keeps no prompt positions (kept: {_short(kept)}): {path}")
        return t[rows].float().mean(dim=0).numpy()
    target = n_prompt - 1 if reduce == "last_prompt" else reduce
    if target not in kept:
        raise ValueError(f"record has no row for token position {target} "
                         f"(reduce={reduce!r}; kept: {_short(kept)}): {path}")
    return t[kept.index(target)].float().numpy()


def _short(values, n=8):
    return str(values) if len(values) <= n else f"[{values[0]}, ..., {values[-1]}] ({len(values)})"

