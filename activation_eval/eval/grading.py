"""Graders: how a response is read and compared with the row's gold answer. No torch needed.
What the gold answer means (resolve_gold, has_gold, LETTERS) lives in gold.py; text normalisation
and number reading in text_norm.py.

Public names:
    grade_text      grader for short free-text answers.
    grade_choice    grader for multiple choice with one gold letter.
    grade_choice_all grader for multiple choice where every gold letter must be chosen, nothing else.
    grade_number    grader for numeric answers.
    grade           grade one response with the row's grader -> dict (+ "grader_note" for a
                    contradictory answer, a gold named only inside a negation, or a row left
                    ungraded because matching cannot judge it).
    not_judgeable(row, answers, kind) -> note or None   why matching cannot judge the row
    SENTENCE_TOKENS the length (normalized tokens) from which a text gold counts as a sentence
    contradiction_note(letter, text_letter) -> "letter A but text of B"
    GRADERS         {"text": ..., "choice": ..., "choice_all": ..., "number": ...}.
Re-exported from gold.py: GoldError, resolve_gold, grader_name, has_gold, LETTERS.

Example:
    >>> resolve_gold(1, ["1", "2", "3", "4"])             # Hugging Face / MMLU: 0-based index
    (['B'], 'choice:index')
    >>> grade("The answer is (B).", {"question": "?", "answer": 1, "choices": ["1", "2", "3", "4"]})
    {'extracted': 'B', 'correct': True, 'grader': 'choice:index'}

Graders take (response, row) and return (extracted, correct); extracted is None when nothing
could be read from the response. Every grader runs in time linear in the response length (no
regex that can backtrack over a run, no rescans per match). The rules:

text   Both sides are normalized: accents dropped, lowercased, the number words zero..ninety-nine
       turned into digits ("seven" == "7"), punctuation turned into spaces, the articles a/an/the
       dropped. Correct when the tokens of any accepted answer appear as a contiguous run of
       whole tokens in the response: "The capital of France is Paris." counts for "Paris",
       "Parisian" does not, "Paris, Texas" does (qualifiers are not parsed). A match inside a
       negation does not count (negation.py): "It is not Canberra; it is Sydney." is incorrect
       for "Canberra", with "grader_note": "negated: ..."; "Canberra, not Sydney." is correct.
       Hedges ("London or Paris") are not detected. extracted is the accepted answer that
       matched, else the response's first line.
       Not judgeable by matching (correct None, "grader_note": "not judgeable by matching: ...",
       counted in the summary's not_judgeable): a row whose false_premise column is true
       (FreshQA: its gold is a rebuttal sentence), or whose every accepted answer is a sentence
       of SENTENCE_TOKENS (10) or more normalized tokens: a paraphrase never matches it verbatim.
choice The first rule that finds a letter (within the row's choices) wins:
       1. a cue: "answer is (B)", "Answer: b", "option C", "choice D" (the last cue counts;
          a lowercase "a"/"i" followed by a word is an article/pronoun, not a letter);
       2. the whole response is a letter: "B", "(b).";
       3. the response starts with a marked letter: "B) Paris", "B. Paris", "(B) Paris", unless
          the response lists several marked choices (the model echoed the list);
       4. marked letters anywhere, "(B)" or "B)", if they all name the same letter;
       5. standalone capital letters, if they all name the same letter ("A" opening a sentence
          and followed by a word is the article, "I" followed by a word is the pronoun);
       6. the text of exactly one choice appears in the response, not inside a negation (see the
          text rule: "not Paris; Rome" names Rome).
       The gold answer may be a letter or the text of a choice.
       Contradictory answers: when the letter came from a cue or a leading mark (rules 1 and 3) and
       the rest of its line names exactly one choice by its text, and that is another choice ("A. 4"
       where A is "3" and B is "4"), the answer is graded incorrect whatever the gold, and grade()
       adds "grader_note": "letter A but text of B" (the row keeps it; the summary counts them).
choice_all  The set of letters chosen, by the first rule that finds any: the letters after the last
       cue ("answers are A, B and E", "Answer: A,B,E"); the whole response a list of letters
       ("A, B, E", "(A) (C)"); marked letters anywhere; standalone capitals; the texts of the
       choices named. Correct when the set equals the gold set exactly (a subset or an extra
       letter is wrong); extracted is the letters joined by ",".
number The last cue ("=", "equals", "answer is", "result is", "total is") followed by a number
       gives the first number after it; with no such cue, the last number in the response.
       "1,024" is 1024, "-3" is negative but "5-3" is 5 and 3, "142" is never 42. Number words
       ("twelve") are read only when the response has no digits. A number right after a
       negation ("not 42", "isn't 42") is skipped; when it was the gold, grader_note says so.
       Compared numerically (42 == 42.0, relative tolerance 1e-9).
"""
import math
import re

