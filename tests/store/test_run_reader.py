"""The one reader of a run folder (store/run_reader.py): every failure of issue 19 that traces back
to a module deciding for itself where a row's record lives, reproduced on crafted run folders."""
import json
import os
import shutil

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from activation_eval import load_run_layer
from activation_eval.analysis import cli as analysis_cli
from activation_eval.analysis.export_hf import export_hf
from activation_eval.analysis.report import build_report
from activation_eval.analysis.stats import analyze_directory
from activation_eval.store.errors import CorruptFileError
from activation_eval.store.run_reader import RecordMismatchError, RunReader, load_activations, read_run_rows
from helpers import REPO_ROOT, read_rows, run_main


def write_rows(folder, rows):
    with open(os.path.join(folder, "results.jsonl"), "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)


@pytest.fixture(scope="module")
def made(tiny_dir, tmp_path_factory):
    base = tmp_path_factory.mktemp("reader")
    for store in ("files", "shards"):
        assert run_main("--model", tiny_dir, "--limit", "12", "--batch_size", "2", "--max_new_tokens", "4",
                        "--capture_activations", "--layers", "embeddings,0,-1", "--positions", "last_prompt",
                        "--output_dir", base / store, "--activation_store", store) == 0
    return base


@pytest.fixture(params=["files", "shards"])
def run(made, tmp_path, request):
    dst = tmp_path / request.param
    shutil.copytree(made / request.param, dst)
    return dst


def test_duplicate_rows_of_a_killed_resume_count_once(run):
    """A --resume killed while re-answering a unit leaves a unit's rows twice: every analysis sees
    each question once (the last row), as the merge at the end of a run would keep it."""
    rows = read_rows(run)
    again = [dict(r, correct=not r["correct"]) for r in rows[:5]]   # the re-answered rows, a different verdict
    write_rows(run, rows + again)
    X, used = load_run_layer(run, "layer_0")
    assert X.shape[0] == len(used) == 12
    assert sorted(r["id"] for r in used) == sorted(r["id"] for r in rows)
    latest = {r["id"]: r["correct"] for r in rows + again}
    assert all(r["correct"] == latest[r["id"]] for r in used)
    out = export_hf(run, run.parent / "export", layers=["layer_0"])
    assert out.rows == 12
    agg = analyze_directory(str(run), progress=False)
    assert agg.files_read == 12 and agg.skipped == 0


def test_report_and_lens_see_a_shard_store_run(made, tmp_path, tiny_dir):
    """--report on a shard-store run has its probe, lens and PCA (it said "saved no activations")."""
    from activation_eval.models import load_model
    model, tok = load_model(tiny_dir)
    out = build_report(made / "shards", tmp_path / "r.html", progress=False, model=model, tokenizer=tok)
    page = open(out, encoding="utf-8").read()
    assert "saved no activations" not in page
    assert "Logit lens" in page and "PCA" in page and "Probe" in page


def _rewrite_shard(path, edit):
    """Rewrite a shard with its tensors and metadata changed by edit(tensors, metadata)."""
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}
    edit(tensors, meta)
    os.remove(path)
    save_file(tensors, path, metadata=meta)


def test_one_record_text_holding_two_objects_is_corrupt_not_shifted(made, tmp_path):
    """A shard whose first record text holds two JSON objects: joining the texts into one array
    shifted every later row's fields; each text is parsed alone now, so the shard is corrupt."""
    run = tmp_path / "s"
    shutil.copytree(made / "shards", run)
    shard = os.path.join(run, read_rows(run)[0]["activation_shard"])

    def two_objects(tensors, meta):
        blob, o = bytes(tensors["records"].numpy()), tensors["index.record_offsets"].numpy()
        texts = [blob[o[i]:o[i + 1]] for i in range(len(o) - 1)]
        extra = texts[1].replace(b'"correct": false', b'"correct": true').replace(b'"correct":false', b'"correct":true')
        texts[0] = texts[0] + b"," + extra
        new = b"".join(texts)
        tensors["records"] = torch.frombuffer(bytearray(new), dtype=torch.uint8)
        tensors["index.record_offsets"] = torch.tensor(np.cumsum([0] + [len(t) for t in texts]), dtype=torch.int64)

    _rewrite_shard(shard, two_objects)
    with pytest.raises(CorruptFileError):
        list(RunReader(run).records())
    with pytest.raises(ValueError, match=r"none of the 12 records.*JSONDecodeError: Extra data"):
        analyze_directory(str(run), progress=False)         # every row of that (only) shard is unreadable


def test_directory_scan_reports_the_rows_correct_column(run):
    """--directory's correct column is the results row's verdict (not what a record says)."""
    rows = {r["id"]: r for r in read_rows(run)}
    agg = analyze_directory(str(run), progress=False)
    assert agg.files_read == 12
    by_label = {}
    for row, location in RunReader(run).located():
        by_label[location.label(str(run))] = row["correct"]
    assert {f.file: f.correct for f in agg.files} == by_label
    assert sorted(by_label.values()) == sorted(r["correct"] for r in rows.values())


