"""Logit lens: what every captured layer would predict as the answer's first token.

Each layer's activation at the last prompt token (position P-1, the one whose output is the first
generated token) goes through the model's final norm and unembedding (lm_head, also when it is
tied to the input embeddings; Gemma-2 style final logit soft-capping applied); `final_norm` is
already normed and goes through the unembedding only. So the lens at `final_norm` (or at the last
layer, through the norm) is the model's own next-token distribution at P-1.

Gold tokens: a question's candidate first tokens are the first token of every accepted answer
(multiple choice: of its letter), tokenised both as-is ("Paris") and with a leading space
(" Paris"), because a word continuing a prompt may be either piece depending on what precedes it;
a variant whose first token is only whitespace is dropped. Rank = the best rank (1 = top) of any
candidate; probability = the summed probability of the distinct candidates.

Correct vs incorrect: the groups' curves (median rank, mean probability) are pooled over the run;
beside them, per layer, the difference incorrect - correct within each category (or the results
field `stratify_by`), weighted and bootstrapped as in analysis/stratify.py, for the mean ln(rank)
(ranks run from 1 to the vocabulary size with a heavy tail: the log makes one rank-30000 question
not outweigh many; the difference is the log of the ratio of geometric-mean ranks, > 0 when the
gold token ranks lower for wrong answers) and the mean probability, and the same difference pooled.
Questions answered several times (--num_samples) are resampled whole, by question id.

Public names:
    logit_lens_run(run_dir, layers=None, model=None, tokenizer=None, top_k=5, progress=True,
                   n_resamples=1000, seed=0, stratify_by="category") -> dict
                                                          per question and per layer; curves by group;
                                                          "stratified": {layer: {"log_rank", "prob"}}
    lens_comparison(result) -> {"what", "line", "method", "headers", "rows", "warning"}
                                                          the correct-vs-incorrect table shown by the CLI
                                                          and the report: stratified first, pooled beside
    project(model, hidden, layer_names) -> logits         final norm (not for final_norm) + unembedding
    gold_first_tokens(tokenizer, row) -> [token id, ...]  the candidate first tokens of the gold answer
    final_norm_module(model)                              the model's final norm (from
                                                          activation_eval.architecture, as capture finds it)
    is_local_model(name)                                  the default model, a model folder or a .gguf file
    ModelNotLocalError                                    the run's model is a hub id: pass --model PATH

The model: the run's when it is local, else the one passed (`model=`, the CLI's --model); the
analysis never downloads.

Example:
    >>> res = logit_lens_run("results/mc", progress=False)      # the run's model (a local folder), or model=...
    >>> rank = res["layers"]["layer_20"]["all"]["median_rank"]      # groups: correct, incorrect, all
    >>> res["chance_rank"], 1 <= rank <= res["vocab_size"]           # a random model: near chance (1 = top)
    (150.5, True)
    >>> cmp = res["stratified"]["layer_20"]["log_rank"]              # incorrect - correct, mean ln(rank)
    >>> res["stratified_by"], sorted(cmp["stratified"]), sorted(cmp["pooled"]), cmp["level"]
    ('category', ['ci', 'value'], ['ci', 'value'], 0.95)
    >>> from activation_eval.analysis.stratify import strata_line
    >>> strata_line(cmp)                                   # this run's questions are all of one category
    "not stratified: one stratum (category 'multiple_choice')"
    >>> top = res["questions"][0]["layers"]["layer_29"]["top"]        # [[token, probability], ...], best first
    >>> len(top), top[0][1] >= top[1][1], all(0 < p < 1 for _, p in top)
    (5, True, True)
"""
import os
import re
import sys

import numpy as np
import torch

from ..architecture import final_norm_module
from ..models import DEFAULT_MODEL, load_model
from ..schema.names import FINAL_NORM
from ..store.run_folder import config_path, read_run_config
from ..store.run_reader import RunReader
from .arrays import as_2d, record_meta
from .intervals import bootstrap_ci
from .stratify import (
    DIFFERENCE,
    WEIGHTS,
    format_estimate,
    reversal_warning,
    row_strata,
    strata_line,
    stratified_differences,
)

GROUPS = ("correct", "incorrect", "all")
_CHOICE_LINE = re.compile(r"^\s*\(?([A-Z])[.)]\s*(.+?)\s*$")


