"""Correct-vs-incorrect differences within strata (analysis/stratify.py builds them).

Every correct-vs-incorrect figure of the analysis (the logit lens's, the PCA caption's) is computed
within strata (a results field, by default the category) and shown beside the pooled one, so that a
pooled figure cannot reverse (Simpson's paradox).

Public names:
    Stratum             one stratum's counts, difference and weight
    Difference          the stratified and pooled difference (incorrect - correct) with intervals
    FORMAT_VERSION, CONTRACTS

Example:
    >>> from activation_eval.schema.estimates import Estimate
    >>> d = Difference(stratified=Estimate(value=1.0, ci=(0.5, 1.5)), pooled=Estimate(value=-2.0, ci=(-2.5, -1.5)),
    ...                by="category", strata={}, strata_used=2, strata_skipped=[], sign_reversal=True, level=0.95,
    ...                statistic="mean", n_boot=2000, resampling="rows")
    >>> d.sign_reversal, d.stratified.value
    (True, 1.0)
"""
from dataclasses import dataclass
from typing import Annotated, Literal

from .estimates import Estimate

FORMAT_VERSION = 1


@dataclass(frozen=True, kw_only=True)
class Stratum:
    """One stratum (one value of the stratifying field) of a Difference."""
    n_correct: Annotated[int, "rows graded correct in the stratum"]
    n_incorrect: Annotated[int, "rows graded incorrect in the stratum"]
    difference: Annotated[float | None, "statistic(incorrect) - statistic(correct) within the stratum "
                                        "(None: the stratum lacks one of the two)"]
    weight: Annotated[float, "its share of the stratified estimate: n_c n_i / (n_c + n_i), normalised to sum 1"]


@dataclass(frozen=True, kw_only=True)
class Difference:
    """statistic(incorrect) - statistic(correct): within strata (Cochran-Mantel-Haenszel weights) and
    pooled over all rows, each with a percentile bootstrap interval."""
    stratified: Annotated[Estimate, "the weighted mean of the strata's differences, rows resampled within strata"]
    pooled: Annotated[Estimate, "the difference over all rows, strata ignored, rows resampled over the whole run"]
    by: Annotated[str | None, "the results field whose values are the strata (None: not named)"]
    strata: Annotated[dict[str, Stratum], "every stratum, by its label"]
    strata_used: Annotated[int, "strata holding both correct and incorrect rows (those the estimate uses)"]
    strata_skipped: Annotated[list[str], "the labels of the strata lacking correct or incorrect rows"]
    sign_reversal: Annotated[bool, "the pooled sign is opposite to the stratified one and its interval excludes 0"]
    level: Annotated[float, "the intervals' level, e.g. 0.95"]
    statistic: Annotated[Literal["mean", "median"], "the statistic compared"]
    n_boot: Annotated[int, "bootstrap resamples"]
    resampling: Annotated[str, "what was resampled (rows or question clusters, within strata / over all rows)"]


CONTRACTS = (Difference, Stratum)
