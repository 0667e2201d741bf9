"""logit_lens_run: the lens over every captured question of a run -> a LensResult (schema/lens.py).

Each layer's activation at the position that emits the extracted answer's first token (reading.py:
answer_positions[0] - 1; `position="last_prompt"`: the last prompt token P-1, labelled; "auto": the
answer when the rows hold answer spans, else the last prompt token) is projected (projection.project);
rank = the best rank of any gold candidate, probability = the candidates' summed probability. Groups
(correct / incorrect / all) get the median rank and mean probability per layer; beside them, per
layer, the difference incorrect - correct within each value of `stratify_by` (stratify.py) of the
mean ln(rank) (ranks have a heavy tail: the log keeps one rank-30000 question from outweighing many;
the difference is the log of the ratio of geometric-mean ranks) and of the mean probability, with the
pooled difference beside. Intervals: 95% percentile bootstrap over questions, a question's samples
(--num_samples) resampled together. Questions without an answer span are left out and counted;
caveats (reading.lens_caveats) name few rows per class and groups read at different kinds of position.

Public names:
    logit_lens_run(run_dir, layers=None, model=None, tokenizer=None, top_k=5, progress=True,
                   n_resamples=1000, seed=0, stratify_by="category", position="auto") -> LensResult

Example:
    >>> res = logit_lens_run("results/run1", layers=["layer_29"], progress=False)
    >>> res.layers["layer_29"].all.median_rank, res.questions_used
    (133.0, 6)
"""
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ...schema.lens import GroupCurve, LensDifferences, LensGroups, LensResult, QuestionLayer, QuestionLens
from ...store.run_reader import RunReader
from ..arrays import as_2d, record_meta
from ..intervals import bootstrap_ci
from ..stratify import DIFFERENCE, WEIGHTS, row_strata, stratified_differences
from .model import load_run_model
from .projection import gold_first_tokens, project, ranks
from .reading import MIN_PER_CLASS, NO_SPAN, lens_caveats, read_position, resolve_reading

GOLD = ("first token of each accepted answer (choice: its letter), with and without a leading space; rank = best "
        "candidate's, prob = summed candidates'")


def logit_lens_run(run_dir: str | os.PathLike[str], layers: Sequence[str] | None = None, model: Any = None,
                   tokenizer: Any = None, top_k: int = 5, progress: bool = True, n_resamples: int = 1000,
                   seed: int = 0, stratify_by: str = "category", position: str = "auto") -> LensResult:
    """The logit lens over every captured question of a run (see the module docstring).

    The model is the run's (run_config.json's "model") when it is local (model.is_local_model; a hub
    id raises ModelNotLocalError before any loading: the analysis never downloads), unless `model` is
    given: a path or name to load (the CLI's --model), or a loaded model together with its `tokenizer`.
    `position`: "answer", "last_prompt" or "auto" (reading.py). Questions without an answer span
    are counted in skipped_no_answer_span, those whose record lacks the position read in
    skipped_no_position; those without a gold token get top-k tokens but no rank. `stratify_by`: the
    results field whose values are the strata (a field no row has is a ValueError, raised before the
    model is loaded).
    """
    run_dir = os.fspath(run_dir)
    reader = RunReader(run_dir)
    pairs = reader.located()
    if not pairs:
        raise ValueError(f"no question of {run_dir} has saved activations; run main.py with --capture_activations")
    row_strata([row for row, _ in pairs], stratify_by)                   # a missing field: fail before loading
    reading, words = resolve_reading([row for row, _ in pairs], position)
    if isinstance(model, (str, os.PathLike)):           # --model PATH
        model, tokenizer = load_run_model(run_dir, model)
    elif model is None or tokenizer is None:
        model, tokenizer = load_run_model(run_dir)
    questions, rows, names, skipped = _read_questions(reader, pairs, layers, model, tokenizer, top_k, progress,
                                                      reading)
    if not questions:
        raise ValueError(_nothing_read(run_dir, reading, skipped))
    vocab = int(model.get_output_embeddings().weight.shape[0])
    groups = {name: _groups(questions, name, n_resamples, seed) for name in names}
    first = groups[names[0]]
    at_start = {g: sum(q.at_last_prompt for q in questions if q.correct is flag and q.gold_token_ids)
                for g, flag in (("correct", True), ("incorrect", False))}
    return LensResult(
        run_dir=run_dir, model=getattr(model, "name_or_path_for_records", None) or model.name_or_path,
        reading=reading, position=words, gold=GOLD,
        interval=f"95% percentile bootstrap over questions ({n_resamples} resamples)",
        questions_used=len(questions), skipped_no_answer_span=skipped[NO_SPAN], skipped_no_position=skipped["position"],
        at_response_start=at_start, min_per_class=MIN_PER_CLASS,
        caveats=lens_caveats(reading, first.correct.n, first.incorrect.n, at_start,
                             {"correct": first.correct.n, "incorrect": first.incorrect.n}),
        without_gold=sum(not q.gold_token_ids for q in questions),
        vocab_size=vocab, chance_rank=(vocab + 1) / 2, chance_prob_per_token=1 / vocab,
        layer_names=names, layers=groups,
        stratified_by=stratify_by,
        stratified_method=f"{DIFFERENCE} within each {stratify_by} value; weights {WEIGHTS}; 95% percentile bootstrap "
                          f"({n_resamples} resamples) of questions within each {stratify_by} value, a question's "
                          f"samples together",
        stratified=_stratified(questions, names, row_strata(rows, stratify_by), n_resamples, seed, stratify_by),
        questions=questions)


