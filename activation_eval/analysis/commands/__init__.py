"""The analysis modes as registered commands, one module each (base.py: what they share).

    file        --file F                    stats.describe_record      -> FileResult
    directory   --directory D               stats.analyze_directory    -> DirectoryResult (+ the run-folder PCA)
    compare     --compare F1 F2             stats.compare_files        -> CompareResult
    probe       --probe RUN_DIR             probe.probe_run            -> ProbeResult
    lens        --logit_lens RUN_DIR        lens.logit_lens_run        -> LensResult
    report      --report RUN_DIR            report.build_report        -> ReportResult
    export      --export_hf RUN_DIR OUT     export_hf.export_hf        -> ExportResult
    causal      --causal RUN_DIR            causal.check.causal_run    -> CausalResult

Public names:
    COMMANDS        the commands, in the order of the mode flags in --help
    by_name(args) -> Command   the command whose mode flag was given

Example:
    >>> [c.name for c in COMMANDS]
    ['file', 'directory', 'compare', 'probe', 'logit_lens', 'report', 'export_hf', 'causal']
"""
import argparse

from . import causal, compare, directory, export, file, lens, probe, report
from .base import Command

COMMANDS: tuple[Command, ...] = (file.COMMAND, directory.COMMAND, compare.COMMAND, probe.COMMAND, lens.COMMAND,
                                 report.COMMAND, export.COMMAND, causal.COMMAND)


def by_name(args: argparse.Namespace) -> Command:
    """The command whose mode flag `args` holds (argparse lets exactly one through)."""
    return next(c for c in COMMANDS if getattr(args, c.name, None) is not None)
