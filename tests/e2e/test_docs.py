"""The docs name only what exists (issue 26, item 6).

Checked against the code, for README.md, CONTRIBUTING.md, ACTIVATION_CAPTURE_README.md, PERF.md and
docs/*.md (docs/formats.md is generated and has its own test, test_formats_doc.py):
- every `--flag` exists in the parser of the command it is used with: main.py
  (activation_eval.run.cli.build_parser), analyze_activations.py (activation_eval.analysis.cli.build_parser),
  lm-eval's and Inspect's own command lines, torchrun's and accelerate's, a perf/ or tests/ script
  (its source names the flag). A flag outside a command line belongs to the page's own commands (HOMES);
- every `(default: X)` written right after a flag is that parser's default;
- every `make <target>` is a Makefile target; every relative link and #anchor resolves; every
  file path in backticks exists (not in PERF.md and CHANGELOG.md, which describe the code of their date);
- every lm-eval model_arg and Inspect -M argument named is one the code takes, and the argument
  tables of docs/harnesses.md list exactly HARNESS_ARGS and MODEL_ARGS;
- every Python snippet parses and its `from activation_eval... / utils import` names exist;
- the limits the docs quote equal the code's constants (CONSTANTS);
- measured figures live in PERF.md only: the other pages carry no durations, sizes or test counts
  in their prose (MEASURE_ALLOWED lists the few that are code constants or arithmetic, not
  measurements), and every PERF.md section opens with a *Measured on: machine, date; script* line.
"""
import argparse
import ast
import functools
import glob
import importlib
import inspect
import os
import re
import shlex

import pytest

from activation_eval.harness.options import INSPECT_MODEL_ARGS, RUN_ARGS
from helpers import REPO_ROOT

DOCS = ["README.md", "CONTRIBUTING.md", "ACTIVATION_CAPTURE_README.md", "PERF.md", "CHANGELOG.md"] + sorted(
    os.path.relpath(p, REPO_ROOT) for p in glob.glob(os.path.join(REPO_ROOT, "docs", "*.md"))
    if os.path.basename(p) != "formats.md")
FLAG_DOCS = [d for d in DOCS if d != "CHANGELOG.md"]          # the changelog quotes flags of its time
PATH_DOCS = [d for d in FLAG_DOCS if d != "PERF.md"]          # PERF.md describes the code of its date
# the commands a flag written outside a command line belongs to, per page (default: main.py, analyze_activations.py)
HOMES = {
    "ACTIVATION_CAPTURE_README.md": ("main",), "docs/capture.md": ("main",), "docs/evaluation.md": ("main",),
    "docs/analysis.md": ("analyze",), "docs/scaling.md": ("main", "torchrun", "accelerate"),
    "docs/harnesses.md": ("lm-eval", "inspect", "main", "analyze"),
    "docs/security.md": ("main", "analyze", "script:tests/fuzz_records.py"),
    "PERF.md": ("main", "analyze", "script:perf/common.py"),
}
DEFAULT_HOMES = ("main", "analyze")
PYTEST_FLAGS = {"--doctest-modules"}
# documented before the Makefile has them (issue 26, item 7, another branch): allowed while absent
PENDING_TARGETS = {"test-unit"}