def test_a_row_naming_another_questions_record_is_refused(run):
    rows = read_rows(run)
    field = "activation_shard" if rows[0].get("activation_shard") else "activation_file"
    rows[0][field] = rows[1][field]
    if field == "activation_shard":
        rows[0]["activation_row"] = rows[1]["activation_row"]
    write_rows(run, rows)
    with pytest.raises(RecordMismatchError, match="same record"):
        RunReader(run).located()
    # the record itself says whose it is: with the other row gone, the mismatch is still found
    write_rows(run, [rows[0]])
    with pytest.raises(RecordMismatchError, match=repr(rows[1]["id"])):
        load_activations(run, rows[0]["id"])


def test_record_paths_outside_the_activations_folder_are_refused(run, tmp_path):
    rows = read_rows(run)
    field = "activation_shard" if rows[0].get("activation_shard") else "activation_file"
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copy(os.path.join(run, rows[0][field]), outside)
    for bad in (str(outside), "../elsewhere.safetensors", "/etc/passwd", "activations/../results.jsonl"):
        rows[0][field] = bad
        write_rows(run, rows)
        with pytest.raises(CorruptFileError, match="outside the run's activations folder"):
            load_activations(run, rows[0]["id"])
        with pytest.raises(CorruptFileError, match="outside"):
            load_run_layer(run, "layer_0")
    agg = analyze_directory(str(run), progress=False)       # a scan skips and counts it
    assert agg.files_read == 11 and agg.skipped == 1


def test_a_symlinked_activations_folder_is_followed(run, tmp_path):
    """activations/ may live elsewhere (scratch space): the confinement is to where it resolves."""
    scratch = tmp_path / "scratch"
    shutil.move(os.path.join(run, "activations"), scratch)
    os.symlink(scratch, os.path.join(run, "activations"))
    X, used = load_run_layer(run, "layer_0")
    assert X.shape[0] == 12


def test_a_record_named_by_many_rows_is_read_once(run, monkeypatch):
    """300 rows naming one record (also spelled 300 ways) are not 300 loads: the first row owns it,
    every other row is reported, and a scan reads the record once."""
    from activation_eval.store import run_reader
    rows = read_rows(run)
    field = "activation_shard" if rows[0].get("activation_shard") else "activation_file"
    head, tail = os.path.split(rows[0][field])
    many = [dict(rows[0], id=f"x{i}" if i else rows[0]["id"], **{field: os.path.join(head, *(["."] * (i % 7)), tail)})
            for i in range(300)]
    write_rows(run, many)
    loads = []
    real_file, real_shard = run_reader.load_record_file, run_reader.iter_shard_records
    monkeypatch.setattr(run_reader, "load_record_file", lambda *a, **k: loads.append(a) or real_file(*a, **k))
    monkeypatch.setattr(run_reader, "iter_shard_records", lambda *a, **k: loads.append(a) or real_shard(*a, **k))
    agg = analyze_directory(str(run), progress=False)
    assert len(loads) == 1 and agg.files_read == 1 and agg.skipped == 299


def test_a_shard_row_whose_id_is_not_the_questions_is_refused(made, tmp_path):
    run = tmp_path / "s"
    shutil.copytree(made / "shards", run)
    rows = read_rows(run)
    rows[0]["activation_row"], rows[1]["activation_row"] = rows[1]["activation_row"], rows[0]["activation_row"]
    write_rows(run, rows[:1])
    with pytest.raises(RecordMismatchError, match="holds"):
        load_activations(run, rows[0]["id"])


def test_a_non_integer_or_negative_shard_row_is_a_clear_error(made, tmp_path):
    run = tmp_path / "s"
    shutil.copytree(made / "shards", run)
    rows = read_rows(run)
    for bad in ("3", -1, 1.5, None, 10**30):
        rows[0]["activation_row"] = bad
        write_rows(run, rows[:1])
        with pytest.raises((CorruptFileError, RecordMismatchError)):
            load_activations(run, rows[0]["id"])


def test_runs_of_earlier_versions_keep_their_batch_field_readable(run):
    """Rows written before the rename name their unit "batch": read as "unit"."""
    rows = read_rows(run)
    write_rows(run, [{("batch" if k == "unit" else k): v for k, v in r.items()} for r in rows])
    assert [r["unit"] for r in read_run_rows(run)] == [r["unit"] for r in rows]
    assert all("batch" not in r for r in read_run_rows(run))


def test_the_cli_probe_and_directory_modes_count_each_question_once(run, capsys, tmp_path):
    rows = read_rows(run)
    for i, row in enumerate(rows):              # a random model is never right: make both classes
        row["correct"] = i % 2 == 0
    write_rows(run, rows + [dict(r, correct=not r["correct"]) for r in rows[:6]])
    assert analysis_cli.main(["--probe", str(run), "--json", "--no_progress", "--bootstrap", "1000",
                              "--folds", "2", "--output_dir", str(tmp_path / "plots")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 12 and res["class_counts"] == {"False": 6, "True": 6}
    assert analysis_cli.main(["--directory", str(run), "--json", "--no_progress"]) == 0
    assert json.loads(capsys.readouterr().out)["files_read"] == 12


def test_only_run_folder_knows_where_results_live():
    """No analysis module reads activation_file / activation_shard itself: the reader does."""
    root = os.path.join(REPO_ROOT, "activation_eval", "analysis")
    for name in os.listdir(root):
        if name.endswith(".py"):
            text = open(os.path.join(root, name), encoding="utf-8").read()
            assert '"activation_file"' not in text and '"activation_shard"' not in text, name
            assert "read_results" not in text, name
