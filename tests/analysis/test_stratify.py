"""Correct-vs-incorrect comparisons within strata (issue 21, item 7): the Simpson case, hand-checked
small cases (references computed here with numpy, per stratum), clusters and interval coverage on
data with a planted, known difference."""
import numpy as np
import pytest

from activation_eval.analysis.stratify import (
    reversal_warning,
    row_strata,
    strata_line,
    stratified_difference,
    stratified_differences,
)
from activation_eval.schema.estimates import Estimate
from activation_eval.schema.stratify import Stratum


def simpson_data(seed=0, n=600):
    """Three categories; within each, incorrect answers score 0.5 higher; the categories whose answers
    are mostly wrong (multiple choice: a letter as gold) have much lower values, so pooled < 0."""
    rng = np.random.default_rng(seed)
    cats = rng.choice(["mc", "open", "math"], size=n, p=[0.4, 0.4, 0.2])
    p_wrong = {"mc": 0.8, "open": 0.2, "math": 0.5}
    level = {"mc": -3.0, "open": 2.0, "math": 0.0}
    wrong = np.array([rng.random() < p_wrong[c] for c in cats])
    values = np.array([level[c] for c in cats]) + 0.5 * wrong + rng.normal(0, 1, n)
    return values, ~wrong, cats


def test_simpson_reversal_is_found():
    values, correct, cats = simpson_data()
    for c in ("mc", "open", "math"):                                      # the planted data: within each, > 0
        m = cats == c
        assert values[m & ~correct].mean() > values[m & correct].mean()
    assert values[~correct].mean() < values[correct].mean()             # and pooled < 0
    res = stratified_difference(values, correct, cats, by="category")
    assert res.stratified.ci[0] > 0 and res.stratified.ci[0] < 0.5 < res.stratified.ci[1]
    assert res.pooled.value < 0 and res.pooled.ci[1] < 0
    assert res.sign_reversal is True and res.strata_used == 3 and res.strata_skipped == []
    assert strata_line(res) == "stratified by category (3 strata); pooled shown beside"
    warning = reversal_warning({"layer_3": res})
    assert warning.startswith("warning: at layer_3 (1 of 1)") and "Simpson's paradox" in warning


def test_hand_checked_weighted_mean_and_pooled():
    values = [1, 2, 4, 10, 10, 12]
    correct = [True, True, False, True, False, False]
    res = stratified_difference(values, correct, ["a", "a", "a", "b", "b", "b"], by="category")
    # a: incorrect 4 - correct 1.5 = 2.5, weight 2*1/3;  b: 11 - 10 = 1, weight 1*2/3
    assert res.strata == {"a": Stratum(n_correct=2, n_incorrect=1, difference=2.5, weight=0.5),
                          "b": Stratum(n_correct=1, n_incorrect=2, difference=1.0, weight=0.5)}
    assert res.stratified.value == pytest.approx(1.75)
    assert res.pooled.value == pytest.approx(26 / 3 - 13 / 3)
    assert res.level == 0.95 and res.statistic == "mean" and not res.sign_reversal


def test_weights_are_cmh_against_numpy_per_stratum():
    rng = np.random.default_rng(3)
    n = 400
    cats = rng.choice(list("abcd"), size=n, p=[0.1, 0.2, 0.3, 0.4])
    correct = rng.random(n) < np.where(cats == "a", 0.9, 0.4)
    values = rng.normal(size=n) + (cats == "b") * 3
    num = den = 0.0
    for c in "abcd":
        m = cats == c
        n_c, n_i = (m & correct).sum(), (m & ~correct).sum()
        w = n_c * n_i / (n_c + n_i)
        num += w * (values[m & ~correct].mean() - values[m & correct].mean())
        den += w
    res = stratified_difference(values, correct, cats)
    assert res.stratified.value == pytest.approx(num / den, rel=1e-12)
    assert res.pooled.value == pytest.approx(values[~correct].mean() - values[correct].mean(), rel=1e-12)
    assert sum(c.weight for c in res.strata.values()) == pytest.approx(1)
    med = stratified_difference(values, correct, cats, statistic="median")
    want = [np.median(values[(cats == c) & ~correct]) - np.median(values[(cats == c) & correct]) for c in "abcd"]
    assert [med.strata[c].difference for c in "abcd"] == pytest.approx(want)
    assert med.pooled.value == pytest.approx(np.median(values[~correct]) - np.median(values[correct]))
    lo, hi = med.stratified.ci
    assert lo < med.stratified.value < hi


def test_skipped_strata_ungraded_rows_and_nan_are_left_out():
    values = [1.0, 3.0, 5.0, 7.0, 100.0, 200.0, np.nan, 9.0]
    correct = [True, False, True, False, True, True, False, None]
    cats = ["a", "a", "b", "b", "only_correct", "only_correct", "a", "b"]
    res = stratified_difference(values, correct, cats, by="category")
    assert res.strata_used == 2 and res.strata_skipped == ["only_correct"]
    assert res.strata["a"] == Stratum(n_correct=1, n_incorrect=1, difference=2.0, weight=0.5)
    assert res.stratified.value == 2.0
    assert res.pooled.value == pytest.approx(5.0 - (1 + 5 + 100 + 200) / 4)
    assert strata_line(res) == ("stratified by category (2 strata; 1 skipped, lacking correct or incorrect rows: "
                                "'only_correct'); pooled shown beside")


