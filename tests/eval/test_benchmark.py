"""Tests for eval/benchmark.py, prompts.py and grading.py: loading, prompts, graders, and the built-in
benchmark (no models). New formats, answer conventions and linearity: test_formats.py,
test_conventions.py, test_grader_linearity.py."""
import json
import os

import pytest

from activation_eval.eval import benchmark
from activation_eval.eval.benchmark import (
    DEFAULT_BENCHMARK,
    GRADERS,
    BenchmarkError,
    format_question,
    grade,
    grade_choice,
    grade_number,
    grade_text,
    grader_name,
    load_benchmark,
)
from helpers import TESTS_DIR

PARIS = {"id": "t", "question": "What is the capital of France?", "answer": ["Paris"],
         "choices": None, "category": "geography"}
USA = {"id": "u", "question": "Where is the Statue of Liberty?", "answer": ["United States", "USA"],
       "choices": None, "category": None}
MC = {"id": "m", "question": "Which is a mammal?", "answer": ["B"],
      "choices": ["Shark", "Dolphin", "Trout", "Octopus"], "category": "multiple_choice"}
NUM42 = {"id": "n", "question": "What is 6 times 7?", "answer": ["42"], "choices": None,
         "category": "arithmetic"}


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(rows):
    return "".join(json.dumps(r) + "\n" for r in rows)


# ----------------------------------------------------------------------------- grade_text

@pytest.mark.parametrize("response", [
    "Paris",
    "paris.",
    "The capital of France is Paris.",
    "  PARIS!!  ",
    "It's Paris, of course.",
    "Paris, Texas",                      # documented choice: qualifiers are not parsed
    "Pâris",                             # accents are dropped
])
def test_grade_text_accepts(response):
    extracted, correct = grade_text(response, PARIS)
    assert correct is True
    assert extracted == "Paris"


@pytest.mark.parametrize("response", [
    "", "   ", None, "Parisian", "Pari", "Comparison", "London", "The capital is Lyon.", "P a r i s",
])
def test_grade_text_rejects_near_misses(response):
    assert grade_text(response, PARIS)[1] is False


def test_grade_text_extracted_is_first_line_when_wrong():
    assert grade_text("\n  London.  \nmore text", PARIS) == ("London.", False)
    assert grade_text("", PARIS) == (None, False)


def test_grade_text_aliases_and_articles():
    assert grade_text("It is in the United States.", USA) == ("United States", True)
    assert grade_text("usa", USA) == ("USA", True)
    assert grade_text("The U.S.A.", USA)[1] is False       # dots split letters; not an alias here
    assert grade_text("The States", USA)[1] is False        # part of a phrase is not the phrase
    row = {"answer": ["The Moon"]}
    assert grade_text("moon", row)[1] is True              # articles dropped on both sides
    assert grade_text("moonlight", row)[1] is False


def test_grade_text_answer_that_normalizes_to_nothing():
    row = {"answer": ["The"]}                              # only an article: exact match only
    assert grade_text("Paris", row)[1] is False
    assert grade_text("the", row) == ("The", True)
    assert grade_choice("Paris", {"answer": ["B"], "choices": ["An", "Paris"]}) == ("B", True)


def test_grade_text_number_words_equal_digits():
    row = {"answer": ["seven"]}
    assert grade_text("There are 7 of them.", row)[1] is True
    assert grade_text("Twenty-one", {"answer": ["21"]})[1] is True
    assert grade_text("seventeen", row)[1] is False


def test_grade_text_multiword_phrase_must_be_contiguous():
    row = {"answer": ["carbon dioxide"]}
    assert grade_text("Plants absorb carbon dioxide (CO2).", row)[1] is True
    assert grade_text("carbon and dioxide", row)[1] is False


# ----------------------------------------------------------------------------- grade_choice

