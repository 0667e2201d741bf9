"""Datasets from a run: one vector per question for a layer, ready for probes and plots.

Public names:
    REDUCTIONS                                  ("last_prompt", "mean_prompt", "last", "answer_first",
                                                "answer_mean") or an int
    load_run_layer(run_dir, layer, reduce="last_prompt", progress=False) -> (float32 [n, hidden], rows)
    load_run_layers(run_dir, layers, reduce="last_prompt", progress=False) -> ({layer: [n, hidden]}, rows)
                                                the same for several layers, each file read once
    parse_reduce(reduce)                        the one check of a reduce= value

Example:
    >>> X, rows = load_run_layer("runs/r1", "layer_5", reduce="mean_prompt")
    >>> y = np.array([bool(r["correct"]) for r in rows])
    >>> X.shape, X.dtype, [r["id"] for r in rows][:2], int(y.sum())       # a random model: none correct
    ((6, 64), dtype('float32'), ['geo-001', 'geo-002'], 0)

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

from ..store.bounded_json import gc_paused
from ..store.errors import CorruptFileError
from ..store.run_folder import RESULTS_FILE
from ..store.run_reader import RunReader
from ..store.shards import read_shard_layers

log = logging.getLogger(__name__)
ANSWER_REDUCTIONS = ("answer_first", "answer_mean")


def load_run_layer(run_dir, layer, reduce="last_prompt", progress=False):
    """One `layer` vector per captured question of a run -> (float32 [n, hidden], rows).

    >>> X, rows = load_run_layer("runs/r1", "layer_5", reduce="answer_first")
    >>> X.shape                  # one row per question whose answer has a kept position
    (6, 64)

    reduce: "last_prompt" (the last prompt token's row), "mean_prompt" (mean over kept
    prompt positions), "last" (last kept row), "answer_first" (the row of the first token of the
    extracted answer in the response, i.e. where that token is the input), "answer_mean" (mean
    over the answer's kept token rows), or an int absolute token index. Rows of results.jsonl
    without a record (or, for the answer reductions, without a kept answer position) are
    skipped; `rows` are the results rows used, in the matrix's order. Reads only `layer` from
    .safetensors files, and from a run saved with --activation_store shards one read per shard
    (the layer's rows of all its questions). `progress`: a progress bar on stderr.
    """
    matrices, used = load_run_layers(run_dir, [layer], reduce, progress)
    return matrices[layer], used


@gc_paused
def load_run_layers(run_dir, layers, reduce="last_prompt", progress=False):
    """load_run_layer for several layers at once: each record file is read once (a pickle is
    always read whole, so one layer at a time would read it once per layer).

    >>> mats, rows = load_run_layers("runs/r1", ["layer_4", "layer_5"])
    >>> mats["layer_5"].shape          # (n_questions, hidden)
    (6, 64)

    The rows and their records come from store.run_reader.RunReader (last row per question,
    each record read once, confined to the run's activations folder, checked to be its row's).
    """
    run_dir = os.fspath(run_dir)
    reduce = parse_reduce(reduce)
    layers = list(layers)
    reader = RunReader(run_dir)
    pairs = reader.located()
    if not pairs:
        raise ValueError(f"no row of {RESULTS_FILE} names saved activations: {run_dir}")
    if any(location.kind == "shard" for _, location in pairs):     # saved with --activation_store shards
        if reduce in ANSWER_REDUCTIONS:
            raise ValueError(f"reduce={reduce!r} needs per-question record files; {run_dir} was saved "
                             f"with --activation_store shards (use last_prompt, mean_prompt, last or an index)")
        return _shard_run_layers(reader, pairs, layers, reduce, progress)
    return _file_run_layers(reader, pairs, layers, reduce, progress)


def _file_run_layers(reader, pairs, layers, reduce, progress):
    from tqdm import tqdm
    run_dir = reader.run_dir
    vectors, used, no_answer = {name: [] for name in layers}, [], 0
    records = reader.records(layers, pairs=pairs)
    for (row, location), (_, record) in tqdm(zip(pairs, records), total=len(pairs), file=sys.stderr,
                                             desc=f"reading {', '.join(layers)[:40]}", unit="file",
                                             disable=not progress):
        if reduce in ANSWER_REDUCTIONS:
            picked = {name: _answer_vector(record, row, name, reduce, location.path) for name in layers}
            if any(v is None for v in picked.values()):
                no_answer += 1
                continue
        else:
            # copies: a view would keep the record's whole layer tensor alive until np.stack
            picked = {name: _pick_vector(record, name, reduce, location.path).copy() for name in layers}
        for name, vector in picked.items():
            vectors[name].append(vector)
        used.append(row)
        del record
    if no_answer:
        log.warning("%s: %d question(s) have no kept answer position; reduce=%r leaves them out",
                    run_dir, no_answer, reduce)
    if not used and reduce in ANSWER_REDUCTIONS:
        raise ValueError(f"no question of {run_dir} has a kept answer position (reduce={reduce!r}): "
                         f"answer positions are recorded when generated tokens are captured "
                         f"(main.py --capture_activations --positions all or generated)")
    out = {}
    for name, vs in vectors.items():
        widths = {v.shape[0] for v in vs}
        if len(widths) > 1:
            raise ValueError(f"layer {name!r} has different widths {sorted(widths)} across the "
                             f"run's records: {run_dir}")
        out[name] = np.stack(vs).astype(np.float32, copy=False)
    return out, used


def _shard_run_layers(reader, pairs, layers, reduce, progress):
    """load_run_layers of a run whose records are in shards (rows naming files are read as files):
    each layer is one read per shard."""
    from tqdm import tqdm
    run_dir = reader.run_dir
    used = [row for row, _ in pairs]
    files = [(slot, location.path) for slot, (_, location) in enumerate(pairs) if location.kind == "file"]
    by_shard = {}
    for slot, (row, location) in enumerate(pairs):
        if location.kind == "shard":
            by_shard.setdefault(location.path, []).append((slot, location.row, row.get("id")))
    groups = [([s for s, _, _ in entries], [r for _, r, _ in entries], [q for _, _, q in entries], path)
              for path, entries in by_shard.items()]
    out = {}
    for layer in tqdm(layers, desc="layers", unit="layer", file=sys.stderr, disable=not progress or len(layers) < 2):
        blocks = []
        if files:
            # copies: a view would keep a record's whole layer tensor alive until the end
            records = reader.records([layer], pairs=[pairs[slot] for slot, _ in files])
            vectors = [_pick_vector(record, layer, reduce, path).copy()
                       for (_, path), (_, record) in zip(files, records)]
            blocks.append(([slot for slot, _ in files], np.stack(vectors)))
        read = read_shard_layers([path for *_, path in groups], layer)     # concurrently: disk waits overlap
        blocks += [(slots, _shard_vectors(shard, rows, ids, reduce))
                   for (slots, rows, ids, _), shard in zip(groups, read)]
        widths = {block.shape[1] for _, block in blocks}
        if len(widths) > 1:
            raise ValueError(f"layer {layer!r} has different widths {sorted(widths)} across the "
                             f"run's records: {run_dir}")
        out[layer] = np.empty((len(used), widths.pop()), dtype=np.float32)
        for slots, block in blocks:
            if slots == list(range(slots[0], slots[0] + len(slots))):
                out[layer][slots[0]:slots[0] + len(slots)] = block      # a slice: one memcpy, no index array
            else:
                out[layer][slots] = block
    return out, used


def _shard_vectors(shard, rows, ids, reduce):
    """The reduced float32 vectors of questions `rows` of a shard's layer, vectorized over the
    questions (a shard holds hundreds): [len(rows), hidden]."""
    index, path = shard.index, shard.index.path
    n = len(index.ids)
    held = index.ids if rows == list(range(n)) else [index.ids[i] if 0 <= i < n else None for i in rows]
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
        return _take_rows(t, ends - 1)
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
    return _take_rows(t, found)


def _take_rows(t, rows):
    """float32 numpy rows `rows` of tensor t: t itself (no copy) when that is every row in order,
    as for a run captured at one position per question (a gather of a shard's 3,600 rows is ~7 ms)."""
    if len(rows) == t.shape[0] and np.array_equal(rows, np.arange(len(rows))):
        return t.float().numpy()
    return t[torch.from_numpy(rows)].float().numpy()


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
        if type(n_prompt) is not int:           # e.g. "5" in a stranger's record
            raise CorruptFileError(f"the record's num_prompt_tokens is {str(n_prompt)[:40]!r}, not an integer: {path}")
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

