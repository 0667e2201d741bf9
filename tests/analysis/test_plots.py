"""Plots a paper could use (issue 14, item 4): checked on the figures' own artists (captured before
saving) against values computed here with numpy, plus the PNGs' existence."""
import dataclasses
import json
import os

import numpy as np
import pytest
import torch
from lens_results import lens_result

import analyze_activations as aa
from activation_eval.analysis import pca, plots, stats
from activation_eval.analysis.lens.plots import plot_logit_lens
from activation_eval.store import records as storage

LAYERS = ["embeddings", "layer_0", "layer_1", "final_norm"]


def sink_record(n_pos=40, hidden=32, seed=0):
    """Ordinary positions of norm ~ scale, and one attention-sink position of norm ~2.5e4."""
    g = torch.Generator().manual_seed(seed)
    acts = {}
    for i, name in enumerate(LAYERS):
        a = torch.randn(n_pos, hidden, generator=g) * (1 + 10 * i)
        a[0] = 2.5e4 / np.sqrt(hidden)
        acts[name] = a
    return {"prompt": "p", "response": "r", "model": "tiny-test", "input_ids": torch.arange(n_pos),
            "output_ids": torch.tensor([1]), "activations": acts, "positions_kept": list(range(n_pos)),
            "num_prompt_tokens": n_pos, "num_generated_tokens": 1}


def test_norms_median_iqr_never_below_zero_log_axis_final_apart(tmp_path, figures):
    rec = sink_record()
    res = aa.describe_record(rec)
    for name in LAYERS:
        norms = np.linalg.norm(rec["activations"][name].double().numpy(), axis=1)
        s = res.layers[name]
        np.testing.assert_allclose([s.position_norm_q25, s.position_norm_median, s.position_norm_q75],
                                   np.percentile(norms, [25, 50, 75]))
    plots.plot_layer_norms(res.layers, tmp_path / "n.png")
    ax = figures[-1].axes[0]
    band = ax.collections[0].get_paths()[0].vertices
    assert band[:, 1].min() >= 0                                     # the old mean - std went far below 0
    assert ax.get_yscale() == "log"                                  # the band spans > 20x (scales 1 .. 31)
    line = ax.lines[0]
    assert list(line.get_xdata()) == [0, 1, 2]                       # final_norm is not joined to layer_1
    np.testing.assert_allclose(line.get_ydata(), [res.layers[n].position_norm_median for n in LAYERS[:3]])
    assert [t.get_text() for t in ax.get_xticklabels()] == LAYERS
    flat = {n: dataclasses.replace(res.layers[n], position_norm_q25=4.0, position_norm_median=5.0,
                                   position_norm_q75=6.0) for n in LAYERS}
    plots.plot_layer_norms(flat, tmp_path / "flat.png")
    assert figures[-1].axes[0].get_yscale() == "linear" and figures[-1].axes[0].get_ylim()[0] == 0


def test_histograms_show_the_1_to_99_percentile_and_the_clipped_count(tmp_path, figures):
    rec = sink_record()
    plots.plot_histograms(rec, tmp_path / "h.png")
    for ax, name in zip(figures[-1].axes, LAYERS):
        a = rec["activations"][name].double().numpy().ravel()
        lo, hi = np.percentile(a, [1, 99])
        clipped = int(((a < lo) | (a > hi)).sum())
        assert f"{clipped} of {a.size} outside" in ax.get_xlabel()
        edges = [p.get_x() for p in ax.patches] + [ax.patches[-1].get_x() + ax.patches[-1].get_width()]
        assert min(edges) == pytest.approx(lo) and max(edges) == pytest.approx(hi)
        assert sum(p.get_height() for p in ax.patches) == a.size - clipped