@pytest.mark.parametrize("response", [
    "B", "b", "(B)", "B.", "**B**",
    "The answer is (B).", "The answer is B", "Answer: b", "answer: B because dolphins breathe air",
    "The correct option is B.", "Correct answer: (B) Dolphin",
    "B) Dolphin", "B. Dolphin", "(B) Dolphin", "b: dolphin",
    "I would pick B.", "Dolphin", "A dolphin is a mammal.", "It is the dolphin, (B).",
    "A. Shark\nB. Dolphin\nC. Trout\nD. Octopus\nAnswer: B",
])
def test_grade_choice_reads_b(response):
    assert grade_choice(response, MC) == ("B", True)


@pytest.mark.parametrize("response, letter", [
    ("A", "A"), ("The answer is C.", "C"), ("D) Octopus", "D"), ("Shark", "A"), ("I choose A.", "A"),
    ("Answer: a", "A"), ("The answer is a.", "A"),
])
def test_grade_choice_wrong_letters(response, letter):
    assert grade_choice(response, MC) == (letter, False)


@pytest.mark.parametrize("response", [
    "", "   ", None,
    "I think it's a trick",                   # article "a" is not choice A
    "The answer is a trick question.",         # "answer is a" + word: article
    "A trick question.",                      # sentence-opening article "A"
    "I don't know.",                          # pronoun "I" is not a letter
    "A. Shark\nB. Dolphin\nC. Trout\nD. Octopus",   # echoed list, no pick
    "Shark or Dolphin",                       # two choices named
    "Washington D.C.",                        # abbreviation letters
    "The answer is E.",                       # out of range
    "B is right, not C",                      # two capitals disagree
])
def test_grade_choice_no_answer(response):
    assert grade_choice(response, MC) == (None, False)


def test_grade_choice_pronoun_i_with_many_choices():
    row = {"answer": ["C"], "choices": [str(i) for i in range(10, 20)]}    # A..J, so "I" is a choice
    assert grade_choice("I think C.", row) == ("C", True)
    assert grade_choice("I", row) == ("I", False)
    assert grade_choice("I am sure it is I.", row) == ("I", False)


def test_grade_choice_gold_as_choice_text():
    row = dict(MC, answer=["Dolphin"])
    assert grade_choice("B", row) == ("B", True)
    assert grade_choice("dolphin", row) == ("B", True)
    assert grade_choice("A", row) == ("A", False)


def test_grade_choice_prefers_longest_choice_text():
    row = {"answer": ["B"], "choices": ["Paris", "Paris, Texas", "Rome"]}
    assert grade_choice("Paris, Texas", row) == ("B", True)
    assert grade_choice("Paris", row) == ("A", False)


def test_grade_choice_numeric_choices_by_text():
    row = {"answer": ["C"], "choices": ["5", "6", "7", "8"]}
    assert grade_choice("There are 7 continents.", row) == ("C", True)


def test_grade_choice_bad_row_raises():
    with pytest.raises(BenchmarkError, match="neither a letter"):
        grade_choice("A", {"answer": ["Z"], "choices": ["x", "y"]})
    with pytest.raises(BenchmarkError, match="choices"):
        grade_choice("A", {"answer": ["A"]})


# ----------------------------------------------------------------------------- grade_number

@pytest.mark.parametrize("response, gold, extracted", [
    ("42", "42", "42"),
    ("= 42.0", "42", "42.0"),
    ("It's 1,024.", "1024", "1024"),
    ("-3", "-3", "-3"),
    ("The result is 12 apples", "12", "12"),
    ("5 + 7 = 12", "12", "12"),
    ("Tom has 5 apples and buys 7 more, so he has 12 apples.", "12", "12"),   # last number
    ("The answer is 12, since 5 apples plus 7 apples", "12", "12"),           # cue beats last number
    ("3 * 4 = 12, and 12 + 2 = 14", "14", "14"),                               # last cue
    ("5 + 7 = 12. So the answer is twelve.", "12", "12"),                     # cue without digits skipped
    ("twelve", "12", "12"),                                                    # words when no digits
    ("The answer is 0.75", "0.75", "0.75"),
    ("$18", "18", "18"),
    ("42", "42.0", "42"),
    ("\u22123", "-3", "-3"),                                                   # unicode minus
])
def test_grade_number_accepts(response, gold, extracted):
    assert grade_number(response, {"answer": [gold]}) == (extracted, True)


