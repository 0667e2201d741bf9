"""The benchmark run loop: output folder, resume, streaming results, summary.

Public names:
    run_benchmark(config) -> summary dict   (config: a RunConfig, see config.py)
    format_summary(summary) -> str          the aligned table the CLI prints (summary.py, re-exported)
    plan_batches, batch_key, unfinished     the plan of units (plan.py, re-exported; see "Batches" below)
    check_output_dir, open_output_dir       the run folder's checks (settings, benchmark) and reopening
    select_rows, with_samples               the questions a run answers, one per sample (plan.py)
    model_context, prompt_errors, error_row questions too long for the model: a row with an error
    resume_message(jobs, stored, todo)      what --resume prints: answered questions, units answered again
    make_summary(config, rows, ...)         what summary.json holds (summary.py, re-exported)

Example:
    >>> summary = run_benchmark(RunConfig(model="models/tiny-llama", limit=3, max_new_tokens=4, progress=False,
    ...                                   output_dir="results/try", capture_activations=True))
    >>> print(format_summary(summary))                          # a random model: nothing correct
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

The run folder's layout and its files are owned by store/run_folder.py; the lock held for the
whole run is run/lock.py, and what --resume checks (benchmark fingerprint, record files) run/resume.py.
Records are always written to <output_dir>/activations (an --activation_save_dir elsewhere is
linked there, owned by this run and locked: run/save_dir.py).

A question whose prompt (after the chat template) plus --max_new_tokens does not fit the model's
context is not generated: it gets a results row with an `error` and no answer, is left out of
accuracy and counted under "errors" in the summary; the run goes on.

Batches: the run's questions are split once into length-sorted units (the plan): with continuous
batching (the default, greedy or sampled) a unit holds GROUP_BATCHES x batch_size questions, of
which batch_size decode at once and a finished one's slot is refilled from the unit; otherwise a
unit is one model.generate batch (with --mc_scoring loglikelihood, batch_size questions scored
together). With --num_samples N every question is planned N times, as (id, sample) pairs
(run_folder.row_key). Float results depend on which questions share a forward pass, so a unit is
answered whole, by one process, and each row keeps the unit's key: --resume re-answers a unit
unless all its rows carry its key. A run thus gives the same rows and records however often it
was interrupted and however many processes answered it. Rows (and record files) are written as
each question finishes; with --activation_store shards finished units' records are held until
they fill a shard (--shard_size_mb, see run/shard_buffer.py), then written, then their rows.
With --p_true a unit's rows wait until the unit is answered: the model is then asked about each
answer (eval/p_true.py, no capture) and the rows are written with their p_true.
"""
import ctypes
import functools
import hashlib
import logging
import os
import stat
import time

import torch
from tqdm.auto import tqdm

from .. import schema
from ..capture.generation import prompt_lengths
from ..eval.answering import iter_answers
from ..eval.benchmark import read_benchmark
from ..eval.multiple_choice import iter_choice_scores
from ..eval.p_true import add_p_true
from ..eval.prompts import prompt_of, with_prompts
from ..models import load_model
from ..store import run_folder
from ..store.atomic import remove_stale_temp_files, write_json_atomic
from ..store.records import save_activations
from . import distributed
from .config import RunConfig, RunError, benchmark_label, resume_defaults  # noqa: F401  (re-exported: the runner's inputs)
from .lock import RunLock
from .plan import GROUP_BATCHES, batch_key, plan_batches, refused_rows, select_rows, unfinished, unit_size, with_samples  # noqa: F401,E501  (re-exported)
from .resume import benchmark_fingerprint, check_benchmark, missing_records
from .save_dir import check_save_dir, lock_save_dir, open_save_dir, record_dir
from .shard_buffer import ShardBuffer, remove_unreferenced_shards
from .summary import format_summary, make_summary  # noqa: F401  (format_summary re-exported)

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------- the output folder

