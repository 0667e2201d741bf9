"""The causal check's re-runs: RUN's questions answered again, with RUN's model, prompts and decoding,
under each condition, each part of a condition a normal run folder (main.py's runner) that is kept.

Public names:
    Part(ids, interventions, folder)   questions answered under one set of interventions, in one folder
    Condition(name, parts)             one condition's parts: together they answer every question once
    rerun_settings(run_dir) -> {RunConfig field: value}   RUN's own settings, for answering its questions again
    run_condition(condition, settings, progress=False) -> {question id: results row}
    SKIPPED_SETTINGS                   RUN's settings a re-run does not copy (capture, folders, subsets)

Example:
    >>> import torch
    >>> from activation_eval.capture.intervene import steer
    >>> u = torch.ones(64)                                               # the tiny model's hidden size
    >>> settings = rerun_settings("results/run1")                       # model, benchmark, template, decoding
    >>> cond = Condition("alpha=+4", (Part(("geo-001",), (steer(u, "layer_3", 9.1),), "causal/alpha=+4/fold_0"),))
    >>> rows = run_condition(cond, settings); rows["geo-001"]["gold_logprob_mean"] < 0
    True

Every part is answered with capture off, --gold_logprob on (the gold answer's teacher-forced
log-likelihood under the same interventions) and --resume when its folder exists: a check that
was stopped goes on where it stopped, and every folder stays for an audit (its run_config.json and
rows name the interventions: layer, positions, alpha, the direction's checksum and source).
"""
import os
from dataclasses import dataclass

from ..run.config import RESUME_KEYS, RunConfig
from ..run.runner import run_benchmark
from ..store.run_folder import CONFIG_FILE, read_run_config
from ..store.run_reader import read_run_rows

__all__ = ["Part", "Condition", "rerun_settings", "run_condition", "SKIPPED_SETTINGS"]

# what a re-run sets itself: no capture, its own folders and subsets, the gold log-likelihood on
SKIPPED_SETTINGS = ("capture_activations", "activation_save_dir", "layers", "positions", "activation_dtype",
                    "activation_format", "activation_store", "question_ids", "interventions", "gold_logprob",
                    "steer", "steer_layer", "steer_alpha", "ablate", "ablate_layer", "intervention_positions",
                    "p_true", "num_samples")


@dataclass(frozen=True)
class Part:
    """Questions answered under one set of interventions (a fold and its direction), in one run folder."""
    ids: tuple
    interventions: tuple
    folder: str


@dataclass(frozen=True)
class Condition:
    """One condition of the check: its parts together answer every question once."""
    name: str                 # "baseline", "alpha=+4", "ablate", "random_cov_0+", ...
    parts: tuple


def rerun_settings(run_dir):
    """RUN's settings as RunConfig keyword arguments (what --resume compares: model, benchmark, fields,
    template, few-shot, decoding), less SKIPPED_SETTINGS. A folder that main.py did not write, or
    that answered several samples per question, is refused in one line."""
    try:
        stored = read_run_config(run_dir)             # bounded, checked (a folder from a stranger)
    except FileNotFoundError:
        raise ValueError(f"--causal {run_dir}: it has no {CONFIG_FILE}: give a run folder written by "
                         f"main.py") from None
    if stored.get("producer", "main") != "main":
        who = stored.get("producer")
        raise ValueError(f"--causal {run_dir}: the folder was written by {who}, not main.py: the check answers "
                         f"the run's questions again with main.py (run the benchmark with main.py first)")
    if stored.get("num_samples", 1) != 1:
        raise ValueError(f"--causal {run_dir}: the run answered {stored['num_samples']} samples per question; "
                         f"the check compares one answer per question (use a run with --num_samples 1)")
    return {k: stored[k] for k in RESUME_KEYS if k in stored and k not in SKIPPED_SETTINGS}


def run_condition(condition, settings, progress=False):
    """Answer every part of `condition` (resuming a part whose folder exists) -> {question id: row}."""
    rows = {}
    for part in condition.parts:
        config = RunConfig(**settings, output_dir=part.folder, question_ids=tuple(part.ids),
                           interventions=tuple(part.interventions), gold_logprob=True, capture_activations=False,
                           resume=os.path.isdir(part.folder) and bool(os.listdir(part.folder)), progress=progress)
        run_benchmark(config)
        for row in read_run_rows(part.folder):
            if str(row["id"]) in part.ids:
                rows[str(row["id"])] = row
    return rows
