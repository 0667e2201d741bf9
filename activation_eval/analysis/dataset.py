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
record becomes one vector) are named in activation_eval/schema/names.py, their one owner; which rows of
a record each one reads is record_rows.py's, and a shard run's reading shard_rows.py's.

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
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..schema import ANSWER_POSITIONS, ID
from ..schema.names import ANSWER_REDUCTIONS, AUTO, HEATMAP_POSITIONS, parse_reduce
from ..store.bounded_json import gc_paused
from ..store.run_folder import RESULTS_FILE
from ..store.run_reader import RunReader
from .record_rows import ANSWER_SPAN, FALLBACK, record_vectors
from .shard_rows import shard_run_layers

log = logging.getLogger(__name__)


def load_run_layer(run_dir: str | os.PathLike[str], layer: str, reduce: str | int = "last_prompt",
                   progress: bool = False) -> tuple[np.ndarray, list[dict[str, Any]]]:
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


def load_run_layers(run_dir: str | os.PathLike[str], layers: Sequence[str], reduce: str | int = "last_prompt",
                    progress: bool = False) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
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


def load_run_positions(run_dir: str | os.PathLike[str], layers: Sequence[str], positions: Sequence[str | int] = HEATMAP_POSITIONS,
                       progress: bool = False) -> tuple[dict[Any, dict[str, np.ndarray]], list[dict[str, Any]], dict[str, Any]]:
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


def resolve_reduce(run_dir: str | os.PathLike[str], reduce: object) -> tuple[str | int, str]:
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


def _auto(rows: Sequence[Mapping[str, Any]]) -> tuple[str, str]:
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
        read = shard_run_layers(reader, pairs, layers, reduces, progress)
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
        picked = record_vectors(record, row, layers, reduces, location.path)
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
