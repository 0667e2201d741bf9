"""Benchmark files, prompts and graders (no torch needed).

Public names:
    BenchmarkError      ValueError for any bad benchmark input; the message names the file, row
                        and field, and says how to fix it.
    DEFAULT_BENCHMARK   path (str) of the built-in benchmark, activation_eval/data/benchmark.jsonl.
    load_benchmark      read a JSONL / JSON / CSV benchmark into normalized rows.
    format_question     the prompt text for one row (before any chat template).
    grader_name         which grader a row uses: "choice", "number" or "text".
    grade_text          grader for short free-text answers.
    grade_choice        grader for multiple choice (letters A, B, C, ...).
    grade_number        grader for numeric answers.
    grade               grade one response with the row's grader -> dict.
    GRADERS             {"text": grade_text, "choice": grade_choice, "number": grade_number}.

Example:
    >>> from activation_eval.eval.benchmark import load_benchmark, format_question, grade
    >>> rows = load_benchmark()                          # the built-in benchmark
    >>> prompt = format_question(rows[0])                # feed to the model
    >>> grade("The capital of France is Paris.", {"question": "Capital of France?", "answer": "Paris"})
    {'extracted': 'Paris', 'correct': True, 'grader': 'text'}

A normalized row is
    {"id": str, "question": str, "answer": [str, ...] (accepted answers, at least one),
     "choices": [str, ...] or None, "category": str or None}

Graders take (response, row) and return (extracted, correct); extracted is None when nothing
could be read from the response. The rules:

text   Both sides are normalized: accents dropped, lowercased, the number words zero..ninety-nine
       turned into digits ("seven" == "7"), punctuation turned into spaces, the articles a/an/the
       dropped. Correct when the tokens of any accepted answer appear as a contiguous run of
       whole tokens in the response: "The capital of France is Paris." counts for "Paris",
       "Parisian" does not, "Paris, Texas" does (qualifiers are not parsed). Negations and
       hedges ("not Paris", "London or Paris") are not detected. extracted is the accepted
       answer that matched, else the response's first line.
choice The first rule that finds a letter (within the row's choices) wins:
       1. a cue: "answer is (B)", "Answer: b", "option C", "choice D" (the last cue counts;
          a lowercase "a"/"i" followed by a word is an article/pronoun, not a letter);
       2. the whole response is a letter: "B", "(b).";
       3. the response starts with a marked letter: "B) Paris", "B. Paris", "(B) Paris", unless
          the response lists several marked choices (the model echoed the list);
       4. marked letters anywhere, "(B)" or "B)", if they all name the same letter;
       5. standalone capital letters, if they all name the same letter ("A" opening a sentence
          and followed by a word is the article, "I" followed by a word is the pronoun);
       6. the text of exactly one choice appears in the response (see the text rule).
       The gold answer may be a letter or the text of a choice.
number The last cue ("=", "equals", "answer is", "result is", "total is") followed by a number
       gives the first number after it; with no such cue, the last number in the response.
       "1,024" is 1024, "-3" is negative but "5-3" is 5 and 3, "142" is never 42. Number words
       ("twelve") are read only when the response has no digits. Compared numerically
       (42 == 42.0, relative tolerance 1e-9).
"""
import csv
import hashlib
import io
import json
import math
import os
import re
import unicodedata

__all__ = [
    "BenchmarkError", "DEFAULT_BENCHMARK", "load_benchmark", "format_question", "grader_name",
    "grade_text", "grade_choice", "grade_number", "grade", "GRADERS",
]


class BenchmarkError(ValueError):
    """Bad benchmark input: the message names the file/row/field and how to fix it.

    Example:
        >>> try:
        ...     load_benchmark("missing.jsonl")
        ... except BenchmarkError as e:
        ...     print(e)
        missing.jsonl: benchmark file not found; check the path
    """


DEFAULT_BENCHMARK = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "data",
                                 "benchmark.jsonl")

_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv"}
_LIST_KEYS = ("questions", "data", "rows", "items", "examples", "records")  # JSON object wrappers
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_DEFAULT_FIELDS = {"question": "question", "answer": "answer", "choices": "choices",
                   "id": "id", "category": "category"}


