"""Runs saved with --activation_store shards: each layer read once per shard, the rows each question
uses planned once per shard from its index (positions, prompt lengths) and the results rows'
answer_positions, vectorized over the shard's questions (dataset.py's loaders call it).

Public names (the package's):
    shard_run_layers(reader, pairs, layers, reduces, progress) -> (matrices, used rows, sources, left-out rows)

Example:
    >>> from activation_eval.store.run_reader import RunReader
    >>> reader = RunReader("results/mc"); pairs = reader.located()
    >>> {location.kind for _, location in pairs}                # a file-store run: shard_run_layers reads files too
    {'file'}
    >>> out, used, sources, left_out = shard_run_layers(reader, pairs, ["layer_5"], ["last_prompt"], False)
    >>> out["last_prompt"]["layer_5"].shape, len(used), left_out
    ((12, 64), 12, [])
"""
import sys
from typing import NamedTuple

import numpy as np
import torch

from ..schema import ID
from ..schema.names import ANSWER_REDUCTIONS, MEAN_REDUCTIONS
from ..store.errors import CorruptFileError
from ..store.run_folder import shard_row_id
from ..store.shards import read_shard_index, read_shard_layers
from .record_rows import ANSWER_SPAN, FALLBACK, answer_span, record_vectors


class _Group(NamedTuple):
    """The located rows of one shard: their slots in `pairs`, their rows in the shard, their rows."""
    path: str
    slots: list
    shard_rows: list
    rows: list


def shard_run_layers(reader, pairs, layers, reduces, progress):
    """(matrices, used rows, sources, left-out rows) of a run whose records are in shards (rows
    naming files are read as files): each layer is one read per shard. Which rows each question
    uses is planned once per shard from its index (positions, prompt lengths) and the results
    rows' answer_positions; the layer reads then only gather."""
    from tqdm import tqdm
    run_dir = reader.run_dir
    files = [slot for slot, (_, location) in enumerate(pairs) if location.kind == "file"]
    by_shard = {}
    for slot, (row, location) in enumerate(pairs):
        if location.kind == "shard":
            by_shard.setdefault(location.path, []).append((slot, location.row, row))
    groups = [_Group(path, [s for s, _, _ in e], [i for _, i, _ in e], [r for _, _, r in e]) for path, e in by_shard.items()]
    plans = [_shard_plan(read_shard_index(g.path), g, reduces) for g in groups]
    ok = np.ones(len(pairs), dtype=bool)
    sources = np.empty((len(reduces), len(pairs)), dtype=object)
    for group, plan in zip(groups, plans):
        ok[group.slots] = plan.ok
        for k, r in enumerate(reduces):
            sources[k, group.slots] = plan.sources[r]
    out = {r: {} for r in reduces}
    for layer in tqdm(layers, desc="layers", unit="layer", file=sys.stderr, disable=not progress or len(layers) < 2):
        blocks = []             # (slots of `pairs`, {reduce: [len(slots), hidden]})
        if files:
            records = reader.records([layer], pairs=[pairs[slot] for slot in files])
            picked = [(slot, record_vectors(record, pairs[slot][0], [layer], reduces, pairs[slot][1].path))
                      for slot, (_, record) in zip(files, records)]
            for slot, pick in picked:
                ok[slot] = pick is not None
                sources[:, slot] = [pick[r][1] if pick else None for r in reduces]
            kept = [(slot, pick) for slot, pick in picked if pick is not None]
            if kept:
                blocks.append(([slot for slot, _ in kept],
                               {r: np.stack([pick[r][0][layer] for _, pick in kept]) for r in reduces}))
        read = read_shard_layers([g.path for g in groups], layer)     # concurrently: disk waits overlap
        for group, plan, shard in zip(groups, plans, read):
            if plan.ok.any():
                blocks.append(([s for s, keep in zip(group.slots, plan.ok) if keep],
                               {r: _shard_vectors(shard, plan, r) for r in reduces}))
        slot_to_out = np.cumsum(ok) - 1
        for r in reduces:
            out[r][layer] = _assembled(blocks, r, slot_to_out, int(ok.sum()), layer, run_dir)
    used = [row for (row, _), keep in zip(pairs, ok) if keep]
    left_out = [row for (row, _), keep in zip(pairs, ok) if not keep]
    return out, used, {r: [s for s in sources[k][ok]] for k, r in enumerate(reduces)}, left_out