from ..schema.summary import NOT_JUDGEABLE_NOTE
from .errors import BenchmarkError
from .gold import LETTERS, GoldError, grader_name, has_gold, resolve_gold, row_gold
from .negation import AFFIRMED, NEGATED, negated_number_note, negation_note, phrase_status
from .text_norm import clause_tokens, contains_phrase, extract_number, normalized_tokens, parse_number

__all__ = ["GoldError", "resolve_gold", "grader_name", "has_gold", "grade_text", "grade_choice", "grade_choice_all",
           "grade_number", "grade", "GRADERS", "LETTERS", "contradiction_note", "not_judgeable", "SENTENCE_TOKENS"]

SENTENCE_TOKENS = 10    # a text gold of this many normalized tokens or more is a sentence, not an answer to match


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
    answers, _ = row_gold(row)
    if not answers:
        raise BenchmarkError(f"row {row.get('id', '')!r} has no accepted answer: {row['answer']!r}")
    return answers


# ----------------------------------------------------------------------------- graders

def grade_text(response, row):
    """Whole-word/phrase match of any accepted answer inside the response, not inside a negation.

    Example:
        >>> grade_text("The capital of France is Paris.", {"answer": ["Paris"]})
        ('Paris', True)
        >>> grade_text("It is not Canberra; it is Sydney.", {"answer": ["Canberra"]})
        ('It is not Canberra; it is Sydney.', False)
    """
    extracted, correct, _ = _grade_text(response, row)
    return extracted, correct


def _grade_text(response, row):
    """(extracted, correct, note or None): grade_text with the negation note."""
    response = _response_text(response)
    tokens, clauses = clause_tokens(response)
    negated = None
    for answer in _gold_answers(row):
        gold = normalized_tokens(answer)
        if not gold and response.strip().lower() == answer.lower():
            return answer, True, None
        status, cue = phrase_status(tokens, clauses, gold)
        if status == AFFIRMED:
            return answer, True, None
        if status == NEGATED and negated is None:
            negated = negation_note(answer, cue)
    return _first_line(response), False, negated


def not_judgeable(row, answers, kind):
    """Why matching cannot judge a row (its grader_note), or None: a text row whose false_premise is true, or
    whose every accepted answer has SENTENCE_TOKENS normalized tokens or more.

    Example:
        >>> not_judgeable({"false_premise": True}, ["The premise is false: there was no such war."], "text")
        'not judgeable by matching: a false-premise row (its gold is a rebuttal, not an answer to find)'
        >>> not_judgeable({}, ["Paris"], "text") is None
        True
    """
    if kind != "text":
        return None
    if row.get("false_premise") is True:
        return f"{NOT_JUDGEABLE_NOTE}: a false-premise row (its gold is a rebuttal, not an answer to find)"
    if answers and all(len(normalized_tokens(a)) >= SENTENCE_TOKENS for a in answers):
        return (f"{NOT_JUDGEABLE_NOTE}: the gold is a sentence ({SENTENCE_TOKENS}+ words in every accepted answer), "
                f"which a response would paraphrase")
    return None


def _gold_indices(row):
    choices = _row_choices(row)
    answers, _ = row_gold(row)
    gold = {LETTERS.index(a) for a in answers if len(a) == 1 and a in LETTERS[:len(choices)]}
    if not gold or len(gold) != len(answers):
        raise BenchmarkError(f"row {row.get('id', '')!r}: answer {row['answer']!r} is neither a letter "
                             f"nor the text of one of the choices {choices}")
    return choices, gold


