"""A generated answer's output confidence: its figures from the log-probability and the entropy of
each token the record keeps, as the decoding loops computed them (capture/continuous.py, and
model.generate's raw logits in generation.py and harness/lm_eval_model.py).

Public names:
    OUTPUT_LOGPROBS     "output_logprobs": the record key of each kept token's log p(token)
    OUTPUT_ENTROPIES    "output_entropies": the record key of each kept token's distribution's entropy (nats)
    confidence_fields(logprobs, entropies, span=None) -> {output_logprobs, output_entropies, answer_logprob_mean,
                        answer_logprob_sum, first_token_entropy, answer_logprob_min, answer_entropy_mean,
                        answer_entropy_max}
    span_indices(answer_positions, num_prompt_tokens, num_kept) -> [index into the kept tokens]
    answer_span_fields(record, answer_positions) -> {answer_logprob_min, answer_entropy_mean, answer_entropy_max}
                        the span figures of a record over its answer span (empty dict without figures)

Example:
    >>> f = confidence_fields([-0.5, -2.0, -0.1], [1.0, 2.5, 0.25])     # no span: every kept token
    >>> f["answer_logprob_mean"], f["answer_logprob_min"], f["answer_entropy_mean"], f["answer_entropy_max"]
    (-0.8666666666666667, -2.0, 1.25, 2.5)
    >>> record = {"num_prompt_tokens": 10, **f}                        # the answer: tokens 11 and 12 (indices 1, 2)
    >>> answer_span_fields(record, [11, 12])
    {'answer_logprob_min': -2.0, 'answer_entropy_mean': 1.375, 'answer_entropy_max': 2.5}

The figures (all under the model's RAW distribution: softmax of the logits at temperature 1, before
any sampling warper; natural logarithms):
    answer_logprob_mean / _sum   over every kept generated token (up to and including the first EOS)
    first_token_entropy          the entropy of the first generated token's distribution
    answer_logprob_min           the lowest token log-probability over the ANSWER SPAN
    answer_entropy_mean / _max   the mean / highest entropy over the answer span
The answer span is the tokens that spell the grader's extracted answer (the row's answer_positions,
eval/answering.py answer_token_positions: computed for every generated row, whether or not its
activations are captured); a row whose extracted answer does not occur in its response (or has none)
falls back to every kept generated token, the tokens answer_logprob_mean reads.
"""
import math

from ..schema import (
    ANSWER_ENTROPY_MAX,
    ANSWER_ENTROPY_MEAN,
    ANSWER_LOGPROB_MEAN,
    ANSWER_LOGPROB_MIN,
    ANSWER_LOGPROB_SUM,
    FIRST_TOKEN_ENTROPY,
)

__all__ = ["OUTPUT_LOGPROBS", "OUTPUT_ENTROPIES", "confidence_fields", "span_indices", "answer_span_fields"]

OUTPUT_LOGPROBS = "output_logprobs"     # a record's per-token log-probabilities (not a results row key)
OUTPUT_ENTROPIES = "output_entropies"   # a record's per-token entropies (not a results row key)


def confidence_fields(logprobs, entropies, span=None):
    """The record's confidence figures from its kept tokens' log-probabilities and entropies; the
    span figures over `span` (indices into the kept tokens), or over every kept token when `span`
    is empty or None."""
    logprobs = [float(lp) for lp in logprobs]
    entropies = [float(h) for h in entropies]
    if len(logprobs) != len(entropies):
        raise ValueError(f"{len(logprobs)} log-probabilities but {len(entropies)} entropies")
    total = math.fsum(logprobs)
    out = {OUTPUT_LOGPROBS: logprobs, OUTPUT_ENTROPIES: entropies,
           ANSWER_LOGPROB_MEAN: total / len(logprobs) if logprobs else None, ANSWER_LOGPROB_SUM: total,
           FIRST_TOKEN_ENTROPY: entropies[0] if entropies else None}
    out.update(_span_figures(logprobs, entropies, span))
    return out


def _span_figures(logprobs, entropies, span):
    index = [i for i in span or () if 0 <= i < len(logprobs)] or range(len(logprobs))
    lps, hs = [logprobs[i] for i in index], [entropies[i] for i in index]
    if not lps:
        return {ANSWER_LOGPROB_MIN: None, ANSWER_ENTROPY_MEAN: None, ANSWER_ENTROPY_MAX: None}
    return {ANSWER_LOGPROB_MIN: min(lps), ANSWER_ENTROPY_MEAN: math.fsum(hs) / len(hs), ANSWER_ENTROPY_MAX: max(hs)}


def span_indices(answer_positions, num_prompt_tokens, num_kept):
    """Indices into the kept generated tokens of the absolute answer positions (prompt length + index)."""
    return [p - num_prompt_tokens for p in answer_positions or () if 0 <= p - num_prompt_tokens < num_kept]


def answer_span_fields(record, answer_positions):
    """{answer_logprob_min, answer_entropy_mean, answer_entropy_max} of a record over the tokens at
    `answer_positions` (absolute), over every kept token when none of them is generated; {} for a
    record without per-token figures (confidence off)."""
    logprobs, entropies = record.get(OUTPUT_LOGPROBS), record.get(OUTPUT_ENTROPIES)
    if logprobs is None or entropies is None:
        return {}
    span = span_indices(answer_positions, record["num_prompt_tokens"], len(logprobs))
    return _span_figures(logprobs, entropies, span)
