"""Correct vs incorrect comparisons within strata (category, or a confounder the user names).

A pooled comparison of correct and incorrect answers can point the opposite way to what holds
within every category (Simpson's paradox): when wrong answers are mostly from one kind of item
(multiple choice, whose gold is a letter), the pooled difference measures the item mix, not
correctness. So every correct-vs-incorrect figure is computed within strata first; the pooled one
is shown beside it, never alone.

Definitions (used everywhere in the analysis):
    difference   statistic(incorrect) - statistic(correct): positive = the incorrect answers' value
                 is higher (a higher gold-token rank, a lower probability is a negative difference)
    stratified   sum_s w_s d_s / sum_s w_s over the strata s that hold both correct and incorrect
                 rows, d_s the difference within s, w_s = n_c n_i / (n_c + n_i) (the
                 Cochran-Mantel-Haenszel weight: the inverse of the variance factor 1/n_c + 1/n_i
                 of a difference of two means, so a stratum with 50 correct and 1 incorrect row
                 counts about as much as one with 1 and 1, not 51 rows' worth)
    pooled       the difference over all rows, strata ignored
    intervals    percentile bootstrap at `level`: the stratified estimate resamples rows (or the
                 `clusters`, e.g. question ids when a question was answered several times) within
                 each stratum, keeping the strata's sizes (a cluster spanning several strata is
                 resampled in a block of such clusters); the pooled one resamples rows (clusters)
                 over the whole run, as a pooled analysis would. Resamples where an estimate is
                 undefined (no stratum keeps both classes) are left out of its interval.
    sign_reversal  the two point estimates have opposite signs and the pooled interval excludes 0:
                 the pooled figure, read alone, claims a direction the within-stratum comparison
                 contradicts (a stratified interval that still holds 0 is not required: the pooled
                 claim is already unsupported)
    statistic    "mean" (default) or "median" (the difference of the groups' medians)

Rows whose `correct` is not True / False, or whose value is nan, are left out.

Public names:
    stratified_difference(values, correct, strata=None, n_boot=2000, seed=0, clusters=None, level=0.95,
                          statistic="mean", by=None) -> schema.stratify.Difference
        stratified and pooled estimates with intervals, each stratum's counts, difference and weight,
        strata used and skipped, the sign reversal flag
    stratified_differences(columns, correct, ...) -> {name: Difference}
        several value columns over the same rows, judged on the same resamples (paired), e.g. every
        layer of a logit lens at once
    row_strata(rows, field="category") -> [label, ...]
                                                the stratum label of each results row (None -> "uncategorized"
                                                for category, "(none)" otherwise); a field other than
                                                category that no row has is a ValueError naming the fields
    strata_line(result) -> str                  "stratified by category (3 strata); pooled shown beside", or
                                                "not stratified: one stratum ...", for every output
    reversal_warning({label: result}, mark=None) -> str or None
                                                one warning naming the labels whose sign_reversal is True
    format_estimate(estimate, fmt="{:+.3g}") -> str
                                                "+0.42 [+0.11, +0.7]" ("-" when undefined)
    DIFFERENCE, WEIGHTS                         the definitions above, as one-line texts for outputs

Example (within each category the incorrect answers score 1 higher; most incorrect answers are
in category "b", whose values are all low, so the pooled difference is negative):
    >>> values = [5, 6] * 8 + [6, 7] * 2 + [0, 1] * 2 + [1, 2] * 8
    >>> correct = [True] * 16 + [False] * 4 + [True] * 4 + [False] * 16
    >>> cats = ["a"] * 20 + ["b"] * 20
    >>> res = stratified_difference(values, correct, cats, by="category")
    >>> res.stratified.value, res.pooled.value, res.sign_reversal
    (1.0, -2.0, True)
    >>> res.stratified.ci[0] > 0 > res.pooled.ci[1]             # 95% intervals
    True
    >>> res.strata["a"]
    Stratum(n_correct=16, n_incorrect=4, difference=1.0, weight=0.5)
    >>> strata_line(res)
    'stratified by category (2 strata); pooled shown beside'
"""
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..schema.estimates import Estimate
from ..schema.stratify import Difference, Stratum

