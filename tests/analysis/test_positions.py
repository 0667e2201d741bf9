"""The answer reductions and positions of analysis/dataset.py (issue 21, item 3) on synthetic runs
whose every position's vector is known (position_runs.py): each reduction must return exactly the
planted rows of the positions the question's case says (the reference indexes the planted arrays
by absolute position, with the expected positions chosen by construction), the fallback to the
first generated token and the left-out questions must be counted, "auto" must follow what the run
captured, load_run_positions must equal separate load_run_layer calls while reading each record
file once, and a shard run must give what a file run of the same data gives, bit for bit.
"""
import collections

import numpy as np
import pytest
import torch
from position_runs import save_run, write_position_run
from sklearn.metrics import roc_auc_score

from activation_eval.analysis import shard_rows
from activation_eval.analysis.dataset import load_run_layer, load_run_layers, load_run_positions, resolve_reduce
from activation_eval.schema.names import HEATMAP_POSITIONS, parse_reduce
from activation_eval.store import run_reader
from activation_eval.store.errors import CorruptFileError

LAYERS = ("layer_0", "layer_1", "layer_2")
ANSWERS = ("answer_first", "answer_mean", "answer_last")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same 60 questions (every case) in a file run, a shard run (shuffled shards) and a mixed run."""
    root = tmp_path_factory.mktemp("position-runs")
    return {store: write_position_run(root / store, n=60, store=store, shuffle_shards=store == "shards")
            for store in ("files", "shards", "mixed")}


def reference(truth, qid, layer, reduce):
    """The planted vector(s) of question qid for `reduce`, from the truth's own arrays."""
    acts = truth.acts[qid][layer]
    row = next(r for r in truth.rows if r["id"] == qid)
    P, N = row["num_prompt_tokens"], row["num_generated_tokens"]
    if reduce in ANSWERS:
        _, positions = truth.expected[qid][reduce]
        return acts[positions].astype(np.float64).mean(0)
    return {"last_prompt": acts[P - 1], "mean_prompt": acts[:P].astype(np.float64).mean(0),
            "last": acts[P + N - 2], 3: acts[3]}[reduce]


@pytest.mark.parametrize("store", ["files", "shards", "mixed"])
@pytest.mark.parametrize("reduce", [*ANSWERS, "last_prompt", "mean_prompt", "last", 3])
def test_each_reduction_picks_the_planted_rows(runs, store, reduce):
    run, truth = runs[store]
    X, rows = load_run_layer(run, "layer_1", reduce=reduce)
    left_out = set(truth.left_out) if reduce in ANSWERS else set()
    assert [r["id"] for r in rows] == [r["id"] for r in truth.rows if r["id"] not in left_out]
    assert X.dtype == np.float32 and X.shape == (len(rows), 16)
    for x, row in zip(X, rows):
        want = reference(truth, row["id"], "layer_1", reduce)
        if reduce in ("answer_mean", "mean_prompt"):
            np.testing.assert_allclose(x, want, rtol=1e-6, atol=1e-6)
        else:
            assert np.array_equal(x, want), (row["id"], reduce)


def test_the_cases_cover_every_branch(runs):
    _, truth = runs["files"]
    sources = collections.Counter(e["answer_last"][0] for e in truth.expected.values() if e["answer_last"])
    assert sources["answer_span"] > 10 and sources["fallback"] > 10 and len(truth.left_out) > 3
    # an answer ending at the last generated token: answer_last is not the span's last token
    assert any(e["answer_last"] and e["answer_last"][0] == "answer_span" and e["answer_last"][1][0] != r["answer_positions"][-1]
               for r, e in zip(truth.rows, truth.expected.values()))


@pytest.mark.parametrize("store", ["files", "shards"])
def test_positions_count_the_answer_span_the_fallback_and_the_left_out(runs, store):
    run, truth = runs[store]
    mats, rows, info = load_run_positions(run, LAYERS)
    assert list(mats) == list(HEATMAP_POSITIONS) and set(info["counts"]) == set(info["sources"]) == set(ANSWERS)
    assert info["left_out"] == truth.left_out
    for reduce in ANSWERS:
        want = [truth.expected[r["id"]][reduce][0] for r in rows]
        assert info["sources"][reduce] == want
        assert info["counts"][reduce] == {"answer_span": want.count("answer_span"), "fallback": want.count("fallback"),
                                          "left_out": len(truth.left_out)}