@pytest.mark.parametrize("response", [
    "142", "420", "4.2", "42 - 1 = 41", "The answer is 24", "H42", "1,042",
])
def test_grade_number_rejects(response):
    assert grade_number(response, NUM42)[1] is False


def test_grade_number_empty_and_no_number():
    assert grade_number("", NUM42) == (None, False)
    assert grade_number(None, NUM42) == (None, False)
    assert grade_number("I cannot say.", NUM42) == (None, False)


def test_grade_number_hyphen_is_not_a_sign():
    assert grade_number("5-3", {"answer": ["3"]}) == ("3", True)
    assert grade_number("5-3", {"answer": ["-3"]})[1] is False


def test_grade_number_digits_beat_number_words():
    # "one" is a pronoun here; with digits present, words are not read as numbers
    assert grade_number("He has 12 apples in one basket.", {"answer": ["12"]}) == ("12", True)


def test_grade_number_non_numeric_gold_raises():
    with pytest.raises(BenchmarkError, match="not a number"):
        grade_number("Paris", PARIS)


def test_grader_rejects_non_string_response():
    with pytest.raises(TypeError, match="str"):
        grade_text(42, PARIS)


# ----------------------------------------------------------------------------- grade / format

def test_grade_picks_grader():
    assert grade("The answer is B", MC) == {"extracted": "B", "correct": True, "grader": "choice"}
    assert grade("6 x 7 = 42", NUM42) == {"extracted": "42", "correct": True, "grader": "number"}
    assert grade("Paris", PARIS) == {"extracted": "Paris", "correct": True, "grader": "text"}
    assert grader_name({"answer": ["7", "seven"]}) == "text"       # not all answers are numbers
    assert grader_name({"answer": ["1,024", "1024.0"]}) == "number"
    assert set(GRADERS) == {"text", "choice", "choice_all", "number"}
    assert GRADERS["number"] is grade_number


def test_format_question():
    mc = format_question(MC)
    assert mc.splitlines() == ["Which is a mammal?", "A. Shark", "B. Dolphin", "C. Trout", "D. Octopus",
                               "Answer with the letter of the correct choice."]
    assert format_question(NUM42) == "What is 6 times 7?\nAnswer with a number only."
    assert format_question(PARIS) == "What is the capital of France?\nAnswer with a short answer only."
    with pytest.raises(BenchmarkError, match="question"):
        format_question({"answer": ["x"]})


# ----------------------------------------------------------------------------- load_benchmark

def test_load_jsonl_normalizes(tmp_path):
    path = write(tmp_path, "b.jsonl", jsonl([
        {"id": "a1", "question": " Capital of France? ", "answer": "Paris", "category": "geo"},
        {"id": 7, "question": "6 x 7?", "answer": 42},
        {"question": "Mammal?", "answer": "B", "choices": ["Shark", "Dolphin"], "extra": 1},
    ]) + "\n")
    rows = load_benchmark(path)
    assert rows[0] == {"id": "a1", "question": "Capital of France?", "answer": ["Paris"],
                       "choices": None, "category": "geo", "grader": "text"}
    assert rows[1]["id"] == "7" and rows[1]["answer"] == ["42"] and rows[1]["category"] is None
    assert rows[2]["choices"] == ["Shark", "Dolphin"]
    assert set(rows[2]) == {"id", "question", "answer", "choices", "category", "grader"}
    assert rows[1]["grader"] == "number" and rows[2]["grader"] == "choice"


