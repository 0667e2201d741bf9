"""The causal check's statistics (analysis/causal/) against references written here from the definitions:
directions (numpy means, a planted logistic direction, cross-fitting by construction, the covariance's shape),
paired intervals (a hand-written bootstrap and the normal formula), Wilson intervals, Spearman (scipy), and the
verdict rule, with its calibration under two nulls."""
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from activation_eval.analysis.causal import (
    Answers,
    ConditionRun,
    causal_result,
    changed_share,
    condition,
    cross_fit,
    judge,
    logistic_direction,
    mass_mean,
    monotonicity,
    paired_change,
    random_directions,
    random_name,
    spread,
    steer_name,
    unit,
)
from activation_eval.analysis.jsonio import from_json, to_json
from activation_eval.schema.causal import CausalResult

Z95 = 1.959963984540054


def _labelled(n=200, h=12, seed=0, shift=1.5):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    X = rng.normal(size=(n, h)) * rng.uniform(0.5, 3.0, h)
    X[:, 0] += shift * y
    return X, y


def _wilson(k, n, z=Z95):
    p = k / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return center - half, center + half


# ----------------------------------------------------------------------------- directions

def test_mass_mean_is_the_difference_of_the_class_means():
    X, y = _labelled()
    expected = X[y == 1].sum(0) / (y == 1).sum() - X[y == 0].sum(0) / (y == 0).sum()
    np.testing.assert_allclose(mass_mean(X, y), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="only one class"):
        mass_mean(X, np.ones(len(y), int))


def test_logistic_direction_recovers_a_planted_direction():
    rng = np.random.default_rng(1)
    n, h = 4000, 10
    scales = rng.uniform(0.3, 4.0, h)                 # unequal scales: the standardization must be undone
    X = rng.normal(size=(n, h)) * scales
    w = unit(rng.normal(size=h))
    y = (rng.random(n) < 1 / (1 + np.exp(-3 * (X @ w) / np.std(X @ w)))).astype(int)
    found = unit(logistic_direction(X, y, seed=0))
    assert found @ w > 0.9
    # the probe's own weights on the standardized features point elsewhere: the mapping back matters
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    raw = LogisticRegression(max_iter=2000).fit(StandardScaler().fit_transform(X), y).coef_[0]
    assert unit(raw) @ w < found @ w - 0.05


def test_cross_fit_never_uses_a_questions_own_fold():
    X, y = _labelled(n=100, seed=2)
    for method in ("mass_mean", "logistic"):
        fold, dirs = cross_fit(X, y, n_folds=5, method=method, seed=3)
        assert sorted(set(fold)) == [0, 1, 2, 3, 4] and np.allclose(np.linalg.norm(dirs, axis=1), 1)
        for f in range(5):                            # the fold's classes keep the overall proportions
            assert abs(y[fold == f].mean() - y.mean()) < 0.1
        i = 17
        X2 = X.copy()
        X2[i] += 50.0 * (1 if y[i] else -1)           # a wild change of one question
        fold2, dirs2 = cross_fit(X2, y, n_folds=5, method=method, seed=3)
        assert np.array_equal(fold, fold2)
        for f in range(5):
            if f == fold[i]:
                np.testing.assert_allclose(dirs2[f], dirs[f], atol=1e-9)    # its own direction never saw it
            else:
                assert dirs2[f] @ dirs[f] < 0.99                             # the others did
    fold, dirs = cross_fit(X, y, n_folds=5, seed=3)
    for f in range(5):
        np.testing.assert_allclose(dirs[f], unit(mass_mean(X[fold != f], y[fold != f])), rtol=1e-10)


def test_cross_fit_keeps_a_questions_samples_in_one_fold():
    X, y = _labelled(n=120, seed=4)
    groups = np.repeat(np.arange(40), 3)
    y = np.repeat(y[:40], 3)
    fold, _ = cross_fit(X, y, n_folds=4, groups=groups)
    assert all(len(set(fold[groups == g])) == 1 for g in range(40))
    with pytest.raises(ValueError, match="need at least 5 correct"):
        cross_fit(X[:8], np.array([1, 1, 1, 0, 0, 0, 0, 0]), n_folds=5)