def test_directory_quartiles_exact_then_uniform_sample(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    files = [rng.normal(size=(50, 8)) * (1 + i) for i in range(30)]   # later files have larger norms
    for i, a in enumerate(files):
        storage.save_activations({"activations": {"layer_0": torch.from_numpy(a)}, "input_ids": torch.arange(50)},
                                 str(tmp_path / f"r{i:02d}.safetensors"))
    norms = np.concatenate([np.linalg.norm(a, axis=1) for a in files])
    exact = aa.analyze_directory(tmp_path, progress=False).layers["layer_0"]
    np.testing.assert_allclose([exact.position_norm_q25, exact.position_norm_median, exact.position_norm_q75],
                               np.percentile(norms, [25, 50, 75]))
    assert exact.norm_quantiles_from == len(norms)
    monkeypatch.setattr(stats, "NORM_SAMPLE_CAP", 400)               # 1500 norms: a sample of 400
    sampled = aa.analyze_directory(tmp_path, progress=False).layers["layer_0"]
    assert sampled.norm_quantiles_from == 400
    # a uniform sample's median is within a few standard errors of the true one; a sample biased to the
    # first files (the first 400 norms) would be far below it
    assert abs(sampled.position_norm_median - np.median(norms)) < 0.1 * np.median(norms)
    assert np.median(norms[:400]) < 0.6 * np.median(norms)


def make_run(root, n=30):
    rng = np.random.default_rng(1)
    rows = []
    os.makedirs(root / "activations")
    for i in range(n):
        a = rng.normal(size=(3, 8)).astype(np.float32)
        rel = f"activations/q{i}.pkl"
        storage.save_activations({"activations": {"layer_0": torch.from_numpy(a), "layer_1": torch.from_numpy(a)},
                                  "input_ids": torch.arange(3), "num_prompt_tokens": 3}, str(root / rel))
        rows.append({"id": f"q{i}", "category": ["geo", "math", "mc"][i % 3], "correct": i % 4 == 0,
                     "num_generated_tokens": i, "grader": "text", "activation_file": rel})
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return rows


def legend_texts(ax):
    legends = [c for c in ax.get_children() if type(c).__name__ == "Legend"]
    return [[t.get_text() for t in lg.get_texts()] for lg in legends], [lg.get_title().get_text() for lg in legends]


def test_pca_colours_by_field_and_marks_category(tmp_path, figures, capsys):
    rows = make_run(tmp_path / "pcarun")
    pca.plot_pca(tmp_path / "pcarun", tmp_path / "p.png", "layer_0")
    texts, titles = legend_texts(figures[-1].axes[0])
    k = sum(r["correct"] for r in rows)
    assert titles == ["correct", "category (marker)"]
    assert texts == [[f"incorrect ({len(rows) - k})", f"correct ({k})"], ["geo (10)", "math (10)", "mc (10)"]]
    pca.plot_pca(tmp_path / "pcarun", tmp_path / "c.png", "layer_0", color_by="category")
    texts, titles = legend_texts(figures[-1].axes[0])
    assert titles == ["category", "correct (marker)"] and texts[1] == [f"correct ({k})", f"incorrect ({len(rows) - k})"]
    pca.plot_pca(tmp_path / "pcarun", tmp_path / "g.png", "layer_0", color_by="num_generated_tokens")
    assert figures[-1].axes[-1].get_ylabel() == "num_generated_tokens"         # a colour bar for numbers
    code = aa.main(["--directory", str(tmp_path / "pcarun"), "--plot", "--color_by", "nope",
                    "--output_dir", str(tmp_path / "o"), "--no_progress"])
    err = capsys.readouterr().err
    assert code == 2 and "no results row has a field 'nope'" in err and "category" in err and err.count("\n") == 1


def test_pca_caption_compares_within_category(tmp_path, figures):
    """A planted Simpson case: along the first direction the multiple-choice questions (mostly wrong) sit
    far below the others, and within each category wrong answers sit 1 higher. The caption's PC 1
    figures are the CMH-weighted and pooled differences of sklearn's PC 1, computed here."""
    from sklearn.decomposition import PCA
    rng = np.random.default_rng(1)
    root, rows, last = tmp_path / "simpson", [], []
    os.makedirs(root / "activations")
    for i in range(120):
        mc = i % 3 == 0
        correct = bool(rng.random() < (0.2 if mc else 0.8))
        a = rng.normal(size=(3, 8)).astype(np.float32) * 0.5
        a[:, 0] += (-4 if mc else 0) + (0 if correct else 1.0)
        storage.save_activations({"activations": {"layer_0": torch.from_numpy(a)}, "input_ids": torch.arange(3),
                                  "num_prompt_tokens": 3}, str(root / f"activations/q{i}.pkl"))
        rows.append({"id": f"q{i}", "category": "mc" if mc else "open", "correct": correct, "grader": "text",
                     "activation_file": f"activations/q{i}.pkl"})
        last.append(a[-1])
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pca.plot_pca(root, tmp_path / "p.png", "layer_0")
    caption = figures[-1].get_supxlabel().split("\n")
    pc1 = PCA(n_components=2).fit_transform(np.asarray(last, dtype=np.float64))[:, 0]
    cats, right = np.array([r["category"] for r in rows]), np.array([r["correct"] for r in rows])
    num = den = 0.0
    for c in ("mc", "open"):
        m = cats == c
        w = (m & right).sum() * (m & ~right).sum() / m.sum()
        num, den = num + w * (pc1[m & ~right].mean() - pc1[m & right].mean()), den + w
    pooled = pc1[~right].mean() - pc1[right].mean()
    assert np.sign(num) != np.sign(pooled)                               # the planted reversal
    assert caption[0] == ("mean coordinate, incorrect - correct, 95% bootstrap interval; stratified by category "
                          "(2 strata); pooled shown beside")
    assert caption[1].startswith(f"PC 1: {num / den:+.3g} [") and f"pooled {pooled:+.3g} [" in caption[1]
    assert "signs disagree (Simpson's paradox)" in caption[1] and "signs disagree" not in caption[2]
    pca.plot_pca(root, tmp_path / "c.png", "layer_0", color_by="category")
    assert figures[-1].get_supxlabel() == ""                            # no correctness colours: no caption
    code = aa.main(["--directory", str(root), "--plot", "--stratify_by", "grader", "--output_dir", str(tmp_path / "o"),
                    "--no_progress", "--json"])
    assert code == 0 and figures[-1].get_supxlabel().split("\n")[0].endswith("not stratified: one stratum (grader 'text')")
    assert os.path.exists(tmp_path / "o" / "simpson_pca_layer_0_strat-grader.png")


def test_logit_lens_plot_draws_the_stratified_difference_beside_the_pooled(tmp_path, figures):
    """The lower panels: per layer the stratified difference (line + band), the pooled one, and a red ring
    exactly at the layers whose pooled sign is reversed; values from stratify, drawn as they are."""
    from activation_eval.analysis.stratify import stratified_difference
    rng = np.random.default_rng(0)
    names = ["layer_0", "layer_1", "layer_2", "final_norm"]
    cats = np.array(["mc"] * 60 + ["open"] * 60)
    correct = np.r_[rng.random(60) < 0.2, rng.random(60) < 0.8]
    strat = {}
    for i, name in enumerate(names):      # the within-category effect grows with depth; mc sits 3 lower
        v = np.where(cats == "mc", -3.0, 0.0) + 0.8 * i * ~correct + rng.normal(0, 0.3, 120)
        strat[name] = stratified_difference(v, correct, cats, n_boot=500, by="category")
    plot_logit_lens(lens_result(names, strat, questions_used=120), tmp_path / "lens.png")
    ax = figures[-1].axes[2]                                             # lower left: ln rank
    assert ax.get_title().startswith("correct vs incorrect: stratified by category (2 strata)")
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    within = next(ln for label, ln in lines.items() if label.startswith("within category (2 strata"))
    pooled = next(ln for label, ln in lines.items() if label.startswith("pooled (ignores category)"))
    np.testing.assert_allclose(within.get_ydata(), [strat[n].stratified.value for n in names[:3]])
    np.testing.assert_allclose(pooled.get_ydata(), [strat[n].pooled.value for n in names[:3]])
    rings = lines["pooled sign opposite to the stratified one"]
    flipped = [i for i, n in enumerate(names) if strat[n].sign_reversal]
    assert 0 < len(flipped) < len(names) and list(rings.get_xdata()) == flipped
