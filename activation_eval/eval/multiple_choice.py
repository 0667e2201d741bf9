"""Log-likelihood multiple choice (lm-evaluation-harness's `multiple_choice` output type): each
choice is scored as a continuation of the prompt; nothing is generated.

Public names:
    MC_STYLES               ("mmlu", "cloze"): what is scored (see below)
    TARGET_DELIMITER        " ", put between the prompt and each continuation (none with a chat template)
    has_choices(row)        does the row have choices to score?
    refusal(row) -> str or None   why the row cannot be scored this way (several accepted letters), else None
    targets(row, style) -> ["A", "B", ...] (mmlu) or the choices' texts (cloze): lm-eval's doc_to_choice
    continuations(row, delimiter, style) -> [delimiter + target, ...]
    pick(logprobs, targets) -> (index by acc, by acc_norm, by acc_bytes)
    iter_choice_scores(model, tokenizer, rows, settings=None, capture=None, batch_size=None, style="mmlu")
        -> (result, record), ... as answering.iter_answers, for rows with choices
    SCORE_FIELDS            the keys a scored result adds to answering.RESULT_FIELDS

Example:
    >>> from activation_eval.eval.benchmark import load_benchmark
    >>> rows = [r for r in load_benchmark() if has_choices(r)][:3]
    >>> for result, record in iter_choice_scores(model, tok, rows, batch_size=8, style="mmlu"):
    ...     print(result["id"], result["answer"], result["extracted"] in "ABCD", len(result["choice_logprobs"]),
    ...           result["correct"] == (result["extracted"] in result["answer"]) == result["correct_norm"])
    mc-001 ['B'] True 4 True
    mc-002 ['C'] True 4 True
    mc-003 ['A'] True 4 True

Styles (as lm-eval's tasks; the prompt is prompts.prompt_of(row, style), see prompts.STYLE_TEMPLATES):
    mmlu   the prompt lists the lettered choices and ends "Answer:"; the targets are the letters, so the
           continuations are " A", " B", ... (lm-eval's mmlu). The model is asked for a letter and
           its letters are scored.
    cloze  the prompt does not list the choices ("Question: ...\\nAnswer:"); the targets are the
           choices' texts, each continuation " " + text (lm-eval's arc_easy, hellaswag).

Scores, as lm-eval 0.4.13's ConfigurableTask.process_results for multiple_choice:
    each continuation is TARGET_DELIMITER + target, with no delimiter when a chat template applies
    (lm-eval drops it under apply_chat_template);
    acc       = the target with the largest summed log-probability (first one on ties, np.argmax);
    acc_norm  = the largest log-probability / len(target): lm-eval's acc_norm divides by the number of
                CHARACTERS of the target (Python len, without the delimiter), not by bytes;
    acc_bytes = the largest log-probability / len(target.encode("utf-8")): lm-eval's acc_bytes.
    (In the mmlu style every target is one letter: the three agree.)
The chosen letters are graded by the row's own grader (grade(letter, row)), so the gold answer
follows the same conventions as generated answers. A row with several accepted letters (choice_all)
is refused (ValueError naming it; the run skips such rows with a warning and counts them as skipped):
the argmax picks one choice, and lm-eval's multiple-target rule (right when it is any gold) would
grade "A" right where the generated grader asks for the whole set. The result row has extracted /
correct (acc), extracted_norm / correct_norm (acc_norm), extracted_bytes / correct_bytes (acc_bytes),
choice_logprobs and style; its response is the text of the choice acc picked. The record is
capture.loglik's (choice log-probabilities, prompt activations); the run writer stamps a stored one
with its row's verdict ("grading": acc, acc_norm and acc_bytes).
"""
import numpy as np

from ..capture.loglik import iter_scored_records
from ..models import uses_chat_template
from ..schema import answered_row
from ..schema.interventions import intervention_fields
from .gold import LETTERS, has_gold, row_gold
from .grading import grade
from .prompts import prompt_of

MC_STYLES = ("mmlu", "cloze")
TARGET_DELIMITER = " "
SCORE_FIELDS = ("scoring", "style", "correct_norm", "extracted_norm", "correct_bytes", "extracted_bytes",
                "choice_logprobs")


def has_choices(row):
    """True for a row with at least two choices (the rows --mc_scoring loglikelihood scores)."""
    choices = row.get("choices") if isinstance(row, dict) else None
    return isinstance(choices, (list, tuple)) and len(choices) >= 2