def test_random_directions_follow_the_covariance_or_not():
    rng = np.random.default_rng(5)
    n, h = 300, 64
    X = rng.normal(size=(n, h))
    X[:, 7] *= 20.0                                    # one dominant axis
    names, R = random_directions(X, 40, seed=0)
    assert names[:2] == ["random_cov_0", "random_cov_1"] and names[-1] == "random_iso_19"
    np.testing.assert_allclose(np.linalg.norm(R, axis=1), 1.0)
    cov_align, iso_align = np.abs(R[:20, 7]), np.abs(R[20:, 7])
    assert np.median(cov_align) > 0.8                  # drawn from N(0, cov): mostly along the dominant axis
    assert np.all(iso_align < 0.5)                     # isotropic: no preference
    # against draws from the covariance matrix formed explicitly (numpy's multivariate normal)
    _, many = random_directions(X, 6000, seed=1)
    cov = np.cov(X, rowvar=False)
    reference = rng.multivariate_normal(np.zeros(h), cov, size=3000)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert np.mean(np.abs(many[:3000, 7])) == pytest.approx(np.mean(np.abs(reference[:, 7])), abs=0.02)
    assert np.mean(np.abs(many[3000:, 7])) == pytest.approx(np.sqrt(2 / np.pi / h), abs=0.01)   # isotropic
    names, R = random_directions(X, 3, seed=0)
    assert names == ["random_cov_0", "random_cov_1", "random_iso_0"]


def test_spread_is_the_std_of_the_projection():
    X, _ = _labelled()
    d = np.arange(X.shape[1], dtype=float) - 3
    u = d / np.sqrt((d ** 2).sum())
    proj = X @ u
    assert spread(X, d) == pytest.approx(math.sqrt(((proj - proj.mean()) ** 2).sum() / (len(proj) - 1)), rel=1e-12)
    with pytest.raises(ValueError, match="non-zero norm"):
        unit(np.zeros(4))


# ----------------------------------------------------------------------------- effects

def test_paired_change_matches_a_hand_bootstrap_and_the_normal_formula():
    rng = np.random.default_rng(6)
    base = rng.normal(-1.0, 1.0, 300)
    other = base + 0.3 + rng.normal(0, 0.8, 300)       # correlated with the baseline: pairing narrows
    mean, (lo, hi) = paired_change(base, other, n_resamples=4000, seed=0)
    diff = other - base
    assert mean == pytest.approx(diff.mean(), rel=1e-12)
    boot = np.array([diff[idx].mean() for idx in np.random.default_rng(99).integers(0, 300, (4000, 300))])
    assert lo == pytest.approx(np.percentile(boot, 2.5), abs=0.012)
    assert hi == pytest.approx(np.percentile(boot, 97.5), abs=0.012)
    se = diff.std(ddof=1) / math.sqrt(len(diff))
    assert lo == pytest.approx(mean - Z95 * se, abs=0.015) and hi == pytest.approx(mean + Z95 * se, abs=0.015)
    unpaired_se = math.sqrt(base.var(ddof=1) / 300 + other.var(ddof=1) / 300)
    assert hi - lo < 2 * Z95 * unpaired_se * 0.9


