"""Prompts for benchmark rows: the question text, an optional template, few-shot examples.

Public names:
    PromptSettings      template / num_fewshot / fewshot_seed / style (the prompt text of every row)
    check_template(template) -> template   the one check of a --prompt_template (one clear error)
    lists_choices(template) -> bool        does a prompt made with the template list the lettered choices?
    STYLE_TEMPLATES     {"mmlu": ..., "cloze": ...}: the default prompts of log-likelihood scoring
    format_choices(choices) -> "A. Paris\\nB. Rome"
    format_question(row, template=None, style=None) -> str   one row's prompt, without examples
    fewshot_target(row, style=None) -> str       the answer an example shows ("B", "42", "Paris")
    fewshot_examples(row, pool, k, seed) -> [row, ...]   k rows of pool, never the row itself
    build_prompt(row, settings=None, pool=()) -> str     examples + the row's prompt
    with_prompts(rows, settings=None, pool=None) -> rows, each a copy with its "prompt"
    prompt_of(row, style=None) -> str   row["prompt"] when with_prompts set it, else format_question(row, style=style)

Example:
    >>> row = {"id": "q1", "question": "2 + 2?", "answer": ["4"]}
    >>> print(format_question(row))
    2 + 2?
    Answer with a number only.
    >>> print(format_question(row, "Q: {question}\\nA:"))
    Q: 2 + 2?
    A:

Styles (--mc_scoring loglikelihood, as lm-evaluation-harness's tasks; None: generation's prompts):
    mmlu   "{question}\\n{choices}\\nAnswer:" (MMLU's prompt): the lettered choices are listed and the
           scored continuations are " A", " B", ...; a few-shot example shows its gold letter.
    cloze  "Question: {question}\\nAnswer:" (ARC's prompt): the choices are not listed and each choice's
           text is scored as the continuation; a few-shot example shows its gold choice's text.
A --prompt_template replaces the style's prompt (the style still decides what is scored and shown).

The system prompt is not part of this text: generation (capture/generation.py) sends it as the
system message of the chat template, or prepends it ("system prompt\\n\\nprompt") without one.

Few-shot (as in lm-evaluation-harness): each example is the example row's prompt followed by its
gold answer (after a space when the prompt ends with ":", else on the next line); examples and
the question are separated by a blank line. The examples of a question are drawn from the pool
with random.Random(f"{seed}:{row id}"): the same for a question whatever the order, --limit or
number of processes, and never the question itself (same id or same question text).
"""
import dataclasses
import random
import string
from collections import Counter

from .errors import BenchmarkError
from .gold import LETTERS, grader_name, has_gold, row_gold, unlettered

__all__ = ["PromptSettings", "check_template", "lists_choices", "STYLE_TEMPLATES", "format_choices", "format_question",
           "fewshot_target", "fewshot_examples", "build_prompt", "with_prompts", "prompt_of"]

TEMPLATE_FIELDS = ("question", "choices")
DEFAULT_FEWSHOT_SEED = 1234                 # lm-evaluation-harness's default few-shot seed
_INSTRUCTIONS = {"choice": "Answer with the letter of the correct choice.",
                 "choice_all": "Answer with the letters of all correct choices.",
                 "number": "Answer with a number only.",
                 "text": "Answer with a short answer only."}
STYLE_TEMPLATES = {"mmlu": "{question}\n{choices}\nAnswer:",        # lm-eval's mmlu (without the subject line)
                   "cloze": "Question: {question}\nAnswer:"}           # lm-eval's arc_easy / arc_challenge


@dataclasses.dataclass
class PromptSettings:
    template: str = None                    # format string with {question} and {choices}; None: the default
    num_fewshot: int = 0                    # solved examples before each question
    fewshot_seed: int = DEFAULT_FEWSHOT_SEED
    style: str = None                       # "mmlu" / "cloze": log-likelihood scoring's prompts; None: generation's

    def __post_init__(self):
        if self.template is not None:
            check_template(self.template)
        if self.style is not None and self.style not in STYLE_TEMPLATES:
            raise BenchmarkError(f"prompt style must be one of {', '.join(STYLE_TEMPLATES)}, got {self.style!r}")
        if isinstance(self.num_fewshot, bool) or not isinstance(self.num_fewshot, int) or self.num_fewshot < 0:
            raise BenchmarkError(f"--num_fewshot must be a whole number >= 0, got {self.num_fewshot!r}")