def check_output_dir(config, rows=None):
    """Refuse a non-empty folder without --resume, or a resume with other settings or an edited
    benchmark (`rows`: the questions asked; see resume.py). Writes nothing."""
    out = config.output_dir
    # a lock file alone (a run's own, or one a killed run left) is no content; a symlink there is
    lock = {run_folder.LOCK_FILE} if _is_plain_file(run_folder.lock_path(out)) else set()
    if os.path.isdir(out) and set(os.listdir(out)) - lock and not config.resume:
        raise RunError(f"output folder {out} already exists and is not empty; pass --resume to continue "
                       f"that run, or choose another --output_dir")
    if config.resume and os.path.lexists(run_folder.config_path(out)):
        stored = _read_run_config(out)
        # a setting added after the run was written is absent there: the run used its default
        defaults = resume_defaults()
        diffs = [f"{k}: stored {stored.get(k, defaults.get(k))!r}, now {v!r}"
                 for k, v in config.resume_view().items() if stored.get(k, defaults.get(k)) != v]
        if diffs:
            raise RunError(f"--resume: the settings differ from the stored run in {out}: " + "; ".join(diffs)
                           + ". Use the stored settings, or a new --output_dir")
        if rows is not None:
            answered, _ = run_folder.scan_results(run_folder.results_path(out))
            check_benchmark(stored, benchmark_fingerprint(config.benchmark, rows), rows, out, answered)


def _is_plain_file(path):
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _read_run_config(run_dir):
    try:
        return run_folder.read_run_config(run_dir)
    except (OSError, ValueError) as exc:
        raise RunError(f"--resume: {exc}; it holds the run's settings: restore it, or choose another "
                       f"--output_dir") from None


def open_output_dir(config, rows=()):
    """Create (or reopen) the run folder; returns {id: batch key} of the rows already answered
    (shards left by an interrupted multi-process run are merged into results.jsonl first). A row
    whose record file is missing or incomplete is left out, so that its batch is answered again."""
    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    _store_fingerprint(config, rows)
    remove_stale_temp_files(out)        # e.g. a results.jsonl rewrite cut short
    if config.capture_activations:
        acts = open_save_dir(config)        # <output_dir>/activations: the save dir, or a link to it
        removed = remove_stale_temp_files(acts)
        removed += remove_stale_temp_files(os.path.join(acts, run_folder.UNITS_DIR))
        if removed:
            log.info("removed %d unfinished temp file(s) from an interrupted run", removed)
    if run_folder.shard_files(out):
        stored = run_folder.merge_results(out, [row["id"] for row in rows])
    else:
        stored = run_folder.repair_results(run_folder.results_path(out))
    lost = missing_records(stored, out) if config.capture_activations else {}
    if lost:
        shown = ", ".join(f"{qid!r} ({why})" for qid, why in list(lost.items())[:5]) + (", ..." if len(lost) > 5 else "")
        log.warning("%d question(s) answered again: their record files were missing or unreadable: %s",
                    len(lost), shown)
    return {schema.row_key(row): schema.row_unit(row) for row in stored if schema.row_key(row) not in lost}


def _store_fingerprint(config, rows):
    """run_config.json: the settings and the benchmark's fingerprint; a resumed run updates the
    fingerprint when it asks more questions, or when the folder predates fingerprints."""
    path = run_folder.config_path(config.output_dir)
    fingerprint = benchmark_fingerprint(config.benchmark, rows)
    if not os.path.lexists(path):
        write_json_atomic(path, {**config.resume_view(), **fingerprint})
        return
    stored = _read_run_config(config.output_dir)
    answered, _ = run_folder.scan_results(run_folder.results_path(config.output_dir))
    update = check_benchmark(stored, fingerprint, rows, config.output_dir, answered, quiet=True)
    if update:
        write_json_atomic(path, {**stored, **update})


# ----------------------------------------------------------------------------- the loop

def run_benchmark(config):
    """Answer, grade (and capture) every question; returns the summary written to summary.json.

    Under torchrun / accelerate launch every process runs this: each answers its share of the
    batches into shards/, then the main process merges the shards and writes the summary. The main
    process holds the run folder's lock (run/lock.py) from before the first check to the end: the
    other processes are part of the same run, and coordinate through the collectives and their shards.
    """
    procs = distributed.init(config.device, config.device_map, config.dist_timeout)
    locks = []
    try:
        procs.on_main(lambda: _lock(config, locks), "locking the output folder")     # only the outcome travels
        return _run(config, procs)
    finally:
        for lock in reversed(locks):
            lock.release()


