"""The transfer result: how well a probe trained on one group of questions ranks another.

Row g of the matrix = the probe trained on group g, column h = scored on group h's questions; the
diagonal is out-of-fold within the group. Groups are the values of a results field (--transfer
category) or the two runs (--probe with --test_run). analysis/probe/transfer.py builds it.

Public names:
    TransferResult      the matrix with its intervals (the --json output's "transfer")
    Overlap             the questions a test set shares with its training set (--test_run)
    upgrade_transfer_json(data) -> data   a saved transfer result of format 1 or 2 in today's keys (read it then
                        with analysis.jsonio.from_json(TransferResult, ...); schema.probe.upgrade_probe_json
                        upgrades the transfer a probe result holds)
    FORMAT_VERSION, CONTRACTS

Example:
    >>> t = TransferResult(by="category", layer="layer_3", groups=["a", "b"], n={"a": 40, "b": 38}, level=0.95,
    ...                    auroc=[[0.8, 0.7], [None, 0.75]], auroc_ci=[[(0.7, 0.9), (0.6, 0.8)], [None, (0.6, 0.85)]],
    ...                    notes=[], shared=[[0, 0], [0, 0]], in_sample=False)
    >>> t.auroc[0][1], t.format_version
    (0.7, 3)
"""
import dataclasses
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from .estimates import Interval

FORMAT_VERSION = 3                 # 2: shared, in_sample and Overlap (issue 27); 3: the group bounds (issue 29)


@dataclass(frozen=True, kw_only=True)
class TransferResult:
    """The transfer matrix of a probe across groups of questions, AUROC with intervals per cell."""
    format_version: ClassVar[int] = FORMAT_VERSION
    by: Annotated[str, "what the groups are: a results field (e.g. category) or \"run\" (--test_run)"]
    layer: Annotated[str | None, "the layer whose probe was transferred (the probe's best layer)"]
    groups: Annotated[list[str], "the groups, sorted: the matrix's rows (trained on) and columns (tested on)"]
    n: Annotated[dict[str, int], "questions (rows) per group"]
    level: Annotated[float, "the intervals' level, e.g. 0.95"]
    auroc: Annotated[list[list[float | None]], "[trained on][tested on] AUROC; the diagonal out-of-fold within the "
                                               "group; None: no probe (a class < 2 questions) or no class to score"]
    auroc_ci: Annotated[list[list[Interval | None]], "each cell's percentile bootstrap interval over the tested "
                                                     "group's questions (None where the cell is None)"]
    notes: Annotated[list[str], "why cells are missing"]
    shared: Annotated[list[list[int]], "[trained on][tested on] rows of the tested group that the training group "
                                       "shares (same id or same prompt hash): left out of the cell unless in_sample "
                                       "(the diagonal, cross-validated within the group: 0)"]
    in_sample: Annotated[bool, "--keep_overlap: shared rows were kept, so cells with shared > 0 are partly in-sample"]
    n_values: Annotated[int, "distinct values of the field (groups) before the bounds; 0: not recorded"] = 0
    merged: Annotated[int, "values merged into the group \"(other)\" (or left out with it, see skipped_rows): "
                           "beyond the max_groups largest, or smaller than min_rows / 2 of a class"] = 0
    skipped_rows: Annotated[int, "rows in no group of the matrix: the merged group was itself too small"] = 0
    shortened: Annotated[int, "values longer than max_label characters, labelled by their start, an ellipsis "
                              "and a hash"] = 0
    max_groups: Annotated[int | None, "groups kept as their own row and column at most (None: all, the two runs)"] = None
    min_rows: Annotated[int, "rows a group needs (and 2 of each class) to be kept as its own group"] = 0
    max_label: Annotated[int, "longest group label in characters"] = 40
    max_tested: Annotated[int | None, "rows of a group its column's cells score at most (a seeded random sample of "
                                      "a larger group; None: all)"] = None
    n_tested: Annotated[dict[str, int], "rows of each group its column's cells score (before shared rows are left "
                                        "out); fewer than n where the group was sampled"] = dataclasses.field(
        default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Overlap:
    """Questions of a test set that its training set also holds: by id, or by a hash of the prompt text
    (the same question under another id). Scoring them measures memory of the training questions, not
    transfer, so they are left out of the test set unless --keep_overlap keeps them (then in-sample)."""
    n_test: Annotated[int, "test rows before the check"]
    shared_by_id: Annotated[int, "test rows whose id the training set holds"]
    shared_by_prompt: Annotated[int, "test rows whose prompt hash (sha256 of the prompt, else the question, "
                                     "whitespace collapsed) the training set holds"]
    shared: Annotated[int, "test rows shared by either"]
    dropped: Annotated[int, "rows left out of the test set (0 with --keep_overlap)"]
    in_sample: Annotated[bool, "--keep_overlap: the shared rows were scored, so the test figures are partly "
                               "in-sample"]


CONTRACTS = (TransferResult, Overlap)


def upgrade_transfer_json(data: Any) -> Any:
    """A transfer result's JSON of any format in today's keys (a new dict; format 3 and later unchanged).

    Format 2 kept every value of the field as its own group, labelled by its whole text, and scored every row:
    the format-3 fields say so (n_values = the groups, nothing merged, skipped, shortened or sampled; no
    max_groups, min_rows or max_tested; max_label = the longest label it holds; n_tested = n). Format 1 did not
    look for rows the training group shares with the tested one: they were scored, uncounted (shared 0 in
    every cell, in_sample true, and a note that says so).

    >>> old = {"format_version": 2, "by": "category", "layer": "layer_3", "groups": ["geography", "math"],
    ...        "n": {"geography": 40, "math": 38}, "level": 0.95, "auroc": [[0.8, 0.7], [0.6, 0.75]],
    ...        "auroc_ci": [[[0.7, 0.9], [0.6, 0.8]], [[0.5, 0.7], [0.6, 0.85]]], "notes": [],
    ...        "shared": [[0, 0], [0, 0]], "in_sample": False}
    >>> new = upgrade_transfer_json(old)
    >>> new["format_version"], new["n_values"], new["merged"], new["max_groups"], new["max_label"], new["n_tested"]
    (3, 2, 0, None, 9, {'geography': 40, 'math': 38})
    """
    if not isinstance(data, dict) or not isinstance(data.get("format_version"), int) or data["format_version"] >= 3:
        return data
    out = dict(data)
    groups = [g for g in out.get("groups") or [] if isinstance(g, str)]
    if out["format_version"] < 2:
        out["shared"] = [[0] * len(groups) for _ in groups]
        out["in_sample"] = True
        out["notes"] = [*(out.get("notes") or []), _V1_OVERLAP_NOTE]
    out.update(format_version=3, n_values=len(groups), merged=0, skipped_rows=0, shortened=0, max_groups=None,
               min_rows=0, max_label=max(map(len, groups), default=0), max_tested=None,
               n_tested=dict(out.get("n") or {}))
    return out


_V1_OVERLAP_NOTE = ("saved in format 1, before rows that the training group shares with the tested group (same id "
                    "or prompt) were looked for: they were scored and not counted, so cells may be partly in-sample")

