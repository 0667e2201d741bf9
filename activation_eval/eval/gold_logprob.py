"""The gold answer's log-likelihood under teacher forcing: log p(gold | prompt), scored after a unit of
questions is answered (--gold_logprob). More sensitive than accuracy to what an intervention does: a
steering vector may move the gold answer's probability long before it flips an answer.

Public names:
    gold_text(row, style=None) -> str | None       the gold answer as scored (None: the row has no gold)
    gold_continuation(tokenizer, row, settings=None, style=None) -> str | None   with its delimiter
    gold_logprobs(model, tokenizer, rows, settings=None, batch_size=None, style=None)
                        -> [{"gold_logprob_sum", "gold_logprob_mean", "gold_num_tokens"} | None, ...]
    add_gold_logprob(model, tokenizer, rows, results, settings=None, batch_size=None, style=None) -> results,
                        each answered one (a response, no error) of a row with a gold answer with the three keys

Example:
    >>> row = {"id": "q1", "question": "Capital of France?", "answer": ["Paris", "paris"], "grader": "text"}
    >>> gold_text(row), gold_text({"question": "?", "choices": ["x", "y"], "answer": ["B"], "grader": "choice"})
    ('Paris', 'B')
    >>> [scores] = gold_logprobs(model, tok, [row])            # a tiny random model
    >>> scores["gold_num_tokens"] >= 1, scores["gold_logprob_sum"] < 0
    (True, True)

Which text is the gold answer: what a few-shot example of the run shows as its answer
(prompts.fewshot_target), i.e. what the prompt asks the model to say. A multiple-choice row's gold
is its letter ("B"; several letters "A, C"), since the prompt asks "Answer with the letter of the
correct choice" and lists the lettered choices; with --mc_style cloze (the prompt does not list the
choices) it is the gold choice's text. A number or text row's gold is its first accepted answer as
the row stores it. A row without a gold answer gets nothing.

How: capture.loglik.iter_scored_records scores the continuation after the row's prompt (prompts.
prompt_of: few-shot examples, template) with the run's chat template, system prompt and
interventions (settings, a GenerationSettings: the prompt's positions are "prompt", the gold's are
"generated"), no capture. As lm-eval does (and multiple_choice.py, p_true.py), the continuation is
" " + gold, the space dropped when a chat template applies (the assistant's turn starts with it).
gold_logprob_sum is the float64 sum of log p(token) over the continuation's tokens (the model's raw
distribution), gold_logprob_mean that sum over gold_num_tokens.
"""
from ..capture.loglik import iter_scored_records
from ..models import uses_chat_template
from ..schema import ERROR, GOLD_LOGPROB_MEAN, GOLD_LOGPROB_SUM, GOLD_NUM_TOKENS, RESPONSE, row_key
from .gold import has_gold
from .prompts import fewshot_target, prompt_of

__all__ = ["gold_text", "gold_continuation", "gold_logprobs", "add_gold_logprob"]

_DELIMITER = " "


def gold_text(row, style=None):
    """The gold answer as scored (module docstring), or None when the row has none."""
    if not has_gold(row):
        return None
    text = fewshot_target(row, style)
    return text if text.strip() else None


def gold_continuation(tokenizer, row, settings=None, style=None):
    """The scored continuation: " " + gold_text(row), without the space under a chat template."""
    text = gold_text(row, style)
    if text is None:
        return None
    chat = uses_chat_template(tokenizer, getattr(settings, "use_chat_template", "auto"))
    return text if chat else _DELIMITER + text


def gold_logprobs(model, tokenizer, rows, settings=None, batch_size=None, style=None):
    """The gold figures of each row, in order ({GOLD_LOGPROB_SUM, GOLD_LOGPROB_MEAN, GOLD_NUM_TOKENS}; None
    for a row without a gold answer): `batch_size` prompts per forward, the run's interventions applied."""
    continuations = [gold_continuation(tokenizer, row, settings, style) for row in rows]
    scored = [i for i, cont in enumerate(continuations) if cont is not None]
    out = [None] * len(rows)
    if not scored:
        return out
    prompts = [prompt_of(rows[i], style) for i in scored]
    for index, record in iter_scored_records(model, tokenizer, prompts, [[continuations[i]] for i in scored],
                                             settings, batch_size=batch_size):
        total, n = record["choice_logprobs"][0], record["choice_num_tokens"][0]
        out[scored[index]] = {GOLD_LOGPROB_SUM: float(total), GOLD_LOGPROB_MEAN: float(total) / n if n else None,
                              GOLD_NUM_TOKENS: int(n)}
    return out


def add_gold_logprob(model, tokenizer, rows, results, settings=None, batch_size=None, style=None):
    """Set the gold figures in `results` (answered ones: a response, no error; rows with a gold answer);
    `rows` are the benchmark rows they answer, matched by id and sample. Each question is scored once, its
    samples share the figures. Returns results."""
    by_key = {row_key(row): row for row in rows}
    answered = [r for r in results if r.get(RESPONSE) is not None and not r.get(ERROR)]
    questions = {}                                    # question id -> its row: one scoring per question
    for result in answered:
        row = by_key[row_key(result)]
        questions.setdefault(row["id"], row)
    ids = list(questions)
    figures = dict(zip(ids, gold_logprobs(model, tokenizer, [questions[i] for i in ids], settings, batch_size,
                                          style)))
    for result in answered:
        found = figures[by_key[row_key(result)]["id"]]
        if found is not None:
            result.update(found)
    return results