def test_condition_figures_against_the_definitions():
    rng = np.random.default_rng(7)
    n = 80
    base = Answers(correct=rng.integers(0, 2, n), texts=[f"t{i % 3}" for i in range(n)],
                   gold_logprob=rng.normal(-2, 1, n))
    texts = [t if i % 4 else "changed" for i, t in enumerate(base.texts)]
    other = Answers(correct=rng.integers(0, 2, n), texts=texts, gold_logprob=base.gold_logprob + rng.normal(0.5, 1, n))
    c = condition("alpha=+4", "steer", 4.0, 1.3, base, other, seed=0, run_dir="r")
    assert c.n == n and c.accuracy == pytest.approx(other.correct.mean())
    assert c.accuracy_ci == pytest.approx(_wilson(other.correct.sum(), n), abs=1e-12)
    assert c.accuracy_change == pytest.approx(other.correct.mean() - base.correct.mean())
    assert c.gold_logprob_change == pytest.approx((other.gold_logprob - base.gold_logprob).mean())
    changed = sum(a != b for a, b in zip(base.texts, texts))
    assert c.changed_share == changed / n and c.changed_share_ci == pytest.approx(_wilson(changed, n), abs=1e-12)
    assert changed_share(["a"], ["a"]) == (0.0, pytest.approx((0.0, _wilson(0, 1)[1])))
    with pytest.raises(ValueError, match="baseline's questions"):
        condition("x", "steer", 1.0, 1.0, base, Answers(correct=np.ones(3), texts=["a"] * 3))


def test_monotonicity_is_spearman_of_the_mean_effects():
    rng = np.random.default_rng(8)
    alphas = [-4, -2, 0, 2, 4]
    slope = [rng.normal(0.2 * a, 1.0, 200) if a else np.zeros(200) for a in alphas]
    rho, (lo, hi) = monotonicity(alphas, slope, seed=0)
    assert rho == pytest.approx(spearmanr(alphas, [e.mean() for e in slope])[0]) and rho == 1.0
    assert lo > 0.5
    noise = [rng.normal(0, 1.0, 200) if a else np.zeros(200) for a in alphas]
    rho, (lo, hi) = monotonicity(alphas, noise, seed=0)
    assert rho == pytest.approx(spearmanr(alphas, [e.mean() for e in noise])[0])
    assert lo < 0 < hi                                 # no trend: the interval straddles 0
    assert monotonicity([0, 4], [np.zeros(5), np.ones(5)]) == (None, (None, None))


# ----------------------------------------------------------------------------- verdict

RANDOM = {f"random_cov_{i}": 0.01 * (i - 10) for i in range(20)}      # |effect| up to 0.10


def test_verdict_causal_far_beyond_the_random_band():
    j = judge(0.8, (0.6, 1.0), 0.3, -1.3, RANDOM)
    assert j.verdict == "causal" and j.beyond_band and j.excludes_zero and j.sign_flip_reverses
    assert j.random_p95 == pytest.approx(0.10) and j.best_random == "random_cov_0"
    assert j.text.startswith("causal: ") and "+0.800 [+0.600, +1.000]" in j.text and "0.100" in j.text


def test_verdict_within_the_band_names_the_best_random_direction():
    j = judge(0.08, (0.05, 0.11), 0.04, -0.12, RANDOM)
    assert j.verdict == "no causal evidence at this layer" and not j.beyond_band
    assert "within the random band" in j.text and "best random_cov_0: -0.100" in j.text


def test_verdict_needs_the_sign_flip_to_reverse_and_the_interval_to_exclude_zero():
    j = judge(0.8, (0.6, 1.0), -0.2, -1.8, RANDOM)     # both signs lower the gold likelihood: damage, not a direction
    assert j.verdict == "no causal evidence at this layer" and "the sign flip does not reverse it" in j.text
    j = judge(0.8, (-0.1, 1.7), 0.3, -1.3, RANDOM)
    assert j.verdict == "no causal evidence at this layer" and "its interval includes 0" in j.text
    j = judge(0.8, (0.6, 1.0), 0.3, -1.3, {})
    assert j.verdict == "no causal evidence at this layer" and "no random direction" in j.text
    assert any("use at least 19" in note for note in j.notes)