FENCE = re.compile(r"^\s*```")
SPAN = re.compile(r"`([^`]+)`")
FLAG = re.compile(r"(?<![\w-])(--[A-Za-z][\w-]*)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
DEFAULT_AFTER_FLAG = re.compile(r"`(--[A-Za-z][\w-]*)((?: [^`]*)?)`\s*\((?:the )?default:?\s*([^;)]*)\)")


def read(doc):
    with open(os.path.join(REPO_ROOT, doc), encoding="utf-8") as f:
        return f.read()


@functools.cache
def parts(doc):
    """(prose, code blocks): prose is the text outside fenced blocks (its 4-space-indented lines moved to the
    code); each code block is (language, text)."""
    prose, blocks, block, lang = [], [], None, ""
    for line in read(doc).splitlines():
        if FENCE.match(line):
            if block is None:
                block, lang = [], line.strip()[3:].strip()
            else:
                blocks.append((lang, "\n".join(block)))
                block = None
        elif block is not None:
            block.append(line)
        elif line.startswith("    ") and line.strip():
            blocks.append(("", line))
        else:
            prose.append(line)
    assert block is None, f"{doc}: a code block is not closed"
    return "\n".join(prose), blocks


def shell_lines(text):
    """Logical lines of a shell block: continuations joined, heredoc bodies left out."""
    lines, pending, heredoc = [], "", None
    for line in text.splitlines():
        if heredoc is not None:
            heredoc = None if line.strip() == heredoc else heredoc
            continue
        match = re.search(r"<<-?\s*'?\"?(\w+)", line)
        if match:
            heredoc = match.group(1)
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        lines.append(pending + line)
        pending = ""
    return lines + ([pending] if pending else [])


def tokens(line):
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return line.split("#")[0].split()


COMMAND_WORDS = re.compile(r"(^|[\s/])(main\.py|analyze_activations\.py|activation-eval[\w-]*|make|inspect|torchrun|"
                           r"accelerate|pytest|python|perf/\S+\.py|tests/\S+\.py)(\s|$)")


def uses(tok_list):
    """(command, token, next token) for each flag, make target and -M argument of one command line.
    command: main, analyze, lm-eval, inspect, torchrun, accelerate, pytest, make, script:<path>,
    module:<name>, or None (no command recognised before the token)."""
    out, command, make_target = [], None, None
    for i, tok in enumerate(tok_list):
        prev = tok_list[i - 1] if i else ""
        nxt = tok_list[i + 1] if i + 1 < len(tok_list) else None
        base = os.path.basename(tok)
        is_value = prev.startswith("-") and not tok.startswith("-") and not tok.endswith(".py")
        if prev == "-m" and command != "pytest":          # python -m MODULE (pytest's -m is a marker expression)
            command = {"activation_eval.harness": "lm-eval", "pytest": "pytest"}.get(tok, f"module:{tok}")
        elif is_value and command != "make":
            pass                                          # a flag's value (`--model activation-eval`)
        elif tok in ("|", "||", "&&", ";"):
            command = None
        elif base == "main.py" or tok == "activation-eval":
            command = "main"
        elif base == "analyze_activations.py" or tok == "activation-eval-analyze":
            command = "analyze"
        elif tok in ("activation-eval-lm-eval", "lm-eval", "lm_eval"):
            command = "lm-eval"
        elif tok in ("inspect", "torchrun", "accelerate", "pytest") and not tok.startswith("-"):
            command = tok
        elif re.fullmatch(r"(perf|tests)/[\w/]+\.py", tok):
            command = f"script:{tok}"
        elif tok == "make":
            command, make_target = "make", None
        elif command == "make" and not tok.startswith("-"):
            if tok.startswith("ARGS="):
                sub = "analyze" if make_target == "analyze" else "main"
                out += [(sub if c is None else c, t, n) for c, t, n in uses(tokens(tok[len("ARGS="):]))]
            elif "=" not in tok:
                make_target = tok
                out.append(("make", tok, None))
        if tok.startswith("--") and len(tok) > 2 and command != "make":
            out.append((command, tok.split("=", 1)[0], nxt))
        elif tok == "-M" and command == "inspect":
            out.append(("inspect", "-M", nxt))
    return out


def flag_uses(doc):
    """(command or None for the page's homes, flag, next token, where) of every flag of the page."""
    prose, blocks = parts(doc)
    found = []
    for lang, text in blocks:
        if lang in ("python", "text", "json"):
            continue
        for line in shell_lines(text):
            found += [(c, t, n, line.strip()) for c, t, n in uses(tokens(line)) if c != "make"]
    for span in SPAN.findall(prose):
        if COMMAND_WORDS.search(span):
            found += [(c, t, n, span) for c, t, n in uses(tokens(span)) if c != "make"]
        else:
            found += [(None, flag, None, span) for flag in FLAG.findall(span)]
    outside = SPAN.sub(" ", prose)
    found += [(None, flag, None, "prose") for flag in FLAG.findall(outside)]
    return found


@functools.cache
def parser_options(command):
    """{option string: default} of a command's parser (None for options known only by name)."""
    if command == "main":
        from activation_eval.run.cli import build_parser
        return _argparse_options(build_parser())
    if command == "analyze":
        import activation_eval.experiments  # noqa: F401  (registers --causal, as analyze_activations.py does)
        from activation_eval.analysis.cli import build_parser
        return _argparse_options(build_parser())
    if command == "lm-eval":
        from lm_eval._cli.harness import HarnessCLI
        return _argparse_options(HarnessCLI()._parser)
    if command == "inspect":
        from inspect_ai._cli.eval import eval_command
        return {opt: None for p in eval_command.params for opt in [*p.opts, *p.secondary_opts]}
    if command == "torchrun":
        from torch.distributed.run import get_args_parser
        return _argparse_options(get_args_parser())
    if command == "accelerate":
        from accelerate.commands.launch import launch_command_parser
        return _argparse_options(launch_command_parser())
    if command == "pytest":
        return dict.fromkeys(PYTEST_FLAGS)
    if command.startswith(("script:", "module:")):
        path = command[len("script:"):] if command.startswith("script:") else \
            command[len("module:"):].replace(".", os.sep) + ".py"
        sources = [path] + (["perf/common.py"] if path.startswith("perf/") else [])
        text = "".join(read(p) for p in sources if os.path.isfile(os.path.join(REPO_ROOT, p)))
        assert text, f"{path} does not exist"
        return dict.fromkeys(re.findall(r"[\"'](--[\w-]+)[\"']", text))
    raise AssertionError(f"no parser for {command}")


def _argparse_options(parser):
    options = {}
    for action in parser._actions:
        for opt in action.option_strings:
            options[opt] = action.default
        if isinstance(action, argparse._SubParsersAction):            # subcommands (lm-eval run, ...)
            for sub in action.choices.values():
                options.update({o: d for o, d in _argparse_options(sub).items() if o not in options})
    return options


@pytest.mark.parametrize("doc", FLAG_DOCS)
def test_every_flag_exists_in_its_commands_parser(doc):
    wrong = []
    for command, flag, _, where in flag_uses(doc):
        commands = HOMES.get(doc, DEFAULT_HOMES) if command is None else (command,)
        if not any(flag in parser_options(c) for c in commands):
            wrong.append(f"{flag} ({' or '.join(commands)}): {where}")
    assert not wrong, f"{doc} names flags its commands do not have:\n" + "\n".join(wrong)


@pytest.mark.parametrize("doc", FLAG_DOCS)
def test_a_default_written_after_a_flag_is_the_parsers(doc):
    prose = re.sub(r"\s+", " ", parts(doc)[0])
    wrong = []
    for flag, rest, text in DEFAULT_AFTER_FLAG.findall(prose):
        value = (text.strip() or rest.strip()).strip("`'\"")
        if not value or " " in value:
            continue                                      # a described default ("the model's dtype")
        commands = [c for c in HOMES.get(doc, DEFAULT_HOMES) if not c.startswith("script:")]
        defaults = [parser_options(c)[flag] for c in commands if flag in parser_options(c)]
        if defaults and not any(_same(d, value) for d in defaults if d is not None) and \
                any(d is not None for d in defaults):
            wrong.append(f"{flag}: the doc says {value!r}, the parser {defaults}")
    assert not wrong, f"{doc}:\n" + "\n".join(wrong)


def _same(default, text):
    if isinstance(default, bool) or not isinstance(default, (int, float)):
        return str(default) == text
    try:
        return float(text) == default
    except ValueError:
        return False


@functools.cache
def make_targets():
    text = read("Makefile")
    targets = set(re.findall(r"^([\w-]+)\s*:", text, re.M))
    for phony in re.findall(r"^\.PHONY:(.*)$", text, re.M):
        targets.update(phony.split())
    return targets


@pytest.mark.parametrize("doc", DOCS)
def test_every_make_target_exists(doc):
    prose, blocks = parts(doc)
    lines = [ln for lang, text in blocks if lang not in ("python", "text") for ln in shell_lines(text)]
    lines += SPAN.findall(prose)
    named = {t for line in lines for c, t, _ in uses(tokens(line)) if c == "make"}
    missing = sorted(named - make_targets() - PENDING_TARGETS)
    assert not missing, f"{doc} names make targets the Makefile lacks: {missing}"


def slug(heading):
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@functools.cache
def anchors(doc):
    return {slug(line.lstrip("#")) for line in parts(doc)[0].splitlines() if re.match(r"#{1,6} ", line)}


@pytest.mark.parametrize("doc", DOCS + ["docs/formats.md"])
def test_every_relative_link_and_anchor_resolves(doc):
    broken = []
    for target in LINK.findall(parts(doc)[0]):
        if re.match(r"[a-z]+:", target):
            continue                                      # https:, mailto:
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(doc), path)) if path else doc
        if not os.path.exists(os.path.join(REPO_ROOT, resolved)):
            broken.append(f"{target}: no file {resolved}")
        elif anchor and resolved.endswith(".md") and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading #{anchor} in {resolved}")
    assert not broken, f"{doc}:\n" + "\n".join(broken)


