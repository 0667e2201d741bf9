"""Sample-based confidence scores of a question answered several times (--num_samples > 1).

Three baselines from the hallucination-detection literature, each one number per question (every
sample row of the question carries its question's number), oriented by schema.SCORE_ORIENTATION:

    semantic_entropy   discrete semantic entropy (Farquhar et al. 2024): the samples' answers are
                       clustered by meaning, here by the normalised extracted answer (folds.answer_text:
                       accents dropped, lowercased, punctuation as spaces; the same text = the same
                       meaning); the entropy (nats) of the clusters' shares. Higher: less likely correct.
    self_consistency   the share of samples agreeing with the majority answer (Wang et al. 2023).
                       Higher: more likely correct.
    eigenscore         INSIDE's EigenScore (Chen et al. 2024), as its reference code computes it:
                       the K samples' embeddings H (K, d) from the middle layer, C = cov(H) over the
                       d features (torch.cov / np.cov of the K x K sample covariance, each embedding
                       centred over its features), EigenScore = mean(log10(eig(C + 1e-3 I))).
                       Higher: the samples disagree in meaning, less likely correct.

A question with a single sample has no score (its rows get None): the scores need >= 2 samples.

Public names:
    answer_key(row) -> str                       the normalised extracted answer a cluster is keyed on
    semantic_entropy(answers) -> float           of one question's answers (strings)
    self_consistency(answers) -> float
    eigenscore(H, alpha=EIGEN_ALPHA) -> float    of one question's sample embeddings (K, d)
    with_sample_scores(rows, embeddings=None) -> (rows with the scores added, notes)
    EIGEN_ALPHA

Example:
    >>> semantic_entropy(["paris", "paris", "lyon", "paris"]) == -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    True
    >>> self_consistency(["paris", "paris", "lyon", "paris"])
    0.75
    >>> rows = [{"id": "q1", "sample": k, "extracted": a} for k, a in enumerate(["Paris", "paris.", "Lyon"])]
    >>> scored, notes = with_sample_scores(rows)
    >>> round(scored[0]["self_consistency"], 3), scored[0]["semantic_entropy"] == scored[2]["semantic_entropy"]
    (0.667, True)
"""
import math  # noqa: F401  (used in the example)
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ... import schema
from .folds import answer_text

EIGEN_ALPHA = 1e-3          # INSIDE's regulariser of the sample covariance


def answer_key(row: Mapping[str, Any]) -> str:
    """The row's extracted answer (else its response), normalised (folds.answer_text): a sample's cluster."""
    return answer_text(row)


def semantic_entropy(answers: Sequence[str]) -> float:
    """Discrete semantic entropy (nats) of one question's sampled answers, clustered by equality."""
    counts = np.array(list(Counter(answers).values()), dtype=np.float64)
    shares = counts / counts.sum()
    return float(-np.sum(shares * np.log(shares)))


def self_consistency(answers: Sequence[str]) -> float:
    """The share of one question's sampled answers that agree with the most frequent one."""
    return Counter(answers).most_common(1)[0][1] / len(answers)


def eigenscore(H: Any, alpha: float = EIGEN_ALPHA) -> float:
    """INSIDE's EigenScore of one question's K sample embeddings H (K, d), K >= 2."""
    H = np.asarray(H, dtype=np.float64)
    C = np.cov(H)                                     # (K, K): rows are the samples, as torch.cov(H)
    eig = np.linalg.eigvalsh(C + alpha * np.eye(len(C)))
    return float(np.mean(np.log10(np.maximum(eig, alpha))))


def with_sample_scores(rows: Sequence[Mapping[str, Any]], embeddings: Any = None) -> tuple[list[dict], list[str]]:
    """(copies of `rows` with semantic_entropy, self_consistency and, given embeddings (n, d) in row
    order, eigenscore added; notes). Rows without a "sample" key are returned unchanged (one answer
    per question: no sample-based score)."""
    out = [dict(row) for row in rows]
    if not any(row.get(schema.SAMPLE) is not None for row in rows):
        return out, []
    by_question: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        by_question.setdefault(str(row.get(schema.ID)), []).append(i)
    single = 0
    for members in by_question.values():
        if len(members) < 2:
            single += 1
            continue
        answers = [answer_key(rows[i]) for i in members]
        scores = {schema.SEMANTIC_ENTROPY: semantic_entropy(answers), schema.SELF_CONSISTENCY: self_consistency(answers)}
        if embeddings is not None:
            scores[schema.EIGENSCORE] = eigenscore(np.asarray(embeddings)[members])
        for i in members:
            out[i].update(scores)
    notes = [f"sample-based scores: {len(by_question) - single} questions with several samples"
             + ("" if embeddings is not None else "; eigenscore left out (no embeddings)")]
    if single:
        notes.append(f"{single} question(s) with a single sample carry no sample-based score")
    return out, notes
