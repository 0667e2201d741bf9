"""Hostile benchmark files (issue 20, items 1, 2, 5 and 7 for the benchmark readers): each finding of
the second review reproduced from a file built here (tests/hostile_benchmarks.py), then refused with
one BenchmarkError naming the file, the place, the field and the limit to raise; valid input that
was refused (raw U+2028 in a JSONL string) is read. The dangerous cases run in a subprocess, so
that a crash is a failed test, not a dead test run."""
import json
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import hostile_benchmarks as hb
from activation_eval.eval.benchmark import BenchmarkError, load_benchmark, read_benchmark
from activation_eval.eval.benchmark_limits import DEFAULT_LIMITS, BenchmarkLimits, json_depth_at, parse_limits, value_size
from helpers import REPO_ROOT

LOAD_IN_CHILD = """
import sys
from activation_eval.eval.benchmark import BenchmarkError, read_benchmark
try:
    read_benchmark(sys.argv[1])
except BenchmarkError as e:
    print("REFUSED", e)
"""


def _child_peak_read(path, limit_mb=None):
    """(returncode, stdout) of read_benchmark(path) in a fresh interpreter."""
    env = dict(os.environ, PYTHONPATH=REPO_ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", LOAD_IN_CHILD, os.fspath(path)], capture_output=True, text=True,
                          env=env, timeout=300)
    return proc.returncode, proc.stdout + proc.stderr


# ----------------------------------------------------------------------------- 1. corrupt Arrow

def test_corrupt_string_offsets_in_a_datasets_folder_are_refused_not_a_crash(tmp_path):
    folder = hb.corrupt_offsets_folder(tmp_path / "seg")
    code = "import datasets, sys; datasets.load_from_disk(sys.argv[1]).to_list()"
    crash = subprocess.run([sys.executable, "-c", code, folder], capture_output=True, timeout=300)
    assert crash.returncode < 0, "the crafted folder no longer crashes datasets' own reader: rebuild it"
    rc, out = _child_peak_read(folder)
    assert rc == 0 and "REFUSED" in out, out
    assert f"{folder}: rows 1-8: corrupt Arrow data" in out and "Offset" in out


def test_valid_datasets_folders_still_read(tmp_path):
    paths = hb.valid_files(tmp_path)
    rows = load_benchmark(paths["seed_dataset"])
    assert [r["id"] for r in rows] == ["q1", "q2", "q3", "q4"]
    assert rows[0]["answer"] == ["B"] and rows[2]["answer"] == ["B"] and rows[1]["answer"] == ["Lima", "Lima, Peru"]
    assert [r["id"] for r in load_benchmark(paths["seed_splits"], split="test")] == ["q1", "q2", "q3", "q4"]
    with pytest.raises(BenchmarkError, match="has the splits train, test; pass --split"):
        load_benchmark(paths["seed_splits"])
    # every format reads the same rows
    expected = load_benchmark(paths["seed.jsonl"])
    for name in ("seed.json", "seed.csv", "seed.tsv", "seed.parquet"):
        assert load_benchmark(paths[name]) == expected, name


def test_a_data_file_outside_the_folder_is_refused(tmp_path):
    paths = hb.valid_files(tmp_path)
    state = os.path.join(paths["seed_dataset"], "state.json")
    with open(state) as f:
        data = json.load(f)
    data["_data_files"] = [{"filename": "../seed.parquet"}]
    with open(state, "w") as f:
        json.dump(data, f)
    with pytest.raises(BenchmarkError, match="names a data file outside the folder"):
        load_benchmark(paths["seed_dataset"])


def test_arrow_errors_are_benchmark_errors_with_the_path(tmp_path):
    """Truncated or garbled Arrow / parquet data: a BenchmarkError naming the path, never ArrowInvalid."""
    paths = hb.valid_files(tmp_path)
    arrow = hb._arrow_file(paths["seed_dataset"])
    data = open(arrow, "rb").read()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 9):
        open(arrow, "wb").write(data[:cut])
        with pytest.raises(BenchmarkError, match=str(paths["seed_dataset"])):
            load_benchmark(paths["seed_dataset"])
    parquet = paths["seed.parquet"]
    raw = open(parquet, "rb").read()
    open(parquet, "wb").write(raw[:4] + b"\x00" * 40 + raw[44:])
    with pytest.raises(BenchmarkError, match="seed.parquet"):
        load_benchmark(parquet)