# ----------------------------------------------------------------------------- loading

def load_benchmark(path=None, *, question_field="question", answer_field="answer",
                   choices_field="choices", id_field="id", category_field="category"):
    """Read a benchmark file into normalized rows, in file order.

    Example:
        >>> rows = load_benchmark()       # or load_benchmark("qa.csv", question_field="prompt")
        >>> rows[0]["id"], rows[0]["question"], rows[0]["answer"], rows[0]["choices"]
        ('geo-001', 'What is the capital of France?', ['Paris'], None)

    Formats: .jsonl (one object a line), .json (a list of objects, or an object holding that
    list under one key such as "questions" or "data"), .csv (a header row; the answer and
    choices cells may be a JSON list or "|"-separated). Rows without an id get "q-" + the first
    10 hex digits of the sha1 of the question. Raises BenchmarkError for any bad input.
    """
    name = os.fspath(DEFAULT_BENCHMARK if path is None else path)
    fields = _check_field_names(question=question_field, answer=answer_field, choices=choices_field,
                                id=id_field, category=category_field)
    kind = _file_kind(name)
    text = _read_text(name)
    if kind == "jsonl":
        records, available = _parse_jsonl(text, name)
    elif kind == "json":
        records, available = _parse_json(text, name)
    else:
        records, available = _parse_csv(text, name)
    if not records:
        raise BenchmarkError(f"{name}: no rows found; add at least one question")
    _check_fields_present(fields, available, name)
    rows = [_normalize_row(record, where, name, fields, kind == "csv") for where, record in records]
    _check_unique_ids(rows, [where for where, _ in records], name, fields["id"])
    return rows


def _check_field_names(**fields):
    for role, field in fields.items():
        if not isinstance(field, str) or not field.strip():
            raise BenchmarkError(f"--{role}_field must be a non-empty column name, got {field!r}")
    return fields


def _file_kind(name):
    ext = os.path.splitext(name)[1].lower()
    if ext not in _KINDS:
        raise BenchmarkError(f"{name}: unsupported benchmark file type {ext or '(no extension)'!r}; "
                             f"use one of {', '.join(_KINDS)}")
    return _KINDS[ext]