@torch.no_grad()
def project(model, hidden, layer_names):
    """Logits (n, vocab) float32 of hidden (n, hidden_size): rows named "final_norm" skip the norm."""
    head = model.get_output_embeddings()
    if head is None:
        raise ValueError(f"{type(model).__name__} has no output embedding (lm_head) to project through")
    param = next(head.parameters())
    h = torch.as_tensor(hidden).to(device=param.device, dtype=param.dtype)
    needs_norm = torch.tensor([name != FINAL_NORM for name in layer_names], device=h.device)
    if bool(needs_norm.any()):
        normed = final_norm_module(model)(h[needs_norm])
        h = h.clone()
        h[needs_norm] = normed
    logits = head(h)
    cap = getattr(model.config, "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits.float().cpu()


def _accepted(row):
    answer = row.get("answer")
    answers = answer if isinstance(answer, (list, tuple)) else [answer]
    return [str(a).strip() for a in answers if a is not None and str(a).strip()]


def _choice_letters(row, answers):
    """Multiple choice: each accepted answer as its letter (a letter, or a choice's text in the prompt)."""
    listed = {}
    for line in str(row.get("prompt") or "").splitlines():
        m = _CHOICE_LINE.match(line)
        if m:
            listed.setdefault(m.group(2).lower(), m.group(1))
    out = []
    for a in answers:
        if len(a) == 1 and a.isalpha():
            out.append(a.upper())
        elif a.lower() in listed:
            out.append(listed[a.lower()])
    return out


def gold_first_tokens(tokenizer, row):
    """Candidate first-token ids of the row's gold answer (see the module docstring); [] if none."""
    answers = _accepted(row)
    if row.get("grader") == "choice":
        answers = _choice_letters(row, answers)
    ids = []
    for answer in answers:
        for text in (answer, " " + answer):
            enc = tokenizer(text, add_special_tokens=False)["input_ids"]
            if enc and tokenizer.decode(enc[:1]).strip() and enc[0] not in ids:
                ids.append(int(enc[0]))
    return ids


def _check_layers(record, layers, row):
    missing = [name for name in layers if name not in record.get("activations", {})]
    if missing:
        raise ValueError(f"the record of question {row.get('id')!r} has no layer(s) {', '.join(missing)}")


class ModelNotLocalError(ValueError):
    """The run's model is not on this machine as a local folder / .gguf file: the analysis never
    downloads; the message says how to pass one (--model PATH)."""


def is_local_model(name):
    """True for a model the analysis may load without any network call: the offline default model,
    an existing model folder, or an existing .gguf file."""
    name = os.fspath(name)
    return name == DEFAULT_MODEL or os.path.isdir(name) or (name.endswith(".gguf") and os.path.isfile(name))


def _load_run_model(run_dir, model=None):
    """(model, tokenizer) for the lens: `model` (a path or name given with --model) if given, else the
    run's model from run_config.json when it is local (is_local_model); never a download."""
    path = config_path(run_dir)
    try:
        config = read_run_config(run_dir)
    except (OSError, ValueError) as exc:
        if model is None:
            raise ValueError(f"cannot read the run's settings {path}: {exc}; the logit lens needs the "
                             f"run's model name from it (or pass --model PATH)") from exc
        config = {}
    if not isinstance(config, dict):
        config = {}
    dtype = config.get("dtype") if config.get("dtype") in ("float32", "bfloat16", "float16") else "auto"
    if model is not None:
        return load_model(os.fspath(model), dtype=dtype)
    name = config.get("model")
    if not name or not isinstance(name, str):
        raise ModelNotLocalError(f"{path} names no model; the logit lens needs the run's model: pass --model PATH "
                                 f"(a local model folder or .gguf file)")
    if not is_local_model(name):
        raise ModelNotLocalError(
            f"the run's model {name!r} (from {path}) is not a local model folder or .gguf file on this machine, "
            f"and the analysis never downloads: pass --model PATH, that model saved locally (a folder "
            f"written by save_pretrained or downloaded from the hub, or a .gguf file)")
    return load_model(name, dtype=dtype)


def _ranks(logits, candidates):
    """Per row of logits (layers, vocab): the best rank (1 = top) of any candidate token id."""
    cand = logits[:, list(candidates)]                                  # (layers, k)
    return (logits[:, None, :] > cand[:, :, None]).sum(-1).min(-1).values + 1


def _question_lens(model, tokenizer, record, row, names, top_k):
    """Per layer: gold rank / probability, the first generated token's rank, the top-k tokens."""
    meta = record_meta(record)
    target = meta["num_prompt_tokens"] - 1
    if target not in meta["positions"]:
        return None
    at = meta["positions"].index(target)
    hidden = torch.from_numpy(np.stack([as_2d(record["activations"][n])[at] for n in names]))
    logits = project(model, hidden, names)                         # (layers, vocab)
    probs = torch.softmax(logits, dim=-1).double()
    gold = gold_first_tokens(tokenizer, row)
    out_ids = meta["tokens"][meta["num_prompt_tokens"]:]
    top_p, top_i = probs.topk(top_k, dim=-1)
    ranks = _ranks(logits, gold).tolist() if gold else None         # (layers,)
    gold_p = probs[:, gold].sum(-1).tolist() if gold else None
    gen_ranks = _ranks(logits, out_ids[:1]).tolist() if out_ids else None
    pieces = {int(i): tokenizer.decode([int(i)]) for i in top_i.unique().tolist()}
    layers = {}
    for li, name in enumerate(names):
        entry = {"top": [[pieces[i], p] for p, i in zip(top_p[li].tolist(), top_i[li].tolist())]}
        if gold:
            entry["rank"], entry["prob"] = ranks[li], gold_p[li]
        if out_ids:
            entry["generated_rank"] = gen_ranks[li]
        layers[name] = entry
    return {"id": row.get("id"), "category": row.get("category"), "correct": row.get("correct"),
            "gold_token_ids": gold, "gold_tokens": [tokenizer.decode([i]) for i in gold],
            "first_generated_token": tokenizer.decode(out_ids[:1]) if out_ids else None, "layers": layers}


def _group_curves(questions, names, n_resamples, seed):
    """Per layer and group (correct / incorrect / all): n, median rank, mean probability, 95% CIs."""
    members = {"correct": [q for q in questions if q["correct"] is True],
               "incorrect": [q for q in questions if q["correct"] is False], "all": questions}
    out = {}
    for name in names:
        out[name] = {}
        for group, qs in members.items():
            ranked = [q for q in qs if "rank" in q["layers"][name]]
            ranks = np.array([q["layers"][name]["rank"] for q in ranked], dtype=float)
            with_prob = [q for q in qs if "prob" in q["layers"][name]]
            probs = np.array([q["layers"][name]["prob"] for q in with_prob])
            out[name][group] = {       # a question's samples resampled together (clusters = ids)
                "n": int(ranks.size),
                "median_rank": float(np.median(ranks)) if ranks.size else None,
                "median_rank_ci": bootstrap_ci(ranks, np.median, n_resamples, seed=seed,
                                               clusters=_cluster_keys(ranked)),
                "mean_prob": float(probs.mean()) if probs.size else None,
                "mean_prob_ci": bootstrap_ci(probs, np.mean, n_resamples, seed=seed,
                                             clusters=_cluster_keys(with_prob))}
    return out


def _cluster_keys(questions):
    """The question id of each row (a row without one is its own cluster)."""
    return [("row", i) if q["id"] is None else q["id"] for i, q in enumerate(questions)]


def _stratified_curves(questions, names, strata, n_resamples, seed, by):
    """Per layer: {"log_rank", "prob"}: stratify.stratified_difference of incorrect - correct, every
    layer on the same resamples, clustered by question id."""
    columns = {}
    for name in names:
        cells = [q["layers"][name] for q in questions]
        columns[name, "log_rank"] = [np.log(c["rank"]) if "rank" in c else np.nan for c in cells]
        columns[name, "prob"] = [c.get("prob", np.nan) for c in cells]
    ids = _cluster_keys(questions)
    res = stratified_differences(columns, [q["correct"] for q in questions], strata, n_boot=n_resamples,
                                 seed=seed, clusters=ids, by=by)
    return {name: {"log_rank": res[name, "log_rank"], "prob": res[name, "prob"]} for name in names}


COMPARED = (("log_rank", "ln rank"), ("prob", "prob"))
REVERSED = "(!)"      # marks a pooled difference whose sign is opposite to the stratified one


def lens_comparison(result):
    """The correct-vs-incorrect table of a logit_lens_run result: per layer the stratified difference
    (incorrect - correct) of the mean ln(rank) and of the mean probability with its interval, the
    pooled one beside; one stratum: the pooled one alone, headed "not stratified"; no rows without
    both correct and incorrect questions. "what" says what is compared, "line" how it was stratified
    (stratify.strata_line), "warning" names the layers whose pooled sign is reversed (or is None)."""
    strat = result["stratified"]
    first = strat[result["layer_names"][0]]["log_rank"]
    level = f"{first['level'] * 100:g}%"
    one = first["strata_used"] + len(first["strata_skipped"]) <= 1
    parts = (("pooled", "not stratified"),) if one else (("stratified", "stratified"), ("pooled", "pooled"))
    return {"what": ("incorrect - correct per layer: mean ln(gold rank) (> 0: the gold token ranks lower when the "
                     "answer is wrong) and mean gold probability"),
            "line": strata_line(first),
            "method": result["stratified_method"],
            "headers": ["layer"] + [f"{label}: {title} [{level} CI]" for _, label in COMPARED for _, title in parts],
            "rows": [[name] + [_cell(strat[name][k], part) for k, _ in COMPARED for part, _ in parts]
                     for name in strat if strat[name]["log_rank"]["pooled"]["value"] is not None],
            "warning": reversal_warning({f"{name} ({label})": strat[name][k] for name in strat
                                         for k, label in COMPARED}, mark=REVERSED)}


def _cell(comparison, part):
    """A table cell: the estimate with its interval; a pooled one whose sign is reversed marked."""
    text = format_estimate(comparison[part])
    return text + f" {REVERSED}" if part == "pooled" and comparison["sign_reversal"] else text


def logit_lens_run(run_dir, layers=None, model=None, tokenizer=None, top_k=5, progress=True,
                   n_resamples=1000, seed=0, stratify_by="category"):
    """The logit lens over every captured question of a run (see the module docstring).

    The model is the run's (run_config.json's "model", loaded with models.load_model) when it is
    local (is_local_model: the offline default, a model folder, a .gguf file; a hub id raises
    ModelNotLocalError before any loading: the analysis never downloads), unless `model` is given: a
    path or name to load (the CLI's --model), or a loaded model together with its `tokenizer`.
    Questions whose record lacks the last prompt token are counted in "skipped_no_position"; those
    without a gold token (no accepted answer) get top-k tokens but no rank. Intervals: 95% percentile bootstrap over questions.
    `stratify_by`: the results field whose values are the strata of the correct-vs-incorrect
    differences (a field no row has is a ValueError, raised before the model is loaded).
    >>> res = logit_lens_run("results/run1", layers=["layer_29"], progress=False)
    >>> res["layers"]["layer_29"]["all"]["median_rank"]
    133.0
    """
    from tqdm import tqdm
    run_dir = os.fspath(run_dir)
    reader = RunReader(run_dir)
    pairs = reader.located()
    if not pairs:
        raise ValueError(f"no question of {run_dir} has saved activations; run main.py with --capture_activations")
    row_strata([row for row, _ in pairs], stratify_by)                   # a missing field: fail before loading
    if isinstance(model, (str, os.PathLike)):           # --model PATH
        model, tokenizer = _load_run_model(run_dir, model)
    elif model is None or tokenizer is None:
        model, tokenizer = _load_run_model(run_dir)
    questions, used_rows, names, skipped = [], [], None, 0
    for row, record in tqdm(reader.records(layers, pairs=pairs), total=len(pairs), desc="logit lens", unit="q",
                            file=sys.stderr, disable=not progress):
        if layers is not None:
            _check_layers(record, layers, row)
        if names is None:
            names = list(record["activations"])
        q = _question_lens(model, tokenizer, record, row, names, top_k)
        if q is None:
            skipped += 1
        else:
            questions.append(q)
            used_rows.append(row)
        del record
    if not questions:
        raise ValueError(f"no record of {run_dir} keeps the last prompt token; the logit lens needs it "
                         f"(capture with --positions all, prompt or last_prompt)")
    vocab = int(model.get_output_embeddings().weight.shape[0])
    return {"run_dir": run_dir, "model": getattr(model, "name_or_path_for_records", None) or model.name_or_path,
            "position": "last prompt token (P-1), which predicts the first answer token",
            "gold": "first token of each accepted answer (choice: its letter), with and without a leading "
                    "space; rank = best candidate's, prob = summed candidates'",
            "interval": f"95% percentile bootstrap over questions ({n_resamples} resamples)",
            "questions_used": len(questions), "skipped_no_position": skipped,
            "without_gold": sum(not q["gold_token_ids"] for q in questions),
            "vocab_size": vocab, "chance_rank": (vocab + 1) / 2, "chance_prob_per_token": 1 / vocab,
            "layer_names": names, "layers": _group_curves(questions, names, n_resamples, seed),
            "stratified_by": stratify_by,
            "stratified_method": f"{DIFFERENCE} within each {stratify_by} value; weights {WEIGHTS}; 95% percentile "
                                 f"bootstrap ({n_resamples} resamples) of questions within each {stratify_by} value, "
                                 f"a question's samples together",
            "stratified": _stratified_curves(questions, names, row_strata(used_rows, stratify_by), n_resamples, seed,
                                             stratify_by),
            "questions": questions}
