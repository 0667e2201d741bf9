"""The benchmark run loop: output folder, resume, streaming results, summary.

Public names:
    run_benchmark(config) -> summary dict   (config: a RunConfig, see config.py)
    check_resume(config, stored, rows)      --resume: the stored settings and benchmark are this run's
    model_context, prompt_errors, error_row questions too long for the model: a row with an error
    resume_message(jobs, stored, todo)      what --resume prints: answered questions, units answered again

Example:
    >>> from activation_eval.run.config import RunConfig
    >>> summary = run_benchmark(RunConfig(model="models/tiny-llama", limit=3, max_new_tokens=4, progress=False,
    ...                                   output_dir="results/try", capture_activations=True))
    >>> from activation_eval.schema.summary import format_summary
    >>> print(format_summary(summary, "results/try/results.jsonl"))   # a random model: nothing correct
    model      models/tiny-llama
    benchmark  .../activation_eval/data/benchmark.jsonl
    accuracy   0.0% ± 0.0% (SE), 95% CI 0.0%-56.1%, chance 0.0%  (0/3 correct)
    <BLANKLINE>
    category                  n  correct  accuracy     SE        95% CI  chance
    geography                3*        0      0.0%   0.0%    0.0%-56.1%    0.0%
    * fewer than 5 questions: the interval is wide and its 95% coverage only approximate; read such rows with care
    <BLANKLINE>
    wall time  ... s for 3 questions (... questions/s)
    results    results/try/results.jsonl
    >>> sorted(os.listdir("results/try/activations"))
    ['geo-001.pkl', 'geo-002.pkl', 'geo-003.pkl']

Every file of the run folder is written by store/run_writer.py's RunWriter, which claims the folder
(a lock held for the whole run) before anything else; what --resume checks (settings, benchmark
fingerprint, record files) is run/resume.py's. Records are always written to <output_dir>/activations
(an --activation_save_dir elsewhere is linked there, owned by this run and locked: store/save_dir.py).

A question whose prompt (after the chat template) plus --max_new_tokens does not fit the model's
context is not generated: it gets a results row with an `error` and no answer, is left out of
accuracy and counted under "errors" in the summary; the run goes on.

Batches: the run's questions are split once into length-sorted units (the plan): a unit is what
decodes at once, batch_size questions (with --mc_scoring loglikelihood, scored together; with
continuous batching and --unit_batches N, N x batch_size questions of which batch_size decode at
once and a finished one's slot is refilled from the unit). With --num_samples N every question is
planned N times, as (id, sample) pairs (schema.row_key). Float results depend on which questions
share a forward pass, so a unit is answered whole, by one process, and each row keeps the unit's key: --resume re-answers a unit
unless all its rows carry its key. A run thus gives the same rows and records however often it
was interrupted and however many processes answered it, and an interruption loses at most the
questions in flight (with the default --unit_batches 1). Rows (and record files) are written as
each question finishes; with --activation_store shards finished units' records are held until
they fill a shard (--shard_size_mb), then written, then their rows (the run writer's flush).
With --p_true a unit's rows wait until the unit is answered: the model is then asked about each
answer (eval/p_true.py, no capture) and the rows are written with their p_true; --gold_logprob
likewise scores each question's gold answer after its prompt (eval/gold_logprob.py).
"""
import ctypes
import functools
import hashlib
import logging
import os
import time

import torch
from tqdm.auto import tqdm

from .. import schema
from ..capture.generation import prompt_lengths
from ..eval.answering import iter_answers
from ..eval.benchmark import read_benchmark
from ..eval.gold_logprob import add_gold_logprob
from ..eval.multiple_choice import iter_choice_scores
from ..eval.p_true import add_p_true
from ..eval.prompts import prompt_of, with_prompts
from ..models import load_model
from ..schema.interventions import INTERVENTIONS, interventions_differ, interventions_of
from ..store import run_folder
from ..store.run_writer import RunWriter
from . import distributed
from .config import RunError, resume_defaults
from .plan import batch_key, plan_batches, refused_rows, select_rows, unfinished, unit_size, with_samples
from .resume import benchmark_fingerprint, check_benchmark, missing_records
from .summary import make_summary

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- the output folder

