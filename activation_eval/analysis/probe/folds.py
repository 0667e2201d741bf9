"""Labels and cross-validation folds of a probe: what is predicted, and which questions train which model.

A run with --num_samples > 1 holds several rows (samples) of each question; they share the question's
words, category and often its answer, so they must never sit on both sides of a split. Folds then keep
all samples of a question together (StratifiedGroupKFold on the question id), and the bootstrap draws
questions, not rows (bootstrap.resample_counts(clusters=...)).

Public names:
    labels(rows, target, where) -> (sorted classes, int class index per row)
    labels_of_test_run(rows, target, classes) -> class indices of a test run's rows in the training classes
    make_folds(y, rows, n_splits, seed, groups, notes, clusters=None) -> ([(train, test), ...], description)
    permutation_labels(y, rows, seed) -> y shuffled within category (a permutation test; called the
                                         control task before issue 27)
    hl_control_labels(y, rows, seed) -> a fixed random label per input type (Hewitt & Liang 2019's
                                         control task as defined), or None when it leaves one class
    answer_text(row) -> str              the normalised extracted answer (else response): a sample's answer, lowercased
    input_type(row) -> str               the input type: category x normalised extracted answer
    small_sample_warnings(y, classes, target, n_clusters=None) -> [str]: n < 30 or a class < 10
    bounded_label(value, limit=MAX_LABEL) -> str   a group / category text as a label of at most `limit`
                                         characters: longer ones keep their start, an ellipsis and a hash
                                         of the whole (distinct texts stay distinct)
    bounded_labels(values, limit=MAX_LABEL) -> ([str], how many were shortened)
    MAX_LABEL

Example:
    >>> rows = [{"id": f"q{i // 2}", "sample": i % 2, "category": "ab"[i % 4 < 2], "correct": i % 3 == 0}
    ...         for i in range(24)]                                   # 12 questions x 2 samples
    >>> classes, y = labels(rows, "correct", "the run")
    >>> from activation_eval.analysis.probe.bootstrap import cluster_index
    >>> clusters, k = cluster_index(rows); k
    12
    >>> splits, how = make_folds(y, rows, 3, 0, None, [], clusters)
    >>> all(not set(clusters[tr]) & set(clusters[te]) for tr, te in splits)   # a question never on both sides
    True
    >>> how
    'StratifiedGroupKFold on the target, samples of a question kept together'
    >>> sorted(permutation_labels(y, rows, seed=0)) == sorted(y)            # the same labels, reassigned
    True
    >>> rows = [{"category": "geo", "extracted": f"City {i % 10}."} for i in range(40)]
    >>> input_type(rows[3]) == input_type({"category": "geo", "extracted": " city 3"})   # normalised answer
    True
    >>> hl = hl_control_labels(np.array([0, 1] * 20), rows, seed=0)
    >>> len({(input_type(r), int(label)) for r, label in zip(rows, hl)})    # one label per type: 10 types
    10
    >>> label = bounded_label("x" * 10_000_000); len(label), label[:3], label[31]
    (40, 'xxx', '…')
"""
import hashlib
import re
import unicodedata
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

Rows = Sequence[Mapping[str, Any]]
SMALL_N = 30                   # fewer questions than this: warn
SMALL_CLASS = 10               # a class with fewer members than this: warn
MAX_LABEL = 40                 # group / category texts longer than this become start + ellipsis + hash
_HASH = 8                      # hex digits of the hash of a shortened label


def bounded_label(value: Any, limit: int = MAX_LABEL) -> str:
    """str(value) when at most `limit` characters, else its first limit - 9 characters, an ellipsis and 8 hex
    digits of the sha256 of the whole text: a label of exactly `limit` characters (one-hot columns, fold keys,
    plot and table labels never grow with a stranger's text; two long texts with the same start stay apart)."""
    text = value if type(value) is str else str(value)
    if len(text) <= limit:
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH]
    return f"{text[:limit - _HASH - 1]}…{digest}"


def bounded_labels(values: Sequence[Any], limit: int = MAX_LABEL) -> tuple[list[str], int]:
    """([bounded_label(v) for v in values], how many distinct texts were shortened)."""
    out = [bounded_label(v, limit) for v in values]
    return out, len({label for label, v in zip(out, values) if len(str(v)) > limit})