PACKAGE_ROOMS = ("capture", "eval", "store", "run", "harness", "analysis", "schema")


@functools.cache
def repo_files():
    names = set()
    for _folder, dirs, files in os.walk(REPO_ROOT):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in ("__pycache__", "results")]
        names.update(files)
    return names


def path_exists(span):
    """None when `span` does not look like a repository path, else whether it exists."""
    span = span.strip()
    if re.search(r"[\s<>*{}]", span) or span.startswith("perf/out"):
        return None
    if re.fullmatch(r"(activation_eval|tests|perf|docs)(/[\w.-]+)*/?", span):
        return os.path.exists(os.path.join(REPO_ROOT, span))
    if re.fullmatch(rf"({'|'.join(PACKAGE_ROOMS)})/[\w.]+\.py", span):
        return os.path.exists(os.path.join(REPO_ROOT, "activation_eval", span))
    if re.fullmatch(r"[\w-]+\.(py|md)", span):
        return span in repo_files()
    return None


@pytest.mark.parametrize("doc", PATH_DOCS)
def test_every_file_path_in_backticks_exists(doc):
    missing = [span for span in SPAN.findall(parts(doc)[0]) if path_exists(span) is False]
    assert not missing, f"{doc} names files that do not exist: {missing}"


HARNESS_ARGS = set(RUN_ARGS)                    # lm_eval_model.HARNESS_ARGS, without importing lm-eval
INSPECT_ARGS = set(INSPECT_MODEL_ARGS)          # inspect_provider.MODEL_ARGS, without importing Inspect


