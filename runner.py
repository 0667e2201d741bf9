"""The benchmark run loop: output folder, resume, streaming results, summary.

Public names:
    RunConfig                  every setting of a run (what main.py's flags fill in)
    RunError                   bad run input (existing folder, mismatched resume, ...)
    run_benchmark(config) -> summary dict
    format_summary(summary) -> str     the aligned table main.py prints
    RESULTS_FILE, SUMMARY_FILE, CONFIG_FILE

Example:
    >>> summary = run_benchmark(RunConfig(limit=10, output_dir="results/try", capture_activations=True))
    >>> print(format_summary(summary))

Layout of a run folder:
    run_config.json   the settings (checked on --resume)
    results.jsonl     one graded row per question, appended (flushed, fsynced) as each question ends,
                      rewritten in benchmark order when the run completes
    shards/           several processes (torchrun / accelerate launch): results.rank<R>.jsonl per
                      process, appended like results.jsonl; merged into it (and removed) at the end,
                      or at the start of a --resume
    activations/      one record file per question (written before its results row)
    summary.json      counts, accuracy overall and per category, wall time, questions per second

Batches: the run's questions are split once into length-sorted units (the plan): with continuous
batching (greedy decoding) a unit holds GROUP_BATCHES x batch_size questions, of which batch_size
decode at once and a finished one's slot is refilled from the unit; otherwise a unit is one
model.generate batch. Float results depend on which questions share a forward pass, so a unit is
answered whole, by one process, and each row keeps the unit's key: --resume re-answers a unit
unless all its rows carry its key. A run thus gives the same rows and records however often it
was interrupted and however many processes answered it. Rows (and record files) are written as
each question finishes.
"""
import ctypes
import dataclasses
import datetime
import functools
import glob
import hashlib
import json
import logging
import os
import time

import torch
from tqdm.auto import tqdm

import distributed
import storage
from benchmark import DEFAULT_BENCHMARK, format_question, load_benchmark
from capture import parse_positions, resolve_layers
from evaluate import iter_answers
from generation import CaptureSettings, GenerationSettings, decoding_mode, prompt_lengths
from models import DEFAULT_MODEL, load_model

log = logging.getLogger(__name__)

RESULTS_FILE, SUMMARY_FILE, CONFIG_FILE = "results.jsonl", "summary.json", "run_config.json"
GROUP_BATCHES = 8       # with continuous batching, a planned unit holds this many batches' questions
ACTIVATIONS_DIR, SHARDS_DIR = "activations", "shards"
# settings that change what a question's answer or record is: a resumed run must match them
RESUME_KEYS = ("model", "benchmark", "question_field", "answer_field", "choices_field", "id_field",
               "max_new_tokens", "chat_template", "dtype", "seed", "capture_activations", "layers",
               "positions", "activation_dtype", "activation_format", "activation_save_dir")


class RunError(ValueError):
    """A run cannot start or continue; the message says why and what to do."""


