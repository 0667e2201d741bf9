"""The probe's entry points: a run folder (probe_run) or in-memory matrices (probe_features) -> a ProbeResult.

probe_run reads one vector per question per layer (dataset.py; reduce="auto": the first token of
the extracted answer when generated positions were captured, else the last prompt token), each record
file read once per block of layers that fits LOAD_BUDGET_BYTES (once in all for probe-sized runs); with
an answer position it also reads the other positions of the layer x position table, and the record's
embedding layer ("embeddings", hidden_states[0]) at the same position for the answer_embedding control
(with the answer_tokens control: a probe at the answer must beat its own token identity).

With a test run (test_run=, test_features=) the two runs are kept apart (overlap.py): the test run's
questions that the training run also holds (same id or prompt hash) are left out and counted, unless
keep_overlap (then labelled in-sample); a test run wholly shared is an error; a confidence field only
one run carries is left out of both runs' controls with a note; different hidden sizes are an error
naming both runs.

Public names:
    probe_run(run_dir, layers=None, n_splits=5, seed=0, target="correct", groups=None, test_run=None,
              n_bootstrap=None, reduce="auto", progress=False, family="logistic", cv_seeds=3,
              transfer=None, keep_overlap=False, strata="auto") -> ProbeResult
              strata: a results field (e.g. the task: "category") within whose values folds are stratified
              and every AUROC compares pairs (--probe_strata); "auto": the task for a folder of several
              tasks (strata.py), else none; "none": pooled
    probe_features(features, rows, target="correct", n_splits=5, seed=0, groups=None, n_bootstrap=None,
                   test_features=None, test_rows=None, progress=False, family="logistic", cv_seeds=3,
                   transfer=None, position_features=None, answer_embedding=None, test_answer_embedding=None,
                   at_answer=None, sample_embeddings=None, keep_overlap=False, strata=None, workers=None)
                   -> ProbeResult
                   answer_embedding (n, hidden): the embedding layer at the features' position; with it (or
                   at_answer=True) the features are read at the answer and the answer-token controls join
    LOAD_BUDGET_BYTES

Example:
    >>> res = probe_run("results/mc", layers=["layer_5", "layer_20"]); res.verdict, res.best_layer
    ('no evidence beyond the controls', 'layer_...')
"""
import dataclasses
import itertools
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from ... import schema
from ...schema.names import ANSWER_REDUCTIONS, EMBEDDINGS, HEATMAP_POSITIONS
from ...schema.probe import ProbeResult
from ...store.run_folder import is_run_folder
from ..arrays import run_layers
from ..dataset import load_run_layers, load_run_positions, resolve_reduce
from ..steered import run_steering, steering_notes
from .build import Where, probe
from .overlap import TestSplit
from .strata import probe_strata
from .sweep import LayerData

LOAD_BUDGET_BYTES = 1 << 30        # layers read together per pass over the record files


def probe_run(run_dir: str | os.PathLike[str], layers: Sequence[str] | None = None, n_splits: int = 5, seed: int = 0,
              target: str = "correct", groups: str | None = None, test_run: str | os.PathLike[str] | None = None,
              n_bootstrap: int | None = None, reduce: str | int = "auto", progress: bool = False,
              family: str = "logistic", cv_seeds: int = 3, transfer: str | None = None,
              keep_overlap: bool = False, strata: str | None = "auto", workers: int | None = None) -> ProbeResult:
    """Probe every layer of a run folder (see the module docstring and the package's)."""
    run = _check_run(run_dir)
    strata, strata_note = probe_strata(run, strata, groups)
    test_dir = _check_run(test_run) if test_run is not None else None
    names = list(layers) if layers else run_layers(run)
    if not names:
        raise ValueError("no layers to probe")
    position, position_note = resolve_reduce(run, reduce)
    at_answer = position in ANSWER_REDUCTIONS
    embedding = EMBEDDINGS if at_answer and EMBEDDINGS in run_layers(run) else None
    test_embedding = embedding if embedding and test_dir is not None and EMBEDDINGS in run_layers(test_dir) else None
    run_names = (_run_name(run), _run_name(test_dir) if test_dir else None)
    reader = _RunLayers(run, names, position, test_dir, keep_overlap, run_names, embedding, test_embedding)
    layer_data = _with_sample_embeddings(iter(reader), run)
    first = next(layer_data)                     # fixes the test split (reader.split) before the result is built
    where = Where(run_dir=run, run_name=run_names[0], reduce=position, position_note=position_note,
                  test_dir=test_dir, test_name=run_names[1], keep_overlap=keep_overlap, test_split=reader.split)
    runs = [(run_names[0], run_steering(run, first.rows))]
    if test_dir is not None:
        runs.append((run_names[1] or test_dir, run_steering(test_dir, first.test_rows or ())))
    result = probe(itertools.chain([first], layer_data), len(names), target, n_splits, seed, groups,
                   n_bootstrap, progress, family, cv_seeds, transfer, run_names, where, at_answer=at_answer,
                   strata=strata, workers=workers)
    notes = [*([strata_note] if strata_note else []), *steering_notes(runs)]     # steered runs say so
    return dataclasses.replace(result, notes=[*result.notes, *notes]) if notes else result