# ----------------------------------------------------------------------------- 2. compression bombs

def test_rows_beyond_the_limit_are_refused_from_the_parquet_metadata(tmp_path):
    path = hb.rle_bomb_parquet(tmp_path / "rle.parquet", rows=150_000)
    assert os.path.getsize(path) < 20_000
    with pytest.raises(BenchmarkError) as e:
        read_benchmark(path, limits="rows=100000")
    message = str(e.value)
    assert message.startswith(f"{path}: the file's metadata (150,000 rows)")
    assert "more than 100,000 rows" in message and "--benchmark_limits rows=200000" in message
    from activation_eval.eval.benchmark_files import read_records
    records, fields, _ = read_records(path, limits="rows=150000")
    assert len(records) == 150_000 and records[-1] == ("row 150000", {"question": "What is 2 + 2?", "answer": "4"})


@pytest.mark.slow
def test_the_30M_row_rle_parquet_of_the_review_is_refused_at_once(tmp_path):
    path = hb.rle_bomb_parquet(tmp_path / "rle.parquet")          # 30M rows
    assert os.path.getsize(path) < 1_000_000
    rc, out = _child_peak_read(path)
    assert rc == 0 and "REFUSED" in out and "30,000,000 rows" in out and "over the limit of 1,000,000 (rows)" in out


def test_one_huge_question_in_a_tiny_parquet_is_refused_before_decoding(tmp_path):
    path = hb.big_cell_parquet(tmp_path / "big.parquet", 20_000_000)
    assert os.path.getsize(path) < 10_000
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(path)
    assert str(e.value).startswith(f"{path}: row group 1, column 'question': decompresses to 2")
    hint = str(e.value).rsplit("--benchmark_limits ", 1)[1]            # a hint that reads the file (issue 29)
    assert "(cell_bytes)" in str(e.value) and hint.startswith("cell_bytes=") and int(hint[11:]) >= 20_000_000
    assert len(load_benchmark(path, limits=hint)[0]["question"]) == 20_000_000
    with pytest.raises(BenchmarkError, match=r"decompresses to 20,000,0\d\d bytes, more than 1 rows can hold with "
                                             r"at most 10,485,760 bytes a cell \(cell_bytes\)"):
        load_benchmark(path, limits="cell_bytes=10MiB")
    assert len(load_benchmark(path, limits="cell_bytes=20MB")[0]["question"]) == 20_000_000


def test_a_zstd_arrow_folder_is_refused_before_decompressing(tmp_path):
    folder = hb.zstd_arrow_folder(tmp_path / "zstd", 64 << 20)
    size = sum(os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder))
    assert size < 20_000
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(folder)
    assert "message 2 (compressed): decompresses to 67,108,8" in str(e.value) and "(cell_bytes)" in str(e.value)
    with pytest.raises(BenchmarkError, match=r"compressed data that decompresses to 67,108,\d+ bytes, over the "
                                             r"limit of 1,048,576 \(total_bytes\)"):
        load_benchmark(folder, limits="cell_bytes=100MiB,total_bytes=1MiB")
    small = hb.zstd_arrow_folder(tmp_path / "small", 1000)          # compressed, within the limits: read
    assert load_benchmark(small)[0]["question"] == "x" * 1000


