"""The results row: its keys, its type, and the one place rows are built and upgraded.

Every producer (generation, log-likelihood scoring, a question that could not be answered) builds
its row here, and every reader (resume, the run reader, analysis) reads rows through these names.
This module imports nothing of the project, so every layer may import it.

Public names:
    ID, SAMPLE, CATEGORY, QUESTION, PROMPT, RESPONSE, ANSWER, EXTRACTED, CORRECT, GRADER,
    NUM_PROMPT_TOKENS, NUM_GENERATED_TOKENS, SYSTEM_PROMPT, ERROR, UNIT, ANSWER_POSITIONS, GRADER_NOTE,
    ACTIVATION_FILE, ACTIVATION_SHARD, ACTIVATION_ROW,
    ANSWER_LOGPROB_MEAN, ANSWER_LOGPROB_SUM, FIRST_TOKEN_ENTROPY, P_TRUE   the row keys, one constant each
    GOLD_LOGPROB_SUM, GOLD_LOGPROB_MEAN, GOLD_NUM_TOKENS   --gold_logprob's keys (eval/gold_logprob.py)
    ANSWER_LOGPROB_MIN, ANSWER_ENTROPY_MEAN, ANSWER_ENTROPY_MAX   the answer span's token figures (issue 27)
    CONFIDENCE_FIELDS          the output-confidence keys every generated row has: the six figures above
                               (not P_TRUE: --p_true only)
    SEMANTIC_ENTROPY, SELF_CONSISTENCY, EIGENSCORE   sample-based scores of a question (analysis, --num_samples > 1)
    SCORE_ORIENTATION          {score: +1 | -1}: +1 when a higher value means "more likely correct" (fixed by definition)
    LEGACY_UNIT                "batch": the unit key's name in runs written before 2026-12-03
    RESULT_FIELDS              the keys every row has, in order
    ResultRow                  a TypedDict of a results row (all keys documented there)
    answered_row(row, prompt, response, verdict, num_prompt_tokens, num_generated_tokens, ...)
    error_row(row, prompt, num_prompt_tokens, message, unit, system_prompt=None)
    row_key(row)               what identifies a row: its id, or (id, sample)
    row_unit(row)              the row's unit key (also from a legacy "batch")
    upgrade_row(row)           a row as read from any version's results.jsonl, in today's schema

Example:
    >>> row = {"id": "q1", "question": "2+2?", "answer": "4", "category": "math"}
    >>> r = answered_row(row, "Q: 2+2?\\nA:", "4", {"extracted": "4", "correct": True, "grader": "exact"}, 7, 2)
    >>> r[CORRECT], row_key(r), row_unit(upgrade_row({"id": "q1", "batch": "3f2a"}))
    (True, 'q1', '3f2a')
"""
from typing import Annotated, Any, NotRequired, TypedDict

__all__ = ["ID", "SAMPLE", "CATEGORY", "QUESTION", "PROMPT", "RESPONSE", "ANSWER", "EXTRACTED", "CORRECT", "GRADER",
           "NUM_PROMPT_TOKENS", "NUM_GENERATED_TOKENS", "SYSTEM_PROMPT", "ERROR", "ANSWER_POSITIONS", "GRADER_NOTE",
           "UNIT", "LEGACY_UNIT", "ACTIVATION_FILE", "ACTIVATION_SHARD", "ACTIVATION_ROW", "ANSWER_LOGPROB_MEAN",
           "ANSWER_LOGPROB_SUM", "FIRST_TOKEN_ENTROPY", "P_TRUE", "CONFIDENCE_FIELDS",
           "GOLD_LOGPROB_SUM", "GOLD_LOGPROB_MEAN", "GOLD_NUM_TOKENS",
           "ANSWER_LOGPROB_MIN", "ANSWER_ENTROPY_MEAN", "ANSWER_ENTROPY_MAX", "SEMANTIC_ENTROPY", "SELF_CONSISTENCY",
           "EIGENSCORE", "SCORE_ORIENTATION", "RESULT_FIELDS", "ResultRow",
           "answered_row", "error_row", "row_key", "row_unit", "upgrade_row"]

