"""Tests for analyze_activations.py: statistics, directory streaming, compare, plots, probe, CLI errors.

Records are built in tmp_path with known tensors through storage.save_activations; no models.
"""
import json
import os
import sys

import numpy as np
import pytest
import torch

import analyze_activations as aa
from activation_eval.analysis import stats
from activation_eval.store import records as storage
from helpers import REPO_ROOT

HIDDEN = 16
LAYERS = ["embeddings", "layer_0", "layer_1", "layer_2", "layer_3", "final_norm"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_record(seed=0, prompt_len=5, gen_len=3, hidden=HIDDEN, layers=LAYERS, seed_only=False, input_ids=None):
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.arange(10, 10 + prompt_len) if input_ids is None else torch.as_tensor(input_ids)
    output_ids = torch.arange(100, 100 + gen_len)
    n_pos = len(input_ids) + gen_len - 1
    acts = {name: torch.randn(n_pos, hidden, generator=g) * (i + 1) + i for i, name in enumerate(layers)}
    rec = {"prompt": f"prompt {seed}", "response": f"response {seed}", "model": "tiny-test",
           "timestamp": "2026-01-01T00:00:00", "input_ids": input_ids, "output_ids": output_ids,
           "activations": acts}
    if not seed_only:
        rec.update({"layer_names": list(layers), "positions": "all", "positions_kept": list(range(n_pos)),
                    "num_prompt_tokens": len(input_ids), "num_generated_tokens": gen_len, "dtype": "float32",
                    "model_info": {"model_type": "test", "num_layers": 4, "hidden_size": hidden},
                    "generation": {"max_new_tokens": gen_len}, "versions": {}})
    return rec


def save(rec, path):
    storage.save_activations(rec, str(path))
    return str(path)


def run_cli(capsys, *argv):
    code = aa.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_png(path):
    assert os.path.isfile(path), path
    with open(path, "rb") as f:
        assert f.read(8) == PNG_MAGIC, path
    import matplotlib.image
    img = matplotlib.image.imread(path)
    assert img.shape[0] > 100 and img.shape[1] > 100


def make_run(root, n=60, signal_from=2, strength=2.5, seed=0, labels=None):
    """A run folder: results.jsonl + records; the last prompt token carries the label from layer signal_from on."""
    rng = np.random.default_rng(seed)
    layers = [f"layer_{i}" for i in range(4)]
    y = np.array([i % 2 for i in range(n)]) if labels is None else np.asarray(labels)
    rows = []
    for i in range(n):
        prompt_len = 4 + i % 3
        n_pos = prompt_len + 1
        acts = {}
        for li, name in enumerate(layers):
            a = rng.normal(size=(n_pos, 16)).astype(np.float32)
            if signal_from is not None and li >= signal_from:
                a[prompt_len - 1, 0] += strength * (2 * y[i] - 1)
            acts[name] = torch.from_numpy(a)
        rec = {"prompt": f"q{i}", "response": "r", "model": "tiny-test", "timestamp": "t",
               "input_ids": torch.arange(prompt_len), "output_ids": torch.tensor([7, 8]),
               "activations": acts, "layer_names": layers, "positions": "all",
               "positions_kept": list(range(n_pos)), "num_prompt_tokens": prompt_len, "num_generated_tokens": 2,
               "dtype": "float32", "model_info": {"model_type": "test", "num_layers": 4, "hidden_size": 16},
               "grading": {"id": f"q{i}", "category": "c", "answer": "1", "extracted": "1", "correct": bool(y[i]),
                           "grader": "exact"}}
        ext = ".safetensors" if i % 2 else ".pkl"
        rel = os.path.join("activations", f"q{i:04d}{ext}")
        storage.save_activations(rec, os.path.join(root, rel))
        rows.append({"id": f"q{i}", "question": f"q{i}", "response": "r", "correct": bool(y[i]),
                     "category": "c", "activation_file": rel})
    with open(os.path.join(root, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    with open(os.path.join(root, "summary.json"), "w") as f:
        json.dump({"total": n, "correct": int(y.sum())}, f)
    return str(root)


# ----------------------------------------------------------------------------- statistics

def test_tensor_stats_matches_numpy():
    t = torch.randn(7, 5, generator=torch.Generator().manual_seed(1)) * 3 + 0.5
    a = t.double().numpy()
    s = aa.tensor_stats(t)
    assert s.shape == [7, 5]
    assert s.mean == pytest.approx(a.mean()) and s.std == pytest.approx(a.std())
    assert s.min == pytest.approx(a.min()) and s.max == pytest.approx(a.max())
    norms = np.linalg.norm(a, axis=1)
    assert s.position_norm_mean == pytest.approx(norms.mean())
    assert s.position_norm_std == pytest.approx(norms.std())
    assert s.l2_norm == pytest.approx(np.sqrt((a ** 2).sum()))
    np.testing.assert_allclose([s.position_norm_q25, s.position_norm_median, s.position_norm_q75],
                               np.percentile(norms, [25, 50, 75]))
    assert aa.tensor_stats(torch.ones(3, 4)).position_norm_mean == 2.0
    empty = aa.tensor_stats(torch.ones(0, 4))
    assert empty.shape == [0, 4] and empty.mean is None and empty.position_norm_median is None


def test_tensor_stats_bf16_is_float64():
    t = torch.full((4, 8), 1000.0, dtype=torch.bfloat16)
    s = aa.tensor_stats(t)
    assert s.mean == 1000.0 and s.l2_norm == pytest.approx(1000.0 * np.sqrt(32))


@pytest.mark.parametrize("ext", [".pkl", ".safetensors"])
def test_file_stats_and_metadata(tmp_path, ext):
    rec = make_record()
    path = save(rec, tmp_path / f"r{ext}")
    res = aa.analyze_file(path)
    assert list(res.layers) == LAYERS and res.file == path
    assert res.model == "tiny-test" and res.num_prompt_tokens == 5 and res.num_generated_tokens == 3
    assert res.num_positions == 7 and res.dtype == "float32"
    for name in LAYERS:
        a = rec["activations"][name].double().numpy()
        s = res.layers[name]
        assert s.shape == [7, HIDDEN]
        assert s.mean == pytest.approx(a.mean()) and s.std == pytest.approx(a.std())
        assert s.l2_norm == pytest.approx(np.linalg.norm(a))


def test_file_json_is_the_result_with_its_format_version(tmp_path, capsys):
    """The CLI's --json: the typed result's fields as keys, plus format_version; reading it back gives the result."""
    from activation_eval.analysis.jsonio import from_json
    from activation_eval.schema.stats import FileResult
    path = save(make_record(), tmp_path / "r.safetensors")
    code, out, _ = run_cli(capsys, "--file", path, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["format_version"] == 1 and list(data)[1:4] == ["file", "model", "prompt"]
    assert from_json(FileResult, data) == aa.analyze_file(path)


def test_file_text_table_and_layer_selection(tmp_path, capsys):
    path = save(make_record(), tmp_path / "r.safetensors")
    code, out, _ = run_cli(capsys, "--file", path, "--layers", "layer_1, layer_3")
    assert code == 0
    assert "tiny-test" in out and "position_norm_mean" in out
    assert out.index("layer_1") < out.index("layer_3") and "final_norm" not in out


@pytest.mark.parametrize("ext", [".pkl", ".safetensors"])
def test_seed_only_record(tmp_path, capsys, ext):
    path = save(make_record(seed_only=True), tmp_path / f"seed{ext}")
    res = aa.analyze_file(path)
    assert res.num_prompt_tokens == 5 and res.num_positions == 7 and list(res.layers) == LAYERS
    assert aa.compare_files(path, path).layers["layer_0"].last_prompt_token.cosine == pytest.approx(1.0)


# ----------------------------------------------------------------------------- directory

def test_directory_aggregates_match_numpy(tmp_path, capsys):
    recs = [make_record(seed=i, prompt_len=3 + i, gen_len=2) for i in range(5)]
    for i, r in enumerate(recs):
        save(r, tmp_path / f"r{i}{'.pkl' if i % 2 else '.safetensors'}")
    save(make_record(seed=9, seed_only=True), tmp_path / "seed.pkl")
    recs.append(make_record(seed=9, seed_only=True))
    (tmp_path / "broken.pkl").write_bytes(b"not a pickle")
    res = aa.analyze_directory(tmp_path, progress=False)
    assert res.files_read == 6 and res.files_found == 7 and res.skipped == 1
    assert [e.file for e in res.errors] == ["broken.pkl"] and res.errors[0].error
    assert list(res.layers) == LAYERS and not res.is_run
    for name in LAYERS:
        a = np.concatenate([r["activations"][name].double().numpy() for r in recs])
        s = res.layers[name]
        assert s.files == 6 and s.positions == a.shape[0]
        assert s.mean == pytest.approx(a.mean()) and s.std == pytest.approx(a.std())
        assert s.min == pytest.approx(a.min()) and s.max == pytest.approx(a.max())
        assert s.position_norm_mean == pytest.approx(np.linalg.norm(a, axis=1).mean())
        assert s.position_norm_std == pytest.approx(np.linalg.norm(a, axis=1).std())
    assert aa.analyze_directory(tmp_path, limit=2, progress=False).files_read <= 2
    code, out, _ = run_cli(capsys, "--directory", tmp_path, "--limit", "2", "--json")
    assert code == 0 and json.loads(out)["files_read"] <= 2
    code, out, _ = run_cli(capsys, "--directory", tmp_path)
    assert code == 0 and "records:" in out and "skipped broken.pkl" in out


def test_directory_progress_bar_for_many_files(tmp_path, capsys):
    for i in range(stats.PROGRESS_MIN_FILES + 2):
        save(make_record(seed=i, prompt_len=2, gen_len=1, hidden=4, layers=["layer_0"]), tmp_path / f"r{i:03d}.pkl")
    res = aa.analyze_directory(tmp_path)
    err = capsys.readouterr().err
    n = stats.PROGRESS_MIN_FILES + 2
    assert res.files_read == n and f"{n}/{n}" in err
    aa.analyze_directory(tmp_path, progress=False)
    assert capsys.readouterr().err == ""


def test_directory_run_folder_and_plots(tmp_path, capsys):
    run = make_run(tmp_path / "run", n=24)
    out_dir = tmp_path / "plots"
    code, out, _ = run_cli(capsys, "--directory", run, "--plot", "--output_dir", out_dir, "--json", "--no_progress")
    assert code == 0
    res = json.loads(out)
    assert res["is_run"] and res["files_read"] == 24
    assert {os.path.basename(p) for p in res["plots"]} == {"run_norms.png", "run_pca_layer_2.png"}  # source name first
    for p in res["plots"]:
        assert_png(p)
    code, out, _ = run_cli(capsys, "--directory", run, "--plot", "--layer", "layer_0", "--output_dir", out_dir)
    assert code == 0 and "run_pca_layer_0.png" in out


# ----------------------------------------------------------------------------- compare

@pytest.mark.parametrize("ext", [".pkl", ".safetensors"])
def test_compare_same_file_is_identical(tmp_path, capsys, ext):
    path = save(make_record(), tmp_path / f"r{ext}")
    res = aa.compare_files(path, path)
    assert list(res.layers) == LAYERS and res.common_prefix_tokens == 8 and res.files == [path, path]
    for name, v in res.layers.items():
        for kind in (v.last_prompt_token, v.prompt_mean, v.common_prefix):
            assert kind.cosine == pytest.approx(1.0), name
            assert kind.l2_distance == pytest.approx(0.0, abs=1e-9), name
    assert res.layers["layer_0"].common_prefix.positions == 7


def test_compare_different_lengths_states_what_was_compared(tmp_path, capsys):
    a = make_record(seed=1, input_ids=[1, 2, 3, 4, 5])
    b = make_record(seed=1, input_ids=[1, 2, 3, 9, 9, 9, 9])
    b["activations"] = {k: v.clone() for k, v in b["activations"].items()}
    for k in b["activations"]:  # same activations on the shared prefix
        b["activations"][k][:3] = a["activations"][k][:3]
    pa, pb = save(a, tmp_path / "a.pkl"), save(b, tmp_path / "b.safetensors")
    res = aa.compare_files(pa, pb)
    assert res.num_prompt_tokens == [5, 7] and res.common_prefix_tokens == 3
    notes = " ".join(res.notes)
    assert "prompt lengths differ (5 vs 7" in notes and "position 4 of A with position 6 of B" in notes
    assert "common token prefix: 3 tokens" in notes
    pref = res.layers["layer_1"].common_prefix
    assert pref.positions == 3 and pref.cosine == pytest.approx(1.0) and pref.l2_distance == pytest.approx(0)
    # the last prompt tokens (position 4 of A, 6 of B) and the prompt means, against numpy
    xa, xb = a["activations"]["layer_1"].double().numpy(), b["activations"]["layer_1"].double().numpy()
    u, v = xa[4], xb[6]
    assert res.layers["layer_1"].last_prompt_token.cosine == pytest.approx(u @ v / np.linalg.norm(u) / np.linalg.norm(v))
    assert res.layers["layer_1"].prompt_mean.l2_distance == pytest.approx(np.linalg.norm(xa[:5].mean(0) - xb[:7].mean(0)))
    code, out, _ = run_cli(capsys, "--compare", pa, pb, "--plot", "--output_dir", tmp_path / "plots")
    assert code == 0 and "note: prompt lengths differ" in out and "cos_prefix" in out
    assert_png(str(tmp_path / "plots" / "compare_a_vs_b.png"))                   # names both files

    c = save(make_record(seed=2, input_ids=[50, 51]), tmp_path / "c.pkl")
    res = aa.compare_files(pa, c)
    assert res.layers["layer_0"].common_prefix is None and "no common prefix" in " ".join(res.notes)


def test_compare_hidden_size_mismatch_is_clear_error(tmp_path, capsys):
    pa = save(make_record(hidden=16), tmp_path / "a.pkl")
    pb = save(make_record(hidden=8), tmp_path / "b.pkl")
    code, _, err = run_cli(capsys, "--compare", pa, pb)
    assert code == 2 and err.startswith("error:") and "hidden sizes differ" in err


# ----------------------------------------------------------------------------- plots

def test_file_plots_are_valid_pngs(tmp_path, capsys):
    path = save(make_record(prompt_len=6, gen_len=4), tmp_path / "q1.safetensors")
    out_dir = tmp_path / "plots"
    code, out, _ = run_cli(capsys, "--file", path, "--plot", "--output_dir", out_dir, "--json")
    assert code == 0
    plots = json.loads(out)["plots"]
    assert [os.path.basename(p) for p in plots] == ["q1_norms.png", "q1_histograms.png", "q1_heatmap.png"]
    for p in plots:
        assert_png(p)


def test_heatmap_many_positions(tmp_path):
    rec = make_record(prompt_len=80, gen_len=30)
    assert_png(aa.plot_position_heatmap(rec, str(tmp_path / "h.png")))


def test_plot_functions_are_exported_from_their_owners_and_lazy():
    import subprocess

    from activation_eval.analysis import pca, plots
    from activation_eval.analysis.lens import plots as lens_plots
    from activation_eval.analysis.probe import plots as probe_plots
    owners = {plots: ("plot_layer_norms", "plot_histograms", "plot_position_heatmap", "plot_compare", "default_layer"),
              pca: ("plot_pca",), probe_plots: ("plot_probe",), lens_plots: ("plot_logit_lens",)}
    for module, names in owners.items():
        for name in names:
            assert getattr(aa, name) is getattr(module, name) and name in module.__doc__
    code = "import sys, analyze_activations; sys.exit('matplotlib' in sys.modules or 'sklearn' in sys.modules)"
    root = REPO_ROOT
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def test_records_module_documents_its_names():
    from activation_eval.analysis import arrays as records
    for name in ("as_2d", "token_ids", "record_meta", "load_record", "run_layers", "correct_labels"):
        assert name in records.__doc__ and hasattr(records, name)
    assert records.as_2d(torch.ones(1, 3, 4)).shape == (3, 4) and records.token_ids(None) == []


# ----------------------------------------------------------------------------- probe

def test_probe_finds_planted_signal(tmp_path, capsys):
    run = make_run(tmp_path / "run", n=60, signal_from=2)
    res = aa.probe_run(run, n_bootstrap=1000, cv_seeds=1)
    auroc = {k: v.auroc for k, v in res.layers.items()}
    assert list(auroc) == ["layer_0", "layer_1", "layer_2", "layer_3"]
    assert res.controls["majority"].auroc == pytest.approx(0.5) and res.n == 60
    assert auroc["layer_2"] >= 0.9 and auroc["layer_3"] >= 0.9
    assert auroc["layer_0"] <= 0.75 and auroc["layer_1"] <= 0.75
    assert res.best_layer in ("layer_2", "layer_3") and res.verdict == "layer_2"
    code, out, _ = run_cli(capsys, "--probe", run, "--output_dir", tmp_path / "plots", "--no_progress",
                           "--bootstrap", "1000", "--cv_seeds", "1")
    assert code == 0 and "majority" in out and "verdict:    layer_2" in out
    assert_png(str(tmp_path / "plots" / "probe_run_bootstrap-1000_cv_seeds-1.png"))


def test_probe_stays_near_chance_on_noise(tmp_path):
    run = make_run(tmp_path / "run", n=60, signal_from=None, seed=3)
    res = aa.probe_run(run, n_bootstrap=1000, cv_seeds=1)
    for name, v in res.layers.items():
        assert v.auroc <= 0.75, (name, v)
    assert res.verdict == "no evidence beyond the controls"


def test_probe_errors(tmp_path, capsys):
    one = make_run(tmp_path / "one", n=8, labels=[1] * 8)
    code, _, err = run_cli(capsys, "--probe", one, "--output_dir", tmp_path / "p")
    assert code == 2 and "only one class" in err
    few = make_run(tmp_path / "few", n=6, labels=[1, 1, 1, 1, 1, 0])
    code, _, err = run_cli(capsys, "--probe", few, "--output_dir", tmp_path / "p")
    assert code == 2 and "minority class" in err
    code, _, err = run_cli(capsys, "--probe", tmp_path, "--output_dir", tmp_path / "p")
    assert code == 2 and "not a run folder" in err


# ----------------------------------------------------------------------------- CLI errors

def test_bad_paths_and_unreadable_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(b"\x00garbage")
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"garbage")
    good = save(make_record(), tmp_path / "good.pkl")
    cases = [("--file", tmp_path / "missing.pkl"), ("--file", bad), ("--file", bad_st),
             ("--directory", tmp_path / "nodir"), ("--compare", good, tmp_path / "missing.safetensors"),
             ("--probe", tmp_path / "nodir"), ("--file", good, "--layers", "layer_99")]
    for argv in cases:
        code, out, err = run_cli(capsys, *argv)
        assert code == 2, argv
        assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, (argv, err)
        assert out == ""
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run_cli(capsys, "--directory", empty)
    assert code == 2 and "no activation record files" in err


def test_usage_errors_exit_2(capsys):
    assert aa.main([]) == 2
    assert aa.main(["--file", "a", "--directory", "b"]) == 2
    assert aa.main(["--help"]) == 0
    assert "examples:" in capsys.readouterr().out


def test_debug_shows_traceback(tmp_path):
    with pytest.raises(FileNotFoundError):
        aa.main(["--file", str(tmp_path / "missing.pkl"), "--debug"])