def _read_questions(reader: RunReader, pairs: Any, layers: Sequence[str] | None, model: Any, tokenizer: Any,
                    top_k: int, progress: bool, reading: str
                    ) -> tuple[list[QuestionLens], list[dict[str, Any]], list[str], dict[str, int]]:
    """(the lens of every question read, their rows, the layer names, {NO_SPAN: left out without an answer
    span, "position": left out because the record lacks the position})."""
    from tqdm import tqdm
    questions, used_rows, skipped = [], [], {NO_SPAN: 0, "position": 0}
    names: list[str] = []
    for row, record in tqdm(reader.records(list(layers) if layers else None, pairs=pairs), total=len(pairs),
                            desc="logit lens", unit="q", file=sys.stderr, disable=not progress):
        missing = [name for name in layers or () if name not in record.get("activations", {})]
        if missing:
            raise ValueError(f"the record of question {row.get('id')!r} has no layer(s) {', '.join(missing)}")
        names = names or list(record["activations"])
        meta = record_meta(record)
        where = read_position(row, record, meta["num_prompt_tokens"], reading, str(row.get("activation_file")))
        q = None if where == NO_SPAN else _question_lens(model, tokenizer, record, meta, row, names, top_k, where)
        if q is None:
            skipped[NO_SPAN if where == NO_SPAN else "position"] += 1
        else:
            questions.append(q)
            used_rows.append(row)
        del record
    return questions, used_rows, names, skipped


def _nothing_read(run_dir: str, reading: str, skipped: dict[str, int]) -> str:
    """The message when no question could be read."""
    if reading == "last_prompt":
        return (f"no record of {run_dir} keeps the last prompt token; the logit lens needs it "
                f"(capture with --positions all, prompt or last_prompt)")
    return (f"no question of {run_dir} could be read at its answer: {skipped[NO_SPAN]} have no answer span "
            f"(answer_positions), {skipped['position']} records lack the position that emits it (capture with "
            f"--positions all); --lens_position last_prompt reads the last prompt token instead")


