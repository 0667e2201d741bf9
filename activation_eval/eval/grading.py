"""Graders, and what a row's gold answer means (the field's answer conventions). No torch needed.

Public names:
    GoldError       BenchmarkError for a row whose gold answer cannot be used (the loader skips it).
    resolve_gold(answer, choices=None, labels=None) -> (accepted answers [str], grader name)
    grader_name     which grader a row uses: "choice", "choice_all", "number" or "text".
    grade_text      grader for short free-text answers.
    grade_choice    grader for multiple choice with one gold letter.
    grade_choice_all grader for multiple choice where every gold letter must be chosen, nothing else.
    grade_number    grader for numeric answers.
    grade           grade one response with the row's grader -> dict.
    GRADERS         {"text": ..., "choice": ..., "choice_all": ..., "number": ...}.
    LETTERS         "ABC...Z", the labels choices are shown with.

Example:
    >>> resolve_gold(1, ["1", "2", "3", "4"])             # Hugging Face / MMLU: 0-based index
    (['B'], 'choice:index')
    >>> grade("The answer is (B).", {"question": "?", "answer": 1, "choices": ["1", "2", "3", "4"]})
    {'extracted': 'B', 'correct': True, 'grader': 'choice:index'}

Gold conventions (resolve_gold; the grader field of a results row names the one applied: the part
before ":" is the grader, the part after it the convention that turned the gold into letters):
  - choices + an integer (JSON/parquet int, not text) = a 0-based index into the choices, as in
    Hugging Face datasets and lm-evaluation-harness (MMLU `answer: 1` is B)       -> "choice:index"
  - choices + a letter ("B", "(b)") or the text of one choice                      -> "choice"
  - ARC-style choices {"label": [...], "text": [...]} + a label (answerKey "C" or "3")
                                                                                   -> "choice:label"
  - choices without labels + a numeric key "1".."n" that is no choice's text = the 1-based key
    (ARC's numeric answerKeys)                                                     -> "choice:label"
    (a key that is also another choice's text is ambiguous: the row is refused)
  - choices + a list of several gold letters (or "A, B, E") = all of them must be chosen and
    nothing else                                                                   -> "choice_all"
  - no choices + a list = accepted aliases, any one counts                         -> "text" / "number"
  - GSM8K-style gold "... #### 72" = the number after the last "####"             -> "number:gsm8k"
  - no choices + every accepted answer a number                                    -> "number"
  - anything else                                                                  -> "text"
A gold that fits none (a letter beyond the choices, an index out of range, no answer) raises
GoldError; load_benchmark skips such rows with a warning naming them (--strict: an error).

Graders take (response, row) and return (extracted, correct); extracted is None when nothing
could be read from the response. Every grader runs in time linear in the response length (no
regex that can backtrack over a run, no rescans per match). The rules:

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
choice_all  The set of letters chosen, by the first rule that finds any: the letters after the last
       cue ("answers are A, B and E", "Answer: A,B,E"); the whole response a list of letters
       ("A, B, E", "(A) (C)"); marked letters anywhere; standalone capitals; the texts of the
       choices named. Correct when the set equals the gold set exactly (a subset or an extra
       letter is wrong); extracted is the letters joined by ",".
number The last cue ("=", "equals", "answer is", "result is", "total is") followed by a number
       gives the first number after it; with no such cue, the last number in the response.
       "1,024" is 1024, "-3" is negative but "5-3" is 5 and 3, "142" is never 42. Number words
       ("twelve") are read only when the response has no digits. Compared numerically
       (42 == 42.0, relative tolerance 1e-9).
"""
import bisect
import math
import re
import unicodedata

from .errors import BenchmarkError

__all__ = ["GoldError", "resolve_gold", "grader_name", "grade_text", "grade_choice", "grade_choice_all",
           "grade_number", "grade", "GRADERS", "LETTERS"]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class GoldError(BenchmarkError):
    """A row's gold answer cannot be used with its choices (or is missing); the message says why."""