@pytest.mark.parametrize("store", ["files", "shards", "mixed"])
def test_load_run_positions_equals_separate_load_run_layer_calls(runs, store):
    run, _ = runs[store]
    mats, rows, _ = load_run_positions(run, LAYERS, ["last", *ANSWERS, "last_prompt", "mean_prompt"])
    ids = [r["id"] for r in rows]
    for reduce, by_layer in mats.items():
        assert list(by_layer) == list(LAYERS)
        for layer in LAYERS:
            X, alone = load_run_layer(run, layer, reduce=reduce)
            keep = [i for i, r in enumerate(alone) if r["id"] in set(ids)]     # the common questions
            assert [alone[i]["id"] for i in keep] == ids
            assert np.array_equal(by_layer[layer], X[keep]), (reduce, layer)


def test_positions_read_each_record_file_once(runs, monkeypatch):
    run, truth = runs["files"]
    reads = collections.Counter()
    real = run_reader.load_record_file

    def counting(path, layers=None):
        reads[path] += 1
        return real(path, layers)

    monkeypatch.setattr(run_reader, "load_record_file", counting)
    assert resolve_reduce(run, "auto")[0] == "answer_first" and not reads       # rows only
    load_run_positions(run, LAYERS)
    assert len(reads) == len(truth.rows) and set(reads.values()) == {1}
    reads.clear()
    load_run_layers(run, LAYERS, reduce="auto")
    assert len(reads) == len(truth.rows) and set(reads.values()) == {1}


def test_positions_read_each_shard_layer_once(runs, monkeypatch):
    run, _ = runs["shards"]
    reads = collections.Counter()
    real = shard_rows.read_shard_layers

    def counting(paths, layer, workers=8):
        reads.update((p, layer) for p in paths)
        return real(paths, layer, workers)

    monkeypatch.setattr(shard_rows, "read_shard_layers", counting)
    load_run_positions(run, LAYERS)
    assert len(reads) == 9 * len(LAYERS) and set(reads.values()) == {1}      # 60 questions in shards of 7


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_a_shard_run_gives_what_a_file_run_of_the_same_data_gives(tmp_path, dtype):
    common = dict(n=45, seed=7, plant_at="answer_mean", dtype=dtype)
    files, _ = write_position_run(tmp_path / "f", store="files", **common)
    for store, shuffle in (("shards", True), ("shards", False), ("mixed", True)):
        other, _ = write_position_run(tmp_path / f"{store}-{shuffle}", store=store, shuffle_shards=shuffle, **common)
        mats_f, rows_f, info_f = load_run_positions(files, LAYERS, [*HEATMAP_POSITIONS, "mean_prompt", "last"])
        mats_s, rows_s, info_s = load_run_positions(other, LAYERS, [*HEATMAP_POSITIONS, "mean_prompt", "last"])
        assert [r["id"] for r in rows_f] == [r["id"] for r in rows_s] and info_f == info_s
        for reduce in mats_f:
            for layer in LAYERS:
                assert np.array_equal(mats_f[reduce][layer], mats_s[reduce][layer]), (store, shuffle, reduce, layer)


@pytest.mark.parametrize("store", ["files", "shards"])
def test_auto_follows_what_the_run_captured(tmp_path, store):
    generated, _ = write_position_run(tmp_path / "gen", n=18, positions="generated", store=store)
    prompt, truth = write_position_run(tmp_path / "last", n=18, positions="last_prompt", store=store)
    reduce, note = resolve_reduce(generated, "auto")
    assert reduce == "answer_first" and "answer_positions" in note
    X_auto, X_first = (load_run_layer(generated, "layer_0", r)[0] for r in ("auto", "answer_first"))
    assert np.array_equal(X_auto, X_first)
    reduce, note = resolve_reduce(prompt, "auto")
    assert reduce == "last_prompt" and "no results row holds answer_positions" in note
    X, rows = load_run_layer(prompt, "layer_0", "auto")
    assert [r["id"] for r in rows] == [r["id"] for r in truth.rows]
    assert all(np.array_equal(x, truth.acts[r["id"]]["layer_0"][r["num_prompt_tokens"] - 1]) for x, r in zip(X, rows))
    assert resolve_reduce(prompt, "mean_prompt") == ("mean_prompt", "reduce='mean_prompt' as asked")
    with pytest.raises(ValueError, match="--positions answer, all or generated"):       # no generated position kept
        load_run_layer(prompt, "layer_0", "answer_last")
    with pytest.raises(ValueError, match="no row for token position"):          # --positions generated
        load_run_positions(generated, ["layer_0"])
    with pytest.raises(ValueError, match="resolve 'auto' first"):
        load_run_positions(generated, ["layer_0"], ["auto"])


