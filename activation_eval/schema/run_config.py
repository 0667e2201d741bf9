"""run_config.json: who wrote a run folder, with which settings, in which formats.

The run writer (store/run_writer.py) writes it when it opens a folder, before any answer, and
reads it back when a producer asks to continue a folder: a folder written by another producer is
refused by name. Besides the keys below it holds the producer's own settings, flat (main.py: every
RunConfig field that --resume compares, and the benchmark's fingerprint; lm-eval: its model_args,
tasks and limit; Inspect: its -M arguments and tasks). main.py and the lm-eval backend also write
"interventions": the edits the run answered under ([] for a plain run; a folder written before
reads as []; schema/interventions.py).

Public names:
    FORMAT_VERSION, RunInfo        the contract (the keys every producer writes)
    PRODUCER_LABELS                {producer: how messages name it}
    run_info(producer, settings) -> RunInfo    the keys every producer writes, then its settings
    producer_of(stored) -> producer             "main" for folders written before producers were named

Example:
    >>> info = run_info("lm-eval", {"model": "gpt2", "tasks": ["arc_easy"]})
    >>> info["producer"], info["formats"]["row"], producer_of({"model": "x"})
    ('lm-eval', 4, 'main')
"""
from collections.abc import Mapping
from typing import Annotated, Any, NotRequired, TypedDict

from . import record, rows, summary

FORMAT_VERSION = 2      # 2: interventions
PRODUCER_LABELS = {"main": "main.py", "lm-eval": "the lm-eval backend", "inspect": "the Inspect provider"}


class RunInfo(TypedDict):
    """The keys of run_config.json that every producer writes (its own settings follow, flat)."""
    format_version: Annotated[int, "this contract's version"]
    producer: Annotated[summary.Producer, "who writes the folder: main (main.py), lm-eval, inspect"]
    formats: Annotated[dict[str, int], "the format version of each file kind in the folder: row, record, summary"]
    interventions: NotRequired[Annotated[list[dict[str, Any]], "main.py, lm-eval: the edits made while answering "
                                         "(schema/interventions.py's entries); [] for a plain run"]]


CONTRACTS = (RunInfo,)


def run_info(producer: summary.Producer, settings: Mapping[str, Any]) -> dict[str, Any]:
    """run_config.json's contents: the RunInfo keys first, then the producer's settings."""
    if producer not in PRODUCER_LABELS:
        raise ValueError(f"unknown producer {producer!r}; one of {', '.join(PRODUCER_LABELS)}")
    info: dict[str, Any] = {"format_version": FORMAT_VERSION, "producer": producer,
                            "formats": {"row": rows.FORMAT_VERSION, "record": record.FORMAT_VERSION,
                                        "summary": summary.FORMAT_VERSION}}
    info.update({k: v for k, v in settings.items() if k not in info})
    return info


def producer_of(stored: Mapping[str, Any]) -> str:
    """The producer a stored run_config.json names ("main" when it names none: written before v4)."""
    producer = stored.get("producer")
    return producer if isinstance(producer, str) and producer else "main"
