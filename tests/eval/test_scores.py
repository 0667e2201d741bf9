"""Accuracy with its uncertainty: the standard error against the binomial formula, the Wilson interval
against scipy's binomtest (clustered: against root finding over the effective size and a cluster
bootstrap), and the printed summary."""
import json
import math

import numpy as np
import pytest
from scipy import stats

from activation_eval.eval.scores import accuracy_stats, chance_accuracy
from activation_eval.run.config import RunConfig
from activation_eval.run.summary import make_summary
from activation_eval.schema.summary import format_summary
from helpers import read_rows, run_main


@pytest.mark.parametrize("k, n", [(64, 122), (1, 10), (29, 30), (500, 1000)])
def test_stderr_is_the_binomial_formula(k, n):
    s = accuracy_stats([True] * k + [False] * (n - k))
    p = k / n
    assert s["n"] == n and s["correct"] == k and s["accuracy"] == p
    assert s["stderr"] == pytest.approx(math.sqrt(p * (1 - p) / n), rel=1e-12)


@pytest.mark.parametrize("k, n", [(64, 122), (7, 40), (180, 200), (0, 12), (12, 12), (1, 1)])
def test_interval_is_scipys_wilson(k, n):
    flags = [True] * k + [False] * (n - k)
    ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
    low, high = accuracy_stats(flags)["ci95"]
    assert low == pytest.approx(ref.low, abs=1e-12) and high == pytest.approx(ref.high, abs=1e-12)
    assert high - low > 0 and low <= k / n <= high


Z95 = stats.norm.ppf(0.975)


def wilson_by_root_finding(p, n, z=Z95):
    """The Wilson interval as the two roots of |p - pi| = z sqrt(pi (1 - pi) / n) (an independent reference)."""
    from scipy.optimize import brentq
    f = lambda pi: (p - pi) ** 2 - z * z * pi * (1 - pi) / n       # noqa: E731
    low = 0.0 if p == 0 else brentq(f, 0.0, p)
    high = 1.0 if p == 1 else brentq(f, p, 1.0)
    return low, high


def test_answers_of_one_question_are_one_cluster_identical_samples():
    # every question answered 4 times the same way: the 4 answers carry one question's information,
    # so the SE and the interval must be those of the 50 questions, not of 200 independent answers
    per_question = [i % 5 < 3 for i in range(50)]                       # 30 of 50 right
    flags = [c for c in per_question for _ in range(4)]
    ids = [f"q{i}" for i in range(50) for _ in range(4)]
    s, alone = accuracy_stats(flags, questions=ids), accuracy_stats(per_question)
    assert s["accuracy"] == 0.6 and s["n"] == 200 and s["questions"] == 50
    assert s["effective_n"] == pytest.approx(50, rel=1e-12)
    assert s["stderr"] == pytest.approx(math.sqrt(0.6 * 0.4 / 50), rel=1e-12)   # not sqrt(.24 / 200)
    assert s["ci95"] == pytest.approx(alone["ci95"], abs=1e-12)
    assert s["ci95"][1] - s["ci95"][0] > 1.8 * (accuracy_stats(flags)["ci95"][1] - accuracy_stats(flags)["ci95"][0])


def test_clustered_interval_is_wilson_over_the_effective_size():
    rng = np.random.default_rng(3)
    skill = rng.uniform(0, 1, size=80)                                  # questions differ in difficulty
    counts = rng.integers(1, 6, size=80)                                # unequal answers per question
    ids = [f"q{g}" for g in range(80) for _ in range(counts[g])]
    flags = [bool(rng.random() < skill[g]) for g in range(80) for _ in range(counts[g])]
    s = accuracy_stats(flags, questions=ids)
    y = np.array(flags, dtype=float)
    groups = np.repeat(np.arange(80), counts)
    p = y.mean()
    # the textbook cluster-robust (sandwich) variance of a mean: sum_g (sum_i (y_i - p))^2 / n^2
    ref_se = math.sqrt(sum(((y[groups == g] - p).sum()) ** 2 for g in range(80))) / len(y)
    assert s["stderr"] == pytest.approx(ref_se, rel=1e-9)
    deff = ref_se ** 2 / (p * (1 - p) / len(y))
    assert deff > 1.2 and s["effective_n"] == pytest.approx(len(y) / deff, rel=1e-9)
    assert s["ci95"] == pytest.approx(list(wilson_by_root_finding(p, len(y) / deff)), abs=1e-9)
    # and it agrees with a plain bootstrap over questions about as well as two such intervals can
    right = np.array([y[groups == g].sum() for g in range(80)])
    picks = np.random.default_rng(11).integers(0, 80, size=(20_000, 80))
    ref = np.percentile(right[picks].sum(axis=1) / counts[picks].sum(axis=1), [2.5, 97.5])
    assert s["ci95"] == pytest.approx(list(ref), abs=0.02)
    plain = accuracy_stats([True, False, True], questions=["a", "b", "c"])     # one answer each: unclustered
    assert plain == accuracy_stats([True, False, True]) and "questions" not in plain


