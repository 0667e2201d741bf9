"""Benchmark sources: parquet, TSV, datasets folders (save_to_disk), hf:NAME through datasets.load_dataset,
CSV preambles (--skip_rows) and several answer columns. Every file is built here; nothing is downloaded."""
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from activation_eval.eval.benchmark import BenchmarkError, load_benchmark, read_benchmark
from helpers import REPO_ROOT

MMLU_ROWS = [
    {"question": "What is 1 + 1?", "subject": "math", "choices": ["1", "2", "3", "4"], "answer": 1},
    {"question": "Capital of Italy?", "subject": "geo", "choices": ["Paris", "Rome", "Oslo", "Bern"], "answer": 1},
    {"question": "Largest planet?", "subject": "astro", "choices": ["Mars", "Venus", "Jupiter", "Earth"], "answer": 2},
]
EXPECTED = [["B"], ["B"], ["C"]]


def test_parquet_keeps_integer_answers_as_indices(tmp_path):
    path = tmp_path / "mmlu.parquet"
    pq.write_table(pa.Table.from_pylist(MMLU_ROWS), path)
    rows = load_benchmark(path, category_field="subject")
    assert [r["answer"] for r in rows] == EXPECTED
    assert [r["grader"] for r in rows] == ["choice:index"] * 3
    assert [r["category"] for r in rows] == ["math", "geo", "astro"]
    assert rows[2]["choices"] == ["Mars", "Venus", "Jupiter", "Earth"]


def test_broken_parquet_is_one_error(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(BenchmarkError, match="bad.parquet: cannot read as parquet"):
        load_benchmark(path)


def test_tsv(tmp_path):
    path = tmp_path / "b.tsv"
    path.write_text("q\ta\topts\nCapital of France?\tParis\t\nMammal?\tB\tShark|Dolphin\n")
    rows = load_benchmark(path, question_field="q", answer_field="a", choices_field="opts")
    assert rows[0]["answer"] == ["Paris"] and rows[0]["choices"] is None
    assert rows[1]["choices"] == ["Shark", "Dolphin"] and rows[1]["answer"] == ["B"]


def test_datasets_folder_one_split_and_several(tmp_path):
    import datasets
    arc = {"id": "Mercury_7", "question": "Which gas do plants take in?", "answerKey": "3",
           "choices": {"text": ["oxygen", "helium", "carbon dioxide"], "label": ["1", "2", "3"]}}
    datasets.Dataset.from_list([arc]).save_to_disk(tmp_path / "arc")
    rows = load_benchmark(tmp_path / "arc", answer_field="answerKey")
    assert rows[0]["id"] == "Mercury_7" and rows[0]["answer"] == ["C"] and rows[0]["grader"] == "choice:label"
    both = datasets.DatasetDict({"train": datasets.Dataset.from_list(MMLU_ROWS[:1]),
                                 "test": datasets.Dataset.from_list(MMLU_ROWS)})
    both.save_to_disk(tmp_path / "mmlu")
    with pytest.raises(BenchmarkError, match="has the splits train, test; pass --split"):
        load_benchmark(tmp_path / "mmlu")
    with pytest.raises(BenchmarkError, match="no split 'dev'"):
        load_benchmark(tmp_path / "mmlu", split="dev")
    assert [r["answer"] for r in load_benchmark(tmp_path / "mmlu", split="test")] == EXPECTED
    assert len(load_benchmark(tmp_path / "mmlu", split="train")) == 1


def test_hf_name_goes_through_load_dataset(tmp_path):
    """hf:NAME is datasets.load_dataset(NAME, subset, split=...): a local data folder stands in for the hub."""
    folder = tmp_path / "local_mmlu"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist(MMLU_ROWS), folder / "test.parquet")
    rows = load_benchmark(f"hf:{folder}", split="test")
    assert [r["answer"] for r in rows] == EXPECTED and rows[0]["grader"] == "choice:index"
    with pytest.raises(BenchmarkError, match="cannot load the dataset"):
        load_benchmark(f"hf:{folder}", split="validation")


