"""What a row's gold answer means (the field's answer conventions): the one owner of gold
resolution, of "does this row have a gold answer" and of the choice letters. No torch needed.

Public names:
    LETTERS         "ABC...Z", the labels choices are shown with (prompts) and graded by
    GoldError       BenchmarkError for a row whose gold answer cannot be used (the loader skips it)
    has_gold(row) -> bool      does the row carry a gold answer to grade against? (0 does: choice A)
    resolve_gold(answer, choices=None, labels=None) -> (accepted answers [str], grader name)
    row_gold(row) -> (accepted answers, grader name)   a loaded row's own, else resolved
    grader_name(row)           which grader a row uses: "choice", "choice_all", "number" or "text"
    scalar_text(value) -> str or None   the text of a JSON scalar, stripped ("" for missing)
    unlettered(choices) -> [str]    the choices without their own letter marks, when every one carries
                                    its letter in order ("A) 3", "B. 4", "(C) 5"); else unchanged

Example:
    >>> resolve_gold(1, ["1", "2", "3", "4"])             # Hugging Face / MMLU: 0-based index
    (['B'], 'choice:index')
    >>> has_gold({"question": "?", "answer": 0, "choices": ["x", "y"]}), has_gold({"question": "?", "answer": []})
    (True, False)

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
"""
import re

from .errors import BenchmarkError
from .text_norm import normalized_tokens, parse_number

__all__ = ["LETTERS", "GoldError", "has_gold", "resolve_gold", "row_gold", "grader_name", "scalar_text",
           "unlettered"]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class GoldError(BenchmarkError):
    """A row's gold answer cannot be used with its choices (or is missing); the message says why."""



def has_gold(row):
    """True when the row carries a gold answer to grade against: not missing, None, blank text or an
    empty list (an integer 0 is a gold index: choice A). Rows without one are answered, not graded.

    Example:
        >>> [has_gold({"answer": a}) for a in (0, "B", ["Paris"], None, "", "  ", [], [""])]
        [True, True, True, False, False, False, False, False]
    """
    answer = row.get("answer") if isinstance(row, dict) else None
    items = answer if isinstance(answer, (list, tuple)) else [answer]
    return any(item is not None and not (isinstance(item, str) and not item.strip()) for item in items)


def scalar_text(value):
    """Text of a JSON scalar, stripped ("" for missing); None when it is not a scalar."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value).strip()
    return None


_OWN_LETTER_RE = re.compile(r"\s*+[\(\[]?+([A-Za-z])[\)\]\.:]\s++(?=\S)")


def unlettered(choices):
    """The choices without the letter marks they carry, when EVERY choice starts with its own letter
    in order (A, B, C, ...; "A) 3", "A. 3", "(A) 3", "[a] 3", "A: 3"); otherwise the choices unchanged
    (a single "A. Lincoln" among unmarked choices is text). Prompts letter choices themselves, so a
    dataset that already lettered them would otherwise show "A. A) 3".

    Example:
        >>> unlettered(["A) 3", "B) 4"]), unlettered(["A. Lincoln", "Washington"])
        (['3', '4'], ['A. Lincoln', 'Washington'])
    """
    if not choices:
        return choices
    stripped = []
    for i, choice in enumerate(choices):
        m = _OWN_LETTER_RE.match(choice) if isinstance(choice, str) else None
        if m is None or i >= len(LETTERS) or m.group(1).upper() != LETTERS[i]:
            return list(choices)
        stripped.append(choice[m.end():].strip())
    return stripped


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
        text = scalar_text(item)
        if text is None:
            raise GoldError(f"the answer must be text, a number or a list of them, got {type(item).__name__}")
        if text:
            texts.append(text)
    if not texts:
        raise GoldError("missing answer; give at least one accepted answer")
    gsm8k = [_GSM8K_RE.search(t) for t in texts]
    if all(gsm8k):
        return [m.group(1).replace(",", "").replace("\u2212", "-") for m in gsm8k], "number:gsm8k"
    return texts, ("number" if all(parse_number(t) is not None for t in texts) else "text")


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
    text = scalar_text(item)
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
        tokens = normalized_tokens(text)
        if text.lower() == choice.strip().lower() or (tokens and tokens == normalized_tokens(choice)):
            return i
    return None


def row_gold(row):
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
    return row_gold(row)[1].split(":")[0]

