"""Analyse saved activation records: statistics, comparisons, plots and linear probes.

Reads the records written by `storage.save_activations` (`.pkl` or `.safetensors`, full records or
records holding only the seed's keys) and run folders written by `main.py --capture_activations`.
Every CLI mode is a thin layer over one of these functions; all statistics are float64.

Public names:
    tensor_stats(tensor) -> dict                          mean, std, min, max, per-position and total L2 norm
    describe_record(record) -> dict                       metadata + per-layer stats of one record
    analyze_file(path, layers=None) -> dict               describe_record of a file
    analyze_directory(directory, limit=None, layers=None, progress=True) -> dict
                                                          streamed per-layer aggregates + per-file summary
    compare_records(record_a, record_b, layers=None) -> dict
    compare_files(path_a, path_b, layers=None) -> dict    cosine / L2 distance per layer, 3 alignments
    probe_run(run_dir, layers=None, n_splits=5, seed=0) -> dict
                                                          CV logistic-regression probe of "correct" per layer
    plot_layer_norms(layer_stats, path), plot_histograms(record, path),
    plot_position_heatmap(record, path, tokenizer=None), plot_compare(comparison, path),
    plot_pca(run_dir, path, layer=None), plot_probe(probe_result, path)
                                                          each writes one PNG (headless) and returns its path
    default_layer(names) -> str                           the middle decoder layer (PCA default)
    format_table(headers, rows) -> str                    the aligned text tables
    main(argv=None) -> int                                the CLI (0 ok, 2 on any error)

Example:
    >>> stats = analyze_file("results/run1/activations/q0001.safetensors")
    >>> stats["layers"]["layer_3"]["position_norm_mean"]
    >>> cmp = compare_files("a.pkl", "b.pkl"); cmp["layers"]["layer_3"]["last_prompt_token"]["cosine"]
    >>> probe = probe_run("results/run1"); probe["layers"]["layer_3"]["accuracy"]

    $ python analyze_activations.py --file q1.pkl --json
    $ python analyze_activations.py --probe results/run1 --output_dir plots
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

import storage

STAT_KEYS = ("mean", "std", "min", "max", "position_norm_mean", "position_norm_std", "l2_norm")
PROGRESS_MIN_FILES = 20    # show a progress bar from this many files on
MAX_LABELLED_POSITIONS = 48  # heatmap: token labels on the axis up to this many positions
MAX_LISTED_FILES = 50      # --directory text output: per-file rows shown (JSON lists all)


# ----------------------------------------------------------------------------- records

def _as_2d(x):
    """Tensor/array -> float64 numpy array (positions, hidden). A leading batch dim of 1 is dropped."""
    a = x.detach().to(torch.float64).cpu().numpy() if torch.is_tensor(x) else np.asarray(x, dtype=np.float64)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        a = a.reshape(-1, a.shape[-1])
    return a


def _ids(x):
    if x is None:
        return []
    return [int(v) for v in (x.reshape(-1).tolist() if torch.is_tensor(x) else np.asarray(x).reshape(-1).tolist())]


def _meta(record):
    """The fields analysis needs, with the seed-record defaults filled in."""
    acts = record.get("activations") if isinstance(record, dict) else None
    if not isinstance(acts, dict):
        raise ValueError("record has no 'activations' dict")
    input_ids, output_ids = _ids(record.get("input_ids")), _ids(record.get("output_ids"))
    rows = {name: _shape(t)[0] for name, t in acts.items()}
    n_rows = max(rows.values(), default=0)
    positions = record.get("positions_kept")
    positions = list(range(n_rows)) if positions is None else _ids(positions)
    for name, n in rows.items():
        if n != len(positions):
            raise ValueError(f"layer {name!r} has {n} rows but the record keeps {len(positions)} positions")
    n_prompt = record.get("num_prompt_tokens")
    n_prompt = len(input_ids) if n_prompt is None else int(n_prompt)
    n_gen = record.get("num_generated_tokens")
    first = next(iter(acts.values()), None)
    dtype = record.get("dtype") or (str(first.dtype).replace("torch.", "") if first is not None else None)
    return {"positions": positions, "num_prompt_tokens": n_prompt,
            "num_generated_tokens": len(output_ids) if n_gen is None else int(n_gen),
            "tokens": input_ids + output_ids, "layer_names": list(acts), "dtype": dtype}


def _shape(t):
    s = list(t.shape)
    return s[1:] if len(s) == 3 and s[0] == 1 else ([1] + s if len(s) == 1 else s)


def _load(path, layers=None):
    record = storage.load_activations(path, layers=layers)
    if layers is not None:
        missing = [name for name in layers if name not in record.get("activations", {})]
        if missing:
            raise ValueError(f"{path}: no layer(s) {', '.join(missing)} in this file")
    return record


# ----------------------------------------------------------------------------- statistics

def tensor_stats(tensor):
    """Float64 statistics of one activation tensor (positions, hidden).

    std is the population std (ddof=0); position_norm_* are over the L2 norms of the rows;
    l2_norm is the norm of the whole tensor.
    >>> tensor_stats(torch.ones(3, 4))["position_norm_mean"]   # 2.0
    """
    a = _as_2d(tensor)
    out = {"shape": list(a.shape)}
    if a.size == 0:
        return {**out, **{k: None for k in STAT_KEYS}}
    norms = np.linalg.norm(a, axis=1)
    return {**out, "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max()), "position_norm_mean": float(norms.mean()),
            "position_norm_std": float(norms.std()), "l2_norm": float(np.linalg.norm(a))}


def describe_record(record, path=None):
    """Metadata and per-layer statistics of one record (layers in the record's order)."""
    m = _meta(record)
    return {"file": None if path is None else os.fspath(path),
            "model": record.get("model"), "prompt": record.get("prompt"),
            "response": record.get("response"), "timestamp": record.get("timestamp"),
            "num_prompt_tokens": m["num_prompt_tokens"], "num_generated_tokens": m["num_generated_tokens"],
            "num_positions": len(m["positions"]), "dtype": m["dtype"],
            "model_info": record.get("model_info"), "grading": record.get("grading"),
            "layers": {name: tensor_stats(t) for name, t in record["activations"].items()}}


def analyze_file(path, layers=None):
    """`describe_record` of the record stored at `path` (only `layers` when given)."""
    return describe_record(_load(path, layers), path)


class _LayerAccumulator:
    """Streaming float64 stats of one layer over many tensors (Chan et al. merge of mean / M2)."""

    def __init__(self):
        self.files = self.rows = self.count = 0
        self.mean = self.m2 = self.norm_sum = self.norm_sq = 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, tensor):
        a = _as_2d(tensor)
        self.files += 1
        if a.size == 0:
            return
        n, mean = a.size, float(a.mean())
        m2 = float(((a - mean) ** 2).sum())
        delta, total = mean - self.mean, self.count + n
        self.mean += delta * n / total
        self.m2 += m2 + delta * delta * self.count * n / total
        self.count = total
        self.min, self.max = min(self.min, float(a.min())), max(self.max, float(a.max()))
        norms = np.linalg.norm(a, axis=1)
        self.rows += len(norms)
        self.norm_sum += float(norms.sum())
        self.norm_sq += float((norms ** 2).sum())

    def result(self):
        if not self.count:
            return {"files": self.files, "positions": 0, **{k: None for k in STAT_KEYS if k != "l2_norm"}}
        pn_mean = self.norm_sum / self.rows
        return {"files": self.files, "positions": self.rows, "mean": self.mean,
                "std": math.sqrt(max(self.m2 / self.count, 0.0)), "min": self.min, "max": self.max,
                "position_norm_mean": pn_mean,
                "position_norm_std": math.sqrt(max(self.norm_sq / self.rows - pn_mean ** 2, 0.0))}


