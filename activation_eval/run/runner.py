"""The benchmark run loop: output folder, resume, streaming results, summary.

Public names:
    run_benchmark(config) -> summary dict   (config: a RunConfig, see config.py)
    format_summary(summary) -> str          the aligned table the CLI prints
    plan_batches, batch_key, unfinished     the plan of units (see "Batches" below)
    resume_message(rows, stored, todo)      what --resume prints: answered questions, units answered again

Example:
    >>> summary = run_benchmark(RunConfig(limit=10, output_dir="results/try", capture_activations=True))
    >>> print(format_summary(summary))

The run folder's layout and its files are owned by store/run_folder.py.

Batches: the run's questions are split once into length-sorted units (the plan): with continuous
batching (greedy decoding) a unit holds GROUP_BATCHES x batch_size questions, of which batch_size
decode at once and a finished one's slot is refilled from the unit; otherwise a unit is one
model.generate batch. Float results depend on which questions share a forward pass, so a unit is
answered whole, by one process, and each row keeps the unit's key: --resume re-answers a unit
unless all its rows carry its key. A run thus gives the same rows and records however often it
was interrupted and however many processes answered it. Rows (and record files) are written as
each question finishes; with --activation_store shards a unit's records go into one shard when the
unit ends, then its rows (a unit's records are held in memory until then).
"""
import ctypes
import functools
import hashlib
import json
import logging
import os
import time

import torch
from tqdm.auto import tqdm

from ..capture.generation import CaptureSettings, GenerationSettings, decoding_mode, prompt_lengths
from ..capture.hooks import parse_positions, resolve_layers
from ..eval.answering import iter_answers
from ..eval.benchmark import format_question, load_benchmark
from ..models import load_model
from ..store import run_folder
from ..store.atomic import remove_stale_temp_files, write_json_atomic
from ..store.records import save_activations
from ..store.shards import write_shard
from . import distributed
from .config import RESUME_DEFAULTS, RunConfig, RunError  # noqa: F401  (re-exported: the runner's inputs)

log = logging.getLogger(__name__)

GROUP_BATCHES = 8       # with continuous batching, a planned unit holds this many batches' questions


# ----------------------------------------------------------------------------- the output folder

def check_output_dir(config):
    """Refuse a non-empty folder without --resume, or a resume with other settings (writes nothing)."""
    out = config.output_dir
    if os.path.isdir(out) and os.listdir(out) and not config.resume:
        raise RunError(f"output folder {out} already exists and is not empty; pass --resume to continue "
                       f"that run, or choose another --output_dir")
    config_path = run_folder.config_path(out)
    if config.resume and os.path.isfile(config_path):
        with open(config_path) as f:
            stored = json.load(f)
        stored = {**RESUME_DEFAULTS, **stored}
        diffs = [f"{k}: stored {stored.get(k)!r}, now {v!r}" for k, v in config.resume_view().items() if stored.get(k) != v]
        if diffs:
            raise RunError(f"--resume: the settings differ from the stored run in {out}: " + "; ".join(diffs)
                           + ". Use the stored settings, or a new --output_dir")


def open_output_dir(config, rows=()):
    """Create (or reopen) the run folder; returns {id: batch key} of the rows already answered
    (shards left by an interrupted multi-process run are merged into results.jsonl first)."""
    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    config_path = run_folder.config_path(out)
    if not os.path.isfile(config_path):
        write_json_atomic(config_path, config.resume_view())
    remove_stale_temp_files(out)        # e.g. a results.jsonl rewrite cut short
    if config.capture_activations:
        os.makedirs(config.activation_save_dir, exist_ok=True)
        removed = remove_stale_temp_files(config.activation_save_dir)
        removed += remove_stale_temp_files(os.path.join(config.activation_save_dir, run_folder.UNITS_DIR))
        if removed:
            log.info("removed %d unfinished temp file(s) from an interrupted run", removed)
    if run_folder.shard_files(out):
        stored = run_folder.merge_results(out, [row["id"] for row in rows])
    else:
        stored = run_folder.repair_results(run_folder.results_path(out))
    return {row["id"]: row.get("batch") for row in stored}


# ----------------------------------------------------------------------------- the plan