def refusal(row):
    """Why a row with choices cannot be scored by log-likelihood, or None: several accepted letters.

    >>> refusal({"id": "q", "question": "?", "choices": ["a", "b", "c"], "answer": ["A", "C"]})[:40]
    "row 'q' accepts several choices (A, C): "
    """
    if not has_gold(row):
        return None
    letters, grader = row_gold(row)
    if grader.startswith("choice_all"):
        return (f"row {row.get('id')!r} accepts several choices ({', '.join(letters)}): log-likelihood scoring "
                f"picks one choice per question; use --mc_scoring generate for it")
    return None


def targets(row, style="mmlu"):
    """What each choice is scored as (lm-eval's doc_to_choice): its letter (mmlu) or its text (cloze).

    >>> targets({"choices": ["Paris", "Rome"]}, "mmlu"), targets({"choices": ["Paris", "Rome"]}, "cloze")
    (['A', 'B'], ['Paris', 'Rome'])
    """
    if style not in MC_STYLES:
        raise ValueError(f"style must be one of {', '.join(MC_STYLES)}, got {style!r}")
    if not has_choices(row):
        raise ValueError(f"row {row.get('id')!r} has no choices to score (needs a list of at least 2)")
    if len(row["choices"]) > len(LETTERS):
        raise ValueError(f"row {row.get('id')!r} has {len(row['choices'])} choices; at most {len(LETTERS)} are lettered")
    return list(LETTERS[:len(row["choices"])]) if style == "mmlu" else [str(c) for c in row["choices"]]


def continuations(row, delimiter=TARGET_DELIMITER, style="mmlu"):
    """The strings scored after the prompt: delimiter + each target.

    >>> continuations({"choices": ["Paris", "Rome"]}), continuations({"choices": ["Paris", "Rome"]}, style="cloze")
    ([' A', ' B'], [' Paris', ' Rome'])
    """
    return [f"{delimiter}{t}" for t in targets(row, style)]


def pick(logprobs, targets):
    """(acc index, acc_norm index, acc_bytes index): argmax of the summed log-probabilities, of those
    divided by each target's length in characters, and in UTF-8 bytes (an empty target counts as 1)."""
    lls = np.asarray(logprobs, dtype=np.float64)
    chars = np.array([max(len(str(t)), 1) for t in targets], dtype=np.float64)
    nbytes = np.array([max(len(str(t).encode("utf-8")), 1) for t in targets], dtype=np.float64)
    return int(np.argmax(lls)), int(np.argmax(lls / chars)), int(np.argmax(lls / nbytes))


def iter_choice_scores(model, tokenizer, rows, settings=None, capture=None, batch_size=None, style="mmlu"):
    """Yield (result, record) for each row, scoring all choices of `batch_size` rows per forward.

    The result has answering.RESULT_FIELDS (response = the text of the choice acc picked, extracted =
    its letter, correct = acc, num_generated_tokens = 0) plus scoring "loglikelihood", style,
    correct_norm / extracted_norm (acc_norm), correct_bytes / extracted_bytes (acc_bytes) and
    choice_logprobs. A row that refusal() refuses raises ValueError before anything is scored.
    """
    for row in rows:
        reason = refusal(row)
        if reason:
            raise ValueError(reason)
    template = getattr(settings, "use_chat_template", "auto")
    delimiter = "" if uses_chat_template(tokenizer, template) else TARGET_DELIMITER
    prompts = [prompt_of(row, style) for row in rows]
    conts = [continuations(row, delimiter, style) for row in rows]
    for index, record in iter_scored_records(model, tokenizer, prompts, conts, settings, capture, batch_size):
        row = rows[index]
        best, best_norm, best_bytes = pick(record["choice_logprobs"], targets(row, style))
        verdict, verdict_norm, verdict_bytes = (_grade(LETTERS[i], row) for i in (best, best_norm, best_bytes))
        record["response"] = str(row["choices"][best])
        result = answered_row(row, prompts[index], record["response"], dict(verdict, extracted=LETTERS[best]),
                              record["num_prompt_tokens"], 0, getattr(settings, "system_prompt", None),
                              scoring="loglikelihood", style=style,
                              correct_norm=verdict_norm["correct"], extracted_norm=LETTERS[best_norm],
                              correct_bytes=verdict_bytes["correct"], extracted_bytes=LETTERS[best_bytes],
                              choice_logprobs=record["choice_logprobs"], **intervention_fields(record))
        yield result, record


def _grade(letter, row):
    """The row's grader on the chosen letter; ungraded (None) for a row without a gold answer."""
    if not has_gold(row):
        return {"correct": None, "grader": None}
    return grade(letter, row)
