"""The Inspect AI provider "activation-eval" (activation_eval/harness/inspect_provider.py, issue 22
item 2): any Inspect task runs with capture, and the run folder holds one row per (task, sample)
with the first scorer's verdict, and records equal to transformers' output_hidden_states.

Local tasks only (MemoryDataset), on the tiny random llama saved by the tiny_dir fixture, in fp32.
"""
import json
import os
import subprocess
import sys

import inspect_ai  # noqa: F401  (a dependency: missing, the module fails to import; it never skips)
import pytest
import torch
from inspect_ai import Task  # noqa: E402
from inspect_ai import eval as inspect_eval  # noqa: E402
from inspect_ai.dataset import MemoryDataset, Sample  # noqa: E402
from inspect_ai.model import GenerateConfig  # noqa: E402
from inspect_ai.scorer import Score, choice, match  # noqa: E402
from inspect_ai.solver import generate, multiple_choice  # noqa: E402

from activation_eval.harness import inspect_run  # noqa: E402
from activation_eval.store.run_reader import RunReader  # noqa: E402
from helpers import reference, rel_err  # noqa: E402

LAYERS = ["embeddings", 0, -1, "final_norm"]
MAX_TOKENS = 6
QUESTIONS = [f"what is {i} plus {i}?" for i in range(4)]


