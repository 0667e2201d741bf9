"""Synthetic run folders whose activation at every token position is known, for the answer
reductions (analysis/dataset.py) and probes at the answer.

Public names:
    write_position_run(root, n=120, layers=("layer_0", "layer_1", "layer_2"), plant_at="answer_first", ...)
                      -> (run_dir, PositionRun)
    PositionRun       what was written: rows, acts, expected, left_out, direction
    save_run(root, rows, records, store="files", ...)   write given rows and records as a run folder
    CASES             the kinds of question, and DEFAULT_CASES, the mix used by default

Example (a test module in tests/analysis imports it as a sibling, like helpers.py):
    from position_runs import write_position_run
    run, truth = write_position_run(tmp_path / "run", n=120, plant_at="answer_first")
    # the probe must find `correct` at reduce="answer_first" and not at "last_prompt"

Each question i has P prompt and N generated tokens; its record keeps the positions --positions
would keep (a real run's rule: 0 .. P+N-2 for "all"; the last generated token has no activation),
and its row at position p holds truth.acts[id][layer][p]: independent standard normal vectors,
plus, where planted, +strength (correct) or -strength (incorrect) along truth.direction. The
question's answer span (its row's answer_positions) and so the rows each answer reduction must
read follow from its case, chosen here by construction (truth.expected), not by dataset.py's logic:
    "span"             a 1-3 token answer inside the generated tokens, all kept
    "span_at_end"      a 2-3 token answer ending at the last generated token (which has no row):
                       answer_last is the token before it, answer_mean leaves it out
    "span_last_token"  a 1-token answer that is the last generated token: no answer row, so the
                       answer reductions fall back to the first generated token (position P)
    "no_span"          answer_positions [] (no extracted answer in the response): the fallback
    "missing"          the row has no answer_positions key (as before answer positions existed): the fallback
    "one_token"        N = 1: no generated token has a row, so no answer row and no fallback (and,
                       as in a real run, no answer_positions): left out of every answer reduction
Correctness is drawn with probability 1/2, independently of the category, the case and the lengths
(so no control of the probe can find it); only the planted rows carry it.
"""
import dataclasses
import json
import os

import numpy as np
import torch

from activation_eval.store.atomic import write_text_atomic
from activation_eval.store.records import save_activations
from activation_eval.store.shard_writer import write_shard

CASES = ("span", "span_at_end", "span_last_token", "no_span", "missing", "one_token")
DEFAULT_CASES = ("span", "span", "span", "span", "span_at_end", "span_last_token", "no_span", "missing", "one_token")
CATEGORIES = ("geography", "arithmetic", "science", "trivia")
ANSWER_REDUCTIONS = ("answer_first", "answer_mean", "answer_last")


@dataclasses.dataclass
class PositionRun:
    rows: list          # the results rows written, in results.jsonl order
    acts: dict          # {id: {layer: float32 [P + N - 1, hidden]}}: the row at absolute position p is acts[..][p]
    expected: dict      # {id: {reduction: ("answer_span" | "fallback", [absolute positions]) or None (left out)}}
    left_out: list      # ids without a row for the answer reductions (given generated positions are kept)
    direction: np.ndarray   # float32 [hidden], unit norm: the planted direction
    positions: str      # the --positions the records mimic


def write_position_run(root, n=120, layers=("layer_0", "layer_1", "layer_2"), plant_at="answer_first", *,
                       hidden=16, strength=3.0, plant_layers=None, seed=0, cases=DEFAULT_CASES,
                       positions="all", store="files", fmt="mixed", shard_questions=7, shuffle_shards=False,
                       dtype=torch.float32):
    """Write a run folder of `n` questions at `root` -> (run_dir, PositionRun).

    layers          the record's layer names
    plant_at        None (no signal), or a reduction whose rows get the signal: "answer_first",
                    "answer_last", "answer_mean" (every row that reduction reads, the fallback row
                    included), "last_prompt" (position P - 1); left-out questions get none
    hidden          width of every vector
    strength        +-strength along `direction` by correctness, added to the planted rows
    plant_layers    layer names that carry the signal (default: all of `layers`)
    seed            seeds everything (lengths, spans, correctness, vectors); the same seed and
                    arguments give the same questions and vectors whatever `store`/`fmt`
    cases           the case of question i is cases[i % len(cases)] (CASES)
    positions       the --positions the records mimic: "all", "generated" or "last_prompt"
                    (answer_positions are written only when a generated position is kept)
    store           "files" (one record file per question), "shards" (activations/units/*.safetensors,
                    `shard_questions` questions each), or "mixed" (even questions in shards, odd in files)
    fmt             record files: "pkl", "safetensors" or "mixed" (alternating)
    shuffle_shards  shard rows in a shuffled order (a results row's record is then not at its own index)
    dtype           of the saved activations (truth.acts holds the float32 of the saved values)
    """
    if plant_at not in (None, "last_prompt", *ANSWER_REDUCTIONS):
        raise ValueError(f"plant_at must be None, last_prompt or an answer reduction, got {plant_at!r}")
    root = os.fspath(root)
    os.makedirs(os.path.join(root, "activations", "units"), exist_ok=True)
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=hidden)
    direction = (direction / np.linalg.norm(direction)).astype(np.float32)
    plant_layers = list(layers) if plant_layers is None else list(plant_layers)
    rows, records, truth_acts, expected, left_out = [], [], {}, {}, []
    for i in range(n):
        case = cases[i % len(cases)]
        qid = f"q{i:04d}"
        P = int(rng.integers(4, 9))
        N, span, expect = _case(case, P, rng)
        correct = bool(rng.random() < 0.5)
        acts = {name: rng.normal(size=(P + N - 1, hidden)).astype(np.float32) for name in layers}
        if plant_at == "last_prompt":
            planted = [P - 1]
        else:
            planted = expect[plant_at][1] if plant_at in expect else []
        for name in plant_layers:
            acts[name][planted] += (strength if correct else -strength) * direction
        kept = _kept(positions, P, N)
        for name in layers:                 # the values the record will hold, as float32
            acts[name] = torch.from_numpy(acts[name]).to(dtype).float().numpy()
        truth_acts[qid] = acts
        expected[qid] = {r: expect.get(r) for r in ANSWER_REDUCTIONS}
        if expect.get("answer_first") is None:
            left_out.append(qid)
        generated_kept = any(p >= P for p in kept)
        row = {"id": qid, "category": CATEGORIES[i % len(CATEGORIES)], "question": f"Question {i} about a thing?",
               "prompt": f"Question {i} about a thing?", "response": "r", "answer": ["x"], "extracted": "x",
               "correct": correct, "grader": "exact", "num_prompt_tokens": P, "num_generated_tokens": N}
        if generated_kept and case != "missing":
            row["answer_positions"] = span
        rows.append(row)
        records.append({
            "prompt": row["prompt"], "response": "r", "model": "synthetic", "timestamp": "t",
            "input_ids": torch.arange(P), "output_ids": torch.arange(N),
            "activations": {name: torch.from_numpy(acts[name][kept]).to(dtype) for name in layers},
            "layer_names": list(layers), "positions": positions, "positions_kept": kept,
            "num_prompt_tokens": P, "num_generated_tokens": N, "dtype": str(dtype).replace("torch.", ""),
            "grading": {"id": qid, "correct": correct},
            **({"answer_positions": span} if "answer_positions" in row else {})})
    save_run(root, rows, records, store, fmt, shard_questions, shuffle_shards, rng, positions)
    return root, PositionRun(rows, truth_acts, expected, left_out if positions != "last_prompt" else [r["id"] for r in rows],
                             direction, positions)


