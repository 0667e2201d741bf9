"""P(True): the model, asked afterwards, judges whether its own proposed answer is correct
(Kadavath et al. 2022, "Language Models (Mostly) Know What They Know", section 4).

Public names:
    P_TRUE_TEMPLATE     the question put to the model, in Kadavath et al.'s format
    P_TRUE_TARGETS      ("(A)", "(B)"): what is scored after the prompt for True and for False
    p_true_question(row) -> str               the question as shown: its text, and its lettered choices if any
    p_true_prompt(row, response) -> str       the whole prompt for one proposed answer
    p_true_from_logprobs(lp_true, lp_false) -> float   exp(lA) / (exp(lA) + exp(lB)), computed stably
    p_true_scores(model, tokenizer, rows, responses, settings=None, batch_size=None) -> [float, ...]
    add_p_true(model, tokenizer, rows, results, settings=None, batch_size=None) -> results, each answered
                        one with "p_true" (schema.P_TRUE)

Example:
    >>> print(p_true_prompt({"question": "Capital of France?"}, "Paris"))
    Question: Capital of France?
    Proposed Answer: Paris
    Is the proposed answer:
     (A) True
     (B) False
    The proposed answer is:
    >>> [0 <= p <= 1 for p in p_true_scores(model, tok, [{"question": "Capital of France?"}], ["Paris"])]
    [True]

How: each prompt is scored by capture.loglik.iter_scored_records (no activation capture) with the
continuations " (A)" and " (B)", the run's chat template and system prompt applied as for its
answers (settings, a GenerationSettings). As in eval/multiple_choice.py (lm-eval's convention), the
space before the target is dropped when a chat template applies: the assistant's turn starts with
"(A)". P(True) = exp(lA) / (exp(lA) + exp(lB)), lA and lB the summed log-probabilities of the two
continuations (the model's raw distribution, float64 sums). A row with choices shows them under
its question (lettered, as the generation prompt lists them), so that a proposed letter means
something; few-shot examples and the answer instruction are not shown.
"""
import math

from ..capture.loglik import iter_scored_records
from ..models import uses_chat_template
from ..schema import ERROR, P_TRUE, RESPONSE, row_key
from .prompts import format_choices

P_TRUE_TEMPLATE = ("Question: {question}\nProposed Answer: {response}\nIs the proposed answer:\n (A) True\n (B) False\n"
                   "The proposed answer is:")
P_TRUE_TARGETS = ("(A)", "(B)")
_DELIMITER = " "


def p_true_question(row):
    """The question as the P(True) prompt shows it: the row's question, then its lettered choices.

    >>> print(p_true_question({"question": "Largest planet?", "choices": ["Mars", "Jupiter"]}))
    Largest planet?
    A. Mars
    B. Jupiter
    """
    choices = row.get("choices")
    if isinstance(choices, (list, tuple)) and len(choices) >= 2:
        return f"{row['question']}\n{format_choices(choices)}"
    return str(row["question"])


def p_true_prompt(row, response):
    """Kadavath et al.'s prompt asking whether `response` answers `row` correctly."""
    return P_TRUE_TEMPLATE.format(question=p_true_question(row), response=response)


def p_true_from_logprobs(lp_true, lp_false):
    """exp(lp_true) / (exp(lp_true) + exp(lp_false)), without overflow or underflow to 0/0.

    >>> p_true_from_logprobs(-1.0, -1.0), round(p_true_from_logprobs(-800.0, -801.0), 4)
    (0.5, 0.7311)
    """
    d = lp_false - lp_true
    return 1.0 / (1.0 + math.exp(d)) if d < 700 else 0.0


def p_true_scores(model, tokenizer, rows, responses, settings=None, batch_size=None):
    """P(True) of each (row, response), in order: `batch_size` prompts (2 continuations each) per forward."""
    delimiter = "" if uses_chat_template(tokenizer, getattr(settings, "use_chat_template", "auto")) else _DELIMITER
    prompts = [p_true_prompt(row, response) for row, response in zip(rows, responses, strict=True)]
    targets = [f"{delimiter}{t}" for t in P_TRUE_TARGETS]
    scores = [None] * len(prompts)
    for index, record in iter_scored_records(model, tokenizer, prompts, [targets] * len(prompts), settings,
                                             batch_size=batch_size):
        scores[index] = p_true_from_logprobs(*record["choice_logprobs"])
    return scores


def add_p_true(model, tokenizer, rows, results, settings=None, batch_size=None):
    """Set results' "p_true" (answered ones: a response, no error); `rows` are the benchmark rows they
    answer (matched by id and sample), whose question and choices the prompt shows. Returns results."""
    by_key = {row_key(row): row for row in rows}
    answered = [r for r in results if r.get(RESPONSE) is not None and not r.get(ERROR)]
    scores = p_true_scores(model, tokenizer, [by_key[row_key(r)] for r in answered], [r[RESPONSE] for r in answered],
                           settings, batch_size)
    for result, score in zip(answered, scores):
        result[P_TRUE] = score
    return results
