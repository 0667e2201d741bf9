"""The analysis command line: `python analyze_activations.py` and `activation-eval-analyze`.

Every mode is a thin layer over one function of the analysis package: stats.py (--file,
--directory, --compare), probe.py (--probe), lens.py (--logit_lens), report.py (--report),
plots.py (--plot), export_hf.py (--export_hf). Output is an aligned text table or, with --json, the
function's result as JSON. Plot file names start with the source's name (file stem, folder name)
and carry every option that changes the plot when it is not at its default (PLOT_OPTIONS,
plot_name), so neither other runs nor other options overwrite a plot. --quiet = --no_progress.
--logit_lens and --report load the run's model only when it is local (else --model PATH): the
analysis never downloads.

Public names:
    build_parser(prog) -> argparse.ArgumentParser
    run(args) -> (result dict, text)
    main(argv=None, prog) -> int           the CLI (0 ok, 2 on any error, one line)
    console_main()                         the console script
    format_table(headers, rows) -> str     the aligned text tables
    plot_name(args, kind, base) -> str     a plot's file name (PLOT_OPTIONS: the options in it)

Example:
    $ python analyze_activations.py --file q1.pkl --json
    $ python analyze_activations.py --probe results/run1 --output_dir plots
    $ python analyze_activations.py --logit_lens results/run1 --json
    $ python analyze_activations.py --report results/run1 --output run1.html

From Python, main(argv) prints the same and returns the exit code:
    >>> main(["--compare", "runs/r1/activations/geo-001.pkl", "results/run1/activations/geo-001.safetensors",
    ...       "--layers", "layer_3"])                   # one record saved in both formats: the same numbers
    A: runs/r1/activations/geo-001.pkl
    B: results/run1/activations/geo-001.safetensors
    note: common token prefix: 42 tokens (positions 0-41); 41 of them kept in both records
    <BLANKLINE>
    layer    cos_last  dist_last  cos_prompt_mean  dist_prompt_mean  cos_prefix  dist_prefix
    -------  --------  ---------  ---------------  ----------------  ----------  -----------
    layer_3         1          0                1                 0           1            0
    0
    >>> main(["--file", "missing.pkl"])                 # bad input: one line `error: ...` on stderr
    2
"""
import argparse
import contextlib
import hashlib
import json
import math
import os
import re
import sys

import numpy as np
import torch

from ..schema.names import parse_reduce
from ..store.atomic import file_in_the_way
from .arrays import load_record
from .export_hf import export_hf
from .lens import lens_comparison, logit_lens_run
from .plots import (
    default_layer,
    level_label,
    plot_compare,
    plot_histograms,
    plot_layer_norms,
    plot_logit_lens,
    plot_pca,
    plot_position_heatmap,
    plot_probe,
    plot_transfer,
)
from .probe import NO_EVIDENCE, probe_run
from .probe_models import FAMILIES
from .report import build_report
from .stats import STAT_KEYS, analyze_directory, compare_files, describe_record

MAX_LISTED_FILES = 50      # --directory text output: per-file rows shown (JSON lists all)


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

    def line(r):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
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
           f"records:    {res['files_read']} read of {res['files_found']} found, "
           f"{res['skipped']} skipped" + (" (unreadable, listed below)" if res["skipped"] else ""), "",
           format_table(["layer", *cols], [[n] + [s[c] for c in cols] for n, s in res["layers"].items()]), "",
           format_table(["file", "model", "prompt_tokens", "generated_tokens", "positions", "layers", "correct"],
                        [[f[k] for k in ("file", "model", "prompt_tokens", "generated_tokens", "positions",
                                         "layers", "correct")] for f in res["files"][:MAX_LISTED_FILES]])]
    if len(res["files"]) > MAX_LISTED_FILES:
        out.append(f"... {len(res['files']) - MAX_LISTED_FILES} more files (--json lists all)")
    out += [f"skipped {e['file']}: {e['error']}" for e in res["errors"][:MAX_LISTED_FILES]]
    if len(res["errors"]) > MAX_LISTED_FILES:
        out.append(f"... {len(res['errors']) - MAX_LISTED_FILES} more skipped files (--json lists all)")
    return "\n".join(out)