def check_template(template):
    """The template if it uses only {question} and {choices} (and uses {question}); else one clear error.

    Example:
        >>> check_template("Question: {question}\\n{choices}\\nAnswer:")
        'Question: {question}\\n{choices}\\nAnswer:'
    """
    hint = ("--prompt_template takes a format string with {question} and optionally {choices}, "
            "e.g. 'Question: {question}\\n{choices}\\nAnswer:'; write {{ and }} for literal braces")
    if not isinstance(template, str) or not template.strip():
        raise BenchmarkError(f"--prompt_template is empty; {hint}")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise BenchmarkError(f"--prompt_template {template!r}: {e}; {hint}") from None
    for name, spec, conv in fields:
        if name not in TEMPLATE_FIELDS or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise BenchmarkError(f"--prompt_template: unknown placeholder {shown}; {hint}")
    if "question" not in {name for name, _, _ in fields}:
        raise BenchmarkError(f"--prompt_template has no {{question}}; {hint}")
    return template


def lists_choices(template):
    """True when prompts made with `template` list the lettered choices: the default prompts do, a
    --prompt_template does when it has {choices}.

    Example:
        >>> lists_choices(None), lists_choices("Q: {question}\\nA:"), lists_choices("{question}\\n{choices}")
        (True, False, True)
    """
    if template is None:
        return True
    return any(name == "choices" for _, name, _, _ in string.Formatter().parse(check_template(template)))


def format_choices(choices):
    """The lettered list of choices, one a line ("" without choices); choices that already carry their
    letters ("A) Paris", "B) Rome") are lettered once (gold.unlettered).

    Example:
        >>> format_choices(["Paris", "Rome"]), format_choices(["A) Paris", "B) Rome"])
        ('A. Paris\\nB. Rome', 'A. Paris\\nB. Rome')
    """
    return "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(unlettered(choices or [])))


def _kind(row):
    """The grader a prompt is written for; a row without a gold answer gets the short-answer prompt."""
    if not has_gold(row):
        return "choice" if isinstance(row, dict) and row.get("choices") else "text"
    return grader_name(row)


def format_question(row, template=None, style=None):
    """The prompt text for one row, before any system prompt or chat template; `style` ("mmlu",
    "cloze"): log-likelihood scoring's default prompt (used when template is None).

    Example:
        >>> print(format_question({"question": "2 + 2?", "answer": ["4"]}))
        2 + 2?
        Answer with a number only.
        >>> print(format_question({"question": "2 + 2?", "choices": ["3", "4"], "answer": "B"}, style="mmlu"))
        2 + 2?
        A. 3
        B. 4
        Answer:
    """
    question = row.get("question") if isinstance(row, dict) else None
    if not isinstance(question, str) or not question.strip():
        raise BenchmarkError(f"row has no 'question' text: {row!r}; pass a row from load_benchmark()")
    question = question.strip()
    choices = row.get("choices") or None
    if template is None and style is not None:
        template = STYLE_TEMPLATES[style]
    if template is not None:
        return check_template(template).format(question=question, choices=format_choices(choices))
    kind = _kind(row)
    if kind.startswith("choice"):
        return f"{question}\n{format_choices(choices)}\n{_INSTRUCTIONS[kind]}"
    return f"{question}\n{_INSTRUCTIONS[kind]}"


