"""Text normalisation and number reading shared by gold resolution (gold.py) and the graders
(grading.py). No torch needed.

Public names:
    normalized_tokens(text) -> [str]     accents dropped, lowercased, number words as digits,
                                         punctuation as spaces, articles a/an/the dropped
    contains_phrase(tokens, phrase) -> bool   phrase is a contiguous run of whole tokens
    clause_tokens(text) -> (tokens, clause index of each)   normalized_tokens clause by clause (a clause
                                         ends at , ; : ! ? a full stop, a newline, brackets or a dash)
    words_to_digits(text) -> str         lowercase number words zero..ninety-nine as digits
    parse_number(text) -> float or None  a whole-string number ("1,024", "-3", "0.5")
    extract_number(text) -> (cleaned text, value) or None   the answer number of a response (a number right
                                         after a negation, "not 42", "isn't 42", is never the answer)
    negated_numbers(text) -> [(value, cue), ...]   the numbers that follow a negation

Example:
    >>> normalized_tokens("The capital is São Paulo, twenty-one!")
    ['capital', 'is', 'sao', 'paulo', '21']
    >>> contains_phrase(normalized_tokens("It is Paris, Texas."), normalized_tokens("Paris"))
    True
    >>> parse_number("1,024"), extract_number("6 x 7 = 42.0, not 41")
    (1024.0, ('42.0', 42.0))
    >>> clause_tokens("Canberra, not Sydney.")
    (['canberra', 'not', 'sydney'], [0, 1, 1])

Every function runs in time linear in its input (possessive quantifiers; no rescans per match).
"""
import bisect
import re
import unicodedata

__all__ = ["normalized_tokens", "contains_phrase", "clause_tokens", "words_to_digits", "parse_number",
           "extract_number", "negated_numbers"]

_ARTICLES = {"a", "an", "the"}
_UNITS = {w: i for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
    "fifteen sixteen seventeen eighteen nineteen".split())}
_TENS = {w: 10 * i for i, w in enumerate("twenty thirty forty fifty sixty seventy eighty ninety".split(), 2)}
_WORD_NUMBER_RE = re.compile(r"\b(?:({tens})(?:[\s-]++({ones}))?|({units}))\b".format(
    tens="|".join(_TENS),
    ones="|".join(w for w in _UNITS if 1 <= _UNITS[w] <= 9),
    units="|".join(sorted(_UNITS, key=len, reverse=True))))


def words_to_digits(text):
    """Lowercase number words to digits: "twenty-one" -> "21", "seven" -> "7"."""
    def digits(m):
        if m.group(1):
            return str(_TENS[m.group(1)] + (_UNITS[m.group(2)] if m.group(2) else 0))
        return str(_UNITS[m.group(3)])
    return _WORD_NUMBER_RE.sub(digits, text)


def normalized_tokens(text):
    """Normalized tokens: no accents, lowercase, number words as digits, no punctuation or articles."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c)).lower()
    text = re.sub(r"[\W_]+", " ", words_to_digits(text))
    return [t for t in text.split() if t not in _ARTICLES]


def contains_phrase(tokens, phrase):
    """Whether phrase is a contiguous run of tokens: O(len(tokens) * len(phrase)), phrase being a gold answer."""
    n = len(phrase)
    if n == 0:
        return False
    first = phrase[0]
    return any(tok == first and tokens[i:i + n] == phrase for i, tok in enumerate(tokens))


_CLAUSE_END_RE = re.compile(r"[,;:!?\n()\[\]\u2014\u2013]|\.(?!\d)|\s-\s")


def clause_tokens(text):
    """(normalized tokens of `text`, the clause index of each): the tokens are normalized_tokens of each clause
    in turn (the same as normalized_tokens(text) but where a number word pair spans a clause end)."""
    tokens, clauses = [], []
    for index, part in enumerate(_CLAUSE_END_RE.split(text)):
        words = normalized_tokens(part)
        tokens += words
        clauses += [index] * len(words)
    return tokens, clauses


# linear as it is: the lookbehinds let a number start only once per run of digits and separators
_NUMBER = r"(?:(?<![\w)])[-\u2212])?(?<![\w.,])(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)"
_NUMBER_RE = re.compile(_NUMBER)
_FULL_NUMBER_RE = re.compile(r"[-+\u2212]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
_NUMBER_CUE_RE = re.compile(r"=|\bequals?\b|\bequal to\b|\b(?:answer|result|total)\b\s*+(?:is|was|:)",
                            re.IGNORECASE)


def parse_number(text):
    """float of a whole-string number ("1,024", "-3", "0.5"), else None."""
    text = str(text).strip()
    if not _FULL_NUMBER_RE.fullmatch(text):
        return None
    return float(text.replace(",", "").replace("\u2212", "-"))


# a negation right before a number, at most one word between ("not 42", "isn't 42", "not exactly 42")
_NEGATED_BEFORE_RE = re.compile(r"(\b(?:not|never|cannot|nor)\b|n['\u2019]t\b)[^\S\n]++(?:[A-Za-z]++[^\S\n]++)?+$",
                                re.IGNORECASE)


def _numbers(text):
    """(the text numbers are read from, [(match, the negation cue before it or None), ...])."""
    if not re.search(r"\d", text):
        text = words_to_digits(text.lower())
    found = []
    for m in _NUMBER_RE.finditer(text):
        cue = _NEGATED_BEFORE_RE.search(text, max(0, m.start() - 32), m.start())
        found.append((m, cue.group(1).lower().replace("\u2019", "'") if cue else None))
    return text, found


def _cleaned(m):
    return m.group(0).replace(",", "").replace("\u2212", "-")


def extract_number(text):
    """(cleaned text, value) of the answer number in a response, or None: the first number after the last
    cue, else the last number; a negated number is skipped (the next one after it, else the last one that
    is not negated)."""
    text, found = _numbers(text)
    kept = [i for i, (_, cue) in enumerate(found) if cue is None]
    if not kept:
        return None
    chosen = kept[-1]
    starts = [m.start() for m, _ in found]
    for cue in reversed(list(_NUMBER_CUE_RE.finditer(text))):
        after = bisect.bisect_left(starts, cue.end())            # the first number after the cue
        later = kept[bisect.bisect_left(kept, after):]
        if after < len(found):
            chosen = later[0] if later else chosen
            break
    cleaned = _cleaned(found[chosen][0])
    return cleaned, float(cleaned)


def negated_numbers(text):
    """[(value, its negation cue), ...] of the numbers that follow a negation ("it is not 42": (42.0, "not"))."""
    return [(float(_cleaned(m)), cue) for m, cue in _numbers(text)[1] if cue]
