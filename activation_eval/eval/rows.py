"""Benchmark row normalisation: one raw row dict -> a normalized row, and the checks of the field
names a benchmark is read with. No torch needed.

Public names:
    normalize_row(record, fields=None, answer_columns=None, from_table=False) -> row   (BenchmarkError)
    stable_id(question, choices=None) -> "q-" + 10 hex digits   the id of a row without one (from
                                          the question, and the choices when it has them)
    DEFAULT_FIELDS                            {role: column name} when none is given
    check_field_names(**fields) -> fields     every --*_field a non-empty column name
    check_fields_present(fields, available, name)     the question (and named optional) columns exist
    answer_columns_of(spec, available, name) -> [column, ...]   "answer", "a,b" or globs ("answer_*")
    skipped_id(record, fields) -> str or None the id a skipped row is named by
    check_unique_ids(rows, wheres, name, id_field)   BenchmarkError naming duplicate ids and places (a few)
    FALSE_PREMISE                             "false_premise": the column (and row key) of a false-premise row

Example:
    >>> row = normalize_row({"question": "1 + 1 = ?", "choices": ["1", "2", "3", "4"], "answer": 1})
    >>> row["answer"], row["grader"], row["id"]
    (['B'], 'choice:index', 'q-30db774540')

A normalized row is
    {"id": str, "question": str, "answer": [str, ...] (accepted answers; letters for choices),
     "choices": [str, ...] or None, "category": str or None, "grader": str (e.g. "choice:index")}
plus "false_premise": True when the row's false_premise column is true (FreshQA; true, "TRUE", "yes",
1): the grader leaves such a text row ungraded (grading.not_judgeable).

Hugging Face targets (TruthfulQA's mc1_targets / mc2_targets): an answer cell {"choices": [...], "labels":
[0/1, ...]} gives the choices and the gold: one choice labelled 1 (mc1) is graded as an index ("choice:index");
several labelled 1 (mc2) are graded "choice:any": a response that picks any one of the true choices is
correct (one letter is asked for; lm-eval's mc2 metric, the probability mass on the true choices, needs
log-likelihoods of every choice and is not this). read_benchmark reads mc1_targets when the file has no
answer column (--answer_field mc2_targets for mc2).
What the gold answer means is decided by gold.resolve_gold. Choices that carry their own letters
("A) 3", "B) 4", ...) are kept without them (gold.unlettered), since prompts letter choices; a gold
given as the text of such a choice still names it. A table cell (CSV / TSV) holding a
list is a JSON list or "|"-separated; choices may be a list or ARC's {"label": [...], "text": [...]}.
"""
import fnmatch
import hashlib
import json

from .benchmark_limits import value_size
from .errors import BenchmarkError
from .gold import LETTERS, GoldError, resolve_gold, scalar_text, unlettered

__all__ = ["normalize_row", "stable_id", "DEFAULT_FIELDS", "check_field_names", "check_fields_present",
           "answer_columns_of", "skipped_id", "check_unique_ids", "FALSE_PREMISE"]

MAX_CELL_DEPTH = 100   # a table cell holding a JSON list (benchmark_limits' default depth)
DEFAULT_FIELDS = {"question": "question", "answer": "answer", "choices": "choices",
                   "id": "id", "category": "category"}


def check_field_names(**fields):
    """The fields if each is a non-empty column name, else BenchmarkError naming its --*_field."""
    for role, field in fields.items():
        if not isinstance(field, str) or not field.strip():
            raise BenchmarkError(f"--{role}_field must be a non-empty column name, got {field!r}")
    return fields



def check_fields_present(fields, available, name):
    """BenchmarkError unless each named column is among `available` (a default optional one may be absent)."""
    for role, field in fields.items():
        required = role in ("question", "answer")
        if role == "answer" or field in available or (not required and field == DEFAULT_FIELDS[role]):
            continue                                     # answer columns: _answer_columns
        found = ", ".join(map(repr, available)) or "none"
        raise BenchmarkError(f"{name}: no {role} field {field!r} in the file (fields found: {found}); "
                             f"pass --{role}_field NAME to name the {role} field")


def answer_columns_of(spec, available, name):
    """The answer columns: one name, a comma list, or globs ("answer_*"), in the file's column order."""
    columns = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        matched = fnmatch.filter(available, part) if any(c in part for c in "*?[") else \
            [part] if part in available else []
        if not matched:
            found = ", ".join(map(repr, available)) or "none"
            raise BenchmarkError(f"{name}: no answer field {part!r} in the file (fields found: {found}); pass "
                                 "--answer_field NAME (several: a comma list, or a glob such as 'answer_*')")
        columns += [c for c in matched if c not in columns]
    if not columns:
        raise BenchmarkError(f"--answer_field must name at least one column, got {spec!r}")
    return columns



