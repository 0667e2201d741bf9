"""Answer-anchored positions (issue 14, item 3): the tokens that spell the grader's extracted answer.

The independent references: the tokenizer's own character offsets (return_offsets_mapping) for text
encoded in the test, and the decoded text of the recorded positions in a tiny-model run.
"""
import numpy as np
import pytest
import torch

from activation_eval.analysis.dataset import load_run_layer, load_run_positions, resolve_reduce
from activation_eval.eval.answering import answer_token_positions
from activation_eval.store import run_reader
from helpers import read_rows, run_main


def offsets_reference(tokenizer, text, extracted, n_prompt):
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    start = text.lower().rfind(extracted.lower())
    end = start + len(extracted)
    covering = [i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]
    return enc["input_ids"], [n_prompt + i for i in covering]


@pytest.mark.parametrize("text, extracted", [
    ("The answer is (B). B", "B"),                            # the LAST occurrence counts
    ("The capital of France is Paris.", "paris"),             # case-insensitive
    ("2 + 2 = 4. Answer: four 42", "42"),
    ("Hello world, the quick brown fox", "quick brown fox"),  # several tokens
])
def test_positions_match_the_tokenizers_offsets(tokenizer, text, extracted):
    ids, expected = offsets_reference(tokenizer, text, extracted, n_prompt=7)
    assert expected, "the reference found the answer"
    got = answer_token_positions(text, extracted, torch.tensor(ids), tokenizer, 7)
    assert got == expected
    pieces = tokenizer.decode([ids[p - 7] for p in got])
    assert extracted.lower() in pieces.lower()


@pytest.mark.parametrize("text, extracted, start", [
    ("The answer is B. Because it barks", "B", 14),           # not the "b" of "Because" or "barks"
    ("Paris. Parisians love it", "Paris", 0),                 # not the "Paris" inside "Parisians"
    ("Parisians", "Paris", 0),                                # no whole word: the occurrence inside one
])
def test_a_whole_word_occurrence_wins_over_a_later_one_inside_a_word(tokenizer, text, extracted, start):
    enc = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    end = start + len(extracted)
    expected = [7 + i for i, (s, e) in enumerate(enc["offset_mapping"]) if s < end and e > start]
    assert answer_token_positions(text, extracted, torch.tensor(enc["input_ids"]), tokenizer, 7) == expected


def test_leading_whitespace_and_missing_answers(tokenizer):
    ids = tokenizer("  is Paris", add_special_tokens=False)["input_ids"]
    response = tokenizer.decode(ids, skip_special_tokens=True).strip()          # as records store it
    got = answer_token_positions(response, "Paris", ids, tokenizer, 3)
    assert tokenizer.decode([ids[p - 3] for p in got]).strip() == "Paris"
    assert answer_token_positions(response, "London", ids, tokenizer, 3) == []
    assert answer_token_positions(response, None, ids, tokenizer, 3) == []
    assert answer_token_positions("", "x", [], tokenizer, 3) == []


def decode(tokenizer, ids):
    return tokenizer.decode(ids, skip_special_tokens=True).lower()


BENCHMARK = [  # text, number and choice rows: each grader extracts its answer differently
    *({"id": f"t{i}", "question": q, "answer": "Paris", "category": "text"}
      for i, q in enumerate(["What is the capital of France?", "Name a city.", "Say hello.", "Which fox?"])),
    *({"id": f"n{i}", "question": q, "answer": "4", "category": "number"}
      for i, q in enumerate(["What is two plus two?", "2 + 2 =", "Count to 4.", "How many legs has a dog?"])),
    *({"id": f"c{i}", "question": q, "answer": "B", "choices": ["A cat", "A dog", "A fox"], "category": "choice"}
      for i, q in enumerate(["Which barks?", "Which is loyal?", "Pick one.", "Which fetches?"])),
]


@pytest.fixture(scope="module")
def runs(tiny_dir, tmp_path_factory):
    import json
    root = tmp_path_factory.mktemp("answer-runs")
    bench = root / "bench.jsonl"
    bench.write_text("".join(json.dumps(r) + "\n" for r in BENCHMARK))
    common = ["--model", tiny_dir, "--benchmark", bench, "--batch_size", 4, "--max_new_tokens", 8,
              "--capture_activations", "--layers", "0,-1,final_norm"]
    assert run_main(*common, "--positions", "all", "--output_dir", root / "all") == 0
    assert run_main(*common, "--positions", "last_prompt", "--output_dir", root / "last") == 0
    return root