def test_verdict_null_calibration_pure_noise():
    """Every condition's per-question effects pure noise: "causal" in at most ~5% of 200 seeds."""
    causal = 0
    for seed in range(200):
        rng = np.random.default_rng(seed)
        plus, minus = rng.normal(0, 1, 60), rng.normal(0, 1, 60)
        per_question = (plus - minus) / 2
        effect, ci = paired_change(np.zeros(60), per_question, n_resamples=500, seed=seed)
        randoms = {f"r{i}": (rng.normal(0, 1, 60).mean() - rng.normal(0, 1, 60).mean()) / 2 for i in range(20)}
        causal += judge(effect, ci, plus.mean(), minus.mean(), randoms).verdict == "causal"
    assert causal / 200 <= 0.05


def test_verdict_null_calibration_when_every_direction_matters_a_little():
    """The hard null: every direction (the tested one and 19 random ones) has a real effect drawn from one
    distribution, antisymmetric (the sign flip always reverses) and measured precisely (the interval always
    excludes 0). Only the random band protects, and it holds "causal" to 1 / (K + 1) = 5%."""
    causal, seeds = 0, 1000
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        effects = rng.normal(0, 1, 20)
        e = effects[0]
        randoms = {f"r{i}": v for i, v in enumerate(effects[1:])}
        causal += judge(e, (e - 1e-3, e + 1e-3), e, -e, randoms).verdict == "causal"
    assert causal / seeds <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / seeds)


# ----------------------------------------------------------------------------- the result

def _runs(n=50, slope=0.2, seed=0, signs=(1, -1)):
    rng = np.random.default_rng(seed)
    lp = rng.normal(-1, 0.5, n)
    base = Answers(correct=(lp > -1).astype(int), texts=[str(v > -1) for v in lp], gold_logprob=lp)

    def shifted(d):
        return Answers(correct=(lp + d > -1).astype(int), texts=[str(v > -1) for v in lp + d], gold_logprob=lp + d)
    runs = [ConditionRun(steer_name(a), "steer", float(a), a * 0.3, shifted(slope * a + rng.normal(0, 0.05, n)))
            for a in (-4, -2, 2, 4)]
    runs.append(ConditionRun("ablate", "ablate", None, None, shifted(rng.normal(0, 0.05, n))))
    for i in range(20):
        damage = -abs(rng.normal(0, 0.5))              # every random perturbation of this norm does damage
        for s in signs:
            runs.append(ConditionRun(random_name(f"random_cov_{i}", s), "random", None, s * 1.2,
                                     shifted(damage + s * rng.normal(0, 0.05) + rng.normal(0, 0.05, n))))
    return base, runs


def _result(base, runs):
    return causal_result(run="r", layer="layer_1", position="answer", direction_method="mass_mean",
                         direction_source="r", cross_fitting="5 folds", folds=5, test_alpha_sd=4.0,
                         baseline=base, conditions=runs)


def test_causal_result_reads_antisymmetric_effects_and_round_trips_json():
    base, runs = _runs()
    r = _result(base, runs)
    assert r.verdict == "causal" and r.antisymmetric and r.effect_measure == "gold_logprob_change"
    assert [c.name for c in r.conditions[:6]] == ["baseline", "alpha=-4", "alpha=-2", "alpha=+2", "alpha=+4", "ablate"]
    assert r.conditions[0].gold_logprob_change == 0 and r.conditions[0].changed_share == 0
    plus = next(c.answers for c in runs if c.name == "alpha=+4").gold_logprob - base.gold_logprob
    minus = next(c.answers for c in runs if c.name == "alpha=-4").gold_logprob - base.gold_logprob
    assert r.effect == pytest.approx(((plus - minus) / 2).mean())
    assert r.test_effect == pytest.approx(plus.mean()) and r.sign_flip_effect == pytest.approx(minus.mean())
    assert len(r.random_names) == 20 and r.random_names[0] == "random_cov_0"
    assert max(abs(v) for v in r.random_effects) < 0.1  # the damage cancels in the antisymmetric effect
    assert r.monotonic_rho == 1.0 and r.n_alphas == 5
    assert from_json(CausalResult, to_json(r)) == r


