"""Sample-based baselines against hand computations and INSIDE's reference code (torch.cov + SVD)."""
import math

import numpy as np
import torch

from activation_eval import schema
from activation_eval.analysis.probe.sample_scores import (
    answer_key,
    eigenscore,
    self_consistency,
    semantic_entropy,
    with_sample_scores,
)


def test_semantic_entropy_by_hand():
    assert semantic_entropy(["a", "a", "a", "a"]) == 0.0
    assert math.isclose(semantic_entropy(["a", "b"]), math.log(2))
    # 3 clusters of shares 1/2, 1/3, 1/6
    expected = -(0.5 * math.log(0.5) + (1 / 3) * math.log(1 / 3) + (1 / 6) * math.log(1 / 6))
    assert math.isclose(semantic_entropy(["x", "y", "x", "z", "y", "x"]), expected)


def test_self_consistency_by_hand():
    assert self_consistency(["x", "y", "x", "z", "y", "x"]) == 0.5
    assert self_consistency(["x"] * 5) == 1.0
    assert self_consistency(["a", "b", "c", "d"]) == 0.25


def test_answers_cluster_by_their_normalised_text():
    assert answer_key({"extracted": "São Paulo."}) == answer_key({"extracted": "sao  paulo"}) == "sao paulo"
    assert answer_key({"extracted": "Paris"}) != answer_key({"extracted": "Lyon"})
    assert answer_key({"extracted": None, "response": "Lyon"}) == "lyon"
    assert answer_key({"extracted": " ", "response": "Lyon"}) == "lyon"


def _inside_reference(H):
    """INSIDE's getEigenIndicator_v0 (alibaba/eigenscore func/metric.py), as published."""
    cov = torch.cov(torch.as_tensor(H, dtype=torch.float64)).numpy()
    s = np.linalg.svd(cov + 1e-3 * np.eye(cov.shape[0]), compute_uv=False)
    return float(np.mean(np.log10(s)))


def test_eigenscore_matches_the_reference_code():
    rng = np.random.default_rng(0)
    for k, d in [(2, 8), (5, 64), (10, 32)]:
        H = rng.normal(size=(k, d))
        assert math.isclose(eigenscore(H), _inside_reference(H), rel_tol=1e-9, abs_tol=1e-12)


def test_eigenscore_is_higher_when_samples_disagree():
    rng = np.random.default_rng(1)
    base = rng.normal(size=32)
    agree = base + 0.01 * rng.normal(size=(6, 32))
    disagree = rng.normal(size=(6, 32))
    assert eigenscore(disagree) > eigenscore(agree)
    # 4 identical samples: C is var(base) everywhere (each sample centred over its features), of rank 1:
    # eigenvalues 4 var(base) and 0, 0, 0, each plus the regulariser 1e-3
    v = np.var(base, ddof=1)
    expected = (math.log10(4 * v + 1e-3) + 3 * math.log10(1e-3)) / 4
    assert math.isclose(eigenscore(np.tile(base, (4, 1))), expected, rel_tol=1e-9)


def test_rows_get_their_questions_scores():
    answers = {"q1": ["Paris", "paris", "Paris"], "q2": ["4", "5", "6"], "q3": ["x"]}
    rows = [{"id": q, "sample": k, "extracted": a} for q, xs in answers.items() for k, a in enumerate(xs)]
    emb = np.random.default_rng(2).normal(size=(len(rows), 16))
    scored, notes = with_sample_scores(rows, emb)
    q1 = [r for r in scored if r["id"] == "q1"]
    q2 = [r for r in scored if r["id"] == "q2"]
    assert all(r[schema.SELF_CONSISTENCY] == 1.0 and r[schema.SEMANTIC_ENTROPY] == 0.0 for r in q1)
    assert all(math.isclose(r[schema.SEMANTIC_ENTROPY], math.log(3)) for r in q2)
    assert math.isclose(q2[0][schema.EIGENSCORE], _inside_reference(emb[3:6]))
    q3 = [r for r in scored if r["id"] == "q3"][0]
    assert schema.SEMANTIC_ENTROPY not in q3 and any("single sample" in n for n in notes)
    assert "sample" not in with_sample_scores([{"id": "a", "extracted": "x"}])[0][0]
    assert rows[0].get(schema.SELF_CONSISTENCY) is None          # the input rows are not changed