def test_degenerate_and_empty():
    low, high = accuracy_stats([True] * 5)["ci95"]
    assert high == 1.0 and 0.5 < low < 0.6 and accuracy_stats([True] * 5)["stderr"] == 0   # never zero width
    assert accuracy_stats([])["accuracy"] is None


def test_chance_baselines():
    assert chance_accuracy({"grader": "choice", "choices": list("abcd")}) == 0.25
    assert chance_accuracy({"grader": "choice_all", "choices": list("abc")}) == pytest.approx(1 / 7)
    assert chance_accuracy({"grader": "number:gsm8k", "choices": None}) == 0


def test_summary_per_category_and_ungraded(tmp_path):
    results = ([{"id": f"a{i}", "category": "x", "correct": i < 3} for i in range(10)]
               + [{"id": f"b{i}", "category": "y", "correct": i < 8} for i in range(10)]
               + [{"id": "c", "category": "y", "correct": None}])
    rows = [{"id": r["id"], "grader": "choice", "choices": list("abcd")} for r in results[:10]] + \
           [{"id": r["id"], "grader": "text", "choices": None} for r in results[10:]]
    config = RunConfig(output_dir=str(tmp_path / "o"))
    skipped = [{"id": "bad1", "where": "line 4", "reason": "r"}]
    summary = make_summary(config, results, 2.0, 21, rows=rows, skipped=skipped)
    assert summary["questions"] == 21 and summary["graded"] == 20 and summary["ungraded"] == 1
    assert summary["correct"] == 11 and summary["accuracy"] == 0.55
    assert summary["accuracy_stderr"] == pytest.approx(math.sqrt(0.55 * 0.45 / 20))
    assert summary["chance"] == pytest.approx(0.125)
    x = summary["per_category"]["x"]
    assert (x["n"], x["correct"], x["accuracy"], x["chance"]) == (10, 3, 0.3, 0.25)
    assert x["stderr"] == pytest.approx(math.sqrt(0.3 * 0.7 / 10)) and x["ci95"][0] < 0.3 < x["ci95"][1]
    assert summary["skipped_rows"] == 1 and summary["skipped_ids"] == ["bad1"]
    json.dumps(summary)
    text = format_summary(summary)
    assert "accuracy   55.0% ± 11.1% (SE), 95% CI" in text and "chance 12.5%" in text and "(11/20 correct)" in text
    assert "skipped    1 benchmark row(s) the grader cannot use (bad1)" in text
    assert "ungraded   1 question(s)" in text


def test_main_prints_and_saves_the_error_bars(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main("--model", tiny_dir, "--limit", 12, "--max_new_tokens", 4, "--output_dir", out) == 0
    summary = json.loads((out / "summary.json").read_text())
    rows = read_rows(out)
    k = sum(r["correct"] for r in rows)
    assert summary["correct"] == k and summary["accuracy_stderr"] == pytest.approx(
        math.sqrt(k / 12 * (1 - k / 12) / 12))
    assert len(summary["accuracy_ci95"]) == 2 and summary["skipped_rows"] == 0
    for stats_ in summary["per_category"].values():
        assert {"stderr", "ci95", "chance"} <= set(stats_)
    printed = capsys.readouterr().out
    assert "(SE), 95% CI" in printed and "chance" in printed


def test_a_multi_sample_summary_is_clustered_by_question(tmp_path):
    # 10 questions x 3 samples, each question's samples alike: the run holds 10 questions' evidence
    results = [{"id": f"q{i}", "sample": k, "category": "x", "correct": i < 6} for i in range(10) for k in range(3)]
    config = RunConfig(output_dir=str(tmp_path / "o"), temperature=0.7, num_samples=3)
    summary = make_summary(config, results, 1.0, 30)
    assert summary["accuracy"] == 0.6 and summary["graded"] == 30
    assert summary["accuracy_stderr"] == pytest.approx(math.sqrt(0.6 * 0.4 / 10), rel=1e-12)
    assert summary["per_category"]["x"]["questions"] == 10
    assert "SE and CI are clustered by question" in format_summary(summary)