def _read_text(name):
    if not os.path.exists(name):
        raise BenchmarkError(f"{name}: benchmark file not found; check the path")
    if os.path.isdir(name):
        raise BenchmarkError(f"{name}: is a directory; pass the benchmark file inside it")
    try:
        with open(name, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        raise BenchmarkError(f"{name}: not UTF-8 text ({e}); save the file as UTF-8") from e
    except OSError as e:
        raise BenchmarkError(f"{name}: cannot read the file ({e.strerror or e})") from e
    if not text.strip():
        raise BenchmarkError(f"{name}: the file is empty; add at least one question")
    return text


def _parse_jsonl(text, name):
    records, available = [], {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise BenchmarkError(f"{name}: {where}: malformed JSON ({e.msg} at column {e.colno}); "
                                 "each line must be one JSON object") from e
        _require_object(record, where, name)
        records.append((where, record))
        available.update(dict.fromkeys(record))
    return records, list(available)


def _parse_json(text, name):
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise BenchmarkError(f"{name}: malformed JSON at line {e.lineno} column {e.colno} ({e.msg}); "
                             "for one object a line, name the file .jsonl") from e
    if isinstance(data, dict):
        data = _unwrap_list(data, name)
    if not isinstance(data, list):
        raise BenchmarkError(f"{name}: expected a list of question objects, got {type(data).__name__}")
    records, available = [], {}
    for index, record in enumerate(data, start=1):
        where = f"item {index}"
        _require_object(record, where, name)
        records.append((where, record))
        available.update(dict.fromkeys(record))
    return records, list(available)


def _unwrap_list(data, name):
    lists = [key for key, value in data.items() if isinstance(value, list)]
    for key in _LIST_KEYS:
        if key in lists:
            return data[key]
    if len(lists) == 1:
        return data[lists[0]]
    found = ", ".join(map(repr, data)) or "none"
    raise BenchmarkError(f"{name}: a JSON object must hold the question list under one key such as "
                         f"'questions' or 'data' (keys found: {found})")


def _require_object(record, where, name):
    if not isinstance(record, dict):
        raise BenchmarkError(f"{name}: {where}: expected a JSON object like "
                             f'{{"question": ..., "answer": ...}}, got {type(record).__name__}')


def _parse_csv(text, name):
    reader = csv.DictReader(io.StringIO(text))
    try:
        available = [f for f in (reader.fieldnames or []) if f]
        records = [(f"line {reader.line_num}", record) for record in reader]
    except csv.Error as e:
        raise BenchmarkError(f"{name}: line {reader.line_num}: malformed CSV ({e})") from e
    return records, available


def _check_fields_present(fields, available, name):
    for role, field in fields.items():
        required = role in ("question", "answer")
        if field in available or (not required and field == _DEFAULT_FIELDS[role]):
            continue
        found = ", ".join(map(repr, available)) or "none"
        raise BenchmarkError(f"{name}: no {role} field {field!r} in the file (fields found: {found}); "
                             f"pass --{role}_field NAME to name the {role} field")


def _normalize_row(record, where, name, fields, from_csv):
    def fail(message):
        raise BenchmarkError(f"{name}: {where}: {message}")

    question = _scalar(record.get(fields["question"]))
    if question is None:
        fail(f"field {fields['question']!r} must be text, got {type(record[fields['question']]).__name__}")
    if not question:
        fail(f"empty question (field {fields['question']!r}); every row needs a question")
    answers = _answer_list(record.get(fields["answer"]), from_csv, fail, fields["answer"])
    if not answers:
        fail(f"missing answer (field {fields['answer']!r}); give at least one accepted answer")
    choices = _choice_list(record.get(fields["choices"]), from_csv, fail, fields["choices"])
    if choices is not None:
        for answer in answers:
            if _choice_index(answer, choices) is None:
                fail(f"answer {answer!r} is neither a letter A-{_LETTERS[len(choices) - 1]} nor the "
                     f"text of one of the choices {choices}")
    row_id = _scalar(record.get(fields["id"]))
    if row_id is None:
        fail(f"field {fields['id']!r} must be text or a number")
    category = _scalar(record.get(fields["category"]))
    if category is None:
        fail(f"field {fields['category']!r} must be text")
    return {"id": row_id or _stable_id(question), "question": question, "answer": answers,
            "choices": choices, "category": category or None}


def _scalar(value):
    """Text of a JSON scalar, stripped ("" for missing); None when it is not a scalar."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value).strip()
    return None


def _split_cell(cell, fail, field):
    """A CSV cell holding a list: a JSON list, or "|"-separated."""
    cell = cell.strip()
    if cell.startswith("[") and cell.endswith("]"):
        try:
            value = json.loads(cell)
        except json.JSONDecodeError:
            fail(f"field {field!r} looks like a JSON list but is not valid JSON: {cell!r}")
        return value
    return cell.split("|") if cell else []


def _answer_list(value, from_csv, fail, field):
    if from_csv and isinstance(value, str):
        value = _split_cell(value, fail, field)
    answers = []
    for item in value if isinstance(value, list) else [value]:
        text = _scalar(item)
        if text is None:
            fail(f"field {field!r} must be text, a number or a list of them, got {type(item).__name__}")
        if text:
            answers.append(text)
    return answers


def _choice_list(value, from_csv, fail, field):
    if from_csv and isinstance(value, str):
        value = _split_cell(value, fail, field)
    if value is None or value == "" or value == []:
        return None
    if not isinstance(value, list):
        fail(f'field {field!r} must be a list of choices like ["Paris", "London"], got {value!r}')
    choices = [_scalar(item) for item in value]
    if any(not c for c in choices):
        fail(f"field {field!r} has an empty or non-text choice: {value!r}")
    if not 2 <= len(choices) <= len(_LETTERS):
        fail(f"field {field!r} must have 2 to {len(_LETTERS)} choices, got {len(choices)}")
    return choices


def _stable_id(question):
    return "q-" + hashlib.sha1(question.encode("utf-8")).hexdigest()[:10]


def _check_unique_ids(rows, wheres, name, id_field):
    seen = {}
    for row, where in zip(rows, wheres):
        seen.setdefault(row["id"], []).append(where)
    duplicates = {key: places for key, places in seen.items() if len(places) > 1}
    if duplicates:
        listed = "; ".join(f"{key!r} at {', '.join(places)}" for key, places in duplicates.items())
        raise BenchmarkError(f"{name}: duplicate ids: {listed}; give each row a unique {id_field!r} "
                             "(rows without one get an id from the question text, so repeated "
                             "questions also collide)")


# ----------------------------------------------------------------------------- prompts

def format_question(row):
    """The prompt text for one row, before any chat template.

    Example:
        >>> print(format_question({"question": "2 + 2?", "answer": ["4"]}))
        2 + 2?
        Answer with a number only.
    """
    question = _scalar(_require(row, "question"))
    if not question:
        raise BenchmarkError("row has an empty 'question'")
    kind = grader_name(row)
    if kind == "choice":
        listed = "\n".join(f"{_LETTERS[i]}. {c}" for i, c in enumerate(_row_choices(row)))
        return f"{question}\n{listed}\nAnswer with the letter of the correct choice."
    if kind == "number":
        return f"{question}\nAnswer with a number only."
    return f"{question}\nAnswer with a short answer only."


def grader_name(row):
    """"choice" when the row has choices, "number" when every accepted answer is a number, else "text".

    Example:
        >>> grader_name({"question": "6 x 7?", "answer": "42"})
        'number'
    """
    if isinstance(row, dict) and row.get("choices"):
        return "choice"
    if all(_parse_number(a) is not None for a in _gold_answers(row)):
        return "number"
    return "text"


# ----------------------------------------------------------------------------- text helpers

_ARTICLES = {"a", "an", "the"}
_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_WORD_NUMBER_RE = re.compile(r"\b(?:({tens})(?:[\s-]+({ones}))?|({units}))\b".format(
    tens="|".join(_TENS),
    ones="|".join(w for w in _UNITS if 1 <= _UNITS[w] <= 9),
    units="|".join(sorted(_UNITS, key=len, reverse=True))))


def _words_to_digits(text):
    """Lowercase number words to digits: "twenty-one" -> "21", "seven" -> "7"."""
    def digits(m):
        if m.group(1):
            return str(_TENS[m.group(1)] + (_UNITS[m.group(2)] if m.group(2) else 0))
        return str(_UNITS[m.group(3)])
    return _WORD_NUMBER_RE.sub(digits, text)


def _tokens(text):
    """Normalized tokens: no accents, lowercase, number words as digits, no punctuation or articles."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[\W_]+", " ", _words_to_digits(text))
    return [t for t in text.split() if t not in _ARTICLES]


def _contains(tokens, phrase):
    n = len(phrase)
    return n > 0 and any(tokens[i:i + n] == phrase for i in range(len(tokens) - n + 1))


def _response_text(response):
    if response is None:
        return ""
    if not isinstance(response, str):
        raise TypeError(f"response must be a str, got {type(response).__name__}")
    return response


def _first_line(text):
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return None


def _require(row, key):
    if not isinstance(row, dict) or key not in row:
        raise BenchmarkError(f"row has no {key!r}: {row!r}; pass a row from load_benchmark()")
    return row[key]


def _gold_answers(row):
    value = _require(row, "answer")
    answers = [_scalar(a) for a in (value if isinstance(value, (list, tuple)) else [value])]
    answers = [a for a in answers if a]
    if not answers:
        raise BenchmarkError(f"row {row.get('id', '')!r} has no accepted answer: {value!r}")
    return answers


# ----------------------------------------------------------------------------- graders

def grade_text(response, row):
    """Whole-word/phrase match of any accepted answer inside the response.

    Example:
        >>> grade_text("The capital of France is Paris.", {"answer": ["Paris"]})
        ('Paris', True)
    """
    response = _response_text(response)
    tokens = _tokens(response)
    for answer in _gold_answers(row):
        gold = _tokens(answer)
        if _contains(tokens, gold) or (not gold and response.strip().lower() == answer.lower()):
            return answer, True
    return _first_line(response), False


def grade_choice(response, row):
    """The chosen letter (see the module docstring for the rules); gold may be a letter or choice text.

    Example:
        >>> grade_choice("The answer is (B).", {"answer": "B", "choices": ["Rome", "Paris"]})
        ('B', True)
    """
    choices = _row_choices(row)
    gold = set()
    for answer in _gold_answers(row):
        index = _choice_index(answer, choices)
        if index is not None:
            gold.add(index)
    if not gold:
        raise BenchmarkError(f"row {row.get('id', '')!r}: answer {row['answer']!r} is neither a letter "
                             f"nor the text of one of the choices {choices}")
    index = _extract_choice(_response_text(response), choices)
    if index is None:
        return None, False
    return _LETTERS[index], index in gold


def grade_number(response, row):
    """The answer number (see the module docstring for the rule), compared numerically.

    Example:
        >>> grade_number("6 x 7 = 42.0", {"answer": "42"})
        ('42.0', True)
    """
    golds = [_parse_number(a) for a in _gold_answers(row)]
    if any(g is None for g in golds):
        raise BenchmarkError(f"row {row.get('id', '')!r}: answer {row['answer']!r} is not a number; "
                             "use grade_text for text answers")
    found = _extract_number(_response_text(response))
    if found is None:
        return None, False
    text, value = found
    return text, any(math.isclose(value, g, rel_tol=1e-9, abs_tol=1e-9) for g in golds)


GRADERS = {"text": grade_text, "choice": grade_choice, "number": grade_number}


def grade(response, row):
    """Grade with the row's grader (see grader_name).

    Example:
        >>> grade("B", {"question": "?", "answer": "B", "choices": ["x", "y"]})
        {'extracted': 'B', 'correct': True, 'grader': 'choice'}
    """
    name = grader_name(row)
    extracted, correct = GRADERS[name](response, row)
    return {"extracted": extracted, "correct": bool(correct), "grader": name}


# ----------------------------------------------------------------------------- choice helpers

_WRAP_OPEN, _WRAP_CLOSE = r"[\(\[\"'*]*", r"[\)\]\"'*]*"
_CUE_RE = re.compile(r"\b(?:answer|option|choice)\b(?:\s+(?:is|would be|will be))?\s*[:=\-]?\s*"
                     r"(?:(?:option|choice)\s+)?" + _WRAP_OPEN + r"([A-Za-z])" + _WRAP_CLOSE +
                     r"(?![A-Za-z0-9])", re.IGNORECASE)
_ONLY_LETTER_RE = re.compile(r"[\W_]*([A-Za-z])[\W_]*")
_LEADING_RE = re.compile(r"\s*[\(\[*]*([A-Za-z])[\)\]\.:*]+(?=\s|$)")
_LISTED_RE = re.compile(r"^\s*[\(\[*]*([A-Za-z])[\)\]\.:*]+(?=\s|$)", re.MULTILINE)
_MARKED_RE = re.compile(r"(?<![A-Za-z0-9])[\(\[]([A-Za-z])[\)\]]|(?<![A-Za-z0-9(\[])([A-Z])\)")
_CAPITAL_RE = re.compile(r"(?<![A-Za-z0-9'’.])([A-Z])(?![A-Za-z0-9'’]|\.[A-Za-z])")


def _row_choices(row):
    choices = _require(row, "choices")
    if not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise BenchmarkError(f"row {row.get('id', '')!r}: 'choices' must be a list of at least 2 "
                             f"choices, got {choices!r}")
    return [str(c) for c in choices]


def _choice_index(answer, choices):
    """Index of a gold answer given as a letter ("B", "(b)") or as a choice's text; else None."""
    m = re.fullmatch(r"[\(\[]?([A-Za-z])[\)\]\.]?", answer.strip())
    if m and _LETTERS.index(m.group(1).upper()) < len(choices):
        return _LETTERS.index(m.group(1).upper())
    for i, choice in enumerate(choices):
        same_text = answer.strip().lower() == choice.strip().lower()
        if same_text or (_tokens(answer) and _tokens(answer) == _tokens(choice)):
            return i
    return None


def _letter(letter, n):
    index = _LETTERS.index(letter.upper())
    return index if index < n else None


def _unanimous(letters, n):
    indices = {_letter(x, n) for x in letters} - {None}
    return indices.pop() if len(indices) == 1 else None


def _extract_choice(text, choices):
    n = len(choices)
    for m in reversed(list(_CUE_RE.finditer(text))):              # 1. "answer is (B)"
        letter = m.group(1)
        is_word = letter in "ai" and re.match(r"\s*[A-Za-z0-9]", text[m.end():])
        if not is_word and _letter(letter, n) is not None:
            return _letter(letter, n)
    m = _ONLY_LETTER_RE.fullmatch(text)                           # 2. "B"
    if m and _letter(m.group(1), n) is not None:
        return _letter(m.group(1), n)
    listed = {x.upper() for x in _LISTED_RE.findall(text)}
    m = _LEADING_RE.match(text)                                   # 3. "B) Paris"
    if m and len(listed) < 2 and _letter(m.group(1), n) is not None:
        return _letter(m.group(1), n)
    marked = [a or b for a, b in _MARKED_RE.findall(text)]         # 4. "... (B) ..."
    if marked and _unanimous(marked, n) is not None:
        return _unanimous(marked, n)
    capitals = [m.group(1) for m in _CAPITAL_RE.finditer(text) if not _is_word_capital(text, m, n)]
    if capitals and _unanimous(capitals, n) is not None:           # 5. "I pick C"
        return _unanimous(capitals, n)
    return _choice_by_text(text, choices)                         # 6. "Paris"


def _is_word_capital(text, m, n):
    """True for a capital letter used as an English word: the pronoun "I" before a word ("I think"),
    the article "A" opening a sentence before a word ("A dolphin is ...")."""
    letter = m.group(1)
    before_word = re.match(r"\s+[A-Za-z]", text[m.end():]) is not None
    if letter == "I":
        return before_word
    if letter != "A":
        return False
    sentence_start = re.search(r"(?:^|[.!?:\n])\s*$", text[:m.start()]) is not None
    return sentence_start and before_word


def _choice_by_text(text, choices):
    tokens = _tokens(text)
    phrases = {i: _tokens(c) for i, c in enumerate(choices)}
    hits = [i for i, p in phrases.items() if _contains(tokens, p)]
    # a choice contained in a longer matching choice ("Paris" in "Paris, Texas") is not a hit
    hits = [i for i in hits if not any(j != i and len(phrases[j]) > len(phrases[i])
                                       and _contains(phrases[j], phrases[i]) for j in hits)]
    return hits[0] if len(hits) == 1 else None


# ----------------------------------------------------------------------------- number helpers

_NUMBER = r"(?:(?<![\w)])[-\u2212])?(?<![\w.,])(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_FULL_NUMBER_RE = re.compile(r"[-+\u2212]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_NUMBER_CUE_RE = re.compile(r"=|\bequals?\b|\bequal to\b|\b(?:answer|result|total)\b\s*(?:is|was|:)",
                            re.IGNORECASE)


def _parse_number(text):
    """float of a whole-string number ("1,024", "-3", "0.5"), else None."""
    text = str(text).strip()
    if not _FULL_NUMBER_RE.fullmatch(text):
        return None
    return float(text.replace(",", "").replace("\u2212", "-"))


def _extract_number(text):
    """(cleaned text, value) of the answer number in a response, or None."""
    if not re.search(r"\d", text):
        text = _words_to_digits(text.lower())
    numbers = list(_NUMBER_RE.finditer(text))
    if not numbers:
        return None
    chosen = numbers[-1]
    for cue in reversed(list(_NUMBER_CUE_RE.finditer(text))):
        after = [m for m in numbers if m.start() >= cue.end()]
        if after:
            chosen = after[0]
            break
    cleaned = chosen.group(0).replace(",", "").replace("\u2212", "-")
    return cleaned, float(cleaned)
