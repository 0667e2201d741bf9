"""Log-likelihood multiple choice (lm-evaluation-harness's `multiple_choice` output type): each
choice is scored as a continuation of the prompt; nothing is generated.

Public names:
    TARGET_DELIMITER        " ", put between the prompt and each choice (none with a chat template)
    has_choices(row)        does the row have choices to score?
    continuations(row, delimiter) -> [delimiter + choice text, ...]
    pick(logprobs, choices) -> (index by acc, index by acc_norm)
    iter_choice_scores(model, tokenizer, rows, settings=None, capture=None, batch_size=None)
        -> (result, record), ... as answering.iter_answers, for rows with choices
    SCORE_FIELDS            the keys a scored result adds to answering.RESULT_FIELDS

Example:
    >>> from activation_eval.eval.benchmark import load_benchmark
    >>> rows = [r for r in load_benchmark() if has_choices(r)][:3]
    >>> for result, record in iter_choice_scores(model, tok, rows, batch_size=8):
    ...     print(result["id"], result["answer"], result["extracted"], result["correct"], result["correct_norm"])
    mc-001 ['B'] A False False
    mc-002 ['C'] C True False
    mc-003 ['A'] B False False

Conventions, as lm-eval's ConfigurableTask.process_results for multiple_choice:
    the prompt is prompts.prompt_of(row) (the same prompt as --mc_scoring generate, chat template
    applied as configured); each continuation is TARGET_DELIMITER + the choice's text, with no
    delimiter when a chat template applies (lm-eval drops it under apply_chat_template);
    acc      = the choice with the largest summed log-probability (first one on ties, np.argmax);
    acc_norm = the largest log-probability / len(choice text) -- lm-eval divides by the number of
               characters of the choice (Python len, not UTF-8 bytes, and without the delimiter).
The chosen letter is graded by the row's own grader (grade(letter, row)), so the gold answer
follows the same conventions as generated answers. The record is capture.loglik's (choice
log-probabilities, prompt activations) plus "grading"; its response is the chosen choice's text.
"""
import numpy as np

from ..capture.loglik import iter_scored_records
from ..models import uses_chat_template
from ..schema import answered_row
from .gold import LETTERS, has_gold
from .grading import grade
from .prompts import prompt_of

TARGET_DELIMITER = " "
SCORE_FIELDS = ("scoring", "correct_norm", "extracted_norm", "choice_logprobs")


def has_choices(row):
    """True for a row with at least two choices (the rows --mc_scoring loglikelihood scores)."""
    choices = row.get("choices") if isinstance(row, dict) else None
    return isinstance(choices, (list, tuple)) and len(choices) >= 2


def continuations(row, delimiter=TARGET_DELIMITER):
    """The strings scored after the prompt: delimiter + each choice's text.

    >>> continuations({"choices": ["Paris", "Rome"]})
    [' Paris', ' Rome']
    """
    if not has_choices(row):
        raise ValueError(f"row {row.get('id')!r} has no choices to score (needs a list of at least 2)")
    if len(row["choices"]) > len(LETTERS):
        raise ValueError(f"row {row.get('id')!r} has {len(row['choices'])} choices; at most {len(LETTERS)} are lettered")
    return [f"{delimiter}{choice}" for choice in row["choices"]]


def pick(logprobs, choices):
    """(acc index, acc_norm index): argmax of the summed log-probabilities, and of those divided by
    each choice's length in characters (an empty choice counts as 1, to avoid dividing by zero)."""
    lls = np.asarray(logprobs, dtype=np.float64)
    lengths = np.array([max(len(str(c)), 1) for c in choices], dtype=np.float64)
    return int(np.argmax(lls)), int(np.argmax(lls / lengths))


def iter_choice_scores(model, tokenizer, rows, settings=None, capture=None, batch_size=None):
    """Yield (result, record) for each row, scoring all choices of `batch_size` rows per forward.

    The result has answering.RESULT_FIELDS (response = the chosen choice's text, extracted = its
    letter, correct = acc, num_generated_tokens = 0) plus scoring "loglikelihood", correct_norm
    (acc_norm), extracted_norm (its letter) and choice_logprobs.
    """
    template = getattr(settings, "use_chat_template", "auto")
    delimiter = "" if uses_chat_template(tokenizer, template) else TARGET_DELIMITER
    prompts = [prompt_of(row) for row in rows]
    conts = [continuations(row, delimiter) for row in rows]
    for index, record in iter_scored_records(model, tokenizer, prompts, conts, settings, capture, batch_size):
        row = rows[index]
        best, best_norm = pick(record["choice_logprobs"], row["choices"])
        verdict, verdict_norm = _grade(LETTERS[best], row), _grade(LETTERS[best_norm], row)
        record["response"] = str(row["choices"][best])
        result = answered_row(row, prompts[index], record["response"], dict(verdict, extracted=LETTERS[best]),
                              record["num_prompt_tokens"], 0, getattr(settings, "system_prompt", None),
                              scoring="loglikelihood", correct_norm=verdict_norm["correct"],
                              extracted_norm=LETTERS[best_norm], choice_logprobs=record["choice_logprobs"])
        record["grading"] = {k: result[k] for k in ("id", "category", "answer", "extracted", "correct", "grader",
                                                    "correct_norm", "extracted_norm")}
        yield result, record


def _grade(letter, row):
    """The row's grader on the chosen letter; ungraded (None) for a row without a gold answer."""
    if not has_gold(row):
        return {"correct": None, "grader": None}
    return grade(letter, row)