def _assembled(blocks, reduce, slot_to_out, n, layer, run_dir):
    widths = {block[reduce].shape[1] for _, block in blocks}
    if len(widths) > 1:
        raise ValueError(f"layer {layer!r} has different widths {sorted(widths)} across the "
                         f"run's records: {run_dir}")
    if not widths:
        return None
    out = np.empty((n, widths.pop()), dtype=np.float32)
    for slots, block in blocks:
        dest = slot_to_out[slots]
        if dest[-1] - dest[0] == len(dest) - 1:
            out[dest[0]:dest[0] + len(dest)] = block[reduce]      # a slice: one memcpy, no index array
        else:
            out[dest] = block[reduce]
    return out


class _Plan(NamedTuple):
    """Which flat rows (of a shard's layer tensor) each wanted question uses, per reduction."""
    ok: np.ndarray          # bool [m]: the question has every reduction (an answer one may lack a row)
    chosen: dict            # {reduce: int64 flat rows}, per question a segment: bounds[q]:bounds[q+1]
    bounds: dict            # {reduce: int64 [m + 1]}
    sources: dict           # {reduce: object [m]}: ANSWER_SPAN / FALLBACK / None


def _shard_plan(index, group, reduces):
    """The _Plan of questions group.shard_rows of a shard (vectorized over its hundreds of questions)."""
    rows, path = group.shard_rows, index.path
    ids, wanted = [row.get(ID) for row in group.rows], [shard_row_id(row) for row in group.rows]
    n = len(index.ids)
    held = index.ids if rows == list(range(n)) else [index.ids[i] if 0 <= i < n else None for i in rows]
    if held != wanted:
        qid, i, found = next((q, i, h) for q, i, h, w in zip(ids, rows, held, wanted) if h != w)
        raise CorruptFileError(f"results row {qid!r} names row {i} of the shard, which holds "
                               f"{found if found is not None else 'no such row'!r}: {path}")
    m = len(rows)
    rows = np.asarray(rows, dtype=np.int64)
    starts, ends = index.row_offsets[rows], index.row_offsets[rows + 1]
    counts = ends - starts
    # every kept row of the wanted questions, with its question's number (0..m-1): owner is non-decreasing
    owner = np.repeat(np.arange(m), counts)
    first_slot = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
    flat = np.arange(int(counts.sum()), dtype=np.int64) + np.repeat(starts - first_slot, counts)
    positions = index.positions[flat]
    n_prompt = index.num_prompt_tokens[rows]
    kept_rows = _KeptRows(owner, flat, positions, m)
    ok = np.ones(m, dtype=bool)
    chosen, bounds, sources = {}, {}, {}
    for reduce in reduces:
        if reduce not in ("last", *ANSWER_REDUCTIONS) and np.any(n_prompt < 0):
            raise ValueError(f"question {ids[int(np.argmax(n_prompt < 0))]!r} has neither num_prompt_tokens "
                             f"nor input_ids: {path}")
        if reduce in ANSWER_REDUCTIONS:
            per_question, source = _answer_plan(reduce, kept_rows, n_prompt, group.rows, path)
            ok &= np.array([len(p) > 0 for p in per_question])
            chosen[reduce] = np.concatenate([np.asarray(p, np.int64) for p in per_question]) if m else np.zeros(0, np.int64)
            bounds[reduce] = np.concatenate([[0], np.cumsum([len(p) for p in per_question])]).astype(np.int64)
            sources[reduce] = source
            continue
        sources[reduce] = np.full(m, None, dtype=object)
        if reduce == "mean_prompt":
            keep = positions < n_prompt[owner]
            per_question = np.bincount(owner[keep], minlength=m)
            if np.any(per_question == 0):
                raise ValueError(f"question {ids[int(np.argmax(per_question == 0))]!r} keeps no prompt "
                                 f"positions: {path}")
            chosen[reduce], bounds[reduce] = flat[keep], np.concatenate([[0], np.cumsum(per_question)])
            continue
        if reduce == "last":
            if np.any(counts == 0):
                raise ValueError(f"question {ids[int(np.argmax(counts == 0))]!r} keeps no positions: {path}")
            found = ends - 1
        else:
            target = n_prompt - 1 if reduce == "last_prompt" else np.full(m, reduce)
            found = kept_rows.first_at(target)
            if np.any(found < 0):
                q = int(np.argmax(found < 0))
                raise ValueError(f"question {ids[q]!r} has no row for token position {int(target[q])} "
                                 f"(reduce={reduce!r}): {path}")
        chosen[reduce], bounds[reduce] = found.astype(np.int64), np.arange(m + 1, dtype=np.int64)
    return _Plan(ok, chosen, bounds, sources)