def test_parse_reduce_knows_auto_and_answer_last():
    assert [parse_reduce(r) for r in ("auto", "answer_last", np.int64(4))] == ["auto", "answer_last", 4]
    with pytest.raises(ValueError, match="answer_last, auto"):
        parse_reduce("answer_end")


@pytest.mark.parametrize("store", ["files", "shards"])
def test_malformed_answer_positions_are_named(tmp_path, store):
    import json
    run, _ = write_position_run(tmp_path / "run", n=9, store=store)
    path = tmp_path / "run" / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows[0]["answer_positions"] = ["5"]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CorruptFileError, match="'q0000' has answer_positions"):
        load_run_layer(run, "layer_0", "answer_first")
    assert load_run_layer(run, "layer_0", "last_prompt")[0].shape == (9, 16)     # only the answer reductions read them


def test_a_signal_planted_at_the_answer_is_there_and_not_at_the_last_prompt_token(tmp_path):
    """The helper the probe tests use: projected on the planted direction, correctness separates at
    the planted reduction (sklearn's AUROC) and is chance at the last prompt token."""
    run, truth = write_position_run(tmp_path / "run", n=200, plant_at="answer_first", plant_layers=["layer_2"])
    mats, rows, _ = load_run_positions(run, LAYERS)
    y = np.array([r["correct"] for r in rows])
    auroc = {(p, layer): roc_auc_score(y, mats[p][layer] @ truth.direction) for p in mats for layer in LAYERS}
    assert auroc["answer_first", "layer_2"] > 0.97
    # answer_mean and answer_last share the answer_first row when the span is 1 token or a fallback
    assert 0.6 < auroc["answer_last", "layer_2"] < auroc["answer_first", "layer_2"]
    for (position, layer), value in auroc.items():
        if position == "last_prompt" or layer != "layer_2":
            assert abs(value - 0.5) < 0.15, (position, layer)     # 178 questions: chance AUROC's sd is about 0.04


# (P, N, positions_kept, answer_positions, {reduction: kept row indices (None: left out)}): captures
# with token indices keep arbitrary positions, in any order, some twice
SPARSE = [
    (3, 7, [0, 1, 2, 3, 5, 5, 7], [4, 5, 6, 7],            # the first answer token (4) is not kept
     {"answer_first": [3], "answer_mean": [4, 6], "answer_last": [6]}),
    (3, 7, [0, 1, 2, 5], [4],                               # neither the answer nor P = 3 is kept
     {"answer_first": None, "answer_mean": None, "answer_last": None}),
    (3, 8, [2, 9, 6, 4, 4], [4, 5, 6],                      # position order, not record order
     {"answer_first": [3], "answer_mean": [3, 2], "answer_last": [2]}),
    (2, 5, [5, 2, 1], [],                                   # no span: P = 2 is row 1
     {"answer_first": [1], "answer_mean": [1], "answer_last": [1]}),
]


@pytest.mark.parametrize("store", ["files", "shards"])
def test_sparse_and_repeated_kept_positions(tmp_path, store):
    rng = np.random.default_rng(3)
    rows, records = [], []
    for i, (P, N, kept, span, _) in enumerate(SPARSE):
        acts = torch.from_numpy(rng.normal(size=(len(kept), 8)).astype(np.float32))
        rows.append({"id": f"s{i}", "correct": bool(i % 2), "num_prompt_tokens": P, "num_generated_tokens": N,
                     "answer_positions": span})
        records.append({"prompt": "p", "response": "r", "activations": {"layer_0": acts}, "positions_kept": kept,
                        "num_prompt_tokens": P, "num_generated_tokens": N, "grading": {"id": f"s{i}"}})
    run = save_run(tmp_path / "run", rows, records, store=store, shuffle_shards=True)
    for reduce in ANSWERS:
        X, used = load_run_layer(run, "layer_0", reduce)
        want = [(r, e[reduce]) for r, (*_, e) in zip(records, SPARSE) if e[reduce] is not None]
        assert len(used) == len(want) == 3
        for x, (record, picked) in zip(X, want):
            assert np.array_equal(x, record["activations"]["layer_0"][picked].double().mean(0).float().numpy())
    _, _, info = load_run_positions(run, ["layer_0"], ANSWERS)
    assert info["sources"]["answer_first"] == ["fallback", "answer_span", "fallback"]
    assert info["sources"]["answer_mean"] == ["answer_span", "answer_span", "fallback"] and info["left_out"] == ["s1"]
