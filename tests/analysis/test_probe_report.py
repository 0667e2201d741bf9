"""Issue 21 (presentation): the probe's new result keys drawn and written out - plots (position
heatmap, transfer matrix, controls by side, intervals at their real level), the report's probe
section and the --probe text. A fixture in the --json shape of a ProbeResult (docs/formats.md) with
known numbers, read with jsonio.from_json; every figure is checked against those numbers, and a result
without its optional parts (positions, transfer, operating points) renders without them."""
import dataclasses
import html
import math
import re
from html.parser import HTMLParser

import matplotlib
import numpy as np
import pytest

from activation_eval.analysis.jsonio import from_json, to_json
from activation_eval.analysis.probe import plots
from activation_eval.analysis.probe.html import probe_html
from activation_eval.analysis.probe.text import probe_text
from activation_eval.analysis.text import level_label
from activation_eval.schema.probe import ProbeResult

LAYERS = ["embeddings"] + [f"layer_{i}" for i in range(30)]          # 31 layers: Bonferroni level 99.84%
POSITIONS = ["last_prompt", "answer_first", "answer_mean", "answer_last"]
INPUT = {"majority": 0.5, "category": 0.61, "length": 0.553, "bag_of_words": 0.642, "answer_embedding": 0.58,
         "answer_tokens": 0.57}
OUTPUT = {"answer_logprob_mean": 0.712, "answer_logprob_sum": 0.664, "first_token_entropy": 0.681,
          "p_true": 0.741, "output_confidence": 0.762}
GROUPS = ["geography", "history", "$\\foo{$"]
RAW = {"answer_logprob_mean": 1, "answer_logprob_sum": 1, "first_token_entropy": -1, "p_true": 1}
EMBEDDING = INPUT["answer_embedding"]


def probe_auroc(i):
    """A planted curve: chance at the embeddings, a peak of 0.885 at layer_15, a slight fall after."""
    return round(0.52 + 0.365 * math.exp(-((i - 16) / 9) ** 2), 3)


def position_auroc(i, position):
    """The same curve read at other positions: lower at the last prompt token, highest at the answer's end."""
    shift = {"last_prompt": -0.08, "answer_first": 0.0, "answer_mean": -0.03, "answer_last": 0.02}[position]
    return min(0.99, probe_auroc(i) + shift)


def _ci(v, half, lo=0.0, hi=1.0):
    return [round(max(lo, v - half), 3), round(min(hi, v + half), 3)]


