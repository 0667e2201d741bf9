"""The activation record (one per answered question, or sample) and its `grading` entry.

A record is what capture made while the model answered: tokens, activations, the settings, and
(once a run writer stores it) the verdict of its results row, so that a record read alone says
which question it belongs to and how it was graded. The run writer (store/run_writer.py) stamps
every record it stores with `stamp(record, row)`, the one place a record's grading is built.

Public names:
    FORMAT_VERSION          the record format (written into every stored record)
    Grading                 the record's `grading` entry: the row's identity and verdict
    Record                  the record (TypedDict: every key documented there)
    GRADING_KEYS            the keys `grading` copies from the row, when the row has them
    grading_of(row) -> Grading
    stamp(record, row) -> record    the record with its grading, sample and format version (in place)
    record_identity(record) -> (question id, sample) or None

Example:
    >>> row = {"id": "q1", "category": "math", "answer": ["4"], "extracted": "4", "correct": True, "grader": "exact"}
    >>> record = stamp({"prompt": "2+2=", "response": "4"}, row)
    >>> record["grading"]["correct"], record["format_version"], record_identity(record)
    (True, 3, ('q1', None))
"""
from typing import Annotated, Any, NotRequired, TypedDict, cast

FORMAT_VERSION = 3       # 3: output_entropies and the answer span's figures; lm-eval generation records carry
#                          the confidence figures; 2: format_version and grading from the run writer (1: grading
#                          built per producer)

GRADING_KEYS = ("id", "category", "answer", "extracted", "correct", "grader", "grader_note", "correct_norm",
                "extracted_norm", "correct_bytes", "extracted_bytes")


class Grading(TypedDict):
    """A stored record's `grading`: its results row's identity and verdict, copied when the row is
    written (the run reader checks that a row's record is that row's by this id)."""
    id: Annotated[Any, "the results row's id"]
    category: Annotated[str | None, "the row's category"]
    answer: Annotated[Any, "the accepted answers"]
    extracted: Annotated[str | None, "what the grader read from the response"]
    correct: Annotated[bool | None, "the verdict (None: ungraded)"]
    grader: Annotated[str | None, "the grader that decided"]
    grader_note: NotRequired[Annotated[str, "why the verdict is what it is (a contradictory answer)"]]
    correct_norm: NotRequired[Annotated[bool | None, "log-likelihood scoring: the acc_norm verdict"]]
    extracted_norm: NotRequired[Annotated[str, "log-likelihood scoring: the choice acc_norm picked"]]
    correct_bytes: NotRequired[Annotated[bool | None, "log-likelihood scoring: the acc_bytes verdict"]]
    extracted_bytes: NotRequired[Annotated[str, "log-likelihood scoring: the choice acc_bytes picked"]]


class Record(TypedDict):
    """One question's record (.pkl, .safetensors, or a row of a shard). Tensors are detached, on the
    CPU, contiguous, in the capture dtype; a record with no `activations` was saved without capture."""
    prompt: Annotated[str | None, "the text asked (before system prompt and chat template)"]
    response: Annotated[str | None, "the decoded answer (log-likelihood scoring: the most likely choice)"]
    model: Annotated[str, "the model's name or path"]
    timestamp: Annotated[str, "ISO 8601, UTC, when the record was made"]
    input_ids: Annotated[Any, "1-D LongTensor: the prompt as fed (chat template applied)"]
    output_ids: Annotated[Any, "1-D LongTensor: generated tokens up to and including EOS (empty when scored)"]
    num_prompt_tokens: Annotated[int, "len(input_ids)"]
    num_generated_tokens: Annotated[int, "len(output_ids)"]
    activations: NotRequired[Annotated[dict[str, Any], "{layer name: Tensor[len(positions_kept), hidden]}"]]
    layer_names: NotRequired[Annotated[list[str], "the captured names, in order"]]
    positions: NotRequired[Annotated[Any, "the position mode or index list asked for"]]
    positions_kept: NotRequired[Annotated[list[int], "the absolute token index of each activation row"]]
    dtype: NotRequired[Annotated[str, "the activations' dtype"]]
    model_info: NotRequired[Annotated[dict[str, Any], "{class, model_type, num_layers, hidden_size, dtype}"]]
    generation: NotRequired[Annotated[dict[str, Any], "the decoding settings used (decoding path, chat template, "
                                                      "system prompt, sampling, harness)"]]
    versions: NotRequired[Annotated[dict[str, str], "tool, torch, transformers, python"]]
    output_logprobs: NotRequired[Annotated[list[float], "per output token: log p(token | prompt, earlier tokens)"]]
    output_entropies: NotRequired[Annotated[list[float], "per output token: entropy (nats) of the distribution it "
                                                         "was drawn from (raw, temperature 1)"]]
    answer_logprob_mean: NotRequired[Annotated[float, "mean of output_logprobs"]]
    answer_logprob_sum: NotRequired[Annotated[float, "sum of output_logprobs"]]
    first_token_entropy: NotRequired[Annotated[float, "entropy (nats) of the first generated token's distribution"]]
    answer_logprob_min: NotRequired[Annotated[float, "min of output_logprobs over the answer span (answer_positions; "
                                                     "without a span: over every output token)"]]
    answer_entropy_mean: NotRequired[Annotated[float, "mean of output_entropies over the answer span"]]
    answer_entropy_max: NotRequired[Annotated[float, "max of output_entropies over the answer span"]]
    answer_positions: NotRequired[Annotated[list[int], "positions of the tokens that spell the extracted answer"]]
    choice_logprobs: NotRequired[Annotated[list[float], "log-likelihood scoring: each choice's log-likelihood"]]
    requests: NotRequired[Annotated[list[dict[str, Any]], "lm-eval: each request's rows [start, end) of the "
                                                          "activations, continuation ids and log-likelihood"]]
    task: NotRequired[Annotated[str, "lm-eval: the task"]]
    doc_id: NotRequired[Annotated[Any, "lm-eval: the document's id"]]
    inspect: NotRequired[Annotated[dict[str, Any], "Inspect: task, sample id, epoch, eval id, generate calls"]]
    sample: NotRequired[Annotated[int, "the answer's index with several samples per question"]]
    grading: NotRequired[Annotated[Grading, "the results row's identity and verdict (stored records)"]]
    format_version: NotRequired[Annotated[int, "the record format (stored records)"]]
    interventions: NotRequired[Annotated[list[dict[str, Any]], "the edits made while answering (steering, ablation; "
                                         "schema/interventions.py); absent for a plain record"]]


CONTRACTS = (Record, Grading)


def grading_of(row: Any) -> Grading:
    """The `grading` entry of a results row's record: GRADING_KEYS the row has."""
    grading = {key: row.get(key) for key in GRADING_KEYS[:6]}
    grading.update({key: row[key] for key in GRADING_KEYS[6:] if key in row})
    return cast(Grading, grading)          # GRADING_KEYS are Grading's keys


def stamp(record: Any, row: Any) -> Any:
    """The record, given its row's grading, its sample index (when the row has one) and the format
    version (in place; returned)."""
    record["grading"] = grading_of(row)
    if row.get("sample") is not None:
        record["sample"] = row["sample"]
    record["format_version"] = FORMAT_VERSION
    return record


def record_identity(record: Any) -> tuple[str, Any] | None:
    """(question id, sample) that a record says it belongs to (its "grading" entry, written with
    the row), or None for a record that names no question (the notebook API's, seed pickles)."""
    grading = record.get("grading") if isinstance(record, dict) else None
    if not isinstance(grading, dict) or grading.get("id") is None:
        return None
    return str(grading["id"]), record.get("sample")