def _is_run(directory):
    return os.path.isfile(os.path.join(directory, "results.jsonl"))


def analyze_directory(directory, limit=None, layers=None, progress=True):
    """Stream every record of a folder (or run folder): per-layer aggregates + a per-file summary.

    One record is in memory at a time. Files that cannot be read are skipped and listed under
    "errors"; it is an error when none can be read.
    >>> agg = analyze_directory("results/run1", limit=100); agg["layers"]["layer_0"]["std"]
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"no such directory: {directory}")
    files = list(storage.iter_record_files(directory))
    found = len(files)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise ValueError(f"no activation record files (.pkl, .safetensors) in {directory}")
    from tqdm import tqdm
    accs, summaries, errors = {}, [], []
    bar = tqdm(files, desc="records", unit="file", file=sys.stderr,
               disable=not progress or len(files) < PROGRESS_MIN_FILES)
    for path in bar:
        rel = os.path.relpath(path, directory)
        try:
            record = _load(path, layers)
            m = _meta(record)
        except Exception as e:  # noqa: BLE001 - one unreadable file must not end a long scan
            errors.append({"file": rel, "error": " ".join(str(e).split()) or type(e).__name__})
            continue
        for name, t in record["activations"].items():
            accs.setdefault(name, _LayerAccumulator()).add(t)
        grading = record.get("grading") or {}
        summaries.append({"file": rel, "model": record.get("model"), "prompt_tokens": m["num_prompt_tokens"],
                          "generated_tokens": m["num_generated_tokens"], "positions": len(m["positions"]),
                          "layers": len(m["layer_names"]), "correct": grading.get("correct")})
        del record
    if not summaries:
        raise ValueError(f"none of the {len(files)} record files in {directory} could be read; "
                         f"first error: {errors[0]['file']}: {errors[0]['error']}")
    return {"directory": directory, "is_run": _is_run(directory), "files_found": found,
            "files_read": len(summaries), "errors": errors,
            "layers": {name: acc.result() for name, acc in accs.items()}, "files": summaries}


# ----------------------------------------------------------------------------- comparison

def _cos_dist(u, v):
    nu, nv = np.linalg.norm(u), np.linalg.norm(v)
    cos = float(np.dot(u, v) / (nu * nv)) if nu > 0 and nv > 0 else None
    return {"cosine": cos, "l2_distance": float(np.linalg.norm(u - v))}


def compare_records(record_a, record_b, layers=None):
    """Per-layer cosine similarity and L2 distance of two records, three ways:

    last_prompt_token: the row at position num_prompt_tokens-1 of each record;
    prompt_mean: the mean over each record's kept prompt positions;
    common_prefix: positions inside the token prefix both sequences share (as fed: prompt + generated),
    kept in both; cosine and distance are averaged over those positions. "notes" states what was
    compared when the lengths differ.
    """
    ma, mb = _meta(record_a), _meta(record_b)
    names = [n for n in ma["layer_names"] if n in mb["layer_names"] and (layers is None or n in layers)]
    if not names:
        raise ValueError("the two records share no layer names")
    notes = []
    only = sorted(set(ma["layer_names"]) ^ set(mb["layer_names"]))
    if only:
        notes.append(f"layers present in only one record (skipped): {', '.join(only)}")
    pa, pb = ma["num_prompt_tokens"], mb["num_prompt_tokens"]
    last_a = ma["positions"].index(pa - 1) if pa - 1 in ma["positions"] else None
    last_b = mb["positions"].index(pb - 1) if pb - 1 in mb["positions"] else None
    if last_a is None or last_b is None:
        notes.append("last prompt token: not kept in both records, not compared")
    if pa != pb:
        notes.append(f"prompt lengths differ ({pa} vs {pb} tokens): last_prompt_token compares position "
                     f"{pa - 1} of A with position {pb - 1} of B; prompt_mean averages each record's own "
                     f"prompt positions")
    prompt_a = [i for i, p in enumerate(ma["positions"]) if p < pa]
    prompt_b = [i for i, p in enumerate(mb["positions"]) if p < pb]
    if not prompt_a or not prompt_b:
        notes.append("prompt positions: none kept in at least one record, prompt_mean not compared")
    k = 0
    for ta, tb in zip(ma["tokens"], mb["tokens"]):
        if ta != tb:
            break
        k += 1
    index_b = {p: i for i, p in enumerate(mb["positions"])}
    pairs = [(i, index_b[p]) for i, p in enumerate(ma["positions"]) if p < k and p in index_b]
    if k == 0:
        notes.append("the token sequences share no common prefix: common_prefix not compared")
    else:
        notes.append(f"common token prefix: {k} tokens (positions 0-{k - 1}); {len(pairs)} of them kept in "
                     f"both records" + ("" if len(ma["tokens"]) == len(mb["tokens"]) else
                                        f"; sequence lengths {len(ma['tokens'])} vs {len(mb['tokens'])}"))
    out = {}
    for name in names:
        xa, xb = _as_2d(record_a["activations"][name]), _as_2d(record_b["activations"][name])
        if xa.shape[1] != xb.shape[1]:
            raise ValueError(f"layer {name!r}: hidden sizes differ ({xa.shape[1]} vs {xb.shape[1]})")
        res = {"last_prompt_token": None, "prompt_mean": None, "common_prefix": None}
        if last_a is not None and last_b is not None:
            res["last_prompt_token"] = _cos_dist(xa[last_a], xb[last_b])
        if prompt_a and prompt_b:
            res["prompt_mean"] = _cos_dist(xa[prompt_a].mean(0), xb[prompt_b].mean(0))
        if pairs:
            each = [_cos_dist(xa[i], xb[j]) for i, j in pairs]
            coss = [e["cosine"] for e in each if e["cosine"] is not None]
            res["common_prefix"] = {"cosine": float(np.mean(coss)) if coss else None,
                                    "l2_distance": float(np.mean([e["l2_distance"] for e in each])),
                                    "positions": len(pairs)}
        out[name] = res
    return {"num_prompt_tokens": [pa, pb], "num_tokens": [len(ma["tokens"]), len(mb["tokens"])],
            "common_prefix_tokens": k, "notes": notes, "layers": out}


def compare_files(path_a, path_b, layers=None):
    """`compare_records` of two record files."""
    res = compare_records(_load(path_a, layers), _load(path_b, layers), layers)
    return {"files": [os.fspath(path_a), os.fspath(path_b)], **res}


# ----------------------------------------------------------------------------- probe

def _run_layers(run_dir):
    """Layer names (record order) of a run folder, from its first record."""
    files = list(storage.iter_record_files(run_dir))
    if not files:
        raise ValueError(f"no activation record files in run folder {run_dir}")
    return list(storage.load_activations(files[0])["activations"])


def _labels(rows, run_dir):
    bad = [r.get("id") for r in rows if not isinstance(r.get("correct"), bool)]
    if bad:
        raise ValueError(f"{run_dir}: {len(bad)} result row(s) have no boolean 'correct' (e.g. id {bad[0]!r})")
    return np.array([int(r["correct"]) for r in rows])


def probe_run(run_dir, layers=None, n_splits=5, seed=0):
    """Per layer, a cross-validated logistic-regression probe: last-prompt-token activation -> correct.

    StandardScaler + LogisticRegression, StratifiedKFold(min(n_splits, smallest class count),
    shuffled with `seed`). Returns accuracy mean/std per layer and the majority-class baseline.
    >>> res = probe_run("results/run1"); res["layers"]["layer_3"]["accuracy"], res["majority_baseline"]
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    run_dir = os.fspath(run_dir)
    if not os.path.isdir(run_dir) or not _is_run(run_dir):
        raise FileNotFoundError(f"not a run folder (no results.jsonl): {run_dir}")
    names = list(layers) if layers else _run_layers(run_dir)
    out, y = {}, None
    for name in names:
        X, rows = storage.load_run_layer(run_dir, name)
        if y is None:
            y = _labels(rows, run_dir)
            counts = np.bincount(y, minlength=2)
            if len(y) < 4:
                raise ValueError(f"too few examples for a probe: {len(y)} (need at least 4)")
            if counts.min() == 0:
                raise ValueError(f"only one class in {run_dir}: all {len(y)} answers graded "
                                 f"{'correct' if counts[1] else 'incorrect'}; a probe needs both")
            folds = min(n_splits, int(counts.min()))
            if folds < 2:
                raise ValueError(f"too few examples of the minority class ({int(counts.min())}) "
                                 f"for cross-validation; need at least 2")
            cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        scores = cross_val_score(model, np.asarray(X, dtype=np.float64), y, cv=cv)
        out[name] = {"accuracy": float(scores.mean()), "std": float(scores.std()),
                     "folds": [float(s) for s in scores]}
    best = max(out, key=lambda n: out[n]["accuracy"])
    return {"run_dir": run_dir, "examples": int(len(y)), "correct": int(y.sum()), "n_splits": folds,
            "majority_baseline": float(max(y.mean(), 1 - y.mean())), "best_layer": best, "layers": out}


