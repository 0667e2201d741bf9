"""The HTML run report (issue 14, item 5): self-contained, escaped, sortable and filterable.

A synthetic run with hostile text (script tags, event handlers, URLs in questions and answers) and
a known signal, plus one tiny-model run for the logit-lens section. The page is parsed with
html.parser, and rendered in headless Chromium when it is installed (Debian package `chromium`).
"""
import base64
import json
import math
import os
import shutil
import subprocess
from html.parser import HTMLParser

import numpy as np
import pytest
import torch

import analyze_activations as aa
from activation_eval.analysis import report
from activation_eval.store import records as storage
from helpers import run_main

HOSTILE = '<script>alert("q")</script><img src="https://evil.example/x.png" onerror="alert(1)">'


def make_run(root, n=40, seed=0):
    """Two categories; correctness planted along one direction of every layer's last prompt token."""
    rng = np.random.default_rng(seed)
    layers = ["layer_0", "layer_1", "layer_2"]
    rows = []
    os.makedirs(root / "activations")
    for i in range(n):
        correct, cat = bool(i % 3), ("alpha" if i % 2 else "beta")
        acts = {}
        for name in layers:
            a = rng.normal(size=(5, 8)).astype(np.float32)
            a[4, 0] += 3.0 * (2 * correct - 1)
            acts[name] = torch.from_numpy(a)
        rel = f"activations/q{i:03d}.safetensors"
        storage.save_activations({"prompt": f"q{i}", "response": "r", "model": "synthetic", "input_ids": torch.arange(5),
                                  "output_ids": torch.tensor([7, 8]), "activations": acts, "positions_kept": list(range(5)),
                                  "num_prompt_tokens": 5, "num_generated_tokens": 2}, str(root / rel))
        question = f"Question {i}: capital of Paris-land? {HOSTILE if i == 0 else ''}"
        rows.append({"id": f"q{i:03d}", "category": cat, "question": question, "answer": ["Paris", "<b>P</b>"],
                     "response": f"I think {'Paris' if correct else 'Lyon'} & more {HOSTILE if i == 1 else ''}",
                     "extracted": "Paris" if correct else "Lyon", "correct": correct, "activation_file": rel})
    (root / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "run_config.json").write_text(json.dumps({"model": str(root / "no-weights-here"), "max_new_tokens": 8}))
    return rows


class Page(HTMLParser):
    """Every tag with its attributes, the text of each <script>, and the questions table's rows."""

    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self.rows, self._in_script, self._row = [], [], [], False, None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._in_script = tag == "script"
        if tag == "tr" and "data-correct" in dict(attrs):
            self._row = [dict(attrs), []]
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag):
        self._in_script = False
        if tag == "tr" and self._row:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data
        elif self._row is not None:
            self._row[1].append(data)


def parse(path):
    page = Page()
    with open(path, encoding="utf-8") as f:
        page.feed(f.read())
    return page


def wilson(k, n, z=1.959963984540054):
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("report") / "synthrun"
    rows = make_run(root)
    out = report.build_report(root, root.parent / "synth.html", progress=False)
    return root, rows, out


def test_accuracy_intervals_are_wilson(synthetic):
    root, rows, _ = synthetic
    acc = report.run_summary(str(root), rows, {})
    k, n = sum(r["correct"] for r in rows), len(rows)
    assert acc["graded"] == n and acc["correct"] == k
    np.testing.assert_allclose(acc["accuracy_ci95"], wilson(k, n), rtol=1e-9)
    for cat in ("alpha", "beta"):
        sub = [r for r in rows if r["category"] == cat]
        np.testing.assert_allclose(acc["per_category"][cat]["ci95"], wilson(sum(r["correct"] for r in sub), len(sub)))


def test_report_is_self_contained_and_escaped(synthetic):
    _, rows, out = synthetic
    page = parse(out)
    text = open(out, encoding="utf-8").read()
    for tag, attrs in page.tags:     # nothing is fetched: every src / href is inline data or a fragment
        for key in ("src", "href", "action", "data"):
            if key in attrs:
                assert attrs[key].startswith(("data:", "#")), (tag, key, attrs[key][:80])
        assert tag not in ("link", "iframe", "object", "embed", "base"), tag
        assert not any(k.startswith("on") for k in attrs), (tag, attrs)   # no injected event handler
    assert page.scripts == [report.SCRIPT]                                  # only our script
    assert 'http-equiv="Content-Security-Policy"' in text and "default-src 'none'" in text
    assert HOSTILE not in text and "&lt;script&gt;alert(&quot;q&quot;)&lt;/script&gt;" in text
    # the questions table: every row, with its data and filter attributes, text intact after unescaping
    assert len(page.rows) == len(rows)
    for (attrs, cells), row in zip(page.rows, rows):
        assert attrs["data-correct"] == str(row["correct"]).lower() and attrs["data-category"] == row["category"]
        assert cells[3] == row["question"] and cells[4] == "Paris | <b>P</b>" and cells[5] == row["response"]
    # figures: the probe and the PCA as inline PNGs; the logit lens says why it is missing
    pngs = [a["src"] for t, a in page.tags if t == "img"]
    assert len(pngs) >= 2
    for src in pngs:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "The logit lens not available" in text and "no-weights-here" in text
    assert "accuracy 65.0% [" in text                                    # 26 of 40


