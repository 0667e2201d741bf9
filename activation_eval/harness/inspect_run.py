"""The run folder of an Inspect evaluation with the "activation-eval" provider: one row per
(task, sample id) with the sample's first score, its record, summary.json and run_config.json.

Public names:
    InspectRun(api)       the run folder of one ActivationEvalAPI (output_dir); written by the hooks below
    RunFolderHooks        Inspect hooks: task start (dataset order), sample end (row + record, once
                          the sample is scored), task end (shards, merge, summary, run config)
    score_fields(scores)  the row's verdict from an EvalSample's scores (first scorer)
    RUNS                  output_dir (real path) -> InspectRun of the live providers

Example (a task evaluated with the provider: see inspect_provider.py's example):
    >>> from inspect_ai.scorer import Score
    >>> fields = score_fields({"match": Score(value="C", answer="4"), "other": Score(value=0.5)})
    >>> fields["correct"], fields["extracted"], fields["grader"], fields["scores"]
    (True, '4', 'inspect:match', {'match': 'C', 'other': 0.5})

Scores are only known once Inspect has scored a sample, so nothing is written from generate():
the provider keeps each sample's last capture in memory, and the hook `on_sample_end` (after
scoring) writes the sample's record (file store) and appends its row to results.jsonl; with the
shard store the task's records and rows wait for the task's end (or SHARD_BYTES). `on_task_end`
rewrites results.jsonl in dataset order (store/run_folder.merge_results) and writes summary.json
and run_config.json: after every task, so a run of several tasks is complete after each.

A row (schema.answered_row): id "<task>/<sample id>", category = the task, question = the
sample's input text, prompt = the user's text of the last generate() call (the conversation as
"role: text" lines when it had several turns), system_prompt, response = the scored output,
answer = the target, extracted = the first score's answer, correct = the first score as a bool
(C -> True, I and N -> False, 1/0 and true/false; other values None), grader "inspect:<scorer>",
score (the first score's value as Inspect gave it), scores {scorer: value}, explanation, choices
(multiple choice), task, sample_id, epoch, generate_calls, error (a sample that failed), sample =
epoch - 1 when the task runs several epochs. The record is the generation record of
ACTIVATION_CAPTURE_README.md plus "grading" (the row's verdict) and "inspect" (task, sample id,
epoch, eval id).
"""
import datetime
import hashlib
import logging
import os

import inspect_ai
from inspect_ai.hooks import Hooks, hooks
from inspect_ai.scorer import value_to_float

from .. import schema
from ..accuracy import accuracy_stats
from ..capture.generation import model_name, model_summary, versions
from ..store import run_folder
from ..store.atomic import write_json_atomic
from ..store.records import save_activations
from ..store.shards import write_shard

log = logging.getLogger(__name__)
SHARD_BYTES = 256 * 2**20           # a task's records are split into shards of about this size
RUNS = {}


def score_fields(scores):
    """{"extracted", "correct", "grader", "score", "scores", "explanation"} from EvalSample.scores
    (the first scorer decides)."""
    scores = scores or {}
    if not scores:
        return {"extracted": None, "correct": None, "grader": "inspect", "score": None, "scores": {}}
    name, first = next(iter(scores.items()))
    value = first.value
    return {"extracted": first.answer, "correct": _correct(value), "grader": f"inspect:{name}",
            "score": _plain(value), "scores": {n: _plain(s.value) for n, s in scores.items()},
            "explanation": first.explanation}


def _correct(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, str)):
        try:
            number = value_to_float()(value)            # C 1.0, I 0.0, N 0.0, P 0.5, "yes" 1.0, ...
        except (ValueError, TypeError):
            return None
        return {1.0: True, 0.0: False}.get(number)
    return None                                        # dict / list scores: see "score"


def _plain(value):
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return value if value is None or isinstance(value, (str, int, float, bool)) else str(value)


def _text(content):
    """A sample's input (a string or chat messages) as text: the messages' texts, blank-line separated."""
    if isinstance(content, str):
        return content
    return "\n\n".join(m.text for m in content)


