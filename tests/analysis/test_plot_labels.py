"""Issue 20, item 6: labels are drawn as plain text. A category, layer or run name holding matplotlib
mathtext (`$\\foo{$`, a dollar pair) made --plot fail (a ValueError from the mathtext parser at
savefig) and removed the report's PCA; names with "$" in them were typeset as math."""
import dataclasses
import json
import os

import matplotlib
import numpy as np
import pytest
import torch
from lens_results import lens_result

import hostile
from activation_eval.analysis import cli as analysis_cli
from activation_eval.analysis import pca, plot_base, plots
from activation_eval.analysis.lens.plots import plot_logit_lens
from activation_eval.analysis.report import build_report
from activation_eval.analysis.stats import analyze_file, compare_files, tensor_stats
from activation_eval.store.records import save_activations

BAD = "$\\foo{$"                  # not valid mathtext: the parser raises
PRICE = "costs $5 and $6"         # a dollar pair: mathtext would draw "5 and " in italics


def _texts(fig):
    return [t.get_text() for t in fig.findobj(matplotlib.text.Text)]


@pytest.fixture
def drawn(monkeypatch):
    """The texts of every figure saved (and whether each one parses math), as the PNG has them."""
    got = []
    save = plot_base.save_png

    def spy(fig, path):
        out = save(fig, path)
        got.append([(t.get_text(), t.get_parse_math()) for t in fig.findobj(matplotlib.text.Text)])
        return out
    monkeypatch.setattr(plot_base, "save_png", spy)
    return got


def _record(names):
    rec = hostile.record()
    acts = list(rec["activations"].values())
    rec["activations"] = {name: acts[i % len(acts)].float() for i, name in enumerate(names)}
    rec["model"] = BAD
    return rec


def test_record_plots_draw_names_as_plain_text(tmp_path, drawn):
    names = [BAD, PRICE, "layer_0"]
    path = save_activations(_record(names), tmp_path / f"{BAD}.pkl")
    res = analyze_file(path)
    plots.plot_layer_norms(res.layers, tmp_path / "norms.png", title=f"norms - {BAD}")
    plots.plot_histograms(_record(names), tmp_path / "hist.png")
    plots.plot_position_heatmap(_record(names), tmp_path / "heat.png")
    plots.plot_compare(compare_files(path, path), tmp_path / "compare.png")
    for texts in drawn:
        assert all(parse is False for _, parse in texts)
    flat = [t for texts in drawn for t, _ in texts]
    assert BAD in flat and PRICE in flat and f"norms - {BAD}" in flat
    assert all(os.path.getsize(tmp_path / f) > 1000 for f in ("norms.png", "hist.png", "heat.png", "compare.png"))


def _odd_run(tmp_path):
    run = hostile.write_run(tmp_path / BAD, n=12)
    path = os.path.join(run, "results.jsonl")
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    for i, row in enumerate(rows):
        row["category"] = (BAD, PRICE, "plain")[i % 3]
    with open(path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return run


def test_pca_probe_and_lens_plots_draw_categories_as_plain_text(tmp_path, drawn):
    run = _odd_run(tmp_path)
    pca.plot_pca(run, tmp_path / "pca.png", "layer_0", color_by="category")
    assert analysis_cli.main(["--probe", run, "--folds", "2", "--probe_groups", "category",
                              "--output_dir", str(tmp_path / "out"), "--no_progress"]) == 0
    plot_logit_lens(lens_result([BAD, "layer_0", "final_norm"], run_dir=run), tmp_path / "lens.png")
    assert len(drawn) == 4                 # PCA, probe, risk-coverage (error detection), lens
    flat = [t for texts in drawn for t, _ in texts]
    assert any(BAD in t for t in flat) and any(PRICE in t for t in flat)
    assert all(parse is False for texts in drawn for _, parse in texts)


def test_report_keeps_its_pca_with_such_names(tmp_path):
    run = _odd_run(tmp_path)
    page = open(build_report(run, tmp_path / "r.html", progress=False, lens=False, color_by="category"),
                encoding="utf-8").read()
    assert "PCA not available" not in page and "PCA" in page


def test_the_plain_text_png_shows_the_dollars(tmp_path):
    """Look at the picture: the title holds both dollar signs (mathtext would drop them); a PNG made
    here is kept in tmp_path/title.png for a look."""
    stats = {"layer_0": dataclasses.replace(tensor_stats(torch.ones(2, 3)), position_norm_median=1.0,
                                            position_norm_q25=0.5, position_norm_q75=2.0)}
    out = plots.plot_layer_norms(stats, tmp_path / "title.png", title=PRICE)
    image = matplotlib.image.imread(out)
    assert image.shape[0] > 100 and np.asarray(image).std() > 0


def test_the_cli_plots_a_record_of_such_names(tmp_path):
    """--file --plot on a record whose layer and model names hold mathtext: exit 0, three PNGs."""
    path = save_activations(_record([BAD, "layer_0"]), tmp_path / "r.safetensors")
    assert analysis_cli.main(["--file", str(path), "--plot", "--output_dir", str(tmp_path / "p")]) == 0
    assert len(os.listdir(tmp_path / "p")) == 3
    assert torch.is_tensor(_record([BAD])["activations"][BAD])