def test_run_records_answer_positions_that_spell_the_extracted_answer(runs, tokenizer):
    rows = read_rows(runs / "all")
    found = 0
    for row in rows:
        rec = run_reader.load_activations(runs / "all" / row["activation_file"])
        assert rec["answer_positions"] == row["answer_positions"]
        positions, P = row["answer_positions"], row["num_prompt_tokens"]
        if not positions:
            assert row["extracted"] is None or row["extracted"].lower() not in row["response"].lower()
            continue
        found += 1
        out = rec["output_ids"].tolist()
        idx = [p - P for p in positions]
        assert idx == list(range(idx[0], idx[-1] + 1)) and 0 <= idx[0] and idx[-1] < len(out)
        extracted = row["extracted"].lower()
        assert extracted in decode(tokenizer, out[idx[0]:idx[-1] + 1])
        # minimal: without its first or last token the span no longer holds the whole answer
        if len(idx) > 1:
            assert extracted not in decode(tokenizer, out[idx[0] + 1:idx[-1] + 1])
            assert extracted not in decode(tokenizer, out[idx[0]:idx[-1]])
        # the last occurrence: the text after the span does not contain the answer again
        assert extracted not in decode(tokenizer, out[idx[-1] + 1:])
    assert found >= 3, "the tiny model's responses contain their extracted answers"


def test_answer_reductions_pick_the_answer_rows(runs):
    run = runs / "all"
    mats, used, info = load_run_positions(run, ["layer_2"], ["answer_first", "answer_mean", "answer_last", "last_prompt"])
    X_first, used_first = load_run_layer(run, "layer_2", reduce="answer_first")
    assert [r["id"] for r in used] == [r["id"] for r in used_first] and np.array_equal(X_first, mats["answer_first"]["layer_2"])
    assert len(used) == len(read_rows(run)) and info["left_out"] == []     # every answer has >= 2 tokens here
    spans = 0
    for i, row in enumerate(used):
        rec = run_reader.load_activations(run / row["activation_file"])
        acts, kept = rec["activations"]["layer_2"], list(rec["positions_kept"])
        P = row["num_prompt_tokens"]
        assert kept == list(range(P + row["num_generated_tokens"] - 1))
        rows = [p for p in row["answer_positions"] if p in kept]   # the last token has no activation
        if not rows:            # no extracted answer in the response: the first generated token
            assert {info["sources"][k][i] for k in info["sources"]} == {"fallback"}
            for k in ("answer_first", "answer_mean", "answer_last"):
                np.testing.assert_array_equal(mats[k]["layer_2"][i], acts[P].numpy())
            continue
        spans += 1
        assert row["answer_positions"][0] in kept and {info["sources"][k][i] for k in info["sources"]} == {"answer_span"}
        np.testing.assert_array_equal(mats["answer_first"]["layer_2"][i], acts[row["answer_positions"][0]].numpy())
        np.testing.assert_array_equal(mats["answer_last"]["layer_2"][i], acts[rows[-1]].numpy())
        np.testing.assert_allclose(mats["answer_mean"]["layer_2"][i], acts[rows].double().mean(0).numpy(),
                                   rtol=1e-6, atol=1e-7)
    assert spans >= 3 and info["counts"]["answer_first"]["answer_span"] == spans
    assert not np.allclose(mats["last_prompt"]["layer_2"], X_first)


def test_answer_reductions_need_generated_positions(runs):
    assert all("answer_positions" not in r for r in read_rows(runs / "last"))
    with pytest.raises(ValueError, match="--positions answer, all or generated"):
        load_run_layer(runs / "last", "layer_0", reduce="answer_first")
    with pytest.raises(ValueError, match="reduce must be one of"):
        load_run_layer(runs / "last", "layer_0", reduce="answer_final")
    assert resolve_reduce(runs / "last", "auto")[0] == "last_prompt"
    assert resolve_reduce(runs / "all", "auto")[0] == "answer_first"