DIFFERENCE = "incorrect - correct"
WEIGHTS = "n_correct * n_incorrect / (n_correct + n_incorrect) per stratum (Cochran-Mantel-Haenszel)"
DEFAULT_FIELD = "category"
MAX_CELLS = 4_000_000      # resample count matrices are built this many cells at a time


def row_strata(rows: Sequence[Mapping[str, Any]], field: str = DEFAULT_FIELD) -> list[str]:
    """The stratum label (a string) of each results row's `field` (see the module docstring); rows
    without the default field (category) are all "uncategorized": one stratum, which outputs say."""
    if field != DEFAULT_FIELD and not any(field in r for r in rows):
        known = sorted({k for r in rows for k in r if not isinstance(r[k], (dict, list))})
        raise ValueError(f"no results row has a field {field!r} to stratify by; --stratify_by takes one of: "
                         f"{', '.join(known)}")
    missing = "uncategorized" if field == "category" else "(none)"
    return [missing if r.get(field) is None or r.get(field) == "" else str(r.get(field)) for r in rows]


def strata_line(result: Difference) -> str:
    """One line saying how `result` (a stratified_difference) was stratified, for every output."""
    by = result.by or "stratum"
    used, skipped = result.strata_used, result.strata_skipped
    total = used + len(skipped)
    n_c = sum(c.n_correct for c in result.strata.values())
    n_i = sum(c.n_incorrect for c in result.strata.values())
    if not (n_c and n_i):
        return f"not compared: {n_c} correct and {n_i} incorrect rows"
    if total <= 1:
        only = next(iter(result.strata), None)
        return "not stratified: one stratum" + (f" ({by} {only!r})" if result.by and only is not None else "")
    if used == 0:
        return (f"not stratified: no {by} value holds both correct and incorrect rows ({total} values); the pooled "
                f"figure is confounded by {by}")
    line = f"stratified by {by} ({used} {'stratum' if used == 1 else 'strata'}"
    if skipped:
        names = ", ".join(repr(s) for s in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        line += f"; {len(skipped)} skipped, lacking correct or incorrect rows: {names}"
    return line + "); pooled shown beside"


def reversal_warning(results: Mapping[str, Difference], mark: str | None = None) -> str | None:
    """A warning naming the labels of `results` ({label: stratified_difference}) whose pooled difference
    points the opposite way to the stratified one (the first three and the last when there are more
    than five; `mark`: the sign that marks them in a table); None when there is none."""
    flagged = [label for label, r in results.items() if r.sign_reversal]
    if not flagged:
        return None
    by = next(iter(results.values())).by or "stratum"
    names = ", ".join(flagged) if len(flagged) <= 5 else f"{', '.join(flagged[:3])}, ..., {flagged[-1]}"
    count = f" ({len(flagged)} of {len(results)}" + (f", marked {mark})" if mark else ")")
    return (f"warning: at {names}{count} the pooled difference points the opposite way to the stratified one "
            f"(Simpson's paradox: the pooled comparison reflects how correct and incorrect rows are spread over "
            f"{by}, not correctness); read the stratified figure")


def format_estimate(estimate: Estimate | None, fmt: str = "{:+.3g}") -> str:
    """'value [low, high]' of an estimate; '-' when undefined."""
    if estimate is None or estimate.value is None:
        return "-"
    lo, hi = estimate.ci
    text = fmt.format(estimate.value)
    return text if lo is None or hi is None else f"{text} [{fmt.format(lo)}, {fmt.format(hi)}]"


def stratified_difference(values: Any, correct: Sequence[Any], strata: Sequence[str] | None = None,
                          n_boot: int = 2000, seed: int = 0, clusters: Sequence[Any] | None = None,
                          level: float = 0.95, statistic: str = "mean", by: str | None = None) -> Difference:
    """The stratified and pooled difference (incorrect - correct) of `values`, with intervals.

    `strata` (one label per row; None: one stratum), `clusters` (one id per row, resampled whole;
    None: rows), `by` the strata's name for the result. See the module docstring.
    >>> r = stratified_difference([1, 2, 4, 10, 10, 12], [1, 1, 0, 1, 0, 0], list("aaabbb"))
    >>> r.stratified.value, round(r.pooled.value, 4), r.strata_used   # hand-checked in the tests
    (1.75, 4.3333, 2)
    """
    return stratified_differences({"value": values}, correct, strata, n_boot, seed, clusters, level,
                                  statistic, by)["value"]


def stratified_differences(columns: Mapping[Any, Any], correct: Sequence[Any],
                           strata: Sequence[str] | None = None, n_boot: int = 2000, seed: int = 0,
                           clusters: Sequence[Any] | None = None, level: float = 0.95, statistic: str = "mean",
                           by: str | None = None) -> dict[Any, Difference]:
    """stratified_difference of every column of `columns` ({name: values}, all over the same rows),
    every column judged on the same bootstrap resamples."""
    if statistic not in ("mean", "median"):
        raise ValueError(f"statistic must be 'mean' or 'median', got {statistic!r}")
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1, got {level!r}")
    correct = list(correct)
    n = len(correct)
    names = list(columns)
    V = np.array([np.asarray(columns[k], dtype=np.float64).reshape(-1) for k in names]).T.reshape(n, len(names))
    graded = [_graded(c) for c in correct]
    keep = np.array([g is not None for g in graded], dtype=bool)
    wrong = np.array([g is False for g in graded], dtype=bool)
    labels = np.array(["all" if strata is None else strata[i] for i in range(n)], dtype=object)
    units = np.arange(n) if clusters is None else _codes(clusters)
    idx = np.flatnonzero(keep)
    V, wrong, labels, units = V[idx], wrong[idx], labels[idx], units[idx]
    order = sorted(set(labels.tolist()), key=str)
    position = {s: i for i, s in enumerate(order)}            # a lookup per row: O(n), not O(n x strata)
    s_code = np.array([position[s] for s in labels], dtype=int) if len(idx) else np.zeros(0, int)
    by_group = np.lexsort((wrong, s_code))                # rows sorted by (stratum, incorrect): slices
    V, wrong, s_code, units = V[by_group], wrong[by_group], s_code[by_group], units[by_group]
    _, unit_code = np.unique(units, return_inverse=True) if len(idx) else (None, np.zeros(0, int))
    unit_code = unit_code.reshape(-1)
    est = _Estimator(V, wrong, s_code, len(order), statistic)
    point = est(np.ones((1, len(idx))))
    strat_draws: list[np.ndarray] = []
    pool_draws: list[np.ndarray] = []
    n_units = int(unit_code.max()) + 1 if len(idx) else 0
    for W in _resample(unit_code, _blocks(unit_code, s_code, n_units), n_boot, seed):
        strat_draws.append(est(W)["stratified"])
    for W in _resample(unit_code, [np.arange(n_units)], n_boot, seed + 1):
        pool_draws.append(est(W)["pooled"])
    strat_boot = np.concatenate(strat_draws) if strat_draws else np.full((0, len(names)), np.nan)
    pool_boot = np.concatenate(pool_draws) if pool_draws else np.full((0, len(names)), np.nan)
    resampling = ("rows" if clusters is None else "clusters") + " within strata (stratified); over all rows (pooled)"
    out = {}
    for j, name in enumerate(names):
        cells = _strata(order, point["per_stratum"][:, :, j])
        stratified = _estimate(point["stratified"][0, j], strat_boot[:, j], level)
        pooled = _estimate(point["pooled"][0, j], pool_boot[:, j], level)
        out[name] = Difference(stratified=stratified, pooled=pooled, by=by, strata=cells,
                               strata_used=sum(c.difference is not None for c in cells.values()),
                               strata_skipped=[s for s, c in cells.items() if c.difference is None],
                               sign_reversal=_reversed(stratified, pooled), level=level,
                               statistic="median" if statistic == "median" else "mean", n_boot=n_boot,
                               resampling=resampling)
    return out


def _strata(order: list[str], per_stratum: np.ndarray) -> dict[str, Stratum]:
    """Each stratum's Stratum from its (n_correct, n_incorrect, difference) column of `per_stratum` (3, strata),
    the weights n_c n_i / (n_c + n_i) normalised to sum 1."""
    raw = {s: per_stratum[:, i] for i, s in enumerate(order)}
    weight = {s: n_c * n_i / (n_c + n_i) if n_c and n_i else 0.0 for s, (n_c, n_i, _) in raw.items()}
    total = sum(weight.values())
    return {s: Stratum(n_correct=int(n_c), n_incorrect=int(n_i), difference=float(d) if n_c and n_i else None,
                       weight=float(weight[s] / total) if total else 0.0)
            for s, (n_c, n_i, d) in raw.items()}


def _graded(c):
    """True / False for a graded row (bools, numpy bools, 0 / 1), None for anything else."""
    if isinstance(c, (bool, np.bool_)) or (isinstance(c, (int, np.integer)) and c in (0, 1)):
        return bool(c)
    return None


def _codes(ids):
    """Cluster ids (any values, also unhashable ones) as integer codes."""
    seen = {}
    return np.array([seen.setdefault(repr(x) if not isinstance(x, (str, int, float, bool)) else x, len(seen))
                     for x in ids], dtype=int)


def _estimate(value: float, boot: np.ndarray, level: float) -> Estimate:
    value = float(value)
    if not np.isfinite(value):
        return Estimate(value=None, ci=(None, None))
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return Estimate(value=value, ci=(None, None))
    tail = 50.0 * (1.0 - level)
    lo, hi = np.percentile(boot, [tail, 100.0 - tail])
    return Estimate(value=value, ci=(float(lo), float(hi)))


def _reversed(stratified: Estimate, pooled: Estimate) -> bool:
    s, p, (lo, hi) = stratified.value, pooled.value, pooled.ci
    if s is None or p is None or lo is None or hi is None or s * p >= 0:
        return False
    return bool(lo > 0 or hi < 0)


def _blocks(unit_code, s_code, n_units):
    """Resampling blocks of units: the units of each stratum; units spanning strata form one block."""
    unit_strata = [set() for _ in range(n_units)]
    for u, s in zip(unit_code.tolist(), s_code.tolist()):
        unit_strata[u].add(s)
    keys = np.array([next(iter(ss)) if len(ss) == 1 else -1 for ss in unit_strata], dtype=int)
    order = np.argsort(keys, kind="stable")                   # each block's units together: O(units log units)
    return np.split(order, np.flatnonzero(np.diff(keys[order])) + 1) if n_units else []


def _resample(unit_code, blocks, n_boot, seed):
    """Yield (m, rows) matrices: how often each row's unit is drawn in each resample, units drawn with
    replacement within their block; a bounded number of cells at a time."""
    rng = np.random.default_rng(seed)
    n_units = sum(len(b) for b in blocks)
    if n_units == 0:
        return
    chunk = max(1, MAX_CELLS // max(n_units, len(unit_code)))
    members = np.concatenate(blocks)                          # the units, block after block
    size = np.repeat([len(b) for b in blocks], [len(b) for b in blocks])
    start = np.repeat(np.cumsum([0] + [len(b) for b in blocks[:-1]]), [len(b) for b in blocks])
    done = 0
    while done < n_boot:                                      # all blocks in one draw: O(m x units) per chunk
        m = min(chunk, n_boot - done)
        draws = members[start + rng.integers(0, size, size=(m, n_units))]        # within each unit's block
        flat = (draws + n_units * np.arange(m)[:, None]).ravel()
        yield np.bincount(flat, minlength=m * n_units).reshape(m, n_units).astype(np.float64)[:, unit_code]
        done += m


class _Estimator:
    """Per resample (a row of weights W (m, rows)): per-stratum differences, stratified and pooled.
    The rows come sorted by (stratum, incorrect), so each stratum's group is a slice of W's columns."""

    def __init__(self, V, wrong, s_code, n_strata, statistic):
        self.V, self.finite = np.nan_to_num(V), np.isfinite(V).astype(np.float64)   # (rows, columns)
        self.VF = self.V * self.finite
        self.wrong, self.statistic = wrong, statistic
        edges = np.searchsorted(s_code * 2 + wrong, np.arange(2 * n_strata + 1))
        self.slices = [(slice(edges[2 * s], edges[2 * s + 1]), slice(edges[2 * s + 1], edges[2 * s + 2]))
                       for s in range(n_strata)]

    def __call__(self, W):
        m, k = W.shape[0], self.V.shape[1]
        per = np.zeros((3, m, len(self.slices), k))         # n_correct, n_incorrect, difference
        num, den = np.zeros((m, k)), np.zeros((m, k))
        sums = np.zeros((2, 2, m, k))                        # (correct, incorrect) x (sum, count), for pooled means
        for s, (right, wrong) in enumerate(self.slices):
            (val_c, n_c), (val_i, n_i) = self._group(W, right, sums[0]), self._group(W, wrong, sums[1])
            with np.errstate(invalid="ignore", divide="ignore"):
                d = val_i - val_c
                w = np.where((n_c > 0) & (n_i > 0), n_c * n_i / (n_c + n_i), 0.0)
            per[0, :, s], per[1, :, s], per[2, :, s] = n_c, n_i, d
            num += np.where(w > 0, w * np.nan_to_num(d), 0.0)
            den += w
        with np.errstate(invalid="ignore", divide="ignore"):
            if self.statistic == "mean":
                pooled = sums[1, 0] / sums[1, 1] - sums[0, 0] / sums[0, 1]
            else:
                pooled = self._median(W, self.wrong) - self._median(W, ~self.wrong)
            return {"stratified": np.where(den > 0, num / den, np.nan), "pooled": pooled,
                    "per_stratum": per[:, 0] if m == 1 else None}

    def _group(self, W, rows, total):
        """(statistic, weighted count) of `rows` (a slice) per resample and column, nan where empty;
        adds their weighted sum and count to `total`."""
        Wg = W[:, rows]
        n = Wg @ self.finite[rows]                                           # (m, columns)
        if self.statistic == "median":
            return self._median(W, rows), n
        s = Wg @ self.VF[rows]
        total[0] += s
        total[1] += n
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, s / n, np.nan), n

    def _median(self, W, rows):
        V, F, Wg = self.V[rows], self.finite[rows], W[:, rows]
        return np.stack([_weighted_median(V[:, j][F[:, j] > 0], Wg[:, F[:, j] > 0]) for j in range(V.shape[1])],
                        axis=1)


def _weighted_median(v, W):
    """np.median of the values `v` each repeated W[r] times, per row r of W (nan where W[r] sums to 0)."""
    if v.size == 0:
        return np.full(W.shape[0], np.nan)
    order = np.argsort(v, kind="mergesort")
    v, cum = v[order], np.cumsum(W[:, order], axis=1)
    total = cum[:, -1]
    lower = np.argmax(cum >= np.floor((total + 1) / 2)[:, None], axis=1)   # 1-based middle positions
    upper = np.argmax(cum >= (np.floor(total / 2) + 1)[:, None], axis=1)
    return np.where(total > 0, (v[lower] + v[upper]) / 2, np.nan)