def test_generated_ids_are_stable_and_content_based(tmp_path):
    a = write(tmp_path, "a.jsonl", jsonl([{"question": "Q one?", "answer": "x"},
                                          {"question": "Q two?", "answer": "y"}]))
    b = write(tmp_path, "b.jsonl", jsonl([{"question": "Q two?", "answer": "other"}]))
    ids = [r["id"] for r in load_benchmark(a)]
    assert ids == [r["id"] for r in load_benchmark(a)]
    assert ids[0] != ids[1] and all(i.startswith("q-") and len(i) == 12 for i in ids)
    assert load_benchmark(b)[0]["id"] == ids[1]


def test_load_json_list_and_wrapped(tmp_path):
    rows = [{"question": "Q?", "answer": ["a", "b"]}, {"question": "R?", "answer": 3.5}]
    plain = load_benchmark(write(tmp_path, "l.json", json.dumps(rows)))
    wrapped = load_benchmark(write(tmp_path, "w.json", json.dumps({"name": "x", "questions": rows})))
    other = load_benchmark(write(tmp_path, "o.json", json.dumps({"meta": {}, "my_list": rows})))
    assert plain == wrapped == other
    assert plain[0]["answer"] == ["a", "b"] and plain[1]["answer"] == ["3.5"]


def test_load_json_ambiguous_object(tmp_path):
    path = write(tmp_path, "x.json", json.dumps({"a": [{"question": "q", "answer": "x"}], "b": []}))
    with pytest.raises(BenchmarkError, match="questions") as e:
        load_benchmark(path)
    assert "'a'" in str(e.value) and "'b'" in str(e.value)


def test_load_csv_lists_and_field_mapping(tmp_path):
    text = ("prompt,target,opts,qid,topic\n"
            "Capital of the USA?,Washington|Washington D.C.,,c1,geo\n"
            "Mammal?,B,Shark|Dolphin|Trout,c2,mc\n"
            'Even number?,"[""14""]","[""3"", ""14""]",c3,\n')
    rows = load_benchmark(write(tmp_path, "b.csv", text), question_field="prompt", answer_field="target",
                          choices_field="opts", id_field="qid", category_field="topic")
    assert [r["id"] for r in rows] == ["c1", "c2", "c3"]
    assert rows[0]["answer"] == ["Washington", "Washington D.C."] and rows[0]["choices"] is None
    assert rows[1]["choices"] == ["Shark", "Dolphin", "Trout"]
    # a choice's text as gold becomes its letter
    assert rows[2]["answer"] == ["B"] and rows[2]["choices"] == ["3", "14"] and rows[2]["category"] is None


def test_load_default_argument_is_builtin():
    assert load_benchmark() == load_benchmark(DEFAULT_BENCHMARK)
    assert os.path.isabs(DEFAULT_BENCHMARK)
    assert DEFAULT_BENCHMARK.endswith(os.path.join("data", "benchmark.jsonl"))