# ----------------------------------------------------------------------------- gold conventions

def _scalar(value):
    """Text of a JSON scalar, stripped ("" for missing); None when it is not a scalar."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value).strip()
    return None


_LETTER_LIST_RE = re.compile(r"[A-Z](?:\s*,\s*[A-Z])+")
_GSM8K_RE = re.compile(r"####\s*([-\u2212]?[\d,]*\.?\d+)\s*$")


def resolve_gold(answer, choices=None, labels=None):
    """(accepted answers, grader) for a raw gold answer; raises GoldError when it cannot be used.

    answer: a scalar or a list of them, as in the file; choices: [str] or None; labels: the
    ARC-style labels of the choices (["A", "B", ...] or ["1", "2", ...]) or None.

    Example:
        >>> resolve_gold("Natalia sold 48 clips ... #### 72")
        (['72'], 'number:gsm8k')
        >>> resolve_gold(["A", "B", "E"], ["a", "b", "c", "d", "e"])
        (['A', 'B', 'E'], 'choice_all')
    """
    items = answer if isinstance(answer, (list, tuple)) else [answer]
    if choices:
        return _resolve_choice_gold(answer, items, choices, labels)
    texts = []
    for item in items:
        text = _scalar(item)
        if text is None:
            raise GoldError(f"the answer must be text, a number or a list of them, got {type(item).__name__}")
        if text:
            texts.append(text)
    if not texts:
        raise GoldError("missing answer; give at least one accepted answer")
    gsm8k = [_GSM8K_RE.search(t) for t in texts]
    if all(gsm8k):
        return [m.group(1).replace(",", "").replace("\u2212", "-") for m in gsm8k], "number:gsm8k"
    return texts, ("number" if all(_parse_number(t) is not None for t in texts) else "text")


def _resolve_choice_gold(answer, items, choices, labels):
    if isinstance(answer, str) and _LETTER_LIST_RE.fullmatch(answer.strip()):
        items = re.findall(r"[A-Z]", answer)                      # "A, B, E" in one cell
    indices, conventions = [], set()
    for item in items:
        index, convention = _gold_index(item, choices, labels)
        if index is not None:
            indices.append(index)
            conventions.add(convention)
    if not indices:
        raise GoldError("missing answer; give the letter, the 0-based index or the text of the correct choice")
    letters = sorted({LETTERS[i] for i in indices})
    convention = next(iter(conventions)) if len(conventions) == 1 else None
    if len(letters) > 1:
        return letters, "choice_all" + (f":{convention}" if convention else "")
    return letters, "choice" + (f":{convention}" if convention else "")


def _gold_index(item, choices, labels):
    """(index, convention or None) of one gold item; (None, None) for an empty cell."""
    n = len(choices)
    last = LETTERS[n - 1]
    if isinstance(item, int) and not isinstance(item, bool):
        if not 0 <= item < n:
            raise GoldError(f"answer {item} is an integer, read as a 0-based index into the {n} choices "
                            f"(Hugging Face convention), but it is out of range 0-{n - 1}")
        return item, "index"
    text = _scalar(item)
    if text is None:
        raise GoldError(f"the answer must be a letter, an index or a choice's text, got {type(item).__name__}")
    if not text:
        return None, None
    if labels is not None:
        if text in labels:
            return labels.index(text), "label"
        raise GoldError(f"answer {text!r} is not one of the choice labels {labels}")
    m = re.fullmatch(r"[\(\[]?([A-Za-z])[\)\]\.]?", text)
    if m and LETTERS.index(m.group(1).upper()) < n:
        return LETTERS.index(m.group(1).upper()), None
    by_text = _choice_by_gold_text(text, choices)
    if text.isdigit() and 1 <= int(text) <= n:                    # ARC's numeric answerKey 1..n
        key = int(text) - 1
        if by_text is not None and by_text != key:
            raise GoldError(f"answer {text!r} is ambiguous: the text of choice {LETTERS[by_text]} and the "
                            f"numeric key of choice {LETTERS[key]}; give a letter instead")
        return key, (None if by_text == key else "label")
    if by_text is not None:
        return by_text, None
    raise GoldError(f"answer {text!r} is neither a letter A-{last} nor the text of one of the choices {choices}")


def _choice_by_gold_text(text, choices):
    for i, choice in enumerate(choices):
        if text.lower() == choice.strip().lower() or (_tokens(text) and _tokens(text) == _tokens(choice)):
            return i
    return None


def _row_gold(row):
    """(accepted answers, grader) of a row: a loaded row's own, else resolved from its raw answer."""
    if not isinstance(row, dict) or "answer" not in row:
        raise BenchmarkError(f"row has no 'answer': {row!r}; pass a row from load_benchmark()")
    if row.get("grader") and isinstance(row["answer"], list):
        return row["answer"], row["grader"]
    choices = row.get("choices")
    if choices is not None and (not isinstance(choices, (list, tuple)) or len(choices) < 2):
        raise BenchmarkError(f"row {row.get('id', '')!r}: 'choices' must be a list of at least 2 "
                             f"choices, got {choices!r}")
    try:
        return resolve_gold(row["answer"], [str(c) for c in choices] if choices else None)
    except GoldError as e:
        raise GoldError(f"row {row.get('id', '')!r}: {e}") from None


