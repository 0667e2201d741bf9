"""The run folder of an lm-eval run: one results row per (task, doc_id), its record, summary, config.

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
    >>> summary = write_run_folder(lm, results)
    >>> summary["accuracy"] == results["results"]["tiny_mc"]["acc,none"]      # lm-eval's acc, per document
    True

A row (schema.answered_row; one per (task, doc_id), the first filter's sample):
    id "<task>/<doc_id>", category = the task, question = prompt = the first request's context as
    lm-eval built it (few-shot examples, chat template included), answer = lm-eval's target,
    correct = the document's "acc" when the task has one (multiple choice), else its first metric,
    as a bool when that is 0/1 (else None, the value is in metrics), grader "lm-eval:<metric>";
    log-likelihood tasks: choices (the continuations), choice_logprobs, choice_is_greedy, response
    and extracted = the most likely choice; generation: response = the model's text, extracted =
    the filtered answer; metrics {name: value}, metrics_by_filter when the task has several
    filters, task, doc_id, and the record's place (activation_file, or activation_shard +
    activation_row).
A record: the generation record's keys (ACTIVATION_CAPTURE_README.md). For log-likelihood
documents input_ids = the first request's fed context, output_ids empty, and the activations are
every request's kept positions back to back in request order (choice order); "requests" gives each
request's rows [start, end), continuation ids, context length and log-likelihood. "grading"
holds the row's verdict (the run reader checks that a record is its row's).
"""
import datetime
import hashlib
import logging
import os
import time

import torch

from .. import schema
from ..capture.generation import model_name, model_summary, versions
from ..eval.scores import accuracy_stats
from ..store import run_folder
from ..store.atomic import write_json_atomic
from ..store.records import save_activations
from ..store.shards import write_shard

log = logging.getLogger(__name__)
SHARD_BYTES = 256 * 2**20           # a task's records are split into shards of about this size


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
    """Records (complete) first, then results.jsonl, run_config.json and summary.json.

    Several processes (lm.world_size > 1; every process calls this, `results` is None except on
    process 0): each writes its own documents' records and rows (shards/results.rank<R>.jsonl, from
    the samples it kept: lm.own_samples), then process 0 merges the rows in lm-eval's document
    order and writes run_config.json and summary.json; returns the summary on process 0, else None.
    """
    started = time.time()
    out = lm.output_dir
    if run_folder.is_run_folder(out):
        raise ValueError(f"output_dir {out!r} already holds a run ({run_folder.RESULTS_FILE}); nothing was "
                         f"written (choose a new folder)")
    several = lm.world_size > 1
    if several and lm.own_samples is None:
        raise RuntimeError(f"process {lm.rank} of {lm.world_size}: lm-eval gathered no samples from this process; "
                           f"run with activation_eval.harness.simple_evaluate (it asks lm-eval for samples)")
    rows = _write_docs(lm, doc_rows({"samples": lm.own_samples} if several else results),
                       f"rank{lm.rank}" if several else "")
    if not several:
        run_folder.append_results(run_folder.results_path(out), rows)
    else:
        run_folder.append_results(run_folder.shard_path(out, lm.rank), rows)
        lm.barrier()                                             # every process's rows and records are written
        if lm.rank != 0:
            lm.barrier()                                         # ... and process 0 has merged them
            return None
        rows = run_folder.merge_results(out, [f"{task}/{doc_id}" for task, doc_id, _ in doc_rows(results)])
    config = _run_config(lm, results)
    write_json_atomic(run_folder.config_path(out), config)
    summary = _summary(lm, rows, results, time.time() - started)
    write_json_atomic(run_folder.summary_path(out), summary)
    if several:
        lm.barrier()
    return summary


def _write_docs(lm, docs, tag):
    """The records of `docs` (files, or shards named with `tag`) and their rows (returned, not written)."""
    out = lm.output_dir
    acts_dir = os.path.join(out, run_folder.ACTIVATIONS_DIR)
    os.makedirs(out, exist_ok=True)
    shared = {"model": model_name(lm.model), "model_info": model_summary(lm.model), "versions": versions()}
    rows, pending = [], []                                   # pending: (row, record) awaiting a shard
    for task, doc_id, fields in docs:
        row = _row(task, doc_id, fields, lm.requests_seen.get((task, doc_id), []))
        entries = sorted(lm.requests_seen.get((task, doc_id), []), key=lambda e: e["request_index"])
        if lm.capture_activations and entries and all(e["activations"] is not None for e in entries):
            record = _record(lm, row, entries, shared)
            if lm.activation_store == "files":
                path = run_folder.record_path(acts_dir, row[schema.ID], lm.activation_format)
                os.makedirs(acts_dir, exist_ok=True)
                save_activations(record, path)
                row[schema.ACTIVATION_FILE] = os.path.relpath(path, out)
            else:
                pending.append((row, record))
        rows.append(row)
    _write_shards(out, acts_dir, pending, tag)
    return rows