def check_resume(config, stored, rows=None):
    """--resume: RunError unless the stored run (`stored`: its run_config.json, None for a new folder)
    has this run's settings and asked the same questions (`rows`; resume.py). Writes nothing; returns
    the benchmark fingerprint to store (the stored one, updated when more questions are asked now)."""
    fingerprint = benchmark_fingerprint(config.benchmark, rows or [])
    if not config.resume or stored is None:
        return fingerprint
    out = config.output_dir
    # a setting added after the run was written is absent there: the run used its default
    defaults = resume_defaults()
    diffs = [f"{k}: stored {_short(stored.get(k, defaults.get(k)))}, now {_short(v)}"     # interventions: in _open
             for k, v in config.resume_view().items() if k != INTERVENTIONS and stored.get(k, defaults.get(k)) != v]
    if diffs:
        raise RunError(f"--resume: the settings differ from the stored run in {out}: " + "; ".join(diffs)
                       + ". Use the stored settings, or a new --output_dir")
    if rows is None:
        return fingerprint
    answered, _ = run_folder.scan_results(run_folder.results_path(out))
    update = check_benchmark(stored, fingerprint, rows, out, answered)
    return update or {k: stored[k] for k in fingerprint if k in stored}


def _short(value, limit=120):
    """repr(value), cut to `limit` characters (a list of question ids or interventions can be long)."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _open(config, writer, rows, fingerprint):
    """Open the claimed run folder (run_config.json, leftovers, parts merged); returns {row key: unit
    key} of the rows already answered. A row whose record file is missing or incomplete is left out,
    so that its unit is answered again. --resume: the interventions must be the stored run's (checked
    here, once the model has named their layers; before anything is written)."""
    if config.resume and writer.stored_config is not None:
        differ = interventions_differ(interventions_of(writer.stored_config), config.intervention_entries())
        if differ:
            raise RunError(f"--resume: the run in {config.output_dir} was answered under other interventions "
                           f"({differ}): steered and unsteered answers must not mix. Use the stored "
                           f"--steer / --ablate settings, or a new --output_dir")
    stored = writer.open({**config.resume_view(), **fingerprint}, order=[row["id"] for row in rows])
    lost = missing_records(stored, config.output_dir) if config.capture_activations else {}
    if lost:
        shown = ", ".join(f"{qid!r} ({why})" for qid, why in list(lost.items())[:5]) + (", ..." if len(lost) > 5 else "")
        log.warning("%d question(s) answered again: their record files were missing or unreadable: %s",
                    len(lost), shown)
    return {schema.row_key(row): schema.row_unit(row) for row in stored if schema.row_key(row) not in lost}


def _writer(config, procs):
    return RunWriter(config.output_dir, "main", resume=config.resume, capture=config.capture_activations,
                     store=config.activation_store, record_format=config.activation_format,
                     shard_bytes=int(config.shard_size_mb * 2**20), save_dir=config.activation_save_dir,
                     rank=procs.rank, world=procs.world)


# ----------------------------------------------------------------------------- the loop

def run_benchmark(config):
    """Answer, grade (and capture) every question; returns the summary written to summary.json.

    Under torchrun / accelerate launch every process runs this: each answers its share of the
    batches into its own part of the results, then the main process merges the parts and writes
    the summary. The main process's run writer claims the run folder (a lock) before the first
    check and holds it to the end: the other processes are part of the same run, and coordinate
    through the collectives and their parts.
    """
    procs = distributed.init(config.device, config.device_map, config.dist_timeout)
    writer = _writer(config, procs)
    try:
        procs.on_main(lambda: bool(writer.claim()), "locking the output folder")     # only the outcome travels
        return _run(config, procs, writer)
    finally:
        writer.release()


def _run(config, procs, writer):
    # every input is checked (on the main process first) before anything is written
    rows, skipped, fingerprint = procs.main_first(lambda: _load_rows(config, writer, check=procs.is_main),
                                                  "checking the inputs")
    model, tokenizer, capture = procs.main_first(lambda: _load_model(config, procs), "loading the model")
    jobs, batches, too_long = _plan(config, rows, model, tokenizer)
    _check_processes_agree(config, procs, batches)
    stored = procs.on_main(lambda: _open(config, writer, rows, fingerprint), "opening the output folder")
    _check_folder_is_shared(config, procs)
    todo = unfinished(batches, stored)
    mine = distributed.share(todo, procs.rank, procs.world)
    to_answer = sum(len(b) for b in todo)
    if config.resume:
        log.info("%s", resume_message(jobs, stored, todo))
    if too_long and procs.is_main:
        log.warning("%d question(s) do not fit the model's context and get a results row with an error instead "
                    "of an answer (e.g. %r: %s)", len(too_long), *_first_error(too_long))
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    with _progress_bar(procs, len(jobs), to_answer, mine, config.progress) as bar:
        for n, batch in enumerate(mine, 1):
            _answer_unit(config, writer, model, tokenizer, capture, batch, too_long, bar)
            distributed.crash_point(procs.rank, n)
        writer.flush()
    procs.barrier("waiting for the other processes to finish")
    elapsed = time.perf_counter() - start
    return procs.on_main(lambda: _finish(config, writer, rows, batches, elapsed, to_answer, procs.world, skipped),
                         "merging the results")


def _plan(config, rows, model, tokenizer):
    """(the planned answers: one per question and sample; their units; {id: (tokens, error)} of the
    questions too long for the model, each planned as a unit of its own)."""
    loglik = config.mc_scoring == "loglikelihood"
    lengths = prompt_lengths(tokenizer, [prompt_of(r) for r in rows], config.chat_template, config.system_prompt)
    # a scored question feeds its prompt and one choice at a time; 1 new token is the least it needs
    too_long = prompt_errors(rows, lengths, model_context(model, tokenizer), 1 if loglik else config.max_new_tokens)
    length_of = {row["id"]: n for row, n in zip(rows, lengths)}
    jobs = with_samples(rows, config.num_samples)
    fits = [job for job in jobs if job["id"] not in too_long]
    size = config.batch_size if loglik else unit_size(model, tokenizer, config.generation_settings(),
                                                      config.batch_size, config.unit_batches)
    batches = plan_batches(fits, tokenizer, config.chat_template, size, lengths=[length_of[j["id"]] for j in fits])
    batches += [[job] for job in jobs if job["id"] in too_long]     # one error row each, nothing generated
    return jobs, batches, too_long


def _answer_unit(config, writer, model, tokenizer, capture, batch, too_long, bar):
    """Answer one unit into the writer: rows are written as each question finishes (the shard store:
    when a shard is full, after its records; --p_true: after the unit's answers are scored)."""
    key = batch_key(batch)
    if batch[0]["id"] in too_long:
        writer.add(error_row(batch[0], too_long[batch[0]["id"]], key, config.system_prompt))
        writer.flush()
        bar.update(1)
        return
    shards = config.capture_activations and config.activation_store == "shards"
    settings = config.generation_settings()
    answer = (functools.partial(iter_choice_scores, style=config.mc_style) if config.mc_scoring == "loglikelihood"
              else iter_answers)
    waits = config.p_true or config.gold_logprob
    answered = []                 # --p_true, --gold_logprob: the unit's rows wait for it (a row is written complete)
    for result, record in answer(model, tokenizer, batch, settings, capture, config.batch_size):
        result[schema.UNIT] = key
        writer.add(result, record if config.capture_activations else None)
        if not (waits or shards):
            writer.flush()
        answered.append(result)
        del record
        _trim_heap()
        bar.update(1)
    if config.p_true:
        # after the unit, not per question: its answers are scored in batches; a crash before the
        # rows are written leaves the unit without rows, and --resume answers it again whole
        add_p_true(model, tokenizer, batch, answered, settings, config.batch_size)
    if config.gold_logprob:       # the gold answer under teacher forcing, under the same interventions
        add_gold_logprob(model, tokenizer, batch, answered, settings, config.batch_size, config.mc_style)
    if not shards or writer.full():
        writer.flush()


# ----------------------------------------------------------------------------- prompts too long

def model_context(model, tokenizer):
    """The number of positions the model can attend over: its config's max_position_embeddings
    (the size of a learned position table, or the length a rotary model was trained for; gpt2's
    n_positions maps to it), else the tokenizer's model_max_length when it is set (tokenizers
    without a limit report 1e30), else None (no check)."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    for n in (getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)):
        if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 10**9:
            return n
    return None


def prompt_errors(rows, lengths, context, max_new_tokens):
    """{id: (prompt tokens, error)} of the questions whose prompt and answer do not fit `context`.

    Generating K tokens feeds the prompt's P tokens and K - 1 generated ones (the last is never
    fed back), so a question fits when P + K - 1 <= context."""
    if context is None:
        return {}
    errors = {}
    for row, n in zip(rows, lengths):
        if n > context:
            errors[row["id"]] = (n, f"prompt has {n} tokens, the model's context is {context}")
        elif n + max_new_tokens - 1 > context:
            errors[row["id"]] = (n, f"prompt has {n} tokens, the model's context is {context}: no room for "
                                    f"--max_new_tokens {max_new_tokens} (that needs {n + max_new_tokens - 1} positions)")
    return errors


def _first_error(errors):
    qid, (_, message) = next(iter(errors.items()))
    return qid, message


def error_row(row, error, key, system_prompt=None):
    """The results row of a question that was not answered: every result field, no answer, the error
    (and the system prompt, as answered rows have it)."""
    n_tokens, message = error
    return schema.error_row(row, prompt_of(row), n_tokens, message, key, system_prompt)


@functools.cache
def _malloc_trim():
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim       # glibc only
    except (OSError, AttributeError):
        return None


def _trim_heap():
    """Give freed heap pages back to the OS. Records of varying sizes, allocated between the
    model's temporaries, otherwise ratchet the resident size up question after question (+77 MB
    over 200 questions with every layer at every position, measured by perf/memory.py)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _load_rows(config, writer, check=True):
    """(the rows to answer, each with its prompt; the benchmark's skipped rows; the benchmark fingerprint
    to store): on the main process (check) --resume's settings and benchmark are checked against the
    folder the writer claimed, and the record names."""
    bench = read_benchmark(config.benchmark, **config.benchmark_options())
    pool = None                                    # few-shot examples: the other rows by default
    if config.fewshot_file or config.fewshot_split:
        source, own = (config.fewshot_file, {"skip_rows": 0, "subset": None}) if config.fewshot_file else (config.benchmark, {})
        pool = read_benchmark(source, **dict(config.benchmark_options(), split=config.fewshot_split, **own)).rows
    rows = with_prompts(select_rows(bench.rows, config, warn=check), config.prompt_settings(),
                        pool if pool is not None else bench.rows)
    fingerprint = check_resume(config, writer.stored_config, rows) if check else {}
    if check and config.capture_activations:
        run_folder.check_record_names(config.activation_save_dir, [row["id"] for row in rows], config.activation_format)
    return rows, bench.skipped + refused_rows(bench.rows, config), fingerprint


