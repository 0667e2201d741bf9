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
scoring) hands the sample's row and record to the provider's run writer (store/run_writer.py),
which writes them at once (file store) or when a shard is full (shard store). `on_task_end`
flushes, rewrites results.jsonl in dataset order (the writer's finish) and writes summary.json and
the tasks into run_config.json: after every task, so a run of several tasks is complete after each.
Memory holds the captures of samples in flight and, with shards, one shard's records.

A row (schema.answered_row): id "<task>/<sample id>", category = the task, question = the
sample's input text, prompt = the user's text of the last generate() call (the conversation as
"role: text" lines when it had several turns), system_prompt, response = the scored output,
answer = the target, extracted = the first score's answer, answer_positions (when generated
positions are captured) and the confidence fields (schema.CONFIDENCE_FIELDS; the answer span's
figures over the extracted answer's tokens, as main.py's), correct = the first score as a bool
(C -> True, I and N -> False, 1/0 and true/false; other values None), grader "inspect:<scorer>",
score (the first score's value as Inspect gave it), scores {scorer: value}, explanation, choices
(multiple choice), task, sample_id, epoch, generate_calls, error (a sample that failed), sample =
epoch - 1 when the task runs several epochs. The record is the generation record of
ACTIVATION_CAPTURE_README.md plus "grading" (the row's verdict) and "inspect" (task, sample id,
epoch, eval id).
"""
import datetime
import logging
import os

from inspect_ai.hooks import Hooks, hooks
from inspect_ai.scorer import value_to_float

from .. import schema
from ..capture.confidence import answer_span_fields
from ..capture.generation import model_name, model_summary, versions
from ..eval.answering import answer_token_positions, captures_generated
from ..schema.interventions import intervention_fields
from ..schema.summary import build_summary

log = logging.getLogger(__name__)
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

    def __init__(self, api, writer):
        self.api, self.out, self.writer = api, api.output_dir, writer
        self.tasks = {}                   # eval id -> {"task", "ids", "epochs", "results"}
        self.order = []                   # row ids in dataset order, task after task
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
        record = self._finish_record(record, row, info, eval_id, sample) if keep else None
        self.writer.add(row, record)
        if self.writer.store == "files" or self.writer.full():
            self.writer.flush()

    def task_ended(self, eval_id, log_):
        info = self.tasks.get(eval_id)
        if info is None:
            return
        info["results"] = _results(log_)
        rows = self.writer.finish(order=self.order)
        self.writer.update_config(tasks=[info["task"] for info in self.tasks.values()])
        self.writer.write_summary(self._summary(rows))

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
            extra.update(self._answer_span(record, verdict["extracted"]))
            extra.update({k: record[k] for k in schema.CONFIDENCE_FIELDS if k in record})
        extra.update(intervention_fields({"interventions": self.api.intervention_entries}))     # steered rows say so
        return schema.answered_row(question, prompt, response, verdict,
                                   record["num_prompt_tokens"] if record else None,
                                   record["num_generated_tokens"] if record else 0, system_prompt=system,
                                   task=task, sample_id=sample.id, epoch=sample.epoch, generate_calls=calls, **extra)

    def _answer_span(self, record, extracted):
        """The answer span, as main.py's (eval/answering.py): the record's span figures recomputed over
        the extracted answer's tokens (in place); {answer_positions} when the record keeps a generated
        position (then the record holds them too), else {}."""
        positions = answer_token_positions(record["response"], extracted, record["output_ids"], self.api.tokenizer,
                                           record["num_prompt_tokens"])
        record.update(answer_span_fields(record, positions))
        if not captures_generated(record):
            return {}
        record[schema.ANSWER_POSITIONS] = positions
        return {schema.ANSWER_POSITIONS: positions}

    def _finish_record(self, record, row, info, eval_id, sample):
        record = dict(record, timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
        record["generation"] = {**record.get("generation", {}), "harness": "inspect"}
        record["inspect"] = {"task": info["task"], "sample_id": sample.id, "epoch": sample.epoch, "eval_id": eval_id,
                             "generate_calls": row["generate_calls"]}
        return record

    # --------------------------------------------------------------------- summary

    def _summary(self, rows):
        """schema/summary.py's summary: each task scored by its first scorer."""
        model = self.api.model
        return build_summary(rows, producer="inspect", model=model_name(model),
                             benchmark=", ".join(info["task"] for info in self.tasks.values()), output_dir=self.out,
                             capture_activations=self.api.capture_activations,
                             activation_store=self.api.activation_store, activation_dir="activations",
                             details={"inspect_results": {info["task"]: info["results"] for info in self.tasks.values()},
                                      "model_info": model_summary(model), "versions": versions()},
                             interventions=self.api.intervention_entries)


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
