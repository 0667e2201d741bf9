"""The analysis command line: `python analyze_activations.py` and `activation-eval-analyze`.

It parses, dispatches and prints; each mode is a registered command (commands/: its own options, a
typed result from activation_eval/schema/, its text and plots). Output is the command's text or,
with --json, its result as JSON (jsonio.to_json: the contract's fields plus "format_version", and
"plots": the files written). Plot file names start with the source's name (file stem, folder name)
and carry every option that changes the plot when it is not at its default (commands.base.plot_name),
so neither other runs nor other options overwrite a plot. --quiet = --no_progress. --logit_lens and
--report load the run's model only when it is local (else --model PATH): the analysis never downloads.

Public names:
    build_parser(prog) -> argparse.ArgumentParser
    run(args) -> commands.base.Outcome     the command's typed result, its text, the plots it wrote
    main(argv=None, prog) -> int           the CLI (0 ok, 2 on any error, one line)
    console_main()                         the console script

Example:
    $ python analyze_activations.py --file q1.pkl --json
    $ python analyze_activations.py --probe results/run1 --output_dir plots
    $ python analyze_activations.py --logit_lens results/run1 --json
    $ python analyze_activations.py --report results/run1 --output run1.html

From Python, main(argv) prints the same and returns the exit code:
    >>> main(["--compare", "runs/r1/activations/geo-001.pkl", "results/run1/activations/geo-001.safetensors",
    ...       "--layers", "layer_3"])                   # one record saved in both formats: the same numbers
    A: runs/r1/activations/geo-001.pkl
    B: results/run1/activations/geo-001.safetensors
    note: common token prefix: 42 tokens (positions 0-41); 41 of them kept in both records
    <BLANKLINE>
    layer    cos_last  dist_last  cos_prompt_mean  dist_prompt_mean  cos_prefix  dist_prefix
    -------  --------  ---------  ---------------  ----------------  ----------  -----------
    layer_3         1          0                1                 0           1            0
    0
    >>> main(["--file", "missing.pkl"])                 # bad input: one line `error: ...` on stderr
    2
"""
import argparse
import contextlib
import json
import os
import sys
from collections.abc import Iterator

from .commands import COMMANDS, by_name
from .commands.base import Outcome, add_shared_options, check_output_folder, parse_options
from .jsonio import to_json

EPILOG = """examples:
  python analyze_activations.py --file results/run1/activations/q0001.safetensors
  python analyze_activations.py --directory results/run1 --limit 500 --json
  python analyze_activations.py --compare a.pkl b.pkl --plot --output_dir plots
  python analyze_activations.py --directory results/run1 --plot --layer layer_12 --output_dir plots
  python analyze_activations.py --probe results/run1 --output_dir plots
  python analyze_activations.py --probe results/run1 --target category --probe_groups category --json
  python analyze_activations.py --probe results/run1 --test_run results/run2
  python analyze_activations.py --directory results/run1 --plot --color_by category
  python analyze_activations.py --logit_lens results/run1 --output_dir plots
  python analyze_activations.py --logit_lens results/run1 --stratify_by grader
  python analyze_activations.py --report results/run1 --output results/run1/report.html
  python analyze_activations.py --export_hf results/run1 exports/run1 --layers layer_5,layer_10
"""


def build_parser(prog: str = "analyze_activations.py") -> argparse.ArgumentParser:
    """The parser: the mode flags and options every command declares, and the shared ones."""
    p = argparse.ArgumentParser(prog=prog, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Statistics, comparisons, plots and probes on saved activation records.")
    mode = p.add_argument_group("mode (exactly one)").add_mutually_exclusive_group(required=True)
    groups = {"parser": p, "mode": mode, "selection": p.add_argument_group("selection")}
    for command in COMMANDS:
        command.add_mode(mode)
    groups["output"] = p.add_argument_group("output")
    add_shared_options(groups)
    for command in COMMANDS:
        command.add_options(groups)
    return p


def run(args: argparse.Namespace) -> Outcome:
    """Run the command the parsed `args` name, after checking the folders it writes into."""
    command = by_name(args)
    options = parse_options(args)
    folders = ([(args.output_dir, "--output_dir")] if args.plot else []) + command.output_folders(args)
    for folder, flag in dict.fromkeys(folders):
        check_output_folder(folder, flag)
    return command.run(args, options)


@contextlib.contextmanager
def _transformers_bars(show: bool) -> Iterator[None]:
    """--no_progress / --quiet also hides transformers' "Loading weights" bar (the lens loads the model)."""
    if show:
        yield
        return
    from transformers.utils import logging as hf_logging
    was = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was:
            hf_logging.enable_progress_bar()


def _output(outcome: Outcome, as_json: bool) -> str:
    """The text to print: the command's text and the plots it saved, or the result as JSON."""
    if as_json:
        data = to_json(outcome.result)
        if outcome.plots:
            data["plots"] = outcome.plots
        return json.dumps(data, indent=2)
    return outcome.text + ("\n\n" + "\n".join(f"saved plot: {p}" for p in outcome.plots) if outcome.plots else "")


def main(argv: list[str] | None = None, prog: str = "analyze_activations.py") -> int:
    """CLI entry point; returns the exit code (0 ok, 2 on any error, with a one-line message)."""
    parser = build_parser(prog)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: --help (0) or a usage error (2, message already printed)
        return e.code if isinstance(e.code, int) else 2
    try:
        with _transformers_bars(not (args.no_progress and by_name(args).loads_model)):
            text = _output(run(args), args.json)
    except Exception as e:  # noqa: BLE001 - one clear line for every failure; --debug for the traceback
        if args.debug:
            raise
        msg = " ".join(str(e).split()) or type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        return 2
    try:
        print(text)
        sys.stdout.flush()
    except BrokenPipeError:          # `analyze_activations.py ... | head`: the reader left, end quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())    # the interpreter's last flush cannot raise again
    return 0


def console_main() -> None:
    """The `activation-eval-analyze` console script."""
    sys.exit(main(prog="activation-eval-analyze"))
