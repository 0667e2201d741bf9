"""Evaluate a causal LM on a question benchmark; optionally save every question's activations.

The command line of `python main.py` and the `activation-eval` console script (same flags):

    python main.py                                   # default model, built-in benchmark
    python main.py --limit 20 --capture_activations --layers embeddings,0,-1,final_norm
    python main.py --model path/to/model --benchmark my.csv --question_field q --answer_field a

    torchrun --nproc_per_node 4 main.py --capture_activations       # 4 processes share the questions

From Python, main(argv) runs the same and returns the exit code (here with a tiny random llama's folder):

    >>> main(["--model", "models/tiny-llama", "--limit", "2", "--max_new_tokens", "4", "--capture_activations",
    ...       "--output_dir", "results/cli", "--quiet"])
    model      models/tiny-llama
    benchmark  .../activation_eval/data/benchmark.jsonl
    accuracy   0.0% ± 0.0% (SE), 95% CI 0.0%-65.8%, chance 0.0%  (0/2 correct)
    <BLANKLINE>
    category                  n  correct  accuracy     SE        95% CI  chance
    geography                2*        0      0.0%   0.0%    0.0%-65.8%    0.0%
    * fewer than 5 questions: the interval is wide and its 95% coverage only approximate; read such rows with care
    <BLANKLINE>
    wall time  ... s for 2 questions (... questions/s)
    results    results/cli/results.jsonl
    activations  2 files, 0.6 MiB in results/cli/activations
                 each: 31 layers (embeddings, layer_0, layer_1, ...), positions all, e.g. (41, 64) float32
                 analyse: ... --probe results/cli
    0
    >>> main(["--limit", "0"])                        # bad input: one line `error: ...` on stderr
    2

Public names: build_parser(prog), main(argv=None, prog) -> exit code, console_main(),
activation_overview(dir, run_dir), analyze_command(args_text) (the next-step hint, pasteable), Terminated.
Each flag is a RunConfig field (config.cli_fields: default, choices, help in one place); parsed flags
become a RunConfig in config.config_from_args (dest = field name). --quiet: no progress bars, only
warnings and the summary. Ctrl-C and SIGTERM stop the run keeping what is written (exit 130 / 143)
and print how to continue with --resume.
Bad input prints one line `error: ...` and exits with code 2 (--debug shows the traceback). A closed
stdout (`| head`) ends quietly. With
several processes, one that fails makes the others stop with one line each and exit code 1.
"""
import argparse
import logging
import os
import shlex
import shutil
import signal
import sys

from ..store import run_folder
from ..store.run_reader import load_activations
from . import distributed
from .config import GROUPS, cli_fields, config_from_args

log = logging.getLogger(__name__)

EPILOG = """examples:
  python main.py --limit 20
  python main.py --capture_activations --positions last_prompt --activation_format safetensors
  python main.py --model HuggingFaceTB/SmolLM2-360M-Instruct --batch_size 16 --dtype bfloat16
  python main.py --output_dir results/run1 --resume
  python main.py --limit 0.1 --shuffle --temperature 0.7 --top_p 0.95 --num_samples 4 --seed 1
  python main.py --mc_scoring loglikelihood --capture_activations --positions last_prompt
  torchrun --nproc_per_node 4 main.py --output_dir results/run2      # or: accelerate launch --num_processes 4
  python main.py --model big/model --device_map auto --max_memory 0=70GiB,1=70GiB,cpu=200GiB
  python main.py --benchmark hf:cais/mmlu --subset all --split test --num_fewshot 5 --fewshot_split dev
  python main.py --benchmark freshqa.csv --skip_rows 2 --answer_field 'answer_*' --category_field fact_type
"""


def build_parser(prog="main.py"):
    """The eval CLI's parser: one flag per RunConfig field (config.cli_fields: its default, choices,
    metavar, help and group), plus --debug and --quiet."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0], epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    for field, cli in cli_fields():
        help_text = cli["help"]
        shown = cli["default_text"] if cli["default_text"] is not None else field.default
        if field.type is not bool and shown is not None:
            help_text += f" (default: {shown:g})" if isinstance(shown, float) else f" (default: {shown})"
        kwargs = {"dest": field.name, "default": field.default, "help": help_text.replace("%", "%%")}
        if field.type is bool:
            kwargs["action"] = "store_false" if field.default else "store_true"
        else:
            kwargs.update(metavar=cli["metavar"], choices=cli["choices"],
                          type=field.type if field.type in (int, float) else str)
        groups[cli["group"]].add_argument(cli["flag"] or f"--{field.name}", **kwargs)
    p.add_argument("--debug", action="store_true", help="show full tracebacks")
    p.add_argument("--quiet", action="store_true", help="only warnings and the summary: no progress bars")
    return p


def main(argv=None, prog="main.py"):
    args = build_parser(prog).parse_args(argv)
    is_main = distributed.is_main_process()        # only the main process logs and prints the summary
    logging.basicConfig(level=logging.WARNING if args.quiet or not is_main else logging.INFO,
                        format="%(levelname)s %(message)s")
    restore_bars = _hide_transformers_bars() if args.quiet or not is_main else (lambda: None)
    restore_sigterm = distributed.install_stop_handler() if distributed.world_size() > 1 else _stop_on_sigterm()
    config = None
    try:
        from ..schema.summary import format_summary
        from .runner import run_benchmark
        config = config_from_args(args, progress=not args.quiet)
        summary = run_benchmark(config)
    except KeyboardInterrupt as exc:               # Ctrl-C, or SIGTERM (a job scheduler, `kill`)
        print(f"{'stopped by SIGTERM' if isinstance(exc, Terminated) else 'interrupted'}: rows written so far "
              f"are kept; continue with {_resume_hint(args, config)}", file=sys.stderr)
        return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130
    except distributed.MainProcessError:
        return 2                                   # the main process printed the error
    except distributed.DistributedError as exc:
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except (ValueError, OSError) as exc:  # every input error of the project is a ValueError or OSError
        if args.debug:
            raise
        print(f"error: {distributed.process_label() if not is_main else ''}{exc}", file=sys.stderr)
        return 2
    finally:
        restore_sigterm()
        restore_bars()
    if not is_main:
        return 0
    try:
        print(format_summary(summary, run_folder.results_path(summary["output_dir"])))
        if config.capture_activations:
            print(activation_overview(config.activation_save_dir, config.output_dir))
        sys.stdout.flush()
    except BrokenPipeError:                        # `main.py ... | head`: the reader left; the run is saved
        _silence_stdout()
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM in a single process: the run stops as on Ctrl-C (what is written is kept)."""