@functools.cache
def lm_eval_model_args():
    from lm_eval.models.huggingface import HFLM
    return HARNESS_ARGS | set(inspect.signature(HFLM.__init__).parameters) - {"self", "kwargs"}


def harness_arguments(doc):
    """(harness, argument name, where) of every model_arg and -M argument in the page's commands and snippets."""
    prose, blocks = parts(doc)
    found = []
    lines = [ln for lang, text in blocks if lang != "python" for ln in shell_lines(text)] + SPAN.findall(prose)
    for line in lines:
        for command, tok, value in uses(tokens(line)):
            if command == "lm-eval" and tok == "--model_args" and value and value != "...":
                from lm_eval._cli.utils import key_val_to_dict
                found += [("lm-eval", key, line) for key in key_val_to_dict(value)]
            elif command == "inspect" and tok == "-M" and value:
                found.append(("inspect", value.split("=", 1)[0], line))
    for lang, text in blocks:
        if lang != "python":
            continue
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "attr", getattr(node.func, "id", ""))
                for kw in node.keywords:
                    if kw.arg == "model_args" and isinstance(kw.value, ast.Dict):
                        harness = "lm-eval" if name == "simple_evaluate" else "inspect"
                        found += [(harness, k.value, name) for k in kw.value.keys if isinstance(k, ast.Constant)]
    return found


@pytest.mark.parametrize("doc", FLAG_DOCS)
def test_every_harness_argument_named_exists(doc):
    wrong = []
    for harness, name, where in harness_arguments(doc):
        known = lm_eval_model_args() if harness == "lm-eval" else INSPECT_ARGS
        if name not in known:
            wrong.append(f"{harness} argument {name}: {where}")
    assert not wrong, f"{doc}:\n" + "\n".join(wrong)


def _table_names(doc, header):
    prose = parts(doc)[0]
    table = prose.split(f"| {header} |", 1)[1].split("\n\n", 1)[0]
    return {name for row in table.splitlines()[2:] for name in re.findall(r"`(\w+)`", row.split("|")[1])}


def test_the_harness_tables_list_exactly_the_arguments_the_code_takes():
    assert _table_names("docs/harnesses.md", "model_arg") == HARNESS_ARGS
    assert _table_names("docs/harnesses.md", "-M argument") == INSPECT_ARGS


