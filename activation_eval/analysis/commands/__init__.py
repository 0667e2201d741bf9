"""The analysis modes as registered commands, one module each (base.py: what they share).

    file        --file F                    stats.describe_record      -> FileResult
    directory   --directory D               stats.analyze_directory    -> DirectoryResult (+ the run-folder PCA)
    compare     --compare F1 F2             stats.compare_files        -> CompareResult
    probe       --probe RUN_DIR             probe.probe_run            -> ProbeResult
    lens        --logit_lens RUN_DIR        lens.logit_lens_run        -> LensResult
    report      --report RUN_DIR            report.build_report        -> ReportResult
    export      --export_hf RUN_DIR OUT     export_hf.export_hf        -> ExportResult
    (causal     --causal RUN_DIR            experiments.causal_check   -> CausalResult, registered from outside:
                                            it answers questions again, which this room never does)

Public names:
    COMMANDS        the commands, in the order of the mode flags in --help
    by_name(args) -> Command   the command whose mode flag was given
    register(command)          add a command from a room this one may not import (experiments: --causal)

Example:
    >>> [c.name for c in COMMANDS][:7]           # then what other rooms registered (experiments: causal)
    ['file', 'directory', 'compare', 'probe', 'logit_lens', 'report', 'export_hf']
"""
import argparse

from . import compare, directory, export, file, lens, probe, report
from .base import Command

COMMANDS: list[Command] = [file.COMMAND, directory.COMMAND, compare.COMMAND, probe.COMMAND, lens.COMMAND,
                           report.COMMAND, export.COMMAND]


def register(command: Command) -> None:
    """Add `command` to the command line (once): how a room that may import analysis, but that analysis may
    not import, adds a mode (activation_eval/experiments: --causal)."""
    if all(c.name != command.name for c in COMMANDS):
        COMMANDS.append(command)


def by_name(args: argparse.Namespace) -> Command:
    """The command whose mode flag `args` holds (argparse lets exactly one through)."""
    return next(c for c in COMMANDS if getattr(args, c.name, None) is not None)
