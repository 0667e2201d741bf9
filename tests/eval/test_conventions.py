"""The field's answer conventions (Hugging Face / lm-evaluation-harness): MMLU, ARC, GSM8K and
multi-answer rows, each graded against the gold the dataset means and named in the grader field."""
import json

import pytest

from activation_eval.eval.benchmark import BenchmarkError, load_benchmark, normalize_row, read_benchmark
from activation_eval.eval.gold import GoldError, resolve_gold
from activation_eval.eval.grading import grade


def jsonl(tmp_path, rows, name="b.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# An MMLU row as datasets gives it (cais/mmlu): integer answer = 0-based index, so 1 is B = "2".
MMLU = {"question": "What is 1 + 1?", "subject": "elementary_mathematics", "choices": ["1", "2", "3", "4"], "answer": 1}
# ARC rows (allenai/ai2_arc): choices {"text", "label"} and answerKey, sometimes numeric labels.
ARC = {"id": "Mercury_1", "question": "Which gas do plants take in?", "answerKey": "C",
       "choices": {"text": ["oxygen", "nitrogen", "carbon dioxide", "helium"], "label": ["A", "B", "C", "D"]}}
ARC_NUMERIC = {"id": "NYSEDREGENTS_2", "question": "Which is a mammal?", "answerKey": "2",
               "choices": {"text": ["shark", "whale", "trout", "squid"], "label": ["1", "2", "3", "4"]}}
# GSM8K (openai/gsm8k): the solution, ending with "#### N".
GSM8K = {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
                     "in May. How many clips did Natalia sell altogether in April and May?",
         "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
                   "altogether in April and May.\n#### 72"}


def test_mmlu_integer_answer_is_a_zero_based_index():
    row = normalize_row(MMLU)
    assert row["answer"] == ["B"] and row["grader"] == "choice:index"
    assert grade("B", row)["correct"] is True
    assert grade("A", row)["correct"] is False            # "1" is choice A: the old bug graded this correct
    assert grade("2", row) == {"extracted": "B", "correct": True, "grader": "choice:index"}   # the text of B
    assert grade("The answer is 1", row) == {"extracted": "A", "correct": False, "grader": "choice:index"}
    assert grade("B", dict(MMLU))["grader"] == "choice:index"   # a raw row is graded the same way
    assert normalize_row(dict(MMLU, answer=0))["answer"] == ["A"]


def test_mmlu_index_out_of_range_is_refused():
    with pytest.raises(GoldError, match="0-based index.*out of range 0-3"):
        normalize_row(dict(MMLU, answer=4))


def test_arc_labels_and_answer_key():
    fields = {"answer": "answerKey"}
    row = normalize_row(ARC, fields)
    assert row["choices"] == ARC["choices"]["text"] and row["answer"] == ["C"] and row["grader"] == "choice:label"
    assert grade("C", row)["correct"] and not grade("A", row)["correct"]
    assert grade("carbon dioxide", row)["correct"]
    numeric = normalize_row(ARC_NUMERIC, fields)
    assert numeric["answer"] == ["B"] and numeric["grader"] == "choice:label"      # label "2" = second choice
    assert grade("B", numeric)["correct"] and grade("whale", numeric)["correct"]
    assert not grade("A", numeric)["correct"]
    with pytest.raises(GoldError, match="not one of the choice labels"):
        normalize_row(dict(ARC, answerKey="E"), fields)


def test_numeric_keys_without_labels():
    row = normalize_row({"question": "q", "choices": ["red", "green", "blue"], "answer": "3"})
    assert row["answer"] == ["C"] and row["grader"] == "choice:label"
    # "2" is the text of choice A and the key of choice B: refused, never guessed
    with pytest.raises(GoldError, match="ambiguous"):
        normalize_row({"question": "q", "choices": ["2", "5", "7"], "answer": "2"})
    # the text of choice B that is also key 2: the same choice, plain "choice"
    assert normalize_row({"question": "q", "choices": ["1", "2", "3"], "answer": "2"})["answer"] == ["B"]


def test_multi_answer_must_be_all_and_only():
    row = normalize_row({"question": "Which are primes?", "choices": ["2", "3", "4", "6", "7"],
                         "answer": ["A", "B", "E"]})
    assert row["answer"] == ["A", "B", "E"] and row["grader"] == "choice_all"

    def verdict(text):
        return grade(text, row)["correct"]
    assert verdict("A, B, E") and verdict("The answers are A, B and E.") and verdict("Answer: E, A, B")
    assert verdict("(A) (B) (E)")
    assert not verdict("A")                     # the real-benchmark bug: one of three counted as correct
    assert not verdict("A, B")
    assert not verdict("A, B, C, E")            # an extra letter is wrong too
    assert not verdict("")
    assert grade("The answers are A, B, and E", row)["extracted"] == "A,B,E"
    same = normalize_row({"question": "q", "choices": ["2", "3", "4", "6", "7"], "answer": "A, B, E"})
    assert same["answer"] == ["A", "B", "E"] and same["grader"] == "choice_all"
    assert normalize_row(dict(MMLU, answer=[0, 3]))["grader"] == "choice_all:index"


def test_list_on_text_row_is_aliases():
    row = normalize_row({"question": "Where is the Eiffel Tower?", "answer": ["Paris", "Paris, France"]})
    assert row["grader"] == "text"
    assert grade("It is in Paris.", row)["correct"] and grade("Paris, France", row)["correct"]
    assert not grade("Lyon", row)["correct"]


def test_gsm8k_gold_is_the_number_after_hashes():
    row = normalize_row(GSM8K)
    assert row["answer"] == ["72"] and row["grader"] == "number:gsm8k"
    assert grade("She sold 48 + 24 = 72 clips.", row) == {"extracted": "72", "correct": True, "grader": "number:gsm8k"}
    assert not grade("24", row)["correct"]
    assert resolve_gold("#### 1,234")[0] == ["1234"] and resolve_gold("x #### -5")[0] == ["-5"]


def test_unusable_row_is_skipped_with_its_id_and_the_rest_is_read(tmp_path, caplog):
    rows = [{"id": f"r{i}", "question": f"Question {i}?", "choices": ["a", "b", "c", "d", "e"], "answer": "B"}
            for i in range(30)]
    rows[3]["answer"] = "F"                      # five options, gold F: the blocking row
    path = jsonl(tmp_path, rows)
    bench = read_benchmark(path)
    assert [r["id"] for r in bench.rows][:4] == ["r0", "r1", "r2", "r4"] and len(bench.rows) == 29
    assert bench.skipped == [{"id": "r3", "where": "line 4", "reason": bench.skipped[0]["reason"]}]
    assert "neither a letter A-E" in bench.skipped[0]["reason"]
    assert "r3" in caplog.text and "--strict" in caplog.text
    with pytest.raises(BenchmarkError, match=r"line 4: answer 'F' is neither a letter A-E.*row id r3"):
        read_benchmark(path, strict=True)


def test_no_usable_rows_is_an_error(tmp_path):
    with pytest.raises(BenchmarkError, match="no usable rows: all 2 were skipped"):
        load_benchmark(jsonl(tmp_path, [{"question": "a", "answer": ""}, {"question": "b"}]))