def _load_model(config, procs):
    """(model, tokenizer, capture settings or None), the capture settings checked against the model."""
    model, tokenizer = load_model(config.model, device=procs.device, dtype=config.dtype, device_map=config.device_map,
                                  max_memory=distributed.placement(procs, config.device_map, config.max_memory))
    config.bind_model(model)                       # the interventions' layers and sizes, before anything is written
    return model, tokenizer, config.capture_settings(model)


def _check_processes_agree(config, procs, batches):
    """Several processes must share the settings and the batches (a node started otherwise stops all)."""
    if procs.world == 1:
        return
    plan = hashlib.sha256(" ".join(map(batch_key, batches)).encode()).hexdigest()
    procs.agree({"settings": config.resume_view(), "plan": plan}, {
        "settings": "processes {ranks} were started with other settings than process 0: launch every process "
                    "with the same command",
        "plan": "processes {ranks} split the benchmark into other batches than process 0 (another benchmark "
                "file, --limit, --batch_size or tokenizer?): launch every process with the same command and files",
    }, "checking that the processes agree")


def _check_folder_is_shared(config, procs):
    """Several processes (nodes) must all see the run folder that the main process opened."""
    if procs.world == 1:
        return
    config_path = run_folder.config_path(config.output_dir)
    seen = procs.is_main or _wait_for_file(config_path)
    procs.agree({"folder": seen}, {"folder": f"processes {{ranks}} do not see {config_path}, which process 0 wrote: "
                                             f"--output_dir must be on a file system that every node shares"},
                "checking that the processes share the output folder")


