"""Analyse saved activation records: statistics, comparisons, plots and linear probes.

Reads the records written by `storage.save_activations` (`.pkl` or `.safetensors`, full records or
records holding only the seed's keys) and run folders written by `main.py --capture_activations`.
Every CLI mode is a thin layer over one of these functions; all statistics are float64.
Records are turned into float64 arrays and metadata by records.py; plots live in plots.py
(matplotlib is imported only when a plot is drawn).

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
                                                          (defined in plots.py, re-exported here)
    default_layer(names) -> str                           the middle decoder layer (PCA default; plots.py)
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
from plots import (default_layer, plot_compare, plot_histograms, plot_layer_norms,  # noqa: F401
                   plot_pca, plot_position_heatmap, plot_probe)
from records import as_2d, correct_labels, load_record, record_meta, run_layers

STAT_KEYS = ("mean", "std", "min", "max", "position_norm_mean", "position_norm_std", "l2_norm")
PROGRESS_MIN_FILES = 20    # show a progress bar from this many files on
MAX_LISTED_FILES = 50      # --directory text output: per-file rows shown (JSON lists all)


# ----------------------------------------------------------------------------- statistics

def tensor_stats(tensor):
    """Float64 statistics of one activation tensor (positions, hidden).

    std is the population std (ddof=0); position_norm_* are over the L2 norms of the rows;
    l2_norm is the norm of the whole tensor.
    >>> tensor_stats(torch.ones(3, 4))["position_norm_mean"]   # 2.0
    """
    a = as_2d(tensor)
    out = {"shape": list(a.shape)}
    if a.size == 0:
        return {**out, **{k: None for k in STAT_KEYS}}
    norms = np.linalg.norm(a, axis=1)
    return {**out, "mean": float(a.mean()), "std": float(a.std()), "min": float(a.min()),
            "max": float(a.max()), "position_norm_mean": float(norms.mean()),
            "position_norm_std": float(norms.std()), "l2_norm": float(np.linalg.norm(a))}


def describe_record(record, path=None):
    """Metadata and per-layer statistics of one record (layers in the record's order)."""
    m = record_meta(record)
    return {"file": None if path is None else os.fspath(path),
            "model": record.get("model"), "prompt": record.get("prompt"),
            "response": record.get("response"), "timestamp": record.get("timestamp"),
            "num_prompt_tokens": m["num_prompt_tokens"], "num_generated_tokens": m["num_generated_tokens"],
            "num_positions": len(m["positions"]), "dtype": m["dtype"],
            "model_info": record.get("model_info"), "grading": record.get("grading"),
            "layers": {name: tensor_stats(t) for name, t in record["activations"].items()}}


def analyze_file(path, layers=None):
    """`describe_record` of the record stored at `path` (only `layers` when given)."""
    return describe_record(load_record(path, layers), path)


class _LayerAccumulator:
    """Streaming float64 stats of one layer over many tensors (Chan et al. merge of mean / M2)."""

    def __init__(self):
        self.files = self.rows = self.count = 0
        self.mean = self.m2 = self.norm_sum = self.norm_sq = 0.0
        self.min, self.max = math.inf, -math.inf

    def add(self, tensor):
        a = as_2d(tensor)
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
            record = load_record(path, layers)
            m = record_meta(record)
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
    ma, mb = record_meta(record_a), record_meta(record_b)
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
        xa, xb = as_2d(record_a["activations"][name]), as_2d(record_b["activations"][name])
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
    res = compare_records(load_record(path_a, layers), load_record(path_b, layers), layers)
    return {"files": [os.fspath(path_a), os.fspath(path_b)], **res}


# ----------------------------------------------------------------------------- probe



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
    names = list(layers) if layers else run_layers(run_dir)
    out, y = {}, None
    for name in names:
        X, rows = storage.load_run_layer(run_dir, name)
        if y is None:
            y = correct_labels(rows, run_dir)
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
        record = load_record(args.file, layers)
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
