"""Datasets from a run: one vector per question for a layer, ready for probes and plots.

Public names:
    load_run_layer(run_dir, layer, reduce="last_prompt", progress=False) -> (float32 [n, hidden], rows)
    load_run_layers(run_dir, layers, reduce="last_prompt", progress=False) -> ({layer: [n, hidden]}, rows)
                          the same for several layers, each file read once
    load_run_positions(run_dir, layers, positions=HEATMAP_POSITIONS, progress=False)
                          -> ({position: {layer: [n, hidden]}}, rows, info)
                          several reductions of the same questions, each file read once; `info`
                          says which position each answer reduction used per question
    resolve_reduce(run_dir, reduce) -> (reduce, note)    "auto" made concrete, and why

The reductions themselves (REDUCTIONS, AUTO, ANSWER_REDUCTIONS, HEATMAP_POSITIONS, parse_reduce: how a
record becomes one vector) are named in activation_eval/schema/names.py, their one owner.

Example:
    >>> X, rows = load_run_layer("runs/r1", "layer_5", reduce="mean_prompt")
    >>> y = np.array([bool(r["correct"]) for r in rows])
    >>> X.shape, X.dtype, [r["id"] for r in rows][:2], int(y.sum())       # a random model: none correct
    ((6, 64), dtype('float32'), ['geo-001', 'geo-002'], 0)
    >>> resolve_reduce("runs/r1", "auto")[0], resolve_reduce("results/mc", "auto")[0]   # --positions all / last_prompt
    ('answer_first', 'last_prompt')

`reduce` says how a record's (positions, hidden) tensor becomes one vector; it is not the capture
setting --positions (which tokens were saved), though it can only use positions that were saved.
A record's row at position p is the activation computed with token p as the input (the last
generated token is never fed back, so it has none).

The answer reductions use the question's "answer_positions" (the generated tokens that spell the
grader's extracted answer, recorded in the results row when generated positions are captured).
The answer rows of a record are its kept rows at those positions (the first row of each
position, in position order):
    answer_first   the row of the answer's first token (that token itself must be kept)
    answer_mean    the mean of the answer rows
    answer_last    the row of the last kept answer token (an answer ending at the last generated
                   token: the token before it, which has a row)
A question without answer rows (no extracted answer in the response, answer_positions empty or
missing, or none of its tokens kept) falls back to the first generated token (position
num_prompt_tokens) for all three; one without that row either is left out of the matrix (and of
`rows`), with a logged count. load_run_positions' `info` says which was used, per question.
"""
import logging
import os
import sys
from typing import NamedTuple

import numpy as np
import torch

from ..schema import ANSWER_POSITIONS, ID
from ..schema.names import ANSWER_REDUCTIONS, AUTO, HEATMAP_POSITIONS, MEAN_REDUCTIONS, parse_reduce
from ..store.bounded_json import gc_paused
from ..store.errors import CorruptFileError
from ..store.run_folder import RESULTS_FILE
from ..store.run_reader import RunReader
from ..store.shards import read_shard_index, read_shard_layers

log = logging.getLogger(__name__)
ANSWER_SPAN, FALLBACK = "answer_span", "fallback"        # where an answer reduction's rows came from


def load_run_layer(run_dir, layer, reduce="last_prompt", progress=False):
    """One `layer` vector per captured question of a run -> (float32 [n, hidden], rows).

    >>> X, rows = load_run_layer("runs/r1", "layer_5", reduce="answer_first")
    >>> X.shape                  # one row per question with a kept answer or first generated token
    (6, 64)

    reduce: "last_prompt" (the last prompt token's row), "mean_prompt" (mean over kept
    prompt positions), "last" (last kept row), "answer_first", "answer_mean", "answer_last" (the
    module docstring: the answer's tokens, else the first generated token), an int absolute
    token index, or "auto" (resolve_reduce). Rows of results.jsonl without a record (or, for the
    answer reductions, without a kept answer or first generated token) are skipped; `rows` are
    the results rows used, in the matrix's order. Reads only `layer` from .safetensors files, and
    from a run saved with --activation_store shards one read per shard (the layer's rows of all
    its questions). `progress`: a progress bar on stderr.
    """
    matrices, used = load_run_layers(run_dir, [layer], reduce, progress)
    return matrices[layer], used


def load_run_layers(run_dir, layers, reduce="last_prompt", progress=False):
    """load_run_layer for several layers at once: each record file is read once (a pickle is
    always read whole, so one layer at a time would read it once per layer).

    >>> mats, rows = load_run_layers("runs/r1", ["layer_4", "layer_5"])
    >>> mats["layer_5"].shape          # (n_questions, hidden)
    (6, 64)

    The rows and their records come from store.run_reader.RunReader (last row per question,
    each record read once, confined to the run's activations folder, checked to be its row's).
    """
    reduce = parse_reduce(reduce)
    matrices, used, _ = _load(run_dir, layers, [reduce], progress)
    return next(iter(matrices.values())), used