def grade_choice(response, row):
    """The chosen letter (see the module docstring for the rules); gold may be a letter or choice text.
    A contradictory answer (its letter and its text name different choices) is incorrect.

    Example:
        >>> grade_choice("The answer is (B).", {"answer": "B", "choices": ["Rome", "Paris"]})
        ('B', True)
        >>> grade_choice("A. Paris", {"answer": "B", "choices": ["Rome", "Paris"]})
        ('A', False)
    """
    extracted, correct, _ = _grade_choice(response, row)
    return extracted, correct


def contradiction_note(letter, text_letter):
    """The grader_note of an answer whose letter and text name different choices."""
    return f"letter {letter} but text of {text_letter}"


def _grade_choice(response, row):
    """(extracted, correct, note or None): grade_choice with the contradiction note."""
    choices, gold = _gold_indices(row)
    text = _response_text(response)
    index, end = _extract_choice(text, choices)
    if index is None:
        return None, False, None
    said = _named_after(text, end, choices) if end is not None else None
    if said is not None and said != index:
        return LETTERS[index], False, contradiction_note(LETTERS[index], LETTERS[said])
    return LETTERS[index], index in gold, None


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
    golds = [parse_number(a) for a in _gold_answers(row)]
    if any(g is None for g in golds):
        raise BenchmarkError(f"row {row.get('id', '')!r}: answer {row['answer']!r} is not a number; "
                             "use grade_text for text answers")
    found = extract_number(_response_text(response))
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
    answers, name = row_gold(row)
    graded = dict(row, answer=answers, grader=name)
    kind = name.split(":")[0]
    unjudged = not_judgeable(row, answers, kind)
    if unjudged:
        return {"extracted": None, "correct": None, "grader": name, "grader_note": unjudged}
    note = None
    if kind == "choice":
        extracted, correct, note = _grade_choice(response, graded)
    elif kind == "text":
        extracted, correct, note = _grade_text(response, graded)
    else:
        extracted, correct = GRADERS[kind](response, graded)
        if kind == "number" and not correct:
            note = negated_number_note(_response_text(response), [(a, parse_number(a)) for a in answers])
    if note:
        return {"extracted": extracted, "correct": False, "grader": name, "grader_note": note}
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
    """(chosen index or None, where the letter's mark ends when a cue or a leading mark gave it, else None)."""
    n = len(choices)
    for m in reversed(list(_CUE_RE.finditer(text))):              # 1. "answer is (B)"
        letter = m.group(1)
        is_word = letter in "ai" and _WORD_AFTER_RE.match(text, m.end())
        if not is_word and _letter(letter, n) is not None:
            return _letter(letter, n), m.end()
    m = _ONLY_LETTER_RE.fullmatch(text)                           # 2. "B"
    if m and _letter(m.group(1), n) is not None:
        return _letter(m.group(1), n), None
    listed = {x.upper() for x in _LISTED_RE.findall(text)}
    m = _LEADING_RE.match(text)                                   # 3. "B) Paris"
    if m and len(listed) < 2 and _letter(m.group(1), n) is not None:
        return _letter(m.group(1), n), m.end()
    marked = [a or b for a, b in _MARKED_RE.findall(text)]         # 4. "... (B) ..."
    if marked and _unanimous(marked, n) is not None:
        return _unanimous(marked, n), None
    capitals = _standalone_capitals(text, n)
    if capitals and _unanimous(capitals, n) is not None:           # 5. "I pick C"
        return _unanimous(capitals, n), None
    hits = _choices_by_text(text, choices)                        # 6. "Paris"
    return (hits[0] if len(hits) == 1 else None), None


def _named_after(text, end, choices):
    """The one choice whose text the rest of the letter's line names ("A. 4" -> the choice "4"), else None."""
    line_end = text.find("\n", end)
    hits = _choices_by_text(text[end:line_end if line_end >= 0 else len(text)], choices)
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
    tokens, clauses = clause_tokens(text)
    phrases = {i: normalized_tokens(c) for i, c in enumerate(choices)}
    hits = [i for i, p in phrases.items() if phrase_status(tokens, clauses, p)[0] == AFFIRMED]
    return [i for i in hits if not any(j != i and len(phrases[j]) > len(phrases[i])
                                       and contains_phrase(phrases[j], phrases[i]) for j in hits)]


# ----------------------------------------------------------------------------- number helpers