@pytest.mark.parametrize("doc", FLAG_DOCS)
def test_python_snippets_parse_and_import_what_exists(doc):
    for lang, text in parts(doc)[1]:
        if lang != "python":
            continue
        tree = ast.parse(text)                                   # a SyntaxError names the snippet
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and \
                    node.module.split(".")[0] in ("activation_eval", "utils"):
                module = _import(node.module)
                for alias in node.names:
                    assert hasattr(module, alias.name), f"{doc}: from {node.module} import {alias.name}"


def _import(name):
    if name == "utils":                                          # the root entry point, not on sys.path here
        spec = importlib.util.spec_from_file_location("utils", os.path.join(REPO_ROOT, "utils.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return importlib.import_module(name)


@functools.cache
def module_assignments():
    """{NAME: [(module path, value node)]} of every module-level assignment in activation_eval/ (parsed once)."""
    found = {}
    for path in glob.glob(os.path.join(REPO_ROOT, "activation_eval", "**", "*.py"), recursive=True):
        with open(path, encoding="utf-8") as f:
            body = ast.parse(f.read()).body
        for node in body:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
            for target in targets:
                if isinstance(target, ast.Name) and node.value is not None:
                    found.setdefault(target.id, []).append((path, node.value))
    return found


@functools.cache
def constant(name, module=None):
    """The value of a module-level NAME = <expression of literals and other such names> in activation_eval/,
    wherever it lives (a module may move; two different values are an error); `module`: only in files of that name."""
    values = {path: _evaluate(node) for path, node in module_assignments().get(name, [])
              if module is None or os.path.basename(path) == f"{module}.py"}
    assert values, f"no module of activation_eval defines {name}"
    assert len(set(values.values())) == 1, f"{name} differs between modules: {values}"
    return next(iter(values.values()))


def _evaluate(node):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return constant(node.id)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_evaluate(node.operand)
    if isinstance(node, ast.BinOp):
        ops = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
               ast.LShift: lambda a, b: a << b, ast.Pow: lambda a, b: a ** b}
        return ops[type(node.op)](_evaluate(node.left), _evaluate(node.right))
    raise AssertionError(f"not a constant expression: {ast.dump(node)}")


def _benchmark_limits():
    from activation_eval.eval.benchmark_limits import DEFAULT_LIMITS
    return DEFAULT_LIMITS


def _builtin_questions():
    from activation_eval.eval.benchmark import DEFAULT_BENCHMARK
    with open(DEFAULT_BENCHMARK, encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def _main_default(flag):
    from activation_eval.run.cli import build_parser
    return next(a.default for a in build_parser()._actions if flag in a.option_strings)


def _analysis_help(flag):
    import activation_eval.experiments  # noqa: F401  (registers --causal)
    from activation_eval.analysis.cli import build_parser
    return next(a.help for a in build_parser()._actions if flag in a.option_strings)


# (page, the phrase as the page writes it (whitespace-normalised), the code's value, the value the phrase states)
CONSTANTS = [
    ("README.md", "the 122 built-in questions", _builtin_questions, 122),
    ("docs/security.md", "nesting at most 100 deep", lambda: constant("MAX_DEPTH"), 100),
    ("docs/security.md", "at most 10^6 opcodes", lambda: constant("MAX_OPS"), 10 ** 6),
    ("docs/security.md", "at most 10^6 objects", lambda: constant("MAX_NODES"), 10 ** 6),
    ("docs/security.md", "4x the file size + 1 MiB", lambda: (constant("DECODED_RATIO"), constant("DECODED_SLACK")),
     (4, 2 ** 20)),
    ("docs/security.md", "at most 16 dimensions", lambda: constant("MAX_DIMS"), 16),
    ("docs/security.md", "multiply to at most 2^48", lambda: constant("MAX_EXTENT"), 2 ** 48),
    ("docs/security.md", "ints within +-(2^61 - 2)", lambda: constant("MAX_KEY_INT"), 2 ** 61 - 2),
    ("docs/security.md", "an int below 2^63", lambda: constant("MAX_INT"), 2 ** 63),
    ("docs/security.md", "Nesting at most 100 and at most 10^6 values per text",
     lambda: (constant("MAX_DEPTH"), constant("MAX_VALUES")), (100, 10 ** 6)),
    ("docs/security.md", "A header lists at most 16,384 tensors", lambda: constant("MAX_TENSORS"), 16384),
    ("docs/security.md", "at most 1,000,000 rows, 1 MiB per cell",
     lambda: (_benchmark_limits().rows, _benchmark_limits().cell_bytes), (1_000_000, 2 ** 20)),
    ("docs/security.md", "1 GiB in all", lambda: _benchmark_limits().total_bytes, 2 ** 30),
    ("docs/security.md", "JSON nested at most 100 deep", lambda: _benchmark_limits().depth, 100),
    ("docs/capture.md", "also after 10 minutes", lambda: constant("SHARD_MAX_SECONDS"), 600),
    ("docs/scaling.md", "a unit holds N x `--batch_size` questions", lambda: _main_default("--unit_batches"), 1),
    ("docs/evaluation.md", "A category of fewer than 5 questions is flagged", lambda: constant("SMALL_N", "accuracy"), 5),
    ("docs/harnesses.md", "`--max-tokens` defaults to 512", lambda: constant("DEFAULT_MAX_TOKENS"), 512),
    ("docs/analysis.md", "`--bootstrap B`, at least 1000", lambda: "at least 1000" in _analysis_help("--bootstrap"), True),
]


@pytest.mark.parametrize("doc, phrase, code, stated", CONSTANTS, ids=[c[1][:40] for c in CONSTANTS])
def test_a_quoted_limit_is_the_codes(doc, phrase, code, stated):
    assert phrase in re.sub(r"\s+", " ", read(doc)), f"{doc} no longer says {phrase!r}: update CONSTANTS"
    assert code() == stated, f"{doc} says {phrase!r}; the code now has {code()!r}"


# a number with a unit of time or size, or a count of tests: what a measurement looks like
MEASURE = re.compile(r"\b\d[\d,.]*\s*(?:ms|s|sec|seconds?|min|minutes?|hours?|KB|MB|GB|KiB|MiB|GiB)\b"
                     r"|\b\d[\d,]*\s+(?:tests|doctests|passed)\b")
# the figures in prose outside PERF.md that are code constants, budgets or arithmetic, not measurements
MEASURE_ALLOWED = {
    "CONTRIBUTING.md": ["about 2 minutes on a quiet machine"],   # the tier's budget (issue 26)
    "docs/capture.md": ["71 KB per question",                        # bytes = layers x positions x hidden x 4
                        "after 10 minutes"],                         # SHARD_MAX_SECONDS (CONSTANTS)
    "docs/security.md": ["1 MiB per cell", "1 GiB in all", "+ 1 MiB", "a 2 GB void scalar from 110 bytes",
                         "far under 1 GB", "over 1 GB"],                 # limits (CONSTANTS) and attack sizes
}


@pytest.mark.parametrize("doc", [d for d in DOCS if d not in ("PERF.md", "CHANGELOG.md")])
def test_measured_figures_live_in_perf_md(doc):
    prose = re.sub(r"\s+", " ", SPAN.sub(" ", parts(doc)[0]))
    for allowed in MEASURE_ALLOWED.get(doc, []):
        assert allowed in prose, f"{doc}: {allowed!r} is no longer there; drop it from MEASURE_ALLOWED"
        prose = prose.replace(allowed, " ")
    found = [m.group(0) for m in MEASURE.finditer(prose)]
    assert not found, f"{doc} quotes measured figures (move them to PERF.md with machine and date): {found}"


def test_every_perf_section_names_its_machine_date_and_script():
    sections = re.split(r"^## ", parts("PERF.md")[0], flags=re.M)[1:]
    intro = ("How the figures are made", "The machines", "The answers in one table")
    for section in sections:
        title, body = section.split("\n", 1)
        if title.strip() in intro:
            continue
        line = next((ln for ln in body.splitlines() if ln.strip()), "")
        assert line.startswith("*Measured on: "), f"PERF.md '{title}' must open with *Measured on: ...*"
        assert re.search(r"\b(CPU VM|H200)\b", line) and re.search(r"\b20\d\d-\d\d-\d\d\b", line), line
        assert "script: " in line, line
        for path in re.findall(r"\b(?:perf|tests)/[\w/]+\.py\b", line):
            assert os.path.isfile(os.path.join(REPO_ROOT, path)), f"PERF.md '{title}': no script {path}"
    assert len(sections) > len(intro)


def test_readme_is_short_and_starts_with_the_two_commands():
    text = read("README.md")
    assert len(text.splitlines()) <= 150
    first_block = next(t for lang, t in parts("README.md")[1] if lang == "bash")
    assert [ln.split()[:2] for ln in first_block.splitlines()] == [["make", "run"], ["make", "test"]]