def labels(rows: Rows, target: str, where: str) -> tuple[list[Any], np.ndarray]:
    """(sorted classes, int class index per row) of a boolean or categorical field."""
    missing = [r.get("id") for r in rows if r.get(target) is None]
    if missing:
        fields = sorted({k for r in rows for k in r})
        raise ValueError(f"{where}: {len(missing)} of {len(rows)} results rows have no value for "
                         f"target {target!r} (e.g. id {missing[0]!r}); fields: {', '.join(fields)}")
    values = [r[target] for r in rows]
    bad = next((v for v in values if isinstance(v, (float, list, dict))), None)
    if bad is not None:
        raise ValueError(f"target {target!r} must be a boolean or categorical field "
                         f"(true/false, strings or integers), but has the value {bad!r}")
    classes = sorted(set(values), key=lambda v: (type(v).__name__, v))
    if len(classes) < 2:
        raise ValueError(f"only one class in {where}: all {len(values)} rows have "
                         f"{target}={classes[0]!r}; a probe needs at least two")
    index = {c: i for i, c in enumerate(classes)}
    y = np.array([index[v] for v in values])
    counts = np.bincount(y, minlength=len(classes))
    if counts.min() < 2:
        rare = [str(c) for c, k in zip(classes, counts) if k < 2]
        raise ValueError(f"too few examples of the minority class for cross-validation: "
                         f"{target}={', '.join(rare[:5])} occurs once ({len(rare)} such value(s) "
                         f"of {len(classes)}); every class needs at least 2 questions")
    return classes, y


def labels_of_test_run(rows: Rows, target: str, classes: Sequence[Any]) -> np.ndarray:
    """Class indices (in the training run's `classes`) of a test run's rows."""
    test_classes, y = labels(rows, target, "the test run")
    unknown = [c for c in test_classes if c not in classes]
    if unknown:
        raise ValueError(f"the test run has {target} value(s) the training run lacks: "
                         f"{', '.join(map(str, unknown[:5]))}; a probe cannot score unseen classes")
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[test_classes[i]] for i in y])


def make_folds(y: np.ndarray, rows: Rows, n_splits: int, seed: int, groups: str | None, notes: list[str],
               clusters: np.ndarray | None = None, field: str = "category"
               ) -> tuple[list[tuple[np.ndarray, np.ndarray]], str]:
    """(list of (train, test) index arrays, description); every training fold holds every class.

    groups: a results field whose values are held out whole (GroupKFold); clusters: an int array
    (n,) of question indices whose rows stay together (StratifiedGroupKFold)."""
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold, StratifiedKFold

    if n_splits < 2:
        raise ValueError(f"folds must be at least 2, got {n_splits}")
    n_classes = int(y.max()) + 1
    if groups:
        group_labels = [bounded_label(r.get(groups) or "") for r in rows]
        n_groups = len(set(group_labels))
        if n_groups < 2:
            raise ValueError(f"probe groups {groups!r}: every question has the same value "
                             f"{group_labels[0]!r}; holding out groups needs at least 2")
        k = min(n_splits, n_groups)
        splits = list(GroupKFold(k, shuffle=True, random_state=seed).split(y, y, group_labels))
        method = f"GroupKFold: whole {groups!r} groups held out ({n_groups} groups)"
    elif clusters is not None:
        per_class = [len(set(clusters[y == c])) for c in range(n_classes)]
        k = min(n_splits, min(per_class))
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The least populated class")
            splits = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed).split(y, y, clusters))
        method = "StratifiedGroupKFold on the target, samples of a question kept together"
    else:
        k = min(n_splits, int(np.bincount(y).min()))
        cats = [bounded_label(r.get(field) or "") for r in rows]
        key = [f"{label}|{cat}" for label, cat in zip(y, cats)]
        try:
            with warnings.catch_warnings():       # small target x category cells are expected
                warnings.filterwarnings("ignore", message="The least populated class")
                splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, key))
        except ValueError:                        # every target x category cell smaller than k
            splits = []
        method = f"StratifiedKFold on target x {field}"
        if not splits or not _all_classes_in_training(splits, y, n_classes):
            splits = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(y, y))
            method = "StratifiedKFold on the target"
            notes.append(f"folds keep the target's proportions only: target x {field} cells too small")
    if k < n_splits:
        notes.append(f"{k} folds instead of {n_splits}: "
                     + ("only that many groups" if groups else "the smallest class has that many questions"))
    if not _all_classes_in_training(splits, y, n_classes):
        raise ValueError(f"a training fold lacks a class of the target when whole {groups!r} groups "
                         f"are held out; use fewer --folds or no --probe_groups")
    return splits, method