def load_run_positions(run_dir, layers, positions=HEATMAP_POSITIONS, progress=False):
    """Several reductions (`positions`, each one of schema.names.REDUCTIONS) of the same questions ->
    ({position: {layer: float32 [n, hidden]}}, rows, info). Each record file is read once for
    all layers and positions (a shard run: each layer once per shard).

    >>> mats, rows, info = load_run_positions("runs/r1", ["layer_4", "layer_5"])
    >>> list(mats), mats["answer_last"]["layer_5"].shape
    (['last_prompt', 'answer_first', 'answer_mean', 'answer_last'], (6, 64))
    >>> c = info["counts"]["answer_first"]; c["answer_span"] + c["fallback"] == len(rows)
    True

    The questions are those that have every position (the same questions, in the same order, in
    every matrix); a position a question cannot have raises as in load_run_layer, except the
    answer reductions', which leave the question out. info (JSON-able):
        "counts":   {position: {"answer_span": a, "fallback": f, "left_out": k}}  for each answer
                    reduction in `positions`: a + f == len(rows); k questions left out (of all)
        "sources":  {position: ["answer_span" | "fallback", ...]}  per row of `rows`, likewise
        "left_out": [question id, ...]  the questions with a record that are in no matrix
    """
    reduces = [parse_reduce(p) for p in positions]
    if AUTO in reduces:
        raise ValueError(f"load_run_positions needs concrete reductions; resolve {AUTO!r} first "
                         f"(resolve_reduce(run_dir, {AUTO!r}))")
    if not reduces or len(set(reduces)) != len(reduces):
        raise ValueError(f"positions must be distinct reductions, got {list(positions)!r}")
    return _load(run_dir, layers, reduces, progress)


def resolve_reduce(run_dir, reduce):
    """(the concrete reduction, a note saying why) for a reduce= value: "auto" is "answer_first"
    when the run captured generated positions, else "last_prompt"; anything else is itself.

    >>> resolve_reduce("results/mc", "auto")
    ('last_prompt', 'auto: last_prompt, the last prompt token (no results row holds answer_positions: ...)')

    The test reads results.jsonl only (no record): a row holds answer_positions exactly when its
    record kept a generated position (eval/answering.py), whatever --positions or --mc_scoring said.
    """
    reduce = parse_reduce(reduce)
    if reduce != AUTO:
        return reduce, f"reduce={reduce!r} as asked"
    return _auto(RunReader(run_dir).rows)


def _auto(rows):
    if any(isinstance(row.get(ANSWER_POSITIONS), list) for row in rows):
        return "answer_first", ("auto: answer_first, the first token of the extracted answer, else the first generated "
                                "token (the results rows hold answer_positions: the run captured generated positions)")
    return "last_prompt", ("auto: last_prompt, the last prompt token (no results row holds answer_positions: the run "
                           "captured no generated positions)")


@gc_paused
def _load(run_dir, layers, reduces, progress):
    """({reduce: {layer: matrix}}, rows, info): the one reader behind the public loaders."""
    run_dir = os.fspath(run_dir)
    layers = list(layers)
    reader = RunReader(run_dir)
    if AUTO in reduces:                                 # the rows are read anyway: no second read
        reduces = [_auto(reader.rows)[0] if r == AUTO else r for r in reduces]
    pairs = reader.located()
    if not pairs:
        raise ValueError(f"no row of {RESULTS_FILE} names saved activations: {run_dir}")
    if any(location.kind == "shard" for _, location in pairs):     # saved with --activation_store shards
        read = _shard_run_layers(reader, pairs, layers, reduces, progress)
    else:
        read = _file_run_layers(reader, pairs, layers, reduces, progress)
    return _finish(run_dir, reduces, *read)


def _finish(run_dir, reduces, matrices, used, sources, left_out):
    """The loaders' result: left-out questions logged (or the whole read refused), info built."""
    answers = [r for r in reduces if r in ANSWER_REDUCTIONS]
    if left_out:
        log.warning("%s: %d question(s) have neither a kept answer position nor a kept first generated token; "
                    "reduce=%s leaves them out", run_dir, len(left_out), "/".join(answers))
    if not used:
        raise ValueError(f"no question of {run_dir} has a kept answer position or first generated token "
                         f"(reduce={'/'.join(answers)}): answer positions are recorded when generated tokens are "
                         f"captured (main.py --capture_activations --positions answer, all or generated)")
    counts = {r: {ANSWER_SPAN: sources[r].count(ANSWER_SPAN), FALLBACK: sources[r].count(FALLBACK),
                  "left_out": len(left_out)} for r in answers}
    for r in answers:
        if counts[r][FALLBACK]:
            log.info("%s: reduce=%s uses the first generated token for %d of %d question(s) (no kept answer token)",
                     run_dir, r, counts[r][FALLBACK], len(used))
    info = {"counts": counts, "sources": {r: sources[r] for r in answers},
            "left_out": [row.get(ID) for row in left_out]}
    return matrices, used, info


# ----------------------------------------------------------------------------- per-question record files

