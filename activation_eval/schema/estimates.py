"""Estimates with their uncertainty: the building blocks of every analysis result.

A figure a researcher publishes comes with its interval; an interval is a (low, high) pair whose
ends are None where it is undefined (too few questions, a resample lacking a class). In JSON an
interval is a two-element list.

Public names:
    Interval            tuple[float | None, float | None]
    Estimate            a value and its interval ({"value", "ci"} in JSON)
    FORMAT_VERSION, CONTRACTS

Example:
    >>> e = Estimate(value=0.42, ci=(0.31, 0.55))
    >>> e.value, e.ci[1]
    (0.42, 0.55)
"""
from dataclasses import dataclass
from typing import Annotated, TypeAlias

FORMAT_VERSION = 1

Interval: TypeAlias = tuple[float | None, float | None]


@dataclass(frozen=True, kw_only=True)
class Estimate:
    """A value with its percentile bootstrap interval (its level is stated by the result holding it)."""
    value: Annotated[float | None, "the estimate on all rows (None: undefined, e.g. no row of a class)"]
    ci: Annotated[Interval, "its interval [low, high] (None ends: undefined)"]


CONTRACTS = (Estimate,)