@pytest.mark.slow
def test_hf_offline_without_cache_is_one_line(tmp_path):
    code = ("import sys\n"
            "from activation_eval.run import cli\n"
            "sys.exit(cli.main(['--benchmark', 'hf:someone/not-cached-anywhere', '--split', 'test', '--quiet',\n"
            f"                  '--output_dir', {str(tmp_path / 'run')!r}]))\n")
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300,
                          cwd=REPO_ROOT)
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in done.stderr
    assert "hf:someone/not-cached-anywhere: cannot load the dataset" in errors[0]
    assert "Offline, datasets reads only its local cache" in errors[0]
    assert not (tmp_path / "run").exists()


FRESHQA = (
    "FreshQA benchmark,,,,,,,,,,,,\n"
    "Note: answers as of this week; see the paper,,,,,,,,,,,,\n"
    "id,split,question,fact_type,answer_0,answer_1,answer_2,answer_3,answer_4,answer_5,answer_6,answer_7,answer_8,answer_9\n"
    "1,TEST,Who wrote Hamlet?,never-changing,William Shakespeare,Shakespeare,,,,,,,,\n"
    "2,TEST,How many legs does a spider have?,never-changing,8,eight,,,,,,,,\n"
    "3,TEST,What is the capital of Australia?,slow-changing,Canberra,,,,,,,,,\n"
    "4,TEST,Who is nobody?,none,,,,,,,,,,\n"
)


def test_freshqa_csv_header_on_line_3_and_answer_columns(tmp_path, caplog):
    path = tmp_path / "freshqa.csv"
    path.write_text(FRESHQA)
    bench = read_benchmark(path, skip_rows=2, answer_field="answer_*", category_field="fact_type")
    rows = bench.rows
    assert [r["id"] for r in rows] == ["1", "2", "3"]
    assert rows[0]["answer"] == ["William Shakespeare", "Shakespeare"] and rows[0]["grader"] == "text"
    assert rows[1]["answer"] == ["8", "eight"] and rows[0]["category"] == "never-changing"
    assert rows[2]["answer"] == ["Canberra"]
    assert bench.skipped[0]["id"] == "4" and bench.skipped[0]["where"] == "line 7"     # the file's own line
    assert "line 7" in caplog.text
    same = load_benchmark(path, skip_rows=2, answer_field="answer_0, answer_1", category_field="fact_type")
    assert same[0]["answer"] == ["William Shakespeare", "Shakespeare"]
    with pytest.raises(BenchmarkError, match="no answer field 'answer_x\\*'.*'answer_9'"):
        load_benchmark(path, skip_rows=2, answer_field="answer_x*")
    with pytest.raises(BenchmarkError, match="no question field"):
        load_benchmark(path)                                     # the preamble read as the header


def test_option_misuse_is_one_error(tmp_path):
    path = tmp_path / "b.jsonl"
    path.write_text('{"question": "q", "answer": "a"}\n')
    with pytest.raises(BenchmarkError, match="--skip_rows applies to CSV and TSV"):
        load_benchmark(path, skip_rows=1)
    with pytest.raises(BenchmarkError, match="--split applies to hf:NAME"):
        load_benchmark(path, split="test")
    with pytest.raises(BenchmarkError, match="--subset applies to hf:NAME"):
        load_benchmark(path, subset="all")
    csv_path = tmp_path / "b.csv"
    csv_path.write_text("question,answer\nq,a\n")
    with pytest.raises(BenchmarkError, match="skips the whole file"):
        load_benchmark(csv_path, skip_rows=5)
    (tmp_path / "plain").mkdir()
    with pytest.raises(BenchmarkError, match="save_to_disk"):
        load_benchmark(tmp_path / "plain")
