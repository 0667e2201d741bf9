"""Prompts: --prompt_template, few-shot examples (seeded, never the question itself), and the system
prompt (the chat template's system message, or prepended), end to end through main.py."""
import json

import pytest

from activation_eval.capture.generation import model_texts
from activation_eval.eval.benchmark import BenchmarkError, load_benchmark
from activation_eval.eval.prompts import (
    PromptSettings,
    build_prompt,
    check_template,
    fewshot_examples,
    format_question,
    with_prompts,
)
from activation_eval.store import run_reader
from helpers import make_tokenizer, read_rows, run_main

MC = {"id": "m", "question": "Which is a mammal?", "answer": ["B"], "choices": ["Shark", "Dolphin"], "grader": "choice"}
POOL = [{"id": f"p{i}", "question": f"What is {i} + {i}?", "answer": [str(2 * i)], "grader": "number"}
        for i in range(20)]


def test_template_fills_question_and_lettered_choices():
    text = format_question(MC, "Question: {question}\n{choices}\nAnswer:")
    assert text == "Question: Which is a mammal?\nA. Shark\nB. Dolphin\nAnswer:"
    assert format_question(POOL[3], "Q: {question} {choices}|") == "Q: What is 3 + 3? |"   # no choices: empty


@pytest.mark.parametrize("template, expected", [
    ("Q: {query}", "unknown placeholder {query}"),
    ("Q: {question:>10}", "unknown placeholder {question:>10}"),
    ("Q: {}", "unknown placeholder {}"),
    ("Q: {question", "expected '}'"),
    ("no placeholder", "has no {question}"),
    ("", "is empty"),
])
def test_bad_template_is_one_clear_error(template, expected):
    with pytest.raises(BenchmarkError, match="--prompt_template") as e:
        check_template(template)
    assert expected in str(e.value)


def test_bad_template_on_the_command_line_exits_2(tmp_path, capsys):
    assert run_main("--prompt_template", "Q: {query}", "--output_dir", tmp_path / "r") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --prompt_template: unknown placeholder {query}")
    assert not (tmp_path / "r").exists()


def test_fewshot_never_the_question_itself_and_seeded_per_question():
    for row in POOL:
        examples = fewshot_examples(row, POOL, 5, seed=1)
        ids = [e["id"] for e in examples]
        assert len(ids) == 5 and len(set(ids)) == 5 and row["id"] not in ids
    # the same question gets the same examples whatever the order of the pool rows asked
    assert fewshot_examples(POOL[4], POOL, 3, 1) == fewshot_examples(POOL[4], POOL, 3, 1)
    draws = {tuple(e["id"] for e in fewshot_examples(POOL[4], POOL, 3, seed)) for seed in range(10)}
    assert len(draws) > 5                                     # the seed matters
    same_text = dict(POOL[5], id="other-id")                  # the same question under another id
    assert all(e["question"] != same_text["question"] for e in fewshot_examples(same_text, POOL, 19, 0))
    with pytest.raises(BenchmarkError, match="only 19 other rows"):
        fewshot_examples(POOL[0], POOL, 20)


def test_fewshot_prompt_shows_solved_examples_then_the_question():
    prompt = build_prompt(POOL[0], PromptSettings(num_fewshot=2, fewshot_seed=7), POOL)
    blocks = prompt.split("\n\n")
    assert len(blocks) == 3 and blocks[2] == format_question(POOL[0])
    for block in blocks[:2]:
        question, instruction, target = block.split("\n")
        i = int(question.split()[2])
        assert instruction == "Answer with a number only." and target == str(2 * i)
    templated = build_prompt(MC, PromptSettings(template="Q: {question}\n{choices}\nA:", num_fewshot=1),
                             [dict(MC, id="m2", question="Which is a fish?", answer=["A"])])
    assert templated.startswith("Q: Which is a fish?\nA. Shark\nB. Dolphin\nA: A\n\nQ: Which is a mammal?")


def test_with_prompts_keeps_rows_and_adds_the_prompt():
    rows = with_prompts(POOL[:3], PromptSettings(num_fewshot=1), POOL)
    assert [r["id"] for r in rows] == ["p0", "p1", "p2"] and "prompt" not in POOL[0]
    assert all(r["prompt"].endswith(format_question(r)) for r in rows)