ID, SAMPLE, CATEGORY, QUESTION, PROMPT = "id", "sample", "category", "question", "prompt"
RESPONSE, ANSWER, EXTRACTED, CORRECT, GRADER = "response", "answer", "extracted", "correct", "grader"
NUM_PROMPT_TOKENS, NUM_GENERATED_TOKENS = "num_prompt_tokens", "num_generated_tokens"
SYSTEM_PROMPT, ERROR, ANSWER_POSITIONS = "system_prompt", "error", "answer_positions"
GRADER_NOTE = "grader_note"    # why a verdict is what it is, e.g. "letter A but text of C" (contradictory)
UNIT = "unit"                  # the key of the planned unit of questions the row was answered in
LEGACY_UNIT = "batch"          # its name before 2026-12-03 (it never was a generate() batch)
ACTIVATION_FILE = "activation_file"                        # the file store: a path relative to the run
ACTIVATION_SHARD, ACTIVATION_ROW = "activation_shard", "activation_row"   # the shard store
# output confidence of a generated answer (capture/generation.py), from the forward passes that generated it
ANSWER_LOGPROB_MEAN, ANSWER_LOGPROB_SUM = "answer_logprob_mean", "answer_logprob_sum"
FIRST_TOKEN_ENTROPY = "first_token_entropy"
P_TRUE = "p_true"              # --p_true: the model's P(True) that its answer is correct (eval/p_true.py)
# --gold_logprob: the gold answer's log-likelihood under teacher forcing (eval/gold_logprob.py)
GOLD_LOGPROB_SUM, GOLD_LOGPROB_MEAN, GOLD_NUM_TOKENS = "gold_logprob_sum", "gold_logprob_mean", "gold_num_tokens"
# over the answer span's tokens: the lowest token log-probability, the mean and the highest entropy (nats);
# the span is the extracted answer's tokens, else every kept generated token (capture/confidence.py)
ANSWER_LOGPROB_MIN, ANSWER_ENTROPY_MEAN, ANSWER_ENTROPY_MAX = "answer_logprob_min", "answer_entropy_mean", \
    "answer_entropy_max"
CONFIDENCE_FIELDS = (ANSWER_LOGPROB_MEAN, ANSWER_LOGPROB_SUM, FIRST_TOKEN_ENTROPY, ANSWER_LOGPROB_MIN,
                     ANSWER_ENTROPY_MEAN, ANSWER_ENTROPY_MAX)
# computed by the analysis from a question's samples (--num_samples > 1), never written into rows
SEMANTIC_ENTROPY, SELF_CONSISTENCY, EIGENSCORE = "semantic_entropy", "self_consistency", "eigenscore"
# the direction of each single score, fixed by its definition (never fitted): +1 when a higher value means the
# answer is more likely correct (a log-probability, P(True), agreement), -1 when less likely (an entropy)
SCORE_ORIENTATION = {ANSWER_LOGPROB_MEAN: 1, ANSWER_LOGPROB_SUM: 1, ANSWER_LOGPROB_MIN: 1, FIRST_TOKEN_ENTROPY: -1,
                     ANSWER_ENTROPY_MEAN: -1, ANSWER_ENTROPY_MAX: -1, P_TRUE: 1, SEMANTIC_ENTROPY: -1,
                     SELF_CONSISTENCY: 1, EIGENSCORE: -1}

RESULT_FIELDS = (ID, CATEGORY, QUESTION, PROMPT, RESPONSE, ANSWER, EXTRACTED, CORRECT, GRADER,
                 NUM_PROMPT_TOKENS, NUM_GENERATED_TOKENS)


FORMAT_VERSION = 4       # 4: interventions (steered / ablated rows), gold_logprob_sum / _mean, gold_num_tokens
#                          3: the answer span's figures (answer_logprob_min, answer_entropy_mean / _max) and
#                          lm-eval / Inspect generation rows with answer_positions and every confidence field
#                          2: the unit key is "unit" (1, before 2026-12-03: "batch"; upgrade_row reads both)