@dataclasses.dataclass
class RunConfig:
    model: str = DEFAULT_MODEL          # hub id, local folder, .gguf file
    benchmark: str = DEFAULT_BENCHMARK  # JSONL / JSON / CSV
    question_field: str = "question"
    answer_field: str = "answer"
    choices_field: str = "choices"
    id_field: str = "id"
    limit: int = None                   # first N questions of the benchmark
    batch_size: int = 8                 # prompts decoded at once
    continuous_batching: bool = True    # greedy: refill a finished row at once (False: model.generate batches)
    max_new_tokens: int = 32
    seed: int = 0
    chat_template: str = "auto"         # auto / on / off
    device: str = "auto"
    dtype: str = "auto"
    device_map: str = None              # e.g. auto: spread the model over the GPUs (and CPU)
    max_memory: str = None              # with device_map, e.g. "0=20GiB,1=20GiB,cpu=60GiB"
    dist_timeout: float = distributed.DEFAULT_TIMEOUT_MIN  # minutes a process waits for the others
    output_dir: str = None              # default results/<timestamp>
    resume: bool = False
    capture_activations: bool = False
    activation_save_dir: str = None     # default <output_dir>/activations
    layers: str = None                  # e.g. "embeddings,0,5,-1,final_norm"; None: embeddings + all layers
    positions: str = "all"
    activation_dtype: str = None
    activation_format: str = "pkl"      # pkl / safetensors

    def __post_init__(self):
        if self.limit is not None and self.limit < 1:
            raise RunError(f"--limit must be at least 1, got {self.limit}")
        if self.batch_size < 1:
            raise RunError(f"--batch_size must be at least 1, got {self.batch_size}")
        if self.max_new_tokens < 1:
            raise RunError(f"--max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.activation_format not in ("pkl", "safetensors"):
            raise RunError(f"--activation_format must be pkl or safetensors, got {self.activation_format!r}")
        if self.max_memory is not None:
            if not self.device_map:
                raise RunError("--max_memory needs --device_map (e.g. --device_map auto)")
            distributed.parse_max_memory(self.max_memory)        # checked now, used at load time
        if not self.dist_timeout > 0:
            raise RunError(f"--dist_timeout must be a positive number of minutes, got {self.dist_timeout}")
        if self.output_dir is None:
            stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.output_dir = os.path.join("results", stamp)
        if self.activation_save_dir is None:
            self.activation_save_dir = os.path.join(self.output_dir, ACTIVATIONS_DIR)

    def resume_view(self):
        """The settings a resumed run must share, paths made comparable."""
        view = {k: getattr(self, k) for k in RESUME_KEYS}
        view["benchmark"] = os.path.abspath(self.benchmark)
        view["activation_save_dir"] = os.path.relpath(self.activation_save_dir, self.output_dir)
        return view


# ----------------------------------------------------------------------------- the output folder

def check_output_dir(config):
    """Refuse a non-empty folder without --resume, or a resume with other settings (writes nothing)."""
    out = config.output_dir
    if os.path.isdir(out) and os.listdir(out) and not config.resume:
        raise RunError(f"output folder {out} already exists and is not empty; pass --resume to continue "
                       f"that run, or choose another --output_dir")
    config_path = os.path.join(out, CONFIG_FILE)
    if config.resume and os.path.isfile(config_path):
        with open(config_path) as f:
            stored = json.load(f)
        diffs = [f"{k}: stored {stored.get(k)!r}, now {v!r}" for k, v in config.resume_view().items() if stored.get(k) != v]
        if diffs:
            raise RunError(f"--resume: the settings differ from the stored run in {out}: " + "; ".join(diffs)
                           + ". Use the stored settings, or a new --output_dir")


def open_output_dir(config, rows=()):
    """Create (or reopen) the run folder; returns {id: batch key} of the rows already answered
    (shards left by an interrupted multi-process run are merged into results.jsonl first)."""
    out = config.output_dir
    os.makedirs(out, exist_ok=True)
    config_path = os.path.join(out, CONFIG_FILE)
    if not os.path.isfile(config_path):
        storage.write_json_atomic(config_path, config.resume_view())
    if config.capture_activations:
        os.makedirs(config.activation_save_dir, exist_ok=True)
        removed = storage.remove_stale_temp_files(config.activation_save_dir)
        if removed:
            log.info("removed %d unfinished temp file(s) from an interrupted run", removed)
    stored = merge_results(config, rows) if _shard_files(out) else repair_results(os.path.join(out, RESULTS_FILE))
    return {row["id"]: row.get("batch") for row in stored}


def repair_results(path):
    """Read results.jsonl, cutting a torn last line (a run killed mid-write); returns the rows."""
    if not os.path.exists(path):
        return []
    with open(path, "rb") as f:
        data = f.read()
    rows, good = [], 0
    for line in data.splitlines(keepends=True):
        try:
            if not line.endswith(b"\n"):
                raise ValueError("torn line")
            rows.append(json.loads(line))
        except ValueError:
            break
        good += len(line)
    if good != len(data):
        log.warning("%s: dropped %d bytes of an unfinished last line", os.path.basename(path), len(data) - good)
        with open(path, "r+b") as f:
            f.truncate(good)
            f.flush()
            os.fsync(f.fileno())
    return rows


def append_results(path, results):
    """Append rows and make them durable before anything else happens."""
    with open(path, "a", encoding="utf-8") as f:
        for row in results:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


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
    if to_answer < len(rows):
        log.info("resuming: %d of %d questions already answered", len(rows) - to_answer, len(rows))
    results_path = _results_path(config, procs)
    torch.manual_seed(config.seed)
    start = time.perf_counter()
    with _progress_bar(procs, len(rows), to_answer, mine) as bar:
        for n, batch in enumerate(mine, 1):
            key = batch_key(batch)
            for result, record in iter_answers(model, tokenizer, batch, settings, capture, config.batch_size):
                append_results(results_path, [_save_record(config, result, record, key)])
                del record
                _trim_heap()
                bar.update(1)
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
    config_path = os.path.join(config.output_dir, CONFIG_FILE)
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
        return os.path.join(config.output_dir, RESULTS_FILE)
    folder = os.path.join(config.output_dir, SHARDS_DIR)
    os.makedirs(folder, exist_ok=True)
    return os.path.join(folder, f"results.rank{procs.rank}.jsonl")


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
    path = storage.record_path(config.activation_save_dir, result["id"], config.activation_format)
    storage.save_activations(record, path)
    result["activation_file"] = os.path.relpath(path, config.output_dir)
    return result


def _finish(config, rows, batches, elapsed, answered, processes):
    """Merge every row into results.jsonl, check that every batch is complete, write summary.json."""
    final = merge_results(config, rows)
    missing = sum(map(len, unfinished(batches, {row["id"]: row.get("batch") for row in final})))
    if missing:
        raise RunError(f"{missing} question(s) have no up-to-date results row after merging the shards of "
                       f"{config.output_dir} (is it on a file system every node shares?); rerun with --resume")
    summary = make_summary(config, final, elapsed, answered_now=answered, processes=processes)
    storage.write_json_atomic(os.path.join(config.output_dir, SUMMARY_FILE), summary)
    return summary


def _shard_files(output_dir):
    return sorted(glob.glob(os.path.join(glob.escape(output_dir), SHARDS_DIR, "results.rank*.jsonl")))


def merge_results(config, rows):
    """Fold results.jsonl and every shard into results.jsonl (atomically), in benchmark order, then
    remove the shards; a question answered twice keeps its latest row. Rows outside `rows` stay last."""
    out = config.output_dir
    path = os.path.join(out, RESULTS_FILE)
    shards = _shard_files(out)
    stored = {}
    for source in [path] + shards:                   # shards are newer than results.jsonl
        for row in repair_results(source):
            stored.pop(row["id"], None)
            stored[row["id"]] = row
    ordered = [stored.pop(row["id"]) for row in rows if row["id"] in stored] + list(stored.values())
    storage.write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    for shard in shards:
        os.remove(shard)
    try:
        os.rmdir(os.path.join(out, SHARDS_DIR))      # also when no process had anything left to do
    except OSError:
        pass                                         # absent, or something else lives there
    return ordered


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
    lines.append(f"results    {os.path.join(summary['output_dir'], RESULTS_FILE)}")
    return "\n".join(lines)
