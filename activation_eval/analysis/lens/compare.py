"""The lens's correct-vs-incorrect table, as the text output and the report both show it.

Per layer: the stratified difference (incorrect - correct) of the mean ln(rank) and of the mean
probability with its interval, the pooled one beside; with one stratum, the pooled one alone, headed
"not stratified"; no row for a layer without both correct and incorrect questions.

Public names:
    lens_comparison(result) -> LensComparison    what, line, method, headers, rows, warning
    COMPARED, REVERSED

Example:
    >>> from activation_eval.analysis.lens import logit_lens_run
    >>> c = lens_comparison(logit_lens_run("results/mc", layers=["layer_5"], progress=False))
    >>> c.line, c.headers[0]
    ("not stratified: one stratum (category 'multiple_choice')", 'layer')
"""
from dataclasses import dataclass

from ...schema.lens import LensDifferences, LensResult
from ...schema.stratify import Difference
from ..stratify import format_estimate, reversal_warning, strata_line

COMPARED = (("log_rank", "ln rank"), ("prob", "prob"))
REVERSED = "(!)"      # marks a pooled difference whose sign is opposite to the stratified one


@dataclass(frozen=True)
class LensComparison:
    """The table and the lines around it."""
    what: str                   # what is compared
    line: str                   # how it was stratified (stratify.strata_line)
    method: str                 # how the differences were computed (LensResult.stratified_method)
    headers: list[str]
    rows: list[list[str]]
    warning: str | None         # the layers whose pooled sign is reversed


def _difference(differences: LensDifferences, key: str) -> Difference:
    return differences.log_rank if key == "log_rank" else differences.prob


def lens_comparison(result: LensResult) -> LensComparison:
    """The correct-vs-incorrect table of a logit_lens_run result (see the module docstring)."""
    strat = result.stratified
    first = strat[result.layer_names[0]].log_rank
    level = f"{first.level * 100:g}%"
    one = first.strata_used + len(first.strata_skipped) <= 1
    parts = (("pooled", "not stratified"),) if one else (("stratified", "stratified"), ("pooled", "pooled"))
    rows = [[name] + [_cell(_difference(strat[name], k), part) for k, _ in COMPARED for part, _ in parts]
            for name in strat if strat[name].log_rank.pooled.value is not None]
    flagged = {f"{name} ({label})": _difference(strat[name], k) for name in strat for k, label in COMPARED}
    return LensComparison(
        what=("incorrect - correct per layer: mean ln(gold rank) (> 0: the gold token ranks lower when the answer is "
              "wrong) and mean gold probability"),
        line=strata_line(first), method=result.stratified_method,
        headers=["layer"] + [f"{label}: {title} [{level} CI]" for _, label in COMPARED for _, title in parts],
        rows=rows, warning=reversal_warning(flagged, mark=REVERSED))


def _cell(comparison: Difference, part: str) -> str:
    """A table cell: the estimate with its interval; a pooled one whose sign is reversed marked."""
    text = format_estimate(comparison.stratified if part == "stratified" else comparison.pooled)
    return text + f" {REVERSED}" if part == "pooled" and comparison.sign_reversal else text