def test_one_sided_random_effects_are_mostly_damage():
    """With the random directions at one sign only, their damage widens the band: the same direction that is
    causal against antisymmetric effects is not against one-sided ones, and a note says why."""
    base, runs = _runs(slope=0.1, signs=(1,))
    r = _result(base, runs)
    assert not r.antisymmetric and any("one sign only" in note for note in r.notes)
    assert r.verdict == "no causal evidence at this layer" and r.random_p95 > abs(r.effect)
    assert _result(*_runs(slope=0.1)).verdict == "causal"


def test_causal_text_lists_every_condition_and_ends_with_the_verdict():
    from activation_eval.analysis.causal import causal_text
    base, runs = _runs()
    r = _result(base, runs)
    text = causal_text(r)
    lines = text.splitlines()
    for c in r.conditions:
        assert sum(line.startswith(c.name + " ") for line in lines) == 1
    assert lines[-1] == f"verdict:    {r.verdict_text}"
    assert f"best {r.best_random}: {r.best_random_effect:+.3f}" in text and "antisymmetric" in text
    one_sided = causal_text(_result(*_runs(slope=0.1, signs=(1,))))
    assert "note: random directions ran at one sign only" in one_sided


def test_plot_causal_draws_the_direction_the_randoms_and_the_band(tmp_path, monkeypatch):
    import matplotlib.image
    import matplotlib.text

    from activation_eval.analysis import plot_base
    from activation_eval.analysis.causal import plot_causal
    drawn, save = {}, plot_base.save_png

    def spy(fig, path):
        drawn["texts"] = [t.get_text() for t in fig.findobj(matplotlib.text.Text)]
        drawn["points"] = sum(len(line.get_xdata()) for ax in fig.axes for line in ax.get_lines())
        return save(fig, path)
    monkeypatch.setattr(plot_base, "save_png", spy)
    r = _result(*_runs())
    out = plot_causal(r, tmp_path / "causal.png")
    assert matplotlib.image.imread(out).shape[0] > 300
    assert any(r.verdict_text[:60] in " ".join(t.split()) for t in drawn["texts"] if t)
    # the direction over the 5 alphas, 40 random conditions at +/- the test alpha, 20 antisymmetric random effects
    assert drawn["points"] >= 5 + 40 + 20


def test_causal_html_escapes_run_texts_and_holds_every_condition():
    import dataclasses

    from activation_eval.analysis.causal import causal_html
    r = dataclasses.replace(_result(*_runs()), run="runs/<script>alert(1)</script>", notes=["a <b> note"])
    page = causal_html(r)
    assert "<script>" not in page and "&lt;script&gt;" in page and "a &lt;b&gt; note" in page
    assert page.count("<tr>") == 1 + len(r.conditions) and page.count("<img") == 1
    assert r.verdict_text.replace("'", "&#x27;") in page


# ----------------------------------------------------------------------------- the plan

def test_causal_plan_steers_each_fold_by_the_other_folds_direction_at_its_spread():
    from activation_eval.analysis.causal import causal_plan
    X, y = _labelled(n=100, seed=9)
    plan = causal_plan(X, y, alphas_sd=(-1, 2), test_alpha_sd=3.0, n_folds=5, k_random=3, seed=4)
    names = [c.name for c in plan.conditions]
    assert names[:5] == ["alpha=-3", "alpha=-1", "alpha=+2", "alpha=+3", "ablate"]    # the test alpha and its flip
    assert names[5:] == ["random_cov_0+", "random_cov_0-", "random_cov_1+", "random_cov_1-", "random_iso_0+",
                         "random_iso_0-"]
    fold, dirs = cross_fit(X, y, n_folds=5, seed=4)
    assert np.array_equal(plan.fold, fold) and np.allclose(plan.directions, dirs) and plan.folds == 5
    plus3 = plan.conditions[3]
    for f, edit in enumerate(plus3.edits):
        assert np.array_equal(edit.rows, np.flatnonzero(fold == f))
        np.testing.assert_allclose(edit.direction, dirs[f])
        assert edit.alpha == pytest.approx(3.0 * np.std(X @ dirs[f], ddof=1))
    assert plus3.alpha == pytest.approx(np.mean([e.alpha for e in plus3.edits]))
    assert all(e.alpha is None for e in plan.conditions[4].edits)
    plus, minus = plan.conditions[5], plan.conditions[6]
    assert plus.alpha == pytest.approx(plus3.alpha) and minus.alpha == pytest.approx(-plus3.alpha)
    assert len(plus.edits) == 1 and len(plus.edits[0].rows) == 100
    np.testing.assert_allclose(plus.edits[0].direction, minus.edits[0].direction)