def _row(task, doc_id, fields, entries):
    prompt = fields.pop("prompt")
    response = fields.pop("response", None)
    verdict = {"extracted": fields.pop("extracted", None), "correct": fields.pop("correct"),
               "grader": f"lm-eval:{fields['metric']}" if fields.get("metric") else "lm-eval"}
    first = min(entries, key=lambda e: e["request_index"]) if entries else None
    n_prompt = len(first["context_ids"]) if first else None
    n_gen = len(first.get("output_ids") or []) if first else 0
    question = {schema.ID: f"{task}/{doc_id}", schema.CATEGORY: task, schema.QUESTION: prompt,
                schema.ANSWER: fields.pop("answer")}
    return schema.answered_row(question, prompt, response, verdict, n_prompt, n_gen, **fields)


def _record(lm, row, entries, shared):
    first = entries[0]
    acts = {name: torch.cat([e["activations"][name] for e in entries]) for name in lm.layer_names}
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
            "requests": requests, "task": row["task"], "doc_id": row["doc_id"],
            "grading": {k: row[k] for k in ("id", "category", "answer", "extracted", "correct", "grader")}}


def _write_shards(out, acts_dir, pending, tag=""):
    """The shard store: each task's records in shards of about SHARD_BYTES, named by a hash of
    (task, part) (and the process's tag: "rank<R>" with several processes); rows get
    activation_shard + activation_row."""
    by_task = {}
    for row, record in pending:
        by_task.setdefault(row["task"], []).append((row, record))
    for task, items in by_task.items():
        part, size, group = 0, 0, []
        for row, record in items + [(None, None)]:
            if row is not None:
                group.append((row, record))
                size += sum(t.numel() * t.element_size() for t in record["activations"].values())
            if group and (row is None or size >= SHARD_BYTES):
                name = f"{task}\0{part}" if not tag else f"{task}\0{tag}\0{part}"
                key = hashlib.sha256(name.encode()).hexdigest()[:16]
                path = run_folder.unit_shard_path(acts_dir, key)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                write_shard(path, [r[schema.ID] for r, _ in group], [rec for _, rec in group])
                for index, (r, _) in enumerate(group):
                    r[schema.ACTIVATION_SHARD] = os.path.relpath(path, out)
                    r[schema.ACTIVATION_ROW] = index
                part, size, group = part + 1, 0, []


def _run_config(lm, results):
    config = results.get("config") or {}
    return {"producer": "lm-eval", "lm_eval_version": _lm_eval_version(), "model": lm.pretrained
            if isinstance(lm.pretrained, str) else model_name(lm.model),
            "model_args": _plain(config.get("model_args")), "tasks": list(results.get("samples") or {}),
            "limit": _plain(config.get("limit")), **_plain(lm.harness_args),
            "layer_names": list(lm.layer_names), "activation_save_dir": run_folder.ACTIVATIONS_DIR}


def _summary(lm, rows, results, elapsed):
    graded = [r for r in rows if r.get("correct") is not None]
    by_task = {}
    for row in rows:
        by_task.setdefault(row["category"], []).append(row)
    overall = accuracy_stats([r["correct"] for r in graded])
    per = {}
    for task, group in by_task.items():
        flags = [r["correct"] for r in group if r.get("correct") is not None]
        per[task] = {**accuracy_stats(flags), "metric": group[0].get("metric"), "documents": len(group)}
    return {"producer": "lm-eval", "model": model_name(lm.model), "output_dir": lm.output_dir,
            "questions": len(rows), "graded": len(graded), "ungraded": len(rows) - len(graded), "errors": 0,
            "correct": overall["correct"], "accuracy": overall["accuracy"] if graded else 0.0,
            "accuracy_stderr": overall["stderr"], "accuracy_ci95": overall["ci95"], "chance": None,
            "per_category": per, "capture_activations": lm.capture_activations,
            "activation_store": lm.activation_store if lm.capture_activations else None,
            "activation_dir": run_folder.ACTIVATIONS_DIR if lm.capture_activations else None,
            "lm_eval_results": _plain(results.get("results")), "write_time_s": round(elapsed, 3)}


def _lm_eval_version():
    import lm_eval
    return lm_eval.__version__