def _text_compare(res):
    kinds = ("last_prompt_token", "prompt_mean", "common_prefix")
    rows = [[n] + [v[k][f] if v[k] else None for k in kinds for f in ("cosine", "l2_distance")]
            for n, v in res["layers"].items()]
    heads = ["layer", "cos_last", "dist_last", "cos_prompt_mean", "dist_prompt_mean", "cos_prefix", "dist_prefix"]
    return "\n".join([f"A: {res['files'][0]}", f"B: {res['files'][1]}"] + [f"note: {n}" for n in res["notes"]]
                     + ["", format_table(heads, rows)])


def _ci(value, ci, fmt="{:.3f}"):
    if value is None:
        return "-"
    if not ci or ci[0] is None:
        return fmt.format(value)
    return f"{fmt.format(value)} [{fmt.format(ci[0])}, {fmt.format(ci[1])}]"


def _side_name(part, name):
    ctrl = (part.get("controls") or {}).get(name)
    side = ctrl.get("side") if isinstance(ctrl, dict) else None
    return f"{name}, {side} side" if side else str(name)


def _probe_tables(part, res):
    """The controls table and the per-layer table of one probe evaluation (a run or a transfer)."""
    best = part["best_control"]
    plain = level_label(res["bootstrap"].get("level", 0.95))
    adjusted = level_label(res["bootstrap"]["adjusted_level"])
    marks = {best: "best", part.get("best_input_control"): "best input", part.get("best_output_control"): "best output"}
    controls = format_table(["control", "side", f"AUROC [{plain} CI]", f"accuracy [{plain} CI]"],
                            [[c + (f" ({marks[c]})" if c in marks else ""), v.get("side") or "-",
                              _ci(v["auroc"], v["auroc_ci"]), _ci(v.get("accuracy"), v.get("accuracy_ci"))]
                             for c, v in part["controls"].items()])
    layers = part["layers"]
    unadjusted = any(v.get("selectivity_ci_unadjusted") for v in layers.values())
    task = any(v.get("control_task_auroc") is not None for v in layers.values())
    rows = [[n + (" <- verdict" if n == part["verdict"] else ""), _ci(v["auroc"], v["auroc_ci"]),
             _ci(v["accuracy"], v["accuracy_ci"]), _ci(v["selectivity"], v["selectivity_ci"], "{:+.3f}")]
            + ([_ci(v["selectivity"], v.get("selectivity_ci_unadjusted"), "{:+.3f}")] if unadjusted else [])
            + ([_ci(v.get("control_task_auroc"), v.get("control_task_auroc_ci")),
                _ci(v.get("hl_selectivity"), None, "{:+.3f}")] if task else [])
            for n, v in layers.items()]
    table = format_table(["layer", f"AUROC [{plain} CI]", f"accuracy [{plain} CI]", f"selectivity [{adjusted} CI, adjusted]"]
                         + ([f"selectivity [{plain} CI]"] if unadjusted else [])
                         + ([f"control task [{plain} CI]", "H&L selectivity"] if task else []), rows)
    key = (f"selectivity = AUROC - best control's ({_side_name(part, best)}: "
           f"{part['controls'][best]['auroc']:.3f}); the {adjusted} interval is Bonferroni-adjusted over "
           f"{len(layers)} layers (the verdict's)" + (f", the {plain} one unadjusted" if unadjusted else "")
           + ("; control task = the probe on labels shuffled within category (Hewitt & Liang), H&L selectivity = "
              "AUROC - control task" if task else ""))
    return controls + "\n\n" + key + "\n" + table


