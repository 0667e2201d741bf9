"""Newcomer friction around the CLIs and the run folder (issue 19, items 4, 5 (CLI part) and 7).

- the eval CLI's flags are built from RunConfig's fields: one default and one set of choices each;
  the runner asks the configuration for its generation and capture settings
- the logit lens / report never download: a hub id in run_config.json gives a message naming
  --model PATH before anything is loaded or any connection attempted
- the next-step hint `make run` / main.py prints works when pasted; SIGTERM stops like Ctrl-C with
  the --resume hint; --quiet silences progress bars; --output_dir that is a file is one clear line;
  the console scripts show their own names
- the default model's converted copy is keyed by the GGUF's content and built once under
  concurrent first users
- plot file names carry the options that change them
"""
import dataclasses
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import analyze_activations as aa
from activation_eval import models
from activation_eval.analysis import cli as analysis_cli
from activation_eval.analysis import lens
from activation_eval.analysis.commands.base import plot_name
from activation_eval.analysis.jsonio import to_json
from activation_eval.analysis.lens import model as lens_model
from activation_eval.run import cli
from activation_eval.run import config as run_config
from activation_eval.run.config import RunConfig, RunError
from helpers import REPO_ROOT, read_rows, run_main

ROOT = REPO_ROOT
HUB_ID = "some-org/some-model-that-is-not-here"


# ----------------------------------------------------------------------------- flags = RunConfig fields

def test_every_flag_default_and_choice_is_the_run_configs():
    parser = cli.build_parser()
    args = parser.parse_args([])
    fields = {f.name: f for f in dataclasses.fields(RunConfig)}
    flagged = [f for f, _ in run_config.cli_fields()]
    # set in code only: progress (the CLI's --quiet), interventions (Intervention objects), what RunConfig
    # derives from the steering flags once (_built, _entries), question_ids (the causal check's folds)
    assert set(fields) - {f.name for f in flagged} == {"progress", "interventions", "_built", "_entries",
                                                       "question_ids"}
    actions = {a.dest: a for a in parser._actions}
    for field in flagged:
        assert getattr(args, field.name) == field.default, field.name                # parse [] = the field default
        choices = field.metadata["cli"]["choices"]
        assert (tuple(actions[field.name].choices) if actions[field.name].choices else None) == choices, field.name
    parsed = run_config.config_from_args(args)
    reference = RunConfig(output_dir=parsed.output_dir)                             # the timestamp folder differs
    assert dataclasses.asdict(parsed) == dataclasses.asdict(reference)
    # the choices are the models' / capture's own names, not copies
    assert actions["dtype"].choices == list(models.DTYPES) or tuple(actions["dtype"].choices) == tuple(models.DTYPES)
    assert tuple(actions["chat_template"].choices) == models.CHAT_TEMPLATE_SETTINGS


def test_help_lists_every_flag_with_its_default():
    text = cli.build_parser().format_help()
    for field, meta in run_config.cli_fields():
        flag = meta["flag"] or f"--{field.name}"
        assert flag in text, flag
    assert "--max_new_tokens N    tokens generated per answer (default: 32)" in text
    assert "(default: auto = when it has one)" in text and "(default: 256)" in text
    for group in run_config.GROUPS:
        assert f"\n{group}:\n" in text


def test_flags_map_onto_the_config():
    args = cli.build_parser().parse_args(["--no_continuous_batching", "--temperature", "0.5", "--top_k", "3",
                                          "--limit", "0.5", "--strict", "--activation_dtype", "float16"])
    config = run_config.config_from_args(args)
    assert (config.continuous_batching, config.temperature, config.top_k, config.limit, config.strict,
            config.activation_dtype) == (False, 0.5, 3, 0.5, True, "float16")
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--activation_store", "tape"])


@pytest.mark.parametrize("field, value", [("dtype", "float64"), ("mc_scoring", "vote"),
                                          ("activation_format", "npy"), ("chat_template", "maybe")])
