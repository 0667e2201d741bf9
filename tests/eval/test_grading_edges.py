"""Generative grading edge cases seen on real data (issue 22 item 4) and intervals that never collapse
(item 5).

Ids: a row without an id gets one from the whole item (question and choices), so a dataset that
reuses question texts with other options (CyberSecEval: 52 texts over 200 rows) loads; a row without
choices keeps the id of earlier versions (sha1 of the question: --resume of older runs matches).
Choices that carry their letters are lettered once. An answer whose letter and text name different
choices is contradictory: incorrect, with a grader_note, counted in the summary. Intervals: the CLI
table, summary.json and the report give the same Wilson numbers (scipy's as the reference), flag
categories of fewer than 5 questions, and never print a zero-width interval.
"""
import hashlib
import json

import pytest
from scipy import stats

from activation_eval.accuracy import SMALL_N_NOTE
from activation_eval.analysis import report
from activation_eval.eval.benchmark import load_benchmark
from activation_eval.eval.grading import grade
from activation_eval.eval.prompts import format_question
from activation_eval.eval.rows import normalize_row, stable_id
from activation_eval.run.config import RunConfig
from activation_eval.run.summary import make_summary
from activation_eval.schema import answered_row
from activation_eval.schema.summary import format_summary


def _write(tmp_path, rows, name="b.jsonl"):
    path = tmp_path / name
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _wilson(k, n):
    ci = stats.binomtest(k, n).proportion_ci(method="wilson")
    return [ci.low, ci.high]


# ----------------------------------------------------------------------------- ids

def test_reused_question_texts_with_other_options_get_distinct_stable_ids(tmp_path):
    # 4 texts over 20 rows, each with its own options (as CyberSecEval's 52 texts over 200 rows)
    raw = [{"question": f"Which port does service {i % 4} use?", "choices": [str(i), str(i + 100), "none"],
            "answer": "A"} for i in range(20)]
    rows = load_benchmark(_write(tmp_path, raw))
    ids = [r["id"] for r in rows]
    assert len(set(ids)) == 20 and all(i.startswith("q-") and len(i) == 12 for i in ids)
    reordered = load_benchmark(_write(tmp_path, raw[::-1], "r.jsonl"))
    assert [r["id"] for r in reordered] == ids[::-1]                  # from the item, not its position
    item = json.dumps([raw[0]["question"], raw[0]["choices"]], ensure_ascii=False)
    assert ids[0] == "q-" + hashlib.sha1(item.encode()).hexdigest()[:10]


def test_rows_without_choices_keep_the_ids_of_earlier_versions_and_given_ids_are_kept(tmp_path):
    rows = load_benchmark(_write(tmp_path, [{"question": "  Capital of Peru? ", "answer": "Lima"},
                                            {"id": "mine", "question": "2+2?", "choices": ["3", "4"], "answer": "B"}]))
    assert rows[0]["id"] == "q-" + hashlib.sha1(b"Capital of Peru?").hexdigest()[:10] == stable_id("Capital of Peru?")
    assert rows[1]["id"] == "mine"


def test_the_same_item_twice_is_still_a_duplicate(tmp_path):
    from activation_eval.eval.errors import BenchmarkError
    row = {"question": "same", "choices": ["a", "b"], "answer": "A"}
    with pytest.raises(BenchmarkError, match="duplicate ids: 'q-.*question and its choices"):
        load_benchmark(_write(tmp_path, [row, row]))


# ----------------------------------------------------------------------------- lettered choices

@pytest.mark.parametrize("choices", [["A) 3", "B) 4", "C) 5"], ["A. 3", "B. 4", "C. 5"], ["(A) 3", "(B) 4", "(C) 5"],
                                     ["a: 3", "b: 4", "c: 5"]])
def test_choices_that_carry_their_letters_are_lettered_once(choices):
    for gold in ("B", choices[1], "4", 1):
        row = normalize_row({"question": "2 + 2 = ?", "choices": choices, "answer": gold})
        assert row["choices"] == ["3", "4", "5"] and row["answer"] == ["B"], gold
    prompt = format_question(row)
    assert "A. 3\nB. 4\nC. 5" in prompt and "A) " not in prompt and "A. A" not in prompt
    assert format_question({"question": "2 + 2 = ?", "choices": choices, "answer": "B"}).count("A.") == 1   # raw rows too
    assert grade("B) 4", row)["correct"] and not grade("A) 3", row)["correct"]