class ResultRow(TypedDict):
    """One line of results.jsonl: one answered (or failed) question, or one sample of it. Every
    producer (main.py, the lm-eval backend, the Inspect provider) writes this shape; the keys marked
    not required are present where they apply."""
    id: Annotated[Any, "the question's id: a string for rows this tool writes (lm-eval: <task>/<doc_id>)"]
    category: Annotated[str | None, "the benchmark's category (lm-eval and Inspect: the task)"]
    question: Annotated[str, "the question as the benchmark states it"]
    prompt: Annotated[str | None, "the exact text asked, before system prompt and chat template"]
    response: Annotated[str | None, "the model's answer (None: not answered)"]
    answer: Annotated[Any, "the accepted answers (a list), or the benchmark's answer"]
    extracted: Annotated[str | None, "what the grader read from the response"]
    correct: Annotated[bool | None, "the verdict; None: ungraded (no gold answer) or not answered"]
    grader: Annotated[str | None, "the grader that decided (lm-eval:<metric>, inspect:<scorer>, ...)"]
    num_prompt_tokens: Annotated[int | None, "tokens of the prompt as fed (chat template included)"]
    num_generated_tokens: Annotated[int, "tokens generated (0 for log-likelihood scoring and errors)"]
    sample: NotRequired[Annotated[int, "the answer's index with --num_samples > 1 (Inspect: epoch - 1)"]]
    grader_note: NotRequired[Annotated[str, "why a verdict is what it is, e.g. a contradictory answer"]]
    system_prompt: NotRequired[Annotated[str, "the system prompt, when the run used one"]]
    error: NotRequired[Annotated[str, "why the question was not answered (then correct is None)"]]
    unit: NotRequired[Annotated[str, "main.py: the key (hex) of the planned unit the row was answered in"]]
    answer_positions: NotRequired[Annotated[list[int], "generated positions (prompt length + index into the "
                                                       "generated tokens) that spell the extracted answer; present "
                                                       "when the record keeps a generated position (main.py, "
                                                       "lm-eval generate_until, Inspect)"]]
    activation_file: NotRequired[Annotated[str, "the file store: the record, activations/<name>.<pkl|safetensors>"]]
    activation_shard: NotRequired[Annotated[str, "the shard store: activations/units/<key>.safetensors"]]
    activation_row: NotRequired[Annotated[int, "the shard store: the question's row in that shard"]]
    answer_logprob_mean: NotRequired[Annotated[float, "generated rows: mean log p(token) over the answer's tokens "
                                                      "(raw distribution, temperature 1, EOS included; nats)"]]
    answer_logprob_sum: NotRequired[Annotated[float, "generated rows: their sum, the whole answer's log-probability"]]
    first_token_entropy: NotRequired[Annotated[float, "generated rows: entropy (nats) of the first token's distribution"]]
    answer_logprob_min: NotRequired[Annotated[float, "generated rows: the lowest log p(token) over the answer span: the "
                                                     "tokens of answer_positions (the extracted answer's, computed "
                                                     "with or without capture), else every kept token (as the mean)"]]
    answer_entropy_mean: NotRequired[Annotated[float, "generated rows: the mean entropy (nats) of the answer span's "
                                                      "tokens' distributions (raw distribution, temperature 1)"]]
    answer_entropy_max: NotRequired[Annotated[float, "generated rows: the highest entropy (nats) over the answer span"]]
    p_true: NotRequired[Annotated[float, "--p_true: the model's P(True) that its answer is correct (Kadavath et al.)"]]
    gold_logprob_sum: NotRequired[Annotated[float, "--gold_logprob: log p(gold answer | prompt) under teacher forcing "
                                                   "(nats, float64 sum over its tokens; eval/gold_logprob.py)"]]
    gold_logprob_mean: NotRequired[Annotated[float, "--gold_logprob: that sum / gold_num_tokens"]]
    gold_num_tokens: NotRequired[Annotated[int, "--gold_logprob: tokens of the gold answer as scored"]]
    interventions: NotRequired[Annotated[list[dict[str, Any]], "the edits made while answering (steering, "
                                         "ablation; schema/interventions.py); absent for a plain run"]]
    scoring: NotRequired[Annotated[str, "--mc_scoring loglikelihood: \"loglikelihood\""]]
    style: NotRequired[Annotated[str, "--mc_scoring loglikelihood: what was scored (letters or texts)"]]
    correct_norm: NotRequired[Annotated[bool, "log-likelihood scoring: verdict by log-likelihood per character (acc_norm)"]]
    extracted_norm: NotRequired[Annotated[str, "log-likelihood scoring: the choice acc_norm picked"]]
    correct_bytes: NotRequired[Annotated[bool, "log-likelihood scoring: verdict by log-likelihood per byte (acc_bytes)"]]
    extracted_bytes: NotRequired[Annotated[str, "log-likelihood scoring: the choice acc_bytes picked"]]
    choice_logprobs: NotRequired[Annotated[list[float], "log-likelihood scoring: each choice's log-likelihood"]]
    choices: NotRequired[Annotated[list[str], "lm-eval and Inspect multiple choice: the choices"]]
    task: NotRequired[Annotated[str, "lm-eval and Inspect: the task"]]
    doc_id: NotRequired[Annotated[Any, "lm-eval: the document's id in its task"]]
    metric: NotRequired[Annotated[str | None, "lm-eval: the metric that decided correct"]]
    metrics: NotRequired[Annotated[dict[str, Any], "lm-eval: the document's metrics"]]
    sample_id: NotRequired[Annotated[Any, "Inspect: the sample's id"]]
    epoch: NotRequired[Annotated[int, "Inspect: the sample's epoch (1-based)"]]
    score: NotRequired[Annotated[Any, "Inspect: the first score's value, as Inspect gave it"]]
    scores: NotRequired[Annotated[dict[str, Any], "Inspect: every scorer's value"]]