def _case(case, P, rng):
    """(N, answer_positions, {reduction: (source, [positions])}) of one question; a reduction
    missing from the dict: the question is left out."""
    if case == "one_token":
        return 1, [P], {}
    N = int(rng.integers(4, 10))
    last = P + N - 1                       # the last generated token: it has no row
    fallback = ("fallback", [P])
    if case == "span":
        length = int(rng.integers(1, 4))
        start = int(rng.integers(P, last - length + 1))    # the span ends at last - 1 at the latest
        span = list(range(start, start + length))
        return N, span, {"answer_first": ("answer_span", [start]), "answer_mean": ("answer_span", span),
                         "answer_last": ("answer_span", [span[-1]])}
    if case == "span_at_end":
        length = int(rng.integers(2, 4))
        span = list(range(last - length + 1, last + 1))
        return N, span, {"answer_first": ("answer_span", [span[0]]), "answer_mean": ("answer_span", span[:-1]),
                         "answer_last": ("answer_span", [last - 1])}
    if case in ("span_last_token", "no_span", "missing"):
        span = [last] if case == "span_last_token" else []
        return N, span, dict.fromkeys(ANSWER_REDUCTIONS, fallback)
    raise ValueError(f"unknown case {case!r}; one of {CASES}")


def _kept(positions, P, N):
    covered = P + N - 1
    return {"all": list(range(covered)), "generated": list(range(P, covered)), "last_prompt": [P - 1]}[positions]


def save_run(root, rows, records, store="files", fmt="mixed", shard_questions=7, shuffle_shards=False, rng=None,
             positions="all"):
    """Write `records` (one per results row, same order) under root/activations as `store` says
    (write_position_run's arguments), set each row's record fields, and write results.jsonl and
    run_config.json. `rng`: a numpy Generator for shuffle_shards."""
    root = os.fspath(root)
    os.makedirs(os.path.join(root, "activations", "units"), exist_ok=True)
    rng = np.random.default_rng(0) if rng is None else rng
    in_shards = [store == "shards" or (store == "mixed" and i % 2 == 0) for i in range(len(rows))]
    if store not in ("files", "shards", "mixed"):
        raise ValueError(f"store must be files, shards or mixed, got {store!r}")
    for i, (row, record) in enumerate(zip(rows, records)):
        if not in_shards[i]:
            ext = fmt if fmt != "mixed" else ("safetensors" if i % 2 else "pkl")
            rel = f"activations/{row['id']}.{ext}"
            save_activations(record, os.path.join(root, rel))
            row["activation_file"] = rel
    sharded = [i for i in range(len(rows)) if in_shards[i]]
    for k in range(0, len(sharded), shard_questions):
        members = sharded[k:k + shard_questions]
        if shuffle_shards:
            members = [members[j] for j in rng.permutation(len(members))]
        rel = f"activations/units/shard{k // shard_questions:03d}.safetensors"
        write_shard(os.path.join(root, rel), [rows[i]["id"] for i in members], [records[i] for i in members])
        for shard_row, i in enumerate(members):
            rows[i]["activation_shard"], rows[i]["activation_row"] = rel, shard_row
    write_text_atomic(os.path.join(root, "results.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    write_text_atomic(os.path.join(root, "run_config.json"), json.dumps({
        "model": "synthetic", "capture_activations": True, "positions": positions,
        "activation_store": "files" if store == "files" else "shards"}))
    return root