@pytest.mark.parametrize("name, text, expected", [
    ("empty.jsonl", "", "empty"),
    ("blank.jsonl", "\n  \n", "empty"),
    ("none.json", "[]", "no rows"),
    ("header.csv", "question,answer\n", "no rows"),
    ("bad.jsonl", '{"question": "q", "answer": "a"}\n{"question": "q2", "answer": \n',
     "line 2: malformed JSON"),
    ("bad.json", '[{"question": "q",]', "malformed JSON at line 1"),
    ("notobj.jsonl", '["q", "a"]\n', "line 1: expected a JSON object"),
    ("scalar.json", '"hello"', "expected a list"),
    ("noq.jsonl", jsonl([{"question": "", "answer": "a"}]), "line 1: empty question"),
    ("noq2.jsonl", jsonl([{"question": "q", "answer": "a"}, {"answer": "b"}]),
     "line 2: empty question"),
    ("noa.jsonl", jsonl([{"question": "q", "answer": "a"}, {"question": "q2"}]), "line 2: missing answer"),
    ("noa2.jsonl", jsonl([{"question": "q", "answer": ["", " "]}]), "missing answer"),
    ("noa.csv", "question,answer\nq,a\nq2,\n", "line 3: missing answer"),
    ("nested.jsonl", jsonl([{"question": "q", "answer": {"x": 1}}]), "must be text"),
    ("mc.jsonl", jsonl([{"question": "q", "answer": "E", "choices": ["a", "b", "c", "d"]}]),
     "neither a letter A-D"),
    ("onechoice.jsonl", jsonl([{"question": "q", "answer": "A", "choices": ["a"]}]), "2 to 26 choices"),
    ("strchoice.jsonl", jsonl([{"question": "q", "answer": "A", "choices": "a|b"}]), "must be a list"),
    ("badcell.csv", 'question,answer\nq,"[""a"",]"\n', "not valid JSON"),
])
def test_load_errors(tmp_path, name, text, expected):
    """Every bad file or row is one error naming the file (a bad row: with strict=True; see test_formats.py
    for the default, which skips the row)."""
    path = write(tmp_path, name, text)
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(path, strict=True)
    assert expected in str(e.value)
    assert name in str(e.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(BenchmarkError, match="not found"):
        load_benchmark(tmp_path / "nope.jsonl")
    folder = tmp_path / "dir.jsonl"
    folder.mkdir()
    with pytest.raises(BenchmarkError, match="directory"):
        load_benchmark(folder)


def test_unsupported_extension(tmp_path):
    with pytest.raises(BenchmarkError, match=r"unsupported .*'\.txt'.*\.jsonl"):
        load_benchmark(write(tmp_path, "b.txt", "question,answer\nq,a\n"))


def test_unknown_field_lists_available_fields(tmp_path):
    path = write(tmp_path, "b.jsonl", jsonl([{"prompt": "q", "target": "a"}]))
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(path)
    message = str(e.value)
    assert "'question'" in message and "'prompt'" in message and "'target'" in message
    assert "--question_field" in message
    with pytest.raises(BenchmarkError, match="--answer_field"):
        load_benchmark(path, question_field="prompt")
    assert load_benchmark(path, question_field="prompt", answer_field="target")[0]["answer"] == ["a"]


def test_custom_optional_field_must_exist(tmp_path):
    path = write(tmp_path, "b.csv", "question,answer\nq,a\n")
    with pytest.raises(BenchmarkError, match="--category_field"):
        load_benchmark(path, category_field="topic")
    with pytest.raises(BenchmarkError, match="--choices_field"):
        load_benchmark(path, choices_field="options")
    with pytest.raises(BenchmarkError, match="--question_field"):
        load_benchmark(path, question_field="")


def test_duplicate_ids_named(tmp_path):
    path = write(tmp_path, "b.jsonl", jsonl([{"id": "x", "question": "q1", "answer": "a"},
                                             {"id": "y", "question": "q2", "answer": "a"},
                                             {"id": "x", "question": "q3", "answer": "a"}]))
    with pytest.raises(BenchmarkError, match=r"duplicate ids: 'x' at line 1, line 3"):
        load_benchmark(path)
    repeated = write(tmp_path, "r.jsonl", jsonl([{"question": "same", "answer": "a"}] * 2))
    with pytest.raises(BenchmarkError, match="duplicate ids: 'q-"):
        load_benchmark(repeated)


def test_benchmark_error_is_value_error():
    assert issubclass(BenchmarkError, ValueError)


# ----------------------------------------------------------------------------- built-in benchmark

def test_builtin_benchmark_shape():
    rows = load_benchmark()
    assert len(rows) >= 100
    assert len({r["category"] for r in rows}) >= 4
    assert len({r["id"] for r in rows}) == len(rows)
    assert {grader_name(r) for r in rows} == {"text", "choice", "number"}
    for row in rows:
        if row["choices"]:
            for answer in row["answer"]:
                assert len(answer) == 1 and "A" <= answer <= "Z", row
                assert ord(answer) - ord("A") < len(row["choices"]), row
        assert format_question(row).startswith(row["question"])


def test_builtin_gold_answers_grade_as_correct():
    """Answering with the gold (letter / alias / number) must be graded correct, for every row."""
    for row in load_benchmark():
        for answer in row["answer"]:
            assert grade(answer, row)["correct"], (row["id"], answer)
            assert grade(f"The answer is {answer}.", row)["correct"], (row["id"], answer)
        assert not grade("", row)["correct"]


def test_builtin_rows_grade_exactly_as_before():
    """The 122 responses of a default `make run` made before the graders were split and made linear
    (tests/data/builtin_responses.jsonl, verdicts from that run): every verdict is unchanged, 64/122,
    but for the answers whose letter and text name different choices (issue 22): those are now
    incorrect with a grader_note (mc-003 "A. 4", A being "3", was counted right), 63/122."""
    contradictory = {"mc-003": "letter A but text of B", "mc-005": "letter C but text of A",
                     "mc-007": "letter C but text of A", "mc-008": "letter A but text of B",
                     "mc-027": "letter A but text of D"}
    rows = {r["id"]: r for r in load_benchmark()}
    with open(os.path.join(TESTS_DIR, "data", "builtin_responses.jsonl")) as f:
        recorded = [json.loads(line) for line in f]
    assert len(recorded) == len(rows) == 122 and sum(r["correct"] for r in recorded) == 64
    verdicts = {}
    for r in recorded:
        expected = {k: r[k] for k in ("extracted", "correct", "grader")}
        if r["id"] in contradictory:
            expected.update(correct=False, grader_note=contradictory[r["id"]])
        verdicts[r["id"]] = grade(r["response"], rows[r["id"]])
        assert verdicts[r["id"]] == expected, r["id"]
    assert sum(v["correct"] for v in verdicts.values()) == 63


def test_builtin_rows_wrong_answers_are_wrong():
    """Another row's gold, a wrong letter or a neighbouring number is graded wrong for every row."""
    rows = load_benchmark()
    for row in rows:
        if row["choices"]:
            wrong = [letter for letter in "ABCD"[:len(row["choices"])] if letter not in row["answer"]]
        elif row["grader"] == "number":
            wrong = [str(float(row["answer"][0]) + 1)]
        else:
            wrong = ["Atlantis"]
        for answer in wrong:
            assert grade(answer, row)["correct"] is False, (row["id"], answer)
            assert grade(f"The answer is {answer}.", row)["correct"] is False, (row["id"], answer)


def test_builtin_arithmetic_gold_is_right():
    """Re-compute the plain "What is X op Y?" questions."""
    import re
    ops = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "times": lambda a, b: a * b,
           "multiplied by": lambda a, b: a * b, "divided by": lambda a, b: a / b}
    checked = 0
    for row in load_benchmark():
        pattern = r"What is ([\d.]+) (\+|-|times|multiplied by|divided by) ([\d.]+)\?"
        m = re.fullmatch(pattern, row["question"])
        if m and not row["choices"]:
            value = ops[m.group(2)](float(m.group(1)), float(m.group(3)))
            assert float(row["answer"][0]) == value, row
            checked += 1
    assert checked >= 15


def test_docstring_examples_run():
    import doctest

    from activation_eval.eval import errors, grading, prompts, scores
    for module, least in ((benchmark, 5), (grading, 8), (prompts, 6), (scores, 2), (errors, 1)):
        result = doctest.testmod(module)
        assert result.attempted >= least and result.failed == 0, module.__name__


def test_module_has_no_torch_import():
    from activation_eval.eval import grading, prompts
    for module in (benchmark, grading, prompts):
        assert "torch" not in module.__dict__