def test_run_config_checks_the_flags_choices_too(field, value):
    with pytest.raises(RunError, match=f"--{field} must be one of"):
        RunConfig(**{field: value})


def test_the_runner_takes_its_settings_from_the_config(tiny_dir, tmp_path, monkeypatch):
    calls = []
    for name in ("generation_settings", "capture_settings"):
        original = getattr(RunConfig, name)

        def spy(self, *a, _original=original, _name=name):
            calls.append(_name)
            return _original(self, *a)
        monkeypatch.setattr(RunConfig, name, spy)
    config = RunConfig(model=tiny_dir, max_new_tokens=3, temperature=0.5, seed=7)
    settings = config.generation_settings()
    assert (settings.max_new_tokens, settings.temperature, settings.seed, settings.use_chat_template) == (3, 0.5, 7, "auto")
    assert config.capture_settings(None) is None                      # no capture: no settings
    calls.clear()
    assert run_main("--model", tiny_dir, "--limit", 2, "--max_new_tokens", 3, "--output_dir", tmp_path / "r",
                    "--capture_activations", "--layers", "0,-1", "--positions", "last_prompt") == 0
    assert "generation_settings" in calls and "capture_settings" in calls
    record = json.loads((tmp_path / "r" / "run_config.json").read_text())
    assert record["layers"] == "0,-1"


# ----------------------------------------------------------------------------- a captured tiny run

