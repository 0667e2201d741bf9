"""Datasets from a run: one vector per question for a layer, ready for probes and plots.

Public names:
    REDUCTIONS                                  ("last_prompt", "mean_prompt", "last") or an int
    load_run_layer(run_dir, layer, reduce="last_prompt") -> (float32 [n, hidden], rows)
    parse_reduce(reduce)                        the one check of a reduce= value

Example:
    >>> X, rows = load_run_layer("runs/r1", "layer_5", reduce="mean_prompt")
    >>> y = np.array([bool(r["correct"]) for r in rows])

`reduce` says how a record's (positions, hidden) tensor becomes one vector; it is not the capture
setting --positions (which tokens were saved), though it can only use positions that were saved.
"""
import os

import numpy as np
import torch

from ..store.errors import CorruptFileError
from ..store.records import load_activations
from ..store.run_folder import RESULTS_FILE, SHARD_FIELDS, read_results
from ..store.run_records import record_location
from ..store.shards import read_shard_layer

def load_run_layer(run_dir, layer, reduce="last_prompt"):
    """One `layer` vector per captured question of a run -> (float32 [n, hidden], rows).

    >>> X, rows = load_run_layer("runs/r1", "layer_5", reduce="mean_prompt")
    >>> y = np.array([r["correct"] for r in rows])

    reduce: "last_prompt" (the last prompt token's row), "mean_prompt" (mean over kept
    prompt positions), "last" (last kept row), or an int absolute token index. Rows of
    results.jsonl without a record are skipped; `rows` are the results rows used, in the
    matrix's order. Reads only `layer` from .safetensors files, and from a run saved with
    --activation_store shards one read per shard (the layer's rows of all its questions).
    """
    run_dir = os.fspath(run_dir)
    reduce = parse_reduce(reduce)
    used, files, by_shard, existing = [], {}, {}, set()       # files: {slot: vector}
    shard_key, row_key = SHARD_FIELDS
    for row in read_results(run_dir):
        shard = row.get(shard_key)
        if not (shard and type(row.get(row_key)) is int and shard in by_shard):   # else: a known shard
            location = record_location(run_dir, row, existing)
            if location is None:
                continue
            if location[0] == "file":
                record = load_activations(location[1], layers=[layer])
                # a copy: a view would keep the record's whole layer tensor alive until the end
                files[len(used)] = _pick_vector(record, layer, reduce, location[1]).copy()
                used.append(row)
                continue
            by_shard.setdefault(shard, ([], [], []))
        slots, shard_rows, ids = by_shard[shard]        # filled from the shard below
        slots.append(len(used))
        shard_rows.append(row[row_key])
        ids.append(row.get("id"))
        used.append(row)
    if not used:
        raise ValueError(f"no row of {RESULTS_FILE} names saved activations: {run_dir}")
    blocks = [(list(files), np.stack(list(files.values())))] if files else []
    blocks += [(slots, _shard_vectors(read_shard_layer(os.path.join(run_dir, shard), layer), rows, ids, reduce))
               for shard, (slots, rows, ids) in by_shard.items()]
    widths = {block.shape[1] for _, block in blocks}
    if len(widths) > 1:
        raise ValueError(f"layer {layer!r} has different widths {sorted(widths)} across the "
                         f"run's records: {run_dir}")
    X = np.empty((len(used), widths.pop()), dtype=np.float32)
    for slots, block in blocks:
        X[slots] = block
    return X, used


def _shard_vectors(shard, rows, ids, reduce):
    """The reduced float32 vectors of questions `rows` of a shard's layer, vectorized over the
    questions (a shard holds hundreds): [len(rows), hidden]."""
    index, path = shard.index, shard.index.path
    n = len(index.ids)
    held = [index.ids[i] if 0 <= i < n else None for i in rows]
    if held != list(map(str, ids)):
        qid, i, found = next((q, i, h) for q, i, h in zip(ids, rows, held) if h != str(q))
        raise CorruptFileError(f"results row {qid!r} names row {i} of the shard, which holds "
                               f"{found if found is not None else 'no such row'!r}: {path}")
    t = shard.tensor
    if t.dim() != 2:
        raise ValueError(f"activation {shard.name!r} has rows of shape {tuple(t.shape[1:])}, expected "
                         f"(hidden,): {path}")
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = index.row_offsets[rows], index.row_offsets[rows + 1]
    counts = ends - starts
    if reduce == "last":
        if np.any(counts == 0):
            raise ValueError(f"question {ids[int(np.argmax(counts == 0))]!r} keeps no positions: {path}")
        return t[torch.from_numpy(ends - 1)].float().numpy()
    n_prompt = index.num_prompt_tokens[rows]
    if np.any(n_prompt < 0):
        raise ValueError(f"question {ids[int(np.argmax(n_prompt < 0))]!r} has neither num_prompt_tokens "
                         f"nor input_ids: {path}")
    # every kept row of the wanted questions, with its question's number (0..len(rows)-1)
    owner = np.repeat(np.arange(len(rows)), counts)
    first_slot = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - first_slot, counts)
    positions = index.positions[flat]
    if reduce == "mean_prompt":
        keep = positions < n_prompt[owner]
        per_question = np.bincount(owner[keep], minlength=len(rows))
        if np.any(per_question == 0):
            raise ValueError(f"question {ids[int(np.argmax(per_question == 0))]!r} keeps no prompt "
                             f"positions: {path}")
        # one torch mean per question, as for a per-question file (bit-identical results)
        chosen = flat[keep]
        bounds = np.concatenate([[0], np.cumsum(per_question)])
        return np.stack([t[torch.from_numpy(chosen[a:b])].float().mean(dim=0).numpy()
                         for a, b in zip(bounds[:-1], bounds[1:])])
    target = n_prompt - 1 if reduce == "last_prompt" else np.full(len(rows), reduce)
    hit = positions == target[owner]
    found = np.full(len(rows), -1, dtype=np.int64)
    found[owner[hit][::-1]] = flat[hit][::-1]           # the first kept row at the target position
    if np.any(found < 0):
        q = int(np.argmax(found < 0))
        raise ValueError(f"question {ids[q]!r} has no row for token position {int(target[q])} "
                         f"(reduce={reduce!r}): {path}")
    return t[torch.from_numpy(found)].float().numpy()


REDUCTIONS = ("last_prompt", "mean_prompt", "last")


def parse_reduce(reduce):
    """"last_prompt" | "mean_prompt" | "last" | an int token index >= 0, checked once."""
    if isinstance(reduce, str) and reduce in REDUCTIONS:
        return reduce
    if isinstance(reduce, (int, np.integer)) and not isinstance(reduce, bool) \
            and reduce >= 0:
        return int(reduce)
    raise ValueError(f"reduce must be one of {REDUCTIONS} or a token index >= 0, "
                     f"got {reduce!r}")


def _pick_vector(record, layer, reduce, path):
    """The float32 [hidden] vector of `layer` reduced by `reduce` in one record."""
    t = torch.as_tensor(record["activations"][layer])   # seed pickles may hold numpy arrays
    if t.dim() == 3 and t.shape[0] == 1:        # seed records may keep a batch dimension
        t = t[0]
    if t.dim() != 2:
        raise ValueError(f"activation {layer!r} has shape {tuple(t.shape)}, expected "
                         f"(n_positions, hidden): {path}")
    kept = list(record.get("positions_kept") or range(t.shape[0]))
    if len(kept) != t.shape[0]:
        raise CorruptFileError(f"positions_kept lists {len(kept)} positions but {layer!r} has "
                               f"{t.shape[0]} rows: {path}")
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