def test_a_single_letter_like_choice_is_text():
    row = normalize_row({"question": "Who?", "choices": ["A. Lincoln", "Washington"], "answer": "A. Lincoln"})
    assert row["choices"] == ["A. Lincoln", "Washington"] and row["answer"] == ["A"]
    assert "A. A. Lincoln\nB. Washington" in format_question(row)


# ----------------------------------------------------------------------------- contradictory answers

ROW = normalize_row({"id": "tri", "question": "How many sides does a triangle have?", "choices": ["3", "4", "5"],
                     "answer": "A", "category": "geometry"})


@pytest.mark.parametrize("response, letter, text", [("A. 4", "A", "B"), ("The answer is B: 3", "B", "A"),
                                                    ("(A) 5\nbecause 3 sides", "A", "C")])
def test_letter_and_text_that_disagree_are_incorrect_with_a_note_both_ways(response, letter, text):
    for gold in ("A", "B", "C"):                       # whichever is gold, the contradiction is never right
        verdict = grade(response, dict(ROW, answer=[gold]))
        assert verdict == {"extracted": letter, "correct": False, "grader": "choice",
                           "grader_note": f"letter {letter} but text of {text}"}


@pytest.mark.parametrize("response, correct", [("A. 3", True), ("A", True), ("The answer is (A) 3, not 4 or 5", True),
                                               ("A. 3 or 4", True), ("I first thought 4. The answer is A", True),
                                               ("B) 4", False)])
def test_consistent_answers_carry_no_note(response, correct):
    verdict = grade(response, ROW)
    assert verdict["correct"] is correct and "grader_note" not in verdict


def test_rows_keep_the_note_and_the_summary_counts_contradictions(tmp_path):
    answers = ["A. 4", "A. 3", "B"]
    rows = [answered_row(dict(ROW, id=f"q{i}"), "p", r, grade(r, ROW), 5, 3) for i, r in enumerate(answers)]
    assert rows[0]["grader_note"] == "letter A but text of B" and rows[0]["correct"] is False
    assert "grader_note" not in rows[1] and "grader_note" not in rows[2]
    summary = make_summary(RunConfig(output_dir=str(tmp_path / "o")), rows, 1.0, 3)
    assert summary["contradictory"] == 1 and summary["correct"] == 1
    assert "contradictory 1 answer(s) whose letter and text name different choices" in format_summary(summary)


# ----------------------------------------------------------------------------- intervals

def _same_numbers(summary, rows, tmp_path):
    """The report (of a folder without summary.json: built from the rows) shows the CLI summary's
    figures: the same overall and per-category intervals and small-n marks."""
    page = report._summary_section(str(tmp_path / "no-summary"), rows)
    low, high = summary["accuracy_ci95"]
    assert f"{summary['accuracy']:.1%} [{low:.1%}, {high:.1%}]" in page
    for name, cell in summary["per_category"].items():
        n = f"{cell['n']}{'*' if cell['small_n'] else ''}"
        assert f"<td>{name}</td><td>{n}</td>" in page and f"[{cell['ci95'][0]:.1%}, {cell['ci95'][1]:.1%}]" in page
    return page


def test_zero_of_twelve_is_never_zero_width_in_cli_summary_and_report(tmp_path):
    rows = [{"id": f"q{i}", "category": "x", "correct": False} for i in range(12)]
    summary = make_summary(RunConfig(output_dir=str(tmp_path / "o")), rows, 1.0, 12)
    assert summary["accuracy_ci95"] == pytest.approx(_wilson(0, 12), abs=1e-12)
    assert summary["per_category"]["x"]["small_n"] is False
    _same_numbers(summary, rows, tmp_path)
    text = format_summary(summary)
    assert "0.0%-0.0%" not in text and "0.0%-24.2%" in text and SMALL_N_NOTE not in text


