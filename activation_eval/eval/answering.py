"""Answer and grade benchmark rows: rows -> prompts -> records -> graded results.

Public names:
    answer_rows(model, tokenizer, rows, settings=None, capture=None, batch_size=None) -> [(result, record), ...]
    iter_answers(...same...) -> (result, record), ... as each answer is finished
    RESULT_FIELDS   the keys of every result row, in order (schema.RESULT_FIELDS)
    answer_token_positions(response, extracted, output_ids, tokenizer, num_prompt_tokens)
                    absolute token positions of the extracted answer's last occurrence in the response
    captures_generated(record)   does the record keep activations of a generated position? (then the row
                    and record hold answer_positions)

Example:
    >>> from activation_eval.capture.generation import GenerationSettings
    >>> from activation_eval.eval.benchmark import load_benchmark
    >>> rows = load_benchmark()[:3]
    >>> for result, record in answer_rows(model, tok, rows, GenerationSettings(max_new_tokens=4)):
    ...     print(result["id"], result["answer"], result["correct"], len(record["output_ids"]))   # a random model
    geo-001 ['Paris'] False 4
    geo-002 ['Tokyo'] False 4
    geo-003 ['Rome'] False 4

A result is JSON-able: {id, category, question, prompt, response, answer (accepted answers),
extracted, correct, grader, num_prompt_tokens, num_generated_tokens, answer_logprob_mean,
answer_logprob_sum, first_token_entropy, answer_logprob_min, answer_entropy_mean, answer_entropy_max
(the output confidence, schema.CONFIDENCE_FIELDS: see schema.ResultRow; absent when settings.confidence
is off; the last three over the extracted answer's tokens, capture/confidence.py)}, plus "system_prompt" when
settings has one and `sample` for rows that carry one (runner.with_samples). `prompt` is the exact
text asked (with few-shot examples; see prompts.prompt_of), before the system prompt and chat
template that generation applies. A row without a gold answer (a bare question) is ungraded:
correct, extracted and grader are None. With `capture`, each record also holds its activations (the
run writer stamps a stored record with its row's verdict, "grading"); when generated positions are
captured, record and result also hold "answer_positions" (see answer_token_positions). When the settings sample, a row's random
stream is seeded from (settings.seed, its id, its sample index), so its answer does not depend on
its batch.
"""
import re

from ..capture.confidence import answer_span_fields
from ..capture.generation import iter_records
from ..schema import ANSWER_POSITIONS, CONFIDENCE_FIELDS, answered_row
from ..schema.interventions import intervention_fields
from .gold import has_gold
from .grading import grade
from .prompts import prompt_of


def sample_key(row):
    """The key that, with the seed, seeds a row's sampling stream: its id and sample index (0 when
    it has none, so a single-sample run answers like sample 0 of a multi-sample one)."""
    return f"{row.get('id')}\x1f{row.get('sample') or 0}"


_UNGRADED = {"extracted": None, "correct": None, "grader": None}  # a bare question has no gold answer


def answer_rows(model, tokenizer, rows, settings=None, capture=None, batch_size=None):
    """Generate and grade every row (at most `batch_size` decoded together); results keep the rows' order."""
    pairs = {}
    for result, record in iter_answers(model, tokenizer, rows, settings, capture, batch_size):
        pairs[result["id"], result.get("sample")] = (result, record)
    return [pairs[row["id"], row.get("sample")] for row in rows]


def iter_answers(model, tokenizer, rows, settings=None, capture=None, batch_size=None):
    """Yield (result, record) for each row as its answer is finished (see answer_rows)."""
    prompts = [prompt_of(row) for row in rows]
    system_prompt = getattr(settings, "system_prompt", None)
    keys = [sample_key(row) for row in rows]
    for index, record in iter_records(model, tokenizer, prompts, settings, capture, batch_size, keys):
        row = rows[index]
        verdict = grade(record["response"], row) if has_gold(row) else _UNGRADED
        positions = answer_token_positions(record["response"], verdict["extracted"], record["output_ids"],
                                           tokenizer, record["num_prompt_tokens"])
        record.update(answer_span_fields(record, positions))        # the span figures over the answer's tokens
        result = answered_row(row, prompts[index], record["response"], verdict, record["num_prompt_tokens"],
                              record["num_generated_tokens"], system_prompt,
                              **{k: record[k] for k in CONFIDENCE_FIELDS if k in record}, **intervention_fields(record))
        if captures_generated(record):
            result[ANSWER_POSITIONS] = record[ANSWER_POSITIONS] = positions
        yield result, record


def captures_generated(record):
    """Does the record keep activations of any generated position?"""
    kept = record.get("positions_kept")
    return "activations" in record and kept is not None and any(
        int(p) >= record["num_prompt_tokens"] for p in kept)


def answer_token_positions(response, extracted, output_ids, tokenizer, num_prompt_tokens):
    """Absolute token positions (prompt length + index into output_ids) of the generated tokens that
    cover the LAST occurrence of `extracted` in `response` (case-insensitive) that stands as a whole word (no
    letter or digit touching it: the letter "B" of "B. Because ..." is not the "b" of "Because"), else the last
    occurrence anywhere; [] when it does not occur verbatim (e.g. a choice graded by its text, an empty answer).

    `response` is the record's: decode(output_ids, skip_special_tokens=True).strip(). Each token's
    character span comes from decoding growing prefixes of output_ids (exact for the tokens the
    model actually produced, unlike re-encoding the text).
    >>> ids = tok("It is Paris.")["input_ids"]                   # as if generated after a 12-token prompt
    >>> [tok.decode(i) for i in ids]                             # a tiny tokenizer: short pieces
    ['I', 't', ' is', ' ', 'P', 'ar', 'is', '.']
    >>> answer_token_positions("It is Paris.", "paris", ids, tok, 12)     # 12 + 4, 12 + 5, 12 + 6
    [16, 17, 18]
    """
    if not extracted or not response:
        return []
    needle = re.escape(str(extracted))
    matches = (list(re.finditer(rf"(?<![^\W_]){needle}(?![^\W_])", response, re.IGNORECASE))
               or list(re.finditer(needle, response, re.IGNORECASE)))
    if not matches:
        return []
    ids = [int(i) for i in (output_ids.tolist() if hasattr(output_ids, "tolist") else output_ids)]
    ends = [len(tokenizer.decode(ids[:i + 1], skip_special_tokens=True)) for i in range(len(ids))]
    full = tokenizer.decode(ids, skip_special_tokens=True)
    lead = len(full) - len(full.lstrip())          # the record's response was stripped
    if full[lead:lead + len(response)] != response:
        return []                                  # decoding does not reproduce the response: no spans
    start, end = matches[-1].start() + lead, matches[-1].end() + lead
    return [num_prompt_tokens + i for i in range(len(ids))
            if (ends[i - 1] if i else 0) < end and ends[i] > start]