def normalize_row(record, fields=None, answer_columns=None, from_table=False):
    """A normalized row (see the module docstring) from one raw row dict; raises BenchmarkError.

    Example:
        >>> row = normalize_row({"question": "1 + 1 = ?", "choices": ["1", "2", "3", "4"], "answer": 1})
        >>> row["answer"], row["grader"], row["id"]
        (['B'], 'choice:index', 'q-30db774540')
    """
    fields = {**DEFAULT_FIELDS, **(fields or {})}
    if not isinstance(record, dict):
        raise BenchmarkError(f"a row must be a dict like {{'question': ..., 'answer': ...}}, got {record!r}")
    question = scalar_text(record.get(fields["question"]))
    if question is None:
        raise BenchmarkError(f"field {fields['question']!r} must be text, got {type(record[fields['question']]).__name__}")
    if not question:
        raise BenchmarkError(f"empty question (field {fields['question']!r}); every row needs a question")
    choices, labels = _choice_list(record.get(fields["choices"]), from_table, fields["choices"])
    columns = answer_columns or [fields["answer"]]
    values = [_cell(record.get(c), from_table, c) for c in columns]
    answer = values[0] if len(values) == 1 else [v for value in values for v in _as_list(value)]
    targets = _targets(answer, columns)
    if targets:
        choices, answer = targets
        labels = None
    plain = unlettered(choices)
    try:
        answers, grader = _resolve(answer, choices, plain, labels)
    except GoldError as e:
        raise GoldError(f"{e} (field {', '.join(map(repr, columns))})") from None
    if targets and len(answers) > 1:
        grader = "choice:any"                      # mc2: any one true choice is a correct pick
    row_id = scalar_text(record.get(fields["id"]))
    if row_id is None:
        raise BenchmarkError(f"field {fields['id']!r} must be text or a number")
    category = scalar_text(record.get(fields["category"]))
    if category is None:
        raise BenchmarkError(f"field {fields['category']!r} must be text")
    row = {"id": row_id or stable_id(question, plain), "question": question, "answer": answers,
           "choices": plain, "category": category or None, "grader": grader}
    if _is_true(record.get(FALSE_PREMISE)):
        row[FALSE_PREMISE] = True
    return row


FALSE_PREMISE = "false_premise"       # FreshQA's column: the question rests on a false premise
_TRUE = {"true", "yes", "1", "y", "t"}