def _verdict_line(part):
    best = part["best_layer"]
    v = part["layers"][best]
    ctrl = part["best_control"]
    c = part["controls"][ctrl]
    baseline = f"best control {_side_name(part, ctrl)}: AUROC {_ci(c['auroc'], c['auroc_ci'])}"
    other = {"input": part.get("best_input_control"), "output": part.get("best_output_control")}
    side = c.get("side") or ""
    other = [f"best {s}-side {n}: {part['controls'][n]['auroc']:.3f}" for s, n in other.items()
             if n and n != ctrl and s != side and n in part["controls"]]
    baseline += "".join(f"; {o}" for o in other)
    if part["verdict"] == NO_EVIDENCE:
        return (f"verdict:    {NO_EVIDENCE}: no layer's adjusted selectivity interval is above 0 "
                f"(best layer {best}: AUROC {v['auroc']:.3f}, selectivity {v['selectivity']:+.3f}; {baseline})")
    w = part["layers"][part["verdict"]]
    return (f"verdict:    {part['verdict']} is the first layer that beats every control: selectivity "
            f"{w['selectivity']:+.3f}, adjusted interval [{w['selectivity_ci'][0]:+.3f}, "
            f"{w['selectivity_ci'][1]:+.3f}] ({baseline}; best layer {best}: AUROC {v['auroc']:.3f})")


def _probe_extras(res):
    """Operating points, probe families and CV seeds, positions and transfer: the tables the result has."""
    out = []
    ops = res.get("operating_points")
    if isinstance(ops, dict) and ops.get("rows"):
        lv, prev = level_label(ops.get("level")), ops.get("prevalence")
        keys = ("auprc", "tpr_at_1pct_fpr", "fpr_at_95pct_tpr", "brier", "ece")
        heads = [f"AUPRC [{lv} CI]" + (f" (chance {prev:.3f})" if prev is not None else ""), f"TPR@1%FPR [{lv} CI]",
                 f"FPR@95%TPR [{lv} CI]", f"Brier [{lv} CI]", f"ECE [{lv} CI]"]
        rows = [[name] + [_ci((r.get(k) or {}).get("value"), (r.get(k) or {}).get("ci")) for k in keys]
                for name, r in ops["rows"].items()]
        out.append("operating points (out-of-fold; chance AUPRC = prevalence of the positive class)\n"
                   + format_table(["scores of"] + heads, rows))
    # the main sweep's family is the per-layer table above: only the other family is listed here
    fams = {k: v for k, v in (res.get("families") or {}).items() if v and k != res.get("family")}
    ranges = (res.get("seeds") or {}).get("range") or {}
    if fams or ranges:
        plain = level_label(res["bootstrap"].get("level", 0.95))
        seeds = ", ".join(map(str, (res.get("seeds") or {}).get("seeds") or []))
        rows = [[n] + [_ci((f.get(n) or {}).get("auroc"), (f.get(n) or {}).get("auroc_ci")) for f in fams.values()]
                + ([f"{ranges[n][0]:.3f} - {ranges[n][1]:.3f}" if ranges.get(n) else "-"] if ranges else [])
                for n in res["layers"]]
        out.append(f"other probe family and cross-validation seeds (the {res.get('family') or 'main'} probe: above)\n"
                   + format_table(
            ["layer"] + [f"{k} AUROC [{plain} CI]" for k in fams] + ([f"AUROC min - max over seeds {seeds}"] if ranges else []),
            rows))
    grid = res.get("positions")
    if isinstance(grid, dict) and grid.get("auroc"):
        lv, cis = level_label(grid.get("level")), grid.get("auroc_ci") or {}
        rows = [[n] + [_ci(a.get(p), (cis.get(n) or {}).get(p)) for p in grid["positions"]] for n, a in grid["auroc"].items()]
        out.append(f"AUROC by token position ({grid.get('n')} questions that have every position; {lv} CI; chance 0.5)\n"
                   + format_table(["layer"] + [p + (" (main)" if p == res.get("position") else "") for p in grid["positions"]],
                                  rows))
    t = res.get("transfer")
    if isinstance(t, dict) and t.get("groups"):
        lv, cis, counts = level_label(t.get("level")), t.get("auroc_ci") or [], t.get("n") or {}
        rows = [[f"{g} (n={counts.get(g, '?')})"]
                + [_ci(a, cis[i][j] if i < len(cis) and cis[i] else None) + (" *" if i == j and a is not None else "")
                   for j, a in enumerate(t["auroc"][i])] for i, g in enumerate(t["groups"])]
        out.append(f"transfer across {t.get('by')} values at {t.get('layer')}: AUROC [{lv} CI], row = trained on, "
                   f"column = tested on, * = out-of-fold within the group; chance 0.5\n"
                   + format_table(["trained on"] + list(t["groups"]), rows))
    return out