def test_report_cli(synthetic, tmp_path, capsys):
    root, _, _ = synthetic
    assert aa.main(["--report", str(root), "--output_dir", str(tmp_path), "--no_progress"]) == 0
    assert "saved report:" in capsys.readouterr().out and (tmp_path / "synthrun_report.html").is_file()
    assert aa.main(["--report", str(tmp_path), "--output", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: not a run folder") and err.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def test_report_with_logit_lens_from_a_tiny_model_run(tiny_dir, tmp_path):
    run = tmp_path / "tinyrun"
    assert run_main("--model", tiny_dir, "--limit", 6, "--max_new_tokens", 4, "--output_dir", run,
                    "--capture_activations", "--layers", "0,1,2,final_norm") == 0
    out = report.build_report(run, tmp_path / "tiny.html", progress=False)
    text = open(out, encoding="utf-8").read()
    assert "<h2>Logit lens</h2><p>Read at: auto: " in text and "median rank, correct" in text
    assert "Caveat: the comparison rests on 0 correct and " in text                # 6 minus those left out
    assert "<h3>Correct vs incorrect</h3>" in text and "<b>not compared: 0 correct and 6 incorrect rows</b>" in text
    assert "The probe not available" in text and "only one class" in text   # the random model is never right
    assert len([t for t, _ in parse(out).tags if t == "img"]) == 2          # lens and PCA


def chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("no headless browser: install Debian's `chromium` package to render the report in a test")
    return exe


def render(exe, path, tmp_path, fragment="", extra=("--dump-dom",)):
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
            *extra, f"file://{os.path.abspath(path)}{fragment}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_report_filters_and_sorts_in_chromium(synthetic, tmp_path):
    exe = chromium()
    _, rows, out = synthetic
    page = Page()
    page.feed(render(exe, out, tmp_path, "#correct=false"))
    shown = [r for r in page.rows if "hidden" not in r[0]]
    assert len(shown) == sum(not r["correct"] for r in rows)
    assert all(r[0]["data-correct"] == "false" for r in shown)
    dom = render(exe, out, tmp_path, "#q=Lyon&category=alpha")
    want = sum(1 for r in rows if "lyon" in r["response"].lower() and r["category"] == "alpha")
    assert f'data-shown="{want}"' in dom and want > 0
    page = Page()
    page.feed(render(exe, out, tmp_path, "#sort=5"))                 # sort by response text
    order = [cells[5] for _, cells in page.rows]
    assert order == sorted(order, key=str.lower) or order == sorted(order)
    assert order != [r["response"] for r in rows]
    shot = tmp_path / "report.png"
    render(exe, out, tmp_path, "", ("--hide-scrollbars", "--window-size=1200,3000", f"--screenshot={shot}"))
    import matplotlib.image
    img = matplotlib.image.imread(shot)
    assert img.shape[:2] == (3000, 1200) and img[..., :3].std() > 0.05   # a page, not a blank canvas


def test_report_shows_the_probes_own_numbers(synthetic):
    """The probe section holds the ProbeResult of the run (transfer across its two categories), each figure
    as probe_run computed it, the intervals headed by their real levels, the verdict as verdict.py words it."""
    import html as html_module
    import re

    from activation_eval.analysis.probe import probe_run
    from activation_eval.analysis.probe.verdict import verdict
    from activation_eval.analysis.text import level_label
    root, _, out = synthetic
    res = probe_run(root, transfer="category")
    text = open(out, encoding="utf-8").read()
    adjusted = f"{level_label(res.bootstrap.adjusted_level)} CI, Bonferroni over {len(res.layers)} layers"
    assert (f"<th>auroc [95% CI]</th><th>accuracy [95% CI]</th><th>selectivity vs {res.best_control} "
            f"[{adjusted}]</th>") in text
    for name, v in res.layers.items():
        row = (f"<td>{name}{' &lt;- verdict' if name == res.verdict else ''}</td>"
               f"<td>{v.auroc:.3f} [{v.auroc_ci[0]:.3f}, {v.auroc_ci[1]:.3f}]</td>"
               f"<td>{v.accuracy:.3f} [{v.accuracy_ci[0]:.3f}, {v.accuracy_ci[1]:.3f}]</td>")
        assert row in text, name
    c = res.controls["category"]
    assert re.search(rf"<td>category[^<]*</td><td>input</td><td>fitted</td><td>{c.auroc:.3f} \[{c.auroc_ci[0]:.3f}, ",
                     text)
    assert f"<b>verdict</b>: {html_module.escape(verdict(res).sentence)}" in text
    assert res.verdict in res.layers and "Transfer across category values" in text
