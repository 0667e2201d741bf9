"""Control classifiers for probes: what a probe must beat before a layer is said to "know".

Each control predicts the probe's target from something other than activations, read from the
results rows (results.jsonl): if a control does as well as a layer's probe, the layer need not
hold more than the control's information. Input-side controls know the question (its category,
length, words) or, for a probe at the answer, the answer's own tokens; output-side controls know the
model's own confidence in its answer, recorded while it answered (Kadavath et al. 2022: answer
log-probability, entropy, P(True)).

Single scores are scored as the field scores them (Orgad et al. 2024, Kadavath et al. 2022,
TruthTorchLM): for the binary target "correct", the AUROC of the raw score, oriented by its
definition (schema.SCORE_ORIENTATION: higher log-probability = more likely correct, higher entropy =
less likely), never fitted (raw_score). Fitted models only for combinations (output_confidence: all
single scores together) and for the input side.

Public names:
    CONTROL_NAMES                         input side, answer-token, then output side (below)
    INPUT_CONTROLS, OUTPUT_CONTROLS       the two sides
    ANSWER_CONTROLS                       the answer-token controls (input side; probes at the answer)
    OUTPUT_SCORE_FIELDS                   the single scores the output side reads (schema.SCORE_ORIENTATION's keys)
    RAW_TARGET                            the target raw scores apply to ("correct")
    control_side(name) -> "input" | "output"
    control_inputs(rows, drop=(), answer=False, answer_embedding=None) -> (dict, notes)
                                          name -> model input for each control the rows allow (less
                                          `drop`); notes say why a control was left out; `answer`
                                          adds answer_tokens, `answer_embedding` (n, hidden) that control
    raw_score(name, x) -> (n,)            a single score oriented so that higher = more likely correct
    own_controls(target) -> (names)       the controls that read the target itself (dropped for it)
    make_control(name) -> sklearn estimator, unfitted

    majority      the training folds' most frequent class (one score for all: AUROC 0.5)
    category      one-hot of the row's "category" (logistic regression); a text longer than folds.MAX_LABEL
                  characters is encoded by its start and a hash (folds.bounded_label), with a note
    length        num_prompt_tokens and num_generated_tokens, log-scaled (logistic regression)
    bag_of_words  TF-IDF of the question's words and word pairs (logistic regression)
    answer_embedding  the embedding layer at the probe's position (standardized logistic regression, as the
                  probe): the token's identity with no context
    answer_tokens TF-IDF of the extracted answer's words (else the response's; words, not token ids: rows hold
                  no token ids), single characters kept ("A", "5")
    answer_logprob_mean, answer_logprob_sum, answer_logprob_min, first_token_entropy, answer_entropy_mean,
    answer_entropy_max, p_true, ...
                  that one figure of the row: raw (target "correct"), else standardized logistic regression
    output_confidence  all of the single scores the rows carry, together (standardized logistic regression)

Example:
    >>> from activation_eval.store.run_reader import read_run_rows
    >>> rows = read_run_rows("results/mc")           # 12 multiple-choice questions, 3 answered correctly
    >>> inputs, notes = control_inputs(rows)
    >>> list(inputs)                                 # no confidence figures in these rows: input side only
    ['majority', 'category', 'length', 'bag_of_words']
    >>> y = np.array([row["correct"] for row in rows])
    >>> make_control("length").fit(inputs["length"], y).predict_proba(inputs["length"]).shape
    (12, 2)
    >>> raw_score("first_token_entropy", np.array([[0.1], [2.0]])).tolist()   # entropy: lower = more confident
    [-0.1, -2.0]
"""
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ... import schema
from ...schema.probe import Side
from .folds import MAX_LABEL, bounded_labels