def _text_probe(res):
    warnings = res.get("warnings") or []
    counts = ", ".join(f"{k}: {v}" for k, v in res["class_counts"].items())
    b = res["bootstrap"]
    clusters = res.get("clusters")
    family = {"mass_mean": "mass-mean probe (difference of class means)"}.get(res.get("family"),
                                                                             "standardized logistic regression")
    position = res.get("position") or res["reduce"]
    head = [f"run:        {res['run_dir']}",
            f"target:     {res['target']} ({counts}; {res['n']} questions); AUROC {res['auroc_kind']}"
            + (f"; {clusters['rows']} rows in {clusters['n_clusters']} clusters by {clusters['by']}" if clusters else ""),
            f"probe:      {family} on {position} activations"
            + (f" ({res['position_note']})" if res.get("position_note") else "")
            + f"; {res['cv']['folds']}-fold {res['cv']['method']}, seed {res['cv']['seed']}",
            f"intervals:  {level_label(b.get('level', 0.95))} percentile bootstrap over questions ({b['resamples']} "
            f"resamples, paired across probe and controls); selectivity = AUROC - best control's AUROC, interval "
            f"{b['adjustment']} ({level_label(b['adjusted_level'])}), best control taken as the {b['best_control']}"]
    head += [f"note:       {n}" for n in res["notes"]]
    head += [f"left out:   control {k}: {v}" for k, v in (res.get("dropped_controls") or {}).items()]
    out = (["WARNINGS:\n" + "\n".join(f"  ! {w}" for w in warnings)] if warnings else []) + ["\n".join(head),
                                                                                            _probe_tables(res, res)]
    out += _probe_extras(res)
    t = res.get("test_run")
    if t:
        tc = ", ".join(f"{k}: {v}" for k, v in t["class_counts"].items())
        out += [f"transfer:   trained on all of {res['run_dir']}, scored on {t['run_dir']} ({tc}; "
                f"{t['n']} questions)", _probe_tables(t, res), "transfer " + _verdict_line(t)]
    out.append(_verdict_line(res))
    return "\n\n".join(out)


def _text_lens(res):
    groups = ("correct", "incorrect")
    rows = []
    for name, v in res["layers"].items():
        top = {}
        for q in res["questions"]:
            tok, _ = q["layers"][name]["top"][0]
            top[tok] = top.get(tok, 0) + 1
        common = max(top, key=top.get)
        rows.append([name] + [_ci(v[g]["median_rank"], v[g]["median_rank_ci"], "{:.0f}") for g in groups]
                    + [_ci(v[g]["mean_prob"], v[g]["mean_prob_ci"], "{:.3f}") for g in groups]
                    + [f"{common!r} ({top[common]}/{len(res['questions'])})"])
    n = {g: res["layers"][res["layer_names"][0]][g]["n"] for g in groups}
    return "\n".join([
        f"run:        {res['run_dir']}", f"model:      {res['model']}", f"position:   {res['position']}",
        f"gold:       {res['gold']}",
        f"questions:  {res['questions_used']} ({n['correct']} correct, {n['incorrect']} incorrect with a gold "
        f"token); {res['skipped_no_position']} skipped (last prompt token not kept)",
        f"intervals:  {res['interval']}",
        f"chance:     rank {res['chance_rank']:.0f}, probability {res['chance_prob_per_token']:.2g} per token "
        f"(vocab {res['vocab_size']})", "", *_text_lens_comparison(res), "",
        f"per group ({'pooled over ' + res['stratified_by'] if 'stratified_by' in res else 'pooled'}):",
        format_table(["layer", "rank_correct [95% CI]", "rank_incorrect [95% CI]", "prob_correct [95% CI]",
                      "prob_incorrect [95% CI]", "most common top-1"], rows),
        "", "--json lists every question's rank, probability and top-5 tokens per layer"])