# ----------------------------------------------------------------------------- plots

def _figure(w, h):
    """A headless Agg figure (no pyplot, no global backend switch)."""
    from matplotlib.figure import Figure
    return Figure(figsize=(w, h), layout="constrained")


def _save(fig, path):
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    fig.savefig(path, dpi=110)
    return os.fspath(path)


def _layer_axis(ax, names):
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=60 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                       fontsize=8 if len(names) > 20 else 9)
    ax.set_xlabel("layer")


def plot_layer_norms(layer_stats, path, title="Per-position L2 norm by layer"):
    """Line: mean per-position L2 norm per layer, band = +- one std over positions."""
    names = [n for n in layer_stats if layer_stats[n].get("position_norm_mean") is not None]
    mean = np.array([layer_stats[n]["position_norm_mean"] for n in names])
    std = np.array([layer_stats[n]["position_norm_std"] for n in names])
    fig = _figure(min(13, max(6, 0.3 * len(names) + 3)), 4.8)
    ax = fig.subplots()
    ax.plot(range(len(names)), mean, marker="o", label="mean over positions")
    ax.fill_between(range(len(names)), mean - std, mean + std, alpha=0.25, label="+- 1 std")
    _layer_axis(ax, names)
    ax.set_ylabel("L2 norm of a position's activation")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_histograms(record, path, bins=60):
    """Grid of per-layer histograms of activation values (log count axis)."""
    acts = record["activations"]
    n = len(acts)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = _figure(3.2 * cols, 2.4 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, (name, t) in zip(axes, acts.items()):
        a = _as_2d(t).ravel()
        ax.hist(a, bins=bins, color="tab:blue", log=True)
        ax.set_title(f"{name}  (mean {a.mean():.3g}, std {a.std():.3g})", fontsize=9)
        ax.set_xlabel("activation value", fontsize=8)
        ax.set_ylabel("count (log)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(f"Activation value histograms per layer - {record.get('model') or 'record'}")
    return _save(fig, path)


def _token_labels(tokens, positions, tokenizer=None):
    ids = [tokens[p] if p < len(tokens) else None for p in positions]
    if tokenizer is not None:
        strs = tokenizer.convert_ids_to_tokens([i if i is not None else 0 for i in ids])
        return [f"{p}: {s!s}" if i is not None else str(p) for p, i, s in zip(positions, ids, strs)]
    return [f"{p}: {i}" if i is not None else str(p) for p, i in zip(positions, ids)]


def plot_position_heatmap(record, path, tokenizer=None):
    """Heatmap of per-position L2 norms: layers (rows) x kept positions (columns), log colour scale.

    Axis labels are "position: token id" (or "position: token" with a `tokenizer`) when there are at
    most 48 positions; a dashed line marks where generated tokens start.
    """
    from matplotlib.colors import LogNorm
    m = _meta(record)
    names = m["layer_names"]
    norms = np.stack([np.linalg.norm(_as_2d(record["activations"][n]), axis=1) for n in names])
    pos = m["positions"]
    fig = _figure(min(14, max(7, 0.28 * len(pos) + 3)), max(4.5, 0.3 * len(names) + 2.5))
    ax = fig.subplots()
    positive = norms.size and norms.min() > 0
    im = ax.imshow(norms, aspect="auto", cmap="viridis", interpolation="nearest",
                   norm=LogNorm() if positive else None)
    fig.colorbar(im, ax=ax, label="L2 norm" + (" (log scale)" if positive else ""))
    ax.set_yticks(range(len(names)))
    ax.set_yticklabels(names, fontsize=8 if len(names) > 20 else 9)
    ax.set_ylabel("layer")
    if len(pos) <= MAX_LABELLED_POSITIONS:
        ax.set_xticks(range(len(pos)))
        ax.set_xticklabels(_token_labels(m["tokens"], pos, tokenizer), rotation=90, fontsize=7)
        ax.set_xlabel("position: " + ("token" if tokenizer is not None else "token id"))
    else:
        ticks = ax.get_xticks()
        ticks = [t for t in ticks if 0 <= t < len(pos)]
        ax.set_xticks(ticks)
        ax.set_xticklabels([str(pos[int(t)]) for t in ticks])
        ax.set_xlabel("token position")
    gen = [i for i, p in enumerate(pos) if p >= m["num_prompt_tokens"]]
    if gen:
        ax.axvline(gen[0] - 0.5, color="white", linestyle="--", linewidth=1.5)
    ax.set_title("Per-position activation L2 norm by layer"
                 + ("\n(white dashed line: generated tokens start)" if gen else ""))
    return _save(fig, path)


def plot_compare(comparison, path):
    """Cosine similarity (left) and L2 distance (right) by layer for each comparison kind."""
    names = list(comparison["layers"])
    fig = _figure(min(16, max(10, 0.5 * len(names) + 4)), 4.8)
    ax_cos, ax_dist = fig.subplots(1, 2)
    labels = {"last_prompt_token": "last prompt token", "prompt_mean": "mean over prompt",
              "common_prefix": "common prefix (mean per position)"}
    for key, label in labels.items():
        vals = [comparison["layers"][n][key] for n in names]
        if all(v is None for v in vals):
            continue
        for ax, field in ((ax_cos, "cosine"), (ax_dist, "l2_distance")):
            ax.plot(range(len(names)), [np.nan if v is None or v[field] is None else v[field] for v in vals],
                    marker="o", label=label)
    for ax, ylabel in ((ax_cos, "cosine similarity"), (ax_dist, "L2 distance")):
        _layer_axis(ax, names)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    ax_cos.set_title("Cosine similarity A vs B by layer")
    ax_dist.set_title("L2 distance A vs B by layer")
    return _save(fig, path)


def default_layer(names):
    """The middle decoder layer (layer_{L//2}) when names are layer_i, else the middle name."""
    decoder = [n for n in names if n.startswith("layer_") and n[6:].isdigit()]
    pool = decoder or list(names)
    return pool[len(pool) // 2]


def plot_pca(run_dir, path, layer=None):
    """2-D PCA of the last-prompt-token activations at `layer`, coloured by correct / incorrect."""
    from sklearn.decomposition import PCA
    layer = layer or default_layer(_run_layers(run_dir))
    X, rows = storage.load_run_layer(run_dir, layer)
    y = _labels(rows, run_dir).astype(bool)
    if len(y) < 2:
        raise ValueError(f"PCA needs at least 2 examples; {run_dir} has {len(y)}")
    pca = PCA(n_components=2)
    Z = pca.fit_transform(np.asarray(X, dtype=np.float64))
    fig = _figure(6.5, 5.5)
    ax = fig.subplots()
    for mask, color, label in ((y, "tab:green", "correct"), (~y, "tab:red", "incorrect")):
        ax.scatter(Z[mask, 0], Z[mask, 1], c=color, s=22, alpha=0.75, label=f"{label} ({int(mask.sum())})")
    ev = pca.explained_variance_ratio_ * 100
    ax.set_xlabel(f"PC 1 ({ev[0]:.1f}% of variance)")
    ax.set_ylabel(f"PC 2 ({ev[1]:.1f}% of variance)")
    ax.set_title(f"PCA of last-prompt-token activations at {layer}")
    ax.grid(alpha=0.3)
    ax.legend(title="graded answer")
    return _save(fig, path)


def plot_probe(result, path):
    """Probe accuracy (+- std over folds) by layer beside the majority-class baseline."""
    names = list(result["layers"])
    acc = [result["layers"][n]["accuracy"] for n in names]
    std = [result["layers"][n]["std"] for n in names]
    fig = _figure(min(13, max(6, 0.3 * len(names) + 3)), 4.8)
    ax = fig.subplots()
    ax.errorbar(range(len(names)), acc, yerr=std, marker="o", capsize=3,
                label=f"probe accuracy ({result['n_splits']}-fold CV, +- std)")
    ax.axhline(result["majority_baseline"], color="gray", linestyle="--",
               label=f"majority-class baseline ({result['majority_baseline']:.2f})")
    _layer_axis(ax, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy predicting 'correct'")
    ax.set_title(f"Linear probe on last-prompt-token activations (n={result['examples']})")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    return _save(fig, path)


# ----------------------------------------------------------------------------- output

def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        return "x".join(str(x) for x in v)
    return str(v)


def format_table(headers, rows):
    """Aligned plain-text table (numbers right-aligned)."""
    cells = [[_fmt(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = lambda r: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in cells])


def _short(text, n=160):
    text = "" if text is None else " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if torch.is_tensor(obj) or isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj if obj is None or isinstance(obj, (str, int, bool)) else str(obj)


def _text_file(res):
    head = [f"file:       {res['file']}", f"model:      {res['model']}",
            f"prompt:     {_short(res['prompt'])}", f"response:   {_short(res['response'])}",
            f"tokens:     {res['num_prompt_tokens']} prompt, {res['num_generated_tokens']} generated, "
            f"{res['num_positions']} positions kept",
            f"dtype:      {res['dtype']}", f"layers:     {len(res['layers'])}"]
    if res.get("grading"):
        g = res["grading"]
        head.append(f"grading:    correct={g.get('correct')} answer={g.get('answer')!r} extracted={g.get('extracted')!r}")
    cols = ("shape",) + STAT_KEYS
    rows = [[n] + [s[c] for c in cols] for n, s in res["layers"].items()]
    return "\n".join(head) + "\n\n" + format_table(["layer", *cols], rows)


def _text_directory(res):
    cols = ("files", "positions", "mean", "std", "min", "max", "position_norm_mean", "position_norm_std")
    out = [f"directory:  {res['directory']}" + ("  (run folder)" if res["is_run"] else ""),
           f"records:    {res['files_read']} read of {res['files_found']} found"
           + (f", {len(res['errors'])} unreadable (skipped)" if res["errors"] else ""), "",
           format_table(["layer", *cols], [[n] + [s[c] for c in cols] for n, s in res["layers"].items()]), "",
           format_table(["file", "model", "prompt_tokens", "generated_tokens", "positions", "layers", "correct"],
                        [[f[k] for k in ("file", "model", "prompt_tokens", "generated_tokens", "positions",
                                         "layers", "correct")] for f in res["files"][:MAX_LISTED_FILES]])]
    if len(res["files"]) > MAX_LISTED_FILES:
        out.append(f"... {len(res['files']) - MAX_LISTED_FILES} more files (--json lists all)")
    out += [f"skipped {e['file']}: {e['error']}" for e in res["errors"][:MAX_LISTED_FILES]]
    return "\n".join(out)


def _text_compare(res):
    kinds = ("last_prompt_token", "prompt_mean", "common_prefix")
    rows = [[n] + [v[k][f] if v[k] else None for k in kinds for f in ("cosine", "l2_distance")]
            for n, v in res["layers"].items()]
    heads = ["layer", "cos_last", "dist_last", "cos_prompt_mean", "dist_prompt_mean", "cos_prefix", "dist_prefix"]
    return "\n".join([f"A: {res['files'][0]}", f"B: {res['files'][1]}"] + [f"note: {n}" for n in res["notes"]]
                     + ["", format_table(heads, rows)])


def _text_probe(res):
    rows = [[n, v["accuracy"], v["std"], res["majority_baseline"]] for n, v in res["layers"].items()]
    return "\n".join([f"run:        {res['run_dir']}",
                      f"examples:   {res['examples']} ({res['correct']} correct), {res['n_splits']}-fold CV",
                      f"best layer: {res['best_layer']} ({res['layers'][res['best_layer']]['accuracy']:.3f})", "",
                      format_table(["layer", "accuracy", "+-std", "majority_baseline"], rows)])


# ----------------------------------------------------------------------------- CLI

EPILOG = """examples:
  python analyze_activations.py --file results/run1/activations/q0001.safetensors
  python analyze_activations.py --directory results/run1 --limit 500 --json
  python analyze_activations.py --compare a.pkl b.pkl --plot --output_dir plots
  python analyze_activations.py --directory results/run1 --plot --layer layer_12 --output_dir plots
  python analyze_activations.py --probe results/run1 --output_dir plots
"""


def build_parser():
    p = argparse.ArgumentParser(prog="analyze_activations.py", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Statistics, comparisons, plots and probes on saved activation records.")
    mode = p.add_argument_group("mode (exactly one)").add_mutually_exclusive_group(required=True)
    mode.add_argument("--file", metavar="F", help="one record (.pkl or .safetensors): metadata + per-layer stats")
    mode.add_argument("--directory", metavar="D", help="a folder of records or a run folder: streamed aggregates")
    mode.add_argument("--compare", nargs=2, metavar=("F1", "F2"), help="two records: cosine / L2 distance per layer")
    mode.add_argument("--probe", metavar="RUN_DIR", help="a run folder: per-layer probe of answer correctness")
    sel = p.add_argument_group("selection")
    sel.add_argument("--layers", metavar="NAMES", help="comma-separated layer names to read (default: all)")
    sel.add_argument("--limit", type=int, metavar="N", help="--directory: read at most N records")
    sel.add_argument("--layer", metavar="NAME", help="layer for the run-folder PCA plot (default: middle layer)")
    sel.add_argument("--folds", type=int, default=5, metavar="K", help="--probe: CV folds (default 5)")
    sel.add_argument("--seed", type=int, default=0, metavar="S", help="--probe: fold shuffling seed (default 0)")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    out.add_argument("--plot", action="store_true", help="write PNG plots to --output_dir")
    out.add_argument("--output_dir", metavar="O", default="analysis_plots",
                     help="folder for plots (default: ./analysis_plots); --probe always saves its plot here")
    out.add_argument("--tokenizer", metavar="PATH",
                     help="tokenizer (name or folder) to show token strings on heatmap axes; default token ids")
    out.add_argument("--no_progress", action="store_true", help="no progress bar")
    out.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return p


def _parse_layers(text):
    """The one place --layers is parsed."""
    if text is None:
        return None
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise ValueError("--layers is empty")
    return names


def run(args):
    """Execute parsed CLI args; returns (result dict, text); plot paths go in result["plots"]."""
    layers = _parse_layers(args.layers)
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    od, plots = args.output_dir, []
    if args.file:
        record = _load(args.file, layers)
        res = describe_record(record, args.file)
        text = _text_file(res)
        if args.plot:
            stem = os.path.splitext(os.path.basename(args.file))[0]
            tok = None
            if args.tokenizer:
                from transformers import AutoTokenizer
                tok = AutoTokenizer.from_pretrained(args.tokenizer)
            plots += [plot_layer_norms(res["layers"], os.path.join(od, f"{stem}_norms.png"),
                                       f"Per-position L2 norm by layer - {stem}"),
                      plot_histograms(record, os.path.join(od, f"{stem}_histograms.png")),
                      plot_position_heatmap(record, os.path.join(od, f"{stem}_heatmap.png"), tok)]
    elif args.directory:
        res = analyze_directory(args.directory, args.limit, layers, progress=not args.no_progress)
        text = _text_directory(res)
        if args.plot:
            name = os.path.basename(os.path.normpath(args.directory))
            plots.append(plot_layer_norms(res["layers"], os.path.join(od, "directory_norms.png"),
                                          f"Per-position L2 norm by layer - {name} ({res['files_read']} records)"))
            if res["is_run"]:
                layer = args.layer or default_layer(list(res["layers"]))
                plots.append(plot_pca(args.directory, os.path.join(od, f"pca_{layer}.png"), layer))
    elif args.compare:
        res = compare_files(args.compare[0], args.compare[1], layers)
        text = _text_compare(res)
        if args.plot:
            plots.append(plot_compare(res, os.path.join(od, "compare_cosine.png")))
    else:
        if args.folds < 2:
            raise ValueError("--folds must be at least 2")
        res = probe_run(args.probe, layers, args.folds, args.seed)
        text = _text_probe(res)
        plots.append(plot_probe(res, os.path.join(od, "probe_accuracy.png")))
    if plots:
        res["plots"] = plots
        text += "\n\n" + "\n".join(f"saved plot: {p}" for p in plots)
    return res, text


def main(argv=None):
    """CLI entry point; returns the exit code (0 ok, 2 on any error, with a one-line message)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        res, text = run(args)
    except Exception as e:  # noqa: BLE001 - one clear line for every failure; --debug for the traceback
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    print(json.dumps(_jsonable(res), indent=2) if args.json else text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