def _file_run_layers(reader, pairs, layers, reduces, progress):
    """(matrices, used rows, sources, left-out rows) of a run whose records are files."""
    from tqdm import tqdm
    vectors = {r: {name: [] for name in layers} for r in reduces}
    sources = {r: [] for r in reduces}
    used, left_out = [], []
    records = reader.records(layers, pairs=pairs)
    for (row, location), (_, record) in tqdm(zip(pairs, records), total=len(pairs), file=sys.stderr,
                                             desc=f"reading {', '.join(layers)[:40]}", unit="file",
                                             disable=not progress):
        picked = _record_vectors(record, row, layers, reduces, location.path)
        del record
        if picked is None:
            left_out.append(row)
            continue
        for r, (by_layer, source) in picked.items():
            for name, vector in by_layer.items():
                vectors[r][name].append(vector)
            sources[r].append(source)
        used.append(row)
    return {r: _stacked(by_layer, reader.run_dir) for r, by_layer in vectors.items()}, used, sources, left_out


def _stacked(vectors, run_dir):
    out = {}
    for name, vs in vectors.items():
        widths = {v.shape[0] for v in vs}
        if len(widths) > 1:
            raise ValueError(f"layer {name!r} has different widths {sorted(widths)} across the "
                             f"run's records: {run_dir}")
        out[name] = np.stack(vs).astype(np.float32, copy=False) if vs else None
    return out


def _record_vectors(record, row, layers, reduces, path):
    """{reduce: ({layer: float32 [hidden]}, source)} of one record, or None when an answer
    reduction has neither an answer row nor the first generated token's."""
    tensors = {}
    kept = None
    for name in layers:
        tensors[name], layer_kept = _layer_rows(record, name, path)
        if kept is not None and len(layer_kept) != len(kept):
            raise CorruptFileError(f"layers {layers[0]!r} and {name!r} keep different numbers of positions: {path}")
        kept = layer_kept
    picks = {reduce: _pick_rows(reduce, kept, record, row, path) for reduce in reduces}   # every one raises as it would alone
    if any(pick is None for pick in picks.values()):
        return None
    # copies: a view would keep the record's whole layer tensor alive until np.stack
    return {reduce: ({name: _reduced(t, rows, reduce in MEAN_REDUCTIONS) for name, t in tensors.items()}, source)
            for reduce, (rows, source) in picks.items()}


def _reduced(t, rows, mean):
    if mean:
        return t[rows].float().mean(dim=0).numpy()
    return t[rows[0]].float().numpy().copy()


def _pick_rows(reduce, kept, record, row, path):
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
        span = _answer_span(row, record, path)
        if reduce == "answer_first":
            rows = [first_row[span[0]]] if span and span[0] in first_row else []
        else:
            rows = [first_row[p] for p in sorted(set(span)) if p in first_row]
            rows = rows[-1:] if reduce == "answer_last" else rows
        if rows:
            return rows, ANSWER_SPAN
        fallback = first_row.get(_num_prompt(record, path))
        return None if fallback is None else ([fallback], FALLBACK)
    n_prompt = _num_prompt(record, path)
    if reduce == "mean_prompt":
        rows = [i for i, p in enumerate(kept) if p < n_prompt]
        if not rows:
            raise ValueError(f"record keeps no prompt positions (kept: {_short(kept)}): {path}")
        return rows, None
    target = n_prompt - 1 if reduce == "last_prompt" else reduce
    if target not in kept:
        raise ValueError(f"record has no row for token position {target} "
                         f"(reduce={reduce!r}; kept: {_short(kept)}): {path}")
    return [kept.index(target)], None


def _answer_span(row, record, where):
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


def _num_prompt(record, path):
    """The record's number of prompt tokens (num_prompt_tokens, else the length of input_ids)."""
    if "num_prompt_tokens" in record:
        n_prompt = record["num_prompt_tokens"]
        if type(n_prompt) is not int:           # e.g. "5" in a stranger's record
            raise CorruptFileError(f"the record's num_prompt_tokens is {str(n_prompt)[:40]!r}, not an integer: {path}")
        return n_prompt
    if "input_ids" in record:                   # seed records: [P] or [1, P]
        return int(np.shape(record["input_ids"])[-1])
    raise ValueError(f"record has neither num_prompt_tokens nor input_ids: {path}")


# ----------------------------------------------------------------------------- shard runs

class _Group(NamedTuple):
    """The located rows of one shard: their slots in `pairs`, their rows in the shard, their rows."""
    path: str
    slots: list
    shard_rows: list
    rows: list


def _shard_run_layers(reader, pairs, layers, reduces, progress):
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
            picked = [(slot, _record_vectors(record, pairs[slot][0], [layer], reduces, pairs[slot][1].path))
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
    rows, ids, path = group.shard_rows, [row.get(ID) for row in group.rows], index.path
    n = len(index.ids)
    held = index.ids if rows == list(range(n)) else [index.ids[i] if 0 <= i < n else None for i in rows]
    if held != list(map(str, ids)):
        qid, i, found = next((q, i, h) for q, i, h in zip(ids, rows, held) if h != str(q))
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
    spans = [_answer_span(row, None, path) for row in result_rows]
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


def _short(values, n=8):
    return str(values) if len(values) <= n else f"[{values[0]}, ..., {values[-1]}] ({len(values)})"