def _text_lens_comparison(res):
    """The correct-vs-incorrect lines of the lens (lens.lens_comparison): stratified first, pooled beside."""
    if "stratified" not in res:
        return []
    c = lens_comparison(res)
    table = ["", format_table(c["headers"], c["rows"])] if c["rows"] else []
    return ([f"compare:    {c['what']}; {c['line']}", f"            {c['method']}"] + table
            + ([c["warning"]] if c["warning"] else []))


# ----------------------------------------------------------------------------- CLI

EPILOG = """examples:
  python analyze_activations.py --file results/run1/activations/q0001.safetensors
  python analyze_activations.py --directory results/run1 --limit 500 --json
  python analyze_activations.py --compare a.pkl b.pkl --plot --output_dir plots
  python analyze_activations.py --directory results/run1 --plot --layer layer_12 --output_dir plots
  python analyze_activations.py --probe results/run1 --output_dir plots
  python analyze_activations.py --probe results/run1 --target category --probe_groups category --json
  python analyze_activations.py --probe results/run1 --test_run results/run2
  python analyze_activations.py --directory results/run1 --plot --color_by category
  python analyze_activations.py --logit_lens results/run1 --output_dir plots
  python analyze_activations.py --logit_lens results/run1 --stratify_by grader
  python analyze_activations.py --report results/run1 --output results/run1/report.html
  python analyze_activations.py --export_hf results/run1 exports/run1 --layers layer_5,layer_10
"""