def _lock(config, locks):
    """The run folder's lock, then an external --activation_save_dir's (run/save_dir.py), into `locks`."""
    locks.append(RunLock(config.output_dir).acquire())
    locks += filter(None, [lock_save_dir(config)])
    return True


def _run(config, procs):
    # every input is checked (on the main process first) before anything is written
    rows, skipped = procs.main_first(lambda: _load_rows(config, check=procs.is_main), "checking the inputs")
    model, tokenizer, capture = procs.main_first(lambda: _load_model(config, procs), "loading the model")
    settings = config.generation_settings()
    loglik = config.mc_scoring == "loglikelihood"
    lengths = prompt_lengths(tokenizer, [prompt_of(r) for r in rows], config.chat_template, config.system_prompt)
    # a scored question feeds its prompt and one choice at a time; 1 new token is the least it needs
    too_long = prompt_errors(rows, lengths, model_context(model, tokenizer), 1 if loglik else config.max_new_tokens)
    length_of = {row["id"]: n for row, n in zip(rows, lengths)}
    jobs = with_samples(rows, config.num_samples)
    fits = [job for job in jobs if job["id"] not in too_long]
    size = config.batch_size if loglik else unit_size(model, tokenizer, settings, config.batch_size)
    batches = plan_batches(fits, tokenizer, config.chat_template, size, lengths=[length_of[j["id"]] for j in fits])
    batches += [[job] for job in jobs if job["id"] in too_long]     # one error row each, nothing generated
    answer = functools.partial(iter_choice_scores, style=config.mc_style) if loglik else iter_answers
    _check_processes_agree(config, procs, batches)
    stored = procs.on_main(lambda: open_output_dir(config, rows), "opening the output folder")
    _check_folder_is_shared(config, procs)
    todo = unfinished(batches, stored)
    mine = distributed.share(todo, procs.rank, procs.world)
    to_answer = sum(len(b) for b in todo)
    if config.resume:
        log.info("%s", resume_message(jobs, stored, todo))
    if too_long and procs.is_main:
        log.warning("%d question(s) do not fit the model's context and get a results row with an error instead "
                    "of an answer (e.g. %r: %s)", len(too_long), *_first_error(too_long))
    results_path = _results_path(config, procs)
    torch.manual_seed(config.seed)
    # the shard store: finished units wait here until they fill a shard (shard_buffer.py); without
    # capture there is nothing to shard, and rows are written as each question finishes
    buffer = ShardBuffer(config) if config.capture_activations and config.activation_store == "shards" else None
    start = time.perf_counter()
    with _progress_bar(procs, len(jobs), to_answer, mine, config.progress) as bar:
        for n, batch in enumerate(mine, 1):
            key = batch_key(batch)
            if batch[0]["id"] in too_long:
                run_folder.append_results(results_path, [error_row(batch[0], too_long[batch[0]["id"]], key,
                                                                            config.system_prompt)])
                bar.update(1)
                continue
            answered = []                 # --p_true: the unit's rows wait for it (a row is written complete)
            for result, record in answer(model, tokenizer, batch, settings, capture, config.batch_size):
                if buffer is not None:
                    buffer.add(result, record, key)            # its row is written with its shard, below
                else:
                    result = _save_record(config, result, record, key)
                    if not config.p_true:
                        run_folder.append_results(results_path, [result])
                answered.append(result)
                del record
                _trim_heap()
                bar.update(1)
            if config.p_true:
                # after the unit, not per question: its answers are scored in batches; a crash before the
                # rows are written leaves the unit without rows, and --resume answers it again whole
                add_p_true(model, tokenizer, batch, answered, settings, config.batch_size)
                if buffer is None:
                    run_folder.append_results(results_path, answered)
            if buffer is not None and buffer.full():
                run_folder.append_results(results_path, buffer.flush())
            distributed.crash_point(procs.rank, n)
        if buffer:
            run_folder.append_results(results_path, buffer.flush())
    procs.barrier("waiting for the other processes to finish")
    elapsed = time.perf_counter() - start
    return procs.on_main(lambda: _finish(config, rows, batches, elapsed, to_answer, procs.world, skipped),
                         "merging the results")


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


