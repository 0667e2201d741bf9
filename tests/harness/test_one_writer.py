"""One run writer for every producer (issue 26): main.py, the lm-eval backend and the Inspect
provider claim their run folder before any model work, refuse one that another live writer holds
or another producer wrote, continue their own killed runs, and write summary.json with the same keys.

Each refusal test reproduces a case that mixed data or ended in a traceback before the writer:
two producers of one kind into one folder, another producer's folder, output_dir a file, a
killed harness run evaluated into again.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap

import inspect_ai  # noqa: F401  (a dependency: missing, the module fails to import; it never skips)
import lm_eval  # noqa: F401  (a dependency: missing, the module fails to import; it never skips)
import numpy as np
import pytest
import torch

from activation_eval.schema.summary import CategoryStats, Summary  # noqa: E402
from activation_eval.store.lock import RunLock  # noqa: E402
from activation_eval.store.run_reader import RunReader  # noqa: E402
from helpers import run_main  # noqa: E402

QUESTIONS = [f"what is {i} plus {i}?" for i in range(4)]
MAX_TOKENS = 6
CATEGORY = "tiny_qa"


@pytest.fixture(scope="module")
def golds(tiny_dir):
    """transformers' own greedy answers (raw prompt, no chat template): questions 0 and 1 take theirs as
    the gold answer (correct for every grader), 2 and 3 a gold never said."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    answers = []
    for q in QUESTIONS[:2]:
        ids = tok(q, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=MAX_TOKENS, do_sample=False, pad_token_id=tok.pad_token_id)
        answers.append(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip())
    assert all(answers), answers
    return answers + ["never said at all", "never said either"]


def _lm_eval_task(folder, golds):
    rows = [{"question": q, "answer": a} for q, a in zip(QUESTIONS, golds)]
    (folder / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "qa.yaml").write_text(textwrap.dedent(f"""\
        task: {CATEGORY}
        dataset_path: json
        dataset_kwargs:
          data_files:
            test: {folder}/qa.jsonl
        test_split: test
        output_type: generate_until
        doc_to_text: "{{{{question}}}}"
        doc_to_target: answer
        generation_kwargs:
          max_gen_toks: {MAX_TOKENS}
          do_sample: false
        metric_list:
          - metric: exact_match
            regexes_to_ignore: ["^\\\\s+", "\\\\s+$"]
        """))
    return str(folder)


INSPECT_TASK = """from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import match
from inspect_ai.solver import generate

QUESTIONS, GOLDS = {questions!r}, {golds!r}


@task
def {category}():
    return Task(dataset=MemoryDataset([Sample(input=q, target=g, id=i) for i, (q, g) in enumerate(zip(QUESTIONS, GOLDS))]),
                solver=generate(), scorer=match(), name="{category}")
"""