@pytest.fixture(scope="module")
def captured(tiny_dir, tmp_path_factory):
    """A 16-question run with activations (last prompt token), half the rows marked correct and a
    `topic` field with 4 groups (the random model answers nothing right)."""
    out = tmp_path_factory.mktemp("newcomer") / "run16"
    assert run_main("--model", tiny_dir, "--limit", 16, "--max_new_tokens", 3, "--output_dir", out,
                    "--capture_activations", "--positions", "last_prompt", "--layers", "embeddings,0,final_norm") == 0
    rows = read_rows(out)
    for i, row in enumerate(rows):
        row["correct"], row["topic"] = i % 2 == 0, f"t{i % 4}"
    (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


@pytest.fixture
def hub_run(captured, tmp_path):
    """A copy of the captured run whose run_config.json names a hub id."""
    import shutil
    run = tmp_path / "hubrun"
    shutil.copytree(captured, run)
    cfg = json.loads((run / "run_config.json").read_text())
    (run / "run_config.json").write_text(json.dumps({**cfg, "model": HUB_ID}))
    return run


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test on any model loading or any connection attempt; HF_HUB_OFFLINE unset."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def refuse(*a, **k):
        raise AssertionError(f"the analysis tried to load or connect: {a[:2]}")
    monkeypatch.setattr(lens_model, "load_model", refuse)
    monkeypatch.setattr(models, "_load_uncached", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    from transformers import AutoModelForCausalLM, AutoTokenizer
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", refuse)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", refuse)


# ----------------------------------------------------------------------------- analysis never downloads

def test_lens_with_a_hub_id_says_pass_model_without_loading_anything(hub_run, no_loading):
    start = time.perf_counter()
    with pytest.raises(lens.ModelNotLocalError) as err:
        lens.logit_lens_run(hub_run, progress=False)
    assert time.perf_counter() - start < 5
    msg = str(err.value)
    assert HUB_ID in msg and "--model PATH" in msg and "never downloads" in msg


def test_lens_cli_with_a_hub_id_is_one_line(hub_run, no_loading, tmp_path, capsys):
    code = aa.main(["--logit_lens", str(hub_run), "--output_dir", str(tmp_path / "p"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1 and "--model PATH" in err


def test_report_with_a_hub_id_is_written_and_says_why_the_lens_is_missing(hub_run, no_loading, tmp_path):
    from activation_eval.analysis import report
    out = report.build_report(hub_run, tmp_path / "r.html", progress=False, probe=False)
    page = open(out).read()
    assert "The logit lens not available" in page and "--model PATH" in page and HUB_ID in page
    assert "<h2>PCA</h2>" in page and "<h2>Run</h2>" in page          # the rest of the report is there


def test_lens_and_report_with_model_flag_use_it(hub_run, captured, tiny_dir, tmp_path, capsys):
    code = aa.main(["--logit_lens", str(hub_run), "--model", tiny_dir, "--json", "--quiet",
                    "--output_dir", str(tmp_path / "p")])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    assert res["model"] == tiny_dir and res["questions_used"] == 16
    assert os.path.basename(res["plots"][0]) == f"hubrun_logit_lens_model-{os.path.basename(tiny_dir)}.png"
    # the same numbers as the lens on the original run, whose run_config names the local folder
    ref = lens.logit_lens_run(captured, progress=False)
    assert to_json(ref)["layers"] == res["layers"]
    code = aa.main(["--report", str(hub_run), "--model", tiny_dir, "--quiet", "--output", str(tmp_path / "r.html")])
    page = (tmp_path / "r.html").read_text()
    assert code == 0 and "<h2>Logit lens</h2>" in page and "not available" not in page.split("<h2>Logit lens</h2>")[1][:400]


@pytest.mark.parametrize("name, local", [(models.DEFAULT_MODEL, True), (HUB_ID, False), ("gpt2", False),
                                         ("missing/folder/x", False)])
def test_is_local_model(name, local, tiny_dir, tmp_path):
    assert lens.is_local_model(name) is local
    assert lens.is_local_model(tiny_dir)
    gguf = tmp_path / "m.gguf"
    assert not lens.is_local_model(str(gguf))
    gguf.write_bytes(b"GGUF")
    assert lens.is_local_model(str(gguf))


# ----------------------------------------------------------------------------- the next-step hint

def test_make_run_hint_names_make_analyze(tmp_path):
    hint = cli.analyze_command("--probe " + shlex.quote("results/my run"), environ={cli.VIA_MAKE_ENV: "1"})
    assert hint == "make analyze ARGS='--probe '\"'\"'results/my run'\"'\"''"
    assert shlex.split(hint) == ["make", "analyze", "ARGS=--probe 'results/my run'"]
    dry = subprocess.run(["make", "-n", "-C", ROOT, "run", "analyze", "ARGS=--probe x"], capture_output=True,
                         text=True)
    assert "ACTIVATION_EVAL_VIA_MAKE=1 .venv/bin/python main.py" in dry.stdout, dry.stdout + dry.stderr
    assert ".venv/bin/python analyze_activations.py --probe x" in dry.stdout


def test_hint_printed_by_a_run_works_when_pasted_outside_the_venv(captured, tiny_dir, tmp_path, monkeypatch, capsys):
    """main.py run by the venv's python from a shell whose PATH lacks the venv: the hint names the
    interpreter by path, and pasted into such a shell (with --directory instead of --probe) it runs. The run
    itself in this process, in that environment and folder (the hint reads both when it is printed); the pasted
    hint in a real shell."""
    env = {**os.environ, "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    env.pop(cli.VIA_MAKE_ENV, None)
    out = tmp_path / "run"
    with monkeypatch.context() as m:
        m.setenv("PATH", env["PATH"])
        m.delenv(cli.VIA_MAKE_ENV, raising=False)
        m.chdir(tmp_path)
        assert run_main("--model", tiny_dir, "--limit", 2, "--max_new_tokens", 2, "--capture_activations",
                        "--layers", 0, "--output_dir", out) == 0
    hint = capsys.readouterr().out.rsplit("analyse: ", 1)[1].strip()
    assert hint.startswith(shlex.quote(sys.executable) + " ") and "--probe" in hint
    pasted = subprocess.run(hint.replace("--probe", "--directory"), shell=True, cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert pasted.returncode == 0, pasted.stderr
    assert "directory:" in pasted.stdout and str(out) in pasted.stdout


def test_hint_uses_plain_python_when_the_shell_finds_this_interpreter():
    env = {"PATH": os.path.dirname(sys.executable)}
    if os.path.basename(sys.executable) != "python":
        pytest.skip(f"this interpreter is named {os.path.basename(sys.executable)}")   # pragma: no cover
    assert cli.analyze_command("--probe r", environ=env).startswith("python ")


# ----------------------------------------------------------------------------- SIGTERM, --quiet, --output_dir

def test_sigterm_stops_like_ctrl_c_and_resume_completes(tiny_dir, tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, os.path.join(ROOT, "main.py"), "--model", tiny_dir, "--limit", "12", "--batch_size", "1",
            "--max_new_tokens", "24", "--capture_activations", "--layers", "0", "--output_dir", str(out)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while proc.poll() is None and (not results.exists() or not results.read_text().count("\n")) and time.time() < deadline:
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before the signal"
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    last = stderr.strip().splitlines()[-1]
    assert proc.returncode == 143, stderr
    assert last == "stopped by SIGTERM: rows written so far are kept; continue with --resume" and "Traceback" not in stderr
    kept = read_rows(out)
    assert 1 <= len(kept) < 12 and "accuracy" not in stdout
    for row in kept:                                                   # every kept row's record is whole
        assert (out / row["activation_file"]).is_file()
    assert run_main(*args[2:], "--resume") == 0
    rows = read_rows(out)
    assert len(rows) == 12 == len({r["id"] for r in rows})
    assert [r for r in rows if r["id"] in {k["id"] for k in kept}] == kept          # nothing saved was lost


@pytest.mark.parametrize("stop, code, said", [(cli.Terminated, 143, "stopped by SIGTERM"),
                                              (KeyboardInterrupt, 130, "interrupted")])
def test_ctrl_c_and_sigterm_give_the_same_hint(tiny_dir, tmp_path, monkeypatch, capsys, stop, code, said):
    import activation_eval.run.runner as runner

    def interrupted(config):
        raise stop()
    monkeypatch.setattr(runner, "run_benchmark", interrupted)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["--model", tiny_dir, "--quiet", "--output_dir", "r1"]) == code
    assert capsys.readouterr().err == f"{said}: rows written so far are kept; continue with --resume\n"
    # without --output_dir the run folder was a new timestamp one: the hint names it
    assert cli.main(["--model", tiny_dir, "--quiet"]) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"{said}: rows written so far are kept; continue with the same command and "
                          "--resume --output_dir results/")


def test_quiet_silences_every_progress_bar(tiny_dir, tmp_path, capsys):
    import activation_eval.models as m
    m._LOADED.clear()                                   # load again: transformers' "Loading weights" bar
    assert cli.main(["--model", tiny_dir, "--limit", "3", "--max_new_tokens", "2",
                     "--output_dir", str(tmp_path / "a")]) == 0
    loud = capsys.readouterr().err
    assert "questions:" in loud and "Loading weights" in loud
    m._LOADED.clear()
    assert cli.main(["--model", tiny_dir, "--limit", "3", "--max_new_tokens", "2", "--quiet",
                     "--output_dir", str(tmp_path / "b")]) == 0
    quiet = capsys.readouterr().err
    assert "questions:" not in quiet and "Loading weights" not in quiet and "%|" not in quiet
    from transformers.utils import logging as hf_logging
    assert hf_logging.is_progress_bar_enabled()        # restored for whoever runs next in this process


def test_analysis_accepts_quiet_as_no_progress(captured, capsys):
    assert aa.build_parser().parse_args(["--directory", "x", "--quiet"]).no_progress is True
    assert aa.main(["--directory", str(captured), "--quiet"]) == 0
    assert "%|" not in capsys.readouterr().err


def test_output_dir_that_is_a_file_is_one_clear_line(tiny_dir, tmp_path, captured, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me")
    for out, says in ((a_file, f"--output_dir {a_file} is a file, not a folder"),
                      (a_file / "run", f"--output_dir {a_file / 'run'} is inside {a_file}, which is a file")):
        assert run_main("--model", tiny_dir, "--limit", 2, "--output_dir", out) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"error: {says}") and "Traceback" not in err
    assert a_file.read_text() == "keep me"
    code = aa.main(["--probe", str(captured), "--output_dir", str(a_file), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith(f"error: --output_dir {a_file} is a file") and err.count("\n") == 1
    assert run_main("--model", tiny_dir, "--resume") == 2
    assert "--resume continues the run in --output_dir" in capsys.readouterr().err


@pytest.mark.parametrize("module, name", [(cli, "activation-eval"), (analysis_cli, "activation-eval-analyze")])
def test_console_scripts_show_their_own_name(module, name, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [name, "--help"])
    with pytest.raises(SystemExit) as done:
        module.console_main()
    assert done.value.code == 0 and capsys.readouterr().out.startswith(f"usage: {name} ")
    # (test_layout runs the installed scripts and checks their usage line too)


# ----------------------------------------------------------------------------- the default model's cache

def test_gguf_key_follows_the_content_not_the_path(tmp_path):
    data = bytearray(os.urandom(3 << 20))
    a, b = tmp_path / "a" / "m.gguf", tmp_path / "b" / "other-name.gguf"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(data)
    os.utime(b, (1, 1))
    key = models.gguf_content_key(a)
    assert key == models.gguf_content_key(b) and len(key) == 16          # a copy elsewhere, another mtime
    sampled = (len(data) - (1 << 16)) * 7 // (models.GGUF_KEY_SAMPLES - 1) + 100
    for offset in (0, len(data) - 1, sampled):                          # first, last, a sampled middle byte
        changed = bytearray(data)
        changed[offset] ^= 1
        b.write_bytes(changed)
        assert models.gguf_content_key(b) != key, offset
    b.write_bytes(data + b"x")
    assert models.gguf_content_key(b) != key                           # the size is part of the key
    tiny = tmp_path / "tiny.gguf"
    tiny.write_bytes(b"GGUF")
    assert models.gguf_content_key(tiny) != models.gguf_content_key(a)


def _fake_converter(log, seconds=0.4):
    def convert(folder):
        log.append(folder)
        time.sleep(seconds)
        with open(os.path.join(folder, "model.safetensors"), "w") as f:
            f.write("weights")
    return convert


def test_two_concurrent_first_users_convert_once(tmp_path):
    target = str(tmp_path / "cache" / "Model-abc")
    calls, results, errors = [], [], []

    def user():
        try:
            results.append(models.convert_once(target, "abc", _fake_converter(calls)))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=user) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and results == [target] * 3 and len(calls) == 1
    assert sorted(os.listdir(target)) == [models.STAMP_FILE, "model.safetensors"]
    assert [n for n in os.listdir(tmp_path / "cache") if not n.endswith(".lock")] == ["Model-abc"]  # no temp folders
    assert models.convert_once(target, "abc", _fake_converter(calls)) == target and len(calls) == 1


def test_two_processes_at_once_convert_once(tmp_path):
    """Two first runs in separate processes: one converts, the other waits and uses its folder."""
    code = ("import sys, time, os; from activation_eval import models\n"
            "def convert(folder):\n"
            "    open(sys.argv[2], 'a').write('converted\\n'); time.sleep(0.5)\n"
            "    open(os.path.join(folder, 'w.bin'), 'w').write('w')\n"
            "print(models.convert_once(sys.argv[1], 'k1', convert))\n")
    target, log = str(tmp_path / "c" / "M-k1"), str(tmp_path / "log")
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    procs = [subprocess.Popen([sys.executable, "-c", code, target, log], env=env, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0] and outs == [target, target]
    assert open(log).read() == "converted\n" and os.path.isfile(os.path.join(target, "w.bin"))


def test_a_failed_or_unstamped_conversion_is_redone(tmp_path):
    target = str(tmp_path / "M-k")

    def broken(folder):
        open(os.path.join(folder, "half"), "w").write("x")
        raise RuntimeError("killed mid-way")
    with pytest.raises(RuntimeError):
        models.convert_once(target, "k", broken)
    assert not os.path.exists(target) and [n for n in os.listdir(tmp_path) if "tmp" in n] == []
    os.makedirs(target)                                          # a leftover without the stamp (older version)
    os.makedirs(str(tmp_path / ".M-k.tmp-dead"))                 # a killed conversion's temp folder
    calls = []
    assert models.convert_once(target, "k", _fake_converter(calls, 0)) == target and len(calls) == 1
    assert os.path.isfile(os.path.join(target, "model.safetensors"))
    assert sorted(n for n in os.listdir(tmp_path) if not n.endswith(".lock")) == ["M-k"]
    assert models.convert_once(target, "k2", _fake_converter(calls, 0)) == target and len(calls) == 2  # new key


def test_default_model_dir_is_named_by_content(tmp_path, monkeypatch):
    fake = tmp_path / "pkg" / "x.gguf"
    fake.parent.mkdir()
    fake.write_bytes(os.urandom(200_000))
    monkeypatch.setenv("ACTIVATION_CAPTURE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(models, "default_gguf_path", lambda: str(fake))
    calls = []
    monkeypatch.setattr(models, "_convert_gguf", lambda gguf, folder: _fake_converter(calls, 0)(folder))
    first = models.default_model_dir()
    assert os.path.basename(first) == f"{models.DEFAULT_MODEL}-{models.gguf_content_key(fake)}"
    moved = tmp_path / "elsewhere" / "x.gguf"                       # another checkout / venv: the same file
    moved.parent.mkdir()
    os.replace(fake, moved)
    monkeypatch.setattr(models, "default_gguf_path", lambda: str(moved))
    assert models.default_model_dir() == first and len(calls) == 1


# ----------------------------------------------------------------------------- plot names

def test_plot_names_carry_the_options_that_change_them(captured, tmp_path, capsys):
    od = str(tmp_path / "plots")
    names = []
    for extra in ([], ["--probe_groups", "topic"], ["--probe_groups", "topic"]):
        code = aa.main(["--probe", str(captured), "--output_dir", od, "--json", "--quiet", "--folds", "2",
                        "--bootstrap", "1000", *extra])
        out, err = capsys.readouterr()
        assert code == 0, err
        names.append(os.path.basename(json.loads(out)["plots"][0]))
    assert names == ["probe_run16_folds-2_bootstrap-1000.png",
                     "probe_run16_groups-topic_folds-2_bootstrap-1000.png"] + names[1:2]   # same options: same file
    pca = []
    for color in ("correct", "category", "topic"):
        code = aa.main(["--directory", str(captured), "--plot", "--output_dir", od, "--json", "--quiet",
                        "--color_by", color])
        out, err = capsys.readouterr()
        assert code == 0, err
        pca.append(os.path.basename(json.loads(out)["plots"][1]))
    assert pca == ["run16_pca_layer_0.png", "run16_pca_layer_0_color-category.png", "run16_pca_layer_0_color-topic.png"]
    risk = [n.replace("probe_", "risk_coverage_", 1) for n in names]          # error detection's plot beside
    assert sorted(os.listdir(od)) == sorted(set(names + risk + pca + ["run16_norms.png"]))


def test_plot_name_of_long_and_path_options():
    args = aa.build_parser().parse_args(["--probe", "r", "--layers", ",".join(f"layer_{i}" for i in range(30)),
                                         "--test_run", "/data/runs/other-run/", "--reduce", "mean_prompt"])
    name = plot_name(args, "probe", "probe_r")
    assert name.startswith("probe_r_reduce-mean_prompt_layers-layer_0+layer_1+layer_2+") and name.endswith(
        "_test-other-run.png")
    assert len(name) < 120 and "/" not in name
    other = aa.build_parser().parse_args(["--probe", "r", "--layers", ",".join(f"layer_{i}" for i in range(31)),
                                          "--test_run", "/data/runs/other-run/", "--reduce", "mean_prompt"])
    assert plot_name(other, "probe", "probe_r") != name   # a hash tells long lists apart