def _load_rows(config, check=True):
    """(the rows to answer, each with its prompt; the benchmark's skipped rows)."""
    bench = read_benchmark(config.benchmark, **config.benchmark_options())
    pool = None                                    # few-shot examples: the other rows by default
    if config.fewshot_file or config.fewshot_split:
        source, own = (config.fewshot_file, {"skip_rows": 0, "subset": None}) if config.fewshot_file else (config.benchmark, {})
        pool = read_benchmark(source, **dict(config.benchmark_options(), split=config.fewshot_split, **own)).rows
    rows = with_prompts(select_rows(bench.rows, config, warn=check), config.prompt_settings(),
                        pool if pool is not None else bench.rows)
    if check:
        check_output_dir(config, rows)
        if config.capture_activations:
            check_save_dir(config)
            run_folder.check_record_names(config.activation_save_dir, [row["id"] for row in rows],
                                          config.activation_format)
    return rows, bench.skipped + refused_rows(bench.rows, config)


def _load_model(config, procs):
    """(model, tokenizer, capture settings or None), the capture settings checked against the model."""
    model, tokenizer = load_model(config.model, device=procs.device, dtype=config.dtype, device_map=config.device_map,
                                  max_memory=distributed.placement(procs, config.device_map, config.max_memory))
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


def _results_path(config, procs):
    """results.jsonl for a single process; shards/results.rank<R>.jsonl for each of several."""
    if procs.world == 1:
        return run_folder.results_path(config.output_dir)
    return run_folder.shard_path(config.output_dir, procs.rank)


def _progress_bar(procs, total, to_answer, mine, show=True):
    if procs.world == 1:
        return tqdm(total=total, initial=total - to_answer, desc="questions", unit="q", disable=not show)
    return tqdm(total=sum(len(b) for b in mine), desc=f"questions (process 0 of {procs.world})", unit="q",
                disable=not (show and procs.is_main))


def _save_record(config, result, record, key):
    """Write the question's record file (complete) before its results row exists."""
    result[schema.UNIT] = key
    if record is None or "activations" not in record:
        return result
    path = run_folder.record_path(record_dir(config), result["id"], config.activation_format,
                                  sample=result.get("sample"))
    save_activations(record, path)
    result[schema.ACTIVATION_FILE] = os.path.relpath(path, config.output_dir)
    return result


def resume_message(jobs, stored, todo):
    """What --resume will do: questions (answers, with --num_samples) already answered, and the
    units answered (again) whole."""
    key = run_folder.row_key
    answered, total = sum(1 for row in jobs if key(row) in stored), len(jobs)
    again = sum(1 for batch in todo for row in batch if key(row) in stored)
    return (f"resuming: {answered} of {total} questions already answered; {len(todo)} unit(s) of questions "
            f"({sum(map(len, todo))} questions) will be answered now, {again} of them again: a unit is "
            f"answered whole so that results stay bit-identical")


def _finish(config, rows, batches, elapsed, answered, processes, skipped=()):
    """Merge every row into results.jsonl, check that every batch is complete, write summary.json."""
    final = run_folder.merge_results(config.output_dir, [row["id"] for row in rows])
    missing = sum(map(len, unfinished(batches, {schema.row_key(row): schema.row_unit(row) for row in final})))
    if missing:
        raise RunError(f"{missing} question(s) have no up-to-date results row after merging the shards of "
                       f"{config.output_dir} (is it on a file system every node shares?); rerun with --resume")
    if config.capture_activations and config.activation_store == "shards":
        remove_unreferenced_shards(config.output_dir, record_dir(config), final)
    summary = make_summary(config, final, elapsed, answered_now=answered, processes=processes, rows=rows,
                           skipped=skipped)
    write_json_atomic(run_folder.summary_path(config.output_dir), summary)
    return summary