def _with_sample_embeddings(layer_data: Iterator[LayerData], run_dir: str) -> Iterator[LayerData]:
    """The layers, the first carrying the run's sample embeddings for EigenScore when its rows hold several
    samples of a question: INSIDE's choice, the middle layer at the last token (here the last captured one),
    aligned to the first layer's rows by row key (none when some row has no such vector)."""
    first = next(layer_data, None)
    if first is None:
        return
    if any(row.get(schema.SAMPLE) is not None for row in first.rows):
        blocks = [name for name in run_layers(run_dir) if name != EMBEDDINGS]
        if blocks:
            mats, rows = load_run_layers(run_dir, [blocks[len(blocks) // 2]], reduce="last")
            at = {schema.row_key(row): i for i, row in enumerate(rows)}
            keys = [schema.row_key(row) for row in first.rows]
            if all(key in at for key in keys):
                order = [at[key] for key in keys]
                first = dataclasses.replace(first, sample_embeddings=next(iter(mats.values()))[order])
    yield first
    yield from layer_data


class _RunLayers:
    """The layers of a run (and its test run) as LayerData: the first layer alone (it sizes the blocks),
    then the others in blocks that fit LOAD_BUDGET_BYTES; the test split is fixed by the first block. The
    first block also reads `embedding` (the embedding layer, for the answer_embedding control), so that its
    rows are the layers' rows; the first LayerData carries it."""

    def __init__(self, run_dir: str, names: list[str], position: Any, test_dir: str | None, keep_overlap: bool,
                 run_names: tuple[str, str | None], embedding: str | None = None,
                 test_embedding: str | None = None) -> None:
        self.run_dir, self.names, self.position, self.test_dir = run_dir, names, position, test_dir
        self.keep_overlap, self.run_names = keep_overlap, run_names
        self.embedding, self.test_embedding = embedding, test_embedding
        self.split: TestSplit | None = None

    def __iter__(self) -> Iterator[LayerData]:
        names, position, test_dir, embedding = self.names, self.position, self.test_dir, self.embedding
        heatmap = position in ANSWER_REDUCTIONS and test_dir is None
        start, block = 0, 1
        while start < len(names):
            part = names[start:start + block]
            extra_layer = embedding if start == 0 and embedding and embedding not in part else None
            mats, rows, by_position, tests, test_rows = _read_block(
                self.run_dir, part + ([extra_layer] if extra_layer else []), position, test_dir, heatmap,
                self.test_embedding is not None or not extra_layer)
            main = by_position[position] if by_position else mats
            emb = (main.pop(extra_layer) if extra_layer else main.get(embedding)) if start == 0 and embedding else None
            test_emb = None
            if emb is not None and self.test_embedding:
                test_emb = tests.pop(extra_layer) if extra_layer else tests.get(embedding)
            X = None
            for name in part:
                extra = {str(p): by_position[p].pop(name) for p in HEATMAP_POSITIONS} if by_position else None
                X = extra[position] if extra else mats.pop(name)
                yield self._layer(name, X, rows, tests.pop(name, None), test_rows, extra, emb, test_emb)
                emb = test_emb = None
            if start == 0 and X is not None:
                copies = (len(HEATMAP_POSITIONS) if heatmap else 1) + (1 if test_dir else 0)
                block = max(1, LOAD_BUDGET_BYTES // (max(1, X.nbytes) * copies))
            start += len(part)

    def _layer(self, name: str, X: Any, rows: Any, X_test: Any, test_rows: Any, extra: Any, emb: Any,
               test_emb: Any) -> LayerData:
        if test_rows is None:
            return LayerData(name, X, rows, None, None, extra, emb)
        if self.split is None:
            self.split = TestSplit(rows, test_rows, self.keep_overlap, (self.run_names[0], str(self.run_names[1])))
        s = self.split
        return LayerData(name, X, s.rows, s.test_matrix(name, X, X_test), s.test_rows, extra, emb,
                         None if test_emb is None else s.test_matrix(EMBEDDINGS, emb, test_emb))

def _read_block(run_dir: str, part: list[str], position: Any, test_dir: str | None, heatmap: bool,
                test_has_all: bool = True) -> tuple[Any, ...]:
    """{layer: X}, rows, {position: {layer: X}} or None, {layer: X_test}, test rows (the test run's layers: all of
    `part`, else all but its last, the embedding layer the test run lacks)."""
    if heatmap:
        by_position, rows, _ = load_run_positions(run_dir, part, positions=HEATMAP_POSITIONS)
        mats: dict[str, Any] = {}                     # the main position's matrices are by_position[position]
    else:
        by_position = None
        mats, rows = load_run_layers(run_dir, part, reduce=position)
    test_part = part if test_has_all else part[:-1]
    tests, test_rows = load_run_layers(test_dir, test_part, reduce=position) if test_dir else ({}, None)
    return mats, rows, by_position, tests, test_rows


def probe_features(features: Mapping[str, Any], rows: Sequence[Mapping[str, Any]], target: str = "correct",
                   n_splits: int = 5, seed: int = 0, groups: str | None = None, n_bootstrap: int | None = None,
                   test_features: Mapping[str, Any] | None = None, test_rows: Sequence[Mapping[str, Any]] | None = None,
                   progress: bool = False, family: str = "logistic", cv_seeds: int = 3, transfer: str | None = None,
                   position_features: Mapping[str, Mapping[str, Any]] | None = None, answer_embedding: Any = None,
                   test_answer_embedding: Any = None, at_answer: bool | None = None,
                   sample_embeddings: Any = None, keep_overlap: bool = False, strata: str | None = None,
                   workers: int | None = None) -> ProbeResult:
    """probe_run on in-memory data: features {layer: float [n, hidden]} in layer order, `rows`
    the n results rows (target, category, question, token counts); optionally the same for a
    test run to score transfer on, and position_features {position: {layer: X}} for the
    layer x position table. Features read at the answer (at_answer, by default True exactly when
    answer_embedding is given) get the answer-token controls: answer_embedding (n, hidden), the
    embedding layer at the same position (test_answer_embedding: the test run's), and answer_tokens.
    Rows holding several samples of a question (a "sample" key) get the sample-based scores
    (sample_scores.py) as raw controls; sample_embeddings (n, hidden) adds EigenScore.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> rows = [{"id": f"q{i}", "correct": i % 2 == 0, "category": "ab"[i % 3 == 0], "question": f"question {i}",
    ...          "num_prompt_tokens": 10, "num_generated_tokens": 4} for i in range(60)]
    >>> y = np.array([row["correct"] for row in rows])
    >>> X0 = rng.normal(size=(60, 8))                            # noise
    >>> X1 = rng.normal(size=(60, 8)) + 1.5 * y[:, None]          # knows the answer is correct
    >>> res = probe_features({"layer_0": X0, "layer_1": X1}, rows, n_bootstrap=1000)
    >>> res.verdict, res.layers["layer_1"].auroc > 0.9, res.layers["layer_0"].auroc < 0.75
    ('layer_1', True, True)
    """
    split = None
    if test_features is not None:
        if not test_rows:
            raise ValueError("test_features needs test_rows: the test run's results rows, one per row of its matrices")
        split = TestSplit(rows, test_rows, keep_overlap, ("run", "test run"))

    def layers() -> Iterator[LayerData]:
        for i, (name, X) in enumerate(features.items()):
            extra = {p: position_features[p][name] for p in position_features} if position_features else None
            first = i == 0
            emb, sample_emb = (answer_embedding, sample_embeddings) if first else (None, None)
            if split is None:
                yield LayerData(name, X, rows, None, None, extra, emb, None, sample_emb)
            else:
                assert test_features is not None
                test_emb = split.test_matrix(EMBEDDINGS, emb, test_answer_embedding) \
                    if first and emb is not None and test_answer_embedding is not None else None
                yield LayerData(name, X, split.rows, split.test_matrix(name, X, test_features[name]), split.test_rows,
                                extra, emb, test_emb, sample_emb)
    answer = answer_embedding is not None if at_answer is None else bool(at_answer)
    return probe(layers(), len(features), target, n_splits, seed, groups, n_bootstrap, progress, family, cv_seeds,
                 transfer, ("run", "test run" if test_features is not None else None),
                 Where(keep_overlap=keep_overlap, test_split=split), at_answer=answer, strata=strata,
                 workers=workers)

def _check_run(path: str | os.PathLike[str]) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path) or not is_run_folder(path):
        raise FileNotFoundError(f"not a run folder (no results.jsonl): {path}")
    return path


def _run_name(run_dir: str) -> str:
    return os.path.basename(os.path.normpath(os.path.abspath(run_dir)))