CONTRACTS = (ResultRow,)


def _base(row, prompt, system_prompt):
    out = dict.fromkeys(RESULT_FIELDS)
    out.update({ID: row[ID], CATEGORY: row.get(CATEGORY), QUESTION: row[QUESTION], PROMPT: prompt,
                ANSWER: row[ANSWER]})
    if system_prompt:
        out[SYSTEM_PROMPT] = system_prompt
    if row.get(SAMPLE) is not None:
        out[SAMPLE] = row[SAMPLE]
    return out


def answered_row(row, prompt, response, verdict, num_prompt_tokens, num_generated_tokens,
                 system_prompt=None, **extra) -> ResultRow:
    """The row of an answered benchmark `row`: `verdict` is the grader's {extracted, correct,
    grader[, grader_note]}; `extra` adds producer-specific keys (e.g. the log-likelihood scores)."""
    out = _base(row, prompt, system_prompt)
    out.update({RESPONSE: response, EXTRACTED: verdict["extracted"], CORRECT: verdict["correct"],
                GRADER: verdict["grader"], NUM_PROMPT_TOKENS: num_prompt_tokens,
                NUM_GENERATED_TOKENS: num_generated_tokens}, **extra)
    if verdict.get(GRADER_NOTE):
        out[GRADER_NOTE] = verdict[GRADER_NOTE]
    return out


def error_row(row, prompt, num_prompt_tokens, message, unit, system_prompt=None) -> ResultRow:
    """The row of a question that was not answered: every field, no answer, the error."""
    out = _base(row, prompt, system_prompt)
    out.update({NUM_PROMPT_TOKENS: num_prompt_tokens, NUM_GENERATED_TOKENS: 0, ERROR: message, UNIT: unit})
    return out


def row_key(row):
    """What makes a results row or planned question unique in a run: its id, or (id, sample) when
    it has a sample index (a plain id for single-sample runs keeps {id: ...} maps valid)."""
    sample = row.get(SAMPLE)
    return row.get(ID) if sample is None else (row.get(ID), sample)


def row_unit(row):
    """The key of the unit the row was answered in (None if it has none)."""
    unit = row.get(UNIT)
    return row.get(LEGACY_UNIT) if unit is None else unit


def upgrade_row(row):
    """A row read from results.jsonl of any version, in today's schema (the row itself, changed
    in place): the unit key is moved from "batch" (before 2026-12-03) to "unit"."""
    if LEGACY_UNIT in row and UNIT not in row:
        row[UNIT] = row.pop(LEGACY_UNIT)
    return row
