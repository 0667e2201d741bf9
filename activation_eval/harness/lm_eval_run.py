"""The rows and records of an lm-eval run, handed to the run writer: one per (task, doc_id).

Public names:
    write_run_folder(lm, results) -> summary     lm: an ActivationEvalLM that answered the requests;
                                                 results: lm-eval's, with "samples" (log_samples)
    doc_rows(results) -> [(task, doc_id, row fields), ...]   rows from lm-eval's samples alone

Example (tasks/tiny_mc.yaml: a local multiple-choice task):
    >>> import lm_eval
    >>> from lm_eval.tasks import TaskManager
    >>> from activation_eval.harness import ActivationEvalLM
    >>> lm = ActivationEvalLM(pretrained="models/tiny-llama", output_dir="runs/mc", layers=[-1], device="cpu",
    ...                       batch_size=8)
    >>> results = lm_eval.simple_evaluate(model=lm, tasks=["tiny_mc"], limit=3, log_samples=True,
    ...                                   task_manager=TaskManager(include_path="tasks", include_defaults=False))
    >>> [(task, doc_id) for task, doc_id, _ in doc_rows(results)]
    [('tiny_mc', 0), ('tiny_mc', 1), ('tiny_mc', 2)]
    >>> summary = lm.write_run(results)                     # write_run_folder(lm, results), then the lock released
    >>> summary["accuracy"] == results["results"]["tiny_mc"]["acc,none"]      # lm-eval's acc, per document
    True

A row (schema.answered_row; one per (task, doc_id), the first filter's sample):
    id "<task>/<doc_id>", category = the task, question = prompt = the first request's context as
    lm-eval built it (few-shot examples, chat template included), answer = lm-eval's target,
    correct = the document's "acc" when the task has one (multiple choice), else its first metric,
    as a bool when that is 0/1 (else None, the value is in metrics), grader "lm-eval:<metric>";
    log-likelihood tasks: choices (the continuations), choice_logprobs, choice_is_greedy, response
    and extracted = the most likely choice; generation: response = the model's text, extracted =
    the filtered answer, the confidence fields (schema.CONFIDENCE_FIELDS, from the generate() call
    that wrote the answer; the answer span is the filtered answer's tokens in the response, else
    every kept token) and, when the record keeps generated positions, answer_positions (as main.py's:
    prompt length + index into the generated tokens); metrics {name: value}, metrics_by_filter when the task has several
    filters, task, doc_id, and the record's place (activation_file, or activation_shard +
    activation_row).
A record: the generation record's keys (ACTIVATION_CAPTURE_README.md; generation documents also
output_logprobs, output_entropies, the confidence fields and answer_positions). For log-likelihood
documents input_ids = the first request's fed context, output_ids empty, and the activations are
every request's kept positions back to back in request order (choice order); "requests" gives each
request's rows [start, end), continuation ids, context length and log-likelihood. The run writer
stamps it with the row's verdict ("grading"; the run reader checks that a record is its row's).

Memory: a document's activations wait on disk (the model's staging, one file per batch) until its
record is assembled here, then go to the writer one document at a time; rows and records are
flushed as they are made (the shard store: whenever a shard is full).
"""
import datetime
import logging
import time

import torch

from .. import schema
from ..capture.confidence import confidence_fields, span_indices
from ..capture.generation import model_name, model_summary, versions
from ..eval.answering import answer_token_positions
from ..schema.interventions import intervention_fields
from ..schema.summary import build_summary

log = logging.getLogger(__name__)


def doc_rows(results):
    """[(task, doc_id, fields)] from lm-eval's samples: one per (task, doc_id), in task then doc order."""
    samples = results.get("samples") if isinstance(results, dict) else None
    if not isinstance(samples, dict):
        raise ValueError("lm-eval's results hold no per-document samples: run simple_evaluate with "
                         "log_samples=True (activation_eval.harness.simple_evaluate does this itself)")
    out = []
    for task, task_samples in samples.items():
        by_doc = {}
        for sample in task_samples:
            by_doc.setdefault(sample["doc_id"], []).append(sample)
        for doc_id in sorted(by_doc, key=lambda d: (not isinstance(d, int), d if isinstance(d, int) else str(d))):
            out.append((task, doc_id, _fields(task, doc_id, by_doc[doc_id])))
    return out