def _question_lens(model: Any, tokenizer: Any, record: dict[str, Any], meta: dict[str, Any], row: Mapping[str, Any],
                   names: list[str], top_k: int, where: Any) -> QuestionLens | None:
    """Per layer: gold rank / probability, the rank of the token generated from the position read, the top-k
    tokens; None when the record lacks the position (`where`: (position, answer start), read_position's)."""
    target, answer_start = where
    if target not in meta["positions"]:
        return None
    at = meta["positions"].index(target)
    hidden = torch.from_numpy(np.stack([as_2d(record["activations"][n])[at] for n in names]))
    logits = project(model, hidden, names)                         # (layers, vocab)
    probs = torch.softmax(logits, dim=-1).double()
    gold = gold_first_tokens(tokenizer, row)
    next_ids = meta["tokens"][target + 1:target + 2]               # the token generated from the position read
    top_p, top_i = probs.topk(top_k, dim=-1)
    gold_ranks = ranks(logits, gold).tolist() if gold else None          # (layers,)
    gold_p = probs[:, gold].sum(-1).tolist() if gold else None
    gen_ranks = ranks(logits, next_ids).tolist() if next_ids else None
    pieces = {int(i): tokenizer.decode([int(i)]) for i in top_i.unique().tolist()}
    layers = {name: QuestionLayer(top=[(pieces[i], p) for p, i in zip(top_p[li].tolist(), top_i[li].tolist())],
                                  rank=int(gold_ranks[li]) if gold_ranks else None,
                                  prob=float(gold_p[li]) if gold_p else None,
                                  generated_rank=int(gen_ranks[li]) if gen_ranks else None)
              for li, name in enumerate(names)}
    correct = row.get("correct")
    return QuestionLens(id=row.get("id"), category=row.get("category"),
                        correct=correct if isinstance(correct, bool) else None,
                        gold_token_ids=gold, gold_tokens=[tokenizer.decode([i]) for i in gold],
                        position=target, answer_start=answer_start,
                        at_last_prompt=target == meta["num_prompt_tokens"] - 1,
                        next_token=tokenizer.decode(next_ids) if next_ids else None, layers=layers)


def _groups(questions: list[QuestionLens], name: str, n_resamples: int, seed: int) -> LensGroups:
    """The three groups' curves at layer `name`."""
    members = {"correct": [q for q in questions if q.correct is True],
               "incorrect": [q for q in questions if q.correct is False], "all": questions}
    curves = {group: _curve([q for q in qs], name, n_resamples, seed) for group, qs in members.items()}
    return LensGroups(correct=curves["correct"], incorrect=curves["incorrect"], all=curves["all"])


def _curve(questions: list[QuestionLens], name: str, n_resamples: int, seed: int) -> GroupCurve:
    """n, median rank and mean probability of `questions` at layer `name`, 95% intervals (a question's
    samples resampled together: clusters = ids)."""
    ranked = [q for q in questions if q.layers[name].rank is not None]
    rank = np.array([q.layers[name].rank for q in ranked], dtype=float)
    with_prob = [q for q in questions if q.layers[name].prob is not None]
    prob = np.array([q.layers[name].prob for q in with_prob], dtype=float)
    return GroupCurve(n=int(rank.size), median_rank=float(np.median(rank)) if rank.size else None,
                      median_rank_ci=bootstrap_ci(rank, np.median, n_resamples, seed=seed, clusters=_cluster_keys(ranked)),
                      mean_prob=float(prob.mean()) if prob.size else None,
                      mean_prob_ci=bootstrap_ci(prob, np.mean, n_resamples, seed=seed, clusters=_cluster_keys(with_prob)))


def _cluster_keys(questions: Iterable[QuestionLens]) -> list[Any]:
    """The question id of each row (a row without one is its own cluster)."""
    return [("row", i) if q.id is None else q.id for i, q in enumerate(questions)]


def _stratified(questions: list[QuestionLens], names: list[str], strata: list[str], n_resamples: int, seed: int,
                by: str) -> dict[str, LensDifferences]:
    """Per layer: stratify.stratified_difference of incorrect - correct of ln(rank) and probability, every
    layer on the same resamples, clustered by question id."""
    columns: dict[tuple[str, str], list[float]] = {}
    for name in names:
        cells = [q.layers[name] for q in questions]
        columns[name, "log_rank"] = [float(np.log(c.rank)) if c.rank is not None else np.nan for c in cells]
        columns[name, "prob"] = [c.prob if c.prob is not None else np.nan for c in cells]
    res = stratified_differences(columns, [q.correct for q in questions], strata, n_boot=n_resamples, seed=seed,
                                 clusters=_cluster_keys(questions), by=by)
    return {name: LensDifferences(log_rank=res[name, "log_rank"], prob=res[name, "prob"]) for name in names}
