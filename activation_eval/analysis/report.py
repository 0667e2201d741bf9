"""One self-contained HTML report of a run: summary, probe, logit lens, PCA, per-question table.

Self-contained: figures are inline base64 PNGs, the small sort/filter script and the styles are
inline, and a Content-Security-Policy meta tag forbids the page any network access. Every text
from the run (questions, answers, model output) is escaped with html.escape; the script only
shows, hides and reorders rows that are already in the page, and reads its initial filter from
the URL fragment (#q=paris&correct=false&category=geography&sort=3: filter, then sort by the 4th
column), so a filtered view can be shared.

A section that cannot be computed (a probe on a run with one class, a logit lens whose model
weights are not on this machine) says why in its place; the rest of the report is still written.

Public names:
    build_report(run_dir, output=None, layers=None, color_by="correct", probe=True, lens=True,
                 progress=True, model=None, tokenizer=None, stratify_by="category") -> path of the HTML file
    accuracy_table(rows) -> dict        overall and per-category accuracy (and acc_norm) with the summary's
                                        Wilson 95% intervals and small-n flags

Example:
    >>> build_report("results/run1", "reports/run1.html")
    'reports/run1.html'
"""
import base64
import html
import json
import os
import tempfile

from ..accuracy import SMALL_N_NOTE, accuracy_stats
from ..store.atomic import write_text_atomic
from ..store.run_folder import read_run_config, read_summary
from ..store.run_reader import RunReader
from .arrays import run_layers
from .plots import default_layer, level_label, plot_logit_lens, plot_pca, plot_position_auroc, plot_probe, plot_transfer

esc = html.escape   # quote=True: safe in text and in attribute values


def accuracy_table(rows):
    """{"overall": {...}, "per_category": {name: {...}}}; each {n, correct, accuracy, ci, small_n} with the
    95% interval of summary.json (accuracy.accuracy_stats: Wilson, clustered by question when a
    question has several answers), over the rows graded True / False (ungraded rows are not counted);
    small_n: fewer than accuracy.SMALL_N questions. Rows scored by log-likelihood add "norm": the same
    figures for acc_norm (their correct_norm)."""
    def stats(rs, key):
        graded = [r for r in rs if isinstance(r.get(key), bool)]
        ids = [r["id"] if r.get("id") is not None else ("row", i) for i, r in enumerate(graded)]
        s = accuracy_stats([r[key] for r in graded], questions=ids)
        return {"n": s["n"], "correct": s["correct"], "accuracy": s["accuracy"],
                "ci": tuple(s["ci95"]) if s["ci95"] else (None, None), "small_n": s["small_n"],
                **({"questions": s["questions"]} if "questions" in s else {})}

    def cell(rs):
        out = stats(rs, "correct")
        if any(isinstance(r.get("correct_norm"), bool) for r in rs):
            out["norm"] = stats(rs, "correct_norm")
        return out
    cats = sorted({str(r.get("category") or "uncategorized") for r in rows})
    return {"overall": cell(rows),
            "per_category": {c: cell([r for r in rows if str(r.get("category") or "uncategorized") == c])
                             for c in cats}}


def _read_json(read, run_dir):
    """read_run_config / read_summary of the run, or {} when it is missing or unreadable."""
    try:
        return read(run_dir)
    except (OSError, ValueError):
        return {}