def _fields(task, doc_id, samples):
    first = samples[0]
    names = list(first.get("metrics") or [])
    metrics = {name: _plain(first.get(name)) for name in names}
    metric = "acc" if "acc" in metrics else (names[0] if names else None)
    value = metrics.get(metric)
    correct = bool(value) if isinstance(value, (bool, int, float)) and value in (0, 1) else None
    args = [tuple(a) for a in first.get("arguments") or []]
    resps = first.get("resps") or []
    fields = {"prompt": str(args[0][0]) if args else "", "answer": _plain(first.get("target")),
              "metric": metric, "correct": correct, "metrics": metrics, "task": task, "doc_id": doc_id,
              "filter": first.get("filter")}
    if len(samples) > 1:
        fields["metrics_by_filter"] = {s.get("filter"): {n: _plain(s.get(n)) for n in s.get("metrics") or []}
                                       for s in samples}
    if args and len(args[0]) == 2 and isinstance(args[0][1], str):          # log-likelihood requests
        lls = [float(r[0][0]) for r in resps]
        best = max(range(len(lls)), key=lls.__getitem__) if lls else None
        fields.update(choices=[a[1] for a in args], choice_logprobs=lls,
                      choice_is_greedy=[bool(r[0][1]) for r in resps],
                      response=args[best][1] if best is not None else None)
        fields["extracted"] = fields["response"]
    elif args and len(args[0]) == 1:                                          # loglikelihood_rolling
        fields.update(response=None, extracted=None, loglikelihood=float(resps[0][0]) if resps else None)
    else:                                                                     # generate_until
        fields["response"] = str(resps[0][0]) if resps and resps[0] else None
        filtered = first.get("filtered_resps") or [None]
        fields["extracted"] = _plain(filtered[0])
    return fields


