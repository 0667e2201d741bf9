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
    results.jsonl     one graded row per question, appended (flushed, fsynced) as each batch ends,
                      rewritten in benchmark order when the run completes
    activations/      one record file per question (written before its results row)
    summary.json      counts, accuracy overall and per category, wall time, questions per second
"""
import dataclasses
import datetime
import json
import logging
import os
import time

import torch
from tqdm.auto import tqdm

import storage
from benchmark import DEFAULT_BENCHMARK, format_question, load_benchmark
from capture import parse_positions, resolve_layers
from evaluate import answer_rows
from generation import CaptureSettings, GenerationSettings, prompt_lengths
from models import DEFAULT_MODEL, load_model

log = logging.getLogger(__name__)

RESULTS_FILE, SUMMARY_FILE, CONFIG_FILE = "results.jsonl", "summary.json", "run_config.json"
ACTIVATIONS_DIR = "activations"
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
    batch_size: int = 8                 # prompts per left-padded generate() call
    max_new_tokens: int = 32
    seed: int = 0
    chat_template: str = "auto"         # auto / on / off
    device: str = "auto"
    dtype: str = "auto"
    device_map: str = None
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


def open_output_dir(config):
    """Create (or reopen) the run folder; returns the ids already answered."""
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
    return {row["id"] for row in repair_results(os.path.join(out, RESULTS_FILE))}


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
        log.warning("results.jsonl: dropped %d bytes of an unfinished last line", len(data) - good)
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


# ----------------------------------------------------------------------------- the loop

def length_sorted_batches(rows, tokenizer, chat_template, batch_size):
    """Batches of rows with similar prompt lengths, so little compute goes to padding."""
    lengths = prompt_lengths(tokenizer, [format_question(r) for r in rows], chat_template)
    order = sorted(range(len(rows)), key=lambda i: (lengths[i], i))
    return [[rows[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]


def run_benchmark(config):
    """Answer, grade (and capture) every question; returns the summary written to summary.json."""
    rows = load_benchmark(config.benchmark, question_field=config.question_field, answer_field=config.answer_field,
                          choices_field=config.choices_field, id_field=config.id_field)[: config.limit]
    check_output_dir(config)                      # every input is checked before anything is written
    model, tokenizer = load_model(config.model, device=config.device, dtype=config.dtype, device_map=config.device_map)
    settings = GenerationSettings(max_new_tokens=config.max_new_tokens, use_chat_template=config.chat_template)
    capture = None
    if config.capture_activations:
        capture = CaptureSettings(resolve_layers(model, config.layers), parse_positions(config.positions),
                                  config.activation_dtype)
        capture.torch_dtype()
    done = open_output_dir(config)
    pending = [row for row in rows if row["id"] not in done]
    if done:
        log.info("resuming: %d of %d questions already answered", len(rows) - len(pending), len(rows))
    torch.manual_seed(config.seed)
    results_path = os.path.join(config.output_dir, RESULTS_FILE)
    start = time.perf_counter()
    with tqdm(total=len(rows), initial=len(rows) - len(pending), desc="questions", unit="q") as bar:
        for batch in length_sorted_batches(pending, tokenizer, config.chat_template, config.batch_size):
            pairs = answer_rows(model, tokenizer, batch, settings, capture)
            append_results(results_path, [_save_record(config, result, record) for result, record in pairs])
            bar.update(len(batch))
    elapsed = time.perf_counter() - start
    final = _reorder_results(results_path, rows)
    summary = make_summary(config, final, elapsed, answered_now=len(pending))
    storage.write_json_atomic(os.path.join(config.output_dir, SUMMARY_FILE), summary)
    return summary


def _save_record(config, result, record):
    """Write the question's record file (complete) before its results row exists."""
    if record is None or "activations" not in record:
        return result
    path = storage.record_path(config.activation_save_dir, result["id"], config.activation_format)
    storage.save_activations(record, path)
    result["activation_file"] = os.path.relpath(path, config.output_dir)
    return result


def _reorder_results(path, rows):
    """Rewrite results.jsonl in benchmark order (atomically); rows outside the benchmark are kept last."""
    stored = {row["id"]: row for row in repair_results(path)}
    ordered = [stored.pop(row["id"]) for row in rows if row["id"] in stored] + list(stored.values())
    storage.write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    return ordered


def make_summary(config, results, elapsed, answered_now):
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
            "batch_size": config.batch_size, "max_new_tokens": config.max_new_tokens,
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