def test_total_bytes_and_cell_limits_name_row_and_field(tmp_path):
    rows = [{"id": f"q{i}", "question": "q" * 100, "answer": "a" * 10} for i in range(50)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "b.parquet")
    with open(tmp_path / "b.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    # a text file is read whole: its size is checked first; parquet counts the cells read
    for name, where in (("b.parquet", "row 10"), ("b.jsonl", "the whole file")):
        path = tmp_path / name
        with pytest.raises(BenchmarkError, match=f"{where}: the cells read so far hold [0-9,]+ bytes, over the limit "
                                                 r"of 1,100 \(total_bytes\)"):
            load_benchmark(path, limits="total_bytes=1100")
        where = where.replace("the whole file", "line 10")
        with pytest.raises(BenchmarkError, match=rf"{where[:-2]}1: field 'question' holds 100 bytes.*\(cell_bytes\)"):
            load_benchmark(path, limits="cell_bytes=99")
        with pytest.raises(BenchmarkError, match=r"more than 49 rows.*--benchmark_limits rows=98"):
            load_benchmark(path, limits="rows=49")
        assert len(load_benchmark(path, limits="rows=50,cell_bytes=100,total_bytes=10000")) == 50


def test_unused_columns_are_neither_read_nor_limited(tmp_path):
    """An image-like column the benchmark does not use may exceed cell_bytes: only named fields are read."""
    pq.write_table(pa.table({"question": ["Q?"], "answer": ["A"], "image": [b"\0" * (2 << 20)]}),
                   tmp_path / "mm.parquet")
    assert load_benchmark(tmp_path / "mm.parquet")[0]["question"] == "Q?"
    with pytest.raises(BenchmarkError, match="field 'image' holds 2,097,152 bytes"):
        load_benchmark(tmp_path / "mm.parquet", question_field="image")


def test_dictionary_encoded_rows_are_measured_per_row(tmp_path):
    """A dictionary value used by many rows counts at every row (what Python materialises)."""
    question = pa.DictionaryArray.from_arrays(pa.array([0] * 2000, pa.int32()), pa.array(["q" * 1000]))
    pq.write_table(pa.table({"question": question, "answer": ["a"] * 2000}), tmp_path / "d.parquet")
    with pytest.raises(BenchmarkError, match=r"row 1000: the cells read so far hold 1,001,000 bytes"):
        load_benchmark(tmp_path / "d.parquet", limits="total_bytes=1000000")


def test_text_files_larger_than_total_bytes_are_refused_before_reading(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text(json.dumps({"question": "Q?", "answer": "A"}) + "\n" + " " * 5000 + "\n")
    with pytest.raises(BenchmarkError, match=r"b.jsonl: the whole file: the cells read so far hold 4,097 bytes, "
                                             r"over the limit of 4,096 \(total_bytes\)"):
        load_benchmark(path, limits="total_bytes=4KiB")


def test_a_fifo_is_refused_not_waited_on(tmp_path):
    fifo = tmp_path / "b.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(BenchmarkError, match="b.jsonl: not a regular file"):
        load_benchmark(fifo)


def test_parse_limits():
    assert parse_limits(None) == DEFAULT_LIMITS == BenchmarkLimits(1_000_000, 1 << 20, 1 << 30, 100)
    assert parse_limits("rows=5,total_bytes=2GiB, depth = 7") == BenchmarkLimits(5, 1 << 20, 2 << 30, 7)
    assert parse_limits("cell_bytes=3MB").cell_bytes == 3_000_000
    for bad in ("rows", "rows=0", "rows=-1", "colour=3", "rows=1e6", "cell_bytes=2 parsecs", "rows=1" + "0" * 30):
        with pytest.raises(BenchmarkError, match="--benchmark_limits"):
            parse_limits(bad)


def test_the_cli_flag_reaches_the_reader(tmp_path):
    from activation_eval.run.cli import build_parser
    from activation_eval.run.config import RunError, config_from_args
    args = build_parser().parse_args(["--benchmark_limits", "rows=7,cell_bytes=2MiB", "--output_dir", str(tmp_path)])
    config = config_from_args(args)
    assert parse_limits(config.benchmark_options()["limits"]) == BenchmarkLimits(7, 2 << 20, 1 << 30, 100)
    assert "benchmark_limits" not in config.resume_view()
    with pytest.raises(RunError, match="bad entry 'rows=x'"):
        config_from_args(build_parser().parse_args(["--benchmark_limits", "rows=x", "--output_dir", str(tmp_path)]))


# ----------------------------------------------------------------------------- 3. nesting, lines, tables

@pytest.mark.parametrize("builder, where", [(hb.deep_jsonl, "line 2"), (hb.deep_json, "line 3")])
@pytest.mark.parametrize("depth", [150, 100_000])
def test_deep_nesting_is_one_error_naming_the_line(tmp_path, builder, where, depth):
    path = builder(tmp_path / ("deep.jsonl" if builder is hb.deep_jsonl else "deep.json"), depth)
    with pytest.raises(BenchmarkError) as e:
        load_benchmark(path)
    assert str(e.value).startswith(f"{path}: {where}") and "deeper than 100 levels (depth)" in str(e.value)


def test_depth_limit_can_be_raised(tmp_path):
    path = hb.deep_jsonl(tmp_path / "deep.jsonl", 150)
    bench = read_benchmark(path, limits="depth=200")       # read; the deep row is then skipped as bad choices
    assert [s["where"] for s in bench.skipped] == ["line 2"]


def test_depth_scan_and_sizes_without_recursion():
    text = '{"a": "[[[[", "b": [[1]], "c": "\\"[["}'
    assert json_depth_at(text, 3) is None and json_depth_at(text, 2) == text.index("[[1") + 1
    assert json_depth_at("[" * 10 ** 6, 100) == 100
    assert value_size(json.loads("[" * 500 + "]" * 500), 100) == (0, 101)
    assert value_size({"é": "né", "n": [1, None]}, 100) == (3 + 1 + 16 + 1, 2)


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_jsonl_lines_end_at_newline_only(tmp_path, separator):
    path = tmp_path / "b.jsonl"
    rows = [{"id": "a", "question": f"one{separator}two?", "answer": "x"}, {"id": "b", "question": "Q?", "answer": "y"}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert separator in path.read_text(encoding="utf-8")
    got = read_benchmark(path)
    assert [r["question"] for r in got.rows] == [f"one{separator}two?", "Q?"] and not got.skipped
    path.write_text('{"question": "Q?", "answer": "x"}\n' + separator + "\n", encoding="utf-8")
    with pytest.raises(BenchmarkError, match="line 2: malformed JSON"):
        read_benchmark(path)


def test_huge_integer_is_one_error(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"question": "Q?", "answer": ' + "9" * 5000 + "}\n")
    with pytest.raises(BenchmarkError, match="b.jsonl: line 1: Exceeds the limit"):
        load_benchmark(path)


@pytest.mark.parametrize("delimiter, ext", [(",", "csv"), ("\t", "tsv")])
def test_csv_fields_are_bounded(tmp_path, delimiter, ext):
    path = tmp_path / f"b.{ext}"
    path.write_text(f"question{delimiter}answer\nQ?{delimiter}A\n{'x' * 3000}{delimiter}B\n")
    with pytest.raises(BenchmarkError, match=r"line 3: field '\(a field\)' holds 1,001 bytes.*\(cell_bytes\)"):
        load_benchmark(path, limits="cell_bytes=1000")
    assert len(load_benchmark(path, limits="cell_bytes=3000")) == 2
    # a field bigger than the csv module's own default limit (128 KiB) is read under the default 1 MiB
    path.write_text(f"question{delimiter}answer\n{'x' * 200_000}{delimiter}A\n")
    assert len(load_benchmark(path)[0]["question"]) == 200_000


# ----------------------------------------------------------------------------- found by the fuzzer

@pytest.mark.parametrize("cell", ['["Mars", ' + "9" * 5000 + "]", "[" * 100_000 + "]" * 100_000, "[" * 150 + "]" * 150])
def test_a_table_cell_with_a_huge_number_or_deep_list_skips_the_row(tmp_path, cell):
    """Fuzz finding (5-minute run, seed 1): a TSV choices cell holding a JSON list with a 5000-digit number
    raised a raw ValueError from json.loads; a 10^5-deep list would raise RecursionError."""
    path = tmp_path / "b.tsv"
    path.write_text(f"question\tchoices\tanswer\nQ1?\t{cell}\tA\nQ2?\t\tx\n")
    bench = read_benchmark(path)
    assert [r["question"] for r in bench.rows] == ["Q2?"]
    assert bench.skipped[0]["where"] == "line 2" and "field 'choices'" in bench.skipped[0]["reason"]
    with pytest.raises(BenchmarkError, match=r"b.tsv: line 2: field 'choices'"):
        read_benchmark(path, strict=True)


@pytest.mark.parametrize("bad", ["data-\ud800.arrow", "data-\x00.arrow"])
def test_a_data_file_name_that_cannot_be_a_path_is_refused(tmp_path, bad):
    """Fuzz finding (5-minute run, seed 1): a lone surrogate in state.json's file name raised a raw
    UnicodeEncodeError from os.stat (a NUL: ValueError)."""
    paths = hb.valid_files(tmp_path)
    state = os.path.join(paths["seed_dataset"], "state.json")
    with open(state) as f:
        data = json.load(f)
    data["_data_files"] = [{"filename": bad}]
    with open(state, "w") as f:
        json.dump(data, f)
    with pytest.raises(BenchmarkError, match=f"{paths['seed_dataset']}: cannot read"):
        load_benchmark(paths["seed_dataset"])