class _KeptRows(NamedTuple):
    """The kept rows of a shard's wanted questions, flattened: their question, flat row, position."""
    owner: np.ndarray
    flat: np.ndarray
    positions: np.ndarray
    m: int

    def first_at(self, target):
        """Per question, the first flat row at position target[q] (-1: none)."""
        wanted = target[self.owner]
        return _first_per_question((self.positions == wanted) & (wanted >= 0), self.owner, self.flat, self.m)


def _first_per_question(mask, owner, flat, m):
    """Per question (0..m-1), the first of its flat rows where `mask` holds; -1 where none."""
    o, f = owner[mask], flat[mask]
    found = np.full(m, -1, dtype=np.int64)
    edge = _run_edges(o)
    found[o[edge]] = f[edge]
    return found


def _run_edges(o, last=False):
    """The first (last=True: last) element of each run of equal values of the non-decreasing `o`."""
    if not len(o):
        return np.zeros(0, dtype=bool)
    change = o[1:] != o[:-1]
    return np.concatenate([change, [True]]) if last else np.concatenate([[True], change])


def _answer_plan(reduce, kept_rows, n_prompt, result_rows, path):
    """([flat rows] per question, sources [m]) of an answer reduction in a shard: the answer rows
    (the first row of each answer position, position order) reduced, else the first generated token."""
    owner, flat, positions, m = kept_rows
    top = int(positions.max(initial=-1))         # an answer position above every kept one has no row
    if m and top + 1 > 2**62 // m:               # keys (question, position) below would overflow int64
        raise CorruptFileError(f"the shard's index.positions holds token position {top}: {path}")
    spans = [answer_span(row, None, path) for row in result_rows]
    spans = [[p for p in (s[:1] if reduce == "answer_first" else s) if 0 <= p <= top] for s in spans]
    span_owner = np.repeat(np.arange(m), [len(s) for s in spans])
    span_pos = np.array([p for s in spans for p in s], dtype=np.int64)
    keys = owner * (top + 1) + positions
    in_answer = np.isin(keys, span_owner * (top + 1) + span_pos) & (positions >= 0)
    # the keys sorted: one row per (question, answer position), by question then position; a
    # position kept twice: its first row
    _, first_of_key = np.unique(keys[in_answer], return_index=True)
    answer = np.flatnonzero(in_answer)[first_of_key]
    o, f = owner[answer], flat[answer]
    if reduce == "answer_mean":
        per_question = [[] for _ in range(m)]
        for q, row in zip(o.tolist(), f.tolist()):
            per_question[q].append(row)
    else:                                       # answer_first: its one answer row; answer_last: the last one
        per_question = [[] for _ in range(m)]
        edge = _run_edges(o, last=reduce == "answer_last")
        for q, row in zip(o[edge].tolist(), f[edge].tolist()):
            per_question[q] = [row]
    fallback = kept_rows.first_at(n_prompt)
    sources = np.full(m, None, dtype=object)
    for q in range(m):
        if per_question[q]:
            sources[q] = ANSWER_SPAN
            continue
        if n_prompt[q] < 0:
            raise ValueError(f"question {result_rows[q].get(ID)!r} has neither num_prompt_tokens nor input_ids: {path}")
        if fallback[q] >= 0:
            per_question[q], sources[q] = [int(fallback[q])], FALLBACK
    return per_question, sources


def _shard_vectors(shard, plan, reduce):
    """The float32 [questions kept, hidden] vectors of `reduce` of a shard's layer, as planned."""
    t = shard.tensor
    if t.dim() != 2:
        raise ValueError(f"activation {shard.name!r} has rows of shape {tuple(t.shape[1:])}, expected "
                         f"(hidden,): {shard.index.path}")
    chosen, bounds = plan.chosen[reduce], plan.bounds[reduce]
    if len(chosen) and (chosen.max() >= t.shape[0]):
        raise CorruptFileError(f"the shard's index names row {int(chosen.max())} of a layer of {t.shape[0]} rows: "
                               f"{shard.index.path}")
    keep = np.flatnonzero(plan.ok)
    if reduce not in MEAN_REDUCTIONS:          # one row per question
        return _take_rows(t, chosen[bounds[keep]])
    # one torch mean per question, as for a per-question file (bit-identical results)
    return np.stack([t[torch.from_numpy(chosen[bounds[q]:bounds[q + 1]])].float().mean(dim=0).numpy() for q in keep])


def _take_rows(t, rows):
    """float32 numpy rows `rows` of tensor t: t itself (no copy) when that is every row in order,
    as for a run captured at one position per question (a gather of a shard's 3,600 rows is ~7 ms)."""
    if len(rows) == t.shape[0] and np.array_equal(rows, np.arange(len(rows))):
        return t.float().numpy()
    return t[torch.from_numpy(rows)].float().numpy()