def _stop_on_sigterm():
    """Make SIGTERM stop the run like Ctrl-C; returns a function that restores the old handler.
    (With several processes, distributed.install_stop_handler owns SIGTERM.)"""
    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)        # a second SIGTERM ends the process
        raise Terminated()
    try:
        previous = signal.signal(signal.SIGTERM, stop)
    except ValueError:                                       # not the main thread: leave SIGTERM alone
        return lambda: None
    return lambda: signal.signal(signal.SIGTERM, previous)


def _hide_transformers_bars():
    """No "Loading weights" bar (--quiet, or a process other than the main one); returns the undo."""
    from transformers.utils import logging as hf_logging
    if not hf_logging.is_progress_bar_enabled():
        return lambda: None
    hf_logging.disable_progress_bar()
    return hf_logging.enable_progress_bar


def _resume_hint(args, config):
    """--resume, and the run folder when it was the default one (a new timestamp each time)."""
    if config is not None and args.output_dir is None:
        return f"the same command and --resume --output_dir {shlex.quote(config.output_dir)}"
    return "--resume"


def _silence_stdout():
    """Point stdout at /dev/null so that the interpreter's last flush cannot raise again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def activation_overview(directory, run_dir):
    """Where the records are, and what one of them holds."""
    files = run_folder.iter_record_files(directory)
    units = os.path.join(directory, run_folder.UNITS_DIR)
    shards = sorted(os.path.join(units, n) for n in os.listdir(units)
                    if n.endswith(".safetensors")) if os.path.isdir(units) else []
    if not files and not shards:
        return f"activations  none saved in {directory}"
    size = sum(os.path.getsize(f) for f in files + shards)
    if files:
        what, record = f"{len(files)} files", load_activations(files[0])
    else:
        shard_key = run_folder.SHARD_FIELDS[0]
        first_id = next(row["id"] for row in run_folder.read_results(run_dir) if row.get(shard_key))
        what, record = (f"{len(shards)} shard{'s' if len(shards) != 1 else ''} (units of questions, up to ~--shard_size_mb each)",
                        load_activations(run_dir, question_id=first_id))
    acts = record["activations"]
    first = next(iter(acts.values()))
    return (f"activations  {what}, {size / 2**20:.1f} MiB in {directory}\n"
            f"             each: {len(acts)} layers ({', '.join(list(acts)[:3])}{', ...' if len(acts) > 3 else ''}), "
            f"positions {record.get('positions', 'all')}, e.g. {tuple(first.shape)} {record.get('dtype', first.dtype)}\n"
            f"             analyse: {analyze_command('--probe ' + shlex.quote(os.fspath(run_dir)))}")


VIA_MAKE_ENV = "ACTIVATION_EVAL_VIA_MAKE"   # set by `make run`: the hint names `make analyze ARGS=...`
_ROOT_SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                            "analyze_activations.py")


def analyze_command(args_text, environ=None):
    """The analysis command line that works when pasted into the shell that started this run:
    `make analyze ARGS='...'` under `make run`; else this interpreter (`python` when the shell finds
    it by that name, else its path, e.g. .venv/bin/python) with the checkout's analyze_activations.py,
    or the installed activation-eval-analyze script."""
    environ = os.environ if environ is None else environ
    if environ.get(VIA_MAKE_ENV) == "1":
        return f"make analyze ARGS={shlex.quote(args_text)}"
    if os.path.isfile(_ROOT_SCRIPT):
        return f"{_runnable(sys.executable, 'python', environ)} {_shown(_ROOT_SCRIPT)} {args_text}"
    script = os.path.join(os.path.dirname(sys.executable), "activation-eval-analyze")
    return f"{_runnable(script, 'activation-eval-analyze', environ)} {args_text}"


def _runnable(path, name, environ):
    """`name` when the shell's PATH finds `path` by it, else the path itself."""
    found = shutil.which(name, path=environ.get("PATH"))
    if found and os.path.abspath(found) == os.path.abspath(path):
        return name
    shown = _shown(path)
    return shown if os.sep in shown else os.path.join(".", shown)


def _shown(path):
    """`path` relative to the working directory when it is below it, else absolute; shell-quoted."""
    rel = os.path.relpath(path)
    return shlex.quote(os.path.abspath(path) if rel.startswith("..") else rel)


def console_main():
    """The `activation-eval` console script."""
    distributed.exit_process(main(prog="activation-eval"))
