"""Control classifiers for probes: what a probe must beat before a layer is said to "know".

Each control predicts the probe's target from something other than activations, read from the
results rows (results.jsonl): if a control does as well as a layer's probe, the layer need not
hold more than the control's information (the question's category, its length, its words).

Public names:
    CONTROL_NAMES                         ("majority", "category", "length", "bag_of_words")
    control_inputs(rows) -> (dict, notes) name -> model input for each control the rows allow;
                                          notes say why a control was left out
    make_control(name) -> sklearn estimator, unfitted

    majority      the training folds' most frequent class (one score for all: AUROC 0.5)
    category      one-hot of the row's "category" (logistic regression)
    length        num_prompt_tokens and num_generated_tokens, log-scaled (logistic regression)
    bag_of_words  TF-IDF of the question's words and word pairs (logistic regression)

Example:
    >>> from activation_eval.store.run_reader import read_run_rows
    >>> rows = read_run_rows("results/mc")           # 12 multiple-choice questions, 3 answered correctly
    >>> inputs, notes = control_inputs(rows)
    >>> list(inputs), notes                          # every control can be fed: no notes
    (['majority', 'category', 'length', 'bag_of_words'], [])
    >>> y = np.array([row["correct"] for row in rows])
    >>> make_control("length").fit(inputs["length"], y).predict_proba(inputs["length"]).shape
    (12, 2)
"""
import functools

import numpy as np

CONTROL_NAMES = ("majority", "category", "length", "bag_of_words")
LENGTH_FIELDS = ("num_prompt_tokens", "num_generated_tokens")


def control_inputs(rows):
    """(name -> input usable by make_control(name), notes): every control the rows can feed."""
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


def make_control(name):
    """An unfitted sklearn classifier with predict_proba for control `name`."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    if name == "majority":
        return _majority_class()()
    if name == "category":       # a category unseen in training (grouped CV) gets no feature
        return make_pipeline(OneHotEncoder(handle_unknown="ignore"), LogisticRegression(max_iter=2000))
    if name == "length":
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