def test_categories_of_one_question_have_wide_intervals_and_are_flagged(tmp_path):
    rows = ([{"id": "a", "category": "alone", "correct": True}, {"id": "b", "category": "wrong", "correct": False}]
            + [{"id": f"q{i}", "category": "many", "correct": i % 2 == 0} for i in range(6)])
    summary = make_summary(RunConfig(output_dir=str(tmp_path / "o")), rows, 1.0, 8)
    cats = summary["per_category"]
    assert cats["alone"]["ci95"] == pytest.approx(_wilson(1, 1), abs=1e-12) and cats["alone"]["ci95"][0] < 0.25
    assert cats["wrong"]["ci95"] == pytest.approx(_wilson(0, 1), abs=1e-12) and cats["wrong"]["ci95"][1] > 0.75
    assert (cats["alone"]["small_n"], cats["wrong"]["small_n"], cats["many"]["small_n"]) == (True, True, False)
    _same_numbers(summary, rows, tmp_path)
    text = format_summary(summary)
    lines = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert lines["alone"].split()[1] == "1*" and lines["many"].split()[1] == "6" and SMALL_N_NOTE in text
    assert "20.7%-100.0%" in lines["alone"] and "0.0%-79.3%" in lines["wrong"]
    page = report._summary_section(str(tmp_path / "none"), rows)
    assert "<td>1*</td>" in page and "<td>6</td>" in page and "fewer than 5 questions" in page


def test_clustered_runs_of_three_questions_never_collapse(tmp_path):
    config = RunConfig(output_dir=str(tmp_path / "o"), temperature=0.7, num_samples=4)
    for pattern in ([True] * 3, [False] * 3, [True, False, True]):
        rows = [{"id": f"q{i}", "sample": k, "category": "c", "correct": pattern[i]} for i in range(3) for k in range(4)]
        summary = make_summary(config, rows, 1.0, 12)
        low, high = summary["accuracy_ci95"]
        assert high - low > 0.3, pattern                               # 3 questions' worth of evidence, not 12
        if len(set(pattern)) == 1:                                     # every answer agrees: the 3 questions alone
            assert summary["accuracy_ci95"] == pytest.approx(_wilson(sum(pattern), 3), abs=1e-12)
        assert summary["per_category"]["c"]["small_n"] is True and summary["per_category"]["c"]["questions"] == 3
        assert "clustered by question: 3 questions" in _same_numbers(summary, rows, tmp_path)
        assert "0.0%-0.0%" not in format_summary(summary) and "100.0%-100.0%" not in format_summary(summary)


def test_acc_norm_has_the_same_wilson_interval_in_cli_summary_and_report(tmp_path):
    rows = [{"id": f"q{i}", "category": "c" if i < 3 else "d", "correct": i % 3 == 0, "correct_norm": i % 2 == 0,
             "correct_bytes": i % 2 == 0, "choice_logprobs": [-1.0, -2.0]} for i in range(10)]
    config = RunConfig(output_dir=str(tmp_path / "o"), mc_scoring="loglikelihood")
    summary = make_summary(config, rows, 1.0, 10)
    norm, byte = summary["log_likelihood"]["norm"], summary["log_likelihood"]["bytes"]
    assert norm["accuracy"] == 0.5 and norm["ci95"] == pytest.approx(_wilson(5, 10), abs=1e-12)
    assert byte["ci95"] == norm["ci95"]
    assert summary["per_category"]["c"]["norm"]["ci95"] == pytest.approx(_wilson(2, 3), abs=1e-12)
    page = report._summary_section(str(tmp_path / "no-summary"), rows)
    assert f"acc_norm 50.0% [{norm['ci95'][0]:.1%}, {norm['ci95'][1]:.1%}]" in page
    d = summary["per_category"]["d"]["norm"]["ci95"]
    assert f"[{d[0]:.1%}, {d[1]:.1%}]" in page
    low, high = norm["ci95"]
    text = format_summary(summary)
    assert f"acc_norm   50.0% ± 15.8% (SE), 95% CI {low:.1%}-{high:.1%}" in text
    c = summary["per_category"]["c"]["norm"]["ci95"]
    assert f"{c[0]:.1%}-{c[1]:.1%}" in next(line for line in text.splitlines() if line.startswith("c "))