def test_causal_plan_with_a_direction_from_elsewhere_and_merge_answers():
    from activation_eval.analysis.causal import causal_plan, merge_answers
    X, y = _labelled(n=30, seed=10)
    d = np.zeros(X.shape[1])
    d[0] = 5.0
    plan = causal_plan(X, y, direction=d, source="runs/other", k_random=0)
    assert plan.folds == 0 and plan.cross_fitting.startswith("direction from runs/other")
    assert [len(c.edits) for c in plan.conditions] == [1] * 5
    assert plan.conditions[0].edits[0].alpha == pytest.approx(-4 * np.std(X[:, 0], ddof=1))
    # merge_answers puts each edit's answers back at its rows
    fold_plan = causal_plan(X, y, n_folds=3, k_random=0)
    cond = fold_plan.conditions[0]
    parts = [Answers(correct=(e.rows % 2 == 0).astype(int), texts=[f"q{i}" for i in e.rows],
                     gold_logprob=-e.rows.astype(float)) for e in cond.edits]
    merged = merge_answers(cond, parts)
    assert merged.texts == [f"q{i}" for i in range(30)] and np.array_equal(merged.gold_logprob, -np.arange(30.0))
    assert np.array_equal(merged.correct, (np.arange(30) % 2 == 0).astype(int))
    with pytest.raises(ValueError, match="answer sets"):
        merge_answers(cond, parts[:2])


def test_causal_result_without_gold_scores_or_randoms_falls_back_and_says_so():
    base, runs = _runs()
    strip = [ConditionRun(c.name, c.kind, c.alpha_sd, c.alpha, Answers(correct=c.answers.correct, texts=c.answers.texts))
             for c in runs if c.name == "alpha=+4"]
    r = _result(Answers(correct=base.correct, texts=base.texts), strip)
    assert r.effect_measure == "accuracy_change" and r.verdict == "no causal evidence at this layer"
    assert r.effect is not None and r.sign_flip_effect is None and not r.sign_flip_reverses
    assert r.random_p95 is None and r.monotonic_rho is None and r.n_alphas == 2
    assert any("log-likelihood was not scored" in n for n in r.notes)
    assert any("no sign-flipped condition alpha=-4" in n for n in r.notes)
    assert all(c.gold_logprob_change is None for c in r.conditions)
    assert from_json(CausalResult, to_json(r)) == r


def test_random_directions_that_change_nearly_every_answer_get_a_damage_note():
    from activation_eval.experiments.causal_check import _damage_notes
    base = Answers(correct=np.array([1, 0, 1, 0]), texts=["a", "b", "c", "d"])
    broken = [ConditionRun(f"random_iso_{i}+", "random", 1.0, 2.0, Answers(correct=np.zeros(4, int), texts=list("wxyz")))
              for i in range(3)]
    gentle = [ConditionRun(f"random_iso_{i}+", "random", 1.0, 2.0, Answers(correct=base.correct, texts=list("abcz")))
              for i in range(3)]
    [note] = _damage_notes(broken, base)
    assert "change 100% of the answers" in note and "accuracy 0.0%" in note and "50.0%" in note
    assert _damage_notes(gentle, base) == [] and _damage_notes([], base) == []
