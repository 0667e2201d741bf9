"""Control classifiers for probes: what a probe must beat before a layer is said to "know".

Each control predicts the probe's target from something other than activations, read from the
results rows (results.jsonl): if a control does as well as a layer's probe, the layer need not
hold more than the control's information. Input-side controls know the question (its category,
length, words); output-side controls know the model's own confidence in its answer, recorded while
it answered (Kadavath et al. 2022: answer log-probability, entropy, P(True)).

Public names:
    CONTROL_NAMES                         input side, then output side (below)
    INPUT_CONTROLS, OUTPUT_CONTROLS       the two sides
    OUTPUT_SCORE_FIELDS                   the row keys the output side reads (schema.CONFIDENCE_FIELDS + P_TRUE)
    control_side(name) -> "input" | "output"
    control_inputs(rows, drop=()) -> (dict, notes)
                                          name -> model input for each control the rows allow (less
                                          `drop`); notes say why a control was left out
    own_controls(target) -> (names)       the controls that read the target itself (dropped for it)
    make_control(name) -> sklearn estimator, unfitted

    majority      the training folds' most frequent class (one score for all: AUROC 0.5)
    category      one-hot of the row's "category" (logistic regression)
    length        num_prompt_tokens and num_generated_tokens, log-scaled (logistic regression)
    bag_of_words  TF-IDF of the question's words and word pairs (logistic regression)
    answer_logprob_mean, answer_logprob_sum, first_token_entropy, p_true
                  that one figure of the row (standardized logistic regression)
    output_confidence  all of the four the rows carry, together

Example:
    >>> from activation_eval.store.run_reader import read_run_rows
    >>> rows = read_run_rows("results/mc")           # 12 multiple-choice questions, 3 answered correctly
    >>> inputs, notes = control_inputs(rows)
    >>> list(inputs)                                 # no confidence figures in these rows: input side only
    ['majority', 'category', 'length', 'bag_of_words']
    >>> y = np.array([row["correct"] for row in rows])
    >>> make_control("length").fit(inputs["length"], y).predict_proba(inputs["length"]).shape
    (12, 2)
"""
import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ... import schema
from ...schema.probe import Side

INPUT_CONTROLS = ("majority", "category", "length", "bag_of_words")
# the row keys of the model's own scores of its answer, one output-side control each: schema's confidence
# fields and P(True) (--p_true)
OUTPUT_SCORE_FIELDS = schema.CONFIDENCE_FIELDS + (schema.P_TRUE,)
OUTPUT_CONTROLS = OUTPUT_SCORE_FIELDS + ("output_confidence",)
CONTROL_NAMES = INPUT_CONTROLS + OUTPUT_CONTROLS
LENGTH_FIELDS = ("num_prompt_tokens", "num_generated_tokens")
_OWN = {"category": ("category",), "num_prompt_tokens": ("length",), "num_generated_tokens": ("length",),
        "question": ("bag_of_words",), **{f: (f, "output_confidence") for f in OUTPUT_SCORE_FIELDS}}


def control_side(name: str) -> Side:
    """"output" for a control that reads the model's confidence in its answer, else "input"."""
    return "output" if name in OUTPUT_CONTROLS else "input"


def own_controls(target: str) -> tuple[str, ...]:
    """The controls that read the probe's target itself: they would "predict" it trivially."""
    return _OWN.get(target, ())


def control_inputs(rows: Sequence[Mapping[str, Any]], drop: Sequence[str] = ()) -> tuple[dict[str, Any], list[str]]:
    """(name -> input usable by make_control(name), notes): every control the rows can feed,
    except those named in `drop`."""
    inputs, notes = _input_side(rows)
    output, output_notes = _output_side(rows)
    inputs.update(output)
    return {k: v for k, v in inputs.items() if k not in drop}, notes + output_notes


def _input_side(rows):
    n = len(rows)
    inputs = {"majority": np.zeros((n, 1)),
              "category": np.array([[str(r.get("category") or "")] for r in rows], dtype=object)}
    notes = []
    lengths = [[r.get(f) for f in LENGTH_FIELDS] for r in rows]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for row in lengths for v in row):
        inputs["length"] = np.log1p(np.asarray(lengths, dtype=np.float64))
    else:
        notes.append(f"length control left out: some results rows lack {' / '.join(LENGTH_FIELDS)}")
    texts = [str(r.get("question") or r.get("prompt") or "") for r in rows]
    if any(t.strip() for t in texts):
        inputs["bag_of_words"] = np.array(texts, dtype=object)
    else:
        notes.append("bag_of_words control left out: results rows have no question text")
    return inputs, notes


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _output_side(rows):
    """The confidence figures every row carries, one control each, and all of them together."""
    inputs, notes, columns = {}, [], []
    for field in OUTPUT_SCORE_FIELDS:
        have = sum(_number(r.get(field)) for r in rows)
        if have == len(rows):
            columns.append(field)
            inputs[field] = np.array([[float(r[field])] for r in rows])
        elif have:
            notes.append(f"{field} control left out: {len(rows) - have} of {len(rows)} rows lack it")
    if not columns:
        notes.append("output-side controls left out: the rows carry no answer_logprob_mean / first_token_entropy "
                     "(log-likelihood scoring, or a run written before they were recorded)")
    elif len(columns) > 1:
        inputs["output_confidence"] = np.hstack([inputs[c] for c in columns])
    return inputs, notes


def make_control(name: str) -> Any:
    """An unfitted sklearn classifier with predict_proba for control `name`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if name == "majority":
        return _majority_class()()
    if name == "category":       # a category unseen in training (grouped CV) gets no feature
        return make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=2000))
    if name == "length" or name in OUTPUT_CONTROLS:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if name == "bag_of_words":
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                             LogisticRegression(max_iter=2000))
    raise ValueError(f"unknown control {name!r}; known: {', '.join(CONTROL_NAMES)}")


@functools.cache
def _majority_class():
    """MajorityClass, defined on first use so that importing this module does not import sklearn."""
    from sklearn.dummy import DummyClassifier

    class MajorityClass(DummyClassifier):
        """Predicts the training folds' most frequent class; scores every question alike (1/k per
        class), so its AUROC is exactly 0.5 under any folds. (DummyClassifier's own scores follow
        each fold's class balance, which pooled over folds ranks the folds against each other.)"""

        def __init__(self):
            super().__init__(strategy="most_frequent")

        def predict_proba(self, X):
            return np.full((len(X), len(self.classes_)), 1.0 / len(self.classes_))

    return MajorityClass