class InspectRun:
    """The run folder of one provider instance (see the module docstring)."""

    def __init__(self, api):
        self.api, self.out = api, api.output_dir
        self.tasks = {}                   # eval id -> {"task", "ids", "epochs", "results"}
        self.order = []                   # row ids in dataset order, task after task
        self.pending = {}                 # task -> [(row, record)] awaiting a shard (shard store)
        self.parts = {}                   # task -> shards written
        self.rows_written = 0
        key = os.path.realpath(self.out)
        if key in RUNS:
            log.warning("%s: an earlier %s model for this output_dir is replaced", self.out, "activation-eval")
        RUNS[key] = self

    # --------------------------------------------------------------------- events

    def task_started(self, eval_id, spec):
        epochs = (spec.config.epochs or 1) if spec.config else 1
        ids = list(spec.dataset.sample_ids or []) if spec.dataset else []
        self.tasks[eval_id] = {"task": spec.task, "ids": ids, "epochs": epochs, "results": None}
        self.order += [f"{spec.task}/{i}" for i in ids]

    def sample_seen(self, eval_id, task):
        """A generate() call of a sample of an eval this run did not see start (hooks loaded late)."""
        self.tasks.setdefault(eval_id, {"task": task, "ids": [], "epochs": None, "results": None})

    def sample_ended(self, eval_id, sample):
        info = self.tasks[eval_id]
        call = self.api.calls.pop((eval_id, sample.id, sample.epoch), None)
        record = call["record"] if call else None
        row = self._row(info, sample, record, call["count"] if call else 0)
        keep = (self.api.capture_activations and record is not None and "activations" in record
                and sample.error is None)
        if not keep:
            self._append([row])
            return
        record = self._finish_record(record, row, info, eval_id, sample)
        acts_dir = os.path.join(self.out, run_folder.ACTIVATIONS_DIR)
        if self.api.activation_store == "files":
            path = run_folder.record_path(acts_dir, row[schema.ID], self.api.activation_format, row.get(schema.SAMPLE))
            os.makedirs(acts_dir, exist_ok=True)
            save_activations(record, path)
            row[schema.ACTIVATION_FILE] = os.path.relpath(path, self.out)
            self._append([row])
            return
        pending = self.pending.setdefault(info["task"], [])
        pending.append((row, record))
        if sum(_bytes(r) for _, r in pending) >= SHARD_BYTES:
            self._flush(info["task"])

    def task_ended(self, eval_id, log_):
        info = self.tasks.get(eval_id)
        if info is None:
            return
        info["results"] = _results(log_)
        self._flush(info["task"])
        rows = run_folder.merge_results(self.out, self.order) if run_folder.is_run_folder(self.out) else []
        write_json_atomic(run_folder.config_path(self.out), self._config())
        write_json_atomic(run_folder.summary_path(self.out), self._summary(rows))

    # --------------------------------------------------------------------- rows and records

    def _row(self, info, sample, record, calls):
        task = info["task"]
        verdict = score_fields(sample.scores)
        extra = {k: verdict.pop(k) for k in ("score", "scores", "explanation") if k in verdict}
        question = {schema.ID: f"{task}/{sample.id}", schema.CATEGORY: task, schema.QUESTION: _text(sample.input),
                    schema.ANSWER: _plain(sample.target)}
        if (info["epochs"] or 1) > 1:
            question[schema.SAMPLE] = sample.epoch - 1
        if sample.choices:
            extra["choices"] = list(sample.choices)
        if sample.error is not None:
            extra[schema.ERROR] = sample.error.message
            verdict["correct"] = None
        prompt = record["prompt"] if record else None
        system = (record.get("generation") or {}).get("system_prompt") if record else None
        response = sample.output.completion if sample.output else None
        if record:          # the output confidence of the kept tokens (inspect_provider), a probe control
            extra.update({k: record[k] for k in schema.CONFIDENCE_FIELDS if k in record})
        return schema.answered_row(question, prompt, response, verdict,
                                   record["num_prompt_tokens"] if record else None,
                                   record["num_generated_tokens"] if record else 0, system_prompt=system,
                                   task=task, sample_id=sample.id, epoch=sample.epoch, generate_calls=calls, **extra)

    def _finish_record(self, record, row, info, eval_id, sample):
        record = dict(record, timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
        record["grading"] = {k: row[k] for k in (schema.ID, schema.CATEGORY, schema.ANSWER, schema.EXTRACTED,
                                                 schema.CORRECT, schema.GRADER)}
        if row.get(schema.SAMPLE) is not None:
            record[schema.SAMPLE] = row[schema.SAMPLE]
        record["generation"] = {**record.get("generation", {}), "harness": "inspect"}
        record["inspect"] = {"task": info["task"], "sample_id": sample.id, "epoch": sample.epoch, "eval_id": eval_id,
                             "generate_calls": row["generate_calls"]}
        return record

    def _append(self, rows):
        os.makedirs(self.out, exist_ok=True)
        run_folder.append_results(run_folder.results_path(self.out), rows)
        self.rows_written += len(rows)

    def _flush(self, task):
        """The shard store: the task's waiting records as one shard (named by a hash of task and
        part), then their rows."""
        group = self.pending.pop(task, [])
        if not group:
            return
        part = self.parts.get(task, 0)
        self.parts[task] = part + 1
        key = hashlib.sha256(f"inspect\0{task}\0{part}".encode()).hexdigest()[:16]
        acts_dir = os.path.join(self.out, run_folder.ACTIVATIONS_DIR)
        path = run_folder.unit_shard_path(acts_dir, key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_shard(path, [_shard_id(row) for row, _ in group], [record for _, record in group])
        for index, (row, _) in enumerate(group):
            row[schema.ACTIVATION_SHARD] = os.path.relpath(path, self.out)
            row[schema.ACTIVATION_ROW] = index
        self._append([row for row, _ in group])

    # --------------------------------------------------------------------- summary and config

    def _config(self):
        return {"producer": "inspect", "inspect_version": inspect_ai.__version__, **_plain(self.api.harness_args),
                "tasks": [info["task"] for info in self.tasks.values()], "layer_names": list(self.api.layer_names),
                "activation_save_dir": run_folder.ACTIVATIONS_DIR}

    def _summary(self, rows):
        graded = [r for r in rows if r.get(schema.CORRECT) is not None]
        several = any(r.get(schema.SAMPLE) is not None for r in rows)
        overall = accuracy_stats([r[schema.CORRECT] for r in graded],
                                 questions=[r[schema.ID] for r in graded] if several else None)
        per = {}
        for task in dict.fromkeys(r[schema.CATEGORY] for r in rows):
            group = [r for r in rows if r[schema.CATEGORY] == task]
            flags = [r for r in group if r.get(schema.CORRECT) is not None]
            stats = accuracy_stats([r[schema.CORRECT] for r in flags],
                                   questions=[r[schema.ID] for r in flags] if several else None)
            per[task] = {**stats, "grader": group[0].get(schema.GRADER), "samples": len(group)}
        model = self.api.model
        return {"producer": "inspect", "model": model_name(model), "model_info": model_summary(model),
                "versions": versions(), "output_dir": self.out, "questions": len(rows), "graded": len(graded),
                "ungraded": len(rows) - len(graded), "errors": sum(1 for r in rows if r.get(schema.ERROR)),
                "correct": overall["correct"], "accuracy": overall["accuracy"] if graded else 0.0,
                "accuracy_stderr": overall["stderr"], "accuracy_ci95": overall["ci95"], "chance": None,
                "per_category": per, "capture_activations": self.api.capture_activations,
                "activation_store": self.api.activation_store if self.api.capture_activations else None,
                "activation_dir": run_folder.ACTIVATIONS_DIR if self.api.capture_activations else None,
                "inspect_results": {info["task"]: info["results"] for info in self.tasks.values()}}


def _shard_id(row):
    sample = row.get(schema.SAMPLE)
    return row[schema.ID] if sample is None else f"{row[schema.ID]}@s{sample}"


def _bytes(record):
    return sum(t.numel() * t.element_size() for t in record["activations"].values())


def _results(log_):
    """{scorer: {metric: value}} of an EvalLog's results (None when it has none)."""
    results = getattr(log_, "results", None)
    if results is None:
        return None
    return {score.name: {name: _plain(metric.value) for name, metric in score.metrics.items()}
            for score in results.scores}


def _run_of(model, model_args):
    """The InspectRun of an eval whose model is this provider's, found by its output_dir."""
    if not str(model).startswith("activation-eval/"):
        return None
    out = (model_args or {}).get("output_dir")
    return RUNS.get(os.path.realpath(out)) if isinstance(out, str) else None


@hooks(name="activation-eval run folder", description="writes the run folder of the activation-eval provider")
class RunFolderHooks(Hooks):
    """Inspect calls these for every eval in the process; each acts only on evals of a live
    activation-eval provider (found by the eval's model and output_dir)."""

    def enabled(self):
        return bool(RUNS)

    async def on_task_start(self, data):
        run = _run_of(data.spec.model, data.spec.model_args)
        if run is not None:
            run.task_started(data.eval_id, data.spec)

    async def on_sample_end(self, data):
        for run in list(RUNS.values()):
            if data.eval_id in run.tasks:
                _guard(run, "writing the row of sample " + str(data.sample.id), run.sample_ended, data.eval_id,
                       data.sample)

    async def on_task_end(self, data):
        for run in list(RUNS.values()):
            if data.eval_id in run.tasks:
                _guard(run, "finishing the run folder", run.task_ended, data.eval_id, data.log)


def _guard(run, what, fn, *args):
    """Inspect turns a hook's exception into a warning; say plainly what was not written, and where."""
    try:
        fn(*args)
    except Exception as exc:
        log.error("activation-eval: %s in %s failed: %s", what, run.out, exc)
        raise