def probe_json():
    """A realistic probe_run result as --json writes it (binary target, 400 questions, every part)."""
    best_ctrl = OUTPUT["output_confidence"]
    layers = {}
    for i, name in enumerate(LAYERS):
        a, ct = probe_auroc(i), round(0.5 + 0.004 * (i % 5), 3)
        sel = round(a - best_ctrl, 3)
        layers[name] = {"auroc": a, "auroc_ci": _ci(a, 0.04), "accuracy": round(a - 0.1, 3),
                        "accuracy_ci": _ci(a - 0.1, 0.045), "selectivity": sel,
                        "selectivity_ci": _ci(sel, 0.075, -1), "selectivity_ci_unadjusted": _ci(sel, 0.05, -1),
                        "permutation_auroc": ct, "permutation_auroc_ci": _ci(ct, 0.05),
                        "permutation_selectivity": round(a - ct, 3),
                        "hl_control_auroc": round(ct + 0.01, 3), "hl_control_auroc_ci": _ci(ct + 0.01, 0.05),
                        "hl_selectivity": round(a - ct - 0.01, 3),
                        "embedding_gain": round(a - EMBEDDING, 3), "embedding_gain_ci": _ci(a - EMBEDDING, 0.06, -1)}
    controls = {name: {"auroc": v, "auroc_ci": _ci(v, 0.05), "accuracy": round(v - 0.05, 3),
                       "accuracy_ci": _ci(v - 0.05, 0.05), "side": side, "scoring": "fitted", "orientation": None}
                for side, group in (("input", INPUT), ("output", OUTPUT)) for name, v in group.items()}
    for name in RAW:                                   # single scores: the raw score, no accuracy
        controls[name].update(scoring="raw", orientation=RAW[name], accuracy=None, accuracy_ci=[None, None])
    verdict = next(n for n, v in layers.items() if v["selectivity_ci"][0] > 0)

    def point(v, half, interval="percentile"):
        return {"value": v, "ci": _ci(v, half), "interval": interval}

    def op_row(auprc, tpr, fpr, brier, ece):
        return {"auprc": point(auprc, 0.05), "tpr_at_1pct_fpr": point(tpr, 0.06), "fpr_at_95pct_tpr": point(fpr, 0.08),
                "brier": point(brier, 0.02), "ece": point(ece, 0.03, "basic")}
    return {
        "format_version": 2, "run_dir": "results/run31", "run_name": "run31", "target": "correct", "classes": ["False", "True"],
        "class_counts": {"False": 160, "True": 240}, "n": 400, "reduce": "answer_first",
        "auroc_kind": "binary", "layers_tested": len(LAYERS),
        "cv": {"method": "StratifiedKFold on target x category", "folds": 5, "seed": 0, "groups": None, "strata": None,
               "auroc_pairs": "within each fold (raw single scores: all pairs)", "oof_scoring": "pairs within folds",
               "seeds": [0, 1, 2]},
        "bootstrap": {"resamples": 12400, "seed": 0, "level": 0.95, "adjusted_level": 1 - 0.05 / len(LAYERS),
                      "unit": "question (its samples together)",
                      "adjustment": f"Bonferroni over {len(LAYERS)} layers", "best_control": "maximum (paired)"},
        "notes": ["folds keep the category proportions"],
        "position": "answer_first",
        "position_note": "generated positions captured: first token of the extracted answer, falling back to the "
                         "first generated token",
        "family": "logistic",
        "warnings": ["class 'False' of category 'history' has 7 members (< 10)",
                     "rows are clustered: 4 answers per question (bootstrap over questions)"],
        "clusters": {"by": "id", "n_clusters": 100, "rows": 400},
        "best_control": "output_confidence", "best_input_control": "bag_of_words",
        "best_output_control": "output_confidence",
        "dropped_controls": {"p_true_raw": "no row carries it"},
        "answer_controls": ["answer_embedding", "answer_tokens"], "raw_controls": list(RAW),
        "best_layer": max(layers, key=lambda n: layers[n]["auroc"]), "verdict": verdict,
        "controls": controls, "layers": layers,
        "families": {"logistic": {n: {"auroc": v["auroc"], "auroc_ci": v["auroc_ci"]} for n, v in layers.items()},
                     "mass_mean": {n: {"auroc": round(v["auroc"] - 0.031, 3), "auroc_ci": _ci(v["auroc"] - 0.031, 0.045)}
                                   for n, v in layers.items()}},
        "seeds": {"seeds": [0, 1, 2],
                  "auroc": {n: [v["auroc"], round(v["auroc"] - 0.012, 3), round(v["auroc"] + 0.007, 3)]
                            for n, v in layers.items()},
                  "range": {n: [round(v["auroc"] - 0.012, 3), round(v["auroc"] + 0.007, 3)] for n, v in layers.items()}},
        "operating_points": {"level": 0.95, "prevalence": 0.6, "positive": "True",
                             "rows": {"layer_15": op_row(0.912, 0.183, 0.472, 0.151, 0.042),
                                      "control:output_confidence": op_row(0.834, 0.071, 0.688, 0.205, 0.061),
                                      "control:bag_of_words": op_row(0.721, 0.024, 0.861, 0.231, 0.083)}},
        "error_detection": None,
        "positions": {"positions": POSITIONS, "n": 372, "level": 0.95,
                      "auroc": {n: {p: round(position_auroc(i, p), 3) for p in POSITIONS} for i, n in enumerate(LAYERS)},
                      "auroc_ci": {n: {p: _ci(position_auroc(i, p), 0.05) for p in POSITIONS}
                                   for i, n in enumerate(LAYERS)}},
        "transfer": {"format_version": 3, "by": "category", "layer": "layer_15", "groups": GROUPS, "notes": [],
                     "shared": [[0, 0, 0], [0, 0, 0], [0, 0, 0]], "in_sample": False, "n_values": 3, "merged": 0,
                     "skipped_rows": 0, "shortened": 0, "max_groups": 20, "min_rows": 10, "max_label": 40,
                     "max_tested": 2000, "n_tested": {"geography": 150, "history": 140, "$\\foo{$": 110},
                     "n": {"geography": 150, "history": 140, "$\\foo{$": 110}, "level": 0.95,
                     "auroc": [[0.861, 0.702, 0.553], [0.688, 0.874, None], [0.512, 0.47, 0.803]],
                     "auroc_ci": [[[0.8, 0.91], [0.62, 0.78], [0.45, 0.65]], [[0.6, 0.77], [0.82, 0.92], None],
                                  [[0.42, 0.6], [0.38, 0.56], [0.72, 0.88]]]},
        "test_run": None,
    }