def fewshot_target(row, style=None):
    """The gold answer a few-shot example shows: the letter(s), the number or the first alias; in the
    cloze style the gold choice's text (texts, joined by ", ").

    Example:
        >>> fewshot_target({"question": "?", "answer": ["A", "C"], "choices": ["x", "y", "z"]})
        'A, C'
        >>> fewshot_target({"question": "?", "answer": ["B"], "choices": ["x", "y"], "grader": "choice"}, "cloze")
        'y'
    """
    answers = row["answer"] if isinstance(row["answer"], list) else [row["answer"]]
    if style == "cloze" and _kind(row).startswith("choice"):
        choices = unlettered(row["choices"])
        letters = row_gold(row)[0]
        return ", ".join(str(choices[LETTERS.index(a)]) for a in letters)
    if _kind(row) == "choice_all":
        return ", ".join(answers)
    return str(answers[0])


def fewshot_examples(row, pool, k, seed=DEFAULT_FEWSHOT_SEED, _index=None):
    """k rows of pool drawn with a seed fixed per question; never the row itself.

    Example:
        >>> pool = [{"id": str(i), "question": f"q{i}?", "answer": [str(i)]} for i in range(5)]
        >>> [r["id"] for r in fewshot_examples(pool[0], pool, 2)] == [r["id"] for r in fewshot_examples(pool[0], pool, 2)]
        True
    """
    if k == 0:
        return []
    ids, questions = _index or _pool_index(pool)
    # pool rows that are this question: same question text, or same id (with another text)
    own = questions[row.get("question")] + (row.get("id") in ids and ids[row.get("id")] != row.get("question"))
    if len(pool) - own < k:
        raise BenchmarkError(f"--num_fewshot {k}: only {len(pool) - own} other rows to draw examples from "
                             f"(question {row.get('id')!r}); lower --num_fewshot or pass a larger --fewshot_file")
    rng = random.Random(f"{seed}:{row.get('id')}")
    drawn = rng.sample(range(len(pool)), k + own)                    # O(k): no copy of the pool per question
    picked = [pool[i] for i in drawn if pool[i].get("id") != row.get("id")
              and pool[i].get("question") != row.get("question")]
    return picked[:k]


def _pool_index(pool):
    return {r.get("id"): r.get("question") for r in pool}, Counter(r.get("question") for r in pool)


def _joined(prompt, target):
    return f"{prompt} {target}" if prompt.rstrip().endswith(":") else f"{prompt}\n{target}"


def build_prompt(row, settings=None, pool=(), _index=None):
    """The whole prompt of one row: few-shot examples (from pool), then the row's own prompt.

    Example:
        >>> pool = [{"id": "e", "question": "1 + 1?", "answer": ["2"]}]
        >>> print(build_prompt({"id": "q", "question": "2 + 2?", "answer": ["4"]}, PromptSettings(num_fewshot=1), pool))
        1 + 1?
        Answer with a number only.
        2
        <BLANKLINE>
        2 + 2?
        Answer with a number only.
    """
    settings = settings or PromptSettings()
    examples = fewshot_examples(row, pool, settings.num_fewshot, settings.fewshot_seed, _index)
    style = settings.style
    parts = [_joined(format_question(ex, settings.template, style), fewshot_target(ex, style)) for ex in examples]
    return "\n\n".join(parts + [format_question(row, settings.template, style)])


def with_prompts(rows, settings=None, pool=None):
    """Copies of rows, each with its "prompt" (examples drawn from pool, default: the rows themselves).

    Example:
        >>> rows = with_prompts([{"id": "g", "question": "Capital of France?", "answer": ["Paris"]}],
        ...                     PromptSettings(template="Q: {question}\\nA:"))
        >>> rows[0]["prompt"]
        'Q: Capital of France?\\nA:'
    """
    settings = settings or PromptSettings()
    pool = list(rows if pool is None else pool)
    index = _pool_index(pool) if settings.num_fewshot else None
    return [dict(row, prompt=build_prompt(row, settings, pool, index)) for row in rows]


def prompt_of(row, style=None):
    """The prompt a row is asked with: the one with_prompts set, else format_question(row, style=style)."""
    return row["prompt"] if isinstance(row, dict) and row.get("prompt") else format_question(row, style=style)