def _plain(value):
    """A JSON-ready copy of a metric, target or filtered answer (numpy numbers become Python ones)."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def write_run_folder(lm, results):
    """Every document's row and record through lm's run writer, then (process 0) the merge, the tasks
    in run_config.json and summary.json.

    Several processes (lm.world_size > 1; every process calls this, `results` is None except on
    process 0): each writes its own documents' records and rows (from the samples it kept:
    lm.own_samples), then process 0 merges the rows in lm-eval's document order; returns the summary
    on process 0, else None.
    """
    started = time.time()
    writer = lm.writer
    several = lm.world_size > 1
    if several and lm.own_samples is None:
        raise RuntimeError(f"process {lm.rank} of {lm.world_size}: lm-eval gathered no samples from this process; "
                           f"run with activation_eval.harness.simple_evaluate (it asks lm-eval for samples)")
    docs = doc_rows({"samples": lm.own_samples} if several else results)
    shared = {"model": model_name(lm.model), "model_info": model_summary(lm.model), "versions": versions(),
              **intervention_fields({"interventions": lm.steering.entries})}
    for task, doc_id, fields in docs:
        entries = sorted(lm.requests_seen.get((task, doc_id), []), key=lambda e: e["request_index"])
        staged = lm.capture_activations and entries and all(e.get("staged") is not None for e in entries)
        confidence = _confidence(lm.tokenizer, fields, entries, bool(staged))
        row = _row(task, doc_id, fields, entries, confidence)
        row.update(intervention_fields(shared))                   # a steered run's rows say so
        writer.add(row, _record(lm, row, entries, shared, confidence) if staged else None)
        for e in entries:
            if e.get("staged") is not None:
                lm.staging.drop(e["staged"])
        if writer.store == "files" or writer.full():
            writer.flush()
    writer.flush()
    if several:
        lm.barrier()                                             # every process's rows and records are written
        if lm.rank != 0:
            lm.barrier()                                         # ... and process 0 has merged them
            return None
    final = writer.finish(order=[f"{task}/{doc_id}" for task, doc_id, _ in doc_rows(results)])
    config = results.get("config") or {}
    writer.update_config(model_args=_plain(config.get("model_args")), tasks=list(results.get("samples") or {}),
                         limit=_plain(config.get("limit")))
    summary = writer.write_summary(_summary(lm, final, results, time.time() - started))
    if several:
        lm.barrier()
    return summary


def _confidence(tokenizer, fields, entries, captured):
    """A generation document's confidence fields (capture/confidence.py) from the log-probabilities and
    entropies its first request's generate() call gave (lm_eval_model.py), the span figures over the
    filtered answer's tokens, plus answer_positions when `captured` keeps a generated position; {} for
    other documents."""
    first = min(entries, key=lambda e: e["request_index"]) if entries else None
    if first is None or first["kind"] != "generate_until":
        return {}
    n_prompt = len(first["context_ids"])
    extracted = fields.get("extracted")
    positions = answer_token_positions((fields.get("response") or "").strip(),
                                       extracted.strip() if isinstance(extracted, str) else extracted,
                                       first["output_ids"], tokenizer, n_prompt)
    out = {}
    if first.get("logprobs") is not None:                 # confidence=false: none
        out = confidence_fields(first["logprobs"], first["entropies"],
                                span_indices(positions, n_prompt, len(first["output_ids"])))
    if captured and any(p >= n_prompt for p in first["positions"] or ()):
        out[schema.ANSWER_POSITIONS] = positions
    return out


def _row(task, doc_id, fields, entries, confidence):
    prompt = fields.pop("prompt")
    response = fields.pop("response", None)
    verdict = {"extracted": fields.pop("extracted", None), "correct": fields.pop("correct"),
               "grader": f"lm-eval:{fields['metric']}" if fields.get("metric") else "lm-eval"}
    first = min(entries, key=lambda e: e["request_index"]) if entries else None
    n_prompt = len(first["context_ids"]) if first else None
    n_gen = len(first.get("output_ids") or []) if first else 0
    question = {schema.ID: f"{task}/{doc_id}", schema.CATEGORY: task, schema.QUESTION: prompt,
                schema.ANSWER: fields.pop("answer")}
    extra = {k: confidence[k] for k in (*schema.CONFIDENCE_FIELDS, schema.ANSWER_POSITIONS) if k in confidence}
    return schema.answered_row(question, prompt, response, verdict, n_prompt, n_gen, **fields, **extra)


def _record(lm, row, entries, shared, confidence):
    """The document's record: its requests' activations (read back from the staging) back to back."""
    first = entries[0]
    parts = [lm.staging.get(e["staged"]) for e in entries]
    acts = {name: torch.cat([p[name] for p in parts]) for name in lm.layer_names}
    kept, requests, start = [], [], 0
    for e in entries:
        n = len(e["positions"])
        kept += [int(p) for p in e["positions"]]
        info = {"kind": e["kind"], "request_index": e["request_index"], "rows": [start, start + n],
                "num_context_tokens": len(e["context_ids"])}
        if e["kind"] == "loglikelihood":
            info.update(continuation_ids=e["continuation_ids"], loglikelihood=e["loglikelihood"],
                        is_greedy=e["is_greedy"])
        requests.append(info)
        start += n
    loglik = first["kind"] == "loglikelihood"
    output_ids = [] if loglik else first["output_ids"]
    positions = lm.capture_settings.positions
    return {"prompt": row[schema.PROMPT], "response": row[schema.RESPONSE], "model": shared["model"],
            "timestamp": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "input_ids": torch.tensor(first["context_ids"], dtype=torch.long),
            "output_ids": torch.tensor(output_ids, dtype=torch.long), **shared,
            "generation": {"decoding": first["kind"], "harness": "lm-eval"},
            "num_prompt_tokens": len(first["context_ids"]), "num_generated_tokens": len(output_ids),
            "activations": acts, "layer_names": list(lm.layer_names),
            "positions": ("scored" if loglik else "all") if positions is None else positions,
            "positions_kept": kept, "dtype": str(next(iter(acts.values())).dtype).replace("torch.", ""),
            "requests": requests, "task": row["task"], "doc_id": row["doc_id"], **confidence}


def _summary(lm, rows, results, elapsed):
    """schema/summary.py's summary: each task scored by its metric (acc, exact_match, ...)."""
    return build_summary(rows, producer="lm-eval", model=model_name(lm.model),
                         benchmark=", ".join(results.get("samples") or {}), output_dir=lm.output_dir,
                         elapsed=elapsed,
                         processes=lm.world_size, capture_activations=lm.capture_activations,
                         activation_store=lm.activation_store, activation_dir="activations",
                         details={"lm_eval_results": _plain(results.get("results"))},
                         interventions=lm.steering.entries)