def probe_result():
    """The fixture as the typed result the renderers read."""
    return from_json(ProbeResult, probe_json())


def test_the_fixture_reads_and_writes_back_unchanged():
    assert to_json(probe_result()) == probe_json()


# ----------------------------------------------------------------------------- helpers

class Tables(HTMLParser):
    """Every <table> of a page as (headers, rows of cell texts); and the text of each <h3>."""

    def __init__(self):
        super().__init__()
        self.tables, self.h3, self._cell, self._in_h3 = [], [], None, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append(([], []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append([])
        elif tag in ("td", "th"):
            self._cell = ""
        self._in_h3 = tag == "h3" or self._in_h3
        if tag == "h3":
            self.h3.append("")

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            headers, rows = self.tables[-1]
            (headers if tag == "th" else rows[-1]).append(self._cell)
            self._cell = None
        if tag == "h3":
            self._in_h3 = False

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data
        if self._in_h3:
            self.h3[-1] += data

    def table(self, first_header):
        """(headers, {first cell: row}) of the table whose first header starts with `first_header`."""
        for headers, rows in self.tables:
            if headers and headers[0].startswith(first_header):
                return headers, {r[0]: r for r in rows if r}
        raise AssertionError(f"no table headed {first_header!r}: {[t[0][:1] for t in self.tables]}")


def tables(page):
    parsed = Tables()
    parsed.feed(page)
    return parsed


def ci3(v, ci, sign=""):
    """A value and its interval as the report writes them (3 decimals), from the fixture's numbers."""
    f = "{:" + sign + ".3f}"
    return f"{f.format(v)} [{f.format(ci[0])}, {f.format(ci[1])}]"


def texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


def is_png(path, min_bytes=20_000):
    with open(path, "rb") as f:
        data = f.read()
    return data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > min_bytes


# ----------------------------------------------------------------------------- plots

def test_level_label_writes_the_real_level():
    assert level_label(0.95) == "95%" and level_label(1 - 0.05 / 31) == "99.84%"
    assert level_label(1 - 0.05 / 3) == "98.33%" and level_label(0.9) == "90%"


def test_position_heatmap_cells_are_the_fixtures_aurocs(tmp_path, figures):
    res = probe_json()
    assert is_png(plots.plot_position_auroc(probe_result(), tmp_path / "pos.png"))
    fig = figures[-1]
    ax = fig.axes[0]
    grid = res["positions"]["auroc"]
    image = ax.images[0].get_array()
    np.testing.assert_allclose(image, [[grid[n][p] for p in POSITIONS] for n in LAYERS])   # rows: layers
    cells = [t.get_text() for t in ax.texts]
    assert cells == [f"{grid[n][p]:.2f}" for n in LAYERS for p in POSITIONS]
    norm = ax.images[0].norm
    assert math.isclose((norm.vmin + norm.vmax) / 2, 0.5)                      # centred at chance
    title = ax.get_title()
    assert "n=372" in title and "95%" in title and "JSON / report" in title
    assert [t.get_text() for t in ax.get_xticklabels()][1] == "answer_first\n(main sweep)"


def test_transfer_heatmap_shows_auroc_interval_and_boxed_diagonal(tmp_path, figures):
    res = probe_json()
    assert is_png(plots.plot_transfer(probe_result(), tmp_path / "transfer.png"))
    ax = figures[-1].axes[0]
    t = res["transfer"]
    cells = [x.get_text() for x in ax.texts]
    for i in range(3):
        for j in range(3):
            value, ci = t["auroc"][i][j], t["auroc_ci"][i][j]
            if value is None:
                assert "n/a" in cells
            else:
                assert f"{value:.2f}" in cells and f"[{ci[0]:.2f}, {ci[1]:.2f}]" in cells
    boxes = [p for p in ax.patches if p.get_edgecolor()[:3] == (0, 0, 0)]
    assert sorted((round(b.get_x() + 0.5), round(b.get_y() + 0.5)) for b in boxes) == [(0, 0), (1, 1), (2, 2)]
    assert "out-of-fold within the group" in ax.get_xlabel() and "chance 0.5" in ax.get_title()
    assert "95%" in ax.get_title()
    assert [x.get_text() for x in ax.get_yticklabels()] == ["geography\n(n=150)", "history\n(n=140)", "$\\foo{$\n(n=110)"]


def test_probe_plot_labels_real_levels_and_sides(tmp_path, figures):
    res = probe_json()
    assert is_png(plots.plot_probe(probe_result(), tmp_path / "probe.png"), 60_000)
    fig = figures[-1]
    top, bottom, heat = fig.axes[:3]
    labels = [t.get_text() for t in bottom.get_legend().get_texts()]
    assert "99.84% interval, Bonferroni over 31 layers (the verdict's)" in labels
    assert "95% interval, unadjusted" in labels
    assert not any("95%" in lab and "Bonferroni" in lab for lab in labels)
    assert any("output_confidence, output side" in lab for lab in labels)
    # controls: one horizontal line each, output side solid, input side never solid
    lines = {ln.get_label().split(" ")[0]: ln for ln in top.lines if ln.get_label().split(" ")[0] in res["controls"]}
    assert set(lines) == set(INPUT) | set(OUTPUT)
    for name, line in lines.items():
        assert line.get_ydata()[0] == pytest.approx(res["controls"][name]["auroc"])
        assert (line.get_linestyle() == "-") == (name in OUTPUT), name
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert any(t.startswith("input-side controls") for t in legend) and any(t.startswith("output-side") for t in legend)
    assert "output_confidence (best) 0.76 [0.71, 0.81]" in legend
    for label, key in (("H&L control task", "hl_control_auroc"), ("permutation test", "permutation_auroc")):
        task = [ln for ln in top.lines if ln.get_label().startswith(label)][0]
        np.testing.assert_allclose(task.get_ydata(), [res["layers"][n][key] for n in LAYERS])
    # raw scores marked raw, the answer-token controls a group of their own, the gain over the embedding below
    assert "answer_logprob_mean raw 0.71 [0.66, 0.76]" in legend and "output_confidence (best) 0.76 [0.71, 0.81]" in legend
    assert any(t.startswith("answer-token controls") for t in legend)
    gain = [ln for ln in bottom.lines if ln.get_label().startswith("gain over answer_embedding")][0]
    np.testing.assert_allclose(gain.get_ydata(), [res["layers"][n]["embedding_gain"] for n in LAYERS])
    assert "pairs within folds" in top.get_title()
    np.testing.assert_allclose(heat.images[0].get_array(),
                               [[res["positions"]["auroc"][n][p] for n in LAYERS] for p in POSITIONS])
    assert "2 warning(s)" in top.get_title()
    assert "verdict: layer_12 is the first layer that beats every control" in top.get_title()     # verdict.py's
    plots.plot_probe(probe_result(), tmp_path / "alone.png", positions=False)
    assert len([ax for ax in figures[-1].axes if ax.images]) == 0


def test_new_plots_draw_names_as_plain_text(tmp_path, figures):
    res = dataclasses.replace(probe_result(), run_name="costs $5 and $6")
    for plot in (plots.plot_probe, plots.plot_position_auroc, plots.plot_transfer):
        plot(res, tmp_path / "p.png")
    for fig in figures:
        assert all(t.get_parse_math() is False for t in fig.findobj(matplotlib.text.Text))
    assert any("costs $5 and $6" in t for fig in figures for t in texts(fig))
    assert any("$\\foo{$" in t for t in texts(figures[-1]))


def test_new_plots_refuse_results_without_their_keys(tmp_path):
    res = dataclasses.replace(probe_result(), positions=None, transfer=None)
    with pytest.raises(ValueError, match="per-position"):
        plots.plot_position_auroc(res, tmp_path / "p.png")
    with pytest.raises(ValueError, match="transfer"):
        plots.plot_transfer(res, tmp_path / "t.png")
    assert is_png(plots.plot_probe(res, tmp_path / "probe.png"))


# ----------------------------------------------------------------------------- report

def test_report_labels_each_interval_with_its_real_level():
    res = probe_json()
    page = probe_html(probe_result())
    parsed = tables(page)
    headers, rows = parsed.table("layer")
    adj = "selectivity vs output_confidence [99.84% CI, Bonferroni over 31 layers]"
    assert adj in headers and "selectivity [95% CI, unadjusted]" in headers
    assert not any(re.search(r"95% CI, (Bonferroni|adjusted)", h) for h in headers)
    assert "99.84%" in page and "[95% CI, Bonferroni" not in page
    v = res["layers"]["layer_12"]
    row = rows["layer_12 <- verdict"]
    assert row[headers.index(adj)] == ci3(v["selectivity"], v["selectivity_ci"], "+")
    assert row[headers.index("selectivity [95% CI, unadjusted]")] == ci3(v["selectivity"], v["selectivity_ci_unadjusted"], "+")
    task = [h for h in headers if h.startswith("H&L control task AUROC [95% CI]")][0]
    assert row[headers.index(task)] == ci3(v["hl_control_auroc"], v["hl_control_auroc_ci"])
    hl = [h for h in headers if h.startswith("H&L selectivity")][0]
    assert row[headers.index(hl)] == f"{v['auroc'] - v['hl_control_auroc']:+.3f}"
    perm = [h for h in headers if h.startswith("permutation test AUROC [95% CI]")][0]
    assert row[headers.index(perm)] == ci3(v["permutation_auroc"], v["permutation_auroc_ci"])
    gain = [h for h in headers if h.startswith("gain over answer_embedding")][0]
    assert "[95% CI, paired]" in gain and row[headers.index(gain)] == ci3(v["embedding_gain"], v["embedding_gain_ci"], "+")


def test_report_warnings_verdict_and_controls_by_side():
    res = probe_json()
    page = probe_html(probe_result())
    warn = page.index('class="warnings"')
    assert warn < page.index('class="verdict"') < page.index("<img")
    assert all(html.escape(w) in page[warn:page.index('class="verdict"')] for w in res["warnings"])
    assert "<b>verdict</b>: layer_12" in page
    assert "best control (the verdict&#x27;s baseline)</b>: output_confidence (output side) (AUROC 0.762 [0.712, 0.812])" in page
    assert "best input-side control</b>: bag_of_words (input side)" in page
    headers, rows = tables(page).table("control")
    assert headers[1].startswith("side")
    assert rows["bag_of_words (best input-side)"][1] == "input"
    assert rows["output_confidence (best, best output-side)"][1:4] == ["output", "fitted", "0.762 [0.712, 0.812]"]
    assert rows["first_token_entropy"][1:5] == ["output", "raw, lower = correct", "0.681 [0.631, 0.731]", "-"]
    assert rows["answer_embedding"][1:3] == ["input", "fitted, answer token"]
    assert "pairs within folds" in page and "single scores scored raw" in page
    assert "left out: p_true_raw (no row carries it)" in page
    assert "answer_first: generated positions captured" in page and "400 rows in 100 clusters by id" in page


def test_report_operating_points_families_positions_transfer():
    res = probe_json()
    parsed = tables(probe_html(probe_result()))
    headers, rows = parsed.table("scores of")
    assert headers[1] == "AUPRC [95% CI] (chance = prevalence 0.600)"
    assert headers[2:] == ["TPR at 1% FPR [95% CI]", "FPR at 95% TPR [95% CI]", "Brier (lower is better) [95% CI]",
                           "ECE (lower is better) [95% CI]"]
    ops = res["operating_points"]["rows"]
    keys = ("auprc", "tpr_at_1pct_fpr", "fpr_at_95pct_tpr", "brier", "ece")
    for label, name in (("layer_15 (best layer)", "layer_15"),
                        ("control: output_confidence (output side)", "control:output_confidence"),
                        ("control: bag_of_words (input side)", "control:bag_of_words")):
        assert rows[label][1:] == [ci3(ops[name][k]["value"], ops[name][k]["ci"]) for k in keys]
    headers, rows = parsed.table("layer")                       # the first "layer" table is the per-layer one
    fam_headers = [h for h, _ in parsed.tables if h and "mass-mean AUROC [95% CI]" in h][0]
    fam_rows = {r[0]: r for _, rs in parsed.tables if rs and _ == fam_headers for r in rs if r}
    assert fam_headers[:3] == ["layer", "logistic AUROC [95% CI]", "mass-mean AUROC [95% CI]"]
    assert fam_headers[3].startswith("AUROC over CV seeds 0, 1, 2: min - max")
    fam = res["families"]["mass_mean"]["layer_15"]
    lo, hi = res["seeds"]["range"]["layer_15"]
    assert fam_rows["layer_15"][2:] == [ci3(fam["auroc"], fam["auroc_ci"]), f"{lo:.3f} - {hi:.3f}"]
    pos_headers = [h for h, _ in parsed.tables if h and h[-1] == "answer_last AUROC [95% CI]"][0]
    assert pos_headers[2] == "answer_first (main sweep) AUROC [95% CI]"
    pos_rows = {r[0]: r for h, rs in parsed.tables if h == pos_headers for r in rs if r}
    grid = res["positions"]
    assert pos_rows["layer_7"][1:] == [ci3(grid["auroc"]["layer_7"][p], grid["auroc_ci"]["layer_7"][p]) for p in POSITIONS]
    headers, rows = parsed.table("trained on \\ tested on")
    assert headers[1:] == GROUPS
    t = res["transfer"]
    assert rows["geography (n=150)"][1:] == [ci3(0.861, t["auroc_ci"][0][0]) + " (out-of-fold within)",
                                             ci3(0.702, t["auroc_ci"][0][1]), ci3(0.553, t["auroc_ci"][0][2])]
    assert rows["history (n=140)"][3] == "-"
    assert [h for h in parsed.h3 if h.startswith(("By token", "Transfer"))] == ["By token position",
                                                                                  "Transfer across category values"]


def test_report_section_has_one_inline_png_per_figure():
    page = probe_html(probe_result())
    assert page.count('<img alt="figure" src="data:image/png;base64,') == 3      # probe, positions, transfer
    assert "not available" not in page


def test_report_and_text_without_the_optional_parts():
    """A result without positions, transfer, operating points (a multi-class or last-prompt probe), clusters,
    warnings and notes renders what it has and announces nothing it lacks."""
    res = dataclasses.replace(probe_result(), positions=None, transfer=None, operating_points=None, clusters=None,
                              warnings=[], notes=[], dropped_controls={})
    page = probe_html(res)
    parsed = tables(page)
    assert parsed.h3 == ["Per layer", "Controls", "Probe families and cross-validation seeds"]
    headers, _ = parsed.table("layer")
    assert headers[:4] == ["layer", "auroc [95% CI]", "accuracy [95% CI]",
                           "selectivity vs output_confidence [99.84% CI, Bonferroni over 31 layers]"]
    assert "warnings" not in page and page.count("<img") == 1 and "clustered" not in page and "left out" not in page
    text = probe_text(res)
    assert not text.startswith("WARNINGS") and "selectivity [99.84% CI, adjusted]" in text
    assert "operating points" not in text and "transfer across" not in text and "AUROC by token position" not in text
    assert text.splitlines()[-1].startswith("verdict:    layer_12 is the first layer that beats every control")


def test_reading_a_result_refuses_what_it_cannot_trust():
    """--json output read back (from_json): a newer format version, a missing field, a wrong value or an unknown
    key is an error naming it, never a result with guessed parts."""
    newer = ProbeResult.format_version + 1
    with pytest.raises(ValueError, match=f"format version {newer} is newer"):
        from_json(ProbeResult, dict(probe_json(), format_version=newer))
    sparse = probe_json()
    del sparse["layers"]["layer_3"]["selectivity_ci"]
    with pytest.raises(ValueError, match=r"ProbeResult.layers\['layer_3'\]: missing field 'selectivity_ci'"):
        from_json(ProbeResult, sparse)
    odd = probe_json()
    odd["controls"]["length"]["side"] = "sideways"
    with pytest.raises(ValueError, match="sideways"):
        from_json(ProbeResult, odd)
    with pytest.raises(ValueError, match="unknown field.*'majority_baseline'"):
        from_json(ProbeResult, dict(probe_json(), majority_baseline=0.5))
    assert from_json(ProbeResult, dict(probe_json(), plots=["p.png"])) == probe_result()     # the CLI's own key


# ----------------------------------------------------------------------------- text

def test_text_probe_warnings_first_levels_and_tables():
    res = probe_json()
    text = probe_text(probe_result())
    assert text.startswith("WARNINGS:\n  ! " + res["warnings"][0])
    verdict = text.splitlines()[-1]
    assert verdict.startswith("verdict:    layer_12 is the first layer that beats every control")
    assert "best control output_confidence, output side: AUROC 0.762 [0.712, 0.812]" in verdict
    assert "best input-side bag_of_words: 0.642" in verdict
    assert "selectivity [99.84% CI, adjusted]" in text and "selectivity [95% CI]" in text
    assert "[95% CI, adjusted]" not in text
    layer = next(line for line in text.splitlines() if line.startswith("layer_12 <- verdict"))
    v = res["layers"]["layer_12"]
    for cell in (ci3(v["auroc"], v["auroc_ci"]), ci3(v["selectivity"], v["selectivity_ci"], "+"),
                 ci3(v["selectivity"], v["selectivity_ci_unadjusted"], "+"),
                 ci3(v["hl_control_auroc"], v["hl_control_auroc_ci"]), f"{v['hl_selectivity']:+.3f}",
                 ci3(v["permutation_auroc"], v["permutation_auroc_ci"]), ci3(v["embedding_gain"], v["embedding_gain_ci"], "+")):
        assert cell in layer
    control = next(line for line in text.splitlines() if line.startswith("answer_logprob_mean"))
    assert control.split()[1:6] == ["output", "raw", "(higher", "=", "correct)"] and control.rstrip().endswith("-")
    assert "pairs within folds" in text and "single scores scored raw" in text
    ops = res["operating_points"]["rows"]["layer_15"]
    op_line = next(line for line in text.splitlines() if line.startswith("layer_15 ") and "0.912" in line)
    assert all(ci3(ops[k]["value"], ops[k]["ci"]) in op_line
               for k in ("auprc", "tpr_at_1pct_fpr", "fpr_at_95pct_tpr", "brier", "ece"))
    assert "AUPRC [95% CI] (chance 0.600)" in text
    assert "history (n=140)" in text and "0.874 [0.820, 0.920] *" in text
    assert "answer_first (main)" in text and "372 questions that have every position" in text
    fam = res["families"]["mass_mean"]["layer_3"]
    assert "mass_mean AUROC [95% CI]" in text and "logistic AUROC" not in text     # the main family is the table above
    assert ci3(fam["auroc"], fam["auroc_ci"]) in text


def test_a_real_probe_result_renders_everywhere(tmp_path):
    """probe_features' own result goes through the text, the report and the plot, and through JSON unchanged."""
    from activation_eval.analysis.probe import probe_features
    rng = np.random.default_rng(0)
    rows = [{"id": f"q{i}", "correct": i % 2 == 0, "category": "ab"[i % 3 == 0], "question": f"question {i}",
             "num_prompt_tokens": 10, "num_generated_tokens": 4} for i in range(60)]
    y = np.array([r["correct"] for r in rows])
    res = probe_features({"layer_0": rng.normal(size=(60, 8)), "layer_1": rng.normal(size=(60, 8)) + 1.5 * y[:, None]},
                         rows, n_bootstrap=1000)
    res = dataclasses.replace(res, run_dir="mem", run_name="mem", reduce="last_prompt")
    text = probe_text(res)
    adjusted = level_label(res.bootstrap.adjusted_level)
    assert adjusted == "97.5%" and f"selectivity [{adjusted} CI, adjusted]" in text
    page = probe_html(res)
    assert f"[{adjusted} CI, Bonferroni over 2 layers]" in page and "not available" not in page
    assert is_png(plots.plot_probe(res, tmp_path / "real.png"))
    assert from_json(ProbeResult, to_json(res)) == res


def test_a_format_1_result_reads_after_its_upgrade():
    """A --json probe result saved before issue 27 (format 1): the shuffle within category was the "control task",
    controls had no scoring, cv no oof_scoring. upgrade_probe_json moves its figures to today's keys."""
    from activation_eval.schema.probe import upgrade_probe_json
    old = probe_json()
    old["format_version"] = 1
    for key in ("answer_controls", "raw_controls"):
        del old[key]
    del old["cv"]["oof_scoring"]
    del old["cv"]["strata"]
    old["cv"]["auroc_pairs"] = "all out-of-fold predictions pooled"
    for layer in old["layers"].values():
        layer["control_task_auroc"] = layer.pop("permutation_auroc")
        layer["control_task_auroc_ci"] = layer.pop("permutation_auroc_ci")
        layer["hl_selectivity"] = layer.pop("permutation_selectivity")
        for key in ("hl_control_auroc", "hl_control_auroc_ci", "embedding_gain", "embedding_gain_ci"):
            del layer[key]
    for c in old["controls"].values():
        del c["scoring"], c["orientation"]
    with pytest.raises(ValueError, match="missing field"):
        from_json(ProbeResult, old)
    res = from_json(ProbeResult, upgrade_probe_json(old))
    want = probe_json()["layers"]["layer_12"]
    got = res.layers["layer_12"]
    assert got.permutation_auroc == want["permutation_auroc"] and got.permutation_selectivity == want["permutation_selectivity"]
    assert got.hl_control_auroc is None and got.embedding_gain is None
    assert res.cv.oof_scoring == "all out-of-fold predictions pooled" and res.controls["p_true"].scoring == "fitted"
    assert "layer_12 is the first layer" in probe_text(res)
