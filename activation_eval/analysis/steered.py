"""Steered and unsteered runs are never pooled or compared silently: the notes that say which runs
(or records, or rows) were answered under which interventions (schema/interventions.py).

Public names:
    run_steering(run_dir, rows=()) -> [[entry, ...], ...]   the distinct intervention lists of a run: its
                               run_config.json's, then any other its rows carry (a plain run: [[]])
    steering_notes(runs) -> [str]   runs = [(name, [[entry, ...], ...]), ...]: a note for each run whose rows
                               differ among themselves, a note that one run is steered (one run), and a note
                               when two runs differ ("compared as given")
    record_steering_notes(record_a, record_b, names=("A", "B")) -> [str]   the same for two records

Example:
    >>> entry = {"kind": "add", "layer": "layer_3", "positions": "all", "alpha": 4.0,
    ...          "direction_sha256": "1a2b3c4d" + "0" * 56}
    >>> steering_notes([("runs/steer", [[entry]]), ("runs/plain", [[]])])
    ['runs/steer is steered (add layer_3 alpha 4.0 at all (sha 1a2b3c4d)) and runs/plain is not: compared as given']
    >>> steering_notes([("runs/steer", [[entry]])])[0].split(":")[0]
    'runs/steer is steered (add layer_3 alpha 4.0 at all (sha 1a2b3c4d))'
"""
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..schema.interventions import describe_interventions, interventions_differ, interventions_of
from ..store.run_folder import read_run_config

Entries = list[dict[str, Any]]


def run_steering(run_dir: str, rows: Iterable[Mapping[str, Any]] = ()) -> list[Entries]:
    """The distinct intervention lists of a run (see the module docstring); an unreadable run_config.json
    counts as plain (the readers that need it say so themselves)."""
    try:
        stored = interventions_of(read_run_config(run_dir))
    except (OSError, ValueError):
        stored = []
    found = [stored]
    for row in rows:
        entries = interventions_of(row)
        if not entries and not stored:
            continue
        if all(interventions_differ(seen, entries) for seen in found):
            found.append(entries)
    return found


def _said(name: str, steering: Entries) -> str:
    return f"{name} is steered ({describe_interventions(steering)})" if steering else f"{name} is not"


def steering_notes(runs: Sequence[tuple[str, list[Entries]]]) -> list[str]:
    """Notes on the interventions of one or two runs (module docstring); [] when none is steered."""
    notes = [f"the rows of {name} were answered under {len(lists)} different interventions "
             f"({'; '.join(describe_interventions(e) for e in lists)}): pooled as given"
             for name, lists in runs if len(lists) > 1]
    if len(runs) == 1:
        name, lists = runs[0]
        if lists[0]:
            notes.append(f"{_said(name, lists[0])}: its answers and activations were made under that edit")
    elif len(runs) == 2:
        (name_a, a), (name_b, b) = runs
        if interventions_differ(a[0], b[0]):
            first = _said(name_a, a[0]) + ("" if a[0] else " steered")
            notes.append(f"{first} and {_said(name_b, b[0])}: compared as given")
        elif a[0]:
            notes.append(f"{name_a} and {name_b} are both steered ({describe_interventions(a[0])})")
    return notes


def record_steering_notes(record_a: Mapping[str, Any], record_b: Mapping[str, Any],
                          names: tuple[str, str] = ("A", "B")) -> list[str]:
    """steering_notes of two records (their "interventions")."""
    return steering_notes([(names[0], [interventions_of(record_a)]), (names[1], [interventions_of(record_b)])])