def test_system_prompt_through_the_chat_template_or_prepended():
    chat = make_tokenizer(chat_template=True)
    chat.chat_template = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                          "{% if add_generation_prompt %}<|assistant|>{% endif %}")
    texts, special = model_texts(chat, ["2 + 2?"], "auto", "Be brief.")
    assert texts == ["<|system|>Be brief.\n<|user|>2 + 2?\n<|assistant|>"] and special is False
    plain = make_tokenizer()
    assert model_texts(plain, ["2 + 2?"], "auto", "Be brief.") == (["Be brief.\n\n2 + 2?"], True)
    assert model_texts(plain, ["2 + 2?"], "auto") == (["2 + 2?"], True)
    # a template that refuses the system role (as Gemma's does): the system prompt opens the user turn
    chat.chat_template = ("{% for m in messages %}{% if m['role'] == 'system' %}"
                          "{{ raise_exception('System role not supported') }}{% endif %}"
                          "<|user|>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    assert model_texts(chat, ["2 + 2?"], "auto", "Be brief.")[0] == ["<|user|>Be brief.\n\n2 + 2?\n<|assistant|>"]


def test_main_sends_system_prompt_and_fewshot_and_keeps_the_prompt(tiny_dir, tmp_path):
    out = tmp_path / "run"
    code = run_main("--model", tiny_dir, "--limit", 4, "--max_new_tokens", 3, "--output_dir", out,
                    "--system_prompt", "You are terse.", "--num_fewshot", 2, "--capture_activations",
                    "--layers", "0", "--positions", "last_prompt")
    assert code == 0
    rows = read_rows(out)
    bench = {r["id"]: r for r in load_benchmark()}
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_dir)
    answered = [row for row in rows if not row.get("error")]
    assert len(answered) >= 2           # a prompt past the tiny model's 256 positions is an error row
    for row in rows:
        assert row["system_prompt"] == "You are terse."
        blocks = row["prompt"].split("\n\n")
        assert len(blocks) == 3 and blocks[2] == format_question(bench[row["id"]])
    for row in answered:
        blocks = row["prompt"].split("\n\n")
        assert len(blocks) == 3 and blocks[2] == format_question(bench[row["id"]])
        assert all(not block.startswith(bench[row["id"]]["question"]) for block in blocks[:2])
        record = run_reader.load_activations(out / row["activation_file"])
        fed = tok.decode(record["input_ids"])
        # the tiny model's template (tests/helpers.py) writes every message after <|user|>
        assert fed.startswith("<|user|>You are terse.\n<|user|>" + blocks[0][:20])
        assert record["generation"]["system_prompt"] == "You are terse."
    config = json.loads((out / "run_config.json").read_text())
    assert config["system_prompt"] == "You are terse." and config["num_fewshot"] == 2


def test_fewshot_examples_come_from_the_split_or_file_given(tmp_path):
    import datasets

    from activation_eval.run.config import RunConfig
    from activation_eval.run.runner import _load_rows
    from activation_eval.store.run_writer import RunWriter
    test = [{"question": f"Test question {i}?", "choices": ["x", "y"], "answer": i % 2} for i in range(4)]
    dev = [{"question": "Dev question?", "choices": ["x", "y"], "answer": 1}]
    datasets.DatasetDict({"test": datasets.Dataset.from_list(test),
                          "dev": datasets.Dataset.from_list(dev)}).save_to_disk(tmp_path / "ds")
    config = RunConfig(benchmark=str(tmp_path / "ds"), split="test", num_fewshot=1, fewshot_split="dev",
                       output_dir=str(tmp_path / "o1"))
    rows, skipped, _ = _load_rows(config, RunWriter(config.output_dir, "main"))
    assert len(rows) == 4 and skipped == []
    for row in rows:
        assert row["prompt"].startswith("Dev question?\nA. x\nB. y\nAnswer with the letter of the correct choice.\nB\n\n")
    fewshot = tmp_path / "shots.jsonl"
    fewshot.write_text('{"question": "File question?", "answer": "7"}\n')
    config = RunConfig(benchmark=str(tmp_path / "ds"), split="test", num_fewshot=1, fewshot_file=str(fewshot),
                       output_dir=str(tmp_path / "o2"), limit=2)
    rows, _, _ = _load_rows(config, RunWriter(config.output_dir, "main"))
    assert len(rows) == 2 and all(r["prompt"].startswith("File question?\nAnswer with a number only.\n7\n\n")
                                  for r in rows)
    with pytest.raises(ValueError, match="need --num_fewshot"):
        RunConfig(fewshot_file=str(fewshot), output_dir=str(tmp_path / "o3"))