def plan_batches(rows, tokenizer, chat_template, batch_size):
    """Batches of rows with similar prompt lengths, so little compute goes to padding."""
    lengths = prompt_lengths(tokenizer, [format_question(r) for r in rows], chat_template)
    order = sorted(range(len(rows)), key=lambda i: (lengths[i], i))
    return [[rows[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]


def unit_size(model, tokenizer, settings, batch_size):
    """Questions per planned unit: `batch_size` for model.generate batches; with continuous batching
    (batch_size rows decode at once, a finished row is refilled) GROUP_BATCHES times as many, so
    little time goes to a unit's last, emptying steps."""
    continuous = decoding_mode(model, tokenizer, settings)[0] == "continuous"
    return batch_size * GROUP_BATCHES if continuous else batch_size


def batch_key(batch):
    """A short name for a batch's composition (its question ids, in order), kept in each of its rows."""
    ids = "\x1f".join(str(row["id"]) for row in batch)
    return hashlib.sha256(ids.encode("utf-8")).hexdigest()[:12]


def unfinished(batches, stored):
    """The batches that still need answering: some row is missing or was answered in another batch."""
    return [b for b in batches if any(stored.get(row["id"]) != batch_key(b) for row in b)]


# ----------------------------------------------------------------------------- the loop

def run_benchmark(config):
    """Answer, grade (and capture) every question; returns the summary written to summary.json.

    Under torchrun / accelerate launch every process runs this: each answers its share of the
    batches into shards/, then the main process merges the shards and writes the summary.
    """
    procs = distributed.init(config.device, config.device_map, config.dist_timeout)
    # every input is checked (on the main process first) before anything is written
    rows = procs.main_first(lambda: _load_rows(config, check=procs.is_main), "checking the inputs")
    model, tokenizer, capture = procs.main_first(lambda: _load_model(config, procs), "loading the model")
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens, use_chat_template=config.chat_template,
                                  continuous_batching=config.continuous_batching)
    batches = plan_batches(rows, tokenizer, config.chat_template, unit_size(model, tokenizer, settings, config.batch_size))
    _check_processes_agree(config, procs, batches)
    stored = procs.on_main(lambda: open_output_dir(config, rows), "opening the output folder")
    _check_folder_is_shared(config, procs)
    todo = unfinished(batches, stored)
    mine = distributed.share(todo, procs.rank, procs.world)
    to_answer = sum(len(b) for b in todo)
    if config.resume:
        log.info("%s", resume_message(rows, stored, todo))
    results_path = _results_path(config, procs)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    with _progress_bar(procs, len(rows), to_answer, mine) as bar:
        for n, batch in enumerate(mine, 1):
            key = batch_key(batch)
            unit = []           # the shard store: the unit's (result, record)s wait for its shard
            for result, record in iter_answers(model, tokenizer, batch, settings, capture, config.batch_size):
                if config.activation_store == "shards":
                    unit.append((result, record))
                else:
                    run_folder.append_results(results_path, [_save_record(config, result, record, key)])
                del record
                _trim_heap()
                bar.update(1)
            if unit:
                run_folder.append_results(results_path, _save_shard(config, unit, key))
                del unit
            distributed.crash_point(procs.rank, n)
    procs.barrier("waiting for the other processes to finish")
    elapsed = time.perf_counter() - start
    return procs.on_main(lambda: _finish(config, rows, batches, elapsed, to_answer, procs.world),
                         "merging the results")


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
    rows = load_benchmark(config.benchmark, question_field=config.question_field, answer_field=config.answer_field,
                          choices_field=config.choices_field, id_field=config.id_field)[: config.limit]
    if check:
        check_output_dir(config)
    return rows


def _load_model(config, procs):
    """(model, tokenizer, capture settings or None), the capture settings checked against the model."""
    model, tokenizer = load_model(config.model, device=procs.device, dtype=config.dtype, device_map=config.device_map,
                                  max_memory=distributed.placement(procs, config.device_map, config.max_memory))
    capture = None
    if config.capture_activations:
        capture = CaptureSettings(resolve_layers(model, config.layers), parse_positions(config.positions),
                                  config.activation_dtype)
        capture.torch_dtype()
    return model, tokenizer, capture


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


def _progress_bar(procs, total, to_answer, mine):
    if procs.world == 1:
        return tqdm(total=total, initial=total - to_answer, desc="questions", unit="q")
    return tqdm(total=sum(len(b) for b in mine), desc=f"questions (process 0 of {procs.world})", unit="q",
                disable=not procs.is_main)


def _save_record(config, result, record, key):
    """Write the question's record file (complete) before its results row exists."""
    result["batch"] = key
    if record is None or "activations" not in record:
        return result
    path = run_folder.record_path(config.activation_save_dir, result["id"], config.activation_format)
    save_activations(record, path)
    result["activation_file"] = os.path.relpath(path, config.output_dir)
    return result


def _save_shard(config, unit, key):
    """Write a unit's records as one shard (complete, fsynced) before any of its rows exists; returns
    the rows, each naming the shard and its row in it."""
    results = [result for result, _ in unit]
    for result in results:
        result["batch"] = key
    saved = [(result, record) for result, record in unit if record is not None and "activations" in record]
    if saved:
        path = run_folder.unit_shard_path(config.activation_save_dir, key)
        write_shard(path, [result["id"] for result, _ in saved], [record for _, record in saved])
        shard_key, row_key = run_folder.SHARD_FIELDS
        for row, (result, _) in enumerate(saved):
            result[shard_key] = os.path.relpath(path, config.output_dir)
            result[row_key] = row
    return results


def resume_message(rows, stored, todo):
    """What --resume will do: questions already answered, and the units answered (again) whole."""
    answered, total = sum(1 for row in rows if row["id"] in stored), len(rows)
    again = sum(1 for batch in todo for row in batch if row["id"] in stored)
    return (f"resuming: {answered} of {total} questions already answered; {len(todo)} unit(s) of questions "
            f"({sum(map(len, todo))} questions) will be answered now, {again} of them again: a unit is "
            f"answered whole so that results stay bit-identical")


def _finish(config, rows, batches, elapsed, answered, processes):
    """Merge every row into results.jsonl, check that every batch is complete, write summary.json."""
    final = run_folder.merge_results(config.output_dir, [row["id"] for row in rows])
    missing = sum(map(len, unfinished(batches, {row["id"]: row.get("batch") for row in final})))
    if missing:
        raise RunError(f"{missing} question(s) have no up-to-date results row after merging the shards of "
                       f"{config.output_dir} (is it on a file system every node shares?); rerun with --resume")
    summary = make_summary(config, final, elapsed, answered_now=answered, processes=processes)
    write_json_atomic(run_folder.summary_path(config.output_dir), summary)
    return summary


def make_summary(config, results, elapsed, answered_now, processes=1):
    per_category = {}
    for row in results:
        stats = per_category.setdefault(row.get("category") or "uncategorized", {"n": 0, "correct": 0})
        stats["n"] += 1
        stats["correct"] += bool(row["correct"])
    for stats in per_category.values():
        stats["accuracy"] = stats["correct"] / stats["n"]
    correct = sum(bool(r["correct"]) for r in results)
    return {"model": config.model, "benchmark": os.path.abspath(config.benchmark), "output_dir": config.output_dir,
            "questions": len(results), "correct": correct,
            "accuracy": correct / len(results) if results else 0.0,
            "per_category": dict(sorted(per_category.items())),
            "answered_this_run": answered_now, "wall_time_s": round(elapsed, 3),
            "questions_per_second": round(answered_now / elapsed, 3) if elapsed > 0 and answered_now else None,
            "processes": processes, "batch_size": config.batch_size, "max_new_tokens": config.max_new_tokens,
            "capture_activations": config.capture_activations,
            "activation_dir": config.activation_save_dir if config.capture_activations else None}


def format_summary(summary):
    """An aligned, human-readable table of a summary."""
    lines = [f"model      {summary['model']}", f"benchmark  {summary['benchmark']}",
             f"accuracy   {summary['accuracy']:.1%}  ({summary['correct']}/{summary['questions']} correct)", "",
             f"{'category':<20} {'n':>5} {'correct':>8} {'accuracy':>9}"]
    for name, stats in summary["per_category"].items():
        lines.append(f"{name:<20} {stats['n']:>5} {stats['correct']:>8} {stats['accuracy']:>9.1%}")
    qps = summary["questions_per_second"]
    lines += ["", f"wall time  {summary['wall_time_s']:.1f} s for {summary['answered_this_run']} questions"
              + (f" ({qps:.2f} questions/s)" if qps else "")]
    lines.append(f"results    {run_folder.results_path(summary['output_dir'])}")
    return "\n".join(lines)