def build_parser(prog="analyze_activations.py"):
    p = argparse.ArgumentParser(prog=prog, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Statistics, comparisons, plots and probes on saved activation records.")
    mode = p.add_argument_group("mode (exactly one)").add_mutually_exclusive_group(required=True)
    mode.add_argument("--file", metavar="F", help="one record (.pkl or .safetensors): metadata + per-layer stats")
    mode.add_argument("--directory", metavar="D", help="a folder of records or a run folder: streamed aggregates")
    mode.add_argument("--compare", nargs=2, metavar=("F1", "F2"), help="two records: cosine / L2 distance per layer")
    mode.add_argument("--probe", metavar="RUN_DIR", help="a run folder: per-layer probe of answer correctness")
    mode.add_argument("--logit_lens", metavar="RUN_DIR",
                      help="a run folder: each layer's prediction of the answer's first token (loads the run's "
                           "model when it is local, else pass --model)")
    mode.add_argument("--report", metavar="RUN_DIR",
                      help="a run folder: one self-contained HTML report (summary, probe, logit lens, PCA, table)")
    mode.add_argument("--export_hf", nargs=2, metavar=("RUN_DIR", "OUT_DIR"),
                      help="a run folder -> a Hugging Face datasets folder (datasets.load_from_disk): id, correct, "
                           "category and one column per layer (--layers, default all), reduced by --reduce")
    sel = p.add_argument_group("selection")
    sel.add_argument("--layers", metavar="NAMES", help="comma-separated layer names to read (default: all)")
    sel.add_argument("--limit", type=int, metavar="N", help="--directory: read at most N records")
    sel.add_argument("--layer", metavar="NAME", help="layer for the run-folder PCA plot (default: middle layer)")
    sel.add_argument("--color_by", metavar="FIELD", default="correct",
                     help="PCA plot: colour points by this results field (default: correct); marker = category")
    sel.add_argument("--stratify_by", default="category", metavar="FIELD",
                     help="compare correct vs incorrect within each value of this results field, the pooled "
                          "comparison beside (default: category): logit lens, report, PCA caption")
    sel.add_argument("--reduce", default="auto", metavar="HOW",
                     help="--probe, --export_hf and the run-folder PCA plot: one vector per question from "
                          "auto (default: answer_first when generated positions were captured, else last_prompt), "
                          "last_prompt, mean_prompt, last, answer_first, answer_mean, answer_last or a token index")
    pr = p.add_argument_group("probe (--probe)")
    pr.add_argument("--target", default="correct", metavar="FIELD",
                    help="boolean or categorical field of the results rows to predict (default: correct)")
    pr.add_argument("--test_run", metavar="RUN_DIR",
                    help="also train on all of --probe's run and report transfer to this run's questions")
    pr.add_argument("--probe_groups", metavar="FIELD",
                    help="hold out whole groups of FIELD (e.g. category) per fold instead of "
                         "stratified folds")
    pr.add_argument("--transfer", metavar="FIELD",
                    help="also train the best layer's probe on each value of FIELD (e.g. category) and test it on "
                         "every other value: an AUROC matrix with intervals (with --test_run: across the two runs)")
    pr.add_argument("--probe_family", default="logistic", choices=FAMILIES,
                    help="probe of the main sweep: logistic regression (default) or mass-mean (difference of the "
                         "class means; binary targets); the other is reported beside it")
    pr.add_argument("--cv_seeds", type=int, default=3, metavar="N",
                    help="cross-validation splits with seeds S, S+1, ... S+N-1, all reported (default 3)")
    pr.add_argument("--folds", type=int, default=5, metavar="K", help="cross-validation folds (default 5)")
    pr.add_argument("--seed", type=int, default=0, metavar="S",
                    help="seed of the fold shuffling and the bootstrap (default 0)")
    pr.add_argument("--bootstrap", type=int, metavar="B",
                    help="bootstrap resamples, at least 1000 (default: enough for ~10 beyond each "
                         "Bonferroni-adjusted tail, 2000-20000)")
    lens = p.add_argument_group("logit lens (--logit_lens, --report)")
    lens.add_argument("--model", metavar="PATH",
                      help="the run's model as a local folder or .gguf file (default: the run's model when it is "
                           "local or the offline default; the analysis never downloads)")
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print machine-readable JSON instead of tables")
    out.add_argument("--plot", action="store_true", help="write PNG plots to --output_dir")
    out.add_argument("--output_dir", metavar="O", default="analysis_plots",
                     help="folder for plots (default: ./analysis_plots); --probe always saves its plot here")
    out.add_argument("--output", metavar="FILE",
                     help="--report: the HTML file to write (default: <output_dir>/<run name>_report.html)")
    out.add_argument("--tokenizer", metavar="PATH",
                     help="tokenizer (name or folder) to show token strings on heatmap axes; default token ids")
    out.add_argument("--no_progress", "--quiet", dest="no_progress", action="store_true", help="no progress bar")
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


def _parse_stratify_by(text):
    """The one place --stratify_by is parsed: a results field name."""
    field = text.strip()
    if not field:
        raise ValueError("--stratify_by is empty: give a results field, e.g. category")
    return field


def _source_name(path):
    """A file's stem or a folder's name, for plot file names ("results/run1/" -> "run1")."""
    return os.path.splitext(os.path.basename(os.path.normpath(os.fspath(path))))[0] or "source"


# The options that change each plot (besides its source): a value other than the default goes into
# the file name (e.g. probe_run1_target-category_groups-category.png), so that runs of the command
# with other options never overwrite one another's plots; the same options give the same name.
PLOT_OPTIONS = {
    "norms": ("layers", "limit"), "histograms": ("layers",), "heatmap": ("layers", "tokenizer"),
    "pca": ("color_by", "reduce", "stratify_by"), "compare": ("layers",),
    "logit_lens": ("layers", "model", "stratify_by"), "report": ("layers", "color_by", "model", "stratify_by"),
    "probe": ("target", "probe_groups", "reduce", "layers", "test_run", "folds", "seed", "bootstrap", "transfer",
              "probe_family", "cv_seeds"),
}
_TAGS = {"probe_groups": "groups", "color_by": "color", "test_run": "test", "tokenizer": "tok", "stratify_by": "strat"}
_PATH_OPTIONS = ("test_run", "model", "tokenizer")


def plot_name(args, kind, base, ext=".png"):
    """`base` + one `_<option>-<value>` per option of PLOT_OPTIONS[kind] not at its default + ext."""
    defaults = build_parser()
    tags = []
    for option in PLOT_OPTIONS[kind]:
        value = getattr(args, option, None)
        if value is None or value == defaults.get_default(option):
            continue
        text = _source_name(value) if option in _PATH_OPTIONS else str(value).replace(",", "+")
        slug = re.sub(r"[^A-Za-z0-9._+-]+", "-", text).strip("-") or "x"
        if len(slug) > 40:          # e.g. a long --layers list: its start and a hash of all of it
            slug = f"{slug[:24]}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
        tags.append(f"_{_TAGS.get(option, option)}-{slug}")
    return base + "".join(tags) + ext


def _check_output_folder(folder, flag):
    blocker = file_in_the_way(folder)
    if blocker:
        where = "is a file" if blocker == os.path.abspath(folder) else f"is inside {blocker}, which is a file"
        raise ValueError(f"{flag} {folder} {where}, not a folder: give a folder path (it is made if missing)")


def run(args):
    """Execute parsed CLI args; returns (result dict, text); plot paths go in result["plots"]."""
    layers = _parse_layers(args.layers)
    stratify_by = _parse_stratify_by(args.stratify_by)
    if args.limit is not None and args.limit < 1:
        raise ValueError("--limit must be at least 1")
    od, plots = args.output_dir, []
    if args.plot or args.probe or args.logit_lens or (args.report and not args.output):
        _check_output_folder(od, "--output_dir")
    if args.report and args.output:
        _check_output_folder(os.path.dirname(os.path.abspath(args.output)), "--output's folder")
    if args.export_hf:
        _check_output_folder(args.export_hf[1], "--export_hf's OUT_DIR")
    if args.file:
        record = load_record(args.file, layers)
        res = describe_record(record, args.file)
        text = _text_file(res)
        if args.plot:
            stem = _source_name(args.file)
            tok = None
            if args.tokenizer:
                from transformers import AutoTokenizer
                tok = AutoTokenizer.from_pretrained(args.tokenizer)
            plots += [plot_layer_norms(res["layers"], os.path.join(od, plot_name(args, "norms", f"{stem}_norms")),
                                       f"Per-position L2 norm by layer - {stem}"),
                      plot_histograms(record, os.path.join(od, plot_name(args, "histograms", f"{stem}_histograms")),
                                      title=f"Activation values per layer - {stem} ({record.get('model') or 'record'})"),
                      plot_position_heatmap(record, os.path.join(od, plot_name(args, "heatmap", f"{stem}_heatmap")),
                                            tok)]
    elif args.directory:
        res = analyze_directory(args.directory, args.limit, layers, progress=not args.no_progress)
        text = _text_directory(res)
        if args.plot:
            name = _source_name(args.directory)
            plots.append(plot_layer_norms(res["layers"], os.path.join(od, plot_name(args, "norms", f"{name}_norms")),
                                          f"Per-position L2 norm by layer - {name} ({res['files_read']} records)"))
            if res["is_run"]:
                layer = args.layer or default_layer(list(res["layers"]))
                plots.append(plot_pca(args.directory, os.path.join(od, plot_name(args, "pca", f"{name}_pca_{layer}")),
                                      layer, color_by=args.color_by, reduce=parse_reduce(args.reduce),
                                      progress=not args.no_progress, stratify_by=stratify_by))
    elif args.export_hf:
        res = export_hf(*args.export_hf, layers=layers, reduce=parse_reduce(args.reduce))
        text = (f"exported {res['rows']} questions ({', '.join(res['columns'])}; reduce={res['reduce']}) "
                f"to {res['path']}\nload: datasets.load_from_disk({res['path']!r})")
    elif args.compare:
        res = compare_files(args.compare[0], args.compare[1], layers)
        text = _text_compare(res)
        if args.plot:
            a, b = (_source_name(f) for f in args.compare)
            plots.append(plot_compare(res, os.path.join(od, plot_name(args, "compare", f"compare_{a}_vs_{b}"))))
    elif args.logit_lens:
        res = logit_lens_run(args.logit_lens, layers, model=args.model, progress=not args.no_progress,
                             stratify_by=stratify_by)
        text = _text_lens(res)
        plots.append(plot_logit_lens(res, os.path.join(od, plot_name(args, "logit_lens",
                                                                     f"{_source_name(args.logit_lens)}_logit_lens"))))
    elif args.report:
        output = args.output or os.path.join(od, plot_name(args, "report", f"{_source_name(args.report)}_report",
                                                           ".html"))
        path = build_report(args.report, output, layers=layers, color_by=args.color_by,
                            progress=not args.no_progress, model=args.model, stratify_by=stratify_by)
        res, text = {"report": path}, f"saved report: {path}"
    else:
        if args.folds < 2:
            raise ValueError("--folds must be at least 2")
        if args.bootstrap is not None and args.bootstrap < 1000:
            raise ValueError(f"--bootstrap must be at least 1000 resamples, got {args.bootstrap}")
        if args.cv_seeds < 1:
            raise ValueError("--cv_seeds must be at least 1")
        res = probe_run(args.probe, layers, args.folds, args.seed, target=args.target,
                        groups=args.probe_groups, test_run=args.test_run, n_bootstrap=args.bootstrap,
                        reduce=parse_reduce(args.reduce), progress=not args.no_progress,
                        family=args.probe_family, cv_seeds=args.cv_seeds, transfer=args.transfer)
        text = _text_probe(res)
        plots.append(plot_probe(res, os.path.join(od, plot_name(args, "probe", f"probe_{res['run_name']}"))))
        if res.get("transfer"):
            plots.append(plot_transfer(res, os.path.join(od, plot_name(args, "probe", f"transfer_{res['run_name']}"))))
    if plots:
        res["plots"] = plots
        text += "\n\n" + "\n".join(f"saved plot: {p}" for p in plots)
    return res, text


@contextlib.contextmanager
def _transformers_bars(show):
    """--no_progress / --quiet also hides transformers' "Loading weights" bar (the lens loads the model)."""
    if show:
        yield
        return
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def main(argv=None, prog="analyze_activations.py"):
    """CLI entry point; returns the exit code (0 ok, 2 on any error, with a one-line message)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        with _transformers_bars(not (args.no_progress and (args.report or args.logit_lens))):   # they load the model
            res, text = run(args)
    except Exception as e:  # noqa: BLE001 - one clear line for every failure; --debug for the traceback
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    try:
        print(json.dumps(_jsonable(res), indent=2) if args.json else text)
        sys.stdout.flush()
    except BrokenPipeError:          # `analyze_activations.py ... | head`: the reader left, end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())    # the interpreter's last flush cannot raise again
    return 0


def console_main():
    """The `activation-eval-analyze` console script."""
    sys.exit(main(prog="activation-eval-analyze"))
