"""The probe at the answer on an lm-eval generation folder (issue 27 item 4): the folder's rows carry
answer positions, so `analyze_activations.py --probe` reads the answer's first token (not "the run captured no generated
positions"), and a folder of two tasks is read as such.

Two local generate_until tasks (YAML + jsonl in tmp_path, no download) on the tiny random llama of the
tiny_dir fixture. The model's answers are gibberish, so the gold answers are set from a first pass:
half of the documents get the model's own answer as their target (exact_match 1), the others "Paris".
"""
import json
import os

import lm_eval  # noqa: F401  (a dependency: missing, the module fails to import; it never skips)
import pytest
from lm_eval.tasks import TaskManager  # noqa: E402

import activation_eval.harness as harness  # noqa: E402
import analyze_activations as aa  # noqa: E402
import fuzz_analysis  # noqa: E402  (tests/ is on sys.path: the fuzzer's verdict on the two-run modes)
from activation_eval import schema  # noqa: E402
from activation_eval.store.run_reader import RunReader  # noqa: E402

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
TASKS = ["gen_a", "gen_b"]
DOCS = 12
YAML = """task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {folder}/{task}.jsonl
test_split: test
output_type: generate_until
doc_to_text: "Q: {{{{question}}}}\\nA:"
doc_to_target: answer
generation_kwargs:
  until: ["\\n\\n"]
  max_gen_toks: 6
  do_sample: false
metric_list:
  - metric: exact_match
"""


def _write_tasks(folder, answers):
    for task in TASKS:
        docs = [{"question": f"{task} question number {i} about {'cats' if i % 2 else 'dogs'}?",
                 "answer": answers.get(f"{task}/{i}", "Paris")} for i in range(DOCS)]
        (folder / f"{task}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
        (folder / f"{task}.yaml").write_text(YAML.format(task=task, folder=folder))


def _evaluate(tiny_dir, folder, out, **args):
    return harness.simple_evaluate(model="activation-eval", tasks=TASKS, batch_size=4, device="cpu",
                                   bootstrap_iters=0, task_manager=TaskManager(include_path=str(folder),
                                                                               include_defaults=False),
                                   model_args={"pretrained": tiny_dir, "dtype": "float32", "output_dir": str(out),
                                               **args})


@pytest.fixture(scope="module")
def gen_folder(tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("harness-probe")
    tasks = tmp / "tasks"
    tasks.mkdir()
    _write_tasks(tasks, {})
    _evaluate(tiny_dir, tasks, tmp / "first", capture_activations=False)
    own = {row["id"]: row["response"] for row in RunReader(str(tmp / "first")).rows}
    _write_tasks(tasks, {key: text for key, text in own.items() if int(key.split("/")[1]) % 2 == 0})
    _evaluate(tiny_dir, tasks, tmp / "run", layers="embeddings;0;-1")
    return str(tmp / "run")


def test_generation_folder_rows_are_probe_ready(gen_folder):
    rows = RunReader(gen_folder).rows
    assert [r["category"] for r in rows] == ["gen_a"] * DOCS + ["gen_b"] * DOCS
    assert sum(r["correct"] for r in rows) == DOCS                  # the even documents: the model's own answer
    spans = [r for r in rows if r.get(schema.ANSWER_POSITIONS)]
    assert len(spans) >= DOCS                                       # one-token answers keep no generated position
    assert all(isinstance(r[k], float) for r in rows for k in schema.CONFIDENCE_FIELDS)
    config = json.load(open(os.path.join(gen_folder, "run_config.json")))
    assert config["producer"] == "lm-eval" and config["tasks"] == TASKS


@pytest.mark.slow
def test_probe_reads_the_answer_of_an_lm_eval_generation_folder(gen_folder, tmp_path, capsys):
    code = aa.main(["--probe", gen_folder, "--output_dir", str(tmp_path / "plots"), "--json", "--cv_seeds", "1",
                    "--bootstrap", "1000", "--no_progress"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reduce"] == "answer_first" and "answer_positions" in result["position_note"]
    assert result["n"] >= 2 * DOCS - 4 and set(result["layers"]) == {"embeddings", "layer_0", "layer_2"}
    assert set(schema.CONFIDENCE_FIELDS) <= set(result["controls"])    # every confidence figure is a control
    assert result["positions"] is not None                             # the layer x position table at the answer
    assert any("stratified by task: the folder holds 2 tasks (gen_a, gen_b)" in n for n in result["notes"])


@pytest.mark.slow
def test_probe_reads_the_answer_of_an_inspect_folder(tiny_dir, gen_folder, tmp_path, capsys):
    """The same on an Inspect folder: half the samples' targets are the model's own answers (match()); then
    the two-run modes on this folder and the lm-eval one, each way, as tests/fuzz_analysis.py judges them (its
    short seeded run in make test seeds main.py's runs only: the harnesses' seed runs cost a minute)."""
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.scorer import match
    from inspect_ai.solver import generate

    questions = [f"question {i} about {'cats' if i % 2 else 'dogs'}?" for i in range(2 * DOCS)]

    def run(out, targets, **args):
        task = Task(dataset=MemoryDataset([Sample(input=q, target=t, id=f"s{i}")
                                           for i, (q, t) in enumerate(zip(questions, targets))]),
                    solver=generate(), scorer=match(), name="tiny_insp")
        logs = inspect_eval(task, model=f"activation-eval/{tiny_dir}", display="none", log_dir=str(tmp_path / "logs"),
                            max_tokens=6, model_args={"output_dir": str(out), "dtype": "float32", "device": "cpu",
                                                      **args})
        assert logs[0].status == "success"
        return RunReader(str(out)).rows

    first = run(tmp_path / "first", ["never said"] * len(questions), capture_activations=False)
    targets = [row["response"] if i % 2 == 0 else "never said" for i, row in enumerate(first)]
    rows = run(tmp_path / "run", targets, layers="embeddings;0;-1")
    assert sum(bool(r["correct"]) for r in rows) >= DOCS - 2 and any(r.get(schema.ANSWER_POSITIONS) for r in rows)
    capsys.readouterr()                         # Inspect's own banner ("inspect_ai v...") is not the probe's JSON
    code = aa.main(["--probe", str(tmp_path / "run"), "--output_dir", str(tmp_path / "plots"), "--json",
                    "--cv_seeds", "1", "--bootstrap", "1000", "--no_progress"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reduce"] == "answer_first" and set(schema.CONFIDENCE_FIELDS) <= set(result["controls"])
    inspect_run = str(tmp_path / "run")
    for a, b in ((inspect_run, gen_folder), (gen_folder, inspect_run)):
        outcome = fuzz_analysis._run_case(f"{a}\t{b}", str(tmp_path / "pair-plots"))
        assert outcome in ("ok", "refused"), (a, b, outcome)