def _inspect(tmp_path, tiny_dir, out, *extra, task_file="task.py", check=True):
    """`inspect eval` with the provider (--display plain: "none" would hide a refusal's message too)."""
    exe = os.path.join(os.path.dirname(sys.executable), "inspect")
    done = subprocess.run([exe, "eval", task_file, "--model", f"activation-eval/{tiny_dir}", "--max-tokens",
                           str(MAX_TOKENS), "--display", "plain", "--log-dir", str(tmp_path / "logs"),
                           "-M", f"output_dir={out}", "-M", "dtype=float32", "-M", "device=cpu",
                           "-M", "use_chat_template=off", "-M", "layers=[0,-1]", *extra],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _inspect_in_process(tmp_path, tiny_dir, out, golds, **model_args):
    """What _inspect runs for INSPECT_TASK, through inspect_ai.eval in this process (the same task, sample ids and
    -M arguments as the command line passes them); the command line's own start costs 15-30 s, and
    test_inspect_command_line_finds_the_provider and the refusal and killed-run tests below start it."""
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.scorer import match
    from inspect_ai.solver import generate
    task = Task(dataset=MemoryDataset([Sample(input=q, target=g, id=i) for i, (q, g) in enumerate(zip(QUESTIONS, golds))]),
                solver=generate(), scorer=match(), name=CATEGORY)
    logs = inspect_eval(task, model=f"activation-eval/{tiny_dir}", max_tokens=MAX_TOKENS, display="none",
                        log_dir=str(tmp_path / "logs"),
                        model_args={"output_dir": str(out), "dtype": "float32", "device": "cpu",
                                    "use_chat_template": "off", "layers": [0, -1], **model_args})
    assert logs[0].status == "success", logs[0].error


def _lm_eval(task_dir, tiny_dir, out, *extra, check=True):
    exe = os.path.join(os.path.dirname(sys.executable), "activation-eval-lm-eval")
    done = subprocess.run([exe, "run", "--model", "activation-eval", "--tasks", CATEGORY, "--include_path", task_dir,
                           "--model_args", f"pretrained={tiny_dir},dtype=float32,output_dir={out},layers=[0,-1]"
                           + "".join("," + e for e in extra), "--batch_size", "2", "--device", "cpu"],
                          capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done


def _lm_eval_in_process(task_dir, tiny_dir, out_or_model_args):
    """What _lm_eval runs, through harness.simple_evaluate in this process (the command line calls the same
    function: activation_eval.harness.cli; its own start costs 14 s, which the refusals pay); model_args
    a string as the command line gives them, or built for the output folder `out_or_model_args`."""
    from lm_eval.tasks import TaskManager

    import activation_eval.harness as harness
    args = out_or_model_args if isinstance(out_or_model_args, str) else \
        {"pretrained": tiny_dir, "dtype": "float32", "output_dir": str(out_or_model_args), "layers": [0, -1]}
    harness.simple_evaluate(model="activation-eval", tasks=[CATEGORY], batch_size=2, device="cpu",
                            task_manager=TaskManager(include_path=task_dir, include_defaults=False), model_args=args)


def _one_line_error(done):
    """A refusal: a non-zero exit, its message on one line, no traceback."""
    text = " ".join((done.stdout + done.stderr).split())        # Inspect wraps its message at the terminal's width
    assert done.returncode != 0
    assert "Traceback" not in text, text[-3000:]
    return text


# ----------------------------------------------------------------------------- one summary for all producers

@pytest.mark.slow
def test_three_producers_write_summaries_with_the_same_keys_and_accuracies(tiny_dir, golds, tmp_path):
    """main.py, lm-eval and Inspect answer the same 4 questions greedily from the same raw prompts:
    summary.json has the same keys (top level and per category), the same per-category accuracy
    (2 of 4: the questions whose gold is the model's own answer) and names each one's metric."""
    bench = tmp_path / "bench.jsonl"
    bench.write_text("".join(json.dumps({"id": f"q{i}", "question": q, "answer": a, "category": CATEGORY}) + "\n"
                             for i, (q, a) in enumerate(zip(QUESTIONS, golds))))
    assert run_main("--model", tiny_dir, "--benchmark", bench, "--output_dir", tmp_path / "main",
                    "--prompt_template", "{question}", "--chat_template", "off", "--max_new_tokens", MAX_TOKENS,
                    "--dtype", "float32", "--capture_activations", "--layers", "0,-1") == 0
    _lm_eval_in_process(_lm_eval_task(tmp_path, golds), tiny_dir, tmp_path / "lm")
    _inspect_in_process(tmp_path, tiny_dir, tmp_path / "insp", golds)
    summaries = {name: json.load(open(tmp_path / name / "summary.json")) for name in ("main", "lm", "insp")}
    keys = {name: set(s) for name, s in summaries.items()}
    assert keys["main"] == keys["lm"] == keys["insp"] == set(Summary.__annotations__)
    for s in summaries.values():
        assert set(s["per_category"]) == {CATEGORY}
        assert set(s["per_category"][CATEGORY]) == set(CategoryStats.__annotations__)
        assert s["per_category"][CATEGORY]["accuracy"] == 0.5 and s["per_category"][CATEGORY]["n"] == 4
    assert [s["producer"] for s in summaries.values()] == ["main", "lm-eval", "inspect"]
    assert [s["metric"] for s in summaries.values()] == ["accuracy", "exact_match", "match"]
    for name in ("main", "lm", "insp"):               # and every producer's rows and records read the same way
        assert [row["correct"] for row in RunReader(str(tmp_path / name)).rows] == [True, True, False, False]


# ----------------------------------------------------------------------------- refusals

def test_a_second_inspect_provider_into_a_claimed_folder_is_refused_before_loading(tiny_dir, tmp_path, monkeypatch):
    from activation_eval.harness import inspect_provider
    out = str(tmp_path / "run")
    first = inspect_provider.ActivationEvalAPI(tiny_dir, output_dir=out, device="cpu", dtype="float32", layers="0")
    monkeypatch.setattr(inspect_provider, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
    with pytest.raises(inspect_provider.ProviderError, match=rf"in use by the Inspect provider \(pid {os.getpid()}\)"):
        inspect_provider.ActivationEvalAPI(tiny_dir, output_dir=out, device="cpu", dtype="float32", layers="1")
    assert json.load(open(os.path.join(out, "run_config.json")))["layer_names"] == ["layer_0"]    # the first's
    first.close()


@pytest.mark.slow
def test_inspect_into_a_folder_another_writer_holds_is_one_line(tiny_dir, golds, tmp_path):
    """Before the writer, two Inspect evals into one folder both exited 0, their records mixed."""
    (tmp_path / "task.py").write_text(INSPECT_TASK.format(questions=QUESTIONS, golds=golds, category=CATEGORY))
    out = tmp_path / "run"
    with RunLock(out, holder="the Inspect provider"):
        text = _one_line_error(_inspect(tmp_path, tiny_dir, out, check=False))
    assert f"is in use by the Inspect provider (pid {os.getpid()})" in text
    assert not out.exists()                  # nothing written (the folder the holder made went with its lock)
    # output_dir a file: the provider's own check, a ProviderError as the one above, which the command line
    # printed as one line (a second `inspect eval` for it paid 6 s)
    file = tmp_path / "a-file"
    file.write_text("not a folder")
    from activation_eval.harness import inspect_provider
    with pytest.raises(inspect_provider.ProviderError, match=r"is a file, not a folder: give -M output_dir a folder path"):
        inspect_provider.ActivationEvalAPI("no-such-model", output_dir=str(file), device="cpu", dtype="float32")
    assert file.read_text() == "not a folder"


def test_a_second_lm_eval_writer_is_refused_before_the_model_loads(tiny_dir, tmp_path):
    """Before the writer, two lm-eval runs into one folder both passed the check and wrote 16 rows for 8 documents."""
    import activation_eval.harness as harness
    out = str(tmp_path / "run")
    first = harness.ActivationEvalLM(pretrained=tiny_dir, output_dir=out, dtype="float32", device="cpu", layers="0")
    code = ("import activation_eval.harness as h, sys\n"
            "try:\n"
            f"    h.ActivationEvalLM(pretrained='no-such-model', output_dir={out!r})\n"
            "except ValueError as e:\n"
            "    print(e); sys.exit(2)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"is in use by the lm-eval backend (pid {os.getpid()})" in done.stdout      # not "no-such-model": no load
    first.writer.release()


def test_main_refuses_to_continue_another_producers_folder(tiny_dir, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run_config.json").write_text(json.dumps({"producer": "inspect", "model": "x"}))
    assert run_main("--model", tiny_dir, "--output_dir", out, "--resume", "--limit", 2) == 2
    err = capsys.readouterr().err
    assert "holds a run written by the Inspect provider; main.py continues only its own runs" in err
    assert sorted(os.listdir(out)) == ["run_config.json"]


# ----------------------------------------------------------------------------- killed runs continue

KILLING_TASK = INSPECT_TASK.replace("from inspect_ai.scorer import match", textwrap.dedent("""\
    import os
    import signal
    from inspect_ai.scorer import Score, accuracy, match, scorer

    @scorer(metrics=[accuracy()])
    def match_then_die():
        inner = match()
        seen = []

        async def score(state, target):
            seen.append(state.sample_id)
            if len(seen) == 3 and os.environ.get("KILL_AT_THIRD_SAMPLE"):
                os.kill(os.getpid(), signal.SIGKILL)          # as kill -9 would, mid-run
            return await inner(state, target)
        return score""")).replace("scorer=match()", "scorer=match_then_die()")


@pytest.mark.slow
def test_a_killed_inspect_run_continues_with_resume(tiny_dir, golds, tmp_path, monkeypatch):
    """Before the writer, evaluating into a killed Inspect run's folder printed three tracebacks."""
    (tmp_path / "task.py").write_text(KILLING_TASK.format(questions=QUESTIONS, golds=golds, category=CATEGORY))
    out = tmp_path / "run"
    monkeypatch.setenv("KILL_AT_THIRD_SAMPLE", "1")
    killed = _inspect(tmp_path, tiny_dir, out, "--max-samples", "1", check=False)
    assert killed.returncode == -signal.SIGKILL
    before = RunReader(str(out)).rows                          # analysis reads what the killed run wrote
    assert 0 < len(before) < 4 and not (out / "summary.json").exists()
    monkeypatch.delenv("KILL_AT_THIRD_SAMPLE")
    # without resume: refused, before the model loads; the provider's own check (an `inspect eval` for it paid
    # 9 s; how the command line prints a ProviderError, one line: test_inspect_into_a_folder_another_writer_holds...)
    from activation_eval.harness import inspect_provider
    with monkeypatch.context() as m, pytest.raises(inspect_provider.ProviderError,
                                                    match=r"pass -M resume=true to continue that run"):
        m.setattr(inspect_provider, "load_model", lambda *a, **k: pytest.fail("loaded a model"))
        inspect_provider.ActivationEvalAPI(tiny_dir, output_dir=str(out), device="cpu", dtype="float32", layers="0,-1")
    assert RunReader(str(out)).rows == before                  # untouched
    _inspect_in_process(tmp_path, tiny_dir, out, golds, resume=True)     # -M resume=true (the killed run: the CLI)
    reader = RunReader(str(out))
    assert sorted(r["id"] for r in reader.rows) == [f"{CATEGORY}/{i}" for i in range(4)]
    assert [row["correct"] for row in sorted(reader.rows, key=lambda r: r["id"])] == [True, True, False, False]
    assert len(list(reader.records())) == 4
    summary = json.load(open(out / "summary.json"))
    assert summary["answers"] == 4 and summary["correct"] == 2


@pytest.mark.slow
def test_a_killed_lm_eval_run_continues_with_resume_then_refuses_a_second_run(tiny_dir, golds, tmp_path):
    task_dir = _lm_eval_task(tmp_path, golds)
    out = tmp_path / "run"
    code = textwrap.dedent(f"""\
        import os, signal
        import activation_eval.harness as h
        from lm_eval.tasks import TaskManager
        calls = []
        original = h.ActivationEvalLM._model_generate
        def dying(self, *a, **k):
            calls.append(1)
            if len(calls) == 2:
                os.kill(os.getpid(), signal.SIGKILL)
            return original(self, *a, **k)
        h.ActivationEvalLM._model_generate = dying
        h.simple_evaluate(model="activation-eval", tasks=["{CATEGORY}"], batch_size=1, device="cpu",
                          task_manager=TaskManager(include_path={task_dir!r}, include_defaults=False),
                          model_args={{"pretrained": {tiny_dir!r}, "dtype": "float32", "output_dir": {str(out)!r},
                                      "layers": [0, -1]}})
        """)
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert json.load(open(out / "run_config.json"))["producer"] == "lm-eval"
    assert os.listdir(out / ".staging" / "rank0")              # the first batch's activations, on disk
    # resume=true as a string of model_args (lm-eval's parser: the command line's "true"), in this process: the
    # command line's start costs 14 s, and the refusal below runs it
    _lm_eval_in_process(task_dir, tiny_dir, f"pretrained={tiny_dir},dtype=float32,output_dir={out},layers=0;-1,"
                                            "resume=true")
    reader = RunReader(str(out))
    assert [r["id"] for r in reader.rows] == [f"{CATEGORY}/{i}" for i in range(4)]
    assert [row["correct"] for row in reader.rows] == [True, True, False, False]
    assert len(list(reader.records())) == 4 and not (out / ".staging").exists()
    _refusals_of_a_finished_lm_eval_folder(task_dir, tiny_dir, tmp_path, out)


def _refusals_of_a_finished_lm_eval_folder(task_dir, tiny_dir, tmp_path, out):
    """lm-eval again into its finished folder without resume (the command line: one line, the rows untouched),
    main.py --resume into it, and output_dir a file (the backend's own check, which the command line prints
    the same way: a RunFolderError). Part of the killed-run test, whose resumed folder is a finished one: a
    test of its own paid another lm-eval evaluation (14 s) to make one."""
    import activation_eval.harness as harness
    from activation_eval.store.errors import RunFolderError
    rows = [json.loads(line) for line in open(out / "results.jsonl")]
    text = _one_line_error(_lm_eval(task_dir, tiny_dir, out, check=False))
    assert "already exists and is not empty (it holds a run written by the lm-eval backend); pass resume=true" in text
    assert [json.loads(line) for line in open(out / "results.jsonl")] == rows            # untouched
    assert run_main("--model", tiny_dir, "--output_dir", out, "--resume", "--limit", 2) == 2   # main.py: refused
    file = tmp_path / "a-file"
    file.write_text("x")
    with pytest.raises(RunFolderError, match=r"is a file, not a folder: give output_dir \(model_args\) a folder path"):
        harness.ActivationEvalLM(pretrained="no-such-model", output_dir=str(file), dtype="float32", device="cpu")
    assert file.read_text() == "x"


def test_inspect_epochs_in_the_shard_store_read_back_as_their_rows(tiny_dir, tmp_path):
    """Every sample of every epoch in one shard, each row reading back its own record (the provider
    used to name shard rows <id>@s<k>, which the run reader refused as another question's)."""
    from inspect_ai import Task
    from inspect_ai import eval as inspect_eval
    from inspect_ai.dataset import MemoryDataset, Sample
    from inspect_ai.scorer import match
    from inspect_ai.solver import generate
    task = Task(dataset=MemoryDataset([Sample(input=q, target="x", id=i) for i, q in enumerate(QUESTIONS[:2])]),
                solver=generate(), scorer=match(), name="tiny_epochs", epochs=2)
    out = tmp_path / "run"
    logs = inspect_eval(task, model=f"activation-eval/{tiny_dir}", display="none", log_dir=str(tmp_path / "logs"),
                        max_tokens=4, model_args={"output_dir": str(out), "dtype": "float32", "device": "cpu",
                                                  "layers": "0", "activation_store": "shards"})
    assert logs[0].status == "success", logs[0].error
    pairs = list(RunReader(str(out)).records())
    assert sorted((row["id"], row["sample"]) for row, _ in pairs) == [
        ("tiny_epochs/0", 0), ("tiny_epochs/0", 1), ("tiny_epochs/1", 0), ("tiny_epochs/1", 1)]
    for row, record in pairs:
        assert record["grading"]["id"] == row["id"] and record["sample"] == row["sample"]
        assert record["response"] == row["response"]
    from activation_eval.analysis.dataset import load_run_layer
    X, rows = load_run_layer(str(out), "layer_0", reduce="last_prompt")          # the shard reader of the probe
    assert X.shape[0] == 4 and [(r["id"], r["sample"]) for r in rows] == [(row["id"], row["sample"]) for row in rows]
    for x, row in zip(X, rows):
        record = next(rec for r, rec in pairs if (r["id"], r["sample"]) == (row["id"], row["sample"]))
        assert np.array_equal(x,
                              record["activations"]["layer_0"][record["positions_kept"].index(
                                  record["num_prompt_tokens"] - 1)].numpy())


def test_only_the_store_writes_run_folder_files():
    """Every producer hands rows and records to the run writer: outside store/, no module appends,
    repairs or merges results, writes a shard, takes a run lock or writes run_config / summary."""
    import ast

    from helpers import REPO_ROOT
    writers = {"append_results", "repair_results", "merge_results", "write_shard", "RunLock", "write_json_atomic",
               "remove_unreferenced_shards", "open_own_file"}
    package = os.path.join(REPO_ROOT, "activation_eval")
    found = []
    for folder, _, files in os.walk(package):
        if os.path.relpath(folder, package).split(os.sep)[0] == "store":
            continue
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                for node in ast.walk(ast.parse(open(path).read())):
                    called = node.func if isinstance(node, ast.Call) else None
                    called = getattr(called, "attr", None) or getattr(called, "id", None)
                    if called in writers:
                        found.append(f"{os.path.relpath(path, package)}:{node.lineno} {called}")
    assert not found, found