@pytest.fixture(scope="module")
def model(tiny_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    return (AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(tiny_dir))


def greedy(model, text, max_new_tokens=MAX_TOKENS):
    """transformers' own greedy answer to one chat-templated user message: (prompt ids, answer ids, text)."""
    model, tok = model
    chat = tok.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
    ids = tok(chat, add_special_tokens=False, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
    answer = out[0, ids.shape[1]:]
    if tok.eos_token_id in answer.tolist():
        answer = answer[:answer.tolist().index(tok.eos_token_id) + 1]
    return ids[0], answer, tok.decode(answer, skip_special_tokens=True).strip()


def assert_answer_span_figures(model, row, record, ids, answer):
    """Issue 27: the row's answer positions spell its extracted answer, and its confidence figures match
    one plain float64 forward (log_softmax; Categorical's entropy) over that span, as main.py's rows."""
    model, tok = model
    with torch.no_grad():
        logits = model(torch.cat([ids, answer])[None]).logits[0].double()
    at = torch.arange(len(ids) - 1, len(ids) - 1 + len(answer))
    logprobs = torch.log_softmax(logits[at], -1).gather(-1, answer[:, None])[:, 0]
    entropies = torch.distributions.Categorical(logits=logits[at]).entropy()
    assert torch.allclose(torch.tensor(record["output_entropies"], dtype=torch.float64), entropies, atol=1e-5, rtol=0)
    positions = row["answer_positions"]
    assert record["answer_positions"] == positions
    span = [p - len(ids) for p in positions] or list(range(len(answer)))
    if positions:        # contiguous generated tokens (byte pieces of one character may not decode alone)
        assert span == list(range(span[0], span[-1] + 1)) and 0 <= span[0] and span[-1] < len(answer)
        assert tok.decode(answer[span[0]:], skip_special_tokens=True).strip().startswith(row["extracted"][:1])
    assert row["answer_logprob_min"] == pytest.approx(logprobs[span].min().item(), abs=1e-5)
    assert row["answer_entropy_mean"] == pytest.approx(entropies[span].mean().item(), abs=1e-5)
    assert row["answer_entropy_max"] == pytest.approx(entropies[span].max().item(), abs=1e-5)


def tasks(model):
    """match(): sample q0's target is the model's own answer (so it is correct), the others are not;
    choice(): multiple choice over three letters (the random model never answers "ANSWER: X")."""
    match_samples = [Sample(input=q, target=greedy(model, q)[2] if i == 0 else "never said", id=f"q{i}")
                     for i, q in enumerate(QUESTIONS)]
    choice_samples = [Sample(input=f"Which is a mammal? ({i})", choices=["Eagle", "Whale", "Trout"], target="B", id=i)
                      for i in range(3)]
    return [Task(dataset=MemoryDataset(match_samples), solver=generate(), scorer=match(), name="tiny_match"),
            Task(dataset=MemoryDataset(choice_samples), solver=multiple_choice(), scorer=choice(), name="tiny_choice")]


def run_inspect(task_list, tiny_dir, out, tmp_path, **model_args):
    logs = inspect_eval(task_list, model=f"activation-eval/{tiny_dir}", display="none", log_dir=str(tmp_path / "logs"),
                        max_tokens=MAX_TOKENS, model_args={"output_dir": str(out), "dtype": "float32", "device": "cpu",
                                                           **model_args})
    assert [log.status for log in logs] == ["success"] * len(task_list), [log.error for log in logs]
    return logs


@pytest.fixture(scope="module")
def captured(model, tiny_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("inspect")
    logs = run_inspect(tasks(model), tiny_dir, tmp / "run", tmp, layers=LAYERS)
    return str(tmp / "run"), logs


def test_rows_one_per_sample_with_the_first_scorers_verdict(captured, model):
    out, logs = captured
    rows = RunReader(out).rows
    assert [r["id"] for r in rows] == [f"tiny_match/q{i}" for i in range(4)] + [f"tiny_choice/{i}" for i in range(3)]
    logged = {(log.eval.task, s.id): s for log in logs for s in log.samples}
    for row in rows:
        sample = logged[(row["category"], row["sample_id"])]
        score = next(iter(sample.scores.values()))
        assert row["score"] == score.value and row["correct"] is (score.value == "C")
        assert row["response"] == sample.output.completion and row["extracted"] == score.answer
        assert row["generate_calls"] == 1 and row["epoch"] == 1 and "sample" not in row
    by_id = {r["id"]: r for r in rows}
    assert by_id["tiny_match/q0"]["correct"] is True                  # the model's own answer is its target
    assert [by_id[f"tiny_match/q{i}"]["correct"] for i in (1, 2, 3)] == [False] * 3
    assert by_id["tiny_match/q0"]["grader"] == "inspect:match" and by_id["tiny_choice/0"]["grader"] == "inspect:choice"
    assert by_id["tiny_choice/1"]["choices"] == ["Eagle", "Whale", "Trout"] and by_id["tiny_choice/1"]["answer"] == "B"
    assert "B) Whale" in by_id["tiny_choice/1"]["prompt"]              # the prompt multiple_choice() built
    for i, q in enumerate(QUESTIONS):                                  # our generation = transformers' greedy
        row = by_id[f"tiny_match/q{i}"]
        ids, answer, text = greedy(model, q)
        assert row["response"] == text and row["prompt"] == q == row["question"]
        assert (row["num_prompt_tokens"], row["num_generated_tokens"]) == (len(ids), len(answer))
        record = RunReader(out).record(row["id"])            # the row carries its record's output confidence
        assert row["answer_logprob_sum"] == record["answer_logprob_sum"] and row["answer_logprob_sum"] < 0
        assert row["answer_logprob_mean"] == pytest.approx(row["answer_logprob_sum"] / len(answer))
        assert row["first_token_entropy"] == record["first_token_entropy"] > 0
        assert_answer_span_figures(model, row, record, ids, answer)
    summary = json.load(open(os.path.join(out, "summary.json")))
    # two tasks scored by different scorers (match, choice): each task's figure, no pooled one
    assert summary["producer"] == "inspect" and summary["questions"] == 7 and summary["metric"] == "mixed"
    assert summary["per_category"]["tiny_match"]["accuracy"] == pytest.approx(0.25)
    assert (summary["per_category"]["tiny_match"]["metric"], summary["per_category"]["tiny_choice"]["metric"]) == (
        "match", "choice")
    assert sum(c["correct"] for c in summary["per_category"].values()) == 1
    inspect_own = summary["details"]["inspect_results"]["tiny_match"]["match"]["accuracy"]     # Inspect's own metric
    assert inspect_own == pytest.approx(0.25)
    config = json.load(open(os.path.join(out, "run_config.json")))
    assert config["producer"] == "inspect" and config["tasks"] == ["tiny_match", "tiny_choice"]
    assert config["layer_names"] == ["embeddings", "layer_0", "layer_2", "final_norm"]


def test_records_equal_output_hidden_states(captured, model):
    out, _ = captured
    pairs = list(RunReader(out).records())
    assert len(pairs) == 7
    for row, record in pairs:
        assert record["grading"]["id"] == row["id"] and record["grading"]["correct"] == row["correct"]
        assert list(record["activations"]) == ["embeddings", "layer_0", "layer_2", "final_norm"]
        n_fed = len(record["input_ids"]) + len(record["output_ids"]) - 1
        assert record["positions_kept"] == list(range(n_fed))            # positions "all"
        ref = reference(model[0], record)
        for name, tensor in record["activations"].items():
            assert tensor.shape == ref[name].shape and rel_err(tensor, ref[name]) < 1e-4, (row["id"], name)


def test_shard_store_and_stop_sequences(model, tiny_dir, tmp_path):
    """The shard store holds the same records; a stop sequence cuts answer, tokens and activations
    right after the token that completes it."""
    tok = model[1]
    # a question whose answer has, after its first token, a token of printable text to stop at
    question, ids, answer, stop = next((q, ids, answer, text) for q in QUESTIONS for ids, answer, _ in [greedy(model, q)]
                                       for k in range(1, len(answer) - 1) for text in [tok.decode(answer[k:k + 1])]
                                       if text.strip() == text and text.isprintable() and text)
    first = next(n for n in range(1, len(answer) + 1) if stop in tok.decode(answer[:n]))
    assert first < len(answer)
    task = Task(dataset=MemoryDataset([Sample(input=question, target="x", id="s")]), solver=generate(),
                scorer=match(), name="tiny_stop", config=GenerateConfig(stop_seqs=[stop]))
    out = tmp_path / "shards"
    run_inspect([task], tiny_dir, out, tmp_path, layers="0;-1", activation_store="shards")
    reader = RunReader(str(out))
    assert reader.store == "shards"
    (row, record), = reader.records()
    assert record["output_ids"].tolist() == answer[:first].tolist() and row["num_generated_tokens"] == first
    assert stop in row["response"]
    # the confidence figures cover the kept tokens only (one plain forward as the reference)
    kept = answer[:first]
    with torch.no_grad():
        logprobs = torch.log_softmax(model[0](torch.cat([ids, kept])[None]).logits[0].double(), -1)
    want = [logprobs[len(ids) - 1 + j, t].item() for j, t in enumerate(kept.tolist())]
    assert record["output_logprobs"] == pytest.approx(want, abs=2e-5)
    assert record["answer_logprob_sum"] == pytest.approx(sum(want), abs=2e-5 * first)
    assert record["answer_logprob_mean"] == pytest.approx(sum(want) / first, abs=2e-5)
    ref = reference(model[0], record)
    assert record["positions_kept"] == list(range(len(ids) + first - 1))
    for name in ("layer_0", "layer_2"):
        assert rel_err(record["activations"][name], ref[name]) < 1e-4


def test_without_capture_and_several_epochs(model, tiny_dir, tmp_path):
    task = Task(dataset=MemoryDataset([Sample(input=q, target="x", id=i) for i, q in enumerate(QUESTIONS[:2])]),
                solver=generate(), scorer=match(), name="tiny_epochs", epochs=2)
    out = tmp_path / "run"
    run_inspect([task], tiny_dir, out, tmp_path, capture_activations=False)
    reader = RunReader(str(out))
    assert not reader.has_records() and not os.path.exists(out / "activations")
    assert [(r["id"], r["sample"], r["epoch"]) for r in reader.rows] == [
        ("tiny_epochs/0", 0, 1), ("tiny_epochs/0", 1, 2), ("tiny_epochs/1", 0, 1), ("tiny_epochs/1", 1, 2)]
    summary = json.load(open(out / "summary.json"))
    assert (summary["answers"], summary["questions"], summary["num_samples"]) == (4, 2, 2)
    assert summary["per_category"]["tiny_epochs"]["questions"] == 2


def test_several_turns_keep_the_last_call(model, tiny_dir, tmp_path):
    """A solver that asks again: the record is the last generate() call, whose prompt is the whole
    conversation through the chat template; the row counts the calls."""
    from inspect_ai.model import ChatMessageUser
    from inspect_ai.solver import solver

    @solver
    def ask_again():
        async def solve(state, generate_):
            state.messages.append(ChatMessageUser(content="Are you sure?"))
            return await generate_(state)
        return solve

    task = Task(dataset=MemoryDataset([Sample(input=QUESTIONS[2], target="x", id="t")]),
                solver=[generate(), ask_again()], scorer=match(), name="tiny_turns")
    out = tmp_path / "run"
    logs = run_inspect([task], tiny_dir, out, tmp_path, layers="0")
    (row, record), = RunReader(str(out)).records()
    first = greedy(model, QUESTIONS[2])[2]
    conversation = [{"role": "user", "content": QUESTIONS[2]}, {"role": "assistant", "content": first},
                    {"role": "user", "content": "Are you sure?"}]
    tok = model[1]
    text = tok.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert record["input_ids"].tolist() == tok(text, add_special_tokens=False)["input_ids"]
    assert row["generate_calls"] == 2 and row["response"] == logs[0].samples[0].output.completion
    assert row["prompt"] == f"user: {QUESTIONS[2]}\n\nassistant: {first}\n\nuser: Are you sure?"
    assert rel_err(record["activations"]["layer_0"], reference(model[0], record)["layer_0"]) < 1e-4


@pytest.mark.parametrize("value, correct", [("C", True), ("I", False), ("N", False), ("P", None), (1, True),
                                            (0.0, False), (0.7, None), (True, True), (False, False),
                                            ({"a": "C"}, None), ([1, 0], None)])
def test_score_fields_first_scorer(value, correct):
    fields = inspect_run.score_fields({"first": Score(value=value, answer="B", explanation="why"),
                                       "second": Score(value="C")})
    assert fields["correct"] is correct and fields["grader"] == "inspect:first" and fields["extracted"] == "B"
    assert fields["score"] == value and fields["scores"] == {"first": value, "second": "C"}


def test_refuses_bad_model_args_before_loading(tmp_path):
    from activation_eval.harness.inspect_provider import ActivationEvalAPI
    with pytest.raises(ValueError, match="output_dir=FOLDER"):
        ActivationEvalAPI("no-such-model")
    with pytest.raises(ValueError, match="unknown model argument.*layer\\b"):
        ActivationEvalAPI("no-such-model", output_dir=str(tmp_path / "r"), layer=3)
    with pytest.raises(ValueError, match="activation_store must be one of files, shards"):
        ActivationEvalAPI("no-such-model", output_dir=str(tmp_path / "r"), activation_store="x")
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "results.jsonl").write_text("")
    with pytest.raises(ValueError, match="already exists and is not empty; pass -M resume=true"):
        ActivationEvalAPI("no-such-model", output_dir=str(tmp_path / "r"))


def test_importing_the_package_imports_neither_harness():
    code = "import sys, activation_eval; sys.exit(any(m in sys.modules for m in ('inspect_ai', 'lm_eval', 'torch')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


TASK_FILE = """from inspect_ai import Task, task
from inspect_ai.dataset import MemoryDataset, Sample
from inspect_ai.scorer import choice
from inspect_ai.solver import multiple_choice


@task
def tiny_cli():
    return Task(dataset=MemoryDataset([Sample(input="Which is a mammal?", choices=["Eagle", "Whale"], target="B", id=1)]),
                solver=multiple_choice(), scorer=choice())
"""


@pytest.mark.slow
def test_inspect_command_line_finds_the_provider(tiny_dir, tmp_path):
    exe = os.path.join(os.path.dirname(sys.executable), "inspect")
    assert os.path.exists(exe), "the inspect command is not installed: run make setup"
    (tmp_path / "task.py").write_text(TASK_FILE)
    out = tmp_path / "run"
    done = subprocess.run([exe, "eval", "task.py", "--model", f"activation-eval/{tiny_dir}",
                           "--max-tokens", "4", "--display", "none", "--log-dir", str(tmp_path / "logs"),
                           "-M", f"output_dir={out}", "-M", "layers=[0,-1]", "-M", "dtype=float32"],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    reader = RunReader(str(out))
    assert [r["id"] for r in reader.rows] == ["tiny_cli/1"]
    (row, record), = reader.records()
    assert list(record["activations"]) == ["layer_0", "layer_2"] and row["grader"] == "inspect:choice"
