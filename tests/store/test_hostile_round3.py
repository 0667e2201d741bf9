"""Issue 20 (hostile inputs, round 3), the store's side: every finding reproduced with a crafted file
or run folder. One bounded JSON reader (store/bounded_json.py) for results.jsonl, run_config.json,
summary.json, shard record texts and .safetensors headers; an unpickler whose work is bounded (hash
collisions, huge integers); the tensor and record-JSON checks both stores share; only the documented
errors (CorruptFileError / UnsafeFileError / RecordMismatchError, OSError), each naming its file."""
import io
import json
import logging
import os
import pickle
import random
import time
import tracemalloc

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import hostile
from activation_eval import load_run_layer
from activation_eval.analysis import cli as analysis_cli
from activation_eval.analysis.export_hf import export_hf
from activation_eval.analysis.report import build_report
from activation_eval.analysis.stats import analyze_directory
from activation_eval.store import bounded_json, run_files, run_folder
from activation_eval.store.bounded_json import JSONLimitError, loads, loads_lines
from activation_eval.store.errors import CorruptFileError
from activation_eval.store.records import load_record_file, save_activations
from activation_eval.store.run_reader import RecordMismatchError, RunReader
from activation_eval.store.safe_pickle import safe_load
from activation_eval.store.safetensors_file import MAX_TENSORS
from activation_eval.store.shard_writer import write_shard
from activation_eval.store.shards import iter_shard_records


