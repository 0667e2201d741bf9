"""What the modes that write files return: --export_hf (a datasets folder) and --report (an HTML page).

Their --json output is the result, its fields as keys, plus "format_version".

Public names:
    ExportResult        --export_hf: the datasets folder written
    ReportResult        --report: the HTML file written
    FORMAT_VERSION, CONTRACTS

Example:
    >>> ExportResult(path="exports/mc", rows=12, columns=["id", "correct", "category", "layer_5"], reduce="last_prompt").rows
    12
"""
from dataclasses import dataclass
from typing import Annotated, ClassVar

FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class ExportResult:
    """A run exported as a Hugging Face datasets folder (datasets.load_from_disk reads it)."""
    format_version: ClassVar[int] = FORMAT_VERSION
    path: Annotated[str, "the folder written"]
    rows: Annotated[int, "rows: one per question with a record"]
    columns: Annotated[list[str], "id, correct, category, then one column per layer"]
    reduce: Annotated[str | int, "how each layer became one vector per question (auto made concrete)"]


@dataclass(frozen=True, kw_only=True)
class ReportResult:
    """A run's self-contained HTML report."""
    format_version: ClassVar[int] = FORMAT_VERSION
    report: Annotated[str, "the HTML file written"]


CONTRACTS = (ExportResult, ReportResult)