def _is_true(value):
    """A true cell: True, 1, or text such as "TRUE" / "yes"."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)):
        return value == 1
    return isinstance(value, str) and value.strip().lower() in _TRUE


def _targets(answer, columns):
    """(choices, [0-based indices of the true ones]) of a Hugging Face targets cell {"choices": [...], "labels":
    [0/1, ...]} (TruthfulQA's mc1_targets / mc2_targets), else None."""
    if not (isinstance(answer, dict) and "choices" in answer and "labels" in answer):
        return None
    choices, labels = answer["choices"], answer["labels"]
    where = f"field {columns[0]!r}"
    if not isinstance(choices, list) or not isinstance(labels, list) or len(choices) != len(labels):
        raise BenchmarkError(f"{where}: 'choices' and 'labels' must be lists of the same length")
    if any(label not in (0, 1) for label in labels):
        raise BenchmarkError(f"{where}: 'labels' must be 0 or 1 for each choice, got {labels[:10]}")
    true = [i for i, label in enumerate(labels) if label == 1]
    if not true:
        raise GoldError(f"{where}: no choice is labelled 1 (true)")
    checked, _ = _choice_list(choices, False, columns[0])
    return checked, true


def _resolve(answer, choices, plain, labels):
    """resolve_gold against the choices without their letter marks; a gold that names a choice with its
    mark ("B) 4") is read against the choices as given."""
    try:
        return resolve_gold(answer, plain, labels)
    except GoldError as first:
        if plain == choices:
            raise
        error = first
    try:
        return resolve_gold(answer, choices, labels)
    except GoldError:
        raise error from None


def skipped_id(record, fields):
    """The id to name a skipped row by: its own, else the stable id of its item, else None."""
    if not isinstance(record, dict):
        return None
    row_id = scalar_text(record.get(fields["id"]))
    question = scalar_text(record.get(fields["question"]))
    try:
        choices = _choice_list(record.get(fields["choices"]), False, fields["choices"])[0]
    except BenchmarkError:
        choices = None
    return row_id or (stable_id(question, unlettered(choices)) if question else None)


def _as_list(value):
    return value if isinstance(value, list) else [value]


def _cell(value, from_table, field):
    """A table cell holding a list: a JSON list, or "|"-separated; other values unchanged."""
    if not (from_table and isinstance(value, str)):
        return value
    cell = value.strip()
    if cell.startswith("[") and cell.endswith("]"):
        try:
            value = json.loads(cell)
        except (ValueError, RecursionError):           # also a 5000-digit number, 10^5 nested brackets
            raise BenchmarkError(f"field {field!r} looks like a JSON list but is not valid JSON (or nests deeper than "
                                 f"{MAX_CELL_DEPTH}, or holds a number of more than 4300 digits): {cell[:80]!r}") from None
        if value_size(value, MAX_CELL_DEPTH)[1] > MAX_CELL_DEPTH:
            raise BenchmarkError(f"field {field!r}: a JSON list nested deeper than {MAX_CELL_DEPTH} levels")
        return value
    return cell.split("|") if cell else []


def _choice_list(value, from_table, field):
    """(choice texts, ARC-style labels or None); (None, None) for a row without choices."""
    value = _cell(value, from_table, field)
    labels = None
    if isinstance(value, dict) and "text" in value:             # ARC: {"label": [...], "text": [...]}
        labels = value.get("label")
        value = value["text"]
        if not isinstance(labels, list) or not isinstance(value, list) or len(labels) != len(value):
            raise BenchmarkError(f"field {field!r}: 'label' and 'text' must be lists of the same length")
        labels = [scalar_text(label) for label in labels]
        if any(not label for label in labels) or len(set(labels)) != len(labels):
            raise BenchmarkError(f"field {field!r}: labels must be distinct and non-empty, got {labels}")
    if value is None or value == "" or value == []:
        return None, None
    if not isinstance(value, list):
        raise BenchmarkError(f'field {field!r} must be a list of choices like ["Paris", "London"] '
                             f'(or {{"label": [...], "text": [...]}}), got {value!r}')
    choices = [scalar_text(item) for item in value]
    if any(not c for c in choices):
        raise BenchmarkError(f"field {field!r} has an empty or non-text choice: {value!r}")
    if not 2 <= len(choices) <= len(LETTERS):
        raise BenchmarkError(f"field {field!r} must have 2 to {len(LETTERS)} choices, got {len(choices)}")
    return choices, labels


def stable_id(question, choices=None):
    """The id of a row without one: "q-" + the first 10 hex digits of a sha1 of the whole item.

    Without choices it is the sha1 of the question text (the ids of runs written before choices
    counted, so their --resume still matches); with choices, of the JSON list [question, choices],
    so a dataset that reuses a question with other options gets one id per item.

    Example:
        >>> stable_id("What is the capital of Peru?")
        'q-a37a7c2873'
        >>> stable_id("Which is larger?", ["3", "4"]) != stable_id("Which is larger?", ["5", "6"])
        True
    """
    if not choices:                 # surrogatepass: a lone surrogate ("\ud800" in JSON) is hashed, not an error
        return "q-" + hashlib.sha1(question.strip().encode("utf-8", "surrogatepass")).hexdigest()[:10]
    item = json.dumps([question.strip(), [str(c) for c in choices]], ensure_ascii=False)
    return "q-" + hashlib.sha1(item.encode("utf-8", "surrogatepass")).hexdigest()[:10]


SHOWN = 3             # ids (and places of each) a message lists; the rest are counted


def _first_few(places):
    shown = ", ".join(places[:SHOWN])
    return shown + (f" and {len(places) - SHOWN:,} more" if len(places) > SHOWN else "")


def check_unique_ids(rows, wheres, name, id_field):
    """BenchmarkError naming the ids given to more than one row, with their places (the first few of
    each, the rest counted: 100,000 copies of one question made a message of 1.2 MB)."""
    seen = {}
    for row, where in zip(rows, wheres):
        seen.setdefault(row["id"], []).append(where)
    duplicates = {key: places for key, places in seen.items() if len(places) > 1}
    if duplicates:
        listed = "; ".join(f"{str(key)[:60]!r} at {_first_few(places)}" for key, places in
                           list(duplicates.items())[:SHOWN])
        more = f" and {len(duplicates) - SHOWN:,} more ids" if len(duplicates) > SHOWN else ""
        raise BenchmarkError(f"{name}: duplicate ids: {listed}{more}; give each row a unique "
                             f"{id_field!r} "
                             "(rows without one get an id from the question and its choices, so a "
                             "repeated item also collides)")