def _rows(run):
    with open(os.path.join(run, "results.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _write_lines(run, lines):
    with open(os.path.join(run, "results.jsonl"), "wb") as f:
        f.write(b"".join(line + b"\n" for line in lines))


def _lines(rows):
    return [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in rows]


# ----------------------------------------------------------------------------- one bounded JSON reader

def test_a_deep_results_line_is_dropped_with_its_line_number(tmp_path, caplog):
    """One line 100k brackets deep gave a RecursionError traceback in every reader (and --resume):
    it is dropped and logged with its line number, like a torn line; every other row is kept and
    every analysis works."""
    run = hostile.write_run(tmp_path / "run")
    lines = _lines(_rows(run))
    _write_lines(run, lines[:3] + [b"[" * 100_000 + b"]" * 100_000] + lines[3:])
    with caplog.at_level(logging.WARNING):
        rows = run_folder.read_results(run)
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(8)]
    assert "line 4" in caplog.text
    assert run_files.repair_results(os.path.join(run, "results.jsonl")) == rows     # what --resume does
    assert [r["id"] for r in _rows(run)] == [r["id"] for r in rows]
    _write_lines(run, lines[:3] + [b'{"id": ' * 5000 + b"1" + b"}" * 5000] + lines[3:])
    X, used = load_run_layer(run, "layer_0")
    assert X.shape[0] == len(used) == 8
    assert analyze_directory(run, progress=False).files_read == 8
    assert analysis_cli.main(["--probe", str(run), "--folds", "2", "--output_dir", str(tmp_path / "o")]) == 0


@pytest.mark.parametrize("pair", [[b'{"a":"', b'"}, {"b":1}'], [b'{"a":[1', b'2]}, {"c":1}'],
                                  [b'{"x":[[', b']]}'], [b'{"id": "q9",', b'"x": 1}']])
def test_two_torn_lines_never_parse_as_rows(tmp_path, pair):
    """The fast path joined the lines with "," into one array: `{"a":"` + `"}, {"b":1}` read as two
    rows, `{"a":[1` + `2]}, {"c":1}` too, though neither line is a JSON object. Each line is now
    parsed alone: both lines are dropped, the rows around them kept."""
    run = hostile.write_run(tmp_path / "run")
    lines = _lines(_rows(run))
    _write_lines(run, lines[:2] + pair + lines[2:])
    rows, dropped = run_folder.scan_results(os.path.join(run, "results.jsonl"))
    assert [r["id"] for r in rows] == [f"q{i}" for i in range(8)]
    assert dropped == [3, 4]


def test_line_separators_inside_strings_are_valid_json(tmp_path):
    """U+2028, U+2029 and U+0085 are valid raw inside JSON strings; lines split on "\\n" only keep them."""
    run = hostile.write_run(tmp_path / "run")
    rows = _rows(run)
    rows[1]["category"] = "a\u2028b"
    rows[2]["prompt"] = "x\u2029y\x85z\r"
    _write_lines(run, _lines(rows))
    assert run_folder.read_results(run) == rows
    assert loads_lines(b'{"a": "\xe2\x80\xa8"}\r\n\n \t\n') == ([(1, {"a": "\u2028"})], [])


def test_deep_run_config_and_summary_are_refused_alone(tmp_path):
    """A 100k-deep summary.json made --report fail whole (RecursionError); run_config.json too. Each
    is a CorruptFileError naming it; the report is made, noting the part it could not read."""
    run = hostile.write_run(tmp_path / "run")
    for name in ("summary.json", "run_config.json"):
        with open(os.path.join(run, name), "w") as f:
            f.write('{"a": ' * 100_000 + "1" + "}" * 100_000)
    for read, name in ((run_folder.read_summary, "summary.json"), (run_folder.read_run_config, "run_config.json")):
        with pytest.raises(CorruptFileError, match=f"nesting deeper than 100.*{name}$"):
            read(run)
    assert len(RunReader(run).rows) == 8
    out = build_report(run, tmp_path / "r.html", progress=False, lens=False)
    page = open(out, encoding="utf-8").read()
    assert "PCA" in page and "Probe" in page and "nesting deeper than 100" in page


def test_the_bounded_reader_checks_limits_without_recursion():
    """100 levels parse, 101 do not, whatever the text's size; brackets inside strings (with escaped
    quotes) do not count; a text of more than max_values values is refused before it is parsed."""
    assert loads("[" * 100 + "]" * 100) == loads("[" * 100 + "]" * 100)
    for deep in ("[" * 101 + "]" * 101, "[" * 1_000_000, '{"a":' * 200_000):
        with pytest.raises(JSONLimitError, match="nesting deeper than 100"):
            loads(deep)
    assert loads(json.dumps(["[" * 500, '\\"{' * 300, {"k\\": "]]"}])) == ["[" * 500, '\\"{' * 300, {"k\\": "]]"}]
    with pytest.raises(JSONLimitError, match="more than 1000 values"):
        loads("[" + ",".join(["0"] * 1001) + "]", max_values=1000)
    assert len(loads(json.dumps([",,,,"] * 500), max_values=1000)) == 500
    with pytest.raises(ValueError):                 # UTF-16: json.loads(bytes) would take it
        loads('{"a": 1}'.encode("utf-16"))


def test_exact_counts_match_a_reference_scanner(monkeypatch):
    """The vectorised scan of a text over the quick bounds, in blocks of 7 bytes (so quotes and
    backslash runs cross block edges), against a character-by-character reference."""
    monkeypatch.setattr(bounded_json, "_BLOCK", 7)

    def reference(text):
        depth = deepest = 0
        items, inside, run = 1, False, 0
        for ch in text:
            if ch == '"' and run % 2 == 0:
                inside = not inside
            elif not inside and ch in "[{":
                depth, items = depth + 1, items + 1
                deepest = max(deepest, depth)
            elif not inside and ch in "]}":
                depth -= 1
            elif not inside and ch == ",":
                items += 1
            run = run + 1 if ch == "\\" else 0
        return deepest, items
    rng = random.Random(0)
    for _ in range(2000):
        text = "".join(rng.choice('[]{},"\\ab') for _ in range(rng.randint(0, 60)))
        assert bounded_json._exact_counts(text.encode()) == reference(text), text


# ----------------------------------------------------------------------------- the unpickler bounds work

@pytest.mark.parametrize("kind", ["dict", "set", "frozenset"])
def test_keys_that_share_one_hash_are_refused_fast(tmp_path, kind):
    """40k int keys k * (2**61 - 1) all hash to 0: inserting them took ~30 s (146k keys, a 1.9 MB
    file: 627 s). Keys of any type but str, bytes, bool, None and small ints are refused at once."""
    path = tmp_path / "keys.pkl"
    path.write_bytes(hostile.same_hash_keys(40_000, kind))
    start = time.perf_counter()
    with pytest.raises(CorruptFileError, match=f"{kind} (key|member) that is an int outside.*keys.pkl$"):
        load_record_file(path)
    assert time.perf_counter() - start < 3


def test_records_keep_the_keys_records_use(tmp_path):
    rec = dict(hostile.record(), extra={"a": 1, 2: "b", -3: None, None: 0, True: 1, b"k": 2},
               tags={"x", 1}, frozen=frozenset({"y", 2 ** 61 - 2}))
    for protocol in (2, 5):
        path = tmp_path / f"r{protocol}.pkl"
        path.write_bytes(pickle.dumps(rec, protocol=protocol))
        got = load_record_file(path)
        assert got["extra"] == rec["extra"] and got["tags"] == rec["tags"] and got["frozen"] == rec["frozen"]
    for key in (1.5, (1, 2), 2 ** 61 - 1):
        with pytest.raises(CorruptFileError, match="dict key"):
            safe_load(io.BytesIO(pickle.dumps({"activations": {}, "x": {key: 1}}, protocol=2)))


def test_a_shape_of_huge_integers_is_refused_before_arithmetic(tmp_path):
    """16 random ints of 60 kB each as a shape: multiplying them out took ~20 s (of 1 MB each: 313 s).
    Their size is checked before any arithmetic."""
    path = tmp_path / "shape.pkl"
    path.write_bytes(hostile.huge_shape(60_000))
    start = time.perf_counter()
    with pytest.raises(CorruptFileError, match="bad shape <a tuple holding an integer too long to print>.*shape.pkl$"):
        load_record_file(path)
    assert time.perf_counter() - start < 3


def test_a_header_of_many_entries_is_refused_in_proportion(tmp_path):
    """A header of 300k tensor entries (17 MB): json made every entry's dicts first (10^6 entries,
    58 MB: 1.74 GB and 34 s). Its values are counted before it is parsed: refused in about the time
    of reading it, with memory a few times its size."""
    path = tmp_path / "many.safetensors"
    path.write_bytes(hostile.many_entries(300_000))
    size = os.path.getsize(path)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(CorruptFileError, match="more than .* values.*many.safetensors$"):
            load_record_file(path)
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert seconds < 3 and peak < 5 * size, (seconds, peak / size)
    path.write_bytes(hostile.many_entries(MAX_TENSORS + 1))
    with pytest.raises(CorruptFileError, match=f"more than {MAX_TENSORS}"):
        load_record_file(path)


# ----------------------------------------------------------------------------- one checker for both stores

def _bool_record():
    rec = hostile.record()
    rec["activations"]["mask"] = torch.tensor([[True, False]] * rec["activations"]["embeddings"].shape[0])
    return rec


def _set_bool_byte(path, key):
    """Set the first byte of tensor `key` of the .safetensors at `path` to 7."""
    data = bytearray(open(path, "rb").read())
    n = int.from_bytes(data[:8], "little")
    start = json.loads(data[8:8 + n])[key]["data_offsets"][0]
    data[8 + n + start] = 7
    open(path, "wb").write(bytes(data))


def test_bool_bytes_other_than_0_and_1_are_refused_by_both_stores(tmp_path):
    """The file store refused bool bytes 2-255 (undefined behaviour in torch); the shard reader took
    them. Both read tensors through safetensors_file.read_tensor, which checks them."""
    file = save_activations(_bool_record(), tmp_path / "r.safetensors")
    shard = write_shard(tmp_path / "units" / "abcdef.safetensors", ["q1"], [_bool_record()])
    _set_bool_byte(file, "activations.mask")
    _set_bool_byte(shard, "act.mask")
    with pytest.raises(CorruptFileError, match="bool bytes other than 0 and 1.*r.safetensors$"):
        load_record_file(file)
    with pytest.raises(CorruptFileError, match="bool bytes other than 0 and 1.*abcdef.safetensors$"):
        list(iter_shard_records(shard))


def test_deep_record_json_is_refused_by_both_stores(tmp_path):
    """A record field 900 deep: the file store stopped at 100, the shard reader took it."""
    deep = 1
    for _ in range(900):
        deep = {"a": deep}
    rec = dict(hostile.record(), grading=deep)
    file = save_activations(rec, tmp_path / "r.safetensors")
    shard = write_shard(tmp_path / "units" / "abcdef.safetensors", ["q1"], [rec])
    with pytest.raises(CorruptFileError, match="nesting deeper than 100.*r.safetensors$"):
        load_record_file(file)
    with pytest.raises(CorruptFileError, match="nesting deeper than 100.*abcdef.safetensors$"):
        list(iter_shard_records(shard))


def _as_utf16(path):
    data = open(path, "rb").read()
    n = int.from_bytes(data[:8], "little")
    text = data[8:8 + n].decode("utf-8").rstrip(" ").encode("utf-16-le")
    text += b" \x00" * (-len(text) % 8 // 2)
    open(path, "wb").write(len(text).to_bytes(8, "little") + text + data[8 + n:])


def test_a_utf16_header_is_refused_by_both_stores(tmp_path):
    """json.loads(bytes) detects UTF-16 and UTF-32: a UTF-16 header was read. The format is UTF-8."""
    file = save_activations(hostile.record(), tmp_path / "r.safetensors")
    shard = write_shard(tmp_path / "units" / "abcdef.safetensors", ["q1"], [hostile.record()])
    for path in (file, shard):
        _as_utf16(path)
        assert json.loads(open(path, "rb").read()[8:].split(b"}\x00 ")[0] + b"}\x00")  # what json took
    with pytest.raises(CorruptFileError, match="r.safetensors$"):
        load_record_file(file)
    with pytest.raises(CorruptFileError, match="abcdef.safetensors$"):
        list(iter_shard_records(shard))


# ----------------------------------------------------------------------------- only the documented errors

def test_an_odd_shard_row_is_skipped_alone(tmp_path):
    """A row naming shard row 99 (or another question's row) made the scan skip its whole shard; it
    is skipped and counted alone. Every mode that reads it whole raises RecordMismatchError."""
    run = hostile.write_run(tmp_path / "run", "shards")
    rows = _rows(run)
    rows[1]["activation_row"] = 99
    rows[6]["activation_row"] = 0              # q6 names q4's row
    _write_lines(run, _lines(rows))
    agg = analyze_directory(run, progress=False)
    assert agg.files_read == 6 and agg.skipped == 2
    assert {e.file for e in agg.errors} == {"activations/units/abcdef0.safetensors#99", "row 'q6'"}
    assert "name the same record" in str(agg.errors)
    got = list(RunReader(run).records(errors="yield"))
    assert sum(isinstance(r, RecordMismatchError) for _, r in got) == 2 and len(got) == 8
    for call in (lambda: load_run_layer(run, "layer_0"), lambda: export_hf(run, tmp_path / "hf")):
        with pytest.raises(RecordMismatchError, match=r"(names row 99 of the shard|name the same record).*: /\S+$"):
            call()


def test_odd_row_and_record_fields_give_documented_errors(tmp_path, capsys):
    """num_prompt_tokens "5" in a record (TypeError), a list category and a lone surrogate id in
    --export_hf (ArrowTypeError, UnicodeEncodeError), a dict id in --report (TypeError), a FIFO
    named by a row ("does not exist"), --directory /dev/zero ("no such directory")."""
    run = hostile.write_run(tmp_path / "run")
    rows = _rows(run)
    path = os.path.join(run, rows[1]["activation_file"])
    rec = load_record_file(path)
    rec["num_prompt_tokens"] = "5"
    save_activations(rec, path)
    with pytest.raises(CorruptFileError, match=f"num_prompt_tokens is '5', not an integer: {path}$"):
        load_run_layer(run, "layer_0")
    save_activations(dict(rec, num_prompt_tokens=4), path)
    rows[2]["category"] = ["x", 1]
    for i, qid in ((3, "q\ud8003"), (5, {"a": 1})):          # rows without records: export has 6 rows
        rows[i]["id"] = qid
        rows[i].pop("activation_file")
    _write_lines(run, [json.dumps(r).encode() for r in rows])
    out = export_hf(run, tmp_path / "hf", layers=["layer_0"])
    assert out.rows == 6
    page = open(build_report(run, tmp_path / "r.html", progress=False, lens=False), encoding="utf-8").read()
    assert "PCA" in page and "q\\ud8003" in page
    run_files.repair_results(os.path.join(run, "results.jsonl"))       # rewrites need no UTF-8 of a surrogate
    run_files.merge_results(run)
    assert run_folder.read_results(run) == rows
    os.mkfifo(os.path.join(run, "activations", "fifo.safetensors"))
    rows[4]["activation_file"] = "activations/fifo.safetensors"
    _write_lines(run, [json.dumps(r).encode() for r in rows])
    with pytest.raises(CorruptFileError, match="names 'activations/fifo.safetensors', which is not a regular file"):
        load_run_layer(run, "layer_0")
    assert analyze_directory(run, progress=False).skipped == 1
    capsys.readouterr()
    assert analysis_cli.main(["--directory", "/dev/zero"]) == 2
    err = capsys.readouterr().err
    assert err == "error: not a folder: /dev/zero (--directory reads a folder of records or a run folder)\n"


def test_a_row_naming_its_record_with_a_number_is_skipped(tmp_path):
    """iter_record_files of a run folder without activations/ joined every row's activation_file to the
    folder: a row with `"activation_file": 5` was a TypeError."""
    run = hostile.write_run(tmp_path / "run")
    os.rename(os.path.join(run, "activations"), os.path.join(run, "acts"))
    rows = _rows(run)
    for row in rows:
        row["activation_file"] = row["activation_file"].replace("activations", "acts")
    rows[0]["activation_file"], rows[1]["activation_file"] = 5, ["a"]
    _write_lines(run, _lines(rows))
    assert run_folder.iter_record_files(run) == sorted(os.path.join(run, r["activation_file"]) for r in rows[2:])


def test_paths_that_name_no_file_are_refused(tmp_path):
    """Found by the run-folder fuzzer: a lone surrogate ("\\ud800", valid JSON) as activation_file or as
    run_config.json's activation_save_dir was a UnicodeEncodeError from os.path; a NUL a ValueError."""
    run = hostile.write_run(tmp_path / "run")
    rows = _rows(run)
    rows[0]["activation_file"], rows[1]["activation_file"] = "activations/\ud800", "activations/a\0b"
    _write_lines(run, [json.dumps(r).encode() for r in rows])
    with open(os.path.join(run, "run_config.json"), "w") as f:
        json.dump({"activation_save_dir": "\ud800"}, f)
    pairs, bad = RunReader(run).located(errors="collect")
    assert len(pairs) == 6 and [type(e) for _, e in bad] == [CorruptFileError] * 2
    assert all("not a path" in str(e) for _, e in bad)
    assert analyze_directory(run, progress=False).skipped == 2


def test_save_file_shards_stay_readable(tmp_path):
    """Control: a shard rewritten by the safetensors library itself (its own key order) still reads."""
    shard = write_shard(tmp_path / "units" / "abcdef.safetensors", ["q1"], [hostile.record()])
    with safe_open(shard, framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    os.remove(shard)
    save_file(tensors, shard, metadata=meta)
    ((row, rec),) = iter_shard_records(shard)
    assert torch.equal(rec["activations"]["layer_0"], hostile.record()["activations"]["layer_0"])