def _all_classes_in_training(splits, y, n_classes):
    return all(len(np.unique(y[train])) == n_classes for train, _ in splits)


def permutation_labels(y: np.ndarray, rows: Rows, seed: int) -> np.ndarray:
    """A permutation test for this probe: the labels permuted within each category, so the category still
    predicts them but nothing about the single question does. A probe that scores as well on these labels
    as on the real ones reads the category, not the question. (Before issue 27 this was called Hewitt &
    Liang's control task; theirs is hl_control_labels.)"""
    rng = np.random.default_rng(seed)
    out = np.array(y, copy=True)
    _, code = np.unique(np.array([bounded_label(r.get("category") or "") for r in rows]), return_inverse=True)
    order = np.argsort(code, kind="stable")                  # the rows of each category together: O(n log n)
    edges = np.flatnonzero(np.diff(code[order])) + 1
    for where in np.split(order, edges):
        out[where] = rng.permutation(out[where])
    return out


def answer_text(row: Mapping[str, Any]) -> str:
    """A row's extracted answer (else its response, when the extracted one is missing or blank), normalised:
    accents dropped, lowercased, punctuation as spaces, whitespace collapsed ("São Paulo." -> "sao paulo")."""
    answer = row.get("extracted")
    if not isinstance(answer, str) or not answer.strip():
        answer = row.get("response")
    text = unicodedata.normalize("NFKD", str(answer or ""))
    return re.sub(r"[\W_]+", " ", "".join(c for c in text if not unicodedata.combining(c)).lower()).strip()


def input_type(row: Mapping[str, Any]) -> str:
    """A row's input type for the control task: its category and its normalised answer (answer_text)."""
    return f"{row.get('category') or ''}\x1f{answer_text(row)}"


def hl_control_labels(y: np.ndarray, rows: Rows, seed: int) -> np.ndarray | None:
    """Hewitt & Liang (2019)'s control task: every input type (input_type: category x normalised answer) gets one
    label drawn at random from the target's empirical class distribution, by a generator seeded with `seed` and
    the type itself, so the label is a fixed function of the type (whatever the row order). A probe does well on
    it only by memorising types: selectivity = AUROC - this AUROC. None when the draw leaves fewer than 2
    classes, or a class with fewer than 2 rows (no folds possible)."""
    n_classes = int(np.max(y)) + 1
    share = np.bincount(y, minlength=n_classes) / len(y)
    labels: dict[str, int] = {}
    out = np.empty(len(y), dtype=int)
    for i, row in enumerate(rows):
        key = input_type(row)
        if key not in labels:
            digest = int.from_bytes(hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()[:8], "little")
            labels[key] = int(np.random.default_rng([int(seed), digest]).choice(n_classes, p=share))
        out[i] = labels[key]
    counts = np.bincount(out, minlength=n_classes)
    return out if (counts >= 2).sum() == n_classes else None


def small_sample_warnings(y: np.ndarray, classes: Sequence[Any], target: str,
                          n_clusters: int | None = None) -> list[str]:
    """Warnings for a probe on few questions (n < 30) or a rare class (< 10 members)."""
    out = []
    n = len(y) if n_clusters is None else n_clusters
    if n < SMALL_N:
        out.append(f"only {n} questions (< {SMALL_N}): every interval is wide and a verdict rests on very few answers")
    counts = np.bincount(y, minlength=len(classes))
    rare = [f"{target}={c} ({k})" for c, k in zip(classes, counts) if k < SMALL_CLASS]
    if rare:
        out.append(f"class(es) with fewer than {SMALL_CLASS} members: {', '.join(map(str, rare[:5]))}; "
                   f"AUROC and operating points rest on them")
    return out