INPUT_CONTROLS = ("majority", "category", "length", "bag_of_words")
ANSWER_EMBEDDING, ANSWER_TOKENS = "answer_embedding", "answer_tokens"
ANSWER_CONTROLS = (ANSWER_EMBEDDING, ANSWER_TOKENS)
# the row keys of the model's own scores of its answer, one output-side control each: every single score whose
# orientation the schema fixes (confidence fields, the answer span's figures, P(True), sample-based scores)
OUTPUT_SCORE_FIELDS = tuple(schema.SCORE_ORIENTATION)
OUTPUT_CONTROLS = OUTPUT_SCORE_FIELDS + ("output_confidence",)
CONTROL_NAMES = INPUT_CONTROLS + ANSWER_CONTROLS + OUTPUT_CONTROLS
RAW_TARGET = schema.CORRECT
LENGTH_FIELDS = ("num_prompt_tokens", "num_generated_tokens")
_OWN = {"category": ("category",), "num_prompt_tokens": ("length",), "num_generated_tokens": ("length",),
        "question": ("bag_of_words",), schema.EXTRACTED: (ANSWER_TOKENS,), schema.RESPONSE: (ANSWER_TOKENS,),
        **{f: (f, "output_confidence") for f in OUTPUT_SCORE_FIELDS}}


def control_side(name: str) -> Side:
    """"output" for a control that reads the model's confidence in its answer, else "input" (the answer-token
    controls too: they see the answer's identity, not the model's confidence)."""
    return "output" if name in OUTPUT_CONTROLS else "input"


def own_controls(target: str) -> tuple[str, ...]:
    """The controls that read the probe's target itself: they would "predict" it trivially."""
    return _OWN.get(target, ())


def raw_score(name: str, x: Any) -> np.ndarray:
    """The single score `name` (its input column, (n, 1) or (n,)) oriented by its definition: higher =
    more likely correct (schema.SCORE_ORIENTATION)."""
    return schema.SCORE_ORIENTATION[name] * np.asarray(x, dtype=np.float64).reshape(-1)


def control_inputs(rows: Sequence[Mapping[str, Any]], drop: Sequence[str] = (), answer: bool = False,
                   answer_embedding: Any = None) -> tuple[dict[str, Any], list[str]]:
    """(name -> input usable by make_control(name), notes): every control the rows can feed,
    except those named in `drop`; with `answer` (a probe at the answer) the answer-token controls too."""
    inputs, notes = _input_side(rows)
    if answer:
        answer_inputs, answer_notes = _answer_side(rows, answer_embedding)
        inputs.update(answer_inputs)
        notes += answer_notes
    output, output_notes = _output_side(rows)
    inputs.update(output)
    return {k: v for k, v in inputs.items() if k not in drop}, notes + output_notes


def _answer_side(rows, embedding):
    """answer_embedding (the given matrix) and answer_tokens (the extracted answer's words, else the response's)."""
    inputs, notes = {}, []
    if embedding is not None:
        E = np.asarray(embedding, dtype=np.float64)
        if E.shape[0] != len(rows):
            raise ValueError(f"answer_embedding has {E.shape[0]} rows, the run {len(rows)}")
        inputs[ANSWER_EMBEDDING] = E
    else:
        notes.append("answer_embedding control left out: no embedding layer at the probe's position "
                     "(the records hold no 'embeddings' layer, or in-memory features came without it)")
    texts = [str(r.get(schema.EXTRACTED) if r.get(schema.EXTRACTED) is not None else r.get(schema.RESPONSE) or "")
             for r in rows]
    if any(re.search(r"\w", t) for t in texts):       # TF-IDF needs a word somewhere
        inputs[ANSWER_TOKENS] = np.array(texts, dtype=object)
    else:
        notes.append("answer_tokens control left out: results rows have no extracted answer or response text")
    return inputs, notes


def _input_side(rows):
    n = len(rows)
    categories, shortened = bounded_labels([r.get("category") or "" for r in rows])   # a column per value: bounded
    inputs = {"majority": np.zeros((n, 1)),
              "category": np.array([[c] for c in categories], dtype=object)}
    notes = [] if not shortened else [f"category control: {shortened} category text(s) longer than {MAX_LABEL} "
                                      f"characters one-hot encoded by their start and a hash (bounded_label)"]
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
    if name in ("length", ANSWER_EMBEDDING) or name in OUTPUT_CONTROLS:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    if name == "bag_of_words":
        return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
                             LogisticRegression(max_iter=2000))
    if name == ANSWER_TOKENS:           # single characters are answers too ("A", "5")
        return make_pipeline(TfidfVectorizer(token_pattern=r"(?u)\b\w+\b", ngram_range=(1, 2), sublinear_tf=True),
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

