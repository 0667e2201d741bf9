"""Which results field a probe stays within: the task, for a folder that holds several (lm-eval, Inspect).

A folder of several tasks mixes their difficulties: pooled, anything that tells the tasks apart
"predicts" correctness. By default (strata="auto") such a folder (run_config.json lists two or more
`tasks`) is probed within each task: folds stratified on target x task and every AUROC comparing only
answers of one task; a note says so.

Public names:
    probe_strata(run_dir, asked="auto", groups=None) -> (field or None, note or None)

Example:
    >>> probe_strata("results/mc")                        # a main.py folder: one benchmark
    (None, None)
    >>> probe_strata("results/mc", "none"), probe_strata("results/mc", "subject")[0]
    ((None, None), 'subject')
"""
from typing import Any

from ...store.run_folder import read_run_config


def probe_strata(run_dir: str, asked: str | None = "auto", groups: str | None = None) -> tuple[str | None, str | None]:
    """(the results field the probe stays within, or None; a note saying why, or None): `asked` is a field,
    "auto" (the task when the folder holds several tasks and no --probe_groups) or "none"/None."""
    if asked in (None, "none"):
        return None, None
    if asked != "auto":
        return asked, f"stratified by {asked!r} (--probe_strata): folds and AUROC pairs stay within each value"
    tasks = _tasks(run_dir)
    if len(tasks) < 2 or groups:
        return None, None
    shown = ", ".join(map(str, tasks[:5])) + (", ..." if len(tasks) > 5 else "")
    return "category", (f"stratified by task: the folder holds {len(tasks)} tasks ({shown}); folds and AUROC pairs "
                        f"stay within a task (its rows' category); --probe_strata none pools them")


def _tasks(run_dir: str) -> list[Any]:
    """The tasks run_config.json names (lm-eval, Inspect), [] when it names none or is missing."""
    try:
        tasks = read_run_config(run_dir).get("tasks")
    except FileNotFoundError:
        return []
    return list(tasks) if isinstance(tasks, list) else []
