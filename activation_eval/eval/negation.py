"""Is a gold phrase found in a response affirmed, or only named inside a negation? No torch needed.

"It is not Canberra; it is Sydney." names Canberra only to deny it: a substring grader would count it.
A match is NEGATED when a negation cue stands among the WINDOW tokens before it, in the same clause
(text_norm.clause_tokens: a clause ends at , ; : ! ? a full stop, a newline, brackets or a dash), with
no contrast word between the cue and the match. A phrase is AFFIRMED when any of its matches is not
negated: "Canberra, not Sydney." affirms Canberra (the cue follows it); "Not Sydney but Canberra"
affirms Canberra ("but" ends the cue's reach); "not only Paris" affirms Paris.

Cues: not, no, never, nor, neither, cannot, the n't contractions (normalised "isn't" is "isn t": a "t"
after a word ending in n; also the bare "isn", "wasn", "doesn", ... and "isnt", "dont", ... written
without the apostrophe). Contrast words: but, rather, instead, only, however, yet, although, though,
except. Not detected: hedges ("maybe Canberra"), negation by a verb ("I doubt it is Canberra"), a cue
further than WINDOW tokens back, double negation.

Public names:
    WINDOW, AFFIRMED, NEGATED, ABSENT
    phrase_status(tokens, clauses, phrase) -> (AFFIRMED | NEGATED | ABSENT, the cue or None)
    negation_note(answer, cue) -> str     the grader_note of an answer whose gold appears only negated
    negated_number_note(response, golds) -> note or None   the same for a gold number ("it is not 42")

Example:
    >>> from activation_eval.eval.text_norm import clause_tokens
    >>> phrase_status(*clause_tokens("It is not Canberra; it is Sydney."), ["canberra"])
    ('negated', 'not')
    >>> phrase_status(*clause_tokens("Canberra, not Sydney."), ["canberra"])
    ('affirmed', None)
    >>> phrase_status(*clause_tokens("I don't think it is Canberra."), ["canberra"])
    ('negated', "n't")
"""
import math

from ..schema.summary import NEGATED_NOTE
from .text_norm import negated_numbers

WINDOW = 4          # tokens before a match in which a cue negates it
AFFIRMED, NEGATED, ABSENT = "affirmed", "negated", "absent"
_CUES = {"not", "no", "never", "nor", "neither", "cannot", "isnt", "arent", "wasnt", "werent", "dont", "doesnt",
         "didnt", "cant", "wont", "hasnt", "havent", "hadnt", "couldnt", "shouldnt", "wouldnt", "isn", "aren", "wasn",
         "weren", "doesn", "didn", "hasn", "haven", "hadn", "couldn", "shouldn", "wouldn", "mustn", "needn"}
_CONTRAST = {"but", "rather", "instead", "only", "however", "yet", "although", "though", "except"}


def _cue(tokens, j):
    """The negation cue at token j, or None ("t" after a word ending in n: a n't contraction)."""
    word = tokens[j]
    if word in _CUES:
        return word
    if word == "t" and j > 0 and tokens[j - 1].endswith("n"):
        return "n't"
    return None


def _negation_before(tokens, clauses, start):
    """The cue negating the match at `start`, or None (see the module docstring)."""
    for j in range(start - 1, max(start - WINDOW, 0) - 1, -1):
        if clauses[j] != clauses[start] or tokens[j] in _CONTRAST:
            return None
        cue = _cue(tokens, j)
        if cue:
            return cue
    return None


def phrase_status(tokens, clauses, phrase):
    """(AFFIRMED, None) when some match of `phrase` (normalized tokens) is not negated; (NEGATED, the first
    match's cue) when every match is; (ABSENT, None) when there is none. Linear in len(tokens) * len(phrase)."""
    n = len(phrase)
    cue = None
    if n == 0:
        return ABSENT, None
    for i, word in enumerate(tokens):
        if word == phrase[0] and tokens[i:i + n] == phrase:
            found = _negation_before(tokens, clauses, i)
            if found is None:
                return AFFIRMED, None
            cue = cue or found
    return (NEGATED, cue) if cue else (ABSENT, None)


def negation_note(answer, cue):
    """The grader_note of a response that names the gold answer only after a negation."""
    return f"{NEGATED_NOTE}: the gold {answer!r} appears only after a negation ({cue!r}); graded incorrect"


def negated_number_note(response, golds):
    """The grader_note of a response that names a gold number only after a negation (text_norm.extract_number
    skips such a number), else None. golds: [(gold text, value), ...].

    >>> negated_number_note("The answer is not 42; it is 41.", [("42", 42.0)])[:39]
    "negated: the gold '42' appears only aft"
    """
    for value, cue in negated_numbers(response):
        for text, gold in golds:
            if math.isclose(value, gold, rel_tol=1e-9, abs_tol=1e-9):
                return negation_note(text, cue)
    return None