def _png(plot, *args, **kwargs):
    """Run a plots.py function into a temp file; -> an <img> with the PNG inline (base64)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = plot(*args, os.path.join(tmp, "figure.png"), **kwargs)
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
    return f'<img alt="figure" src="data:image/png;base64,{data}">'


def _pct(value, ci):
    if value is None:
        return "-"
    return f"{value:.1%} [{ci[0]:.1%}, {ci[1]:.1%}]" if ci and ci[0] is not None else f"{value:.1%}"


def _num(value, ci=None, fmt="{:.3f}"):
    if value is None:
        return "-"
    text = fmt.format(value)
    return text + (f" [{fmt.format(ci[0])}, {fmt.format(ci[1])}]" if ci and ci[0] is not None else "")


def _table(headers, rows, cls=""):
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _failed(what, exc):
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return f'<p class="note">{esc(what)} not available: {esc(msg)}</p>'


# ----------------------------------------------------------------------------- sections

def _summary_section(run_dir, rows):
    config, summary = _read_json(read_run_config, run_dir), _read_json(read_summary, run_dir)
    acc = accuracy_table(rows)
    o = acc["overall"]
    settings = [[k, json.dumps(v) if not isinstance(v, str) else v] for k, v in config.items()]
    for key in ("wall_time_s", "questions_per_second", "processes", "batch_size"):
        if summary.get(key) is not None:
            settings.append([key, summary[key]])
    norm = "norm" in o
    cats = [[c, f'{v["n"]}{"*" if v["small_n"] else ""}', v["correct"], _pct(v["accuracy"], v["ci"])]
            + ([_pct(v["norm"]["accuracy"], v["norm"]["ci"]) if "norm" in v else "-"] if norm else [])
            for c, v in acc["per_category"].items()]
    small = any(v["small_n"] for v in acc["per_category"].values())
    return (f"<h2>Run</h2><p><b>model</b> {esc(str(config.get('model') or summary.get('model') or '?'))}"
            f" &nbsp; <b>benchmark</b> {esc(str(summary.get('benchmark') or config.get('benchmark') or '?'))}</p>"
            f'<p class="big">accuracy {esc(_pct(o["accuracy"], o["ci"]))} &nbsp; '
            f'({o["correct"]}/{o["n"]} correct; 95% Wilson interval'
            + (f', clustered by question: {o["questions"]} questions' if "questions" in o else "") + ')'
            + (f' &nbsp; acc_norm {esc(_pct(o["norm"]["accuracy"], o["norm"]["ci"]))}' if norm else "") + '</p>'
            + _table(["category", "n", "correct", "accuracy [95% Wilson CI]"]
                     + (["acc_norm [95% Wilson CI]"] if norm else []), cats)
            + (f'<p class="note">{esc(SMALL_N_NOTE)}</p>' if small else "")
            + "<details><summary>settings</summary>" + _table(["setting", "value"], settings) + "</details>")


WARN_STYLE = "background:#fff3cd;border-left:5px solid #c0392b;padding:.4em .8em;margin:.6em 0"


def _levels(res):
    """(label of the plain intervals, label of the selectivity's adjusted interval) at their real levels."""
    boot = res.get("bootstrap") if isinstance(res.get("bootstrap"), dict) else {}
    plain = level_label(boot.get("level", 0.95))
    adjusted = boot.get("adjusted_level")
    n_layers = res.get("layers_tested") or len(res.get("layers") or {})
    adj = (f"{level_label(adjusted)} CI, Bonferroni over {n_layers} layers" if adjusted is not None
           else "CI, level not recorded")
    return plain, adj


def _side(res, name):
    ctrl = (res.get("controls") or {}).get(name)
    side = ctrl.get("side") if isinstance(ctrl, dict) else None
    return f"{name} ({side} side)" if side else str(name)


def _probe_rows(res):
    """Per layer, whichever of the probe's figures are present (issue 21's, issue 14's or the old format),
    each interval headed by its real level."""
    layers = res.get("layers") or {}
    plain, adjusted = _levels(res)
    best = res.get("best_control")
    # (value key, interval key, header, format); the unadjusted selectivity column only where the result has it
    columns = [("auroc", "auroc_ci", f"auroc [{plain} CI]", "{:.3f}"),
               ("accuracy", "accuracy_ci", f"accuracy [{plain} CI]", "{:.3f}"),
               ("selectivity", "selectivity_ci",
                f"selectivity{f' vs {best}' if best else ''} [{adjusted}]", "{:+.3f}"),
               ("selectivity", "selectivity_ci_unadjusted", f"selectivity [{plain} CI, unadjusted]", "{:+.3f}"),
               ("control_task_auroc", "control_task_auroc_ci",
                f"control task AUROC [{plain} CI] (labels shuffled within category)", "{:.3f}"),
               ("hl_selectivity", None, "H&L selectivity = AUROC - control task (no interval)", "{:+.3f}")]
    values = [v for v in layers.values() if isinstance(v, dict)]

    def has(key):
        return any(v.get(key) is not None for v in values)
    present = [c for c in columns if has(c[0]) and (c[1] != "selectivity_ci_unadjusted" or has(c[1]))]
    # an interval the result does not have is not announced in the header
    headers = ["layer"] + [h if ci is None or has(ci) else key for key, ci, h, _ in present]
    legacy = "std" in (values[0] if values else {})
    if legacy:
        headers.append("+- std over folds")
    rows = []
    for name, v in layers.items():
        v = v if isinstance(v, dict) else {}
        row = [name + (" <- verdict" if name == res.get("verdict") else "")] + [_num(v.get(key), v.get(ci) if ci else None, fmt)
                                                  for key, ci, _, fmt in present]
        rows.append(row + ([_num(v.get("std"))] if legacy else []))
    return headers, rows


def _probe_section(run_dir, layers):
    from ..store.run_reader import read_run_rows
    from .probe import probe_run
    try:
        # transfer across categories when the run has several (the field asks whether a probe generalises)
        cats = [r.get("category") for r in read_run_rows(run_dir)]
        several = None not in cats and len(set(map(str, cats))) > 1
        res = probe_run(run_dir, transfer="category" if several else None, **({"layers": layers} if layers else {}))
        return _probe_html(res)
    except Exception as exc:  # noqa: BLE001 - the report still shows everything else
        return "<h2>Probe</h2>" + _failed("The probe", exc)


def _figure_or_note(what, plot, res, **kwargs):
    try:
        return _png(plot, res, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a figure that cannot be drawn does not cost the tables
        return _failed(what, exc)


def _probe_html(res):
    """The probe's warnings, verdict, plot (plots.plot_probe), per-layer table, controls, operating
    points, probe families and CV seeds, positions and transfer, as far as the result has them."""
    target = res.get("target")
    question = "a correct answer" if target in (None, "correct") else f"{target!r}"
    parts = [f"<h2>Probe: does a layer predict {esc(question)}?</h2>", _probe_warnings(res), _probe_verdict(res),
             _probe_setup(res)]
    if isinstance(res.get("layers"), dict) and res["layers"]:
        parts.append(_figure_or_note("The probe plot", plot_probe, res, positions=False))
        headers, rows = _probe_rows(res)
        parts.append("<h3>Per layer</h3>" + _table(headers, rows, "probe"))
    parts += [_probe_controls(res), _operating_points(res), _families_and_seeds(res), _positions(res),
              _transfer(res)]
    if res.get("majority_baseline") is not None:
        parts.append(f"<p>majority-class baseline: {res['majority_baseline']:.3f}</p>")
    notes = [n for n in res.get("notes") or [] if n]
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{esc(str(n))}</li>" for n in notes) + "</ul>")
    return "".join(parts)


def _probe_warnings(res):
    warnings = [w for w in res.get("warnings") or [] if w]
    if not warnings:
        return ""
    return (f'<div class="warnings" style="{WARN_STYLE}"><b>Warnings: read before the verdict</b><ul>'
            + "".join(f"<li>{esc(str(w))}</li>" for w in warnings) + "</ul></div>")


def _control_auroc(res, name):
    ctrl = (res.get("controls") or {}).get(name)
    return f" (AUROC {_num(ctrl.get('auroc'), ctrl.get('auroc_ci'))})" if isinstance(ctrl, dict) else ""


def _probe_verdict(res):
    """The verdict line (as the probe wrote it), the best layer, and the best control of each side."""
    parts = []
    if res.get("verdict") is not None:
        verdict = res["verdict"] if isinstance(res["verdict"], str) else json.dumps(res["verdict"])
        why = ""
        layer = (res.get("layers") or {}).get(verdict)
        if isinstance(layer, dict) and layer.get("selectivity") is not None:
            _, adjusted = _levels(res)
            why = (f" &nbsp; selectivity {esc(_num(layer['selectivity'], layer.get('selectivity_ci'), '{:+.3f}'))} "
                   f"[{esc(adjusted)}] over the best control: the first layer whose interval is above 0")
        parts.append(f'<p class="verdict"><b>verdict</b>: {esc(verdict)}{why}</p>')
    if res.get("best_layer") is not None:
        parts.append(f"<p><b>best layer</b>: {esc(str(res['best_layer']))}</p>")
    best = [(label, res.get(key)) for key, label in (("best_control", "best control (the verdict's baseline)"),
                                                     ("best_input_control", "best input-side control"),
                                                     ("best_output_control", "best output-side control"))
            if key in res]
    if best:
        parts.append("<p>" + " &nbsp;|&nbsp; ".join(
            f"<b>{esc(label)}</b>: " + (esc(_side(res, name) + _control_auroc(res, name)) if name else "none")
            for label, name in best) + "</p>")
    return "".join(parts)


def _probe_setup(res):
    """One line each: the questions, the position read and the probe family, the folds, the intervals."""
    lines = []
    if res.get("n") is not None:
        counts = res.get("class_counts") or {}
        clusters = res.get("clusters")
        lines.append(f"{res['n']} questions" + (f" ({', '.join(f'{k}: {v}' for k, v in counts.items())})" if counts else "")
                     + (f"; clustered: {clusters.get('rows')} rows in {clusters.get('n_clusters')} clusters by "
                        f"{clusters.get('by')} (resampled as clusters)" if isinstance(clusters, dict) else ""))
    if res.get("position") or res.get("family"):
        lines.append(f"probe family {res.get('family') or '?'} at position {res.get('position') or res.get('reduce') or '?'}"
                     + (f": {res['position_note']}" if res.get("position_note") else ""))
    cv = res.get("cv") if isinstance(res.get("cv"), dict) else {}
    if cv:
        lines.append(f"{cv.get('folds')}-fold {cv.get('method')}, seed {cv.get('seed')}; AUROC pairs: {cv.get('auroc_pairs')}")
    boot = res.get("bootstrap") if isinstance(res.get("bootstrap"), dict) else {}
    if boot:
        plain, adjusted = _levels(res)
        lines.append(f"intervals: {plain} percentile bootstrap over questions ({boot.get('resamples')} resamples, paired "
                     f"across probe and controls); the selectivity's: {adjusted}" + _family_wise(res))
    return "".join(f'<p class="setup">{esc(str(line))}</p>' for line in lines)


def _family_wise(res):
    """The suffix " (all L together: 95%)": the level at which the L adjusted intervals hold together (1 - L * (1 - level))."""
    level = (res.get("bootstrap") or {}).get("adjusted_level")
    n_layers = res.get("layers_tested") or len(res.get("layers") or {})
    if level is None or not n_layers:
        return ""
    return f" (all {n_layers} together: {level_label(1 - n_layers * (1 - level))})"


def _probe_controls(res):
    """The controls table: side (where the results have it), AUROC and accuracy with intervals, the best ones marked."""
    controls = res.get("controls")
    if not isinstance(controls, dict) or not controls:
        return ""
    plain, _ = _levels(res)
    entries = {name: c if isinstance(c, dict) else {"auroc": c} for name, c in controls.items()}
    sided = any(c.get("side") for c in entries.values())
    accuracy = any(c.get("accuracy") is not None for c in entries.values())
    marks = {res.get("best_input_control"): "best input-side", res.get("best_output_control"): "best output-side"}
    rows = []
    for name, c in entries.items():
        best = [m for m in ("best" if name == res.get("best_control") else None, marks.get(name)) if m]
        auroc = _num(c["auroc"], c.get("auroc_ci")) if isinstance(c.get("auroc"), (int, float)) else str(c.get("auroc"))
        rows.append([name + (f" ({', '.join(best)})" if best else "")] + ([c.get("side") or "-"] if sided else [])
                    + [auroc] + ([_num(c.get("accuracy"), c.get("accuracy_ci"))] if accuracy else []))
    headers = (["control"] + (["side (input: the question; output: the model's output)"] if sided else [])
               + [f"AUROC [{plain} CI]"] + ([f"accuracy [{plain} CI]"] if accuracy else []))
    dropped = res.get("dropped_controls") or {}
    return ("<h3>Controls</h3>" + _table(headers, rows, "probe")
            + (f'<p class="setup">left out: {esc("; ".join(f"{k} ({v})" for k, v in dropped.items()))}</p>'
               if dropped else ""))


OPERATING_POINTS = (("auprc", "AUPRC"), ("tpr_at_1pct_fpr", "TPR at 1% FPR"), ("fpr_at_95pct_tpr", "FPR at 95% TPR"),
                    ("brier", "Brier (lower is better)"), ("ece", "ECE (lower is better)"))


def _operating_points(res):
    ops = res.get("operating_points")
    if not isinstance(ops, dict) or not isinstance(ops.get("rows"), dict) or not ops["rows"]:
        return ""
    level = level_label(ops.get("level"))
    prevalence = ops.get("prevalence")
    headers = ["scores of"] + [
        f"{label} [{level} CI]" + (f" (chance = prevalence {prevalence:.3f})" if key == "auprc" and prevalence is not None
                                   else "") for key, label in OPERATING_POINTS]
    rows = []
    for name, row in ops["rows"].items():
        row = row if isinstance(row, dict) else {}
        label = (f"control: {_side(res, name[len('control:'):])}" if name.startswith("control:")
                 else name + (" (best layer)" if name == res.get("best_layer") else ""))
        rows.append([label] + [_num(row[key].get("value"), row[key].get("ci")) if isinstance(row.get(key), dict) else "-"
                               for key, _ in OPERATING_POINTS])
    classes = res.get("classes") or []
    positive = f"positive class: {classes[-1]}" if len(classes) == 2 else "binary target"
    return ("<h3>Operating points</h3><p>The out-of-fold probabilities read as a detector "
            f"({esc(str(positive))}); FPR = false-positive rate, TPR = true-positive rate.</p>"
            + _table(headers, rows, "probe"))


def _families_and_seeds(res):
    families = res.get("families") if isinstance(res.get("families"), dict) else {}
    families = {k: v for k, v in families.items() if isinstance(v, dict) and v}
    seeds = res.get("seeds") if isinstance(res.get("seeds"), dict) else {}
    ranges = seeds.get("range") if isinstance(seeds.get("range"), dict) else {}
    if not families and not ranges:
        return ""
    plain, _ = _levels(res)
    names = list(res.get("layers") or {}) or list(dict.fromkeys(n for f in families.values() for n in f))
    names += [n for f in families.values() for n in f if n not in names]
    names += [n for n in ranges if n not in names]
    headers = ["layer"] + [f"{k.replace('_', '-')} AUROC [{plain} CI]" for k in families]
    seed_list = ", ".join(map(str, seeds.get("seeds") or [])) or "?"
    if ranges:
        headers.append(f"AUROC over CV seeds {seed_list}: min - max (spread of the fold split)")
    rows = []
    for name in names:
        row = [name]
        for fam in families.values():
            v = fam.get(name)
            row.append(_num(v.get("auroc"), v.get("auroc_ci")) if isinstance(v, dict) else "-")
        if ranges:
            r = ranges.get(name)
            row.append(f"{r[0]:.3f} - {r[1]:.3f}" if r and r[0] is not None else "-")
        rows.append(row)
    return ("<h3>Probe families and cross-validation seeds</h3>"
            "<details><summary>logistic vs mass-mean probe, and the AUROC's range over fold seeds, per layer</summary>"
            + _table(headers, rows, "probe") + "</details>")


def _positions(res):
    grid = res.get("positions")
    if not isinstance(grid, dict) or not isinstance(grid.get("auroc"), dict) or not grid["auroc"]:
        return ""
    positions = list(grid.get("positions") or dict.fromkeys(p for v in grid["auroc"].values() for p in v))
    cis = grid.get("auroc_ci") if isinstance(grid.get("auroc_ci"), dict) else {}
    level = level_label(grid.get("level"))
    main = res.get("position")
    headers = ["layer"] + [f"{p}{' (main sweep)' if p == main else ''} AUROC [{level} CI]" for p in positions]
    rows = [[name] + [_num((vals or {}).get(p), (cis.get(name) or {}).get(p)) for p in positions]
            for name, vals in grid["auroc"].items()]
    return (f"<h3>By token position</h3><p>The probe at every layer and position, on the {grid.get('n')} questions "
            f"that have every position (chance 0.5).</p>"
            + _figure_or_note("The position heatmap", plot_position_auroc, res)
            + "<details><summary>table</summary>" + _table(headers, rows, "probe") + "</details>")


def _transfer(res):
    t = res.get("transfer")
    if not isinstance(t, dict) or not t.get("groups") or not isinstance(t.get("auroc"), list):
        return ""
    groups, level, counts = list(t["groups"]), level_label(t.get("level")), t.get("n") or {}
    cis = t.get("auroc_ci") or []

    def cell(i, j):
        try:
            value = t["auroc"][i][j]
            ci = cis[i][j] if i < len(cis) and j < len(cis[i]) else None
        except (IndexError, TypeError):
            return "-"
        return _num(value, ci) + (" (out-of-fold within)" if i == j and value is not None else "")
    rows = [[f"{g} (n={counts[g]})" if g in counts else g] + [cell(i, j) for j in range(len(groups))]
            for i, g in enumerate(groups)]
    by = t.get("by") or "group"
    return (f"<h3>Transfer across {esc(str(by))} values</h3><p>At {esc(str(t.get('layer', '?')))}: trained on the "
            f"row's group, tested on the column's; the diagonal is out-of-fold within the group. AUROC [{level} CI]; "
            "chance 0.5.</p>" + _figure_or_note("The transfer heatmap", plot_transfer, res)
            + '<div style="overflow-x:auto">'      # many groups: the matrix scrolls instead of leaving the page
            + _table([f"trained on \\ tested on ({by})"] + groups, rows, "probe") + "</div>")


def _lens_section(run_dir, layers, progress, model, tokenizer, stratify_by="category"):
    from .lens import logit_lens_run
    try:
        res = logit_lens_run(run_dir, layers, model=model, tokenizer=tokenizer, progress=progress,
                             stratify_by=stratify_by)
    except Exception as exc:  # noqa: BLE001 - e.g. the model's weights are not on this machine
        return "<h2>Logit lens</h2>" + _failed("The logit lens", exc)
    rows = [[n] + [_num(v[g]["median_rank"], v[g]["median_rank_ci"], "{:.0f}") for g in ("correct", "incorrect")]
            + [_num(v[g]["mean_prob"], v[g]["mean_prob_ci"], "{:.3g}") for g in ("correct", "incorrect")]
            for n, v in res["layers"].items()]
    return ("<h2>Logit lens</h2>"
            f"<p>{esc(res['position'])}; gold: {esc(res['gold'])}; intervals: {esc(res['interval'])}; "
            f"chance rank {res['chance_rank']:.0f}.</p>" + _png(plot_logit_lens, res)
            + _lens_comparison(res)
            + f"<h3>Per group (pooled over {esc(res['stratified_by'])})</h3>"
            + _table(["layer", "median rank, correct", "median rank, incorrect", "mean prob, correct",
                      "mean prob, incorrect"], rows))


def _lens_comparison(res):
    """The lens's correct-vs-incorrect table (lens.lens_comparison): stratified first, pooled beside."""
    from .lens import lens_comparison
    c = lens_comparison(res)
    return (f"<h3>Correct vs incorrect</h3><p>{esc(c['what'])}; <b>{esc(c['line'])}</b>. {esc(c['method'])}.</p>"
            + (f'<p class="note">{esc(c["warning"])}</p>' if c["warning"] else "")
            + (_table(c["headers"], c["rows"]) if c["rows"] else ""))


def _pca_section(run_dir, layers, color_by, stratify_by="category"):
    try:
        layer = default_layer(layers or run_layers(run_dir))
        return "<h2>PCA</h2>" + _png(plot_pca, run_dir, layer=layer, color_by=color_by, stratify_by=stratify_by)
    except Exception as exc:  # noqa: BLE001
        return "<h2>PCA</h2>" + _failed("The PCA", exc)


def _gold(row):
    answer = row.get("answer")
    return " | ".join(map(str, answer)) if isinstance(answer, (list, tuple)) else str(answer if answer is not None else "")


def _questions_section(rows):
    cats = sorted({str(r.get("category") or "uncategorized") for r in rows})
    body = []
    for i, r in enumerate(rows):
        correct = r.get("correct")
        mark = {True: "yes", False: "no"}.get(correct, "-")
        cat = str(r.get("category") or "uncategorized")
        cells = [str(i + 1), str(r.get("id", "")), cat, str(r.get("question", "")), _gold(r),
                 str(r.get("response", "")), str(r.get("extracted") if r.get("extracted") is not None else ""), mark]
        body.append(f'<tr data-correct="{esc(str(correct).lower())}" data-category="{esc(cat)}">'
                    + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    heads = ["#", "id", "category", "question", "gold", "response", "extracted", "correct"]
    options = "".join(f'<option value="{esc(c)}">{esc(c)}</option>' for c in cats)
    return ("<h2>Questions</h2>"
            '<div class="filters"><input id="q" type="search" placeholder="filter text"> '
            '<select id="correct"><option value="">correct and incorrect</option>'
            '<option value="true">correct</option><option value="false">incorrect</option></select> '
            f'<select id="category"><option value="">every category</option>{options}</select> '
            f'<span id="shown">{len(rows)} of {len(rows)} shown</span> (click a column title to sort)</div>'
            '<table id="questions"><thead><tr>'
            + "".join(f'<th data-col="{i}">{esc(h)}</th>' for i, h in enumerate(heads))
            + "</tr></thead><tbody>" + "".join(body) + "</tbody></table>")


STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:1.8em}
table{border-collapse:collapse;margin:.6em 0;font-size:.85em}
td,th{border:1px solid #ddd;padding:3px 7px;vertical-align:top;text-align:left}
th{background:#f3f3f3}#questions th{cursor:pointer;user-select:none}
#questions td{max-width:28em;white-space:pre-wrap;word-break:break-word}
#questions td:nth-child(-n+3),#questions td:last-child{white-space:nowrap;word-break:normal}
img{max-width:100%;height:auto;display:block;margin:.6em 0}
table.probe td{white-space:nowrap}
.big{font-size:1.2em}.note{color:#a33}.verdict{background:#f5f5dc;padding:.5em}
.filters{margin:.5em 0}.filters input{width:18em}
"""

# sorts and filters the rows already in the page; never builds HTML from data
SCRIPT = r"""
(function(){
  var table=document.getElementById('questions'); if(!table) return;
  var tbody=table.tBodies[0], rows=Array.prototype.slice.call(tbody.rows);
  var q=document.getElementById('q'), cor=document.getElementById('correct'),
      cat=document.getElementById('category'), shown=document.getElementById('shown');
  function apply(){
    var text=q.value.toLowerCase(), n=0;
    rows.forEach(function(r){
      var ok=(!text||r.textContent.toLowerCase().indexOf(text)>=0)
        &&(!cor.value||r.getAttribute('data-correct')===cor.value)
        &&(!cat.value||r.getAttribute('data-category')===cat.value);
      r.hidden=!ok; if(ok) n++;
    });
    shown.textContent=n+' of '+rows.length+' shown';
    document.body.setAttribute('data-shown', n);
  }
  var dir={};
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th){
    th.addEventListener('click',function(){
      var c=+th.getAttribute('data-col'); dir[c]=-(dir[c]||-1);
      rows.sort(function(a,b){
        var x=a.cells[c].textContent, y=b.cells[c].textContent, nx=parseFloat(x), ny=parseFloat(y);
        var d=(!isNaN(nx)&&!isNaN(ny))?nx-ny:x.localeCompare(y);
        return d*dir[c];
      });
      rows.forEach(function(r){tbody.appendChild(r);});
    });
  });
  var hash=new URLSearchParams(location.hash.slice(1));
  if(hash.has('q')) q.value=hash.get('q');
  if(hash.has('correct')) cor.value=hash.get('correct');
  if(hash.has('category')) cat.value=hash.get('category');
  if(hash.has('sort')){var th=table.tHead.rows[0].cells[+hash.get('sort')]; if(th) th.click();}
  [q,cor,cat].forEach(function(e){e.addEventListener('input',apply);e.addEventListener('change',apply);});
  apply();
})();
"""

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'"


def _hashable_id(row):
    """`row`, or a copy whose id (a hostile JSON list or object) is its JSON text: ids are cluster keys."""
    qid = row.get("id")
    if qid is None or isinstance(qid, (str, int, float, bool)):
        return row
    return dict(row, id=json.dumps(qid, sort_keys=True, default=str))


def _unreadable_notes(run_dir):
    """A note for run_config.json / summary.json when one exists but cannot be read (nested too deep,
    not JSON, a FIFO): the summary section shows the rest without it."""
    notes = []
    for read in (read_run_config, read_summary):
        try:
            read(run_dir)
        except FileNotFoundError:
            pass
        except (OSError, ValueError) as exc:
            notes.append(_failed("part of the run's settings and summary", exc))
    return "".join(notes)


def build_report(run_dir, output=None, layers=None, color_by="correct", probe=True, lens=True,
                 progress=True, model=None, tokenizer=None, stratify_by="category"):
    """Write the run's HTML report to `output` (default ./<run name>_report.html); -> its path.

    `probe` / `lens` False leave those sections out; `model` / `tokenizer` go to the logit lens
    (a loaded pair, or `model` a local path; default: the run's model from run_config.json when it
    is local; else the lens section says how to pass one and the rest is written); `stratify_by`: the
    results field whose values stratify the correct-vs-incorrect comparisons. Written atomically.
    """
    run_dir = os.fspath(run_dir)
    reader = RunReader(run_dir)
    rows = reader.rows
    if not rows:
        raise ValueError(f"{run_dir} has no results rows to report")
    name = os.path.basename(os.path.normpath(run_dir))
    output = os.fspath(output) if output else f"{name}_report.html"
    captured = reader.has_records()
    sections = [_summary_section(run_dir, [_hashable_id(row) for row in rows]) + _unreadable_notes(run_dir)]
    if captured:
        if probe:
            sections.append(_probe_section(run_dir, layers))
        if lens:
            sections.append(_lens_section(run_dir, layers, progress, model, tokenizer, stratify_by))
        sections.append(_pca_section(run_dir, layers, color_by, stratify_by))
    else:
        sections.append('<p class="note">This run saved no activations (main.py --capture_activations): '
                        "no probe, logit lens or PCA.</p>")
    sections.append(_questions_section(rows))
    page = ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
            f"<title>{esc(name)} - run report</title><style>{STYLE}</style></head><body>"
            f"<h1>Run report: {esc(name)}</h1><p>{esc(os.path.abspath(run_dir))}</p>"
            + "".join(sections) + f"<script>{SCRIPT}</script></body></html>\n")
    return write_text_atomic(output, page)
