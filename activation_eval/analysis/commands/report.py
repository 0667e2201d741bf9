"""--report RUN_DIR: one self-contained HTML report of a run (report.build_report -> ReportResult).

Written to --output, else <output_dir>/<run name>_report.html (plot_name: the options that change it).
The probe, logit lens and PCA sections render from their own typed results (probe/html.py,
lens/html.py, pca.py).

Public names:
    COMMAND

Example:
    $ python analyze_activations.py --report results/run1 --output run1.html
"""
import argparse
import os

from ...schema.outputs import ReportResult
from ..report import build_report
from .base import Command, Groups, Options, Outcome, plot_name, source_name


class ReportCommand(Command):
    name = "report"
    loads_model = True

    def add_mode(self, group: argparse._MutuallyExclusiveGroup) -> None:
        group.add_argument("--report", metavar="RUN_DIR",
                           help="a run folder: one self-contained HTML report (summary, probe, logit lens, PCA, table)")

    def add_options(self, groups: Groups) -> None:
        groups["output"].add_argument("--output", metavar="FILE",
                                      help="--report: the HTML file to write (default: <output_dir>/<run name>"
                                           "_report.html)")

    def output_folders(self, args: argparse.Namespace) -> list[tuple[str, str]]:
        if args.output:
            return [(os.path.dirname(os.path.abspath(args.output)), "--output's folder")]
        return [(args.output_dir, "--output_dir")]

    def run(self, args: argparse.Namespace, options: Options) -> Outcome:
        output = args.output or os.path.join(options.output_dir,
                                             plot_name(args, "report", f"{source_name(args.report)}_report", ".html"))
        path = build_report(args.report, output, layers=options.layers, color_by=args.color_by,
                            progress=options.progress, model=args.model, stratify_by=options.stratify_by,
                            causal_dir=getattr(args, "causal_dir", "causal"))     # --causal's folder
        return Outcome(ReportResult(report=path), f"saved report: {path}")


COMMAND = ReportCommand()