def _wait_for_file(path, seconds=60):
    """True once `path` exists (a shared file system may show another node's new file late)."""
    deadline = time.monotonic() + seconds
    while not os.path.isfile(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def _progress_bar(procs, total, to_answer, mine, show=True):
    if procs.world == 1:
        return tqdm(total=total, initial=total - to_answer, desc="questions", unit="q", disable=not show)
    return tqdm(total=sum(len(b) for b in mine), desc=f"questions (process 0 of {procs.world})", unit="q",
                disable=not (show and procs.is_main))


def resume_message(jobs, stored, todo):
    """What --resume will do: questions (answers, with --num_samples) already answered, and the
    units answered (again) whole."""
    key = schema.row_key
    answered, total = sum(1 for row in jobs if key(row) in stored), len(jobs)
    again = sum(1 for batch in todo for row in batch if key(row) in stored)
    return (f"resuming: {answered} of {total} questions already answered; {len(todo)} unit(s) of questions "
            f"({sum(map(len, todo))} questions) will be answered now, {again} of them again: a unit is "
            f"answered whole so that results stay bit-identical")


def _finish(config, writer, rows, batches, elapsed, answered, processes, skipped=()):
    """Merge every row into results.jsonl, check that every unit is complete, write summary.json."""
    final = writer.finish(order=[row["id"] for row in rows])
    missing = sum(map(len, unfinished(batches, {schema.row_key(row): schema.row_unit(row) for row in final})))
    if missing:
        raise RunError(f"{missing} question(s) have no up-to-date results row after merging the parts of "
                       f"{config.output_dir} (is it on a file system every node shares?); rerun with --resume")
    return writer.write_summary(make_summary(config, final, elapsed, answered_now=answered, processes=processes,
                                             rows=rows, skipped=skipped))