def grader_name(row):
    """The grader a row uses: "choice", "choice_all", "number" or "text" (see the module docstring).

    Example:
        >>> grader_name({"question": "6 x 7?", "answer": "42"})
        'number'
    """
    return _row_gold(row)[1].split(":")[0]


# ----------------------------------------------------------------------------- text helpers

_ARTICLES = {"a", "an", "the"}
_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_WORD_NUMBER_RE = re.compile(r"\b(?:({tens})(?:[\s-]++({ones}))?|({units}))\b".format(
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
    """Whether phrase is a contiguous run of tokens: O(len(tokens) * len(phrase)), phrase being a gold answer."""
    n = len(phrase)
    if n == 0:
        return False
    first = phrase[0]
    return any(tok == first and tokens[i:i + n] == phrase for i, tok in enumerate(tokens))


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


def _gold_answers(row):
    answers, _ = _row_gold(row)
    if not answers:
        raise BenchmarkError(f"row {row.get('id', '')!r} has no accepted answer: {row['answer']!r}")
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


def _gold_indices(row):
    choices = _row_choices(row)
    answers, _ = _row_gold(row)
    gold = {LETTERS.index(a) for a in answers if len(a) == 1 and a in LETTERS[:len(choices)]}
    if not gold or len(gold) != len(answers):
        raise BenchmarkError(f"row {row.get('id', '')!r}: answer {row['answer']!r} is neither a letter "
                             f"nor the text of one of the choices {choices}")
    return choices, gold


def grade_choice(response, row):
    """The chosen letter (see the module docstring for the rules); gold may be a letter or choice text.

    Example:
        >>> grade_choice("The answer is (B).", {"answer": "B", "choices": ["Rome", "Paris"]})
        ('B', True)
    """
    choices, gold = _gold_indices(row)
    index = _extract_choice(_response_text(response), choices)
    if index is None:
        return None, False
    return LETTERS[index], index in gold


def grade_choice_all(response, row):
    """The set of chosen letters; correct only when it is exactly the gold set.

    Example:
        >>> row = {"answer": ["A", "B", "E"], "choices": ["a", "b", "c", "d", "e"]}
        >>> grade_choice_all("The answers are A, B and E.", row), grade_choice_all("A", row)
        (('A,B,E', True), ('A', False))
    """
    choices, gold = _gold_indices(row)
    chosen = _extract_choices(_response_text(response), choices)
    if not chosen:
        return None, False
    return ",".join(LETTERS[i] for i in sorted(chosen)), chosen == gold


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


GRADERS = {"text": grade_text, "choice": grade_choice, "choice_all": grade_choice_all, "number": grade_number}


def grade(response, row):
    """Grade with the row's grader; "grader" names it with the gold convention applied.

    Example:
        >>> grade("B", {"question": "?", "answer": "B", "choices": ["x", "y"]})
        {'extracted': 'B', 'correct': True, 'grader': 'choice'}
    """
    answers, name = _row_gold(row)
    graded = dict(row, answer=answers, grader=name)
    extracted, correct = GRADERS[name.split(":")[0]](response, graded)
    return {"extracted": extracted, "correct": bool(correct), "grader": name}


# ----------------------------------------------------------------------------- choice helpers
# Possessive quantifiers (*+, ++) keep every pattern linear: a run is never re-scanned from inside.

_WRAP_OPEN, _WRAP_CLOSE = r"[\(\[\"'*]*+", r"[\)\]\"'*]*+"
_CUE_RE = re.compile(r"\b(?:answer|option|choice)\b(?:\s++(?:is|would be|will be))?+\s*+[:=\-]?+\s*+"
                     r"(?:(?:option|choice)\s++)?+" + _WRAP_OPEN + r"([A-Za-z])" + _WRAP_CLOSE +
                     r"(?![A-Za-z0-9])", re.IGNORECASE)
_CUES_RE = re.compile(r"\b(?:answers?|options?|choices?)\b(?:\s++(?:is|are|would be|will be))?+\s*+[:=\-]?+\s*+",
                      re.IGNORECASE)
_LETTER_RUN_RE = re.compile(r"[\(\[\"'*]*+([A-Za-z])[\)\]\"'*\.]*+(?![A-Za-z0-9])\s*+(?:[,&/]\s*+)?+(?:\band\b\s*+)?+")
_SPACES_RE = re.compile(r"\s*+")
_WORD_AFTER_RE = re.compile(r"\s*+[A-Za-z0-9]")
_SPACE_WORD_RE = re.compile(r"\s++[A-Za-z]")
_ONLY_LETTER_RE = re.compile(r"[\W_]*+([A-Za-z])[\W_]*+")
_LEADING_RE = re.compile(r"\s*+[\(\[*]*+([A-Za-z])[\)\]\.:*]++(?=\s|$)")
_LISTED_RE = re.compile(r"^[^\S\n]*+[\(\[*]*+([A-Za-z])[\)\]\.:*]++(?=\s|$)", re.MULTILINE)
_MARKED_RE = re.compile(r"(?<![A-Za-z0-9])[\(\[]([A-Za-z])[\)\]]|(?<![A-Za-z0-9(\[])([A-Z])\)")
_CAPITAL_RE = re.compile(r"(?<![A-Za-z0-9'’.])([A-Z])(?![A-Za-z0-9'’]|\.[A-Za-z])")


def _row_choices(row):
    choices = row.get("choices") if isinstance(row, dict) else None
    if not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise BenchmarkError(f"row {row.get('id', '') if isinstance(row, dict) else ''!r}: 'choices' must be a "
                             f"list of at least 2 choices, got {choices!r}")
    return [str(c) for c in choices]


def _letter(letter, n):
    index = LETTERS.index(letter.upper())
    return index if index < n else None


def _unanimous(letters, n):
    indices = {_letter(x, n) for x in letters} - {None}
    return indices.pop() if len(indices) == 1 else None


def _extract_choice(text, choices):
    n = len(choices)
    for m in reversed(list(_CUE_RE.finditer(text))):              # 1. "answer is (B)"
        letter = m.group(1)
        is_word = letter in "ai" and _WORD_AFTER_RE.match(text, m.end())
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
    capitals = _standalone_capitals(text, n)
    if capitals and _unanimous(capitals, n) is not None:           # 5. "I pick C"
        return _unanimous(capitals, n)
    hits = _choices_by_text(text, choices)                        # 6. "Paris"
    return hits[0] if len(hits) == 1 else None


def _extract_choices(text, choices):
    """The set of choice indices a response picks (choice_all); empty when none is found."""
    n = len(choices)
    for cue in reversed(list(_CUES_RE.finditer(text))):           # "answers are A, B and E"
        letters = _letter_run(text, cue.end())
        if letters and all(_letter(x, n) is not None for x in letters):
            return {_letter(x, n) for x in letters}
    letters = _letter_run(text, 0, whole=True)                    # "A, B, E"
    if letters and all(_letter(x, n) is not None for x in letters):
        return {_letter(x, n) for x in letters}
    for found in ([a or b for a, b in _MARKED_RE.findall(text)], _standalone_capitals(text, n)):
        indices = {_letter(x, n) for x in found}
        if found and None not in indices:
            return indices
    return set(_choices_by_text(text, choices))


def _letter_run(text, pos, whole=False):
    """Letters listed from pos on ("A, B and E", "(A) (C)"); with whole=True they must fill the text."""
    letters = []
    pos = _SPACES_RE.match(text, pos).end()
    while m := _LETTER_RUN_RE.match(text, pos):
        letter = m.group(1)
        if letter in "ai" and not letters and _WORD_AFTER_RE.match(text, m.start(1) + 1):
            break                                                 # "answer is a ..." : the article
        letters.append(letter)
        pos = m.end()
    if whole and text[pos:].strip(" \t\n.!"):
        return []
    return letters


def _standalone_capitals(text, n):
    return [m.group(1) for m in _CAPITAL_RE.finditer(text) if not _is_word_capital(text, m, n)]


def _is_word_capital(text, m, n):
    """True for a capital letter used as an English word: the pronoun "I" before a word ("I think"),
    the article "A" opening a sentence before a word ("A dolphin is ...")."""
    letter = m.group(1)
    before_word = _SPACE_WORD_RE.match(text, m.end()) is not None
    if letter == "I":
        return before_word
    if letter != "A":
        return False
    i = m.start() - 1                     # walk back over the whitespace before it (each run once)
    while i >= 0 and text[i].isspace():
        i -= 1
    sentence_start = i < 0 or text[i] in ".!?:" or "\n" in text[i + 1:m.start()]
    return sentence_start and before_word


def _choices_by_text(text, choices):
    """Indices of the choices whose text appears in the response (a choice inside a longer named one,
    "Paris" in "Paris, Texas", does not count)."""
    tokens = _tokens(text)
    phrases = {i: _tokens(c) for i, c in enumerate(choices)}
    hits = [i for i, p in phrases.items() if _contains(tokens, p)]
    return [i for i in hits if not any(j != i and len(phrases[j]) > len(phrases[i])
                                       and _contains(phrases[j], phrases[i]) for j in hits)]


# ----------------------------------------------------------------------------- number helpers

# linear as it is: the lookbehinds let a number start only once per run of digits and separators
_NUMBER = r"(?:(?<![\w)])[-\u2212])?(?<![\w.,])(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_FULL_NUMBER_RE = re.compile(r"[-+\u2212]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_NUMBER_CUE_RE = re.compile(r"=|\bequals?\b|\bequal to\b|\b(?:answer|result|total)\b\s*+(?:is|was|:)",
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
    starts = [m.start() for m in numbers]
    for cue in reversed(list(_NUMBER_CUE_RE.finditer(text))):
        after = bisect.bisect_left(starts, cue.end())            # the first number after the cue
        if after < len(numbers):
            chosen = numbers[after]
            break
    cleaned = chosen.group(0).replace(",", "").replace("\u2212", "-")
    return cleaned, float(cleaned)