def test_one_stratum_and_no_usable_stratum_say_so():
    values, correct = [1, 2, 3, 4], [True, False, True, False]
    one = stratified_difference(values, correct)
    assert one.stratified.value == one.pooled.value == 1.0
    assert strata_line(one) == "not stratified: one stratum"
    named = stratified_difference(values, correct, ["geo"] * 4, by="category")
    assert strata_line(named) == "not stratified: one stratum (category 'geo')"
    none = stratified_difference(values, correct, ["x", "y", "x", "y"], by="category")   # correctness = category
    assert none.stratified == Estimate(value=None, ci=(None, None)) and none.strata_used == 0
    assert none.pooled.value == 1.0 and not none.sign_reversal
    assert strata_line(none).startswith("not stratified: no category value holds both correct and incorrect rows")
    wrong = stratified_difference(values, [False] * 4, ["x", "y", "x", "y"], by="category")
    assert wrong.pooled.value is None and strata_line(wrong) == "not compared: 0 correct and 4 incorrect rows"


def test_clusters_resample_a_questions_samples_together():
    """Each question answered 5 times with the same value: the row bootstrap sees 5x the data and is too
    narrow; resampling whole questions gives the interval of one row per question."""
    rng = np.random.default_rng(7)
    q = 80
    cats = np.repeat(rng.choice(["a", "b"], size=q), 5)
    correct = np.repeat(rng.random(q) < 0.5, 5)
    values = np.repeat(rng.normal(size=q), 5)
    ids = np.repeat([f"q{i}" for i in range(q)], 5)
    width = {}
    for name, kw in (("rows", {}), ("clusters", {"clusters": list(ids)})):
        r = stratified_difference(values, correct, cats, **kw)
        width[name] = np.diff(r.stratified.ci)[0]
        assert r.resampling.startswith(name)
    single = stratified_difference(values[::5], correct[::5], cats[::5])
    assert width["clusters"] == pytest.approx(np.diff(single.stratified.ci)[0], rel=0.15)
    assert width["rows"] < 0.6 * width["clusters"]                      # ~ 1 / sqrt(5)


@pytest.mark.slow
def test_interval_covers_the_planted_difference():
    """Coverage over 200 simulated runs: the stratified 95% interval holds the true within-category
    difference (0.5) about 95% of the time."""
    hits = 0
    for seed in range(200):
        values, correct, cats = simpson_data(seed, n=300)
        ci = stratified_difference(values, correct, cats, n_boot=1000, seed=seed).stratified.ci
        hits += ci[0] <= 0.5 <= ci[1]
    assert 0.90 <= hits / 200 <= 0.99


def test_columns_share_resamples_and_seed_repeats():
    values, correct, cats = simpson_data(1, n=200)
    res = stratified_differences({"x": values, "y": values, "z": -values}, correct, cats)
    assert res["x"] == res["y"]
    assert res["z"].stratified.ci == pytest.approx([-v for v in res["x"].stratified.ci[::-1]])
    assert stratified_difference(values, correct, cats) == stratified_difference(values, correct, cats)
    assert stratified_difference(values, correct, cats, seed=1) != stratified_difference(values, correct, cats)
    ci90 = stratified_difference(values, correct, cats, level=0.9).stratified.ci
    ci95 = res["x"].stratified.ci
    assert ci95[0] < ci90[0] < ci90[1] < ci95[1]


def test_row_strata():
    rows = [{"category": "geo", "grader": "text"}, {"category": None}, {"category": ""}]
    assert row_strata(rows) == ["geo", "uncategorized", "uncategorized"]
    assert row_strata(rows, "grader") == ["text", "(none)", "(none)"]
    assert row_strata([{"id": 1}]) == ["uncategorized"]          # no category anywhere: one stratum
    with pytest.raises(ValueError, match="no results row has a field 'nope'.*category, grader"):
        row_strata(rows, "nope")
    with pytest.raises(ValueError, match="statistic"):
        stratified_difference([1, 2], [True, False], statistic="mode")


def test_bootstrap_ci_draws_whole_questions():
    """Four identical samples per question: the clustered interval is the one-sample-per-question
    interval, the row bootstrap's is far narrower (it counts 4n rows as independent)."""
    from activation_eval.analysis.intervals import bootstrap_ci
    rng = np.random.default_rng(0)
    values = rng.normal(size=40)
    single = bootstrap_ci(values, np.mean, 2000, seed=1)
    repeated = np.repeat(values, 4)
    clustered = bootstrap_ci(repeated, np.mean, 2000, seed=1, clusters=np.repeat(np.arange(40), 4))
    rows = bootstrap_ci(repeated, np.mean, 2000, seed=1)
    width = lambda ci: ci[1] - ci[0]                         # noqa: E731
    assert width(clustered) == pytest.approx(width(single), rel=0.15)
    assert width(rows) < 0.65 * width(clustered)
